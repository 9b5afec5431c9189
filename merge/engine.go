package merge

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/gpu"
	"github.com/gomerge/gomerge/internal/arena"
)

// ChunkElems is the number of elements one unit of work covers. It is a constant, not
// derived from the thread count, so that reductions add their per-chunk partial sums
// in the same order, and give the same bits, whatever the parallelism. It is a
// multiple of 256, the largest block of any quantized format.
const ChunkElems = 1 << 16

// copyChunkBytes is the size of one unit of work when a tensor is copied verbatim.
const copyChunkBytes = 4 << 20

// DefaultBudget bounds the scratch memory of a run: decoded float32 chunks of every
// operand plus the encoded output chunk, for all the chunks in flight.
const DefaultBudget = 256 << 20

// Chunk locates a chunk within its tensor.
type Chunk struct {
	Index  int64 // chunk number, from 0
	Offset int64 // flat index of the chunk's first element
}

// Kernel is a method's work on one tensor. The engine calls its functions once per
// chunk, concurrently for different chunks; they must not keep the slices.
type Kernel struct {
	// Passes run in order over the whole tensor before Merge, for methods that need
	// tensor-wide quantities first (norms, the k-th largest magnitude). Each pass sees
	// every chunk's decoded inputs; its Done runs once all its chunks are done.
	Passes []Pass
	// Merge computes dst from in (one slice per input) and aux (one per auxiliary
	// source), all of len(dst). Nil for a reduction that writes nothing.
	Merge func(dst []float32, in, aux [][]float32, pos Chunk)
	// Observe, if set, sees each chunk after Merge, with out holding the output as
	// rounded to the output dtype (nil when nothing is written), and adds partial
	// sums to acc, which has NumStats entries.
	Observe  func(out []float32, in [][]float32, acc []float64)
	NumStats int
	// Fused, if set, may do a whole chunk (pos) in one pass from the inputs' bytes to
	// the output's bytes, Merge and Observe included, for the dtypes it knows; it
	// returns false for others and the engine then decodes, merges and encodes. It
	// must give the same bits as that path (the tests compare them).
	Fused func(out []byte, outDT dtype.DType, in []Operand, acc []float64, pos Chunk) bool
	// GPU, if set, does the whole tensor on a device, Passes, Merge and Observe
	// included, with the same bits (see GPUFunc); Execute uses it for the tensors
	// ExecOptions.Device's policy sends there.
	GPU GPUFunc
	// GPUClass tells apart the variants of a method family whose kernels share one
	// device function (the task-vector methods: DARE, breadcrumbs, with and without
	// TIES's sign), so that --device auto calibrates each variant for itself.
	GPUClass string
	// WholeInputs marks a kernel that reads its operands' Data beyond the chunk it is
	// given (rows that straddle chunks): an input that is copied or decodes (a
	// compressed checkpoint) is then read into the arena a span at a time before the
	// tensor's passes where it fits (merge/hold.go); where it does not, a copied
	// input is read from its mapping and one that decodes is decoded whole
	// (materialize), instead of a span at a time for each unit of work (see
	// runStreamed).
	WholeInputs bool
	// Err, if set, says the kernel could not be made for this tensor (a parameter a
	// recipe gives it is out of range): Execute stops with it before any work,
	// naming the tensor.
	Err error
}

// Pass is one streaming pass over a tensor before its merge.
type Pass struct {
	// Chunk adds chunk pos's contribution to acc (NumStats entries, private to the
	// chunk). Integer statistics, which any order adds exactly, may instead go to
	// shared state under the kernel's own lock.
	Chunk    func(pos Chunk, in, aux [][]float32, acc []float64)
	NumStats int
	// Done gets every chunk's acc, in chunk order (NumStats entries each), so that
	// float sums come out the same whatever the scheduling.
	Done func(perChunk []float64) error
	// Skip, if set, is asked once the previous pass is done: true skips this pass
	// (its Chunk and Done), sparing a read of every input.
	Skip func() bool
	// Fused, if set, may add chunk pos's statistics to acc straight from the inputs'
	// bytes (in: each input's bytes of the chunk), for the dtypes it knows, sparing
	// their decoding; it returns false for others and the engine then decodes and
	// calls Chunk. It must add the same bits as Chunk (the tests compare them).
	Fused func(pos Chunk, in []Operand, acc []float64) bool
}

// Sink receives the output bytes of tensor i (its index in the plan) at byte offset
// off. Writes to disjoint ranges come concurrently.
type Sink interface {
	WriteAt(i int, off int64, p []byte) error
}

// ExecOptions tune execution.
type ExecOptions struct {
	// Threads bounds the goroutines doing work; 0 means GOMAXPROCS.
	Threads int
	// Budget bounds scratch memory in bytes; 0 means DefaultBudget. The number of
	// chunks in flight is the smaller of Threads and what fits the budget (at least 1).
	Budget int64
	// Progress, if set, is called with the number of input bytes each finished chunk
	// covered. It is called concurrently.
	Progress func(bytes int64)
	// HoldBytes bounds the arena that holds a tensor's copied or decoded inputs
	// between its passes, so that they are read once (merge/hold.go): a positive
	// value holds every such tensor that fits; 0 lets the engine size it, within
	// DefaultHoldBytes, by what it spares against what its fresh memory costs; a
	// negative value holds none.
	HoldBytes int64
	// Device, if set, runs the tensors its policy selects on a GPU, one at a time on
	// a goroutine of their own, while the CPU workers do the others. Its staging
	// memory is the device's, outside Budget. Nil: the CPU only.
	Device *Device
}

func (o ExecOptions) threads() int {
	if o.Threads > 0 {
		return o.Threads
	}
	return runtime.GOMAXPROCS(0)
}

// Result is what Execute measured.
type Result struct {
	// Stats holds, per plan tensor, the kernel's NumStats sums over the whole tensor
	// (nil for copied tensors), added chunk by chunk in chunk order.
	Stats        [][]float64
	BytesRead    int64
	BytesWritten int64
	// GPU is what the device did (nil without ExecOptions.Device), and OnGPU says,
	// per plan tensor, whether it ran there.
	GPU   *GPUUsage
	OnGPU []bool
	// ArenaBytes is the size of the arena that held tensors between their passes
	// (merge/hold.go): memory outside the Go heap; 0 when none was allocated.
	ArenaBytes int64
}

// ErrInputChanged reports an input that shrank while being read: a memory-mapped one
// (the kernel would otherwise kill the process with SIGBUS), or one read in ranges
// (checkpoint.ErrInputChanged, the same error).
var ErrInputChanged = checkpoint.ErrInputChanged

type scratch struct {
	in, aux [][]float32
	dst     []float32
	out     []byte
	ops     []Operand // the fused path's byte views of the inputs
	// a span's view of a tensor whose inputs decode (runStreamed): its operands,
	// and the decoded spans of those that decode, one buffer per operand
	view    TensorPlan
	viewOps []Operand
	spans   [][]byte
}

// Execute runs kernelFor's kernel over every merged tensor of the plan and copies the
// others, writing to sink (nil when the kernels only reduce). It stops at the first
// error or when ctx is cancelled.
func Execute(ctx context.Context, plan *Plan, sink Sink, kernelFor func(*TensorPlan) Kernel, opts ExecOptions) (*Result, error) {
	kernels, err := buildKernels(plan, kernelFor)
	if err != nil {
		return nil, err
	}
	onGPU, usage, err := placeOnGPU(ctx, plan, kernels, kernelFor, sink != nil, opts)
	if err != nil {
		return nil, err
	}
	var gpuBefore gpu.Stats
	opened := usage != nil && usage.Unavailable == "" && opts.Device.GPU != nil // not opened: a calibration skipped it
	if opened {
		gpuBefore = opts.Device.GPU.Stats()
	}
	x := newExecution(ctx, plan, sink, kernels, onGPU, opts)
	if opened {
		x.startGPU()
	}
	x.runCPU()
	err = x.g.Wait()
	if ferr := x.freeArena(); err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := &Result{Stats: x.stats(), BytesRead: x.bytesRead.Load(), BytesWritten: x.bytesWritten.Load(), OnGPU: onGPU}
	if x.arena != nil {
		res.ArenaBytes = x.arenaSize
	}
	if opened {
		after := opts.Device.GPU.Stats()
		usage.Stats = gpu.Stats{
			BytesToDevice:   after.BytesToDevice - gpuBefore.BytesToDevice,
			BytesFromDevice: after.BytesFromDevice - gpuBefore.BytesFromDevice,
			Launches:        after.Launches - gpuBefore.Launches,
		}
	}
	res.GPU = usage
	return res, nil
}

// buildKernels makes each merged tensor's kernel; a kernel that could not be made
// stops the run before any work, naming its tensor.
func buildKernels(plan *Plan, kernelFor func(*TensorPlan) Kernel) ([]Kernel, error) {
	kernels := make([]Kernel, len(plan.Tensors))
	for ti := range plan.Tensors {
		if t := &plan.Tensors[ti]; t.Merge {
			kernels[ti] = kernelFor(t)
			if err := kernels[ti].Err; err != nil {
				return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
			}
		}
	}
	return kernels, nil
}

// execution is one Execute's shared state: the scratch buffers, the workers and
// their slots, the byte counts and the per-chunk statistics.
type execution struct {
	plan    *Plan
	sink    Sink
	kernels []Kernel
	onGPU   []bool // placeOnGPU's: the tensors the device runs (nil: none)
	opts    ExecOptions

	free         chan *scratch // at most limit scratch buffers exist
	nIn, nAux    int
	g            *errgroup.Group
	gctx         context.Context
	sem          chan struct{} // a slot per CPU worker
	partials     [][]float64   // per tensor, the Observe statistics per chunk
	bytesRead    atomic.Int64
	bytesWritten atomic.Int64
	// tensorWork, while runCPU launches a tensor whose operands were loaded for it,
	// counts its launched work, so that the data is dropped once that is done.
	// Only runCPU's goroutine sets it and launches.
	tensorWork *sync.WaitGroup
	// arena holds a tensor's copied inputs between its passes (runHeld), and
	// heldWork counts the work of the tensor that holds it. Only runCPU's
	// goroutine sets them.
	arena     *arena.Buffer
	arenaSize int64 // chooseArenaSize's, once the kernels are known
	held      []int // the tensors that held it
	heldWork  *sync.WaitGroup
}

func newExecution(ctx context.Context, plan *Plan, sink Sink, kernels []Kernel, onGPU []bool, opts ExecOptions) *execution {
	nIn, nAux := len(plan.Inputs), len(plan.Aux)
	x := &execution{plan: plan, sink: sink, kernels: kernels, onGPU: onGPU, opts: opts,
		nIn: nIn, nAux: nAux, partials: make([][]float64, len(plan.Tensors))}
	// The arena's size first: which tensors it holds decides which need span
	// buffers.
	x.arenaSize = x.chooseArenaSize()
	// A scratch also holds a span of each operand that decodes (runStreamed).
	scratchBytes := int64(ChunkElems)*int64(4*(nIn+nAux+1)+8) + x.spanBytes()
	budget := opts.Budget
	if budget <= 0 {
		budget = DefaultBudget
	}
	limit := min(int64(opts.threads()), max(1, budget/scratchBytes))
	// The CPU workers hold a slot of sem each (errgroup's SetLimit would count the
	// GPU goroutine too).
	x.g, x.gctx = errgroup.WithContext(ctx)
	x.free, x.sem = make(chan *scratch, limit), make(chan struct{}, limit)
	return x
}

// getScratch returns a free scratch buffer, or a new one: at most limit exist, as
// that many goroutines run at once.
func (x *execution) getScratch() *scratch {
	select {
	case s := <-x.free:
		return s
	default:
	}
	s := &scratch{dst: make([]float32, ChunkElems), out: make([]byte, 8*ChunkElems)}
	for range x.nIn {
		s.in = append(s.in, make([]float32, ChunkElems))
	}
	for range x.nAux {
		s.aux = append(s.aux, make([]float32, ChunkElems))
	}
	return s
}

func (x *execution) putScratch(s *scratch) { x.free <- s }

// launch runs f on a worker once a slot is free; false when the run is stopping
// (an error, or ctx cancelled), and f was not started.
func (x *execution) launch(f func() error) bool {
	select {
	case x.sem <- struct{}{}:
	case <-x.gctx.Done():
		return false
	}
	if x.gctx.Err() != nil {
		<-x.sem
		return false
	}
	wg := x.tensorWork
	if wg != nil {
		wg.Add(1)
	}
	x.g.Go(func() error {
		defer func() { <-x.sem }()
		if wg != nil {
			defer wg.Done()
		}
		return f()
	})
	return true
}

// startGPU starts one goroutine that feeds the device, tensor after tensor: its
// operations hold the device's staging buffers, so they cannot overlap anyway.
// guarded, as the device's methods read the mapped inputs on this goroutine.
func (x *execution) startGPU() {
	for ti, t := range x.plan.Tensors {
		if k := &x.kernels[ti]; x.gpuRuns(ti) && k.Observe != nil && k.NumStats > 0 {
			x.partials[ti] = make([]float64, (t.NumElements()+ChunkElems-1)/ChunkElems*int64(k.NumStats))
		}
	}
	x.g.Go(func() error {
		for ti := range x.plan.Tensors {
			if !x.gpuRuns(ti) {
				continue
			}
			if x.gctx.Err() != nil {
				return nil
			}
			t := &x.plan.Tensors[ti]
			if err := t.materialize(); err != nil {
				return err
			}
			err := guarded(t, func() error {
				return runGPU(x.gctx, x.opts.Device.GPU, t, ti, &x.kernels[ti], x.sink, x.partials[ti], &x.bytesRead, &x.bytesWritten, x.opts.Progress)
			})()
			t.forget()
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// gpuRuns reports whether the device runs tensor ti: it loads the tensor whole, so
// neither the arena nor span buffers serve it.
func (x *execution) gpuRuns(ti int) bool {
	return x.onGPU != nil && x.onGPU[ti]
}

// runCPU launches every tensor the device does not run: copies, then for merged
// tensors their passes and their chunks. It returns when all are launched or the run
// is stopping.
func (x *execution) runCPU() {
	for ti := range x.plan.Tensors {
		t := &x.plan.Tensors[ti]
		if x.gpuRuns(ti) || !t.Merge && x.sink == nil {
			continue
		}
		if !x.runTensor(ti) {
			return
		}
	}
}

// runTensor launches tensor ti's work; false when the run is stopping. Operands
// that load when their tensor runs (compressed inputs) are loaded here, while the
// workers finish the previous tensor, and dropped once ti's work is done, so memory
// holds the tensors in flight rather than the model.
func (x *execution) runTensor(ti int) bool {
	t := &x.plan.Tensors[ti]
	if x.streams(ti) {
		return x.runStreamed(ti)
	}
	if t.deferred() {
		if err := t.materialize(); err != nil {
			x.launch(func() error { return err })
			return false
		}
		defer x.trackWork(t, new(sync.WaitGroup))()
	}
	if !t.Merge && t.Copy.DType == t.OutDType {
		return x.copyTensor(ti)
	}
	return x.runPasses(t, x.kernels[ti]) && x.mergeChunks(ti)
}

// trackWork counts the work launched from now on in wg (tensorWork), and returns
// the function that stops counting and, once that work is done, drops t's loaded
// data.
func (x *execution) trackWork(t *TensorPlan, wg *sync.WaitGroup) func() {
	x.tensorWork = wg
	return func() {
		x.tensorWork = nil
		x.g.Go(func() error {
			wg.Wait()
			t.forget()
			return nil
		})
	}
}

// copyTensor writes a tensor whose bytes do not change, in pieces of copyChunkBytes.
func (x *execution) copyTensor(ti int) bool {
	t := &x.plan.Tensors[ti]
	for off := int64(0); off < int64(len(t.Copy.Data)) || off == 0; off += copyChunkBytes {
		end := min(off+copyChunkBytes, int64(len(t.Copy.Data)))
		if !x.launch(guarded(t, func() error { return x.writeCopy(ti, off, t.Copy.Data[off:end]) })) {
			return false
		}
		if end == int64(len(t.Copy.Data)) {
			break
		}
	}
	return true
}

// writeCopy writes bytes of a copied tensor at off, and counts them.
func (x *execution) writeCopy(ti int, off int64, b []byte) error {
	if err := x.sink.WriteAt(ti, off, b); err != nil {
		return &OutputError{Path: fmt.Sprintf("tensor %q", x.plan.Tensors[ti].Name), Err: err}
	}
	n := int64(len(b))
	x.bytesRead.Add(n)
	x.bytesWritten.Add(n)
	if x.opts.Progress != nil {
		x.opts.Progress(n)
	}
	return nil
}

// runPasses runs a kernel's passes over its tensor, one after another, each over
// every chunk; this goroutine is not a worker, so waiting here holds no worker slot.
func (x *execution) runPasses(t *TensorPlan, k Kernel) bool {
	return x.passes(t, k, func(pass Pass, perChunk []float64, wg *sync.WaitGroup) bool {
		return x.launchPass(t, pass, perChunk, wg)
	})
}

// launchPass launches a pass over every chunk of t, whose operands' data is in
// memory, counting the work in wg; false when the run is stopping.
func (x *execution) launchPass(t *TensorPlan, pass Pass, perChunk []float64, wg *sync.WaitGroup) bool {
	nChunks := (t.NumElements() + ChunkElems - 1) / ChunkElems
	for c := int64(0); c < nChunks; c++ {
		wg.Add(1)
		if !x.launch(guarded(t, func() error {
			defer wg.Done()
			s := x.getScratch()
			defer x.putScratch(s)
			return passChunk(t, pass, c, s, perChunk, &x.bytesRead)
		})) {
			wg.Done()
			return false
		}
	}
	return true
}

// passes runs k's passes over t in order: launch starts one pass's work over every
// chunk, counted in wg, and false when the run is stopping; each pass's Done runs
// once its work is done.
func (x *execution) passes(t *TensorPlan, k Kernel, launch func(pass Pass, perChunk []float64, wg *sync.WaitGroup) bool) bool {
	nChunks := (t.NumElements() + ChunkElems - 1) / ChunkElems
	for _, pass := range k.Passes {
		if pass.Skip != nil && pass.Skip() {
			continue
		}
		perChunk := make([]float64, nChunks*int64(pass.NumStats))
		var wg sync.WaitGroup
		ok := launch(pass, perChunk, &wg)
		wg.Wait()
		if !ok || x.gctx.Err() != nil {
			return false
		}
		if pass.Done != nil {
			if err := pass.Done(perChunk); err != nil {
				x.launch(func() error { return fmt.Errorf("tensor %q: %w", t.Name, err) })
				return false
			}
		}
	}
	return true
}

// passChunk runs a pass over chunk c of t, its statistics into perChunk.
func passChunk(t *TensorPlan, pass Pass, c int64, s *scratch, perChunk []float64, bytesRead *atomic.Int64) error {
	pos := Chunk{Index: c, Offset: c * ChunkElems}
	acc := perChunk[c*int64(pass.NumStats) : (c+1)*int64(pass.NumStats)]
	if pass.Fused != nil && len(t.Aux) == 0 {
		ops, read := chunkBytes(t, pos, min(ChunkElems, t.NumElements()-pos.Offset), s)
		if pass.Fused(pos, ops, acc) {
			bytesRead.Add(read)
			return nil
		}
	}
	in, aux, err := decodeChunk(t, pos, s, bytesRead)
	if err != nil {
		return err
	}
	pass.Chunk(pos, in, aux, acc)
	return nil
}

// mergeChunks launches a tensor's chunks: merged (or converted, for a copy that
// changes dtype), encoded and written.
func (x *execution) mergeChunks(ti int) bool {
	t, k := &x.plan.Tensors[ti], x.kernels[ti]
	nChunks := (t.NumElements() + ChunkElems - 1) / ChunkElems
	if k.Observe != nil && k.NumStats > 0 {
		x.partials[ti] = make([]float64, nChunks*int64(k.NumStats))
	}
	for c := int64(0); c < nChunks; c++ {
		if !x.launch(guarded(t, func() error {
			s := x.getScratch()
			defer x.putScratch(s)
			return runChunk(t, ti, c, k, s, x.sink, x.partials[ti], &x.bytesRead, &x.bytesWritten, x.opts.Progress)
		})) {
			return false
		}
	}
	return true
}

// stats adds each tensor's per-chunk statistics in chunk order.
func (x *execution) stats() [][]float64 {
	out := make([][]float64, len(x.plan.Tensors))
	for ti, p := range x.partials {
		if p == nil {
			continue
		}
		ns := x.kernels[ti].NumStats
		sum := make([]float64, ns)
		for c := 0; c < len(p); c += ns {
			for j := range ns {
				sum[j] += p[c+j]
			}
		}
		out[ti] = sum
	}
	return out
}

// placeOnGPU decides which tensors the device runs (Device's policy), calibrating
// first if the policy needs it. usage is nil without a device.
func placeOnGPU(ctx context.Context, plan *Plan, kernels []Kernel, kernelFor func(*TensorPlan) Kernel, withOutput bool, opts ExecOptions) (onGPU []bool, usage *GPUUsage, err error) {
	onGPU = make([]bool, len(plan.Tensors))
	dev := opts.Device
	if !dev.usable() {
		return onGPU, nil, nil
	}
	var candidates []int
	for ti := range plan.Tensors {
		if gpuCandidate(dev, &plan.Tensors[ti], &kernels[ti], withOutput) {
			candidates = append(candidates, ti)
		}
	}
	if dev.GPU == nil && len(candidates) == 0 {
		return onGPU, nil, nil // nothing to open the device for
	}
	usage = &GPUUsage{}
	if len(candidates) > 0 && dev.Placement == PlaceMeasured {
		// The largest candidate is timed for the run: every merged tensor has the
		// method's kernel. Calibrate opens the device only if the CPU's time for
		// the candidates leaves the device something to save.
		big, total := candidates[0], int64(0)
		for _, ti := range candidates {
			total += plan.Tensors[ti].NumElements()
			if plan.Tensors[ti].NumElements() > plan.Tensors[big].NumElements() {
				big = ti
			}
		}
		c, err := dev.Calibrate(ctx, &plan.Tensors[big], &kernels[big], kernelFor, withOutput, opts.threads(), total)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, err
			}
			// A device that does not open, or opened but could not run the sample
			// (out of memory on a GPU that is training, say): measured placement
			// means the CPU.
			usage.Unavailable = err.Error()
			return onGPU, usage, nil
		}
		usage.Calibration = c
		if c.DeviceSkipped || !c.GPUWins {
			return onGPU, usage, nil
		}
	} else if _, err := dev.device(); err != nil {
		usage.Unavailable = err.Error()
		return onGPU, usage, nil
	}
	for _, ti := range candidates {
		t := &plan.Tensors[ti]
		onGPU[ti] = true
		usage.Tensors++
		usage.Elements += t.NumElements()
	}
	return onGPU, usage, nil
}

// decodeChunk decodes chunk pos of every input and auxiliary operand of t into s.
func decodeChunk(t *TensorPlan, pos Chunk, s *scratch, bytesRead *atomic.Int64) (in, aux [][]float32, err error) {
	n := int(min(ChunkElems, t.NumElements()-pos.Offset))
	decode := func(dst []float32, op Operand) error {
		if err := dtype.Decode(dst, op.at(pos.Offset), op.DType); err != nil {
			return fmt.Errorf("%s: tensor %q: %w", op.File, t.Name, err)
		}
		bytesRead.Add(op.DType.Bytes(int64(n)))
		return nil
	}
	in = s.in[:len(t.In)]
	for i, op := range t.In {
		in[i] = in[i][:n]
		if err := decode(in[i], op); err != nil {
			return nil, nil, err
		}
	}
	aux = s.aux[:len(t.Aux)]
	for i, op := range t.Aux {
		aux[i] = aux[i][:n]
		if err := decode(aux[i], op); err != nil {
			return nil, nil, err
		}
	}
	return in, aux, nil
}

func runChunk(t *TensorPlan, ti int, c int64, k Kernel, s *scratch, sink Sink, partials []float64,
	bytesRead, bytesWritten *atomic.Int64, progress func(int64)) error {
	pos := Chunk{Index: c, Offset: c * ChunkElems}
	n := int(min(ChunkElems, t.NumElements()-pos.Offset))
	if t.Merge && k.Fused != nil && sink != nil && len(t.Aux) == 0 && t.Importance == nil {
		done, err := runFused(t, ti, pos, n, k, s, sink, partials, bytesRead, bytesWritten, progress)
		if done || err != nil {
			return err
		}
	}
	dst := s.dst[:n]
	var in [][]float32
	if t.Merge {
		var aux [][]float32
		var err error
		if in, aux, err = decodeChunk(t, pos, s, bytesRead); err != nil {
			return err
		}
		if k.Merge != nil {
			k.Merge(dst, in, aux, pos)
		}
	} else { // a copy that changes dtype
		if err := dtype.Decode(dst, t.Copy.at(pos.Offset), t.Copy.DType); err != nil {
			return fmt.Errorf("%s: tensor %q: %w", t.Copy.File, t.Name, err)
		}
		bytesRead.Add(t.Copy.DType.Bytes(int64(n)))
	}
	var out []float32
	if sink != nil {
		buf := s.out[:t.OutDType.Bytes(int64(n))]
		var err error
		if t.Importance != nil {
			// Chunks are whole blocks and rows are whole blocks, so the chunk starts
			// at a block boundary of some row.
			err = dtype.EncodeImportance(buf, dst, t.OutDType, t.Importance, int(pos.Offset%int64(len(t.Importance))))
		} else {
			err = dtype.Encode(buf, dst, t.OutDType)
		}
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if err := sink.WriteAt(ti, t.OutDType.Bytes(pos.Offset), buf); err != nil {
			return &OutputError{Path: fmt.Sprintf("tensor %q", t.Name), Err: err}
		}
		bytesWritten.Add(int64(len(buf)))
		if k.Observe != nil {
			out = dst
			if err := dtype.Decode(out, buf, t.OutDType); err != nil { // what was written, rounded
				return err
			}
		}
	}
	if k.Observe != nil {
		acc := partials[c*int64(k.NumStats) : (c+1)*int64(k.NumStats)]
		k.Observe(out, in, acc)
	}
	if progress != nil {
		var b int64
		for _, op := range t.In {
			b += op.DType.Bytes(int64(n))
		}
		if !t.Merge {
			b = t.Copy.DType.Bytes(int64(n))
		}
		progress(b)
	}
	return nil
}

// chunkBytes is each input's bytes of chunk pos (n elements), for the fused paths
// (Kernel.Fused, Pass.Fused), in s's reused slice, and how many bytes that is.
func chunkBytes(t *TensorPlan, pos Chunk, n int64, s *scratch) (ops []Operand, read int64) {
	ops = s.ops[:0]
	for _, op := range t.In {
		ops = append(ops, Operand{DType: op.DType, File: op.File, Data: op.at(pos.Offset)[:op.DType.Bytes(n)]})
		read += op.DType.Bytes(n)
	}
	s.ops = ops
	return ops, read
}

// allBF16 reports whether every operand of a fused path is BF16 words, all of one
// length: the precondition of the methods' BF16-to-BF16 kernels.
func allBF16(in []Operand) bool {
	for _, op := range in {
		if op.DType != dtype.BF16 || len(op.Data) != len(in[0].Data) {
			return false
		}
	}
	return true
}

// bf16Words views each operand's first n elements as BF16 words, into dst's room
// (reused from chunk to chunk by the fused paths); false unless every operand is
// BF16 with at least n elements readable in place.
func bf16Words(dst [][]uint16, in []Operand, n int) ([][]uint16, bool) {
	dst = dst[:0]
	for _, op := range in {
		if op.DType != dtype.BF16 || len(op.Data) < 2*n {
			return nil, false
		}
		w, ok := dtype.Uint16s(op.Data[:2*n])
		if !ok {
			return nil, false
		}
		dst = append(dst, w)
	}
	return dst, true
}

// bf16Operands splits a fused path's operands into the models' words and the
// base's (nil without one); false unless every one is BF16 of the same length.
func bf16Operands(in []Operand, withBase bool) (y [][]byte, b []byte, ok bool) {
	if !allBF16(in) {
		return nil, nil, false
	}
	y = make([][]byte, 0, len(in))
	for _, op := range in {
		y = append(y, op.Data)
	}
	if withBase {
		return y[1:], y[0], true
	}
	return y, nil, true
}

// runFused tries the kernel's fused path on one chunk; it reports whether it did it.
func runFused(t *TensorPlan, ti int, pos Chunk, n int, k Kernel, s *scratch, sink Sink, partials []float64,
	bytesRead, bytesWritten *atomic.Int64, progress func(int64)) (bool, error) {
	ops, read := chunkBytes(t, pos, int64(n), s)
	buf := s.out[:t.OutDType.Bytes(int64(n))]
	var acc []float64
	if partials != nil {
		acc = partials[pos.Index*int64(k.NumStats) : (pos.Index+1)*int64(k.NumStats)]
	}
	if !k.Fused(buf, t.OutDType, ops, acc, pos) {
		return false, nil
	}
	if err := sink.WriteAt(ti, t.OutDType.Bytes(pos.Offset), buf); err != nil {
		return true, &OutputError{Path: fmt.Sprintf("tensor %q", t.Name), Err: err}
	}
	bytesRead.Add(read)
	bytesWritten.Add(int64(len(buf)))
	if progress != nil {
		progress(read)
	}
	return true, nil
}

// guarded runs f so that a fault on a memory-mapped input (SIGBUS after the file
// shrank) becomes an error instead of killing the process. Other panics are bugs and
// propagate.
func guarded(t *TensorPlan, f func() error) func() error {
	return func() (err error) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer guardFault(&err, t)
		return f()
	}
}

func guardFault(err *error, t *TensorPlan) {
	r := recover()
	if r == nil {
		return
	}
	if _, ok := r.(interface{ Addr() uintptr }); ok {
		var files []string
		for _, op := range t.In {
			files = append(files, op.File)
		}
		if len(files) == 0 {
			files = append(files, t.Copy.File)
		}
		*err = fmt.Errorf("tensor %q (%v): %w", t.Name, files, ErrInputChanged)
		return
	}
	panic(r)
}
