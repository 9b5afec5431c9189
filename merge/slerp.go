package merge

import (
	"math"

	"github.com/gomerge/gomerge/formats/dtype"
)

func init() {
	register(Method{
		Name: "slerp", Command: "slerp",
		Short:   "Spherical interpolation from the base to one model by t",
		Example: `  gomerge slerp --base a.safetensors b.safetensors --t 0.3 --out slerp.safetensors`,
		Base:    BaseRequired, MinModels: 1, MaxModels: 1,
		Params: []Param{{Name: "t", Flag: "t", Usage: "interpolation factor in [0, 1]: 0 gives the base", Kind: Number,
			Default: 0.5, RecipeDefault: math.NaN(), check: unitInterval, Report: true, field: func(p *Params) any { return &p.T }}},
		kernel: slerpKernel,
	})
}

// slerpKernel (docs/methods.md, slerp): spherical interpolation between the base (v0) and the
// model (v1) by t, on the flattened tensors. The Gram pass gives v0·v1, ‖v0‖² and
// ‖v1‖² in float64; the coefficients are computed in float64 and each product
// rounded to float32.
func slerpKernel(m *methodRun, _ *TensorPlan) Kernel {
	pass, gram := gramPass(2, false)
	var c0, c1 float32
	done := pass.Done
	pass.Done = func(perChunk []float64) error {
		if err := done(perChunk); err != nil {
			return err
		}
		g := gram()
		a, b := slerpCoefficients(m.p.T, g[0][1], math.Sqrt(g[0][0]), math.Sqrt(g[1][1]))
		c0, c1 = float32(a), float32(b)
		return nil
	}
	return Kernel{
		Passes: []Pass{pass},
		Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
			switch {
			case m.p.T == 0: // exactly the base: no −0 turned +0, no 0·Inf from the model
				copy(dst, in[0])
			case m.p.T == 1:
				copy(dst, in[1])
			default:
				Lerp(dst, in[0], in[1], c0, c1)
			}
		},
		Fused: lerpFused(func() (float32, float32, bool) { return c0, c1, m.p.T != 0 && m.p.T != 1 }),
	}
}

// lerpFused is a Kernel.Fused for merges that are Lerp(dst, in[0], in[1], c0, c1)
// (slerp, nuslerp without a base): with BF16 inputs and output, SFA's fused lerp
// (lerpBF16, the same bits as decoding, Lerp and encoding), its statistics unused.
// coef gives the coefficients once the passes are done, and false where the merge
// is not that Lerp. It declines NaN coefficients (a tensor holding a NaN or an
// infinity can make them): SFA's kernels, whose β is never NaN, take their operands
// in another order than Lerp's, so a NaN's payload could differ.
func lerpFused(coef func() (c0, c1 float32, ok bool)) func([]byte, dtype.DType, []Operand, []float64, Chunk) bool {
	return func(out []byte, outDT dtype.DType, in []Operand, _ []float64, _ Chunk) bool {
		c0, c1, ok := coef()
		if !ok || c0 != c0 || c1 != c1 || outDT != dtype.BF16 || !allBF16(in) || len(in) != 2 {
			return false
		}
		lerpBF16(out, in[0].Data, in[1].Data, c0, c1)
		return true
	}
}

// slerpCoefficients returns the weights of v0 and v1: a norm ≤ 1e-8 leaves its vector
// unnormalised; nearly colinear vectors (|cos| > 0.9995) are interpolated linearly.
func slerpCoefficients(t, dot, n0, n1 float64) (float64, float64) {
	if n0 <= 1e-8 {
		n0 = 1
	}
	if n1 <= 1e-8 {
		n1 = 1
	}
	cos := dot / (n0 * n1)
	if math.Abs(cos) > 0.9995 || math.IsNaN(cos) {
		return 1 - t, t
	}
	omega := math.Acos(max(-1, min(1, cos)))
	s := math.Sin(omega)
	return math.Sin((1-t)*omega) / s, math.Sin(t*omega) / s
}

// slerpRef is slerp's plain statement in float64: the angle between the flattened
// tensors, the coefficients sin((1−t)Ω)/sin Ω and sin(tΩ)/sin Ω (linear when nearly
// colinear), and c0·v0 + c1·v1 per element.
func slerpRef(v0, v1 []float32, t float64) (ref, scale []float64) {
	var dot, n0, n1 float64
	for j := range v0 {
		dot += float64(v0[j]) * float64(v1[j])
		n0 += float64(v0[j]) * float64(v0[j])
		n1 += float64(v1[j]) * float64(v1[j])
	}
	c0, c1 := slerpCoefficients(t, dot, math.Sqrt(n0), math.Sqrt(n1))
	ref, scale = make([]float64, len(v0)), make([]float64, len(v0))
	for j := range v0 {
		ref[j] = c0*float64(v0[j]) + c1*float64(v1[j])
		scale[j] = math.Abs(c0*float64(v0[j])) + math.Abs(c1*float64(v1[j]))
	}
	return ref, scale
}
