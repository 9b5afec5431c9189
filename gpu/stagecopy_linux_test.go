package gpu

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestStageCopyFault: a mapped source truncated under the copy faults in one of
// stageCopy's goroutines; the fault comes back as a panic on the caller's goroutine
// (where stream's recover and the engine's guard report it), not as a crash.
func TestStageCopyFault(t *testing.T) {
	const n = 8 * stageCopyPiece
	path := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(path, make([]byte, n), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := syscall.Mmap(int(f.Fd()), 0, n, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(data)
	if err := os.Truncate(path, stageCopyPiece); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r == nil {
			t.Error("reading past a truncated mapping did not panic through stageCopy")
		}
	}()
	stageCopy([][2][]byte{{make([]byte, n), data}})
	t.Error("stageCopy returned")
}
