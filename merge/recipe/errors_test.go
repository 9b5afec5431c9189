package recipe

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/merge"
)

// TestRecipeErrors: every mistake is a bad-input error that names the file and the
// line, found when parsing or planning, before anything is written.
func TestRecipeErrors(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	t.Setenv("HF_HUB_CACHE", t.TempDir()) // an empty Hugging Face cache
	cases := []struct {
		name, recipe string
		line         int
		want         string
	}{
		{"unknown key", "merge_method: linear\nmodels: [{model: a}]\nfoo: 1\n", 3, `unknown key "foo"`},
		{"unknown model key", "merge_method: linear\nmodels:\n  - model: a\n    wieght: 1\n", 4, `unknown key "wieght"`},
		{"unknown method", "merge_method: lineer\nmodels: [{model: a}]\n", 1, `unknown merge_method "lineer"`},
		{"unknown parameter", "merge_method: linear\nmodels: [{model: a}]\nparameters:\n  lambda: 2\n", 4, `linear takes no parameter "lambda"`},
		{"density out of range", "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters:\n      density: 1.5\n", 6, "density 1.5 is outside [0, 1]"},
		{"gradient knot out of range", "merge_method: slerp\nbase_model: base\nmodels: [{model: a}]\nparameters:\n  t: [0, 0.5,\n      1.2]\n", 5, "t 1.2 is outside"},
		{"method-wide at model level", "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {lambda: 2}\n", 5, "method-wide parameter"},
		{"bool for number", "merge_method: linear\nmodels: [{model: a, parameters: {weight: true}}]\n", 2, "want a number"},
		{"string value", "merge_method: linear\nmodels: [{model: a, parameters: {weight: heavy}}]\n", 2, `got "heavy"`},
		{"models and slices", "merge_method: linear\nmodels: [{model: a}]\nslices: []\n", 1, "exactly one of models and slices"},
		{"duplicate key", "merge_method: linear\nmodels: [{model: a}]\nmerge_method: ties\n", 3, "given twice"},
		{"layer_range order", "merge_method: passthrough\nslices:\n  - sources:\n      - {model: a, layer_range: [3, 1]}\n", 4, "must be after the start"},
		{"residual_weight not a number", "merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_range: [0, 1]}]\n    residual_weight: x\n", 4, "residual_weight"},
		{"override_architecture", "merge_method: linear\nmodels:\n  - model:\n      model: a\n      override_architecture: Foo\n", 5, "override_architecture is not supported"},
		{"model mapping without model", "merge_method: linear\nmodels:\n  - model:\n      lora: l\n", 4, "needs model:"},
		{"modules", "merge_method: linear\nmodules: {}\n", 2, "modules"},
		{"tokenizer block without tokenizer.json", "merge_method: linear\nmodels: [{model: a}]\ntokenizer: {source: union}\n", 3, "no tokenizer.json"},
		{"tokenizer block and source", "merge_method: linear\nmodels: [{model: a}]\ntokenizer: {source: union}\ntokenizer_source: base\n", 4, "not both"},
		{"tokenizer block key", "merge_method: linear\nmodels: [{model: a}]\ntokenizer:\n  sauce: union\n", 4, `unknown key "sauce"`},
		{"tokenizer padding", "merge_method: linear\nmodels: [{model: a}]\ntokenizer:\n  pad_to_multiple_of: 0\n", 4, "want a whole number in [1,"},
		{"token kind", "merge_method: linear\nmodels: [{model: a}]\ntokenizer:\n  tokens:\n    x: {source: {kind: one}}\n", 5, `kind "one"`},
		{"token force", "merge_method: linear\nmodels: [{model: a}]\ntokenizer:\n  tokens:\n    x: {force: true}\n", 5, "force needs a source"},
		{"model_token both", "merge_method: linear\nmodels: [{model: a}]\ntokenizer:\n  tokens:\n    x:\n      source: {kind: model_token, model: a, token: y, token_id: 3}\n", 6, "exactly one of token and token_id"},
		{"zero with model", "merge_method: linear\nmodels: [{model: a}]\ntokenizer:\n  tokens:\n    x:\n      source: {kind: zero, model: a}\n", 6, "takes no model"},
		{"yaml syntax", "merge_method: linear\nmodels: [{model: a}\n", 0, "yaml:"},
		{"two unnamed", "merge_method: linear\nmodels: [{model: a}]\n---\nmerge_method: linear\nmodels: [{model: b}]\n", 4, "two steps without a name"},
		{"cycle", "name: x\nmerge_method: linear\nmodels: [{model: y}]\n---\nname: y\nmerge_method: linear\nmodels: [{model: x}]\n", 1, "cycle: x → y → x"},
		{"bad step name", "name: ../up\nmerge_method: linear\nmodels: [{model: a}]\n", 1, "want letters, digits"},
		{"seed per tensor", "merge_method: dare_linear\nbase_model: base\nmodels: [{model: a}]\nparameters: {seed: [1, 2]}\n", 4, "one value for every tensor"},
		// Found when planning, from the models' headers.
		{"hub model", "merge_method: linear\nmodels:\n  - model: a\n  - model: mistralai/Mistral-7B-v0.1\n", 4, "not in the Hugging Face cache"},
		{"bad hub id", "merge_method: linear\nmodels:\n  - model: a\n  - model: org/na--me\n", 4, "not a Hugging Face id"},
		{"lora", "merge_method: linear\nmodels: [{model: a+my-lora}]\n", 2, "LoRA"},
		{"missing base", "merge_method: ties\nmodels: [{model: a}]\n", 1, "ties needs a base_model"},
		{"base for linear", "merge_method: linear\nbase_model: base\nmodels: [{model: a}]\n", 2, "takes no base_model"},
		{"slerp with two models", "merge_method: slerp\nbase_model: base\nmodels: [{model: a}, {model: b}]\nparameters: {t: 0.5}\n", 1, "exactly 1 model"},
		{"slerp without t", "merge_method: slerp\nbase_model: base\nmodels: [{model: a}]\n", 1, "parameter t has no value"},
		{"t without default", "merge_method: slerp\nbase_model: base\nmodels: [{model: a}]\nparameters:\n  t:\n    - filter: mlp\n      value: 0.3\n", 1, `no value for tensor "lm_head.weight"`},
		{"layer_range beyond", "merge_method: passthrough\nslices:\n  - sources:\n      - {model: a, layer_range: [2, 9]}\n", 4, "a has 4 layers"},
		{"uneven slice", "merge_method: linear\nslices:\n  - sources:\n      - {model: a, layer_range: [0, 2]}\n      - {model: b, layer_range: [0, 3]}\n", 5, "covers as many layers"},
		{"slice without base", "merge_method: ties\nbase_model: base\nslices:\n  - sources:\n      - {model: a, layer_range: [0, 2]}\n", 4, "no source from base_model base"},
		{"union tokenizer without tokenizer.json", "merge_method: linear\nmodels: [{model: a}]\ntokenizer_source: union\n", 3, "no tokenizer.json"},
		{"unknown chat template", "merge_method: linear\nmodels: [{model: a}]\nchat_template: vicuna\n", 3, "not a template name (alpaca, chatml, exaone, llama3, mistral, auto)"},
		{"bad dtype", "merge_method: linear\nmodels: [{model: a}]\nout_dtype: int8\n", 3, `dtype "int8"`},
		{"gamma differs", "merge_method: breadcrumbs\nbase_model: base\nmodels:\n  - {model: a, parameters: {gamma: 0.1}}\n  - model: b\n", 4, "one gamma"},
		{"fisher without fisher", "merge_method: fisher\nmodels: [{model: a}]\n", 2, "needs each model's Fisher"},
		{"out with named steps", "name: x\nmerge_method: linear\nmodels: [{model: a}]\n---\nname: y\nmerge_method: linear\nmodels: [{model: x}]\n", 0, "every step has one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(f.dir, "bad.yaml")
			if err := os.WriteFile(path, []byte(tc.recipe), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := Load(path)
			if err == nil {
				_, err = PlanRecipe(r, Options{Out: filepath.Join(f.dir, "out"), IntermediateDir: f.dir})
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, merge.ErrBadInput) {
				t.Errorf("%v is not bad input", err)
			}
			prefix := path + ":"
			if tc.line > 0 {
				prefix = path + ":" + strconv.Itoa(tc.line) + ": "
			}
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want %q… containing %q", err, prefix, tc.want)
			}
			if _, err := os.Stat(filepath.Join(f.dir, "out")); err == nil {
				t.Errorf("an output was written")
			}
		})
	}
}

// TestSettingEval checks mergekit's evaluation rules on hand-worked values.
func TestSettingEval(t *testing.T) {
	r, err := Parse("eval.yaml", []byte(`
merge_method: linear
models: [{model: a}]
parameters:
  weight:
    - filter: self_attn
      value: [0, 1, 0.5]
    - filter: "*"
      value: 7
  normalize: true
`))
	if err != nil {
		t.Fatal(err)
	}
	w := r.Steps[0].Params["weight"]
	for _, tc := range []struct {
		name string
		t    float64
		want float64
	}{
		{"model.layers.0.self_attn.q_proj.weight", 0, 0},
		{"model.layers.1.self_attn.q_proj.weight", 0.25, 0.5},
		{"model.layers.2.self_attn.q_proj.weight", 0.5, 1},
		{"model.layers.3.self_attn.q_proj.weight", 0.75, 0.75},
		{"model.layers.4.self_attn.q_proj.weight", 1, 0.5},
		{"model.layers.4.mlp.up_proj.weight", 1, 7},
	} {
		v, ok := w.Eval(tc.name, tc.t)
		if !ok || math.Abs(v.Num-tc.want) > 1e-15 || v.IsBool {
			t.Errorf("%s at t=%g: %v %v, want %v", tc.name, tc.t, v.Num, ok, tc.want)
		}
	}
	if v, ok := r.Steps[0].Params["normalize"].Eval("x", 0.5); !ok || !v.IsBool || !v.Bool {
		t.Errorf("normalize: %+v", v)
	}
	none := &Setting{Conds: []Cond{{Filter: ptr("mlp"), Value: &Setting{Num: []float64{1}}}}}
	if _, ok := none.Eval("model.norm.weight", 0); ok {
		t.Error("a filter list without a match gave a value")
	}
}

func ptr[T any](v T) *T { return &v }
