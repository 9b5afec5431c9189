//go:build !amd64 || purego

package merge

const haveLerpBF16Asm = false

func lerpBF16Asm(out, a, x []uint16, n int, b, c float32, sums *[16]float64) {
	panic("unreachable")
}
