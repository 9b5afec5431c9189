package merge

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// arceeTestKLs are row divergences the keys and the selection meet: zero, ordinary
// sizes, a slightly negative rounding, overflow scales and the special values.
var arceeTestKLs = []float64{0, 1e-3, 0.37, 5, -1e-9, 1e30, math.Inf(1), math.NaN()}

// TestArceeKeysMatchesGo: arceeKeys (eight at a time in AVX2 where the CPU has it)
// gives the plain loop's order keys, on lengths that leave tails and rows with NaN,
// infinities, zeros of both signs and subnormals (the NaN blocks go to Go). Where
// the divergence itself is NaN, a NaN difference meets a NaN factor and which
// payload the product keeps is each compilation's choice, so those two keys count
// as the same when both are NaNs.
func TestArceeKeysMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 9))
	for _, n := range []int{1, 7, 8, 9, 63, 64, 1001, 4096} {
		for _, kl := range arceeTestKLs {
			x, b := fastTestValues(rng, n), fastTestValues(rng, n)
			got := make([]uint32, n)
			arceeKeys(got, x, b, kl)
			for j := range got {
				want := orderKey(arceeImportance(x[j], b[j], kl))
				g, w := orderValue(got[j]), orderValue(want)
				if got[j] != want && !((nanPayloadsVary || kl != kl) && g != g && w != w) {
					t.Fatalf("n %d kl %v: element %d (x %v, b %v): key %#x, want %#x", n, kl, j, x[j], b[j], got[j], want)
				}
			}
		}
	}
}

// TestArceeSelectMatchesGo: arceeSelect (four at a time in AVX2 where the CPU has
// it) takes the same input as the plain loop for every element, thresholds equal to
// some importances included (where ≥ decides), and NaN, infinite and signed-zero
// thresholds; the output is an input's bits, so the comparison is strict.
func TestArceeSelectMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 10))
	for _, n := range []int{1, 3, 4, 5, 64, 1001, 4096} {
		for _, kl := range arceeTestKLs {
			x, b := fastTestValues(rng, n), fastTestValues(rng, n)
			thresholds := []float64{0, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.NaN()}
			for range 4 {
				j := rng.IntN(n)
				thresholds = append(thresholds, float64(arceeImportance(x[j], b[j], kl)))
			}
			for _, th := range thresholds {
				got, want := make([]float32, n), make([]float32, n)
				arceeSelect(got, x, b, kl, th)
				arceeSelectGo(want, x, b, kl, th)
				for j := range got {
					if math.Float32bits(got[j]) != math.Float32bits(want[j]) {
						t.Fatalf("n %d kl %v t %v: element %d (x %v, b %v): %v, want %v", n, kl, th, j, x[j], b[j], got[j], want[j])
					}
				}
				var tookX int
				for j := range want {
					if float64(arceeImportance(x[j], b[j], kl)) >= th {
						tookX++
					}
				}
				if th == 0 && kl == 5 && tookX == 0 {
					t.Errorf("n %d: threshold 0 took no model value: the case tells nothing", n)
				}
			}
		}
	}
}

// TestArceeSelectBF16MatchesGo: arceeSelectBF16 (the fused merge's, sixteen words at
// a time in AVX-512 where the CPU has it) gives the words that decoding, arceeSelect
// and encoding give, on lengths that leave tails, with NaNs (quiet and signalling,
// which encoding makes quiet), infinities, zeros of both signs and subnormals, and
// thresholds equal to some importances.
func TestArceeSelectBF16MatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 19))
	special := []uint16{0x7FC0, 0x7F81, 0xFF81, 0xFFC1, 0x7F80, 0xFF80, 0, 0x8000, 0x0001, 0x8003}
	word := func() uint16 {
		if rng.IntN(20) == 0 {
			return special[rng.IntN(len(special))]
		}
		return dtype.Float32ToBF16(float32(rng.NormFloat64() * 0.02))
	}
	for _, n := range []int{1, 15, 16, 17, 64, 1001} {
		for _, kl := range arceeTestKLs {
			x, b := make([]uint16, n), make([]uint16, n)
			fx, fb := make([]float32, n), make([]float32, n)
			for j := range x {
				x[j], b[j] = word(), word()
				fx[j], fb[j] = dtype.BF16ToFloat32(x[j]), dtype.BF16ToFloat32(b[j])
			}
			thresholds := []float64{0, math.Inf(1), math.NaN()}
			for range 3 {
				j := rng.IntN(n)
				thresholds = append(thresholds, float64(arceeImportance(fx[j], fb[j], kl)))
			}
			for _, th := range thresholds {
				sel := make([]float32, n)
				arceeSelect(sel, fx, fb, kl, th)
				got := make([]uint16, n)
				arceeSelectBF16(got, x, b, kl, th)
				for j := range got {
					if want := dtype.Float32ToBF16(sel[j]); got[j] != want {
						t.Fatalf("n %d kl %v t %v: word %d (x %#x, b %#x): %#x, want %#x", n, kl, th, j, x[j], b[j], got[j], want)
					}
				}
			}
		}
	}
}

// TestArceeMaxMatchesGo: arceeMax (eight at a time in AVX2 where the CPU has it)
// gives Go's max over the widened values, rows with a NaN, infinities and a maximum
// of ±0 (the rows the assembly leaves to Go) included, on lengths that leave tails.
func TestArceeMaxMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 11))
	ref := func(v []float32) float64 {
		m := float64(v[0])
		for _, f := range v {
			m = max(m, float64(f))
		}
		return m
	}
	negZero := float32(math.Copysign(0, -1))
	for _, n := range []int{1, 7, 8, 9, 16, 17, 1001, 5632} {
		for trial := range 8 {
			x, b := make([]float32, n), make([]float32, n)
			for j := range x {
				x[j] = float32(rng.NormFloat64())
				b[j] = -float32(math.Abs(rng.NormFloat64())) - 1
			}
			switch trial {
			case 1:
				x[rng.IntN(n)] = float32(math.NaN())
			case 2:
				b[rng.IntN(n)] = float32(math.Inf(1))
			case 3: // maxima ±0: all negative but one or two zeros
				for j := range x {
					x[j] = -float32(math.Abs(rng.NormFloat64())) - 1
				}
				x[rng.IntN(n)], x[rng.IntN(n)] = negZero, 0
				b[rng.IntN(n)] = negZero
			case 4:
				x = fastTestValues(rng, n)
				b = fastTestValues(rng, n)
			case 5: // the maximum in the tail
				x[n-1], b[n-1] = 1e30, 7
			case 6:
				x[n-1] = float32(math.NaN())
			}
			mx, mb := arceeMax(x, b)
			if want := ref(x); !sameBits64(mx, want) {
				t.Errorf("n %d trial %d: max θ %v, want %v", n, trial, mx, want)
			}
			if want := ref(b); !sameBits64(mb, want) {
				t.Errorf("n %d trial %d: max θ_base %v, want %v", n, trial, mb, want)
			}
		}
	}
}

// TestArceeFusionLongRows: the kernel against the sorted reference on rows of
// the length of a llama MLP's down projection (5,632: most rows lie whole in a chunk,
// where pass 1 does their keys, some straddle two) and on a tensor of whole rows
// only (passes 2 to 4 skipped), two threads.
func TestArceeFusionLongRows(t *testing.T) {
	shapes := map[string][]int64{"down.weight": {30, 5632}, "wide.weight": {40, 2048}}
	names := []string{"down.weight", "wide.weight"}
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		rng := rand.New(rand.NewPCG(41, 3))
		base := randomCkptOf(rng, dt, shapes, names, nil, 0.05)
		model := randomCkptOf(rng, dt, shapes, names, base, 0.02)
		got := runMethodFiles(t, dt, "arcee_fusion", Params{}, base, []*ckpt{model}, nil, nil, 2)
		for _, name := range names {
			want := arceeFusionRef(shapes[name], base.vals[name], model.vals[name])
			if !slicesEqualBits(got[name], want) {
				t.Errorf("%s %s: differs from the sorted reference", dt, name)
			}
			var kept int
			for j := range want {
				if want[j] != base.vals[name][j] {
					kept++
				}
			}
			if kept == 0 || kept == len(want) {
				t.Errorf("%s %s: the threshold keeps %d of %d: the case tells nothing", dt, name, kept, len(want))
			}
		}
	}
}

// TestArceeInBinsMatchesGo: arceeInBins (skipping blocks with AVX2 where the CPU has
// it) finds the same low halves, in the same order, as the plain loop, with bins that
// coincide, bins no key has, and matches in the tail.
func TestArceeInBinsMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 12))
	for _, n := range []int{1, 7, 8, 9, 64, 1001, 4096} {
		keys := make([]uint32, n)
		for j := range keys {
			keys[j] = uint32(rng.IntN(40))<<16 | uint32(rng.IntN(1<<16))
		}
		for _, bins := range [][3]uint32{{3, 17, 39}, {5, 5, 5}, {1000, 1001, 0}, {keys[n-1] >> 16, 1000, 1000}} {
			var got, want [3][]uint32
			arceeInBins(&got, keys, &bins)
			arceeInBinsGo(&want, keys, &bins)
			var total int
			for q := range got {
				total += len(want[q])
				if !slices.Equal(got[q], want[q]) {
					t.Fatalf("n %d bins %v: quantile %d: %v, want %v", n, bins, q, got[q], want[q])
				}
			}
			if bins[0] == 3 && n >= 1001 && total == 0 {
				t.Errorf("n %d: no key in the bins: the case tells nothing", n)
			}
		}
	}
}

// TestArceeKeysInBinsMatchesGo: arceeKeysInBins (keys and the bins' test in one
// AVX-512 step where the CPU has it) finds the same keys, in the same order, as
// arceeKeys then the plain arceeInBinsGo, on lengths that leave tails, rows with
// NaN, infinities, zeros and subnormals (the NaN blocks go to Go), bins that
// coincide, bins no key has, and entries already in found.
func TestArceeKeysInBinsMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for _, n := range []int{1, 8, 15, 16, 17, 40, 1001, 4096} {
		for _, kl := range arceeTestKLs[:7] { // a NaN divergence: payloads are the compiler's
			x, b := fastTestValues(rng, n), fastTestValues(rng, n)
			keys := make([]uint32, n)
			arceeKeys(keys, x, b, kl)
			checkKeysInBins(t, fmt.Sprintf("n %d kl %v", n, kl), rng, keys, func(found *[3][]uint32, bins *[3]uint32) {
				arceeKeysInBins(found, make([]uint32, n), x, b, kl, bins)
			})
		}
	}
}

// checkKeysInBins runs inBins, which appends to found the keys of keys whose top 16
// bits are a bin's, with bins some key has, bins that coincide and bins no key has,
// each with an entry already in found, and fails the test where it finds other keys
// than arceeInBinsGo, or in another order.
func checkKeysInBins(t *testing.T, name string, rng *rand.Rand, keys []uint32, inBins func(found *[3][]uint32, bins *[3]uint32)) {
	t.Helper()
	n := len(keys)
	common := keys[rng.IntN(n)] >> 16 // a bin some key has
	for _, bins := range [][3]uint32{{common, keys[0] >> 16, keys[n-1] >> 16}, {common, common, common}, {1, 2, 3}} {
		var got, want [3][]uint32
		for q := range got {
			got[q], want[q] = []uint32{7}, []uint32{7}
		}
		inBins(&got, &bins)
		arceeInBinsGo(&want, keys, &bins)
		for q := range got {
			if !slices.Equal(got[q], want[q]) {
				t.Fatalf("%s bins %v: quantile %d: %v, want %v", name, bins, q, got[q], want[q])
			}
		}
	}
}

// TestArceeKeysInBinsBF16MatchesGo: arceeKeysInBinsBF16 (pass 5 from BF16 words, in
// AVX-512 where the CPU has it) finds the same keys, in the same order, as widening
// the words and calling arceeKeys then the plain arceeInBinsGo, on lengths that
// leave tails, words of every kind (NaNs quiet and signalling, infinities, zeros of
// both signs, subnormals: the blocks with a NaN difference go to Go), bins that
// coincide, bins no key has, and entries already in found. Where the CPU has
// AVX-512, words without NaNs must all go through the assembly (else a kernel that
// did nothing would pass, the Go path giving the same keys); elsewhere this checks
// the Go path alone.
func TestArceeKeysInBinsBF16MatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 20))
	special := []uint16{0x7FC0, 0x7F81, 0xFF81, 0xFFC1, 0x7F80, 0xFF80, 0, 0x8000, 0x0001, 0x8003}
	word := func(every int) uint16 {
		if every > 0 && rng.IntN(every) == 0 {
			return special[rng.IntN(len(special))]
		}
		return dtype.Float32ToBF16(float32(rng.NormFloat64() * 0.02))
	}
	for _, every := range []int{0, 40, 3} {
		for _, n := range []int{1, 8, 15, 16, 17, 40, 1001, 4096} {
			for _, kl := range arceeTestKLs[:7] { // a NaN divergence: payloads are the compiler's
				x, b := make([]uint16, n), make([]uint16, n)
				fx, fb := make([]float32, n), make([]float32, n)
				for j := range x {
					x[j], b[j] = word(every), word(every)
					fx[j], fb[j] = dtype.BF16ToFloat32(x[j]), dtype.BF16ToFloat32(b[j])
				}
				keys := make([]uint32, n)
				arceeKeysGo(keys, fx, fb, kl)
				checkKeysInBins(t, fmt.Sprintf("specials 1 in %d, n %d kl %v", every, n, kl), rng, keys, func(found *[3][]uint32, bins *[3]uint32) {
					arceeKeysInBinsBF16(found, x, b, kl, bins)
				})
				if haveArceeKeys512 && every == 0 { // no NaN difference: the assembly takes every whole block
					var found [3][]uint32
					bins := [3]uint32{keys[0] >> 16, keys[0] >> 16, keys[0] >> 16}
					if did := arceeKeysInBinsBF16Asm(&found, x, b, kl, &bins); did != n&^15 {
						t.Fatalf("n %d kl %v: the assembly did %d elements, want %d", n, kl, did, n&^15)
					}
				}
			}
		}
	}
}

// TestArceeStatsRows: arceeStats.rows (a group of rows at once: exponentials in
// AVX2 or AVX-512 where the CPU has them, the sums of up to eight rows interleaved,
// the divergence's terms in place) gives each row's plain statement bit for bit
// (arceeMax, math.Exp, sums in order, arceeKLTerm), for groups of 1 to 8 rows,
// lengths that leave tails, rows whose blocks go to Go (arguments past ±708, NaN,
// infinities, subnormals) and rows of fastTestValues.
func TestArceeStatsRows(t *testing.T) { checkArceeStatsRows(t) }

// checkArceeStatsRows is TestArceeStatsRows's body, which the amd64 tests run once
// more with the AVX2 loops where the CPU has AVX-512.
func checkArceeStatsRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 13))
	for _, n := range []int{1, 3, 4, 9, 64, 1001, 2048} {
		for g := 1; g <= arceeGroup; g++ {
			for trial := range 4 {
				xs, bs := make([][]float32, g), make([][]float32, g)
				for i := range g {
					x, b := make([]float32, n), make([]float32, n)
					for j := range x {
						x[j] = float32(rng.NormFloat64() * 0.05)
						b[j] = float32(rng.NormFloat64() * 3)
					}
					switch trial {
					case 1:
						b[rng.IntN(n)] = -800 // b's block past −708, x's fine
					case 2:
						x[rng.IntN(n)] = float32(math.NaN())
					case 3:
						x, b = fastTestValues(rng, n), fastTestValues(rng, n)
					}
					xs[i], bs[i] = x, b
				}
				st := newArceeStats(int64(g) + 2)
				st.rows(1, xs, bs, make([]float64, 2*g*n))
				for i := range g {
					want := arceeRowStatsRef(xs[i], bs[i])
					got := [5]float64{st.mx[1+i], st.mb[1+i], st.zx[1+i], st.zb[1+i], st.kl[1+i]}
					for k := range got {
						if !sameBits64(got[k], want[k]) {
							t.Fatalf("n %d rows %d trial %d: row %d statistic %d: %v (%#x), want %v (%#x)", n, g, trial, i, k, got[k], math.Float64bits(got[k]), want[k], math.Float64bits(want[k]))
						}
					}
				}
				if st.kl[0] != 0 || st.kl[g+1] != 0 {
					t.Fatalf("n %d rows %d: rows outside the group written", n, g)
				}
			}
		}
	}
}

// arceeRowStatsRef is one row's max θ, max θ_base, Σexp θ, Σexp θ_base and KL as
// passes 1 to 3 state them, one element at a time. Where an addition meets two NaNs,
// the exponentials' sums keep the running sum's and the divergence's the term's (as
// the single-row loops did); the reference says so explicitly rather than leave it
// to the order the compiler gives an addition's operands.
func arceeRowStatsRef(x, b []float32) [5]float64 {
	mx, mb := float64(x[0]), float64(b[0])
	for j := range x {
		mx, mb = max(mx, float64(x[j])), max(mb, float64(b[j]))
	}
	sumFirst := func(z, v float64) float64 {
		if z != z {
			return z
		}
		return z + v
	}
	termFirst := func(z, v float64) float64 {
		if v != v {
			return v
		}
		return z + v
	}
	ex, eb := make([]float64, len(x)), make([]float64, len(x))
	var zx, zb, kl float64
	for j := range x {
		ex[j], eb[j] = math.Exp(float64(x[j])-mx), math.Exp(float64(b[j])-mb)
		zx, zb = sumFirst(zx, ex[j]), sumFirst(zb, eb[j])
	}
	for j := range x {
		kl = termFirst(kl, arceeKLTerm(ex[j], eb[j], zx, zb))
	}
	return [5]float64{mx, mb, zx, zb, kl}
}

// TestArceeSumsMatchesGo: arceeSums adds each row in order from 0, as the plain
// loop, for 1 to 17 rows (full groups of eight, groups padded to four and eight, a
// row alone), with values whose sums depend on the order of addition.
func TestArceeSumsMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 16))
	for _, n := range []int{0, 1, 5, 300} {
		for k := 1; k <= 17; k++ {
			rows := make([][]float64, k)
			for i := range rows {
				rows[i] = make([]float64, n)
				for j := range rows[i] {
					rows[i][j] = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(30)-15))
				}
			}
			z := make([]float64, k)
			arceeSums(z, rows)
			for i, row := range rows {
				var want float64
				for _, v := range row {
					want += v
				}
				if math.Float64bits(z[i]) != math.Float64bits(want) {
					t.Fatalf("n %d rows %d: row %d: %v, want %v", n, k, i, z[i], want)
				}
			}
		}
	}
}

// TestArceeKLTermsInPlace: arceeKLTerms writing over ex (as arceeStats.rows does)
// gives arceeKLTerm's bits, on lengths that leave tails and rows with the values
// that send a block to Go.
func TestArceeKLTermsInPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 17))
	for _, n := range []int{1, 4, 7, 8, 9, 64, 1001} {
		for trial := range 3 {
			ex, eb := make([]float64, n), make([]float64, n)
			for j := range ex {
				ex[j], eb[j] = rng.Float64(), rng.Float64()
				if trial == 1 && rng.IntN(50) == 0 {
					ex[j] = [...]float64{0, math.NaN(), math.Inf(1), 1e-310}[rng.IntN(4)]
				}
			}
			zx, zb := 1+rng.Float64()*100, 1+rng.Float64()*100
			if trial == 2 {
				zb = 0
			}
			want := make([]float64, n)
			for j := range want {
				want[j] = arceeKLTerm(ex[j], eb[j], zx, zb)
			}
			arceeKLTerms(ex, ex, eb, zx, zb)
			for j := range want {
				if !sameBits64(ex[j], want[j]) {
					t.Fatalf("n %d trial %d: term %d: %v, want %v", n, trial, j, ex[j], want[j])
				}
			}
		}
	}
}

// TestArceeRange: arceeRange (AVX2 where the CPU has it) gives the least and the
// greatest key, with the extremes in the first block, in the tail, and at 0 and
// 2^32 − 1 (unsigned order).
func TestArceeRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 15))
	for _, n := range []int{1, 7, 8, 9, 64, 1001} {
		for trial := range 4 {
			keys := make([]uint32, n)
			for j := range keys {
				keys[j] = 1<<20 + uint32(rng.IntN(1<<24))
			}
			switch trial {
			case 1:
				keys[0], keys[n-1] = 0, math.MaxUint32
			case 2:
				keys[n-1], keys[0] = 0, math.MaxUint32
			case 3:
				keys[rng.IntN(n)] = 1 << 31
			}
			lo, hi := keys[0], keys[0]
			for _, k := range keys {
				lo, hi = min(lo, k), max(hi, k)
			}
			if gl, gh := arceeRange(keys); gl != lo || gh != hi {
				t.Errorf("n %d trial %d: [%#x, %#x], want [%#x, %#x]", n, trial, gl, gh, lo, hi)
			}
		}
	}
}

// TestArceeHistCount: arceeHist.count (four keys at a time) and drain give the plain
// counts of the keys' top 16 bits, on lengths that leave each tail.
func TestArceeHistCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 20))
	for n := range 10 {
		keys := make([]uint32, n)
		for j := range keys {
			keys[j] = uint32(rng.IntN(3))<<16 | uint32(rng.IntN(1<<16)) // repeated bins
		}
		h := new(arceeHist)
		h.count(keys)
		var got [1 << 16]uint64
		h.drain(&got, 0, 3)
		var want [1 << 16]uint64
		for _, k := range keys {
			want[k>>16]++
		}
		if got != want || *h != (arceeHist{}) {
			t.Errorf("n %d: counts %v, want %v (or not drained)", n, got[:4], want[:4])
		}
	}
}

// TestArceeFusionFusedMatchesDecoded: arcee_fusion with its fused paths (pass 5 and
// the merge from BF16 words) gives the bytes of the decoding path, on tensors of
// several chunks whose rows lie whole in chunks, straddle them, or are longer than a
// chunk (passes 2 to 4), with ordinary words and with NaNs among them; and where the
// CPU has the assembly, no chunk is declined.
func TestArceeFusionFusedMatchesDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 46))
	for _, shape := range [][]int64{{64, 4096}, {40, 4099}, {3, ChunkElems + 1000}} {
		m := int(shape[0] * shape[1])
		for _, every := range []int{0, 20000} {
			base, basef := bf16TestWords(rng, m, every)
			d, _ := bf16TestWords(rng, m, 0)
			x := make([]byte, len(d))
			for j := range m { // the base plus a task vector of a few sizes
				v := basef[j] + 0.05*dtype.BF16ToFloat32(uint16(d[2*j])|uint16(d[2*j+1])<<8)
				h := dtype.Float32ToBF16(v)
				x[2*j], x[2*j+1] = byte(h), byte(h>>8)
			}
			r := &methodRun{models: make([]Model, 1), weights: make([]float32, 1), base: true}
			fused, decoded := executeFusedAndDecoded(t, [][]byte{base, x}, shape, haveArceeSelectBF16, haveArceeKeys512,
				func(tp *TensorPlan) Kernel { return arceeFusionKernel(r, tp) })
			if !sameBF16Words(fused, decoded) {
				t.Errorf("shape %v, specials 1 in %d: the fused output differs from the decoded one", shape, every)
			}
			if bytes.Equal(fused, base) || bytes.Equal(fused, x) {
				t.Errorf("shape %v, specials 1 in %d: the output is one input whole: the case tells nothing", shape, every)
			}
		}
	}
}
