//go:build !purego

package merge

import "golang.org/x/sys/cpu"

// haveLerpBF16Asm says whether lerpBF16AVX2 can run here, and haveLerpBF16AVX512
// whether lerpBF16AVX512 can (its conversions and extractions need DQ and BW).
var (
	haveLerpBF16Asm    = cpu.X86.HasAVX2
	haveLerpBF16AVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512BW
)

//go:noescape
func lerpBF16AVX2(out, a, x *uint16, n int, b, c float32, sums *[16]float64)

//go:noescape
func lerpBF16AVX512(out, a, x *uint16, n int, b, c float32, sums *[16]float64)

// lerpBF16Asm runs the kernels over the first n elements (a multiple of 8): the
// AVX-512 one over the multiple of 16 where it can run, the AVX2 one over the rest.
func lerpBF16Asm(out, a, x []uint16, n int, b, c float32, sums *[16]float64) {
	j := 0
	if haveLerpBF16AVX512 && n >= 16 {
		j = n &^ 15
		lerpBF16AVX512(&out[0], &a[0], &x[0], j, b, c, sums)
	}
	if j < n {
		lerpBF16AVX2(&out[j], &a[j], &x[j], n-j, b, c, sums)
	}
}
