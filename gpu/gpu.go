package gpu

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

// ErrUnavailable is wrapped by every error of Open: no driver library, no device, a
// failing cuInit, or a device that cannot load the kernels. The caller then runs on
// the CPU (--device auto) or reports it (--device cuda).
var ErrUnavailable = errors.New("gpu: no usable CUDA device")

// ErrClosed is returned by the methods of a closed Device.
var ErrClosed = errors.New("gpu: device is closed")

// DriverError is a CUDA driver call that failed.
type DriverError struct {
	Call string // the driver entry point, such as "cuMemAlloc_v2"
	Code int    // its CUresult
	Name string // the CUresult's name ("CUDA_ERROR_OUT_OF_MEMORY"), when the driver knows it
	Log  string // cuModuleLoadDataEx: the JIT compiler's error log
}

func (e *DriverError) Error() string {
	msg := fmt.Sprintf("gpu: %s failed: CUresult %d", e.Call, e.Code)
	if e.Name != "" {
		msg = fmt.Sprintf("gpu: %s failed: %s (%d)", e.Call, e.Name, e.Code)
	}
	if e.Log != "" {
		msg += ": " + e.Log
	}
	return msg
}

// DefaultLibrary is the driver library Open loads: the soname the NVIDIA driver
// installs, found by the dynamic loader's usual search.
const DefaultLibrary = "libcuda.so.1"

// BlockElems is the block of merge's CPU engine (merge.ChunkElems): reductions return
// one partial result per block of this many elements, which the engine adds in block
// order, so that the GPU's statistics are the same bits as the CPU's. Staged chunks
// are a multiple of it.
const BlockElems = 1 << 16

// DefaultChunkElems is how many elements of each operand one staged chunk holds: big
// enough that a copy runs at full bus speed and the launch cost vanishes (16 MiB per
// BF16 operand), small enough that two streams' staging stays in the hundreds of MiB.
const DefaultChunkElems = 1 << 23

// Config says which driver and device Open uses.
type Config struct {
	// Library is the driver library: a soname searched the usual way, or a path.
	// "" means DefaultLibrary. Tests point it at a fake driver.
	Library string
	// Ordinal is the device's index among the driver's devices.
	Ordinal int
	// ChunkElems is the number of elements per staged chunk, a positive multiple of
	// BlockElems; 0 means DefaultChunkElems.
	ChunkElems int
}

func (c Config) withDefaults() (Config, error) {
	if c.Library == "" {
		c.Library = DefaultLibrary
	}
	if c.ChunkElems == 0 {
		c.ChunkElems = DefaultChunkElems
	}
	if c.ChunkElems < 0 || c.ChunkElems%BlockElems != 0 || c.ChunkElems > 1<<28 {
		return c, fmt.Errorf("gpu: chunk of %d elements: want a positive multiple of %d up to %d", c.ChunkElems, BlockElems, 1<<28)
	}
	if c.Ordinal < 0 {
		return c, fmt.Errorf("gpu: device ordinal %d is negative", c.Ordinal)
	}
	return c, nil
}

// Info describes an opened device.
type Info struct {
	Name            string
	Ordinal         int
	Major, Minor    int   // compute capability
	Multiprocessors int   // streaming multiprocessors
	TotalMem        int64 // bytes of device memory
	DriverVersion   int   // as cuDriverGetVersion reports it: 12040 is CUDA 12.4
}

// Device is an opened CUDA device with gomerge's kernels loaded. Its methods are safe
// for concurrent use; they run one at a time, since each fills the device's staging
// buffers.
type Device struct {
	cfg  Config
	info Info
	be   *backend // the driver binding: cuda.go, or nogpu.go's stub

	mu     sync.Mutex // held by each operation
	closed bool
	// broken is a failed stream synchronisation: the state of the device's queued
	// work is unknown (on a real device such errors are sticky), so no further
	// operation runs.
	broken  error
	stats   Stats
	streams [2]*stage
}

// Open opens the default device with the default driver library.
func Open() (*Device, error) { return OpenWith(Config{}) }

// OpenWith opens the device cfg names. Every error wraps ErrUnavailable.
func OpenWith(cfg Config) (*Device, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	be, info, err := openBackend(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	d := &Device{cfg: cfg, info: info, be: be}
	for i := range d.streams {
		d.streams[i] = &stage{index: i}
	}
	return d, nil
}

// DriverLoads reports whether the driver library cfg names loads with every symbol
// the binding needs, without initialising the driver or touching a device: nil
// does not promise that Open succeeds (there may be no device, or no memory), but
// an error says it cannot, in the time dlopen takes to fail. A caller that would
// measure something before it opens the device (merge.Device's calibration, which
// times the CPU first) asks this first, so that a machine without CUDA pays
// nothing. The library stays loaded, as Open would leave it. Every error wraps
// ErrUnavailable.
func DriverLoads(cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err == nil {
		err = loadBackend(cfg)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Available reports whether Open succeeds. It opens and closes the device, which
// costs the driver's initialisation (a fraction of a second); callers that go on to
// use the device should call Open and keep it instead.
func Available() bool {
	d, err := Open()
	if err != nil {
		return false
	}
	d.Close()
	return true
}

// Info describes the device.
func (d *Device) Info() Info { return d.info }

// Stats count what a Device moved and ran since it was opened, for reports such as
// --json's (which device ran a method, and how many bytes went to it).
type Stats struct {
	BytesToDevice   int64 // host → device copies
	BytesFromDevice int64 // device → host copies
	Launches        int64 // kernel launches
}

// Stats returns the counts so far.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Close frees the staging buffers, releases the primary context and stops the driver
// goroutine. It reports the first failing driver call, having made all the others.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	for _, s := range d.streams {
		if err := d.be.sync(s.index); err != nil && d.broken == nil {
			errs = append(errs, err) // before freeing what queued work may still use
		}
	}
	for _, s := range d.streams {
		errs = append(errs, s.free(d.be))
	}
	errs = append(errs, d.be.close())
	return errors.Join(errs...)
}

// Operand is one input tensor's encoded elements in host memory, little-endian as
// safetensors stores them. A memory-mapped file is fine: the device's methods copy
// from it on the calling goroutine, so a fault guard the caller sets up
// (debug.SetPanicOnFault) covers those reads.
type Operand struct {
	Data  []byte
	DType dtype.DType // F16, BF16, F32 or F64
}

// Output is where a merge writes its encoded result.
type Output struct {
	DType dtype.DType // F16, BF16, F32 or F64
	// W receives the result in pieces, WriteAt(p, off) with off the byte offset in the
	// tensor; p is only valid during the call. Calls come in order, one at a time, from
	// the goroutine that called the method.
	W io.WriterAt
}

// dtCode is the element type's number in kernels.cu (GM_F16...).
func dtCode(d dtype.DType) (uint32, error) {
	switch d {
	case dtype.F16:
		return 1, nil
	case dtype.BF16:
		return 2, nil
	case dtype.F32:
		return 3, nil
	case dtype.F64:
		return 4, nil
	}
	return 0, fmt.Errorf("gpu: unsupported dtype %v", d)
}

// Cut is a rank boundary in one model's magnitudes |θ_i − θ_base|, ordered by the
// bits of the float32 magnitude, equal magnitudes by flat index (lower ranks higher):
// an element ranks above the cut if its magnitude bits exceed T, or equal T and its
// flat index is below TieEnd. It is merge's cut with the tie rule resolved to an
// index.
type Cut struct {
	T      uint32
	TieEnd int64
}

var (
	// CutAll has every element above it (a rank ≥ numel).
	CutAll = Cut{T: 0, TieEnd: math.MaxInt64}
	// CutNone has no element above it (a rank ≤ 0).
	CutNone = Cut{T: math.MaxUint32, TieEnd: 0}
)

// KeepMode says which elements of a model's task vector a merge keeps.
type KeepMode uint32

// The modes, numbered as kernels.cu's GM_KEEP_*.
const (
	KeepNone KeepMode = 0
	KeepAll  KeepMode = 1
	KeepCut  KeepMode = 2 // above Cuts[0] (TIES)
	KeepBand KeepMode = 3 // above Cuts[1] and not above Cuts[0] (breadcrumbs)
	KeepDARE KeepMode = 4 // the element's draw (merge.dareDraw) is below Threshold
)

// TaskModel is one model of a task-vector merge (TaskVectors, DAREL1).
type TaskModel struct {
	X      Operand
	Weight float32
	Mode   KeepMode
	Cuts   [2]Cut // KeepCut, KeepBand
	// DARE: the tensor's key (merge.dareKey), and the draw below which an element is
	// kept (merge.densityThreshold). The model's lane in the draws is its index.
	Key, Threshold uint64
	// Scale, when HasScale, multiplies each kept delta before the weight (DARE's
	// rescale factor, 1 included: merge applies it whenever it has one).
	Scale    float32
	HasScale bool
}

// modelDesc is kernels.cu's gm_model; put encodes it with the C layout.
type modelDesc struct {
	x, aux           uint64
	tieEnd0, tieEnd1 int64
	key, threshold   uint64
	t0, t1           uint32
	dt, auxDT        uint32
	keep, lane       uint32
	w, scale         float32
	hasScale         uint32
}

const modelDescSize = 88

// kernel names a kernel of kernels.cu and its parameters, as the PTX declares them
// (p: a device pointer, u32, u64, f32, f64). Launches are checked against it, and a
// test checks it against kernels.ptx.
type kernel struct {
	name   string
	params string
}

type kernelID int

const (
	kLerp kernelID = iota
	kLerpFisher
	kSqDiffLanes
	kDistance
	kHistHi
	kHistLo
	kCountEq
	kDareAbs
	kL1Sums
	kTies
	kTaskVectors
	kLinear
	kFisher
	numKernels
)

var kernels = [numKernels]kernel{
	kLerp:        {"gm_lerp", "p u32 p u32 p u32 f32 f32 u64"},
	kLerpFisher:  {"gm_lerp_fisher", "p u32 p u32 p u32 p u32 f64 u64"},
	kSqDiffLanes: {"gm_sq_diff_lanes", "p p u32 p u32 u64"},
	kDistance:    {"gm_distance", "p p u32 p u32 p u32 u32 u64"},
	kHistHi:      {"gm_hist_hi", "p p u32 p u32 u64"},
	kHistLo:      {"gm_hist_lo", "p p u32 p u32 u32 u64"},
	kCountEq:     {"gm_count_eq", "p p u32 p u32 u32 u64"},
	kDareAbs:     {"gm_dare_abs", "p p u32 p u64 u64"},
	kL1Sums:      {"gm_l1_sums", "p p u64"},
	kTies:        {"gm_ties", "p u32 p u32 p u32 f32 u64 u64"},
	kTaskVectors: {"gm_task_vectors", "p u32 p u32 p u32 f32 u32 u64 u64"},
	kLinear:      {"gm_linear", "p u32 p u32 f32 u64"},
	kFisher:      {"gm_fisher", "p u32 p u32 f32 u64"},
}

// devPtr is a device address (CUdeviceptr).
type devPtr uint64

// op is one operation queued on a stream: a copy, a memset or a kernel launch.
type op struct {
	kind   opKind
	dev    devPtr
	host   []byte // pinned host memory (copies)
	words  int    // memset: number of 32-bit words to zero
	kernel kernelID
	grid   uint32
	block  uint32
	args   []any // uint32, uint64, float32, float64 or devPtr, as the kernel's params say
}

type opKind int

const (
	opHtoD opKind = iota
	opDtoH
	opZero
	opLaunch
)

// checkArgs checks a launch's arguments against the kernel's declared parameters, so
// that a mistake on the Go side is an error here and not a fault on the device.
func checkArgs(k kernelID, args []any) error {
	spec := kernels[k]
	var want []string
	for i, start := 0, 0; i <= len(spec.params); i++ {
		if i == len(spec.params) || spec.params[i] == ' ' {
			want = append(want, spec.params[start:i])
			start = i + 1
		}
	}
	if len(want) != len(args) {
		return fmt.Errorf("gpu: %s takes %d arguments, got %d", spec.name, len(want), len(args))
	}
	for i, a := range args {
		var got string
		switch a.(type) {
		case devPtr:
			got = "p"
		case uint32:
			got = "u32"
		case uint64:
			got = "u64"
		case float32:
			got = "f32"
		case float64:
			got = "f64"
		default:
			got = fmt.Sprintf("%T", a)
		}
		if got != want[i] {
			return fmt.Errorf("gpu: %s argument %d is %s, want %s", spec.name, i, got, want[i])
		}
	}
	return nil
}
