//go:build !purego

package merge

import "golang.org/x/sys/cpu"

// haveSCE512: the variances and the merge from BF16 bytes in AVX-512 (the merge's
// sign bits to a mask need AVX512DQ, its loads and stores of 16-bit words AVX512BW).
var haveSCE512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512BW

// sceVarianceAVX2 is sceVarianceRef for the first n elements (a multiple of 4) of
// base and every models[k] (len(models) of them).
//
//go:noescape
func sceVarianceAVX2(dst *uint32, base *float32, models *[]float32, nModels, n int, inv float64)

// sceVarianceAsm runs sceVarianceAVX2 over the largest multiple of 4 elements of
// dst and returns it.
func sceVarianceAsm(dst []uint32, in [][]float32) int {
	n := len(dst) &^ 3
	for _, x := range in {
		_ = x[n-1] // the assembly reads n elements of each input
	}
	sceVarianceAVX2(&dst[0], &in[0][0], &in[1], len(in)-1, n, 1/float64(len(in)-1))
	return n
}

// sceMaskAVX2 is sceMaskRef for words whole groups of 64 keys.
//
//go:noescape
func sceMaskAVX2(above, equal *uint64, keys *uint32, words int, t uint32)

// sceMaskAVX512 is sceMaskAVX2 sixteen keys a compare.
//
//go:noescape
func sceMaskAVX512(above, equal *uint64, keys *uint32, words int, t uint32)

// sceMaskAsm runs sceMaskAVX512 or sceMaskAVX2 over the whole groups of 64 of keys
// and returns how many words it wrote.
func sceMaskAsm(above, equal []uint64, keys []uint32, t uint32) int {
	words := len(keys) / 64
	if words > 0 {
		_, _ = above[words-1], equal[words-1]
		if haveSCE512 {
			sceMaskAVX512(&above[0], &equal[0], &keys[0], words, t)
		} else {
			sceMaskAVX2(&above[0], &equal[0], &keys[0], words, t)
		}
	}
	return words
}

// sceMergeBF16AVX512 is sceMergeBF16Ref for the first n elements (a multiple of 16)
// of out, base and every models[k] (nModels of them); mask nil: every position kept.
//
//go:noescape
func sceMergeBF16AVX512(out, base *byte, models *[]byte, nModels int, w *float32, mask *uint64, n int)

// sceMergeBF16Asm runs sceMergeBF16AVX512 over the largest multiple of 16 elements
// of out and returns it.
func sceMergeBF16Asm(out, base []byte, models [][]byte, w []float32, mask []uint64, masked bool) int {
	n := len(out) / 2 &^ 15
	if n == 0 {
		return 0
	}
	_ = base[2*n-1]
	for _, m := range models {
		_ = m[2*n-1] // the assembly reads n words of each input
	}
	_ = w[len(models)-1]
	var mp *uint64
	if masked {
		_ = mask[(n-1)/64]
		mp = &mask[0]
	}
	sceMergeBF16AVX512(&out[0], &base[0], &models[0], len(models), &w[0], mp, n)
	return n
}

// sceVarianceAVX512 is sceVarianceAVX2 for the first n elements (a multiple of 4),
// sixteen at a time, and counts the keys of the groups of sixteen that are 0.
//
//go:noescape
func sceVarianceAVX512(dst *uint32, base *float32, models *[]float32, nModels, n int, inv float64) (zeros int)

// sceVariance512Asm runs sceVarianceAVX512 over the largest multiple of 4 elements
// of dst (at least 16) and returns how many of the first len(dst)&^15 keys are 0.
func sceVariance512Asm(dst []uint32, in [][]float32) (zeros int) {
	n := len(dst) &^ 3
	for _, x := range in {
		_ = x[n-1] // the assembly reads n elements of each input
	}
	return sceVarianceAVX512(&dst[0], &in[0][0], &in[1], len(in)-1, n, 1/float64(len(in)-1))
}

// sceRangeAVX512 counts the first n keys (a multiple of 16) above hi and writes
// those in [lo, hi] to out, in order; out must have room for in+16.
//
//go:noescape
func sceRangeAVX512(keys *uint32, n int, lo, hi uint32, out *uint32) (above, in int)

// sceRangeAsm runs sceRangeAVX512 over the whole groups of 16 of keys, appending to
// out (which must have room for len(keys)+16 more), and returns how many keys it
// looked at.
func sceRangeAsm(keys []uint32, lo, hi uint32, out []uint32) (done, above int, _ []uint32) {
	n := len(keys) &^ 15
	if n == 0 {
		return 0, 0, out
	}
	room := out[len(out) : len(out)+n+16]
	above, in := sceRangeAVX512(&keys[0], n, lo, hi, &room[0])
	return n, above, out[:len(out)+in]
}

// sceVarianceBF16AVX512 is sceVarianceAVX512's groups of sixteen on BF16 words, for
// the first n elements (a multiple of 16).
//
//go:noescape
func sceVarianceBF16AVX512(dst *uint32, base *byte, models *[]byte, nModels, n int, inv float64) (zeros int)

// sceVarianceBF16Asm runs sceVarianceBF16AVX512 over the largest multiple of 16
// elements of dst and returns it and how many of those keys are 0.
func sceVarianceBF16Asm(dst []uint32, base []byte, models [][]byte) (done, zeros int) {
	n := len(dst) &^ 15
	if n == 0 {
		return 0, 0
	}
	_ = base[2*n-1]
	for _, m := range models {
		_ = m[2*n-1] // the assembly reads n words of each input
	}
	return n, sceVarianceBF16AVX512(&dst[0], &base[0], &models[0], len(models), n, 1/float64(len(models)))
}

// haveSCESquaresAsm: sceSquares4MaskedAVX2 runs where the CPU has AVX2 and BMI1 (a
// variable, so that the tests run the Go loop too).
var haveSCESquaresAsm = cpu.X86.HasAVX2 && cpu.X86.HasBMI1

//go:noescape
func sceSquares4MaskedAVX2(s *[4]float64, base *byte, x *[4]*byte, mask *uint64, words int)

// sceSquares4MaskedAsm is sceSquares4BF16 with a mask (not empty) in assembly: every
// position a set bit names is within base and each x[k].
func sceSquares4MaskedAsm(base []byte, x [4][]byte, mask []uint64) [4]float64 {
	var s [4]float64
	var p [4]*byte
	for k := range x {
		p[k] = &x[k][0]
	}
	sceSquares4MaskedAVX2(&s, &base[0], &p, &mask[0], len(mask))
	return s
}
