package recipe

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/merge"
)

// TestRecipeTokenizerAndChatTemplate: tokenizer_source copies that model's
// tokenizer files over the reference's, chat_template goes into
// tokenizer_config.json, and a tokenizer for other embeddings is refused.
func TestRecipeTokenizerAndChatTemplate(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	if err := os.WriteFile(f.path("b/tokenizer_config.json"), []byte(`{"model_max_length": 4096, "from": "b"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := f.path("tok")
	f.run(t, f.recipe(t, "tok.yaml", `
merge_method: task_arithmetic
base_model: base
models: [{model: a}, {model: b}]
tokenizer_source: b
chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}"
`), Options{Out: out})
	data, err := os.ReadFile(filepath.Join(out, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil || cfg["from"] != "b" || cfg["chat_template"] != "{% for m in messages %}{{ m.content }}{% endfor %}" {
		t.Errorf("tokenizer_config.json: %s (%v)", data, err)
	}
	if _, err := os.Stat(filepath.Join(out, "config.json")); err != nil {
		t.Errorf("config.json: %v", err)
	}

	// A model whose vocabulary (embedding rows) differs.
	other := tiny4
	other.Vocab = 40
	if err := stt.WriteFolder(f.path("wide"), stt.Random(other, dtype.BF16, 3), 1, nil); err != nil {
		t.Fatal(err)
	}
	r := f.recipe(t, "wide.yaml", "merge_method: linear\nmodels: [{model: a}, {model: b}]\ntokenizer_source: wide\n")
	_, err = PlanRecipe(r, Options{Out: f.path("wide-out")})
	if !errors.Is(err, merge.ErrBadInput) || !strings.Contains(err.Error(), "wide.yaml:3:") || !strings.Contains(err.Error(), "40 embedding rows") {
		t.Errorf("got %v", err)
	}
	// A single-file output cannot take a tokenizer.
	r = f.recipe(t, "file.yaml", "merge_method: linear\nmodels: [{model: a}, {model: b}]\ntokenizer_source: b\n")
	if _, err := PlanRecipe(r, Options{Out: f.path("x.safetensors")}); !errors.Is(err, merge.ErrBadInput) || !strings.Contains(err.Error(), "folder") {
		t.Errorf("got %v", err)
	}
}

// TestRecipePerTensorEngineError: a value that only the engine can judge (linear
// weights that sum to 0 for the MLP tensors only) stops the merge as bad input,
// naming the recipe and the tensor, and writes nothing.
func TestRecipePerTensorEngineError(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	r := f.recipe(t, "zero.yaml", `merge_method: linear
models:
  - model: a
  - model: b
    parameters:
      weight:
        - filter: mlp
          value: -1
        - value: 1
`)
	out := f.path("zero.safetensors")
	_, err := Run(context.Background(), r, Options{Out: out}, merge.Job{})
	if !errors.Is(err, merge.ErrBadInput) || !strings.Contains(err.Error(), "zero.yaml:1:") || !strings.Contains(err.Error(), "mlp") || !strings.Contains(err.Error(), "sum to 0") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("output written")
	}
}
