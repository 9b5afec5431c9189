// Package mapfile opens checkpoint files for the format readers: regular files only,
// opened without blocking on a FIFO, and memory-mapped read-only (mmap on Unix,
// CreateFileMapping and MapViewOfFile on Windows). It is shared so that these checks
// live in one place.
package mapfile

import (
	"errors"
	"os"
)

// ErrNotRegular reports a path that is not a regular file (a FIFO, a device, a folder).
var ErrNotRegular = errors.New("not a regular file")

// Open opens path for reading and returns the file and its size. On Unix
// O_NONBLOCK keeps the open of a FIFO from waiting for a writer; the mode check then
// refuses it. Reads of regular files are unaffected by the flag.
func Open(path string) (*os.File, int64, error) {
	fd, err := os.OpenFile(path, os.O_RDONLY|oNonblock, 0)
	if err != nil {
		return nil, 0, err
	}
	st, err := fd.Stat()
	if err != nil {
		fd.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		fd.Close()
		return nil, 0, ErrNotRegular
	}
	return fd, st.Size(), nil
}
