//go:build !purego

package merge

import "unsafe"

//go:noescape
func tvDeltaAVX2(sum, d, x, b *float32, keep *bool, elem *float32, scale, w float32, n int)

//go:noescape
func tvFinishAVX2(dst, base *float32, lambda float32, n int)

// tvDeltaAsm runs tvDeltaAVX2 on the first n elements (a multiple of 8, at least 8);
// d and elem may be nil.
func tvDeltaAsm(sum, d, x, b []float32, keep []bool, elem []float32, scale, w float32, n int) {
	_, _, _, _ = sum[n-1], x[n-1], b[n-1], keep[n-1]
	var dp, ep *float32
	if d != nil {
		_ = d[n-1]
		dp = &d[0]
	}
	if elem != nil {
		_ = elem[n-1]
		ep = &elem[0]
	}
	tvDeltaAVX2(&sum[0], dp, &x[0], &b[0], &keep[0], ep, scale, w, n)
}

//go:noescape
func tvDeltaBitsAVX2(sum, d, x, b *float32, bits *byte, elem *float32, scale, w float32, n int)

// tvDeltaBitsAsm runs tvDeltaBitsAVX2 on the first n elements (a multiple of 8, at
// least 8), the masks packed in bits (keepCache's words); d and elem may be nil.
func tvDeltaBitsAsm(sum, d, x, b []float32, bits []uint64, elem []float32, scale, w float32, n int) {
	_, _, _, _ = sum[n-1], x[n-1], b[n-1], bits[(n-1)/64]
	var dp, ep *float32
	if d != nil {
		_ = d[n-1]
		dp = &d[0]
	}
	if elem != nil {
		_ = elem[n-1]
		ep = &elem[0]
	}
	tvDeltaBitsAVX2(&sum[0], dp, &x[0], &b[0], (*byte)(unsafe.Pointer(&bits[0])), ep, scale, w, n)
}

//go:noescape
func packBoolsAVX512(dst *uint64, src *bool, n int)

// packBoolsAsm runs packBoolsAVX512 on the first n bools (a multiple of 64, at least
// 64), which needs AVX512BW (haveDellaAVX512).
func packBoolsAsm(dst []uint64, src []bool, n int) {
	_, _ = dst[n/64-1], src[n-1]
	packBoolsAVX512(&dst[0], &src[0], n)
}

func tvFinishAsm(dst, base []float32, lambda float32, n int) {
	_, _ = dst[n-1], base[n-1]
	tvFinishAVX2(&dst[0], &base[0], lambda, n)
}

//go:noescape
func keepBandAVX2(keep *bool, mags *uint32, n int, loGT, hiGT int32, loTie, hiTie uint32) int

// keepBandAsm runs keepBandAVX2 on the first n elements (a multiple of 8, at least 8).
func keepBandAsm(keep []bool, mags []uint32, n int, loGT, hiGT int32, loTie, hiTie uint32) int {
	_, _ = keep[n-1], mags[n-1]
	return keepBandAVX2(&keep[0], &mags[0], n, loGT, hiGT, loTie, hiTie)
}

//go:noescape
func l1LanesBF16AVX2(l *l1Lanes, base, x *byte, keep *bool, n int)

// l1LanesBF16Asm runs l1LanesBF16AVX2 on whole lane groups (n = len(keep) elements, a
// multiple of 8, at least 8, the first element in lane 0).
func l1LanesBF16Asm(l *l1Lanes, base, x []byte, keep []bool) {
	n := len(keep)
	_, _ = base[2*n-1], x[2*n-1]
	l1LanesBF16AVX2(l, &base[0], &x[0], &keep[0], n)
}

//go:noescape
func l1LanesAVX2(l *l1Lanes, base, x *float32, keep *bool, n int)

// l1LanesAsm runs l1LanesAVX2 on whole lane groups (n a multiple of 8, at least 8,
// the first element in lane 0).
func l1LanesAsm(l *l1Lanes, base, x []float32, keep []bool) {
	n := len(base)
	_, _ = x[n-1], keep[n-1]
	l1LanesAVX2(l, &base[0], &x[0], &keep[0], n)
}

//go:noescape
func bandMergeBF16AVX512(dst, base *uint16, xs **uint16, lanes *tiesLane, nl int, lambda float32, j, n int, masks **uint64) int

// bandMergeWordsAsm runs bandMergeBF16AVX512 from element j of a chunk of n words
// (xs[i] its models' words, each of at least n; lanes two per model; masks nil, or
// one row of at least ⌈n/64⌉ words per model) and returns where it stopped; the
// caller checks haveTiesBF16AVX512.
func bandMergeWordsAsm(dst, base []uint16, xs []*uint16, lanes []tiesLane, lambda float32, j, n int, masks []*uint64) int {
	_, _, _ = dst[n-1], base[n-1], lanes[2*len(xs)-1]
	var mp **uint64
	if masks != nil {
		_ = masks[len(xs)-1]
		mp = &masks[0]
	}
	return bandMergeBF16AVX512(&dst[0], &base[0], &xs[0], &lanes[0], len(xs), lambda, j, n, mp)
}

//go:noescape
func l1LanesBF16AVX512(ls *l1Lanes, base *byte, xs **byte, keeps **bool, nl, n int)

// l1LanesWordsAsm adds the first whole lane groups of 2 to 4 models' BF16 words (a
// chunk's, from an element in lane 0: its element 0, or for della a row's first
// element that starts a group) into their lanes ls[i] at once, as addBF16 does one
// model at a time, and returns how many elements it took: 0 without AVX-512 BW or
// for another number of models.
func l1LanesWordsAsm(ls []l1Lanes, base []byte, xs [][]byte, keep [][]bool) int {
	nl := len(xs)
	n := len(base) / 2 &^ (lanes - 1)
	if !haveAVX512BW || nl < 2 || nl > 4 || n == 0 {
		return 0
	}
	_, _ = ls[nl-1], keep[nl-1]
	var xp [4]*byte
	var kp [4]*bool
	for i := range nl {
		_, _ = xs[i][2*n-1], keep[i][n-1]
		xp[i], kp[i] = &xs[i][0], &keep[i][0]
	}
	l1LanesBF16AVX512(&ls[0], &base[0], &xp[0], &kp[0], nl, n)
	return n
}
