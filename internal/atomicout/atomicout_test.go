package atomicout

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// names lists a folder's entries, leaving out the lock file that Windows keeps.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), lockSuffix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// twoRegions is a layout of one file: a 4-byte header and two regions.
func twoRegions(name string) Layout {
	return Layout{
		Files:   []File{{Name: name, Header: []byte("HDR:"), Size: 10}},
		Regions: []Region{{File: 0, Begin: 4, Size: 2}, {File: 0, Begin: 6, Size: 4}},
		Marks:   []string{name},
	}
}

func TestFileCommit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	for _, content := range []string{"HDR:abcdef", "HDR:uvwxyz"} { // new, then replaced
		d, err := Lock(context.Background(), path, false, nil)
		must(t, err)
		o, err := d.Create(twoRegions(""))
		must(t, err)
		must(t, o.WriteAt(1, 0, []byte(content[6:])))
		must(t, o.WriteAt(0, 0, []byte(content[4:6])))
		if err := o.WriteAt(0, 1, []byte("xy")); err == nil {
			t.Error("a write past its region's end was accepted")
		}
		if got := names(t, dir); !slices.ContainsFunc(got, IsTemporary) {
			t.Errorf("before the commit the folder holds %q, no temporary file", got)
		}
		must(t, o.Commit())
		d.Unlock()
		if got, _ := os.ReadFile(path); string(got) != content {
			t.Errorf("output %q, want %q", got, content)
		}
		if got := names(t, dir); !slices.Equal(got, []string{"out.bin"}) {
			t.Errorf("after the commit the folder holds %q", got)
		}
		if !slices.Equal(o.Paths, []string{path}) {
			t.Errorf("Paths %q", o.Paths)
		}
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	must(t, os.WriteFile(path, []byte("before"), 0o644))
	d, err := Lock(context.Background(), path, false, nil)
	must(t, err)
	defer d.Unlock()
	o, err := d.Create(twoRegions(""))
	must(t, err)
	must(t, o.Abort())
	if got, _ := os.ReadFile(path); string(got) != "before" {
		t.Errorf("destination changed to %q", got)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"out.bin"}) {
		t.Errorf("after Abort the folder holds %q", got)
	}
	if err := o.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
}

// writeFolder makes a folder checkpoint: weights.bin, config.json, and a sub-folder
// of trainer state.
func writeFolder(t *testing.T, dir, weights string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, "state"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "weights.bin"), []byte(weights), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"a":1}`), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "state", "optim.pt"), []byte("optim"), 0o644))
}

// TestFolderSwap: replacing a folder in place, through the exchange and through the
// two-rename fallback, carries the other files as links, replaces a file by
// WriteFile without writing through its link, and leaves nothing behind.
func TestFolderSwap(t *testing.T) {
	for _, noExchange := range []bool{false, true} {
		parent := t.TempDir()
		dest := filepath.Join(parent, "ckpt")
		writeFolder(t, dest, "HDR:oooooo")
		d, err := Lock(context.Background(), dest, true, nil)
		must(t, err)
		d.NoExchange = noExchange
		l := twoRegions("weights.bin")
		l.Whole = []WholeFile{{Name: "index.json", Data: []byte("{}")}}
		l.Carry = &Carry{From: dest, Link: true, Skip: func(n string) bool { return n == "skipped" }}
		must(t, os.WriteFile(filepath.Join(dest, "skipped"), nil, 0o644))
		o, err := d.Create(l)
		must(t, err)
		must(t, o.WriteAt(0, 0, []byte("ab")))
		must(t, o.WriteAt(1, 0, []byte("cdef")))
		cfg, err := o.ReadFile("config.json")
		if err != nil || string(cfg) != `{"a":1}` {
			t.Fatalf("carried config.json: %q %v", cfg, err)
		}
		must(t, o.WriteFile("config.json", []byte(`{"a":2}`)))
		if err := o.WriteFile("weights.bin", nil); err == nil {
			t.Error("WriteFile over a planned file accepted")
		}
		if err := o.WriteFile("../x", nil); err == nil {
			t.Error("WriteFile outside the folder accepted")
		}
		if b, _ := os.ReadFile(filepath.Join(dest, "config.json")); string(b) != `{"a":1}` {
			t.Fatalf("noExchange=%v: WriteFile wrote through the link into the old folder: %q", noExchange, b)
		}
		must(t, o.Commit())
		d.Unlock()
		for name, want := range map[string]string{"weights.bin": "HDR:abcdef", "config.json": `{"a":2}`, "index.json": "{}", "state/optim.pt": "optim"} {
			if b, err := os.ReadFile(filepath.Join(dest, name)); err != nil || string(b) != want {
				t.Errorf("noExchange=%v: %s is %q (%v), want %q", noExchange, name, b, err, want)
			}
		}
		if _, err := os.Stat(filepath.Join(dest, "skipped")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("noExchange=%v: a skipped file was carried", noExchange)
		}
		if got := names(t, parent); !slices.Equal(got, []string{"ckpt"}) {
			t.Errorf("noExchange=%v: parent holds %q", noExchange, got)
		}
	}
}

// TestRecover: the states a crash can leave a folder switch in are repaired by the
// next Lock.
func TestRecover(t *testing.T) {
	parent := t.TempDir()
	dest := filepath.Join(parent, "ckpt")
	// Cut between the two renames: only .ckpt.gomerge-old and a complete temporary.
	writeFolder(t, filepath.Join(parent, ".ckpt"+oldInfix), "old")
	writeFolder(t, filepath.Join(parent, ".ckpt"+tmpInfix+"123"), "new")
	must(t, os.WriteFile(filepath.Join(parent, ".ckpt"+tmpInfix+"456"), []byte("partial"), 0o644))
	must(t, os.WriteFile(filepath.Join(parent, "neighbour"+tmpInfix+"1"), nil, 0o644)) // another output's
	d, err := Lock(context.Background(), dest, true, nil)
	must(t, err)
	d.Unlock()
	if b, _ := os.ReadFile(filepath.Join(dest, "weights.bin")); string(b) != "old" {
		t.Errorf("old checkpoint not restored: %q", b)
	}
	if got := names(t, parent); !slices.Equal(got, []string{"ckpt", "neighbour" + tmpInfix + "1"}) {
		t.Errorf("after recovery the parent holds %q", got)
	}
	// Cut after the second rename: both exist; the old one goes.
	writeFolder(t, filepath.Join(parent, ".ckpt"+oldInfix), "old")
	d, err = Lock(context.Background(), dest, true, nil)
	must(t, err)
	d.Unlock()
	if _, err := os.Stat(filepath.Join(parent, ".ckpt"+oldInfix)); !errors.Is(err, os.ErrNotExist) {
		t.Error("stale old folder not removed")
	}
}

func TestRefuseToReplaceNonCheckpoint(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "home")
	must(t, os.MkdirAll(dest, 0o755))
	must(t, os.WriteFile(filepath.Join(dest, "thesis.tex"), []byte("precious"), 0o644))
	d, err := Lock(context.Background(), dest, true, nil)
	must(t, err)
	defer d.Unlock()
	if _, err := d.Create(twoRegions("weights.bin")); err == nil {
		t.Fatal("replaced a folder that holds no checkpoint")
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "thesis.tex")); string(b) != "precious" {
		t.Error("folder contents damaged")
	}
}

func TestBadLayout(t *testing.T) {
	d, err := Lock(context.Background(), filepath.Join(t.TempDir(), "f"), false, nil)
	must(t, err)
	defer d.Unlock()
	l := twoRegions("")
	l.Regions[1].Size = 5 // past the file's end
	if _, err := d.Create(l); err == nil {
		t.Error("a region past its file's end accepted")
	}
	l = twoRegions("")
	l.Files = append(l.Files, File{Name: "second"})
	if _, err := d.Create(l); err == nil {
		t.Error("two files at a file destination accepted")
	}
}

// TestLockExcludes: a second writer of the same destination waits for the first, and
// its wait ends with its context.
func TestLockExcludes(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "m.bin")
	first, err := Lock(context.Background(), dest, false, nil)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, dest, false, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's error", err)
	}
	waited := make(chan struct{})
	acquired := make(chan *Dest)
	go func() {
		d, err := Lock(context.Background(), dest, false, func() { close(waited) })
		if err != nil {
			t.Error(err)
		}
		acquired <- d
	}()
	<-waited // onWait is called only when the lock is held by the first
	first.Unlock()
	if d := <-acquired; d != nil {
		d.Unlock()
	}
}

func TestIsTemporary(t *testing.T) {
	for name, want := range map[string]bool{".m" + tmpInfix + "x": true, ".m" + oldInfix: true, "config.json": false, ".m" + lockSuffix: true} {
		if IsTemporary(name) != want {
			t.Errorf("IsTemporary(%q) = %v", name, !want)
		}
	}
	if !bytes.Equal([]byte(tmpInfix), []byte(".gomerge-tmp-")) {
		t.Error("the temporary infix changed: outputs of older versions would not be recovered")
	}
}

// TestStreamedFile: a file whose length is known only once written goes through the
// same temporary file and rename; a header or regions on it are refused.
func TestStreamedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gmz")
	must(t, os.WriteFile(path, []byte("old"), 0o644))
	d, err := Lock(context.Background(), path, false, nil)
	must(t, err)
	defer d.Unlock()
	if _, err := d.Create(Layout{Files: []File{{Size: Streamed, Header: []byte("h")}}}); err == nil {
		t.Fatal("a streamed file with a header was accepted")
	}
	o, err := d.Create(Layout{Files: []File{{Size: Streamed}}})
	must(t, err)
	_, err = o.Stream(0).Write([]byte("new contents"))
	must(t, err)
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("before Commit the destination holds %q", b)
	}
	must(t, o.Commit())
	if b, _ := os.ReadFile(path); string(b) != "new contents" {
		t.Fatalf("after Commit the destination holds %q", b)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if IsTemporary(e.Name()) {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
