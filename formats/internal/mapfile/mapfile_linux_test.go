package mapfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestOpenLeaksNothing: a failed Open closes the descriptor it opened, and Close closes
// a good one. /proc/self/fd counts them.
func TestOpenLeaksNothing(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.tst")
	bad := filepath.Join(dir, "bad.tst")
	if err := os.WriteFile(good, testFile([]byte("payload")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("XXXXXXXXXX"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	for range 50 {
		if _, _, err := Open(bad, parseTest, errTestFormat); !errors.Is(err, errTestFormat) {
			t.Fatalf("bad file: %v", err)
		}
		if _, _, err := Open(dir, parseTest, errTestFormat); !errors.Is(err, errTestFormat) {
			t.Fatalf("folder: %v", err)
		}
		_, m, err := Open(good, parseTest, errTestFormat)
		if err != nil {
			t.Fatalf("good file: %v", err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open before, %d after 150 Opens", before, after)
	}
}

// mountType is the file system type of the mount holding path, from /proc/self/mounts
// (the longest mount point that is a prefix of path): a second opinion beside the
// fstatfs that Open asks.
func mountType(t *testing.T, path string) string {
	t.Helper()
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	best, typ := "", ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := strings.ReplaceAll(f[1], `\040`, " ")
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, typ = mp, f[2]
		}
	}
	return typ
}

// TestPreferRead: a file on tmpfs is marked to be read rather than mapped, one
// elsewhere is not; either way it is mapped.
func TestPreferRead(t *testing.T) {
	dirs := []string{t.TempDir()}
	if mountType(t, "/dev/shm") == "tmpfs" {
		shm, err := os.MkdirTemp("/dev/shm", "mapfile-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(shm) })
		dirs = append(dirs, shm)
	} else {
		t.Log("/dev/shm is not tmpfs here: only the test's temporary folder is checked")
	}
	seen := map[bool]bool{}
	for _, dir := range dirs {
		path := filepath.Join(dir, "f.tst")
		if err := os.WriteFile(path, testFile([]byte("payload")), 0o644); err != nil {
			t.Fatal(err)
		}
		_, m, err := Open(path, parseTest, errTestFormat)
		if err != nil {
			t.Fatal(err)
		}
		typ := mountType(t, path)
		want := typ == "tmpfs" || typ == "ramfs"
		if m.MappingTraps() {
			t.Errorf("%s (on %s): MappingTraps, want false (a file this small is not probed)", path, typ)
		}
		if m.PreferRead() != want || m.Data == nil {
			t.Errorf("%s (on %s): PreferRead %v, mapped %v; want %v, mapped", path, typ, m.PreferRead(), m.Data != nil, want)
		}
		seen[m.PreferRead()] = true
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("PreferRead seen: %v", seen)
}
