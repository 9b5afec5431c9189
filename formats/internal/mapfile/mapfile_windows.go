package mapfile

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

// oNonblock: Windows opens no FIFOs through a path, so nothing can block the open.
const oNonblock = 0

// mapView maps the first size bytes of f read-only (nil for an empty file) with
// CreateFileMapping and MapViewOfFile. The mapping object is closed at once (the view
// keeps the section alive); the caller keeps f open for as long as the view is used,
// which also keeps other programs from deleting or replacing the file meanwhile, and
// unmaps it with unmapView.
func mapView(f *os.File, size int64) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	h, err := windows.CreateFileMapping(windows.Handle(f.Fd()), nil, windows.PAGE_READONLY, uint32(uint64(size)>>32), uint32(size), nil)
	if err != nil {
		return nil, fmt.Errorf("CreateFileMapping: %w", err)
	}
	defer windows.CloseHandle(h)
	addr, err := windows.MapViewOfFile(h, windows.FILE_MAP_READ, 0, 0, uintptr(size))
	if err != nil {
		return nil, fmt.Errorf("MapViewOfFile: %w", err)
	}
	// addr is memory the system mapped, outside Go's heap: converting it through a
	// pointer to the variable keeps vet's unsafe.Pointer rule about heap addresses.
	p := *(*unsafe.Pointer)(unsafe.Pointer(&addr))
	return unsafe.Slice((*byte)(p), int(size)), nil
}

// unmapView releases a mapping made by mapView.
func unmapView(m []byte) error {
	if m == nil {
		return nil
	}
	return windows.UnmapViewOfFile(uintptr(unsafe.Pointer(&m[0])))
}
