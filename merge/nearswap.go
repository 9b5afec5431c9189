package merge

import (
	"math"

	"github.com/gomerge/gomerge/formats/dtype"
)

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
		// BF16 in and out with AVX-512: from the inputs' words to the output's
		// (nearswapBF16), the same bits as decoding, Merge and encoding.
		Fused: func(out []byte, outDT dtype.DType, in []Operand, _ []float64, _ Chunk) bool {
			if !haveAVX512BW || outDT != dtype.BF16 || !(t > 0 && t <= math.MaxFloat64) {
				return false
			}
			y, a, ok := bf16Operands(in, true)
			if !ok || len(out) != len(a) {
				return false
			}
			return nearswapBF16(out, a, y[0], t)
		},
	}
}

// nearswapBF16 is nearswap from BF16 words a (the base's) and b (the model's) to
// out's, with AVX-512 sixteen at a time; the groups of eight it leaves (a NaN or an
// infinity among them) and the last few go as the decoding path takes them
// (nearswapGo, whose bits the assembly's are where it runs). The caller checks
// haveAVX512BW and gives a finite t > 0.
func nearswapBF16(out, a, b []byte, t float64) bool {
	dst, ok1 := dtype.Uint16s(out)
	aw, ok2 := dtype.Uint16s(a)
	bw, ok3 := dtype.Uint16s(b)
	if !ok1 || !ok2 || !ok3 {
		return false
	}
	byBlocksOf8(len(dst), true,
		func(j int) int { return nearswapBF16Asm(dst[j:], aw[j:], bw[j:], t) },
		func(lo, hi int) {
			bf16Tail(out[:2*hi], [][]byte{b[:2*hi]}, a[:2*hi], lo, func(dst []float32, in [][]float32) {
				nearswapGo(dst, in[0], in[1], t)
			})
		})
	return true
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
