//go:build !purego

package merge

import "golang.org/x/sys/cpu"

// haveMultislerp512: multislerp's merge from BF16 words in AVX-512 (its loads of
// sixteen words widened to a register need AVX512BW).
var haveMultislerp512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

//go:noescape
func combineBF16AVX512(out, base *byte, models *[]byte, nModels int, c *float32, n int)

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
