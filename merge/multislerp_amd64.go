//go:build !purego

package merge

import "golang.org/x/sys/cpu"

// haveMultislerp512: multislerp's merge from BF16 words in AVX-512 (its loads of
// sixteen words widened to a register need AVX512BW).
var haveMultislerp512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

//go:noescape
func gramDiffBF16AVX2(d *float64, y, b *byte, n int)

//go:noescape
func gramDiffBF16AVX512(d *float64, y, b *byte, n int)

//go:noescape
func gramMulAVX2(p, a, c *float64, n int)

//go:noescape
func gramChainsAVX(sums, p *float64, n int)

//go:noescape
func gramChains3AVX(sums, d *float64, n int, stock bool)

//go:noescape
func combineBF16AVX512(out, base *byte, models *[]byte, nModels int, c *float32, n int)

// gramDiffBF16Asm runs gramDiffBF16AVX512 (where the CPU has it) or
// gramDiffBF16AVX2 over the largest multiple of 8 elements of
// d and returns it; the caller checks haveLerpBF16Asm (the CPU has AVX2).
func gramDiffBF16Asm(d []float64, y, b []byte) int {
	n := len(d) &^ 7
	if n == 0 {
		return 0
	}
	_ = y[2*n-1] // the assembly reads n words of y and b
	var bp *byte
	if b != nil {
		_ = b[2*n-1]
		bp = &b[0]
	}
	if haveMultislerp512 {
		gramDiffBF16AVX512(&d[0], &y[0], bp, n)
	} else {
		gramDiffBF16AVX2(&d[0], &y[0], bp, n)
	}
	return n
}

// gramMulAsm runs gramMulAVX2 over the largest multiple of 4 elements of p and
// returns it; the caller checks haveLerpBF16Asm.
func gramMulAsm(p, a, c []float64) int {
	n := len(p) &^ 3
	if n == 0 {
		return 0
	}
	_, _ = a[n-1], c[n-1]
	gramMulAVX2(&p[0], &a[0], &c[0], n)
	return n
}

// gramChainsAsm is gramChainsGo in assembly; the caller checks haveLerpBF16Asm and
// that p holds gramFusedWidth rows of at least n products at stride gramFusedStride.
func gramChainsAsm(sums, p []float64, n int) {
	_ = sums[gramFusedWidth-1]
	gramChainsAVX(&sums[0], &p[0], n)
}

// gramChains3Asm adds to sums (six) the products of three vectors' differences d
// (rows gramFusedStride apart) over their first n elements, in the pairs and
// operand order of gramThreeLayout's stock: the bits of gramMul for each pair and
// gramChains. The caller checks haveLerpBF16Asm.
func gramChains3Asm(sums, d []float64, n int, stock bool) {
	_, _ = sums[5], d[2*gramFusedStride+n-1]
	gramChains3AVX(&sums[0], &d[0], n, stock)
}

// combineBF16Asm runs combineBF16AVX512 over the largest multiple of 16 elements
// of out and returns it; the caller checks haveMultislerp512.
func combineBF16Asm(out []byte, y [][]byte, b []byte, c []float32) int {
	n := len(out) / 2 &^ 15
	if n == 0 {
		return 0
	}
	for _, x := range y {
		_ = x[2*n-1] // the assembly reads n words of each input
	}
	var bp *byte
	if b != nil {
		_ = b[2*n-1]
		bp = &b[0]
	}
	_ = c[len(y)-1]
	combineBF16AVX512(&out[0], bp, &y[0], len(y), &c[0], n)
	return n
}
