package main

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
)

// GGUF tensor names of the bad-input fixtures.
const (
	badGA = "blk.0.attn_q.weight"
	badGB = "blk.0.attn_norm.weight"
)

// badGGUF returns a valid two-tensor GGUF file (a Q8_0 [2, 32] matrix and an F32
// norm of 32) with general.alignment 32, and the offset in it of each tensor info's
// fields, for cases that corrupt one of them.
type badGGUFFile struct {
	b                 []byte
	typeAt, offsetAt  map[string]int // byte offset of the type and offset fields
	ne0At             map[string]int
	alignValueAt      int
	tensorCountAt     int
	versionAt         int
	lastTensorDataEnd int
}

func badGGUF(t *testing.T) *badGGUFFile {
	t.Helper()
	meta := []gguf.KV{
		{Key: "general.architecture", Value: gguf.Value{Type: gguf.ValueString, Data: "llama"}},
		{Key: "general.alignment", Value: gguf.Value{Type: gguf.ValueUint32, Data: uint32(32)}},
	}
	specs := []gguf.TensorSpec{{Name: badGA, Type: gguf.TypeQ8_0, Shape: []int64{2, 32}}, {Name: badGB, Type: gguf.TypeF32, Shape: []int64{32}}}
	l, err := gguf.Plan(meta, specs)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	err = l.Write(&buf, func(i int) ([]byte, error) {
		v := make([]float32, 64)
		for j := range v {
			v[j] = float32(j%7) * 0.01
		}
		n := []int{64, 32}[i]
		dt := specs[i].Type.DType()
		b := make([]byte, dt.Bytes(int64(n)))
		return b, dtype.Encode(b, v[:n], dt)
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &badGGUFFile{b: buf.Bytes(), typeAt: map[string]int{}, offsetAt: map[string]int{}, ne0At: map[string]int{},
		versionAt: 4, tensorCountAt: 8, lastTensorDataEnd: int(l.Tensors[1].Begin + l.Tensors[1].Size)}
	f.alignValueAt = bytes.Index(f.b, []byte("general.alignment")) + len("general.alignment") + 4
	for _, s := range specs {
		at := bytes.Index(f.b, []byte(s.Name)) + len(s.Name) // then n_dims, ne[], type, offset
		f.ne0At[s.Name] = at + 4
		f.typeAt[s.Name] = at + 4 + 8*len(s.Shape)
		f.offsetAt[s.Name] = f.typeAt[s.Name] + 4
	}
	return f
}

func (f *badGGUFFile) with(patch func(b []byte) []byte) []byte {
	return patch(bytes.Clone(f.b))
}

// badGGUFCases are malformed or unsupported GGUF inputs; each must exit 3 naming the
// file (and the tensor where one is concerned) and the problem.
func badGGUFCases(t *testing.T) []badInputCase {
	g := badGGUF(t)
	le := binary.LittleEndian
	u32 := func(at int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint32(b[at:], v); return b }
	}
	u64 := func(at int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint64(b[at:], v); return b }
	}
	cases := []struct {
		name, tensor string
		want         string
		bytes        []byte
	}{
		{"GGUF bad magic", "", "bad magic", g.with(func(b []byte) []byte { copy(b, "GGUG"); return b })},
		{"GGUF version 1", "", "unsupported version 1", g.with(u32(g.versionAt, 1))},
		{"GGUF tensor count past the file", "", "tensor count", g.with(u64(g.tensorCountAt, 1<<40))},
		{"GGUF alignment not a power of two", "", "power of two", g.with(u32(g.alignValueAt, 48))},
		{"GGUF unknown type id", badGA, "unknown ggml type id 99", g.with(u32(g.typeAt[badGA], 99))},
		{"GGUF type gomerge cannot convert", badGA, "Q8_1", nil}, // built below: sizes differ
		{"GGUF ne[0] not whole blocks", badGA, "block size", g.with(u64(g.ne0At[badGA], 31))},
		{"GGUF misaligned offset", badGB, "not a multiple of the alignment", g.with(u64(g.offsetAt[badGB], 8))},
		{"GGUF offset leaves a hole", badGB, "hole", g.with(u64(g.offsetAt[badGB], 128))},
		{"GGUF offsets overlap", badGB, "overlaps", g.with(u64(g.offsetAt[badGB], 32))},
		{"GGUF truncated data", badGB, "truncated", g.b[:g.lastTensorDataEnd-1]},
		{"GGUF truncated header", "", "gguf", g.b[:30]},
	}
	// Q8_1 blocks are 36 bytes: a [2, 32] Q8_1 tensor in a file planned for it.
	l, err := gguf.Plan(nil, []gguf.TensorSpec{{Name: badGA, Type: gguf.TypeQ8_1, Shape: []int64{2, 32}}})
	if err != nil {
		t.Fatal(err)
	}
	var q81 bytes.Buffer
	if err := l.Write(&q81, func(int) ([]byte, error) { return make([]byte, 72), nil }); err != nil {
		t.Fatal(err)
	}
	cases[5].bytes = q81.Bytes()

	var out []badInputCase
	for _, c := range cases {
		out = append(out, badInputCase{
			name: c.name, code: exitBadInput, tensor: c.tensor, want: []string{c.want},
			setup: func(t *testing.T, f *badFixture) {
				f.anchor = filepath.Join(f.in, "anchor.gguf")
				f.current = filepath.Join(f.in, "current.gguf")
				f.outPath = filepath.Join(f.out, "merged.gguf")
				badWriteBytes(t, f.anchor, g.b)
				badWriteBytes(t, f.current, c.bytes)
			},
		})
	}
	return out
}

// TestBadGGUFInput runs the GGUF cases through the same checks as TestBadInput.
func TestBadGGUFInput(t *testing.T) {
	valid := badGGUF(t)
	if _, err := gguf.NewFile(bytes.NewReader(valid.b), int64(len(valid.b))); err != nil {
		t.Fatalf("the unmodified fixture does not read: %v", err)
	}
	for _, c := range badGGUFCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runBadInputCase(t, c)
		})
	}
}
