//go:build unix && !linux && !darwin

package atomicout

import "os"

// The BSDs and other Unixes: fsync, plain renames, no exchange (the commit of a
// folder takes the two-rename path that Lock recovers), no preallocation beyond
// Truncate, no background writeback.

func syncFile(f *os.File) error { return f.Sync() }

func exchange(a, b string) error               { return errNoExchange }
func replaceFile(from, to string) error        { return os.Rename(from, to) }
func renameDir(from, to string) error          { return os.Rename(from, to) }
func preallocate(f *os.File, size int64) error { return nil }
func startWriteback(files []*os.File) func()   { return func() {} }
