//go:build !amd64 || purego

package merge

func tvDeltaAsm(sum, d, x, b []float32, keep []bool, elem []float32, scale, w float32, n int) {
	panic("unreachable")
}
func tvDeltaBitsAsm(sum, d, x, b []float32, bits []uint64, elem []float32, scale, w float32, n int) {
	panic("unreachable")
}
func packBoolsAsm(dst []uint64, src []bool, n int)           { panic("unreachable") }
func tvFinishAsm(dst, base []float32, lambda float32, n int) { panic("unreachable") }

func keepBandAsm(keep []bool, mags []uint32, n int, loGT, hiGT int32, loTie, hiTie uint32) int {
	panic("unreachable")
}

func l1LanesBF16Asm(*l1Lanes, []byte, []byte, []bool)   { panic("unreachable") }
func l1LanesAsm(*l1Lanes, []float32, []float32, []bool) { panic("unreachable") }

func bandMergeWordsAsm(dst, base []uint16, xs []*uint16, lanes []tiesLane, lambda float32, j, n int, masks []*uint64) int {
	panic("unreachable")
}

// l1LanesWordsAsm has no assembly here: the models go one at a time.
func l1LanesWordsAsm(ls []l1Lanes, base []byte, xs [][]byte, keep [][]bool) int { return 0 }
