package merge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// geoShapes add, to methodShapes' cases (1-D, odd, rows longer than a chunk, one
// element), a tensor of several chunks with short rows, so that rows and columns
// straddle chunk boundaries and columns wrap inside a chunk.
var geoShapes = map[string][]int64{
	"norm.weight": {7},
	"odd.weight":  {13, 5},
	"big.weight":  {3, ChunkElems + 1001},
	"one.weight":  {1},
	"tall.weight": {40000, 3},
}

func geoCkpt(rng *rand.Rand, dt dtype.DType, like *ckpt, scale float64) *ckpt {
	return randomCkptOf(rng, dt, geoShapes, []string{"norm.weight", "odd.weight", "big.weight", "one.weight", "tall.weight"}, like, scale)
}

func geoFixture(seed uint64, dt dtype.DType, n int) (*ckpt, []*ckpt) {
	rng := rand.New(rand.NewPCG(seed, 11))
	base := geoCkpt(rng, dt, nil, 0.05)
	var models []*ckpt
	for range n {
		models = append(models, geoCkpt(rng, dt, base, 0.02))
	}
	return base, models
}

// dot64 is the float64 dot product of the direct references.
func dot64(a, b []float64) float64 {
	var s float64
	for j := range a {
		s += a[j] * b[j]
	}
	return s
}

// karcherDirect is mergekit's Karcher iteration written on the vectors themselves, in
// float64: the independent check of karcherCoefficients' work in the models' span.
func karcherDirect(models [][]float32, maxIter int, tol float64) []float64 {
	n, m := len(models), len(models[0])
	var units [][]float64
	var norms []float64
	for _, x := range models {
		v := make([]float64, m)
		for j := range v {
			v[j] = float64(x[j])
		}
		nn := math.Sqrt(dot64(v, v))
		norms = append(norms, nn)
		if nn > tol {
			for j := range v {
				v[j] /= nn
			}
			units = append(units, v)
		}
	}
	out := make([]float64, m)
	if len(units) == 0 {
		return out
	}
	a := 1 / float64(len(units))
	u := make([]float64, m)
	for _, e := range units {
		for j := range u {
			u[j] += a * e[j]
		}
	}
	if nu := math.Sqrt(dot64(u, u)); nu < tol {
		copy(u, units[0])
	} else {
		for j := range u {
			u[j] /= nu
		}
	}
	for range maxIter {
		t := make([]float64, m)
		for _, e := range units {
			d := max(-1, min(1, dot64(u, e)))
			th := math.Acos(d)
			if th < tol {
				continue
			}
			for j := range t {
				t[j] += a * th / math.Sin(th) * (e[j] - d*u[j])
			}
		}
		nt := math.Sqrt(dot64(t, t))
		if nt < tol {
			break
		}
		for j := range u {
			u[j] = math.Cos(nt)*u[j] + math.Sin(nt)*t[j]/nt
		}
		if nu := math.Sqrt(dot64(u, u)); nu > tol {
			for j := range u {
				u[j] /= nu
			}
		}
	}
	var s float64
	for _, nn := range norms {
		s += nn / float64(n)
	}
	for j := range out {
		out[j] = s * u[j]
	}
	return out
}

// multislerpDirect is mergekit's multislerp written on the vectors, in float64.
func multislerpDirect(base []float32, models [][]float32, w []float64, normalize bool, eps float64) []float64 {
	m := len(models[0])
	w = multislerpWeights(w, normalize)
	var ys, units [][]float64
	var norms []float64
	for _, x := range models {
		y := make([]float64, m)
		for j := range y {
			y[j] = float64(x[j])
			if base != nil {
				y[j] -= float64(base[j])
			}
		}
		nn := math.Sqrt(dot64(y, y))
		e := make([]float64, m)
		for j := range e {
			e[j] = y[j] / (nn + eps)
		}
		ys, units, norms = append(ys, y), append(units, e), append(norms, nn)
	}
	mean := make([]float64, m)
	for i, e := range units {
		for j := range mean {
			mean[j] += w[i] * e[j]
		}
	}
	mn := math.Sqrt(dot64(mean, mean))
	for j := range mean {
		mean[j] /= mn
	}
	tau := make([]float64, m)
	for i, e := range units {
		d := dot64(e, mean)
		for j := range tau {
			tau[j] += w[i] * (e[j] - d*mean[j])
		}
	}
	tn := math.Sqrt(dot64(tau, tau)) + eps
	var avg float64
	for i := range norms {
		avg += norms[i] * w[i]
	}
	out := make([]float64, m)
	for j := range out {
		out[j] = avg * (mean[j]*math.Cos(tn) + tau[j]*math.Sin(tn)/tn)
		if base != nil {
			out[j] += float64(base[j])
		}
	}
	return out
}

// nuslerpRef is nuslerp's plain statement in float64 on the tensor's own indices:
// the vectors are the whole tensor (flatten, or 1-D), its rows, or (rowWise) its
// vectors along the first dimension.
func nuslerpRef(shape []int64, base, x0, x1 []float32, w0, w1 float64, flatten, rowWise bool) (ref, scale []float64) {
	numel := int(numElements(shape))
	t := nuslerpT(w0, w1)
	var groups [][]int // flat indices of each vector
	switch {
	case flatten || len(shape) <= 1:
		g := make([]int, numel)
		for j := range g {
			g[j] = j
		}
		groups = [][]int{g}
	case rowWise:
		inner := numel / int(shape[0])
		for c := range inner {
			var g []int
			for r := range int(shape[0]) {
				g = append(g, r*inner+c)
			}
			groups = append(groups, g)
		}
	default:
		last := int(shape[len(shape)-1])
		for r := range numel / last {
			var g []int
			for c := range last {
				g = append(g, r*last+c)
			}
			groups = append(groups, g)
		}
	}
	ref, scale = make([]float64, numel), make([]float64, numel)
	v := func(x []float32, j int) float64 {
		if base != nil {
			return float64(x[j]) - float64(base[j])
		}
		return float64(x[j])
	}
	for _, g := range groups {
		var dot, n0, n1 float64
		for _, j := range g {
			dot += v(x0, j) * v(x1, j)
			n0 += v(x0, j) * v(x0, j)
			n1 += v(x1, j) * v(x1, j)
		}
		c0, c1 := nuslerpCoefficients(t, dot, n0, n1)
		for _, j := range g {
			var b float64
			if base != nil {
				b = float64(base[j])
			}
			ref[j] = b + c0*v(x0, j) + c1*v(x1, j)
			scale[j] = math.Abs(b) + math.Abs(c0*v(x0, j)) + math.Abs(c1*v(x1, j))
		}
	}
	return ref, scale
}

// runGeo runs a method on ckpts of geoShapes.
func runGeo(t *testing.T, dt dtype.DType, method string, p Params, base *ckpt, models []*ckpt, weights []float64, threads int) map[string][]float32 {
	t.Helper()
	return runMethodFiles(t, dt, method, p, base, models, weights, nil, threads)
}

// TestGeoMethodsAgainstReference runs each method on random checkpoints, BF16 and
// F32, and compares with its float64 reference (within checkClose's ulp-level
// tolerance); the Gram-matrix methods' references are written on the vectors
// themselves, independently of the kernels' coefficient algebra.
func TestGeoMethodsAgainstReference(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		base, models := geoFixture(21, dt, 3)
		t.Run(dt.String()+"/nearswap", func(t *testing.T) {
			for _, tt := range []float64{1e-4, 0.01, 0.5} {
				got := runGeo(t, dt, "nearswap", Params{T: tt}, base, models[:1], nil, 2)
				for _, name := range referenceNames(base) {
					ref, scale := nearswapRef(base.vals[name], models[0].vals[name], tt)
					checkClose(t, fmt.Sprintf("t=%g %s", tt, name), got[name], ref, scale, dt)
				}
			}
		})
		t.Run(dt.String()+"/ram", func(t *testing.T) {
			for _, eps := range []float64{1e-5, 0.02} { // 0.02: many entries do not count
				got := runGeo(t, dt, "ram", Params{Epsilon: eps}, base, models, nil, 2)
				plus := runGeo(t, dt, "ramplus_tl", Params{Epsilon: eps, Geo: GeoParams{R: 0.5, Alpha: 0.9}}, base, models, nil, 2)
				for _, name := range referenceNames(base) {
					ref, scale := ramRef(base.vals[name], vals(models, name), eps, 0, 0, false)
					checkClose(t, "ram "+name, got[name], ref, scale, dt)
					ref, scale = ramRef(base.vals[name], vals(models, name), eps, 0.5, 0.9, true)
					checkClose(t, "ramplus_tl "+name, plus[name], ref, scale, dt)
				}
			}
		})
		t.Run(dt.String()+"/karcher", func(t *testing.T) {
			for _, iters := range []uint64{0, 1, 10} {
				got := runGeo(t, dt, "karcher", Params{Geo: GeoParams{MaxIter: iters, Tol: 1e-5}}, nil, models, nil, 2)
				for _, name := range referenceNames(base) {
					ms := vals(models, name)
					direct := karcherDirect(ms, int(iters), 1e-5)
					beta := karcherCoefficients(gramRef(nil, ms), iters, 1e-5)
					ref, scale := combineRef(nil, ms, beta)
					for j := range ref { // the span algebra agrees with the vectors' iteration
						if d := math.Abs(ref[j] - direct[j]); d > 1e-12*(scale[j]+1e-30) {
							t.Fatalf("%s[%d]: span %v, direct %v", name, j, ref[j], direct[j])
						}
					}
					checkClose(t, fmt.Sprintf("iters=%d %s", iters, name), got[name], direct, scale, dt)
				}
			}
		})
		t.Run(dt.String()+"/multislerp", func(t *testing.T) {
			w := []float64{0.5, 1, 2}
			for _, withBase := range []bool{false, true} {
				for _, norm := range []Switch{SwitchOn, SwitchOff} {
					var b *ckpt
					if withBase {
						b = base
					}
					p := Params{Normalize: norm, Epsilon: 1e-8}
					got := runGeo(t, dt, "multislerp", p, b, models, w, 2)
					for _, name := range referenceNames(base) {
						var bv []float32
						if withBase {
							bv = base.vals[name]
						}
						ms := vals(models, name)
						direct := multislerpDirect(bv, ms, w, norm == SwitchOn, 1e-8)
						c, err := multislerpCoefficients(gramRef(bv, ms), w, norm == SwitchOn, 1e-8)
						must(t, err)
						_, scale := combineRef(bv, ms, c)
						checkClose(t, fmt.Sprintf("base=%v normalize=%v %s", withBase, norm == SwitchOn, name), got[name], direct, scale, dt)
					}
				}
			}
		})
		t.Run(dt.String()+"/nuslerp", func(t *testing.T) {
			for _, withBase := range []bool{false, true} {
				for _, mode := range []struct{ flatten, rowWise bool }{{true, false}, {false, false}, {false, true}} {
					var b *ckpt
					if withBase {
						b = base
					}
					p := Params{Geo: GeoParams{Flatten: onOff(mode.flatten), RowWise: onOff(mode.rowWise)}}
					got := runGeo(t, dt, "nuslerp", p, b, models[:2], []float64{0.3, 0.9}, 2)
					for _, name := range referenceNames(base) {
						var bv []float32
						if withBase {
							bv = base.vals[name]
						}
						ref, scale := nuslerpRef(geoShapes[name], bv, models[0].vals[name], models[1].vals[name], 0.3, 0.9, mode.flatten, mode.rowWise)
						checkClose(t, fmt.Sprintf("base=%v %+v %s", withBase, mode, name), got[name], ref, scale, dt)
					}
				}
			}
		})
	}
}

func onOff(b bool) Switch {
	if b {
		return SwitchOn
	}
	return SwitchOff
}

// TestGeoMethodsHandWorked pins each method on numbers worked out by hand.
func TestGeoMethodsHandWorked(t *testing.T) {
	mat := func(rows int64, vals ...float32) *ckpt {
		shape := []int64{int64(len(vals))}
		if rows > 0 {
			shape = []int64{rows, int64(len(vals)) / rows}
		}
		return &ckpt{names: []string{"w"}, shapes: map[string][]int64{"w": shape}, vals: map[string][]float32{"w": vals}}
	}
	one := func(vals ...float32) *ckpt { return mat(0, vals...) }
	check := func(what string, got, want []float32) {
		t.Helper()
		for j := range want {
			if math.Abs(float64(got[j]-want[j])) > 2e-6 {
				t.Errorf("%s: got %v, want %v", what, got, want)
				return
			}
		}
	}
	run := func(method string, p Params, base *ckpt, models []*ckpt, w []float64) []float32 {
		return runMethodFiles(t, dtype.F32, method, p, base, models, w, nil, 1)["w"]
	}
	h := float32(math.Sqrt2 / 2)
	// nearswap, t = 0.1: |Δ| = 0.05 → w = 2 → 1 (the model); |Δ| = 1 → w = 0.1;
	// |Δ| = 0.2 → w = 0.5.
	check("nearswap", run("nearswap", Params{T: 0.1}, one(0, 0, 0), []*ckpt{one(0.05, 1, 0.2)}, nil), []float32{0.05, 0.1, 0.1})
	// ram: element 0 changed by both → (1+3)/2; element 1 by one → 2; element 2 by none.
	check("ram", run("ram", Params{Epsilon: 1e-5}, one(0, 0, 0), []*ckpt{one(1, 2, 0), one(3, 0, 0)}, nil), []float32{2, 2, 0})
	// ramplus_tl, r = 0.5, alpha = 1: model 0 has 1 shared and 1 unique entry: ρ = 1,
	// λ = 1.5 → element 1 is 3.
	check("ramplus_tl", run("ramplus_tl", Params{Epsilon: 1e-5, Geo: GeoParams{R: 0.5, Alpha: 1}}, one(0, 0, 0), []*ckpt{one(1, 2, 0), one(3, 0, 0)}, nil), []float32{2, 3, 0})
	// karcher of (2,0) and (0,4): the geodesic midpoint (1,1)/√2, scaled by the mean
	// norm 3.
	check("karcher", run("karcher", Params{Geo: GeoParams{MaxIter: 10, Tol: 1e-5}}, nil, []*ckpt{one(2, 0), one(0, 4)}, nil), []float32{3 * h, 3 * h})
	// multislerp of orthogonal unit vectors, equal weights: the tangent parts cancel,
	// the result is the normalised mean (1,1)/√2. With a base at (1,1) the same on the
	// task vectors.
	check("multislerp", run("multislerp", Params{Normalize: SwitchOn, Epsilon: 1e-8}, nil, []*ckpt{one(1, 0), one(0, 1)}, []float64{1, 1}), []float32{h, h})
	check("multislerp base", run("multislerp", Params{Normalize: SwitchOn, Epsilon: 1e-8}, one(1, 1), []*ckpt{one(2, 1), one(1, 2)}, []float64{1, 1}), []float32{1 + h, 1 + h})
	// nuslerp, equal weights (t = 0.5) on v0 = [[1,0],[1,0]], v1 = [[0,1],[1,0]]:
	// flattened, cos = 1/2, θ = π/3: each coefficient sin(π/6)/sin(π/3) = 1/√3.
	v0, v1 := mat(2, 1, 0, 1, 0), mat(2, 0, 1, 1, 0)
	r3 := float32(1 / math.Sqrt(3))
	check("nuslerp flattened", run("nuslerp", Params{}, nil, []*ckpt{v0, v1}, []float64{1, 1}), []float32{r3, r3, 2 * r3, 0})
	// per row: row 0 orthogonal → (h, h); row 1 colinear → linear, (1, 0).
	check("nuslerp rows", run("nuslerp", Params{Geo: GeoParams{Flatten: SwitchOff}}, nil, []*ckpt{v0, v1}, []float64{1, 1}), []float32{h, h, 1, 0})
	// per column (row_wise): column 0 is (1,1) and (0,1), θ = π/4, coefficients
	// sin(π/8)/sin(π/4); column 1 is (0,0) and (1,0): a zero vector, cos 0, θ = π/2,
	// coefficients sin(π/4) → (h, 0).
	c := float32(math.Sin(math.Pi/8) / math.Sin(math.Pi/4))
	check("nuslerp row_wise", run("nuslerp", Params{Geo: GeoParams{Flatten: SwitchOff, RowWise: SwitchOn}}, nil, []*ckpt{v0, v1}, []float64{1, 1}),
		[]float32{c, h, 2 * c, 0})
	// with a base, the task vectors: base 1 everywhere gives the same as above, plus 1.
	b1 := mat(2, 1, 1, 1, 1)
	plus1 := func(m *ckpt) *ckpt {
		out := mat(2, m.vals["w"]...)
		out.vals["w"] = append([]float32(nil), m.vals["w"]...)
		for j := range out.vals["w"] {
			out.vals["w"][j]++
		}
		return out
	}
	check("nuslerp base", run("nuslerp", Params{}, b1, []*ckpt{plus1(v0), plus1(v1)}, []float64{1, 1}), []float32{1 + r3, 1 + r3, 1 + 2*r3, 1})
	// weights (3, 1): t = 1/4; colinear rows interpolate linearly: 3/4·(2,0) + 1/4·(4,0).
	check("nuslerp t", run("nuslerp", Params{}, nil, []*ckpt{one(2, 0), one(4, 0)}, []float64{3, 1}), []float32{2.5, 0})
}

// TestGeoMethodsRefuse: multislerp's antipodal case is refused naming the tensor, and
// the parameters' ranges hold.
func TestGeoMethodsRefuse(t *testing.T) {
	one := func(vals ...float32) *ckpt {
		return &ckpt{names: []string{"w"}, shapes: map[string][]int64{"w": {int64(len(vals))}}, vals: map[string][]float32{"w": vals}}
	}
	dir := t.TempDir()
	var job MethodJob
	job.Method, job.Params = "multislerp", Params{Normalize: SwitchOn, Epsilon: 1e-8}
	job.Job.Out = dir + "/out.safetensors"
	for i, v := range [][]float32{{1, 0}, {-1, 0}, {0, 0}} {
		path := fmt.Sprintf("%s/m%d.safetensors", dir, i)
		one(v...).write(t, path, dtype.F32)
		job.Models = append(job.Models, Model{Path: path, Weight: 1, Density: math.NaN()})
	}
	_, err := RunMethod(context.Background(), job)
	if !errors.Is(err, errAntipodal) || !strings.Contains(err.Error(), `"w"`) {
		t.Errorf("antipodal multislerp: got %v", err)
	}
	for _, tc := range []struct {
		job  MethodJob
		want string
	}{
		{MethodJob{Method: "karcher", Params: Params{Geo: GeoParams{Tol: -1}}, Models: []Model{{Path: "a", Weight: 1}, {Path: "b", Weight: 1}}}, "tol -1 must not be negative"},
		{MethodJob{Method: "karcher", Base: "x", Models: []Model{{Path: "a", Weight: 1}, {Path: "b", Weight: 1}}}, "takes no base"},
		{MethodJob{Method: "nuslerp", Models: []Model{{Path: "a", Weight: 1}}}, "exactly 2"},
		{MethodJob{Method: "nearswap", Models: []Model{{Path: "a", Weight: 1}}}, "needs a base"},
		{MethodJob{Method: "multislerp", Params: Params{Normalize: SwitchOn}, Models: []Model{{Path: "a", Weight: 1}, {Path: "b", Weight: -1}}}, "sum to 0"},
		{MethodJob{Method: "ram", Base: "x", Params: Params{Epsilon: -1}, Models: []Model{{Path: "a", Weight: 1}}}, "epsilon -1 must not be negative"},
	} {
		_, err := RunMethod(context.Background(), tc.job)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrBadParameter) {
			t.Errorf("%s: got %v, want %q", tc.job.Method, err, tc.want)
		}
	}
}

// arceeFusionRef is arcee_fusion's plain statement: per row, the softmaxes and their
// KL divergence in float64; importances rounded to float32; the quartiles by sorting
// them all (index floor(q·(n−1))); the model's value where the importance reaches
// median + 1.5·IQR.
func arceeFusionRef(shape []int64, base, model []float32) []float32 {
	numel := len(base)
	last := numel
	if len(shape) > 1 {
		last = int(shape[len(shape)-1])
	}
	imp := make([]float32, numel)
	for r := 0; r < numel/last; r++ {
		row := func(v []float32) []float64 {
			m := math.Inf(-1)
			for _, x := range v[r*last : (r+1)*last] {
				m = max(m, float64(x))
			}
			var z float64
			out := make([]float64, last)
			for c, x := range v[r*last : (r+1)*last] {
				out[c] = math.Exp(float64(x) - m)
				z += out[c]
			}
			for c := range out {
				out[c] = out[c]/z + 1e-8
			}
			return out
		}
		p, q := row(model), row(base)
		var kl float64
		for c := range p {
			kl += p[c] * math.Log(p[c]/q[c])
		}
		for c := range last {
			j := r*last + c
			imp[j] = float32(math.Abs(float64(model[j])-float64(base[j])) * kl)
		}
	}
	sorted := append([]float32(nil), imp...)
	slices.Sort(sorted)
	at := func(num int) float64 { return float64(sorted[num*(numel-1)/4]) }
	thr := at(2) + 1.5*(at(3)-at(1))
	out := make([]float32, numel)
	for j := range out {
		out[j] = base[j]
		if float64(imp[j]) >= thr {
			out[j] = model[j]
		}
	}
	return out
}

// TestArceeFusion: the exact-quantile threshold against a sort, on BF16 and F32 (each
// output element is the base's or the model's, so the comparison is of bits), and a
// hand-worked case.
func TestArceeFusion(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		base, models := geoFixture(31, dt, 1)
		got := runGeo(t, dt, "arcee_fusion", Params{}, base, models, nil, 2)
		for _, name := range base.names {
			want := arceeFusionRef(geoShapes[name], base.vals[name], models[0].vals[name])
			if !slicesEqualBits(got[name], want) {
				t.Errorf("%s %s: differs from the sorted reference", dt, name)
			}
			var kept int
			for j := range want {
				if want[j] != base.vals[name][j] {
					kept++
				}
			}
			if name == "big.weight" && (kept == 0 || kept == len(want)) {
				t.Errorf("%s %s: the threshold keeps %d of %d: the case tells nothing", dt, name, kept, len(want))
			}
		}
	}
	// Row 0 is the base shifted by 50: its softmax is the base's, KL = 0, so its
	// importance is 0 however large the change. Row 1 changes by (1, 2, 4, 100):
	// importances 0 (×4), KL, 2KL, 4KL, 100KL; q1 = index 1 (0), median = index 3
	// (0), q3 = index 5 (2KL): threshold 3KL keeps 4 and 100.
	mat := func(vals ...float32) *ckpt {
		return &ckpt{names: []string{"w"}, shapes: map[string][]int64{"w": {2, 4}}, vals: map[string][]float32{"w": vals}}
	}
	got := runMethodFiles(t, dtype.F32, "arcee_fusion", Params{}, mat(0, 1, 2, 3, 0, 0, 0, 0), []*ckpt{mat(50, 51, 52, 53, 1, 2, 4, 100)}, nil, nil, 1)["w"]
	if want := []float32{0, 1, 2, 3, 0, 0, 4, 100}; !slices.Equal(got, want) {
		t.Errorf("arcee_fusion: got %v, want %v", got, want)
	}
}
