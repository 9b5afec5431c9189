//go:build !purego

package merge

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// haveDellaAVX512: decideBuckets' gathers and compares, prefixCounts' sums and
// bucketRank's counts in AVX-512 (the byte masks need AVX512BW and VL, the 8-bit mask moves DQ).
var haveDellaAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL

//go:noescape
func dellaMagsAVX2(mags *uint32, base, x *float32, n int) uint32

//go:noescape
func dellaBucketsAVX2(bk *uint16, mags *uint32, n int, floor int32) int32

//go:noescape
func dellaDecideAVX512(keep *bool, undec *int32, draw *uint64, bk *uint16, start *int32, tb *thresholdBounds, n int) int

//go:noescape
func dellaPrefixAVX512(c *int32, n int)

//go:noescape
func dellaRankAVX512(bk *uint16, mags *uint32, n int, b, m uint32, r int) int

// dellaMagsAsm runs dellaMagsAVX2 on the first n elements (a multiple of 8, at least 8).
func dellaMagsAsm(mags []uint32, base, x []float32, n int) uint32 {
	_, _, _ = mags[n-1], base[n-1], x[n-1]
	return dellaMagsAVX2(&mags[0], &base[0], &x[0], n)
}

// dellaBucketsAsm runs dellaBucketsAVX2 on the first n elements (a multiple of 8, at
// least 8).
func dellaBucketsAsm(bk []uint16, mags []uint32, n int, floor int32) int32 {
	_, _ = bk[n-1], mags[n-1]
	return dellaBucketsAVX2(&bk[0], &mags[0], n, floor)
}

// dellaDecideAsm runs dellaDecideAVX512 on the first n elements (a multiple of 8, at
// least 8), appending to undec, which must have room for n more.
func dellaDecideAsm(keep []bool, undec []int32, draw []uint64, bk []uint16, start []int32, tb *thresholdBounds, n int) []int32 {
	_, _, _, _ = keep[n-1], draw[n-1], bk[n-1], start[dellaBuckets]
	u := undec[len(undec) : len(undec)+n]
	c := dellaDecideAVX512(&keep[0], &u[0], &draw[0], &bk[0], &start[0], tb, n)
	return undec[:len(undec)+c]
}

// dellaPrefixAsm runs dellaPrefixAVX512 on c (its length a multiple of 16, at least
// 16).
func dellaPrefixAsm(c []int32) { dellaPrefixAVX512(&c[0], len(c)) }

// dellaRankAsm runs dellaRankAVX512 on the first n entries (a multiple of 32, at
// least 32): the entries k < n of bucket b with mags[k] < m, or equal and k < r.
func dellaRankAsm(bk []uint16, mags []uint32, b uint16, m uint32, r, n int) int {
	_, _ = bk[n-1], mags[n-1]
	return dellaRankAVX512(&bk[0], &mags[0], n, uint32(b), m, r)
}

//go:noescape
func dellaMagsBF16AVX2(mags *uint32, base, x *byte, n int) uint32

//go:noescape
func dellaMagsBF16AVX512(mags *uint32, base, x *byte, n int) uint32

// dellaMagsBF16Asm runs dellaMagsBF16AVX512 on the first n elements' multiple of 16
// where there is AVX-512 and dellaMagsBF16AVX2 on the rest (n a multiple of 8, at
// least 8) of BF16 words base and x.
func dellaMagsBF16Asm(mags []uint32, base, x []byte, n int) uint32 {
	_, _, _ = mags[n-1], base[2*n-1], x[2*n-1]
	var top uint32
	j := 0
	if haveDellaAVX512 && n >= 16 {
		j = n &^ 15
		top = dellaMagsBF16AVX512(&mags[0], &base[0], &x[0], j)
	}
	if j < n {
		top = max(top, dellaMagsBF16AVX2(&mags[j], &base[2*j], &x[2*j], n-j))
	}
	return top
}

//go:noescape
func dellaDeltaBF16AVX2(sum, d *float32, x *byte, b *float32, bits *byte, scale, w float32, n int)

// dellaDeltaBF16Asm runs dellaDeltaBF16AVX2 on the first n elements (a multiple of
// 8, at least 8): tvDeltaBitsAsm with no per-element factors and x BF16 words. It
// has no sixteen-lane form: where the CPU has AVX-512 (haveTiesBF16AVX512), della's
// merge from words is bandMerge's (TIES' one-sweep kernel, or the bands' kernel for
// della_linear; dellaKernel), and this loop runs only on CPUs without it.
func dellaDeltaBF16Asm(sum, d []float32, x []byte, b []float32, bits []uint64, scale, w float32, n int) {
	_, _, _, _ = sum[n-1], x[2*n-1], b[n-1], bits[(n-1)/64]
	var dp *float32
	if d != nil {
		_ = d[n-1]
		dp = &d[0]
	}
	dellaDeltaBF16AVX2(&sum[0], dp, &x[0], &b[0], (*byte)(unsafe.Pointer(&bits[0])), scale, w, n)
}
