package recipe

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/merge"
	"github.com/gomerge/gomerge/tokenizer"
)

// vocabFixture is three Hugging Face folders whose tokenizers differ: base has
// t0..t31 at ids 0..31; a has t0..t29 in reverse order, x_a and the added special
// token <|im_start|> (32 rows); b has t0..t31, x_b and <|im_start|> (34 rows).
type vocabFixture struct {
	*fixture
	vocabs map[string]map[string]int // model → token → row
}

func writeTokenizer(t testing.TB, dir string, vocab map[string]int, added map[string]int, template string) {
	t.Helper()
	type entry struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	}
	var as []entry
	for tok, id := range added {
		as = append(as, entry{id, tok, true})
	}
	slices.SortFunc(as, func(a, b entry) int { return a.ID - b.ID })
	all := map[string]int{}
	for k, v := range vocab {
		all[k] = v
	}
	data, _ := json.Marshal(map[string]any{"version": "1.0", "added_tokens": as, "normalizer": nil,
		"model": map[string]any{"type": "BPE", "vocab": all, "merges": []string{}}})
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{"model_max_length": 2048, "added_tokens_decoder": map[string]any{}}
	if template != "" {
		cfg["chat_template"] = template
	}
	data, _ = json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// withRows replaces a checkpoint's embedding and head with random ones of n rows.
func withRows(ts []stt.Tensor, n int, seed uint64) []stt.Tensor {
	rng := rand.New(rand.NewPCG(seed, 7))
	out := slices.Clone(ts)
	for i, x := range out {
		if x.Name != "model.embed_tokens.weight" && x.Name != "lm_head.weight" {
			continue
		}
		h := x.Shape[1]
		v := make([]float32, int64(n)*h)
		for j := range v {
			v[j] = float32(rng.NormFloat64())
		}
		out[i] = stt.FromFloat32(x.Name, x.DType, []int64{int64(n), h}, v)
	}
	return out
}

func newVocabFixture(t testing.TB) *vocabFixture {
	t.Helper()
	f := &vocabFixture{fixture: newFixture(t, dtype.BF16), vocabs: map[string]map[string]int{}}
	base, a, b := map[string]int{}, map[string]int{}, map[string]int{}
	for i := range 32 {
		base[fmt.Sprintf("t%d", i)] = i
		b[fmt.Sprintf("t%d", i)] = i
		if i < 30 {
			a[fmt.Sprintf("t%d", i)] = 29 - i
		}
	}
	a["x_a"] = 30
	b["x_b"] = 32
	f.ts["a"] = withRows(f.ts["a"], 32, 1)
	f.ts["b"] = withRows(f.ts["b"], 34, 2)
	if err := stt.WriteFolder(f.path("a"), f.ts["a"], 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := stt.WriteFolder(f.path("b"), f.ts["b"], 2, nil); err != nil {
		t.Fatal(err)
	}
	writeTokenizer(t, f.path("base"), base, nil, "{{ base template }}")
	writeTokenizer(t, f.path("a"), a, map[string]int{"<|im_start|>": 31}, "{{ ab template }}")
	writeTokenizer(t, f.path("b"), b, map[string]int{"<|im_start|>": 33}, " {{ ab template }}\n")
	if err := os.WriteFile(f.path("base/config.json"), []byte(`{"model_type": "llama", "vocab_size": 32, "num_hidden_layers": 4}`), 0o644); err != nil {
		t.Fatal(err)
	}
	a["<|im_start|>"], b["<|im_start|>"] = 31, 33
	f.vocabs["base"], f.vocabs["a"], f.vocabs["b"] = base, a, b
	return f
}

func rowsOf(t testing.TB, ts []stt.Tensor, name string) [][]float64 {
	for _, x := range ts {
		if x.Name == name {
			v := x.Float32()
			h := int(x.Shape[1])
			var out [][]float64
			for r := range int(x.Shape[0]) {
				row := make([]float64, h)
				for j := range row {
					row[j] = float64(v[r*h+j])
				}
				out = append(out, row)
			}
			return out
		}
	}
	t.Fatalf("no tensor %s", name)
	return nil
}

// bf16 rounds as the re-indexed inputs are stored.
func bf16(x float64) float64 {
	return float64(dtype.BF16ToFloat32(dtype.Float32ToBF16(float32(x))))
}

// TestRecipeUnionVocabulary: tokenizer source union re-indexes each model's
// embedding and head to the union vocabulary, fills the rows each lacks by
// mergekit's rules and the tokenizer block's tokens, pads, merges, and writes a
// tokenizer and config.json that agree. The merged rows are checked against a
// float64 reference that builds the union from the token strings.
func TestRecipeUnionVocabulary(t *testing.T) {
	f := newVocabFixture(t)
	t.Chdir(f.dir)
	out := f.path("union")
	f.run(t, f.recipe(t, "union.yaml", `
merge_method: linear
base_model: base
models:
  - {model: base, parameters: {weight: 0.5}}
  - {model: a, parameters: {weight: 0.3}}
  - {model: b, parameters: {weight: 0.2}}
tokenizer:
  source: union
  pad_to_multiple_of: 8
  tokens:
    <z>: {source: {kind: zero}}
    t5: {source: b, force: true}
    t7:
      source: {kind: model_token, model: a, token: x_a}
chat_template: auto
`), Options{Out: out})

	// The union, by the rule in its doc: base's tokens, the others' model tokens,
	// their added tokens, the block's new tokens.
	var union []string
	for i := range 32 {
		union = append(union, fmt.Sprintf("t%d", i))
	}
	union = append(union, "x_a", "x_b", "<|im_start|>", "<z>")
	const rows = 40
	v, err := tokenizer.ReadFile(filepath.Join(out, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v.Tokens(), union) {
		t.Fatalf("tokenizer.json tokens %q", v.Tokens())
	}
	var cfg struct {
		VocabSize int `json:"vocab_size"`
		Layers    int `json:"num_hidden_layers"`
	}
	data, _ := os.ReadFile(filepath.Join(out, "config.json"))
	if err := json.Unmarshal(data, &cfg); err != nil || cfg.VocabSize != rows || cfg.Layers != 4 {
		ents, _ := os.ReadDir(out)
		t.Errorf("config.json: %s %v", data, ents)
	}
	var tc struct {
		Decoder  map[string]struct{ Content string } `json:"added_tokens_decoder"`
		Template string                              `json:"chat_template"`
	}
	data, _ = os.ReadFile(filepath.Join(out, "tokenizer_config.json"))
	if err := json.Unmarshal(data, &tc); err != nil || tc.Decoder["34"].Content != "<|im_start|>" || tc.Decoder["35"].Content != "<z>" {
		t.Errorf("tokenizer_config.json: %s", data)
	}
	if tc.Template != "{{ ab template }}" {
		t.Errorf("chat_template auto: %q, want the template two of three models have", tc.Template)
	}
	if left, _ := filepath.Glob(f.path(".gomerge-vocab-*")); len(left) > 0 {
		t.Errorf("scratch files left: %v", left)
	}

	got, _ := readCkpt(t, filepath.Join(out, "model.safetensors"))
	weights := map[string]float64{"base": 0.5, "a": 0.3, "b": 0.2}
	models := []string{"base", "a", "b"}
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
		src := map[string][][]float64{}
		for _, m := range models {
			src[m] = rowsOf(t, f.ts[m], name)
		}
		h := len(src["base"][0])
		row := func(m, tok string) []float64 {
			if r, ok := f.vocabs[m][tok]; ok {
				return src[m][r]
			}
			return nil
		}
		// permuted[m] is model m's re-indexed tensor, as stored (bf16).
		permuted := map[string][][]float64{}
		for _, m := range models {
			var p [][]float64
			mean := make([]float64, h)
			for _, tok := range union {
				r := row(m, tok)
				switch {
				case tok == "t5":
					r = row("b", "t5") // forced
				case tok == "t7" && r == nil:
					r = row("a", "x_a")
				case tok == "<z>":
					r = make([]float64, h)
				case r != nil:
				case row("base", tok) != nil:
					r = row("base", tok)
				default:
					var have [][]float64
					for _, o := range models {
						if x := row(o, tok); x != nil {
							have = append(have, x)
						}
					}
					r = make([]float64, h)
					for _, x := range have {
						for j := range r {
							r[j] += x[j]
						}
					}
					for j := range r {
						r[j] /= float64(len(have))
					}
				}
				q := make([]float64, h)
				for j := range q {
					q[j] = bf16(r[j])
					mean[j] += q[j]
				}
				p = append(p, q)
			}
			for range rows - len(union) {
				q := make([]float64, h)
				for j := range q {
					q[j] = bf16(mean[j] / float64(len(union)))
				}
				p = append(p, q)
			}
			permuted[m] = p
		}
		x := got[name]
		if !slices.Equal(x.shape, []int64{rows, int64(h)}) {
			t.Fatalf("%s: shape %v", name, x.shape)
		}
		vals := x.float32s(t)
		for r := range rows {
			for j := range h {
				want := 0.0
				for _, m := range models {
					want += weights[m] * permuted[m][r][j]
				}
				g := float64(vals[r*h+j])
				if math.Abs(g-want) > math.Abs(want)/128+1e-30 { // one bf16 ulp
					t.Fatalf("%s row %d (%s) col %d: %g, want %g", name, r, tokenAt(union, r), j, g, want)
				}
			}
		}
	}
}

func tokenAt(union []string, r int) string {
	if r < len(union) {
		return union[r]
	}
	return "padding"
}

// TestRecipeTokenizerSourceModel: tokenizer_source b re-indexes the others to b's
// vocabulary (a's reversed rows back in order, rows b has and a lacks filled),
// and config.json's vocab_size follows; a slice recipe also sets the layer count.
func TestRecipeTokenizerSourceModel(t *testing.T) {
	f := newVocabFixture(t)
	t.Chdir(f.dir)
	out := f.path("tok-b")
	f.run(t, f.recipe(t, "b.yaml", `
merge_method: passthrough
slices:
  - sources: [{model: a, layer_range: [0, 2]}]
  - sources: [{model: b, layer_range: [1, 3]}]
tokenizer_source: b
chat_template: chatml
`), Options{Out: out})
	got, _ := readCkpt(t, filepath.Join(out, "model.safetensors"))
	emb := got["model.embed_tokens.weight"]
	if emb.shape[0] != 34 {
		t.Fatalf("embed rows %v", emb.shape)
	}
	// The embeddings come from a (the first slice), re-indexed: b's t3 is a's row 26.
	aRows := rowsOf(t, f.ts["a"], "model.embed_tokens.weight")
	vals := emb.float32s(t)
	h := len(aRows[0])
	for j := range h {
		if float64(vals[3*h+j]) != aRows[26][j] {
			t.Fatalf("row of t3 col %d: %g, want a's row 26 %g", j, vals[3*h+j], aRows[26][j])
		}
	}
	var cfg struct {
		VocabSize int `json:"vocab_size"`
		Layers    int `json:"num_hidden_layers"`
	}
	data, _ := os.ReadFile(filepath.Join(out, "config.json"))
	if err := json.Unmarshal(data, &cfg); err != nil || cfg.VocabSize != 34 || cfg.Layers != 4 {
		t.Errorf("config.json: %s", data)
	}
	var tc struct {
		Template string `json:"chat_template"`
	}
	data, _ = os.ReadFile(filepath.Join(out, "tokenizer_config.json"))
	if err := json.Unmarshal(data, &tc); err != nil || tc.Template != namedTemplates["chatml"] || !strings.Contains(tc.Template, "<|im_start|>") {
		t.Errorf("tokenizer_config.json: %s", data)
	}
	v, err := tokenizer.ReadFile(filepath.Join(out, "tokenizer.json"))
	if err != nil || v.Size() != 34 {
		t.Errorf("tokenizer.json: %v", err)
	}
}

// TestRecipeBadTokenizer: a malformed tokenizer.json is bad input (exit status 3)
// naming the file, found when planning.
func TestRecipeBadTokenizer(t *testing.T) {
	f := newVocabFixture(t)
	t.Chdir(f.dir)
	for _, bad := range []string{`{"model": {"type": "BPE", "vocab": {"a": -1}}}`, `not json`, `{"model": {"vocab": {"x": 0, "y": 0}}}`} {
		if err := os.WriteFile(f.path("a/tokenizer.json"), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		r := f.recipe(t, "bad.yaml", "merge_method: linear\nmodels: [{model: base}, {model: a}]\ntokenizer_source: union\n")
		_, err := Run(t.Context(), r, Options{Out: f.path("bad-out")}, merge.Job{})
		if !errors.Is(err, merge.ErrBadInput) || !errors.Is(err, tokenizer.ErrFormat) && !strings.Contains(err.Error(), "tokenizer.json") ||
			!strings.Contains(err.Error(), filepath.Join(f.dir, "a", "tokenizer.json")) && !strings.Contains(err.Error(), filepath.Join("a", "tokenizer.json")) {
			t.Errorf("%s: got %v", bad, err)
		}
		if _, err := os.Stat(f.path("bad-out")); err == nil {
			t.Error("output written")
		}
	}
	r := f.recipe(t, "fisher.yaml", "merge_method: fisher\nmodels:\n  - {model: base, fisher: fisher_a.safetensors}\n  - {model: b, fisher: fisher_b.safetensors}\ntokenizer_source: union\n")
	if _, err := PlanRecipe(r, Options{Out: f.path("bad-out")}); !errors.Is(err, merge.ErrBadInput) || !strings.Contains(err.Error(), "fisher.yaml:5:") || !strings.Contains(err.Error(), "Fisher") {
		t.Errorf("fisher: got %v", err)
	}
}

// TestChatTemplates: names give mergekit's templates, a literal is kept, auto takes
// the most common (first seen on a tie) and none when no model has one, and a
// string that is neither a name nor a template is refused.
func TestChatTemplates(t *testing.T) {
	dir := t.TempDir()
	mk := func(name, cfg string, jinja string) *modelInfo {
		d := filepath.Join(dir, name)
		os.MkdirAll(d, 0o755)
		if cfg != "" {
			os.WriteFile(filepath.Join(d, "tokenizer_config.json"), []byte(cfg), 0o644)
		}
		if jinja != "" {
			os.WriteFile(filepath.Join(d, "chat_template.jinja"), []byte(jinja), 0o644)
		}
		return &modelInfo{path: d, dir: d}
	}
	x := mk("x", `{"chat_template": "{{ X }}"}`, "")
	y := mk("y", `{"chat_template": [{"name": "default", "template": "{{ Y }}"}, {"name": "tool_use", "template": "{{ T }}"}]}`, "")
	z := mk("z", `{}`, "{{ Y }}\n")
	none := mk("none", `{"model_max_length": 1}`, "")
	for _, tc := range []struct {
		value  string
		models []*modelInfo
		want   string
	}{
		{"chatml", nil, namedTemplates["chatml"]},
		{"llama3", nil, namedTemplates["llama3"]},
		{"{% for m in messages %}{{ m.content }}{% endfor %}", nil, "{% for m in messages %}{{ m.content }}{% endfor %}"},
		{"auto", []*modelInfo{x, y, z, none}, "{{ Y }}"},
		{"auto", []*modelInfo{x, y}, "{{ X }}"},
		{"auto", []*modelInfo{none}, ""},
	} {
		got, err := chatTemplate(&Str{Value: tc.value}, tc.models)
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.value, got, err, tc.want)
		}
	}
	for _, name := range []string{"alpaca", "chatml", "llama3", "mistral", "exaone"} {
		if tpl := namedTemplates[name]; strings.Count(tpl, "{%") != strings.Count(tpl, "%}") || !strings.Contains(tpl, "messages") {
			t.Errorf("%s: unbalanced template", name)
		}
	}
	if _, err := chatTemplate(&Str{Value: "vicuna"}, nil); !errors.Is(err, merge.ErrBadInput) {
		t.Errorf("vicuna: %v", err)
	}
	bad := mk("bad", `{`, "")
	if _, err := chatTemplate(&Str{Value: "auto"}, []*modelInfo{bad}); !errors.Is(err, merge.ErrBadInput) || !strings.Contains(err.Error(), "tokenizer_config.json") {
		t.Errorf("bad config: %v", err)
	}
}

// TestRecipeVocabularyPipeline: a step may take its vocabulary from an earlier
// step's union output; the dry run plans it before that output exists, and the run
// re-indexes a to it.
func TestRecipeVocabularyPipeline(t *testing.T) {
	f := newVocabFixture(t)
	t.Chdir(f.dir)
	text := `name: u
merge_method: linear
models: [{model: base}, {model: a}, {model: b}]
tokenizer_source: union
---
merge_method: linear
models: [{model: u}, {model: a}]
tokenizer_source: u
`
	r := f.recipe(t, "p.yaml", text)
	opts := Options{Out: f.path("final"), IntermediateDir: f.path("steps")}
	if _, err := PlanRecipe(r, opts); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	f.run(t, r, opts)
	got, _ := readCkpt(t, filepath.Join(f.path("final"), "model.safetensors"))
	u, _ := readCkpt(t, filepath.Join(f.path("steps"), "u", "model.safetensors"))
	if s := got["lm_head.weight"].shape; s[0] != 35 || u["lm_head.weight"].shape[0] != 35 {
		t.Fatalf("head rows %v and %v, want the union's 35", s, u["lm_head.weight"].shape)
	}
	// Token x_a (id 32 of the union) is a's own row 30 in both inputs of step 2
	// (u's row is the mean of one model's row, a's), so the merge keeps it.
	aRows := rowsOf(t, f.ts["a"], "lm_head.weight")
	vals := got["lm_head.weight"].float32s(t)
	h := len(aRows[0])
	for j := range h {
		if float64(vals[32*h+j]) != aRows[30][j] {
			t.Fatalf("x_a col %d: %g, want %g", j, vals[32*h+j], aRows[30][j])
		}
	}
}
