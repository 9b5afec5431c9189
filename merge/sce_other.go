//go:build !amd64 || purego

package merge

func sceVarianceAsm([]uint32, [][]float32) int { panic("no assembly variance") }

func sceMaskAsm([]uint64, []uint64, []uint32, uint32) int { panic("no assembly mask") }
