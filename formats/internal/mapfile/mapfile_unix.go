//go:build unix

package mapfile

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

const oNonblock = unix.O_NONBLOCK

// mapView maps the first size bytes of f read-only (nil for an empty file). The caller
// keeps f open for as long as the mapping is used, so that what was checked about
// the file keeps describing what is mapped, and unmaps it with unmapView.
func mapView(f *os.File, size int64) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return m, nil
}

// unmapView releases a mapping made by mapView.
func unmapView(m []byte) error {
	if m == nil {
		return nil
	}
	return unix.Munmap(m)
}
