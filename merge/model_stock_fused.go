package merge

import "github.com/gomerge/gomerge/formats/dtype"

// Model_stock's merge straight from BF16 bytes (Kernel.Fused); its statistics are
// gramPass's (gram.go).

// modelStockMerge is the merge on decoded values, modelStockMergeGo's bits: with
// AVX2 eight at a time, modelStockMergeGo for the rest.
func modelStockMerge(dst, base []float32, models [][]float32, wt, wb float32) {
	j := 0
	if haveLerpBF16Asm {
		j = modelStockMergeAsm(dst, base, models, wt, wb)
	}
	if j == len(dst) {
		return
	}
	rest := make([][]float32, len(models)) // the few elements past the last eight
	for i, x := range models {
		rest[i] = x[j:]
	}
	modelStockMergeGo(dst[j:], base[j:], rest, wt, wb)
}

// modelStockMergeGo is the per-tensor merge on decoded values: the models' float32
// sum from +0 in model order, divided by N, times t, plus (1 − t)·base, each
// operation rounded to float32.
func modelStockMergeGo(dst, base []float32, models [][]float32, wt, wb float32) {
	base = base[:len(dst)]
	inv := float32(len(models))
	clear(dst)
	for _, x := range models {
		x = x[:len(dst)]
		for j := range dst {
			dst[j] += x[j]
		}
	}
	for j := range dst {
		dst[j] = float32(wt*(dst[j]/inv)) + float32(wb*base[j])
	}
}

// modelStockMergeBF16 is modelStockMerge on BF16 words, rounded to BF16 as the
// encoder does: with AVX-512 sixteen at a time; the rest as the engine does without
// a fused path (bf16Tail).
func modelStockMergeBF16(out, base []byte, models [][]byte, wt, wb float32) {
	j := 0
	if haveModelStock512 {
		j = modelStockMergeBF16Asm(out, base, models, wt, wb)
	}
	bf16Tail(out, models, base, j, func(dst []float32, in [][]float32) { modelStockMerge(dst, in[0], in[1:], wt, wb) })
}

// modelStockFused is the per-tensor kernel's Kernel.Fused: BF16 inputs and output,
// where the CPU has AVX-512; factors gives t and 1 − t once the pass is done.
func modelStockFused(factors func() (wt, wb float32)) func([]byte, dtype.DType, []Operand, []float64, Chunk) bool {
	return func(out []byte, outDT dtype.DType, in []Operand, _ []float64, _ Chunk) bool {
		if !haveModelStock512 || outDT != dtype.BF16 {
			return false
		}
		models, base, ok := bf16Operands(in, true)
		if !ok || len(out) != len(base) {
			return false
		}
		wt, wb := factors()
		modelStockMergeBF16(out, base, models, wt, wb)
		return true
	}
}
