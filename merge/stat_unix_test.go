//go:build unix

package merge

import (
	"os"
	"syscall"
	"testing"
)

// requireInodes: hard links are recognised by inode number.
func requireInodes(*testing.T) {}

func statIno(st os.FileInfo) uint64 { return st.Sys().(*syscall.Stat_t).Ino }
