package atomicout

import (
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

// syncFile makes f's data durable (FlushFileBuffers, which also flushes the drive's
// cache).
func syncFile(f *os.File) error { return f.Sync() }

// syncDir does nothing: Windows cannot flush a folder handle opened for reading, and
// NTFS journals its metadata; the renames are made durable by MOVEFILE_WRITE_THROUGH
// instead.
func syncDir(string) error { return nil }

// exchange: Windows has no call that swaps two folders, so a folder commit takes the
// two-rename path, whose interruption Lock repairs (docs/reliability-os.md).
func exchange(a, b string) error { return errNoExchange }

// replaceFile renames a file over another with MoveFileEx(MOVEFILE_REPLACE_EXISTING |
// MOVEFILE_WRITE_THROUGH): the replacement is one metadata operation on NTFS, and the
// call returns once it is on disk. It fails while another process has the destination
// open without FILE_SHARE_DELETE (a reader mapping it).
func replaceFile(from, to string) error {
	return move(from, to, windows.MOVEFILE_REPLACE_EXISTING|windows.MOVEFILE_WRITE_THROUGH)
}

// renameDir renames a folder to a name that does not exist.
func renameDir(from, to string) error { return move(from, to, windows.MOVEFILE_WRITE_THROUGH) }

func move(from, to string, flags uint32) error {
	f, err := windows.UTF16PtrFromString(from)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	t, err := windows.UTF16PtrFromString(to)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	if err := windows.MoveFileEx(f, t, flags); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// preallocate sets the file's allocation size (FileAllocationInfo) so that a full
// disk fails now rather than halfway; filesystems that refuse are let be.
func preallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	info := struct{ AllocationSize int64 }{size}
	err := windows.SetFileInformationByHandle(windows.Handle(f.Fd()), windows.FileAllocationInfo, (*byte)(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)))
	if err == windows.ERROR_DISK_FULL || err == windows.ERROR_HANDLE_DISK_FULL {
		return &os.PathError{Op: "preallocate", Path: f.Name(), Err: err}
	}
	return nil
}

// startWriteback does nothing: the final FlushFileBuffers writes what the cache
// manager has not.
func startWriteback([]*os.File) func() { return func() {} }
