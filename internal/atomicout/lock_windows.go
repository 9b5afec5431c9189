package atomicout

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/windows"
)

// lockSuffix names the lock file beside the destination: Windows cannot lock a
// folder handle, so the lock is LockFileEx on .NAME.gomerge-lock, which stays (an
// empty file) between runs.
const lockSuffix = ".gomerge-lock"

// errLocked is tryLock's answer while another process holds the lock.
var errLocked = errors.New("locked by another process")

// tryLock takes an exclusive LockFileEx on the destination's lock file without
// waiting. The system releases it when the handle closes or the process dies.
func tryLock(parent, base string) (*os.File, error) {
	path := filepath.Join(parent, "."+base+lockSuffix)
	lk, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	var ol windows.Overlapped
	err = windows.LockFileEx(windows.Handle(lk.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	if err == nil {
		return lk, nil
	}
	lk.Close()
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) || errors.Is(err, windows.ERROR_IO_PENDING) {
		return nil, errLocked
	}
	return nil, &os.PathError{Op: "lock", Path: path, Err: err}
}
