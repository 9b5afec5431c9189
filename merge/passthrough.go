package merge

func init() {
	register(Method{
		Name:      "passthrough",
		Short:     "Copy one model's tensors, scaled (mergekit's passthrough; recipes' slices stack layers with it)",
		Base:      BaseAbsent,
		MinModels: 1, MaxModels: 1,
		// mergekit's scale is a tensor parameter: per model, of which there is one.
		Params: []Param{{Name: "scale", Kind: Number, PerModel: true, Default: 1, RecipeDefault: 1,
			model: func(m *Model) *float64 { return &m.Weight }, tensor: func(mp *ModelParams) *float64 { return &mp.Weight }}},
		kernel: func(m *methodRun, _ *TensorPlan) Kernel { return passthroughKernel(m.models[0].Weight) },
		report: func(m *methodRun) map[string]any {
			return map[string]any{"scale": m.models[0].Weight, "per_tensor": m.perTensor}
		},
	})
}

// passthroughKernel copies its one input, scaled when scale is not 1, each product
// rounded to float32. Reference: θ = float32(scale)·x per element.
func passthroughKernel(scale float64) Kernel {
	if scale == 1 {
		return Kernel{Merge: func(dst []float32, in, _ [][]float32, _ Chunk) { copy(dst, in[0]) }}
	}
	s := float32(scale)
	return Kernel{Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
		x := in[0][:len(dst)]
		for j := range dst {
			dst[j] = s * x[j]
		}
	}}
}
