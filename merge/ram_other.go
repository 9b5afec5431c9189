//go:build !amd64 || purego

package merge

// The assembly is not called here (haveLerpBF16Asm is false).

func ramMaskAsm(keep, count []uint32, x, b []float32, eps float64) int { panic("unreachable") }

func ramCountAsm(base []float32, x [][]float32, eps float64, s *ramScratch) int {
	panic("unreachable")
}

func ramCountBF16Asm(base []uint16, x [][]uint16, eps float64, s *ramScratch) int {
	panic("unreachable")
}

func ramBF16Asm(out, base []uint16, x [][]uint16, eps float64, lambda []float32, s *ramScratch) int {
	panic("unreachable")
}
