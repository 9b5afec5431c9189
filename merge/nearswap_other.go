//go:build !amd64 || purego

package merge

// nearswapAsm is not called here (haveLerpBF16Asm is false).
func nearswapAsm(dst, a, b []float32, t float64) int { panic("unreachable") }

// nearswapBF16Asm is not called here (haveAVX512BW is false).
func nearswapBF16Asm(dst, a, b []uint16, t float64) int { panic("unreachable") }
