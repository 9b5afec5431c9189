//go:build !purego

package merge

import "golang.org/x/sys/cpu"

var haveTiesAsm = cpu.X86.HasAVX2

//go:noescape
func tiesSignAVX2(sign *uint32, sum *float32, n int)

//go:noescape
func tiesAccumAVX2(num, den, d *float32, sign *uint32, w float32, n int)

//go:noescape
func tiesFinishAVX2(dst, base, den *float32, lambda float32, n int)

func tiesSignAsm(sign []uint32, sum []float32, n int) { tiesSignAVX2(&sign[0], &sum[0], n) }
func tiesAccumAsm(num, den, d []float32, sign []uint32, w float32, n int) {
	tiesAccumAVX2(&num[0], &den[0], &d[0], &sign[0], w, n)
}
func tiesFinishAsm(dst, base, den []float32, lambda float32, n int) {
	tiesFinishAVX2(&dst[0], &base[0], &den[0], lambda, n)
}

//go:noescape
func deltaAbsBitsAVX2(dst *uint32, x, b *float32, n int)

func deltaAbsBitsAsm(dst []uint32, x, b []float32, n int) { deltaAbsBitsAVX2(&dst[0], &x[0], &b[0], n) }

//go:noescape
func deltaAbsBitsBF16AVX2(dst *uint32, x, b *uint16, n int)

// deltaAbsBitsBF16Asm runs deltaAbsBitsBF16AVX2 over the largest multiple of 8
// elements of dst and returns it; the caller checks haveTiesAsm.
func deltaAbsBitsBF16Asm(dst []uint32, x, b []uint16) int {
	n := len(dst) &^ 7
	if n == 0 {
		return 0
	}
	_, _ = x[n-1], b[n-1]
	deltaAbsBitsBF16AVX2(&dst[0], &x[0], &b[0], n)
	return n
}

//go:noescape
func trimAVX2(dst, x, b *float32, n int, w float32, t uint32) int

//go:noescape
func binScanAVX2(mags *uint32, n int, bin uint32) int

func trimAsm(dst, x, b []float32, n int, w float32, t uint32) int {
	return trimAVX2(&dst[0], &x[0], &b[0], n, w, t)
}

func binScanAsm(mags []uint32, n int, bin uint32) int { return binScanAVX2(&mags[0], n, bin) }

//go:noescape
func nearPackAVX2(dst, mags *uint32, n int, lo, hi uint32) (k, above int)

//go:noescape
func nearPackAVX512(dst, mags *uint32, n int, lo, hi uint32) (k, above int)

// haveNear512: nearPackAVX512 runs where the CPU has AVX-512 (a variable, so that
// the tests run the AVX2 kernel too).
var haveNear512 = cpu.X86.HasAVX512F

// nearPackAsm packs into dst the magnitudes of mags' first multiple of 16 (AVX-512)
// or 8 (AVX2) in [lo, hi] (top bits) and counts those above hi; it returns how many
// elements it took, packed and counted. dst has room for len(mags)+16.
func nearPackAsm(dst, mags []uint32, lo, hi uint32) (j, k, above int) {
	if haveNear512 && len(mags) >= 16 {
		j = len(mags) &^ 15
		_, _ = dst[j+15], mags[j-1]
		k, above = nearPackAVX512(&dst[0], &mags[0], j, lo, hi)
		return j, k, above
	}
	j = len(mags) &^ 7
	if j == 0 {
		return 0, 0, 0
	}
	_, _ = dst[j+7], mags[j-1]
	k, above = nearPackAVX2(&dst[0], &mags[0], j, lo, hi)
	return j, k, above
}

//go:noescape
func deltaNearPackAVX512(dst *uint32, x, b *uint16, n int, lo, hi uint32) (k, above int)

// deltaNearFast reports whether deltaNearAsm packs anything (AVX-512): elsewhere
// the magnitudes are made and packed in two steps, each in assembly, which is
// quicker than deltaNearBF16's Go loop.
func deltaNearFast() bool { return haveNear512 }

// deltaNearAsm is nearPackAsm over the magnitudes deltaAbsBitsBF16Asm makes of x and
// b, without storing them, over their first multiple of 16 words with AVX-512
// (haveNear512; else it takes none): it returns how many elements it took, how many
// it packed into dst (room for len(x)+16) and how many were above hi.
func deltaNearAsm(dst []uint32, x, b []uint16, lo, hi uint32) (j, k, above int) {
	if !haveNear512 || len(x) < 16 {
		return 0, 0, 0
	}
	j = len(x) &^ 15
	_, _, _ = dst[j+15], x[j-1], b[j-1]
	k, above = deltaNearPackAVX512(&dst[0], &x[0], &b[0], j, lo, hi)
	return j, k, above
}

//go:noescape
func deltaNearPack2AVX512(dst0, dst1 *uint32, x, b *uint16, n int, win *[4]uint32, counts *[4]int)

// deltaNear2Asm is deltaNearAsm for two windows at once, each magnitude made once:
// window c's go to dst<c> (room for len(x)+16 each). It returns how many elements it
// took, and the packed and above counts of window 0, then of window 1.
func deltaNear2Asm(dst0, dst1 []uint32, x, b []uint16, wins [2][2]uint32) (j int, counts [4]int) {
	if !haveNear512 || len(x) < 16 {
		return 0, counts
	}
	j = len(x) &^ 15
	_, _, _, _ = dst0[j+15], dst1[j+15], x[j-1], b[j-1]
	win := [4]uint32{wins[0][0], wins[0][1], wins[1][0], wins[1][1]}
	deltaNearPack2AVX512(&dst0[0], &dst1[0], &x[0], &b[0], j, &win, &counts)
	return j, counts
}

//go:noescape
func binPackAVX512(dst *uint16, mags *uint32, n int, bin uint32) (k int)

// binPackAsm packs into dst the low bits of the magnitudes of mags' first multiple
// of 16 whose top bits are bin, with AVX-512 (haveNear512; else it takes none); it
// returns how many elements it took and how many it packed. dst has room for
// len(mags)+16.
func binPackAsm(dst []uint16, mags []uint32, bin uint32) (j, k int) {
	if !haveNear512 || len(mags) < 16 {
		return 0, 0
	}
	j = len(mags) &^ 15
	_, _ = dst[j+15], mags[j-1]
	return j, binPackAVX512(&dst[0], &mags[0], j, bin)
}

//go:noescape
func tiesMergeAVX2(dst, base *float32, xs **float32, lanes *tiesLane, nl int, d *float32, lambda float32, j, n int) int

// tiesMergeAsm runs tiesMergeAVX2 from element j of a chunk of n (xs[i] its models,
// each of at least n elements; d scratch of 8 per lane) and returns where it stopped.
func tiesMergeAsm(dst, base []float32, xs []*float32, lanes []tiesLane, d []float32, lambda float32, j, n int) int {
	_, _, _ = dst[n-1], base[n-1], d[8*len(lanes)-1]
	return tiesMergeAVX2(&dst[0], &base[0], &xs[0], &lanes[0], len(lanes), &d[0], lambda, j, n)
}

//go:noescape
func tiesMergeBF16AVX512(dst, base *uint16, xs **uint16, lanes *tiesLane, nl int, lambda float32, j, n int, masks **uint64, scale *float32, normalize, band bool) int

// haveTiesBF16AVX512: tiesMergeBF16AVX512 runs where the CPU has AVX-512 with its
// word instructions (a variable, so that the tests run the span path too).
var haveTiesBF16AVX512 = haveTiesAsm && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

// tiesMergeWordsAsm runs tiesMergeBF16AVX512 from element j of a chunk of n words
// (xs[i] its models' words, each of at least n) and returns where it stopped. TIES' cuts give lanes one record per model; masks (one
// row of at least ⌈n/64⌉ words per model) or band (lanes two records per model)
// take scale, a factor per model.
func tiesMergeWordsAsm(dst, base []uint16, xs []*uint16, lanes []tiesLane, lambda float32, j, n int,
	masks []*uint64, scale []float32, normalize, band bool) int {
	nl := len(xs)
	per := 1
	if band {
		per = 2
	}
	_, _, _ = dst[n-1], base[n-1], lanes[per*nl-1]
	var mp **uint64
	var sp *float32
	if masks != nil || band {
		_ = scale[nl-1]
		sp = &scale[0]
	}
	if masks != nil {
		_ = masks[nl-1]
		mp = &masks[0]
	}
	return tiesMergeBF16AVX512(&dst[0], &base[0], &xs[0], &lanes[0], nl, lambda, j, n, mp, sp, normalize, band)
}
