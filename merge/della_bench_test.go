package merge

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// BenchmarkDellaKeepChunk times DELLA's keep masks of one chunk (3 models, rows of
// 2048, BF16 task vectors of the benchmark fixtures' scale): sorted, every row sorted
// (keepRowSorted); buckets, the bucketed ranks (keepRowBuckets); buckets_l1, those
// with the L1 sums that della's first pass takes with them (keepChunkL1);
// decode_l1, that with the engine's decoding of the BF16 inputs first; bf16_l1, the
// fused pass from the words (keepChunkL1BF16).
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
	words := make([][]byte, len(in))
	bops := make([]Operand, len(in))
	for k := range in {
		words[k] = make([]byte, 2*ChunkElems)
		if err := dtype.Encode(words[k], in[k], dtype.BF16); err != nil {
			b.Fatal(err)
		}
		bops[k] = Operand{DType: dtype.BF16, Data: words[k], File: "mem"}
	}
	m := &methodRun{dens: []float64{0.5, 0.5, 0.5}, p: Params{Epsilon: 0.15}}
	for _, mode := range []string{"sorted", "buckets", "buckets_l1", "decode_l1", "bf16_l1"} {
		tp := &TensorPlan{Name: "w", Shape: []int64{ChunkElems / L, L}, In: ops}
		if mode == "bf16_l1" || mode == "decode_l1" {
			tp.In = bops
		}
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
			if mode != "sorted" && mode != "buckets" {
				l1 = make([]float64, 2*lanes)
			}
			dec := make([][]float32, len(in))
			for k := range dec {
				dec[k] = make([]float32, ChunkElems)
			}
			for b.Loop() {
				sc := pool.get(ChunkElems)
				switch mode {
				case "bf16_l1":
					ds.keepChunkL1BF16(sc, bops, Chunk{}, ChunkElems, l1)
				case "decode_l1": // the decoding path: the engine's decoding, then the pass
					for k := range dec {
						_ = dtype.Decode(dec[k], words[k], dtype.BF16)
					}
					ds.keepChunkL1(sc, dec, Chunk{}, l1)
				default:
					ds.keepChunkL1(sc, in, Chunk{}, l1)
				}
				pool.put(sc)
			}
		})
	}
}

// BenchmarkDellaExecute times della (3 models, rows of 2048, BF16 task vectors of
// the benchmark fixtures' scale, 8 chunks) through Execute on one thread: decoded,
// every chunk decoded; pass, the ranking pass from the words (Pass.Fused); all, the
// merge too (Kernel.Fused). Bytes are the words read by one decoding pass.
func BenchmarkDellaExecute(b *testing.B) {
	const L, lanes, n = 2048, 3, 8 * ChunkElems
	rng := rand.New(rand.NewPCG(1, 2))
	words := make([][]byte, lanes+1)
	for k := range words {
		words[k] = make([]byte, 2*n)
	}
	for j := range n {
		w := 0.02 * rng.NormFloat64()
		for k := range words {
			v := w
			if k > 0 {
				v += 0.01 * rng.NormFloat64()
			}
			h := uint16(math.Float32bits(float32(v)) >> 16)
			words[k][2*j], words[k][2*j+1] = byte(h), byte(h>>8)
		}
	}
	models := []Model{{Weight: 0.7}, {Weight: 0.5}, {Weight: 1.1}}
	r := &methodRun{models: models, weights: []float32{0.7, 0.5, 1.1}, dens: []float64{0.5, 0.5, 0.5}, lambda: 1,
		tv: tvOptions{sparsify: SparsifyDella, consensus: ConsensusSign, normalize: true, rescale: "l1"},
		p:  Params{Epsilon: 0.15, Seed: 7}}
	var want []byte // the decoded mode's output, which the others must give
	for _, mode := range []string{"decoded", "pass", "all"} {
		b.Run(mode, func(b *testing.B) {
			tp := TensorPlan{Name: "w", Shape: []int64{n / L, L}, OutDType: dtype.BF16, Merge: true}
			for _, w := range words {
				tp.In = append(tp.In, Operand{DType: dtype.BF16, Data: w, File: "mem"})
			}
			plan := &Plan{Inputs: make([]Source, len(words)), Tensors: []TensorPlan{tp}}
			sink := &memSink{bufs: [][]byte{make([]byte, 2*n)}}
			b.SetBytes(int64(2 * n * len(words)))
			b.ReportAllocs()
			for b.Loop() {
				_, err := Execute(context.Background(), plan, sink, func(tp *TensorPlan) Kernel {
					k := dellaKernel(r, tp)
					if mode != "all" {
						k.Fused = nil
					}
					if mode == "decoded" {
						k.Passes = append([]Pass(nil), k.Passes...)
						k.Passes[0].Fused = nil
					}
					return k
				}, ExecOptions{Threads: 1})
				if err != nil {
					b.Fatal(err)
				}
			}
			switch {
			case want == nil:
				want = sink.bufs[0]
			case !bytes.Equal(sink.bufs[0], want):
				b.Errorf("%s: the output differs from the decoded one", mode)
			}
		})
	}
}
