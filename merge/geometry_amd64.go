//go:build !purego

package merge

//go:noescape
func addScaledDiffAVX2(dst, x, b *float32, n int, w float32)

//go:noescape
func addScaledAVX2(dst, x *float32, n int, w float32)

//go:noescape
func divideAVX2(dst *float32, n int, d float32)

//go:noescape
func scaleOntoAVX2(dst, base *float32, n int, w float32)

// scaleOntoAsm does dst[j] = base[j] + float32(w·dst[j]) with AVX2 over the first
// elements of dst, a multiple of 8, and returns how many; the caller checks
// haveLerpBF16Asm (the CPU has AVX2).
func scaleOntoAsm(dst, base []float32, w float32) int {
	n := len(dst) &^ 7
	if n > 0 {
		scaleOntoAVX2(&dst[0], &base[0], n, w)
	}
	return n
}

// divideAsm does dst[j] /= d with AVX2 over the first elements of dst, a multiple of
// 8, and returns how many; the caller checks haveLerpBF16Asm (the CPU has AVX2).
func divideAsm(dst []float32, d float32) int {
	n := len(dst) &^ 7
	if n > 0 {
		divideAVX2(&dst[0], n, d)
	}
	return n
}

// addScaledAsm does dst += w·(x − b) (b nil: dst += w·x) with AVX2 over the first
// elements of dst, a multiple of 8, and returns how many; the caller checks
// haveLerpBF16Asm (the CPU has AVX2).
func addScaledAsm(dst, x, b []float32, w float32) int {
	n := len(dst) &^ 7
	if n == 0 {
		return 0
	}
	if b == nil {
		addScaledAVX2(&dst[0], &x[0], n, w)
	} else {
		addScaledDiffAVX2(&dst[0], &x[0], &b[0], n, w)
	}
	return n
}
