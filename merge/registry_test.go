package merge

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// testMethods lists the registry's methods that the engine tests run through
// RunMethod with models and a base (sfa has its own tests through RunSFA; passthrough
// takes one model and no base). A function: the registry fills at init.
func testMethods() []string {
	return slices.DeleteFunc(MethodNames(), func(n string) bool { return n == "sfa" || n == "passthrough" })
}

// testDef is what the engine tests need to know to build a job for a method.
type testDef struct {
	base      bool
	maxModels int
	fisher    bool
}

func methodDefs(name string) (testDef, bool) {
	m, ok := LookupMethod(name)
	if !ok {
		return testDef{}, false
	}
	_, fisher := m.Param("fisher")
	return testDef{base: m.Base == BaseRequired, maxModels: m.MaxModels, fisher: fisher}, true
}

// TestRegistryDeclarations: every method is complete and consistent: a kernel or a run
// function, model counts that make sense, parameters with unique names, defaults that
// pass their own checks, and commands for all but the recipe-only ones.
func TestRegistryDeclarations(t *testing.T) {
	for _, m := range Registry() {
		if (m.kernel == nil) == (m.run == nil) {
			t.Errorf("%s: wants exactly one of kernel and run", m.Name)
		}
		if m.MinModels < 1 || m.MaxModels != 0 && m.MaxModels < m.MinModels {
			t.Errorf("%s: models %d..%d", m.Name, m.MinModels, m.MaxModels)
		}
		if m.Command != "" && m.CommandSwitch == "" && !m.CustomCommand && m.Example == "" {
			t.Errorf("%s: command %s has no example", m.Name, m.Command)
		}
		seen := map[string]bool{}
		for i := range m.Params {
			p := &m.Params[i]
			if seen[p.Name] {
				t.Errorf("%s: parameter %s twice", m.Name, p.Name)
			}
			seen[p.Name] = true
			if p.Flag != "" && p.Usage == "" && !p.IsModelKey() {
				t.Errorf("%s: flag --%s has no help", m.Name, p.Flag)
			}
			switch p.Kind {
			case Number, Seed, Bool:
				for k, v := range []float64{p.Default, p.RecipeDefault} {
					if k == 1 && math.IsNaN(v) { // required in recipes
						continue
					}
					if err := p.Check(v); err != nil {
						t.Errorf("%s: default of %s: %v", m.Name, p.Name, err)
					}
				}
			case Choice:
				if err := p.CheckChoice(p.DefaultChoice); err != nil {
					t.Errorf("%s: default of %s: %v", m.Name, p.Name, err)
				}
			}
		}
	}
}

// TestParamErrorsWrapBadParameter: every refusal of a value is an ErrBadParameter.
func TestParamErrorsWrapBadParameter(t *testing.T) {
	for _, m := range Registry() {
		for i := range m.Params {
			p := &m.Params[i]
			if p.check == nil {
				continue
			}
			for _, v := range []float64{-1, 2, math.Inf(1), 0} {
				if err := p.Check(v); err != nil && !errors.Is(err, ErrBadParameter) {
					t.Errorf("%s %s %v: %v does not wrap ErrBadParameter", m.Name, p.Name, v, err)
				}
			}
		}
	}
}

// TestDAREJointKeepRate checks DARE's random drop without its draw function: two
// models whose task vectors are 1 and 2 everywhere, merged by dare_linear with the
// inverse rescale, give 0, 1/d₁, 2/d₂ or their sum per element, which reveals both
// keep masks. Each model's keep rate must be within 5σ of its density and the joint
// rate within 5σ of d₁·d₂ (independent draws per model), and a χ² test of the 2×2
// table must not reject independence at the 0.1 % level.
func TestDAREJointKeepRate(t *testing.T) {
	const n = 1 << 17
	d1, d2 := 0.3, 0.5 // 1/d₁ ≠ 2/d₂, so the four sums differ
	base := &ckpt{names: []string{"w"}, shapes: map[string][]int64{"w": {n}}, vals: map[string][]float32{"w": make([]float32, n)}}
	mk := func(v float32) *ckpt {
		c := &ckpt{names: base.names, shapes: base.shapes, vals: map[string][]float32{"w": make([]float32, n)}}
		for j := range c.vals["w"] {
			c.vals["w"][j] = v
		}
		return c
	}
	p := Params{Lambda: 1, Seed: 123, Rescale: "inverse"}
	got := runMethodFiles(t, dtype.F32, "dare_linear", p, base, []*ckpt{mk(1), mk(2)}, []float64{1, 1}, []float64{d1, d2}, 2)["w"]
	a, b := float32(1/d1), float32(2/d2)
	var table [2][2]float64
	for j, v := range got {
		var k1, k2 int
		switch v {
		case 0:
		case a:
			k1 = 1
		case b:
			k2 = 1
		case a + b:
			k1, k2 = 1, 1
		default:
			t.Fatalf("element %d = %v: not one of 0, %v, %v, %v", j, v, a, b, a+b)
		}
		table[k1][k2]++
	}
	within := func(what string, count, p float64) {
		mean, sd := n*p, math.Sqrt(n*p*(1-p))
		if math.Abs(count-mean) > 5*sd {
			t.Errorf("%s: %v kept of %d, want %v ± %v", what, count, n, mean, 5*sd)
		}
	}
	within("model 1", table[1][0]+table[1][1], d1)
	within("model 2", table[0][1]+table[1][1], d2)
	within("both", table[1][1], d1*d2)
	var chi2 float64
	for i := range 2 {
		for k := range 2 {
			row, col := table[i][0]+table[i][1], table[0][k]+table[1][k]
			e := row * col / n
			chi2 += (table[i][k] - e) * (table[i][k] - e) / e
		}
	}
	if chi2 > 10.83 { // χ²(1) at p = 0.001
		t.Errorf("keep masks not independent: χ² = %v, table %v", chi2, table)
	}
}

// TestTaskVectorFamilyAgainstReference runs every combination of the family's
// options (sparsification × consensus × normalize × rescale) through RunMethod on
// the presets that carry each sparsification, and compares each with
// taskVectorsRef; the combinations with a fast path also run through the general
// kernel, which must give the same bits.
func TestTaskVectorFamilyAgainstReference(t *testing.T) {
	dt := dtype.F32
	base, models := methodFixture(31, dt, 3)
	weights := []float64{0.6, 1.2, -0.3}
	dens := []float64{0.3, 0.8, 0.55}
	presets := map[Sparsification][2]string{
		SparsifyNone:      {"task_arithmetic", "task_arithmetic"},
		SparsifyMagnitude: {"ties", "ties"},
		SparsifyRandom:    {"dare_linear", "dare_ties"},
		SparsifyOutliers:  {"breadcrumbs", "breadcrumbs_ties"},
	}
	for sp, names := range presets {
		for ci, method := range names {
			if sp == SparsifyNone && ci == 1 {
				continue // no preset has a consensus without sparsification
			}
			if sp == SparsifyMagnitude && ci == 0 {
				continue // ties is the only magnitude preset
			}
			for _, normalize := range []Switch{SwitchOn, SwitchOff} {
				for _, rescale := range []Switch{SwitchOn, SwitchOff} {
					for _, norm := range []string{"l1", "inverse"} {
						if (rescale == SwitchOff || sp == SparsifyNone) && norm == "inverse" {
							continue // the norm of no rescale
						}
						if sp == SparsifyNone && rescale == SwitchOn {
							continue // nothing dropped, nothing rescaled
						}
						p := Params{Lambda: 0.9, Gamma: 0.05, Seed: 11, Normalize: normalize, Rescaling: rescale, Rescale: norm}
						got := runMethodFiles(t, dt, method, p, base, models, weights, dens, 2)
						o := tvOptions{sparsify: sp, consensus: Consensus(b2i(method == names[1] && sp != SparsifyNone || sp == SparsifyMagnitude)),
							normalize: normalize == SwitchOn, rescale: "none"}
						if rescale == SwitchOn && sp != SparsifyNone {
							o.rescale = norm
						}
						what := fmt.Sprintf("%s normalize=%v rescale=%v %s", method, o.normalize, rescale == SwitchOn, norm)
						for _, name := range referenceNames(base) {
							b := base.vals[name]
							xs := make([][]float32, len(models))
							for i, m := range models {
								xs[i] = m.vals[name]
							}
							key := dareKey(11, name)
							ref, sc := taskVectorsRef(o, b, xs, weights, dens, 0.05, 0.9, func(i, j int) bool {
								return dareDraw(key, i, int64(j)) < densityThreshold(dens[i])
							})
							checkClose(t, what+" "+name, got[name], ref, sc, dt)
						}
					}
				}
			}
		}
	}
}

// TestFastPathsMatchGeneralKernel: TIES's column-wise kernel (with its AVX2 parts)
// and task arithmetic's give the same bits as the general task-vector kernel, on
// values with ±0, infinities, NaN and exact cancellations.
func TestFastPathsMatchGeneralKernel(t *testing.T) {
	base, models := methodFixture(41, dtype.F32, 3)
	for _, name := range base.names {
		b := base.vals[name]
		for j := 0; j < len(b); j += 97 {
			switch j / 97 % 5 {
			case 0:
				models[0].vals[name][j] = float32(math.NaN())
			case 1:
				models[1].vals[name][j] = float32(math.Inf(-1))
			case 2:
				models[2].vals[name][j] = b[j] // a zero delta
			case 3:
				b[j], models[0].vals[name][j] = 0, float32(math.Copysign(0, -1))
			case 4:
				models[1].vals[name][j] = 2*b[j] - models[0].vals[name][j] // opposite deltas
			}
		}
	}
	weights := []float64{0.6, 1.2, 0.6}
	for _, method := range []string{"ties", "task_arithmetic"} {
		for _, norm := range []Switch{SwitchOn, SwitchOff} {
			p := Params{Density: 0.4, Lambda: 0.9, Normalize: norm}
			fast := runMethodFiles(t, dtype.F32, method, p, base, models, weights, nil, 2)
			p.generalKernel = true
			general := runMethodFiles(t, dtype.F32, method, p, base, models, weights, nil, 2)
			for _, name := range base.names {
				for j, v := range fast[name] {
					if g := general[name][j]; math.Float32bits(v) != math.Float32bits(g) && !(v != v && g != g) {
						t.Fatalf("%s normalize=%v %s[%d]: fast %v, general %v", method, norm == SwitchOn, name, j, v, g)
					}
				}
			}
		}
	}
}

// TestNumbersBeyondFloat32Refused: the kernels compute in float32, so a number
// parameter (a weight, λ, ε) beyond float32's range is refused rather than merged as
// ±Inf; the largest float32 itself is accepted.
func TestNumbersBeyondFloat32Refused(t *testing.T) {
	checked := 0
	for _, m := range Registry() {
		for i := range m.Params {
			p := &m.Params[i]
			if p.Kind != Number || p.check != nil {
				continue // ranges of their own ([0, 1], positive) say more
			}
			checked++
			for _, v := range []float64{1e39, -1e39} {
				if err := p.Check(v); !errors.Is(err, ErrBadParameter) || !strings.Contains(err.Error(), "float32") {
					t.Errorf("%s %s %g: %v, want a float32-range refusal", m.Name, p.Name, v, err)
				}
			}
			if err := p.Check(math.MaxFloat32); err != nil {
				t.Errorf("%s %s MaxFloat32: %v", m.Name, p.Name, err)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no unbounded number parameter in the registry (weight, lambda)")
	}
}
