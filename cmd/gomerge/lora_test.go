package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/loratest"
)

var loraMods = []string{"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"}

func TestLoraApplyCommand(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.safetensors")
	shapes := loratest.LlamaLike(t, base, dtype.BF16, 1)
	ad := filepath.Join(dir, "ad")
	loratest.WriteAdapter(t, ad, shapes, loratest.AdapterSpec{R: 2, Alpha: 4, Modules: loraMods, DT: dtype.F32, Seed: 2})
	out := filepath.Join(dir, "out.safetensors")
	code, stdout, stderr := gomerge(t, "lora", "apply", "--base", base, ad+":weight=0.5", "--out", out, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		TensorsAdapted int `json:"tensors_adapted"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || rep.TensorsAdapted != 2 {
		t.Fatalf("report %s: %v, want 2 tensors adapted", stdout, err)
	}
	// BASE+ADAPTER through merge.Open: the distance between the base and the applied
	// reference equals the distance between the base and the written output at
	// weight 1, and is not zero.
	out1 := filepath.Join(dir, "out1.safetensors")
	if code, _, stderr := gomerge(t, "lora", "apply", "--base", base, ad, "--out", out1); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	_, d1, _ := gomerge(t, "distance", base, base+"+"+ad, "--json")
	_, d2, _ := gomerge(t, "distance", base, out1, "--json")
	var r1, r2 struct {
		Total struct{ L2 float64 } `json:"total"`
	}
	if err := json.Unmarshal([]byte(d1), &r1); err != nil {
		t.Fatalf("%s: %v", d1, err)
	}
	if err := json.Unmarshal([]byte(d2), &r2); err != nil {
		t.Fatalf("%s: %v", d2, err)
	}
	if r1.Total.L2 != r2.Total.L2 || r1.Total.L2 == 0 {
		t.Errorf("L2 to BASE+ADAPTER %v, to the applied output %v (want equal, not 0)", r1.Total.L2, r2.Total.L2)
	}

	// A bad adapter exits 3 and writes nothing.
	os.WriteFile(filepath.Join(ad, "adapter_config.json"), []byte(`{"peft_type":"LORA","r":3,"lora_alpha":4}`), 0o644)
	bad := filepath.Join(dir, "bad.safetensors")
	if code, _, stderr := gomerge(t, "lora", "apply", "--base", base, ad, "--out", bad); code != 3 {
		t.Errorf("wrong rank: exit %d (%s), want 3", code, stderr)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("a bad adapter left an output: %v", err)
	}
	if code, _, _ := gomerge(t, "lora", "apply", "--base", base, ad+":weight=nan", "--out", bad); code != 2 {
		t.Errorf("NaN weight: exit %d, want 2", code)
	}
}

func TestLoraExtractCommand(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.safetensors")
	shapes := loratest.LlamaLike(t, base, dtype.F32, 1)
	ad := filepath.Join(dir, "ad")
	loratest.WriteAdapter(t, ad, shapes, loratest.AdapterSpec{R: 2, Alpha: 4, Modules: loraMods, DT: dtype.F32, Seed: 2})
	model := filepath.Join(dir, "model.safetensors")
	if code, _, stderr := gomerge(t, "lora", "apply", "--base", base, ad, "--out", model); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	out := filepath.Join(dir, "extracted")
	code, stdout, stderr := gomerge(t, "lora", "extract", "--base", base, "--model", model, "--rank", "4", "--sv-epsilon", "1e-4", "--out", out, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Modules []struct {
			Tensor   string  `json:"tensor"`
			Rank     int     `json:"rank"`
			RelError float64 `json:"relative_error"`
		} `json:"modules"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	// A rank-2 adapter's delta comes back at rank 2 (the rest is float32 noise under
	// --sv-epsilon), almost exactly.
	if len(rep.Modules) != 2 {
		t.Fatalf("%d modules: %s", len(rep.Modules), stdout)
	}
	for _, m := range rep.Modules {
		if m.Rank != 2 || m.RelError > 1e-5 {
			t.Errorf("%+v: want rank 2 and a relative error under 1e-5", m)
		}
	}
	if code, _, _ := gomerge(t, "lora", "extract", "--base", base, "--model", model, "--out", out); code != 2 {
		t.Errorf("no --rank: exit %d, want 2", code)
	}
}

func TestLoraMergeCommand(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.safetensors")
	shapes := loratest.LlamaLike(t, base, dtype.F32, 1)
	a1, a2 := filepath.Join(dir, "a1"), filepath.Join(dir, "a2")
	loratest.WriteAdapter(t, a1, shapes, loratest.AdapterSpec{R: 2, Alpha: 4, Modules: loraMods, DT: dtype.F32, Seed: 2})
	loratest.WriteAdapter(t, a2, shapes, loratest.AdapterSpec{R: 3, Alpha: 3, Modules: loraMods, DT: dtype.F32, Seed: 3})
	out := filepath.Join(dir, "cat")
	code, stdout, stderr := gomerge(t, "lora", "merge", a1+":weight=0.5", a2, "--type", "cat", "--out", out, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Modules []struct{ Rank int } `json:"modules"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || len(rep.Modules) != 2 || rep.Modules[0].Rank != 5 {
		t.Fatalf("%s: %v, want 2 modules of rank 5", stdout, err)
	}
	// The merged adapter applies like the two at their weights.
	m1, m2 := filepath.Join(dir, "m1.safetensors"), filepath.Join(dir, "m2.safetensors")
	gomerge(t, "lora", "apply", "--base", base, out, "--out", m1)
	gomerge(t, "lora", "apply", "--base", base, a1+":weight=0.5", a2, "--out", m2)
	_, d, _ := gomerge(t, "distance", m1, m2, "--json")
	var dist struct {
		Total struct{ Relative float64 } `json:"total"`
	}
	if err := json.Unmarshal([]byte(d), &dist); err != nil || dist.Total.Relative > 1e-6 {
		t.Errorf("cat-merged adapter vs the two applied: %s %v", d, err)
	}
	for _, bad := range [][]string{
		{"lora", "merge", a1, a2, "--type", "ties_svd", "--out", out}, // no density
		{"lora", "merge", a1, a2, "--type", "mean", "--out", out},     // unknown type
		{"lora", "merge", a1, a2 + ":weight=x", "--type", "cat", "--out", out},
	} {
		if code, _, _ := gomerge(t, bad...); code != 2 {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
	if code, _, _ := gomerge(t, "lora", "merge", a1, a2, "--type", "linear", "--out", filepath.Join(dir, "lin")); code != 3 {
		t.Errorf("linear of ranks 2 and 3: exit %d, want 3", code)
	}
}

// TestLoraRecipeRef: a recipe's model may be BASE+ADAPTER (mergekit's syntax); a
// passthrough of it equals `lora apply`.
func TestLoraRecipeRef(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.safetensors")
	shapes := loratest.LlamaLike(t, base, dtype.BF16, 1)
	ad := filepath.Join(dir, "ad")
	loratest.WriteAdapter(t, ad, shapes, loratest.AdapterSpec{R: 2, Alpha: 4, Modules: loraMods, DT: dtype.F32, Seed: 2})
	r := writeRecipe(t, dir, "lora.yaml", "merge_method: passthrough\nmodels:\n  - model: "+base+"+"+ad+"\n")
	out := filepath.Join(dir, "recipe.safetensors")
	if code, _, stderr := gomerge(t, "run", r, "--out", out); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	applied := filepath.Join(dir, "applied.safetensors")
	if code, _, stderr := gomerge(t, "lora", "apply", "--base", base, ad, "--out", applied); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	sameCheckpointTensors(t, out, applied)
}
