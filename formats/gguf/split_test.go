package gguf

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// splitPart writes one part of a split model: the split keys (as gguf-split writes
// them, UINT16, UINT16, INT32), extra metadata, and F32 tensors of 32 elements.
func splitPart(t testing.TB, no, count, total int, extra []KV, names ...string) []byte {
	t.Helper()
	meta := []KV{
		{Key: KeySplitNo, Value: Value{Type: ValueUint16, Data: uint16(no)}},
		{Key: KeySplitCount, Value: Value{Type: ValueUint16, Data: uint16(count)}},
		{Key: KeySplitTensors, Value: Value{Type: ValueInt32, Data: int32(total)}},
	}
	meta = append(meta, extra...)
	var specs []TensorSpec
	for _, n := range names {
		specs = append(specs, TensorSpec{Name: n, Type: TypeF32, Shape: []int64{32}})
	}
	l, err := Plan(meta, specs)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := l.Write(&buf, func(i int) ([]byte, error) { return make([]byte, l.Tensors[i].Size), nil }); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func parse(t testing.TB, data []byte) *File {
	t.Helper()
	f, err := NewFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var arch = KV{Key: "general.architecture", Value: Value{Type: ValueString, Data: "llama"}}

func TestSplitNames(t *testing.T) {
	if got := SplitName("dir/model", 1, 3); got != "dir/model-00002-of-00003.gguf" {
		t.Errorf("SplitName = %q", got)
	}
	for _, tc := range []struct {
		name   string
		prefix string
		no, n  int
		ok     bool
	}{
		{"m-00001-of-00003.gguf", "m", 0, 3, true},
		{"a-b-00003-of-00003.gguf", "a-b", 2, 3, true},
		{"m-00004-of-00003.gguf", "", 0, 0, false},
		{"m-00000-of-00003.gguf", "", 0, 0, false},
		{"m-0001-of-00003.gguf", "", 0, 0, false},
		{"m.gguf", "", 0, 0, false},
	} {
		p, no, n, ok := ParseSplitName(tc.name)
		if p != tc.prefix || no != tc.no || n != tc.n || ok != tc.ok {
			t.Errorf("ParseSplitName(%q) = %q %d %d %v", tc.name, p, no, n, ok)
		}
	}
}

// TestCheckSplit: a good set passes; each way a set can be wrong names the part.
func TestCheckSplit(t *testing.T) {
	good := func() [][]byte {
		return [][]byte{
			splitPart(t, 0, 3, 4, []KV{arch}, "a", "b"),
			splitPart(t, 1, 3, 4, nil, "c"),
			splitPart(t, 2, 3, 4, nil, "d"),
		}
	}
	files := func(parts [][]byte) []*File {
		var fs []*File
		for _, p := range parts {
			fs = append(fs, parse(t, p))
		}
		return fs
	}
	if err := CheckSplit(files(good())); err != nil {
		t.Fatalf("good set: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func([][]byte) [][]byte
		part int
		msg  string
	}{
		{"missing part", func(p [][]byte) [][]byte { return p[:2] }, 0, "split.count is 3"},
		{"parts swapped", func(p [][]byte) [][]byte { p[1], p[2] = p[2], p[1]; return p }, 1, "split.no is 2"},
		{"wrong count", func(p [][]byte) [][]byte { p[1] = splitPart(t, 1, 4, 4, nil, "c"); return p }, 1, "split.count is 4"},
		{"tensor counts disagree", func(p [][]byte) [][]byte { p[2] = splitPart(t, 2, 3, 5, nil, "d"); return p }, 2, "part 1 says 4"},
		{"tensor count wrong", func(p [][]byte) [][]byte { p[2] = splitPart(t, 2, 3, 4, nil, "d", "e"); return p }, 0, "hold 5 tensors"},
		{"tensor twice", func(p [][]byte) [][]byte { p[2] = splitPart(t, 2, 3, 4, nil, "a"); return p }, 2, `"a" is also in part 1`},
		{"metadata disagrees", func(p [][]byte) [][]byte {
			p[1] = splitPart(t, 1, 3, 4, []KV{{Key: "general.architecture", Value: Value{Type: ValueString, Data: "qwen2"}}}, "c")
			return p
		}, 1, "general.architecture"},
		{"no split keys", func(p [][]byte) [][]byte {
			l, _ := Plan(nil, nil)
			p[1] = l.Header
			return p
		}, 1, "no split keys"},
		{"incomplete keys", func(p [][]byte) [][]byte {
			l, _ := Plan([]KV{{Key: KeySplitNo, Value: Value{Type: ValueUint16, Data: uint16(1)}}}, nil)
			p[1] = l.Header
			return p
		}, 1, "incomplete"},
		{"no out of range", func(p [][]byte) [][]byte { p[2] = splitPart(t, 3, 3, 4, nil, "d"); return p }, 2, "split.no 3 of split.count 3"},
	} {
		err := CheckSplit(files(tc.edit(good())))
		var se *SplitError
		if !errors.As(err, &se) || se.Part != tc.part || !strings.Contains(err.Error(), tc.msg) || !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want part %d: …%s…", tc.name, err, tc.part+1, tc.msg)
		}
	}
	if err := CheckSplit(nil); err == nil {
		t.Error("no parts: no error")
	}
}

// FuzzSplitSet checks that whatever two files parse, CheckSplit neither panics nor
// accepts a set that breaks its own rules.
func FuzzSplitSet(f *testing.F) {
	f.Add(splitPart(f, 0, 2, 2, []KV{arch}, "a"), splitPart(f, 1, 2, 2, nil, "b"))
	f.Add(splitPart(f, 0, 2, 3, nil, "a"), splitPart(f, 1, 2, 3, nil, "b"))
	f.Add(splitPart(f, 0, 1, 1, nil, "a"), []byte("GGUF"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var parts []*File
		for _, d := range [][]byte{a, b} {
			g, err := NewFile(bytes.NewReader(d), int64(len(d)))
			if err != nil {
				continue
			}
			if _, _, err := SplitOf(g); err != nil && !errors.Is(err, ErrFormat) {
				t.Fatalf("SplitOf: %v does not wrap ErrFormat", err)
			}
			parts = append(parts, g)
		}
		if len(parts) == 0 {
			return
		}
		err := CheckSplit(parts)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("CheckSplit: %v does not wrap ErrFormat", err)
			}
			return
		}
		n, names := 0, map[string]bool{}
		for i, p := range parts {
			s, ok, _ := SplitOf(p)
			if !ok || s.No != i || s.Count != len(parts) {
				t.Fatalf("accepted part %d with %+v", i, s)
			}
			for _, x := range p.Tensors() {
				if names[x.Name] {
					t.Fatalf("accepted %q twice", x.Name)
				}
				names[x.Name] = true
				n++
			}
			if s.Tensors != n && i == len(parts)-1 {
				t.Fatalf("accepted %d tensors against split.tensors.count %d", n, s.Tensors)
			}
		}
	})
}
