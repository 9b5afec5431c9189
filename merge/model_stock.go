package merge

import (
	"math"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

func init() {
	register(Method{
		Name: "model_stock", Command: "model-stock",
		Short:   "Model Stock: move from the base toward the models' mean by their task vectors' agreement",
		Example: `  gomerge model-stock --base base.safetensors ft1.safetensors ft2.safetensors ft3.safetensors --out stock.safetensors`,
		Base:    BaseRequired, MinModels: 2,
		Params: []Param{{Name: "filter_wise", Flag: "filter-wise", Kind: Bool,
			Usage: "one interpolation factor per row (the last dimension) rather than per tensor",
			field: func(p *Params) any { return &p.FilterWise }}},
		kernel: modelStockKernel,
	})
}

// modelStockKernel (docs/methods.md, model_stock): from the task vectors ε_i = θ_i − θ_base,
// c = the mean pairwise cosine (norm products clamped ≥ 1e-6), clamped to [0, 1];
// t = N·c / (1 + (N−1)·c); θ = t·mean_i θ_i + (1−t)·θ_base.
func modelStockKernel(m *methodRun, t *TensorPlan) Kernel {
	if m.p.FilterWise == SwitchOn && len(t.Shape) >= 2 { // a vector is one row: the tensor's t
		return modelStockRowKernel(m, t)
	}
	nModels := len(m.weights)
	pass, gram := gramPass(nModels, true)
	var wt, wb float32
	done := pass.Done
	pass.Done = func(perChunk []float64) error {
		if err := done(perChunk); err != nil {
			return err
		}
		g := gram()
		wt, wb = modelStockT(modelStockCosines(nModels, func(i, k int) float64 { return g[i][k] }), nModels*(nModels-1)/2, nModels)
		return nil
	}
	return Kernel{
		Passes: []Pass{pass},
		Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
			modelStockMerge(dst, in[0], in[1:], wt, wb)
		},
		Fused: modelStockFused(func() (float32, float32) { return wt, wb }),
	}
}

// modelStockRef is model_stock's plain statement in float64: the mean pairwise cosine
// c of the task vectors (clamped to [0, 1]), t = N·c/(1+(N−1)·c), and
// t·mean_i θ_i + (1−t)·θ_base per element.
func modelStockRef(base []float32, models [][]float32) (ref, scale []float64) {
	N := float64(len(models))
	var cs float64
	pairs := 0
	for i := range models {
		for k := i + 1; k < len(models); k++ {
			var dot, ni, nk float64
			for j := range base {
				a, c := float64(models[i][j])-float64(base[j]), float64(models[k][j])-float64(base[j])
				dot += a * c
				ni += a * a
				nk += c * c
			}
			cs += dot / math.Max(math.Sqrt(ni)*math.Sqrt(nk), 1e-6)
			pairs++
		}
	}
	c := math.Max(0, math.Min(1, cs/float64(pairs)))
	t := N * c / (1 + (N-1)*c)
	ref, scale = make([]float64, len(base)), make([]float64, len(base))
	for j := range base {
		var mean float64
		for _, m := range models {
			mean += float64(m[j]) / N
		}
		ref[j] = t*mean + (1-t)*float64(base[j])
		scale[j] = math.Abs(t*mean) + math.Abs((1-t)*float64(base[j]))
	}
	return ref, scale
}

// modelStockRowKernel is model_stock with filter_wise: the same t, computed from each
// row's task vectors alone (a row: the last dimension), applied to that row. A chunk
// reads the whole of every row it touches, so rows that straddle chunks get the same
// t in both.
func modelStockRowKernel(m *methodRun, t *TensorPlan) Kernel {
	rows, err := newRowPool(t, t.Shape[len(t.Shape)-1])
	if err != nil {
		return Kernel{Err: err}
	}
	nModels := len(m.weights)
	pairs := gramPairs(nModels)
	grams := sync.Pool{New: func() any { return newGramScratch(nModels, pairs) }}
	return Kernel{
		WholeInputs: rows.straddles(), // rows read their inputs beyond the chunk
		Merge: func(dst []float32, in, _ [][]float32, pos Chunk) {
			rb := rows.get()
			defer rows.put(rb)
			gs := grams.Get().(*gramScratch)
			defer grams.Put(gs)
			xs := make([][]float32, nModels) // a row's span of each model
			rows.each(rb, in, pos, func(_, lo, hi int64, row [][]float32) {
				wt, wb := modelStockFactors(row[0], row[1:], gs)
				for i, x := range in[1:] {
					xs[i] = x[lo-pos.Offset : hi-pos.Offset]
				}
				modelStockMerge(dst[lo-pos.Offset:hi-pos.Offset], in[0][lo-pos.Offset:hi-pos.Offset], xs, wt, wb)
			})
		},
		// BF16 inputs and output, where the CPU has the AVX-512 merge: each row's sums
		// from the words (the chunk's where no row straddles chunks; the tensor's
		// where some do, which read beyond the chunk, as WholeInputs allows), its span
		// of the chunk merged from words.
		Fused: func(out []byte, outDT dtype.DType, in []Operand, _ []float64, pos Chunk) bool {
			ops, from := rows.operands(in, pos)
			if !haveModelStock512 || outDT != dtype.BF16 || !allBF16(ops) {
				return false
			}
			gs := grams.Get().(*gramScratch)
			defer grams.Put(gs)
			L, off, end := rows.L, pos.Offset, pos.Offset+int64(len(out)/2)
			rowWords, span := make([][]byte, nModels), make([][]byte, nModels)
			word := func(op Operand, lo, hi int64) []byte { return op.Data[2*(lo-from) : 2*(hi-from)] }
			for r := off / L; r*L < end; r++ {
				start := r * L
				lo, hi := max(start, off), min(start+L, end)
				for i, op := range ops[1:] {
					rowWords[i], span[i] = word(op, start, start+L), word(op, lo, hi)
				}
				wt, wb := modelStockRowFactors(gs, func(acc []float64) { gs.chunkBF16(rowWords, word(ops[0], start, start+L), acc) })
				modelStockMergeBF16(out[2*(lo-off):2*(hi-off)], word(ops[0], lo, hi), span, wt, wb)
			}
			return true
		},
	}
}

// modelStockFactors is t and 1 − t, in float32, for one row: the per-tensor
// kernel's statistics and formula over the row's elements, its Gram sums taken over
// the row as over a chunk (lanes counted from the row's first element).
func modelStockFactors(base []float32, models [][]float32, s *gramScratch) (wt, wb float32) {
	return modelStockRowFactors(s, func(acc []float64) { s.chunk(models, base, acc) })
}

// modelStockRowFactors is modelStockFactors with the row's Gram sums added to acc by
// sums (from decoded values, or from BF16 words).
func modelStockRowFactors(s *gramScratch, sums func(acc []float64)) (wt, wb float32) {
	n := len(s.d) / gramStride
	acc := s.sums[:len(s.pairs)]
	clear(acc)
	sums(acc)
	cSum := modelStockCosines(n, func(i, k int) float64 { return gramSum(acc[gramIndex(n, i, k)]) })
	return modelStockT(cSum, n*(n-1)/2, n)
}

// modelStockCosines is the sum of n task vectors' pairwise cosines from their inner
// products g(i, k), the norms' product clamped to at least 1e-6.
func modelStockCosines(n int, g func(i, k int) float64) float64 {
	var cSum float64
	for i := range n {
		for k := i + 1; k < n; k++ {
			cSum += g(i, k) / math.Max(math.Sqrt(g(i, i))*math.Sqrt(g(k, k)), 1e-6)
		}
	}
	return cSum
}

// modelStockT is t and 1 − t in float32 from the sum of the pairwise cosines: c, their
// mean clamped to [0, 1], and t = N·c / (1 + (N−1)·c) in float64.
func modelStockT(cSum float64, pairs, nModels int) (wt, wb float32) {
	c := max(0, min(1, cSum/float64(pairs)))
	n := float64(nModels)
	t := n * c / (1 + float64((n-1)*c))
	return float32(t), float32(1 - t)
}

// modelStockRowsRef is filter_wise's plain statement: modelStockRef on each row (the
// last dimension; a vector is one row).
func modelStockRowsRef(shape []int64, base []float32, models [][]float32) (ref, scale []float64) {
	L := len(base)
	if len(shape) >= 2 {
		L = int(shape[len(shape)-1])
	}
	for r := 0; r < len(base); r += L {
		row := make([][]float32, len(models))
		for i, x := range models {
			row[i] = x[r : r+L]
		}
		rr, rs := modelStockRef(base[r:r+L], row)
		ref, scale = append(ref, rr...), append(scale, rs...)
	}
	return ref, scale
}
