package merge

import (
	"math/rand/v2"
	"testing"
)

// TestDAREL1PassFusedMatchesDecoded: DARE's L1 pass from BF16 words (Pass.Fused)
// gives the merge the decoded pass gives, with and without the keep cache, NaNs and
// infinities among the words included. A scale off by one float32 ulp changes
// outputs here: three models' sums over 3 chunks and a tail.
func TestDAREL1PassFusedMatchesDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 3))
	m := 3*ChunkElems + 1001
	for _, ties := range []bool{false, true} {
		for _, cache := range []int64{0, -1} {
			kernel := func(tp *TensorPlan) Kernel {
				o := tvOptions{sparsify: SparsifyRandom, rescale: "l1"}
				if ties {
					o.consensus, o.normalize = ConsensusSign, true
				}
				r := &methodRun{models: make([]Model, 3), weights: []float32{1, 0.5, 2}, dens: []float64{0.2, 0.5, 0.9},
					base: true, tv: o, lambda: 1, p: Params{Seed: 9, keepCacheBytes: cache}}
				return taskVectorKernel(r, tp)
			}
			for _, every := range []int{0, 5000} {
				var in [][]byte
				for range 4 {
					b, _ := bf16TestWords(rng, m, every)
					in = append(in, b)
				}
				fused, decoded := executeFusedAndDecoded(t, in, []int64{int64(m)}, false, true, kernel)
				if !sameBF16Words(fused, decoded) {
					t.Errorf("ties %v cache %d every %d: the fused pass's output differs from the decoded one", ties, cache, every)
				}
			}
		}
	}
}
