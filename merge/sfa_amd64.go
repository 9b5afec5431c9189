//go:build !purego

package merge

//go:noescape
func lerpAVX2(dst, a, x *float32, n int, b, c float32)

//go:noescape
func sumSqDiffAVX2(x, y *float32, n int, sums *[lanes]float64)

// Lerp computes dst = float32(b·a) + float32(c·x) per element: SFA's merge with
// b = float32(β), c = float32(1−β) (docs/methods.md#sfa). Separate multiplies and add, never a
// fused multiply-add, so that every path and device gives the same bits; AVX2 does
// eight at a time with the same operations.
func Lerp(dst, a, x []float32, b, c float32) {
	a, x = a[:len(dst)], x[:len(dst)]
	j := 0
	if haveLerpBF16Asm && len(dst) >= 8 {
		j = len(dst) &^ 7
		lerpAVX2(&dst[0], &a[0], &x[0], j, b, c)
	}
	lerpGo(dst[j:], a[j:], x[j:], b, c)
}

// sumSqDiff is Σ (x_j − y_j)² in float64, element j added to lane j mod 8, the lanes
// combined by combineLanes; the AVX2 kernel keeps the eight lanes in two registers and
// does the same operations per lane.
func sumSqDiff(x, y []float32) float64 {
	y = y[:len(x)]
	var s [lanes]float64
	j := 0
	if haveLerpBF16Asm && len(x) >= lanes {
		j = len(x) &^ (lanes - 1)
		sumSqDiffAVX2(&x[0], &y[0], j, &s)
	}
	return sumSqDiffLanes(x, y, j, &s)
}

// addSqDiff adds (x_j − y_j)² into s[j mod 8]: sumSqDiff without the final
// combination, for sums that run across several calls (each starting at a multiple
// of 8 of the whole).
func addSqDiff(x, y []float32, s *[lanes]float64) {
	j := 0
	if haveLerpBF16Asm && len(x) >= lanes {
		j = len(x) &^ (lanes - 1)
		sumSqDiffAVX2(&x[0], &y[0], j, s)
	}
	addSqDiffGo(x[j:], y[j:len(x)], s)
}
