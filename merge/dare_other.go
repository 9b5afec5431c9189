//go:build !amd64 || purego

package merge

// haveDareAVX512: no AVX-512 draws here (dare_amd64.go).
const haveDareAVX512 = false

func dareKeepAsm(keep []bool, n int, off int64, key, lmix, threshold uint64) { panic("unreachable") }

func dareDrawsAsm([]uint64, uint64, uint64, uint64) int { panic("no assembly draws") }
