package lora

// The arithmetic of applying an adapter to a block of a base matrix's rows. Each
// element is w + Σⱼ L[i,j]·R[j,c]: the products rounded to float64, summed in float64
// in the order of j from +0, then float64(w) + sum rounded once to float32
// (docs/lora.md, "Applying"). addProductRef is that, element by element; the AVX2
// kernel (kernel_amd64.s) does the same operations in the same order, four columns to
// a register, and TestAddProductMatchesReference checks them bit for bit.
//
// Why by hand and not gonum: BLAS takes and gives float64 matrices, so a Dgemm or
// Daxpy per row needs the base rows widened into a float64 buffer, a pass to clear it
// and a pass to round it back; its Dgemm also blocks and spreads work over goroutines
// of its own, which for a rank-16 product cost more than the arithmetic
// (bench/README-lora.md). The kernel here reads the base rows as float32, keeps the
// sums in registers and writes float32, on whatever worker the caller runs it.

// panelBytes bounds the columns of R the kernel sweeps for one row (k rows of float64)
// so that the panel stays in the L1 cache while every row of the block reuses it.
const panelBytes = 32 << 10

// addProduct adds L·R to w (rows×cols float32, row-major), L rows×k and R k×cols
// float64, row-major. The result does not depend on how the rows are split between
// calls, so workers may take row blocks in any order.
func addProduct(w []float32, rows, cols int, L, R []float64, k int) {
	if k == 0 || rows == 0 || cols == 0 {
		return
	}
	wide := 0
	if haveProductAsm {
		wide = cols &^ (productLanes - 1)
	}
	if wide > 0 {
		panel := max(productLanes, (panelBytes/(8*k))&^(productLanes-1))
		for c0 := 0; c0 < wide; c0 += panel {
			n := min(panel, wide-c0)
			for i := range rows {
				addRowAsm(w[i*cols+c0:i*cols+c0+n], L[i*k:(i+1)*k], R[c0:], n, cols)
			}
		}
	}
	if wide < cols {
		for i := range rows {
			addRowRef(w[i*cols:(i+1)*cols], L[i*k:(i+1)*k], R, wide, cols)
		}
	}
}

// addProductRef is addProduct element by element, the reference the fast path is
// tested against. With no terms (k = 0) w is left as it is, a -0 included.
func addProductRef(w []float32, rows, cols int, L, R []float64, k int) {
	if k == 0 {
		return
	}
	for i := range rows {
		addRowRef(w[i*cols:(i+1)*cols], L[i*k:(i+1)*k], R, 0, cols)
	}
}

// addRowRef adds row l of the left factor times R to row w, from column c0 on. The
// explicit float64 conversion of each product keeps Go from fusing it into the sum
// (it does on arm64), which would round once where the reference rounds twice.
func addRowRef(w []float32, l, R []float64, c0, cols int) {
	for c := c0; c < cols; c++ {
		var sum float64
		for j, a := range l {
			sum += float64(a * R[j*cols+c])
		}
		w[c] = float32(float64(w[c]) + sum)
	}
}
