package imatrix

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	"github.com/gomerge/gomerge/formats/imatrix/imatrixtest"
)

// legacyEntry is an entry with its values as stored (means times ncall).
type legacyEntry struct {
	name   string
	ncall  int32
	values []float32
}

func legacyFile(entries []legacyEntry, tail []byte) []byte {
	var es []imatrixtest.Entry
	for _, e := range entries {
		m := append([]float32(nil), e.values...)
		if e.ncall > 0 { // undo Legacy's scaling
			for i := range m {
				m[i] /= float32(e.ncall)
			}
		}
		es = append(es, imatrixtest.Entry{Name: e.name, Ncall: e.ncall, Means: m})
	}
	return imatrixtest.Legacy(es, tail)
}

var (
	datasetTail = imatrixtest.Tail
	f32Tensor   = imatrixtest.F32
)

// ggufFile writes an importance matrix in the GGUF form and returns its bytes.
func ggufFile(t *testing.T, meta []gguf.KV, ts []gguftest.Tensor) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "imatrix.gguf")
	if err := gguftest.WriteFile(p, meta, ts); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func imatrixMeta() []gguf.KV { return imatrixtest.Meta("wiki.train.raw", 100) }

func TestLegacy(t *testing.T) {
	data := legacyFile([]legacyEntry{
		{"blk.0.attn_q.weight", 10, []float32{10, 20, 0, 5}},
		{"output.weight", 0, []float32{3, 4}},
	}, datasetTail(10, "calib.txt"))
	m, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	// Stored values are means times ncall: the importance divides them back; an
	// entry with ncall 0 keeps its values.
	want := map[string][]float32{"blk.0.attn_q.weight": {1, 2, 0, 0.5}, "output.weight": {3, 4}}
	for name, w := range want {
		got, err := m.For(name, int64(len(w)))
		if err != nil {
			t.Fatal(err)
		}
		for i := range w {
			if got[i] != w[i] {
				t.Errorf("%s: %v, want %v", name, got, w)
				break
			}
		}
	}
	if m.ChunkCount != 10 || len(m.Datasets) != 1 || m.Datasets[0] != "calib.txt" {
		t.Errorf("chunks %d, datasets %q", m.ChunkCount, m.Datasets)
	}
	if v, err := m.For("blk.1.ffn_down.weight", 4); v != nil || err != nil {
		t.Errorf("a tensor without an entry: %v, %v; want nil, nil", v, err)
	}
	// Without the optional tail, and with only the chunk count.
	for _, tail := range [][]byte{nil, datasetTail(7, "")[:4]} {
		if _, err := Parse(legacyFile([]legacyEntry{{"a", 1, []float32{1}}}, tail)); err != nil {
			t.Errorf("tail %x: %v", tail, err)
		}
	}
}

func TestGGUF(t *testing.T) {
	data := ggufFile(t, imatrixMeta(), []gguftest.Tensor{
		f32Tensor("blk.0.attn_q.weight.in_sum2", []int64{1, 4}, []float32{10, 20, 0, 5}),
		f32Tensor("blk.0.attn_q.weight.counts", []int64{1, 1}, []float32{10}),
		f32Tensor("blk.0.attn_q.weight.in_sum", []int64{1, 4}, []float32{1, -2, 0, 3}),
		// Two experts, the second never used: its importance is 1 (llama-quantize's rule).
		f32Tensor("blk.0.ffn_up_exps.weight.in_sum2", []int64{2, 2}, []float32{4, 8, 0, 0}),
		f32Tensor("blk.0.ffn_up_exps.weight.counts", []int64{2, 1}, []float32{4, 0}),
	})
	m, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.For("blk.0.attn_q.weight", 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{1, 2, 0, 0.5}; !slices.Equal(got, want) {
		t.Errorf("attn_q: %v, want %v", got, want)
	}
	if e := m.Entries["blk.0.ffn_up_exps.weight"]; e.Rows != 2 || !slices.Equal(e.Values, []float32{1, 2, 1, 1}) {
		t.Errorf("experts: %+v", e)
	}
	if m.ChunkCount != 100 || len(m.Datasets) != 1 || m.Datasets[0] != "wiki.train.raw" {
		t.Errorf("chunks %d, datasets %q", m.ChunkCount, m.Datasets)
	}
	if _, err := m.For("blk.0.attn_q.weight", 8); !errors.Is(err, ErrFormat) {
		t.Errorf("a tensor of another row length: %v, want ErrFormat", err)
	}
	if _, err := m.For("blk.0.ffn_up_exps.weight", 2); !errors.Is(err, ErrFormat) {
		t.Errorf("stacked experts: %v, want ErrFormat (gomerge has no mixture-of-experts tensors to use them on)", err)
	}
}

// TestMalformed: every malformed importance matrix is refused with ErrFormat (exit 3
// in the command) and a message saying what is wrong.
func TestMalformed(t *testing.T) {
	good := legacyFile([]legacyEntry{{"blk.0.attn_q.weight", 2, []float32{1, 2}}}, datasetTail(2, "c.txt"))
	le := binary.LittleEndian
	patch := func(off int, v uint32) []byte {
		b := append([]byte(nil), good...)
		le.PutUint32(b[off:], v)
		return b
	}
	nameLen := len("blk.0.attn_q.weight")
	ncallAt, nvalAt := 8+nameLen, 12+nameLen
	cases := []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty", nil, "truncated"},
		{"zero entries", le.AppendUint32(nil, 0), "no data"},
		{"negative entries", le.AppendUint32(nil, 0xffffffff), "no data"},
		{"more entries than data", patch(0, 2), "truncated"},
		{"name length zero", patch(4, 0), "name length"},
		{"name length past the end", patch(4, 1<<20), "name length"},
		{"negative call count", patch(ncallAt, 0xffffffff), "calls"},
		{"zero values", patch(nvalAt, 0), "values"},
		{"values past the end", patch(nvalAt, 1000), "values"},
		{"truncated values", good[:nvalAt+6], "values"},
		{"NaN value", patch(nvalAt+4, 0x7fc00000), "not a finite mean square"},
		{"infinite value", patch(nvalAt+4, 0x7f800000), "not a finite mean square"},
		{"negative value", patch(nvalAt+4, math.Float32bits(-1)), "not a finite mean square"},
		{"duplicate entry", legacyFile([]legacyEntry{{"a", 1, []float32{1}}, {"a", 1, []float32{1}}}, nil), "twice"},
		{"truncated chunk count", append(legacyFile([]legacyEntry{{"a", 1, []float32{1}}}, nil), 1, 2), "truncated"},
		{"dataset name past the end", good[:len(good)-1], "dataset name"},
		{"bytes after the dataset name", append(append([]byte(nil), good...), 'x'), "dataset name"},
		{"gguf without entries", ggufFile(t, imatrixMeta(), []gguftest.Tensor{f32Tensor("x", []int64{2}, []float32{1, 2})}), "not an importance matrix"},
		{"gguf sums without counts", ggufFile(t, imatrixMeta(), []gguftest.Tensor{f32Tensor("a.in_sum2", []int64{1, 2}, []float32{1, 2})}), "needs both"},
		{"gguf counts without sums", ggufFile(t, imatrixMeta(), []gguftest.Tensor{f32Tensor("a.counts", []int64{1, 1}, []float32{1})}), "needs both"},
		{"gguf rows that do not divide", ggufFile(t, imatrixMeta(), []gguftest.Tensor{
			f32Tensor("a.in_sum2", []int64{1, 3}, []float32{1, 2, 3}), f32Tensor("a.counts", []int64{2, 1}, []float32{1, 1})}), "not whole rows"},
		{"gguf F16 sums", ggufFile(t, imatrixMeta(), []gguftest.Tensor{
			{Name: "a.in_sum2", DType: dtype.F16, Shape: []int64{1, 2}, Data: make([]byte, 4)}, f32Tensor("a.counts", []int64{1, 1}, []float32{1})}), "want F32"},
		{"gguf NaN count", ggufFile(t, imatrixMeta(), []gguftest.Tensor{
			f32Tensor("a.in_sum2", []int64{1, 2}, []float32{1, 2}), f32Tensor("a.counts", []int64{1, 1}, []float32{float32(math.NaN())})}), "not a finite"},
		{"gguf count so small the mean overflows", ggufFile(t, imatrixMeta(), []gguftest.Tensor{
			f32Tensor("a.in_sum2", []int64{1, 2}, []float32{1, 2}), f32Tensor("a.counts", []int64{1, 1}, []float32{math.SmallestNonzeroFloat32})}), "+Inf, not a finite"},
		{"gguf in_sum of another size", ggufFile(t, imatrixMeta(), []gguftest.Tensor{
			f32Tensor("a.in_sum2", []int64{1, 2}, []float32{1, 2}), f32Tensor("a.counts", []int64{1, 1}, []float32{1}), f32Tensor("a.in_sum", []int64{1, 1}, []float32{1})}), "in_sum values"},
		{"gguf chunk count of another type", ggufFile(t, []gguf.KV{{Key: "imatrix.chunk_count", Value: gguf.Value{Type: gguf.ValueString, Data: "x"}}}, []gguftest.Tensor{
			f32Tensor("a.in_sum2", []int64{1, 2}, []float32{1, 2}), f32Tensor("a.counts", []int64{1, 1}, []float32{1})}), "chunk_count"},
		{"truncated gguf", ggufFile(t, imatrixMeta(), []gguftest.Tensor{
			f32Tensor("a.in_sum2", []int64{1, 2}, []float32{1, 2}), f32Tensor("a.counts", []int64{1, 1}, []float32{1})})[:40], "gguf"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.imatrix")
			if err := os.WriteFile(p, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := Read(p)
			if err == nil {
				t.Fatalf("no error; read %d entries", len(m.Entries))
			}
			if !errors.Is(err, ErrFormat) && !errors.Is(err, gguf.ErrFormat) {
				t.Errorf("%v: not a format error", err)
			}
			if !strings.HasPrefix(err.Error(), p+": ") || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q: want the file's name and %q", err, c.msg)
			}
		})
	}
}

// FuzzParse: no input makes Parse panic or hang, and what it accepts has only
// finite, non-negative importances in whole rows.
func FuzzParse(f *testing.F) {
	f.Add(legacyFile([]legacyEntry{{"blk.0.attn_q.weight", 2, []float32{1, 2}}}, datasetTail(2, "c.txt")))
	f.Add(legacyFile([]legacyEntry{{"a", 0, []float32{1}}, {"b", 3, []float32{0, 4, 5}}}, nil))
	p := filepath.Join(f.TempDir(), "seed.gguf")
	if err := gguftest.WriteFile(p, imatrixMeta(), []gguftest.Tensor{
		f32Tensor("a.in_sum2", []int64{2, 2}, []float32{1, 2, 3, 4}), f32Tensor("a.counts", []int64{2, 1}, []float32{1, 0}),
	}); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, gguf.ErrFormat) {
				t.Fatalf("%v: not a format error", err)
			}
			return
		}
		if len(m.Entries) == 0 {
			t.Fatal("accepted a matrix without entries")
		}
		for name, e := range m.Entries {
			if e.Rows < 1 || len(e.Values) == 0 || len(e.Values)%e.Rows != 0 {
				t.Fatalf("%s: %d values in %d rows", name, len(e.Values), e.Rows)
			}
			for _, v := range e.Values {
				if !(v >= 0) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s: importance %v", name, v)
				}
			}
		}
	})
}
