package atomicout

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// syncFile makes f's data durable (fsync).
func syncFile(f *os.File) error { return f.Sync() }

// exchange swaps two folders atomically: renameat2(RENAME_EXCHANGE), Linux 3.15 and
// most local filesystems (ext4, xfs, btrfs, tmpfs); errNoExchange elsewhere.
func exchange(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return errNoExchange
	}
	return err
}

// replaceFile renames a file over another (rename(2) replaces atomically).
func replaceFile(from, to string) error { return os.Rename(from, to) }

// renameDir renames a folder to a name that does not exist.
func renameDir(from, to string) error { return os.Rename(from, to) }

// preallocate reserves the file's blocks so that a full disk fails now, before any
// work, rather than halfway. Filesystems that cannot (tmpfs on old kernels) are let be.
func preallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
	}
	return nil
}

// startWriteback asks the kernel, every writebackEvery, to start writing the output's
// dirty pages to disk (sync_file_range(SYNC_FILE_RANGE_WRITE): it waits for nothing to
// complete). The disk then writes while the merge computes, and the fsync in Commit has
// little left to do; without it a checkpoint smaller than the kernel's dirty threshold
// is written only by that final, serial fsync.
func startWriteback(files []*os.File) func() {
	return startWritebackWith(files, func(f *os.File) {
		unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE) // advice only
	})
}
