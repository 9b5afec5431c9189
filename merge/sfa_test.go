package merge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	"github.com/gomerge/gomerge/formats/safetensors"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// round32 is the float32 nearest to the exact value of x (big.Float rounds to nearest
// even), computed independently of Go's float32 arithmetic.
func round32(x *big.Float) float32 {
	f, _ := x.Float32()
	return f
}

// refLerp is the sfa formula of docs/methods.md#sfa evaluated exactly: b·a and c·x each rounded to
// float32, then their sum rounded to float32.
func refLerp(b, c, a, x float32) float32 {
	p1 := round32(new(big.Float).SetPrec(200).Mul(big.NewFloat(float64(b)), big.NewFloat(float64(a))))
	p2 := round32(new(big.Float).SetPrec(200).Mul(big.NewFloat(float64(c)), big.NewFloat(float64(x))))
	return round32(new(big.Float).SetPrec(200).Add(big.NewFloat(float64(p1)), big.NewFloat(float64(p2))))
}

// roundTo is the value x takes once written as d.
func roundTo(x float32, d dtype.DType) float32 {
	buf := make([]byte, 8)
	out := make([]float32, 1)
	if err := dtype.Encode(buf, []float32{x}, d); err != nil {
		panic(err)
	}
	if err := dtype.Decode(out, buf, d); err != nil {
		panic(err)
	}
	return out[0]
}

type fixture struct {
	dir                     string
	anchor, current, fisher []stt.Tensor
	anchorPath, currentPath string
	fisherPath              string
}

// newFixture writes an anchor file and a current checkpoint (a file, or a folder of
// shards when shards > 1) of config cfg in dtype dt.
func newFixture(t testing.TB, cfg stt.LlamaConfig, dt dtype.DType, shards int) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.anchor = stt.Random(cfg, dt, 7)
	f.current = stt.Perturb(f.anchor, 0.7, 8)
	f.fisher = stt.Fisher(f.anchor, 2e-3, 9)
	f.anchorPath = filepath.Join(f.dir, "anchor.safetensors")
	f.fisherPath = filepath.Join(f.dir, "fisher.safetensors")
	must(t, stt.WriteFile(f.anchorPath, f.anchor, nil))
	must(t, stt.WriteFile(f.fisherPath, f.fisher, nil))
	if shards > 1 {
		f.currentPath = filepath.Join(f.dir, "current")
		must(t, stt.WriteFolder(f.currentPath, f.current, shards, map[string]string{"format": "pt"}))
	} else {
		f.currentPath = filepath.Join(f.dir, "current.safetensors")
		must(t, stt.WriteFile(f.currentPath, f.current, nil))
	}
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// readAll returns every tensor of a checkpoint, decoded to float32 (floats only).
func readAll(t testing.TB, path string) map[string][]float32 {
	t.Helper()
	c, err := safetensors.OpenCheckpoint(path)
	must(t, err)
	defer c.Close()
	out := map[string][]float32{}
	for _, ti := range c.Tensors() {
		if !ti.DType.IsFloat() {
			continue
		}
		b, err := c.Bytes(ti)
		must(t, err)
		v := make([]float32, ti.NumElements())
		must(t, dtype.Decode(v, b, ti.DType))
		out[ti.Name] = v
	}
	return out
}

func sfaJob(f *fixture, out string, beta float64, threads int) SFAJob {
	return SFAJob{Anchor: f.anchorPath, Current: f.currentPath, SFA: SFA{Beta: beta},
		Job: Job{Out: out, Exec: ExecOptions{Threads: threads}, Version: "test"}}
}

// TestSFAAgainstReference checks every output element, bit for bit, against the docs/methods.md#sfa
// formula evaluated with exact arithmetic, for each dtype, single files and sharded
// folders, and several β; and the reported L2 distances against float64 sums.
func TestSFAAgainstReference(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
		for _, shards := range []int{1, 3} {
			f := newFixture(t, stt.TinyLlama, dt, shards)
			for _, beta := range []float64{0, 0.25, 0.5, 0.7, 1} {
				name := dt.String() + "/shards=" + string(rune('0'+shards)) + "/beta=" + big.NewFloat(beta).String()
				t.Run(name, func(t *testing.T) {
					out := filepath.Join(f.dir, "merged.safetensors")
					rep, err := RunSFA(context.Background(), sfaJob(f, out, beta, 2))
					must(t, err)
					got := readAll(t, out)
					b, c := float32(beta), float32(1-beta)
					var before, after float64
					layerBefore, layerAfter := map[int]float64{}, map[int]float64{}
					for i, at := range f.anchor {
						a, x := at.Float32(), f.current[i].Float32()
						g := got[at.Name]
						if len(g) != len(a) {
							t.Fatalf("tensor %s: %d elements, want %d", at.Name, len(g), len(a))
						}
						for j := range a {
							want := roundTo(refLerp(b, c, a[j], x[j]), dt)
							if math.Float32bits(g[j]) != math.Float32bits(want) {
								t.Fatalf("tensor %s[%d]: a=%v x=%v: got %v, want %v", at.Name, j, a[j], x[j], g[j], want)
							}
							db := (float64(x[j]) - float64(a[j])) * (float64(x[j]) - float64(a[j]))
							da := (float64(g[j]) - float64(a[j])) * (float64(g[j]) - float64(a[j]))
							before += db
							after += da
							layerBefore[checkpoint.LayerOf(at.Name)] += db
							layerAfter[checkpoint.LayerOf(at.Name)] += da
						}
						if beta == 0 && !slicesEqualBits(g, x) {
							t.Fatalf("beta=0: tensor %s is not the current model", at.Name)
						}
						if beta == 1 && !slicesEqualBits(g, a) {
							t.Fatalf("beta=1: tensor %s is not the anchor", at.Name)
						}
					}
					closeRel(t, "l2_before", *rep.L2Before, math.Sqrt(before), 1e-12)
					closeRel(t, "l2_after", *rep.L2After, math.Sqrt(after), 1e-12)
					if len(rep.L2Layers) != len(layerBefore) {
						t.Fatalf("l2_layers: %d layers, want %d", len(rep.L2Layers), len(layerBefore))
					}
					for i, l := range rep.L2Layers {
						if i > 0 && l.Layer <= rep.L2Layers[i-1].Layer {
							t.Errorf("l2_layers out of order: %d after %d", l.Layer, rep.L2Layers[i-1].Layer)
						}
						closeRel(t, fmt.Sprintf("layer %d l2_before", l.Layer), *l.L2Before, math.Sqrt(layerBefore[l.Layer]), 1e-12)
						closeRel(t, fmt.Sprintf("layer %d l2_after", l.Layer), *l.L2After, math.Sqrt(layerAfter[l.Layer]), 1e-12)
					}
					if rep.TensorsMerged != len(f.anchor) || rep.TensorsCopied != 0 {
						t.Errorf("merged %d copied %d, want %d and 0", rep.TensorsMerged, rep.TensorsCopied, len(f.anchor))
					}
				})
			}
		}
	}
}

func slicesEqualBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func closeRel(t testing.TB, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol*math.Max(math.Abs(want), 1e-300) {
		t.Errorf("%s = %.17g, want %.17g", what, got, want)
	}
}

// TestSFAHandWorked pins the formula on numbers worked out by hand.
func TestSFAHandWorked(t *testing.T) {
	dst := make([]float32, 4)
	// β = 0.25: 0.25·a + 0.75·x
	Lerp(dst, []float32{1, 2, -4, 0}, []float32{5, 2, 4, 8}, 0.25, 0.75)
	want := []float32{4, 2, 2, 6}
	for i := range want {
		if dst[i] != want[i] {
			t.Errorf("Lerp[%d] = %v, want %v", i, dst[i], want[i])
		}
	}
	// Per-element β = min(1, η·F): η = 10, F = {0, 0.05, 0.1, 7} → β = {0, .5, 1, 1}.
	LerpPerElement(dst, []float32{1, 2, 3, 4}, []float32{9, 4, 5, 6}, []float32{0, 0.05, 0.1, 7}, 10)
	want = []float32{9, 3, 3, 4}
	for i := range want {
		if dst[i] != want[i] {
			t.Errorf("LerpPerElement[%d] = %v, want %v", i, dst[i], want[i])
		}
	}
}

func TestSFAFisherAgainstReference(t *testing.T) {
	f := newFixture(t, stt.TinyLlama, dtype.BF16, 1)
	out := filepath.Join(f.dir, "merged.safetensors")
	eta := 300.0
	job := sfaJob(f, out, 0, 2)
	job.Fisher, job.SFA = f.fisherPath, SFA{Eta: eta}
	rep, err := RunSFA(context.Background(), job)
	must(t, err)
	if len(rep.Inputs) != 3 || rep.Inputs[2].Role != "fisher" {
		t.Errorf("report inputs %+v lack the Fisher", rep.Inputs)
	}
	got := readAll(t, out)
	clamped := 0
	for i, at := range f.anchor {
		a, x, fi := at.Float32(), f.current[i].Float32(), f.fisher[i].Float32()
		for j := range a {
			beta := math.Min(1, eta*float64(fi[j]))
			if beta == 1 {
				clamped++
			}
			want := roundTo(refLerp(float32(beta), float32(1-beta), a[j], x[j]), dtype.BF16)
			if g := got[at.Name][j]; math.Float32bits(g) != math.Float32bits(want) {
				t.Fatalf("tensor %s[%d]: got %v, want %v", at.Name, j, g, want)
			}
		}
	}
	if clamped == 0 {
		t.Error("no element reached β = 1: the test does not exercise the clamp")
	}
}

// TestSFAMixedDTypes: an F32 anchor with a BF16 current writes BF16 (the reference's
// dtype), and --dtype overrides it.
func TestSFAMixedDTypes(t *testing.T) {
	f := newFixture(t, stt.TinyLlama, dtype.BF16, 1)
	anchor32 := make([]stt.Tensor, len(f.anchor))
	for i, a := range f.anchor {
		anchor32[i] = stt.FromFloat32(a.Name, dtype.F32, a.Shape, stt.Perturb([]stt.Tensor{a}, 0.3, 5)[0].Float32())
	}
	must(t, stt.WriteFile(f.anchorPath, anchor32, nil))
	for _, tc := range []struct {
		out  dtype.DType
		want dtype.DType
	}{{dtype.Invalid, dtype.BF16}, {dtype.F32, dtype.F32}, {dtype.F16, dtype.F16}} {
		out := filepath.Join(f.dir, "m.safetensors")
		job := sfaJob(f, out, 0.5, 2)
		job.Job.OutDType = tc.out
		_, err := RunSFA(context.Background(), job)
		must(t, err)
		c, err := safetensors.OpenCheckpoint(out)
		must(t, err)
		got := readAll(t, out)
		for _, ti := range c.Tensors() {
			if ti.DType != tc.want {
				t.Errorf("--dtype %v: tensor %s is %s, want %s", tc.out, ti.Name, ti.DType, tc.want)
			}
		}
		c.Close()
		for i, at := range anchor32 {
			a, x := at.Float32(), f.current[i].Float32()
			for j := range a {
				want := roundTo(refLerp(0.5, 0.5, a[j], x[j]), tc.want)
				if g := got[at.Name][j]; math.Float32bits(g) != math.Float32bits(want) {
					t.Fatalf("%s: tensor %s[%d]: got %v, want %v", tc.want, at.Name, j, g, want)
				}
			}
		}
	}
}

// bigConfig has tensors of several chunks, so that work splits within tensors.
var bigConfig = stt.LlamaConfig{Vocab: 3001, Hidden: 96, Intermediate: 700, Layers: 2, KVHidden: 32}

// TestDeterministicAcrossThreads: 1, 2 and 8 threads, repeated, give the same bytes and
// the same reported distances, to the bit.
func TestDeterministicAcrossThreads(t *testing.T) {
	f := newFixture(t, bigConfig, dtype.BF16, 3)
	var first []byte
	var firstRep *Report
	for _, threads := range []int{1, 2, 8, 8, 3} {
		out := filepath.Join(f.dir, "m.safetensors")
		rep, err := RunSFA(context.Background(), sfaJob(f, out, 0.37, threads))
		must(t, err)
		data, err := os.ReadFile(out)
		must(t, err)
		if first == nil {
			first, firstRep = data, rep
			continue
		}
		if !bytes.Equal(data, first) {
			t.Fatalf("threads=%d: output differs from threads=1", threads)
		}
		if *rep.L2Before != *firstRep.L2Before || *rep.L2After != *firstRep.L2After {
			t.Fatalf("threads=%d: L2 %v/%v differs from %v/%v", threads, *rep.L2Before, *rep.L2After, *firstRep.L2Before, *firstRep.L2After)
		}
		for i, l := range rep.L2Layers {
			if f := firstRep.L2Layers[i]; l.Layer != f.Layer || *l.L2Before != *f.L2Before || *l.L2After != *f.L2After {
				t.Fatalf("threads=%d: layer %d L2 differs from threads=1", threads, l.Layer)
			}
		}
	}
}

// TestSFAFolderOutputKeepsLayout: a folder output from a sharded reference keeps its
// shard names and placement and carries config files; the index agrees.
func TestSFAFolderOutputKeepsLayout(t *testing.T) {
	f := newFixture(t, stt.TinyLlama, dtype.BF16, 3)
	out := filepath.Join(f.dir, "merged")
	rep, err := RunSFA(context.Background(), sfaJob(f, out, 0.5, 2))
	must(t, err)
	if len(rep.OutputFiles) != 3 {
		t.Fatalf("output files %v, want 3 shards", rep.OutputFiles)
	}
	in, err := safetensors.OpenCheckpoint(f.currentPath)
	must(t, err)
	defer in.Close()
	o, err := safetensors.OpenCheckpoint(out)
	must(t, err)
	defer o.Close()
	for _, ti := range in.Tensors() {
		ot, ok := o.Tensor(ti.Name)
		if !ok || o.Shards[ot.Shard].Name != in.Shards[ti.Shard].Name {
			t.Errorf("tensor %s moved shards", ti.Name)
		}
	}
	for _, name := range []string{"config.json", "tokenizer_config.json"} {
		want, _ := os.ReadFile(filepath.Join(f.currentPath, name))
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s not carried over: %v", name, err)
		}
	}
	if o.Metadata["format"] != "pt" || o.Metadata["gomerge.method"] != "sfa" || !strings.Contains(o.Metadata["gomerge.inputs"], "anchor.safetensors") {
		t.Errorf("provenance metadata %v", o.Metadata)
	}
	// --shard-size re-splits.
	out2 := filepath.Join(f.dir, "resharded")
	job := sfaJob(f, out2, 0.5, 2)
	job.Job.ShardSize = 40_000
	rep, err = RunSFA(context.Background(), job)
	must(t, err)
	if len(rep.OutputFiles) < 3 || !strings.HasSuffix(rep.OutputFiles[0], "model-00001-of-0000"+string(rune('0'+len(rep.OutputFiles)))+".safetensors") {
		t.Errorf("--shard-size: files %v", rep.OutputFiles)
	}
	a, b := readAll(t, out), readAll(t, out2)
	for k, v := range a {
		if !slicesEqualBits(v, b[k]) {
			t.Errorf("tensor %s differs between layouts", k)
		}
	}
}

// TestSFAInPlaceFolder: --in-place on a folder replaces the weights, keeps every other
// file (hard-linked: same inode), including trainer state in sub-folders.
func TestSFAInPlaceFolder(t *testing.T) {
	requireInodes(t)
	f := newFixture(t, stt.TinyLlama, dtype.BF16, 3)
	must(t, os.MkdirAll(filepath.Join(f.currentPath, "global_step400"), 0o755))
	must(t, os.WriteFile(filepath.Join(f.currentPath, "global_step400", "optim.pt"), []byte("optimizer state"), 0o644))
	inode := func(p string) uint64 {
		st, err := os.Stat(p)
		must(t, err)
		return statIno(st)
	}
	cfgIno := inode(filepath.Join(f.currentPath, "config.json"))
	optIno := inode(filepath.Join(f.currentPath, "global_step400", "optim.pt"))
	expected := filepath.Join(f.dir, "expected")
	_, err := RunSFA(context.Background(), sfaJob(f, expected, 0.5, 2))
	must(t, err)

	job := sfaJob(f, "", 0.5, 2)
	job.Job.InPlace = true
	rep, err := RunSFA(context.Background(), job)
	must(t, err)
	if !rep.InPlace {
		t.Error("report says not in place")
	}
	for _, n := range []string{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json"} {
		want, _ := os.ReadFile(filepath.Join(expected, n))
		got, err := os.ReadFile(filepath.Join(f.currentPath, n))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: in-place result differs from --out result (%v)", n, err)
		}
	}
	if inode(filepath.Join(f.currentPath, "config.json")) != cfgIno || inode(filepath.Join(f.currentPath, "global_step400", "optim.pt")) != optIno {
		t.Error("non-weight files were copied, not hard-linked")
	}
	entries, _ := os.ReadDir(f.dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".gomerge-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestSFAInPlaceFile(t *testing.T) {
	f := newFixture(t, stt.TinyLlama, dtype.F16, 1)
	expected := filepath.Join(f.dir, "expected.safetensors")
	_, err := RunSFA(context.Background(), sfaJob(f, expected, 0.5, 2))
	must(t, err)
	anchorBefore, _ := os.ReadFile(f.anchorPath)
	job := sfaJob(f, "", 0.5, 2)
	job.Job.InPlace = true
	_, err = RunSFA(context.Background(), job)
	must(t, err)
	want, _ := os.ReadFile(expected)
	got, _ := os.ReadFile(f.currentPath)
	if !bytes.Equal(got, want) {
		t.Error("in-place file differs from the --out result")
	}
	if a, _ := os.ReadFile(f.anchorPath); !bytes.Equal(a, anchorBefore) {
		t.Error("anchor changed")
	}
}

// TestIntegerAndMissingTensors: integer tensors are copied when equal and refused when
// not; a missing tensor is an error unless AllowMissing copies it.
func TestIntegerAndMissingTensors(t *testing.T) {
	f := newFixture(t, stt.TinyLlama, dtype.BF16, 1)
	ids := stt.Tensor{Name: "position_ids", DType: dtype.I64, Shape: []int64{4}, Data: make([]byte, 32)}
	for i := range 4 {
		ids.Data[8*i] = byte(i)
	}
	must(t, stt.WriteFile(f.anchorPath, append(f.anchor[:len(f.anchor):len(f.anchor)], ids), nil))
	must(t, stt.WriteFile(f.currentPath, append(f.current[:len(f.current):len(f.current)], ids), nil))
	out := filepath.Join(f.dir, "m.safetensors")
	rep, err := RunSFA(context.Background(), sfaJob(f, out, 0.5, 2))
	must(t, err)
	if rep.TensorsCopied != 1 {
		t.Errorf("copied %d tensors, want 1", rep.TensorsCopied)
	}
	c, err := safetensors.OpenCheckpoint(out)
	must(t, err)
	ti, ok := c.Tensor("position_ids")
	if !ok || ti.DType != dtype.I64 {
		t.Fatalf("position_ids: %v %v", ok, ti.DType)
	}
	b, _ := c.Bytes(ti)
	if !bytes.Equal(b, ids.Data) {
		t.Error("integer tensor not copied verbatim")
	}
	c.Close()

	ids2 := ids
	ids2.Data = bytes.Clone(ids.Data)
	ids2.Data[0] = 9
	must(t, stt.WriteFile(f.currentPath, append(f.current[:len(f.current):len(f.current)], ids2), nil))
	_, err = RunSFA(context.Background(), sfaJob(f, out, 0.5, 2))
	var me *MismatchError
	if !errors.As(err, &me) || me.Tensor != "position_ids" || !errors.Is(err, ErrBadInput) {
		t.Errorf("differing integer tensor: %v", err)
	}

	// The anchor lacks lm_head.weight.
	must(t, stt.WriteFile(f.anchorPath, f.anchor[:len(f.anchor)-1], nil))
	must(t, stt.WriteFile(f.currentPath, f.current, nil))
	_, err = RunSFA(context.Background(), sfaJob(f, out, 0.5, 2))
	if !errors.As(err, &me) || me.Tensor != "lm_head.weight" || !strings.Contains(err.Error(), "anchor.safetensors") {
		t.Errorf("missing tensor: %v", err)
	}
	job := sfaJob(f, out, 0.5, 2)
	job.Job.AllowMissing = true
	rep, err = RunSFA(context.Background(), job)
	must(t, err)
	got := readAll(t, out)
	if rep.TensorsCopied != 1 || !slicesEqualBits(got["lm_head.weight"], f.current[len(f.current)-1].Float32()) {
		t.Errorf("--allow-missing did not copy lm_head.weight from current (copied %d)", rep.TensorsCopied)
	}
}

func TestCancelLeavesNothing(t *testing.T) {
	f := newFixture(t, bigConfig, dtype.BF16, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(f.dir, "m.safetensors")
	_, err := RunSFA(ctx, sfaJob(f, out, 0.5, 2))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	entries, _ := os.ReadDir(f.dir)
	for _, e := range entries {
		if e.Name() == "m.safetensors" || strings.Contains(e.Name(), ".gomerge-") {
			t.Errorf("cancelled merge left %s", e.Name())
		}
	}
}

// cancelMidRun returns OnStart and Progress callbacks that cancel a run from inside
// the engine once its first chunk is written, with the run's temporary output on disk,
// and a check, for after the run, that the cancellation came mid-run: the temporary
// output of out existed, and input bytes were left to merge.
func cancelMidRun(t *testing.T, out string, cancel context.CancelFunc) (onStart, progress func(int64), check func()) {
	var total, done atomic.Int64
	var once sync.Once
	temps := -1
	onStart = func(n int64) { total.Store(n) }
	progress = func(n int64) {
		sum := done.Add(n)
		once.Do(func() {
			m, err := filepath.Glob(filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".gomerge-tmp-*"))
			if err != nil {
				panic(err)
			}
			temps = len(m)
			cancel()
			if sum >= total.Load() {
				temps = -2
			}
		})
	}
	check = func() {
		t.Helper()
		switch temps {
		case -1:
			t.Fatal("the run never reported progress: it was not cancelled mid-run")
		case -2:
			t.Fatalf("the first chunk covered all %d input bytes: nothing was left to cancel", total.Load())
		case 1:
		default:
			t.Fatalf("cancelled mid-run with %d temporary outputs of %s, want 1", temps, out)
		}
	}
	return onStart, progress, check
}

// TestCancelMidRunLeavesNothing: a merge cancelled while it writes (from inside the
// engine, after its first chunk) stops with context.Canceled and leaves no output and
// no temporary file.
func TestCancelMidRunLeavesNothing(t *testing.T) {
	f := newFixture(t, bigConfig, dtype.BF16, 1)
	out := filepath.Join(f.dir, "m.safetensors")
	for _, threads := range []int{1, 4} {
		ctx, cancel := context.WithCancel(context.Background())
		job := sfaJob(f, out, 0.5, threads)
		var check func()
		job.Job.OnStart, job.Job.Exec.Progress, check = cancelMidRun(t, out, cancel)
		_, err := RunSFA(ctx, job)
		cancel()
		check()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%d threads: got %v, want context.Canceled", threads, err)
		}
		entries, _ := os.ReadDir(f.dir)
		for _, e := range entries {
			if e.Name() == "m.safetensors" || strings.Contains(e.Name(), ".gomerge-") {
				t.Errorf("%d threads: cancelled merge left %s", threads, e.Name())
			}
		}
	}
}

func TestSchedule(t *testing.T) {
	for _, tc := range []struct {
		steps int
		p     float64
		want  []int
	}{
		{10, 0.25, []int{2, 4, 6, 8, 10}},
		{10, 1, []int{10}},
		{10, 0.3, []int{3, 6, 9, 10}},
		{7, 0.01, []int{1, 2, 3, 4, 5, 6, 7}},
		{1000, 0.5, []int{500, 1000}},
	} {
		got, err := Schedule(tc.steps, tc.p)
		must(t, err)
		if len(got) != len(tc.want) {
			t.Errorf("Schedule(%d, %v) = %v, want %v", tc.steps, tc.p, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("Schedule(%d, %v) = %v, want %v", tc.steps, tc.p, got, tc.want)
				break
			}
		}
	}
	for _, bad := range []struct {
		steps int
		p     float64
	}{{0, 0.5}, {10, 0}, {10, 1.5}, {10, math.NaN()}} {
		if _, err := Schedule(bad.steps, bad.p); err == nil {
			t.Errorf("Schedule(%d, %v) accepted", bad.steps, bad.p)
		}
	}
}

// TestFusedBF16MatchesGeneric: the fused BF16 path gives the same output bits and the
// same statistics, to the bit, as decode + Lerp + encode + observeSFA, on random bit
// patterns (NaN, Inf and subnormals included) and several β.
func TestFusedBF16MatchesGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	const n = 5000
	a, x := make([]byte, 2*n), make([]byte, 2*n)
	for i := range a {
		a[i], x[i] = byte(rng.Uint32()), byte(rng.Uint32())
	}
	for _, beta := range []float64{0, 0.1, 0.5, 0.7, 1} {
		k := SFA{Beta: beta}.Kernel()
		fused := make([]byte, 2*n)
		accF := make([]float64, sfaStats)
		if !k.Fused(fused, dtype.BF16, []Operand{{DType: dtype.BF16, Data: a}, {DType: dtype.BF16, Data: x}}, accF, Chunk{}) {
			t.Fatal("fused path declined BF16")
		}
		af, xf, dst := make([]float32, n), make([]float32, n), make([]float32, n)
		must(t, dtype.Decode(af, a, dtype.BF16))
		must(t, dtype.Decode(xf, x, dtype.BF16))
		k.Merge(dst, [][]float32{af, xf}, nil, Chunk{})
		generic := make([]byte, 2*n)
		must(t, dtype.Encode(generic, dst, dtype.BF16))
		must(t, dtype.Decode(dst, generic, dtype.BF16))
		accG := make([]float64, sfaStats)
		k.Observe(dst, [][]float32{af, xf}, accG)
		if !bytes.Equal(fused, generic) {
			t.Fatalf("beta %v: fused output differs", beta)
		}
		for i := range accF {
			if math.Float64bits(accF[i]) != math.Float64bits(accG[i]) && !(math.IsNaN(accF[i]) && math.IsNaN(accG[i])) {
				t.Fatalf("beta %v: statistic %d: fused %v, generic %v", beta, i, accF[i], accG[i])
			}
		}
	}
	if (SFA{Beta: 0.5}).Kernel().Fused(make([]byte, 8), dtype.F32, []Operand{{DType: dtype.BF16}, {DType: dtype.BF16}}, nil, Chunk{}) {
		t.Error("fused path took an F32 output")
	}
}

// TestSFAInPlaceReshardAndSymlink: re-sharding in place drops the old weight files (a
// stale model.safetensors would be what transformers loads), and an in-place merge
// through a symlink replaces the checkpoint it points to, keeping the link.
func TestSFAInPlaceReshardAndSymlink(t *testing.T) {
	f := newFixture(t, stt.TinyLlama, dtype.BF16, 1)
	folder := filepath.Join(f.dir, "step_400")
	must(t, stt.WriteFolder(folder, f.current, 1, nil))
	must(t, os.WriteFile(filepath.Join(folder, "optimizer.pt"), []byte("state"), 0o644))
	link := filepath.Join(f.dir, "latest")
	must(t, os.Symlink("step_400", link))
	job := sfaJob(f, "", 0.5, 2)
	job.Current = link
	job.Job.InPlace = true
	job.Job.ShardSize = 40_000
	rep, err := RunSFA(context.Background(), job)
	must(t, err)
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v", err)
	}
	entries, _ := os.ReadDir(folder)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if slices.Contains(names, "model.safetensors") || !slices.Contains(names, "optimizer.pt") || !slices.Contains(names, "model.safetensors.index.json") {
		t.Errorf("after re-sharding in place the folder holds %v", names)
	}
	if len(rep.OutputFiles) < 2 {
		t.Errorf("output files %v", rep.OutputFiles)
	}
	c, err := safetensors.OpenCheckpoint(folder)
	must(t, err)
	defer c.Close()
	if c.Metadata["gomerge.method"] != "sfa" {
		t.Error("the folder the link points to was not merged")
	}
}

// TestFusedTiledMatchesGeneric: SFA's tiled chunk path gives the generic path's output
// bytes and statistics for mixed input and output dtypes, block types included, on
// lengths that end mid-tile and mid-lane.
func TestFusedTiledMatchesGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	cases := []struct {
		a, x, out dtype.DType
		n         int
	}{
		{dtype.F32, dtype.F32, dtype.F32, 13},
		{dtype.F32, dtype.F16, dtype.BF16, 1029},
		{dtype.F16, dtype.F16, dtype.F16, 5000},
		{dtype.Q8_0, dtype.Q8_0, dtype.Q8_0, 3200},
		{dtype.Q4_K, dtype.Q6_K, dtype.Q8_0, 2304},
		{dtype.Q4_K, dtype.Q6_K, dtype.Q4_K, 2304},
		{dtype.F32, dtype.Q8_0, dtype.Q3_K, 1280},
		{dtype.F32, dtype.Q5_1, dtype.Q4_0, 1056},
		{dtype.F64, dtype.BF16, dtype.F32, 1027},
	}
	for _, tc := range cases {
		enc := func(dt dtype.DType) []byte {
			if !dt.CanEncode() {
				return gguftest.RandomBlocks(rng, dt, int64(tc.n))
			}
			v := make([]float32, tc.n)
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
			b := make([]byte, dt.Bytes(int64(tc.n)))
			must(t, dtype.Encode(b, v, dt))
			return b
		}
		a, x := enc(tc.a), enc(tc.x)
		for _, beta := range []float64{0, 0.3, 1} {
			k := SFA{Beta: beta}.Kernel()
			fused := make([]byte, tc.out.Bytes(int64(tc.n)))
			accF := make([]float64, sfaStats)
			if !k.Fused(fused, tc.out, []Operand{{DType: tc.a, Data: a}, {DType: tc.x, Data: x}}, accF, Chunk{}) {
				t.Fatalf("%v: fused path declined", tc)
			}
			af, xf, dst := make([]float32, tc.n), make([]float32, tc.n), make([]float32, tc.n)
			must(t, dtype.Decode(af, a, tc.a))
			must(t, dtype.Decode(xf, x, tc.x))
			k.Merge(dst, [][]float32{af, xf}, nil, Chunk{})
			generic := make([]byte, len(fused))
			must(t, dtype.Encode(generic, dst, tc.out))
			must(t, dtype.Decode(dst, generic, tc.out))
			accG := make([]float64, sfaStats)
			k.Observe(dst, [][]float32{af, xf}, accG)
			if !bytes.Equal(fused, generic) {
				t.Fatalf("%v beta %v: fused output differs", tc, beta)
			}
			for i := range accF {
				if math.Float64bits(accF[i]) != math.Float64bits(accG[i]) {
					t.Fatalf("%v beta %v: statistic %d: fused %v, generic %v", tc, beta, i, accF[i], accG[i])
				}
			}
		}
	}
}
