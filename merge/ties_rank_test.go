package merge

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// TestRankSelectorNearWindows: the cuts come out the same whether pass 1's windows
// hold every cut (passes 1b and 2 skipped), miss one (the first chunk done is unlike
// the rest: the histogram pass and pass 2 run), or are off (nearLimit 0: pass 1
// counts the histogram, pass 2 runs), with one and two cuts per lane, and pass 1
// settles the cuts exactly when the windows hold, also where each cut falls among
// many equal magnitudes in several chunks. The selectors share one pool of
// scratch, as a run's do, so that each case's chunks get what the cases before
// left in it.
func TestRankSelectorNearWindows(t *testing.T) {
	scratch := &sync.Pool{New: newRankScratch}
	rng := rand.New(rand.NewPCG(3, 17))
	const n = 2*ChunkElems + 123
	even := make([]float32, n)   // the same spread in every chunk
	skewed := make([]float32, n) // the last chunk, done first below, far smaller
	tied := make([]float32, n)   // few distinct magnitudes: every cut falls among equal ones
	for j := range even {
		even[j] = float32(rng.NormFloat64())
		tied[j] = float32(math.Round(float64(even[j])*16) / 16)
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
		name  string
		vals  []float32
		limit int64
		ran   int // passes run
	}{
		{"even", even, maxNear, 1},
		{"tied", tied, maxNear, 1}, // which chunk each tied element is in decides
		{"skewed", skewed, maxNear, 3},
		{"overflowing", even, 1000, 3}, // pass 1 keeps too many: the histogram pass runs
		{"off", even, 0, 2},
	} {
		ranks := [][]int64{{n / 5}, {n / 100, n / 2}, {n - 1}}
		sel := newRankSelector(n, ranks, mag, scratch) // scratch the cases before left
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
		if ran != tc.ran {
			t.Fatalf("%s: %d passes ran, want %d", tc.name, ran, tc.ran)
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

// TestDeltaMagnitudesBF16: the rank key from BF16 words (the assembly where the CPU
// has it, the rest in Go) is deltaMagnitudes' on the decoded words, bit for bit, over
// lengths that cross the groups of eight, with special words (NaNs, ±Inf, ±0,
// subnormals); and it declines operands that are not BF16.
func TestDeltaMagnitudesBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 51))
	for _, m := range bf16TestLengths {
		b, bf := bf16TestWords(rng, m, 3)
		x, xf := bf16TestWords(rng, m, 3)
		in := []Operand{{DType: dtype.BF16, Data: b}, {DType: dtype.BF16, Data: x}}
		got, want := make([]uint32, m), make([]uint32, m)
		if !deltaMagnitudesBF16(got, 0, in) {
			t.Fatalf("m %d: declined BF16 words", m)
		}
		deltaMagnitudes(want, 0, [][]float32{bf, xf})
		for j := range got {
			if got[j] != want[j] {
				t.Fatalf("m %d element %d: %#x, decoded %#x", m, j, got[j], want[j])
			}
		}
	}
	f32 := []Operand{{DType: dtype.F32, Data: make([]byte, 32)}, {DType: dtype.F32, Data: make([]byte, 32)}}
	if deltaMagnitudesBF16(make([]uint32, 8), 0, f32) {
		t.Error("took F32 operands")
	}
}

// TestRankMethodsFusedMatchDecoded: ties and breadcrumbs (with sign election,
// normalized and not, and with an L1 rescale) through the engine, their rank
// selector's pass 1 taking the magnitudes straight from BF16 words and their merges
// from the words too, give the bytes of the decoding path, over a tensor of several
// chunks, with and without special words; so does DARE with an L1 rescale (with sign
// election, normalized and not, and without), its merge from the words with the
// masks its L1 pass kept.
func TestRankMethodsFusedMatchDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 52))
	m := 2*ChunkElems + 1003
	run := func(o tvOptions, gamma float64) func(*TensorPlan) Kernel {
		r := &methodRun{models: make([]Model, 3), weights: []float32{1, 0.5, 2}, dens: []float64{0.2, 0.5, 0.9},
			base: true, tv: o, lambda: 1, p: Params{Gamma: gamma}}
		return func(tp *TensorPlan) Kernel { return taskVectorKernel(r, tp) }
	}
	cases := []struct {
		name   string
		kernel func(*TensorPlan) Kernel
		merge  bool // the merge has a fused path too, where the CPU has its kernel
	}{
		{"ties", run(tvOptions{sparsify: SparsifyMagnitude, consensus: ConsensusSign, normalize: true, rescale: "none"}, 0), haveTiesAsm},
		{"breadcrumbs", run(tvOptions{sparsify: SparsifyOutliers, rescale: "none"}, 0.05), haveTiesBF16AVX512},
		{"breadcrumbs_l1", run(tvOptions{sparsify: SparsifyOutliers, rescale: "l1"}, 0.05), haveTiesBF16AVX512},
		{"breadcrumbs_ties", run(tvOptions{sparsify: SparsifyOutliers, consensus: ConsensusSign, normalize: true, rescale: "none"}, 0.05), haveTiesBF16AVX512},
		{"breadcrumbs_ties_l1_sums", run(tvOptions{sparsify: SparsifyOutliers, consensus: ConsensusSign, rescale: "l1"}, 0.05), haveTiesBF16AVX512},
		// DARE with an L1 rescale merges with the masks its L1 pass kept.
		{"dare_l1", run(tvOptions{sparsify: SparsifyRandom, rescale: "l1"}, 0), haveTiesBF16AVX512},
		{"dare_ties_l1", run(tvOptions{sparsify: SparsifyRandom, consensus: ConsensusSign, normalize: true, rescale: "l1"}, 0), haveTiesBF16AVX512},
		{"dare_ties_l1_sums", run(tvOptions{sparsify: SparsifyRandom, consensus: ConsensusSign, rescale: "l1"}, 0), haveTiesBF16AVX512},
	}
	for _, c := range cases {
		for _, every := range []int{0, 5000} {
			var in [][]byte
			for range 4 {
				b, _ := bf16TestWords(rng, m, every)
				in = append(in, b)
			}
			// The passes' fused paths never decline BF16, nor do the merges'.
			fused, decoded := executeFusedAndDecoded(t, in, []int64{int64(m)}, c.merge, true, c.kernel)
			if !sameBF16Words(fused, decoded) {
				t.Errorf("%s every %d: the fused output differs from the decoded one", c.name, every)
			}
		}
	}
}

// TestNearSlab: the slab's copies keep their values while more are made after them,
// one longer than a block included, and a copy cannot grow into the next; so do
// slices written into room and held, shorter than the room asked for (as binLows
// fills it), or empty.
func TestNearSlab(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	a := blockSlab[uint32]{pool: &nearBlocks, size: nearBlockElems}
	defer a.release()
	var srcs, got [][]uint32
	for range 300 {
		n := rng.IntN(nearBlockElems / 8)
		if rng.IntN(50) == 0 {
			n = nearBlockElems + 1 + rng.IntN(9)
		}
		src := make([]uint32, n)
		for j := range src {
			src[j] = rng.Uint32()
		}
		var c []uint32
		if rng.IntN(2) == 0 {
			c = a.clone(src)
		} else {
			room := a.room(n + rng.IntN(20))
			src = src[:rng.IntN(n+1)] // what was written is at most what was asked for
			c = a.hold(append(room, src...))
		}
		if cap(c) != len(c) {
			t.Fatalf("a copy of %d has room for %d", len(c), cap(c))
		}
		srcs, got = append(srcs, src), append(got, c)
	}
	for i := range srcs {
		if !slices.Equal(got[i], srcs[i]) {
			t.Fatalf("copy %d (of %d) changed", i, len(srcs[i]))
		}
	}
}
