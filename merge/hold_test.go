package merge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
)

// countingDecoder is rangeOnly (ranges only, never a whole tensor) counting the
// bytes decoded per tensor, and failing the range of failTensor that starts past its
// first byte when failTensor is set.
type countingDecoder struct {
	rangeOnly
	mu         sync.Mutex
	decoded    map[string]int64
	failTensor string
}

var errPlanted = errors.New("planted read error")

func (c *countingDecoder) DecodeRange(name string, off int64, dst []byte) error {
	if name == c.failTensor && off > 0 {
		return errPlanted
	}
	c.mu.Lock()
	c.decoded[name] += int64(len(dst))
	c.mu.Unlock()
	return c.rangeOnly.DecodeRange(name, off, dst)
}

// A tensor whose kernel has passes is read once, into the arena, when its decoded
// operands fit HoldBytes, and once per pass and once more to merge when they do not;
// the output and every pass's statistics are the same either way, and whichever
// passes skip themselves.
func TestHeldTensorsReadOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, gz := writeCompressedInputs(t, dir, 8192)
	var srcs []*countingDecoder
	var inputs []Source
	for _, n := range []string{"base", "m2"} {
		s, err := checkpoint.Open(gz(n))
		must(t, err)
		defer s.Close()
		c := &countingDecoder{rangeOnly: rangeOnly{RangeDecoder: s.(checkpoint.RangeDecoder)}, decoded: map[string]int64{}}
		srcs = append(srcs, c)
		inputs = append(inputs, c)
	}
	plan, err := BuildPlan(inputs, nil, PlanOptions{FloatOnly: true})
	must(t, err)
	var largest int64
	for _, tp := range plan.Tensors {
		largest = max(largest, heldBytes(&tp))
	}
	if largest <= 2*ChunkElems*2*2 {
		t.Fatalf("the fixture's largest tensor group is %d bytes: too small to stream in several spans", largest)
	}

	// kernel has two passes (sums of the first input, of the second's squares) and
	// a merge that uses both; skip[i] makes pass i skip itself. Each tensor's sums
	// go to sums, by name.
	type sumsByTensor map[string][2]float64
	kernel := func(skip [2]bool, sums sumsByTensor, mu *sync.Mutex) func(tp *TensorPlan) Kernel {
		return func(tp *TensorPlan) Kernel {
			var passes []Pass
			for i := range 2 {
				passes = append(passes, Pass{NumStats: 1,
					Skip: func() bool { return skip[i] },
					Chunk: func(_ Chunk, in, _ [][]float32, acc []float64) {
						for _, v := range in[i] {
							acc[0] += float64(v) * float64(v)
						}
					},
					Done: func(per []float64) error {
						var s float64
						for _, v := range per {
							s += v
						}
						mu.Lock()
						defer mu.Unlock()
						got := sums[tp.Name]
						got[i] = s
						sums[tp.Name] = got
						return nil
					}})
			}
			return Kernel{Passes: passes, Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
				for j := range dst {
					dst[j] = in[0][j] - 0.5*in[1][j]
				}
			}}
		}
	}
	run := func(opts ExecOptions, skip [2]bool) (*memSink, sumsByTensor) {
		t.Helper()
		for _, s := range srcs {
			clear(s.decoded)
		}
		sink := &memSink{}
		for _, tp := range plan.Tensors {
			sink.bufs = append(sink.bufs, make([]byte, tp.OutDType.Bytes(tp.NumElements())))
		}
		sums, mu := sumsByTensor{}, new(sync.Mutex)
		opts.Threads = 2
		res, err := Execute(ctx, plan, sink, kernel(skip, sums, mu), opts)
		if err != nil {
			t.Fatal(err)
		}
		if passes := 2 - b2i(skip[0]) - b2i(skip[1]); opts.HoldBytes == largest && passes > 0 && res.ArenaBytes != largest {
			t.Errorf("skip %v, HoldBytes %d: an arena of %d bytes, want %d", skip, opts.HoldBytes, res.ArenaBytes, largest)
		}
		if opts.HoldBytes < 0 && res.ArenaBytes != 0 {
			t.Errorf("skip %v, no arena: %d bytes", skip, res.ArenaBytes)
		}
		for _, tp := range plan.Tensors {
			for i := range tp.In {
				if tp.In[i].Data != nil {
					t.Fatalf("tensor %q: input %d still holds %d bytes after the run", tp.Name, i, len(tp.In[i].Data))
				}
			}
		}
		return sink, sums
	}
	// reads checks how many times each tensor of each input was decoded: once where
	// held says, else reads times.
	reads := func(name string, held func(tp *TensorPlan) bool, times int64) {
		t.Helper()
		for _, tp := range plan.Tensors {
			want := int64(1)
			if !held(&tp) {
				want = times
			}
			for i, s := range srcs {
				if got := s.decoded[tp.Name]; got != want*tp.In[i].Len() {
					t.Errorf("%s: tensor %q of input %d: %d bytes decoded, want %d (%d reads)", name, tp.Name, i, got, want*tp.In[i].Len(), want)
				}
			}
		}
	}
	always := func(*TensorPlan) bool { return true }
	never := func(*TensorPlan) bool { return false }
	for _, skip := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
		passes := int64(2)
		for _, s := range skip {
			passes -= int64(b2i(s))
		}
		wantSink, wantSums := run(ExecOptions{HoldBytes: -1}, skip)
		reads(fmt.Sprintf("skip %v, nothing held", skip), never, passes+1)
		kernels, err := buildKernels(plan, kernel(skip, sumsByTensor{}, new(sync.Mutex)))
		must(t, err)
		chosen := newExecution(ctx, plan, nil, kernels, nil, ExecOptions{Threads: 2}).arenaSize
		for _, c := range []struct {
			name  string
			limit int64
			held  func(tp *TensorPlan) bool
		}{
			{"a limit of the largest tensor", largest, always},
			{"a limit under the largest tensor", largest - 1, func(tp *TensorPlan) bool { return heldBytes(tp) < largest }},
			{"the engine's choice", 0, func(tp *TensorPlan) bool { return heldBytes(tp) <= chosen }},
		} {
			name := fmt.Sprintf("skip %v, %s", skip, c.name)
			gotSink, gotSums := run(ExecOptions{HoldBytes: c.limit}, skip)
			reads(name, func(tp *TensorPlan) bool { return c.held(tp) || passes == 0 }, passes+1)
			for i, tp := range plan.Tensors {
				if !bytes.Equal(gotSink.bufs[i], wantSink.bufs[i]) {
					t.Errorf("%s: tensor %q: the output differs from the one read once per pass", name, tp.Name)
				}
				if gotSums[tp.Name] != wantSums[tp.Name] {
					t.Errorf("%s: tensor %q: pass sums %v, read once per pass %v", name, tp.Name, gotSums[tp.Name], wantSums[tp.Name])
				}
			}
		}
	}

	// A read that fails while the first pass fills the arena stops the run, naming
	// the tensor.
	for _, tp := range plan.Tensors {
		if heldBytes(&tp) == largest {
			srcs[1].failTensor = tp.Name
		}
	}
	defer func() { srcs[1].failTensor = "" }()
	_, err = Execute(ctx, plan, discardSink{}, kernel([2]bool{}, sumsByTensor{}, new(sync.Mutex)), ExecOptions{Threads: 2, HoldBytes: largest})
	if !errors.Is(err, errPlanted) || !strings.Contains(err.Error(), srcs[1].failTensor) {
		t.Errorf("a failing read while held: %v, want the planted error naming tensor %q", err, srcs[1].failTensor)
	}
	// So does an error once the arena holds the tensor (its second pass's).
	srcs[1].failTensor = ""
	failing := func(tp *TensorPlan) Kernel {
		k := kernel([2]bool{}, sumsByTensor{}, new(sync.Mutex))(tp)
		if heldBytes(tp) == largest {
			k.Passes[1].Done = func([]float64) error { return errPlanted }
		}
		return k
	}
	if _, err = Execute(ctx, plan, discardSink{}, failing, ExecOptions{Threads: 2, HoldBytes: largest}); !errors.Is(err, errPlanted) {
		t.Errorf("a failing pass while held: %v, want the planted error", err)
	}
	for _, tp := range plan.Tensors {
		for i := range tp.In {
			if tp.In[i].Data != nil {
				t.Errorf("after a failed run, tensor %q: input %d still holds %d bytes", tp.Name, i, len(tp.In[i].Data))
			}
		}
	}
}

// The engine's arena holds the sizes that repeat: it grows to a larger tensor only
// where the reads that spares outweigh the larger arena's fresh memory.
// TestSparedReads: the reads an arena spares a tensor count the passes after the
// first that always run, and the merge; a pass that may skip itself does not count.
func TestSparedReads(t *testing.T) {
	skip := func() bool { return true }
	for _, c := range []struct {
		name string
		k    Kernel
		want int64
	}{
		{"no passes", Kernel{}, 0},
		{"one pass", Kernel{Passes: []Pass{{}}}, 1},
		{"three passes", Kernel{Passes: []Pass{{}, {}, {}}}, 3},
		{"the rank selector's", Kernel{Passes: []Pass{{}, {Skip: skip}, {Skip: skip}, {Skip: skip}}}, 1},
		{"the first pass's Skip", Kernel{Passes: []Pass{{Skip: skip}, {}}}, 2},
		{"whole inputs", Kernel{WholeInputs: true}, mappedCost},
		{"whole inputs and a pass", Kernel{WholeInputs: true, Passes: []Pass{{}}}, 1 + mappedCost},
	} {
		if got := sparedReads(&c.k); got != c.want {
			t.Errorf("%s: %d reads, want %d", c.name, got, c.want)
		}
	}
}

func TestPickArenaSize(t *testing.T) {
	const mb = 1 << 20
	// n tensors of size bytes, each read again passes times without the arena.
	groups := func(spec ...[3]int64) []heldGroup {
		var gs []heldGroup
		for _, s := range spec {
			for range s[0] {
				gs = append(gs, heldGroup{s[1], s[1] * s[2]})
			}
		}
		return gs
	}
	for _, c := range []struct {
		name   string
		groups []heldGroup
		limit  int64
		want   int64
	}{
		{"none", nil, 1 << 30, 0},
		// The 1 GB fixtures under ties: 66 MLP groups of 92 MB, 2 embeddings' of 524 MB.
		{"layers and embeddings", groups([3]int64{66, 92 * mb, 1}, [3]int64{2, 524 * mb, 1}), 1 << 30, 92 * mb},
		{"embeddings that repeat enough", groups([3]int64{66, 92 * mb, 1}, [3]int64{40, 524 * mb, 1}), 1 << 30, 524 * mb},
		{"embeddings over the limit", groups([3]int64{66, 92 * mb, 1}, [3]int64{40, 524 * mb, 1}), 512 * mb, 92 * mb},
		{"too few to pay", groups([3]int64{2, 92 * mb, 1}), 1 << 30, 0},
		{"more passes pay sooner", groups([3]int64{3, 92 * mb, 3}), 1 << 30, 92 * mb},
		{"small ones on the way count", groups([3]int64{100, mb, 1}, [3]int64{8, 12 * mb, 1}), 1 << 30, 12 * mb},
	} {
		if got := pickArenaSize(c.groups, c.limit); got != c.want {
			t.Errorf("%s: %d MB, want %d MB", c.name, got/mb, c.want/mb)
		}
	}
}
