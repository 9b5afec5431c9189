package recipe

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
)

// A recipe reads compressed folders like the folders they were made from, slices
// (views over several models) included: the merged tensors are the same.
func TestRecipeCompressedInputs(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	for _, n := range []string{"a", "b"} {
		if _, err := checkpoint.CompressFolder(context.Background(), f.path(n), f.path(n+"gz"), checkpoint.CompressOptions{FrameSize: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	const text = `
merge_method: linear
parameters:
  weight: 1
slices:
  - sources:
      - model: A
        layer_range: [0, 2]
        parameters:
          weight: [1, 3]
      - model: B
        layer_range: [2, 4]
  - sources:
      - model: A
        layer_range: [3, 4]
      - model: B
        layer_range: [0, 1]
    parameters:
      weight: 0.5
`
	outs := map[string]string{}
	for _, suffix := range []string{"", "gz"} {
		r := strings.NewReplacer("model: A", "model: a"+suffix, "model: B", "model: b"+suffix).Replace(text)
		out := filepath.Join(f.dir, "sliced"+suffix+".safetensors")
		f.run(t, f.recipe(t, "sliced"+suffix+".yaml", r), Options{Out: out})
		outs[suffix] = out
	}
	want, _ := readCkpt(t, outs[""])
	got, _ := readCkpt(t, outs["gz"])
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("%d tensors from compressed inputs, %d from folders", len(got), len(want))
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || !bytes.Equal(g.data, w.data) {
			t.Errorf("tensor %q differs between the merges from compressed folders and from folders", name)
		}
	}
}
