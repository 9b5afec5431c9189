package stats

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// chunkSums adds a chunk's sums to acc, block by block, as tensorState.chunk does.
func chunkSums(acc []float64, in [][]float32, models int) {
	for off := 0; off < len(in[0]); off += block {
		blockSums(acc, in, off, min(off+block, len(in[0])), models)
	}
}

// chunkSumsPasses is chunkSums as it was before its passes were fused, the oracle of
// the lane order pairLanes documents: per block, Σ base² and each model's Σ τ² and
// each pair's Σ τa·τb as four-accumulator dot products over the block's τ, then the
// pair's sign counts.
func chunkSumsPasses(acc []float64, in [][]float32, models int) {
	base := in[0]
	n := len(base)
	tau := make([][]float32, models)
	for off := 0; off < n; off += block {
		end := min(off+block, n)
		b := base[off:end]
		acc[0] += dot4(b, b)
		for i := range models {
			tau[i] = tau[i][:0]
			for j, v := range in[1+i][off:end] {
				tau[i] = append(tau[i], v-b[j])
			}
			acc[1+i] += dot4(tau[i], tau[i])
		}
		p := 0
		for i := range models {
			for k := i + 1; k < models; k++ {
				var conflict, both uint32
				for j, x := range tau[i] {
					c, nz := signs(x, tau[k][j])
					conflict += c
					both += nz
				}
				s := 1 + models + 3*p
				acc[s] += dot4(tau[i], tau[k])
				acc[s+1] += float64(conflict)
				acc[s+2] += float64(both)
				p++
			}
		}
	}
}

// dot4 is Σ x·y in float64 on four accumulators, the tail on the first.
func dot4(x, y []float32) float64 {
	var s [4]float64
	j := 0
	for ; j+4 <= len(x); j += 4 {
		for k := range 4 {
			s[k] += float64(x[j+k]) * float64(y[j+k])
		}
	}
	for ; j < len(x); j++ {
		s[0] += float64(x[j]) * float64(y[j])
	}
	return (s[0] + s[1]) + (s[2] + s[3])
}

// randomInputs makes a base and models of n elements: values of every magnitude,
// with zeros, equal values (τ = 0), negative zeros and, if special, infinities and
// NaNs.
func randomInputs(rng *rand.Rand, models, n int, special bool) [][]float32 {
	in := make([][]float32, 1+models)
	for i := range in {
		in[i] = make([]float32, n)
		for j := range in[i] {
			v := float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(60)-30)))
			switch r := rng.IntN(50); {
			case r == 0:
				v = 0
			case r == 1:
				v = float32(math.Copysign(0, -1))
			case r < 6 && i > 0:
				v = in[0][j] // τ = 0
			case r == 6 && special:
				v = float32(math.Inf(1 - 2*rng.IntN(2)))
			case r == 7 && special:
				v = float32(math.NaN())
			}
			in[i][j] = v
		}
	}
	return in
}

// sameBits says whether a and b hold the same float64s, bit for bit (NaNs as NaN).
func sameBits(a, b []float64) bool {
	return slices.EqualFunc(a, b, func(x, y float64) bool {
		return math.Float64bits(x) == math.Float64bits(y) || math.IsNaN(x) && math.IsNaN(y)
	})
}

// TestChunkSumsMatchPasses checks that the fused chunkSums gives the separate
// passes' bits, for one to four models, chunk lengths that end a block at every
// remainder mod 8, with and without infinities and NaNs.
func TestChunkSumsMatchPasses(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 1))
	for models := 1; models <= 4; models++ {
		nStats, _ := statsLayout(models)
		for _, n := range []int{0, 1, 3, 4, 7, 8, 13, block, block + 5, 3*block + 2, 5*block - 1} {
			for _, special := range []bool{false, true} {
				in := randomInputs(rng, models, n, special)
				got, want := make([]float64, nStats), make([]float64, nStats)
				got[0], want[0] = 0.25, 0.25 // adds to what is there
				chunkSums(got, in, models)
				chunkSumsPasses(want, in, models)
				if !sameBits(got, want) {
					t.Errorf("models %d, n %d, special %v: chunkSums = %v, want %v", models, n, special, got, want)
				}
			}
		}
	}
}

// diffLanes says how a and b differ: a float64 lane's bits (NaNs as NaN) or a
// count's total ("" when they agree).
func diffLanes(a, b *pairLanes) string {
	for _, s := range []struct {
		name string
		a, b *[4]float64
	}{{"base", &a.base, &b.base}, {"sqA", &a.sqA, &b.sqA}, {"sqB", &a.sqB, &b.sqB}, {"dot", &a.dot, &b.dot}} {
		if !sameBits(s.a[:], s.b[:]) {
			return fmt.Sprintf("%s lanes %v, want %v", s.name, *s.a, *s.b)
		}
	}
	if count(&a.conflict) != count(&b.conflict) || count(&a.both) != count(&b.both) {
		return fmt.Sprintf("counts %v/%v, want %v/%v", count(&a.conflict), count(&a.both), count(&b.conflict), count(&b.both))
	}
	return ""
}

// FuzzAddPair compares addPair (the AVX2 kernel where it runs) with addPairGo on
// blocks made of the fuzzer's bytes: a base and two models of float32s.
func FuzzAddPair(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 12*17))
	seed := make([]byte, 12*40)
	for i := range seed {
		seed[i] = byte(i*37 + 11)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		n := min(len(data)/12, block)
		in := make([][]float32, 3)
		for i := range in {
			in[i] = make([]float32, n)
			for j := range n {
				in[i][j] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*(i*n+j):]))
			}
		}
		var got, want pairLanes
		addPair(in[0], in[1], in[2], &got)
		addPairGo(in[0], in[1], in[2], 0, &want)
		if msg := diffLanes(&got, &want); msg != "" {
			t.Fatal(msg)
		}
	})
}
