//go:build !amd64 || purego

package merge

// arceeKLAsm is not called here (haveLerpBF16Asm is false).
func arceeKLAsm(ex, eb []float64, zx, zb float64, kl *float64) int { panic("unreachable") }

const haveArceeExpAsm = false

// arceeExpAsm is not called here (haveArceeExpAsm is false).
func arceeExpAsm(dst []float64, src []float32, m float64, z *float64) int { panic("unreachable") }
