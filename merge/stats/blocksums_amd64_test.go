//go:build !purego

package stats

import (
	"math/rand/v2"
	"testing"
)

// TestAddPairAsmMatchesGo compares the AVX2 block sums with addPairGo bit for bit,
// lane by lane, on lengths that leave every tail, added onto sums already there.
func TestAddPairAsmMatchesGo(t *testing.T) {
	if !haveAVX2 {
		t.Skip("no AVX2 on this CPU: the assembly is not used")
	}
	rng := rand.New(rand.NewPCG(19, 2))
	for n := 0; n <= 3*block; n += 1 + rng.IntN(n/4+1) {
		for _, special := range []bool{false, true} {
			in := randomInputs(rng, 2, n, special)
			start := pairLanes{base: [4]float64{1, 2, 3, 4}, dot: [4]float64{-1, 0, 0.5, 1e-30}, both: [8]uint32{3}}
			got, want := start, start
			addPair(in[0], in[1], in[2], &got)
			addPairGo(in[0], in[1], in[2], 0, &want)
			if msg := diffLanes(&got, &want); msg != "" {
				t.Fatalf("n %d, special %v: %s", n, special, msg)
			}
		}
	}
}
