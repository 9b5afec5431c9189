//go:build !amd64 || purego

package merge

const haveAVX512BW = false

// The assembly is not called here (haveLerpBF16Asm and haveAVX512BW are false).
func gramDiffBF16Asm(d []float64, y, b []byte) int   { panic("unreachable") }
func gramDiffF32Asm(d []float64, y, b []float32) int { panic("unreachable") }
func gramLanesAsm(ls [][lanes]float64, d []float64, pairs [][2]int, layout gramLayout, n int) int {
	panic("unreachable")
}
func combineBF16Asm(out []byte, y [][]byte, b []byte, c []float32, form sumForm, k float32) int {
	panic("unreachable")
}

// gramWordsAsm has no assembly here: the Gram sums go a block at a time.
func gramWordsAsm(ls [][lanes]float64, y [][]byte, b []byte, layout gramLayout, n int) int { return 0 }
