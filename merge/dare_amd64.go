//go:build !purego

package merge

import "golang.org/x/sys/cpu"

// haveDareAVX512: the draws' 64-bit multiplies in AVX-512 (VPMULLQ is AVX512DQ).
var haveDareAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ

//go:noescape
func dareKeepAVX512(keep *bool, n int, off int64, key, lmix, threshold uint64)

//go:noescape
func dareKeepAVX2(keep *bool, n int, off int64, key, lmix, threshold uint64)

// dareKeepAsm runs dareKeepAVX512 or dareKeepAVX2 on the first n elements of keep (a multiple of 8, at
// least 8).
func dareKeepAsm(keep []bool, n int, off int64, key, lmix, threshold uint64) {
	_ = keep[n-1]
	if haveDareAVX512 {
		dareKeepAVX512(&keep[0], n, off, key, lmix, threshold)
		return
	}
	dareKeepAVX2(&keep[0], n, off, key, lmix, threshold)
}

// dareDrawsAVX512 sets dst[j] = splitmix64(key ^ splitmix64(h ^ (e0+j)·0x9e3779b97f4a7c15))
// for j < n, a multiple of 8: dareDraw with h = (lane+1)·0xd1b54a32d192ed03.
//
//go:noescape
func dareDrawsAVX512(dst *uint64, n int, key, h, e0 uint64)

func dareDrawsAsm(dst []uint64, key, h, e0 uint64) int {
	n := len(dst) &^ 7
	if n > 0 {
		dareDrawsAVX512(&dst[0], n, key, h, e0)
	}
	return n
}
