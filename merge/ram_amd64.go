//go:build !purego

package merge

//go:noescape
func ramMaskAVX2(keep, count *uint32, x, b *float32, n int, eps float64)

//go:noescape
func ramCountAVX2(base *float32, models *[]float32, nModels, n int, eps float64, lo, hi float32, tmp, sums *uint32)

//go:noescape
func ramCountBF16AVX2(base *uint16, models *[]uint16, nModels, n int, eps float64, lo, hi float32, tmp, sums *uint32)

//go:noescape
func ramBF16AVX2(out, base *uint16, models *[]uint16, nModels, n int, eps float64, lo, hi float32, lambda, tmp *float32)

//go:noescape
func ramBF16AVX512(out, base *uint16, models *[]uint16, nModels, n int, eps float64, lo, hi float32, lambda, tmp *float32)

//go:noescape
func ramCountBF16AVX512(base *uint16, models *[]uint16, nModels, n int, eps float64, lo, hi float32, tmp *float32, sums *uint32)

// haveRAM512: the BF16 loops can take sixteen lanes at a time here (AVX-512 F for
// the masks, BW for the words' widening). A var, so that the tests run the AVX2
// loops too.
var haveRAM512 = haveAVX512BW

// ramLanes is how many elements the BF16 loops take at a time here: what they do is
// a multiple of it, and the caller does the rest.
func ramLanes() int {
	if haveRAM512 {
		return 16
	}
	return 8
}

// ramMaskAsm does ramMasks' work for one model over the first elements of b, a
// multiple of 8, with AVX2, and returns how many; the caller checks haveLerpBF16Asm
// (the CPU has AVX2).
func ramMaskAsm(keep, count []uint32, x, b []float32, eps float64) int {
	n := len(b) &^ 7
	if n == 0 {
		return 0
	}
	ramMaskAVX2(&keep[0], &count[0], &x[0], &b[0], n, eps)
	return n
}

// ramCountAsm adds ramCountChunk's per-lane counts of the first elements of base, a
// multiple of 8, to s.sums, and returns how many.
func ramCountAsm(base []float32, x [][]float32, eps float64, s *ramScratch) int {
	n := len(base) &^ 7
	if n == 0 {
		return 0
	}
	for _, xi := range x {
		_ = xi[n-1] // the assembly reads n elements of each model
	}
	lo, hi := ramThresholds(eps)
	ramCountAVX2(&base[0], &x[0], len(x), n, eps, lo, hi, &s.tmp32[0], &s.sums[0])
	return n
}

// ramBF16Asm runs ram's merge from BF16 words to BF16 words over the first elements
// of out, a multiple of ramLanes, and returns how many.
func ramBF16Asm(out, base []uint16, x [][]uint16, eps float64, lambda []float32, s *ramScratch) int {
	n := len(out) &^ (ramLanes() - 1)
	if n == 0 {
		return 0
	}
	_ = base[n-1]
	for _, xi := range x {
		_ = xi[n-1] // the assembly reads n elements of each model
	}
	_ = lambda[len(x)-1]
	lo, hi := ramThresholds(eps)
	if haveRAM512 {
		ramBF16AVX512(&out[0], &base[0], &x[0], len(x), n, eps, lo, hi, &lambda[0], &s.tmpF[0])
	} else {
		ramBF16AVX2(&out[0], &base[0], &x[0], len(x), n, eps, lo, hi, &lambda[0], &s.tmpF[0])
	}
	return n
}

// ramCountBF16Asm adds ramCountChunk's counts of the first elements of base, BF16
// words, a multiple of ramLanes, to s.sums (addCounts' layout), and returns how
// many.
func ramCountBF16Asm(base []uint16, x [][]uint16, eps float64, s *ramScratch) int {
	n := len(base) &^ (ramLanes() - 1)
	if n == 0 {
		return 0
	}
	for _, xi := range x {
		_ = xi[n-1] // the assembly reads n words of each model
	}
	lo, hi := ramThresholds(eps)
	if haveRAM512 {
		ramCountBF16AVX512(&base[0], &x[0], len(x), n, eps, lo, hi, &s.tmpF[0], &s.sums[0])
	} else {
		ramCountBF16AVX2(&base[0], &x[0], len(x), n, eps, lo, hi, &s.tmp32[0], &s.sums[0])
	}
	return n
}
