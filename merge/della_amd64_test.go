//go:build !purego

package merge

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestDellaAsmMatchesGo: DELLA's rank kernels (magnitudes and the row's largest
// bucket, buckets and the lowest one, the bucket decisions, with draws on thresholds,
// sharing their top 32 bits, on the bounds and next to them) give their Go loops' results bit for bit, on rows of every length to 70 and a few longer, with ±0, NaN
// (with payloads), ±Inf, subnormals, ties and magnitudes over many octaves.
func TestDellaAsmMatchesGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 on this CPU; the Go loops are the only path")
	}
	defer func(a, b bool) { haveTiesAsm, haveDellaAVX512 = a, b }(haveTiesAsm, haveDellaAVX512)
	have512 := haveDellaAVX512
	if !have512 {
		t.Log("no AVX-512 on this CPU: the decisions' kernel is not tested")
	}
	rng := rand.New(rand.NewPCG(5, 17))
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.NaN()), math.Float32frombits(0x7fc12345),
		math.Float32frombits(0xffa00001), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-40, -3e-39, 1e30, 1.5}
	val := func() float32 {
		switch r := rng.IntN(12); {
		case r == 0:
			return special[rng.IntN(len(special))]
		case r < 3:
			return math.Float32frombits(math.Float32bits(float32(rng.NormFloat64())) &^ 0xffff) // BF16: ties
		default:
			return float32(rng.NormFloat64() * math.Exp2(float64(rng.IntN(60)-30)))
		}
	}
	lengths := []int{}
	for n := 1; n <= 70; n++ {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 255, 2048, 2051)
	for _, n := range lengths {
		for round := range 3 {
			base, x := make([]float32, n), make([]float32, n)
			for j := range base {
				base[j], x[j] = val(), val()
				if round == 1 && rng.IntN(3) == 0 {
					x[j] = base[j] // δ = 0: bucket 0
				}
			}
			type result struct {
				mags  []uint32
				top   uint32
				bk    []uint16
				start []int32
				low   int
				keep  []bool
				undec []int32
			}
			// DELLA's thresholds and their bounds (ε 0.15 and 0.45), draws on them,
			// one off their top 32 bits and sharing those; then bounds on whole
			// numbers (c whole or a half), draws on them and next to them, so that
			// the compares' < and ≤ matter.
			var (
				tb    *thresholdBounds
				draws = make([]uint64, n)
			)
			if round < 2 {
				thr := dellaThresholds([]float64{0.5}, []float64{0.15, 0.45}[round], int64(n))[0]
				tb = newThresholdBounds(thr)
				for j := range draws {
					u := thr[rng.IntN(n)]
					switch rng.IntN(6) {
					case 0:
						u = rng.Uint64()
					case 1:
						u ^= uint64(rng.Uint32())
					case 2:
						u += 1 << 32
					case 3:
						u -= 1 << 32
					}
					draws[j] = u
				}
			} else {
				c := float64(rng.IntN(1<<20)) + 0.5*float64(rng.IntN(2))
				tb = &thresholdBounds{c: c, lo: float64(rng.IntN(1 << 30))}
				tb.hi = tb.lo + float64(rng.IntN(4))
				for j := range draws {
					v := uint64(tb.lo + float64(rng.IntN(n+1))*c)
					draws[j] = (v+uint64(rng.IntN(5))-2)<<32 | uint64(rng.Uint32())
				}
			}
			run := func(asm, asm512 bool) result {
				haveTiesAsm, haveDellaAVX512 = asm, asm512 && have512
				r := result{mags: make([]uint32, n), bk: make([]uint16, n), start: make([]int32, dellaBuckets+1), keep: make([]bool, n)}
				r.top = rowMagnitudes(r.mags, base, x)
				r.low = bucketCounts(r.bk, r.start, r.mags, int64(r.top)-(dellaBuckets-1))
				prefixCounts(r.start[r.low:])
				r.undec = decideBuckets(r.keep, make([]int32, 0, n), draws, r.bk, r.start, tb)
				return r
			}
			want, got := run(false, false), run(true, true)
			switch {
			case !slices.Equal(got.mags, want.mags) || got.top != want.top:
				t.Fatalf("n=%d: magnitudes differ (top %d, want %d)", n, got.top, want.top)
			case !slices.Equal(got.bk, want.bk) || got.low != want.low || !slices.Equal(got.start, want.start):
				t.Fatalf("n=%d: buckets differ (lowest %d, want %d)", n, got.low, want.low)
			case !slices.Equal(got.keep, want.keep) || !slices.Equal(got.undec, want.undec):
				t.Fatalf("n=%d: decisions differ: keep %v, want %v; undecided %v, want %v", n, got.keep, want.keep, got.undec, want.undec)
			}
		}
	}
}

// TestBucketRankAsmMatchesGo: bucketRank's AVX-512 count gives the loop's, for every
// entry of rows with a tail and without, few buckets (so many entries share one) and
// many (so most blocks hold none of the entry's), equal magnitudes before and after
// the entry.
func TestBucketRankAsmMatchesGo(t *testing.T) {
	if !haveDellaAVX512 {
		t.Skip("no AVX-512 on this CPU; the loop is the only path")
	}
	defer func(a bool) { haveDellaAVX512 = a }(haveDellaAVX512)
	rng := rand.New(rand.NewPCG(3, 31))
	for _, n := range []int{1, 15, 16, 17, 31, 32, 33, 63, 64, 100, 2048, 2051} {
		for _, spread := range []bool{false, true} {
			bk, mags := make([]uint16, n), make([]uint32, n)
			for k := range bk {
				bk[k], mags[k] = uint16(rng.IntN(3)), uint32(rng.IntN(4))<<30|uint32(rng.IntN(3))
				if rng.IntN(5) == 0 {
					bk[k] = dellaBuckets - 1
				}
				if spread { // most blocks of 32 without the entry's bucket
					bk[k] = uint16(rng.IntN(dellaBuckets))
				}
			}
			for r := range n {
				haveDellaAVX512 = false
				want := bucketRank(bk, mags, bk[r], r)
				haveDellaAVX512 = true
				if got := bucketRank(bk, mags, bk[r], r); got != want {
					t.Fatalf("n=%d, entry %d (bucket %d, magnitude %#x): %d before it, want %d", n, r, bk[r], mags[r], got, want)
				}
			}
		}
	}
}

// TestDellaBF16AVX2: where the CPU has AVX-512, della's magnitudes from BF16 words
// run sixteen lanes at a time (the AVX2 loop only on a multiple of 8 left over), its
// ranking pass adds the models' L1 sums together from their words, and its merge
// from words is bandMerge's; this runs their tests with every AVX-512 switch off
// (the rank kernels' too), the paths of a CPU without it: the AVX2 loops, the sums
// a model at a time, della's own merge blocks.
func TestDellaBF16AVX2(t *testing.T) {
	if !haveDellaAVX512 || !haveTiesBF16AVX512 || !haveAVX512BW {
		t.Skip("no AVX-512 on this CPU: the AVX2 loops are the ones the other tests run")
	}
	haveDellaAVX512, haveTiesBF16AVX512, haveAVX512BW = false, false, false
	defer func() { haveDellaAVX512, haveTiesBF16AVX512, haveAVX512BW = true, true, true }()
	t.Run("magnitudes", TestRowMagnitudesBF16)
	t.Run("ranking pass", TestDellaFusedMatchesDecoded)
	t.Run("merge", TestDellaKernelFusedMatchesDecoded)
}
