//go:build !linux

package main

import (
	"errors"
	"testing"
)

// badMountTmpfs: the small full or read-only filesystems these tests need are Linux
// tmpfs mounts.
func badMountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	t.Skip("mounting a small tmpfs needs Linux")
}

// mkfifo: the FIFO case runs on Linux, where CI runs it.
func mkfifo(string) error { return errors.New("FIFOs are tested on Linux") }
