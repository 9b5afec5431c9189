//go:build !purego

package merge

import "golang.org/x/sys/cpu"

// haveLerpBF16Asm says whether lerpBF16AVX2 can run here.
var haveLerpBF16Asm = cpu.X86.HasAVX2

//go:noescape
func lerpBF16AVX2(out, a, x *uint16, n int, b, c float32, sums *[16]float64)

// lerpBF16Asm runs the AVX2 kernel over the first n elements (a multiple of 8).
func lerpBF16Asm(out, a, x []uint16, n int, b, c float32, sums *[16]float64) {
	lerpBF16AVX2(&out[0], &a[0], &x[0], n, b, c, sums)
}
