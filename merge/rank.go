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

	mu     sync.Mutex
	hiHist [][]uint64 // per lane, 1<<16 bins (top 16 bits)
	bin    [][]uint32 // per lane and cut, the top-16-bit bin holding the cut
	above  [][]int64  // per lane and cut, elements in bins above it
	loHist [][][]uint64
	ties   [][][]int64 // per lane, cut, chunk: count of elements equal to t
	pool   sync.Pool   // *rankScratch
	// kept[lane][cut][chunk]: the low bits of the chunk's elements in the cut's bin,
	// kept by pass 2 while they total at most maxKeptLows, so that pass 3 (another
	// full read of every input) can be skipped.
	kept      [][][][]uint16
	keptTotal int64
	keptOver  bool
	keepLimit int64 // maxKeptLows; tests lower it to exercise pass 3

	// rankOfNonZero, when set, gives each cut's rank from the count of the lane's
	// non-zero magnitudes, which pass 1 then counts (SCE's top-k of the non-zero
	// variances): the rank is settled when pass 1 ends, before any cut is located.
	rankOfNonZero func(nonZero int64) int64
	zeros         []int64 // per lane, pass 1's count of zero magnitudes
}

type rankScratch struct {
	mags []uint32 // one chunk's magnitudes
	hist []uint32 // a chunk-local histogram, all zero between uses
	lows []uint16 // the low bits of the elements in a cut's bin
}

// maxKeptLows bounds the memory pass 2 may keep to spare pass 3 (2 bytes each).
const maxKeptLows = 16 << 20

func newRankSelector(n int64, ranks [][]int64, magnitude func(dst []uint32, lane int, in [][]float32)) *rankSelector {
	s := &rankSelector{n: n, nChunks: (n + ChunkElems - 1) / ChunkElems, magnitude: magnitude, keepLimit: maxKeptLows}
	s.pool.New = func() any {
		return &rankScratch{mags: make([]uint32, ChunkElems), hist: make([]uint32, 1<<16), lows: make([]uint16, 0, ChunkElems)}
	}
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
	return []Pass{
		{ // 1: top-16-bit histogram
			Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
				sc := s.pool.Get().(*rankScratch)
				defer s.pool.Put(sc)
				local := sc.hist[:1<<15] // |δ| has no sign bit: its top 16 bits are below 1<<15
				for lane := range lanes {
					mags := sc.mags[:len(in[0])]
					s.magnitude(mags, lane, in)
					lo, hi := uint32(1<<15), uint32(0)
					var zeros int64
					if s.rankOfNonZero != nil {
						for _, m := range mags {
							b := m >> 16
							local[b]++
							lo, hi = min(lo, b), max(hi, b)
							zeros += int64(b2i(m == 0))
						}
					} else {
						for _, m := range mags {
							b := m >> 16
							local[b]++
							lo, hi = min(lo, b), max(hi, b)
						}
					}
					if lo > hi {
						continue
					}
					s.mu.Lock()
					if zeros != 0 {
						if s.zeros == nil {
							s.zeros = make([]int64, lanes)
						}
						s.zeros[lane] += zeros
					}
					if s.hiHist == nil {
						s.hiHist = make([][]uint64, lanes)
					}
					if s.hiHist[lane] == nil {
						s.hiHist[lane] = make([]uint64, 1<<16)
					}
					h := s.hiHist[lane]
					for b := lo; b <= hi; b++ { // only the bins this chunk touched
						h[b] += uint64(local[b])
						local[b] = 0
					}
					s.mu.Unlock()
				}
			},
			Done: func([]float64) error {
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
				s.bin = make([][]uint32, lanes)
				s.above = make([][]int64, lanes)
				s.loHist = make([][][]uint64, lanes)
				for lane, cs := range s.cuts {
					s.bin[lane] = make([]uint32, len(cs))
					s.above[lane] = make([]int64, len(cs))
					s.loHist[lane] = make([][]uint64, len(cs))
					for ci, c := range cs {
						if c.all || c.none {
							continue
						}
						// Walk from the largest magnitudes down to the bin where the
						// count reaches the rank.
						var cum int64
						for b := 1<<16 - 1; b >= 0; b-- {
							v := int64(s.hiHist[lane][b])
							if cum+v >= c.rank {
								s.bin[lane][ci], s.above[lane][ci] = uint32(b), cum
								break
							}
							cum += v
						}
						s.loHist[lane][ci] = make([]uint64, 1<<16)
					}
				}
				s.hiHist = nil
				return nil
			},
		},
		{ // 2: low-16-bit histogram inside each cut's bin
			Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
				sc := s.pool.Get().(*rankScratch)
				defer s.pool.Put(sc)
				for lane, cs := range s.cuts {
					mags := sc.mags[:len(in[0])]
					s.magnitude(mags, lane, in)
					for ci, c := range cs {
						if c.all || c.none {
							continue
						}
						bin := s.bin[lane][ci]
						found := sc.lows[:0] // the few elements in the cut's bin
						for j := 0; j < len(mags); {
							if haveTiesAsm && len(mags)-j >= 8 {
								// Skip, vectorised, the groups of eight with none.
								j += binScanAsm(mags[j:], (len(mags)-j)&^7, bin)
							}
							for end := min(j+8, len(mags)); j < end; j++ {
								if mags[j]>>16 == bin {
									found = append(found, uint16(mags[j]))
								}
							}
						}
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
							s.keptTotal += int64(len(found))
							if s.keptTotal > s.keepLimit {
								s.keptOver, s.kept = true, nil
							} else {
								if s.kept == nil {
									s.initKept()
								}
								s.kept[lane][ci][pos.Index] = slices.Clone(found)
							}
						}
						s.mu.Unlock()
					}
				}
			},
			Done: func([]float64) error {
				s.ties = make([][][]int64, lanes)
				for lane, cs := range s.cuts {
					s.ties[lane] = make([][]int64, len(cs))
					for ci, c := range cs {
						if c.all || c.none {
							continue
						}
						need := c.rank - s.above[lane][ci]
						var cum int64
						for lo := 1<<16 - 1; lo >= 0; lo-- {
							v := int64(s.loHist[lane][ci][lo])
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
								// Count the elements equal to t per chunk from what
								// pass 2 kept: pass 3 is then not needed.
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
				s.loHist, s.kept = nil, nil
				if spared {
					s.prefixTies()
				}
				return nil
			},
		},
		{ // 3: per-chunk counts of elements equal to each cut's pattern
			Skip: func() bool { return !s.keptOver },
			Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
				sc := s.pool.Get().(*rankScratch)
				defer s.pool.Put(sc)
				for lane, cs := range s.cuts {
					mags := sc.mags[:len(in[0])]
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
