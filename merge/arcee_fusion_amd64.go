//go:build !purego

package merge

import "golang.org/x/sys/cpu"

//go:noescape
func arceeKLAVX2(ex, eb *float64, n int, zx, zb float64, kl *float64) int

// arceeKLAsm adds the terms it can to *kl with AVX2 (a multiple of 4, stopping before
// a block whose p/q math.Log treats as a special case) and returns how many it did;
// the caller checks haveLerpBF16Asm (the CPU has AVX2) and gives at least 4.
func arceeKLAsm(ex, eb []float64, zx, zb float64, kl *float64) int {
	return arceeKLAVX2(&ex[0], &eb[0], len(ex)&^3, zx, zb, kl)
}

// haveArceeExpAsm says whether arceeExpAVX2 can run here and give math.Exp's bits:
// math.Exp on amd64 fuses its multiply-adds when the CPU has FMA (and AVX), and the
// assembly does what it does then.
var haveArceeExpAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func arceeExpAVX2(dst *float64, src *float32, n int, m float64, z *float64) int

// arceeExpAsm does the elements it can with AVX2 (a multiple of 4, stopping before a
// block math.Exp treats as a special case) and returns how many it did; the caller
// checks haveArceeExpAsm and gives at least 4.
func arceeExpAsm(dst []float64, src []float32, m float64, z *float64) int {
	return arceeExpAVX2(&dst[0], &src[0], len(dst)&^3, m, z)
}

//go:noescape
func arceeKeysAVX2(keys *uint32, x, b *float32, n int, kl float64) int

// arceeKeysAsm sets the keys it can with AVX2 (a multiple of 8, stopping before a
// block with a NaN difference) and returns how many it did; the caller checks
// haveLerpBF16Asm and gives at least 8.
func arceeKeysAsm(keys []uint32, x, b []float32, kl float64) int {
	return arceeKeysAVX2(&keys[0], &x[0], &b[0], len(keys)&^7, kl)
}

//go:noescape
func arceeSelectAVX2(dst, x, b *float32, n int, kl, t float64)

// arceeSelectAsm does dst[:len(dst)&^3] with AVX2; the caller checks haveLerpBF16Asm
// and gives at least 4.
func arceeSelectAsm(dst, x, b []float32, kl, t float64) int {
	n := len(dst) &^ 3
	arceeSelectAVX2(&dst[0], &x[0], &b[0], n, kl, t)
	return n
}

//go:noescape
func arceeMaxAVX2(x, b *float32, n int, mx, mb *float32) bool

// arceeMaxAsm gives the maxima of x[:n] and b[:n], n = len(x)&^7, with AVX2, and
// false where the caller must find them in Go; it checks haveLerpBF16Asm and gives
// at least 8.
func arceeMaxAsm(x, b []float32) (mx, mb float32, n int, ok bool) {
	n = len(x) &^ 7
	ok = arceeMaxAVX2(&x[0], &b[0], n, &mx, &mb)
	return mx, mb, n, ok
}
