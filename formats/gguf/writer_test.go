package gguf

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// allValues has one metadata pair of every scalar type and an array of each.
func allValues() []KV {
	return []KV{
		{"general.architecture", Value{Type: ValueString, Data: "llama"}},
		{"u8", Value{Type: ValueUint8, Data: uint8(200)}},
		{"i8", Value{Type: ValueInt8, Data: int8(-100)}},
		{"u16", Value{Type: ValueUint16, Data: uint16(60000)}},
		{"i16", Value{Type: ValueInt16, Data: int16(-30000)}},
		{"u32", Value{Type: ValueUint32, Data: uint32(4e9)}},
		{"i32", Value{Type: ValueInt32, Data: int32(-2e9)}},
		{"f32", Value{Type: ValueFloat32, Data: float32(1.5)}},
		{"bool", Value{Type: ValueBool, Data: true}},
		{"u64", Value{Type: ValueUint64, Data: uint64(1) << 60}},
		{"i64", Value{Type: ValueInt64, Data: int64(-1) << 60}},
		{"f64", Value{Type: ValueFloat64, Data: 2.25}},
		{"empty", Value{Type: ValueString, Data: ""}},
		{"a.str", Value{Type: ValueArray, Elem: ValueString, Data: []string{"<0x0A>", "", "é"}}},
		{"a.f32", Value{Type: ValueArray, Elem: ValueFloat32, Data: []float32{-1, 0.5}}},
		{"a.i32", Value{Type: ValueArray, Elem: ValueInt32, Data: []int32{1, -2, 3}}},
		{"a.u8", Value{Type: ValueArray, Elem: ValueUint8, Data: []uint8{}}},
		{"a.bool", Value{Type: ValueArray, Elem: ValueBool, Data: []bool{true, false}}},
		{"a.u64", Value{Type: ValueArray, Elem: ValueUint64, Data: []uint64{7}}},
		{"a.f64", Value{Type: ValueArray, Elem: ValueFloat64, Data: []float64{1e300}}},
		{"a.i16", Value{Type: ValueArray, Elem: ValueInt16, Data: []int16{-5}}},
		{"a.u16", Value{Type: ValueArray, Elem: ValueUint16, Data: []uint16{5}}},
		{"a.i8", Value{Type: ValueArray, Elem: ValueInt8, Data: []int8{-1}}},
		{"a.u32", Value{Type: ValueArray, Elem: ValueUint32, Data: []uint32{9}}},
		{"a.i64", Value{Type: ValueArray, Elem: ValueInt64, Data: []int64{-9}}},
	}
}

func TestWriteReadBack(t *testing.T) {
	for _, align := range []uint32{0, 32, 64, 8} {
		meta := allValues()
		if align != 0 {
			meta = append(meta, KV{"general.alignment", Value{Type: ValueUint32, Data: align}})
		}
		specs := []TensorSpec{
			{"token_embd.weight", TypeQ8_0, []int64{3, 64}},
			{"norm.weight", TypeF32, []int64{3}}, // 12 bytes: padded
			{"odd", TypeF16, []int64{5, 1}},
			{"scalar", TypeF32, nil},
			{"k", TypeQ4_K, []int64{256}},
			{"b", TypeBF16, []int64{2, 3, 1, 1}},
		}
		l, err := Plan(meta, specs)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, uint64(align)))
		data := make([][]byte, len(specs))
		for i, ti := range l.Tensors {
			data[i] = make([]byte, ti.Size)
			for j := range data[i] {
				data[i][j] = byte(rng.Uint32())
			}
		}
		var buf bytes.Buffer
		if err := l.Write(&buf, func(i int) ([]byte, error) { return data[i], nil }); err != nil {
			t.Fatal(err)
		}
		if int64(buf.Len()) != l.Size {
			t.Fatalf("wrote %d bytes, planned %d", buf.Len(), l.Size)
		}
		f, err := NewFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatalf("alignment %d: reading back: %v", align, err)
		}
		if f.Version() != 3 || f.Alignment() != l.Alignment || (align != 0 && l.Alignment != int64(align)) {
			t.Errorf("version %d alignment %d, want 3 and %d", f.Version(), f.Alignment(), l.Alignment)
		}
		if got := f.Metadata(); len(got) != len(meta) {
			t.Errorf("%d metadata pairs, want %d", len(got), len(meta))
		} else {
			for i, kv := range got { // %T %v: an empty slice reads back as nil
				if g, w := fmt.Sprintf("%s %v %v %T %v", kv.Key, kv.Value.Type, kv.Value.Elem, kv.Value.Data, kv.Value.Data),
					fmt.Sprintf("%s %v %v %T %v", meta[i].Key, meta[i].Value.Type, meta[i].Value.Elem, meta[i].Value.Data, meta[i].Value.Data); g != w {
					t.Errorf("metadata %d: got %s, want %s", i, g, w)
				}
			}
		}
		for i, ti := range f.Tensors() {
			want := l.Tensors[i]
			if ti.Name != specs[i].Name || ti.Type != specs[i].Type || !slices.Equal(ti.Shape, want.Shape) ||
				ti.Begin != want.Begin || ti.Size != want.Size || ti.Begin%l.Alignment != 0 {
				t.Errorf("tensor %d: got %+v, planned %+v", i, ti, want)
			}
			b := make([]byte, ti.Size)
			if _, err := f.Section(&ti).Read(b); err != nil && ti.Size > 0 {
				t.Fatal(err)
			}
			if !bytes.Equal(b, data[i]) {
				t.Errorf("tensor %q: data differs", ti.Name)
			}
		}
	}
}

func TestPlanRejects(t *testing.T) {
	str := Value{Type: ValueString, Data: "x"}
	tests := []struct {
		name  string
		meta  []KV
		specs []TensorSpec
		want  string
	}{
		{"duplicate key", []KV{{"a", str}, {"a", str}}, nil, "twice"},
		{"nested array", []KV{{"a", Value{Type: ValueArray, Elem: ValueArray, Data: [][]string{}}}}, nil, "nested"},
		{"alignment type", []KV{{"general.alignment", Value{Type: ValueUint64, Data: uint64(32)}}}, nil, "alignment"},
		{"alignment power", []KV{{"general.alignment", Value{Type: ValueUint32, Data: uint32(48)}}}, nil, "alignment"},
		{"value type mismatch", []KV{{"a", Value{Type: ValueUint32, Data: "x"}}}, nil, "holds string"},
		{"array element mismatch", []KV{{"a", Value{Type: ValueArray, Elem: ValueInt32, Data: []string{"x"}}}}, nil, "element 0"},
		{"duplicate tensor", nil, []TensorSpec{{"t", TypeF32, []int64{1}}, {"t", TypeF32, []int64{1}}}, "twice"},
		{"long name", nil, []TensorSpec{{strings.Repeat("n", 64), TypeF32, []int64{1}}}, "at most 63"},
		{"rank", nil, []TensorSpec{{"t", TypeF32, []int64{1, 1, 1, 1, 1}}}, "dimensions"},
		{"block", nil, []TensorSpec{{"t", TypeQ8_0, []int64{32, 48}}}, "block size"},
		{"unsupported type", nil, []TensorSpec{{"t", TypeIQ2_XS, []int64{256}}}, "cannot be written"},
	}
	for _, tc := range tests {
		_, err := Plan(tc.meta, tc.specs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
}
