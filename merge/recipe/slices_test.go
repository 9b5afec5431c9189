package recipe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// renumber renames a llama tensor name's layer.
func renumber(name string, layer int) string {
	l := layerOf(name)
	return strings.Replace(name, fmt.Sprintf("model.layers.%d.", l), fmt.Sprintf("model.layers.%d.", layer), 1)
}

// TestRecipeSlicesPassthrough stacks layers 0–2 of a and 1–3 of b (a frankenmerge)
// and checks every output tensor against the source tensor it must be a copy of,
// byte for byte, and the folder's config.json.
func TestRecipeSlicesPassthrough(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	out := filepath.Join(f.dir, "franken")
	reps := f.run(t, f.recipe(t, "franken.yaml", `
slices:
  - sources:
      - model: a
        layer_range: [0, 3]
  - sources:
      - model: b
        layer_range: [1, 4]
merge_method: passthrough
dtype: bfloat16
`), Options{Out: out})
	if reps[0].Method != "passthrough" {
		t.Errorf("method %s", reps[0].Method)
	}
	got, order := readCkpt(t, out)
	a, aOrder := readCkpt(t, filepath.Join(f.dir, "a"))
	b, bOrder := readCkpt(t, filepath.Join(f.dir, "b"))
	want := map[string][]byte{}
	var wantOrder []string
	add := func(name string, data []byte) { want[name] = data; wantOrder = append(wantOrder, name) }
	add("model.embed_tokens.weight", a["model.embed_tokens.weight"].data)
	// Layer by layer, each layer's tensors in the file's order.
	for l := range 3 {
		for _, name := range aOrder {
			if layerOf(name) == l {
				add(name, a[name].data)
			}
		}
	}
	for l := 1; l < 4; l++ {
		for _, name := range bOrder {
			if layerOf(name) == l {
				add(renumber(name, l+2), b[name].data)
			}
		}
	}
	for _, name := range bOrder {
		if name == "model.norm.weight" || name == "lm_head.weight" {
			add(name, b[name].data)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d tensors, want %d", len(got), len(want))
	}
	for i, name := range wantOrder {
		if order[i] != name {
			t.Fatalf("tensor %d is %s, want %s", i, order[i], name)
		}
		if !bytes.Equal(got[name].data, want[name]) {
			t.Errorf("%s is not a copy of its source", name)
		}
	}
	var cfg map[string]any
	data, err := os.ReadFile(filepath.Join(out, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &cfg); err != nil || cfg["num_hidden_layers"] != float64(6) || cfg["model_type"] != "llama" {
		t.Errorf("config.json: %s (%v)", data, err)
	}
	if _, err := os.Stat(filepath.Join(out, "tokenizer_config.json")); err != nil {
		t.Errorf("tokenizer_config.json not carried over: %v", err)
	}
}

// TestRecipeSlicesMerge merges layers 0–1 of a with layers 2–3 of b (linear, a
// weight graded over the slice) and layer 3 of a with layer 0 of b in a second
// slice with its own weights, against a float64 reference of renumbered tensors.
func TestRecipeSlicesMerge(t *testing.T) {
	f := newFixture(t, dtype.F32)
	t.Chdir(f.dir)
	out := filepath.Join(f.dir, "sliced.safetensors")
	f.run(t, f.recipe(t, "sliced.yaml", `
merge_method: linear
parameters:
  weight: 1
slices:
  - sources:
      - model: a
        layer_range: [0, 2]
        parameters:
          weight: [1, 3]
      - model: b
        layer_range: [2, 4]
  - sources:
      - model: a
        layer_range: [3, 4]
      - model: b
        layer_range: [0, 1]
    parameters:
      weight: 0.5
`), Options{Out: out})
	a, b := f.values(t, "a"), f.values(t, "b")
	got, _ := readCkpt(t, out)
	if len(got) != 2+3*9+1 {
		t.Fatalf("%d tensors", len(got))
	}
	for name, x := range got {
		// Which input layers make output layer l, and their weights.
		inA, inB, wa, wb := name, name, 1.0, 1.0
		switch l := layerOf(name); {
		case l == 0 || l == 1:
			inA, inB = name, renumber(name, l+2)
			wa = 1 + 2*float64(l) // [1, 3] at t = l/1
		case l == 2:
			inA, inB = renumber(name, 3), renumber(name, 0)
			wa, wb = 0.5, 0.5
		case strings.HasPrefix(name, "model.embed"):
			wa = 1 // t = 0, first slice
		default: // norm and head: the last slice's parameters
			wa, wb = 0.5, 0.5
		}
		va, vb := a[inA], b[inB]
		if va == nil || vb == nil {
			t.Fatalf("%s: no inputs %s, %s", name, inA, inB)
		}
		ref, scale := make([]float64, len(va)), make([]float64, len(va))
		for j := range va {
			ref[j] = (wa*float64(va[j]) + wb*float64(vb[j])) / (wa + wb)
			scale[j] = (math.Abs(wa*float64(va[j])) + math.Abs(wb*float64(vb[j]))) / (wa + wb)
		}
		checkClose(t, name, x.float32s(t), ref, scale)
	}
}
