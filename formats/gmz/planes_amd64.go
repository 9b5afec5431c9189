//go:build !purego

package gmz

import "golang.org/x/sys/cpu"

// SSE2 is part of every amd64 CPU, so no feature check is needed for it; merging,
// on the decoder's path, uses AVX2 where the CPU has it.
var haveAVX2 = cpu.X86.HasAVX2

//go:noescape
func split2SSE2(lo, hi, src *byte, n int)

//go:noescape
func merge2SSE2(dst, lo, hi *byte, n int)

//go:noescape
func merge2AVX2(dst, lo, hi *byte, n int)

// split2 splits 2-byte elements into low and high planes, 16 elements a step with
// SSE2, the rest with split2Go.
func split2(lo, hi, src []byte) {
	n := len(lo)
	hi, src = hi[:n], src[:2*n]
	j := n &^ 15
	if j > 0 {
		split2SSE2(&lo[0], &hi[0], &src[0], j)
	}
	split2Go(lo[j:], hi[j:], src[2*j:])
}

// merge2 interleaves low and high planes into 2-byte elements.
func merge2(dst, lo, hi []byte) {
	merge2With(dst, lo, hi, haveAVX2)
}

// merge2With is merge2 with or without AVX2 (both tested against merge2Go).
func merge2With(dst, lo, hi []byte, avx2 bool) {
	n := len(lo)
	hi, dst = hi[:n], dst[:2*n]
	j := 0
	if avx2 && n >= 32 {
		j = n &^ 31
		merge2AVX2(&dst[0], &lo[0], &hi[0], j)
	}
	if k := n &^ 15; k > j {
		merge2SSE2(&dst[2*j], &lo[j], &hi[j], k-j)
		j = k
	}
	merge2Go(dst[2*j:], lo[j:], hi[j:])
}
