// Package mapfile opens checkpoint files for the format readers: regular files only,
// opened without blocking on a FIFO, and memory-mapped read-only (mmap on Unix,
// CreateFileMapping and MapViewOfFile on Windows). Open is every format's Open, so
// that these checks, the cleanup when parsing fails and the naming of the file in
// errors live in one place.
package mapfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// errNotRegular reports a path that is not a regular file (a FIFO, a device, a folder)
// inside this package; Open hands the caller's own error out instead.
var errNotRegular = errors.New("not a regular file")

// openRegular opens path for reading and returns the file and its size. On Unix
// O_NONBLOCK keeps the open of a FIFO from waiting for a writer; the mode check then
// refuses it. Reads of regular files are unaffected by the flag.
func openRegular(path string) (*os.File, int64, error) {
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
		return nil, 0, errNotRegular
	}
	return fd, st.Size(), nil
}

// Mapped is a file opened and mapped whole by Open. The descriptor stays open while
// the file is mapped, so that the checks the parser made (the size above all) keep
// describing what is mapped. A format's File keeps one when Open made it and nil when
// NewFile did: Close is a no-op on a nil or already closed Mapped.
type Mapped struct {
	Data []byte // the whole file, read-only; nil for an empty file and after Close
	fd   *os.File

	preferOnce   sync.Once
	preferRead   bool // see PreferRead
	mappingTraps bool // see MappingTraps
}

// PreferRead reports whether a reader that goes through the file once should copy
// its bytes with ReadAt into buffers it reuses rather than take them from Data (which
// is mapped either way). It is true on a RAM file system (tmpfs, Linux), whose pages
// are mapped 4 KiB at a time where a disk file system's page cache maps large folios
// whole, and wherever MappingTraps. The probe runs on the first call of either, once.
func (m *Mapped) PreferRead() bool {
	if m == nil {
		return false
	}
	m.decide()
	return m.preferRead
}

// MappingTraps reports whether copyBeatsMapping (probe.go) timed the mapping's first
// touch at over twice the copy: on a virtual machine that shadows the guest's page
// tables, every small page of a mapping traps to the host when first touched, which
// made mappings several times dearer than copies (probe.go has the measurements).
// Unlike a file's being on tmpfs, that is the machine's doing, and the merge engine
// copies every input of a run when one file finds it (merge's resolveReads). False on
// tmpfs, where the probe does not run.
func (m *Mapped) MappingTraps() bool {
	if m == nil {
		return false
	}
	m.decide()
	return m.mappingTraps
}

func (m *Mapped) decide() {
	m.preferOnce.Do(func() {
		if m.fd == nil {
			return
		}
		if onRAMFilesystem(m.fd) {
			m.preferRead = true
			return
		}
		m.mappingTraps = copyBeatsMapping(m.fd, m.Data)
		m.preferRead = m.mappingTraps
	})
}

// Close unmaps the file and closes it. Bytes taken from Data must not be used after.
func (m *Mapped) Close() error {
	if m == nil || m.fd == nil {
		return nil
	}
	err := errors.Join(unmapView(m.Data), m.fd.Close())
	m.Data, m.fd = nil, nil
	return err
}

// OpenUnmapped is Open without the mapping, for a format whose reads all copy (a
// compressed container decodes every byte it reads): it returns what newFile made
// and the descriptor it reads through, which the caller closes with it.
func OpenUnmapped[F any](path string, newFile func(r io.ReaderAt, size int64) (F, error), notRegular error) (F, *os.File, error) {
	f, fd, _, err := openParsed(path, newFile, notRegular)
	return f, fd, err
}

// openParsed opens path as a regular file and lets newFile parse it through the
// descriptor; it returns what newFile made, the descriptor and the size newFile saw.
func openParsed[F any](path string, newFile func(r io.ReaderAt, size int64) (F, error), notRegular error) (F, *os.File, int64, error) {
	var zero F
	fd, size, err := openRegular(path)
	if errors.Is(err, errNotRegular) {
		return zero, nil, 0, fmt.Errorf("%s: %w", path, notRegular)
	}
	if err != nil {
		return zero, nil, 0, err
	}
	f, err := newFile(fd, size)
	if err != nil {
		fd.Close()
		return zero, nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	return f, fd, size, nil
}

// Open is every format's Open. It opens path, refusing what is not a regular file
// with notRegular (the format's own error, so that callers test it with the format's
// sentinel); lets newFile parse the file through the descriptor, so that a malformed
// file is refused before anything is mapped; then maps the whole file. It returns what
// newFile made and the mapping, which the caller closes with it.
//
// When Open fails it closes what it opened and returns the zero F. Its errors name the
// file: notRegular and the errors of newFile and of the mapping are prefixed with
// path, and those of opening and statting path are *fs.PathError, which name it.
func Open[F any](path string, newFile func(r io.ReaderAt, size int64) (F, error), notRegular error) (F, *Mapped, error) {
	var zero F
	f, fd, size, err := openParsed(path, newFile, notRegular)
	if err != nil {
		return zero, nil, err
	}
	data, err := mapWhole(fd, size)
	if err != nil {
		fd.Close()
		return zero, nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, &Mapped{Data: data, fd: fd}, nil
}

// mapWhole maps the size bytes of f, refusing a file larger than the address space (on
// a 32-bit platform): int(size) would map fewer bytes than the parser checked.
func mapWhole(f *os.File, size int64) ([]byte, error) {
	if int64(int(size)) != size {
		return nil, fmt.Errorf("mmap: %d bytes do not fit the address space", size)
	}
	return mapView(f, size)
}
