package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// TestRowMagnitudesBF16: the magnitudes from BF16 words (AVX2 where there is) are
// those of the widened values, bit for bit, and so is the largest top, with special
// words dense enough that every pair of them meets.
func TestRowMagnitudesBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 17))
	for _, n := range []int{1, 7, 8, 9, 16, 17, 255, 2048, 2051} {
		for _, every := range []int{0, 2, 40} {
			bb, bf := bf16TestWords(rng, n, every)
			xb, xf := bf16TestWords(rng, n, every)
			got, want := make([]uint32, n), make([]uint32, n)
			gt := rowMagnitudesBF16(got, bb, xb)
			var wt uint32
			for j := range n {
				want[j] = absBits(xf[j] - bf[j])
				wt = max(wt, want[j]>>16)
			}
			if !slices.Equal(got, want) || gt != wt {
				t.Errorf("n %d every %d: magnitudes or top (%#x, want %#x) differ", n, every, gt, wt)
			}
		}
	}
}

// TestDellaFusedMatchesDecoded: the ranking pass from BF16 words (keepChunkL1BF16)
// makes keepChunkL1's masks and adds its L1 sums, bit for bit, chunk by chunk, on rows
// of one entry, of 7, rows that straddle chunk ends, rows longer than a chunk, rows
// of 1004 (every other row starts mid lane group, where the sums from words must
// not start), rows that divide a chunk (read from the chunk's own words, the others
// from the whole tensor's); task vectors of unrelated words (with specials), of
// words a few units from the base's (runs of equal magnitudes, zeros), and of words
// of every finite exponent (float64 sums of float32 magnitudes within a few octaves
// are exact in any order; these are not, so the order of the additions shows); 3 and
// 6 models (two groups of lanes).
func TestDellaFusedMatchesDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 9))
	for _, shape := range [][]int64{{3 * ChunkElems / 2, 1}, {20000, 7}, {140, 1000}, {70, 1004}, {2, 70000}, {ChunkElems/2048 + 1, 2048}} {
		n := int(shape[0] * shape[1])
		for _, kind := range []string{"unrelated", "near", "wide"} {
			for _, lanes := range []int{3, 6} {
				what := fmt.Sprintf("shape %v %s lanes %d", shape, kind, lanes)
				words := make([][]byte, lanes+1)
				words[0], _ = bf16TestWords(rng, n, 0)
				for k := 1; k <= lanes; k++ {
					switch kind {
					case "unrelated":
						words[k], _ = bf16TestWords(rng, n, 5000)
						continue
					case "wide":
						words[k] = make([]byte, 2*n)
						for j := range n {
							h := uint16(rng.IntN(0x7f80)) | uint16(rng.IntN(2))<<15 // finite
							words[k][2*j], words[k][2*j+1] = byte(h), byte(h>>8)
						}
						continue
					}
					words[k] = slices.Clone(words[0])
					for j := 0; j < n; j++ {
						h := uint16(words[0][2*j]) | uint16(words[0][2*j+1])<<8
						h += uint16(rng.IntN(5) - 2)
						words[k][2*j], words[k][2*j+1] = byte(h), byte(h>>8)
					}
				}
				tp := &TensorPlan{Name: "w", Shape: shape}
				for _, w := range words {
					tp.In = append(tp.In, Operand{DType: dtype.BF16, Data: w, File: "mem"})
				}
				dens := []float64{0.5, 0.3, 0.8, 0.6, 0.2, 0.45}[:lanes]
				m := &methodRun{dens: dens, p: Params{Epsilon: 0.1}}
				ds, err := newDellaSelector(tp, m, dareKey(7, "w"), false)
				if err != nil {
					t.Fatal(err)
				}
				pool := newMaskPool(lanes)
				for off := 0; off < n; off += ChunkElems {
					c := min(ChunkElems, n-off)
					pos := Chunk{Index: int64(off / ChunkElems), Offset: int64(off)}
					in, ops := make([][]float32, lanes+1), make([]Operand, lanes+1)
					for k, w := range words {
						ops[k] = Operand{DType: dtype.BF16, Data: w[2*off : 2*(off+c)], File: "mem"}
						in[k] = make([]float32, c)
						if err := dtype.Decode(in[k], w[2*off:2*(off+c)], dtype.BF16); err != nil {
							t.Fatal(err)
						}
					}
					want, got := make([]float64, 2*lanes), make([]float64, 2*lanes)
					scw, scg := pool.get(c), pool.get(c)
					ds.keepChunkL1(scw, in, pos, want)
					ds.keepChunkL1BF16(scg, ops, pos, c, got)
					for i := range lanes {
						if !slices.Equal(scw.keep[i], scg.keep[i]) {
							t.Errorf("%s chunk %d model %d: masks differ", what, pos.Index, i)
						}
					}
					if !sameFloat64Bits(got, want) {
						t.Errorf("%s chunk %d: L1 sums %v, want %v", what, pos.Index, got, want)
					}
					pool.put(scw)
					pool.put(scg)
				}
			}
		}
	}
}

func sameFloat64Bits(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return false
		}
	}
	return true
}

// TestDellaKernelFusedMatchesDecoded: della and della_linear through the engine with
// their fused pass and merge give the bytes of the decoding path, over tensors of
// several chunks (rows that straddle chunk ends, a last chunk past the kernels'
// groups, rows longer than a chunk), with special words among the inputs, with a
// cache too small for the masks (the merge declines and the masks are made again),
// and with densities 0 and 1 (the pass declines). Inputs without special words too:
// with a NaN or an Inf in a model's sums its L1 rescale is 1, and a merge that left
// the rescale out would pass.
func TestDellaKernelFusedMatchesDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 7))
	for _, shape := range [][]int64{{2*ChunkElems/1000 + 3, 1000}, {2, ChunkElems + 8}} {
		n := int(shape[0] * shape[1])
		for _, every := range []int{20000, 0} {
			in := make([][]byte, 4)
			for k := range in {
				in[k], _ = bf16TestWords(rng, n, every)
			}
			for _, c := range []struct {
				sign, normalize bool
				dens            []float64
				cache           int64
			}{
				{true, true, []float64{0.5, 0.3, 0.8}, 0},
				{true, false, []float64{0.5, 0.3, 0.8}, 0},
				{false, false, []float64{0.5, 0.3, 0.8}, 0},
				{true, true, []float64{0.5, 0.3, 0.8}, 1},
				{true, true, []float64{1, 0.4, 0}, 0},
			} {
				tv := tvOptions{sparsify: SparsifyDella, normalize: c.normalize, rescale: "l1"}
				if c.sign {
					tv.consensus = ConsensusSign
				}
				r := &methodRun{models: []Model{{Weight: 0.7}, {Weight: -0.2}, {Weight: 1.3}}, weights: []float32{0.7, -0.2, 1.3},
					dens: c.dens, lambda: 0.9, tv: tv, p: Params{Epsilon: 0.1, Seed: 3, keepCacheBytes: c.cache}}
				ranked := c.dens[0] < 1 && c.dens[2] > 0
				fused, decoded := executeFusedAndDecoded(t, in, shape, c.cache == 0, ranked,
					func(tp *TensorPlan) Kernel { return dellaKernel(r, tp) })
				if !sameBF16Words(fused, decoded) {
					t.Errorf("shape %v specials 1 in %d %+v: the fused output differs from the decoded one", shape, every, c)
				}
			}
		}
	}
}
