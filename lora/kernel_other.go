//go:build !amd64 || purego

package lora

const (
	haveProductAsm = false
	productLanes   = 32
)

func addRowAsm(w []float32, l, r []float64, n, stride int) { panic("lora: no product kernel") }
