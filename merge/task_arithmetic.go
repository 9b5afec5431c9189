package merge

import (
	"context"

	"github.com/gomerge/gomerge/gpu"
)

func init() {
	register(taskVectorMethod(taskVectorPreset{
		name: "task_arithmetic", command: "task-arithmetic",
		short:    "Add weighted task vectors to the base: θ = θ_base + λ Σ w_i (θ_i − θ_base)",
		example:  `  gomerge task-arithmetic --base base.safetensors math.safetensors law.safetensors:weight=0.5 --lambda 0.8 --out ta.safetensors`,
		sparsify: SparsifyNone,
	}))
}

// taskArithmeticKernel (SparsifyNone, ConsensusNone; normalize folded into λ): θ = θ_base + λ Σ w_i δ_i with δ_i = θ_i − θ_base. Per
// element: δ_i in float32, w_i·δ_i rounded and added in model order, then
// θ_base + float32(λ·sum).
func taskArithmeticKernel(m *methodRun, _ *TensorPlan) Kernel {
	lambda := m.lambda
	return Kernel{
		Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
			base := in[0][:len(dst)]
			clear(dst)
			for i, x := range in[1:] {
				w := m.weights[i]
				x = x[:len(dst)]
				for j := range dst {
					dst[j] += float32(w * (x[j] - base[j]))
				}
			}
			for j := range dst {
				dst[j] = base[j] + float32(lambda*dst[j])
			}
		},
		// addTaskVectors with every element kept and no rescale: the same sums, in
		// the same order.
		GPU: func(ctx context.Context, dev *gpu.Device, t *TensorPlan, out gpu.Output) ([]float64, error) {
			in := gpuOperands(t.In)
			tm := make([]gpu.TaskModel, len(m.weights))
			for i := range tm {
				tm[i] = gpu.TaskModel{X: in[i+1], Weight: m.weights[i], Mode: gpu.KeepAll}
			}
			return nil, dev.TaskVectors(ctx, t.NumElements(), out, in[0], tm, lambda, false)
		},
		GPULight: true,
	}
}
