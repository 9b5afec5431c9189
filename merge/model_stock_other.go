//go:build !amd64 || purego

package merge

const haveModelStock512 = false

// modelStockMergeBF16Asm is not called here (haveModelStock512 is false).
func modelStockMergeBF16Asm(out, base []byte, models [][]byte, wt, wb float32) int {
	panic("unreachable")
}

// modelStockMergeAsm is not called here (haveLerpBF16Asm is false).
func modelStockMergeAsm(dst, base []float32, models [][]float32, wt, wb float32) int {
	panic("unreachable")
}
