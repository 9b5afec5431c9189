package merge

import (
	"context"
	"math"
	"slices"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/gpu"
)

// deltaMagnitudes is the rank key of TIES, DARE and breadcrumbs: the bits of
// |θ_i − θ_base| for model lane (inputs: base first).
func deltaMagnitudes(dst []uint32, lane int, in [][]float32) {
	deltaMagnitudesWith(dst, in[lane+1], in[0], haveTiesAsm)
}

func deltaMagnitudesWith(dst []uint32, x, base []float32, asm bool) {
	base, x = base[:len(dst)], x[:len(dst)]
	j := 0
	if asm && len(dst) >= 8 {
		j = len(dst) &^ 7
		deltaAbsBitsAsm(dst, x, base, j)
	}
	for ; j < len(dst); j++ {
		dst[j] = absBits(x[j] - base[j])
	}
}

// newDeltaSelector is the rank selector of TIES, DARE and breadcrumbs: ranks of
// deltaMagnitudes, taken from BF16 words where the chunk has them, and pass 1's
// windows packed straight from the words where the CPU has AVX-512 (deltaNearBF16).
// Its chunks' scratch comes from m's run (methodRun.rankPool).
func newDeltaSelector(m *methodRun, n int64, ranks [][]int64) *rankSelector {
	sel := newRankSelector(n, ranks, deltaMagnitudes, m.rankPool())
	sel.magnitudeWords = deltaMagnitudesBF16
	if deltaNearFast() {
		sel.nearWords = deltaNearBF16
	}
	return sel
}

// deltaNearBF16 appends to found[c] the magnitudes deltaMagnitudesBF16 makes of
// lane's words whose top 16 bits lie in window wins[c], in order, and adds to
// above[c] the count of those above it (words: the chunk's, the base's first):
// nearWindow over those magnitudes for each window, without storing them. One
// window (TIES) goes through deltaNearAsm, two (breadcrumbs' cuts) through
// deltaNear2Asm, which makes each magnitude once; the last few elements, and more
// windows, in Go.
func deltaNearBF16(found [][]uint32, above []int64, lane int, words [][]uint16, wins [][2]uint32) {
	b, x := words[0], words[lane+1]
	x = x[:len(b)]
	room := len(b) + 16
	for c := range wins {
		found[c] = slices.Grow(found[c], room)
	}
	j := 0
	switch len(wins) {
	case 1:
		f := found[0]
		var k, a int
		j, k, a = deltaNearAsm(f[len(f):len(f)+room], x, b, wins[0][0], wins[0][1])
		found[0], above[0] = f[:len(f)+k], above[0]+int64(a)
	case 2:
		f0, f1 := found[0], found[1]
		var n [4]int
		j, n = deltaNear2Asm(f0[len(f0):len(f0)+room], f1[len(f1):len(f1)+room], x, b, [2][2]uint32{wins[0], wins[1]})
		found[0], found[1] = f0[:len(f0)+n[0]], f1[:len(f1)+n[2]]
		above[0], above[1] = above[0]+int64(n[1]), above[1]+int64(n[3])
	}
	var mags [16]uint32 // the rest, a block at a time, through the reference loops
	for ; j < len(b); j += len(mags) {
		m := mags[:min(len(mags), len(b)-j)]
		deltaMagnitudesBF16Go(m, x[j:], b[j:])
		for c, w := range wins {
			var a int64
			found[c], a = nearWindow(found[c], m, w[0], w[1], false)
			above[c] += a
		}
	}
}

// deltaMagnitudesBF16 is deltaMagnitudes from BF16 words (the rank selector's
// pass 1, Pass.Fused): the bits of |x − b| with x and b the widened words, the same
// float32 difference; false for operands that are not BF16 words readable in place.
func deltaMagnitudesBF16(dst []uint32, lane int, in []Operand) bool {
	if !allBF16(in) {
		return false
	}
	n := len(dst)
	b, ok1 := dtype.Uint16s(in[0].Data[:2*n])
	x, ok2 := dtype.Uint16s(in[lane+1].Data[:2*n])
	if !ok1 || !ok2 {
		return false
	}
	j := 0
	if haveTiesAsm {
		j = deltaAbsBitsBF16Asm(dst, x, b)
	}
	deltaMagnitudesBF16Go(dst[j:], x[j:], b[j:])
	return true
}

// deltaMagnitudesBF16Go sets dst[j] to the bits of |x[j] − b[j]| on the widened
// words: the reference the assembly is tested against.
func deltaMagnitudesBF16Go(dst []uint32, x, b []uint16) {
	x, b = x[:len(dst)], b[:len(dst)]
	for j := range dst {
		dst[j] = absBits(math.Float32frombits(uint32(x[j])<<16) - math.Float32frombits(uint32(b[j])<<16))
	}
}

// topK is how many elements density keeps of n: floor(density·n), in float64.
func topK(density float64, n int64) int64 {
	return int64(math.Floor(density * float64(n)))
}

// keepMasks fills sc.keep, for each model, with whether each element of the chunk
// survives trimming: it ranks above the model's last cut and, with two cuts, not above
// the first (breadcrumbs drops the largest too).
func keepMasks(sel *rankSelector, sc *maskScratch, in [][]float32, pos Chunk) {
	for i, keep := range sc.keep {
		deltaMagnitudes(sc.mags, i, in)
		cuts := sel.cuts[i]
		if haveTiesAsm {
			lo, hi := bandLanes(cuts, pos)
			keepBand(keep, sc.mags, &lo, &hi)
			continue
		}
		cuts[len(cuts)-1].above(keep, sc.mags, pos)
		if len(cuts) > 1 {
			cuts[0].above(sc.top, sc.mags, pos)
			for j, t := range sc.top {
				keep[j] = keep[j] && !t
			}
		}
	}
}

func init() {
	register(taskVectorMethod(taskVectorPreset{
		name: "ties", command: "ties",
		short:    "TIES: trim task vectors to their largest entries, elect signs, average what agrees",
		example:  `  gomerge ties --base base.safetensors math.safetensors:weight=0.7 law.safetensors:weight=0.3 --density 0.2 --out merged.safetensors`,
		sparsify: SparsifyMagnitude, consensus: ConsensusSign, normalize: true, density: 0.2,
	}))
}

// tiesKernel (docs/task-vectors.md, ties): trim each δ_i to its k = floor(density·numel) largest
// magnitudes (ties: lower flat index first), weight, elect a sign per element, and
// average the agreeing weighted deltas. Its passes are the rank selector's (one read
// of the inputs when pass 1's windows hold the cuts); the merge is tiesMergeChunk with
// AVX2 and tiesMergeColumns, its reference, without.
func tiesKernel(m *methodRun, t *TensorPlan) Kernel {
	n := t.NumElements()
	lanes := len(m.weights)
	ranks := make([][]int64, lanes)
	for i, d := range m.dens {
		ranks[i] = []int64{topK(d, n)}
	}
	sel := newDeltaSelector(m, n, ranks)
	lambda := m.lambda
	first := make([]*cut, lanes) // each model's only cut
	for i, cs := range sel.cuts {
		first[i] = cs[0]
	}
	var pool, fpool sync.Pool
	pool.New = func() any { return newTiesScratch(lanes) }
	fpool.New = func() any { return newTiesMergeScratch(lanes) }
	return Kernel{
		Passes: sel.passes(),
		Merge: func(dst []float32, in, _ [][]float32, pos Chunk) {
			if haveTiesAsm {
				sc := fpool.Get().(*tiesMergeScratch)
				defer fpool.Put(sc)
				tiesMergeChunk(dst, in, first, m.weights, lambda, pos, sc)
				return
			}
			sc := pool.Get().(*tiesScratch)
			defer pool.Put(sc)
			tiesMergeColumns(dst, in, first, m.weights, lambda, pos, sc)
		},
		// BF16 in and out with AVX2: the merge a span at a time, widened and
		// rounded in the cache (tiesMergeBF16), the same bits as Merge.
		Fused: func(out []byte, outDT dtype.DType, in []Operand, _ []float64, pos Chunk) bool {
			if !haveTiesAsm || outDT != dtype.BF16 {
				return false
			}
			sc := fpool.Get().(*tiesMergeScratch)
			defer fpool.Put(sc)
			return tiesMergeBF16(out, in, first, m.weights, lambda, pos, sc)
		},
		// The same ranks, found by the device's histogram select, then the merge.
		GPU: func(ctx context.Context, dev *gpu.Device, t *TensorPlan, out gpu.Output) ([]float64, error) {
			in := gpuOperands(t.In)
			cuts, err := dev.Cuts(ctx, n, in[0], in[1:], ranks)
			if err != nil {
				return nil, err
			}
			first := make([]gpu.Cut, lanes)
			for i := range first {
				first[i] = cuts[i][0]
			}
			return nil, dev.TIES(ctx, n, out, in[0], in[1:], m.weights, first, lambda)
		},
	}
}

// tiesScratch is tiesMergeColumns' per-chunk scratch.
type tiesScratch struct {
	d        [][]float32
	sum, den []float32
	sign     []uint32
}

func newTiesScratch(lanes int) *tiesScratch {
	s := &tiesScratch{sum: make([]float32, ChunkElems), den: make([]float32, ChunkElems), sign: make([]uint32, ChunkElems)}
	for range lanes {
		s.d = append(s.d, make([]float32, ChunkElems))
	}
	return s
}

// tiesMergeColumns merges one chunk column by column (one model at a time over the
// chunk): each loop is short and branch-light, which is what makes it fast in plain
// Go. The float32 additions still happen in model order for every element, as the
// element-wise definition has them. It is the reference for tiesMergeChunk.
func tiesMergeColumns(dst []float32, in [][]float32, cuts []*cut, weights []float32, lambda float32, pos Chunk, sc *tiesScratch) {
	n := len(dst)
	base := in[0][:n]
	sum, den := sc.sum[:n], sc.den[:n]
	for i, c := range cuts {
		trimWeighted(sc.d[i][:n], in[i+1], base, weights[i], c, pos)
	}
	sumInOrder(sum, sc.d[:len(cuts)])
	tiesCombine(dst, base, sum, den, sc.sign[:n], sc.d, weights, lambda, haveTiesAsm)
}

// sumInOrder sets sum = Σ_i d[i], added in model order (the sign election's sum).
func sumInOrder(sum []float32, d [][]float32) {
	copy(sum, d[0][:len(sum)])
	for _, di := range d[1:] {
		for j, v := range di[:len(sum)] {
			sum[j] += v
		}
	}
}

// trimWeighted sets dst[j] = w·(x[j] − b[j]) where element j ranks above cut c, and 0
// elsewhere: the trimmed, weighted task vector of one model over one chunk.
func trimWeighted(dst, x, b []float32, w float32, c *cut, pos Chunk) {
	x, b = x[:len(dst)], b[:len(dst)]
	switch {
	case c.none:
		clear(dst)
		return
	case c.all:
		for j := range dst {
			dst[j] = float32(w * (x[j] - b[j]))
		}
		return
	}
	lane := cutLane(c, pos) // with the elements equal to c.t before the chunk
	for j := 0; j < len(dst); {
		if haveTiesAsm && len(dst)-j >= 8 {
			// Groups of eight with no element at the boundary, vectorised.
			j += trimAsm(dst[j:], x[j:], b[j:], (len(dst)-j)&^7, w, c.t)
		}
		for end := min(j+8, len(dst)); j < end; j++ {
			dst[j] = trimElem(x[j]-b[j], w, &lane)
		}
	}
}

// trimElem is trimWeighted for one element of delta d: float32(w·d) if it ranks
// above the cut l (which counts it when it is at a tied pattern), +0 if not.
func trimElem(d, w float32, l *tiesLane) float32 {
	if l.above(absBits(d)) {
		return float32(w * d)
	}
	return 0
}

// tiesCombine finishes TIES for one chunk from the trimmed weighted deltas d[i] and
// their sum: elect the sign, add the agreeing deltas and weights, divide, scale and add
// to the base. With asm, the AVX2 kernels do the first multiple of 8 elements; they
// are checked against this Go code bit for bit.
func tiesCombine(dst, base, sum, den []float32, sign []uint32, d [][]float32, weights []float32, lambda float32, asm bool) {
	n := len(dst)
	j0 := 0
	if asm && n >= 8 {
		j0 = n &^ 7
		tiesSignAsm(sign, sum, j0)
		clear(dst[:j0])
		clear(den[:j0])
		for i, w := range weights {
			tiesAccumAsm(dst, den, d[i], sign, w, j0)
		}
		tiesFinishAsm(dst, base, den, lambda, j0)
	}
	if j0 == n {
		return
	}
	dst, base, sum, den, sign = dst[j0:], base[j0:n], sum[j0:n], den[j0:n], sign[j0:n]
	for j, v := range sum {
		sign[j] = electedSign(v)
	}
	clear(dst) // Σ Δ_i m_i
	clear(den) // Σ w_i m_i
	for i, w := range weights {
		wbits := math.Float32bits(w)
		for j, di := range d[i][j0:n] {
			mask := agreeMask(di, sign[j])
			dst[j] += math.Float32frombits(math.Float32bits(di) & mask)
			den[j] += math.Float32frombits(wbits & mask)
		}
	}
	for j, q := range den {
		// A divisor of 0 becomes 1; branch-free, as half the elements may have no
		// agreeing delta.
		qb := math.Float32bits(q)
		zero := -(((qb<<1 | -(qb << 1)) >> 31) ^ 1)
		q = math.Float32frombits(qb&^zero | 0x3f800000&zero)
		dst[j] = base[j] + float32(lambda*(dst[j]/q))
	}
}

// TopK is topK for the report's kept-mass and overlap statistics (docs/report.md), so
// that they keep what TIES keeps.
func TopK(density float64, n int64) int64 { return topK(density, n) }
