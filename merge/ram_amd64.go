//go:build !purego

package merge

//go:noescape
func ramMaskAVX2(keep, count *uint32, x, b *float32, n int, eps float64)

// ramMaskAsm does ramMasks' work for one model over the first elements of b, a
// multiple of 8, with AVX2, and returns how many; the caller checks haveLerpBF16Asm
// (the CPU has AVX2).
func ramMaskAsm(keep, count []uint32, x, b []float32, eps float64) int {
	n := len(b) &^ 7
	if n == 0 {
		return 0
	}
	ramMaskAVX2(&keep[0], &count[0], &x[0], &b[0], n, eps)
	return n
}
