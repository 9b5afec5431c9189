package merge

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// ckpt is an in-memory checkpoint for method tests: tensor name → values, with shapes.
type ckpt struct {
	names  []string
	shapes map[string][]int64
	vals   map[string][]float32
}

// methodShapes cover 1-D, odd sizes and a tensor of several chunks, so that rank
// cuts fall inside chunks and across chunk boundaries.
var methodShapes = map[string][]int64{
	"norm.weight": {7},
	"odd.weight":  {13, 5},
	"big.weight":  {3, ChunkElems + 1001},
	"one.weight":  {1},
}

func randomCkpt(rng *rand.Rand, dt dtype.DType, like *ckpt, scale float64) *ckpt {
	return randomCkptOf(rng, dt, methodShapes, []string{"norm.weight", "odd.weight", "big.weight", "one.weight"}, like, scale)
}

// randomCkptOf draws a checkpoint of the named tensors of shapes, in names' order:
// scale·N(0, 1) per element, plus like's value when like is not nil, rounded to dt.
func randomCkptOf(rng *rand.Rand, dt dtype.DType, shapes map[string][]int64, names []string, like *ckpt, scale float64) *ckpt {
	c := &ckpt{shapes: shapes, vals: map[string][]float32{}}
	for _, name := range names {
		c.names = append(c.names, name)
		v := make([]float32, numElements(shapes[name]))
		for j := range v {
			x := scale * rng.NormFloat64()
			if like != nil {
				x += float64(like.vals[name][j])
			}
			v[j] = roundTo(float32(x), dt)
		}
		c.vals[name] = v
	}
	return c
}

func (c *ckpt) write(t testing.TB, path string, dt dtype.DType) {
	t.Helper()
	var ts []stt.Tensor
	for _, n := range c.names {
		ts = append(ts, stt.FromFloat32(n, dt, c.shapes[n], c.vals[n]))
	}
	must(t, stt.WriteFile(path, ts, nil))
}

// runMethodFiles writes base (may be nil) and models, runs the method, and returns
// the output decoded.
func runMethodFiles(t testing.TB, dt dtype.DType, method string, p Params, base *ckpt, models []*ckpt, weights, dens []float64, threads int) map[string][]float32 {
	t.Helper()
	dir := t.TempDir()
	job := MethodJob{Method: method, Params: p, Job: Job{Out: filepath.Join(dir, "out.safetensors"), Exec: ExecOptions{Threads: threads}}}
	if base != nil {
		job.Base = filepath.Join(dir, "base.safetensors")
		base.write(t, job.Base, dt)
	}
	for i, m := range models {
		path := filepath.Join(dir, fmt.Sprintf("m%d.safetensors", i))
		m.write(t, path, dt)
		mm := Model{Path: path, Weight: 1, Density: math.NaN()}
		if weights != nil {
			mm.Weight = weights[i]
		}
		if dens != nil {
			mm.Density = dens[i]
		}
		job.Models = append(job.Models, mm)
	}
	if _, err := RunMethod(context.Background(), job); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return readAll(t, job.Job.Out)
}

// refRanks returns, for values' magnitudes, which indices rank in [lo, hi) when
// ordered by magnitude descending, equal magnitudes by index ascending: a sort, as an
// independent check of the histogram selection.
func refRanks(mag []float32, lo, hi int64) []bool {
	idx := make([]int, len(mag))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Or(cmp.Compare(mag[b], mag[a]), cmp.Compare(a, b)) })
	keep := make([]bool, len(mag))
	for r := max(lo, 0); r < min(hi, int64(len(mag))); r++ {
		keep[idx[r]] = true
	}
	return keep
}

func deltas32(x, b []float32) []float32 {
	d := make([]float32, len(x))
	for j := range x {
		d[j] = x[j] - b[j]
	}
	return d
}

func abs32(v []float32) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(math.Abs(float64(x)))
	}
	return out
}

// checkClose compares got with a float64 reference: the difference must be within
// 2⁻⁸ (BF16) or 2⁻²⁰ (F32) of the magnitude scale of the element's terms.
func checkClose(t *testing.T, what string, got []float32, ref, scale []float64, dt dtype.DType) {
	t.Helper()
	rel := math.Ldexp(1, -20)
	if dt == dtype.BF16 {
		rel = math.Ldexp(1, -7)
	}
	for j := range got {
		tol := rel*(math.Abs(ref[j])+scale[j]) + 1e-30
		if d := math.Abs(float64(got[j]) - ref[j]); !(d <= tol) {
			t.Fatalf("%s[%d]: got %v, want %v (tolerance %g)", what, j, got[j], ref[j], tol)
		}
	}
}

// TestRankSelectorAgainstSort: the cuts found by histograms equal a stable sort's,
// on magnitudes with many ties, for ranks including 0, 1, n−1 and n.
func TestRankSelectorAgainstSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int64{1, 7, ChunkElems - 1, 3*ChunkElems + 17} {
		for _, distinct := range []int{1, 3, 1000, 1 << 30} {
			mag := make([]float32, n)
			for j := range mag {
				mag[j] = float32(rng.IntN(distinct)) * 0.125
			}
			ranks := []int64{0, 1, n / 3, n / 2, n - 1, n}
			var want [][]bool
			var lanes [][]int64
			for _, r := range ranks {
				lanes = append(lanes, []int64{r})
				want = append(want, refRanks(mag, 0, r))
			}
			for _, keepLimit := range []int64{maxKeptLows, 0} { // pass 3 spared, and run
				sel := newRankSelector(n, lanes, func(dst []uint32, _ int, in [][]float32) {
					for j := range dst {
						dst[j] = absBits(in[0][j])
					}
				}, nil)
				sel.keepLimit = keepLimit
				passes := sel.passes()
				nChunks := (n + ChunkElems - 1) / ChunkElems
				chunk := func(c int64) (Chunk, [][]float32) {
					lo := c * ChunkElems
					return Chunk{Index: c, Offset: lo}, [][]float32{mag[lo:min(lo+ChunkElems, n)]}
				}
				for _, p := range passes {
					if p.Skip != nil && p.Skip() {
						continue
					}
					for c := nChunks - 1; c >= 0; c-- { // out of order, as a scheduler may
						pos, in := chunk(c)
						p.Chunk(pos, in, nil, nil)
					}
					must(t, p.Done(nil))
				}
				for li, r := range ranks {
					for c := int64(0); c < nChunks; c++ {
						pos, in := chunk(c)
						mags := make([]uint32, len(in[0]))
						for j := range mags {
							mags[j] = absBits(in[0][j])
						}
						keep := make([]bool, len(mags))
						sel.cuts[li][0].above(keep, mags, pos)
						for j, k := range keep {
							if k != want[li][pos.Offset+int64(j)] {
								t.Fatalf("n=%d distinct=%d rank=%d: element %d: got %v", n, distinct, r, pos.Offset+int64(j), k)
							}
						}
					}
				}
			}
		}
	}
}

func methodFixture(seed uint64, dt dtype.DType, nModels int) (*ckpt, []*ckpt) {
	rng := rand.New(rand.NewPCG(seed, 3))
	base := randomCkpt(rng, dt, nil, 0.05)
	var models []*ckpt
	for range nModels {
		models = append(models, randomCkpt(rng, dt, base, 0.01))
	}
	return base, models
}

// TestMethodsAgainstReference runs every method on random checkpoints (BF16 and F32,
// several weights including negative ones, several densities including 1 and near 0)
// and compares with float64 references computed here.
func TestMethodsAgainstReference(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		base, models := methodFixture(5, dt, 3)
		weights := []float64{0.7, -0.2, 1.3}
		t.Run(dt.String()+"/linear", func(t *testing.T) {
			for _, norm := range []Switch{SwitchOn, SwitchOff} {
				got := runMethodFiles(t, dt, "linear", Params{Normalize: norm}, nil, models, weights, nil, 2)
				for _, name := range referenceNames(base) {
					ref, scale := linearRef(vals(models, name), weights, norm != SwitchOff)
					checkClose(t, name, got[name], ref, scale, dt)
				}
			}
		})
		t.Run(dt.String()+"/task_arithmetic", func(t *testing.T) {
			got := runMethodFiles(t, dt, "task_arithmetic", Params{Lambda: 0.8}, base, models, weights, nil, 2)
			for _, name := range referenceNames(base) {
				ref, scale := taskVectorsRef(tvOptions{rescale: "none"}, base.vals[name], vals(models, name), weights, nil, 0, 0.8, nil)
				checkClose(t, name, got[name], ref, scale, dt)
			}
		})
		for _, density := range []float64{1, 0.5, 0.2, 1e-4} {
			dens := []float64{density, math.NaN(), 0.3} // model 2 overrides
			t.Run(fmt.Sprintf("%s/ties/density=%g", dt, density), func(t *testing.T) {
				got := runMethodFiles(t, dt, "ties", Params{Density: density, Lambda: 1.1}, base, models, weights, dens, 2)
				for _, name := range referenceNames(base) {
					ref, scale := taskVectorsRef(tvOptions{sparsify: SparsifyMagnitude, consensus: ConsensusSign, normalize: true, rescale: "none"},
						base.vals[name], vals(models, name), weights, []float64{density, density, 0.3}, 0, 1.1, nil)
					checkClose(t, name, got[name], ref, scale, dt)
				}
			})
			t.Run(fmt.Sprintf("%s/breadcrumbs/density=%g", dt, density), func(t *testing.T) {
				for _, withTies := range []bool{false, true} {
					method := "breadcrumbs"
					if withTies {
						method = "breadcrumbs_ties"
					}
					got := runMethodFiles(t, dt, method, Params{Density: density, Lambda: 0.9, Gamma: 0.05}, base, models, weights, dens, 2)
					for _, name := range referenceNames(base) {
						o := tvOptions{sparsify: SparsifyOutliers, consensus: Consensus(b2i(withTies)), rescale: "none"}
						ref, scale := taskVectorsRef(o, base.vals[name], vals(models, name), weights, []float64{density, density, 0.3}, 0.05, 0.9, nil)
						checkClose(t, method+" "+name, got[name], ref, scale, dt)
					}
				}
			})
		}
		t.Run(dt.String()+"/slerp", func(t *testing.T) {
			for _, tt := range []float64{0, 0.3, 1} {
				got := runMethodFiles(t, dt, "slerp", Params{T: tt}, base, models[:1], nil, nil, 2)
				for _, name := range referenceNames(base) {
					v0 := base.vals[name]
					ref, scale := slerpRef(v0, models[0].vals[name], tt)
					checkClose(t, fmt.Sprintf("t=%g %s", tt, name), got[name], ref, scale, dt)
					if tt == 0 && !slicesEqualBits(got[name], v0) {
						t.Errorf("t=0: %s is not the base", name)
					}
				}
			}
		})
		t.Run(dt.String()+"/model_stock", func(t *testing.T) {
			got := runMethodFiles(t, dt, "model_stock", Params{}, base, models, nil, nil, 2)
			for _, name := range referenceNames(base) {
				ref, scale := modelStockRef(base.vals[name], vals(models, name))
				checkClose(t, name, got[name], ref, scale, dt)
			}
		})
	}
}

// referenceNames is the tensors of c that a test compares with its float64
// reference: all of them, except under the race detector and with -short (CI's
// arm64 run, emulated), where only those within one chunk are compared. The
// references are loops on one goroutine with nothing to race, and instrumented or
// emulated, the multi-chunk tensors' took most of the package's minutes. The merges
// still run every tensor there; CI's plain `go test ./merge` compares them all, and
// TestEveryMethodByteIdentical's digests hold the arm64 outputs, multi-chunk tensors
// included, to the bytes amd64 writes.
func referenceNames(c *ckpt) []string {
	if !raceBuild && !testing.Short() {
		return c.names
	}
	var small []string
	for _, name := range c.names {
		if numElements(c.shapes[name]) <= ChunkElems {
			small = append(small, name)
		}
	}
	return small
}

// vals is one tensor of every checkpoint.
func vals(cs []*ckpt, name string) [][]float32 {
	out := make([][]float32, len(cs))
	for i, c := range cs {
		out[i] = c.vals[name]
	}
	return out
}

// TestMethodsHandWorked pins each method on numbers worked out by hand.
func TestMethodsHandWorked(t *testing.T) {
	one := func(vals ...float32) *ckpt {
		return &ckpt{names: []string{"w"}, shapes: map[string][]int64{"w": {int64(len(vals))}}, vals: map[string][]float32{"w": vals}}
	}
	check := func(what string, got, want []float32) {
		t.Helper()
		for j := range want {
			if math.Abs(float64(got[j]-want[j])) > 1e-6 {
				t.Errorf("%s: got %v, want %v", what, got, want)
				return
			}
		}
	}
	// linear: (1·1 + 3·3)/4 = 2.5, (1·2 + 3·6)/4 = 5
	check("linear", runMethodFiles(t, dtype.F32, "linear", Params{}, nil, []*ckpt{one(1, 2), one(3, 6)}, []float64{1, 3}, nil, 1)["w"], []float32{2.5, 5})
	// task arithmetic: 1 + 0.5·((3−1) + 2·(0−1)) = 1
	check("task_arithmetic", runMethodFiles(t, dtype.F32, "task_arithmetic", Params{Lambda: 0.5}, one(1), []*ckpt{one(3), one(0)}, []float64{1, 2}, nil, 1)["w"], []float32{1})
	// TIES, density 0.5 (k = 2): model 1 keeps −2 and 3; model 2's magnitudes all tie
	// at 1, so its two lowest indices stay: (−1, −1, 0, 0). Signs: −, −, +, + (0 → +).
	// → −1/1, (−2−1)/2, 3/1, 0 (divisor 0 → 1).
	check("ties", runMethodFiles(t, dtype.F32, "ties", Params{Density: 0.5, Lambda: 1}, one(0, 0, 0, 0),
		[]*ckpt{one(1, -2, 3, 0.5), one(-1, -1, 1, 1)}, nil, nil, 1)["w"], []float32{-1, -1.5, 3, 0})
	// breadcrumbs, n = 4, density 0.5 (keep 2), γ = 0.25 (n_top 1, n_bot 1): drop 3
	// (largest) and 0.5 (smallest).
	check("breadcrumbs", runMethodFiles(t, dtype.F32, "breadcrumbs", Params{Density: 0.5, Lambda: 1, Gamma: 0.25}, one(0, 0, 0, 0),
		[]*ckpt{one(1, -2, 3, 0.5)}, nil, nil, 1)["w"], []float32{1, -2, 0, 0})
	// slerp of orthogonal unit vectors at t = 0.5: sin(π/4)/sin(π/2) each.
	h := float32(math.Sqrt2 / 2)
	check("slerp", runMethodFiles(t, dtype.F32, "slerp", Params{T: 0.5}, one(1, 0), []*ckpt{one(0, 1)}, nil, nil, 1)["w"], []float32{h, h})
	// model stock: orthogonal task vectors → c = 0 → the base; equal ones → c = 1 → the mean.
	check("model_stock c=0", runMethodFiles(t, dtype.F32, "model_stock", Params{}, one(0, 0), []*ckpt{one(1, 0), one(0, 1)}, nil, nil, 1)["w"], []float32{0, 0})
	check("model_stock c=1", runMethodFiles(t, dtype.F32, "model_stock", Params{}, one(0, 0), []*ckpt{one(1, 1), one(1, 1)}, nil, nil, 1)["w"], []float32{1, 1})
}

// TestFisherAgainstReference: θ = Σ λ_i F̃_i θ_i / Σ λ_i F̃_i with the floor applied.
func TestFisherAgainstReference(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(9, 9))
	_, models := methodFixture(6, dtype.F32, 2)
	var job MethodJob
	job.Method, job.Params = "fisher", Params{Epsilon: 1e-4}
	job.Job = Job{Out: filepath.Join(dir, "out.safetensors")}
	fishers := make([]*ckpt, len(models))
	weights := []float64{2, 0.5}
	for i, m := range models {
		f := randomCkpt(rng, dtype.F32, nil, 1e-3)
		for _, v := range f.vals {
			for j := range v {
				v[j] = float32(math.Abs(float64(v[j])))
			}
		}
		fishers[i] = f
		mp, fp := filepath.Join(dir, fmt.Sprintf("m%d.safetensors", i)), filepath.Join(dir, fmt.Sprintf("f%d.safetensors", i))
		m.write(t, mp, dtype.F32)
		f.write(t, fp, dtype.F32)
		job.Models = append(job.Models, Model{Path: mp, Weight: weights[i], Density: math.NaN(), Fisher: fp})
	}
	_, err := RunMethod(context.Background(), job)
	must(t, err)
	got := readAll(t, job.Job.Out)
	floored := 0
	for _, name := range models[0].names {
		ref, scale := fisherRef(vals(models, name), vals(fishers, name), weights, 1e-4)
		checkClose(t, name, got[name], ref, scale, dtype.F32)
		for _, f := range fishers {
			for _, v := range f.vals[name] {
				if float64(v) <= 1e-4 {
					floored++
				}
			}
		}
	}
	if floored == 0 {
		t.Error("no Fisher value hit the floor: ε is untested")
	}
}

// TestDARE: the fraction kept is within 3σ of the density, the L1 rescale preserves
// ‖δ‖₁, the same seed gives the same bytes at any thread count, another seed other
// bytes.
func TestDARE(t *testing.T) {
	base, models := methodFixture(7, dtype.F32, 1)
	for _, density := range []float64{0.1, 0.5, 0.9} {
		got := runMethodFiles(t, dtype.F32, "dare_linear", Params{Density: density, Lambda: 1, Seed: 3, Rescale: "l1"}, base, models, nil, nil, 2)
		name := "big.weight"
		b, x := base.vals[name], models[0].vals[name]
		var kept int
		var l1In, l1Out float64
		for j := range b {
			l1In += math.Abs(float64(x[j] - b[j]))
			d := float64(got[name][j] - b[j])
			l1Out += math.Abs(d)
			if got[name][j] != b[j] {
				kept++
			}
		}
		n := float64(len(b))
		sigma := math.Sqrt(n * density * (1 - density))
		if math.Abs(float64(kept)-density*n) > 3*sigma {
			t.Errorf("density %v: kept %d of %v, want %v ± %v", density, kept, n, density*n, 3*sigma)
		}
		if math.Abs(l1Out-l1In) > 1e-4*l1In {
			t.Errorf("density %v: L1 after rescale %v, want %v", density, l1Out, l1In)
		}
	}
	// Determinism and seed dependence, on dare_ties with two models.
	base, models = methodFixture(8, dtype.BF16, 2)
	dir := t.TempDir()
	var outs [][]byte
	for _, run := range []struct {
		seed    uint64
		threads int
	}{{1, 1}, {1, 2}, {1, 8}, {2, 2}} {
		job := MethodJob{Method: "dare_ties", Params: Params{Density: 0.4, Lambda: 1, Seed: run.seed, Rescale: "inverse"},
			Job: Job{Out: filepath.Join(dir, "o.safetensors"), Exec: ExecOptions{Threads: run.threads}}}
		job.Base = filepath.Join(dir, "b.safetensors")
		base.write(t, job.Base, dtype.BF16)
		for i, m := range models {
			p := filepath.Join(dir, fmt.Sprintf("m%d.safetensors", i))
			m.write(t, p, dtype.BF16)
			job.Models = append(job.Models, Model{Path: p, Weight: 1, Density: math.NaN()})
		}
		_, err := RunMethod(context.Background(), job)
		must(t, err)
		b, err := os.ReadFile(job.Job.Out)
		must(t, err)
		outs = append(outs, b)
	}
	if !bytes.Equal(outs[0], outs[1]) || !bytes.Equal(outs[0], outs[2]) {
		t.Error("dare_ties: same seed, different bytes across thread counts")
	}
	if bytes.Equal(outs[0], outs[3]) {
		t.Error("dare_ties: another seed gave the same bytes")
	}
}

// TestMethodsDeterministic: every method gives the same bytes with 1 and 8 threads.
func TestMethodsDeterministic(t *testing.T) {
	base, models := methodFixture(10, dtype.BF16, 3)
	for _, method := range testMethods() {
		p := Params{Density: 0.3, Lambda: 1, T: 0.4, Gamma: 0.02, Epsilon: 1e-6, Rescale: "l1", Seed: 5}
		var b, ms = base, models
		switch method {
		case "linear", "fisher":
			b = nil
		case "slerp":
			ms = models[:1]
		}
		if def, _ := LookupMethod(method); def.Base == BaseAbsent {
			b = nil
		} else if def.MaxModels > 0 {
			ms = models[:def.MaxModels]
		}
		if method == "fisher" {
			continue // needs Fisher files: TestFisherAgainstReference
		}
		one := runMethodFiles(t, dtype.BF16, method, p, b, ms, nil, nil, 1)
		eight := runMethodFiles(t, dtype.BF16, method, p, b, ms, nil, nil, 8)
		for name, v := range one {
			if !slicesEqualBits(v, eight[name]) {
				t.Errorf("%s: tensor %s differs between 1 and 8 threads", method, name)
			}
		}
	}
}

func TestMethodValidation(t *testing.T) {
	for _, tc := range []struct {
		job  MethodJob
		want string
	}{
		{MethodJob{Method: "ties", Models: []Model{{Path: "a", Weight: 1, Density: math.NaN()}}, Params: Params{Density: 0.2}}, "needs a base"},
		{MethodJob{Method: "linear", Models: []Model{{Path: "a", Weight: 1, Density: math.NaN()}, {Path: "b", Weight: -1, Density: math.NaN()}}}, "sum to 0"},
		{MethodJob{Method: "ties", Base: "b", Models: []Model{{Path: "a", Weight: 1, Density: 1.5}}}, "outside [0, 1]"},
		{MethodJob{Method: "slerp", Base: "b", Models: []Model{{Path: "a", Weight: 1, Density: math.NaN()}, {Path: "c", Weight: 1, Density: math.NaN()}}}, "exactly 1"},
		{MethodJob{Method: "model_stock", Base: "b", Models: []Model{{Path: "a", Weight: 1, Density: math.NaN()}}}, "at least 2"},
		{MethodJob{Method: "fisher", Models: []Model{{Path: "a", Weight: 1, Density: math.NaN()}}, Params: Params{Epsilon: 1e-6}}, "needs its Fisher"},
		{MethodJob{Method: "dare_linear", Base: "b", Models: []Model{{Path: "a", Weight: 1, Density: math.NaN()}}, Params: Params{Rescale: "l2"}}, "rescale"},
		{MethodJob{Method: "nope"}, "unknown method"},
		{MethodJob{Method: "linear", Models: []Model{{Path: "a", Weight: 1, Density: math.NaN()}, {Path: "b", Weight: -0.99999999999, Density: math.NaN()}}}, "sum to 0"},
	} {
		_, err := RunMethod(context.Background(), tc.job)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: got %v, want %q", tc.job.Method, err, tc.want)
		}
	}
}

// TestDAREAgainstReference: dare_linear and dare_ties against a float64 reference that
// draws the same keep decisions (the draw is part of the method's definition: element e
// of model i is kept when its counter-based draw is below density·2⁶⁴).
func TestDAREAgainstReference(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		base, models := methodFixture(12, dt, 3)
		weights := []float64{0.6, 1.2, -0.3}
		dens := []float64{0.3, 0.8, 0.05}
		for _, method := range []string{"dare_linear", "dare_ties"} {
			for _, rescale := range []string{"l1", "inverse"} {
				p := Params{Density: 0.5, Lambda: 0.9, Seed: 11, Rescale: rescale}
				got := runMethodFiles(t, dt, method, p, base, models, weights, dens, 2)
				for _, name := range referenceNames(base) {
					b := base.vals[name]
					key := dareKey(11, name)
					o := tvOptions{sparsify: SparsifyRandom, consensus: Consensus(b2i(method == "dare_ties")), rescale: rescale}
					ref, sc := taskVectorsRef(o, b, vals(models, name), weights, dens, 0, 0.9, func(i, j int) bool {
						return dareDraw(key, i, int64(j)) < densityThreshold(dens[i])
					})
					checkClose(t, fmt.Sprintf("%s %s %s %s", dt, method, rescale, name), got[name], ref, sc, dt)
				}
			}
		}
	}
}

// TestKeepCache: the masks the L1 pass keeps for the merge pass (della's ranks,
// DARE's draws; the merge reads them packed) give the same output as masks computed
// again, whether all, some (one chunk's worth of room) or none of the chunks are
// kept, with and without a sign consensus.
func TestKeepCache(t *testing.T) {
	base, models := methodFixture(19, dtype.BF16, 3)
	weights, dens := []float64{0.7, -0.2, 1.3}, []float64{0.5, 0.3, 0.8}
	for _, method := range []string{"della", "della_linear", "dare_linear", "dare_ties"} {
		var want map[string][]float32
		for _, limit := range []int64{0, 8 * ChunkElems / 64 * 3, 1} {
			p := Params{Lambda: 0.9, Epsilon: 0.1, Seed: 3, Normalize: SwitchOn, Rescaling: SwitchOn, Rescale: "l1", keepCacheBytes: limit}
			got := runMethodFiles(t, dtype.BF16, method, p, base, models, weights, dens, 2)
			if want == nil {
				want = got
				continue
			}
			for _, name := range base.names {
				if !slices.Equal(got[name], want[name]) {
					t.Errorf("%s, cache limit %d: tensor %q differs from the fully cached merge", method, limit, name)
				}
			}
		}
	}
}

// TestTiesCombineAsmMatchesGo: the AVX2 sign election, accumulation and division give
// the same bits as the Go loops, on random values with ±0, NaN, Inf and exact
// cancellations, for lengths with and without a tail.
func TestTiesCombineAsmMatchesGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU; the Go loops are the only path")
	}
	rng := rand.New(rand.NewPCG(13, 13))
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-40}
	for _, n := range []int{0, 3, 8, 13, 1000} {
		for _, lanes := range []int{1, 2, 3} {
			weights := []float32{0.7, -0.25, 1.5}[:lanes]
			d := make([][]float32, lanes)
			for i := range d {
				d[i] = make([]float32, n)
				for j := range d[i] {
					switch r := rng.IntN(10); {
					case r < 3:
						d[i][j] = 0
					case r == 3:
						d[i][j] = special[rng.IntN(len(special))]
					default:
						d[i][j] = float32(rng.NormFloat64())
					}
				}
			}
			if n > 2 && lanes > 1 {
				d[1][2] = -d[0][2] // an exact cancellation: sum 0 elects +
			}
			base := make([]float32, n)
			sum := make([]float32, n)
			for j := range base {
				base[j] = float32(rng.NormFloat64())
				for i := range d {
					sum[j] += d[i][j]
				}
			}
			run := func(asm bool) []float32 {
				dst, den, sign := make([]float32, n), make([]float32, n), make([]uint32, n)
				tiesCombine(dst, base, sum, den, sign, d, weights, 0.9, asm)
				return dst
			}
			got, want := run(true), run(false)
			for j := range got {
				if math.Float32bits(got[j]) != math.Float32bits(want[j]) && !(got[j] != got[j] && want[j] != want[j]) {
					t.Fatalf("n=%d lanes=%d [%d]: asm %v, Go %v (d %v)", n, lanes, j, got[j], want[j], []float32{d[0][j]})
				}
			}
		}
	}
}

func TestDeltaMagnitudesAsmMatchesGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU; the Go loop is the only path")
	}
	rng := rand.New(rand.NewPCG(14, 14))
	for _, n := range []int{0, 7, 8, 9, 1001} {
		x, b := make([]float32, n), make([]float32, n)
		for j := range x {
			x[j], b[j] = math.Float32frombits(rng.Uint32()), math.Float32frombits(rng.Uint32())
		}
		got, want := make([]uint32, n), make([]uint32, n)
		deltaMagnitudesWith(got, x, b, true)
		deltaMagnitudesWith(want, x, b, false)
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d: asm and Go differ", n)
		}
	}
}

// TestFisherHandWorked: θ = (λ₁F₁θ₁ + λ₂F₂θ₂)/(λ₁F₁ + λ₂F₂) with F₁ = 3, θ₁ = 1,
// F₂ = 1, θ₂ = 5, λ = 1 → 8/4 = 2; a Fisher below ε counts as ε: F₁ = 0, F₂ = 0 → the
// plain average 3.
func TestFisherHandWorked(t *testing.T) {
	k := fisherKernel(&methodRun{weights: []float32{1, 1}, p: Params{Epsilon: 1e-6}}, nil)
	dst := make([]float32, 2)
	k.Merge(dst, [][]float32{{1, 1}, {5, 5}}, [][]float32{{3, 0}, {1, 0}}, Chunk{})
	if dst[0] != 2 || dst[1] != 3 {
		t.Errorf("got %v, want [2 3]", dst)
	}
}
