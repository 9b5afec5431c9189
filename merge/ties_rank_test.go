package merge

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRankSelectorNearWindows: the cuts come out the same whether pass 1's windows
// hold every cut (pass 2 skipped), miss one (the first chunk done is unlike the
// rest: pass 2 runs), or are off (nearLimit 0), with one and two cuts per lane,
// and pass 1 settles the cuts exactly when the windows hold.
func TestRankSelectorNearWindows(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 17))
	const n = 2*ChunkElems + 123
	even := make([]float32, n)   // the same spread in every chunk
	skewed := make([]float32, n) // the last chunk, done first below, far smaller
	for j := range even {
		even[j] = float32(rng.NormFloat64())
		skewed[j] = even[j]
		if j >= 2*ChunkElems {
			skewed[j] *= 1e-3
		}
	}
	mag := func(dst []uint32, lane int, in [][]float32) {
		for j := range dst {
			dst[j] = absBits(in[0][j] * float32(lane+1))
		}
	}
	for _, tc := range []struct {
		name   string
		vals   []float32
		limit  int64
		settle bool
	}{
		{"even", even, maxNear, true},
		{"skewed", skewed, maxNear, false},
		{"off", even, 0, false},
	} {
		ranks := [][]int64{{n / 5}, {n / 100, n / 2}, {n - 1}}
		sel := newRankSelector(n, ranks, mag)
		sel.nearLimit = tc.limit
		passes := sel.passes()
		nChunks := int64((n + ChunkElems - 1) / ChunkElems)
		chunk := func(c int64) (Chunk, [][]float32) {
			lo := c * ChunkElems
			return Chunk{Index: c, Offset: lo}, [][]float32{tc.vals[lo:min(lo+ChunkElems, n)]}
		}
		ran := 0
		for _, p := range passes {
			if p.Skip != nil && p.Skip() {
				continue
			}
			ran++
			for c := nChunks - 1; c >= 0; c-- { // the last chunk first
				pos, in := chunk(c)
				p.Chunk(pos, in, nil, nil)
			}
			must(t, p.Done(nil))
		}
		if want := 2 - b2i(tc.settle); ran != want {
			t.Fatalf("%s: %d passes ran, want %d", tc.name, ran, want)
		}
		for lane, rs := range ranks {
			m := make([]float32, n)
			for j := range m {
				m[j] = float32(math.Abs(float64(tc.vals[j] * float32(lane+1))))
			}
			order := make([]int, n) // element → its rank, by a stable sort
			for r, j := range rankOrder(m) {
				order[j] = r
			}
			for ci, r := range rs {
				for c := range nChunks {
					pos, in := chunk(c)
					mags := make([]uint32, len(in[0]))
					mag(mags, lane, in)
					keep := make([]bool, len(mags))
					sel.cuts[lane][ci].above(keep, mags, pos)
					for j, k := range keep {
						if want := int64(order[pos.Offset+int64(j)]) < r; k != want {
							t.Fatalf("%s: lane %d rank %d: element %d: got %v", tc.name, lane, r, pos.Offset+int64(j), k)
						}
					}
				}
			}
		}
	}
}

// rankOrder is the indices of mag by magnitude descending, equal magnitudes by index.
func rankOrder(mag []float32) []int {
	idx := make([]int, len(mag))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Or(cmp.Compare(mag[b], mag[a]), cmp.Compare(a, b)) })
	return idx
}
