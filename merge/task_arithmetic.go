package merge

// taskArithmeticKernel: θ = θ_base + λ Σ w_i δ_i with δ_i = θ_i − θ_base. Per
// element: δ_i in float32, w_i·δ_i rounded and added in model order, then
// θ_base + float32(λ·sum).
func taskArithmeticKernel(m *methodRun, _ *TensorPlan) Kernel {
	lambda := float32(m.p.Lambda)
	return Kernel{Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
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
	}}
}
