//go:build !purego

package merge

// sceVarianceAVX2 is sceVarianceRef for the first n elements (a multiple of 4) of
// base and every models[k] (len(models) of them).
//
//go:noescape
func sceVarianceAVX2(dst *uint32, base *float32, models *[]float32, nModels, n int, inv float64)

// sceVarianceAsm runs sceVarianceAVX2 over the largest multiple of 4 elements of
// dst and returns it.
func sceVarianceAsm(dst []uint32, in [][]float32) int {
	n := len(dst) &^ 3
	for _, x := range in {
		_ = x[n-1] // the assembly reads n elements of each input
	}
	sceVarianceAVX2(&dst[0], &in[0][0], &in[1], len(in)-1, n, 1/float64(len(in)-1))
	return n
}
