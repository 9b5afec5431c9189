//go:build !purego

package dtype

import "golang.org/x/sys/cpu"

var haveWidenBF16Asm = cpu.X86.HasAVX2

//go:noescape
func widenBF16AVX2(dst *float32, src *uint16, n int)

// widenBF16 widens BF16 words to float32, with AVX2 where the CPU has it.
func widenBF16(dst []float32, src []uint16) {
	src = src[:len(dst)]
	j := 0
	if haveWidenBF16Asm && len(dst) >= 16 {
		j = len(dst) &^ 15
		widenBF16AVX2(&dst[0], &src[0], j)
	}
	widenBF16Go(dst[j:], src[j:])
}

//go:noescape
func narrowBF16AVX2(dst *uint16, src *float32, n int)

// narrowBF16 rounds float32 to BF16 words, with AVX2 where the CPU has it.
func narrowBF16(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	j := 0
	if haveWidenBF16Asm && len(src) >= 8 {
		j = len(src) &^ 7
		narrowBF16AVX2(&dst[0], &src[0], j)
	}
	narrowBF16Go(dst[j:], src[j:])
}
