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
