package atomicout

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// syncFile makes f's data durable. On macOS fsync(2) only hands the data to the
// drive, whose cache may still lose it at a power cut; F_FULLFSYNC asks the drive to
// flush that cache too. Filesystems that refuse it (some network and FUSE ones) get a
// plain fsync.
func syncFile(f *os.File) error {
	if _, err := unix.FcntlInt(f.Fd(), unix.F_FULLFSYNC, 0); err == nil {
		return nil
	}
	return f.Sync()
}

// exchange swaps two folders atomically: renamex_np(RENAME_SWAP), which APFS and HFS+
// support (macOS 10.12 and later); errNoExchange on filesystems that do not (FAT,
// exFAT, SMB).
func exchange(a, b string) error {
	err := unix.RenamexNp(a, b, unix.RENAME_SWAP)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return errNoExchange
	}
	return err
}

// replaceFile renames a file over another (rename(2) replaces atomically).
func replaceFile(from, to string) error { return os.Rename(from, to) }

// renameDir renames a folder to a name that does not exist.
func renameDir(from, to string) error { return os.Rename(from, to) }

// preallocate reserves the file's blocks with F_PREALLOCATE so that a full disk
// fails now rather than halfway. The file was already extended by Truncate, which
// on APFS reserves nothing (the file is sparse), so the whole length is allocated
// from the physical end of the file. Filesystems that cannot are let be.
func preallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	st := unix.Fstore_t{Flags: unix.F_ALLOCATEALL, Posmode: unix.F_PEOFPOSMODE, Offset: 0, Length: size}
	err := unix.FcntlFstore(f.Fd(), unix.F_PREALLOCATE, &st)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "preallocate", Path: f.Name(), Err: err}
	}
	return nil
}

// startWriteback does nothing: macOS has no call that starts writeback without
// waiting for it (sync_file_range), so the fsync in Commit writes what the kernel
// has not written by itself.
func startWriteback([]*os.File) func() { return func() {} }
