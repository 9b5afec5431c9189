package merge

import (
	"cmp"
	"slices"
	"sync"

	"github.com/gomerge/gomerge/internal/arena"
)

// Tensors read once for all their passes.
//
// A kernel with passes (norms, magnitude ranks, Gram matrices, L1 sums) reads its
// tensor's inputs once per pass and once more to merge. Mapped inputs are read again
// from the page cache at memory speed; inputs copied in spans (pread, where a
// mapping's first touch of a page traps: docs/reliability.md#how-inputs-are-read)
// or decoded (compressed checkpoints) would pay the copy, or the decoding, each
// time. So a streamed tensor with passes whose copied operands fit the arena is read
// into it by its first pass, the workers filling its spans in parallel as they
// stream them, and its later passes and its merge then run from the arena, as they
// would from a mapping. A kernel whose chunks read rows beyond themselves
// (WholeInputs: della, model_stock --filter-wise) has its tensor read into the arena
// the same way before its passes, instead of taking it whole from the mapping (which
// traps where copying was chosen) or decoding it whole on one goroutine. One tensor
// holds the arena at a time: the next one that needs it waits for the previous one's
// work, which by then is at most a chunk per worker, since the engine launches a
// tensor only once a worker is free.
//
// The arena is allocated once and reused, mapped for huge pages and freed when the
// run ends (internal/arena). Its fresh memory is dear (freshCost): the engine sizes
// it for the tensors that repeat, a model's layers, unless ExecOptions.HoldBytes sets
// the size.

// DefaultHoldBytes bounds the arena when ExecOptions.HoldBytes leaves its size to
// the engine (chooseArenaSize): the largest group of a 7B–8B model's MLP matrices,
// base and three fine-tunes in BF16, fits.
const DefaultHoldBytes = 1 << 30

// heldBytes is what t's operands that are read when it runs (copied or decoded)
// take in all.
func heldBytes(t *TensorPlan) int64 {
	var n int64
	t.usedOperands(func(op *Operand) {
		if op.load != nil {
			n += op.size
		}
	})
	return n
}

// holdable reports whether tensor ti would be read once into the arena were the
// arena large enough: the CPU runs it (the device loads its tensors whole), it is
// merged, its kernel has passes or reads beyond its
// chunks (WholeInputs), and some of its operands are copied or decoded, all of them
// in ranges.
func (x *execution) holdable(ti int) bool {
	t, k := &x.plan.Tensors[ti], &x.kernels[ti]
	return !x.gpuRuns(ti) && t.Merge && (len(k.Passes) > 0 || k.WholeInputs) && t.NumElements() > 0 && heldBytes(t) > 0 && t.readsInRanges()
}

// holds reports whether tensor ti is read once into the arena: it is holdable and
// fits the arena's size.
func (x *execution) holds(ti int) bool {
	return x.holdable(ti) && heldBytes(&x.plan.Tensors[ti]) <= x.arenaSize
}

// freshCost is what a byte of the arena's fresh memory costs, in bytes read again
// from copied inputs: the kernel zeroes each new page, and on this project's VMs the
// host backs it on first touch too. Filling a fresh 512 MiB buffer from the page cache
// took 0.99–1.55 s, with huge pages or without, and 0.11 s where the kernel handed
// back huge pages it had zeroed and backed before, against 0.08 s to fill the same
// buffer again (2026-12-04, internal/arena): 1.4 to 19 times. della's arena of
// 0.52 GB spent 1 s of its 9.5 s of CPU zeroing its pages.
const freshCost = 8

// mappedCost is what a byte's first touch through a mapping costs where the engine
// copies its inputs (the probe found the mapping traps), in bytes copied: a pass over
// a 1.05 GB file in the page cache took 0.75–0.78 s of CPU mapped and 0.22–0.24 s
// with pread into a reused buffer (bench/roundtrip/mapread, 2026-12-04).
const mappedCost = 4

// heldGroup is a holdable tensor's held bytes and the bytes holding it spares.
type heldGroup struct{ bytes, spared int64 }

// chooseArenaSize is the arena's size for opts.HoldBytes: 0 for a negative value;
// for a positive one, the largest holdable tensor within it; for 0, pickArenaSize's
// choice within DefaultHoldBytes.
func (x *execution) chooseArenaSize() int64 {
	var groups []heldGroup
	for ti := range x.plan.Tensors {
		if x.holdable(ti) {
			n := heldBytes(&x.plan.Tensors[ti])
			groups = append(groups, heldGroup{n, n * sparedReads(&x.kernels[ti])})
		}
	}
	switch limit := x.opts.HoldBytes; {
	case limit < 0:
		return 0
	case limit > 0:
		var most int64
		for _, g := range groups {
			if g.bytes <= limit {
				most = max(most, g.bytes)
			}
		}
		return most
	}
	return pickArenaSize(groups, DefaultHoldBytes)
}

// sparedReads is how many reads of a tensor holding it spares, in reads of the
// tensor: every pass after the first, and the merge, would read it again (a pass
// that may skip itself is not counted: the rank selector's are skipped unless its
// first pass missed); a kernel reading beyond its chunks would take it whole from
// the mapping instead, whose first touch costs mappedCost reads.
func sparedReads(k *Kernel) int64 {
	reads := int64(len(k.Passes))
	for _, p := range k.Passes[min(1, len(k.Passes)):] {
		if p.Skip != nil {
			reads--
		}
	}
	if k.WholeInputs {
		reads += mappedCost
	}
	return reads
}

// pickArenaSize picks, among the groups' sizes up to limit, the one whose spared
// reads (those of every group that fits) most exceed what the arena's fresh memory
// costs (freshCost per byte); 0 when none spares more than it costs. A model's few
// largest tensors (embeddings) would take an arena several times the size of the
// many that repeat (a layer's matrices), and cost more to allocate than reading
// them again spares.
func pickArenaSize(groups []heldGroup, limit int64) int64 {
	groups = slices.Clone(groups)
	slices.SortFunc(groups, func(a, b heldGroup) int { return cmp.Compare(a.bytes, b.bytes) })
	var best, bestGain, spared int64
	for i, g := range groups {
		if g.bytes > limit {
			break
		}
		spared += g.spared
		if i+1 < len(groups) && groups[i+1].bytes == g.bytes {
			continue
		}
		if gain := spared - freshCost*g.bytes; gain > bestGain {
			best, bestGain = g.bytes, gain
		}
	}
	return best
}

// arenaFor returns t's slices of the arena, one per used operand in usedOperands'
// order (nil for an operand that is mapped), once the tensor that held it before has
// finished its work. The arena is allocated on first use.
func (x *execution) arenaFor(ti int) ([][]byte, error) {
	if x.heldWork != nil {
		x.heldWork.Wait()
		x.heldWork = nil
	}
	if x.arena == nil {
		a, err := arena.New(x.arenaSize)
		if err != nil {
			return nil, err
		}
		x.arena = a
	}
	t := &x.plan.Tensors[ti]
	x.held = append(x.held, ti)
	var held [][]byte
	var off int64
	t.usedOperands(func(op *Operand) {
		var b []byte
		if op.load != nil {
			b = x.arena.Bytes[off : off+op.size : off+op.size]
			off += op.size
		}
		held = append(held, b)
	})
	return held, nil
}

// freeArena returns the arena's memory once the run's work is done, after dropping
// what the tensors that held it still point at.
func (x *execution) freeArena() error {
	if x.arena == nil {
		return nil
	}
	for _, ti := range x.held {
		x.plan.Tensors[ti].forget()
	}
	return x.arena.Free()
}

// adopt makes the held bytes t's operands' data, for the passes and the merge that
// follow the one that read them; t.forget drops them.
func adopt(t *TensorPlan, held [][]byte) {
	i := 0
	t.usedOperands(func(op *Operand) {
		if held[i] != nil {
			op.Data, op.base = held[i], 0
		}
		i++
	})
}

// runHeld is runStreamed for a tensor that holds the arena: its first pass streams
// its spans into the arena (or, for a kernel whose chunks read beyond themselves,
// a pass that only reads), and its other passes and its merge run from there.
func (x *execution) runHeld(ti int) bool {
	t, k := &x.plan.Tensors[ti], x.kernels[ti]
	held, err := x.arenaFor(ti)
	if err != nil {
		x.launch(func() error { return err })
		return false
	}
	filled, adopted := false, false
	work := new(sync.WaitGroup)
	x.heldWork = work
	if k.WholeInputs {
		// Its chunks read rows beyond themselves: the whole tensor is read first.
		var wg sync.WaitGroup
		ok := x.forSpansInto(ti, held, &wg, func(*TensorPlan, *scratch, int64, int64) error { return nil })
		wg.Wait()
		if !ok || x.gctx.Err() != nil {
			return false
		}
		filled = true
	}
	ok := x.passes(t, k, func(pass Pass, perChunk []float64, wg *sync.WaitGroup) bool {
		if !filled {
			filled = true
			return x.forSpansInto(ti, held, wg, func(v *TensorPlan, s *scratch, lo, hi int64) error {
				for c := lo / ChunkElems; c*ChunkElems < hi; c++ {
					if err := passChunk(v, pass, c, s, perChunk, &x.bytesRead); err != nil {
						return err
					}
				}
				return nil
			})
		}
		// passes calls launch once the previous pass's work is done.
		if !adopted {
			adopt(t, held)
			adopted = true
		}
		return x.launchPass(t, pass, perChunk, wg)
	})
	if !ok {
		return false
	}
	if !filled {
		// Every pass skipped itself: the merge is the only read.
		return x.mergeSpans(ti)
	}
	if !adopted {
		adopt(t, held)
	}
	defer x.trackWork(t, work)()
	return x.mergeChunks(ti)
}
