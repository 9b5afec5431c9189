package merge

import (
	"math"
	"math/bits"
	"slices"
	"sync"
)

// SCE's selection (select_topk < 1) decides, per chunk, which positions a mask of
// one bit per element keeps; the weights pass and the merge pass then visit only
// the kept positions.
//
// The rank keys are the variances of the task vectors (sceVariance), which cost as
// much as the rest of the method: the rank selector (rank.go) computes them in each
// of its passes, and once more for each mask. When a tensor's keys fit in
// maxSCEKeyBytes, sceKeys instead computes them once, in the only pass before the
// weights, and keeps them: that pass's Done locates the cut from the kept keys
// (the exact key at rank k and how many of its equals rank above, the same cut the
// rank selector finds), and the weights pass turns each chunk's keys into its mask.
// To find the cut, the pass itself counts, in every chunk, the keys above a window
// that the first chunk guesses and collects those in it; the cut is exact among
// them when the window holds it. Where it does not, a histogram of one key in
// sceSampleStride says between which keys the cut lies, and one scan of the kept
// keys counts those above that range and collects those in it; where the sample
// misled too (the range too narrow, or holding too many keys, as when most keys are
// equal), a histogram of every key does it.
// A tensor whose keys do not fit goes through sceBig: the same window, sample and
// range, the keys computed again only where the window misses (sce_big.go).

// maxSCEKeyBytes bounds the rank keys sceKeys holds for one tensor (4 bytes per
// element: 32M elements; every tensor of the 256mb fixtures, a 7B llama's attention
// matrices (16.8M) but not its MLP matrices (45M) or embeddings (131M), which take
// sceBig). Only one
// tensor's keys are held at a time: the engine runs one tensor's passes after the
// other's, and the weights pass drops each chunk's keys.
const maxSCEKeyBytes = 128 << 20

// sceKeyPool recycles the chunks of keys from one tensor to the next (and between
// runs): fresh memory for every chunk cost more in page faults and zeroing than
// computing the variances (perf, 256mb fixtures). A pool holds no state a result
// depends on.
var sceKeyPool = sync.Pool{New: func() any { return new([ChunkElems]uint32) }}

// dropKeys returns chunk c's keys to the pool.
func (s *sceKeys) dropKeys(c int64) {
	if k := s.keys[c]; k != nil {
		s.keys[c] = nil
		sceKeyPool.Put((*[ChunkElems]uint32)(k[:ChunkElems]))
	}
}

// sceKeys is one tensor's kept rank keys and the cut they give.
type sceKeys struct {
	n    int64
	topk float64
	keys [][]uint32 // per chunk, from the first pass until its mask is made

	mu sync.Mutex
	// The sampled keys' top 16 bits (below 1<<15: a key has no sign bit): a
	// histogram per worker (locals; free: those not in use), summed into hist only
	// where the window does not hold the cut. Adding each chunk's counts into one
	// histogram cost as much as counting them (a chunk's 4,096 sampled keys touch
	// some 2,300 bins).
	hist         []uint64
	locals, free []*[1 << 15]uint32
	zeros        int64 // keys equal to 0 (all of them)

	// bySample: the cut was found from the sample's range, not a histogram of every
	// key (for the tests, which check that both happen); byWindow: from the window.
	bySample, byWindow bool

	// The window: the keys pass's first chunk to get its keys guesses from them a
	// range of keys around the cut (sceGuessWindow), and every chunk counts its keys
	// above it and collects those in it, so that the cut is usually found without
	// another look at the keys (a scan of them all, on one core, in settle; for
	// sceBig a whole pass). The guess decides only how the cut is found, never the
	// cut. Under mu.
	noWindow       bool // tests: no window
	winSet, winOff bool
	winLo, winHi   uint32
	winAbove       int64      // keys above winHi
	winIn          [][]uint32 // per chunk, its keys in the window (sceKeys only)
	winTotal       int64

	// The cut, once the first pass is done: all or none of the positions, or the
	// positions whose key is above t, and of those equal to t the first r in flat
	// order (before[c]: how many equal t in the chunks before c, when ties).
	all, none, ties bool
	t               uint32
	r               int64
	before          []int64
}

func newSCEKeys(n int64, topk float64) *sceKeys {
	k := &sceKeys{n: n, topk: topk, keys: make([][]uint32, (n+ChunkElems-1)/ChunkElems)}
	return k
}

// pass is the one pass over the inputs that the selection needs: every chunk's keys,
// kept, and their histogram; its Done settles the cut.
func (s *sceKeys) pass() Pass {
	return Pass{
		Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
			keys := sceKeyPool.Get().(*[ChunkElems]uint32)[:len(in[0])]
			s.took(pos, keys, sceVarianceZeros(keys, in))
		},
		Fused: sceKeysFused(s.took),
		Done: func([]float64) error {
			s.settle()
			return nil
		},
	}
}

// took keeps chunk pos's keys (zeros of them 0, from sceKeyPool), counts them and
// collects those in the window.
func (s *sceKeys) took(pos Chunk, keys []uint32, zeros int) {
	s.keys[pos.Index] = keys // each chunk its own slot
	s.count(keys, int64(zeros))
	if lo, hi, ok := s.window(keys, zeros); ok {
		s.collectWindow(pos.Index, keys, lo, hi)
	}
}

// sceSampleStride: one key in that many (the first of each run, in every chunk)
// goes into the histogram that brackets the cut. Adding every key to it cost about
// as much as computing the keys (1 ns per key, the histogram's increments alone).
const sceSampleStride = 16

// sceMaxCandidates bounds the keys collected between the sample's bounds (1 MiB);
// more, and the cut comes from a histogram of every key instead.
const sceMaxCandidates = 1 << 18

// sceRangePool recycles collectWindow's scratch, with the room sceRange needs.
var sceRangePool = sync.Pool{New: func() any { return new([ChunkElems + 16]uint32) }}

// sceMaxWindow bounds the keys collected in the window (4 MiB); more, and the
// window is given up. The window is wider than the sample's range: its guess comes
// from one chunk.
const sceMaxWindow = 1 << 20

// window returns the window, guessing it from keys (zeros of them 0) if it is not
// set yet; false: none (given up, or not guessed).
func (s *sceKeys) window(keys []uint32, zeros int) (lo, hi uint32, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.winSet {
		s.winSet = true
		s.winLo, s.winHi, ok = sceGuessWindow(keys, zeros, s.topk)
		s.winOff = s.noWindow || !ok
	}
	return s.winLo, s.winHi, !s.winOff
}

// sceGuessWindow is the range of keys where a chunk's keys (zeros of them 0) put
// the cut at select_topk, give or take four of the binomial standard deviations of
// the rank a chunk's keys give, and 16: bounded by their top 16 bits, as sampleRange
// bounds the sample's.
func sceGuessWindow(keys []uint32, zeros int, topk float64) (lo, hi uint32, ok bool) {
	r := float64(topk * float64(len(keys)-zeros)) // rounded: arm64 would fuse it into r-m
	hist := make([]uint32, 1<<15)
	for _, k := range keys {
		hist[k>>16&(1<<15-1)]++
	}
	return sceHistRange(hist, r, float64(4*math.Sqrt(r*max(1-topk, 0)))+16) // rounded as amd64 does: the same window everywhere
}

// collectWindow counts chunk c's keys above the window [lo, hi] and keeps those in
// it; past sceMaxWindow keys in all, the window is given up.
func (s *sceKeys) collectWindow(c int64, keys []uint32, lo, hi uint32) {
	buf := sceRangePool.Get().(*[ChunkElems + 16]uint32)
	defer sceRangePool.Put(buf)
	a, in := sceRange(keys, lo, hi, buf[:0])
	in = slices.Clone(in)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.winAbove += int64(a)
	s.winTotal += int64(len(in))
	if s.winTotal > sceMaxWindow {
		s.winOff, s.winIn = true, nil
	}
	if s.winOff {
		return
	}
	if s.winIn == nil {
		s.winIn = make([][]uint32, len(s.keys))
	}
	s.winIn[c] = in // each chunk its own slot
}

// cutFromWindow sets the cut from the window's keys; false: there is no window, or
// the cut is not in it.
func (s *sceKeys) cutFromWindow(rank int64) bool {
	if !s.winSet || s.winOff {
		return false
	}
	in := make([]uint32, 0, s.winTotal)
	starts := make([]int, len(s.keys)+1)
	for c, k := range s.winIn {
		in = append(in, k...)
		starts[c+1] = len(in)
	}
	s.winIn = nil
	return s.setCut(rank, s.winAbove, in, starts)
}

// count adds one in sceSampleStride of a chunk's keys (zeros of them 0) to a
// worker's histogram, and its zeros to the count.
func (s *sceKeys) count(keys []uint32, zeros int64) {
	s.mu.Lock()
	s.zeros += zeros
	var local *[1 << 15]uint32
	if k := len(s.free); k > 0 {
		local, s.free = s.free[k-1], s.free[:k-1]
	} else {
		local = new([1 << 15]uint32)
		s.locals = append(s.locals, local)
	}
	s.mu.Unlock()
	// A tensor of n keys puts at most n/sceSampleStride in one: no uint32 overflows.
	for j := 0; j < len(keys); j += sceSampleStride {
		local[keys[j]>>16&(1<<15-1)]++ // a key has no sign bit: the mask only spares a bounds check
	}
	s.mu.Lock()
	s.free = append(s.free, local)
	s.mu.Unlock()
}

// sample is the histogram of the sampled keys, summed from the workers'.
func (s *sceKeys) sample() []uint64 {
	if s.hist == nil {
		s.hist = make([]uint64, 1<<15)
		for _, l := range s.locals {
			for b, v := range l {
				s.hist[b] += uint64(v)
			}
		}
		s.locals, s.free = nil, nil
	}
	return s.hist
}

// dropSample forgets the sample.
func (s *sceKeys) dropSample() {
	s.hist, s.locals, s.free = nil, nil, nil
}

// settle locates the cut: the rank is select_topk of the non-zero keys (sceTopK);
// cutFromSample, or where it cannot, cutFromHistogram gives the key t at that rank
// and how many of its equals rank above; when some equals rank above and some
// below, the equals per chunk are counted: among the keys cutFromSample collected
// (t's equals are all there), or by a second scan of the keys.
func (s *sceKeys) settle() {
	rank := sceTopK(s.topk, s.n-s.zeros)
	s.all, s.none = rank >= s.n, rank <= 0
	if s.all || s.none {
		for c := range s.keys { // not needed for the masks
			s.dropKeys(int64(c))
		}
		s.dropSample()
		return
	}
	s.byWindow = s.cutFromWindow(rank)
	s.bySample = s.byWindow || s.cutFromSample(rank)
	s.dropSample()
	if !s.bySample {
		s.cutFromHistogram(rank)
	}
	if !s.ties || s.before != nil {
		return
	}
	s.before = make([]int64, len(s.keys))
	var seen int64
	gt, eq := make([]uint64, ChunkElems/64), make([]uint64, ChunkElems/64)
	for c, keys := range s.keys {
		s.before[c] = seen
		sceMaskBits(gt, eq, keys, s.t)
		for _, e := range eq[:(len(keys)+63)/64] {
			seen += int64(bits.OnesCount64(e))
		}
	}
}

// setCut sets the cut from the keys that rank above a range (above) and the keys in
// it (in, in flat order, starts[c] the first of chunk c's): t is the key at rank,
// r how many of its equals rank above, and where some equals rank above and some
// below, before. false: the rank is not in the range. The keys' counts per top 16
// bits say which bin holds t; only that bin's keys are sorted (sorting the whole
// range was 2.5 % of the run, on one core).
func (s *sceKeys) setCut(rank, above int64, in []uint32, starts []int) bool {
	need := rank - above
	if need <= 0 || need > int64(len(in)) {
		return false
	}
	lo, hi := ^uint32(0), uint32(0)
	for _, k := range in {
		lo, hi = min(lo, k>>16), max(hi, k>>16)
	}
	bins := make([]int64, hi-lo+1)
	for _, k := range in {
		bins[k>>16-lo]++
	}
	var greater int64 // keys of the range in the bins above t's
	b := len(bins) - 1
	for ; greater+bins[b] < need; b-- {
		greater += bins[b]
	}
	bin := make([]uint32, 0, bins[b])
	for _, k := range in {
		if k>>16 == lo+uint32(b) {
			bin = append(bin, k)
		}
	}
	slices.Sort(bin)
	t := bin[int64(len(bin))-(need-greater)]
	first, _ := slices.BinarySearch(bin, t)
	end, _ := slices.BinarySearch(bin, t+1) // t+1 fits: a key has no sign bit
	greater += int64(len(bin) - end)
	s.t, s.r, s.ties = t, need-greater, need-greater < int64(end-first)
	if s.ties {
		s.before = make([]int64, len(s.keys))
		var seen int64
		for c := range s.keys {
			s.before[c] = seen
			for _, k := range in[starts[c]:starts[c+1]] {
				seen += int64(b2i(k == t))
			}
		}
	}
	return true
}

// cutFromSample sets the cut from the sampled histogram: the bins where the
// sample's count from the top reaches rank/sceSampleStride, give or take four
// standard deviations and 16, bound a range of keys; one scan counts the keys
// above it and collects those in it, and the cut is among those when the counts
// say so. false: it was not (or more than sceMaxCandidates were in the range).
func (s *sceKeys) cutFromSample(rank int64) bool {
	lo, hi, ok := s.sampleRange(rank)
	if !ok {
		return false
	}
	var above int64
	var in []uint32
	starts := make([]int, len(s.keys)+1)
	for c, keys := range s.keys {
		var a int
		in = slices.Grow(in, len(keys)+16)
		a, in = sceRange(keys, lo, hi, in)
		above += int64(a)
		starts[c+1] = len(in)
		if len(in) > sceMaxCandidates {
			return false
		}
	}
	return s.setCut(rank, above, in, starts)
}

// sampleRange is the range of keys that cutFromSample scans: from the bins where
// the sample's count from the top reaches rank/sceSampleStride, give or take four
// standard deviations and 16. false: the sample has too few keys to reach it.
func (s *sceKeys) sampleRange(rank int64) (lo, hi uint32, ok bool) {
	q := float64(float64(rank) / sceSampleStride)                  // rounded: arm64 would fuse it into q-m
	return sceHistRange(s.sample(), q, float64(4*math.Sqrt(q))+16) // rounded as amd64 does
}

// sceHistRange is the range of keys from the bin of hist (by top 16 bits) where
// the count from the top reaches q−m to the one where it reaches q+m. false: it
// never reaches q−m.
func sceHistRange[T uint32 | uint64](hist []T, q, m float64) (lo, hi uint32, ok bool) {
	bhi, blo := -1, 0
	var c float64
	for b := len(hist) - 1; b >= 0; b-- {
		c += float64(hist[b])
		if bhi < 0 && c >= q-m {
			bhi = b
		}
		if c >= q+m {
			blo = b
			break
		}
	}
	if bhi < 0 {
		return 0, 0, false
	}
	// Zero keys never rank above (rank counts the non-zero ones), so the range
	// starts at 1 at least.
	return max(uint32(blo)<<16, 1), uint32(bhi)<<16 | 0xffff, true
}

// cutFromHistogram sets the cut from a histogram of every key: the bin of the key
// at the rank from it, then a histogram of the low 16 bits of the bin's keys
// (found 64 at a time by sceMaskBits), which need not fit in memory as a list.
func (s *sceKeys) cutFromHistogram(rank int64) {
	hist := make([]uint64, 1<<15)
	for _, keys := range s.keys {
		for _, k := range keys {
			hist[k>>16&(1<<15-1)]++
		}
	}
	var bin uint32
	var above int64
	for b := len(hist) - 1; b >= 0; b-- {
		if v := int64(hist[b]); above+v >= rank {
			bin = uint32(b)
			break
		} else {
			above += v
		}
	}
	// The keys in the bin, 64 at a time: above lo−1 and not above hi.
	lows := make([]int64, 1<<16)
	lo, hi := bin<<16, bin<<16|0xffff
	ge, gt, eq := make([]uint64, ChunkElems/64), make([]uint64, ChunkElems/64), make([]uint64, ChunkElems/64)
	for _, keys := range s.keys {
		words := (len(keys) + 63) / 64
		if lo == 0 {
			setBits(ge[:words], len(keys))
		} else {
			sceMaskBits(ge, eq, keys, lo-1)
		}
		sceMaskBits(gt, eq, keys, hi)
		for w := range words {
			for in := ge[w] &^ gt[w]; in != 0; in &= in - 1 {
				lows[uint16(keys[64*w+bits.TrailingZeros64(in)])]++
			}
		}
	}
	need, cum := rank-above, int64(0)
	for lo := len(lows) - 1; lo >= 0; lo-- {
		if v := lows[lo]; cum+v >= need {
			s.t, s.r, s.ties = bin<<16|uint32(lo), need-cum, need-cum < v
			break
		} else {
			cum += v
		}
	}
}

// sceRange counts the keys above hi and appends those in [lo, hi] to out, which
// must have room for len(keys)+16 more. With AVX-512, sixteen keys at a time.
func sceRange(keys []uint32, lo, hi uint32, out []uint32) (int, []uint32) {
	var j, above int
	if haveSCE512 {
		j, above, out = sceRangeAsm(keys, lo, hi, out)
	}
	a, out := sceRangeRef(keys[j:], lo, hi, out)
	return above + a, out
}

// sceRangeRef is sceRange key by key: the statement the assembly is tested against.
func sceRangeRef(keys []uint32, lo, hi uint32, out []uint32) (int, []uint32) {
	var above int
	for _, k := range keys {
		switch {
		case k > hi:
			above++
		case k >= lo:
			out = append(out, k)
		}
	}
	return above, out
}

// mask writes the mask of chunk c (n elements, their keys; nil when the cut keeps
// all or none) into dst (⌈n/64⌉ words), with eq as scratch of the same size: bit
// j%64 of dst[j/64] is set when position j ranks above the cut.
func (s *sceKeys) mask(dst, eq []uint64, keys []uint32, n int, c int64) {
	switch {
	case s.all:
		setBits(dst, n)
		return
	case s.none:
		clear(dst)
		return
	}
	sceMaskBits(dst, eq, keys, s.t)
	if !s.ties { // every key equal to t ranks above
		for w, e := range eq {
			dst[w] |= e
		}
		return
	}
	seen := s.before[c]
	for w, e := range eq {
		if k := int64(bits.OnesCount64(e)); seen+k <= s.r {
			dst[w] |= e
			seen += k
			continue
		}
		for ; e != 0; e &= e - 1 { // the equal keys in flat order: the first r rank above
			if seen < s.r {
				dst[w] |= e & -e
			}
			seen++
		}
	}
}

// sceMaskBits sets, for keys (at most 64 per word of above and equal), bit j%64 of
// above[j/64] when keys[j] > t and of equal[j/64] when keys[j] == t. With AVX2, 64
// keys at a time.
func sceMaskBits(above, equal []uint64, keys []uint32, t uint32) {
	var w int
	if haveTiesAsm {
		w = sceMaskAsm(above, equal, keys, t)
	}
	sceMaskRef(above[w:], equal[w:], keys[64*w:], t)
}

// sceMaskRef is sceMaskBits word by word: the statement the assembly is tested
// against.
func sceMaskRef(above, equal []uint64, keys []uint32, t uint32) {
	for w := 0; 64*w < len(keys); w++ {
		var a, e uint64
		for b, k := range keys[64*w : min(64*w+64, len(keys))] {
			a |= uint64(b2i(k > t)) << b
			e |= uint64(b2i(k == t)) << b
		}
		above[w], equal[w] = a, e
	}
}

// setBits sets the first n bits of dst and clears the rest.
func setBits(dst []uint64, n int) {
	for w := range dst {
		dst[w] = ^uint64(0)
		if rest := n - 64*w; rest < 64 {
			dst[w] = 1<<max(rest, 0) - 1
		}
	}
}

// sceSelection gives SCE's weights and merge passes each chunk's mask: from sceKeys,
// or from sceBig for a tensor whose keys do not fit (or the rank selector, where
// sceBig's sample fails it; the variances computed again), or none at all (nil: every position kept, select_topk ≥ 1). It
// carries the masks from the weights pass to the merge pass: all of them with
// sceKeys (1/32 of the keys' size), within limit bytes otherwise (the chunks beyond
// it are computed again).
type sceSelection struct {
	none  bool // select_topk ≤ 0: no position kept
	keys  *sceKeys
	big   *sceBig       // keys that do not fit: the cut from a sample all the same
	sel   *rankSelector // big's fallback
	limit int64

	mu   sync.Mutex
	used int64
	kept [][]uint64 // per chunk, from the weights pass to the merge pass
}

// newSCESelection chooses how a tensor of n elements is selected: keyLimit bounds the
// keys kept, maskLimit the masks kept without them.
func newSCESelection(n int64, topk float64, keyLimit, maskLimit int64) *sceSelection {
	switch {
	case topk >= 1:
		return nil
	case topk <= 0:
		return &sceSelection{none: true}
	}
	s := &sceSelection{limit: maskLimit, kept: make([][]uint64, (n+ChunkElems-1)/ChunkElems)}
	if 4*n <= keyLimit {
		s.keys = newSCEKeys(n, topk)
		return s
	}
	// The cut's rank depends on the count of non-zero variances, which the
	// selector's first pass counts (a pass of its own read every input once more).
	s.big = newSCEBig(n, topk)
	s.sel = newRankSelector(n, [][]int64{{1}}, sceVariance, nil)
	s.sel.rankOfNonZero = func(nz int64) int64 { return sceTopK(topk, nz) }
	return s
}

func (s *sceSelection) passes() []Pass {
	switch {
	case s == nil || s.none:
		return nil
	case s.keys != nil:
		return []Pass{s.keys.pass()}
	}
	return s.big.passes(s.sel)
}

// cut is the sceKeys whose cut gives the masks (nil: the rank selector's).
func (s *sceSelection) cut() *sceKeys {
	switch {
	case s.keys != nil:
		return s.keys
	case !s.big.fallback:
		return s.big.sceKeys
	}
	return nil
}

// sceScratch is one chunk's scratch for the selection and the loops.
type sceScratch struct {
	mask []uint64
	eq   []uint64
	keys []uint32
	keep []bool
	x    []float32 // per model
}

func newSCEScratch(lanes int) *sceScratch {
	return &sceScratch{mask: make([]uint64, ChunkElems/64), eq: make([]uint64, ChunkElems/64), keys: make([]uint32, ChunkElems),
		keep: make([]bool, ChunkElems), x: make([]float32, lanes)}
}

// weightsMask is chunk pos's mask for the weights pass, kept for the merge pass
// where there is room; nil: every position kept.
func (s *sceSelection) weightsMask(sc *sceScratch, in [][]float32, pos Chunk) []uint64 {
	if s == nil {
		return nil
	}
	return s.maskOf(sc, len(in[0]), pos, func(m []uint64) { s.fresh(m, sc, in, pos) })
}

// maskReady says whether chunk pos's mask for the weights pass comes without its
// inputs (from the kept keys, sceBig's bits, or no selection).
func (s *sceSelection) maskReady(pos Chunk) bool {
	switch {
	case s == nil || s.none:
		return true
	case s.keys != nil:
		return s.keys.all || s.keys.none || s.keys.keys[pos.Index] != nil
	}
	return s.big.ready(pos.Index)
}

// maskOf is weightsMask for a chunk of n elements, with fresh computing the mask
// from the inputs where it is not ready (maskReady); nil: every position kept.
func (s *sceSelection) maskOf(sc *sceScratch, n int, pos Chunk, fresh func([]uint64)) []uint64 {
	if s == nil {
		return nil
	}
	m := sc.mask[:(n+63)/64]
	switch {
	case s.none:
		clear(m)
		return m // the merge pass clears its own
	case s.keys != nil && (s.keys.all || s.keys.none || s.keys.keys[pos.Index] != nil):
		s.keys.mask(m, sc.eq[:len(m)], s.keys.keys[pos.Index], n, pos.Index)
		s.keys.dropKeys(pos.Index)
	case s.big != nil && s.big.ready(pos.Index):
		s.big.mask(m, pos.Index, n)
	default:
		fresh(m)
	}
	size := int64(8 * len(m))
	s.mu.Lock()
	room := s.keys != nil || s.used+size <= s.limit
	if room {
		s.used += size
	}
	s.mu.Unlock()
	if room {
		s.kept[pos.Index] = append([]uint64(nil), m...) // each chunk its own slot
	}
	return m
}

// mergeMask is chunk pos's mask for the merge pass: the weights pass's, or computed
// again; nil: every position kept.
func (s *sceSelection) mergeMask(sc *sceScratch, in [][]float32, pos Chunk) []uint64 {
	if s == nil {
		return nil
	}
	m := sc.mask[:(len(in[0])+63)/64]
	switch {
	case s.none:
		clear(m)
	case s.kept[pos.Index] != nil:
		m = s.kept[pos.Index]
		s.kept[pos.Index] = nil
	default:
		s.fresh(m, sc, in, pos)
	}
	return m
}

// fresh computes chunk pos's mask from its inputs.
func (s *sceSelection) fresh(dst []uint64, sc *sceScratch, in [][]float32, pos Chunk) {
	keys := sc.keys[:len(in[0])]
	sceVariance(keys, 0, in)
	if k := s.cut(); k != nil {
		k.mask(dst, sc.eq[:len(dst)], keys, len(keys), pos.Index)
		return
	}
	keep := sc.keep[:len(keys)]
	s.sel.cuts[0][0].above(keep, keys, pos)
	packBools(dst, keep)
}
