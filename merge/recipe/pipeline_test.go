package recipe

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/merge"
)

// pipeline has its final step first in the file: steps run in dependency order.
const pipeline = `# the final merge uses both named steps
merge_method: task_arithmetic
base_model: base
models:
  - model: soup
    parameters: {weight: 0.5}
  - model: tuned
parameters: {lambda: 0.9}
---
name: tuned
merge_method: ties
base_model: base
models: [{model: c, parameters: {density: 0.4}}, {model: soup}]
---
name: soup
merge_method: linear
models:
  - model: a
  - model: b
    parameters: {weight: 3}
`

// TestRecipePipeline runs a three-step pipeline and compares its final output with
// the three merges run directly, one after the other.
func TestRecipePipeline(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	r := f.recipe(t, "pipeline.yaml", pipeline)
	order, err := r.Order()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range order {
		names = append(names, st.Name)
	}
	if strings.Join(names, ",") != "soup,tuned," {
		t.Fatalf("order %q", names)
	}
	opts := Options{Out: filepath.Join(f.dir, "final"), IntermediateDir: filepath.Join(f.dir, "steps")}
	reps := f.run(t, r, opts)
	if len(reps) != 3 || reps[0].Step != "soup" || reps[1].Step != "tuned" || reps[2].Step != "" {
		t.Fatalf("reports %+v", reps)
	}

	nan := math.NaN()
	p := merge.Params{Density: 1, Lambda: 1, Rescale: "l1", Gamma: 0.01, T: 0.5, Epsilon: 1e-6}
	if err := os.Mkdir(filepath.Join(f.dir, "direct"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(j merge.MethodJob, out string) string {
		j.Job = merge.Job{Out: filepath.Join(f.dir, "direct", out)}
		if _, err := merge.RunMethod(context.Background(), j); err != nil {
			t.Fatal(err)
		}
		return j.Job.Out
	}
	soup := run(merge.MethodJob{Method: "linear", Models: []merge.Model{{Path: "a", Weight: 1, Density: nan}, {Path: "b", Weight: 3, Density: nan}}, Params: p}, "soup")
	tuned := run(merge.MethodJob{Method: "ties", Base: "base", Models: []merge.Model{{Path: "c", Weight: 1, Density: 0.4}, {Path: soup, Weight: 1, Density: 1}}, Params: p}, "tuned")
	pl := p
	pl.Lambda = 0.9
	final := run(merge.MethodJob{Method: "task_arithmetic", Base: "base", Models: []merge.Model{{Path: soup, Weight: 0.5, Density: nan}, {Path: tuned, Weight: 1, Density: nan}}, Params: pl}, "final")
	sameTensors(t, filepath.Join(f.dir, "steps", "soup"), soup)
	sameTensors(t, filepath.Join(f.dir, "steps", "tuned"), tuned)
	sameTensors(t, opts.Out, final)
}

// TestRecipePipelineFailure: a step that fails stops the pipeline; the steps before
// it keep their complete outputs, and nothing is written for it or after it.
func TestRecipePipelineFailure(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	// "short" lacks one tensor: the plan (headers only) accepts it, the merge does not.
	short := f.ts["c"][:len(f.ts["c"])-1]
	if err := stt.WriteFolder(f.path("short"), short, 1, nil); err != nil {
		t.Fatal(err)
	}
	r := f.recipe(t, "fail.yaml", `
name: soup
merge_method: linear
models: [{model: a}, {model: b}]
---
name: broken
merge_method: linear
models: [{model: soup}, {model: short}]
---
merge_method: linear
models: [{model: broken}, {model: a}]
`)
	steps := filepath.Join(f.dir, "steps")
	out := filepath.Join(f.dir, "final")
	_, err := Run(context.Background(), r, Options{Out: out, IntermediateDir: steps}, merge.Job{})
	if !errors.Is(err, merge.ErrBadInput) || !strings.Contains(err.Error(), `step "broken"`) || !strings.Contains(err.Error(), "lm_head.weight") {
		t.Fatalf("got %v, want a bad-input error naming step broken and the missing tensor", err)
	}
	if _, err := os.Stat(filepath.Join(steps, "broken")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed step left %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the final step ran after a failure: %v", err)
	}
	direct := filepath.Join(f.dir, "soup.safetensors")
	nan := math.NaN()
	if _, err := merge.RunMethod(context.Background(), merge.MethodJob{Method: "linear",
		Models: []merge.Model{{Path: "a", Weight: 1, Density: nan}, {Path: "b", Weight: 1, Density: nan}}, Job: merge.Job{Out: direct}}); err != nil {
		t.Fatal(err)
	}
	sameTensors(t, filepath.Join(steps, "soup"), direct)
}

// TestRecipeDryRun plans the pipeline without writing anything, with the bytes each
// step reads and writes.
func TestRecipeDryRun(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	r := f.recipe(t, "pipeline.yaml", pipeline)
	opts := Options{Out: filepath.Join(f.dir, "final"), IntermediateDir: filepath.Join(f.dir, "steps")}
	plan, err := PlanRecipe(r, opts)
	if err != nil {
		t.Fatal(err)
	}
	var modelBytes int64
	for _, x := range f.ts["base"] {
		modelBytes += int64(len(x.Data))
	}
	// soup reads a and b; tuned base, c, soup; final base, soup, tuned: 8 models.
	if len(plan.Steps) != 3 || plan.BytesRead != 8*modelBytes || plan.BytesWritten != 3*modelBytes {
		t.Fatalf("plan: %d steps, %d bytes read, %d written; want 3, %d, %d", len(plan.Steps), plan.BytesRead, plan.BytesWritten, 8*modelBytes, 3*modelBytes)
	}
	if in := plan.Steps[1].Inputs[2]; in.Step != "soup" || in.Path != filepath.Join(f.dir, "steps", "soup") {
		t.Errorf("tuned's third input: %+v", in)
	}
	var buf bytes.Buffer
	if err := plan.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`step 1 "soup": linear`, `step 3 (final): task_arithmetic`, `(output of step "tuned")`, "nothing written"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("dry run text lacks %q:\n%s", want, buf.String())
		}
	}
	for _, p := range []string{"final", "steps"} {
		if _, err := os.Stat(filepath.Join(f.dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("dry run wrote %s", p)
		}
	}
}
