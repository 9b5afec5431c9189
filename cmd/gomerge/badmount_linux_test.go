package main

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// badMountTmpfs mounts a tmpfs with the given options on dir, and unmounts it when the
// test ends (before t.TempDir's removal, cleanups being last-in first-out). Mounting
// needs root (CAP_SYS_ADMIN); elsewhere the test is skipped.
func badMountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (run the tests as root, as CI does)")
	}
	var flags uintptr
	if rest, ok := strings.CutPrefix(opts, "ro,"); ok {
		flags, opts = unix.MS_RDONLY, rest
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, opts); err != nil {
		t.Skipf("cannot mount a tmpfs on %s (%v): a container without CAP_SYS_ADMIN?", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

func mkfifo(path string) error { return unix.Mkfifo(path, 0o644) }
