package lora

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
)

// TestGGUFAdapterRoundTrip: an adapter extracted from GGUF models is written as a
// GGUF adapter with llama.cpp's keys and names, reads back with llama.cpp's scale
// (alpha/r), and applied to the GGUF base gives what applying the same factors as a
// PEFT folder gives.
func TestGGUFAdapterRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	base := gguftest.Random(gguftest.Tiny, dtype.F32, 1)
	if err := gguftest.WriteFile(p("base.gguf"), gguftest.Metadata(gguftest.Tiny, "base"), base); err != nil {
		t.Fatal(err)
	}
	if err := gguftest.WriteFile(p("tuned.gguf"), gguftest.Metadata(gguftest.Tiny, "tuned"), gguftest.Perturb(base, 0.5, 2)); err != nil {
		t.Fatal(err)
	}
	bs, _ := checkpoint.Open(p("base.gguf"))
	ms, _ := checkpoint.Open(p("tuned.gguf"))
	defer bs.Close()
	defer ms.Close()
	// sv-epsilon gives modules different ranks, so alpha folding is exercised.
	for _, out := range []string{"ad.gguf", "ad"} {
		if _, err := Extract(context.Background(), bs, ms, p(out), ExtractOptions{Rank: 4, SVEpsilon: 0}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := gguf.Open(p("ad.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"general.type": "adapter", "adapter.type": "lora", "general.architecture": "llama"} {
		v, _ := f.Lookup(k)
		if s, _ := v.AsString(); s != want {
			t.Errorf("%s = %q, want %q", k, s, want)
		}
	}
	if _, ok := f.Tensor("blk.0.attn_q.weight.lora_a"); !ok {
		t.Error("no blk.0.attn_q.weight.lora_a")
	}
	f.Close()
	ga, err := Open(p("ad.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer ga.Close()
	pa, err := Open(p("ad"))
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	if len(ga.Modules) != len(pa.Modules) || len(ga.Modules) == 0 || ga.Arch != "llama" {
		t.Fatalf("%d GGUF modules, %d PEFT", len(ga.Modules), len(pa.Modules))
	}
	ag, _ := NewApplied("g", bs, []Weighted{{ga, 0.7}})
	ap, _ := NewApplied("p", bs, []Weighted{{pa, 0.7}})
	for _, m := range ga.Modules {
		name := m.Name + ".weight"
		x, err := ag.DataAs(name, dtype.F32)
		if err != nil {
			t.Fatal(err)
		}
		y, _ := ap.DataAs(name, dtype.F32)
		fx, fy := make([]float32, len(x)/4), make([]float32, len(y)/4)
		dtype.Decode(fx, x, dtype.F32)
		dtype.Decode(fy, y, dtype.F32)
		for i := range fx {
			if math.Abs(float64(fx[i]-fy[i])) > 1e-6*(1+math.Abs(float64(fy[i]))) {
				t.Fatalf("%s[%d]: GGUF adapter %v, PEFT %v", name, i, fx[i], fy[i])
			}
		}
	}
	// A GGUF model is not an adapter.
	if _, err := Open(p("base.gguf")); !errors.Is(err, ErrBadInput) {
		t.Errorf("a model opened as an adapter: %v", err)
	}
}
