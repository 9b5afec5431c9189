package main

// Crash tests (docs/reliability.md#crash-safety): a gomerge process SIGKILLed at any point of a merge leaves
// the destination either complete-old or complete-new, never a mixture, and the next
// run removes what it left behind.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/gomerge/gomerge/internal/atomicout"
	"github.com/gomerge/gomerge/internal/testexec"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	"github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// crashConfig is big enough (about 90 chunks of input, 23 MB of output) for the
// pause hook to stop a merge at many different points of it, small enough to repeat
// 50 times.
var crashConfig = safetensorstest.LlamaConfig{Vocab: 2000, Hidden: 256, Intermediate: 700, Layers: 6}

const crashShards = 4

// buildGomerge builds the gomerge binary (without -race: the child is what gets
// killed, the test only watches it) into a temporary folder.
func buildGomerge(t *testing.T) string {
	t.Helper()
	bin, err := testexec.Gomerge(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// crashFixture is an anchor file and a multi-shard "current" folder, kept in memory so
// that each iteration starts from a fresh copy.
type crashFixture struct {
	dir        string            // holds anchor.safetensors and master/
	anchor     string            // path of the anchor file
	master     string            // a pristine copy of the current folder, never written
	files      map[string][]byte // master's files by name
	anchorHash string
}

func newCrashFixture(t *testing.T) *crashFixture {
	t.Helper()
	f := &crashFixture{dir: t.TempDir()}
	anchor := safetensorstest.Random(crashConfig, dtype.F32, 11)
	current := safetensorstest.Perturb(anchor, 0.5, 12)
	f.anchor = filepath.Join(f.dir, "anchor.safetensors")
	if err := safetensorstest.WriteFile(f.anchor, anchor, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	f.master = filepath.Join(f.dir, "master")
	if err := safetensorstest.WriteFolder(f.master, current, crashShards, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(f.master)
	if err != nil {
		t.Fatal(err)
	}
	f.files = map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(f.master, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		f.files[e.Name()] = b
	}
	f.anchorHash = hashFile(t, f.anchor)
	return f
}

// reset makes path a fresh copy of the master folder. Its files are hard links to
// the master's where the filesystem allows: a merge never writes into its inputs, and
// if it did, the old files would no longer match the hashes taken at the start (and
// the master's, checked at the end), so the test would still see it. Links spare
// each iteration writing the checkpoint out again, which on ext4 the child's fsyncs
// would then have to wait for.
func (f *crashFixture) reset(t *testing.T, path string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range f.files {
		dst := filepath.Join(path, name)
		if os.Link(filepath.Join(f.master, name), dst) == nil {
			continue
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func hashFile(t *testing.T, path string) string {
	t.Helper()
	h, err := sha256File(path)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// sha256File streams a file through SHA-256 (reading it whole costs several times
// more under -race).
func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(struct{ io.Writer }{h}, struct{ io.Reader }{f}, buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// tree maps the relative path of every file under a folder to its SHA-256 (and every
// sub-folder, with a trailing slash, to "dir").
type tree map[string]string

func hashTree(root string) (tree, error) {
	tr := tree{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		switch {
		case rel == ".":
			if !d.IsDir() {
				return fmt.Errorf("%s is not a folder", root)
			}
		case d.IsDir():
			tr[rel+"/"] = "dir"
		case d.Type().IsRegular():
			h, err := sha256File(path)
			if err != nil {
				return err
			}
			tr[rel] = h
		default:
			tr[rel] = "special " + d.Type().String()
		}
		return nil
	})
	return tr, err
}

func mustHashTree(t *testing.T, root string) tree {
	t.Helper()
	tr, err := hashTree(root)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// diff describes how got differs from want, "" if equal.
func (want tree) diff(got tree) string {
	var d []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		switch g, ok := got[k]; {
		case !ok:
			d = append(d, "missing "+k)
		case g != want[k]:
			d = append(d, "changed "+k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			d = append(d, "extra "+k)
		}
	}
	return strings.Join(d, ", ")
}

// classify says whether the folder at path is exactly old or exactly new.
func classify(path string, old, newT tree) (string, error) {
	got, err := hashTree(path)
	if err != nil {
		return "", err
	}
	dOld, dNew := old.diff(got), newT.diff(got)
	switch {
	case dOld == "":
		return "old", nil
	case dNew == "":
		return "new", nil
	}
	return "", fmt.Errorf("neither the old nor the new checkpoint: vs old: %s; vs new: %s", dOld, dNew)
}

// openCleanly opens a checkpoint and reads every tensor.
func openCleanly(path string) error {
	c, err := safetensors.OpenCheckpoint(path)
	if err != nil {
		return err
	}
	defer c.Close()
	if len(c.Tensors()) == 0 {
		return errors.New("no tensors")
	}
	for _, tn := range c.Tensors() {
		if _, err := c.Bytes(tn); err != nil {
			return fmt.Errorf("tensor %s: %w", tn.Name, err)
		}
	}
	return nil
}

func entryNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func leftovers(names []string) []string {
	var l []string
	for _, n := range names {
		if strings.Contains(n, ".gomerge-tmp-") || strings.HasSuffix(n, ".gomerge-old") {
			l = append(l, n)
		}
	}
	return l
}

// runToEnd runs gomerge to completion.
func runToEnd(t *testing.T, bin string, args ...string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("gomerge %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
}

// killPoint is where a crash test kills gomerge. The first two are reached through
// the GOMERGE_TEST_PAUSE_AT hook, so the test knows the process was mid-merge, with
// its temporary output on disk and nothing committed, when the signal came.
type killPoint int

const (
	// killMidData: paused after a random number of input bytes (midData), short of
	// the last.
	killMidData killPoint = iota
	// killAllData: paused after the last input byte, before the commit.
	killAllData
	// killCommit: let go from the all-data pause, then killed at a random moment of
	// the commit (fsync, rename or exchange, removal of the old folder) or after it.
	// Where the kill lands is left to chance, and either outcome, old or new, is
	// right; what is certain is that every byte had been written first.
	killCommit
)

func (k killPoint) String() string {
	return [...]string{"mid-data", "all data written", "committing"}[k]
}

// killPoints cycles through the kill points, mid-data half the time.
var killPoints = []killPoint{killMidData, killAllData, killMidData, killCommit}

// crashKill is what crashRun did.
type crashKill struct {
	point  killPoint
	at     int64 // input bytes merged when the process paused
	temps  int   // temporary outputs of out present at the pause
	killed bool  // false: it finished before the kill (killCommit only)
}

func (k crashKill) String() string {
	return fmt.Sprintf("kill %s, after %d input bytes", k.point, k.at)
}

// midData is a random GOMERGE_TEST_PAUSE_AT byte count short of the last eighth of
// total input bytes. The engine reports a chunk at a time (at most 4 MiB, a copy
// chunk; a merge chunk of two F32 inputs is 512 KiB), so the pause, at the first
// report that reaches the count, comes with at least one chunk still to do on the
// fixtures here (about 46 MB of input).
func midData(rng *rand.Rand, total int64) string {
	return fmt.Sprint(1 + rng.Int64N(total-total/8))
}

// crashCalibrate runs gomerge to its all-data pause and then to its end, and returns
// the plan's input bytes and how long the commit took (the range of killCommit's
// random delays).
func crashCalibrate(t *testing.T, bin string, args ...string) (total int64, commit time.Duration) {
	t.Helper()
	c := startChild(t, bin, "end", args...)
	done, total := c.waitPaused(t)
	if done != total || total <= 1 {
		t.Fatalf("calibration: paused at the end after %d of %d input bytes", done, total)
	}
	start := time.Now()
	c.resume()
	if code := c.wait(t); code != 0 {
		t.Fatalf("calibration: exit %d: %s", code, c.stderr())
	}
	return total, time.Since(start)
}

// crashRun runs gomerge (writing out) to kill point k and kills it there.
func crashRun(t *testing.T, rng *rand.Rand, bin string, k killPoint, total int64, commit time.Duration, out string, args ...string) crashKill {
	t.Helper()
	at := "end"
	if k == killMidData {
		at = midData(rng, total)
	}
	c := startChild(t, bin, at, args...)
	done, tot := c.waitPaused(t)
	res := crashKill{point: k, at: done, temps: len(tempOf(t, out))}
	switch {
	case tot != total:
		t.Fatalf("%v: the plan has %d input bytes, %d before", res, tot, total)
	case k == killMidData && done >= total, k != killMidData && done != total:
		t.Fatalf("%v: paused after %d of %d input bytes", res, done, total)
	case res.temps != 1:
		t.Fatalf("%v: paused mid-merge with %d temporary outputs of %s, want 1", res, res.temps, out)
	}
	if k == killCommit {
		c.resume()
		time.Sleep(time.Duration(rng.Float64() * 1.5 * float64(commit)))
	}
	res.killed = c.kill(t)
	if !res.killed && k != killCommit {
		t.Fatalf("%v: gomerge exited while paused", res)
	}
	return res
}

func crashRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, 0x5eed))
}

func TestKillDuringInPlace(t *testing.T) {
	bin := buildGomerge(t)
	fx := newCrashFixture(t)
	work := filepath.Join(t.TempDir(), "work") // CUR's parent: nothing else lives here
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	cur := filepath.Join(work, "current")
	old := mustHashTree(t, fx.master)

	// The expected new folder: the same merge written with --out. Both keep the
	// reference's layout and record the same inputs, so their files must be equal.
	fx.reset(t, cur)
	expected := filepath.Join(fx.dir, "expected")
	runToEnd(t, bin, "sfa", "--anchor", fx.anchor, "--current", cur, "--beta", "0.5", "--out", expected)
	newTree := mustHashTree(t, expected)
	if d := old.diff(mustHashTree(t, cur)); d != "" {
		t.Fatalf("--out changed its input: %s", d)
	}
	for _, n := range []string{"config.json", "tokenizer_config.json"} {
		if newTree[n] == "" || newTree[n] != old[n] {
			t.Fatalf("--out folder: %s missing or changed", n)
		}
	}

	// An uninterrupted in-place run must give the --out result; a paused and let go
	// one too, and it measures what the kill points need.
	fx.reset(t, cur)
	inPlace := []string{"sfa", "--anchor", fx.anchor, "--current", cur, "--beta", "0.5", "--in-place"}
	runToEnd(t, bin, inPlace...)
	if diff := newTree.diff(mustHashTree(t, cur)); diff != "" {
		t.Fatalf("--in-place result differs from the --out result: %s", diff)
	}
	fx.reset(t, cur)
	total, commit := crashCalibrate(t, bin, inPlace...)
	if diff := newTree.diff(mustHashTree(t, cur)); diff != "" {
		t.Fatalf("--in-place result after a pause differs from the --out result: %s", diff)
	}
	t.Logf("%d input bytes; the commit took %v", total, commit)

	n := 48
	if testing.Short() {
		n = 12
	}
	rng := crashRand(t)
	counts := map[string]int{}
	for i := range n {
		fx.reset(t, cur)
		k := crashRun(t, rng, bin, killPoints[i%len(killPoints)], total, commit, cur, inPlace...)

		// (a) old or new, complete, and loadable; old wherever the kill came before
		// the commit, and then the temporary folder the pause saw is still there.
		state, err := classify(cur, old, newTree)
		if err != nil {
			t.Fatalf("iteration %d (%v): %s: %v", i, k, cur, err)
		}
		switch {
		case k.point != killCommit && state != "old":
			t.Fatalf("iteration %d (%v): killed before the commit, but %s is the %s checkpoint", i, k, cur, state)
		case k.point != killCommit && len(leftovers(entryNames(t, work))) == 0:
			t.Fatalf("iteration %d (%v): the temporary folder seen at the pause is gone after the kill", i, k)
		case !k.killed && state != "new":
			t.Fatalf("iteration %d: gomerge finished but %s is the old checkpoint", i, cur)
		}
		if err := openCleanly(cur); err != nil {
			t.Fatalf("iteration %d (%v, %s): OpenCheckpoint: %v", i, k, state, err)
		}
		counts[fmt.Sprintf("%v: %s", k.point, state)]++

		// (b) the next run repairs: every other iteration a full in-place merge by the
		// binary, else the lock's recovery in this process.
		if i%2 == 0 {
			runToEnd(t, bin, inPlace...)
			if diff := newTree.diff(mustHashTree(t, cur)); diff != "" {
				t.Fatalf("iteration %d (%v): rerun after a kill that left the %s checkpoint: %s", i, k, state, diff)
			}
			if err := openCleanly(cur); err != nil {
				t.Fatalf("iteration %d: after a rerun: %v", i, err)
			}
		} else {
			dest, err := atomicout.Lock(context.Background(), cur, true, nil)
			if err != nil {
				t.Fatalf("iteration %d: Lock: %v", i, err)
			}
			dest.Unlock()
			if s, err := classify(cur, old, newTree); err != nil || s != state {
				t.Fatalf("iteration %d: recovery changed %s from %s: %s %v", i, cur, state, s, err)
			}
		}
		if names := entryNames(t, work); len(names) != 1 || names[0] != "current" {
			t.Fatalf("iteration %d (%v): after recovery the parent folder holds %q", i, k, names)
		}
		if h := hashFile(t, fx.anchor); h != fx.anchorHash {
			t.Fatalf("iteration %d: the anchor changed", i)
		}
	}
	t.Logf("%d kills: %v", n, counts)
	if d := old.diff(mustHashTree(t, fx.master)); d != "" {
		t.Fatalf("master copy changed: %s", d)
	}
}

func TestKillDuringOutFile(t *testing.T) {
	bin := buildGomerge(t)
	fx := newCrashFixture(t)
	work := filepath.Join(t.TempDir(), "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(work, "merged.safetensors")
	args := func(beta, out string) []string {
		return []string{"sfa", "--anchor", fx.anchor, "--current", fx.master, "--beta", beta, "--out", out}
	}

	// A previous complete output (another β), and the new result written elsewhere;
	// then the new result written at out itself, timed, must equal it.
	runToEnd(t, bin, args("0.25", out)...)
	prev, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(fx.dir, "expected.safetensors")
	runToEnd(t, bin, args("0.5", other)...)
	want, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(prev, want) {
		t.Fatal("the previous output equals the new one: the test would prove nothing")
	}
	runToEnd(t, bin, args("0.5", out)...)
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("output at %s differs from the same merge written elsewhere (err %v)", out, err)
	}
	total, commit := crashCalibrate(t, bin, args("0.5", out)...)
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("output at %s after a pause differs from the same merge written elsewhere (err %v)", out, err)
	}
	t.Logf("%d input bytes, %d output bytes; the commit took %v", total, len(want), commit)
	// The previous output is put back as a link to this copy (a merge replaces its
	// output by rename and never writes into it; the bytes are compared anyway).
	prevCopy := filepath.Join(fx.dir, "previous.safetensors")
	if err := os.WriteFile(prevCopy, prev, 0o644); err != nil {
		t.Fatal(err)
	}

	n := 24
	if testing.Short() {
		n = 8
	}
	rng := crashRand(t)
	counts := map[string]int{}
	for i := range n {
		// The kill points cycle every 4 iterations and the previous output every 2
		// (in step with them): an odd shift pairs each point with both.
		withPrev := (i+i/len(killPoints))%2 == 0
		os.Remove(out)
		if withPrev {
			if os.Link(prevCopy, out) != nil {
				if err := os.WriteFile(out, prev, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		k := crashRun(t, rng, bin, killPoints[i%len(killPoints)], total, commit, out, args("0.5", out)...)
		got, err := os.ReadFile(out)
		var state string
		switch {
		case errors.Is(err, fs.ErrNotExist) && !withPrev && k.killed:
			state = "absent"
		case err != nil:
			t.Fatalf("iteration %d (%v, finished %v): %v", i, k, !k.killed, err)
		case bytes.Equal(got, want):
			state = "new"
		case withPrev && k.killed && bytes.Equal(got, prev):
			state = "previous"
		default:
			t.Fatalf("iteration %d (%v, finished %v, previous output %v): %s is partial or foreign (%d bytes)", i, k, !k.killed, withPrev, out, len(got))
		}
		if k.point != killCommit {
			if state == "new" {
				t.Fatalf("iteration %d (%v): killed before the commit, but the output is the new one", i, k)
			}
			if len(tempOf(t, out)) != 1 {
				t.Fatalf("iteration %d (%v): the temporary file seen at the pause is gone after the kill", i, k)
			}
		}
		counts[fmt.Sprintf("%v: %s", k.point, state)]++
		if state != "absent" {
			if err := openCleanly(out); err != nil {
				t.Fatalf("iteration %d: %v", i, err)
			}
		}
		dest, err := atomicout.Lock(context.Background(), out, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		dest.Unlock()
		names := entryNames(t, work)
		if l := leftovers(names); len(l) > 0 || len(names) > 1 {
			t.Fatalf("iteration %d: after recovery the output folder holds %q", i, names)
		}
		if state != "absent" {
			if g, _ := os.ReadFile(out); !bytes.Equal(g, got) {
				t.Fatalf("iteration %d: recovery changed the output", i)
			}
		}
	}
	t.Logf("%d kills: %v", n, counts)
	if h := hashFile(t, fx.anchor); h != fx.anchorHash {
		t.Fatal("the anchor changed")
	}
}

// TestKillDuringInPlaceFallback covers the switch used where the filesystem refuses
// RENAME_EXCHANGE (rename the old folder aside, the new one in, remove the old). The
// binary cannot be made to take it, so each state a kill can leave is built by hand
// and Lock's recovery must turn it into a complete checkpoint; then a real commit
// through the fallback runs in this process.
func TestKillDuringInPlaceFallback(t *testing.T) {
	cfg := safetensorstest.TinyLlama
	oldTensors := safetensorstest.Random(cfg, dtype.BF16, 21)
	newTensors := safetensorstest.Perturb(oldTensors, 0.5, 22)
	meta := map[string]string{"format": "pt"}
	proto := t.TempDir()
	for name, ts := range map[string][]safetensorstest.Tensor{"old": oldTensors, "new": newTensors} {
		if err := safetensorstest.WriteFolder(filepath.Join(proto, name), ts, 3, meta); err != nil {
			t.Fatal(err)
		}
		// Trainer state in a sub-folder must survive too.
		sub := filepath.Join(proto, name, "optimizer")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "state.pt"), []byte("adam"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oldTree, newTree := mustHashTree(t, filepath.Join(proto, "old")), mustHashTree(t, filepath.Join(proto, "new"))

	cp := func(src, dst string) {
		t.Helper()
		if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
			t.Fatal(err)
		}
	}
	// partial copies src to dst, then removes some of its files and truncates one,
	// as a kill in the middle of writing or of RemoveAll leaves it.
	partial := func(src, dst string) {
		t.Helper()
		cp(src, dst)
		for _, n := range []string{"model-00001-of-00003.safetensors", "config.json", "optimizer/state.pt"} {
			if err := os.Remove(filepath.Join(dst, n)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Truncate(filepath.Join(dst, "model-00002-of-00003.safetensors"), 100); err != nil {
			t.Fatal(err)
		}
	}

	type entry struct {
		what string // "old", "new", "partial old", "partial new"
		at   string // "NAME", "OLD" (.NAME.gomerge-old) or "TMP" (.NAME.gomerge-tmp-*)
	}
	states := []struct {
		name string
		has  []entry
		want string
	}{
		{"building the new folder", []entry{{"old", "NAME"}, {"partial new", "TMP"}}, "old"},
		{"new folder built, not switched", []entry{{"old", "NAME"}, {"new", "TMP"}}, "old"},
		{"fallback: old moved aside, new not yet in place", []entry{{"old", "OLD"}, {"new", "TMP"}}, "old"},
		{"fallback: old moved aside, no temp folder", []entry{{"old", "OLD"}}, "old"},
		{"fallback: both in place", []entry{{"new", "NAME"}, {"old", "OLD"}}, "new"},
		{"fallback: removing the old folder", []entry{{"new", "NAME"}, {"partial old", "OLD"}}, "new"},
		{"exchange: swapped, old not yet removed", []entry{{"new", "NAME"}, {"old", "TMP"}}, "new"},
		{"exchange: removing the old folder", []entry{{"new", "NAME"}, {"partial old", "TMP"}}, "new"},
		{"stale temp folders of two runs", []entry{{"new", "NAME"}, {"partial old", "TMP"}, {"partial new", "TMP"}}, "new"},
	}
	for _, base := range []string{"ckpt", "step[1]*?"} {
		for _, st := range states {
			t.Run(base+"/"+st.name, func(t *testing.T) {
				parent := t.TempDir()
				// Neighbours that recovery of base must leave alone.
				neighbours := []string{"other", ".other.gomerge-tmp-1", ".other.gomerge-old", "." + base + "x.gomerge-tmp-2"}
				for _, n := range neighbours {
					cp(filepath.Join(proto, "old"), filepath.Join(parent, n))
				}
				for i, e := range st.has {
					var dst string
					switch e.at {
					case "NAME":
						dst = filepath.Join(parent, base)
					case "OLD":
						dst = filepath.Join(parent, "."+base+".gomerge-old")
					case "TMP":
						dst = filepath.Join(parent, fmt.Sprintf(".%s.gomerge-tmp-%d", base, 1000+i))
					}
					if what, ok := strings.CutPrefix(e.what, "partial "); ok {
						partial(filepath.Join(proto, what), dst)
					} else {
						cp(filepath.Join(proto, e.what), dst)
					}
				}
				name := filepath.Join(parent, base)
				dest, err := atomicout.Lock(context.Background(), name, true, nil)
				if err != nil {
					t.Fatalf("Lock: %v", err)
				}
				dest.Unlock()
				want := map[string]tree{"old": oldTree, "new": newTree}[st.want]
				got, err := hashTree(name)
				if err != nil {
					t.Fatalf("after recovery: %v", err)
				}
				if d := want.diff(got); d != "" {
					t.Fatalf("after recovery %s is not the %s checkpoint: %s", name, st.want, d)
				}
				if err := openCleanly(name); err != nil {
					t.Fatal(err)
				}
				wantNames := slices.Sorted(slices.Values(append([]string{base}, neighbours...)))
				if names := entryNames(t, parent); !slices.Equal(names, wantNames) {
					t.Fatalf("after recovery the parent holds %q, want %q", names, wantNames)
				}
			})
		}
	}

	// A real in-place commit through the fallback, in this process.
	t.Run("commit", func(t *testing.T) {
		parent := t.TempDir()
		name := filepath.Join(parent, "ckpt")
		cp(filepath.Join(proto, "old"), name)
		cfgBefore, err := os.Stat(filepath.Join(name, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		ref, err := safetensors.OpenCheckpoint(name)
		if err != nil {
			t.Fatal(err)
		}
		defer ref.Close()
		dest, err := atomicout.Lock(context.Background(), name, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer dest.Unlock()
		dest.NoExchange = true
		opts := safetensors.OutputOptions{Metadata: meta, ExtraFrom: name, Link: true}
		byName := map[string]safetensorstest.Tensor{}
		for _, tn := range newTensors {
			byName[tn.Name] = tn
		}
		var order []string
		for i, sh := range ref.Shards {
			opts.Layout = append(opts.Layout, safetensors.ShardLayout{Name: sh.Name})
			for _, tn := range ref.Tensors() {
				if tn.Shard == i {
					opts.Layout[i].Tensors = append(opts.Layout[i].Tensors, tn.Name)
					nt := byName[tn.Name]
					opts.Specs = append(opts.Specs, safetensors.Spec{Name: nt.Name, DType: nt.DType, Shape: nt.Shape})
					order = append(order, tn.Name)
				}
			}
		}
		o, err := safetensors.Create(dest, opts)
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range order {
			if err := o.WriteAt(i, 0, byName[n].Data); err != nil {
				t.Fatal(err)
			}
		}
		if err := o.Commit(); err != nil {
			t.Fatal(err)
		}
		if names := entryNames(t, parent); !slices.Equal(names, []string{"ckpt"}) {
			t.Fatalf("after the commit the parent holds %q", names)
		}
		c, err := safetensors.OpenCheckpoint(name)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if len(c.Tensors()) != len(newTensors) {
			t.Fatalf("%d tensors, want %d", len(c.Tensors()), len(newTensors))
		}
		for _, tn := range c.Tensors() {
			b, err := c.Bytes(tn)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, byName[tn.Name].Data) {
				t.Fatalf("tensor %s: not the new data", tn.Name)
			}
		}
		got := mustHashTree(t, name)
		for _, n := range []string{"config.json", "tokenizer_config.json", "optimizer/", "optimizer/state.pt"} {
			if got[n] != oldTree[n] {
				t.Fatalf("%s missing or changed", n)
			}
		}
		cfgAfter, err := os.Stat(filepath.Join(name, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(cfgBefore, cfgAfter) {
			t.Error("config.json was copied, not hard-linked")
		}
	})
}

// TestInterruptLeavesNothing: Ctrl-C (SIGINT) during a merge cancels it cleanly: exit
// status 1, no output, no temporary files, inputs untouched. Each run is interrupted
// while paused mid-write (after a random number of input bytes, or all of them), its
// temporary output on disk.
func TestInterruptLeavesNothing(t *testing.T) {
	bin := buildGomerge(t)
	f := newCrashFixture(t)
	cur := filepath.Join(f.dir, "current")
	f.reset(t, cur)
	curTree := mustHashTree(t, cur)
	out := filepath.Join(f.dir, "out", "merged.safetensors")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"sfa", "--anchor", f.anchor, "--current", cur, "--out", out}
	total, _ := crashCalibrate(t, bin, args...)
	if err := os.Remove(out); err != nil {
		t.Fatal(err)
	}
	rng := crashRand(t)
	for i := range 6 {
		at := "end"
		if i < 5 {
			at = midData(rng, total)
		}
		c := startChild(t, bin, at, args...)
		done, _ := c.waitPaused(t)
		if n := len(tempOf(t, out)); n != 1 {
			t.Fatalf("run %d: paused after %d of %d input bytes with %d temporary outputs, want 1", i, done, total, n)
		}
		if err := c.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		if code := c.wait(t); code != exitOther {
			t.Fatalf("run %d (interrupted after %d of %d input bytes): exit %d, want %d\n%s", i, done, total, code, exitOther, c.stderr())
		}
		if !strings.Contains(c.stderr(), "canceled") {
			t.Errorf("run %d: interrupted merge says %q", i, c.stderr())
		}
		if names := entryNames(t, filepath.Dir(out)); len(names) != 0 {
			t.Fatalf("run %d (interrupted after %d of %d input bytes): left %v", i, done, total, names)
		}
	}
	if hashFile(t, f.anchor) != f.anchorHash {
		t.Error("anchor changed")
	}
	if d := curTree.diff(mustHashTree(t, cur)); d != "" {
		t.Errorf("current changed: %s", d)
	}
}
