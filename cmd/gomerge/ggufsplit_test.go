package main

import (
	"os"
	"os/exec"
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
}

// readSet reads every tensor of a split set through gomerge's reader (a merge of the
// set with itself at β = 0.5 is the set), checking the set on the way.
func readSplitTensors(t *testing.T, paths []string) []gguftest.Tensor {
	t.Helper()
	var all []gguftest.Tensor
	for i, p := range paths {
		meta, ts, err := gguftest.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		no, _ := metaValue(meta, gguf.KeySplitNo)
		count, _ := metaValue(meta, gguf.KeySplitCount)
		total, _ := metaValue(meta, gguf.KeySplitTensors)
		if no.Data != uint16(i) || count.Data != uint16(len(paths)) || total.Type != gguf.ValueInt32 {
			t.Errorf("%s: split keys %v %v %v", p, no.Data, count.Data, total.Data)
		}
		if _, ok := metaValue(meta, "general.architecture"); ok != (i == 0) {
			t.Errorf("%s: metadata in part %d", p, i+1)
		}
		all = append(all, ts...)
	}
	return all
}

// TestGGUFSplitOutput: --split-max-tensors and --split-max-size write llama.cpp's
// named parts holding the whole merge; --in-place on a split model rewrites its parts
// with the same split; the parts read back as an input.
func TestGGUFSplitOutput(t *testing.T) {
	dir := t.TempDir()
	c := gguftest.Tiny
	a, cur := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "c.gguf")
	writeGGUF(t, a, c, gguftest.Random(c, dtype.Q8_0, 1))
	writeGGUF(t, cur, c, gguftest.Random(c, dtype.Q8_0, 2))
	sfa := func(extra ...string) {
		t.Helper()
		if code, _, stderr := gomerge(t, append([]string{"sfa", "--anchor", a, "--current", cur, "--beta", "0.5"}, extra...)...); code != 0 {
			t.Fatalf("%v: exit %d: %s", extra, code, stderr)
		}
	}
	sfa("--out", filepath.Join(dir, "whole.gguf"))
	_, want, err := gguftest.Read(filepath.Join(dir, "whole.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	same := func(what string, got []gguftest.Tensor) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d tensors, want %d", what, len(got), len(want))
		}
		for i := range got {
			if got[i].Name != want[i].Name || !slices.Equal(got[i].Data, want[i].Data) {
				t.Errorf("%s: tensor %s differs from the single file's", what, got[i].Name)
			}
		}
	}
	// Tiny has 21 tensors: 8 per part gives 3 parts.
	sfa("--out", filepath.Join(dir, "t.gguf"), "--split-max-tensors", "8")
	tp := []string{gguf.SplitName(filepath.Join(dir, "t"), 0, 3), gguf.SplitName(filepath.Join(dir, "t"), 1, 3), gguf.SplitName(filepath.Join(dir, "t"), 2, 3)}
	same("split-max-tensors", readSplitTensors(t, tp))
	if _, err := os.Stat(filepath.Join(dir, "t.gguf")); !os.IsNotExist(err) {
		t.Error("t.gguf written beside its parts")
	}
	// By size: the largest tensor is the embedding (259×64 Q8_0, 17,612 bytes
	// padded to 17,632); a bound of 20,000 bytes gives several parts, each at most that
	// (or one tensor).
	sfa("--out", filepath.Join(dir, "s.gguf"), "--split-max-size", "20000")
	sp, _ := filepath.Glob(filepath.Join(dir, "s-*-of-*.gguf"))
	slices.Sort(sp)
	if len(sp) < 2 {
		t.Fatalf("--split-max-size 20000: parts %v", sp)
	}
	same("split-max-size", readSplitTensors(t, sp))
	// A split copy of the current model (β = 0), then merged in place with the
	// anchor: its three parts now hold the same merge as the single file.
	if code, _, stderr := gomerge(t, "sfa", "--anchor", a, "--current", cur, "--beta", "0", "--out", filepath.Join(dir, "ip.gguf"), "--split-max-tensors", "8"); code != 0 {
		t.Fatalf("split copy: exit %d: %s", code, stderr)
	}
	ip := []string{gguf.SplitName(filepath.Join(dir, "ip"), 0, 3), gguf.SplitName(filepath.Join(dir, "ip"), 1, 3), gguf.SplitName(filepath.Join(dir, "ip"), 2, 3)}
	before := readSplitTensors(t, ip)
	code, _, stderr := gomerge(t, "sfa", "--anchor", a, "--current", ip[1], "--beta", "0.5", "--in-place")
	if code != 0 {
		t.Fatalf("--in-place: exit %d: %s", code, stderr)
	}
	after := readSplitTensors(t, ip)
	same("in place", after)
	if slices.EqualFunc(before, after, func(x, y gguftest.Tensor) bool { return slices.Equal(x.Data, y.Data) }) {
		t.Error("in place: the parts did not change")
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestGGUFSplitLlama: llama.cpp (node-llama-cpp) loads a split model that gomerge
// wrote, given its first part, and generates the same greedy tokens as the same
// merge in one file; @huggingface/gguf checks every part's layout.
func TestGGUFSplitLlama(t *testing.T) {
	node := nodeDir(t)
	dir := t.TempDir()
	c := gguftest.Tiny
	a, cur := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "c.gguf")
	writeGGUF(t, a, c, gguftest.Random(c, dtype.Q8_0, 1))
	writeGGUF(t, cur, c, gguftest.Random(c, dtype.Q8_0, 2))
	for _, extra := range [][]string{{"--out", filepath.Join(dir, "whole.gguf")}, {"--out", filepath.Join(dir, "split.gguf"), "--split-max-tensors", "8"}} {
		if code, _, stderr := gomerge(t, append([]string{"sfa", "--anchor", a, "--current", cur, "--beta", "0.5"}, extra...)...); code != 0 {
			t.Fatalf("%v: exit %d: %s", extra, code, stderr)
		}
	}
	parts, _ := filepath.Glob(filepath.Join(dir, "split-*-of-00003.gguf"))
	if len(parts) != 3 {
		t.Fatalf("parts %v, want 3", parts)
	}
	check := exec.Command("node", append([]string{"check.mjs"}, parts...)...)
	check.Dir = node
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("@huggingface/gguf check: %v\n%s", err, out)
	}
	first := gguf.SplitName(filepath.Join(dir, "split"), 0, 3)
	tokens := llamaGenerate(t, node, 12, filepath.Join(dir, "whole.gguf"), first)
	if len(tokens) != 2 || len(tokens[0]) != 12 || !slices.Equal(tokens[0], tokens[1]) {
		t.Errorf("tokens %v: want the split model's 12 tokens equal to the single file's", tokens)
	}
}
