package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// Block builders: one block each, with the values listed in the tests below.

func f16(h uint16) []byte { return binary.LittleEndian.AppendUint16(nil, h) }

// nibbles returns qs[j] = j | (15−j)<<4, so element j gets j and element j+16 gets 15−j.
func nibbles() []byte {
	qs := make([]byte, 16)
	for j := range qs {
		qs[j] = byte(j) | byte(15-j)<<4
	}
	return qs
}

func blockQ8_0() []byte { // d = 0.5, q_j = j − 16
	b := f16(0x3800)
	for j := range 32 {
		b = append(b, byte(int8(j-16)))
	}
	return b
}

func blockQ4_0() []byte { return append(f16(0x4000), nibbles()...) } // d = 2

func blockQ4_1() []byte { // d = 0.5, m = −1
	return append(append(f16(0x3800), f16(0xBC00)...), nibbles()...)
}

func blockQ5_0() []byte { // d = 1, high bit set for elements 0..15
	b := append(f16(0x3C00), binary.LittleEndian.AppendUint32(nil, 0x0000FFFF)...)
	return append(b, nibbles()...)
}

func blockQ5_1() []byte { // d = 0.25, m = 1, high bit set for elements 16..31
	b := append(append(f16(0x3400), f16(0x3C00)...), binary.LittleEndian.AppendUint32(nil, 0xFFFF0000)...)
	return append(b, nibbles()...)
}

func TestDequantizeBlocks(t *testing.T) {
	f32data := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, math.Float32bits(1.5)), math.Float32bits(-0.25))
	tests := []struct {
		typ  Type
		src  []byte
		n    int
		want map[int]float32 // hand-computed spot values
		all  func(j int) float32
	}{
		{TypeF32, f32data, 2, map[int]float32{0: 1.5, 1: -0.25}, nil},
		{TypeF16, append(append(f16(0x3C00), f16(0xC000)...), f16(0x3800)...), 3, map[int]float32{0: 1, 1: -2, 2: 0.5}, nil},
		{TypeBF16, append(f16(0x3F80), f16(0xC040)...), 2, map[int]float32{0: 1, 1: -3}, nil},
		{TypeQ8_0, blockQ8_0(), 32, map[int]float32{0: -8, 16: 0, 17: 0.5, 31: 7.5},
			func(j int) float32 { return float32(j-16) * 0.5 }},
		{TypeQ4_0, blockQ4_0(), 32, map[int]float32{0: -16, 5: -6, 15: 14, 16: 14, 31: -16},
			func(j int) float32 {
				if j < 16 {
					return float32(j-8) * 2
				}
				return float32(7-(j-16)) * 2
			}},
		{TypeQ4_1, blockQ4_1(), 32, map[int]float32{0: -1, 3: 0.5, 16: 6.5, 31: -1},
			func(j int) float32 {
				if j < 16 {
					return float32(j)*0.5 - 1
				}
				return float32(15-(j-16))*0.5 - 1
			}},
		{TypeQ5_0, blockQ5_0(), 32, map[int]float32{0: 0, 7: 7, 15: 15, 16: -1, 31: -16},
			func(j int) float32 {
				if j < 16 {
					return float32(j)
				}
				return float32(-1 - (j - 16))
			}},
		// K-quants: blocks and values worked out by hand in kquant_test.go.
		{TypeQ2_K, blockQ2K(), 256, map[int]float32{0: -7.5, 16: -7, 32: -4.5, 127: 17, 128: -3.5,
			148: 24, 180: 20, 212: 12, 244: 0, 255: 45}, nil},
		{TypeQ3_K, blockQ3K(), 256, map[int]float32{0: 0, 32: 1, 35: -3, 96: -39, 99: 13, 112: 10.5,
			148: -4.5, 180: 11, 208: 29, 212: -43.5, 227: -7, 244: -30, 255: 22.5}, nil},
		{TypeQ4_K, blockQ4K(), 256, map[int]float32{0: 10, 32: 8, 64: 26, 96: 14, 128: 42, 160: 20,
			192: 4, 196: -66, 224: 186, 228: 586, 255: 186}, nil},
		{TypeQ5_K, blockQ5K(), 256, map[int]float32{0: 10, 4: 26, 36: 8, 95: 74, 196: -66, 224: 186,
			228: 1226, 255: 186}, nil},
		{TypeQ6_K, blockQ6K(), 256, map[int]float32{0: -7.75, 32: -23.25, 64: -37.5, 96: -52.5, 112: -60,
			128: -69.75, 134: -72, 160: 23.25, 166: 11.25, 176: -93, 198: 48.75, 230: 67.5, 255: -120}, nil},
		{TypeQ5_1, blockQ5_1(), 32, map[int]float32{0: 1, 4: 2, 16: 8.75, 31: 5},
			func(j int) float32 {
				if j < 16 {
					return float32(j)*0.25 + 1
				}
				return float32(31-(j-16))*0.25 + 1
			}},
	}
	for _, tc := range tests {
		t.Run(tc.typ.String(), func(t *testing.T) {
			dst := make([]float32, tc.n)
			if err := DequantizeBlocks(dst, tc.src, tc.typ); err != nil {
				t.Fatal(err)
			}
			for j, w := range tc.want {
				if dst[j] != w {
					t.Errorf("element %d = %v, want %v", j, dst[j], w)
				}
			}
			if tc.all != nil {
				for j := range dst {
					if w := tc.all(j); dst[j] != w {
						t.Errorf("element %d = %v, want %v", j, dst[j], w)
					}
				}
			}
			if err := DequantizeBlocks(dst, tc.src[:len(tc.src)-1], tc.typ); err == nil {
				t.Error("short source accepted")
			}
		})
	}
	for _, typ := range []Type{TypeQ8_1, TypeQ8_K, TypeIQ2_XS, Type(4)} {
		bs := max(typ.BlockSize(), 1)
		if err := DequantizeBlocks(make([]float32, bs), make([]byte, typ.TypeSize()), typ); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: err = %v, want ErrUnsupported", typ, err)
		}
	}
}

func TestTypeTable(t *testing.T) {
	want := map[Type][2]int64{
		TypeF32: {1, 4}, TypeF16: {1, 2}, TypeQ4_0: {32, 18}, TypeQ4_1: {32, 20}, TypeQ5_0: {32, 22},
		TypeQ5_1: {32, 24}, TypeQ8_0: {32, 34}, TypeQ8_1: {32, 36}, TypeQ2_K: {256, 84},
		TypeQ3_K: {256, 110}, TypeQ4_K: {256, 144}, TypeQ5_K: {256, 176}, TypeQ6_K: {256, 210},
		TypeQ8_K: {256, 292}, TypeBF16: {1, 2},
	}
	for typ, w := range want {
		if typ.BlockSize() != w[0] || typ.TypeSize() != w[1] || !typ.Supported() {
			t.Errorf("%s: block %d size %d, want %v", typ, typ.BlockSize(), typ.TypeSize(), w)
		}
	}
	if TypeIQ4_XS.String() != "IQ4_XS" || TypeIQ4_XS.Supported() || Type(4).String() != "Type(4)" {
		t.Error("named-only or unknown types misreported")
	}
}

// sample is a file with every kind of metadata and one tensor of each dequantizable type.
func sample() *builder {
	b := newBuilder()
	b.str("general.architecture", "llama").u32("general.alignment", 32)
	b.raw("u8", ValueUint8, []byte{7}).raw("i8", ValueInt8, []byte{0xff})
	b.raw("u16", ValueUint16, f16(0x1234)).raw("i16", ValueInt16, f16(0xfffe))
	b.raw("i32", ValueInt32, binary.LittleEndian.AppendUint32(nil, 0xfffffffd))
	b.raw("f32", ValueFloat32, binary.LittleEndian.AppendUint32(nil, math.Float32bits(0.5)))
	b.raw("bool", ValueBool, []byte{1})
	b.raw("u64", ValueUint64, binary.LittleEndian.AppendUint64(nil, 1<<40))
	b.raw("i64", ValueInt64, binary.LittleEndian.AppendUint64(nil, math.MaxUint64))
	b.raw("f64", ValueFloat64, binary.LittleEndian.AppendUint64(nil, math.Float64bits(-2.5)))
	b.strs("tokenizer.ggml.tokens", "<s>", "<0x0A>", "hello").f32s("scores", 1, 2)
	b.tensor("q8", TypeQ8_0, append(blockQ8_0(), blockQ8_0()...), 32, 2)
	b.tensor("q4_0", TypeQ4_0, blockQ4_0(), 32)
	b.tensor("q4_1", TypeQ4_1, blockQ4_1(), 32)
	b.tensor("q5_0", TypeQ5_0, blockQ5_0(), 32)
	b.tensor("q5_1", TypeQ5_1, blockQ5_1(), 32)
	b.tensor("f16", TypeF16, append(f16(0x3C00), f16(0xC000)...), 2)
	b.tensor("bf16.3d", TypeBF16, bytes.Repeat(f16(0x3F80), 24), 4, 3, 2)
	return b
}

func TestParse(t *testing.T) {
	data := sample().bytes()
	f, err := NewFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version() != 3 || f.Alignment() != 32 || f.DataOffset()%32 != 0 || f.Mapped() {
		t.Errorf("version %d alignment %d data %d", f.Version(), f.Alignment(), f.DataOffset())
	}
	if len(f.Metadata()) != 14 || f.Metadata()[0].Key != "general.architecture" {
		t.Errorf("metadata %v", f.Metadata())
	}
	check := func(key string, want any) {
		t.Helper()
		v, ok := f.Lookup(key)
		if !ok || v.Data != want {
			t.Errorf("%s = %#v, want %#v", key, v.Data, want)
		}
	}
	check("general.architecture", "llama")
	check("u8", uint8(7))
	check("i8", int8(-1))
	check("u16", uint16(0x1234))
	check("i16", int16(-2))
	check("i32", int32(-3))
	check("f32", float32(0.5))
	check("bool", true)
	check("u64", uint64(1<<40))
	check("i64", int64(-1))
	check("f64", -2.5)
	if v, _ := f.Lookup("tokenizer.ggml.tokens"); v.Type != ValueArray || v.Elem != ValueString || v.Len() != 3 {
		t.Errorf("tokens %#v", v)
	} else if s, _ := v.AsStrings(); s[1] != "<0x0A>" {
		t.Errorf("tokens %q", s)
	}
	if v, _ := f.Lookup("scores"); v.Len() != 2 || v.Data.([]float32)[1] != 2 {
		t.Errorf("scores %#v", v)
	}
	if u, ok := mustLookup(f, "u16").AsUint(); !ok || u != 0x1234 {
		t.Error("AsUint")
	}
	if i, ok := mustLookup(f, "i8").AsInt(); !ok || i != -1 {
		t.Error("AsInt")
	}
	if x, ok := mustLookup(f, "f32").AsFloat(); !ok || x != 0.5 {
		t.Error("AsFloat")
	}
	if len(f.Tensors()) != 7 {
		t.Fatalf("%d tensors", len(f.Tensors()))
	}
	ti, ok := f.Tensor("bf16.3d")
	if !ok || len(ti.Shape) != 3 || ti.Shape[0] != 2 || ti.Shape[1] != 3 || ti.Shape[2] != 4 || ti.Size != 48 || ti.NumElements() != 24 {
		t.Errorf("bf16.3d: %+v", ti)
	}
	q8, _ := f.Tensor("q8")
	if q8.Shape[0] != 2 || q8.Shape[1] != 32 || q8.Size != 68 || q8.Offset != 0 || q8.Begin != f.DataOffset() {
		t.Errorf("q8: %+v", q8)
	}
	q4, _ := f.Tensor("q4_0")
	if q4.Offset != 96 { // 68 padded to 32
		t.Errorf("q4_0 offset %d, want 96", q4.Offset)
	}
	b, err := f.Bytes(q4)
	if err != nil || !bytes.Equal(b, blockQ4_0()) {
		t.Errorf("Bytes(q4_0) = %x, %v", b, err)
	}
	dst := make([]float32, 32)
	if err := f.Dequantize(dst, q8, 32); err != nil || dst[0] != -8 || dst[31] != 7.5 {
		t.Errorf("Dequantize(q8, 32) = %v, %v", dst, err)
	}
	for _, bad := range []int64{-32, 1, 64} {
		if err := f.Dequantize(dst, q8, bad); err == nil {
			t.Errorf("Dequantize at %d accepted", bad)
		}
	}
	if err := f.Dequantize(make([]float32, 31), q8, 0); err == nil {
		t.Error("partial block accepted")
	}
}

func mustLookup(f *File, key string) Value { v, _ := f.Lookup(key); return v }

func TestOpenMapped(t *testing.T) {
	data := sample().bytes()
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !f.Mapped() {
		t.Fatal("not mapped")
	}
	for i := range f.Tensors() {
		ti := &f.Tensors()[i]
		b, err := f.Bytes(ti)
		if err != nil || !bytes.Equal(b, data[ti.Begin:ti.End()]) {
			t.Errorf("%s: bytes differ (%v)", ti.Name, err)
		}
		if ti.Type.CanDequantize() {
			dst := make([]float32, ti.NumElements())
			if err := f.Dequantize(dst, ti, 0); err != nil {
				t.Errorf("%s: %v", ti.Name, err)
			}
		}
	}
	q5, _ := f.Tensor("q5_1")
	dst := make([]float32, 32)
	if err := f.Dequantize(dst, q5, 0); err != nil || dst[16] != 8.75 {
		t.Errorf("q5_1[16] = %v, %v", dst[16], err)
	}
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	os.WriteFile(bad, data[:len(data)-1], 0o644)
	if _, err := Open(bad); !errors.Is(err, ErrFormat) {
		t.Errorf("truncated: %v", err)
	}
}

func u64p(v uint64) *uint64 { return &v }

func TestMalformed(t *testing.T) {
	le := binary.LittleEndian
	tensorFile := func(mod func(*builder)) []byte {
		b := newBuilder()
		b.tensor("a", TypeF32, make([]byte, 16), 4)
		b.tensor("b", TypeF32, make([]byte, 16), 4)
		mod(b)
		return b.bytes()
	}
	tests := []struct {
		name        string
		data        []byte
		unsupported bool
	}{
		{"empty", nil, false},
		{"bad magic", func() []byte { b := newBuilder(); b.magic = "GGUG"; return b.bytes() }(), false},
		{"version 1", func() []byte { b := newBuilder(); b.version = 1; return b.bytes() }(), false},
		{"version 4", func() []byte { b := newBuilder(); b.version = 4; return b.bytes() }(), false},
		{"huge string length", func() []byte {
			b := newBuilder().raw("k", ValueString, le.AppendUint64(nil, 1<<62))
			return b.bytes()
		}(), false},
		{"string past end", func() []byte {
			return newBuilder().raw("k", ValueString, le.AppendUint64(nil, 100)).bytes()
		}(), false},
		{"huge key length", func() []byte {
			d := newBuilder().bytes()[:24]
			le.PutUint64(d[16:], 1)
			return append(d, le.AppendUint64(nil, math.MaxUint64)...)
		}(), false},
		{"huge array", func() []byte {
			v := le.AppendUint32(nil, uint32(ValueUint64))
			return newBuilder().raw("k", ValueArray, le.AppendUint64(v, 1<<60)).bytes()
		}(), false},
		{"huge string array", func() []byte {
			v := le.AppendUint32(nil, uint32(ValueString))
			return newBuilder().raw("k", ValueArray, le.AppendUint64(v, 1<<40)).bytes()
		}(), false},
		{"nested array", func() []byte {
			v := le.AppendUint32(nil, uint32(ValueArray))
			v = le.AppendUint64(v, 1)
			v = le.AppendUint32(v, uint32(ValueUint8))
			v = le.AppendUint64(v, 1)
			return newBuilder().raw("k", ValueArray, append(v, 0)).bytes()
		}(), false},
		{"unknown value type", newBuilder().raw("k", ValueType(13), []byte{0, 0, 0, 0}).bytes(), false},
		{"bad bool", newBuilder().raw("k", ValueBool, []byte{2}).bytes(), false},
		{"duplicate key", newBuilder().u32("k", 1).u32("k", 2).bytes(), false},
		{"alignment not power of two", newBuilder().u32("general.alignment", 24).bytes(), false},
		{"alignment zero", newBuilder().u32("general.alignment", 0).bytes(), false},
		{"alignment wrong type", newBuilder().raw("general.alignment", ValueUint64, le.AppendUint64(nil, 32)).bytes(), false},
		{"huge tensor count", func() []byte { b := newBuilder(); b.ntOverride = u64p(1 << 50); return b.bytes() }(), false},
		{"huge kv count", func() []byte { d := newBuilder().bytes(); le.PutUint64(d[16:], 1<<50); return d }(), false},
		{"n_dims 5", newBuilder().tensor("t", TypeF32, make([]byte, 4), 1, 1, 1, 1, 1).bytes(), false},
		{"unknown type", newBuilder().tensor("t", Type(4), make([]byte, 32), 32).bytes(), false},
		{"unsupported type", newBuilder().tensor("t", TypeIQ2_XS, make([]byte, 32), 256).bytes(), true},
		{"ne0 not block multiple", newBuilder().tensor("t", TypeQ8_0, make([]byte, 34), 16).bytes(), false},
		{"element overflow", newBuilder().tensor("t", TypeF32, nil, 1<<40, 1<<40).bytes(), false},
		{"name too long", newBuilder().tensor(string(make([]byte, 64)), TypeF32, make([]byte, 4), 1).bytes(), false},
		{"duplicate name", newBuilder().tensor("t", TypeF32, make([]byte, 4), 1).tensor("t", TypeF32, make([]byte, 4), 1).bytes(), false},
		{"offset out of bounds", tensorFile(func(b *builder) { b.tensors[1].off = u64p(1 << 40) }), false},
		{"offset misaligned", tensorFile(func(b *builder) { b.tensors[1].off = u64p(16) }), false},
		{"offset overlapping", tensorFile(func(b *builder) { b.tensors[1].off = u64p(0) }), false},
		{"offset hole", tensorFile(func(b *builder) { b.tensors[1].off = u64p(64) }), false},
		{"offset huge", tensorFile(func(b *builder) { b.tensors[0].off = u64p(math.MaxUint64 &^ 31) }), false},
		{"truncated data", func() []byte { d := tensorFile(func(*builder) {}); return d[:len(d)-1] }(), false},
		{"truncated header", func() []byte { d := sample().bytes(); return d[:100] }(), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewFile(bytes.NewReader(tc.data), int64(len(tc.data)))
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("err %v is not a *FormatError", err)
			}
			if tc.unsupported != errors.Is(err, ErrUnsupported) {
				t.Errorf("err = %v, ErrUnsupported wanted: %v", err, tc.unsupported)
			}
			t.Log(err)
		})
	}
}

func TestVersion2AndNoTensors(t *testing.T) {
	for _, v := range []uint32{2, 3} {
		b := newBuilder()
		b.version = v
		d := b.bytes()
		f, err := NewFile(bytes.NewReader(d), int64(len(d)))
		if err != nil || f.Version() != v || len(f.Tensors()) != 0 {
			t.Errorf("v%d: %v", v, err)
		}
	}
	b := newBuilder().u32("general.alignment", 64)
	b.alignment = 64
	b.tensor("x", TypeF32, make([]byte, 4), 1).tensor("y", TypeF32, make([]byte, 4), 1)
	d := b.bytes()
	f, err := NewFile(bytes.NewReader(d), int64(len(d)))
	if err != nil || f.Alignment() != 64 || f.Tensors()[1].Offset != 64 || f.DataOffset()%64 != 0 {
		t.Errorf("alignment 64: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(sample().bytes())
	f.Add(newBuilder().bytes())
	b := newBuilder().u32("general.alignment", 64)
	b.alignment = 64
	f.Add(b.tensor("x", TypeQ4_0, blockQ4_0(), 32).bytes())
	arrays := allArrays().bytes()
	if g, err := NewFile(bytes.NewReader(arrays), int64(len(arrays))); err != nil || len(g.Metadata()) != 13 {
		f.Fatalf("the all-arrays seed does not read: %v", err)
	}
	f.Add(arrays)
	f.Fuzz(func(t *testing.T, data []byte) {
		// ParseHeader over the same bytes, as a header held apart from a file that
		// is larger still, never reads past them and agrees with NewFile.
		h, herr := ParseHeader(data, int64(len(data))+1<<40)
		if herr != nil && !errors.Is(herr, ErrFormat) {
			t.Fatalf("ParseHeader error not wrapping ErrFormat: %v", herr)
		}
		g, err := NewFile(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error not wrapping ErrFormat: %v", err)
			}
			return
		}
		if herr != nil || len(h.Tensors()) != len(g.Tensors()) || h.DataOffset() != g.DataOffset() {
			t.Fatalf("ParseHeader disagrees with NewFile: %v", herr)
		}
		for i := range h.Tensors() {
			if h.Tensors()[i].Begin != g.Tensors()[i].Begin {
				t.Fatalf("ParseHeader places %s at %d, NewFile at %d", h.Tensors()[i].Name, h.Tensors()[i].Begin, g.Tensors()[i].Begin)
			}
			if _, err := h.Bytes(&h.Tensors()[i]); err == nil {
				t.Fatal("a header-only file gave tensor bytes")
			}
		}
		_ = g.Version()
		_ = g.Alignment()
		_ = g.DataOffset()
		_ = g.Size()
		_ = g.Mapped()
		for _, kv := range g.Metadata() {
			v, ok := g.Lookup(kv.Key)
			if !ok || v.Type != kv.Value.Type {
				t.Fatalf("Lookup(%q) disagrees", kv.Key)
			}
			_ = v.Len()
			v.AsUint()
			v.AsInt()
			v.AsFloat()
			v.AsString()
			v.AsBool()
			v.AsStrings()
			_ = v.Type.String() + v.Elem.String()
		}
		for i := range g.Tensors() {
			ti := &g.Tensors()[i]
			if got, ok := g.Tensor(ti.Name); !ok || got != ti {
				t.Fatalf("Tensor(%q) disagrees", ti.Name)
			}
			if ti.End() > g.Size() || ti.Begin < g.DataOffset() {
				t.Fatalf("%s out of bounds", ti.Name)
			}
			if _, err := g.Bytes(ti); err != nil {
				t.Fatal(err)
			}
			_ = ti.Type.String()
			if n := ti.NumElements(); ti.Type.CanDequantize() && n <= 1<<16 {
				if err := g.Dequantize(make([]float32, n), ti, 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Whatever reads must write back (as v3) and read again the same.
		specs := make([]TensorSpec, len(g.Tensors()))
		for i, ti := range g.Tensors() {
			specs[i] = TensorSpec{Name: ti.Name, Type: ti.Type, Shape: ti.Shape}
		}
		l, err := Plan(g.Metadata(), specs)
		if err != nil {
			t.Fatalf("a file the reader accepts cannot be planned: %v", err)
		}
		var out bytes.Buffer
		if err := l.Write(&out, func(i int) ([]byte, error) { return g.Bytes(&g.Tensors()[i]) }); err != nil {
			t.Fatal(err)
		}
		back, err := NewFile(bytes.NewReader(out.Bytes()), int64(out.Len()))
		if err != nil {
			t.Fatalf("rewritten file does not read: %v", err)
		}
		if len(back.Metadata()) != len(g.Metadata()) || len(back.Tensors()) != len(g.Tensors()) {
			t.Fatal("rewritten file lost metadata or tensors")
		}
		for i, kv := range back.Metadata() {
			if w := g.Metadata()[i]; kv.Key != w.Key || !sameValue(kv.Value, w.Value) {
				t.Fatalf("metadata %q changed in the rewrite: %s %v, want %s %v", w.Key, describeValue(kv.Value), kv.Value.Data, describeValue(w.Value), w.Value.Data)
			}
			if v, ok := back.Lookup(kv.Key); !ok || !sameValue(v, kv.Value) {
				t.Fatalf("rewritten file: Lookup(%q) disagrees with Metadata()", kv.Key)
			}
		}
		for i := range back.Tensors() {
			a, b := &g.Tensors()[i], &back.Tensors()[i]
			da, _ := g.Bytes(a)
			db, _ := back.Bytes(b)
			if a.Name != b.Name || a.Type != b.Type || !slices.Equal(a.Shape, b.Shape) || !bytes.Equal(da, db) {
				t.Fatalf("tensor %q changed in the rewrite", a.Name)
			}
		}
	})
}

// sameValue reports whether two metadata values have the same type, element type and
// data, element by element for arrays. Floats compare by their bits, so that a NaN
// written back counts as the same value and -0 is told from +0.
func sameValue(a, b Value) bool {
	if a.Type != b.Type || a.Elem != b.Elem {
		return false
	}
	x, y := reflect.ValueOf(a.Data), reflect.ValueOf(b.Data)
	if !x.IsValid() || !y.IsValid() || x.Type() != y.Type() {
		return false
	}
	// The Go type must be the one the GGUF type names (uint8 for UINT8, []string for
	// an array of STRING, ...), or the writer would encode something else.
	if want := goType(a); want == nil || x.Type() != want {
		return false
	}
	if x.Kind() != reflect.Slice {
		return sameScalar(x, y)
	}
	if x.Len() != y.Len() {
		return false
	}
	for i := range x.Len() {
		if !sameScalar(x.Index(i), y.Index(i)) {
			return false
		}
	}
	return true
}

func sameScalar(x, y reflect.Value) bool {
	switch x.Kind() {
	case reflect.Float32:
		return math.Float32bits(float32(x.Float())) == math.Float32bits(float32(y.Float()))
	case reflect.Float64:
		return math.Float64bits(x.Float()) == math.Float64bits(y.Float())
	}
	return x.Equal(y)
}

// goType is the Go type Value.Data holds for v's GGUF type, nil for none.
func goType(v Value) reflect.Type {
	scalar := map[ValueType]reflect.Type{
		ValueUint8: reflect.TypeFor[uint8](), ValueInt8: reflect.TypeFor[int8](),
		ValueUint16: reflect.TypeFor[uint16](), ValueInt16: reflect.TypeFor[int16](),
		ValueUint32: reflect.TypeFor[uint32](), ValueInt32: reflect.TypeFor[int32](),
		ValueFloat32: reflect.TypeFor[float32](), ValueBool: reflect.TypeFor[bool](),
		ValueString: reflect.TypeFor[string](), ValueUint64: reflect.TypeFor[uint64](),
		ValueInt64: reflect.TypeFor[int64](), ValueFloat64: reflect.TypeFor[float64](),
	}
	if v.Type != ValueArray {
		return scalar[v.Type]
	}
	if e := scalar[v.Elem]; e != nil {
		return reflect.SliceOf(e)
	}
	return nil
}

func describeValue(v Value) string {
	if v.Type == ValueArray {
		return fmt.Sprintf("ARRAY[%d] of %s", v.Len(), v.Elem)
	}
	return v.Type.String()
}

// allArrays is a file with an array of every element type (two elements each, the
// bytes chosen so that every value differs from the next) and a NaN scalar, so that
// the fuzzer starts from every kind of value the round trip must keep.
func allArrays() *builder {
	b := newBuilder()
	le := binary.LittleEndian
	for _, et := range []ValueType{ValueUint8, ValueInt8, ValueUint16, ValueInt16, ValueUint32, ValueInt32,
		ValueFloat32, ValueBool, ValueUint64, ValueInt64, ValueFloat64} {
		val := le.AppendUint64(le.AppendUint32(nil, uint32(et)), 2)
		for i := range 2 * et.size() {
			c := byte(0x81 + 3*i)
			if et == ValueBool {
				c = byte(i % 2)
			}
			val = append(val, c)
		}
		b.raw("arr."+et.String(), ValueArray, val)
	}
	b.raw("nan", ValueFloat32, le.AppendUint32(nil, 0x7fc00001))
	b.raw("empty", ValueArray, le.AppendUint64(le.AppendUint32(nil, uint32(ValueString)), 0))
	return b.tensor("x", TypeF32, make([]byte, 8), 2)
}

// TestSameValue: the fuzz round trip's comparison tells apart what it must.
func TestSameValue(t *testing.T) {
	nan := math.Float32frombits(0x7fc00001)
	v := func(vt ValueType, d any) Value { return Value{Type: vt, Data: d} }
	arr := func(e ValueType, d any) Value { return Value{Type: ValueArray, Elem: e, Data: d} }
	same := [][2]Value{
		{v(ValueUint32, uint32(7)), v(ValueUint32, uint32(7))},
		{v(ValueFloat32, nan), v(ValueFloat32, nan)},
		{v(ValueString, "llama"), v(ValueString, "llama")},
		{arr(ValueString, []string{"a", "b"}), arr(ValueString, []string{"a", "b"})},
		{arr(ValueFloat64, []float64{1, math.Inf(-1)}), arr(ValueFloat64, []float64{1, math.Inf(-1)})},
		{arr(ValueInt8, []int8{}), arr(ValueInt8, []int8{})},
	}
	differ := [][2]Value{
		{v(ValueUint32, uint32(7)), v(ValueUint32, uint32(8))},
		{v(ValueUint32, uint32(7)), v(ValueInt32, int32(7))},
		{v(ValueUint32, uint32(7)), v(ValueUint32, uint64(7))}, // Go type not UINT32's
		{v(ValueFloat32, float32(0)), v(ValueFloat32, float32(math.Copysign(0, -1)))},
		{v(ValueBool, true), v(ValueBool, false)},
		{v(ValueString, "llama"), v(ValueString, "llamb")},
		{arr(ValueString, []string{"a", "b"}), arr(ValueString, []string{"a", "c"})},
		{arr(ValueString, []string{"a", "b"}), arr(ValueString, []string{"a"})},
		{arr(ValueUint8, []uint8{1}), arr(ValueInt8, []int8{1})},
		{arr(ValueUint32, []uint32{1, 2}), arr(ValueUint32, []uint32{1, 3})},
	}
	for _, p := range same {
		if !sameValue(p[0], p[1]) {
			t.Errorf("%v and %v: not the same", p[0], p[1])
		}
	}
	for _, p := range differ {
		if sameValue(p[0], p[1]) || sameValue(p[1], p[0]) {
			t.Errorf("%v and %v: the same", p[0], p[1])
		}
	}
}
