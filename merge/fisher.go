package merge

import (
	"context"
	"math"

	"github.com/gomerge/gomerge/gpu"
)

func init() {
	weight := weightParam()
	weight.check = positive // a weight scales a Fisher, which must stay positive
	register(Method{
		Name: "fisher", Command: "fisher",
		Short:     "Fisher merging: θ = Σ λ_i F_i θ_i / Σ λ_i F_i with each model's diagonal Fisher",
		Example:   `  gomerge fisher math.safetensors:fisher=math_fisher.safetensors law.safetensors:fisher=law_fisher.safetensors --out merged.safetensors`,
		Base:      BaseAbsent,
		MinModels: 1,
		Params: []Param{weight,
			{Name: "fisher", Flag: "fisher", Kind: File, PerModel: true, fileRef: func(m *Model) *string { return &m.Fisher }},
			{Name: "epsilon", Flag: "epsilon", Usage: "floor of the Fisher values", Kind: Number, Scalar: true,
				Default: 1e-6, RecipeDefault: 1e-6, check: positive, Report: true, field: func(p *Params) any { return &p.Epsilon }}},
		kernel: fisherKernel,
	})
}

// fisherKernel (docs/methods.md, fisher, Matena & Raffel): θ = Σ λ_i F̃_i θ_i / Σ λ_i F̃_i with
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

// fisherRef is Fisher merging's plain statement, per element in float64:
// Σ w_i max(F_i, ε) θ_i / Σ w_i max(F_i, ε).
func fisherRef(models, fishers [][]float32, w []float64, eps float64) (ref, scale []float64) {
	ref, scale = make([]float64, len(models[0])), make([]float64, len(models[0]))
	for j := range ref {
		var num, den float64
		for i, x := range models {
			f := math.Max(float64(fishers[i][j]), eps)
			num += w[i] * f * float64(x[j])
			den += w[i] * f
			scale[j] += math.Abs(w[i] * f * float64(x[j]))
		}
		ref[j] = num / den
		scale[j] /= den
	}
	return ref, scale
}
