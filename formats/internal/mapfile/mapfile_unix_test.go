//go:build unix

package mapfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOpenFIFO: a FIFO nobody writes is refused at once; a blocking open would wait
// for a writer forever.
func TestOpenFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o644); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := Open(path, func(io.ReaderAt, int64) (int, error) {
			return 0, errors.New("the parser ran")
		}, errTestFormat)
		done <- err
	}()
	select {
	case err := <-done:
		if want := path + ": " + errTestFormat.Error(); err == nil || err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	case <-time.After(10 * time.Second):
		// Let the blocked open return, so the test ends.
		if w, err := os.OpenFile(path, os.O_RDWR, 0); err == nil {
			w.Close()
		}
		t.Fatal("Open blocked on a FIFO")
	}
}
