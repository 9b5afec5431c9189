//go:build unix

package atomicout

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// syncDir makes a folder's entries durable, so that a rename survives a power cut:
// syncFile on the folder (F_FULLFSYNC on macOS). Filesystems that cannot sync a
// folder say EINVAL or ENOTSUP; the rename is then as durable as they make it.
func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := syncFile(d); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTSUP) {
		return &os.PathError{Op: "fsync", Path: path, Err: err}
	}
	return nil
}
