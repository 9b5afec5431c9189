package main

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// badMountTmpfs mounts a tmpfs with the given options on dir, and unmounts it when the
// test ends (before t.TempDir's removal, cleanups being last-in first-out). Mounting
// needs root (CAP_SYS_ADMIN); elsewhere the test is skipped, unless
// GOMERGE_REQUIRE_MOUNT=1 (CI runs as root and sets it), where it fails: the disk-full
// and read-only cases must not pass by not running.
func badMountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("GOMERGE_REQUIRE_MOUNT") == "1" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("needs root to mount a small tmpfs (run the tests as root, as CI does; GOMERGE_REQUIRE_MOUNT=1 turns this skip into a failure)")
	}
	var flags uintptr
	if rest, ok := strings.CutPrefix(opts, "ro,"); ok {
		flags, opts = unix.MS_RDONLY, rest
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, opts); err != nil {
		skip("cannot mount a tmpfs on %s (%v): a container without CAP_SYS_ADMIN?", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	// A mount that did not take (dir still on its old filesystem) would let the
	// disk-full case pass only if the real disk were full: check it is the tmpfs.
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not a tmpfs after mounting one (statfs type %#x, err %v)", dir, st.Type, err)
	}
}

func mkfifo(path string) error { return unix.Mkfifo(path, 0o644) }
