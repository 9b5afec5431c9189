package merge

import (
	"context"
	"fmt"
	"io"
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
	// PlaceMeasured (--device auto) calibrates once, on the first run that has a
	// tensor the device could take, and sends every such tensor to the device only if
	// the device was faster (see Calibrate).
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
	// MinElems: tensors with fewer elements stay on the CPU (0: any non-empty
	// tensor may go).
	MinElems  int64
	Placement Placement

	opening   sync.Once
	openErr   error
	calibrate sync.Once
	calib     *Calibration
	calibErr  error
}

// usable reports whether d may run tensors at all: open, or able to open.
func (d *Device) usable() bool { return d != nil && (d.GPU != nil || d.Open != nil) }

// device is d.GPU, opened first with d.Open if it is not yet; the error is Open's,
// kept for later calls.
func (d *Device) device() (*gpu.Device, error) {
	d.opening.Do(func() {
		if d.GPU == nil && d.Open != nil {
			d.GPU, d.openErr = d.Open()
		}
	})
	if d.openErr != nil {
		return nil, d.openErr
	}
	return d.GPU, nil
}

// Calibration is the start-up measurement behind PlaceMeasured.
type Calibration struct {
	Elements   int64   `json:"elements"`    // of the BF16 sample
	CPUSeconds float64 `json:"cpu_seconds"` // the CPU engine's fused lerp on Threads goroutines
	GPUSeconds float64 `json:"gpu_seconds"` // the device's Lerp, copies included
	Threads    int     `json:"threads"`
	GPUWins    bool    `json:"gpu_wins"`
}

// calibrationElems is the sample Calibrate times: 4 Mi BF16 elements, 8 MiB per
// operand, large enough that the copies run at bus speed and small enough to cost a
// few tens of milliseconds once per process.
const calibrationElems = 1 << 22

// Calibrate times SFA's 2-input BF16 lerp on a sample, end to end on both sides: the
// device's Lerp (host → device copies through its staging buffers, the kernel, the
// result and statistics back) against the CPU engine's fused kernel on threads
// goroutines, each the best of two runs (the first pays for allocation and the
// driver's JIT). It stands for every kernel: on the device each one is bound by the
// same staging copies, and the heavier kernels cost the CPU more but move more bytes
// to the device too (on the H200 of docs/gpu.md every method lost, light or heavy;
// DARE, the heaviest on the CPU, came nearest). The result is kept: later calls
// return it.
func (d *Device) Calibrate(ctx context.Context, threads int) (*Calibration, error) {
	d.calibrate.Do(func() { d.calib, d.calibErr = calibrate(ctx, d.GPU, calibrationElems, threads) })
	return d.calib, d.calibErr
}

func calibrate(ctx context.Context, dev *gpu.Device, n int, threads int) (*Calibration, error) {
	threads = max(1, threads)
	a, x, out := make([]byte, 2*n), make([]byte, 2*n), make([]byte, 2*n)
	for j := range n { // ordinary weights: BF16 values near ±0.01
		ha, hx := uint16(0x3c00+j%997), uint16(0xbc00+j%991)
		a[2*j], a[2*j+1] = byte(ha), byte(ha>>8)
		x[2*j], x[2*j+1] = byte(hx), byte(hx>>8)
	}
	cpu := func() {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range threads {
			wg.Go(func() {
				for {
					c := next.Add(1) - 1
					lo := c * ChunkElems
					if lo >= int64(n) {
						return
					}
					hi := min(lo+ChunkElems, int64(n))
					lerpBF16(out[2*lo:2*hi], a[2*lo:2*hi], x[2*lo:2*hi], 0.5, 0.5)
				}
			})
		}
		wg.Wait()
	}
	gpuRun := func() error {
		_, err := dev.Lerp(ctx, int64(n), gpu.Output{DType: dtype.BF16, W: discard{}},
			gpu.Operand{Data: a, DType: dtype.BF16}, gpu.Operand{Data: x, DType: dtype.BF16}, 0.5, 0.5)
		return err
	}
	best := func(f func() error) (float64, error) {
		var b float64
		for i := range 2 {
			start := time.Now()
			if err := f(); err != nil {
				return 0, err
			}
			if s := time.Since(start).Seconds(); i == 0 || s < b {
				b = s
			}
		}
		return b, nil
	}
	cs, _ := best(func() error { cpu(); return nil })
	gs, err := best(gpuRun)
	if err != nil {
		return nil, fmt.Errorf("calibrating the GPU: %w", err)
	}
	return &Calibration{Elements: int64(n), CPUSeconds: cs, GPUSeconds: gs, Threads: threads, GPUWins: gs < cs}, nil
}

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
	info := dev.GPU.Info()
	r := &GPUReport{
		Name: info.Name, ComputeCapability: fmt.Sprintf("%d.%d", info.Major, info.Minor),
		Multiprocessors: info.Multiprocessors, MemoryBytes: info.TotalMem, DriverVersion: info.DriverVersion,
		MinElems: dev.MinElems, Tensors: u.Tensors, Elements: u.Elements, Methods: []string{},
		BytesToDevice: u.Stats.BytesToDevice, BytesFromDevice: u.Stats.BytesFromDevice, Launches: u.Stats.Launches,
		Calibration: u.Calibration,
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
