package merge

import (
	"math"
	"unsafe"

	"github.com/gomerge/gomerge/formats/dtype"
)

// tiesLane is one model's part in tiesMergeAVX2 (the layout the assembly reads:
// offsets 0, 4, 8, 12, 16, 24, 32; 40 bytes).
type tiesLane struct {
	w   float32
	gt  int32  // the kept elements' |δ| bits are above gt (int32: all bits below 2³¹)
	eq  uint32 // with tie set, the tied cut's pattern t
	tie uint32
	// With tie set: elements equal to t before this group (seen), how many of those
	// rank above (the cut's r), and seen after the group, kept until it is done.
	seen, r, next int64
}

// tiesMergeScratch is tiesMergeChunk's per-chunk state.
type tiesMergeScratch struct {
	xs       []*float32
	lanes    []tiesLane
	d        []float32   // 8 per lane, for the assembly
	group    [][]float32 // 8 per lane, a group done in Go
	sum, den []float32
	sign     []uint32
	// tiesMergeBF16's spans: each input's, widened, and the output's.
	spanIn  [][]float32
	spanOut []float32
	// tiesMergeWords': the operands' words, and pointers to the models'.
	words [][]uint16
	xw    []*uint16
}

func newTiesMergeScratch(lanes int) *tiesMergeScratch {
	s := &tiesMergeScratch{xs: make([]*float32, lanes), lanes: make([]tiesLane, lanes),
		d:   make([]float32, 8*lanes),
		sum: make([]float32, 8), den: make([]float32, 8), sign: make([]uint32, 8)}
	for range lanes {
		s.group = append(s.group, make([]float32, 8))
	}
	return s
}

// tiesMergeChunk is tiesKernel's merge with the AVX2 kernel: the same trimming
// (trimWeighted) and combination (tiesCombine) as tiesMergeColumns, per element the
// same operations in the same order, so the same bits (TestTiesMergeAsmMatchesGo),
// but in one sweep over the chunk instead of one per step and model.
func tiesMergeChunk(dst []float32, in [][]float32, cuts []*cut, weights []float32, lambda float32, pos Chunk, sc *tiesMergeScratch) {
	sc.setLanes(cuts, weights, pos)
	tiesMergeSpan(dst, in, cuts, weights, lambda, sc)
}

// setLanes sets each model's weight and cut for chunk pos, with the count of
// elements at a tied cut's pattern before the chunk.
func (sc *tiesMergeScratch) setLanes(cuts []*cut, weights []float32, pos Chunk) {
	for i, c := range cuts {
		sc.lanes[i] = cutLane(c, pos)
		sc.lanes[i].w = weights[i]
	}
}

// cutLane is cut c as the TIES kernels test it for chunk pos: above gt, or, for a
// tied cut, at its pattern while fewer than r of those came before (seen).
func cutLane(c *cut, pos Chunk) tiesLane {
	var l tiesLane
	switch {
	case c.all:
		l.gt = -1
	case c.none:
		l.gt = math.MaxInt32
	case c.ties:
		l.gt, l.eq, l.tie = int32(c.t), c.t, 1
		l.seen, l.r = c.before[pos.Index], c.r
	default: // every element equal to t ranks above: keep |δ| > t − 1
		l.gt = int32(c.t) - 1
	}
	return l
}

// above is cutLane's test of one magnitude, counting it when it is at a tied cut's
// pattern.
func (l *tiesLane) above(mag uint32) bool {
	if l.tie != 0 && mag == l.eq {
		a := l.seen < l.r
		l.seen++
		return a
	}
	return int32(mag) > l.gt
}

// tieBits is the pattern keepBandAVX2 stops at: a tied cut's, or ^0, which no
// magnitude (below 2³¹) equals.
func (l *tiesLane) tieBits() uint32 {
	if l.tie != 0 {
		return l.eq
	}
	return ^uint32(0)
}

// tiesMergeSpan merges the elements of dst, which follow those of the chunk merged
// before since setLanes (the lanes' seen counts carry on). The groups of eight the
// kernel leaves (the one where a tied cut's rank falls among the elements equal to
// its pattern, and the last few elements) are trimmed here and combined by
// tiesCombine, as tiesMergeColumns does them.
func tiesMergeSpan(dst []float32, in [][]float32, cuts []*cut, weights []float32, lambda float32, sc *tiesMergeScratch) {
	n := len(dst)
	base := in[0][:n]
	for i := range cuts {
		sc.xs[i] = unsafe.SliceData(in[i+1][:n])
	}
	for j := 0; j < n; {
		if n-j >= 8 {
			j = tiesMergeAsm(dst, base, sc.xs, sc.lanes, sc.d, lambda, j, n)
			if j == n {
				break
			}
		}
		end := min(j+8, n)
		k := end - j
		d := sc.group
		for i := range cuts {
			x := in[i+1][j:end]
			for e := range k {
				d[i][e] = trimElem(x[e]-base[j+e], weights[i], &sc.lanes[i])
			}
			d[i] = d[i][:k]
		}
		sum := sc.sum[:k]
		sumInOrder(sum, d)
		tiesCombine(dst[j:end], base[j:end], sum, sc.den[:k], sc.sign[:k], d, weights, lambda, true)
		for i := range d {
			d[i] = d[i][:8]
		}
		j = end
	}
}

// tiesSpanElems is how many elements tiesMergeBF16 widens at a time: the inputs'
// float32 and the output's stay in L1 and L2 between the widening, the merge and
// the rounding. Widening whole chunks (256 KiB of float32 an input) went through
// L3: a tenth of TIES' CPU was the widening (bench/README.md).
const tiesSpanElems = 2048

// tiesMergeBF16 is tiesMergeChunk from BF16 words to BF16 words, a span of
// tiesSpanElems at a time: the same bits as decoding the chunk, merging it and
// rounding it, which it does span by span. False, having written nothing that
// counts, for operands that are not the chunk's BF16 words.
func tiesMergeBF16(out []byte, in []Operand, cuts []*cut, weights []float32, lambda float32, pos Chunk, sc *tiesMergeScratch) bool {
	if !allBF16(in) {
		return false
	}
	for _, op := range in {
		if len(op.Data) < len(out) {
			return false
		}
	}
	if haveTiesBF16AVX512 {
		return tiesMergeWords(out, in, cuts, weights, lambda, pos, sc)
	}
	n := len(out) / 2
	if sc.spanIn == nil {
		for range in {
			sc.spanIn = append(sc.spanIn, make([]float32, tiesSpanElems))
		}
		sc.spanOut = make([]float32, tiesSpanElems)
	}
	sc.setLanes(cuts, weights, pos)
	spans := make([][]float32, len(in))
	for lo := 0; lo < n; lo += tiesSpanElems {
		hi := min(lo+tiesSpanElems, n)
		for i, op := range in {
			spans[i] = sc.spanIn[i][:hi-lo]
			if dtype.Decode(spans[i], op.Data[2*lo:2*hi], dtype.BF16) != nil {
				return false
			}
		}
		dst := sc.spanOut[:hi-lo]
		tiesMergeSpan(dst, spans, cuts, weights, lambda, sc)
		if dtype.Encode(out[2*lo:2*hi], dst, dtype.BF16) != nil {
			return false
		}
	}
	return true
}

// tiesMergeWords is tiesMergeBF16 with the AVX-512 kernel, which widens and rounds
// the words itself, sixteen at a time. The groups it leaves (a tied cut's straddling
// group, the last few elements) go eight at a time through the span path.
func tiesMergeWords(out []byte, in []Operand, cuts []*cut, weights []float32, lambda float32, pos Chunk, sc *tiesMergeScratch) bool {
	n := len(out) / 2
	dst, ok := dtype.Uint16s(out)
	if !ok {
		return false
	}
	words, ok := bf16Words(sc.words, in, n)
	if !ok {
		return false
	}
	sc.words = words
	if len(sc.xw) == 0 {
		sc.xw = make([]*uint16, len(cuts))
	}
	if sc.spanIn == nil {
		for range in {
			sc.spanIn = append(sc.spanIn, make([]float32, 8))
		}
		sc.spanOut = make([]float32, 8)
	}
	for i := range cuts {
		sc.xw[i] = unsafe.SliceData(words[i+1])
	}
	sc.setLanes(cuts, weights, pos)
	spans := make([][]float32, len(in))
	for j := 0; j < n; {
		if n-j >= 16 {
			j = tiesMergeWordsAsm(dst, words[0], sc.xw, sc.lanes, lambda, j, n, nil, nil, true, false)
			if j == n {
				break
			}
		}
		end := min(j+8, n)
		for i := range in {
			spans[i] = sc.spanIn[i][:end-j]
			for e := range spans[i] {
				spans[i][e] = math.Float32frombits(uint32(words[i][j+e]) << 16)
			}
		}
		f := sc.spanOut[:end-j]
		tiesMergeSpan(f, spans, cuts, weights, lambda, sc)
		for e, v := range f {
			dst[j+e] = dtype.Float32ToBF16(v)
		}
		j = end
	}
	return true
}
