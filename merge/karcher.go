package merge

import "math"

func init() {
	register(Method{
		Name: "karcher", Command: "karcher",
		Short:   "Karcher (Riemannian) mean of the models' directions on the sphere, scaled by their mean norm",
		Example: `  gomerge karcher a.safetensors b.safetensors c.safetensors --max-iter 10 --tol 1e-5 --out karcher.safetensors`,
		Base:    BaseAbsent, MinModels: 2,
		Params: []Param{
			{Name: "max_iter", Flag: "max-iter", Usage: "most iterations of the mean's fixed point", Kind: Seed,
				Default: 10, RecipeDefault: 10, Report: true, check: atMost(1 << 20), field: func(p *Params) any { return &p.Geo.MaxIter }},
			{Name: "tol", Flag: "tol", Usage: "convergence tolerance (also: norms at or below it count as zero)", Kind: Number,
				Default: 1e-5, RecipeDefault: 1e-5, Report: true, check: notNegative, field: func(p *Params) any { return &p.Geo.Tol }},
		},
		kernel: karcherKernel,
	})
}

func notNegative(v float64) string {
	if !(v >= 0) {
		return "must not be negative"
	}
	return ""
}

func atMost(limit float64) func(float64) string {
	return func(v float64) string {
		if v > limit {
			return "is too large"
		}
		return ""
	}
}

// karcherKernel (docs/methods.md, karcher). Every iterate of mergekit's fixed point is
// a linear combination of the models' unit vectors, so the iteration runs on N
// coefficients, with the inner products from the models' Gram matrix (one float64
// pass); the merge is then Σ β_i θ_i with float32 products added in model order.
func karcherKernel(m *methodRun, _ *TensorPlan) Kernel {
	n := len(m.weights)
	pass, gram := gramPass(n, false)
	var beta []float32
	done := pass.Done
	pass.Done = func(perChunk []float64) error {
		if err := done(perChunk); err != nil {
			return err
		}
		beta = to32(karcherCoefficients(gram(), m.p.Geo.MaxIter, m.p.Geo.Tol))
		return nil
	}
	return Kernel{
		Passes: []Pass{pass},
		Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
			combine(dst, in, beta, false)
		},
		Fused: combineFused(false, func() []float32 { return beta }),
	}
}

// karcherCoefficients runs mergekit's Karcher iteration (equal weights 1/N) in the
// span of the models, given their Gram matrix g, and returns β with result Σ β_i θ_i.
//
// With n_i = ‖θ_i‖ and e_i = θ_i/n_i, models with n_i ≤ tol are left out of the
// mean (they still count, as 0, in the final scale). u starts at the normalised
// mean of the e_i (e_first if that mean's norm is below tol); each step takes
// T = Σ a_i (θ_i/sin θ_i)(e_i − cos θ_i·u) over the e_i at an angle θ_i ≥ tol from u,
// stops when ‖T‖ < tol, and moves u to cos‖T‖·u + sin‖T‖·T/‖T‖, renormalised. The
// result is s·u with s = Σ n_i/N.
func karcherCoefficients(g [][]float64, maxIter uint64, tol float64) []float64 {
	n := len(g)
	norms := make([]float64, n)
	var valid []int
	for i := range n {
		norms[i] = math.Sqrt(max(g[i][i], 0))
		if norms[i] > tol {
			valid = append(valid, i)
		}
	}
	beta := make([]float64, n)
	if len(valid) == 0 {
		return beta // every model is (nearly) zero: so is the mean
	}
	// e is the unit vectors' Gram matrix over the valid models; vectors below are
	// coefficients over those unit vectors.
	k := len(valid)
	e := make([][]float64, k)
	for a, i := range valid {
		e[a] = make([]float64, k)
		for b, j := range valid {
			e[a][b] = g[i][j] / (norms[i] * norms[j])
		}
	}
	alpha := 1 / float64(k)
	u := make([]float64, k)
	for a := range u {
		u[a] = alpha
	}
	if nu := math.Sqrt(max(quad(e, u, u), 0)); nu < tol {
		clear(u)
		u[0] = 1
	} else {
		for a := range u {
			u[a] /= nu
		}
	}
	t := make([]float64, k)
	eu := make([]float64, k)
	for range maxIter {
		clear(t)
		for a := range k { // ⟨u, e_a⟩ = (E u)_a
			eu[a] = 0
			for b := range k {
				eu[a] += float64(e[a][b] * u[b]) // products rounded: no platform fuses them
			}
		}
		for a := range k {
			dot := max(-1, min(1, eu[a]))
			theta := math.Acos(dot)
			if theta < tol {
				continue
			}
			f := alpha * theta / math.Sin(theta)
			t[a] += f
			for b := range k {
				t[b] -= float64(f * dot * u[b])
			}
		}
		nt := math.Sqrt(max(quad(e, t, t), 0))
		if nt < tol {
			break
		}
		c, s := math.Cos(nt), math.Sin(nt)/nt
		for b := range k {
			u[b] = float64(c*u[b]) + float64(s*t[b])
		}
		if nu := math.Sqrt(max(quad(e, u, u), 0)); nu > tol {
			for b := range k {
				u[b] /= nu
			}
		}
	}
	var scale float64
	for _, nn := range norms {
		scale += nn / float64(n)
	}
	for a, i := range valid {
		beta[i] = scale * u[a] / norms[i]
	}
	return beta
}
