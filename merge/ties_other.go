//go:build !amd64

package merge

const haveTiesAsm = false

func tiesSignAsm(sign []uint32, sum []float32, n int)                     { panic("unreachable") }
func tiesAccumAsm(num, den, d []float32, sign []uint32, w float32, n int) { panic("unreachable") }
func tiesFinishAsm(dst, base, den []float32, lambda float32, n int)       { panic("unreachable") }

func deltaAbsBitsAsm(dst []uint32, x, b []float32, n int) { panic("unreachable") }
