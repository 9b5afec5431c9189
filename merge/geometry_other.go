//go:build !amd64 || purego

package merge

// addScaledAsm is not called here (haveLerpBF16Asm is false).
func addScaledAsm(dst, x, b []float32, w float32) int { panic("unreachable") }

func divideAsm(dst []float32, d float32) int { panic("unreachable") }

func scaleOntoAsm(dst, base []float32, w float32) int { panic("unreachable") }
