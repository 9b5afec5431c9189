//go:build !purego

package merge

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSCEVariance512: the AVX-512 variances are the AVX2 kernel's bit for bit, NaN
// payloads included (the keys order NaNs by them, so a key must not depend on which
// kernel made it), at every length across the groups of sixteen and of four, for 1
// to 5 models; and the least and greatest key sceVarianceRange returns are the
// keys'.
func TestSCEVariance512(t *testing.T) {
	if !haveSCE512 || !haveTiesAsm {
		t.Skip("no AVX-512")
	}
	rng := rand.New(rand.NewPCG(17, 4))
	vals := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.Float32frombits(0xffc00123), math.Float32frombits(0x7f800321), 1e-30, 3e30, 0.25, 1e-45}
	for _, models := range []int{1, 2, 3, 4, 5} {
		for n := 0; n <= 80; n++ {
			for _, every := range []int{8, 2} { // a special value in every of them
				in := make([][]float32, models+1)
				for k := range in {
					in[k] = make([]float32, n)
					for j := range in[k] {
						if rng.IntN(every) == 0 {
							in[k][j] = vals[rng.IntN(len(vals))]
						} else {
							in[k][j] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(9)-4)))
						}
					}
				}
				got, want := make([]uint32, n), make([]uint32, n)
				lo, hi := sceVarianceRange(got, in)
				j := 0
				if n >= 4 {
					j = sceVarianceAsm(want, in)
				}
				sceVarianceRef(want[j:], in, j)
				wlo, whi := ^uint32(0), uint32(0)
				for j := range got {
					if got[j] != want[j] {
						t.Fatalf("%d models, %d elements, element %d: key %#x, AVX2 %#x", models, n, j, got[j], want[j])
					}
					wlo, whi = min(wlo, want[j]), max(whi, want[j])
				}
				if lo != wlo || hi != whi {
					t.Fatalf("%d models, %d elements: keys from %#x to %#x, want %#x to %#x", models, n, lo, hi, wlo, whi)
				}
			}
		}
	}
}
