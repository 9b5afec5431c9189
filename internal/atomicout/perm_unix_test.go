//go:build unix

package atomicout

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOutputPermissions: a new output is as readable as the umask allows (not 0600),
// and a replaced one keeps its mode.
func TestOutputPermissions(t *testing.T) {
	umask := syscall.Umask(0)
	syscall.Umask(umask)
	dir := t.TempDir()
	write := func(path string, folder bool) {
		d, err := Lock(context.Background(), path, folder, nil)
		must(t, err)
		defer d.Unlock()
		o, err := d.Create(twoRegions("weights.bin"))
		must(t, err)
		must(t, o.Commit())
	}
	mode := func(p string) os.FileMode {
		st, err := os.Stat(p)
		must(t, err)
		return st.Mode().Perm()
	}
	file, folder := filepath.Join(dir, "m.bin"), filepath.Join(dir, "ckpt")
	write(file, false)
	write(folder, true)
	if got, want := mode(file), os.FileMode(0o666)&^os.FileMode(umask); got != want {
		t.Errorf("new file mode %v, want %v", got, want)
	}
	if got, want := mode(folder), os.FileMode(0o777)&^os.FileMode(umask); got != want {
		t.Errorf("new folder mode %v, want %v", got, want)
	}
	must(t, os.Chmod(file, 0o640))
	must(t, os.Chmod(folder, 0o750))
	write(file, false)
	write(folder, true)
	if mode(file) != 0o640 || mode(folder) != 0o750 {
		t.Errorf("replaced outputs: file %v folder %v, want 0640 and 0750", mode(file), mode(folder))
	}
}
