package merge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// DefaultShardSize is the largest shard a folder output gets unless told otherwise
// (Hugging Face's default).
const DefaultShardSize = 5_000_000_000

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
	AllowMissing bool
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
	// Device is where the merged tensors ran: "cpu", "cuda" (all of them) or
	// "cuda+cpu"; GPU, the device and what it did, when one was opened or looked for.
	Device        string     `json:"device"`
	GPU           *GPUReport `json:"gpu,omitempty"`
	Threads       int        `json:"threads"`
	PeakHeapBytes uint64     `json:"peak_heap_bytes"`
	// GGUF: tensors written in another type than the reference input's.
	TypeChanges []TypeChange `json:"type_changes,omitempty"`
	// SFA: ‖current − anchor‖ and ‖merged − anchor‖ over the merged tensors.
	L2Before *float64 `json:"l2_before,omitempty"`
	L2After  *float64 `json:"l2_after,omitempty"`
}

// Run performs the job: it locks the destination (repairing what an interrupted run
// left), opens the inputs, plans, writes everything to temporary files, and only then
// replaces the destination. On any error or cancellation the destination and the
// inputs are as they were.
func Run(ctx context.Context, job Job) (rep *Report, err error) {
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
	out := job.Out
	if job.InPlace {
		out = job.Inputs[job.Ref].Path
	}
	if out == "" {
		return nil, errors.New("merge: no output path")
	}
	if job.InPlace {
		// Replace the checkpoint a link points to, not the link: a trainer resuming
		// from the real folder must see the merge.
		if real, err := filepath.EvalSymlinks(out); err == nil {
			out = real
		}
	} else if ext := strings.ToLower(filepath.Ext(out)); notFolderExt[ext] {
		return nil, fmt.Errorf("%w: output %s: gomerge writes a .safetensors file, a folder or a .gguf file (%s output is not supported)", ErrBadParameter, out, ext)
	}
	dest, err := atomicout.Lock(ctx, out, IsFolderPath(out), job.OnLockWait)
	if err != nil {
		return nil, &OutputError{Path: out, Err: err}
	}
	defer dest.Unlock()

	sources, err := openAll(job.Open, job.Inputs)
	if err != nil {
		return nil, err
	}
	defer closeAll(sources)
	aux, err := openAll(job.Open, job.Aux)
	if err != nil {
		return nil, err
	}
	defer closeAll(aux)

	ggufOut := isGGUFPath(dest.Path)
	if err := checkFormats(sources, aux, job, ggufOut); err != nil {
		return nil, err
	}
	planDType := job.OutDType
	if ggufOut {
		planDType = dtype.Invalid // ggufOutTypes decides per tensor
	}
	plan, err := BuildPlan(sources, aux, PlanOptions{Ref: job.Ref, OutDType: planDType, AllowMissing: job.AllowMissing})
	if err != nil {
		return nil, err
	}
	var layout atomicout.Layout
	var typeChanges []TypeChange
	if ggufOut {
		typeChanges = ggufOutTypes(plan, job.OutDType)
		layout, err = ggufLayout(job, plan, sources[job.Ref].(*ggufSource), len(typeChanges) > 0)
	} else {
		var opts safetensors.OutputOptions
		opts, err = outputOptions(job, plan, sources[job.Ref], dest)
		if err == nil {
			var p *safetensors.Output
			p, err = safetensors.PlanOutput(filepath.Base(dest.Path), dest.Folder, opts)
			if p != nil {
				layout = p.Layout
			}
		}
	}
	if err != nil {
		return nil, err
	}
	o, err := dest.Create(layout)
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
	if err := o.Commit(); err != nil {
		return nil, outputError(dest.Path, err)
	}
	merged, copied := plan.Counts()
	rep = &Report{
		Version: job.Version, Method: job.Method, Parameters: job.Params,
		Inputs: append(append([]Input(nil), job.Inputs...), job.Aux...), Output: dest.Path,
		OutputFiles: o.Paths, InPlace: job.InPlace,
		Tensors: len(plan.Tensors), TensorsMerged: merged, TensorsCopied: copied,
		BytesRead: res.BytesRead, BytesWritten: res.BytesWritten,
		Threads: job.Exec.threads(), TypeChanges: typeChanges,
	}
	rep.Device, rep.GPU = deviceReport(job.Exec.Device, res.GPU, job.Method, merged)
	if job.Finish != nil {
		job.Finish(plan, res, rep)
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// checkFormats refuses what gomerge does not convert: GGUF and safetensors inputs
// mixed (their tensor names differ: llama.cpp's blk.0.attn_q.weight against
// model.layers.0.self_attn.q_proj.weight), GGUF inputs written as safetensors, and
// block types asked of a safetensors output.
func checkFormats(sources, aux []Source, job Job, ggufOut bool) error {
	_, refGGUF := sources[job.Ref].(*ggufSource)
	for _, s := range append(append([]Source(nil), sources...), aux...) {
		if _, isGGUF := s.(*ggufSource); isGGUF != refGGUF {
			return fmt.Errorf("%w: %s and %s: GGUF and safetensors inputs cannot be merged together (their tensor names differ); convert one first",
				ErrBadInput, sources[job.Ref].Path(), s.Path())
		}
	}
	switch {
	case ggufOut && !refGGUF:
		return fmt.Errorf("%w: output %s: GGUF output needs GGUF inputs (gomerge does not rename safetensors tensors to llama.cpp's names)", ErrBadParameter, job.Out)
	case !ggufOut && refGGUF:
		return fmt.Errorf("%w: GGUF inputs are written as GGUF: name the output NAME.gguf", ErrBadParameter)
	case !ggufOut && job.OutDType.IsBlock():
		return fmt.Errorf("%w: --dtype %s: safetensors cannot hold block-quantized types (write a .gguf, or pick F32, F16 or BF16)", ErrBadParameter, job.OutDType)
	}
	return nil
}

// IsFolderPath reports whether an output path names a folder: anything that does not
// end in .safetensors or .gguf.
func IsFolderPath(path string) bool {
	p := strings.ToLower(path)
	return !strings.HasSuffix(p, ".safetensors") && !isGGUFPath(p)
}

// isWeightFile says which files of a reference folder are weights (of any format)
// that an output replaces rather than carries over.
func isWeightFile(name string) bool {
	for _, suf := range []string{".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack"} {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}

// notFolderExt are extensions that name a file, not a folder, that gomerge cannot
// write: refused rather than silently making a folder of that name.
var notFolderExt = map[string]bool{".bin": true, ".pt": true, ".pth": true, ".ckpt": true,
	".h5": true, ".npz": true, ".json": true, ".onnx": true, ".msgpack": true}

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
				n += int64(len(op.Data))
			}
		} else {
			n += int64(len(t.Copy.Data))
		}
	}
	return n
}

// outputOptions decides the output's tensors, layout, extra files and provenance.
func outputOptions(job Job, plan *Plan, ref Source, dest *atomicout.Dest) (safetensors.OutputOptions, error) {
	var opts safetensors.OutputOptions
	for _, t := range plan.Tensors {
		opts.Specs = append(opts.Specs, safetensors.Spec{Name: t.Name, DType: t.OutDType, Shape: t.Shape})
	}
	refCkpt, isST := checkpointOf(ref)
	meta := map[string]string{}
	if isST {
		maps.Copy(meta, refCkpt.Metadata)
	}
	prov, err := provenance(job)
	if err != nil {
		return opts, err
	}
	meta["format"] = "pt" // transformers refuses files without it
	for _, kv := range prov {
		meta[kv[0]] = kv[1]
	}
	opts.Metadata = meta

	if !dest.Folder {
		return opts, nil
	}
	opts.ShardSize = job.ShardSize
	if isST && refCkpt.Dir != "" {
		opts.ExtraFrom = refCkpt.Dir
		opts.Link = job.InPlace
		opts.NotCopied = isWeightFile
		for _, sh := range refCkpt.Shards {
			opts.Replace = append(opts.Replace, sh.Name)
		}
		if job.ShardSize == 0 {
			opts.Layout = layoutOf(refCkpt, plan)
		}
	}
	if opts.ShardSize == 0 {
		opts.ShardSize = DefaultShardSize
	}
	return opts, nil
}

// provenance is what every output records about the merge that made it (SPEC §3),
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

// layoutOf keeps the reference folder's file names and tensor placement; tensors it
// lacks (copied from other inputs) go into its last file.
func layoutOf(c *safetensors.Checkpoint, plan *Plan) []safetensors.ShardLayout {
	layout := make([]safetensors.ShardLayout, len(c.Shards))
	for i, s := range c.Shards {
		layout[i].Name = s.Name
	}
	for _, t := range plan.Tensors {
		i := len(layout) - 1
		if rt, ok := c.Tensor(t.Name); ok {
			i = rt.Shard
		}
		layout[i].Tensors = append(layout[i].Tensors, t.Name)
	}
	return layout
}

// SFAJob describes `gomerge sfa`.
type SFAJob struct {
	Anchor, Current, Fisher string
	SFA                     SFA
	Job                     Job // output, dtype, execution and callbacks; the rest is filled in
}

// RunSFA merges current toward anchor (SPEC §2, sfa) and reports the L2 distance to
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
		for _, st := range res.Stats {
			if st != nil {
				before += st[sfaSqBefore]
				after += st[sfaSqAfter]
			}
		}
		r.L2Before, r.L2After = finite(math.Sqrt(before)), finite(math.Sqrt(after))
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
