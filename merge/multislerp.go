package merge

import (
	"errors"
	"math"
)

func init() {
	weight := weightParam()
	weight.RecipeDefault = math.NaN() // mergekit requires each model's weight
	register(Method{
		Name: "multislerp", Command: "multislerp",
		Short: "Multi-SLERP: barycentric interpolation of several models on the sphere (with --base: of their task vectors)",
		Example: `  gomerge multislerp a.safetensors:weight=1 b.safetensors:weight=2 c.safetensors:weight=1 --out multislerp.safetensors
  gomerge multislerp --base base.safetensors a.safetensors b.safetensors --out multislerp.safetensors`,
		Base: BaseOptional, MinModels: 1,
		Params: []Param{weight,
			{Name: "normalize_weights", Flag: "normalize-weights", Usage: "divide the weights by their sum", Kind: Bool,
				Default: 1, RecipeDefault: 1, field: func(p *Params) any { return &p.Normalize }},
			{Name: "eps", Flag: "eps", Usage: "added to norms before dividing by them", Kind: Number,
				Default: 1e-8, RecipeDefault: 1e-8, Report: true, check: notNegative, field: func(p *Params) any { return &p.Epsilon }},
		},
		check: func(r *methodRun) error {
			if r.p.Normalize == SwitchOn {
				var sum float64
				for _, m := range r.models {
					sum += m.Weight
				}
				if sum == 0 {
					return &ParamError{Param: "weight", Msg: "the weights sum to 0 (normalize_weights divides by their sum)", Bool: true}
				}
			}
			return nil
		},
		kernel: multislerpKernel,
	})
}

// errAntipodal is multislerp's refusal of a tensor whose unit vectors' weighted mean
// is (nearly) zero with more than two models.
var errAntipodal = errors.New("multislerp: the weighted mean of the models' directions is zero (antipodal models whose weights balance out); change the weights")

// multislerpKernel (docs/methods.md, multislerp): the result is a linear combination
// of the models' (task) vectors, so one float64 Gram pass gives its coefficients, and
// the merge applies them as combine does.
func multislerpKernel(m *methodRun, _ *TensorPlan) Kernel {
	n := len(m.weights)
	w := make([]float64, n)
	for i, mm := range m.models {
		w[i] = mm.Weight
	}
	pass, gram := gramPass(n, m.base)
	var gamma []float32
	done := pass.Done
	pass.Done = func(perChunk []float64) error {
		if err := done(perChunk); err != nil {
			return err
		}
		c, err := multislerpCoefficients(gram(), w, m.p.Normalize == SwitchOn, m.p.Epsilon)
		gamma = to32(c)
		return err
	}
	k := Kernel{
		Passes: []Pass{pass},
		Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
			combine(dst, in, gamma, m.base)
		},
		Fused: combineFused(m.base, func() []float32 { return gamma }),
	}
	if n == 1 { // mergekit returns the single model as it is
		k.Passes = nil
		k.Merge = func(dst []float32, in, _ [][]float32, _ Chunk) { copy(dst, in[len(in)-1]) }
		k.Fused = nil
	}
	return k
}

// multislerpCoefficients follows mergekit's multislerp on vectors y_i (the models, or
// their task vectors) with Gram matrix g, and returns γ with result Σ γ_i y_i:
// w normalised to sum 1 (if asked); units e_i = y_i/(‖y_i‖+eps); mean μ = Σ w_i e_i,
// normalised (if ‖μ‖ < eps: with two models the plain w_0 y_0 + w_1 y_1, otherwise an
// error); tangent τ = Σ w_i (e_i − ⟨e_i, μ⟩ μ); r = μ cos‖τ‖' + τ sin‖τ‖'/‖τ‖'
// with ‖τ‖' = ‖τ‖ + eps; scaled by Σ w_i ‖y_i‖.
// multislerpWeights is a copy of w, divided by its sum when normalize says so.
func multislerpWeights(w []float64, normalize bool) []float64 {
	w = append([]float64(nil), w...)
	if normalize {
		var s float64
		for _, x := range w {
			s += x
		}
		for i := range w {
			w[i] /= s
		}
	}
	return w
}

func multislerpCoefficients(g [][]float64, w []float64, normalize bool, eps float64) ([]float64, error) {
	n := len(g)
	w = multislerpWeights(w, normalize)
	norms := make([]float64, n)
	for i := range n {
		norms[i] = math.Sqrt(max(g[i][i], 0))
	}
	mu := make([]float64, n) // coefficients over the y_i
	for i := range n {
		mu[i] = w[i] / (norms[i] + eps)
	}
	muNorm := math.Sqrt(max(quad(g, mu, mu), 0))
	if muNorm < eps {
		if n == 2 {
			return w, nil
		}
		return nil, errAntipodal
	}
	for i := range mu {
		mu[i] /= muNorm
	}
	// τ = Σ_i w_i e_i − (Σ_i w_i ⟨e_i, μ⟩) μ, with ⟨e_i, μ⟩ = (G μ)_i/(‖y_i‖+eps).
	tau := make([]float64, n)
	var along float64
	for i := range n {
		tau[i] = w[i] / (norms[i] + eps)
		var gm float64
		for k := range n {
			gm += float64(g[i][k] * mu[k]) // products rounded: no platform fuses them
		}
		along += w[i] * gm / (norms[i] + eps)
	}
	for i := range n {
		tau[i] -= float64(along * mu[i])
	}
	tn := math.Sqrt(max(quad(g, tau, tau), 0)) + eps
	var avg float64
	for i := range n {
		avg += float64(norms[i] * w[i])
	}
	c, s := math.Cos(tn), math.Sin(tn)/tn
	out := make([]float64, n)
	for i := range n {
		out[i] = avg * (float64(c*mu[i]) + float64(s*tau[i]))
	}
	return out, nil
}
