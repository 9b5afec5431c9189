package merge

import "math"

func init() {
	register(Method{
		Name: "model_stock", Command: "model-stock",
		Short:   "Model Stock: move from the base toward the models' mean by their task vectors' agreement",
		Example: `  gomerge model-stock --base base.safetensors ft1.safetensors ft2.safetensors ft3.safetensors --out stock.safetensors`,
		Base:    BaseRequired, MinModels: 2,
		Params: []Param{{Name: "filter_wise", Kind: Bool,
			check: refuse(false, "model_stock with filter_wise (one t per row) is not supported")}},
		kernel: modelStockKernel,
	})
}

// modelStockKernel (docs/methods.md, model_stock): from the task vectors ε_i = θ_i − θ_base,
// c = the mean pairwise cosine (norm products clamped ≥ 1e-6), clamped to [0, 1];
// t = N·c / (1 + (N−1)·c); θ = t·mean_i θ_i + (1−t)·θ_base.
func modelStockKernel(m *methodRun, _ *TensorPlan) Kernel {
	nModels := len(m.weights)
	pairs := nModels * (nModels - 1) / 2
	var wt, wb float32
	return Kernel{
		Passes: []Pass{{
			NumStats: pairs + nModels,
			Chunk: func(_ Chunk, in, _ [][]float32, acc []float64) {
				base, models := in[0], in[1:]
				p := 0
				for i := range models {
					for k := i + 1; k < nModels; k++ {
						var dot float64
						for j := range base {
							dot += float64((float64(models[i][j]) - float64(base[j])) * (float64(models[k][j]) - float64(base[j])))
						}
						acc[p] += dot
						p++
					}
				}
				for i := range models {
					var sq float64
					for j := range base {
						d := float64(models[i][j]) - float64(base[j])
						sq += float64(d * d)
					}
					acc[pairs+i] += sq
				}
			},
			Done: func(perChunk []float64) error {
				sums := make([]float64, pairs+nModels)
				for c := 0; c < len(perChunk); c += len(sums) {
					for s := range sums {
						sums[s] += perChunk[c+s]
					}
				}
				var cSum float64
				p := 0
				for i := range nModels {
					for k := i + 1; k < nModels; k++ {
						cSum += sums[p] / math.Max(math.Sqrt(sums[pairs+i])*math.Sqrt(sums[pairs+k]), 1e-6)
						p++
					}
				}
				c := max(0, min(1, cSum/float64(pairs)))
				n := float64(nModels)
				t := n * c / (1 + float64((n-1)*c))
				wt, wb = float32(t), float32(1-t)
				return nil
			},
		}},
		Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
			base, models := in[0][:len(dst)], in[1:]
			inv := float32(nModels)
			clear(dst)
			for _, x := range models {
				for j := range dst {
					dst[j] += x[j]
				}
			}
			for j := range dst {
				dst[j] = float32(wt*(dst[j]/inv)) + float32(wb*base[j])
			}
		},
	}
}

// modelStockRef is model_stock's plain statement in float64: the mean pairwise cosine
// c of the task vectors (clamped to [0, 1]), t = N·c/(1+(N−1)·c), and
// t·mean_i θ_i + (1−t)·θ_base per element.
func modelStockRef(base []float32, models [][]float32) (ref, scale []float64) {
	N := float64(len(models))
	var cs float64
	pairs := 0
	for i := range models {
		for k := i + 1; k < len(models); k++ {
			var dot, ni, nk float64
			for j := range base {
				a, c := float64(models[i][j])-float64(base[j]), float64(models[k][j])-float64(base[j])
				dot += a * c
				ni += a * a
				nk += c * c
			}
			cs += dot / math.Max(math.Sqrt(ni)*math.Sqrt(nk), 1e-6)
			pairs++
		}
	}
	c := math.Max(0, math.Min(1, cs/float64(pairs)))
	t := N * c / (1 + (N-1)*c)
	ref, scale = make([]float64, len(base)), make([]float64, len(base))
	for j := range base {
		var mean float64
		for _, m := range models {
			mean += float64(m[j]) / N
		}
		ref[j] = t*mean + (1-t)*float64(base[j])
		scale[j] = math.Abs(t*mean) + math.Abs((1-t)*float64(base[j]))
	}
	return ref, scale
}
