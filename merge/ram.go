package merge

import (
	"math"
	"sync"
)

func init() {
	eps := Param{Name: "epsilon", Flag: "epsilon", Usage: "a task-vector entry counts when its magnitude exceeds this", Kind: Number,
		Default: 1e-5, RecipeDefault: 1e-5, Report: true, check: notNegative, field: func(p *Params) any { return &p.Epsilon }}
	register(Method{
		Name: "ram", Command: "ram",
		Short:   "Reinforced Agent Merging: add each task-vector entry a single model changes, average those several change",
		Example: `  gomerge ram --base base.safetensors agent1.safetensors agent2.safetensors --out ram.safetensors`,
		Base:    BaseRequired, MinModels: 1,
		Params: []Param{eps},
		kernel: func(m *methodRun, t *TensorPlan) Kernel { return ramKernel(m, false) },
	})
	register(Method{
		Name: "ramplus_tl", Command: "ramplus-tl",
		Short:   "RAM+ (tensor-local): RAM with each model's unique entries scaled up by its share of overlapping ones",
		Example: `  gomerge ramplus-tl --base base.safetensors agent1.safetensors agent2.safetensors --r 0.1 --alpha 0.2 --out ramplus.safetensors`,
		Base:    BaseRequired, MinModels: 1,
		Params: []Param{eps,
			{Name: "r", Flag: "r", Usage: "scale of the overlap ratio in each model's boost 1 + r·min(ρ, alpha)", Kind: Number,
				Default: 0.1, RecipeDefault: 0.1, Report: true, field: func(p *Params) any { return &p.Geo.R }},
			{Name: "alpha", Flag: "alpha", Usage: "cap of the overlap ratio ρ", Kind: Number,
				Default: 0.2, RecipeDefault: 0.2, Report: true, field: func(p *Params) any { return &p.Geo.Alpha }},
		},
		kernel: func(m *methodRun, t *TensorPlan) Kernel { return ramKernel(m, true) },
	})
}

// ramKernel (docs/methods.md, ram): with δ_i = θ_i − θ_base and an entry of δ_i
// counting when |δ_i| > epsilon, each element adds to the base its counting entries:
// whole where one model counts, divided by the count where several do. ramplus_tl
// first counts, per model over the whole tensor, its counting entries that are shared
// (S_i) and unique (U_i), and scales its unique entries by
// λ_i = 1 + r·clamp(S_i/max(U_i, epsilon), 0, alpha).
func ramKernel(m *methodRun, plus bool) Kernel {
	n := len(m.weights)
	eps := m.p.Epsilon
	lambda := make([]float32, n)
	for i := range lambda {
		lambda[i] = 1
	}
	var passes []Pass
	if plus {
		passes = []Pass{{
			NumStats: 2 * n, // per model: shared, unique (whole numbers: exact in any order)
			Chunk: func(_ Chunk, in, _ [][]float32, acc []float64) {
				base := in[0]
				for j := range base {
					count := 0
					for i := range n {
						if ramCounts(in[1+i][j], base[j], eps) {
							count++
						}
					}
					for i := range n {
						if ramCounts(in[1+i][j], base[j], eps) {
							acc[2*i+b2i(count == 1)]++
						}
					}
				}
			},
			Done: func(perChunk []float64) error {
				for i, l := range ramLambdas(perChunk, n, eps, m.p.Geo.R, m.p.Geo.Alpha) {
					lambda[i] = float32(l)
				}
				return nil
			},
		}}
	}
	var pool sync.Pool
	pool.New = func() any { return make([]bool, n) }
	return Kernel{
		Passes: passes,
		Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
			keep := pool.Get().([]bool)
			defer pool.Put(keep)
			base := in[0][:len(dst)]
			for j := range dst {
				count := 0
				for i := range n {
					keep[i] = ramCounts(in[1+i][j], base[j], eps)
					count += b2i(keep[i])
				}
				var sum float32
				for i := range n {
					if !keep[i] {
						continue
					}
					d := float32(float64(in[1+i][j]) - float64(base[j]))
					if count == 1 {
						sum += float32(lambda[i] * d)
					} else {
						sum += d / float32(count)
					}
				}
				dst[j] = base[j] + sum
			}
		},
	}
}

// ramCounts says whether the model's entry counts: |x − b| > epsilon, the difference
// taken exactly (in float64).
func ramCounts(x, b float32, eps float64) bool {
	return math.Abs(float64(x)-float64(b)) > eps
}

// ramLambdas turns the per-chunk shared and unique counts into each model's λ.
func ramLambdas(perChunk []float64, n int, eps, r, alpha float64) []float64 {
	out := make([]float64, n)
	for i := range n {
		var shared, unique float64
		for c := 0; c < len(perChunk); c += 2 * n {
			shared += perChunk[c+2*i]
			unique += perChunk[c+2*i+1]
		}
		rho := shared / max(unique, eps)
		out[i] = 1 + float64(r*max(0, min(alpha, rho))) // rounded: no platform fuses it
	}
	return out
}

// ramRef is ram's (plus: ramplus_tl's) plain statement in float64.
func ramRef(base []float32, models [][]float32, eps, r, alpha float64, plus bool) (ref, scale []float64) {
	n := len(models)
	counts := make([]int, len(base))
	for j := range base {
		for _, x := range models {
			if math.Abs(float64(x[j])-float64(base[j])) > eps {
				counts[j]++
			}
		}
	}
	lambda := make([]float64, n)
	for i, x := range models {
		lambda[i] = 1
		if !plus {
			continue
		}
		var shared, unique float64
		for j := range base {
			if math.Abs(float64(x[j])-float64(base[j])) > eps {
				if counts[j] > 1 {
					shared++
				} else {
					unique++
				}
			}
		}
		lambda[i] = 1 + r*max(0, min(alpha, shared/max(unique, eps)))
	}
	ref, scale = make([]float64, len(base)), make([]float64, len(base))
	for j := range base {
		b := float64(base[j])
		ref[j], scale[j] = b, math.Abs(b)
		for i, x := range models {
			d := float64(x[j]) - b
			if !(math.Abs(d) > eps) {
				continue
			}
			term := d / float64(counts[j])
			if counts[j] == 1 {
				term = lambda[i] * d
			}
			ref[j] += term
			scale[j] += math.Abs(term)
		}
	}
	return ref, scale
}
