package recipe

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/merge"
)

// tiny4 is a llama with four layers, enough to slice.
var tiny4 = stt.LlamaConfig{Vocab: 32, Hidden: 16, Intermediate: 24, Layers: 4, KVHidden: 8}

// fixture is a folder of generated models: base, and a, b, c fine-tuned from it,
// each a Hugging Face folder, with a Fisher file for a and b.
type fixture struct {
	dir string
	ts  map[string][]stt.Tensor
}

func newFixture(t testing.TB, dt dtype.DType) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), ts: map[string][]stt.Tensor{}}
	base := stt.Random(tiny4, dt, 1)
	f.ts["base"] = base
	for i, name := range []string{"a", "b", "c"} {
		f.ts[name] = stt.Perturb(base, 0.5, uint64(10+i))
	}
	for name, ts := range f.ts {
		if err := stt.WriteFolder(f.path(name), ts, 1, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range []string{"a", "b"} {
		if err := stt.WriteFile(f.path("fisher_"+name+".safetensors"), stt.Fisher(f.ts[name], 1e-3, uint64(20+i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fixture) path(name string) string { return filepath.Join(f.dir, name) }

// write writes a recipe into the fixture's folder and parses it.
func (f *fixture) recipe(t testing.TB, name, text string) *Recipe {
	t.Helper()
	path := f.path(name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Load(path)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return r
}

func (f *fixture) run(t testing.TB, r *Recipe, opts Options) []StepReport {
	t.Helper()
	reps, err := Run(context.Background(), r, opts, merge.Job{Version: "test", Exec: merge.ExecOptions{Threads: 2}})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return reps
}

// tensor is one tensor of a checkpoint as written.
type tensor struct {
	dtype dtype.DType
	shape []int64
	data  []byte
}

func (x tensor) float32s(t testing.TB) []float32 {
	v := make([]float32, len(x.data)/x.dtype.Size())
	if err := dtype.Decode(v, x.data, x.dtype); err != nil {
		t.Fatal(err)
	}
	return v
}

// readCkpt returns a checkpoint's tensors and their order.
func readCkpt(t testing.TB, path string) (map[string]tensor, []string) {
	t.Helper()
	c, err := safetensors.OpenCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := map[string]tensor{}
	var order []string
	for _, ti := range c.Tensors() {
		b, err := c.Bytes(ti)
		if err != nil {
			t.Fatal(err)
		}
		out[ti.Name] = tensor{dtype: ti.DType, shape: ti.Shape, data: bytes.Clone(b)}
		order = append(order, ti.Name)
	}
	return out, order
}

// sameTensors fails unless two checkpoints hold the same tensors, byte for byte.
func sameTensors(t testing.TB, got, want string) {
	t.Helper()
	g, gorder := readCkpt(t, got)
	w, worder := readCkpt(t, want)
	if len(gorder) != len(worder) {
		t.Fatalf("%s has %d tensors, %s %d", got, len(gorder), want, len(worder))
	}
	for i, name := range worder {
		if gorder[i] != name {
			t.Fatalf("tensor %d: %s vs %s", i, gorder[i], name)
		}
		if g[name].dtype != w[name].dtype || !bytes.Equal(g[name].data, w[name].data) {
			t.Fatalf("tensor %s differs (%s vs %s)", name, g[name].dtype, w[name].dtype)
		}
	}
}
