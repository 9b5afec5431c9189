//go:build !purego

package merge

import "golang.org/x/sys/cpu"

// haveDrawsAsm: the draws take eight lanes at a time where the CPU has AVX-512's
// 64-bit multiply (DQ); AVX2 has none.
var haveDrawsAsm = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ

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
