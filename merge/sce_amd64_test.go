//go:build !purego

package merge

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSCEVariance512: the AVX-512 variances are the AVX2 kernel's bit for bit, NaN
// payloads included (the keys order NaNs by them, so a key must not depend on which
// kernel made it), at every length across the groups of sixteen and of four, for 1
// to 5 models; and the count of zero keys sceVarianceZeros returns is right.
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
				zeros := sceVarianceZeros(got, in)
				j := 0
				if n >= 4 {
					j = sceVarianceAsm(want, in)
				}
				sceVarianceRef(want[j:], in, j)
				wzeros := 0
				for j := range got {
					if got[j] != want[j] {
						t.Fatalf("%d models, %d elements, element %d: key %#x, AVX2 %#x", models, n, j, got[j], want[j])
					}
					wzeros += b2i(want[j] == 0)
				}
				if zeros != wzeros {
					t.Fatalf("%d models, %d elements: %d zero keys, want %d", models, n, zeros, wzeros)
				}
			}
		}
	}
}

// TestSCERange512: sceRange (AVX-512 where the CPU has it) is sceRangeRef: the count
// above hi and the keys in [lo, hi], in order, for lengths across the groups of
// sixteen and ranges from empty to every key, 0 and the largest key included.
func TestSCERange512(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 1))
	for _, n := range []int{0, 1, 15, 16, 17, 33, 64, 1000} {
		keys := make([]uint32, n)
		for j := range keys {
			keys[j] = []uint32{0, 1, 0x3f800000, 0x3f800001, 0x7fffffff, rng.Uint32() >> 1}[rng.IntN(6)]
		}
		for _, r := range [][2]uint32{{0, 0}, {1, 0x3f800000}, {0x3f800000, 0x3f800000}, {0, 0x7fffffff}, {5, 4}, {0x3f800001, 0x7ffffffe}} {
			above, got := sceRange(keys, r[0], r[1], make([]uint32, 3, 3+n+16))
			wabove, want := sceRangeRef(keys, r[0], r[1], make([]uint32, 3, 3+n+16))
			if above != wabove || !slices.Equal(got, want) {
				t.Fatalf("n=%d range %#x..%#x (AVX-512 %v): %d above and %v, want %d and %v", n, r[0], r[1], haveSCE512, above, got, wabove, want)
			}
		}
	}
}

// TestSCEMask512: the AVX-512 masks are the AVX2 kernel's (which TestSCEMaskAsm
// checks against sceMaskRef where the CPU has no AVX-512), with keys equal to t,
// next to it, 0 and the largest.
func TestSCEMask512(t *testing.T) {
	if !haveSCE512 || !haveTiesAsm {
		t.Skip("no AVX-512")
	}
	rng := rand.New(rand.NewPCG(4, 4))
	for _, words := range []int{1, 2, 7} {
		for _, tk := range []uint32{0, 1, 0x3f800000, 0x7fffffff} {
			keys := make([]uint32, 64*words)
			for j := range keys {
				keys[j] = []uint32{tk, tk + 1, tk - 1, 0, 0x7fffffff, rng.Uint32()}[rng.IntN(6)] &^ (1 << 31)
			}
			ga, ge, wa, we := make([]uint64, words), make([]uint64, words), make([]uint64, words), make([]uint64, words)
			sceMaskAVX512(&ga[0], &ge[0], &keys[0], words, tk)
			sceMaskAVX2(&wa[0], &we[0], &keys[0], words, tk)
			if !slices.Equal(ga, wa) || !slices.Equal(ge, we) {
				t.Fatalf("words=%d t=%#x: above %#x equal %#x, AVX2 %#x %#x", words, tk, ga, ge, wa, we)
			}
		}
	}
}

// TestSCEVarianceBF16: the keys from BF16 words (AVX-512 groups of sixteen, the
// rest decoded) are those of decoding the words and sceVarianceZeros, bit for bit,
// NaN payloads included, and so is the count of zero keys, at every length across
// the groups of sixteen and four, for 1 to 5 models, with special words (signalling
// and quiet NaNs of both signs, ±Inf, ±0, subnormals) dense and sparse.
func TestSCEVarianceBF16(t *testing.T) {
	if !haveSCE512 || !haveTiesAsm {
		t.Skip("no AVX-512")
	}
	rng := rand.New(rand.NewPCG(19, 4))
	for _, models := range []int{1, 2, 3, 4, 5} {
		for n := 0; n <= 80; n++ {
			for _, every := range []int{0, 8, 2} {
				var words [][]byte
				var vals [][]float32
				for range models + 1 {
					b, f := bf16TestWords(rng, n, every)
					words, vals = append(words, b), append(vals, f)
				}
				if every == 0 && n > 5 { // equal words: zero deltas, zero keys
					for _, w := range words[1:] {
						copy(w[:6], words[0])
					}
					for _, v := range vals[1:] {
						copy(v[:3], vals[0])
					}
				}
				got, want := make([]uint32, n), make([]uint32, n)
				zeros := sceVarianceZerosBF16(got, words[0], words[1:])
				wzeros := sceVarianceZeros(want, vals)
				if !slices.Equal(got, want) || zeros != wzeros {
					t.Fatalf("%d models, %d elements, every %d: keys %#x (%d zeros), decoded %#x (%d zeros)", models, n, every, got, zeros, want, wzeros)
				}
			}
		}
	}
}

// TestSCESquaresBF16Go: TestSCESquaresBF16's check with the masked sums' assembly
// off (the Go loop), and maskWithin, which decides where the assembly may run.
func TestSCESquaresBF16Go(t *testing.T) {
	defer func(v bool) { haveSCESquaresAsm = v }(haveSCESquaresAsm)
	haveSCESquaresAsm = false
	checkSCESquaresBF16(t)
	for _, c := range []struct {
		mask []uint64
		n    int
		want bool
	}{
		{[]uint64{1 << 63}, 64, true},
		{[]uint64{1 << 63}, 63, false},
		{[]uint64{1 << 62}, 63, true},
		{[]uint64{1, 0}, 64, false}, // a word past n, even empty
		{[]uint64{1}, 65, true},     // fewer words than n needs
		{[]uint64{0, 1 << 1}, 65, false},
		{[]uint64{0, 1}, 65, true},
	} {
		if got := maskWithin(c.mask, c.n); got != c.want {
			t.Errorf("maskWithin(%#x, %d) = %v, want %v", c.mask, c.n, got, c.want)
		}
	}
}
