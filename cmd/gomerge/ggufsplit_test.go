package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
)

// writeSplit writes ts as a model split in len(cuts)+1 parts the way llama.cpp's
// gguf-split does (the metadata in part 1, the split keys in every part), part i
// holding the tensors from cuts[i-1] to cuts[i]. keys edits each part's split keys.
func writeSplit(t *testing.T, prefix string, c gguftest.Config, ts []gguftest.Tensor, cuts []int, keys func(i int, no, count *uint16, total *int32)) []string {
	t.Helper()
	bounds := append(append([]int{0}, cuts...), len(ts))
	n := len(bounds) - 1
	var paths []string
	for i := range n {
		no, count, total := uint16(i), uint16(n), int32(len(ts))
		if keys != nil {
			keys(i, &no, &count, &total)
		}
		var meta []gguf.KV
		if i == 0 {
			meta = gguftest.Metadata(c, "split")
		}
		meta = append(meta,
			gguf.KV{Key: gguf.KeySplitNo, Value: gguf.Value{Type: gguf.ValueUint16, Data: no}},
			gguf.KV{Key: gguf.KeySplitCount, Value: gguf.Value{Type: gguf.ValueUint16, Data: count}},
			gguf.KV{Key: gguf.KeySplitTensors, Value: gguf.Value{Type: gguf.ValueInt32, Data: total}})
		p := gguf.SplitName(prefix, i, n)
		if err := gguftest.WriteFile(p, meta, ts[bounds[i]:bounds[i+1]]); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// TestGGUFSplitInput: a model split in three files merges exactly as the same model
// in one file, named by any of its parts; a broken set exits 3 naming the file at
// fault and writes nothing.
func TestGGUFSplitInput(t *testing.T) {
	dir := t.TempDir()
	c := gguftest.Tiny
	anchor := gguftest.Random(c, dtype.Q8_0, 1)
	current := gguftest.Random(c, dtype.Q8_0, 2)
	whole := filepath.Join(dir, "anchor.gguf")
	writeGGUF(t, whole, c, anchor)
	cur := filepath.Join(dir, "current.gguf")
	writeGGUF(t, cur, c, current)
	parts := writeSplit(t, filepath.Join(dir, "split"), c, anchor, []int{3, 10}, nil)

	merge := func(anchor, out string) (int, string) {
		code, _, stderr := gomerge(t, "sfa", "--anchor", anchor, "--current", cur, "--beta", "0.5", "--out", out)
		return code, stderr
	}
	if code, stderr := merge(whole, filepath.Join(dir, "want.gguf")); code != 0 {
		t.Fatalf("whole: exit %d: %s", code, stderr)
	}
	_, want, err := gguftest.Read(filepath.Join(dir, "want.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{parts[0], parts[2]} {
		out := filepath.Join(dir, "got.gguf")
		if code, stderr := merge(p, out); code != 0 {
			t.Fatalf("split via %s: exit %d: %s", p, code, stderr)
		}
		meta, got, err := gguftest.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%d tensors, want %d", len(got), len(want))
		}
		for i := range got {
			if got[i].Name != want[i].Name || got[i].DType != want[i].DType || !slices.Equal(got[i].Data, want[i].Data) {
				t.Errorf("split: tensor %d (%s) differs from the whole model's merge", i, got[i].Name)
			}
		}
		for _, kv := range meta {
			if strings.HasPrefix(kv.Key, "split.") {
				t.Errorf("output keeps %s", kv.Key)
			}
		}
	}

	trunc := func(i int) func() {
		return func() {
			st, err := os.Stat(parts[i])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(parts[i], st.Size()-7); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name  string
		make  func() []string
		bad   int // index of the part the error must name
		named string
	}{
		{"missing part", func() []string {
			ps := writeSplit(t, filepath.Join(dir, "m"), c, anchor, []int{3, 10}, nil)
			os.Remove(ps[1])
			return ps
		}, 1, ""},
		{"split count wrong", func() []string {
			return writeSplit(t, filepath.Join(dir, "w"), c, anchor, []int{3, 10}, func(i int, no, count *uint16, total *int32) {
				if i == 2 {
					*count = 4
				}
			})
		}, 2, ""},
		{"parts disagree", func() []string {
			return writeSplit(t, filepath.Join(dir, "d"), c, anchor, []int{3, 10}, func(i int, no, count *uint16, total *int32) {
				if i == 1 {
					*total = 99
				}
			})
		}, 1, ""},
		{"tensor count wrong", func() []string {
			return writeSplit(t, filepath.Join(dir, "n"), c, anchor, []int{3, 10}, func(i int, no, count *uint16, total *int32) { *total = 5 })
		}, 0, ""},
		{"truncated part", func() []string {
			ps := writeSplit(t, filepath.Join(dir, "t"), c, anchor, []int{3, 10}, nil)
			parts = ps
			trunc(2)()
			return ps
		}, 2, ""},
		{"unnamed part", func() []string {
			ps := writeSplit(t, filepath.Join(dir, "u"), c, anchor, []int{3, 10}, nil)
			p := filepath.Join(dir, "renamed.gguf")
			if err := os.Rename(ps[0], p); err != nil {
				t.Fatal(err)
			}
			return []string{p}
		}, 0, ""},
	} {
		ps := tc.make()
		out := filepath.Join(dir, "bad.gguf")
		code, stderr := merge(ps[0], out)
		if code != exitBadInput || !strings.Contains(stderr, ps[tc.bad]) {
			t.Errorf("%s: exit %d, %q; want %d naming %s", tc.name, code, stderr, exitBadInput, ps[tc.bad])
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: output written", tc.name)
		}
	}
	// --in-place on a split model is refused (the merge would replace one part).
	sp := writeSplit(t, filepath.Join(dir, "ip"), c, anchor, []int{3}, nil)
	code, _, stderr := gomerge(t, "sfa", "--anchor", sp[0], "--current", sp[0], "--in-place")
	if code == 0 || !strings.Contains(stderr, "in place") {
		t.Errorf("--in-place on a split model: exit %d, %q", code, stderr)
	}
}
