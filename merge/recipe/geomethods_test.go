package recipe

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/merge"
)

// TestGeometricRecipes: recipes for nuslerp, multislerp, karcher, nearswap,
// arcee_fusion, ram and ramplus_tl, written as mergekit's docs describe them (the base
// listed among the models where mergekit's examples list it; parameters left to
// mergekit's defaults where they have one), give the same tensors as the library run
// with those defaults spelled out.
func TestGeometricRecipes(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	nan := math.NaN()
	model := func(name string, w float64) merge.Model { return merge.Model{Path: name, Weight: w, Density: nan} }
	cases := []struct {
		name, recipe string
		direct       merge.MethodJob
	}{
		{"nuslerp", `
merge_method: nuslerp
models:
  - {model: a, parameters: {weight: 0.3}}
  - {model: b, parameters: {weight: 0.7}}
`, merge.MethodJob{Method: "nuslerp", Models: []merge.Model{model("a", 0.3), model("b", 0.7)},
			Params: merge.Params{Geo: merge.GeoParams{Flatten: merge.SwitchOn, RowWise: merge.SwitchOff}}}},
		{"nuslerp_base_row_wise", `
merge_method: nuslerp
base_model: base
parameters: {nuslerp_flatten: false, nuslerp_row_wise: true}
models:
  - {model: a, parameters: {weight: 1.0}}
  - {model: b, parameters: {weight: 0.5}}
`, merge.MethodJob{Method: "nuslerp", Base: "base", Models: []merge.Model{model("a", 1), model("b", 0.5)},
			Params: merge.Params{Geo: merge.GeoParams{Flatten: merge.SwitchOff, RowWise: merge.SwitchOn}}}},
		{"multislerp", `
merge_method: multislerp
base_model: base
models:
  - {model: a, parameters: {weight: 1.0}}
  - {model: b, parameters: {weight: 2.0}}
  - {model: c, parameters: {weight: 0.5}}
`, merge.MethodJob{Method: "multislerp", Base: "base", Models: []merge.Model{model("a", 1), model("b", 2), model("c", 0.5)},
			Params: merge.Params{Normalize: merge.SwitchOn, Epsilon: 1e-8}}},
		{"multislerp_no_base", `
merge_method: multislerp
parameters: {normalize_weights: false, eps: 1.0e-7}
models:
  - {model: a, parameters: {weight: 0.4}}
  - {model: b, parameters: {weight: 0.6}}
`, merge.MethodJob{Method: "multislerp", Models: []merge.Model{model("a", 0.4), model("b", 0.6)},
			Params: merge.Params{Normalize: merge.SwitchOff, Epsilon: 1e-7}}},
		{"karcher", `
merge_method: karcher
parameters: {max_iter: 5, tol: 1.0e-6}
models: [{model: a}, {model: b}, {model: c}]
`, merge.MethodJob{Method: "karcher", Models: []merge.Model{model("a", 1), model("b", 1), model("c", 1)},
			Params: merge.Params{Geo: merge.GeoParams{MaxIter: 5, Tol: 1e-6}}}},
		{"karcher_defaults", `
merge_method: karcher
models: [{model: a}, {model: b}]
`, merge.MethodJob{Method: "karcher", Models: []merge.Model{model("a", 1), model("b", 1)},
			Params: merge.Params{Geo: merge.GeoParams{MaxIter: 10, Tol: 1e-5}}}},
		{"nearswap", `
merge_method: nearswap
base_model: base
parameters: {t: 0.0001}
models: [{model: base}, {model: a}]
`, merge.MethodJob{Method: "nearswap", Base: "base", Models: []merge.Model{model("a", 1)}, Params: merge.Params{T: 1e-4}}},
		{"arcee_fusion", `
merge_method: arcee_fusion
base_model: base
models: [{model: base}, {model: a}]
dtype: bfloat16
`, merge.MethodJob{Method: "arcee_fusion", Base: "base", Models: []merge.Model{model("a", 1)}}},
		{"ram", `
merge_method: ram
base_model: base
models: [{model: a}, {model: b}]
`, merge.MethodJob{Method: "ram", Base: "base", Models: []merge.Model{model("a", 1), model("b", 1)}, Params: merge.Params{Epsilon: 1e-5}}},
		{"ramplus_tl", `
merge_method: ramplus_tl
base_model: base
parameters: {r: 0.2, alpha: 0.5, epsilon: 1.0e-4}
models: [{model: a}, {model: b}, {model: c}]
`, merge.MethodJob{Method: "ramplus_tl", Base: "base", Models: []merge.Model{model("a", 1), model("b", 1), model("c", 1)},
			Params: merge.Params{Epsilon: 1e-4, Geo: merge.GeoParams{R: 0.2, Alpha: 0.5}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(f.dir, tc.name+".recipe.safetensors")
			reps := f.run(t, f.recipe(t, tc.name+".yaml", tc.recipe), Options{Out: out})
			if len(reps) != 1 || reps[0].Method != tc.direct.Method {
				t.Fatalf("reports %+v", reps)
			}
			direct := tc.direct
			direct.Job = merge.Job{Out: filepath.Join(f.dir, tc.name+".direct.safetensors"), Exec: merge.ExecOptions{Threads: 1}}
			if _, err := merge.RunMethod(context.Background(), direct); err != nil {
				t.Fatal(err)
			}
			sameTensors(t, out, direct.Job.Out)
		})
	}
}

// TestGeometricRecipeErrors: mergekit's required parameters are required here too,
// and nuslerp's model count is checked with and without a base.
func TestGeometricRecipeErrors(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	for _, tc := range []struct{ name, recipe, want string }{
		{"nearswap_no_t", "merge_method: nearswap\nbase_model: base\nmodels: [{model: a}]\n", "parameter t has no value"},
		{"nuslerp_no_weight", "merge_method: nuslerp\nmodels: [{model: a}, {model: b}]\n", "parameter weight has no value"},
		{"nuslerp_three", "merge_method: nuslerp\nbase_model: base\nmodels: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: 1}}, {model: c, parameters: {weight: 1}}]\n", "exactly 2 model(s) besides the base"},
		{"multislerp_no_weight", "merge_method: multislerp\nmodels: [{model: a}, {model: b}]\n", "parameter weight has no value"},
		{"karcher_base", "merge_method: karcher\nbase_model: base\nmodels: [{model: a}, {model: b}]\n", "karcher takes no base_model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse(tc.name+".yaml", []byte(tc.recipe))
			if err == nil {
				_, err = PlanRecipe(r, Options{Out: filepath.Join(f.dir, tc.name+".safetensors")})
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
