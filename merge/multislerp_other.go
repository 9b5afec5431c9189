//go:build !amd64 || purego

package merge

const haveMultislerp512 = false

// The assembly is not called here (haveLerpBF16Asm and haveMultislerp512 are false).
func gramDiffBF16Asm(d []float64, y, b []byte) int                     { panic("unreachable") }
func gramMulAsm(p, a, c []float64) int                                 { panic("unreachable") }
func gramChainsAsm(sums, p []float64, n int)                           { panic("unreachable") }
func gramChains3Asm(sums, d []float64, n int, stock bool)              { panic("unreachable") }
func combineBF16Asm(out []byte, y [][]byte, b []byte, c []float32) int { panic("unreachable") }
