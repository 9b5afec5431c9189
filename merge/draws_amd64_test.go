//go:build !purego

package merge

import (
	"math/rand/v2"
	"testing"
)

// TestDrawsAsm: the AVX-512 draws are dareDraw's, bit for bit, for every length to
// a few hundred (the tail in Go), several lanes and keys, and offsets near 2^63.
func TestDrawsAsm(t *testing.T) {
	if !haveDareAVX512 {
		t.Skip("no AVX-512 DQ on this CPU: dellaDraws runs in Go")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for n := range 300 {
		key, lane := rng.Uint64(), rng.IntN(5)
		e0 := rng.Int64N(1 << 40)
		if n%7 == 0 {
			e0 = 1<<63 - 1 - int64(n) - rng.Int64N(16)
		}
		dst := make([]uint64, n)
		dellaDraws(dst, key, lane, e0)
		for j, u := range dst {
			if want := dareDraw(key, lane, e0+int64(j)); u != want {
				t.Fatalf("n %d j %d: %#x, dareDraw %#x", n, j, u, want)
			}
		}
	}
}
