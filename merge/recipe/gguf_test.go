package recipe

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	"github.com/gomerge/gomerge/merge"
)

// TestRecipeGGUF: a recipe over whole GGUF models gives the direct command's bytes; a
// slice recipe that renumbers GGUF layers is refused at its line, before anything is
// written (llama.cpp would read the old layer count from the copied metadata).
func TestRecipeGGUF(t *testing.T) {
	dir := t.TempDir()
	a := gguftest.Random(gguftest.Tiny, dtype.Q8_0, 1)
	for name, ts := range map[string][]gguftest.Tensor{"a.gguf": a, "b.gguf": gguftest.Perturb(a, 0.5, 2)} {
		if err := gguftest.WriteFile(filepath.Join(dir, name), gguftest.Metadata(gguftest.Tiny, name), ts); err != nil {
			t.Fatal(err)
		}
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	write := func(name, text string) *Recipe {
		if err := os.WriteFile(p(name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Load(p(name))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ctx := context.Background()
	r := write("linear.yaml", "merge_method: linear\nmodels:\n  - model: "+p("a.gguf")+"\n    parameters: {weight: 0.3}\n  - model: "+p("b.gguf")+"\n    parameters: {weight: 0.7}\n")
	if _, err := Run(ctx, r, Options{Out: p("recipe.gguf")}, merge.Job{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := merge.RunMethod(ctx, merge.MethodJob{Method: "linear", Models: []merge.Model{{Path: p("a.gguf"), Weight: 0.3}, {Path: p("b.gguf"), Weight: 0.7}},
		Job: merge.Job{Out: p("direct.gguf"), Version: "test"}}); err != nil {
		t.Fatal(err)
	}
	_, got, err := gguftest.Read(p("recipe.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := gguftest.Read(p("direct.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if !bytes.Equal(got[i].Data, want[i].Data) {
			t.Errorf("tensor %s: recipe and direct merge differ", want[i].Name)
		}
	}

	r = write("slices.yaml", "merge_method: passthrough\nslices:\n  - sources:\n      - model: "+p("a.gguf")+"\n        layer_range: [0, 2]\n  - sources:\n      - model: "+p("b.gguf")+"\n        layer_range: [1, 2]\n")
	_, err = Run(ctx, r, Options{Out: p("franken.gguf")}, merge.Job{Version: "test"})
	if err == nil || !strings.Contains(err.Error(), "slices.yaml:4") || !strings.Contains(err.Error(), "GGUF") || !errors.Is(err, merge.ErrBadInput) {
		t.Errorf("GGUF slices: err = %v, want a bad-input error at slices.yaml:4 about GGUF", err)
	}
	if _, err := os.Stat(p("franken.gguf")); !os.IsNotExist(err) {
		t.Error("a refused recipe wrote output")
	}
}
