//go:build unix && !linux && !darwin

package atomicout

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// The BSDs and other Unixes: fsync, plain renames, no exchange (the commit of a
// folder takes the two-rename path that Lock recovers), no preallocation beyond
// Truncate, no background writeback.

func syncFile(f *os.File) error { return f.Sync() }

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return &os.PathError{Op: "fsync", Path: path, Err: err}
	}
	return nil
}

func exchange(a, b string) error               { return errNoExchange }
func replaceFile(from, to string) error        { return os.Rename(from, to) }
func renameDir(from, to string) error          { return os.Rename(from, to) }
func preallocate(f *os.File, size int64) error { return nil }
func startWriteback(files []*os.File) func()   { return func() {} }
