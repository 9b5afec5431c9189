package merge

import (
	"math"
	"slices"
	"sync"
)

// Magnitude ranks without sorting.
//
// TIES keeps the k largest |δ| of a tensor; breadcrumbs drops the largest and the
// smallest. Both need, for a rank c, the cut between the c elements that rank higher
// and the rest, where elements are ordered by |δ| descending and equal magnitudes by
// flat index ascending (docs/methods.md#magnitude-ranks: "the lower flat index counts as larger"). Sorting
// would need the whole tensor in memory; instead three streaming passes find each cut
// exactly, in O(numel):
//
//  1. a histogram of the top 16 bits of the float32 bit pattern of |δ| (the bits of a
//     non-negative float order like the values, NaN above +Inf), which locates the
//     bin holding rank c;
//  2. within that bin, a histogram of the low 16 bits, which gives the exact bit
//     pattern T at rank c and how many of the elements equal to T rank higher (r);
//  3. per chunk, how many elements equal T, so that each chunk knows how many of the
//     equal elements before it already ranked higher (prefix sums of integers, so
//     the result does not depend on scheduling).
//
// An element ranks above the cut if its bits exceed T, or equal T and fewer than r
// equal elements precede it in flat order.

// cut is a rank boundary in one tensor's magnitudes.
type cut struct {
	rank int64 // how many elements rank above the cut
	// all: every element ranks above (rank ≥ numel); none: none does (rank ≤ 0).
	all, none bool
	t         uint32 // the bit pattern at the boundary
	r         int64  // how many elements equal to t rank above
	// before[c]: elements equal to t in chunks before c (only when ties matter).
	before []int64
	ties   bool // some elements equal to t rank above and some below
}

// rankSelector finds cuts for several "lanes" (one per model), each with its own
// ranks, over a tensor of n elements. lanes[i] holds the ranks wanted for lane i.
type rankSelector struct {
	n       int64
	nChunks int64
	cuts    [][]*cut
	// magnitude returns the bit patterns of |δ| for lane i of a chunk into dst.
	magnitude func(dst []uint32, lane int, in [][]float32)
	// magnitudeWords, if set, is magnitude from the chunk's bytes (pass 1's
	// Pass.Fused, sparing the inputs' decoding), false for operands it does not take.
	magnitudeWords func(dst []uint32, lane int, in []Operand) bool
	// nearWords, if set, is pass 1's windowed work on a chunk's BF16 words (the
	// base's first) once the windows are set: for each of lane's windows wins[c]
	// (top bits), its magnitudes appended to found[c] and the count of those above
	// it added to above[c], as nearWindow gives them from magnitudeWords'
	// magnitudes, which it need not store.
	nearWords func(found [][]uint32, above []int64, lane int, words [][]uint16, wins [][2]uint32)

	mu     sync.Mutex
	hists  []*laneHists // pass 1's histograms, one set per chunk in flight
	free   []*laneHists // those not in use
	hiHist [][]uint64   // per lane, 1<<16 bins (top 16 bits)
	bin    [][]uint32   // per lane and cut, the top-16-bit bin holding the cut
	above  [][]int64    // per lane and cut, elements in bins above it
	// loHist: per lane and cut, the low-16-bit histogram of the cut's bin (lent by
	// loHists), and loSpan the lowest and highest low bits counted in it: narrowed
	// where pass 1's windows settle the cut, the whole range where pass 2 counts.
	loHist [][]*[1 << 16]uint64
	loSpan [][][2]int
	ties   [][][]int64 // per lane, cut, chunk: count of elements equal to t
	pool   *sync.Pool  // *rankScratch (newRankScratch), the run's where it shares one
	// kept[lane][cut][chunk]: the low bits of the chunk's elements in the cut's bin,
	// kept by pass 2 (or found in what pass 1 kept) while they total at most
	// keepLimit, so that pass 3 (another full read of every input) can be skipped.
	kept      [][][][]uint16
	lowRoom   [][]blockSlab[uint16] // per lane and cut, where nearHolds' kept lows live
	keptTotal int64
	keptOver  bool
	keepLimit int64 // maxKeptLows; tests lower it to exercise pass 3

	// Pass 1 also keeps, per chunk, the magnitudes in a window of bins around where
	// the first chunk it finishes puts each cut (its histogram scaled to the
	// tensor), while they total at most nearLimit. When every cut's bin turns out to
	// lie in its window, which it does unless the tensor's magnitudes vary a lot
	// from chunk to chunk, those are all the elements pass 2 would look for, and
	// pass 2 (a full read of every input) is skipped. The guess decides only
	// whether pass 2 runs, never a cut.
	win       [][][2]uint32 // per lane and cut, the window's lowest and highest bin
	near      [][][][]uint32
	nearRoom  blockSlab[uint32] // where near's slices live (s.mu held)
	nearTotal int64
	nearOver  bool
	nearLimit int64 // maxNear; tests set 0 to run pass 2
	settled   bool  // pass 1's windows held every cut: pass 2 is skipped

	// windowed: pass 1 counts no histogram. It counts, per cut, the elements above
	// the cut's window (winAbove) besides keeping those in it, which settles every
	// cut whose rank falls in its window. A histogram of 1<<16 bins per lane, a
	// scattered increment per element that misses L1, was a third of TIES' CPU on
	// BF16 models (bench/README.md); comparing against the window's top bin is a
	// vector compare. When a window misses (or pass 1 kept too many), the histogram
	// pass runs (histPass), then pass 2. Not for SCE, whose ranks are known only
	// once pass 1 has counted the zeros.
	windowed bool
	winAbove [][]int64
	histPass bool

	// rankOfNonZero, when set, gives each cut's rank from the count of the lane's
	// non-zero magnitudes, which pass 1 then counts (SCE's top-k of the non-zero
	// variances): the rank is settled when pass 1 ends, before any cut is located.
	rankOfNonZero func(nonZero int64) int64
	zeros         []int64 // per lane, pass 1's count of zero magnitudes
}

// laneHists is one chunk-in-flight's top-16-bit histograms, one per lane, counted
// over many chunks and added up when pass 1 ends (not after every chunk: a chunk
// touches thousands of bins).
type laneHists struct {
	h      []*[1 << 16]uint32
	chunks int64 // chunks counted since the last flush into hiHist
}

// maxHistChunks is how many chunks a laneHists counts before it is flushed, so that
// no uint32 bin can overflow.
const maxHistChunks = (1<<32 - 1) / ChunkElems

// maxNear bounds the magnitudes pass 1 keeps near the guessed cuts (4 bytes each).
const maxNear = 8 << 20

type rankScratch struct {
	mags [][]uint32 // one chunk's magnitudes, per lane
	lows []uint16   // the low bits of the elements in a cut's bin
	near []uint32   // the magnitudes in a cut's window
	// collectNearWords': the chunk's words, a lane's windows, their cuts, and per
	// window the magnitudes in it and the count above it
	words  [][]uint16
	wins   [][2]uint32
	cis    []int
	nears  [][]uint32
	aboves []int64
}

// nearBufs returns k empty buffers for windows' magnitudes and k zero counts, the
// buffers kept from chunk to chunk.
func (sc *rankScratch) nearBufs(k int) ([][]uint32, []int64) {
	for len(sc.nears) < k {
		sc.nears = append(sc.nears, nil)
		sc.aboves = append(sc.aboves, 0)
	}
	found, above := sc.nears[:k], sc.aboves[:k]
	for c := range found {
		found[c], above[c] = found[c][:0], 0
	}
	return found, above
}

// lanes returns k buffers of n magnitudes.
func (sc *rankScratch) lanes(k, n int) [][]uint32 {
	for len(sc.mags) < k {
		sc.mags = append(sc.mags, make([]uint32, ChunkElems))
	}
	m := sc.mags[:k]
	for i := range m {
		m[i] = m[i][:n]
	}
	return m
}

// maxKeptLows bounds the memory pass 2 may keep to spare pass 3 (2 bytes each).
const maxKeptLows = 16 << 20

// newRankScratch is a rank selector's scratch for a chunk in flight. Nothing in it
// depends on the tensor (its buffers grow to what a chunk needs), so that a run's
// selectors share one pool of them (methodRun.rankPool).
func newRankScratch() any { return &rankScratch{lows: make([]uint16, 0, ChunkElems)} }

// newRankSelector makes the selector of the elements ranked within ranks by
// magnitude, over a tensor of n elements. pool lends its chunks' scratch
// (newRankScratch): the run's, so that each tensor's first chunks do not allocate
// theirs again in fresh pages, or nil for a pool of its own.
func newRankSelector(n int64, ranks [][]int64, magnitude func(dst []uint32, lane int, in [][]float32), pool *sync.Pool) *rankSelector {
	if pool == nil {
		pool = &sync.Pool{New: newRankScratch}
	}
	s := &rankSelector{n: n, nChunks: (n + ChunkElems - 1) / ChunkElems, magnitude: magnitude,
		keepLimit: maxKeptLows, nearLimit: maxNear, pool: pool}
	s.nearRoom = blockSlab[uint32]{pool: &nearBlocks, size: nearBlockElems}
	for _, rs := range ranks {
		var cs []*cut
		for _, r := range rs {
			c := &cut{rank: r}
			c.all = r >= n
			c.none = r <= 0
			cs = append(cs, c)
		}
		s.cuts = append(s.cuts, cs)
	}
	return s
}

func (s *rankSelector) needed() bool {
	if s.rankOfNonZero != nil {
		return true // the ranks are not known yet
	}
	for _, cs := range s.cuts {
		for _, c := range cs {
			if !c.all && !c.none {
				return true
			}
		}
	}
	return false
}

// passes returns the engine passes that settle every cut (none when no cut needs
// them).
func (s *rankSelector) passes() []Pass {
	if !s.needed() {
		return nil
	}
	lanes := len(s.cuts)
	s.windowed = s.rankOfNonZero == nil && s.nearLimit > 0
	return []Pass{
		{ // 1: the elements near each cut's estimated bin, and those above it (or,
			// not windowed, the top-16-bit histogram besides)
			Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
				s.magnitudes(in, func(sc *rankScratch, mags [][]uint32) { s.count(sc, mags, pos) })
			},
			Fused: func(pos Chunk, in []Operand, _ []float64) bool {
				if s.magnitudeWords == nil {
					return false
				}
				sc := s.pool.Get().(*rankScratch)
				defer s.pool.Put(sc)
				n := int(min(ChunkElems, s.n-pos.Offset))
				if s.collectNearWords(sc, in, n, pos) {
					return true
				}
				mags := sc.lanes(lanes, n)
				for lane := range lanes {
					if !s.magnitudeWords(mags[lane], lane, in) {
						return false
					}
				}
				s.count(sc, mags, pos)
				return true
			},
			Done: func([]float64) error {
				if s.windowed {
					s.settleWindows()
				} else {
					s.locateBins()
				}
				return nil
			},
		},
		{ // 1b: top-16-bit histogram, when pass 1's windows missed a cut
			Skip: func() bool { return !s.histPass },
			Chunk: func(_ Chunk, in, _ [][]float32, _ []float64) {
				s.magnitudes(in, func(_ *rankScratch, mags [][]uint32) {
					h := s.getHist(lanes)
					histAdd(h.h, mags)
					h.chunks++
					s.putHist(h, nil)
				})
			},
			Done: func([]float64) error {
				s.locateBins()
				return nil
			},
		},
		{ // 2: low-16-bit histogram inside each cut's bin
			// Skipped when pass 1 kept every element of each cut's bin.
			Skip: func() bool { return s.settled },
			Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
				sc := s.pool.Get().(*rankScratch)
				defer s.pool.Put(sc)
				for lane, cs := range s.cuts {
					mags := sc.lanes(1, len(in[0]))[0]
					s.magnitude(mags, lane, in)
					for ci, c := range cs {
						if c.all || c.none {
							continue
						}
						bin := s.bin[lane][ci]
						found := binLows(sc.lows[:0], mags, bin, haveTiesAsm) // the few elements in the cut's bin
						sc.lows = found
						if len(found) == 0 {
							continue
						}
						s.mu.Lock()
						h := s.loHist[lane][ci]
						for _, lo := range found {
							h[lo]++
						}
						if !s.keptOver {
							s.keepLows(lane, ci, pos.Index, slices.Clone(found))
						}
						s.mu.Unlock()
					}
				}
			},
			Done: func([]float64) error {
				s.settle()
				return nil
			},
		},
		{ // 3: per-chunk counts of elements equal to each cut's pattern
			Skip: func() bool { return !s.keptOver },
			Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
				sc := s.pool.Get().(*rankScratch)
				defer s.pool.Put(sc)
				for lane, cs := range s.cuts {
					mags := sc.lanes(1, len(in[0]))[0]
					computed := false
					for ci, c := range cs {
						if !c.ties {
							continue
						}
						if !computed {
							s.magnitude(mags, lane, in)
							computed = true
						}
						var k int64
						for _, m := range mags {
							if m == c.t {
								k++
							}
						}
						s.ties[lane][ci][pos.Index] = k // each chunk writes its own slot
					}
				}
			},
			Done: func([]float64) error {
				s.prefixTies()
				return nil
			},
		},
	}
}

// binLows appends to dst the low 16 bits of the magnitudes whose top 16 bits are
// bin, in order; with asm, binPackAsm packs the first multiple of 16 where the CPU
// has AVX-512 (a window's kept magnitudes are mostly in the bin, so scanning for
// groups without one skips little), and binScanAsm skips the groups of eight with
// none in the rest.
func binLows(dst []uint16, mags []uint32, bin uint32, asm bool) []uint16 {
	j := 0
	if asm && len(mags) >= 16 {
		dst = slices.Grow(dst, len(mags)+16)
		var k int
		j, k = binPackAsm(dst[len(dst):len(dst)+len(mags)+16], mags, bin)
		dst = dst[:len(dst)+k]
	}
	for j < len(mags) {
		if asm && len(mags)-j >= 8 {
			j += binScanAsm(mags[j:], (len(mags)-j)&^7, bin)
		}
		for end := min(j+8, len(mags)); j < end; j++ {
			if mags[j]>>16 == bin {
				dst = append(dst, uint16(mags[j]))
			}
		}
	}
	return dst
}

// magnitudes runs f on a chunk's magnitudes, one slice per lane, in a scratch it
// lends for the call.
func (s *rankSelector) magnitudes(in [][]float32, f func(sc *rankScratch, mags [][]uint32)) {
	sc := s.pool.Get().(*rankScratch)
	defer s.pool.Put(sc)
	mags := sc.lanes(len(s.cuts), len(in[0]))
	for lane := range mags {
		s.magnitude(mags[lane], lane, in)
	}
	f(sc, mags)
}

// histAdd counts each lane's magnitudes into its histogram by their top 16 bits,
// three lanes to a loop: their increments are independent, so they overlap.
func histAdd(h []*[1 << 16]uint32, mags [][]uint32) {
	i := 0
	for ; i+3 <= len(mags); i += 3 {
		h0, h1, h2 := h[i], h[i+1], h[i+2]
		m0 := mags[i]
		m1, m2 := mags[i+1][:len(m0)], mags[i+2][:len(m0)]
		for j, a := range m0 {
			h0[uint16(a>>16)]++
			h1[uint16(m1[j]>>16)]++
			h2[uint16(m2[j]>>16)]++
		}
	}
	for ; i < len(mags); i++ {
		h0 := h[i]
		for _, a := range mags[i] {
			h0[uint16(a>>16)]++
		}
	}
}

// count is pass 1's work on a chunk's magnitudes (one slice per lane): the top-16-bit
// histograms, the zeros where the ranks depend on them, and the elements near each
// cut's estimated bin.
func (s *rankSelector) count(sc *rankScratch, mags [][]uint32, pos Chunk) {
	if s.windowed {
		s.collectNear(sc, nil, mags, pos)
		return
	}
	lanes := len(mags)
	h := s.getHist(lanes)
	histAdd(h.h, mags)
	h.chunks++
	var zeros []int64
	if s.rankOfNonZero != nil {
		zeros = make([]int64, lanes)
		for lane, ms := range mags {
			for _, m := range ms {
				zeros[lane] += int64(b2i(m == 0))
			}
		}
	}
	s.collectNear(sc, h, mags, pos)
	s.putHist(h, zeros)
}

// getHist takes a set of histograms for one chunk of pass 1.
func (s *rankSelector) getHist(lanes int) *laneHists {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := len(s.free); k > 0 {
		h := s.free[k-1]
		s.free = s.free[:k-1]
		return h
	}
	h := &laneHists{h: make([]*[1 << 16]uint32, lanes)}
	for i := range h.h {
		h.h[i] = new([1 << 16]uint32)
	}
	s.hists = append(s.hists, h)
	return h
}

// putHist gives back a set of histograms after a chunk, with the chunk's counts of
// zero magnitudes (nil when not counted).
func (s *rankSelector) putHist(h *laneHists, zeros []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if zeros != nil {
		if s.zeros == nil {
			s.zeros = make([]int64, len(zeros))
		}
		for lane, z := range zeros {
			s.zeros[lane] += z
		}
	}
	if h.chunks >= maxHistChunks {
		s.flushHist(h)
	}
	s.free = append(s.free, h)
}

// flushHist adds h into hiHist and zeroes it (s.mu held, or pass 1 done).
func (s *rankSelector) flushHist(h *laneHists) {
	if s.hiHist == nil {
		s.hiHist = make([][]uint64, len(s.cuts))
		for lane := range s.hiHist {
			s.hiHist[lane] = make([]uint64, 1<<16)
		}
	}
	for lane, hl := range h.h {
		g := s.hiHist[lane]
		for b, v := range hl {
			g[b] += uint64(v)
		}
		clear(hl[:])
	}
	h.chunks = 0
}

// windowHists lends a windowed pass 1 the histograms of the chunk it guesses its
// windows from, once a tensor, instead of 256 KiB a lane allocated afresh for each:
// fresh memory is what this project's VMs charge most for (merge/hold.go).
var windowHists = sync.Pool{New: func() any { return new([1 << 16]uint32) }}

// loHists lends each cut its low-16-bit histogram (512 KiB), for the same reason:
// made afresh, they were 2 to 4 % of TIES' and breadcrumbs' CPU, in the serial step
// between pass 1 and the merge (bench/README.md). They come back zeroed.
var loHists = sync.Pool{New: func() any { return new([1 << 16]uint64) }}

// nearBlockElems is the magnitudes a block of nearBlocks holds: a chunk's.
const nearBlockElems = ChunkElems

// nearBlocks lends pass 1 the blocks its kept magnitudes are copied into, across
// tensors: a slice made for each chunk's magnitudes in each cut's window was zeroed
// by the allocator first, 3 % of breadcrumbs' CPU (2026-12-05, bench/README.md).
var nearBlocks = sync.Pool{New: func() any { b := make([]uint32, 0, nearBlockElems); return &b }}

// lowBlocks lends the blocks nearHolds packs the lows of pass 1's kept magnitudes
// into, across tensors: a chunk's lows at most, and binLows' 16 of slack. One array
// per cut, grown by append, was made afresh for every tensor (a copy and fresh
// pages at each doubling).
var lowBlocks = sync.Pool{New: func() any { b := make([]uint16, 0, ChunkElems+16); return &b }}

// blockSlab hands out room for many short-lived slices, one after another, in
// blocks of size elements lent by pool (*[]T each): they share a few reused blocks
// instead of each being allocated, and zeroed in fresh pages, on its own. The
// slices stay valid until release.
type blockSlab[T scratchWord] struct {
	pool   *sync.Pool
	size   int
	cur    []T
	blocks []*[]T
}

// room returns an empty slice with room for at least n elements after what the
// slab holds (n over a block: a slice of its own); hold keeps what is written there.
func (a *blockSlab[T]) room(n int) []T {
	if n > a.size {
		return make([]T, 0, n)
	}
	if cap(a.cur)-len(a.cur) < n {
		b := a.pool.Get().(*[]T)
		a.blocks, a.cur = append(a.blocks, b), (*b)[:0]
	}
	return a.cur[len(a.cur):]
}

// hold keeps v, a slice room returned (appended to within its room), and returns
// it clipped, so that it cannot grow into what is held after it.
func (a *blockSlab[T]) hold(v []T) []T {
	v = slices.Clip(v)
	if n := len(a.cur); len(v) > 0 && cap(a.cur)-n >= len(v) && &a.cur[:n+1][n] == &v[0] {
		a.cur = a.cur[:n+len(v)]
	}
	return v
}

// clone returns a copy of src in the slab.
func (a *blockSlab[T]) clone(src []T) []T {
	return a.hold(append(a.room(len(src)), src...))
}

// release gives the blocks back, once nothing holds a slice of them (poisoned
// first under the gomerge_poison tag).
func (a *blockSlab[T]) release() {
	for _, b := range a.blocks {
		if poisonReleased {
			poison((*b)[:cap(*b)])
		}
		a.pool.Put(b)
	}
	a.cur, a.blocks = nil, nil
}

// dropNear lets pass 1's kept magnitudes go (s.mu held, or the pass done).
func (s *rankSelector) dropNear() {
	s.near = nil
	s.nearRoom.release()
}

// nearSlack sets the window around a guessed cut: 1/nearSlack of the elements the
// guess was made from on either side of it.
const nearSlack = 128

// collectNear keeps, for each cut, the chunk's magnitudes in the cut's window and
// counts those above it, setting the windows first if this is the first chunk to
// get here: from h, which then holds what its worker has counted so far, this chunk
// included, or, windowed (h nil), from this chunk's histogram.
func (s *rankSelector) collectNear(sc *rankScratch, h *laneHists, mags [][]uint32, pos Chunk) {
	if s.rankOfNonZero != nil || s.nearLimit <= 0 {
		return // the ranks are not known before pass 1 ends
	}
	s.mu.Lock()
	if s.win == nil && !s.nearOver {
		if h == nil {
			h = &laneHists{h: make([]*[1 << 16]uint32, len(mags))}
			for i := range h.h {
				h.h[i] = windowHists.Get().(*[1 << 16]uint32)
			}
			histAdd(h.h, mags)
			s.setWindows(h)
			for _, b := range h.h {
				clear(b[:])
				windowHists.Put(b)
			}
		} else {
			s.setWindows(h)
		}
	}
	win, over := s.win, s.nearOver
	s.mu.Unlock()
	if over {
		return
	}
	for lane, cs := range s.cuts {
		for ci, c := range cs {
			if c.all || c.none {
				continue
			}
			w := win[lane][ci]
			found, above := nearWindow(sc.near[:0], mags[lane], w[0], w[1], haveTiesAsm)
			sc.near = found
			s.addNear(lane, ci, found, above, pos)
		}
	}
}

// collectNearWords is collectNear from the chunk's BF16 words through nearWords,
// once the windows are set; false, having done nothing, where it does not apply
// (no nearWords, not windowed, no windows yet, operands that are not n BF16 words
// each), for the caller to make the magnitudes and call count.
func (s *rankSelector) collectNearWords(sc *rankScratch, in []Operand, n int, pos Chunk) bool {
	if s.nearWords == nil || !s.windowed {
		return false
	}
	s.mu.Lock()
	win, over := s.win, s.nearOver
	s.mu.Unlock()
	if win == nil {
		return false // the first chunk sets them from its histogram
	}
	if over {
		return true // pass 1 has nothing left to keep or count
	}
	words, ok := bf16Words(sc.words, in, n)
	if !ok {
		return false
	}
	sc.words = words
	for lane, cs := range s.cuts {
		wins, cis := sc.wins[:0], sc.cis[:0]
		for ci, c := range cs {
			if !c.all && !c.none {
				wins, cis = append(wins, win[lane][ci]), append(cis, ci)
			}
		}
		sc.wins, sc.cis = wins, cis
		if len(wins) == 0 {
			continue
		}
		found, above := sc.nearBufs(len(wins))
		s.nearWords(found, above, lane, words, wins)
		for g, ci := range cis {
			s.addNear(lane, ci, found[g], above[g], pos)
		}
	}
	return true
}

// addNear records a chunk's magnitudes in the window of lane's cut ci (found) and
// the count above it.
func (s *rankSelector) addNear(lane, ci int, found []uint32, above int64, pos Chunk) {
	if len(found) == 0 && above == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.winAbove[lane][ci] += above
	if len(found) == 0 || s.nearOver {
		return
	}
	s.nearTotal += int64(len(found))
	if s.nearTotal > s.nearLimit {
		s.nearOver = true
		s.dropNear()
		return
	}
	if s.near == nil {
		s.near = make([][][][]uint32, len(s.cuts))
		for l, cs := range s.cuts {
			s.near[l] = make([][][]uint32, len(cs))
			for i := range cs {
				s.near[l][i] = make([][]uint32, s.nChunks)
			}
		}
	}
	s.near[lane][ci][pos.Index] = s.nearRoom.clone(found)
}

// setWindows guesses from h where each cut falls (its rank scaled to the elements h
// counted) and sets each cut's window of bins around the guess (s.mu held).
func (s *rankSelector) setWindows(h *laneHists) {
	s.win = make([][][2]uint32, len(s.cuts))
	s.winAbove = make([][]int64, len(s.cuts))
	for lane, cs := range s.cuts {
		s.win[lane] = make([][2]uint32, len(cs))
		s.winAbove[lane] = make([]int64, len(cs))
		hl := h.h[lane]
		var m int64
		for _, v := range hl {
			m += int64(v)
		}
		for ci, c := range cs {
			if c.all || c.none {
				continue
			}
			r := float64(c.rank) * float64(m) / float64(s.n)
			slack := float64(float64(m)/nearSlack) + 16 // rounded as amd64 does: the same windows everywhere
			w := [2]uint32{0, 1<<16 - 1}
			var cum int64
			top := true
			for b := 1<<16 - 1; b >= 0; b-- {
				cum += int64(hl[b])
				if top && float64(cum) >= r-slack {
					w[1], top = uint32(b), false
				}
				if float64(cum) >= r+slack {
					w[0] = uint32(b)
					break
				}
			}
			s.win[lane][ci] = w
		}
	}
}

// nearWindow appends to dst the magnitudes whose top 16 bits lie in [lo, hi], in
// order, and counts those above hi; with asm, the AVX-512 or AVX2 kernel does the
// first multiple of 16 or 8 (checked against the Go loop bit for bit).
func nearWindow(dst, mags []uint32, lo, hi uint32, asm bool) ([]uint32, int64) {
	j := 0
	var above int64
	if asm && len(mags) >= 8 {
		dst = slices.Grow(dst, len(mags)+16)
		var k, a int
		j, k, a = nearPackAsm(dst[len(dst):len(dst)+len(mags)+16], mags, lo, hi)
		dst, above = dst[:len(dst)+k], int64(a)
	}
	span := hi - lo
	for _, m := range mags[j:] {
		if m>>16-lo <= span {
			dst = append(dst, m)
		}
		above += int64(b2i(m>>16 > hi))
	}
	return dst, above
}

// settleWindows ends a windowed pass 1: when every cut's rank falls in its window
// (the elements above it fewer than the rank, with those in it at least as many),
// it finds the cut's bin among the elements kept and settles the cut from them, so
// that passes 1b and 2 are skipped; otherwise it asks for the histogram pass.
func (s *rankSelector) settleWindows() {
	held := s.win != nil && !s.nearOver
	for lane, cs := range s.cuts {
		for ci, c := range cs {
			if !held || c.all || c.none {
				continue
			}
			var in int64
			if s.near != nil {
				for _, ms := range s.near[lane][ci] {
					in += int64(len(ms))
				}
			}
			a := s.winAbove[lane][ci]
			held = a < c.rank && c.rank <= a+in
		}
	}
	if !held {
		s.histPass = true
		s.win, s.winAbove = nil, nil
		s.dropNear()
		return
	}
	s.newBins()
	s.eachCut(func(lane, ci int) {
		// The window's histogram, from the elements kept in it, walked down from
		// its top bin as locateBins walks the whole one; lent by windowHists and
		// given back zeroed over the window (the only bins counted).
		c, w := s.cuts[lane][ci], s.win[lane][ci]
		bins := windowHists.Get().(*[1 << 16]uint32)
		defer func() {
			clear(bins[w[0] : w[1]+1])
			windowHists.Put(bins)
		}()
		for _, ms := range s.near[lane][ci] {
			for _, m := range ms {
				bins[m>>16]++
			}
		}
		cum := s.winAbove[lane][ci]
		for b := int(w[1]); b >= int(w[0]); b-- {
			if v := int64(bins[b]); cum+v >= c.rank {
				s.bin[lane][ci], s.above[lane][ci] = uint32(b), cum
				break
			}
			cum += int64(bins[b])
		}
		s.lendLoHist(lane, ci)
	})
	s.nearHolds()
	s.settled = true
	s.settle()
	s.win, s.winAbove = nil, nil
	s.dropNear()
}

// newBins makes room for each cut's bin, the count above it and its low-16-bit
// histogram (allocated per cut by whoever locates the bin).
func (s *rankSelector) newBins() {
	s.bin = make([][]uint32, len(s.cuts))
	s.above = make([][]int64, len(s.cuts))
	s.loHist = make([][]*[1 << 16]uint64, len(s.cuts))
	s.loSpan = make([][][2]int, len(s.cuts))
	for lane, cs := range s.cuts {
		s.bin[lane] = make([]uint32, len(cs))
		s.above[lane] = make([]int64, len(cs))
		s.loHist[lane] = make([]*[1 << 16]uint64, len(cs))
		s.loSpan[lane] = make([][2]int, len(cs))
	}
}

// lendLoHist gives cut ci of lane its low-16-bit histogram, zero, spanning every
// low until something narrows it.
func (s *rankSelector) lendLoHist(lane, ci int) {
	s.loHist[lane][ci] = loHists.Get().(*[1 << 16]uint64)
	s.loSpan[lane][ci] = [2]int{0, 1<<16 - 1}
}

// returnLoHists gives the histograms back, zeroed over the span each counted in.
func (s *rankSelector) returnLoHists() {
	for lane, hs := range s.loHist {
		for ci, h := range hs {
			if h != nil {
				sp := s.loSpan[lane][ci]
				clear(h[sp[0] : sp[1]+1])
				loHists.Put(h)
			}
		}
	}
	s.loHist, s.loSpan = nil, nil
}

// locateBins ends pass 1: it adds up the histograms, settles SCE's ranks, finds the
// bin holding each cut and, when pass 1's windows hold them all, settles the cuts
// from what it kept, so that pass 2 is skipped.
func (s *rankSelector) locateBins() {
	for _, h := range s.hists {
		s.flushHist(h)
	}
	s.hists, s.free = nil, nil
	if s.hiHist == nil {
		s.flushHist(&laneHists{})
	}
	if s.rankOfNonZero != nil {
		for lane, cs := range s.cuts {
			nz := s.n
			if s.zeros != nil {
				nz -= s.zeros[lane]
			}
			for _, c := range cs {
				c.rank = s.rankOfNonZero(nz)
				c.all, c.none = c.rank >= s.n, c.rank <= 0
			}
		}
	}
	s.newBins()
	for lane, cs := range s.cuts {
		for ci, c := range cs {
			if c.all || c.none {
				continue
			}
			// Walk from the largest magnitudes down to the bin where the count
			// reaches the rank.
			var cum int64
			for b := 1<<16 - 1; b >= 0; b-- {
				v := int64(s.hiHist[lane][b])
				if cum+v >= c.rank {
					s.bin[lane][ci], s.above[lane][ci] = uint32(b), cum
					break
				}
				cum += v
			}
			s.lendLoHist(lane, ci)
		}
	}
	s.hiHist = nil
	if s.nearHolds() {
		s.settled = true
		s.settle()
	}
	s.win = nil
	s.dropNear()
}

// nearHolds reports whether every cut's bin lies in its window and, if so, fills the
// low-16-bit histograms (and kept) from pass 1's elements in the bins, as pass 2
// would.
func (s *rankSelector) nearHolds() bool {
	if s.win == nil || s.nearOver {
		return false
	}
	for lane, cs := range s.cuts {
		for ci, c := range cs {
			if c.all || c.none {
				continue
			}
			if b, w := s.bin[lane][ci], s.win[lane][ci]; b < w[0] || b > w[1] {
				return false
			}
		}
	}
	if s.near == nil {
		return true
	}
	found := make([][][][]uint16, len(s.cuts)) // per lane, cut and chunk
	for lane, cs := range s.cuts {
		found[lane] = make([][][]uint16, len(cs))
	}
	s.lowRoom = make([][]blockSlab[uint16], len(s.cuts))
	for lane, cs := range s.cuts {
		s.lowRoom[lane] = make([]blockSlab[uint16], len(cs))
		for ci := range cs {
			s.lowRoom[lane][ci] = blockSlab[uint16]{pool: &lowBlocks, size: ChunkElems + 16}
		}
	}
	s.eachCut(func(lane, ci int) {
		bin, h, room := s.bin[lane][ci], s.loHist[lane][ci], &s.lowRoom[lane][ci]
		// Each chunk's lows in the cut's room (keepLows keeps them; nothing writes
		// them after).
		perChunk := make([][]uint16, s.nChunks)
		sp := [2]int{1<<16 - 1, 0} // none counted yet
		for chunk, ms := range s.near[lane][ci] {
			lows := room.hold(binLows(room.room(len(ms)+16), ms, bin, haveTiesAsm))
			for _, lo := range lows {
				h[lo]++
				sp = [2]int{min(sp[0], int(lo)), max(sp[1], int(lo))}
			}
			if len(lows) > 0 {
				perChunk[chunk] = lows
			}
		}
		s.loSpan[lane][ci] = sp
		found[lane][ci] = perChunk
	})
	// Kept in a fixed order, so that which are kept before the limit does not
	// depend on the goroutines.
	for lane, cs := range found {
		for ci, perChunk := range cs {
			for chunk, lows := range perChunk {
				if len(lows) > 0 {
					s.keepLows(lane, ci, int64(chunk), lows)
				}
			}
		}
	}
	return true
}

// eachCut runs f for every cut that is not all or none, the cuts in parallel: the
// scans of what pass 1 kept run between two passes, when no chunk does, and would
// otherwise leave all cores but one idle.
func (s *rankSelector) eachCut(f func(lane, ci int)) {
	var wg sync.WaitGroup
	for lane, cs := range s.cuts {
		for ci, c := range cs {
			if c.all || c.none {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				f(lane, ci)
			}()
		}
	}
	wg.Wait()
}

// keepLows keeps the low bits of a chunk's elements in a cut's bin for settle,
// while they total at most keepLimit (s.mu held, or the pass done).
func (s *rankSelector) keepLows(lane, ci int, chunk int64, lows []uint16) {
	if s.keptOver {
		return
	}
	s.keptTotal += int64(len(lows))
	if s.keptTotal > s.keepLimit {
		s.keptOver, s.kept = true, nil
		return
	}
	if s.kept == nil {
		s.initKept()
	}
	s.kept[lane][ci][chunk] = lows
}

// settle finds each cut's exact pattern from the low-16-bit histograms and, when the
// low bits were kept, each chunk's count of elements equal to it (pass 3 is then
// skipped).
func (s *rankSelector) settle() {
	s.ties = make([][][]int64, len(s.cuts))
	for lane, cs := range s.cuts {
		s.ties[lane] = make([][]int64, len(cs))
		for ci, c := range cs {
			if c.all || c.none {
				continue
			}
			need := c.rank - s.above[lane][ci]
			var cum int64
			// Walked down over the span counted: the bins outside it are 0.
			h, sp := s.loHist[lane][ci], s.loSpan[lane][ci]
			for lo := sp[1]; lo >= sp[0]; lo-- {
				v := int64(h[lo])
				if cum+v >= need {
					c.t = s.bin[lane][ci]<<16 | uint32(lo)
					c.r = need - cum
					c.ties = c.r < v
					break
				}
				cum += v
			}
			if c.ties {
				s.ties[lane][ci] = make([]int64, s.nChunks)
				if !s.keptOver && s.kept != nil {
					// Count the elements equal to t per chunk from what was kept:
					// pass 3 is then not needed.
					lo := uint16(c.t)
					for chunk, lows := range s.kept[lane][ci] {
						var k int64
						for _, v := range lows {
							if v == lo {
								k++
							}
						}
						s.ties[lane][ci][chunk] = k
					}
				}
			}
		}
	}
	spared := !s.keptOver
	s.returnLoHists()
	s.kept = nil
	for _, rooms := range s.lowRoom {
		for ci := range rooms {
			rooms[ci].release()
		}
	}
	s.lowRoom = nil
	if spared {
		s.prefixTies()
	}
}

// prefixTies turns per-chunk counts of elements equal to each cut's pattern into how
// many precede each chunk.
func (s *rankSelector) prefixTies() {
	for lane, cs := range s.cuts {
		for ci, c := range cs {
			if !c.ties {
				continue
			}
			c.before = make([]int64, s.nChunks)
			var cum int64
			for i, k := range s.ties[lane][ci] {
				c.before[i] = cum
				cum += k
			}
		}
	}
	s.ties = nil
}

func (s *rankSelector) initKept() {
	s.kept = make([][][][]uint16, len(s.cuts))
	for lane, cs := range s.cuts {
		s.kept[lane] = make([][][]uint16, len(cs))
		for ci := range cs {
			s.kept[lane][ci] = make([][]uint16, s.nChunks)
		}
	}
}

// above reports, for each element of a chunk of lane's magnitudes, whether it ranks
// above cut c, writing into keep (one bool per element).
func (c *cut) above(keep []bool, mags []uint32, pos Chunk) {
	switch {
	case c.all:
		for i := range keep {
			keep[i] = true
		}
		return
	case c.none:
		clear(keep)
		return
	}
	var seen int64
	if c.ties {
		seen = c.before[pos.Index]
	}
	for i, m := range mags {
		switch {
		case m > c.t:
			keep[i] = true
		case m == c.t:
			keep[i] = seen < c.r
			seen++
		default:
			keep[i] = false
		}
	}
}

// absBits is the bit pattern of |x|, which orders like |x| (NaN above +Inf).
func absBits(x float32) uint32 { return math.Float32bits(x) &^ (1 << 31) }
