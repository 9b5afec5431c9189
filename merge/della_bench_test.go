package merge

import (
	"math"
	"math/rand/v2"
	"testing"
)

// BenchmarkDellaKeepChunk times DELLA's keep masks of one chunk (3 models, rows of
// 2048, BF16 task vectors of the benchmark fixtures' scale): sorted, every row sorted
// (keepRowSorted); buckets, the bucketed ranks (keepRowBuckets); buckets_l1, those
// with the L1 sums that della's first pass takes with them (keepChunkL1).
func BenchmarkDellaKeepChunk(b *testing.B) {
	const L, lanes = 2048, 3
	rng := rand.New(rand.NewPCG(1, 2))
	bf16 := func(v float64) float32 { return math.Float32frombits(math.Float32bits(float32(v)) &^ 0xffff) }
	in := make([][]float32, lanes+1)
	for k := range in {
		in[k] = make([]float32, ChunkElems)
	}
	for j := range in[0] {
		w := 0.02 * rng.NormFloat64()
		in[0][j] = bf16(w)
		for k := 1; k <= lanes; k++ {
			in[k][j] = bf16(w + 0.01*rng.NormFloat64())
		}
	}
	ops := make([]Operand, len(in))
	for k := range in {
		ops[k] = f32Operand(in[k])
	}
	tp := &TensorPlan{Name: "w", Shape: []int64{ChunkElems / L, L}, In: ops}
	m := &methodRun{dens: []float64{0.5, 0.5, 0.5}, p: Params{Epsilon: 0.15}}
	for _, mode := range []string{"sorted", "buckets", "buckets_l1"} {
		b.Run(mode, func(b *testing.B) {
			ds, err := newDellaSelector(tp, m, dareKey(7, "w"), false)
			if err != nil {
				b.Fatal(err)
			}
			if mode == "sorted" {
				ds.thr = nil
			}
			pool := newMaskPool(lanes)
			b.SetBytes(ChunkElems * lanes)
			var l1 []float64
			if mode == "buckets_l1" {
				l1 = make([]float64, 2*lanes)
			}
			for b.Loop() {
				sc := pool.get(ChunkElems)
				ds.keepChunkL1(sc, in, Chunk{}, l1)
				pool.put(sc)
			}
		})
	}
}
