package gpu_test

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/gpu"
	"github.com/gomerge/gomerge/merge"
)

type opener func(t testing.TB, chunkBlocks int) *gpu.Device

// TestFake runs the differential suite through purego against the fake driver.
func TestFake(t *testing.T) { runSuite(t, openFake) }

// TestDevice runs it on a real device (GOMERGE_TEST_GPU=1).
func TestDevice(t *testing.T) { runSuite(t, openReal) }

func runSuite(t *testing.T, open opener) {
	t.Run("LerpAllBF16", func(t *testing.T) { testLerpAllBF16(t, open(t, 2)) })
	t.Run("LerpDTypes", func(t *testing.T) { testLerpDTypes(t, open(t, 1)) })
	t.Run("LerpFisherAllBF16", func(t *testing.T) { testLerpFisher(t, open(t, 2)) })
	t.Run("Distance", func(t *testing.T) { testDistance(t, open(t, 2)) })
	t.Run("Methods", func(t *testing.T) { testMethods(t, open(t, 2)) })
	t.Run("DAREL1", func(t *testing.T) { testDAREL1(t, open(t, 2)) })
	t.Run("Closed", func(t *testing.T) {
		d := open(t, 1)
		d.Close()
		if _, err := d.Lerp(ctx, 1, gpu.Output{DType: dtype.F32, W: make(buffer, 4)}, gpu.Operand{Data: make([]byte, 4), DType: dtype.F32}, gpu.Operand{Data: make([]byte, 4), DType: dtype.F32}, 1, 0); err != gpu.ErrClosed {
			t.Fatalf("Lerp on a closed device: %v", err)
		}
	})
}

// sqLanes is merge's sumSqDiff per block: Σ (x−y)² in float64, element j of a block
// into lane j mod 8, the lanes added in merge's fixed tree.
func sqLanes(x, y []float32) []float64 {
	var out []float64
	for start := 0; start < len(x); start += gpu.BlockElems {
		end := min(start+gpu.BlockElems, len(x))
		var s [8]float64
		for j := start; j < end; j++ {
			d := float64(x[j]) - float64(y[j])
			s[(j-start)%8] += float64(d * d)
		}
		out = append(out, ((s[0]+s[1])+(s[2]+s[3]))+((s[4]+s[5])+(s[6]+s[7])))
	}
	return out
}

func sfaStatsRef(a, x, out []float32) []float64 {
	before, after := sqLanes(x, a), sqLanes(out, a)
	var s []float64
	for i := range before {
		s = append(s, before[i], after[i])
	}
	return s
}

// testLerpAllBF16: every BF16 pattern as the anchor, three times over with different
// currents, for several β and output dtypes, against merge.Lerp.
func testLerpAllBF16(t *testing.T, d *gpu.Device) {
	n := 3*gpu.BlockElems + 100
	a, x := make([]byte, 2*n), make([]byte, 2*n)
	for j := range n {
		h := uint16(j)
		a[2*j], a[2*j+1] = byte(h), byte(h>>8)
		g := uint16(j*40503 + 12345 + j>>16)
		x[2*j], x[2*j+1] = byte(g), byte(g>>8)
	}
	af, xf := decode(t, a, dtype.BF16), decode(t, x, dtype.BF16)
	for _, beta := range []float64{0, 1, 0.5, 0.25, 1.0 / 3, 1e-3, 0.999} {
		b, c := float32(beta), float32(1-beta)
		ref := make([]float32, n)
		merge.Lerp(ref, af, xf, b, c)
		for _, odt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
			want := encode(t, ref, odt)
			got := make(buffer, len(want))
			stats, err := d.Lerp(ctx, int64(n), gpu.Output{DType: odt, W: got}, gpu.Operand{Data: a, DType: dtype.BF16}, gpu.Operand{Data: x, DType: dtype.BF16}, b, c)
			if err != nil {
				t.Fatal(err)
			}
			what := odt.String() + " β=" + ftoa(beta)
			sameBits(t, what, got, want, odt)
			sameFloats(t, what+" stats", stats, sfaStatsRef(af, xf, decode(t, want, odt)))
		}
	}
}

func ftoa(v float64) string { return fmtFloat(v) }

// testLerpDTypes: F16 (every pattern), F32 and F64 inputs, and F64 output.
func testLerpDTypes(t *testing.T, d *gpu.Device) {
	n := gpu.BlockElems + 7
	rng := rand.New(rand.NewPCG(1, 2))
	a := make([]byte, 2*n)
	for j := range n {
		a[2*j], a[2*j+1] = byte(j), byte(j>>8)
	}
	xv := make([]float32, n)
	for j := range xv {
		xv[j] = float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(60)-30)))
	}
	xv[0], xv[1], xv[2] = float32(math.Inf(1)), float32(math.NaN()), 0
	x64 := make([]byte, 8*n)
	for j, v := range xv {
		f := float64(v) * (1 + 1e-9) // not representable in float32: exercises F64 rounding
		bits := math.Float64bits(f)
		for k := range 8 {
			x64[8*j+k] = byte(bits >> (8 * k))
		}
	}
	af := decode(t, a, dtype.F16)
	for _, xs := range []gpu.Operand{{Data: encode(t, xv, dtype.F32), DType: dtype.F32}, {Data: x64, DType: dtype.F64}} {
		xf := decode(t, xs.Data, xs.DType)
		ref := make([]float32, n)
		merge.Lerp(ref, af, xf, 0.3, float32(1-0.3))
		for _, odt := range []dtype.DType{dtype.F16, dtype.F64} {
			want := encode(t, ref, odt)
			got := make(buffer, len(want))
			stats, err := d.Lerp(ctx, int64(n), gpu.Output{DType: odt, W: got}, gpu.Operand{Data: a, DType: dtype.F16}, xs, 0.3, float32(1-0.3))
			if err != nil {
				t.Fatal(err)
			}
			sameBits(t, xs.DType.String()+"→"+odt.String(), got, want, odt)
			sameFloats(t, "stats", stats, sfaStatsRef(af, xf, decode(t, want, odt)))
		}
	}
}

// testLerpFisher: every BF16 pattern as the Fisher (negative, zero, subnormal,
// infinite, NaN), against merge.LerpPerElement.
func testLerpFisher(t *testing.T, d *gpu.Device) {
	n := 2*gpu.BlockElems + 3
	rng := rand.New(rand.NewPCG(3, 4))
	f := make([]byte, 2*n)
	av, xv := make([]float32, n), make([]float32, n)
	for j := range n {
		f[2*j], f[2*j+1] = byte(j), byte(j>>8)
		av[j], xv[j] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	a, x := encode(t, av, dtype.BF16), encode(t, xv, dtype.BF16)
	af, xf, ff := decode(t, a, dtype.BF16), decode(t, x, dtype.BF16), decode(t, f, dtype.BF16)
	for _, eta := range []float64{1, 1000, 0.5, 1e-30} {
		ref := make([]float32, n)
		merge.LerpPerElement(ref, af, xf, ff, eta)
		want := encode(t, ref, dtype.BF16)
		got := make(buffer, len(want))
		stats, err := d.LerpFisher(ctx, int64(n), gpu.Output{DType: dtype.BF16, W: got}, gpu.Operand{Data: a, DType: dtype.BF16}, gpu.Operand{Data: x, DType: dtype.BF16}, gpu.Operand{Data: f, DType: dtype.BF16}, eta)
		if err != nil {
			t.Fatal(err)
		}
		sameBits(t, "η="+ftoa(eta), got, want, dtype.BF16)
		sameFloats(t, "stats", stats, sfaStatsRef(af, xf, decode(t, want, dtype.BF16)))
	}
}

// distanceRef is merge's distanceKernel Observe per block.
func distanceRef(a, b, base []float32) []float64 {
	var out []float64
	for start := 0; start < len(a); start += gpu.BlockElems {
		end := min(start+gpu.BlockElems, len(a))
		var d2, a2, b2, dot, ta2, tb2 float64
		for j := start; j < end; j++ {
			x, y := float64(a[j]), float64(b[j])
			d2 += float64((x - y) * (x - y))
			a2 += float64(x * x)
			b2 += float64(y * y)
			if base != nil {
				u, v := float64(a[j])-float64(base[j]), float64(b[j])-float64(base[j])
				dot += float64(u * v)
				ta2 += float64(u * u)
				tb2 += float64(v * v)
			}
		}
		out = append(out, d2, a2, b2, dot, ta2, tb2)
	}
	return out
}

func testDistance(t *testing.T, d *gpu.Device) {
	n := 3*gpu.BlockElems + 11
	rng := rand.New(rand.NewPCG(5, 6))
	vals := func() []float32 {
		v := make([]float32, n)
		for j := range v {
			v[j] = float32(rng.NormFloat64())
		}
		return v
	}
	a, b, base := encode(t, vals(), dtype.BF16), encode(t, vals(), dtype.F32), encode(t, vals(), dtype.F16)
	af, bf, basef := decode(t, a, dtype.BF16), decode(t, b, dtype.F32), decode(t, base, dtype.F16)
	got, err := d.Distance(ctx, int64(n), gpu.Operand{Data: a, DType: dtype.BF16}, gpu.Operand{Data: b, DType: dtype.F32}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameFloats(t, "without base", got, distanceRef(af, bf, nil))
	got, err = d.Distance(ctx, int64(n), gpu.Operand{Data: a, DType: dtype.BF16}, gpu.Operand{Data: b, DType: dtype.F32}, &gpu.Operand{Data: base, DType: dtype.F16})
	if err != nil {
		t.Fatal(err)
	}
	sameFloats(t, "with base", got, distanceRef(af, bf, basef))
}

// dareKey, densityThreshold: merge's, ported (the end-to-end comparison with
// merge.RunMethod checks the port).
func dareKey(seed uint64, tensor string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(tensor))
	return splitmix64(seed ^ h.Sum64())
}

// testDAREL1: DARE's L1 sums per block, on values whose sums round (testMethods's
// few levels add exactly, whatever the order), against dareL1Ref bit for bit.
func testDAREL1(t *testing.T, d *gpu.Device) {
	n := 2*gpu.BlockElems + 4099
	rng := rand.New(rand.NewPCG(3, 17))
	vals := func() []float32 {
		v := make([]float32, n)
		for j := range v {
			v[j] = float32(rng.NormFloat64() * math.Exp2(float64(rng.IntN(16)-8)))
		}
		return v
	}
	base := vals()
	xs := [][]float32{vals(), vals()}
	key := dareKey(5, "w")
	tm := []gpu.TaskModel{
		{X: gpu.Operand{Data: encode(t, xs[0], dtype.F32), DType: dtype.F32}, Weight: 1, Mode: gpu.KeepDARE, Key: key, Threshold: densityThreshold(0.3)},
		{X: gpu.Operand{Data: encode(t, xs[1], dtype.F32), DType: dtype.F32}, Weight: 1, Mode: gpu.KeepDARE, Key: key, Threshold: densityThreshold(0.8)},
	}
	got, err := d.DAREL1(ctx, int64(n), gpu.Operand{Data: encode(t, base, dtype.F32), DType: dtype.F32}, tm)
	if err != nil {
		t.Fatal(err)
	}
	sameFloats(t, "L1 sums", got, dareL1Ref(base, xs, key, tm))
}

// dareL1Ref is merge's DARE L1 pass per block (merge.l1Lanes): for each model,
// Σ |x − base| and Σ over the kept elements, element j of a block into lane j mod 8,
// the lanes combined as merge.combineLanes does.
func dareL1Ref(base []float32, xs [][]float32, key uint64, tm []gpu.TaskModel) []float64 {
	var out []float64
	for start := 0; start < len(base); start += gpu.BlockElems {
		end := min(start+gpu.BlockElems, len(base))
		for i, x := range xs {
			var all, kept [8]float64
			for j := start; j < end; j++ {
				a := math.Abs(float64(x[j] - base[j]))
				all[(j-start)%8] += a
				draw := splitmix64(key ^ splitmix64(uint64(i+1)*0xd1b54a32d192ed03^uint64(j)*0x9e3779b97f4a7c15))
				if draw < tm[i].Threshold {
					kept[(j-start)%8] += a
				}
			}
			comb := func(s [8]float64) float64 { return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) }
			out = append(out, comb(all), comb(kept))
		}
	}
	return out
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func densityThreshold(d float64) uint64 {
	v := d * 0x1p64
	if v >= 0x1p64 {
		return math.MaxUint64
	}
	return uint64(v)
}

// methodData makes a base and models whose deltas take few distinct values, so that
// rank cuts fall among many equal magnitudes, with some noise besides.
func methodData(n int, models int, seed uint64) (base []float32, xs [][]float32) {
	rng := rand.New(rand.NewPCG(seed, 7))
	base = make([]float32, n)
	levels := []float32{0, 0.5, -1, 2}
	steps := []float32{0, 1.0 / 16, -1.0 / 16, 1.0 / 8, -1.0 / 8, 1.0 / 32, -1.0 / 4}
	for j := range base {
		base[j] = levels[rng.IntN(len(levels))]
	}
	for range models {
		x := make([]float32, n)
		for j := range x {
			if rng.IntN(8) == 0 {
				x[j] = base[j] + float32(rng.NormFloat64()*0.1)
			} else {
				x[j] = base[j] + steps[rng.IntN(len(steps))]
			}
		}
		xs = append(xs, x)
	}
	return base, xs
}

// testMethods runs each multi-model method with merge.RunMethod on files and on the
// device, and compares the output bytes.
func testMethods(t *testing.T, d *gpu.Device) {
	const name = "w"
	n := 3*gpu.BlockElems + 777
	dt := dtype.BF16
	dir := t.TempDir()
	basev, xsv := methodData(n, 3, 11)
	write := func(file string, v []float32) gpu.Operand {
		tn := stt.FromFloat32(name, dt, []int64{int64(n)}, v)
		if err := stt.WriteFile(filepath.Join(dir, file), []stt.Tensor{tn}, nil); err != nil {
			t.Fatal(err)
		}
		return gpu.Operand{Data: tn.Data, DType: dt}
	}
	base := write("base.safetensors", basev)
	var models, fishers []gpu.Operand
	rng := rand.New(rand.NewPCG(9, 9))
	for i, x := range xsv {
		models = append(models, write(fmtName("m", i), x))
		f := make([]float32, n)
		for j := range f {
			switch {
			case j%4099 == 0:
				f[j] = float32(math.NaN()) // poisons the element on both sides
			case rng.IntN(5) > 0:
				f[j] = float32(rng.ExpFloat64())
			}
		}
		fishers = append(fishers, write(fmtName("f", i), f))
	}
	// What the files hold, rounded to BF16.
	basev = decode(t, base.Data, dt)
	for i := range xsv {
		xsv[i] = decode(t, models[i].Data, dt)
	}
	weights := []float64{0.7, 0.5, 1.25}
	dens := []float64{0.3, 0.55, 1}
	w32 := make([]float32, len(weights))
	for i, w := range weights {
		w32[i] = float32(w)
	}
	params := merge.Params{Density: 0.3, Lambda: 0.9, Gamma: 0.01, Seed: 42, Rescale: "l1", Epsilon: 1e-6}

	cpu := func(method string, withBase bool, p merge.Params, densities []float64, fisher bool) []byte {
		job := merge.MethodJob{Method: method, Params: p, Job: merge.Job{Out: filepath.Join(dir, method+".out.safetensors")}}
		if withBase {
			job.Base = filepath.Join(dir, "base.safetensors")
		}
		for i := range models {
			m := merge.Model{Path: filepath.Join(dir, fmtName("m", i)), Weight: weights[i], Density: math.NaN()}
			if densities != nil {
				m.Density = densities[i]
			}
			if fisher {
				m.Fisher = filepath.Join(dir, fmtName("f", i))
			}
			job.Models = append(job.Models, m)
		}
		if _, err := merge.RunMethod(ctx, job); err != nil {
			t.Fatalf("%s on the CPU: %v", method, err)
		}
		f, err := safetensors.Open(job.Job.Out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ti, _ := f.Tensor(name)
		b, err := f.Bytes(ti)
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte(nil), b...)
	}
	out := func() (gpu.Output, buffer) {
		b := make(buffer, n*dt.Size())
		return gpu.Output{DType: dt, W: b}, b
	}
	lambda := float32(params.Lambda)
	nn := int64(n)

	t.Run("ties", func(t *testing.T) {
		want := cpu("ties", true, params, dens, false)
		ranks := make([][]int64, len(models))
		for i, de := range dens {
			ranks[i] = []int64{int64(math.Floor(de * float64(n)))}
		}
		cuts, err := d.Cuts(ctx, nn, base, models, ranks)
		if err != nil {
			t.Fatal(err)
		}
		for i := range models {
			checkCut(t, basev, xsv[i], cuts[i][0], ranks[i][0])
		}
		o, got := out()
		if err := d.TIES(ctx, nn, o, base, models, w32, []gpu.Cut{cuts[0][0], cuts[1][0], cuts[2][0]}, lambda); err != nil {
			t.Fatal(err)
		}
		sameBits(t, "ties", got, want, dt)
	})
	t.Run("ties_k0", func(t *testing.T) {
		p := params
		p.Density = 0.2
		want := cpu("ties", true, p, []float64{0, 0.2, 0.2}, false)
		ranks := [][]int64{{0}, {int64(math.Floor(0.2 * float64(n)))}, {int64(math.Floor(0.2 * float64(n)))}}
		cuts, err := d.Cuts(ctx, nn, base, models, ranks)
		if err != nil {
			t.Fatal(err)
		}
		o, got := out()
		if err := d.TIES(ctx, nn, o, base, models, w32, []gpu.Cut{cuts[0][0], cuts[1][0], cuts[2][0]}, lambda); err != nil {
			t.Fatal(err)
		}
		sameBits(t, "ties k=0", got, want, dt)
	})
	for _, method := range []string{"breadcrumbs", "breadcrumbs_ties"} {
		t.Run(method, func(t *testing.T) {
			p := params
			p.Density = 0.9
			want := cpu(method, true, p, nil, false)
			ranks := make([][]int64, len(models))
			for i := range ranks {
				keep := int64(math.Floor(p.Density * float64(n)))
				nTop := int64(math.Floor(p.Gamma * float64(n)))
				nBot := nn - keep - nTop
				if nBot < 0 {
					nTop += nBot
					nBot = 0
				}
				ranks[i] = []int64{nTop, nn - nBot}
			}
			cuts, err := d.Cuts(ctx, nn, base, models, ranks)
			if err != nil {
				t.Fatal(err)
			}
			tm := make([]gpu.TaskModel, len(models))
			for i := range tm {
				tm[i] = gpu.TaskModel{X: models[i], Weight: w32[i], Mode: gpu.KeepBand, Cuts: [2]gpu.Cut{cuts[i][0], cuts[i][1]}}
			}
			o, got := out()
			if err := d.TaskVectors(ctx, nn, o, base, tm, lambda, method == "breadcrumbs_ties"); err != nil {
				t.Fatal(err)
			}
			sameBits(t, method, got, want, dt)
		})
	}
	for _, method := range []string{"dare_linear", "dare_ties"} {
		for _, rescale := range []string{"l1", "inverse"} {
			t.Run(method+"/"+rescale, func(t *testing.T) {
				p := params
				p.Density, p.Rescale = 0.4, rescale
				want := cpu(method, true, p, []float64{0.4, 0.7, 1}, false)
				key := dareKey(p.Seed, name)
				tm := make([]gpu.TaskModel, len(models))
				for i, de := range []float64{0.4, 0.7, 1} {
					tm[i] = gpu.TaskModel{X: models[i], Weight: w32[i], Mode: gpu.KeepDARE, Key: key, Threshold: densityThreshold(de), HasScale: true}
					if rescale == "inverse" {
						tm[i].Scale = float32(1 / de)
					}
				}
				if rescale == "l1" {
					l1, err := d.DAREL1(ctx, nn, base, tm)
					if err != nil {
						t.Fatal(err)
					}
					sameFloats(t, "L1 sums", l1, dareL1Ref(basev, xsv, key, tm))
					m := len(tm)
					sums := make([]float64, 2*m)
					for c := 0; c < len(l1); c += 2 * m {
						for s := range sums {
							sums[s] += l1[c+s]
						}
					}
					for i := range tm {
						tm[i].Scale = 1
						if all, kept := sums[2*i], sums[2*i+1]; all >= 1e-7 && kept >= 1e-7 {
							tm[i].Scale = float32(all / kept)
						}
					}
				}
				o, got := out()
				if err := d.TaskVectors(ctx, nn, o, base, tm, lambda, method == "dare_ties"); err != nil {
					t.Fatal(err)
				}
				sameBits(t, method, got, want, dt)
			})
		}
	}
	t.Run("task_arithmetic", func(t *testing.T) {
		want := cpu("task_arithmetic", true, params, nil, false)
		tm := make([]gpu.TaskModel, len(models))
		for i := range tm {
			tm[i] = gpu.TaskModel{X: models[i], Weight: w32[i], Mode: gpu.KeepAll}
		}
		o, got := out()
		if err := d.TaskVectors(ctx, nn, o, base, tm, lambda, false); err != nil {
			t.Fatal(err)
		}
		sameBits(t, "task_arithmetic", got, want, dt)
	})
	t.Run("linear", func(t *testing.T) {
		want := cpu("linear", false, params, nil, false)
		var wsum float64
		for _, w := range w32 {
			wsum += float64(w)
		}
		o, got := out()
		if err := d.Linear(ctx, nn, o, models, w32, float32(wsum)); err != nil {
			t.Fatal(err)
		}
		sameBits(t, "linear", got, want, dt)
	})
	t.Run("fisher", func(t *testing.T) {
		want := cpu("fisher", false, params, nil, true)
		o, got := out()
		if err := d.Fisher(ctx, nn, o, models, fishers, w32, float32(params.Epsilon)); err != nil {
			t.Fatal(err)
		}
		sameBits(t, "fisher", got, want, dt)
	})
}

// checkCut counts the elements above c, which must be exactly rank.
func checkCut(t *testing.T, base, x []float32, c gpu.Cut, rank int64) {
	t.Helper()
	var above int64
	for j := range x {
		mag := math.Float32bits(x[j]-base[j]) &^ (1 << 31)
		if mag > c.T || (mag == c.T && int64(j) < c.TieEnd) {
			above++
		}
	}
	if above != min(max(rank, 0), int64(len(x))) {
		t.Errorf("cut %+v has %d elements above it, want %d", c, above, rank)
	}
}
