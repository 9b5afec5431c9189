//go:build !amd64 || purego

package merge

const haveDrawsAsm = false

func dareDrawsAsm([]uint64, uint64, uint64, uint64) int { panic("no assembly draws") }
