//go:build !amd64 || purego

package merge

// Lerp computes dst = float32(b·a) + float32(c·x) per element: SFA's merge with
// b = float32(β), c = float32(1−β) (docs/methods.md#sfa). Separate multiplies and add, never a
// fused multiply-add, so that every path and device gives the same bits.
func Lerp(dst, a, x []float32, b, c float32) { lerpGo(dst, a, x, b, c) }

// sumSqDiff is Σ (x_j − y_j)² in float64, element j added to lane j mod 8, the lanes
// combined by combineLanes.
func sumSqDiff(x, y []float32) float64 {
	var s [lanes]float64
	return sumSqDiffLanes(x, y[:len(x)], 0, &s)
}

// addSqDiff adds (x_j − y_j)² into s[j mod 8]: sumSqDiff without the final
// combination, for sums that run across several calls (each starting at a multiple
// of 8 of the whole).
func addSqDiff(x, y []float32, s *[lanes]float64) { addSqDiffGo(x, y, s) }
