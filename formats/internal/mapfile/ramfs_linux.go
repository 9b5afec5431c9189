package mapfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// onRAMFilesystem reports whether f lives on tmpfs or ramfs (/dev/shm, /run). Such a
// file's pages are mapped 4 KiB at a time (a 64 KiB fault-around at most), while a
// disk file system's page cache maps large folios whole; see Mapped.PreferRead.
func onRAMFilesystem(f *os.File) bool {
	var st unix.Statfs_t
	if unix.Fstatfs(int(f.Fd()), &st) != nil {
		return false // unknown: mapping is right everywhere, only slower on tmpfs
	}
	// uint32: the field is 32 bits wide on some platforms, and RAMFS_MAGIC sets its
	// sign bit there.
	magic := uint32(st.Type)
	return magic == unix.TMPFS_MAGIC || magic == unix.RAMFS_MAGIC
}
