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

// sceMaskAVX2 is sceMaskRef for words whole groups of 64 keys.
//
//go:noescape
func sceMaskAVX2(above, equal *uint64, keys *uint32, words int, t uint32)

// sceMaskAsm runs sceMaskAVX2 over the whole groups of 64 of keys and returns how
// many words it wrote.
func sceMaskAsm(above, equal []uint64, keys []uint32, t uint32) int {
	words := len(keys) / 64
	if words > 0 {
		_, _ = above[words-1], equal[words-1]
		sceMaskAVX2(&above[0], &equal[0], &keys[0], words, t)
	}
	return words
}
