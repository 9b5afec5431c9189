//go:build !amd64 || purego

package merge

func tvDeltaAsm(sum, d, x, b []float32, keep []bool, elem []float32, scale, w float32, n int) {
	panic("unreachable")
}
func tvFinishAsm(dst, base []float32, lambda float32, n int) { panic("unreachable") }
