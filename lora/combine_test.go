package lora

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/loratest"
)

// combineFixture: a base and two adapters of ranks 3 and 2 on overlapping modules.
func combineFixture(t *testing.T) (dir, base string, ads []*Adapter) {
	dir = t.TempDir()
	base = filepath.Join(dir, "base.safetensors")
	shapes := loratest.LlamaLike(t, base, dtype.F32, 1)
	loratest.WriteAdapter(t, filepath.Join(dir, "a1"), shapes, loratest.AdapterSpec{R: 3, Alpha: 6, Modules: attnMods, DT: dtype.F32, Seed: 3})
	loratest.WriteAdapter(t, filepath.Join(dir, "a2"), shapes, loratest.AdapterSpec{R: 2, Alpha: 3, RSLoRA: true, Modules: attnMods[1:], DT: dtype.F32, Seed: 4})
	for _, n := range []string{"a1", "a2"} {
		a, err := Open(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		ads = append(ads, a)
	}
	return dir, base, ads
}

// deltas returns every adapted tensor's ΔW as applying ws to the adapters gives it.
func deltas(t *testing.T, base string, ads []*Adapter, ws []float64) map[string][]float64 {
	t.Helper()
	b, err := checkpoint.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var terms []Weighted
	for i, a := range ads {
		terms = append(terms, Weighted{a, ws[i]})
	}
	ap, err := NewApplied("x", b, terms)
	if err != nil {
		t.Fatal(err)
	}
	zero := map[string][]float64{}
	for _, m := range ap.Tensors() {
		if !ap.Adapted(m.Name) {
			continue
		}
		// ΔW = applied − base, both read as float32 from F32 data.
		got, _ := ap.DataAs(m.Name, dtype.F32)
		orig, _ := b.Data(m.Name)
		g, o := make([]float32, m.NumElements()), make([]float32, m.NumElements())
		dtype.Decode(g, got, dtype.F32)
		dtype.Decode(o, orig, dtype.F32)
		d := make([]float64, len(g))
		for i := range g {
			d[i] = float64(g[i]) - float64(o[i])
		}
		zero[m.Name] = d
	}
	return zero
}

func maxRelDiff(a, b []float64) float64 {
	var num, den float64
	for i := range a {
		num = max(num, math.Abs(a[i]-b[i]))
		den = max(den, math.Abs(b[i]))
	}
	return num / den
}

// TestCombineExact: cat, and svd at full rank, give exactly Σ wᵢsᵢBᵢAᵢ (to float32
// rounding); svd at a lower rank is the best approximation the report measures.
func TestCombineExact(t *testing.T) {
	dir, base, ads := combineFixture(t)
	ws := []float64{0.6, -1.3}
	want := deltas(t, base, ads, ws)
	for _, c := range []CombineOptions{{Type: "cat"}, {Type: "svd", SVDRank: 5}, {Type: "svd", SVDRank: 5, ExactBelow: 4}} {
		c.Weights = ws
		out := filepath.Join(dir, "m-"+c.Type)
		rep, err := Combine(context.Background(), ads, out, c)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Open(out)
		if err != nil {
			t.Fatal(err)
		}
		got := deltas(t, base, []*Adapter{m}, []float64{1})
		m.Close()
		if len(got) != len(want) {
			t.Fatalf("%s: %d modules, want %d", c.Type, len(got), len(want))
		}
		for name, w := range want {
			if d := maxRelDiff(got[name], w); d > 1e-5 {
				t.Errorf("%s (exact below %d): %s differs from Σ wsBA by %.3g", c.Type, c.ExactBelow, name, d)
			}
		}
		for _, mr := range rep.Modules {
			if mr.Rank != 5 && c.Type == "cat" && mr.Tensor != "model.layers.0.self_attn.q_proj" {
				t.Errorf("cat: %s rank %d, want 3+2", mr.Tensor, mr.Rank)
			}
		}
	}
	// Rank 3 of a rank-5 sum: the error is the report's, and not zero.
	rep, err := Combine(context.Background(), ads, filepath.Join(dir, "m3"), CombineOptions{Type: "svd", Weights: ws, SVDRank: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, mr := range rep.Modules {
		if mr.Rank != 3 || (mr.Tensor != "model.layers.0.self_attn.q_proj" && !(mr.RelError > 0 && mr.EnergyKept < 1)) {
			t.Errorf("svd rank 3: %+v", mr)
		}
	}
}

// TestCombineElementwise checks the *_svd types at full rank against plain
// references: with density 1 dare_linear_svd is svd and dare_ties_svd is ties_svd;
// TIES and magnitude pruning follow the per-element rules.
func TestCombineElementwise(t *testing.T) {
	dir, base, ads := combineFixture(t)
	ws := []float64{0.8, 0.5}
	read := func(o CombineOptions) map[string][]float64 {
		o.Weights, o.SVDRank = ws, 24
		out := filepath.Join(dir, "m")
		if _, err := Combine(context.Background(), ads, out, o); err != nil {
			t.Fatal(err)
		}
		m, err := Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		return deltas(t, base, []*Adapter{m}, []float64{1})
	}
	d1 := deltas(t, base, ads[:1], []float64{1})
	d2 := deltas(t, base, ads[1:], []float64{1})
	svd := read(CombineOptions{Type: "svd"})
	check := func(label string, got map[string][]float64, ref func(a, b float64, both bool) float64) {
		for name, g := range got {
			w := make([]float64, len(g))
			for i := range w {
				a := d1[name][i]
				b, both := 0.0, false
				if d2[name] != nil {
					b, both = d2[name][i], true
				}
				w[i] = ref(a, b, both)
			}
			if d := maxRelDiff(g, w); d > 1e-4 {
				t.Errorf("%s: %s differs from the reference by %.3g", label, name, d)
			}
		}
	}
	linear := func(a, b float64, _ bool) float64 { return ws[0]*a + ws[1]*b }
	check("svd", svd, linear)
	check("dare_linear_svd density 1", read(CombineOptions{Type: "dare_linear_svd", Density: 1}), linear)
	ties := func(a, b float64, both bool) float64 {
		m := a + b
		major := 1.0
		if m < 0 {
			major = -1
		}
		var s, n float64
		if sign(a) == major {
			s, n = s+ws[0]*a, n+1
		}
		if both && sign(b) == major {
			s, n = s+ws[1]*b, n+1
		}
		return s / max(n, 1)
	}
	check("ties_svd density 1", read(CombineOptions{Type: "ties_svd", Density: 1, MajoritySignMethod: "total"}), ties)
	check("dare_ties_svd density 1", read(CombineOptions{Type: "dare_ties_svd", Density: 1, MajoritySignMethod: "total"}), ties)
	// magnitude_prune at 0.5 keeps half of each delta's elements.
	mp := read(CombineOptions{Type: "magnitude_prune_svd", Density: 0.5})
	for name, g := range mp {
		if d2[name] != nil {
			continue
		}
		zeros := 0
		for _, v := range g {
			if math.Abs(v) < 1e-6 {
				zeros++
			}
		}
		if zeros != len(g)-len(g)/2 {
			t.Errorf("magnitude_prune_svd: %s has %d zeros of %d, want half", name, zeros, len(g))
		}
	}
	// dare at 0.5: about half the elements are dropped, the rest doubled.
	dl := read(CombineOptions{Type: "dare_linear_svd", Density: 0.5, Seed: 1})
	for name, g := range dl {
		if d2[name] != nil {
			continue
		}
		kept := 0
		for i, v := range g {
			if math.Abs(v) > 1e-6 {
				kept++
				if math.Abs(v-2*ws[0]*d1[name][i]) > 1e-4*math.Abs(v) {
					t.Fatalf("dare: %s[%d] = %v, want 2·w·%v", name, i, v, d1[name][i])
				}
			}
		}
		if kept < len(g)/3 || kept > 2*len(g)/3 {
			t.Errorf("dare 0.5: %s kept %d of %d", name, kept, len(g))
		}
	}
}

func TestCombineLinearAndErrors(t *testing.T) {
	dir, _, ads := combineFixture(t)
	// linear needs equal ranks: refused with the file named.
	_, err := Combine(context.Background(), ads, filepath.Join(dir, "lin"), CombineOptions{Type: "linear"})
	if !errors.Is(err, ErrBadInput) {
		t.Errorf("linear with ranks 3 and 2: %v, want ErrBadInput", err)
	}
	// linear of one adapter with itself at weights w, v: A = (√(ws)+√(vs))A.
	out := filepath.Join(dir, "lin1")
	if _, err := Combine(context.Background(), []*Adapter{ads[0], ads[0]}, out, CombineOptions{Type: "linear", Weights: []float64{0.25, 1}}); err != nil {
		t.Fatal(err)
	}
	m, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mod := m.Modules[0]
	a0, _ := ads[0].decode(ads[0].Modules[0].A)
	a1, _ := m.decode(mod.A)
	s := ads[0].Modules[0].Scale
	if f := (math.Sqrt(0.25*s) + math.Sqrt(s)); math.Abs(a1[5]-f*a0[5]) > 1e-5*math.Abs(a1[5]) || m.Config.LoraAlpha != 3 || mod.Scale != 1 {
		t.Errorf("linear: A[5] %v, want %v·%v; alpha %v", a1[5], f, a0[5], m.Config.LoraAlpha)
	}
	for _, o := range []CombineOptions{{Type: "nope"}, {Type: "ties_svd", Density: 0, MajoritySignMethod: "total"},
		{Type: "ties_svd", Density: 0.5, MajoritySignMethod: "sum"}, {Type: "svd", Weights: []float64{1}}, {Type: "svd", Weights: []float64{1, math.NaN()}}} {
		if err := o.Validate(2); err == nil {
			t.Errorf("%+v validated", o)
		}
	}
}
