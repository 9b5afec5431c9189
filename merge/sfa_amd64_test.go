//go:build !purego

package merge

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestLerpAndSumSqDiffAsmMatchGo compares the AVX2 Lerp and sumSqDiff with their Go
// references bit for bit, on lengths that leave tails, values of every magnitude,
// infinities and zeros (NaN compared as NaN).
func TestLerpAndSumSqDiffAsmMatchGo(t *testing.T) {
	if !haveLerpBF16Asm {
		t.Skip("no AVX2 on this CPU: the assembly is not used")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{8, 9, 15, 64, 1000, ChunkElems + 3} {
		a, x := make([]float32, n), make([]float32, n)
		for i := range a {
			a[i] = float32(rng.NormFloat64() * math.Pow(10, rng.Float64()*60-30))
			x[i] = float32(rng.NormFloat64() * math.Pow(10, rng.Float64()*60-30))
			switch rng.IntN(40) {
			case 0:
				a[i] = float32(math.Inf(1))
			case 1:
				x[i] = 0
			case 2:
				x[i] = float32(math.NaN())
			}
		}
		for _, bc := range [][2]float32{{0.5, 0.5}, {0.3, 0.7}, {0, 1}, {1, 0}} {
			got, want := make([]float32, n), make([]float32, n)
			Lerp(got, a, x, bc[0], bc[1])
			lerpGo(want, a, x, bc[0], bc[1])
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] != got[i] && want[i] != want[i]) {
					t.Fatalf("n=%d b=%v: Lerp element %d = %v, want %v", n, bc[0], i, got[i], want[i])
				}
			}
		}
		xs := make([]float32, n) // finite, for the sums
		for i := range xs {
			xs[i] = float32(rng.NormFloat64())
		}
		var s [lanes]float64
		got, want := sumSqDiff(xs, a[:n]), sumSqDiffLanes(xs, a[:n], 0, &s)
		if math.Float64bits(got) != math.Float64bits(want) && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Fatalf("n=%d: sumSqDiff = %v, want %v", n, got, want)
		}
		for i := range a {
			if math.IsInf(float64(a[i]), 0) {
				a[i] = 1
			}
		}
		got, want = sumSqDiff(xs, a[:n]), sumSqDiffLanes(xs, a[:n], 0, &[lanes]float64{})
		if got != want {
			t.Fatalf("n=%d finite: sumSqDiff = %v, want %v", n, got, want)
		}
	}
}
