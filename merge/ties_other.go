//go:build !amd64 || purego

package merge

const haveTiesAsm = false

func tiesSignAsm(sign []uint32, sum []float32, n int)                     { panic("unreachable") }
func tiesAccumAsm(num, den, d []float32, sign []uint32, w float32, n int) { panic("unreachable") }
func tiesFinishAsm(dst, base, den []float32, lambda float32, n int)       { panic("unreachable") }

func deltaAbsBitsAsm(dst []uint32, x, b []float32, n int) { panic("unreachable") }
func deltaAbsBitsBF16Asm(dst []uint32, x, b []uint16) int { panic("unreachable") }

func trimAsm(dst, x, b []float32, n int, w float32, t uint32) int { panic("unreachable") }
func binScanAsm(mags []uint32, n int, bin uint32) int             { panic("unreachable") }

func binPackAsm(dst []uint16, mags []uint32, bin uint32) (j, k int) { panic("unreachable") }

func deltaNearFast() bool { return false }

func deltaNearAsm(dst []uint32, x, b []uint16, lo, hi uint32) (j, k, above int) {
	panic("unreachable")
}

func deltaNear2Asm(dst0, dst1 []uint32, x, b []uint16, wins [2][2]uint32) (j int, counts [4]int) {
	panic("unreachable")
}

func nearPackAsm(dst, mags []uint32, lo, hi uint32) (j, k, above int) {
	panic("unreachable")
}

func tiesMergeAsm(dst, base []float32, xs []*float32, lanes []tiesLane, d []float32, lambda float32, j, n int) int {
	panic("unreachable")
}

const haveTiesBF16AVX512 = false

func tiesMergeWordsAsm(dst, base []uint16, xs []*uint16, lanes []tiesLane, lambda float32, j, n int,
	masks []*uint64, scale []float32, normalize, band bool) int {
	panic("unreachable")
}
