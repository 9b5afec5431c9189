//go:build !amd64 || purego

package merge

// haveDellaAVX512: no assembly for DELLA's ranks here (della_amd64.go).
const haveDellaAVX512 = false

func dellaMagsAsm([]uint32, []float32, []float32, int) uint32 { panic("unreachable") }

func dellaBucketsAsm([]uint16, []uint32, int, int32) int32 { panic("unreachable") }

func dellaDecideAsm([]bool, []int32, []uint64, []uint16, []int32, *thresholdBounds, int) []int32 {
	panic("unreachable")
}

func dellaPrefixAsm([]int32) { panic("unreachable") }

func dellaRankAsm([]uint16, []uint32, uint16, uint32, int, int) int { panic("unreachable") }

func dellaMagsBF16Asm([]uint32, []byte, []byte, int) uint32 { panic("unreachable") }

func dellaDeltaBF16Asm([]float32, []float32, []byte, []float32, []uint64, float32, float32, int) {
	panic("unreachable")
}
