package merge

import (
	"context"
	"math"

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
			clear(dst)
			for i, x := range in {
				w := m.weights[i]
				x = x[:len(dst)]
				for j := range dst {
					dst[j] += float32(w * x[j])
				}
			}
			for j := range dst {
				dst[j] /= den
			}
		},
		GPU: func(ctx context.Context, dev *gpu.Device, t *TensorPlan, out gpu.Output) ([]float64, error) {
			return nil, dev.Linear(ctx, t.NumElements(), out, gpuOperands(t.In), m.weights, den)
		},
		GPULight: true,
	}
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
