package atomicout

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestFileSet: a set of sibling files is written under temporary names, and only
// Commit gives them their names; Abort leaves nothing, nor does a killed run once the
// next Lock has run.
func TestFileSet(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "m.gguf")
	names := []string{"m-00001-of-00002.gguf", "m-00002-of-00002.gguf"}
	layout := Layout{Files: []File{{Name: names[0], Header: []byte("one"), Size: 5}, {Name: names[1], Header: []byte("two"), Size: 3}}}
	listing := func() []string {
		es, _ := os.ReadDir(dir)
		var out []string
		for _, e := range es {
			out = append(out, e.Name())
		}
		return out
	}
	d, err := Lock(context.Background(), dest, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	o, err := d.Create(layout)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			t.Fatalf("%s visible before Commit", n)
		}
	}
	o.Abort()
	if got := listing(); len(got) > 1 { // the lock file may stay
		t.Fatalf("after Abort: %v", got)
	}
	o, err = d.Create(layout)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Commit(); err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || string(b[:3]) != string(layout.Files[i].Header) || int64(len(b)) != layout.Files[i].Size {
			t.Errorf("%s: %q, %v", n, b, err)
		}
		if o.Paths[i] != filepath.Join(d.parent, n) {
			t.Errorf("Paths[%d] = %s", i, o.Paths[i])
		}
	}
	// A killed run's temporary files are removed by the next Lock.
	if _, err := d.Create(layout); err != nil {
		t.Fatal(err)
	}
	d.Unlock()
	d, err = Lock(context.Background(), dest, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Unlock()
	for _, n := range listing() {
		if IsTemporary(n) {
			t.Errorf("left after Lock: %s", n)
		}
	}
	bad := Layout{Files: []File{{Name: "a", Size: 1}, {Name: "a", Size: 1}}}
	if _, err := d.Create(bad); err == nil {
		t.Error("two files of one name: no error")
	}
}
