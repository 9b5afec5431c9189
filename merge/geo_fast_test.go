package merge

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
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

// nanPayloadsVary: builds where which NaN payload survives is the compiler's choice
// at each call site, so two compilations of the same Go loop may differ in it. Under
// the race detector (see raceBuild), and where there is no assembly (other
// architectures, purego): there the "fast path" is the Go loop itself, inlined
// elsewhere, and an addition keeps the payload of whichever NaN operand the compiler
// put first (arm64's FADD, SSE's ADDSS alike).
var nanPayloadsVary = raceBuild || !haveLerpBF16Asm

// sameBits32 and sameBits64 say whether a fast path's value is its reference's bit
// for bit; where NaN payloads vary (nanPayloadsVary) two NaNs count as the same, as
// the assembly against the Go loop is what the comparisons are about.
func sameBits32(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || nanPayloadsVary && a != a && b != b
}

func sameBits64(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || nanPayloadsVary && a != a && b != b
}

// ramCountOne and ramMergeOne are ram's pass and merge a element at a time, with a
// branch per model (the loops ramCountChunk and ramMergeChunk replaced): the
// reference they must match bit for bit.
func ramCountOne(base []float32, x [][]float32, eps float64, acc []float64) {
	for j := range base {
		count := 0
		for i := range x {
			count += b2i(ramCounts(x[i][j], base[j], eps))
		}
		for i := range x {
			if ramCounts(x[i][j], base[j], eps) {
				acc[2*i+b2i(count == 1)]++
			}
		}
	}
}

func ramMergeOne(dst, base []float32, x [][]float32, eps float64, lambda []float32) {
	for j := range dst {
		count := 0
		for i := range x {
			count += b2i(ramCounts(x[i][j], base[j], eps))
		}
		var sum float32
		for i := range x {
			if !ramCounts(x[i][j], base[j], eps) {
				continue
			}
			d := float32(float64(x[i][j]) - float64(base[j]))
			if count == 1 {
				sum += float32(lambda[i] * d)
			} else {
				sum += d / float32(count)
			}
		}
		dst[j] = base[j] + sum
	}
}

// TestRAMChunkMatchesOneAtATime: the blocked, branch-free loops give the
// element-at-a-time loops' counts and bits, for 1 to 5 models, with entries that
// count, do not, and sit on the threshold, and the special values.
func TestRAMChunkMatchesOneAtATime(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 5))
	for n := 1; n <= 5; n++ {
		for _, eps := range []float64{1e-5, 0, 0.01} {
			m := 1 + rng.IntN(3*ramBlock)
			base := fastTestValues(rng, m)
			x := make([][]float32, n)
			lambda := make([]float32, n)
			for i := range x {
				x[i] = fastTestValues(rng, m)
				for j := range x[i] {
					switch rng.IntN(4) {
					case 0:
						x[i][j] = base[j] // does not count
					case 1:
						x[i][j] = base[j] + float32(eps) // near the threshold
					}
				}
				lambda[i] = 1 + float32(rng.Float64()*0.02)
			}
			s := newRAMScratch(n)
			got, want := make([]float64, 2*n), make([]float64, 2*n)
			ramCountChunk(base, x, eps, s, got)
			ramCountOne(base, x, eps, want)
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("n %d eps %g: count %d: %v, want %v", n, eps, i, got[i], want[i])
				}
			}
			gotM, wantM := make([]float32, m), make([]float32, m)
			ramMergeChunk(gotM, base, x, eps, lambda, s)
			ramMergeOne(wantM, base, x, eps, lambda)
			for j := range gotM {
				if !sameBits32(gotM[j], wantM[j]) {
					t.Fatalf("n %d eps %g: element %d: %v, want %v", n, eps, j, gotM[j], wantM[j])
				}
			}
		}
	}
}

// TestNearswapMergeMatchesGo: nearswapMerge (AVX2 where the CPU has it) gives
// nearswapGo's bits, and the kernel's path from BF16 words (AVX-512) the words of
// decoding, nearswapGo and encoding, on lengths that leave tails, with differences
// below, at and above t and 1e-6, NaNs and infinities (whose blocks go to Go), and
// values of t that keep the assembly out (0, negative, infinite, NaN).
func TestNearswapMergeMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 6))
	for _, n := range []int{1, 8, 13, 64, 1001, ChunkElems} {
		a := fastTestValues(rng, n)
		b := make([]float32, n)
		for j := range b {
			switch rng.IntN(5) {
			case 0:
				b[j] = a[j]
			case 1:
				b[j] = a[j] + float32(rng.NormFloat64()*1e-4)
			case 2:
				b[j] = a[j] + float32(rng.NormFloat64()*1e-6)
			default:
				b[j] = fastTestValues(rng, 1)[0]
			}
		}
		for _, tv := range []float64{1e-4, 1e-3, 3e-6, 1e-7, 0.5, 1e300, 1e-320, 0, -1e-4, math.Inf(1), math.NaN()} {
			got, want := make([]float32, n), make([]float32, n)
			nearswapMerge(got, a, b, tv)
			nearswapGo(want, a, b, tv)
			for j := range got {
				if !sameBits32(got[j], want[j]) {
					t.Fatalf("n %d t %g: element %d (a %v, b %v): %v, want %v", n, tv, j, a[j], b[j], got[j], want[j])
				}
			}
			// The kernel's path from BF16 words (AVX-512 where the CPU has it) gives
			// the words of decoding, nearswapGo and encoding, and declines where t
			// keeps the assembly out.
			aw, bw := make([]byte, 2*n), make([]byte, 2*n)
			must(t, dtype.Encode(aw, a, dtype.BF16))
			must(t, dtype.Encode(bw, b, dtype.BF16))
			a16, b16 := make([]float32, n), make([]float32, n)
			must(t, dtype.Decode(a16, aw, dtype.BF16))
			must(t, dtype.Decode(b16, bw, dtype.BF16))
			nearswapGo(want, a16, b16, tv)
			wantWords := make([]byte, 2*n)
			must(t, dtype.Encode(wantWords, want, dtype.BF16))
			k := nearswapKernel(&methodRun{p: Params{T: tv}}, nil)
			gotWords := make([]byte, 2*n)
			ops := []Operand{{DType: dtype.BF16, Data: aw}, {DType: dtype.BF16, Data: bw}}
			fused := k.Fused(gotWords, dtype.BF16, ops, nil, Chunk{})
			if wantFused := haveAVX512BW && tv > 0 && tv <= math.MaxFloat64; fused != wantFused {
				t.Fatalf("n %d t %g: the BF16 path took the chunk: %v, want %v", n, tv, fused, wantFused)
			}
			if fused && !bytes.Equal(gotWords, wantWords) {
				for j := 0; j < n; j++ {
					if gotWords[2*j] != wantWords[2*j] || gotWords[2*j+1] != wantWords[2*j+1] {
						t.Fatalf("n %d t %g: BF16 element %d (a %v, b %v): %#04x, want %#04x", n, tv, j, a16[j], b16[j],
							uint16(gotWords[2*j])|uint16(gotWords[2*j+1])<<8, uint16(wantWords[2*j])|uint16(wantWords[2*j+1])<<8)
					}
				}
			}
		}
	}
}

// TestArceeKLMatchesGo: arceeKL (the logarithm in AVX2 where the CPU has it) gives
// the plain loop's bits, on rows of softmax exponentials like arceeRowStats' and on
// rows with the values that send a block to Go (NaN, infinities, a zero sum), on
// lengths that leave tails.
func TestArceeKLMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 7))
	for _, n := range []int{1, 3, 4, 7, 64, 1001, 4096} {
		for trial := range 6 {
			x, b := fastTestValues(rng, n), fastTestValues(rng, n)
			ex, eb := make([]float64, n), make([]float64, n)
			var zx, zb float64
			for j := range ex {
				if trial < 3 { // finite rows of several scales: no special case
					x[j] = float32(rng.NormFloat64() * math.Pow(10, float64(trial-1)))
					b[j] = x[j] + float32(rng.NormFloat64()*0.01)
				}
				ex[j] = math.Exp(float64(x[j]) - 1)
				eb[j] = math.Exp(float64(b[j]) - 1)
				zx += ex[j]
				zb += eb[j]
			}
			if trial == 5 {
				zb = 0
			}
			var want float64
			for j := range ex {
				want += arceeKLTerm(ex[j], eb[j], zx, zb)
			}
			if got := arceeKL(ex, eb, zx, zb); !sameBits64(got, want) {
				t.Errorf("n %d trial %d: %v, want %v", n, trial, got, want)
			}
		}
	}
	// math.Log over p/q of every scale the divergence can meet, a term each.
	for range 20000 {
		ex, eb := math.Pow(10, rng.Float64()*20-10), math.Pow(10, rng.Float64()*20-10)
		zx, zb := math.Pow(10, rng.Float64()*4), math.Pow(10, rng.Float64()*4)
		e4, b4 := []float64{ex, eb, 1, ex * 3}, []float64{eb, ex, 1, eb / 7}
		var want float64
		for j := range e4 {
			want += arceeKLTerm(e4[j], b4[j], zx, zb)
		}
		if got := arceeKL(e4, b4, zx, zb); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("ex %v eb %v zx %v zb %v: %v, want %v", ex, eb, zx, zb, got, want)
		}
	}
}

// TestArceeExpMatchesGo: arceeExp (the exponential in AVX2 where the CPU has it)
// gives math.Exp's bits and the plain loop's sum, over arguments of every scale up
// to math.Exp's overflow and subnormal paths and past them (those blocks go to Go),
// NaNs and infinities, on lengths that leave tails.
func TestArceeExpMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 8))
	for _, n := range []int{1, 3, 4, 9, 64, 1001, 4096} {
		for trial := range 4 {
			src := fastTestValues(rng, n)
			for j := range src {
				switch trial {
				case 0:
					src[j] = float32(rng.NormFloat64() * 0.05)
				case 1:
					src[j] = float32(rng.Float64()*1500 - 750) // across ±708
				case 2:
					src[j] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(6)-3)))
				}
			}
			m := float64(src[rng.IntN(n)])
			if m != m || math.IsInf(m, 0) {
				m = 0.5
			}
			got, want := make([]float64, n), make([]float64, n)
			z := arceeExp(got, src, m)
			var wz float64
			for j := range want {
				want[j] = math.Exp(float64(src[j]) - m)
				wz += want[j]
			}
			for j := range got {
				if !sameBits64(got[j], want[j]) {
					t.Fatalf("n %d trial %d: exp(%v − %v) = %v, want %v", n, trial, src[j], m, got[j], want[j])
				}
			}
			if !sameBits64(z, wz) {
				t.Errorf("n %d trial %d: sum %v, want %v", n, trial, z, wz)
			}
		}
	}
	// Every float32 argument scale, m = 0: 2^20 values spread over the exponent range.
	src := make([]float32, 1<<16)
	got := make([]float64, len(src))
	for round := range 16 {
		for j := range src {
			src[j] = math.Float32frombits(uint32(rng.Uint64()) &^ (1 << 31 * uint32(round&1)))
		}
		arceeExp(got, src, 0)
		for j, v := range src {
			if want := math.Exp(float64(v)); math.Float64bits(got[j]) != math.Float64bits(want) {
				t.Fatalf("exp(%v) = %v, want %v", v, got[j], want)
			}
		}
	}
}

// TestAddScaledMatchesGo: addScaled (AVX2 where the CPU has it) gives addScaledGo's
// bits, with a base and without, on lengths that leave tails and the special values
// (NaN compared as NaN: the two may keep different payloads of it).
func TestAddScaledMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 9))
	nans := []float32{math.Float32frombits(0x7fc00001), math.Float32frombits(0xffa00002), float32(math.Inf(1)),
		float32(math.Inf(-1)), 1.5, math.Float32frombits(0x7f800003)}
	for _, n := range []int{1, 7, 8, 13, 64, 1001, ChunkElems, 4096} {
		x, b, d := fastTestValues(rng, n), fastTestValues(rng, n), fastTestValues(rng, n)
		if n == 4096 { // NaNs of several payloads (a signalling one too) meeting each other
			for j := range x {
				x[j], b[j], d[j] = nans[rng.IntN(len(nans))], nans[rng.IntN(len(nans))], nans[rng.IntN(len(nans))]
			}
		}
		for _, w := range []float32{0.3, -1.7, 0, 1e-30, 3e30, math.Float32frombits(0x7fc00005)} {
			for _, base := range [][]float32{nil, b} {
				got, want := append([]float32(nil), d...), append([]float32(nil), d...)
				addScaled(got, x, base, w)
				addScaledGo(want, x, base, w)
				for j := range got {
					if !sameBits32(got[j], want[j]) {
						t.Fatalf("n %d w %v base %v: element %d: %v, want %v", n, w, base != nil, j, got[j], want[j])
					}
				}
			}
		}
	}
}
