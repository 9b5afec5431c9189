// Package mapfile opens checkpoint files for the format readers: regular files only,
// opened without blocking on a FIFO, and memory-mapped read-only. It is shared so that
// these checks live in one place.
package mapfile

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNotRegular reports a path that is not a regular file (a FIFO, a device, a folder).
var ErrNotRegular = errors.New("not a regular file")

// Open opens path for reading and returns the file and its size. O_NONBLOCK keeps
// the open of a FIFO from waiting for a writer; the mode check then refuses it.
// Reads of regular files are unaffected by the flag.
func Open(path string) (*os.File, int64, error) {
	fd, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
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

// Map maps the first size bytes of f read-only (nil for an empty file). The caller
// keeps f open for as long as the mapping is used, so that what was checked about
// the file keeps describing what is mapped, and unmaps it with Unmap.
func Map(f *os.File, size int64) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return m, nil
}

// Unmap releases a mapping made by Map.
func Unmap(m []byte) error {
	if m == nil {
		return nil
	}
	return unix.Munmap(m)
}
