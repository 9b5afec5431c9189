//go:build !amd64 || purego

package merge

func sceVarianceAsm([]uint32, [][]float32) int { panic("no assembly variance") }

func sceMaskAsm([]uint64, []uint64, []uint32, uint32) int { panic("no assembly mask") }

const haveSCE512 = false

func sceMergeBF16Asm([]byte, []byte, [][]byte, []float32, []uint64, bool) int {
	panic("no assembly merge")
}

func sceVariance512Asm([]uint32, [][]float32) int { panic("no assembly variance") }

func sceRangeAsm([]uint32, uint32, uint32, []uint32) (int, int, []uint32) { panic("no assembly range") }

func sceVarianceBF16Asm([]uint32, []byte, [][]byte) (int, int) { panic("no assembly variance") }

const haveSCESquaresAsm = false

func sceSquares4MaskedAsm([]byte, [4][]byte, []uint64) [4]float64 { panic("no assembly squares") }
