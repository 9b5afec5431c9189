//go:build !purego

package dtype

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestKQuantPairUsed makes sure that on a CPU with AVX-512 the two-block Q4_K/Q5_K
// path (which TestKQuantFitsMatchGo checks through Encode) runs on finite input and
// declines non-finite input, so that the comparison there is not silently of the
// single-block path with itself.
func TestKQuantPairUsed(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, 2*qkK)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	y := make([]byte, 2*144)
	if got := quantizeQ45KPair(y, 144, x, 15); got != haveK512 {
		t.Fatalf("quantizeQ45KPair on finite input = %v, want %v (AVX-512 present)", got, haveK512)
	}
	x[300] = float32(math.Inf(1))
	if quantizeQ45KPair(y, 144, x, 15) {
		t.Fatal("quantizeQ45KPair took a block holding +Inf")
	}
}
