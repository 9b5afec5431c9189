package merge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	"github.com/gomerge/gomerge/gpu"
	"github.com/gomerge/gomerge/gpu/gputest"
)

// The engine's GPU path, tested without a GPU: the fake libcuda.so.1 (gpu/gputest)
// runs the real kernels on the host through the whole driver binding. Every method
// that has a GPU function runs once on the CPU only and once with the device forced
// on (every tensor, light ones included), and the output files must be the same
// bytes.

// openFakeGPU opens the fake device with one-block staged chunks, so that a
// multi-chunk tensor streams through both of the device's streams. With
// GOMERGE_TEST_GPU=1 it opens the real device instead (the driver named by
// GOMERGE_TEST_GPU_LIBRARY, else libcuda.so.1), as gpu's TestDevice does, and a
// missing device fails the test.
func openFakeGPU(t testing.TB) *gpu.Device {
	t.Helper()
	cfg := gpu.Config{ChunkElems: gpu.BlockElems}
	if os.Getenv("GOMERGE_TEST_GPU") != "" {
		cfg.Library = os.Getenv("GOMERGE_TEST_GPU_LIBRARY")
	} else {
		cfg.Library = gputest.Library(t)
	}
	d, err := gpu.OpenWith(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// gpuFixture writes a base, three models (BF16, F32 and F16: mixed dtypes) and their
// Fishers; methodShapes include a tensor of three chunks and more, and tiny ones.
func gpuFixture(t *testing.T) (dir string, path func(string) string) {
	dir = t.TempDir()
	path = func(name string) string { return filepath.Join(dir, name+".safetensors") }
	base, models := methodFixture(21, dtype.BF16, 3)
	base.write(t, path("base"), dtype.BF16)
	for i, dt := range []dtype.DType{dtype.BF16, dtype.F32, dtype.F16} {
		models[i].write(t, path(fmt.Sprint("m", i)), dt)
		f := &ckpt{names: models[i].names, shapes: models[i].shapes, vals: map[string][]float32{}}
		for name, v := range models[i].vals {
			fv := make([]float32, len(v))
			for j, x := range v {
				fv[j] = float32(math.Abs(float64(x))*100) + float32(j%5)*1e-7 // zeros below ε too
			}
			f.vals[name] = fv
		}
		f.write(t, path(fmt.Sprint("f", i)), dt)
	}
	return dir, path
}

type gpuRun func(out string, exec ExecOptions) (*Report, error)

func gpuRuns(path func(string) string) map[string]gpuRun {
	ctx := context.Background()
	runs := map[string]gpuRun{
		"sfa": func(out string, exec ExecOptions) (*Report, error) {
			return RunSFA(ctx, SFAJob{Anchor: path("base"), Current: path("m0"), SFA: SFA{Beta: 0.3}, Job: Job{Out: out, Exec: exec}})
		},
		"sfa-mixed": func(out string, exec ExecOptions) (*Report, error) {
			return RunSFA(ctx, SFAJob{Anchor: path("m2"), Current: path("m1"), SFA: SFA{Beta: 0.7}, Job: Job{Out: out, Exec: exec, OutDType: dtype.BF16}})
		},
		"sfa-fisher": func(out string, exec ExecOptions) (*Report, error) {
			return RunSFA(ctx, SFAJob{Anchor: path("base"), Current: path("m1"), Fisher: path("f0"), SFA: SFA{Eta: 0.02},
				Job: Job{Out: out, Exec: exec}})
		},
	}
	method := func(name, method string, nModels int, p Params, dens []float64) {
		def, _ := methodDefs(method)
		runs[name] = func(out string, exec ExecOptions) (*Report, error) {
			j := MethodJob{Method: method, Params: p, Job: Job{Out: out, Exec: exec}}
			if def.base {
				j.Base = path("base")
			}
			for i := range nModels {
				w := []float64{0.7, -0.5, 1.25}[i]
				if def.fisher {
					w = math.Abs(w)
				}
				m := Model{Path: path(fmt.Sprint("m", i)), Weight: w, Density: math.NaN()}
				if dens != nil {
					m.Density = dens[i]
				}
				if def.fisher {
					m.Fisher = path(fmt.Sprint("f", i))
				}
				j.Models = append(j.Models, m)
			}
			return RunMethod(ctx, j)
		}
	}
	p := Params{Density: 0.3, Lambda: 0.9, T: 0.4, Gamma: 0.02, Seed: 7, Epsilon: 1e-3, Rescale: "l1"}
	for _, m := range testMethods() {
		n := 3
		if m == "slerp" {
			n = 1
		}
		if def, _ := methodDefs(m); def.maxModels > 0 {
			n = min(n, def.maxModels)
		}
		method(m, m, n, p, nil)
	}
	method("ties-densities", "ties", 3, p, []float64{0, 1, 0.55})
	method("task_arithmetic-1", "task_arithmetic", 1, p, nil)
	method("linear-2", "linear", 2, p, nil)
	inv := p
	inv.Rescale = "inverse"
	method("dare_linear-inverse", "dare_linear", 3, inv, []float64{0.4, 0, 1})
	method("dare_ties-inverse", "dare_ties", 3, inv, nil)
	bc := p
	bc.Density, bc.Gamma = 0.9, 0.05
	method("breadcrumbs-0.9", "breadcrumbs", 3, bc, nil)
	method("breadcrumbs_ties-0.9", "breadcrumbs_ties", 3, bc, nil)
	// Combinations of the task-vector options beyond the presets' defaults that the
	// device's task-vector kernel runs.
	with := func(f func(*Params)) Params { q := p; f(&q); return q }
	method("ties-no-normalize", "ties", 3, with(func(q *Params) { q.Normalize = SwitchOff }), nil)
	method("ties-inverse-no-normalize", "ties", 3, with(func(q *Params) { q.Normalize, q.Rescaling, q.Rescale = SwitchOff, SwitchOn, "inverse" }), nil)
	method("breadcrumbs-inverse", "breadcrumbs", 3, with(func(q *Params) { q.Rescaling, q.Rescale = SwitchOn, "inverse" }), nil)
	method("dare_linear-no-rescale", "dare_linear", 3, with(func(q *Params) { q.Rescaling = SwitchOff }), nil)
	method("task_arithmetic-normalize", "task_arithmetic", 3, with(func(q *Params) { q.Normalize = SwitchOn }), nil)
	return runs
}

// cpuOnly are the methods without a GPU function.
var cpuOnly = map[string]bool{"slerp": true, "model_stock": true, "della": true, "della_linear": true, "sce": true,
	"nuslerp": true, "multislerp": true, "karcher": true, "nearswap": true, "arcee_fusion": true, "ram": true, "ramplus_tl": true}

func TestGPUMatchesCPU(t *testing.T) {
	dev := &Device{GPU: openFakeGPU(t), MinElems: 1, Placement: PlaceGPU}
	dir, path := gpuFixture(t)
	for name, run := range gpuRuns(path) {
		t.Run(name, func(t *testing.T) {
			cpuOut := filepath.Join(dir, name+".cpu.safetensors")
			gpuOut := filepath.Join(dir, name+".gpu.safetensors")
			cpuRep, err := run(cpuOut, ExecOptions{Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			if cpuRep.Device != "cpu" || cpuRep.GPU != nil {
				t.Errorf("CPU-only run: device %q, gpu %+v", cpuRep.Device, cpuRep.GPU)
			}
			rep, err := run(gpuOut, ExecOptions{Threads: 2, Device: dev})
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(cpuOut)
			must(t, err)
			got, err := os.ReadFile(gpuOut)
			must(t, err)
			if !bytes.Equal(got, want) {
				t.Errorf("the GPU run wrote other bytes than the CPU run")
			}
			if rep.GPU == nil {
				t.Fatalf("no gpu report")
			}
			if cpuOnly[rep.Method] {
				if rep.Device != "cpu" || rep.GPU.Tensors != 0 || len(rep.GPU.Methods) != 0 {
					t.Errorf("%s has no GPU kernel, yet device %q, gpu %+v", rep.Method, rep.Device, rep.GPU)
				}
				return
			}
			if rep.Device != "cuda" || rep.GPU.Tensors != rep.TensorsMerged || len(rep.GPU.Methods) != 1 || rep.GPU.Methods[0] != rep.Method {
				t.Errorf("device %q, gpu %+v; want every merged tensor (%d) on cuda", rep.Device, rep.GPU, rep.TensorsMerged)
			}
			if rep.GPU.BytesToDevice < rep.BytesRead || rep.GPU.BytesFromDevice < rep.BytesWritten || rep.GPU.Launches == 0 {
				t.Errorf("gpu counts %+v for %d bytes read, %d written", rep.GPU, rep.BytesRead, rep.BytesWritten)
			}
			if rep.BytesRead == 0 || rep.BytesWritten != cpuRep.BytesWritten {
				t.Errorf("bytes read %d, written %d; the CPU wrote %d", rep.BytesRead, rep.BytesWritten, cpuRep.BytesWritten)
			}
			if (rep.L2Before == nil) != (cpuRep.L2Before == nil) || rep.L2Before != nil && (*rep.L2Before != *cpuRep.L2Before || *rep.L2After != *cpuRep.L2After) {
				t.Errorf("SFA statistics differ: %v %v, want %v %v", rep.L2Before, rep.L2After, cpuRep.L2Before, cpuRep.L2After)
			}
		})
	}
}

// measured is a device under PlaceMeasured whose calibration came out as gpuWins,
// without timing anything: the policy, not the fake driver's speed, is under test.
func measured(g *gpu.Device, minElems int64, gpuWins bool) *Device {
	return &Device{GPU: g, MinElems: minElems, measured: &Calibration{Elements: calibrationElems, GPUWins: gpuWins}}
}

// TestGPUPolicy: the threshold, and the placement: measured (the calibration decides
// for light and heavy kernels alike) or the GPU.
func TestGPUPolicy(t *testing.T) {
	g := openFakeGPU(t)
	dir, path := gpuFixture(t)
	runs := gpuRuns(path)
	cases := []struct {
		run     string
		dev     *Device
		device  string
		tensors int
	}{
		// Measured, and the CPU won: nothing goes, light or heavy.
		{"sfa", measured(g, 1, false), "cpu", 0},
		{"task_arithmetic-1", measured(g, 1, false), "cpu", 0},
		{"sfa-fisher", measured(g, 1, false), "cpu", 0},
		{"ties", measured(g, 1, false), "cpu", 0},
		// Measured, and the GPU won: everything it can take goes.
		{"linear-2", measured(g, 1, true), "cuda", 4},
		{"ties", measured(g, 1, true), "cuda", 4},
		// Asked for: everything it can take goes, unmeasured.
		{"sfa", &Device{GPU: g, MinElems: 1, Placement: PlaceGPU}, "cuda", 4},
		{"dare_ties", &Device{GPU: g, MinElems: 1, Placement: PlaceGPU}, "cuda", 4},
		// Only big.weight reaches the threshold.
		{"ties", &Device{GPU: g, MinElems: 1000, Placement: PlaceGPU}, "cuda+cpu", 1},
		{"dare_linear", &Device{GPU: g, MinElems: DefaultGPUMinElems, Placement: PlaceGPU}, "cpu", 0},
	}
	for i, c := range cases {
		rep, err := runs[c.run](filepath.Join(dir, fmt.Sprintf("policy%d.safetensors", i)), ExecOptions{Threads: 2, Device: c.dev})
		if err != nil {
			t.Fatal(err)
		}
		if rep.GPU == nil {
			t.Fatalf("%s: no gpu report (device %q)", c.run, rep.Device)
		}
		if rep.Device != c.device || rep.GPU.Tensors != c.tensors {
			t.Errorf("%s with %+v: device %q on %d tensors, want %q on %d", c.run, c.dev, rep.Device, rep.GPU.Tensors, c.device, c.tensors)
		}
		if c.dev.Placement == PlaceMeasured && rep.GPU.Calibration == nil {
			t.Errorf("%s: measured placement, but the report has no calibration", c.run)
		}
	}
}

// TestGPULazyOpen: a Device with Open opens it when a run first has a tensor it could
// take, once for every later run; a run with none (a method without a device kernel,
// tensors under MinElems) never opens it; a failed open, or a failed calibration,
// leaves the run on the CPU, with the CPU's bytes and the reason in the report.
func TestGPULazyOpen(t *testing.T) {
	dir, path := gpuFixture(t)
	runs := gpuRuns(path)
	opens := 0
	dev := &Device{MinElems: 1, Placement: PlaceGPU, Open: func() (*gpu.Device, error) {
		opens++
		return openFakeGPU(t), nil
	}}
	run := func(name string, d *Device) *Report {
		t.Helper()
		rep, err := runs[name](filepath.Join(dir, name+".lazy.safetensors"), ExecOptions{Threads: 2, Device: d})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := run("slerp", dev); opens != 0 || rep.GPU != nil || rep.Device != "cpu" {
		t.Errorf("slerp (no device kernel): %d opens, device %q, gpu %+v", opens, rep.Device, rep.GPU)
	}
	small := &Device{MinElems: 1 << 40, Open: dev.Open}
	if rep := run("ties", small); opens != 0 || rep.GPU != nil {
		t.Errorf("ties under MinElems: %d opens, gpu %+v", opens, rep.GPU)
	}
	for _, name := range []string{"ties", "sfa"} {
		if rep := run(name, dev); opens != 1 || rep.Device != "cuda" {
			t.Errorf("%s: %d opens, device %q; want one open, on cuda", name, opens, rep.Device)
		}
	}
	failing := &Device{MinElems: 1, Placement: PlaceGPU, Open: func() (*gpu.Device, error) {
		return nil, fmt.Errorf("%w: no driver here", gpu.ErrUnavailable)
	}}
	rep := run("ties", failing)
	if rep.Device != "cpu" || rep.GPU == nil || !strings.Contains(rep.GPU.Unavailable, "no driver here") || rep.GPU.Tensors != 0 {
		t.Errorf("failed open: device %q, gpu %+v", rep.Device, rep.GPU)
	}
	// A device that opens but cannot run the calibration's sample (closed here;
	// out of memory on a training GPU, say): measured placement falls back to the CPU.
	broken := &Device{MinElems: 1, FixedCost: -1, Open: func() (*gpu.Device, error) {
		g := openFakeGPU(t)
		return g, g.Close()
	}}
	if rep := run("dare_ties", broken); rep.Device != "cpu" || rep.GPU == nil || !strings.Contains(rep.GPU.Unavailable, "closed") {
		t.Errorf("failed calibration: device %q, gpu %+v", rep.Device, rep.GPU)
	}
	cpuRep, err := runs["ties"](filepath.Join(dir, "ties.cpu.lazy.safetensors"), ExecOptions{Threads: 2})
	must(t, err)
	want, err := os.ReadFile(filepath.Join(dir, "ties.cpu.lazy.safetensors"))
	must(t, err)
	got, err := os.ReadFile(filepath.Join(dir, "ties.lazy.safetensors"))
	must(t, err)
	if !bytes.Equal(got, want) || cpuRep.BytesWritten != rep.BytesWritten {
		t.Error("the run after a failed open wrote other bytes than the CPU's")
	}
}

// TestShardTotalsAddGPU: a worker's shards' device usage adds up, so that its report
// says cuda when the device ran every merged tensor of every shard.
func TestShardTotalsAddGPU(t *testing.T) {
	cal := &Calibration{GPUWins: true}
	var r shardTotals
	for _, u := range []*GPUUsage{
		{Tensors: 2, Elements: 10, Stats: gpu.Stats{BytesToDevice: 1, BytesFromDevice: 2, Launches: 3}, Calibration: cal},
		nil,
		{Tensors: 3, Elements: 20, Stats: gpu.Stats{BytesToDevice: 4, BytesFromDevice: 5, Launches: 6}},
	} {
		r.add(&shardDone{Result: Result{GPU: u}, merged: 1})
	}
	want := GPUUsage{Tensors: 5, Elements: 30, Stats: gpu.Stats{BytesToDevice: 5, BytesFromDevice: 7, Launches: 9}, Calibration: cal}
	if r.GPU == nil || *r.GPU != want {
		t.Fatalf("totals %+v, want %+v", r.GPU, want)
	}
}

// TestGPUCalibration: PlaceMeasured measures the run's own kernel class, on slices of
// its largest tensor, once per class and process; the run's report carries it, and
// the placement follows it.
func TestGPUCalibration(t *testing.T) {
	dev := &Device{GPU: openFakeGPU(t), MinElems: 1, FixedCost: -1}
	dir, path := gpuFixture(t)
	runs := gpuRuns(path)
	fx, _ := methodFixture(21, dtype.BF16, 3) // gpuFixture's tensors
	var largest int64
	for _, shape := range fx.shapes {
		largest = max(largest, numElements(shape))
	}
	// the fixture's largest tensor has two whole chunks: one is timed on each side
	sliceElems := min(calibrationElems/2, largest/2) &^ (ChunkElems - 1)
	if sliceElems == 0 {
		t.Fatalf("the fixture's largest tensor (%d elements) has no two whole chunks", largest)
	}
	run := func(name string) Calibration {
		t.Helper()
		rep, err := runs[name](filepath.Join(dir, "out.safetensors"), ExecOptions{Threads: 2, Device: dev})
		if err != nil {
			t.Fatal(err)
		}
		c := rep.GPU.Calibration
		if c == nil || !(c.CPUSeconds > 0) || !(c.GPUSeconds > 0) || c.Elements != sliceElems || c.GPUWins != (gpuMargin*c.GPUSeconds < c.CPUSeconds) {
			t.Fatalf("%s: calibration %+v", name, c)
		}
		if want := map[bool]string{true: "cuda", false: "cpu"}[c.GPUWins]; rep.Device != want {
			t.Errorf("%s: device %q after calibration %+v", name, rep.Device, c)
		}
		return *c
	}
	// A class measured again would differ in its times: equal calibrations are one
	// measurement (Calibrate returns a copy, with the run's own projection).
	ties := run("ties")
	if again := run("ties"); again != ties {
		t.Errorf("a second ties run measured again: %+v, then %+v", ties, again)
	}
	dare := run("dare_ties")
	if dare == ties {
		t.Error("dare_ties took ties's calibration")
	}
	if again := run("dare_ties"); again != dare {
		t.Errorf("a second dare_ties run measured again")
	}
	if run("sfa") == ties || run("dare_linear-inverse") == dare {
		t.Error("sfa or DARE without its L1 pass took another class's calibration")
	}
	// variants of the task-vector family with the same passes and operands
	if run("dare_ties-inverse") == run("dare_linear-inverse") || run("breadcrumbs_ties-0.9") == run("breadcrumbs-0.9") {
		t.Error("a task-vector variant took another's calibration")
	}
}

// TestGPUSkipped: under PlaceMeasured, a run whose tensors the CPU would merge in
// less time than a device could save over opening and calibrating it (FixedCost;
// here a day, so that no machine's speed decides) never opens it, and its report
// says so; with that cost taken away the same run opens and times the device.
func TestGPUSkipped(t *testing.T) {
	if got := (&Device{}).fixedCostSeconds(); got != gpuFixedCost {
		t.Errorf("the default fixed cost: %v, want gpuFixedCost", got)
	}
	dir, path := gpuFixture(t)
	runs := gpuRuns(path)
	opens := 0
	open := func() (*gpu.Device, error) {
		opens++
		return openFakeGPU(t), nil
	}
	rep, err := runs["ties"](filepath.Join(dir, "skip.safetensors"), ExecOptions{Threads: 2, Device: &Device{MinElems: 1, Open: open, FixedCost: 86400}})
	must(t, err)
	c := rep.GPU.Calibration
	if opens != 0 || rep.Device != "cpu" || c == nil || !c.DeviceSkipped || !(c.CPUSeconds > 0) || !(c.CPUProjectedSeconds > 0) || c.GPUSeconds != 0 {
		t.Fatalf("a tiny merge: %d opens, device %q, calibration %+v", opens, rep.Device, c)
	}
	rep, err = runs["ties"](filepath.Join(dir, "skip.safetensors"), ExecOptions{Threads: 2, Device: &Device{MinElems: 1, Open: open, FixedCost: -1}})
	must(t, err)
	if c := rep.GPU.Calibration; opens != 1 || c == nil || c.DeviceSkipped || !(c.GPUSeconds > 0) {
		t.Errorf("without the fixed cost: %d opens, calibration %+v", opens, c)
	}
}

// TestGPUNotPresent: under PlaceMeasured, a Present that says no driver loads stops
// the calibration before it times the CPU: no calibration in the report, the device
// never opened, its error the report's reason, and it is asked once for a Device
// that serves two runs. A Present that says yes changes nothing, and an open
// device is not asked.
func TestGPUNotPresent(t *testing.T) {
	dir, path := gpuFixture(t)
	runs := gpuRuns(path)
	out := filepath.Join(dir, "absent.safetensors")
	opens, asked := 0, 0
	open := func() (*gpu.Device, error) {
		opens++
		return openFakeGPU(t), nil
	}
	absent := fmt.Errorf("%w: no driver here", gpu.ErrUnavailable)
	dev := &Device{MinElems: 1, Open: open, FixedCost: -1, Present: func() error { asked++; return absent }}
	for _, m := range []string{"ties", "sfa"} {
		rep, err := runs[m](out, ExecOptions{Threads: 2, Device: dev})
		must(t, err)
		if opens != 0 || rep.Device != "cpu" || rep.GPU == nil || rep.GPU.Calibration != nil || rep.GPU.Unavailable != absent.Error() {
			t.Fatalf("%s without a driver: %d opens, device %q, report %+v", m, opens, rep.Device, rep.GPU)
		}
	}
	if asked != 1 {
		t.Errorf("Present asked %d times for two runs, want once", asked)
	}
	rep, err := runs["ties"](out, ExecOptions{Threads: 2, Device: &Device{MinElems: 1, Open: open, FixedCost: -1, Present: func() error { return nil }}})
	must(t, err)
	if c := rep.GPU.Calibration; opens != 1 || c == nil || !(c.CPUSeconds > 0) || !(c.GPUSeconds > 0) {
		t.Errorf("with a driver present: %d opens, calibration %+v", opens, c)
	}
	g := openFakeGPU(t)
	rep, err = runs["ties"](out, ExecOptions{Threads: 2, Device: &Device{GPU: g, MinElems: 1, FixedCost: -1, Present: func() error { return absent }}})
	must(t, err)
	if c := rep.GPU.Calibration; c == nil || !(c.GPUSeconds > 0) || rep.GPU.Unavailable != "" {
		t.Errorf("an open device was asked whether its driver loads: report %+v", rep.GPU)
	}
}

// TestCalibrationSamples: the slices Calibrate times are views of the tensor's bytes,
// adjacent, of whole chunks, at most half the tensor; tensors not mapped whole or of
// fewer than two chunks have none, and their synthetic sample has their layout.
func TestCalibrationSamples(t *testing.T) {
	n := int64(5*ChunkElems + 7)
	mk := func(dt dtype.DType) Operand {
		b := make([]byte, dt.Bytes(n))
		for j := range b {
			b[j] = byte(j * 7)
		}
		return Operand{DType: dt, Data: b, File: "f"}
	}
	tp := &TensorPlan{Name: "w", Shape: []int64{n}, OutDType: dtype.BF16, Merge: true,
		In: []Operand{mk(dtype.BF16), mk(dtype.F32)}, Aux: []Operand{mk(dtype.F16)}}
	a, b, ok := tensorSlices(tp, 1<<40)
	if !ok || a.NumElements() != 2*ChunkElems || b.NumElements() != 2*ChunkElems {
		t.Fatalf("slices of %d elements: ok %v", n, ok)
	}
	for i, op := range append(tp.In, tp.Aux...) {
		ao := append(a.In, a.Aux...)[i]
		bo := append(b.In, b.Aux...)[i]
		m := op.DType.Bytes(2 * ChunkElems)
		if ao.DType != op.DType || !bytes.Equal(ao.Data, op.Data[:m]) || !bytes.Equal(bo.Data, op.Data[m:2*m]) {
			t.Errorf("operand %d: the slices are not the tensor's bytes", i)
		}
	}
	if a, _, _ := tensorSlices(tp, ChunkElems+5); a.NumElements() != ChunkElems {
		t.Errorf("bounded to one chunk and 5: %d elements", a.NumElements())
	}
	small := &TensorPlan{Name: "s", Shape: []int64{2*ChunkElems - 1}, OutDType: dtype.BF16, Merge: true,
		In: []Operand{{DType: dtype.BF16, Data: make([]byte, 2*(2*ChunkElems-1))}}}
	if _, _, ok := tensorSlices(small, 1<<40); ok {
		t.Error("slices of a tensor of fewer than two chunks")
	}
	loaded := *tp
	loaded.In = []Operand{{DType: dtype.BF16, size: dtype.BF16.Bytes(n), load: func() ([]byte, error) { return nil, nil }}}
	if _, _, ok := tensorSlices(&loaded, 1<<40); ok {
		t.Error("slices of an operand that is not mapped")
	}
	s, err := syntheticSample(tp, 100)
	if err != nil || len(s.In) != 2 || len(s.Aux) != 1 || s.In[1].DType != dtype.F32 || len(s.Aux[0].Data) != 200 || s.OutDType != dtype.BF16 {
		t.Fatalf("synthetic sample %+v, %v", s, err)
	}
}

func TestGPUDistance(t *testing.T) {
	dev := &Device{GPU: openFakeGPU(t), MinElems: 1, Placement: PlaceGPU}
	_, path := gpuFixture(t)
	a, b, base := openT(t, path("m0")), openT(t, path("m1")), openT(t, path("base"))
	for _, withBase := range []bool{false, true} {
		var bs Source
		if withBase {
			bs = base
		}
		cpu, err := CompareDevices(context.Background(), a, b, bs, CompareOptions{Exec: ExecOptions{Threads: 2}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := CompareDevices(context.Background(), a, b, bs, CompareOptions{Exec: ExecOptions{Threads: 2, Device: dev}})
		if err != nil {
			t.Fatal(err)
		}
		if got.Device != "cuda" || got.GPU.Tensors != len(got.Tensors) || cpu.Device != "cpu" {
			t.Errorf("base %v: device %q (gpu %+v), CPU run %q", withBase, got.Device, got.GPU, cpu.Device)
		}
		gj, _ := got.Total.MarshalJSON()
		cj, _ := cpu.Total.MarshalJSON()
		if !bytes.Equal(gj, cj) {
			t.Errorf("base %v: total %s, want %s", withBase, gj, cj)
		}
		for i := range cpu.Tensors {
			gj, _ := got.Tensors[i].MarshalJSON()
			cj, _ := cpu.Tensors[i].MarshalJSON()
			if !bytes.Equal(gj, cj) {
				t.Errorf("base %v: %s, want %s", withBase, gj, cj)
			}
		}
	}
}

// TestGPUGGUFBlockTypesStayOnCPU: in a Q8_0 GGUF merge, the block-type tensors are
// decoded and merged on the CPU and only the float ones (norms) go to the device;
// the file is the CPU-only run's.
func TestGPUGGUFBlockTypesStayOnCPU(t *testing.T) {
	dev := &Device{GPU: openFakeGPU(t), MinElems: 1, Placement: PlaceGPU}
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name+".gguf") }
	ts := gguftest.Random(gguftest.Tiny, dtype.Q8_0, 1)
	floats := 0
	for _, tn := range ts {
		if gpuDType(tn.DType) {
			floats++
		}
	}
	if floats == 0 || floats == len(ts) {
		t.Fatalf("fixture has %d float tensors of %d: want some of each", floats, len(ts))
	}
	must(t, gguftest.WriteFile(path("base"), gguftest.Metadata(gguftest.Tiny, "base"), ts))
	for i := range 2 {
		must(t, gguftest.WriteFile(path(fmt.Sprint("m", i)), gguftest.Metadata(gguftest.Tiny, "m"), gguftest.Perturb(ts, 0.5, uint64(2+i))))
	}
	run := func(out string, exec ExecOptions) *Report {
		rep, err := RunMethod(context.Background(), MethodJob{Method: "ties", Base: path("base"),
			Models: []Model{{Path: path("m0"), Weight: 1, Density: math.NaN()}, {Path: path("m1"), Weight: 0.5, Density: math.NaN()}},
			Params: Params{Density: 0.3, Lambda: 1, Rescale: "l1"}, Job: Job{Out: out, Exec: exec}})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	run(path("cpu"), ExecOptions{Threads: 2})
	rep := run(path("gpu"), ExecOptions{Threads: 2, Device: dev})
	want, err := os.ReadFile(path("cpu"))
	must(t, err)
	got, err := os.ReadFile(path("gpu"))
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Error("the GGUF merge with the device wrote other bytes than the CPU-only one")
	}
	if rep.Device != "cuda+cpu" || rep.GPU.Tensors != floats {
		t.Errorf("device %q on %d tensors; want cuda+cpu on the %d float tensors", rep.Device, rep.GPU.Tensors, floats)
	}
}

// TestGPUCancel: a cancelled run with the device on stops and writes nothing.
func TestGPUCancel(t *testing.T) {
	dev := &Device{GPU: openFakeGPU(t), MinElems: 1, Placement: PlaceGPU}
	dir, path := gpuFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(dir, "cancelled.safetensors")
	_, err := RunMethod(ctx, MethodJob{Method: "ties", Base: path("base"), Models: []Model{{Path: path("m0"), Weight: 1, Density: math.NaN()}},
		Params: Params{Density: 0.5, Lambda: 1}, Job: Job{Out: out, Exec: ExecOptions{Device: dev}}})
	if err == nil {
		t.Fatal("a cancelled run succeeded")
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("the cancelled run left %s: %v", out, err)
	}

	// Cancelled mid-run, from inside the engine once the device's first chunk is
	// written.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	job := MethodJob{Method: "ties", Base: path("base"), Models: []Model{{Path: path("m0"), Weight: 1, Density: math.NaN()}},
		Params: Params{Density: 0.5, Lambda: 1}, Job: Job{Out: out, Exec: ExecOptions{Device: dev, Threads: 1}}}
	var check func()
	job.Job.OnStart, job.Job.Exec.Progress, check = cancelMidRun(t, out, cancel)
	rep, err := RunMethod(ctx, job)
	check()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled mid-run: got %v (report %+v), want context.Canceled", err, rep)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() == filepath.Base(out) || strings.Contains(e.Name(), ".gomerge-") {
			t.Errorf("the run cancelled mid-run left %s", e.Name())
		}
	}
}
