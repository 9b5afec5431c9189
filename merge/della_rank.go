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

// dellaBuckets is the number of buckets of a row's histogram: 16 octaves of
// bfloat16 resolution.
const dellaBuckets = 2048

// bucketScratch is the per-row scratch of the bucketed ranks, kept in rowBuf.
type bucketScratch struct {
	mags  []uint32 // the row's |δ| bits
	bk    []uint16 // each entry's bucket
	start []int32  // dellaBuckets+1: entries in lower buckets (a count per bucket while counting)
	mark  []bool   // dellaBuckets: the buckets some entry needs ranked inside
	undec []int32  // row positions of the entries whose rank decides
	rank  []int32  // L: rank of the entries of marked buckets
}

func newBucketScratch(L int64) *bucketScratch {
	return &bucketScratch{
		mags: make([]uint32, L), bk: make([]uint16, L), rank: make([]int32, L),
		start: make([]int32, dellaBuckets+1), mark: make([]bool, dellaBuckets),
	}
}

// keepRowBuckets sets keep[e−off] for the entries e in [lo, hi) of the row that
// starts at rowStart (the whole row: base and x), for model lane with thresholds
// thr. keys and tmp are sortRowKeys' scratch of the row's length. With sum, it adds
// the entries' |δ| to sum[0] and the kept ones' to sum[1], in index order (l1Sums).
func (s *dellaSelector) keepRowBuckets(bs *bucketScratch, keep []bool, lane int, thr []uint64,
	rowStart, lo, hi, off int64, base, x []float32, keys, tmp []uint64, sum *[2]float64) {
	L := len(x)
	mags, bk := bs.mags[:L], bs.bk[:L]
	base = base[:L]
	var top uint32
	for j, v := range x {
		m := absBits(v - base[j])
		mags[j] = m
		top = max(top, m>>16)
	}
	// Bucket b holds the magnitudes whose top 16 bits are floor+b (bucket 0: those at
	// or below floor).
	floor := int64(top) - (dellaBuckets - 1)
	start := bs.start
	low := dellaBuckets - 1
	for j, m := range mags {
		b := max(int64(m>>16)-floor, 0)
		bk[j] = uint16(b)
		start[b+1]++
		low = min(low, int(b))
	}
	var below int32
	for b := low + 1; b <= dellaBuckets; b++ {
		below += start[b]
		start[b] = below
	}
	// start[b] is now the entries below bucket b for every b > low, and start[low] is 0.

	// Branch-free: the draws are random, so branching on them would mispredict half
	// the time. An entry whose bucket's lowest and highest ranks agree is decided.
	undec := bs.undec[:0]
	for e := lo; e < hi; e++ {
		u := dareDraw(s.key, lane, e)
		j := e - rowStart
		b := bk[j]
		k0, k1 := u < thr[start[b]], u < thr[start[b+1]-1]
		keep[e-off] = k0
		if k0 != k1 { // rare: the rank inside the bucket decides
			undec = append(undec, int32(j))
			bs.mark[b] = true
		}
	}
	if len(undec) > 0 {
		// Rank the entries of the marked buckets: gathered in index order and sorted
		// by magnitude (stable), each bucket's entries come out contiguous, in the
		// order the whole row's sort gives them.
		ks := keys[:0]
		for j, b := range bk {
			if bs.mark[b] {
				ks = append(ks, uint64(mags[j])<<32|uint64(j))
			}
		}
		sortRowKeys(ks, tmp[:len(ks)])
		first, cur := 0, -1
		for p, kv := range ks {
			j := int(uint32(kv))
			if b := int(bk[j]); b != cur {
				first, cur = p, b
			}
			bs.rank[j] = start[cur] + int32(p-first)
		}
		for _, j := range undec {
			e := rowStart + int64(j)
			keep[e-off] = dareDraw(s.key, lane, e) < thr[bs.rank[j]]
			bs.mark[bk[j]] = false
		}
	}
	bs.undec = undec
	clear(start[low:])
	if sum != nil {
		all, kept := sum[0], sum[1]
		k := keep[lo-off : hi-off]
		for j, m := range mags[lo-rowStart : hi-rowStart] {
			a := float64(math.Float32frombits(m))
			all += a
			kept += math.Float64frombits(math.Float64bits(a) & -uint64(b2i(k[j])))
		}
		sum[0], sum[1] = all, kept
	}
}
