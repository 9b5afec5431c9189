package merge

import (
	"math"
	"math/rand/v2"
	"testing"
)

// fastTestValues is n float32 values of mixed magnitude with, every so often, the
// values a fast path must not mistreat: ±0, ±Inf, NaN, subnormals, the largest.
func fastTestValues(rng *rand.Rand, n int) []float32 {
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)),
		float32(math.NaN()), math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32 * 3, math.MaxFloat32, 1e-6, -1e-4}
	out := make([]float32, n)
	for j := range out {
		switch r := rng.IntN(100); {
		case r < 3:
			out[j] = special[rng.IntN(len(special))]
		case r < 50:
			out[j] = float32(rng.NormFloat64() * 0.02)
		default:
			out[j] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(8)-6)))
		}
	}
	return out
}

// TestGramChunkMatchesDotDiff: the pairs taken four and two at a time give each
// pair's dotDiff bit for bit, with a base and without (the zero base), for 1 to 6
// vectors.
func TestGramChunkMatchesDotDiff(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 4))
	for n := 1; n <= 6; n++ {
		for _, withBase := range []bool{false, true} {
			m := 1 + rng.IntN(3000)
			y := make([][]float32, n)
			for i := range y {
				y[i] = fastTestValues(rng, m)
			}
			var b []float32
			if withBase {
				b = fastTestValues(rng, m)

			}
			var pairs [][2]int
			for i := range n {
				for k := i; k < n; k++ {
					pairs = append(pairs, [2]int{i, k})
				}
			}
			acc := make([]float64, len(pairs))
			gramChunk(pairs, y, b, acc)
			for p, q := range pairs {
				want := dotDiff(y[q[0]], y[q[1]], b)
				if math.Float64bits(acc[p]) != math.Float64bits(want) {
					t.Errorf("n %d base %v pair %v: %v, dotDiff %v", n, withBase, q, acc[p], want)
				}
			}
		}
	}
}
