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
