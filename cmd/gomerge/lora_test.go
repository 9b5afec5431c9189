package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
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

// TestLoraApplyBadAdapters: each bad adapter of the list (a missing config, a
// wrong rank, a mismatched base, a NaN or overflowing scale, PEFT's and GGUF's) makes
// `lora apply` exit 3 with a message naming what is wrong, and write nothing.
func TestLoraApplyBadAdapters(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.safetensors")
	shapes := loratest.LlamaLike(t, base, dtype.BF16, 1)
	good := loratest.AdapterSpec{R: 2, Alpha: 4, Modules: loraMods, DT: dtype.F32, Seed: 2}
	peft := func(cfg string, sh map[string][]int64) func(string) string {
		return func(d string) string {
			loratest.WriteAdapter(t, d, sh, good)
			if cfg == "" {
				os.Remove(filepath.Join(d, "adapter_config.json"))
			} else {
				os.WriteFile(filepath.Join(d, "adapter_config.json"), []byte(cfg), 0o644)
			}
			return d
		}
	}
	other := map[string][]int64{}
	for k, v := range shapes {
		other[k] = v
	}
	other["model.layers.0.self_attn.q_proj.weight"] = []int64{24, 16}

	// A GGUF adapter extracted from two tiny GGUF models, then written again with a
	// NaN adapter.lora.alpha.
	gbase, gtuned := filepath.Join(dir, "gbase.gguf"), filepath.Join(dir, "gtuned.gguf")
	gts := gguftest.Random(gguftest.Tiny, dtype.F32, 3)
	if err := gguftest.WriteFile(gbase, gguftest.Metadata(gguftest.Tiny, "b"), gts); err != nil {
		t.Fatal(err)
	}
	if err := gguftest.WriteFile(gtuned, gguftest.Metadata(gguftest.Tiny, "t"), gguftest.Perturb(gts, 0.5, 4)); err != nil {
		t.Fatal(err)
	}
	gad := filepath.Join(dir, "gad.gguf")
	if code, _, stderr := gomerge(t, "lora", "extract", "--base", gbase, "--model", gtuned, "--rank", "2", "--out", gad); code != 0 {
		t.Fatalf("extract: exit %d: %s", code, stderr)
	}
	meta, ts, err := gguftest.Read(gad)
	if err != nil {
		t.Fatal(err)
	}
	for i := range meta {
		if meta[i].Key == "adapter.lora.alpha" {
			meta[i].Value = gguf.Value{Type: gguf.ValueFloat32, Data: float32(math.NaN())}
		}
	}
	nanGGUF := filepath.Join(dir, "nan.gguf")
	if err := gguftest.WriteFile(nanGGUF, meta, ts); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		base   string
		mk     func(string) string
		weight string
		want   string
	}{
		{"missing config", base, peft("", shapes), "", "adapter_config.json"},
		{"wrong rank", base, peft(`{"peft_type":"LORA","r":3,"lora_alpha":4}`, shapes), "", "q_proj.lora_A.weight"},
		{"mismatched base", base, peft("", other), "", "q_proj.lora_A.weight"},
		{"NaN alpha", base, peft(`{"peft_type":"LORA","r":2,"lora_alpha":NaN}`, shapes), "", "adapter_config.json"},
		{"scale overflows", base, peft(`{"peft_type":"LORA","r":2,"lora_alpha":1e300}`, shapes), ":weight=1e300", "is not finite"},
		{"GGUF NaN alpha", gbase, func(string) string { return nanGGUF }, "", "adapter.lora.alpha"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := c.mk(filepath.Join(t.TempDir(), "ad"))
			if c.name == "mismatched base" {
				// The shapes of a model the adapter was not trained on: the config is good.
				os.WriteFile(filepath.Join(d, "adapter_config.json"), []byte(`{"peft_type":"LORA","r":2,"lora_alpha":4}`), 0o644)
			}
			out := filepath.Join(t.TempDir(), "out"+filepath.Ext(c.base))
			code, _, stderr := gomerge(t, "lora", "apply", "--base", c.base, d+c.weight, "--out", out)
			if code != 3 || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d, stderr %q: want 3 and a message naming %q", code, stderr, c.want)
			}
			if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
				t.Errorf("left %v beside the output", entries)
			}
		})
	}
}
