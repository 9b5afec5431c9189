//go:build !purego

package merge

import (
	"slices"
	"unsafe"

	"golang.org/x/sys/cpu"
)

//go:noescape
func arceeKLAVX2(dst, ex, eb *float64, n int, zx, zb float64) int

// arceeKLAsm sets the terms it can of dst with AVX2, or AVX-512 where the CPU has it
// (a multiple of 4, stopping before a block whose p/q math.Log treats as a special
// case) and returns how many it did; the caller checks haveLerpBF16Asm (the CPU has
// AVX2) and gives at least 4.
func arceeKLAsm(dst, ex, eb []float64, zx, zb float64) int {
	if haveArceeKL512 && len(dst) >= 8 {
		return arceeKLAVX512(&dst[0], &ex[0], &eb[0], len(dst)&^7, zx, zb)
	}
	return arceeKLAVX2(&dst[0], &ex[0], &eb[0], len(dst)&^3, zx, zb)
}

//go:noescape
func arceeKLAVX512(dst, ex, eb *float64, n int, zx, zb float64) int

// haveArceeKL512: arceeKLAVX512 can run here (AVX-512 F, and DQ for its masks and
// classes). A var, so that the tests can run the AVX2 loop too.
var haveArceeKL512 = haveArcee512

// haveArcee512: the CPU has the AVX-512 parts the arcee kernels use (F, DQ).
var haveArcee512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ

// haveArceeExpAsm says whether arceeExpAVX2 can run here and give math.Exp's bits:
// math.Exp on amd64 fuses its multiply-adds when the CPU has FMA (and AVX), and the
// assembly does what it does then.
var haveArceeExpAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func arceeExpAVX2(dst *float64, src *float32, n int, m float64) int

//go:noescape
func arceeExpAVX512(dst *float64, src *float32, n int, m float64) int

// haveArceeExp512: arceeExpAVX512 can run here (AVX-512 F, and FMA for math.Exp's
// path). A var, so that the tests can run the AVX2 loop too.
var haveArceeExp512 = haveArceeExpAsm && haveArcee512

// arceeExpAsm does the elements it can with AVX2, or AVX-512 where the CPU has it (a
// multiple of 4, stopping before a block math.Exp treats as a special case) and
// returns how many it did; the caller checks haveArceeExpAsm and gives at least 4.
func arceeExpAsm(dst []float64, src []float32, m float64) int {
	if haveArceeExp512 && len(dst) >= 8 {
		return arceeExpAVX512(&dst[0], &src[0], len(dst)&^7, m)
	}
	return arceeExpAVX2(&dst[0], &src[0], len(dst)&^3, m)
}

//go:noescape
func arceeKeysAVX2(keys *uint32, x, b *float32, n int, kl float64) int

//go:noescape
func arceeKeysAVX512(keys *uint32, x, b *float32, n int, kl float64) int

// haveArceeKeys512: arceeKeysAVX512 and arceeSelectAVX512 can run here. A var, so
// that the tests can run the AVX2 loops too.
var haveArceeKeys512 = haveArcee512

// arceeKeysAsm sets the keys it can with AVX-512 sixteen at a time where the CPU has
// it, AVX2 eight at a time for the rest (a multiple of 8, stopping before a block
// with a NaN difference) and returns how many it did; the caller checks
// haveLerpBF16Asm and gives at least 8.
func arceeKeysAsm(keys []uint32, x, b []float32, kl float64) int {
	j := 0
	if haveArceeKeys512 && len(keys) >= 16 {
		n := len(keys) &^ 15
		if j = arceeKeysAVX512(&keys[0], &x[0], &b[0], n, kl); j < n {
			return j // the block it stopped at
		}
	}
	if len(keys)-j >= 8 {
		j += arceeKeysAVX2(&keys[j], &x[j], &b[j], (len(keys)-j)&^7, kl)
	}
	return j
}

//go:noescape
func arceeSelectAVX2(dst, x, b *float32, n int, kl, t float64)

//go:noescape
func arceeSelectAVX512(dst, x, b *float32, n int, kl, t float64)

// arceeSelectAsm does dst[:len(dst)&^3] with AVX-512 sixteen at a time where the CPU
// has it and AVX2 four at a time for the rest; the caller checks haveLerpBF16Asm and
// gives at least 4.
func arceeSelectAsm(dst, x, b []float32, kl, t float64) int {
	j := 0
	if haveArceeKeys512 && len(dst) >= 16 {
		j = len(dst) &^ 15
		arceeSelectAVX512(&dst[0], &x[0], &b[0], j, kl, t)
	}
	if n := (len(dst) - j) &^ 3; n > 0 {
		arceeSelectAVX2(&dst[j], &x[j], &b[j], n, kl, t)
		j += n
	}
	return j
}

//go:noescape
func arceeMaxAVX2(x, b *float32, n int, mx, mb *float32) bool

// arceeMaxAsm gives the maxima of x[:n] and b[:n], n = len(x)&^7, with AVX2, and
// false where the caller must find them in Go; it checks haveLerpBF16Asm and gives
// at least 8.
func arceeMaxAsm(x, b []float32) (mx, mb float32, n int, ok bool) {
	n = len(x) &^ 7
	ok = arceeMaxAVX2(&x[0], &b[0], n, &mx, &mb)
	return mx, mb, n, ok
}

//go:noescape
func arceeMatchAVX2(keys *uint32, n int, bins *[3]uint32) int

// arceeMatchAsm is the index of the first block of eight of keys[:len(keys)&^7]
// with a key in bins, or len(keys)&^7; the caller checks haveLerpBF16Asm and gives
// at least 8.
func arceeMatchAsm(keys []uint32, bins *[3]uint32) int {
	return arceeMatchAVX2(&keys[0], len(keys)&^7, bins)
}

//go:noescape
func arceeRangeAVX2(keys *uint32, n int) (lo, hi uint32)

// arceeRangeAsm is the least and the greatest of keys[:n], n = len(keys)&^7, with
// AVX2; the caller checks haveLerpBF16Asm and gives at least 8.
func arceeRangeAsm(keys []uint32) (lo, hi uint32, n int) {
	n = len(keys) &^ 7
	lo, hi = arceeRangeAVX2(&keys[0], n)
	return lo, hi, n
}

//go:noescape
func arceeKeysInBinsAVX512(x, b unsafe.Pointer, n int, kl float64, bins *[3]uint32, out *[3]*uint32, counts *[3]int, words bool) int

// arceeKeysInBinsAsm appends to found what arceeKeysInBins does for the elements it
// can with AVX-512 (a multiple of 16, stopping before a block with a NaN difference)
// and returns how many it did; the caller checks haveArceeKeys512.
func arceeKeysInBinsAsm(found *[3][]uint32, x, b []float32, kl float64, bins *[3]uint32) int {
	return arceeKeysInBins512(found, len(x), unsafe.Pointer(unsafe.SliceData(x)), unsafe.Pointer(unsafe.SliceData(b)), kl, bins, false)
}

// arceeKeysInBinsBF16Asm is arceeKeysInBinsAsm on BF16 words; the caller checks
// haveArceeKeys512.
func arceeKeysInBinsBF16Asm(found *[3][]uint32, x, b []uint16, kl float64, bins *[3]uint32) int {
	return arceeKeysInBins512(found, len(x), unsafe.Pointer(unsafe.SliceData(x)), unsafe.Pointer(unsafe.SliceData(b)), kl, bins, true)
}

// arceeKeysInBins512 runs arceeKeysInBinsAVX512 over the first n&^15 elements of x
// and b (none where that is 0; float32 words, or BF16 with words set): it makes room
// in found for every key they could store and sets found's lengths to what it
// stored.
func arceeKeysInBins512(found *[3][]uint32, n int, x, b unsafe.Pointer, kl float64, bins *[3]uint32, words bool) int {
	n &^= 15
	if n == 0 {
		return 0
	}
	var out [3]*uint32
	var counts [3]int
	for q := range found {
		found[q] = slices.Grow(found[q], n+16) // a block's keys are stored whole
		counts[q] = len(found[q])
		out[q] = &found[q][:cap(found[q])][0]
	}
	j := arceeKeysInBinsAVX512(x, b, n, kl, bins, &out, &counts, words)
	for q := range found {
		found[q] = found[q][:counts[q]]
	}
	return j
}

//go:noescape
func arceeSelectBF16AVX512(dst, x, b *uint16, n int, kl, t float64)

// haveArceeSelectBF16: arceeSelectBF16AVX512 can run here (AVX-512 F, DQ, BW, VL).
// A var, so that the tests can run without it.
var haveArceeSelectBF16 = haveArcee512 && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL

// arceeSelectBF16Asm does dst[:len(dst)&^15] with AVX-512 and returns how many; the
// caller checks haveArceeSelectBF16.
func arceeSelectBF16Asm(dst, x, b []uint16, kl, t float64) int {
	n := len(dst) &^ 15
	if n > 0 {
		arceeSelectBF16AVX512(&dst[0], &x[0], &b[0], n, kl, t)
	}
	return n
}
