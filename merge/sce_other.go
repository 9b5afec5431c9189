//go:build !amd64 || purego

package merge

func sceVarianceAsm([]uint32, [][]float32) int { panic("no assembly variance") }
