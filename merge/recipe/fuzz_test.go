package recipe

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gomerge/gomerge/merge"
)

// FuzzRecipe parses arbitrary bytes as a recipe: an error must be a bad-input *Error,
// never a panic, and whatever parses must answer every accessor consistently.
func FuzzRecipe(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "examples", "*.yaml"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(pipeline))
	f.Add([]byte("merge_method: linear\nmodels: [{model: a, parameters: {weight: [1, 2, 3]}}]\n"))
	f.Add([]byte("merge_method: slerp\nbase_model: &b x\nmodels: [{model: *b}]\nparameters: {t: [{filter: mlp, value: 0.2}, {value: [0, 1]}]}\n"))
	f.Add([]byte("name: x\nmerge_method: linear\nmodels: [{model: y}]\n---\nname: y\nmerge_method: linear\nmodels: [{model: x}]\n"))
	f.Add([]byte("merge_method: linear\nmodels: [{model: a}]\ntokenizer:\n  source: base\n  pad_to_multiple_of: 8\n  tokens:\n    x: {source: a, force: true}\n    y: {source: {kind: model_token, model: a, token_id: 3}}\n    z: {source: {kind: zero}}\nchat_template: auto\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse("fuzz.yaml", data)
		if err != nil {
			var re *Error
			if !errors.As(err, &re) || !errors.Is(err, merge.ErrBadInput) || re.Error() == "" {
				t.Fatalf("error %v is not a recipe *Error", err)
			}
			return
		}
		order, err := r.Order()
		if err != nil || len(order) != len(r.Steps) {
			t.Fatalf("Order: %d of %d steps, %v", len(order), len(r.Steps), err)
		}
		for i, st := range order {
			if st.Name != "" {
				if got, ok := r.Step(st.Name); !ok || got != st {
					t.Fatalf("Step(%q) is not the step", st.Name)
				}
			}
			for _, d := range r.Deps(st) {
				dep, ok := r.Step(d)
				if !ok || slices.Index(order, dep) >= i {
					t.Fatalf("step %q runs before its dependency %q", st.Name, d)
				}
			}
			_ = st.Refs()
			if b := st.Tokenizer; b != nil {
				if st.TokenizerSource == nil || b.PadToMultipleOf < 0 {
					t.Fatal("tokenizer block without a source")
				}
				for _, ts := range b.Tokens {
					if ts.Force && ts.Kind == "" || ts.Kind == "model_token" && (ts.Model == nil || (ts.SrcToken == nil) == (ts.SrcID == nil)) {
						t.Fatalf("token %q: inconsistent source %+v", ts.Token, ts)
					}
				}
			}
			_ = st.Pos.String()
			if _, ok := lookupMethod(st.Method.Value); !ok {
				t.Fatalf("unknown method %q parsed", st.Method.Value)
			}
			if (st.Models == nil) == (st.Slices == nil) {
				t.Fatal("models and slices both or neither")
			}
			for _, ps := range allParams(st) {
				for _, s := range ps {
					checkEval(t, s)
				}
			}
			for _, sl := range st.Slices {
				for _, src := range sl.Sources {
					if src.Start < 0 || src.End <= src.Start {
						t.Fatalf("layer range [%d, %d]", src.Start, src.End)
					}
				}
			}
		}
	})
}

func allParams(st *Step) []Params {
	ps := []Params{st.Params}
	for _, m := range st.Models {
		ps = append(ps, m.Params)
	}
	for _, sl := range st.Slices {
		ps = append(ps, sl.Params)
		for _, src := range sl.Sources {
			ps = append(ps, src.Params)
		}
	}
	return ps
}

// checkEval evaluates a setting at several names and positions: a number must lie
// within its knots' range, and be finite.
func checkEval(t *testing.T, s *Setting) {
	_ = s.PerTensor()
	for _, name := range []string{"", "model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.up_proj.weight", "lm_head.weight"} {
		for _, x := range []float64{0, 0.25, 1.0 / 3, 0.5, 0.999, 1} {
			v, ok := s.Eval(name, x)
			if !ok || v.IsBool {
				continue
			}
			if math.IsNaN(v.Num) || math.IsInf(v.Num, 0) {
				t.Fatalf("Eval(%q, %v) = %v", name, x, v.Num)
			}
			lo, hi := knotRange(s)
			if v.Num < lo-1e-9*math.Abs(lo) || v.Num > hi+1e-9*math.Abs(hi) {
				t.Fatalf("Eval(%q, %v) = %v outside [%v, %v]", name, x, v.Num, lo, hi)
			}
		}
	}
}

func knotRange(s *Setting) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	leaves := []*Setting{s}
	for _, c := range s.Conds {
		leaves = append(leaves, c.Value)
	}
	for _, l := range leaves {
		for _, k := range l.Num {
			lo, hi = min(lo, k), max(hi, k)
		}
	}
	return lo, hi
}
