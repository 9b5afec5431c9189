package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	"github.com/gomerge/gomerge/formats/gmz"
)

// splitPartName reads plain and compressed part names, and nothing else.
func TestSplitPartName(t *testing.T) {
	for _, c := range []struct {
		name   string
		prefix string
		no     int
		count  int
		suffix string
		ok     bool
	}{
		{"m-00001-of-00003.gguf", "m", 0, 3, ".gguf", true},
		{"m-00003-of-00003.gmz", "m", 2, 3, ".gmz", true},
		{"m-00002-of-00003.gguf.gmz", "m", 1, 3, ".gguf.gmz", true},
		{"my-model-q8_0-00002-of-00010.GMZ", "my-model-q8_0", 1, 10, ".GMZ", true},
		{"m.gmz", "", 0, 0, "", false},
		{"m-00000-of-00003.gmz", "", 0, 0, "", false}, // parts count from 1
		{"m-00004-of-00003.gmz", "", 0, 0, "", false}, // beyond the count
		{"m-0001-of-00003.gmz", "", 0, 0, "", false},  // five digits
		{"m-00001-of-00003.gmz.gguf", "", 0, 0, "", false},
		{"m-00001-of-00003.safetensors", "", 0, 0, "", false},
		{"m-00001-of-00003", "", 0, 0, "", false},
		{"", "", 0, 0, "", false},
	} {
		prefix, no, count, suffix, ok := splitPartName(c.name)
		if prefix != c.prefix || no != c.no || count != c.count || suffix != c.suffix || ok != c.ok {
			t.Errorf("%q: %q %d %d %q %v, want %q %d %d %q %v", c.name, prefix, no, count, suffix, ok, c.prefix, c.no, c.count, c.suffix, c.ok)
		}
		if ok && partName(prefix, no, count, suffix) != c.name {
			t.Errorf("%q: partName gives %q back", c.name, partName(prefix, no, count, suffix))
		}
	}
}

// FuzzSplitPartName: whatever name parses is in range and is given back by partName.
func FuzzSplitPartName(f *testing.F) {
	for _, s := range []string{"m-00001-of-00003.gguf", "m-00002-of-00003.gmz", "m-00002-of-00003.gguf.gmz", "x-99999-of-99999.GMZ", "a.gmz", "-00001-of-00001.gmz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		prefix, no, count, suffix, ok := splitPartName(name)
		if !ok {
			return
		}
		if no < 0 || no >= count {
			t.Fatalf("%q: part %d of %d", name, no, count)
		}
		if back := partName(prefix, no, count, suffix); back != name {
			t.Fatalf("%q: partName gives %q", name, back)
		}
	})
}

// findPart prefers a part named like the one the user named, then the plain one,
// then the compressed one, and names what it looked for when none is there.
func TestFindPart(t *testing.T) {
	dir := t.TempDir()
	touch := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	touch("m-00002-of-00003.gguf")
	touch("m-00002-of-00003.gmz")
	touch("m-00003-of-00003.gmz")
	for _, c := range []struct {
		no     int
		suffix string
		want   string
	}{
		{1, ".gmz", "m-00002-of-00003.gmz"},
		{1, ".gguf", "m-00002-of-00003.gguf"},
		{1, ".gguf.gmz", "m-00002-of-00003.gguf"},
		{2, ".gguf", "m-00003-of-00003.gmz"},
	} {
		got, err := findPart(dir, "m", c.no, 3, c.suffix)
		if err != nil || got != filepath.Join(dir, c.want) {
			t.Errorf("part %d named %s: %q, %v; want %s", c.no+1, c.suffix, got, err, c.want)
		}
	}
	_, err := findPart(dir, "m", 0, 3, ".gguf.gmz")
	if err == nil || !strings.Contains(err.Error(), "m-00001-of-00003.gguf.gmz") || !strings.Contains(err.Error(), "m-00001-of-00003.gmz") {
		t.Errorf("a missing part: %v", err)
	}
	if !errors.Is(err, ErrBadInput) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing part is not bad input: %v", err)
	}
}

// gmzPartSeed is a small compressed GGUF part (part no of 2, with a float and a
// Q8_0 tensor, in 16-byte frames): a seed for FuzzGMZGGUFHeader.
func gmzPartSeed(tb testing.TB, no int) []byte {
	tb.Helper()
	dir := tb.TempDir()
	p := filepath.Join(dir, gguf.SplitName("s", no, 2))
	meta := []gguf.KV{
		{Key: gguf.KeySplitNo, Value: gguf.Value{Type: gguf.ValueUint16, Data: uint16(no)}},
		{Key: gguf.KeySplitCount, Value: gguf.Value{Type: gguf.ValueUint16, Data: uint16(2)}},
		{Key: gguf.KeySplitTensors, Value: gguf.Value{Type: gguf.ValueInt32, Data: int32(4)}},
	}
	q := make([]byte, 34)
	for i := range q {
		q[i] = byte(i * 5)
	}
	ts := []gguftest.Tensor{
		{Name: fmt.Sprint("f", no), DType: dtype.F32, Shape: []int64{2, 3}, Data: make([]byte, 24)},
		{Name: fmt.Sprint("q", no), DType: dtype.Q8_0, Shape: []int64{32}, Data: q},
	}
	if err := gguftest.WriteFile(p, meta, ts); err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := WriteCompressed(context.Background(), &buf, p, filepath.Join(dir, "part.gmz"), CompressOptions{FrameSize: 16}); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzGMZGGUFHeader: whatever container parses, reading the GGUF part it holds
// (gmzGGUFHeader, then the split checks a set makes) never panics; it fails as bad
// input, or gives a header whose every tensor the container holds where the header
// places it.
func FuzzGMZGGUFHeader(f *testing.F) {
	f.Add(gmzPartSeed(f, 0))
	f.Add(gmzPartSeed(f, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		gf, err := gmz.NewFile(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		z := &gmzSource{path: "fuzz.gmz", f: gf, bufs: &newGMZShared().bufs}
		h, err := gmzGGUFHeader(z)
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("%v is not bad input", err)
			}
			return
		}
		for _, ti := range h.Tensors() {
			zt, ok := gf.Tensor(ti.Name)
			if !ok || zt.Offset != ti.Begin || zt.Size != ti.Size {
				t.Fatalf("tensor %q accepted where the container disagrees", ti.Name)
			}
		}
		if _, _, err := gguf.SplitOf(h); err == nil {
			gguf.CheckSplit([]*gguf.File{h})
		}
	})
}
