package merge

import (
	"fmt"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

// Tensors whose inputs decode (compressed checkpoints, checkpoint.RangeDecoder) run
// a span at a time: each unit of work decodes a span of elements of every such
// operand into its worker's scratch (the frames that hold the span, one frame after
// another, every frame's checksum checked), then runs the span's chunks as the
// engine runs any chunk. The spans of a tensor decode in parallel on the engine's
// workers, and memory holds one span per operand per worker, as a mapped input
// holds the pages in flight, rather than whole tensors. A kernel with passes reads its
// tensor once into an arena where it fits (hold.go), else decodes its spans once per
// pass. Kernels that read beyond their chunk (WholeInputs) have their tensor read
// into the arena where it fits; they, where it does not, and tensors the device runs
// load whole tensors instead (materialize).

// maxSpanElems caps a span: a frame of up to 64 MiB is decoded once per span.
const maxSpanElems = 16 << 20

// streams reports whether tensor ti runs a span at a time: not where the device runs
// it (it loads its tensors whole).
func (x *execution) streams(ti int) bool {
	t := &x.plan.Tensors[ti]
	if x.gpuRuns(ti) || !t.deferred() || t.NumElements() == 0 || t.Merge && x.kernels[ti].WholeInputs && !x.holds(ti) {
		return false
	}
	return t.readsInRanges()
}

// readsInRanges reports whether every operand of t that is read when t runs can be
// read a range at a time.
func (t *TensorPlan) readsInRanges() bool {
	ok := true
	t.usedOperands(func(op *Operand) {
		ok = ok && (op.load == nil || op.read != nil)
	})
	return ok
}

// usedOperands calls f on the operands a tensor's work reads: In and Aux when it is
// merged, Copy when it is copied.
func (t *TensorPlan) usedOperands(f func(op *Operand)) {
	if !t.Merge {
		f(&t.Copy)
		return
	}
	for i := range t.In {
		f(&t.In[i])
	}
	for i := range t.Aux {
		f(&t.Aux[i])
	}
}

// copySpanElems is the span of a tensor with an input copied in ranges (pread,
// where the mapping traps): four chunks, 512 KiB of each BF16 input, one pread each.
// Spans of one chunk made four times the calls and cost task_arithmetic 0.15 s and
// ties 0.14 s more CPU (user and system) on 1 GB inputs, 10 % and 5 %; sixteen
// chunks cost more system time again (2026-12-05, bench/README.md).
const copySpanElems = 4 * ChunkElems

// spanElems is t's span: a whole number of chunks, frameSpan's for each operand that
// decodes in frames, and copySpanElems at least where an operand is copied.
func spanElems(t *TensorPlan) int64 {
	span := int64(ChunkElems)
	t.usedOperands(func(op *Operand) {
		if op.read == nil {
			return
		}
		if op.unit <= 0 {
			span = max(span, copySpanElems)
			return
		}
		span = max(span, frameSpan(op.DType, op.unit))
	})
	return span
}

// frameSpan is the span for an operand of type dt decoded in frames of unit bytes
// (a tensor's frames start at its first byte; a range that cuts a frame decodes it
// whole), within maxSpanElems:
//   - the fewest whole chunks that are a whole number of frames, where those are at
//     most four frames: no frame is decoded twice in a pass;
//   - elsewhere four frames' worth or more, so that the frames two spans share (each
//     decoded twice) are a quarter of them at most, for frames up to a quarter of
//     the cap. A K-quant's or Q8_0's 1 MiB frames line up with its chunks only every
//     9 to 105 frames (256 to 2,048 chunks), and a worker holds a span of every
//     operand, which the run's scratch budget bounds its workers by.
//
// It counts bytes, since a block type's elements take a fraction of a byte each
// (before, its frame's bytes were taken for elements, and each frame was decoded by
// two or three spans).
func frameSpan(dt dtype.DType, unit int64) int64 {
	chunk := dt.Bytes(ChunkElems) // ChunkElems is a whole number of any type's blocks
	if chunk <= 0 {
		return ChunkElems
	}
	// The least common multiple of a chunk's bytes and a frame's, in chunks.
	if chunks := unit / gcd(chunk, unit); chunks*chunk <= 4*unit && chunks <= maxSpanElems/ChunkElems {
		return chunks * ChunkElems
	}
	chunks := (4*unit + chunk - 1) / chunk
	return min(chunks*ChunkElems, maxSpanElems)
}

// gcd is the greatest common divisor of a and b, both positive.
func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// spanBytes is what one worker's span buffers hold at most: over the tensors that
// decode a span at a time into them (not those read into the arena, whose spans go
// there, nor those loaded whole: the device's, and WholeInputs ones not held), a
// span of each operand that decodes, no longer than the tensor. The run's scratch
// budget bounds the workers by it (newExecution), so a tensor that never uses the
// buffers must not count: with frames of 64 MiB a held tensor would otherwise hold
// the whole run to one or two workers.
//
// A scratch keeps each operand slot's buffer across tensors and grows it to the
// largest that slot has needed (spanView), so the sum is over slots of each slot's
// largest buffer: more than any one tensor needs where operands' types or spans
// differ by slot between tensors (a copied tensor's in slot 0, an input's F32
// tensor beside another's BF16 one).
func (x *execution) spanBytes() int64 {
	slots := make([]int64, x.nIn+x.nAux+1) // per operand slot (usedOperands' order, as spanView's), its largest buffer
	for ti := range x.plan.Tensors {
		t := &x.plan.Tensors[ti]
		if !x.streams(ti) || t.Merge && x.holds(ti) && !mayMergeSpans(&x.kernels[ti]) {
			continue
		}
		span, j := spanBuffer(t), 0
		t.usedOperands(func(op *Operand) {
			if op.read != nil {
				slots[j] = max(slots[j], op.DType.Bytes(span))
			}
			j++
		})
	}
	var sum int64
	for _, n := range slots {
		sum += n
	}
	return sum
}

// mayMergeSpans reports whether a held tensor with kernel k may still be merged
// through span buffers: where every one of its passes may skip itself, nothing is
// read into the arena and the merge streams (runHeld), unless the kernel reads
// beyond its chunks (WholeInputs: read into the arena first).
func mayMergeSpans(k *Kernel) bool {
	if k.WholeInputs {
		return false
	}
	for _, p := range k.Passes {
		if p.Skip == nil {
			return false
		}
	}
	return true
}

// spanBuffer is the elements a span buffer of t holds: its span, or the whole
// tensor where that is shorter.
func spanBuffer(t *TensorPlan) int64 {
	return min(spanElems(t), t.NumElements())
}

// spanView makes s's view of t for elements [lo, hi): the operands that decode are
// decoded into s's span buffers, or into their slices of held where that is set (one
// per used operand: runHeld), the others are t's own.
func spanView(t *TensorPlan, s *scratch, lo, hi int64, held [][]byte) (*TensorPlan, error) {
	v := &s.view
	*v = *t
	s.viewOps = append(append(s.viewOps[:0], t.In...), t.Aux...)
	nIn, nAux := len(t.In), len(t.Aux)
	v.In, v.Aux = s.viewOps[:nIn:nIn], s.viewOps[nIn:nIn+nAux:nIn+nAux]
	if len(s.spans) < nIn+nAux+1 {
		s.spans = append(s.spans, make([][]byte, nIn+nAux+1-len(s.spans))...)
	}
	// Operands that decode against another's bytes (linkDeltas) go second, once
	// those bytes are in the view.
	var err error
	for _, linked := range []bool{false, true} {
		i := 0
		v.usedOperands(func(op *Operand) {
			j := i
			i++
			if op.load == nil || err != nil || (op.refOp > 0) != linked {
				return
			}
			if op.read == nil {
				err = fmt.Errorf("%s: tensor %q: the source cannot decode a range", op.File, t.Name)
				return
			}
			n := op.DType.Bytes(hi - lo)
			var b []byte
			if held != nil {
				b = held[j][op.DType.Bytes(lo):op.DType.Bytes(hi)]
			} else {
				if int64(cap(s.spans[j])) < n {
					s.spans[j] = make([]byte, op.DType.Bytes(spanBuffer(t)))
				}
				b = s.spans[j][:n]
			}
			var e error
			if linked {
				e = op.readAgainst(op.DType.Bytes(lo), b, s.viewOps[op.refOp-1].at(lo)[:n])
			} else {
				e = op.read(op.DType.Bytes(lo), b)
			}
			if e != nil {
				err = fmt.Errorf("tensor %q: %w", t.Name, e)
				return
			}
			op.Data, op.base, op.load, op.read, op.readAgainst = b, lo, nil, nil, nil
		})
	}
	return v, err
}

// forSpans launches f on every span of tensor ti with its view, counting the work
// in wg (when set); false when the run is stopping.
func (x *execution) forSpans(ti int, wg *sync.WaitGroup, f func(v *TensorPlan, s *scratch, lo, hi int64) error) bool {
	return x.forSpansInto(ti, nil, wg, f)
}

// forSpansInto is forSpans with the spans read into held (spanView).
func (x *execution) forSpansInto(ti int, held [][]byte, wg *sync.WaitGroup, f func(v *TensorPlan, s *scratch, lo, hi int64) error) bool {
	t := &x.plan.Tensors[ti]
	n, span := t.NumElements(), spanElems(t)
	for lo := int64(0); lo < n; lo += span {
		hi := min(lo+span, n)
		if wg != nil {
			wg.Add(1)
		}
		if !x.launch(guarded(t, func() error {
			if wg != nil {
				defer wg.Done()
			}
			s := x.getScratch()
			defer x.putScratch(s)
			v, err := spanView(t, s, lo, hi, held)
			if err != nil {
				return err
			}
			return f(v, s, lo, hi)
		})) {
			if wg != nil {
				wg.Done()
			}
			return false
		}
	}
	return true
}

// runStreamed is runTensor for a tensor that streams: its passes, then its chunks
// merged (or converted) and written, or its bytes copied, a span at a time.
func (x *execution) runStreamed(ti int) bool {
	t, k := &x.plan.Tensors[ti], x.kernels[ti]
	if !t.Merge && t.Copy.DType == t.OutDType {
		return x.forSpans(ti, nil, func(v *TensorPlan, _ *scratch, lo, _ int64) error {
			return x.writeCopy(ti, v.Copy.DType.Bytes(lo), v.Copy.Data)
		})
	}
	if t.Merge && x.holds(ti) {
		return x.runHeld(ti)
	}
	if t.Merge {
		ok := x.passes(t, k, func(pass Pass, perChunk []float64, wg *sync.WaitGroup) bool {
			return x.forSpans(ti, wg, func(v *TensorPlan, s *scratch, lo, hi int64) error {
				for c := lo / ChunkElems; c*ChunkElems < hi; c++ {
					if err := passChunk(v, pass, c, s, perChunk, &x.bytesRead); err != nil {
						return err
					}
				}
				return nil
			})
		})
		if !ok {
			return false
		}
	}
	return x.mergeSpans(ti)
}

// mergeSpans launches tensor ti's merge (or conversion), a span at a time.
func (x *execution) mergeSpans(ti int) bool {
	t, k := &x.plan.Tensors[ti], x.kernels[ti]
	if t.Merge && k.Observe != nil && k.NumStats > 0 {
		x.partials[ti] = make([]float64, (t.NumElements()+ChunkElems-1)/ChunkElems*int64(k.NumStats))
	}
	return x.forSpans(ti, nil, func(v *TensorPlan, s *scratch, lo, hi int64) error {
		for c := lo / ChunkElems; c*ChunkElems < hi; c++ {
			if err := runChunk(v, ti, c, k, s, x.sink, x.partials[ti], &x.bytesRead, &x.bytesWritten, x.opts.Progress); err != nil {
				return err
			}
		}
		return nil
	})
}
