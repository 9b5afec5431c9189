package stats

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/merge"
)

func write(t *testing.T, name string, ts []safetensorstest.Tensor) merge.Source {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := safetensorstest.WriteFile(p, ts, nil); err != nil {
		t.Fatal(err)
	}
	s, err := merge.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func compute(t *testing.T, base []safetensorstest.Tensor, models [][]safetensorstest.Tensor, threads int) *Report {
	t.Helper()
	var ms []merge.Source
	for i, m := range models {
		ms = append(ms, write(t, "m"+string(rune('0'+i))+".safetensors", m))
	}
	rep, err := Compute(context.Background(), write(t, "base.safetensors", base), ms, Options{Exec: merge.ExecOptions{Threads: threads}})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func f32(name string, v ...float32) safetensorstest.Tensor {
	return safetensorstest.FromFloat32(name, dtype.F32, []int64{int64(len(v))}, v)
}

func val(t *testing.T, what string, p *float64) float64 {
	t.Helper()
	if p == nil {
		t.Fatalf("%s is null", what)
	}
	return *p
}

func near(t *testing.T, what string, got *float64, want, tol float64) {
	t.Helper()
	g := val(t, what, got)
	if math.Abs(g-want) > tol*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.12g, want %.12g (tolerance %g)", what, g, want, tol)
	}
}

// TestHandWorked checks every statistic on a tensor small enough to work by hand.
//
//	base = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
//	A    = base + [4, -2, 1, 0, 0.5, 0, 0, 0, 0, -1]   τA² sums to 16+4+1+0.25+1 = 22.25
//	B    = base + [2, 2, -1, 0, 0, 0, 0, 0, 3, -1]      τB² sums to 4+4+1+9+1 = 19
//
// cosine = (4·2 − 2·2 − 1·1 + (−1)(−1)) / √(22.25·19) = 4/√422.75;
// both non-zero at elements 0, 1, 2, 9, opposite signs at 1 and 2: conflict 2/4;
// density 0.1 keeps k = 1: A's 4 (16/22.25), B's 3 (9/19), masks {0} and {8}: overlap 0;
// density 0.2, k = 2: A {0, 1} (20/22.25), B {8, then 0: |2| ties go to the lower
// index}: B keeps 9 + 4 = 13/19; overlap {0}: 1/2;
// density 0.5, k = 5: A keeps all its non-zero mass (22.25/22.25: 5 non-zero), B too.
func TestHandWorked(t *testing.T) {
	ones := make([]float32, 10)
	for i := range ones {
		ones[i] = 1
	}
	add := func(d ...float32) []float32 {
		out := make([]float32, 10)
		for i := range out {
			out[i] = 1 + d[i]
		}
		return out
	}
	name := "model.layers.3.self_attn.q_proj.weight"
	base := []safetensorstest.Tensor{f32(name, ones...)}
	a := []safetensorstest.Tensor{f32(name, add(4, -2, 1, 0, 0.5, 0, 0, 0, 0, -1)...)}
	b := []safetensorstest.Tensor{f32(name, add(2, 2, -1, 0, 0, 0, 0, 0, 3, -1)...)}
	rep := compute(t, base, [][]safetensorstest.Tensor{a, b}, 2)
	if len(rep.Groups) != 1 || rep.Groups[0].Layer != 3 || rep.Groups[0].Kind != KindAttention {
		t.Fatalf("groups %+v, want one: layer 3, attention", rep.Groups)
	}
	g := rep.Total
	near(t, "base norm", g.BaseNorm, math.Sqrt(10), 1e-15)
	near(t, "norm A", g.Models[0].Norm, math.Sqrt(22.25), 1e-15)
	near(t, "relative B", g.Models[1].Relative, math.Sqrt(19)/math.Sqrt(10), 1e-15)
	near(t, "cosine", g.Pairs[0].Cosine, 4/(math.Sqrt(22.25)*math.Sqrt(19)), 1e-15)
	near(t, "sign conflict", g.Pairs[0].SignConflict, 0.5, 0)
	wantKept := [][]float64{{16 / 22.25, 20 / 22.25, 1}, {9.0 / 19, 13.0 / 19, 1}}
	for m, want := range wantKept {
		for d, w := range want {
			near(t, "kept", g.Models[m].Kept[d], w, 1e-15)
		}
	}
	for d, w := range []float64{0, 0.5, 0.8} {
		// d = 0.5: A's top 5 = its 5 non-zeros {0,1,2,4,9}; B's = {0,1,2,8,9}: 4 shared.
		near(t, "overlap", g.Pairs[0].Overlap[d], w, 1e-15)
	}
}

// reference computes a tensor's statistics in float64 with a full sort, for the top k
// exactly (ties broken by index, as TIES does): the oracle for the histogram method.
type reference struct {
	sq       []float64
	kept     [][]float64 // exact fraction
	dot      float64
	conflict float64
	both     float64
	overlap  []float64
	baseSq   float64
}

func referenceStats(base []float32, models [][]float32, dens []float64) reference {
	var r reference
	taus := make([][]float64, len(models))
	for i, m := range models {
		taus[i] = make([]float64, len(base))
		var sq float64
		for j := range base {
			taus[i][j] = float64(m[j] - base[j])
			sq += taus[i][j] * taus[i][j]
		}
		r.sq = append(r.sq, sq)
	}
	for _, v := range base {
		r.baseSq += float64(v) * float64(v)
	}
	for j := range base {
		x, y := taus[0][j], taus[1][j]
		r.dot += x * y
		if x != 0 && y != 0 {
			r.both++
			if (x < 0) != (y < 0) {
				r.conflict++
			}
		}
	}
	order := func(tau []float64) []int {
		idx := make([]int, len(tau))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			switch {
			case math.Abs(tau[a]) > math.Abs(tau[b]):
				return -1
			case math.Abs(tau[a]) < math.Abs(tau[b]):
				return 1
			}
			return 0
		})
		return idx
	}
	orders := [][]int{order(taus[0]), order(taus[1])}
	for i, tau := range taus {
		var kept []float64
		for _, d := range dens {
			var s float64
			for _, j := range orders[i][:merge.TopK(d, int64(len(tau)))] {
				s += tau[j] * tau[j]
			}
			kept = append(kept, s/r.sq[i])
		}
		r.kept = append(r.kept, kept)
	}
	for _, d := range dens {
		k := merge.TopK(d, int64(len(base)))
		in := make([]bool, len(base))
		for _, j := range orders[0][:k] {
			in[j] = true
		}
		var both float64
		for _, j := range orders[1][:k] {
			if in[j] {
				both++
			}
		}
		r.overlap = append(r.overlap, both/float64(k))
	}
	return r
}

// TestAgainstReference compares each tensor of generated llama-shaped fixtures (BF16,
// so magnitudes have ties) with the float64 sort-based reference, and checks that the
// thread count changes no bit.
func TestAgainstReference(t *testing.T) {
	cfg := safetensorstest.TinyLlama
	base := safetensorstest.Random(cfg, dtype.BF16, 1)
	a := safetensorstest.Perturb(base, 0.01, 2)
	b := safetensorstest.Perturb(base, 0.01, 3)
	rep := compute(t, base, [][]safetensorstest.Tensor{a, b}, 1)
	rep4 := compute(t, base, [][]safetensorstest.Tensor{a, b}, 4)
	j1, _ := json.Marshal(rep)
	j4, _ := json.Marshal(rep4)
	if string(j1) != string(j4) {
		t.Errorf("1 thread and 4 threads differ:\n%s\n%s", j1, j4)
	}
	if len(rep.Tensors) != len(base) {
		t.Fatalf("%d tensors, want %d", len(rep.Tensors), len(base))
	}
	kinds := map[string]bool{}
	index := map[string]int{}
	for i, ts := range base {
		index[ts.Name] = i
	}
	for _, ts := range rep.Tensors {
		kinds[ts.Kind] = true
		i := index[ts.Name]
		r := referenceStats(base[i].Float32(), [][]float32{a[i].Float32(), b[i].Float32()}, rep.Densities)
		near(t, ts.Name+" base norm", ts.BaseNorm, math.Sqrt(r.baseSq), 1e-12)
		if r.sq[0] == 0 || r.sq[1] == 0 { // a tensor the fine-tunes left alone
			if ts.Models[0].Kept[0] != nil && r.sq[0] == 0 || ts.Pairs[0].Cosine != nil {
				t.Errorf("%s: kept %v, cosine %v of a zero task vector, want null", ts.Name, ts.Models[0].Kept[0], ts.Pairs[0].Cosine)
			}
			continue
		}
		for m := range 2 {
			near(t, ts.Name+" norm", ts.Models[m].Norm, math.Sqrt(r.sq[m]), 1e-12)
			for d := range rep.Densities {
				near(t, ts.Name+" kept", ts.Models[m].Kept[d], r.kept[m][d], 1e-12)
			}
		}
		near(t, ts.Name+" cosine", ts.Pairs[0].Cosine, r.dot/math.Sqrt(r.sq[0]*r.sq[1]), 1e-12)
		near(t, ts.Name+" conflict", ts.Pairs[0].SignConflict, r.conflict/r.both, 0)
		for d := range rep.Densities {
			near(t, ts.Name+" overlap", ts.Pairs[0].Overlap[d], r.overlap[d], 1e-15)
		}
	}
	for _, k := range []string{KindEmbedding, KindAttention, KindMLP, KindNorm} {
		if !kinds[k] {
			t.Errorf("no tensor classified %s", k)
		}
	}
}

// TestSampledOverlap checks the sampled overlap and kept mass of a tensor above
// exactKeys against the exact ones: models whose task vectors share their large
// elements by design.
func TestSampledOverlap(t *testing.T) {
	n := exactKeys + 3*merge.ChunkElems + 123
	base := make([]float32, n)
	ta, tb := make([]float32, n), make([]float32, n)
	// τa = hash-driven magnitudes; τb equals τa on the first 3/4 of the elements
	// and is independent on the rest.
	rnd := func(i, seed int) float32 {
		x := uint32(i)*0x9E3779B1 + uint32(seed)*0x85EBCA77
		x ^= x >> 16
		x *= 0x7FEB352D
		x ^= x >> 15
		return float32(x>>8)/float32(1<<24) - 0.5
	}
	for i := range n {
		ta[i] = rnd(i, 1)
		if i < n*3/4 {
			tb[i] = ta[i]
		} else {
			tb[i] = rnd(i, 2)
		}
	}
	name := "model.layers.0.mlp.up_proj.weight"
	rep := compute(t, []safetensorstest.Tensor{f32(name, base...)},
		[][]safetensorstest.Tensor{{f32(name, ta...)}, {f32(name, tb...)}}, 2)
	if !rep.Total.OverlapSampled {
		t.Fatalf("a tensor of %d elements was not sampled", n)
	}
	r := referenceStats(base, [][]float32{ta, tb}, rep.Densities)
	for d := range rep.Densities {
		// 1/16 of 1.3M elements: the standard error at k/n = 0.1 is about 0.004.
		near(t, "sampled overlap", rep.Total.Pairs[0].Overlap[d], r.overlap[d], 0.02)
		for m := range 2 {
			near(t, "sampled kept", rep.Total.Models[m].Kept[d], r.kept[m][d], 0.02)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		name  string
		layer int
		kind  string
	}{
		{"model.embed_tokens.weight", -1, KindEmbedding},
		{"lm_head.weight", -1, KindEmbedding},
		{"model.norm.weight", -1, KindNorm},
		{"model.layers.12.self_attn.o_proj.weight", 12, KindAttention},
		{"model.layers.0.post_attention_layernorm.weight", 0, KindNorm},
		{"model.layers.7.mlp.gate_proj.weight", 7, KindMLP},
		{"token_embd.weight", -1, KindEmbedding},
		{"output.weight", -1, KindEmbedding},
		{"output_norm.weight", -1, KindNorm},
		{"blk.4.attn_k.weight", 4, KindAttention},
		{"blk.4.attn_norm.weight", 4, KindNorm},
		{"blk.21.ffn_down.weight", 21, KindMLP},
		{"transformer.h.2.attn.c_attn.weight", 2, KindAttention},
		{"rope.freqs", -1, KindOther},
	} {
		l, k := Classify(c.name)
		if l != c.layer || k != c.kind {
			t.Errorf("Classify(%q) = %d, %q; want %d, %q", c.name, l, k, c.layer, c.kind)
		}
	}
}

func weight(c cut, mag uint32) float64 { return [3]float64{0, c.frac, 1}[c.class(uint16(mag>>16))] }

func TestFindCutEdges(t *testing.T) {
	h := make([]uint64, histBins)
	h[magKey(2)] = 3
	h[magKey(1)] = 1
	two, one := magBits(2), magBits(1)
	if c, f := findCut(h, 0, 4); weight(c, two) != 0 || f != 0 {
		t.Errorf("k = 0: weight %v, fraction %v", weight(c, two), f)
	}
	if c, f := findCut(h, 4, 4); weight(c, 0) != 1 || f != 1 {
		t.Errorf("k = n: weight %v, fraction %v", weight(c, 0), f)
	}
	// k = 2 of three 2s and a 1: two thirds of the 2s' bin, mass 8 of 13.
	c, f := findCut(h, 2, 4)
	if weight(c, two) != 2.0/3 || weight(c, one) != 0 || f != 8.0/13 {
		t.Errorf("k = 2: weights %v %v, fraction %v", weight(c, two), weight(c, one), f)
	}
	// The exact mask: the same histogram, ties to the lower index.
	lows := make([]uint32, 1<<16)
	mask, kept := topMask(nil, h, []uint32{two, one, two, two}, 2, lows)
	if !slices.Equal(mask, []bool{true, false, true, false}) || kept != 8 {
		t.Errorf("topMask = %v, kept %v; want [true false true false], 8", mask, kept)
	}
	if slices.ContainsFunc(lows, func(v uint32) bool { return v != 0 }) {
		t.Error("topMask left its scratch dirty")
	}
}

func TestBadDensity(t *testing.T) {
	base := []safetensorstest.Tensor{f32("w", 1, 2)}
	for _, d := range []float64{0, -0.1, 1.5, math.NaN()} {
		_, err := Compute(context.Background(), write(t, "b.safetensors", base), []merge.Source{write(t, "m.safetensors", base)}, Options{Densities: []float64{d}})
		if err == nil {
			t.Errorf("density %v accepted", d)
		}
	}
}

// benchInputs is a chunk of a base and two models.
func benchInputs() [][]float32 {
	in := make([][]float32, 3)
	for i := range in {
		in[i] = make([]float32, merge.ChunkElems)
		for j := range in[i] {
			x := uint32(j)*0x9E3779B1 + uint32(i)*0x85EBCA77
			x ^= x >> 15
			in[i][j] = float32(x>>8)/float32(1<<24) - 0.5
		}
	}
	return in
}

// BenchmarkChunkSums is the per-chunk sums of two models against a base, fused and
// as separate passes (the oracle; what the report did before).
func BenchmarkChunkSums(b *testing.B) {
	in := benchInputs()
	for _, c := range []struct {
		name string
		f    func([]float64, [][]float32, int)
	}{{"fused", chunkSums}, {"passes", chunkSumsPasses}} {
		b.Run(c.name, func(b *testing.B) {
			acc := make([]float64, 1+2+3)
			b.SetBytes(3 * 2 * merge.ChunkElems) // as BF16 inputs
			b.ReportAllocs()
			for b.Loop() {
				c.f(acc, in, 2)
			}
			if acc[1] == 0 {
				b.Fatal("no sums")
			}
		})
	}
}

// BenchmarkKeep is the per-chunk top-k bookkeeping of two models against a base, for
// a large tensor (a sample and its histogram) and a small one (every element).
func BenchmarkKeep(b *testing.B) {
	in := benchInputs()
	for _, n := range []int64{exactKeys + merge.ChunkElems, merge.ChunkElems} {
		name := map[bool]string{true: "sampled", false: "exact"}[n > exactKeys]
		b.Run(name, func(b *testing.B) {
			st := newTensorState(n, 2, DefaultDensities, newScratchPool(2))
			st.alloc()
			sc := st.pool.Get().(*chunkScratch)
			b.SetBytes(3 * 2 * merge.ChunkElems)
			b.ReportAllocs()
			for b.Loop() {
				for off := 0; off < merge.ChunkElems; off += block {
					st.keep(in, merge.Chunk{}, sc, off, off+block)
				}
				for _, h := range sc.hist {
					clear(h)
				}
			}
		})
	}
}
