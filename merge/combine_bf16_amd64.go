//go:build !purego

package merge

import "golang.org/x/sys/cpu"

// haveAVX512BW: the CPU has AVX-512 F and BW, which the kernels that load sixteen
// BF16 words widened into a register need (combineBF16AVX512, the Gram sums).
var haveAVX512BW = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

//go:noescape
func combineBF16AVX512(out, base *byte, models *[]byte, nModels int, c *float32, n int, form sumForm, k float32)

// combineBF16Asm runs combineBF16AVX512 over the largest multiple of 16 elements
// of out and returns it; the caller checks haveAVX512BW.
func combineBF16Asm(out []byte, y [][]byte, b []byte, c []float32, form sumForm, k float32) int {
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
	combineBF16AVX512(&out[0], bp, &y[0], len(y), &c[0], n, form, k)
	return n
}
