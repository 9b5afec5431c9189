//go:build !amd64 || purego

package merge

// arceeKLAsm is not called here (haveLerpBF16Asm is false).
func arceeKLAsm(dst, ex, eb []float64, zx, zb float64) int { panic("unreachable") }

const haveArceeExpAsm = false

// arceeExpAsm is not called here (haveArceeExpAsm is false).
func arceeExpAsm(dst []float64, src []float32, m float64) int { panic("unreachable") }

// arceeKeysAsm, arceeSelectAsm and arceeMaxAsm are not called here (haveLerpBF16Asm
// is false).
func arceeKeysAsm(keys []uint32, x, b []float32, kl float64) int { panic("unreachable") }

func arceeSelectAsm(dst, x, b []float32, kl, t float64) int { panic("unreachable") }

func arceeMaxAsm(x, b []float32) (mx, mb float32, n int, ok bool) { panic("unreachable") }

// arceeMatchAsm is not called here (haveLerpBF16Asm is false).
func arceeMatchAsm(keys []uint32, bins *[3]uint32) int { panic("unreachable") }

// arceeRangeAsm is not called here (haveLerpBF16Asm is false).
func arceeRangeAsm(keys []uint32) (lo, hi uint32, n int) { panic("unreachable") }

// haveArceeKeys512: no AVX-512 here.
const haveArceeKeys512 = false

// arceeKeysInBinsAsm is not called here (haveArceeKeys512 is false).
func arceeKeysInBinsAsm(found *[3][]uint32, x, b []float32, kl float64, bins *[3]uint32) int {
	panic("unreachable")
}

// arceeKeysInBinsBF16Asm is not called here (haveArceeKeys512 is false).
func arceeKeysInBinsBF16Asm(found *[3][]uint32, x, b []uint16, kl float64, bins *[3]uint32) int {
	panic("unreachable")
}

// haveArceeSelectBF16: no AVX-512 here.
const haveArceeSelectBF16 = false

// arceeSelectBF16Asm is not called here (haveArceeSelectBF16 is false).
func arceeSelectBF16Asm(dst, x, b []uint16, kl, t float64) int { panic("unreachable") }
