package merge

import (
	"math/bits"
	"sync"
)

// SCE's selection for a tensor whose rank keys do not fit in maxSCEKeyBytes (a 1 GB
// llama's embeddings, 65.5M elements; a 7B llama's MLP matrices): the keys cannot
// be kept from one pass to the next, but the cut is found as sceKeys finds it, not
// by the rank selector's histogram of every key (its increments cost about as much
// as the variances):
//
//  1. the variances of every chunk, their zeros counted and one in sceSampleStride
//     histogrammed (sceKeys.count); and in the window the first chunk guesses
//     (sceKeys.window), per chunk one bit per position for the keys above it, and
//     the keys in it with their positions (collect). Done finds the exact cut
//     among those (sceKeys.setCut, equals per chunk included) when the window
//     holds it, and otherwise takes the range of keys around the cut from the
//     sample (sceKeys.sampleRange);
//  2. only where the window missed: the variances again, collected in that range;
//  3. the weights pass makes each chunk's mask from the bits and keys collected:
//     no variance.
//
// The rank selector computed the variances in each of its two passes and once more
// for the weights' masks. Where the sample's range misses the cut too, or holds
// more than sceBigMaxCandidates keys, the rank selector's passes run after all
// (they are skipped otherwise), so the cut is the same either way; only the cost
// differs.

// sceBigMaxCandidates bounds the keys pass 2 collects in the sample's range, with
// their positions (6 bytes each: 12 MiB; the window of pass 1, from one chunk's
// keys, holds about 1.4 % of a 65M-element tensor's keys).
const sceBigMaxCandidates = 1 << 21

// sceBig is the sampled selection of one tensor too large for sceKeys.
type sceBig struct {
	*sceKeys // the sample, the zeros and, once settled, the cut; its keys stay nil

	rank   int64
	lo, hi uint32 // the sample's range, which pass 2 collects

	// rankOnly (tests): go straight to the rank selector's passes.
	rankOnly bool
	// fallback: the sample did not settle the cut; the rank selector's passes run
	// and give the masks.
	fallback bool

	// From pass 2 to the weights pass, per chunk: bit j%64 of above[c][j/64] is set
	// when position j's key is above hi; cand[c] are the keys in [lo, hi] in
	// position order, at positions cpos[c].
	above   [][]uint64
	cand    [][]uint32
	cpos    [][]uint16
	nAbove  int64 // keys above hi, all chunks
	total   int64 // keys collected, all chunks
	over    bool  // more than maxCand collected
	maxCand int64 // sceBigMaxCandidates; tests lower it

	scratch sync.Pool // *[2][ChunkElems / 64]uint64: the compares' bits
}

func newSCEBig(n int64, topk float64) *sceBig {
	chunks := (n + ChunkElems - 1) / ChunkElems
	b := &sceBig{sceKeys: newSCEKeys(n, topk), maxCand: sceBigMaxCandidates,
		above: make([][]uint64, chunks), cand: make([][]uint32, chunks), cpos: make([][]uint16, chunks)}
	b.scratch.New = func() any { return new([2][ChunkElems / 64]uint64) }
	return b
}

// passes are the sample's pass, the range's, and sel's (the rank selector's),
// which run only when the first two did not settle the cut.
func (b *sceBig) passes(sel *rankSelector) []Pass {
	ps := []Pass{
		{
			Skip: func() bool {
				b.fallback = b.fallback || b.rankOnly
				return b.fallback
			},
			Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
				keys := sceKeyPool.Get().(*[ChunkElems]uint32)[:len(in[0])]
				b.sampled(pos, keys, sceVarianceZeros(keys, in))
			},
			Fused: sceKeysFused(b.sampled),
			Done: func([]float64) error {
				b.settleRange()
				return nil
			},
		},
		{
			Skip: func() bool { return b.fallback || b.all || b.none || b.bySample },
			Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
				keys := sceKeyPool.Get().(*[ChunkElems]uint32)[:len(in[0])]
				sceVariance(keys, 0, in)
				b.ranged(pos, keys, 0)
			},
			Fused: sceKeysFused(b.ranged),
			Done: func([]float64) error {
				b.settleCut() // the cut among the keys in the sample's range
				return nil
			},
		},
	}
	for _, p := range sel.passes() {
		skip := p.Skip
		p.Skip = func() bool { return !b.fallback || skip != nil && skip() }
		ps = append(ps, p)
	}
	return ps
}

// sampled is pass 1's work on chunk pos's keys (zeros of them 0, from sceKeyPool,
// returned to it): counted, sampled, and collected in the window.
func (b *sceBig) sampled(pos Chunk, keys []uint32, zeros int) {
	defer sceKeyPool.Put((*[ChunkElems]uint32)(keys[:ChunkElems]))
	b.count(keys, int64(zeros))
	if lo, hi, ok := b.window(keys, zeros); ok {
		b.collect(pos.Index, keys, lo, hi)
	}
}

// ranged is pass 2's work on chunk pos's keys (from sceKeyPool, returned to it):
// collected in the sample's range.
func (b *sceBig) ranged(pos Chunk, keys []uint32, _ int) {
	defer sceKeyPool.Put((*[ChunkElems]uint32)(keys[:ChunkElems]))
	b.collect(pos.Index, keys, b.lo, b.hi)
}

// settleRange, after pass 1: the rank from the zeros, all or none of the positions,
// or the range of keys pass 2 collects (none: the rank selector's passes run).
func (b *sceBig) settleRange() {
	defer b.dropSample()
	b.rank = sceTopK(b.topk, b.n-b.zeros)
	b.all, b.none = b.rank >= b.n, b.rank <= 0
	if b.all || b.none {
		b.drop()
		return
	}
	if b.winSet && !b.winOff && !b.over {
		if b.cutFromCollected() {
			b.bySample, b.byWindow = true, true
			return
		}
	}
	b.drop()
	var ok bool
	b.lo, b.hi, ok = b.sampleRange(b.rank)
	b.fallback = !ok
}

// drop forgets what pass 1 or 2 collected.
func (b *sceBig) drop() {
	clear(b.above)
	clear(b.cand)
	clear(b.cpos)
	b.nAbove, b.total, b.over = 0, 0, false
}

// collect keeps, for chunk c's keys, the bits of those above [lo, hi] and those in
// it with their positions (pass 1 in the window, pass 2 in the sample's range).
func (b *sceBig) collect(c int64, keys []uint32, lo, hi uint32) {
	sc := b.scratch.Get().(*[2][ChunkElems / 64]uint64)
	defer b.scratch.Put(sc)
	words := (len(keys) + 63) / 64
	above, eq := make([]uint64, words), sc[0][:words]
	ge := sc[1][:words]
	sceMaskBits(above, eq, keys, hi)
	sceMaskBits(ge, eq, keys, lo-1) // lo ≥ 1: zero keys are never in the range
	var n int
	for w := range words {
		n += bits.OnesCount64(ge[w] &^ above[w])
	}
	cand, cpos := make([]uint32, 0, n), make([]uint16, 0, n)
	var up int64
	for w := range words {
		up += int64(bits.OnesCount64(above[w]))
		for in := ge[w] &^ above[w]; in != 0; in &= in - 1 {
			j := 64*w + bits.TrailingZeros64(in)
			cand, cpos = append(cand, keys[j]), append(cpos, uint16(j))
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nAbove += up
	b.total += int64(n)
	b.over = b.over || b.total > b.maxCand
	// Past the bound, pass 1's later chunks need not collect.
	b.winOff = b.winOff || b.over
	if !b.over { // each chunk its own slots
		b.above[c], b.cand[c], b.cpos[c] = above, cand, cpos
	}
}

// settleCut sets the cut from the collected keys (bySample), or where the range
// missed it or held too many, the rank selector's passes are to run.
func (b *sceBig) settleCut() {
	if b.bySample = b.cutFromCollected(); !b.bySample {
		b.fallback = true
		b.drop()
	}
}

// cutFromCollected sets the cut from the keys collected in [lo, hi]; false: too
// many were, or the cut is not among them.
func (b *sceBig) cutFromCollected() bool {
	if b.over {
		return false
	}
	in := make([]uint32, 0, b.total)
	starts := make([]int, len(b.cand)+1)
	for c, k := range b.cand {
		in = append(in, k...)
		starts[c+1] = len(in)
	}
	return b.setCut(b.rank, b.nAbove, in, starts)
}

// ready says whether chunk c's mask comes from the sampled cut (not the rank
// selector's, and not yet made).
func (b *sceBig) ready(c int64) bool {
	return !b.fallback && (b.all || b.none || b.above[c] != nil)
}

// mask writes chunk c's mask (n positions) into dst (⌈n/64⌉ words) from pass 2's
// bits and keys, and drops them: the bits above the range, and in it the keys above
// t, and those equal to t as sceKeys.mask hands them out.
func (b *sceBig) mask(dst []uint64, c int64, n int) {
	switch {
	case b.all:
		setBits(dst, n)
		return
	case b.none:
		clear(dst)
		return
	}
	copy(dst, b.above[c])
	var seen int64
	if b.ties {
		seen = b.before[c]
	}
	for i, k := range b.cand[c] {
		j := b.cpos[c][i]
		switch {
		case k > b.t:
		case k < b.t:
			continue
		case b.ties: // the equal keys in flat order: the first r rank above
			seen++
			if seen > b.r {
				continue
			}
		}
		dst[j/64] |= 1 << (j % 64)
	}
	b.above[c], b.cand[c], b.cpos[c] = nil, nil, nil
}
