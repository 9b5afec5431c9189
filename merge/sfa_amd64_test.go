//go:build !purego

package merge

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
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

// TestLerpBF16AsmMatchesGo: the kernels (AVX2 alone, and AVX-512 with AVX2 for the
// rest) and the Go loop give the same bytes and statistics, for lengths with and
// without tails of each, on random bit patterns (NaN in one or both inputs, Inf,
// subnormals) and on finite values whose sums round, so that they tell the lanes'
// order of addition.
func TestLerpBF16AsmMatchesGo(t *testing.T) {
	if !haveLerpBF16Asm {
		t.Skip("no AVX2 kernel on this CPU; the Go loop is the only path")
	}
	have512 := haveLerpBF16AVX512
	defer func() { haveLerpBF16AVX512 = have512 }()
	rng := rand.New(rand.NewPCG(8, 8))
	for _, kernel := range []string{"avx2", "avx512"} {
		if kernel == "avx512" && !have512 {
			t.Log("no AVX-512 on this CPU: its kernel is not run")
			continue
		}
		haveLerpBF16AVX512 = kernel == "avx512"
		for _, pattern := range []string{"bits", "finite"} {
			for _, n := range []int{0, 7, 8, 9, 15, 16, 17, 24, 31, 4096, 5003} {
				a, x := make([]uint16, n), make([]uint16, n)
				for i := range a {
					if pattern == "finite" {
						// Magnitudes over 8 decades. The squares of BF16 differences
						// have few significant bits: over 4 decades or less, their
						// float64 sums are exact in any order and would not tell.
						a[i] = dtype.Float32ToBF16(float32(rng.NormFloat64() * math.Pow(10, rng.Float64()*8-4)))
						x[i] = dtype.Float32ToBF16(float32(rng.NormFloat64() * math.Pow(10, rng.Float64()*8-4)))
						continue
					}
					a[i], x[i] = uint16(rng.Uint32()), uint16(rng.Uint32())
					if i%97 == 0 {
						a[i], x[i] = 0x7fc1, 0xffa3 // both NaN, different payloads and signs
					}
				}
				for _, beta := range []float64{0, 0.3, 1} {
					b, c := float32(beta), float32(1-beta)
					o1, o2 := make([]uint16, n), make([]uint16, n)
					b1, a1 := lerpBF16Lanes(o1, a, x, b, c, true)
					b2, a2 := lerpBF16Lanes(o2, a, x, b, c, false)
					for i := range o1 {
						if o1[i] != o2[i] {
							t.Fatalf("%s %s n=%d β=%v [%d]: a=%#04x x=%#04x: asm %#04x, Go %#04x", kernel, pattern, n, beta, i, a[i], x[i], o1[i], o2[i])
						}
					}
					same := func(p, q float64) bool { return math.Float64bits(p) == math.Float64bits(q) || (p != p && q != q) }
					if !same(b1, b2) || !same(a1, a2) || pattern == "finite" && (b1 != b1 || a1 != a1) {
						t.Fatalf("%s %s n=%d β=%v: statistics asm %v %v, Go %v %v", kernel, pattern, n, beta, b1, a1, b2, a2)
					}
				}
			}
		}
	}
}
