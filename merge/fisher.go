package merge

import (
	"context"

	"github.com/gomerge/gomerge/gpu"
)

// fisherKernel (SPEC §2 fisher, Matena & Raffel): θ = Σ λ_i F̃_i θ_i / Σ λ_i F̃_i with
// F̃ = max(F, ε), per element in float32, each product rounded, added in model order.
// The Fishers are the auxiliary operands, one per model.
func fisherKernel(m *methodRun, _ *TensorPlan) Kernel {
	eps := float32(m.p.Epsilon)
	return Kernel{
		Merge: func(dst []float32, in, aux [][]float32, _ Chunk) {
			for j := range dst {
				var num, den float32
				for i, x := range in {
					f := float32(m.weights[i] * max(aux[i][j], eps))
					num += float32(f * x[j])
					den += f
				}
				dst[j] = num / den
			}
		},
		GPU: func(ctx context.Context, dev *gpu.Device, t *TensorPlan, out gpu.Output) ([]float64, error) {
			return nil, dev.Fisher(ctx, t.NumElements(), out, gpuOperands(t.In), gpuOperands(t.Aux), m.weights, eps)
		},
	}
}
