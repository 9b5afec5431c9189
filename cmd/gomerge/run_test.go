package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// recipeFixture writes base, a and b as single files and returns their folder.
func recipeFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	base := stt.Random(stt.TinyLlama, dtype.BF16, 61)
	for name, ts := range map[string][]stt.Tensor{"base": base, "a": stt.Perturb(base, 0.5, 62), "b": stt.Perturb(base, 0.5, 63)} {
		if err := stt.WriteFile(filepath.Join(dir, name+".safetensors"), ts, nil); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeRecipe(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// sameCheckpointTensors fails unless two checkpoints hold the same tensors, bytes
// included.
func sameCheckpointTensors(t *testing.T, a, b string) {
	t.Helper()
	ca, err := safetensors.OpenCheckpoint(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := safetensors.OpenCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if len(ca.Tensors()) != len(cb.Tensors()) {
		t.Fatalf("%d tensors vs %d", len(ca.Tensors()), len(cb.Tensors()))
	}
	for _, ta := range ca.Tensors() {
		tb, ok := cb.Tensor(ta.Name)
		if !ok {
			t.Fatalf("%s missing from %s", ta.Name, b)
		}
		da, _ := ca.Bytes(ta)
		db, _ := cb.Bytes(tb)
		if ta.DType != tb.DType || !bytes.Equal(da, db) {
			t.Fatalf("tensor %s differs", ta.Name)
		}
	}
}

// TestRunRecipeMatchesCommand: `gomerge run` on a TIES recipe writes the bytes
// `gomerge ties` writes for the same merge, and reports it as JSON.
func TestRunRecipeMatchesCommand(t *testing.T) {
	dir := recipeFixture(t)
	p := func(name string) string { return filepath.Join(dir, name+".safetensors") }
	r := writeRecipe(t, dir, "ties.yaml", `merge_method: ties
base_model: `+p("base")+`
parameters: {density: 0.3, lambda: 0.9}
models:
  - model: `+p("a")+`
    parameters: {weight: 0.7, density: 0.5}
  - model: `+p("b")+`
    parameters: {weight: 0.3}
`)
	out := filepath.Join(dir, "recipe.safetensors")
	code, stdout, stderr := gomerge(t, "run", r, "--out", out, "--json", "--threads", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Recipe string `json:"recipe"`
		Steps  []struct {
			Step   string `json:"step"`
			Method string `json:"method"`
			Output string `json:"output"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || rep.Recipe != r || len(rep.Steps) != 1 || rep.Steps[0].Method != "ties" || rep.Steps[0].Output != out {
		t.Fatalf("report %+v (%v):\n%s", rep, err, stdout)
	}
	direct := filepath.Join(dir, "direct.safetensors")
	code, _, stderr = gomerge(t, "ties", "--base", p("base"), p("a")+":weight=0.7:density=0.5", p("b")+":weight=0.3", "--density", "0.3", "--lambda", "0.9", "--out", direct)
	if code != 0 {
		t.Fatalf("ties: exit %d: %s", code, stderr)
	}
	sameCheckpointTensors(t, out, direct)
}

// TestRunRecipePipelineAndDryRun: a two-step pipeline's dry run writes nothing and
// says what will run; the run writes both steps and says what it did.
func TestRunRecipePipelineAndDryRun(t *testing.T) {
	dir := recipeFixture(t)
	p := func(name string) string { return filepath.Join(dir, name+".safetensors") }
	r := writeRecipe(t, dir, "pipeline.yaml", `name: soup
merge_method: linear
models: [{model: `+p("a")+`}, {model: `+p("b")+`}]
---
merge_method: slerp
base_model: `+p("base")+`
models: [{model: soup}]
parameters: {t: [0, 1]}
`)
	out, steps := filepath.Join(dir, "final"), filepath.Join(dir, "steps")
	code, stdout, stderr := gomerge(t, "run", r, "--out", out, "--intermediate-dir", steps, "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: exit %d: %s", code, stderr)
	}
	for _, want := range []string{`step 1 "soup": linear → ` + filepath.Join(steps, "soup"), "step 2 (final): slerp → " + out, `(output of step "soup")`, "parameters vary by tensor"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = gomerge(t, "run", r, "--out", out, "--intermediate-dir", steps, "--dry-run", "--json")
	var plan struct {
		Steps []struct {
			Name      string `json:"name"`
			BytesRead int64  `json:"bytes_read"`
		} `json:"steps"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &plan) != nil || len(plan.Steps) != 2 || plan.Steps[0].Name != "soup" || plan.Steps[1].BytesRead == 0 {
		t.Fatalf("dry run JSON (exit %d): %s", code, stdout)
	}
	for _, path := range []string{out, steps} {
		if _, err := os.Stat(path); err == nil {
			t.Fatalf("the dry run wrote %s", path)
		}
	}
	code, stdout, stderr = gomerge(t, "run", r, "--out", out, "--intermediate-dir", steps)
	if code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "step soup: linear: wrote") || !strings.Contains(stdout, "step (final): slerp: wrote "+out) {
		t.Errorf("output:\n%s", stdout)
	}
	for _, path := range []string{filepath.Join(steps, "soup", "model.safetensors"), filepath.Join(out, "model.safetensors")} {
		if _, err := os.Stat(path); err != nil {
			t.Error(err)
		}
	}
}

// TestRunRecipeExitStatus: a malformed recipe is bad input (3) naming its line,
// also as the JSON error object; a missing argument or a bad flag is a usage error.
func TestRunRecipeExitStatus(t *testing.T) {
	dir := recipeFixture(t)
	bad := writeRecipe(t, dir, "bad.yaml", "merge_method: linear\nmodels: [{model: a.safetensors}]\nweights: 1\n")
	hub := writeRecipe(t, dir, "hub.yaml", "merge_method: linear\nmodels:\n  - model: meta-llama/Llama-3.1-8B\n")
	out := filepath.Join(dir, "out")
	t.Setenv("HF_HUB_CACHE", t.TempDir()) // empty, and --offline below: no network
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"run", bad, "--out", out}, exitBadInput, bad + `:3: unknown key "weights"`},
		{[]string{"run", hub, "--out", out, "--offline"}, exitBadInput, hub + ":3: model meta-llama/Llama-3.1-8B: not in the Hugging Face cache"},
		{[]string{"run", filepath.Join(dir, "none.yaml"), "--out", out}, exitBadInput, "none.yaml"},
		{[]string{"run"}, exitUsage, "give one recipe file"},
		{[]string{"run", bad, "--threads", "-1"}, exitUsage, "--threads"},
		{[]string{"run", bad, "--bogus"}, exitUsage, "bogus"},
	} {
		code, _, stderr := gomerge(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	code, stdout, _ := gomerge(t, "run", bad, "--out", out, "--json")
	var e struct {
		Error      string `json:"error"`
		ExitStatus int    `json:"exit_status"`
	}
	if code != exitBadInput || json.Unmarshal([]byte(stdout), &e) != nil || e.ExitStatus != exitBadInput || !strings.HasPrefix(e.Error, bad+":3:") {
		t.Errorf("--json failure: exit %d, %s", code, stdout)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed recipe wrote its output")
	}
}
