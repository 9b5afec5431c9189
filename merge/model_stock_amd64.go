//go:build !purego

package merge

import "golang.org/x/sys/cpu"

// haveModelStock512: model_stock's merge from BF16 words in AVX-512 (its loads of
// sixteen words widened to a register need AVX512BW).
var haveModelStock512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

//go:noescape
func modelStockMergeBF16AVX512(out, base *byte, models *[]byte, nModels int, wt, wb, inv float32, n int)

// modelStockMergeBF16Asm runs modelStockMergeBF16AVX512 over the largest multiple of
// 16 elements of out and returns it; the caller checks haveModelStock512.
func modelStockMergeBF16Asm(out, base []byte, models [][]byte, wt, wb float32) int {
	n := len(out) / 2 &^ 15
	if n == 0 {
		return 0
	}
	_ = base[2*n-1]
	for _, x := range models {
		_ = x[2*n-1] // the assembly reads n words of each input
	}
	modelStockMergeBF16AVX512(&out[0], &base[0], &models[0], len(models), wt, wb, float32(len(models)), n)
	return n
}

//go:noescape
func modelStockMergeAVX2(out, base *float32, models *[]float32, nModels int, wt, wb, inv float32, n int)

// modelStockMergeAsm runs modelStockMergeAVX2 over the largest multiple of 8
// elements of dst and returns it; the caller checks haveLerpBF16Asm (AVX2).
func modelStockMergeAsm(dst, base []float32, models [][]float32, wt, wb float32) int {
	n := len(dst) &^ 7
	if n == 0 {
		return 0
	}
	_ = base[n-1]
	for _, x := range models {
		_ = x[n-1] // the assembly reads n values of each model
	}
	modelStockMergeAVX2(&dst[0], &base[0], &models[0], len(models), wt, wb, float32(len(models)), n)
	return n
}
