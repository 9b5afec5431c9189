//go:build !amd64 || purego

package merge

// nearswapAsm is not called here (haveLerpBF16Asm is false).
func nearswapAsm(dst, a, b []float32, t float64) int { panic("unreachable") }
