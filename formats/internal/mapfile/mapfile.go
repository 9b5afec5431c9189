// Package mapfile opens checkpoint files for the format readers: regular files only,
// opened without blocking on a FIFO, and memory-mapped read-only (mmap on Unix,
// CreateFileMapping and MapViewOfFile on Windows). It is shared so that these checks
// live in one place.
package mapfile

import (
	"errors"
	"fmt"
	"io"
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

// Mapped is a file opened and mapped whole by OpenParsed. The descriptor stays open
// while the file is mapped, so that the checks parse made (the size above all) keep
// describing what is mapped.
type Mapped struct {
	Data []byte
	fd   *os.File
}

// Close unmaps the file and closes it.
func (m *Mapped) Close() error {
	return errors.Join(Unmap(m.Data), m.fd.Close())
}

// OpenParsed is every format's Open: it opens path (Open's checks), lets parse read
// the header through the descriptor, then maps the file. Errors from parse and Map
// are prefixed with the path; Open's own (ErrNotRegular included) are returned as
// they are, for the format to word.
func OpenParsed(path string, parse func(r io.ReaderAt, size int64) error) (*Mapped, error) {
	fd, size, err := Open(path)
	if err != nil {
		return nil, err
	}
	if err := parse(fd, size); err != nil {
		fd.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	data, err := Map(fd, size)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Mapped{Data: data, fd: fd}, nil
}
