package merge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// Shard-parallel merges (docs/cluster.md). A folder output's layout (its shard files,
// what each holds, every header byte) is planned the same way by every process given
// the same inputs and parameters, so N workers that share a filesystem can each write
// a part of it: worker I writes the output shards k with k mod N = I, each
// atomically, into OUT/.gomerge-shards/worker-I/, with a manifest of what it wrote.
// Worker 0 also writes the folder's small files (config, tokenizer, the index).
// Finalize checks every file against the manifests and moves them into OUT, the index
// last; until then OUT holds no index and no weights, so nothing mistakes it for a
// complete checkpoint.

// Shard selects one worker's part of a sharded merge.
type Shard struct {
	Index, Count int
}

// Validate checks 0 ≤ Index < Count.
func (s Shard) Validate() error {
	if s.Count < 1 || s.Index < 0 || s.Index >= s.Count {
		return fmt.Errorf("%w: shard index %d of %d: want 0 ≤ index < count", ErrBadParameter, s.Index, s.Count)
	}
	return nil
}

// ShardOwner is the worker that writes output file k of a plan split across count
// workers: round robin, so a worker's files are known from the plan alone and the
// shards, which a folder layout makes near-equal in size, spread evenly.
func ShardOwner(k, count int) int { return k % count }

// StagingDir is the folder inside OUT where workers write; finalize removes it.
const StagingDir = ".gomerge-shards"

// Names within a worker's folder.
const (
	manifestName   = "manifest.json"
	smallFilesName = "files"
)

// ManifestFormat names the manifest's schema; finalize refuses others.
const ManifestFormat = "gomerge-shard-manifest/1"

// WorkerDir is the folder where worker i of a sharded merge to out writes.
func WorkerDir(out string, i int) string {
	return filepath.Join(out, StagingDir, "worker-"+strconv.Itoa(i))
}

// ShardManifest is what a worker wrote, as OUT/.gomerge-shards/worker-I/manifest.json
// holds it. A worker rewrites it after each shard, so a rerun finds what is done.
type ShardManifest struct {
	Format   string `json:"format"`
	PlanHash string `json:"plan_hash"`
	Worker   int    `json:"worker"`
	Workers  int    `json:"workers"`
	Complete bool   `json:"complete"` // every file the worker owns is written
	Version  string `json:"version"`
	Host     string `json:"host"`
	PID      int    `json:"pid"`
	// Files is the output's weight files in plan order, with size and owner.
	Files []PlannedFile `json:"files"`
	// Last names the small files finalize writes after every other (the index).
	Last []string `json:"last,omitempty"`
	// Shards are the weight files this worker wrote; SmallFiles, worker 0's only, the
	// folder's other files (config, tokenizer, the index).
	Shards     []WrittenFile `json:"shards"`
	SmallFiles []WrittenFile `json:"small_files,omitempty"`
}

// PlannedFile is one weight file of the output plan.
type PlannedFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Worker int    `json:"worker"`
}

// WrittenFile is a file a worker wrote.
type WrittenFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ShardReport is a worker's part of a Report.
type ShardReport struct {
	Index   int      `json:"index"`
	Count   int      `json:"count"`
	Written []string `json:"written"` // shards written by this run
	Kept    []string `json:"kept"`    // shards a previous run of this worker had written, checked
	Dir     string   `json:"dir"`
}

// runShard is Run for one worker of a sharded merge.
func runShard(ctx context.Context, job Job) (rep *Report, err error) {
	start := time.Now()
	heap := startHeapSampler()
	defer func() {
		peak := heap()
		if rep != nil {
			rep.PeakHeapBytes = peak
		}
	}()
	sh := *job.Shard
	if err := sh.Validate(); err != nil {
		return nil, err
	}
	if job.InPlace {
		return nil, fmt.Errorf("%w: --in-place cannot be split across workers (each would replace the checkpoint); write a new folder", ErrBadParameter)
	}
	format, folder, err := checkpoint.OutputFormat(job.Out)
	if err != nil {
		return nil, badParameter(err)
	}
	if !folder || format != checkpoint.Safetensors {
		return nil, fmt.Errorf("%w: output %s: a merge split across workers writes a Hugging Face folder (a path without an extension); one file cannot be split", ErrBadParameter, job.Out)
	}
	out, err := filepath.Abs(job.Out)
	if err != nil {
		return nil, err
	}
	if err := checkShardOut(out); err != nil {
		return nil, err
	}
	wdir := WorkerDir(out, sh.Index)
	if err := os.MkdirAll(wdir, 0o777); err != nil {
		return nil, &OutputError{Path: wdir, Err: err}
	}
	// The worker's folder lock: a second worker given the same index waits, then
	// finds the shards written and checks them; finalize waits for running workers.
	mdest, err := atomicout.Lock(ctx, filepath.Join(wdir, manifestName), false, job.OnLockWait)
	if err != nil {
		return nil, &OutputError{Path: wdir, Err: err}
	}
	defer mdest.Unlock()

	plan, err := openPlan(job, format)
	if err != nil {
		return nil, err
	}
	sources, aux := plan.Inputs, plan.Aux
	defer func() { closeAll(sources); closeAll(aux) }()
	layout, err := planOutput(job, format, plan, &atomicout.Dest{Path: out, Folder: true})
	if err != nil {
		return nil, err
	}
	hash, err := planHash(job, plan, &layout.Layout, sh.Count)
	if err != nil {
		return nil, err
	}
	w := &worker{job: job, sh: sh, dir: wdir, dest: mdest, plan: plan, layout: &layout.Layout}
	w.man = ShardManifest{Format: ManifestFormat, PlanHash: hash, Worker: sh.Index, Workers: sh.Count,
		Version: job.Version, PID: os.Getpid()}
	w.man.Host, _ = os.Hostname()
	for k, f := range layout.Files {
		w.man.Files = append(w.man.Files, PlannedFile{Name: f.Name, Size: f.Size, Worker: ShardOwner(k, sh.Count)})
	}
	for _, wf := range layout.Whole {
		w.man.Last = append(w.man.Last, wf.Name)
	}
	prev := w.previous()
	if job.OnStart != nil {
		job.OnStart(w.inputBytes())
	}
	rep = &Report{Version: job.Version, Method: job.Method, Parameters: job.Params,
		Inputs: append(append([]Input(nil), job.Inputs...), job.Aux...), Output: out,
		Threads: job.Exec.threads(), TypeChanges: layout.TypeChanges,
		Shard: &ShardReport{Index: sh.Index, Count: sh.Count, Dir: wdir, Written: []string{}, Kept: []string{}}}
	var res shardTotals
	for k, f := range layout.Files {
		if ShardOwner(k, sh.Count) != sh.Index {
			continue
		}
		if wf, ok := prev[f.Name]; ok && w.valid(wf, f.Size) {
			w.man.Shards = append(w.man.Shards, wf)
			rep.Shard.Kept = append(rep.Shard.Kept, f.Name)
			continue
		}
		wf, r, err := w.writeShard(ctx, k)
		if err != nil {
			return nil, err
		}
		w.man.Shards = append(w.man.Shards, wf)
		rep.Shard.Written = append(rep.Shard.Written, f.Name)
		rep.OutputFiles = append(rep.OutputFiles, filepath.Join(wdir, f.Name))
		res.add(r)
		if err := w.writeManifest(); err != nil { // a rerun keeps what is done
			return nil, err
		}
	}
	if sh.Index == 0 {
		if err := w.writeSmallFiles(); err != nil {
			return nil, err
		}
	}
	rep.InputReads = inputReads(plan)
	closeAll(sources)
	closeAll(aux)
	sources, aux = nil, nil
	w.man.Complete = true
	if err := w.writeManifest(); err != nil {
		return nil, err
	}
	rep.Tensors, rep.TensorsMerged, rep.TensorsCopied = res.tensors, res.merged, res.copied
	rep.BytesRead, rep.BytesWritten, rep.ArenaBytes = res.BytesRead, res.BytesWritten, res.ArenaBytes
	rep.Device, rep.GPU = deviceReport(job.Exec.Device, res.GPU, job.Method, res.merged)
	if job.Finish != nil {
		// The method's own results (SFA's distances) cover this worker's tensors.
		job.Finish(plan, &Result{Stats: res.Stats}, rep)
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// checkShardOut refuses an output folder that holds anything but the workers'
// staging folder: a finished checkpoint, or one finalize is moving into place.
func checkShardOut(out string) error {
	entries, err := os.ReadDir(out)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &OutputError{Path: out, Err: err}
	}
	for _, e := range entries {
		if e.Name() != StagingDir {
			return &OutputError{Path: out, Err: fmt.Errorf("holds %s: a sharded merge writes into a new or empty folder (if finalize was interrupted, run gomerge finalize again)", e.Name())}
		}
	}
	return nil
}

// shardTotals sums what a worker's shards did.
type shardTotals struct {
	Result
	tensors, merged, copied int
}

type worker struct {
	job    Job
	sh     Shard
	dir    string
	dest   *atomicout.Dest
	plan   *Plan
	layout *atomicout.Layout
	man    ShardManifest
}

// previous returns the shards a previous run of this worker recorded under the same
// plan hash.
func (w *worker) previous() map[string]WrittenFile {
	data, err := os.ReadFile(filepath.Join(w.dir, manifestName))
	if err != nil {
		return nil
	}
	var m ShardManifest
	if json.Unmarshal(data, &m) != nil || m.Format != ManifestFormat || m.PlanHash != w.man.PlanHash {
		return nil
	}
	prev := map[string]WrittenFile{}
	for _, f := range m.Shards {
		prev[f.Name] = f
	}
	return prev
}

// valid says whether the file wf names is in the worker's folder with the recorded
// size and checksum (a rerun redoes a truncated or corrupted one).
func (w *worker) valid(wf WrittenFile, size int64) bool {
	if wf.Size != size {
		return false
	}
	sum, n, err := fileSHA256(filepath.Join(w.dir, wf.Name))
	return err == nil && n == size && sum == wf.SHA256
}

func (w *worker) inputBytes() int64 {
	var n int64
	for i := range w.plan.Tensors {
		if ShardOwner(w.layout.Regions[i].File, w.sh.Count) == w.sh.Index {
			n += tensorInputBytes(&w.plan.Tensors[i])
		}
	}
	return n
}

func tensorInputBytes(t *TensorPlan) int64 {
	if !t.Merge {
		return int64(len(t.Copy.Data))
	}
	var n int64
	for _, op := range t.In {
		n += int64(len(op.Data))
	}
	return n
}

// writeShard writes output file k atomically into the worker's folder and returns
// its size and checksum.
func (w *worker) writeShard(ctx context.Context, k int) (WrittenFile, *shardDone, error) {
	f := w.layout.Files[k]
	sub := &Plan{Inputs: w.plan.Inputs, Aux: w.plan.Aux, Reads: w.plan.Reads}
	l := atomicout.Layout{Files: []atomicout.File{f}}
	for i, r := range w.layout.Regions {
		if r.File == k {
			sub.Tensors = append(sub.Tensors, w.plan.Tensors[i])
			l.Regions = append(l.Regions, atomicout.Region{File: 0, Begin: r.Begin, Size: r.Size})
		}
	}
	path := filepath.Join(w.dir, f.Name)
	d, err := w.dest.Sibling(f.Name, false)
	if err != nil {
		return WrittenFile{}, nil, &OutputError{Path: path, Err: err}
	}
	o, err := d.Create(l)
	if err != nil {
		return WrittenFile{}, nil, outputError(path, err)
	}
	res, err := Execute(ctx, sub, o, w.job.Kernel, w.job.Exec)
	if err != nil {
		o.Abort()
		return WrittenFile{}, nil, err
	}
	if err := o.Commit(); err != nil {
		return WrittenFile{}, nil, outputError(path, err)
	}
	// Read back rather than hashed on the way out: the engine writes tensors
	// concurrently, out of order. The file was just written, so this reads the page cache.
	sum, n, err := fileSHA256(path)
	if err != nil {
		return WrittenFile{}, nil, &OutputError{Path: path, Err: err}
	}
	done := &shardDone{Result: *res, tensors: len(sub.Tensors)}
	done.merged, done.copied = sub.Counts()
	return WrittenFile{Name: f.Name, Size: n, SHA256: sum}, done, nil
}

// writeSmallFiles writes the folder's files other than the weights (carried config
// and tokenizer, a recipe's extras, the index) as the worker's files/ folder.
func (w *worker) writeSmallFiles() error {
	path := filepath.Join(w.dir, smallFilesName)
	if err := os.RemoveAll(path); err != nil {
		return &OutputError{Path: path, Err: err}
	}
	d, err := w.dest.Sibling(smallFilesName, true)
	if err != nil {
		return &OutputError{Path: path, Err: err}
	}
	o, err := d.Create(atomicout.Layout{Whole: w.layout.Whole, Carry: w.layout.Carry})
	if err != nil {
		return outputError(path, err)
	}
	if w.job.Extras != nil {
		if err := w.job.Extras(o); err != nil {
			o.Abort()
			return &OutputError{Path: path, Err: err}
		}
	}
	if err := o.Commit(); err != nil {
		return outputError(path, err)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return &OutputError{Path: path, Err: err}
	}
	w.man.SmallFiles = nil
	for _, e := range entries {
		if !e.Type().IsRegular() {
			return &OutputError{Path: path, Err: fmt.Errorf("%s is not a regular file", e.Name())}
		}
		sum, n, err := fileSHA256(filepath.Join(path, e.Name()))
		if err != nil {
			return &OutputError{Path: path, Err: err}
		}
		w.man.SmallFiles = append(w.man.SmallFiles, WrittenFile{Name: e.Name(), Size: n, SHA256: sum})
	}
	return nil
}

// writeManifest replaces the worker's manifest atomically.
func (w *worker) writeManifest() error {
	data, err := json.MarshalIndent(&w.man, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	o, err := w.dest.Create(atomicout.Layout{Files: []atomicout.File{{Header: data, Size: int64(len(data))}}})
	if err != nil {
		return outputError(w.dest.Path, err)
	}
	if err := o.Commit(); err != nil {
		return outputError(w.dest.Path, err)
	}
	return nil
}

// shardDone is what writing one shard did.
type shardDone = shardTotals

// add sums a shard's Result into r.
func (r *shardTotals) add(o *shardDone) {
	r.BytesRead += o.BytesRead
	r.BytesWritten += o.BytesWritten
	r.Stats = append(r.Stats, o.Stats...)
	r.tensors += o.tensors
	r.merged += o.merged
	r.copied += o.copied
	if o.GPU != nil {
		if r.GPU == nil {
			g := *o.GPU
			r.GPU = &g
			return
		}
		g, u := r.GPU, o.GPU
		g.Tensors += u.Tensors
		g.Elements += u.Elements
		g.Stats.BytesToDevice += u.Stats.BytesToDevice
		g.Stats.BytesFromDevice += u.Stats.BytesFromDevice
		g.Stats.Launches += u.Stats.Launches
		if g.Calibration == nil {
			g.Calibration = u.Calibration // one per process: every shard's is the same
		}
		if g.Unavailable == "" {
			g.Unavailable = u.Unavailable
		}
	}
}

// planHash identifies a sharded merge: the output plan (every file's name, size and
// header, which carries the provenance: version, method, parameters, input paths),
// the small files, the inputs' tensor metadata and the worker count. Workers that
// disagree on any of it would write shards that do not fit together.
func planHash(job Job, plan *Plan, l *atomicout.Layout, count int) (string, error) {
	type tensor struct {
		Name  string  `json:"name"`
		DType string  `json:"dtype"`
		Shape []int64 `json:"shape"`
	}
	type input struct {
		Role    string   `json:"role"`
		Path    string   `json:"path"`
		Tensors []tensor `json:"tensors"`
	}
	type file struct {
		Name   string `json:"name"`
		Size   int64  `json:"size"`
		Header string `json:"header_sha256"`
	}
	v := struct {
		Format string         `json:"format"`
		Count  int            `json:"count"`
		Method string         `json:"method"`
		Params map[string]any `json:"params"`
		Inputs []input        `json:"inputs"`
		Files  []file         `json:"files"`
		Whole  []file         `json:"whole"`
		Carry  string         `json:"carry"`
		Plan   []tensor       `json:"plan"`
	}{Format: ManifestFormat, Count: count, Method: job.Method, Params: job.Params}
	roles := append(append([]Input(nil), job.Inputs...), job.Aux...)
	for i, s := range append(append([]Source(nil), plan.Inputs...), plan.Aux...) {
		in := input{Role: roles[i].Role, Path: roles[i].Path}
		for _, t := range s.Tensors() {
			in.Tensors = append(in.Tensors, tensor{t.Name, t.DType.String(), t.Shape})
		}
		v.Inputs = append(v.Inputs, in)
	}
	for _, f := range l.Files {
		h := sha256.Sum256(f.Header)
		v.Files = append(v.Files, file{f.Name, f.Size, hex.EncodeToString(h[:])})
	}
	for _, f := range l.Whole {
		h := sha256.Sum256(f.Data)
		v.Whole = append(v.Whole, file{f.Name, int64(len(f.Data)), hex.EncodeToString(h[:])})
	}
	if l.Carry != nil {
		v.Carry = l.Carry.From
	}
	for _, t := range plan.Tensors {
		v.Plan = append(v.Plan, tensor{t.Name, t.OutDType.String(), t.Shape})
	}
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:]), nil
}

// fileSHA256 returns a file's SHA-256 (hex) and length.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// workerNames lists "worker 1, worker 3" for messages.
func workerNames(ws []int) string {
	slices.Sort(ws)
	s := make([]string, len(ws))
	for i, w := range ws {
		s[i] = "worker " + strconv.Itoa(w)
	}
	return strings.Join(s, ", ")
}
