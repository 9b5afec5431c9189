//go:build unix

package atomicout

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// lockSuffix names a lock file; on Unix the lock is flock on the destination's parent
// folder itself, and no such file is made.
const lockSuffix = ".gomerge-lock"

// errLocked is tryLock's answer while another process holds the lock.
var errLocked = errors.New("locked by another process")

// tryLock takes flock(LOCK_EX) on the parent folder without waiting. The lock covers
// every output in that folder and goes with the descriptor: a killed process holds
// nothing.
func tryLock(parent, _ string) (*os.File, error) {
	lk, err := os.Open(parent)
	if err != nil {
		return nil, err
	}
	err = unix.Flock(int(lk.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return lk, nil
	}
	lk.Close()
	if errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EINTR) {
		return nil, errLocked
	}
	return nil, &os.PathError{Op: "lock", Path: parent, Err: err}
}
