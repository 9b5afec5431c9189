//go:build !amd64 || purego

package merge

func dareKeepAsm(keep []bool, n int, off int64, key, lmix, threshold uint64) { panic("unreachable") }
