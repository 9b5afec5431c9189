package merge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gomerge/gomerge/internal/atomicout"
)

// ErrShardMismatch is wrapped by Finalize's refusals: a worker missing or
// unfinished, a plan hash that differs, a shard whose size or checksum is not what its
// worker recorded. It is a kind of ErrBadInput.
var ErrShardMismatch = fmt.Errorf("%w: sharded merge incomplete or inconsistent", ErrBadInput)

// FinalizeReport is what Finalize did, as `gomerge finalize --json` prints it.
type FinalizeReport struct {
	Output   string   `json:"output"`
	Workers  int      `json:"workers"`
	PlanHash string   `json:"plan_hash"`
	Files    []string `json:"files"` // every file of the finished folder, in the order moved
	Bytes    int64    `json:"bytes"`
	Seconds  float64  `json:"seconds"`
}

// Finalize finishes a sharded merge to out (docs/cluster.md): it waits for running
// workers (onWait, if set, is called once before waiting), checks that every worker
// 0…N−1 finished under one plan hash and that every planned file is there with the
// size and SHA-256 its worker recorded, then moves the files into out — the small
// files, the shards, the index last — and removes the staging folder. It refuses,
// naming the worker or the shard, before moving anything. Run again after an
// interruption, it picks up where it stopped.
func Finalize(ctx context.Context, out string, onWait func()) (*FinalizeReport, error) {
	start := time.Now()
	out, err := filepath.Abs(out)
	if err != nil {
		return nil, err
	}
	staging := filepath.Join(out, StagingDir)
	entries, err := os.ReadDir(staging)
	if err != nil {
		return nil, fmt.Errorf("%s: no sharded merge to finalize: %w", out, err)
	}
	// One finalize at a time per output.
	lk, err := atomicout.Lock(ctx, out, true, onWait)
	if err != nil {
		return nil, &OutputError{Path: out, Err: err}
	}
	defer lk.Unlock()

	mans := map[int]*ShardManifest{}
	for _, e := range entries {
		i, ok := workerIndex(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		m, unlock, err := readWorker(ctx, out, i, onWait)
		if err != nil {
			return nil, err
		}
		defer unlock()
		mans[i] = m
	}
	ref, err := checkManifests(out, mans)
	if err != nil {
		return nil, err
	}
	moves, err := verifyFiles(out, ref, mans)
	if err != nil {
		return nil, err
	}
	rep := &FinalizeReport{Output: out, Workers: ref.Workers, PlanHash: ref.PlanHash}
	for _, mv := range moves {
		if mv.from != mv.to {
			if err := os.Rename(mv.from, mv.to); err != nil {
				return nil, &OutputError{Path: mv.to, Err: err}
			}
		}
		rep.Files = append(rep.Files, filepath.Base(mv.to))
		rep.Bytes += mv.size
	}
	if err := syncFolder(out); err != nil {
		return nil, &OutputError{Path: out, Err: err}
	}
	if err := os.RemoveAll(staging); err != nil {
		return nil, &OutputError{Path: staging, Err: err}
	}
	if err := syncFolder(out); err != nil {
		return nil, &OutputError{Path: out, Err: err}
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

func workerIndex(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "worker-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil && i >= 0 && strconv.Itoa(i) == s
}

// readWorker waits for worker i to stop writing (its folder lock), then reads its
// manifest; the lock is held until unlock, so that no worker changes a file between
// the check and the move.
func readWorker(ctx context.Context, out string, i int, onWait func()) (*ShardManifest, func(), error) {
	dir := WorkerDir(out, i)
	d, err := atomicout.Lock(ctx, filepath.Join(dir, manifestName), false, onWait)
	if err != nil {
		return nil, nil, &OutputError{Path: dir, Err: err}
	}
	data, err := os.ReadFile(filepath.Join(dir, manifestName))
	if errors.Is(err, fs.ErrNotExist) {
		d.Unlock()
		return nil, nil, fmt.Errorf("%w: worker %d wrote no manifest in %s (it was stopped before its first shard): run it again", ErrShardMismatch, i, dir)
	}
	if err != nil {
		d.Unlock()
		return nil, nil, err
	}
	var m ShardManifest
	if err := json.Unmarshal(data, &m); err != nil || m.Format != ManifestFormat {
		d.Unlock()
		return nil, nil, fmt.Errorf("%w: worker %d: %s is not a %s manifest", ErrShardMismatch, i, filepath.Join(dir, manifestName), ManifestFormat)
	}
	if m.Worker != i || m.Workers < 1 || m.Worker >= m.Workers {
		d.Unlock()
		return nil, nil, fmt.Errorf("%w: worker %d: its manifest says worker %d of %d", ErrShardMismatch, i, m.Worker, m.Workers)
	}
	return &m, d.Unlock, nil
}

// checkManifests finds the plan the workers agree on and refuses a worker that ran
// another plan, one missing, and one unfinished.
func checkManifests(out string, mans map[int]*ShardManifest) (*ShardManifest, error) {
	if len(mans) == 0 {
		return nil, fmt.Errorf("%w: %s: no worker has written anything", ErrShardMismatch, out)
	}
	// The plan most workers ran is the reference (the lowest worker's on a tie), so
	// that the one that ran with other inputs is the one named.
	votes := map[string][]int{}
	for i, m := range mans {
		votes[m.PlanHash] = append(votes[m.PlanHash], i)
	}
	var best string
	for h, ws := range votes {
		if best == "" || len(ws) > len(votes[best]) || (len(ws) == len(votes[best]) && minInt(ws) < minInt(votes[best])) {
			best = h
		}
	}
	var others []int
	for h, ws := range votes {
		if h != best {
			others = append(others, ws...)
		}
	}
	if len(others) > 0 {
		return nil, fmt.Errorf("%w: %s ran another plan than %s (plan hash %.12s… against %.12s…): different inputs, recipe, parameters, worker count or gomerge version; rerun it with the same command line as the others",
			ErrShardMismatch, workerNames(others), workerNames(votes[best]), mans[others[0]].PlanHash, best)
	}
	ref := mans[votes[best][0]]
	var missing, unfinished []int
	for i := range ref.Workers {
		m, ok := mans[i]
		switch {
		case !ok:
			missing = append(missing, i)
		case !m.Complete:
			unfinished = append(unfinished, i)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s of %d has not run (no folder in %s)", ErrShardMismatch, workerNames(missing), ref.Workers, filepath.Join(out, StagingDir))
	}
	if len(unfinished) > 0 {
		return nil, fmt.Errorf("%w: %s of %d has not finished (killed, or still running elsewhere): run it again", ErrShardMismatch, workerNames(unfinished), ref.Workers)
	}
	return ref, nil
}

func minInt(ws []int) int {
	m := ws[0]
	for _, w := range ws {
		m = min(m, w)
	}
	return m
}

type move struct {
	from, to string
	size     int64
}

// verifyFiles checks every planned file, in the worker's folder or already moved into
// out by an interrupted finalize, against its worker's record, and returns the moves
// in order: small files, shards, then the index.
func verifyFiles(out string, ref *ShardManifest, mans map[int]*ShardManifest) ([]move, error) {
	type check struct {
		staged string
		rec    WrittenFile
		kind   string
		worker int
	}
	var checks []check
	for _, pf := range ref.Files {
		if pf.Worker < 0 || pf.Worker >= ref.Workers {
			return nil, fmt.Errorf("%w: shard %s: planned for worker %d of %d", ErrShardMismatch, pf.Name, pf.Worker, ref.Workers)
		}
		rec, ok := findWritten(mans[pf.Worker].Shards, pf.Name)
		if !ok || rec.Size != pf.Size {
			return nil, fmt.Errorf("%w: shard %s: worker %d did not record it at the planned %d bytes", ErrShardMismatch, pf.Name, pf.Worker, pf.Size)
		}
		checks = append(checks, check{filepath.Join(WorkerDir(out, pf.Worker), pf.Name), rec, "shard", pf.Worker})
	}
	nShards := len(checks)
	for _, rec := range mans[0].SmallFiles {
		checks = append(checks, check{filepath.Join(WorkerDir(out, 0), smallFilesName, rec.Name), rec, "file", 0})
	}
	// Checksums are read concurrently (a parallel filesystem serves many readers
	// faster than one); the error reported is the first in plan order, whatever
	// finished first.
	moves := make([]move, len(checks))
	errs := make([]error, len(checks))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, c := range checks {
		g.Go(func() error {
			moves[i], errs[i] = verifyFile(out, c.staged, c.rec, c.kind, c.worker)
			return nil
		})
	}
	g.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	isLast := map[string]bool{}
	for _, n := range ref.Last {
		isLast[n] = true
	}
	var first, last []move
	for _, mv := range moves[nShards:] {
		if isLast[filepath.Base(mv.to)] {
			last = append(last, mv)
		} else {
			first = append(first, mv)
		}
	}
	return append(append(first, moves[:nShards]...), last...), nil
}

func findWritten(ws []WrittenFile, name string) (WrittenFile, bool) {
	for _, w := range ws {
		if w.Name == name {
			return w, true
		}
	}
	return WrittenFile{}, false
}

// verifyFile checks one file at staged (or, moved, in out) against rec.
func verifyFile(out, staged string, rec WrittenFile, kind string, worker int) (move, error) {
	if rec.Name != filepath.Base(rec.Name) || rec.Name == "." || rec.Name == ".." || rec.Name == StagingDir {
		return move{}, fmt.Errorf("%w: worker %d records %q, which is not a plain file name", ErrShardMismatch, worker, rec.Name)
	}
	final := filepath.Join(out, rec.Name)
	path := staged
	if _, err := os.Lstat(staged); errors.Is(err, fs.ErrNotExist) {
		path = final
	}
	st, err := os.Lstat(path)
	if err != nil {
		return move{}, fmt.Errorf("%w: %s %s of worker %d is missing: %w", ErrShardMismatch, kind, rec.Name, worker, err)
	}
	if !st.Mode().IsRegular() {
		return move{}, fmt.Errorf("%w: %s %s of worker %d: %s is not a regular file", ErrShardMismatch, kind, rec.Name, worker, path)
	}
	if st.Size() != rec.Size {
		return move{}, fmt.Errorf("%w: %s %s of worker %d: %s is %d bytes, its manifest says %d (truncated?): rerun worker %d",
			ErrShardMismatch, kind, rec.Name, worker, path, st.Size(), rec.Size, worker)
	}
	sum, _, err := fileSHA256(path)
	if err != nil {
		return move{}, fmt.Errorf("%s %s of worker %d: %w", kind, rec.Name, worker, err)
	}
	if sum != rec.SHA256 {
		return move{}, fmt.Errorf("%w: %s %s of worker %d: %s has SHA-256 %.12s…, its manifest says %.12s… (corrupted): rerun worker %d",
			ErrShardMismatch, kind, rec.Name, worker, path, sum, rec.SHA256, worker)
	}
	return move{from: path, to: final, size: rec.Size}, nil
}

func syncFolder(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && runtime.GOOS != "windows" { // Windows cannot sync a folder
		return err
	}
	return nil
}
