//go:build !purego

package merge

//go:noescape
func arceeKLAVX2(ex, eb *float64, n int, zx, zb float64, kl *float64) int

// arceeKLAsm adds the terms it can to *kl with AVX2 (a multiple of 4, stopping before
// a block whose p/q math.Log treats as a special case) and returns how many it did;
// the caller checks haveLerpBF16Asm (the CPU has AVX2) and gives at least 4.
func arceeKLAsm(ex, eb []float64, zx, zb float64, kl *float64) int {
	return arceeKLAVX2(&ex[0], &eb[0], len(ex)&^3, zx, zb, kl)
}
