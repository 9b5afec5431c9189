package main

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// preallocate reserves the output's space, as gomerge's outputs do (on tmpfs it also
// allocates the pages up front, which is cheaper than each write allocating its own).
func preallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil
	}
	return err
}
