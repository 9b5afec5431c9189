package merge

import (
	"context"

	"github.com/gomerge/gomerge/gpu"
)

// linearKernel: θ = Σ w_i θ_i / Σ w_i (model soup, Wise-FT). Per element, each
// product is rounded to float32 and added in model order; the weight sum is taken
// in float64 and rounded once.
func linearKernel(m *methodRun, _ *TensorPlan) Kernel {
	var wsum float64 // as validate computes it
	for _, w := range m.weights {
		wsum += float64(w)
	}
	den := float32(wsum)
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
