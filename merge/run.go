package merge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// DefaultShardSize is the largest shard a folder output gets unless told otherwise
// (Hugging Face's default).
const DefaultShardSize = checkpoint.DefaultShardSize

// Input is a checkpoint given to a merge, with the role it plays.
type Input struct {
	Role string `json:"role"` // "anchor", "current", "model", "base", "fisher", ...
	Path string `json:"path"`
}

// Job is one merge from checkpoints on disk to a checkpoint on disk.
type Job struct {
	Method string         // for the report and the output's provenance
	Params map[string]any // likewise
	Inputs []Input        // the kernel's inputs, in its order
	Aux    []Input        // auxiliary per-element operands (a Fisher matrix)
	Ref    int            // index in Inputs of the reference input
	Kernel func(*TensorPlan) Kernel
	// Open, if set, opens the inputs and auxiliary sources instead of Open (a recipe's
	// views that rename and stack other checkpoints' tensors). Run closes what it opens.
	Open func(in Input) (Source, error)

	Out          string // output path: a .safetensors file or a folder
	InPlace      bool   // replace the reference input (Out is then ignored)
	OutDType     dtype.DType
	OutOptions   checkpoint.OutOptions // GGUF's type mixes, per-tensor types, metadata overrides
	AllowMissing bool
	// Reads is how the engine reads inputs that are mapped (checkpoint.Reads): the
	// zero value copies them where that is cheaper (tmpfs, or a machine whose
	// mappings trap on every page), else takes their mapping.
	Reads checkpoint.Reads
	// ShardSize splits a folder output; 0 keeps the reference's own shard layout when
	// it is a folder, else DefaultShardSize.
	ShardSize int64
	Exec      ExecOptions
	Version   string

	// OnLockWait is called if another gomerge holds the output's lock.
	OnLockWait func()
	// OnStart is called once the plan is known, with the input bytes to process.
	OnStart func(totalBytes int64)
	// Extras, if set, adds or replaces small files of a folder output (config,
	// tokenizer files) once the tensors are written and before the commit, so that
	// they are part of the same atomic swap.
	Extras func(FolderFiles) error
	// Finish adds method-specific results (SFA's L2 distances) to the report.
	Finish func(plan *Plan, res *Result, r *Report)
	// Shard, if set, makes this run one worker of a merge split across processes
	// (shard.go): it writes only its own files of a folder output.
	Shard *Shard
	// DryRun plans the merge and reports what it would read and write (DryRun)
	// without locking, reading tensor data or writing anything.
	DryRun bool
}

// FolderFiles reads and writes the small files of a folder output before it is
// committed.
type FolderFiles interface {
	ReadFile(name string) ([]byte, error)
	WriteFile(name string, data []byte) error
}

// Report is what a merge did, as `--json` prints it.
type Report struct {
	Version       string         `json:"version"`
	Method        string         `json:"method"`
	Parameters    map[string]any `json:"parameters"`
	Inputs        []Input        `json:"inputs"`
	Output        string         `json:"output"`
	OutputFiles   []string       `json:"output_files"`
	InPlace       bool           `json:"in_place"`
	Tensors       int            `json:"tensors"`
	TensorsMerged int            `json:"tensors_merged"`
	TensorsCopied int            `json:"tensors_copied"`
	BytesRead     int64          `json:"bytes_read"`
	BytesWritten  int64          `json:"bytes_written"`
	Seconds       float64        `json:"seconds"`
	// InputReads says how each entry of Inputs was read: "map" (from its memory
	// mapping), "copy" (spans copied with pread: Job.Reads, or the default's choice)
	// or "decode" (a compressed checkpoint).
	InputReads []string `json:"input_reads,omitempty"`
	// Device is where the merged tensors ran: "cpu", "cuda" (all of them) or
	// "cuda+cpu"; GPU, the device and what it did, when one was opened or looked for.
	Device        string     `json:"device"`
	GPU           *GPUReport `json:"gpu,omitempty"`
	Threads       int        `json:"threads"`
	PeakHeapBytes uint64     `json:"peak_heap_bytes"`
	// ArenaBytes is the memory outside the Go heap that held tensors' copied inputs
	// between their passes (merge/hold.go); 0 when none did.
	ArenaBytes int64 `json:"arena_bytes,omitempty"`
	// GGUF: tensors written in another type than the reference input's.
	TypeChanges []TypeChange `json:"type_changes,omitempty"`
	// SFA: ‖current − anchor‖ and ‖merged − anchor‖ over the merged tensors.
	L2Before *float64 `json:"l2_before,omitempty"`
	L2After  *float64 `json:"l2_after,omitempty"`
	// L2Layers splits them by transformer layer (checkpoint.LayerOf), in layer order.
	L2Layers []LayerL2 `json:"l2_layers,omitempty"`
	// History is where sfa --keep-history stored the result.
	History string `json:"history,omitempty"`
	// Shard: what this worker of a sharded merge wrote.
	Shard *ShardReport `json:"shard,omitempty"`
	// DryRun: nothing was written; BytesRead and BytesWritten are what the merge
	// would read and write, Planned its output tensors.
	DryRun  bool            `json:"dry_run,omitempty"`
	Planned []PlannedTensor `json:"planned,omitempty"`
}

// LayerL2 is SFA's distance to the anchor over one layer's merged tensors; Layer is -1
// for the tensors outside the layers (embeddings, the final norm, the output head).
// The sums of squares add tensor by tensor in plan order, so the numbers are the same
// whatever the thread count.
type LayerL2 struct {
	Layer    int      `json:"layer"`
	L2Before *float64 `json:"l2_before"`
	L2After  *float64 `json:"l2_after"`
}

// Run performs the job: it locks the destination (repairing what an interrupted run
// left), opens the inputs, plans, writes everything to temporary files, and only then
// replaces the destination. On any error or cancellation the destination and the
// inputs are as they were.
func Run(ctx context.Context, job Job) (rep *Report, err error) {
	if job.Shard != nil {
		return runShard(ctx, job)
	}
	start := time.Now()
	heap := startHeapSampler()
	defer func() {
		peak := heap()
		if rep != nil {
			rep.PeakHeapBytes = peak
		}
	}()
	if len(job.Inputs) == 0 || job.Ref < 0 || job.Ref >= len(job.Inputs) {
		return nil, fmt.Errorf("merge: no reference input")
	}
	if job.DryRun {
		return dryRun(job)
	}
	if out := job.outPath(); checkpoint.IsCompressedPath(out) {
		return runCompressed(ctx, job, out)
	} else if job.InPlace && checkpoint.IsCompressedFolder(out) {
		return nil, fmt.Errorf("%w: --in-place on %s, a compressed folder, is not supported: merge into a new folder (--out), then compress it", ErrBadParameter, out)
	}
	dest, format, err := lockOutput(ctx, job)
	if err != nil {
		return nil, err
	}
	defer dest.Unlock()

	plan, err := openPlan(job, format)
	if err != nil {
		return nil, err
	}
	sources, aux := plan.Inputs, plan.Aux
	defer func() { closeAll(sources); closeAll(aux) }()
	layout, err := planOutput(job, format, plan, dest)
	if err != nil {
		return nil, err
	}
	o, err := dest.Create(layout.Layout)
	if err != nil {
		return nil, outputError(dest.Path, err)
	}
	if job.OnStart != nil {
		job.OnStart(planInputBytes(plan))
	}
	res, err := Execute(ctx, plan, o, job.Kernel, job.Exec)
	if err != nil {
		o.Abort()
		return nil, err
	}
	if job.Extras != nil && dest.Folder {
		if err := job.Extras(o); err != nil {
			o.Abort()
			return nil, &OutputError{Path: dest.Path, Err: err}
		}
	}
	reads := inputReads(plan) // while the sources are open
	// Every input byte is read: unmap the inputs before the commit, so that it never
	// replaces files this process still maps (Windows refuses to rename over them).
	closeAll(sources)
	closeAll(aux)
	sources, aux = nil, nil
	if err := o.Commit(); err != nil {
		return nil, outputError(dest.Path, err)
	}
	merged, copied := plan.Counts()
	rep = &Report{
		Version: job.Version, Method: job.Method, Parameters: job.Params,
		Inputs: append(append([]Input(nil), job.Inputs...), job.Aux...), Output: dest.Path,
		OutputFiles: o.Paths, InPlace: job.InPlace,
		Tensors: len(plan.Tensors), TensorsMerged: merged, TensorsCopied: copied,
		BytesRead: res.BytesRead, BytesWritten: res.BytesWritten, ArenaBytes: res.ArenaBytes,
		Threads: job.Exec.threads(), TypeChanges: layout.TypeChanges, InputReads: reads,
	}
	rep.Device, rep.GPU = deviceReport(job.Exec.Device, res.GPU, job.Method, merged)
	if job.Finish != nil {
		job.Finish(plan, res, rep)
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// openPlan opens the job's inputs and auxiliary sources and plans the merge for an
// output in format. The caller closes plan.Inputs and plan.Aux once done; on an
// error, openPlan has closed what it opened.
func openPlan(job Job, format checkpoint.Format) (*Plan, error) {
	sources, err := openAll(job.Open, job.Inputs)
	if err != nil {
		return nil, err
	}
	aux, err := openAll(job.Open, job.Aux)
	if err != nil {
		closeAll(sources)
		return nil, err
	}
	plan, err := func() (*Plan, error) {
		if err := checkFormats(format, sources, aux, job); err != nil {
			return nil, err
		}
		outType, err := format.OutType(job.OutDType, job.OutOptions, sources[job.Ref])
		if err != nil {
			return nil, badParameter(err)
		}
		opts := PlanOptions{Ref: job.Ref, OutType: outType, AllowMissing: job.AllowMissing, Reads: job.Reads}
		if job.OutOptions.Imatrix != nil {
			opts.Importance = job.OutOptions.Imatrix.For
		}
		return BuildPlan(sources, aux, opts)
	}()
	if err != nil {
		closeAll(sources)
		closeAll(aux)
		return nil, err
	}
	return plan, nil
}

// inputReads is Report.InputReads for the plan's inputs and auxiliary sources, in
// the report's order, as the plan's operands were made (operand, with plan.Reads).
func inputReads(plan *Plan) []string {
	var out []string
	for _, s := range append(append([]Source(nil), plan.Inputs...), plan.Aux...) {
		m, ok := s.(checkpoint.MappedDecoder)
		switch {
		case !checkpoint.ReadsRanges(s, plan.Reads):
			out = append(out, "map")
		case ok && m.Mapped():
			out = append(out, "copy")
		default:
			out = append(out, "decode")
		}
	}
	return out
}

// outPath is where the output goes: Out, or the reference input in place.
func (job *Job) outPath() string {
	if job.InPlace {
		return job.Inputs[job.Ref].Path
	}
	return job.Out
}

// runCompressed writes the merge as a compressed checkpoint (docs/compression.md):
// the merge goes to a safetensors file (a GGUF file when the reference input is one)
// beside the output (named after it and this process, so that concurrent runs do not
// meet), which is then coded into the .gmz through the crash-safe output and removed. The two are locked one after the other:
// a lock covers its folder, so holding the output's while the merge locks its file
// would wait forever. In place, a .gmz input is replaced by the merge, compressed on
// its own (not as a delta).
func runCompressed(ctx context.Context, job Job, out string) (*Report, error) {
	ext := ".safetensors"
	if checkpoint.FileFormat(job.Inputs[job.Ref].Path) == checkpoint.GGUF {
		ext = ".gguf" // GGUF inputs merge into a GGUF file, compressed as one
	}
	tmp := filepath.Join(filepath.Dir(out), fmt.Sprintf(".%s.merging-%d%s", filepath.Base(out), os.Getpid(), ext))
	inner := job
	inner.Out, inner.InPlace = tmp, false
	rep, err := Run(ctx, inner)
	if err != nil {
		return nil, err
	}
	for _, p := range rep.OutputFiles { // tmp, or the parts of a split GGUF output
		defer os.Remove(p)
	}
	// A split output compresses from its first part into NAME-0000k-of-0000N.gmz.
	res, err := checkpoint.Compress(ctx, rep.OutputFiles[0], out, checkpoint.CompressOptions{Workers: job.Exec.Threads})
	if err != nil {
		return nil, err
	}
	rep.Output, rep.OutputFiles, rep.InPlace = out, []string{out}, job.InPlace
	if len(res.Outputs) > 0 {
		rep.OutputFiles = res.Outputs
	}
	rep.BytesWritten = res.Stats.FileBytes
	return rep, nil
}

// lockOutput decides the output's path and format and locks it (repairing what an
// interrupted run left).
func lockOutput(ctx context.Context, job Job) (*atomicout.Dest, checkpoint.Format, error) {
	out, format, folder, err := outputFormat(job)
	if err != nil {
		return nil, nil, err
	}
	dest, err := atomicout.Lock(ctx, out, folder, job.OnLockWait)
	if err != nil {
		return nil, nil, &OutputError{Path: out, Err: err}
	}
	return dest, format, nil
}

// outputFormat is where the job's output goes, in which format, and whether it is a
// folder.
func outputFormat(job Job) (string, checkpoint.Format, bool, error) {
	out := job.Out
	if job.InPlace {
		out = job.Inputs[job.Ref].Path
	}
	if out == "" {
		return "", nil, false, errors.New("merge: no output path")
	}
	if job.InPlace {
		// Replace the checkpoint a link points to, not the link: a trainer resuming
		// from the real folder must see the merge.
		if real, err := filepath.EvalSymlinks(out); err == nil {
			out = real
		}
	}
	format, folder, err := checkpoint.OutputFormat(out)
	if err != nil && !job.InPlace {
		return "", nil, false, badParameter(err)
	}
	if err != nil { // in place: the reference's own path, whatever its name
		format, folder = checkpoint.Safetensors, true
	}
	return out, format, folder, nil
}

// checkFormats refuses what gomerge does not convert: inputs of different formats
// mixed (their tensor names differ: llama.cpp's blk.0.attn_q.weight against
// model.layers.0.self_attn.q_proj.weight), and an output in another format than the
// inputs'.
func checkFormats(out checkpoint.Format, sources, aux []Source, job Job) error {
	ref := sources[job.Ref]
	for _, s := range append(append([]Source(nil), sources...), aux...) {
		if s.Format() != ref.Format() {
			return fmt.Errorf("%w: %s and %s: %s and %s inputs cannot be merged together (their tensor names differ); convert one first",
				ErrBadInput, ref.Path(), s.Path(), ref.Format(), s.Format())
		}
	}
	if out != ref.Format() {
		return fmt.Errorf("%w: output %s: %s output needs %s inputs (gomerge does not convert %s tensors to %s); for %s inputs write %s",
			ErrBadParameter, job.Out, out, out, ref.Format(), out, ref.Format(), ref.Format().Writes())
	}
	return nil
}

// planOutput lays out the output in its format, with the provenance it records.
func planOutput(job Job, format checkpoint.Format, plan *Plan, dest *atomicout.Dest) (*checkpoint.Layout, error) {
	prov, err := provenance(job)
	if err != nil {
		return nil, err
	}
	out := checkpoint.Output{Name: filepath.Base(dest.Path), Folder: dest.Folder, Provenance: prov,
		Ref: plan.Inputs[job.Ref], InPlace: job.InPlace, ShardSize: job.ShardSize, Options: job.OutOptions}
	for _, t := range plan.Tensors {
		out.Tensors = append(out.Tensors, checkpoint.Tensor{Name: t.Name, Shape: t.Shape, DType: t.OutDType, From: t.Copy.DType})
	}
	l, err := format.Plan(out)
	if err != nil {
		return nil, badParameter(err)
	}
	return l, nil
}

// badParameter marks what an output format cannot hold as a bad parameter (exit
// status 2).
func badParameter(err error) error {
	if errors.Is(err, checkpoint.ErrUnsupported) {
		return fmt.Errorf("%w: %w", ErrBadParameter, err)
	}
	return err
}

// outputError marks filesystem failures at the output as such (exit status 4);
// anything else (a plan the format cannot hold) stays what it is.
func outputError(path string, err error) error {
	var pe *fs.PathError
	var errno syscall.Errno
	if errors.As(err, &pe) || errors.As(err, &errno) {
		return &OutputError{Path: path, Err: err}
	}
	return err
}

func openAll(open func(Input) (Source, error), inputs []Input) ([]Source, error) {
	if open == nil {
		open = func(in Input) (Source, error) { return Open(in.Path) }
	}
	var out []Source
	for _, in := range inputs {
		s, err := open(in)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("%s: %w", in.Role, err) // err names the path
		}
		out = append(out, s)
	}
	return out, nil
}

func closeAll(sources []Source) {
	for _, s := range sources {
		s.Close()
	}
}

func planInputBytes(p *Plan) int64 {
	var n int64
	for _, t := range p.Tensors {
		if t.Merge {
			for _, op := range t.In {
				n += op.Len()
			}
		} else {
			n += t.Copy.Len()
		}
	}
	return n
}

// provenance is what every output records about the merge that made it (docs/formats.md#provenance),
// as key and value, in the order a GGUF file lists them: the gomerge version, the
// method, its parameters and the inputs, the last two as JSON.
func provenance(job Job) ([][2]string, error) {
	params, err := json.Marshal(job.Params)
	if err != nil {
		return nil, err
	}
	inputs, err := json.Marshal(append(append([]Input(nil), job.Inputs...), job.Aux...))
	if err != nil {
		return nil, err
	}
	return [][2]string{{"gomerge.version", job.Version}, {"gomerge.method", job.Method},
		{"gomerge.parameters", string(params)}, {"gomerge.inputs", string(inputs)}}, nil
}

// SFAJob describes `gomerge sfa`.
type SFAJob struct {
	Anchor, Current, Fisher string
	SFA                     SFA
	Job                     Job // output, dtype, execution and callbacks; the rest is filled in
}

// RunSFA merges current toward anchor (docs/methods.md#sfa) and reports the L2 distance to
// the anchor before and after.
func RunSFA(ctx context.Context, s SFAJob) (*Report, error) {
	withFisher := s.Fisher != ""
	if err := s.SFA.Validate(withFisher); err != nil {
		return nil, err
	}
	job := s.Job
	job.Method = "sfa"
	job.Inputs = []Input{{Role: "anchor", Path: s.Anchor}, {Role: "current", Path: s.Current}}
	job.Ref = 1
	job.Params = map[string]any{"beta": s.SFA.Beta}
	if withFisher {
		job.Aux = []Input{{Role: "fisher", Path: s.Fisher}}
		job.Params = map[string]any{"eta": s.SFA.Eta, "fisher": s.Fisher}
	}
	k := s.SFA.Kernel()
	job.Kernel = func(*TensorPlan) Kernel { return k }
	job.Finish = func(plan *Plan, res *Result, r *Report) {
		var before, after float64
		byLayer := map[int]*[2]float64{}
		for i, st := range res.Stats {
			if st == nil {
				continue
			}
			before += st[sfaSqBefore]
			after += st[sfaSqAfter]
			l := checkpoint.LayerOf(plan.Tensors[i].Name)
			if byLayer[l] == nil {
				byLayer[l] = new([2]float64)
			}
			byLayer[l][0] += st[sfaSqBefore]
			byLayer[l][1] += st[sfaSqAfter]
		}
		r.L2Before, r.L2After = finite(math.Sqrt(before)), finite(math.Sqrt(after))
		for _, l := range slices.Sorted(maps.Keys(byLayer)) {
			sq := byLayer[l]
			r.L2Layers = append(r.L2Layers, LayerL2{Layer: l, L2Before: finite(math.Sqrt(sq[0])), L2After: finite(math.Sqrt(sq[1]))})
		}
	}
	return Run(ctx, job)
}

// finite returns &v, or nil (JSON null) when v is NaN or infinite: a NaN in the inputs
// makes the distance undefined, and JSON has no NaN.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// startHeapSampler samples the live Go heap every few milliseconds until the returned
// function is called, which returns the largest value seen.
func startHeapSampler() func() uint64 {
	const name = "/memory/classes/heap/objects:bytes"
	sample := []metrics.Sample{{Name: name}}
	read := func() uint64 {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return sample[0].Value.Uint64()
	}
	var mu sync.Mutex
	peak := read()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				v := read()
				mu.Lock()
				peak = max(peak, v)
				mu.Unlock()
			}
		}
	}()
	return func() uint64 {
		close(stop)
		<-done
		v := read()
		mu.Lock()
		defer mu.Unlock()
		return max(peak, v)
	}
}

// Finite is finite for other packages' JSON reports.
func Finite(v float64) *float64 { return finite(v) }
