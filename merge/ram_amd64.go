//go:build !purego

package merge

import "golang.org/x/sys/cpu"

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

// haveRAM512: the BF16 loops can take sixteen lanes at a time here (AVX-512 F,
// and POPCNT for the counts). A var, so that the tests run the AVX2 loops too.
var haveRAM512 = cpu.X86.HasAVX512F && cpu.X86.HasPOPCNT

// ramLanes is how many elements the BF16 loops take at a time, sixteen (wide) or
// eight: what they do is a multiple of it, and the caller does the rest.
func ramLanes(wide bool) int {
	if wide {
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
	wide := haveRAM512 // read once: the tests set it
	n := len(out) &^ (ramLanes(wide) - 1)
	if n == 0 {
		return 0
	}
	_ = base[n-1]
	for _, xi := range x {
		_ = xi[n-1] // the assembly reads n elements of each model
	}
	_ = lambda[len(x)-1]
	lo, hi := ramThresholds(eps)
	if wide {
		_ = s.tmpF[32*len(x)-1] // 128 bytes a model
		ramBF16AVX512(&out[0], &base[0], &x[0], len(x), n, eps, lo, hi, &lambda[0], &s.tmpF[0])
	} else {
		_ = s.tmpF[16*len(x)-1] // 64 bytes a model
		ramBF16AVX2(&out[0], &base[0], &x[0], len(x), n, eps, lo, hi, &lambda[0], &s.tmpF[0])
	}
	return n
}

// ramCountBF16Asm adds ramCountChunk's counts of the first elements of base, BF16
// words, a multiple of ramLanes, to s.sums (addCounts' layout), and returns how
// many.
func ramCountBF16Asm(base []uint16, x [][]uint16, eps float64, s *ramScratch) int {
	wide := haveRAM512 // read once: the tests set it
	n := len(base) &^ (ramLanes(wide) - 1)
	if n == 0 {
		return 0
	}
	for _, xi := range x {
		_ = xi[n-1] // the assembly reads n words of each model
	}
	lo, hi := ramThresholds(eps)
	_ = s.sums[16*len(x)-1] // 16 counts a model
	if wide {
		_ = s.tmpF[32*len(x)-1] // 128 bytes a model
		ramCountBF16AVX512(&base[0], &x[0], len(x), n, eps, lo, hi, &s.tmpF[0], &s.sums[0])
	} else {
		_ = s.tmp32[8*len(x)-1] // 32 bytes a model
		ramCountBF16AVX2(&base[0], &x[0], len(x), n, eps, lo, hi, &s.tmp32[0], &s.sums[0])
	}
	return n
}
