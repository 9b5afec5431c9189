//go:build !purego

package lora

import "golang.org/x/sys/cpu"

var haveProductAsm = cpu.X86.HasAVX2

// productLanes is how many columns one call of the AVX2 kernel does at a time.
const productLanes = 32

//go:noescape
func addRowAVX2(w *float32, l, r *float64, k, n, stride int)

// addRowAsm adds l·R[:, :n] to w[:n], n a multiple of productLanes; R's rows are
// stride elements apart.
func addRowAsm(w []float32, l, r []float64, n, stride int) {
	_ = w[n-1]
	_ = r[(len(l)-1)*stride+n-1]
	addRowAVX2(&w[0], &l[0], &r[0], len(l), n, stride)
}
