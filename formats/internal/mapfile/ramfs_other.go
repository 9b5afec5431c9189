//go:build !linux

package mapfile

import "os"

// onRAMFilesystem: only Linux is known to map RAM file systems in small pages (see
// ramfs_linux.go); elsewhere the mapping is used.
func onRAMFilesystem(*os.File) bool { return false }
