package arena

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// New returns a zeroed buffer of n bytes, backed by huge pages where the kernel has
// them (transparent huge pages in "madvise" or "always" mode).
func New(n int64) (*Buffer, error) {
	if n <= 0 {
		return &Buffer{}, nil
	}
	b, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil, fmt.Errorf("arena: mapping %d bytes: %w", n, err)
	}
	// Advice only: a kernel without transparent huge pages faults 4 KiB pages.
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	return &Buffer{Bytes: b, free: func() error { return unix.Munmap(b) }}, nil
}
