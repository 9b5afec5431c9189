package merge

import (
	"context"

	"github.com/gomerge/gomerge/formats/dtype"
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
			sumF32(dst, in, m.weights, true, sumOntoBase, lambda)
		},
		// The same from the inputs' bytes: BF16 words with AVX-512 (combineBF16),
		// else a tile at a time (elementwiseTiles).
		Fused: func(out []byte, outDT dtype.DType, in []Operand, _ []float64, _ Chunk) bool {
			if y, b, ok := bf16Operands(in, true); ok && haveAVX512BW && outDT == dtype.BF16 && len(out) == len(b) {
				combineBF16(out, y, b, m.weights, sumOntoBase, lambda)
				return true
			}
			var base [tileElems]float32
			return elementwiseTiles(out, outDT, in, func(s, x []float32, off int64) bool {
				b := base[:len(s)]
				if !decodeTile(b, in[0], off) {
					return false
				}
				clear(s)
				for i, op := range in[1:] {
					if !decodeTile(x, op, off) {
						return false
					}
					addScaled(s, x, b, m.weights[i])
				}
				scaleOnto(s, b, lambda)
				return true
			})
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
	}
}
