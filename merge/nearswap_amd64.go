//go:build !purego

package merge

//go:noescape
func nearswapAVX2(dst, a, b *float32, n int, t float64) int

// nearswapAsm does the elements of dst it can with AVX2 (a multiple of 8, stopping
// before a block with a NaN or an infinity) and returns how many it did; the caller
// checks haveLerpBF16Asm (the CPU has AVX2) and gives at least 8 elements.
func nearswapAsm(dst, a, b []float32, t float64) int {
	return nearswapAVX2(&dst[0], &a[0], &b[0], len(dst)&^7, t)
}

//go:noescape
func nearswapBF16AVX512(dst, a, b *uint16, n int, t float64) int

// nearswapBF16Asm does the elements of dst it can with AVX-512 from BF16 words (a
// multiple of 16, stopping before a group with a NaN or an infinity) and returns how
// many it did; the caller checks haveAVX512BW and gives a finite t > 0.
func nearswapBF16Asm(dst, a, b []uint16, t float64) int {
	n := len(dst) &^ 15
	if n == 0 {
		return 0
	}
	_, _ = a[n-1], b[n-1]
	return nearswapBF16AVX512(&dst[0], &a[0], &b[0], n, t)
}
