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
