package merge

import (
	"sync"

	"github.com/gomerge/gomerge/internal/arena"
)

// Tensors read once for all their passes.
//
// A kernel with passes (norms, magnitude ranks, Gram matrices, L1 sums) reads its
// tensor's inputs once per pass and once more to merge. Mapped inputs are read again
// from the page cache at memory speed; inputs that are copied in spans (pread, on
// hosts where a mapping's first touch of a page traps: docs/reliability.md#how-inputs-are-read)
// or decoded (compressed checkpoints) would pay the copy, or the decoding, each time.
// So a streamed tensor with passes whose copied operands fit in HoldBytes is read
// into an arena by its first pass, its spans filled in parallel by the workers as
// they stream them, and its later passes and its merge then run from the arena, as
// they would from a mapping. A kernel whose chunks read rows beyond themselves
// (WholeInputs: della, model_stock --filter-wise) has its tensor read into the arena
// the same way before its passes, instead of taking it whole from the mapping (which
// traps where copying was chosen) or decoding it whole on one goroutine. One tensor
// holds the arena at a time: the next one that needs it waits for the previous one's
// work, which by then is at most a chunk per worker, since the engine launches a
// tensor only once a worker is free.
//
// The arena is allocated once, at the size of the largest tensor it will hold, and
// reused: fresh memory costs a fault per page, dear on this project's VMs
// (internal/arena), so it is mapped for huge pages and freed when the run ends.

// DefaultHoldBytes is the most a tensor's copied or decoded operands may take to be
// held between passes (ExecOptions.HoldBytes): the largest group of a 7B–8B model's
// MLP matrices, base and three fine-tunes in BF16, fits; an embedding matrix of such
// a model, or a 70B model's MLP group, is read once per pass.
const DefaultHoldBytes = 1 << 30

// holdLimit is the most a held tensor's operands may take; 0: none is held.
func (o ExecOptions) holdLimit() int64 {
	switch {
	case o.HoldBytes < 0:
		return 0
	case o.HoldBytes == 0:
		return DefaultHoldBytes
	}
	return o.HoldBytes
}

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

// holds reports whether tensor ti, which streams, is read once into the arena: it
// is merged, its kernel has passes or reads beyond its chunks (WholeInputs), and its
// copied operands fit the limit.
func (x *execution) holds(ti int) bool {
	t, k := &x.plan.Tensors[ti], &x.kernels[ti]
	n := heldBytes(t)
	return t.Merge && (len(k.Passes) > 0 || k.WholeInputs) && n > 0 && n <= x.opts.holdLimit()
}

// arenaFor returns t's slices of the arena, one per used operand in usedOperands'
// order (nil for an operand that is mapped), once the tensor that held it before has
// finished its work. The arena is sized, on first use, for the largest tensor held.
func (x *execution) arenaFor(ti int) ([][]byte, error) {
	if x.heldWork != nil {
		x.heldWork.Wait()
		x.heldWork = nil
	}
	if x.arena == nil {
		var most int64
		for i := range x.plan.Tensors {
			if x.streams(i) && x.holds(i) {
				most = max(most, heldBytes(&x.plan.Tensors[i]))
			}
		}
		a, err := arena.New(most)
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
	x.tensorWork = work
	defer func() {
		x.tensorWork = nil
		x.g.Go(func() error {
			work.Wait()
			t.forget()
			return nil
		})
	}()
	return x.mergeChunks(ti)
}
