package merge

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/gpu"
)

// The engine adds the device's per-block partial sums as its own per-chunk ones, so a
// block must be a chunk. Both array lengths must be non-negative: they compile only
// when the two constants are equal.
var (
	_ [gpu.BlockElems - ChunkElems]struct{}
	_ [ChunkElems - gpu.BlockElems]struct{}
)

// DefaultGPUMinElems is the smallest tensor worth sending to a GPU (the CLI's
// --gpu-min-elems default): below about a million elements, the launch and copy
// latencies cost more than the device saves.
const DefaultGPUMinElems = 1 << 20

// Placement says which of the tensors a device can run go to it.
//
// The first real device measured (an H200 on PCIe with 16 CPU cores, 2026-12-04,
// docs/gpu.md) ran every method slower than the CPU engine on the same machine, up to
// 5.3 times (DARE about even), the heavy kernels (TIES, breadcrumbs, Fisher) as well
// as the light ones: the device streams every operand through pinned staging memory and reads the
// inputs up to four times (TIES's cuts), so the host's copies decide, not the math.
// A GPU is therefore used only where asked for or measured faster.
type Placement int

const (
	// PlaceMeasured (--device auto) calibrates the run's kernel class (once per
	// class and process; see Calibrate) and sends the run's tensors the device could
	// take to it only if the device ran the sample gpuMargin times faster.
	PlaceMeasured Placement = iota
	// PlaceGPU (--device cuda) sends every tensor the device can run.
	PlaceGPU
)

// Device is a GPU the engine may use, and the policy that decides which tensors go to
// it. The caller opens the gpu.Device (or gives Open, for the engine to call when a
// run first needs it) and closes it if it was opened; one Device may serve several runs
// (a recipe's steps), one at a time, which keeps each run's byte counts its own.
//
// The policy (placeOnGPU): a merged tensor may go to the GPU when its kernel has a GPU
// function, it has at least MinElems elements, and every operand and the output are
// F16, BF16, F32 or F64 (GGUF block types are decoded on the CPU); Placement then
// says whether it does.
type Device struct {
	// GPU is the open device; nil with Open set until a run first has a tensor
	// the device could take.
	GPU *gpu.Device
	// Open, if set and GPU is nil, opens the device when a run first needs it, so
	// that a merge with nothing for the GPU (a method without a device kernel, GGUF
	// blocks, small tensors) does not pay for the driver and the calibration
	// (0.35–0.45 s on the H200 of docs/gpu.md). Its error leaves the run on the CPU,
	// and the report says why (GPUReport.Unavailable).
	Open func() (*gpu.Device, error)
	// Present, if set, says cheaply whether Open could succeed at all (the driver
	// library loads: gpu.DriverLoads). PlaceMeasured asks it before its
	// calibration times the CPU, so that a machine without a driver neither times
	// anything nor opens: timing that sample first cost a 1 GB sfa merge 0.19 s of
	// its 1.13 s of CPU, and TIES 0.05 of 2.65 s (medians, 2026-12-05,
	// bench/README.md). Its error, like Open's, leaves the run on the CPU and is
	// the report's reason.
	Present func() error
	// MinElems: tensors with fewer elements stay on the CPU (0: any non-empty
	// tensor may go).
	MinElems  int64
	Placement Placement

	opening     sync.Once
	openErr     error
	probing     sync.Once
	presentErr  error   // Present's answer, asked once
	openSeconds float64 // what Open took, when the engine called it
	mu          sync.Mutex
	calibs      map[string]*calibration // by calibrationKey
	// FixedCost is what PlaceMeasured takes opening and calibrating the device to
	// cost, in seconds: a run whose tensors the CPU would merge in too little time
	// for a device gpuMargin times faster to save that never opens it. 0:
	// gpuFixedCost; negative: none, so every run with a tensor the device could
	// take opens and calibrates it (tests on small fixtures).
	FixedCost float64

	// measured, if set, stands for every calibration (tests of the policy).
	measured *Calibration
}

// calibration is one kernel class's measurement: the CPU's time for a sample of
// elems elements, and once the device was timed too, the whole of it or the error
// that stopped it.
type calibration struct {
	cpu, cpuWall float64 // the sample's time; the CPU side's, warm-up included
	elems        int64
	c            *Calibration
	err          error
}

// usable reports whether d may run tensors at all: open, or able to open.
func (d *Device) usable() bool { return d != nil && (d.GPU != nil || d.Open != nil) }

// device is d.GPU, opened first with d.Open if it is not yet; the error is Open's,
// kept for later calls.
func (d *Device) device() (*gpu.Device, error) {
	d.opening.Do(func() {
		if d.GPU == nil && d.Open != nil {
			start := time.Now()
			d.GPU, d.openErr = d.Open()
			d.openSeconds = time.Since(start).Seconds()
		}
	})
	if d.openErr != nil {
		return nil, d.openErr
	}
	return d.GPU, nil
}

// present is Present's answer, asked once; nil where the device is open or there is
// nothing to ask.
func (d *Device) present() error {
	d.probing.Do(func() {
		if d.GPU == nil && d.Present != nil {
			d.presentErr = d.Present()
		}
	})
	if d.GPU != nil {
		return nil
	}
	return d.presentErr
}

// Calibration is the measurement behind PlaceMeasured, of one kernel class.
type Calibration struct {
	Elements   int64   `json:"elements"`    // of each side's sample
	CPUSeconds float64 `json:"cpu_seconds"` // the CPU engine on Threads goroutines
	GPUSeconds float64 `json:"gpu_seconds"` // the kernel's device function, copies included
	Threads    int     `json:"threads"`
	// GPUWins: the device took less than 1/gpuMargin of the CPU's time.
	GPUWins bool `json:"gpu_wins"`
	// CPUProjectedSeconds is what the CPU would take over the run's tensors the
	// device could take, at CPUSeconds' rate; DeviceSkipped says it was too little
	// for the device to save more than opening and calibrating it costs
	// (gpuFixedCost), so the device was neither opened nor timed.
	CPUProjectedSeconds float64 `json:"cpu_projected_seconds"`
	DeviceSkipped       bool    `json:"device_skipped,omitempty"`
	// Seconds is what the whole calibration took (the warm-ups, the kernels
	// built, both sides), GPUWarmupSeconds the device's first run (the driver's JIT
	// of the module, the staging buffers).
	Seconds          float64 `json:"seconds"`
	GPUWarmupSeconds float64 `json:"gpu_warmup_seconds"`
}

// gpuMargin is how much faster than the CPU the device must run a calibration's
// sample for PlaceMeasured to use it. The whole run's device path does work a
// sample's does not: the output written from the one goroutine that feeds the
// device (while the CPU's workers write in parallel with their compute), each
// tensor's pipeline filled and drained, and the staging copies competing with the
// CPU workers that run the small tensors. On the H200 of docs/gpu.md (runs 4 and 5)
// the whole runs' device times were 1.1–3.8× what the samples projected and the
// CPU's 0.35–1.2×: with a sample 2–2.7× faster on the device TIES still ran slower
// there (1.87 s against 1.34 s), and DARE, 4.1–6.5× faster on the sample, ran twice
// as fast (1.34 s against 2.86 s). A measured constant of one machine, so the
// report gives both times.
const gpuMargin = 3

// calibrationElems bounds what Calibrate times: up to 8 Mi elements of the run's
// largest tensor on each side, 16 MiB per BF16 operand, large enough that the
// device's fixed cost per tensor (a few ms of launches and synchronisation on the
// H200 of docs/gpu.md) does not decide, and small enough to cost a few tens of
// milliseconds once per process and kernel class.
const calibrationElems = 1 << 24

// warmupElems is the synthetic sample each side runs first, so that the timed runs
// do not pay for the driver's JIT, the staging buffers or the scratch's allocation.
const warmupElems = 2 * ChunkElems

// Calibrate measures the kernel class of tensor t (k, the run's kernelFor(t), names
// it; the samples get kernels of their own from kernelFor), on t itself:
// kernelFor's kernel on two adjacent slices of t of up to calibrationElems/2 whole
// chunks each, the first on the CPU engine (Execute on threads workers), the second
// on the device (the kernel's device function: copies through the staging buffers,
// the kernels, the results back), the outputs discarded, after each side has run a
// small synthetic sample. Real slices rather than a synthetic sample of the same size
// (run 4 of docs/gpu.md timed one, 16 Mi elements of ordinary weights): the two
// gave about the same ratios on the H200, but the slices cost nothing to make, read
// the run's own mapped pages as the run does, and rank the run's own magnitudes. A
// tensor whose operands are not mapped whole (a compressed input, or inputs the run
// copies in spans: Job.Reads), or of fewer than two chunks, is timed on a synthetic
// sample instead, twice on each side. The device must win by gpuMargin.
//
// The CPU's side runs first. runElems is the elements of the run's tensors the
// device could take: where the CPU would merge them, at its sample's rate, in too
// little time for a device gpuMargin times faster to save FixedCost, the device is
// neither opened nor timed (Calibration.DeviceSkipped); otherwise Calibrate opens
// it, and an error opening it is returned.
//
// A class is the kernel's device function and variant, its passes and the operands'
// layout: one per method and options, measured once per process (a recipe's steps of
// one method measure once).
func (d *Device) Calibrate(ctx context.Context, t *TensorPlan, k *Kernel, kernelFor func(*TensorPlan) Kernel, withOutput bool, threads int, runElems int64) (*Calibration, error) {
	if d.measured != nil {
		return d.measured, nil
	}
	if k.Err != nil || k.GPU == nil {
		return nil, fmt.Errorf("calibrating the GPU: tensor %q has no device kernel", t.Name)
	}
	if err := d.present(); err != nil {
		return nil, err // no driver: nothing to time the CPU against
	}
	key := calibrationKey(t, k, withOutput)
	threads = max(1, threads)
	d.mu.Lock()
	defer d.mu.Unlock()
	cal := d.calibs[key]
	if cal == nil {
		begin := time.Now()
		cs, elems, err := calibrateCPU(ctx, t, kernelFor, withOutput, threads)
		if ctx.Err() != nil {
			return nil, ctx.Err() // not kept: a cancelled run measured nothing
		}
		if err != nil {
			return nil, err
		}
		cal = &calibration{cpu: cs, cpuWall: time.Since(begin).Seconds(), elems: elems}
		if d.calibs == nil {
			d.calibs = map[string]*calibration{}
		}
		d.calibs[key] = cal
	}
	// What the CPU would take over the run's tensors the device could take, at the
	// sample's rate: where even a device gpuMargin times faster would save less
	// than opening and calibrating it costs, it is not opened.
	projected := cal.cpu * float64(runElems) / float64(cal.elems)
	if projected*(1-1/float64(gpuMargin)) < d.fixedCostSeconds() {
		return &Calibration{Elements: cal.elems, CPUSeconds: cal.cpu, Threads: threads, CPUProjectedSeconds: projected, DeviceSkipped: true,
			Seconds: cal.cpuWall}, nil
	}
	if cal.c == nil && cal.err == nil {
		dev, err := d.device()
		if err != nil {
			return nil, err // not kept: the open's error is, by device
		}
		cal.c, cal.err = calibrateGPU(ctx, dev, t, kernelFor, withOutput, threads, cal.cpu)
		if cal.c != nil {
			cal.c.Seconds += cal.cpuWall
		}
		if ctx.Err() != nil {
			cal.c, cal.err = nil, nil
			return nil, ctx.Err()
		}
	}
	if cal.err != nil {
		return nil, cal.err
	}
	c := *cal.c
	c.CPUProjectedSeconds = projected
	return &c, nil
}

// gpuFixedCost is what opening a device and calibrating a kernel class cost on the
// H200 of docs/gpu.md (run 7): the open 0.25–0.33 s, the calibration 0.12–0.56 s.
const gpuFixedCost = 0.4

// fixedCostSeconds is FixedCost, or gpuFixedCost for 0.
func (d *Device) fixedCostSeconds() float64 {
	switch {
	case d.FixedCost < 0:
		return 0
	case d.FixedCost > 0:
		return d.FixedCost
	}
	return gpuFixedCost
}

// calibrationKey names t's kernel class: the code of k's device function (the same
// for every tensor a method's kernel builds, whatever the closure holds), the
// variant it runs (Kernel.GPUClass: one device function serves the task-vector
// family), the number of its passes, whether the run writes, and the operands'
// dtypes.
func calibrationKey(t *TensorPlan, k *Kernel, withOutput bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%x %s passes=%d out=%v:%v in=", reflect.ValueOf(k.GPU).Pointer(), k.GPUClass, len(k.Passes), withOutput, t.OutDType)
	for _, op := range t.In {
		b.WriteString(op.DType.String() + ",")
	}
	b.WriteString(" aux=")
	for _, op := range t.Aux {
		b.WriteString(op.DType.String() + ",")
	}
	return b.String()
}

// calibrationSamples are the samples Calibrate times (see there): a warm-up for
// each side, the CPU's and the device's, and how many runs each takes.
func calibrationSamples(t *TensorPlan) (warm, cpuSample, gpuSample *TensorPlan, runs int, err error) {
	if warm, err = syntheticSample(t, warmupElems); err != nil {
		return nil, nil, nil, 0, fmt.Errorf("calibrating the GPU: %w", err)
	}
	cpuSample, gpuSample, ok := tensorSlices(t, calibrationElems/2)
	if ok {
		return warm, cpuSample, gpuSample, 1, nil
	}
	s, err := syntheticSample(t, min(calibrationElems/2, t.NumElements()))
	if err != nil {
		return nil, nil, nil, 0, fmt.Errorf("calibrating the GPU: %w", err)
	}
	return warm, s, s, 2, nil
}

// bestOf is the least time of runs runs of f on s.
func bestOf(f func(*TensorPlan) error, s *TensorPlan, runs int) (float64, error) {
	var b float64
	for i := range runs {
		start := time.Now()
		if err := f(s); err != nil {
			return 0, err
		}
		if s := time.Since(start).Seconds(); i == 0 || s < b {
			b = s
		}
	}
	return b, nil
}

// calibrationOutput is where a calibration's merges go: nowhere.
func calibrationOutput(t *TensorPlan, withOutput bool) (Sink, gpu.Output) {
	out := gpu.Output{DType: t.OutDType}
	if !withOutput {
		return nil, out
	}
	out.W = discard{}
	return discardSink{}, out
}

// calibrateCPU times the CPU engine on its sample, after its warm-up, and returns
// the time and the sample's elements.
func calibrateCPU(ctx context.Context, t *TensorPlan, kernelFor func(*TensorPlan) Kernel, withOutput bool, threads int) (float64, int64, error) {
	warm, sample, _, runs, err := calibrationSamples(t)
	if err != nil {
		return 0, 0, err
	}
	sink, _ := calibrationOutput(t, withOutput)
	onCPU := func(s *TensorPlan) error {
		plan := &Plan{Inputs: make([]Source, len(s.In)), Aux: make([]Source, len(s.Aux)), Tensors: []TensorPlan{*s}}
		_, err := Execute(ctx, plan, sink, kernelFor, ExecOptions{Threads: threads})
		return err
	}
	if _, err := bestOf(onCPU, warm, 1); err != nil {
		return 0, 0, fmt.Errorf("calibrating on the CPU: %w", err)
	}
	cs, err := bestOf(onCPU, sample, runs)
	if err != nil {
		return 0, 0, fmt.Errorf("calibrating on the CPU: %w", err)
	}
	return cs, sample.NumElements(), nil
}

// calibrateGPU times the kernel's device function on its sample, after its warm-up,
// and returns the whole calibration given the CPU's time cs.
func calibrateGPU(ctx context.Context, dev *gpu.Device, t *TensorPlan, kernelFor func(*TensorPlan) Kernel, withOutput bool, threads int, cs float64) (*Calibration, error) {
	begin := time.Now()
	warm, _, sample, runs, err := calibrationSamples(t)
	if err != nil {
		return nil, err
	}
	_, out := calibrationOutput(t, withOutput)
	// The device's side reads the run's mapped pages too: a fault there (an input
	// truncated under the run) is an error naming the tensor, as in runGPU.
	onGPU := func(s *TensorPlan) error {
		return guarded(s, func() error {
			k := kernelFor(s)
			_, err := k.GPU(ctx, dev, s, out)
			return err
		})()
	}
	gw, err := bestOf(onGPU, warm, 1)
	if err != nil {
		return nil, fmt.Errorf("calibrating the GPU: %w", err)
	}
	gs, err := bestOf(onGPU, sample, runs)
	if err != nil {
		return nil, fmt.Errorf("calibrating the GPU: %w", err)
	}
	return &Calibration{Elements: sample.NumElements(), CPUSeconds: cs, GPUSeconds: gs, Threads: threads, GPUWins: gpuMargin*gs < cs,
		Seconds: time.Since(begin).Seconds(), GPUWarmupSeconds: gw}, nil
}

// tensorSlices is two adjacent slices of t's first elements, of m elements each (m
// at most half of t, in whole chunks, at most max), as tensors of their own whose
// operands are views of t's mapped bytes; ok is false where t's operands are not
// mapped whole or t has fewer than two chunks.
func tensorSlices(t *TensorPlan, most int64) (a, b *TensorPlan, ok bool) {
	m := min(most, t.NumElements()/2) &^ (ChunkElems - 1)
	if m == 0 {
		return nil, nil, false
	}
	for _, ops := range [][]Operand{t.In, t.Aux} {
		for i := range ops {
			if op := &ops[i]; op.load != nil || op.base != 0 || int64(len(op.Data)) != op.DType.Bytes(t.NumElements()) {
				return nil, nil, false
			}
		}
	}
	slice := func(from int64) *TensorPlan {
		s := &TensorPlan{Name: t.Name, Shape: []int64{m}, OutDType: t.OutDType, Merge: true}
		view := func(op Operand) Operand {
			return Operand{DType: op.DType, File: op.File, Data: op.Data[op.DType.Bytes(from):op.DType.Bytes(from+m)]}
		}
		for _, op := range t.In {
			s.In = append(s.In, view(op))
		}
		for _, op := range t.Aux {
			s.Aux = append(s.Aux, view(op))
		}
		return s
	}
	return slice(0), slice(m), true
}

// syntheticSample is a tensor of n elements laid out as t (its operands' count and
// dtypes, its output dtype) holding ordinary weights, about ±0.01, different in
// every operand (so that task vectors are not zero) and positive in the auxiliary
// ones (Fisher's).
func syntheticSample(t *TensorPlan, n int64) (*TensorPlan, error) {
	s := &TensorPlan{Name: t.Name, Shape: []int64{n}, OutDType: t.OutDType, Merge: true}
	vals := make([]float32, n)
	for i, op := range append(append([]Operand(nil), t.In...), t.Aux...) {
		for j := range vals {
			v := float32(0.01) * (1 + float32((j*7+i*131)%997)/997)
			if (j+i)%3 == 0 && i < len(t.In) {
				v = -v
			}
			vals[j] = v
		}
		b := make([]byte, op.DType.Bytes(n))
		if err := dtype.Encode(b, vals, op.DType); err != nil {
			return nil, err
		}
		o := Operand{DType: op.DType, Data: b, File: "calibration sample"}
		if i < len(t.In) {
			s.In = append(s.In, o)
		} else {
			s.Aux = append(s.Aux, o)
		}
	}
	return s, nil
}

// discardSink is a Sink that drops what it is given.
type discardSink struct{}

func (discardSink) WriteAt(int, int64, []byte) error { return nil }

// discard is an io.WriterAt that drops what it is given.
type discard struct{}

func (discard) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

var _ io.WriterAt = discard{}

// GPUFunc does a kernel's whole tensor on a device: the merge (written through out,
// whose W is nil when the run only reduces) and the kernel's statistics, returned
// as the engine's per-chunk partials (NumStats entries per 65,536-element chunk, in
// chunk order; nil when the kernel has none), which Execute adds in chunk order as it
// adds the CPU's. It must give the CPU path's bits.
type GPUFunc func(ctx context.Context, dev *gpu.Device, t *TensorPlan, out gpu.Output) (perChunk []float64, err error)

// gpuDType reports whether the device's kernels read and write d.
func gpuDType(d dtype.DType) bool {
	switch d {
	case dtype.F16, dtype.BF16, dtype.F32, dtype.F64:
		return true
	}
	return false
}

// gpuCandidate reports whether tensor t could run on the device at all.
func gpuCandidate(dev *Device, t *TensorPlan, k *Kernel, withOutput bool) bool {
	n := t.NumElements()
	if k.GPU == nil || !t.Merge || n == 0 || n < dev.MinElems {
		return false
	}
	if withOutput && !gpuDType(t.OutDType) || !withOutput && k.Merge != nil {
		return false // a merge run only to reduce: the CPU does it
	}
	for _, ops := range [][]Operand{t.In, t.Aux} {
		for _, op := range ops {
			if !gpuDType(op.DType) {
				return false
			}
		}
	}
	return true
}

// gpuOperands converts plan operands to the device's (the same bytes, no copy).
func gpuOperands(ops []Operand) []gpu.Operand {
	out := make([]gpu.Operand, len(ops))
	for i, op := range ops {
		out[i] = gpu.Operand{Data: op.Data, DType: op.DType}
	}
	return out
}

// GPUUsage is what the device did during one Execute.
type GPUUsage struct {
	Tensors  int   // merged tensors it ran
	Elements int64 // their elements
	// Stats are the device's counts over the run (calibration excluded).
	Stats       gpu.Stats
	Calibration *Calibration // when the placement was decided by one
	// Unavailable is why the device could not be used when the run first needed
	// it: Device.Open's error, or the calibration's (a device that opened but could
	// not run the sample); the run was then the CPU's.
	Unavailable string
}

// GPUReport is the "gpu" object of --json: the device, what it ran, and what it cost.
type GPUReport struct {
	Name              string       `json:"name,omitempty"`
	ComputeCapability string       `json:"compute_capability,omitempty"`
	Multiprocessors   int          `json:"multiprocessors,omitempty"`
	MemoryBytes       int64        `json:"memory_bytes,omitempty"`
	DriverVersion     int          `json:"driver_version,omitempty"`
	MinElems          int64        `json:"min_elems"`
	Tensors           int          `json:"tensors"`
	Elements          int64        `json:"elements"`
	Methods           []string     `json:"methods"` // the methods that ran there
	BytesToDevice     int64        `json:"bytes_to_device"`
	BytesFromDevice   int64        `json:"bytes_from_device"`
	Launches          int64        `json:"launches"`
	Calibration       *Calibration `json:"calibration,omitempty"`
	// OpenSeconds is what opening the device took (the driver, the primary context,
	// the module), where the engine opened it (--device auto); 0 otherwise.
	OpenSeconds float64 `json:"open_seconds,omitempty"`
	// Unavailable says why no GPU was used when one was looked for (--device auto):
	// the error of gpu.Open, or of the calibration. The other fields are then zero.
	Unavailable string `json:"unavailable,omitempty"`
}

// deviceReport fills a report's device fields from a run's usage: "cpu" when the
// device ran nothing, "cuda" when it ran every merged tensor, "cuda+cpu" otherwise.
func deviceReport(dev *Device, u *GPUUsage, method string, merged int) (string, *GPUReport) {
	if dev == nil || u == nil {
		return "cpu", nil
	}
	if u.Unavailable != "" {
		return "cpu", &GPUReport{MinElems: dev.MinElems, Methods: []string{}, Unavailable: u.Unavailable}
	}
	if dev.GPU == nil { // the calibration found too little work to open it for
		return "cpu", &GPUReport{MinElems: dev.MinElems, Methods: []string{}, Calibration: u.Calibration}
	}
	info := dev.GPU.Info()
	r := &GPUReport{
		Name: info.Name, ComputeCapability: fmt.Sprintf("%d.%d", info.Major, info.Minor),
		Multiprocessors: info.Multiprocessors, MemoryBytes: info.TotalMem, DriverVersion: info.DriverVersion,
		MinElems: dev.MinElems, Tensors: u.Tensors, Elements: u.Elements, Methods: []string{},
		BytesToDevice: u.Stats.BytesToDevice, BytesFromDevice: u.Stats.BytesFromDevice, Launches: u.Stats.Launches,
		Calibration: u.Calibration, OpenSeconds: dev.openSeconds,
	}
	switch {
	case u.Tensors == 0:
		return "cpu", r
	case u.Tensors == merged:
		r.Methods = []string{method}
		return "cuda", r
	}
	r.Methods = []string{method}
	return "cuda+cpu", r
}

// gpuWriter is a tensor's gpu.Output.W: the engine's sink at the tensor's index, with
// the byte and progress counts the CPU path keeps.
type gpuWriter struct {
	sink         Sink
	ti           int
	t            *TensorPlan
	outSize      int64
	inPerElem    int64 // input bytes per element, for progress
	bytesWritten *atomic.Int64
	progress     func(int64)
}

func (w *gpuWriter) WriteAt(p []byte, off int64) (int, error) {
	if err := w.sink.WriteAt(w.ti, off, p); err != nil {
		return 0, &OutputError{Path: fmt.Sprintf("tensor %q", w.t.Name), Err: err}
	}
	w.bytesWritten.Add(int64(len(p)))
	if w.progress != nil {
		w.progress(int64(len(p)) / w.outSize * w.inPerElem)
	}
	return len(p), nil
}

// runGPU does tensor ti on the device and stores its per-chunk statistics in
// partials (nil when the kernel keeps none). Bytes read count each operand once: the
// device may stream an input more than once (TIES's rank passes), which the report's
// bytes_to_device shows.
func runGPU(ctx context.Context, dev *gpu.Device, t *TensorPlan, ti int, k *Kernel, sink Sink, partials []float64,
	bytesRead, bytesWritten *atomic.Int64, progress func(int64)) error {
	var inPerElem, read int64
	for _, op := range t.In {
		inPerElem += int64(op.DType.Size())
		read += op.Len()
	}
	for _, op := range t.Aux {
		read += op.Len()
	}
	out := gpu.Output{DType: t.OutDType}
	if sink != nil {
		out.W = &gpuWriter{sink: sink, ti: ti, t: t, outSize: int64(t.OutDType.Size()), inPerElem: inPerElem,
			bytesWritten: bytesWritten, progress: progress}
	}
	stats, err := k.GPU(ctx, dev, t, out)
	if err != nil {
		return fmt.Errorf("tensor %q on the GPU: %w", t.Name, err)
	}
	if partials != nil {
		if len(stats) != len(partials) {
			return fmt.Errorf("tensor %q on the GPU: %d partial sums, want %d", t.Name, len(stats), len(partials))
		}
		copy(partials, stats)
	}
	bytesRead.Add(read)
	if sink == nil && progress != nil {
		progress(inPerElem * t.NumElements())
	}
	return nil
}
