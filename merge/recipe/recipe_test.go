package recipe

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/merge"
)

// TestRecipeMatchesCommand runs a recipe with scalar parameters for every method
// and compares its output, byte for byte, with the same merge run directly (what
// the method's command runs).
func TestRecipeMatchesCommand(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	nan := math.NaN()
	model := func(name string, w, d float64) merge.Model {
		return merge.Model{Path: name, Weight: w, Density: d}
	}
	p := merge.Params{Density: 1, Lambda: 1, T: 0.5, Gamma: 0.01, Epsilon: 1e-6, Rescale: "l1"}
	with := func(f func(*merge.Params)) merge.Params { q := p; f(&q); return q }
	cases := []struct {
		name, recipe string
		direct       merge.MethodJob
	}{
		{"linear", `
merge_method: linear
models:
  - model: a
    parameters: {weight: 0.3}
  - model: b
    parameters: {weight: 0.7}
`, merge.MethodJob{Method: "linear", Models: []merge.Model{model("a", 0.3, nan), model("b", 0.7, nan)}, Params: p}},
		{"task_arithmetic", `
merge_method: task_arithmetic
base_model: base
parameters: {lambda: 0.8}
models:
  - model: a
    parameters: {weight: 0.5}
  - model: b
    parameters: {weight: 1.0}
`, merge.MethodJob{Method: "task_arithmetic", Base: "base", Models: []merge.Model{model("a", 0.5, nan), model("b", 1, nan)}, Params: with(func(q *merge.Params) { q.Lambda = 0.8 })}},
		{"ties", `
merge_method: ties
base_model: base
models:
  - model: base          # listed, as mergekit examples do: not a task vector
  - model: a
    parameters: {weight: 0.7, density: 0.5}
  - model: b
    parameters: {weight: 0.3, density: 0.3}
parameters: {normalize: true, int8_mask: true}
`, merge.MethodJob{Method: "ties", Base: "base", Models: []merge.Model{model("a", 0.7, 0.5), model("b", 0.3, 0.3)}, Params: p}},
		{"ties_default_density", `
merge_method: ties
base_model: base
models: [{model: a}, {model: b}]
`, merge.MethodJob{Method: "ties", Base: "base", Models: []merge.Model{model("a", 1, 1), model("b", 1, 1)}, Params: p}},
		{"dare_linear", `
merge_method: dare_linear
base_model: base
parameters: {density: 0.4, seed: 3}
models: [{model: a}, {model: b, parameters: {weight: 0.5}}]
`, merge.MethodJob{Method: "dare_linear", Base: "base", Models: []merge.Model{model("a", 1, 0.4), model("b", 0.5, 0.4)}, Params: with(func(q *merge.Params) { q.Seed = 3 })}},
		{"dare_ties", `
merge_method: dare_ties
base_model: base
parameters: {density: 0.6, lambda: 1.2}
models: [{model: a}, {model: b}]
`, merge.MethodJob{Method: "dare_ties", Base: "base", Models: []merge.Model{model("a", 1, 0.6), model("b", 1, 0.6)}, Params: with(func(q *merge.Params) { q.Lambda = 1.2 })}},
		{"breadcrumbs", `
merge_method: breadcrumbs
base_model: base
parameters: {density: 0.8, gamma: 0.02}
models: [{model: a}, {model: b}]
`, merge.MethodJob{Method: "breadcrumbs", Base: "base", Models: []merge.Model{model("a", 1, 0.8), model("b", 1, 0.8)}, Params: with(func(q *merge.Params) { q.Gamma = 0.02 })}},
		{"breadcrumbs_ties", `
merge_method: breadcrumbs_ties
base_model: base
parameters: {density: 0.7}
models: [{model: a, parameters: {weight: 2}}, {model: b}]
`, merge.MethodJob{Method: "breadcrumbs_ties", Base: "base", Models: []merge.Model{model("a", 2, 0.7), model("b", 1, 0.7)}, Params: p}},
		// Options beyond the presets' defaults, which mergekit accepts.
		{"ties_no_normalize", `
merge_method: ties
base_model: base
parameters: {density: 0.5, normalize: false, rescale: true}
models: [{model: a}, {model: b, parameters: {weight: 0.5}}]
`, merge.MethodJob{Method: "ties", Base: "base", Models: []merge.Model{model("a", 1, 0.5), model("b", 0.5, 0.5)},
			Params: with(func(q *merge.Params) { q.Normalize, q.Rescaling = merge.SwitchOff, merge.SwitchOn })}},
		{"dare_ties_normalize", `
merge_method: dare_ties
base_model: base
parameters: {density: 0.6, normalize: true, rescale: false, seed: 4}
models: [{model: a}, {model: b, parameters: {weight: 0.5}}]
`, merge.MethodJob{Method: "dare_ties", Base: "base", Models: []merge.Model{model("a", 1, 0.6), model("b", 0.5, 0.6)},
			Params: with(func(q *merge.Params) { q.Normalize, q.Rescaling, q.Seed = merge.SwitchOn, merge.SwitchOff, 4 })}},
		{"breadcrumbs_rescale", `
merge_method: breadcrumbs
base_model: base
parameters: {density: 0.8, rescale: true, normalize: true}
models: [{model: a}, {model: b}]
`, merge.MethodJob{Method: "breadcrumbs", Base: "base", Models: []merge.Model{model("a", 1, 0.8), model("b", 1, 0.8)},
			Params: with(func(q *merge.Params) { q.Normalize, q.Rescaling = merge.SwitchOn, merge.SwitchOn })}},
		// The methods of issue 14, written as mergekit's docs describe them.
		{"della", `
merge_method: della
base_model: base
parameters: {density: 0.5, epsilon: 0.1, lambda: 0.9, int8_mask: true}
models: [{model: a, parameters: {weight: 0.6}}, {model: b, parameters: {weight: 0.4}}]
`, merge.MethodJob{Method: "della", Base: "base", Models: []merge.Model{model("a", 0.6, 0.5), model("b", 0.4, 0.5)},
			Params: with(func(q *merge.Params) { q.Epsilon, q.Lambda = 0.1, 0.9 })}},
		{"della_default_epsilon", `
merge_method: della
base_model: base
models:
  - model: a
    parameters: {weight: 1.0, density: 0.4}
  - model: b
    parameters: {weight: 0.5, density: 0.6}
`, merge.MethodJob{Method: "della", Base: "base", Models: []merge.Model{model("a", 1, 0.4), model("b", 0.5, 0.6)},
			Params: with(func(q *merge.Params) { q.Epsilon = 0.15 })}},
		{"della_linear", `
merge_method: della_linear
base_model: base
parameters: {density: 0.7, epsilon: 0.2, normalize: true, rescale: false}
models: [{model: a, parameters: {weight: 0.5}}, {model: b, parameters: {weight: 0.5}}]
`, merge.MethodJob{Method: "della_linear", Base: "base", Models: []merge.Model{model("a", 0.5, 0.7), model("b", 0.5, 0.7)},
			Params: with(func(q *merge.Params) { q.Epsilon, q.Normalize, q.Rescaling = 0.2, merge.SwitchOn, merge.SwitchOff })}},
		{"sce", `
merge_method: sce
base_model: base
parameters: {select_topk: 0.3}
models: [{model: a}, {model: b}]
`, merge.MethodJob{Method: "sce", Base: "base", Models: []merge.Model{model("a", 1, nan), model("b", 1, nan)},
			Params: with(func(q *merge.Params) { q.SelectTopK = 0.3 })}},
		{"sce_default", `
merge_method: sce
base_model: base
models: [{model: a}, {model: b}]
`, merge.MethodJob{Method: "sce", Base: "base", Models: []merge.Model{model("a", 1, nan), model("b", 1, nan)},
			Params: with(func(q *merge.Params) { q.SelectTopK = 1 })}},
		{"model_stock_filter_wise", `
merge_method: model_stock
base_model: base
parameters: {filter_wise: true}
models: [{model: a}, {model: b}]
`, merge.MethodJob{Method: "model_stock", Base: "base", Models: []merge.Model{model("a", 1, nan), model("b", 1, nan)},
			Params: with(func(q *merge.Params) { q.FilterWise = merge.SwitchOn })}},
		{"slerp", `
merge_method: slerp
base_model: base
models: [{model: base}, {model: a}]
parameters: {t: 0.3}
`, merge.MethodJob{Method: "slerp", Base: "base", Models: []merge.Model{model("a", 1, nan)}, Params: with(func(q *merge.Params) { q.T = 0.3 })}},
		{"slerp_whole_slice", `
merge_method: slerp
base_model: base
slices:
  - sources:
      - {model: base, layer_range: [0, 4]}
      - {model: a, layer_range: [0, 4]}
parameters: {t: 0.3}
`, merge.MethodJob{Method: "slerp", Base: "base", Models: []merge.Model{model("a", 1, nan)}, Params: with(func(q *merge.Params) { q.T = 0.3 })}},
		{"model_stock", `
merge_method: model_stock
base_model: base
models: [{model: a}, {model: b}, {model: c}]
`, merge.MethodJob{Method: "model_stock", Base: "base", Models: []merge.Model{model("a", 1, nan), model("b", 1, nan), model("c", 1, nan)}, Params: p}},
		{"fisher", `
merge_method: fisher
parameters: {epsilon: 1.0e-5}
models:
  - {model: a, fisher: fisher_a.safetensors}
  - {model: b, fisher: fisher_b.safetensors, parameters: {weight: 2}}
`, merge.MethodJob{Method: "fisher", Models: []merge.Model{{Path: "a", Weight: 1, Density: nan, Fisher: "fisher_a.safetensors"}, {Path: "b", Weight: 2, Density: nan, Fisher: "fisher_b.safetensors"}},
			Params: with(func(q *merge.Params) { q.Epsilon = 1e-5 })}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(f.dir, tc.name+".recipe.safetensors")
			reps := f.run(t, f.recipe(t, tc.name+".yaml", tc.recipe), Options{Out: out})
			if len(reps) != 1 || reps[0].Method != tc.direct.Method {
				t.Fatalf("reports %+v", reps)
			}
			if reps[0].Parameters["per_tensor"] == true {
				t.Errorf("scalar recipe used per-tensor parameters")
			}
			direct := tc.direct
			direct.Job = merge.Job{Out: filepath.Join(f.dir, tc.name+".direct.safetensors"), Exec: merge.ExecOptions{Threads: 1}}
			if _, err := merge.RunMethod(context.Background(), direct); err != nil {
				t.Fatal(err)
			}
			sameTensors(t, out, direct.Job.Out)
		})
	}
	t.Run("sfa", func(t *testing.T) {
		out := filepath.Join(f.dir, "sfa.recipe.safetensors")
		f.run(t, f.recipe(t, "sfa.yaml", "merge_method: sfa\nbase_model: base\nmodels: [{model: a}]\nparameters: {beta: 0.3}\n"), Options{Out: out})
		direct := filepath.Join(f.dir, "sfa.direct.safetensors")
		if _, err := merge.RunSFA(context.Background(), merge.SFAJob{Anchor: "base", Current: "a", SFA: merge.SFA{Beta: 0.3}, Job: merge.Job{Out: direct}}); err != nil {
			t.Fatal(err)
		}
		sameTensors(t, out, direct)
	})
	t.Run("passthrough", func(t *testing.T) {
		out := filepath.Join(f.dir, "pt.safetensors")
		f.run(t, f.recipe(t, "pt.yaml", "merge_method: passthrough\nmodels: [{model: a}]\n"), Options{Out: out})
		sameTensors(t, out, filepath.Join("a", "model.safetensors"))
	})
	t.Run("out_dtype", func(t *testing.T) {
		out := filepath.Join(f.dir, "f32.safetensors")
		f.run(t, f.recipe(t, "f32.yaml", "merge_method: linear\nmodels: [{model: a}, {model: b}]\ndtype: bfloat16\nout_dtype: float32\n"), Options{Out: out})
		got, _ := readCkpt(t, out)
		for name, x := range got {
			if x.dtype != dtype.F32 {
				t.Fatalf("%s is %s, want F32", name, x.dtype)
			}
		}
	})
}

// slerpRef is slerp in float64 over flattened tensors (docs/methods.md#slerp), an independent
// reference for per-tensor t.
func slerpRef(t float64, v0, v1 []float32) (ref, scale []float64) {
	var dot, n0, n1 float64
	for j := range v0 {
		dot += float64(v0[j]) * float64(v1[j])
		n0 += float64(v0[j]) * float64(v0[j])
		n1 += float64(v1[j]) * float64(v1[j])
	}
	cos := dot / math.Sqrt(n0*n1)
	c0, c1 := 1-t, t
	if math.Abs(cos) <= 0.9995 {
		om := math.Acos(cos)
		c0, c1 = math.Sin((1-t)*om)/math.Sin(om), math.Sin(t*om)/math.Sin(om)
	}
	ref, scale = make([]float64, len(v0)), make([]float64, len(v0))
	for j := range v0 {
		ref[j] = c0*float64(v0[j]) + c1*float64(v1[j])
		scale[j] = math.Abs(c0*float64(v0[j])) + math.Abs(c1*float64(v1[j]))
	}
	return ref, scale
}

// checkClose compares float32 results with a float64 reference, within 2⁻²⁰ of the
// magnitude of the terms (F32 inputs).
func checkClose(t testing.TB, what string, got []float32, ref, scale []float64) {
	t.Helper()
	if len(got) != len(ref) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(ref))
	}
	for j := range got {
		tol := math.Ldexp(1, -20)*(math.Abs(ref[j])+scale[j]) + 1e-30
		if d := math.Abs(float64(got[j]) - ref[j]); !(d <= tol) {
			t.Fatalf("%s[%d]: got %v, want %v", what, j, got[j], ref[j])
		}
	}
}

// values decodes every tensor of a generated model.
func (f *fixture) values(t testing.TB, model string) map[string][]float32 {
	out := map[string][]float32{}
	for _, x := range f.ts[model] {
		out[x.Name] = x.Float32()
	}
	return out
}

// layerOf is the test's own reading of a llama tensor name's layer (-1: none).
func layerOf(name string) int {
	var l int
	var rest string
	if n, _ := fmt.Sscanf(name, "model.layers.%d.%s", &l, &rest); n == 2 {
		return l
	}
	return -1
}

// TestRecipePerTensorAgainstReference runs mergekit's classic slerp recipe (t by
// filter, as gradients over the layers) and a task_arithmetic recipe with filtered
// and graded per-model weights and normalize, and compares every tensor with a
// float64 reference whose parameters are worked out here, independently.
func TestRecipePerTensorAgainstReference(t *testing.T) {
	f := newFixture(t, dtype.F32)
	t.Chdir(f.dir)
	base, a, b := f.values(t, "base"), f.values(t, "a"), f.values(t, "b")
	// grad is a gradient at layer l of 4 (t = l/3), embeddings and head at t = 0.
	grad := func(knots []float64, l int) float64 {
		if l < 0 {
			return knots[0]
		}
		x := float64(l) / 3 * float64(len(knots)-1)
		i := min(int(x), len(knots)-2)
		return knots[i] + (x-float64(i))*(knots[i+1]-knots[i])
	}
	t.Run("slerp", func(t *testing.T) {
		out := filepath.Join(f.dir, "slerp.safetensors")
		f.run(t, f.recipe(t, "slerp.yaml", `
slices:
  - sources:
      - model: base
        layer_range: [0, 4]
      - model: a
        layer_range: [0, 4]
merge_method: slerp
base_model: base
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float32
`), Options{Out: out})
		got, _ := readCkpt(t, out)
		for name, x := range got {
			tt := 0.5
			switch l := layerOf(name); {
			case containsStr(name, "self_attn"):
				tt = grad([]float64{0, 0.5, 0.3, 0.7, 1}, l)
			case containsStr(name, "mlp"):
				tt = grad([]float64{1, 0.5, 0.7, 0.3, 0}, l)
			}
			ref, scale := slerpRef(tt, base[name], a[name])
			checkClose(t, name, x.float32s(t), ref, scale)
		}
	})
	t.Run("task_arithmetic", func(t *testing.T) {
		out := filepath.Join(f.dir, "ta.safetensors")
		f.run(t, f.recipe(t, "ta.yaml", `
merge_method: task_arithmetic
base_model: base
parameters:
  normalize: true
  lambda: 0.9
  weight: 0.25            # the default for every model
models:
  - model: a
    parameters:
      weight:
        - filter: self_attn
          value: 0.2
        - filter: mlp
          value: [1, 0]
  - model: b
    parameters:
      weight: [0.5, 1.5]
`), Options{Out: out})
		got, _ := readCkpt(t, out)
		for name, x := range got {
			l := layerOf(name)
			wa := 0.25 // no filter matches: the recipe's default
			switch {
			case containsStr(name, "self_attn"):
				wa = 0.2
			case containsStr(name, "mlp"):
				wa = grad([]float64{1, 0}, l)
			}
			wb := grad([]float64{0.5, 1.5}, l)
			n := len(base[name])
			ref, scale := make([]float64, n), make([]float64, n)
			for j := range n {
				bj := float64(base[name][j])
				da, db := wa*(float64(a[name][j])-bj), wb*(float64(b[name][j])-bj)
				ref[j] = bj + 0.9*(da+db)/(wa+wb)
				scale[j] = math.Abs(bj) + 0.9*(math.Abs(da)+math.Abs(db))/math.Abs(wa+wb)
			}
			checkClose(t, name, x.float32s(t), ref, scale)
		}
	})
}

func containsStr(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestDellaEpsilonRefusedPerTensor: an ε that takes a model's keep probabilities
// outside (0, 1) is refused by Run, as mergekit raises, naming the recipe, and nothing is
// written; a gradient that makes it valid for every tensor runs.
func TestDellaEpsilonRefusedPerTensor(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	out := filepath.Join(f.dir, "della-bad.safetensors")
	r := f.recipe(t, "della-bad.yaml", "merge_method: della\nbase_model: base\nmodels:\n  - {model: a, parameters: {density: 0.1}}\n  - model: b\nparameters: {epsilon: 0.15, density: 0.5}\n")
	_, err := Run(context.Background(), r, Options{Out: out}, merge.Job{Version: "test"})
	if !errors.Is(err, merge.ErrBadInput) && !errors.Is(err, merge.ErrBadParameter) || !strings.Contains(err.Error(), "density ± epsilon") {
		t.Fatalf("got %v, want the ε refused", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused step left %s: %v", out, err)
	}
	r = f.recipe(t, "della-ok.yaml", "merge_method: della\nbase_model: base\nmodels:\n  - {model: a, parameters: {density: [0.3, 0.6]}}\n  - model: b\nparameters: {epsilon: 0.15, density: 0.5}\n")
	f.run(t, r, Options{Out: filepath.Join(f.dir, "della-ok.safetensors")})
}
