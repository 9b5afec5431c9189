package merge

import (
	"math"
	"unsafe"
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
// but in one sweep over the chunk instead of one per step and model. The groups of
// eight the kernel leaves (the one where a tied cut's rank falls among the elements
// equal to its pattern, and the last few elements) are trimmed here and
// combined by tiesCombine, as tiesMergeColumns does them.
func tiesMergeChunk(dst []float32, in [][]float32, cuts []*cut, weights []float32, lambda float32, pos Chunk, sc *tiesMergeScratch) {
	n := len(dst)
	base := in[0][:n]
	for i, c := range cuts {
		x := in[i+1][:n]
		sc.xs[i] = unsafe.SliceData(x)
		l := tiesLane{w: weights[i]}
		switch {
		case c.all:
			l.gt = -1
		case c.none:
			l.gt = math.MaxInt32
		case c.ties:
			l.gt, l.eq, l.tie = int32(c.t), c.t, 1
		default: // every element equal to t ranks above: keep |δ| > t − 1
			l.gt = int32(c.t) - 1
		}
		if c.ties {
			l.seen, l.r = c.before[pos.Index], c.r
		}
		sc.lanes[i] = l
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
		for i, c := range cuts {
			x := in[i+1][j:end]
			for e := range k {
				d[i][e] = trimElem(x[e]-base[j+e], weights[i], c, &sc.lanes[i].seen)
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
