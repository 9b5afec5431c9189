package merge

import "math"

// DELLA's keep masks without sorting every row.
//
// An entry of rank q (ascending |δ|, equal magnitudes by index) in a row of L is
// kept when its draw u is below thr[q] = densityThreshold(dellaKeepProb(d, ε, q, L)),
// and thr does not decrease with q. So the exact rank matters only when u falls
// between the thresholds of the lowest and the highest rank the entry could have:
// a draw below thr[0] keeps the entry whatever its rank, one at or above thr[L−1]
// drops it, and in between a histogram of the row's magnitudes bounds the rank to
// the entry's bucket, [start, start+count). Only entries whose draw falls between
// their bucket's two end thresholds (a bucket of one entry has none) need the order
// inside the bucket: those buckets' entries are gathered and sorted (sortRowKeys),
// which is the order a sort of the whole row gives them. The masks are those of the
// sort (dellaSelector.keepRowSorted), bit for bit, in a few linear passes.
//
// The buckets are the magnitudes' top 16 bits (a bfloat16's worth: 128 per octave),
// the dellaBuckets−1 highest below the row's largest; lower magnitudes and zeros
// share bucket 0. Any bucketing that keeps the order of magnitudes gives the same
// masks; this one splits a row of BF16 task vectors into buckets of a few entries.
// Eight octaves hold all but about 1 % of a row of normally distributed deltas (those
// below 1/256 of its largest), so bucket 0 stays small; the per-bucket passes
// (counts, running sums, clearing) cost half what 16 octaves did, for the same
// undecided entries (about 2 in a row of 2,048 on the benchmark fixtures).

// dellaBuckets is the number of buckets of a row's histogram: 8 octaves of
// bfloat16 resolution.
const dellaBuckets = 1024

// bucketScratch is the per-row scratch of the bucketed ranks, kept in rowBuf.
type bucketScratch struct {
	mags  []uint32 // the row's |δ| bits
	bk    []uint16 // each entry's bucket
	start []int32  // dellaBuckets+1: entries in lower buckets (a count per bucket while counting)
	mark  []bool   // dellaBuckets: the buckets some entry needs ranked inside
	undec []int32  // row positions of the entries whose rank decides
	rank  []int32  // L: rank of the entries of marked buckets
	draws []uint64 // L: the draws of the row's entries in the chunk
}

func newBucketScratch(L int64) *bucketScratch {
	return &bucketScratch{
		mags: make([]uint32, L), bk: make([]uint16, L), rank: make([]int32, L), draws: make([]uint64, L),
		undec: make([]int32, 0, L), // decideBuckets' assembly needs room for the row
		start: make([]int32, dellaBuckets+1), mark: make([]bool, dellaBuckets),
	}
}

// keepRowBuckets sets keep[e−off] for the entries e in [lo, hi) of the row that
// starts at rowStart (the whole row: base and x), for model lane with thresholds
// thr (and their top bits' bounds by rank, tb). keys and tmp are sortRowKeys'
// scratch of the row's length.
// Each step is a function of its own: small loops keep their variables in registers.
func (s *dellaSelector) keepRowBuckets(bs *bucketScratch, keep []bool, lane int, thr []uint64, tb *thresholdBounds,
	rowStart, lo, hi, off int64, base, x []float32, keys, tmp []uint64) {
	L := len(x)
	mags := bs.mags[:L]
	top := rowMagnitudes(mags, base[:L], x)
	s.keepRowRanked(bs, mags, top, keep, lane, thr, tb, rowStart, lo, hi, off, keys, tmp)
}

// keepRowRanked is keepRowBuckets from the row's magnitudes' bits (mags, the whole
// row) and their largest top 16 bits (top).
func (s *dellaSelector) keepRowRanked(bs *bucketScratch, mags []uint32, top uint32, keep []bool, lane int, thr []uint64, tb *thresholdBounds,
	rowStart, lo, hi, off int64, keys, tmp []uint64) {
	L := len(mags)
	bk := bs.bk[:L]
	low := bucketCounts(bk, bs.start, mags, int64(top)-(dellaBuckets-1))
	prefixCounts(bs.start[low:])
	j0, j1 := int(lo-rowStart), int(hi-rowStart)
	draws := bs.draws[:j1-j0]
	dellaDraws(draws, s.key, lane, lo)
	k := keep[lo-off : hi-off]
	bs.undec = decideBuckets(k, bs.undec[:0], draws, bk[j0:j1], bs.start, tb)
	switch n := len(bs.undec); {
	case n == 0:
	case n <= countedRanks():
		s.rankCounted(bs, mags, k, draws, thr, j0)
	default:
		s.rankMarked(bs, mags, k, draws, thr, j0, keys, tmp)
	}
	clear(bs.start[low:])
}

// rowMagnitudes writes the bits of |x−base| into mags and returns the largest top 16
// bits (the first multiple of 8 in AVX2 where there is, tested bit for bit against
// the loop).
//
//go:noinline
func rowMagnitudes(mags []uint32, base, x []float32) uint32 {
	var top uint32
	mags, base = mags[:len(x)], base[:len(x)]
	j := 0
	if haveTiesAsm && len(x) >= 8 {
		j = len(x) &^ 7
		top = dellaMagsAsm(mags, base, x, j)
	}
	for ; j < len(x); j++ {
		m := absBits(x[j] - base[j])
		mags[j] = m
		top = max(top, m>>16)
	}
	return top
}

// bucketCounts puts each magnitude in its bucket, floor+b for the top 16 bits (bucket
// 0: those at or below floor), and counts bucket b's entries in start[b+1]. It
// returns the lowest bucket. floor is the row's largest top 16 bits less
// dellaBuckets−1 (rowMagnitudes), so no bucket is above dellaBuckets−1. The buckets
// are computed eight at a time in AVX2 where there is (tested against the loop); the
// counts are a scalar loop.
//
//go:noinline
func bucketCounts(bk []uint16, start []int32, mags []uint32, floor int64) int {
	bk = bk[:len(mags)]
	low := dellaBuckets - 1
	j := 0
	if haveTiesAsm && len(mags) >= 8 {
		j = len(mags) &^ 7
		low = int(dellaBucketsAsm(bk, mags, j, int32(floor)))
	}
	for ; j < len(mags); j++ {
		b := min(max(int64(mags[j]>>16)-floor, 0), dellaBuckets-1)
		bk[j] = uint16(b)
		low = min(low, int(b))
	}
	st := (*[dellaBuckets + 1]int32)(start)
	for _, b := range bk {
		st[b&(dellaBuckets-1)+1]++ // the mask is a no-op that drops the bounds check
	}
	return low
}

// prefixCounts turns the counts in c[1:] into running sums, c[0] being 0: then c[b]
// is the number of entries below bucket b (sixteen at a time in AVX-512 where there
// is, tested against the loop: the loop's stores and loads took 3 cycles a bucket).
func prefixCounts(c []int32) {
	var below int32
	b := 1
	if haveDellaAVX512 && len(c) > 16 {
		n := (len(c) - 1) &^ 15
		dellaPrefixAsm(c[1 : 1+n])
		below, b = c[n], n+1
	}
	for ; b < len(c); b++ {
		below += c[b]
		c[b] = below
	}
}

// thresholdBounds bound the top 32 bits of a model's thresholds by lines in the rank:
// for every rank q, fma(q, c, lo) ≤ thr[q]>>32 ≤ fma(q, c, hi) (math.FMA's single
// rounding, which AVX-512's VFMADD gives too). The thresholds are a line in the rank
// (dellaKeepProb) floored to integers, so a line through the ends, moved by 2 either
// way, holds them; newThresholdBounds checks every rank. They let decideBuckets bound
// an entry's thresholds from its bucket's ranks without reading the thresholds.
type thresholdBounds struct{ c, lo, hi float64 }

// newThresholdBounds fits the bounds to thr (non-decreasing, at least one), widening
// them until every rank lies between them.
func newThresholdBounds(thr []uint64) *thresholdBounds {
	top := func(q int) float64 { return float64(thr[q] >> 32) }
	var c float64
	if n := len(thr); n > 1 {
		c = (top(n-1) - top(0)) / float64(n-1)
	}
	for m := 2.0; ; m *= 2 {
		b := &thresholdBounds{c: c, lo: top(0) - m, hi: top(0) + m}
		if b.hold(thr) {
			return b
		}
	}
}

// hold reports whether the bounds hold thr's top bits at every rank (they do once
// lo and hi are 2^33 apart, whatever c, as the top bits are below 2^32).
func (b *thresholdBounds) hold(thr []uint64) bool {
	for q, t := range thr {
		v := float64(t >> 32)
		if !(math.FMA(float64(q), b.c, b.lo) <= v && v <= math.FMA(float64(q), b.c, b.hi)) {
			return false
		}
	}
	return true
}

// dellaDraws fills dst with DARE's draws of model lane for the entries from e0 on
// (dareDraw; eight at a time with AVX-512, tested bit for bit).
func dellaDraws(dst []uint64, key uint64, lane int, e0 int64) {
	var j int
	if haveDareAVX512 && len(dst) >= 8 {
		j = dareDrawsAsm(dst, key, dareLaneMix(lane), uint64(e0))
	}
	for ; j < len(dst); j++ {
		dst[j] = dareDraw(key, lane, e0+int64(j))
	}
}

// decideBuckets sets keep[j] where the ranks of entry j's bucket (bk[j]) agree on it,
// judged on the top 32 bits of the draw against bounds of the thresholds' (tb) at the
// bucket's lowest and highest ranks (start[b], start[b+1]−1): a draw's top bits
// below the lower bound of the lowest rank's keep the entry, above the upper bound of
// the highest rank's drop it. It returns undec with the other entries' positions
// appended: those whose draw falls between the two thresholds, and the few (about
// 4 in 2^32) that fall within the bounds' slack of either, which the exact ranks
// decide as well. Branch-free but for the appends: the draws are random, so a branch
// on them would mispredict half the time. Eight at a time in AVX-512 where there is
// (the bucket's two bounds gathered as one word; tested against the loop).
//
//go:noinline
func decideBuckets(keep []bool, undec []int32, draw []uint64, bk []uint16, start []int32, tb *thresholdBounds) []int32 {
	keep, bk = keep[:len(draw)], bk[:len(draw)]
	st := (*[dellaBuckets + 1]int32)(start)
	j := 0
	if haveDellaAVX512 && len(draw) >= 8 {
		j = len(draw) &^ 7
		undec = dellaDecideAsm(keep, undec, draw, bk, start, tb, j)
	}
	for ; j < len(draw); j++ {
		b := bk[j] & (dellaBuckets - 1)
		u := float64(draw[j] >> 32)
		k := u < math.FMA(float64(st[b]), tb.c, tb.lo)
		keep[j] = k
		if !k && u <= math.FMA(float64(st[b+1]-1), tb.c, tb.hi) {
			undec = append(undec, int32(j))
		}
	}
	return undec
}

// countedRanks is the most undecided entries of a row whose ranks rankCounted counts
// one by one (a pass over the row each, thirty-two entries at a time with AVX-512);
// rankMarked, which sorts the entries of their buckets, takes rows with more.
func countedRanks() int {
	if haveDellaAVX512 {
		return 8
	}
	return 1
}

// rankCounted decides the entries bs.undec (positions in keep and draw; j0 + those
// in the row, whose magnitudes' bits are mags) from their exact ranks: the entries below the bucket (start[b])
// and those of the bucket before it in the order of a stable sort (bucketRank).
func (s *dellaSelector) rankCounted(bs *bucketScratch, mags []uint32, keep []bool, draw, thr []uint64, j0 int) {
	bk := bs.bk[:len(mags)]
	for _, j := range bs.undec {
		r := j0 + int(j)
		b := bk[r]
		keep[j] = draw[j] < thr[int(bs.start[b])+bucketRank(bk, mags, b, r)]
	}
}

// bucketRank counts the entries k of bucket b that a stable sort by magnitude puts
// before entry r: mags[k] < mags[r], or equal and k < r (thirty-two at a time in
// AVX-512 where there is, tested against the loop).
func bucketRank(bk []uint16, mags []uint32, b uint16, r int) int {
	mags = mags[:len(bk)]
	m := mags[r]
	var n, k int
	if haveDellaAVX512 && len(bk) >= 32 {
		k = len(bk) &^ 31
		n = dellaRankAsm(bk, mags, b, m, r, k)
	}
	for ; k < len(bk); k++ {
		if bk[k] == b && (mags[k] < m || mags[k] == m && k < r) {
			n++
		}
	}
	return n
}

// rankMarked decides the entries bs.undec (positions in keep and draw; j0 + those in
// the row, whose magnitudes' bits are mags) from their exact ranks. The entries of
// their buckets, gathered in index order and sorted by magnitude (stable), come out
// each bucket's contiguous, in the order the whole row's sort gives them.
func (s *dellaSelector) rankMarked(bs *bucketScratch, mags []uint32, keep []bool, draw, thr []uint64, j0 int, keys, tmp []uint64) {
	for _, j := range bs.undec {
		bs.mark[bs.bk[j0+int(j)]] = true
	}
	ks := keys[:0]
	for j, b := range bs.bk[:len(keys)] {
		if bs.mark[b] {
			ks = append(ks, uint64(mags[j])<<32|uint64(j))
		}
	}
	sortRowKeys(ks, tmp[:len(ks)])
	first, cur := 0, -1
	for p, kv := range ks {
		j := int(uint32(kv))
		if b := int(bs.bk[j]); b != cur {
			first, cur = p, b
		}
		bs.rank[j] = bs.start[cur] + int32(p-first)
	}
	for _, j := range bs.undec {
		keep[j] = draw[j] < thr[bs.rank[j0+int(j)]]
		bs.mark[bs.bk[j0+int(j)]] = false
	}
}
