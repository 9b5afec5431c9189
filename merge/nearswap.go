package merge

import "math"

func init() {
	register(Method{
		Name: "nearswap", Command: "nearswap",
		Short:   "NearSwap: take the model's value where it is within t of the base's, moving toward the base as they differ more",
		Example: `  gomerge nearswap --base base.safetensors ft.safetensors --t 0.0001 --out nearswap.safetensors`,
		Base:    BaseRequired, MinModels: 1, MaxModels: 1,
		Params: []Param{{Name: "t", Flag: "t", Usage: "distance below which the model's value is taken whole", Kind: Number,
			Default: 1e-4, RecipeDefault: math.NaN(), Report: true, field: func(p *Params) any { return &p.T }}},
		kernel: nearswapKernel,
	})
}

// nearswapKernel (docs/methods.md, nearswap): per element, w = clamp(t/max(|a−b|,
// 1e-6), 0, 1) and w·b + (1−w)·a, a the base's value and b the model's; w and each
// product are rounded to float32.
func nearswapKernel(m *methodRun, _ *TensorPlan) Kernel {
	t := m.p.T
	return Kernel{
		Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
			nearswapMerge(dst, in[0], in[1], t)
		},
	}
}

// nearswapMerge is nearswap on one chunk, a the base's values and b the model's: with
// AVX2 where t is a finite positive number (the assembly's operations are
// nearswapGo's, and it leaves the blocks of eight with a NaN or an infinity to
// nearswapGo, whose NaNs it does not try to match), nearswapGo for the rest.
func nearswapMerge(dst, a, b []float32, t float64) {
	a, b = a[:len(dst)], b[:len(dst)]
	byBlocksOf8(len(dst), haveLerpBF16Asm && t > 0 && t <= math.MaxFloat64,
		func(j int) int { return nearswapAsm(dst[j:], a[j:], b[j:], t) },
		func(lo, hi int) { nearswapGo(dst[lo:hi], a[lo:hi], b[lo:hi], t) })
}

// nearswapGo is nearswap's merge element by element: the reference of the assembly.
func nearswapGo(dst, a, b []float32, t float64) {
	a, b = a[:len(dst)], b[:len(dst)]
	for j := range dst {
		w := float32(nearswapWeight(t, a[j], b[j]))
		dst[j] = float32(w*b[j]) + float32((1-w)*a[j])
	}
}

// nearswapWeight is the model's weight at one element, in float64 (the difference of
// two float32 values is exact there).
func nearswapWeight(t float64, a, b float32) float64 {
	d := max(math.Abs(float64(a)-float64(b)), 1e-6)
	return max(0, min(1, t/d))
}

// nearswapRef is nearswap's plain statement in float64.
func nearswapRef(base, model []float32, t float64) (ref, scale []float64) {
	ref, scale = make([]float64, len(base)), make([]float64, len(base))
	for j := range base {
		w := max(0, min(1, t/max(math.Abs(float64(base[j])-float64(model[j])), 1e-6)))
		ref[j] = w*float64(model[j]) + (1-w)*float64(base[j])
		scale[j] = math.Abs(w*float64(model[j])) + math.Abs((1-w)*float64(base[j]))
	}
	return ref, scale
}
