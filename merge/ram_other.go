//go:build !amd64 || purego

package merge

// ramMaskAsm is not called here (haveLerpBF16Asm is false).
func ramMaskAsm(keep, count []uint32, x, b []float32, eps float64) int { panic("unreachable") }
