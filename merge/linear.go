package merge

import (
	"context"
	"math"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/gpu"
)

func init() {
	register(Method{
		Name: "linear", Command: "linear",
		Short:     "Weighted average of the models: θ = Σ w_i θ_i / Σ w_i (model soup, Wise-FT)",
		Example:   `  gomerge linear a.safetensors:weight=0.3 b.safetensors:weight=0.7 --out soup.safetensors`,
		Base:      BaseAbsent,
		MinModels: 1,
		Params: []Param{weightParam(),
			// mergekit's normalize: false is the plain weighted sum Σ w_i θ_i.
			{Name: "normalize", Kind: Bool, Default: 1, RecipeDefault: 1, field: func(p *Params) any { return &p.Normalize }}},
		check: func(r *methodRun) error {
			if r.p.Normalize == SwitchOn && linearDivisor(r) == 0 {
				return &ParamError{Param: "weight", Msg: "the weights sum to 0", Bool: true}
			}
			return nil
		},
		kernel: linearKernel,
	})
}

// linearDivisor is Σ w_i of the weights as the kernel holds them (float32), summed
// in float64 and rounded once; 1 without normalize.
func linearDivisor(m *methodRun) float32 {
	if m.p.Normalize != SwitchOn {
		return 1
	}
	var wsum float64
	for _, w := range m.weights {
		wsum += float64(w)
	}
	return float32(wsum)
}

// linearKernel: θ = Σ w_i θ_i / Σ w_i (model soup, Wise-FT). Per element, each
// product is rounded to float32 and added in model order, then divided by the
// divisor (dividing by 1 is exact).
func linearKernel(m *methodRun, _ *TensorPlan) Kernel {
	den := linearDivisor(m)
	return Kernel{
		Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
			sumF32(dst, in, m.weights, false, sumOver, den)
		},
		Fused: func(out []byte, outDT dtype.DType, in []Operand, _ []float64, _ Chunk) bool {
			if y, _, ok := bf16Operands(in, false); ok && haveAVX512BW && outDT == dtype.BF16 && len(out) == len(y[0]) {
				combineBF16(out, y, nil, m.weights, sumOver, den)
				return true
			}
			return linearTiled(out, outDT, in, m.weights, den)
		},
		GPU: func(ctx context.Context, dev *gpu.Device, t *TensorPlan, out gpu.Output) ([]float64, error) {
			return nil, dev.Linear(ctx, t.NumElements(), out, gpuOperands(t.In), m.weights, den)
		},
	}
}

// linearTiled is linear's fused path (Kernel.Fused) for inputs other than BF16 or
// without AVX-512: decode each input's tile, add its products, divide, as the
// float32 merge (sumF32's sumOver) does element for element (elementwiseTiles).
func linearTiled(out []byte, outDT dtype.DType, in []Operand, w []float32, den float32) bool {
	return elementwiseTiles(out, outDT, in, func(s, x []float32, off int64) bool {
		clear(s)
		for i, op := range in {
			if !decodeTile(x, op, off) {
				return false
			}
			addScaled(s, x, nil, w[i])
		}
		divide(s, den)
		return true
	})
}

// linearRef is linear's plain statement, per element in float64: Σ w_i x_i / Σ w_i
// (normalize) or Σ w_i x_i. scale is the magnitude of the terms, for tolerances.
func linearRef(models [][]float32, w []float64, normalize bool) (ref, scale []float64) {
	den := 1.0
	if normalize {
		den = 0
		for _, wi := range w {
			den += wi
		}
	}
	ref, scale = make([]float64, len(models[0])), make([]float64, len(models[0]))
	for j := range ref {
		for i, x := range models {
			ref[j] += w[i] * float64(x[j]) / den
			scale[j] += math.Abs(w[i] * float64(x[j]) / den)
		}
	}
	return ref, scale
}
