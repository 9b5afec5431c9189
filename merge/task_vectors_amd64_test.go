//go:build !purego

package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// TestCombineTaskVectorsAsmMatchesGo: the AVX2 combine gives addTaskVectors' bits for
// every consensus, normalize and rescale form (none, per model, per element), on
// random values with ±0, NaN (with payloads), Inf, subnormals and exact cancellations, random keep
// masks (as bools and packed), and lengths with and without a tail.
func TestCombineTaskVectorsAsmMatchesGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU; addTaskVectors is the only path")
	}
	rng := rand.New(rand.NewPCG(17, 4))
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.NaN()), math.Float32frombits(0x7fc12345), math.Float32frombits(0xffa00001), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-40, -3e-39}
	val := func() float32 {
		switch r := rng.IntN(10); {
		case r < 2:
			return 0
		case r == 2:
			return special[rng.IntN(len(special))]
		default:
			return float32(rng.NormFloat64())
		}
	}
	for _, n := range []int{0, 3, 8, 13, 1000, 1003} {
		for _, lanes := range []int{1, 2, 3, 4} {
			base := make([]float32, n)
			for j := range base {
				base[j] = val()
			}
			in := [][]float32{base}
			keep := make([][]bool, lanes)
			elem := make([][]float32, lanes)
			for i := range lanes {
				x, k, e := make([]float32, n), make([]bool, n), make([]float32, n)
				for j := range x {
					x[j] = val()
					if rng.IntN(4) == 0 {
						x[j] = base[j] // δ = 0
					}
					k[j] = rng.IntN(3) != 0
					e[j] = float32(1 + rng.Float64()*4)
				}
				if n > 2 && i == 1 {
					x[2] = base[2] - (in[1][2] - base[2]) // cancels model 0's delta at element 2
					keep[0][2], k[2] = true, true
				}
				in, keep[i], elem[i] = append(in, x), k, e
			}
			weights := []float32{0.7, -0.25, 1.5, 2}[:lanes]
			scale := []float32{1.25, 3, 0.5, float32(math.Inf(1))}[:lanes]
			for _, consensus := range []Consensus{ConsensusNone, ConsensusSign} {
				for _, normalize := range []bool{false, true} {
					for form := range 3 {
						m := &methodRun{weights: weights, lambda: 0.9, tv: tvOptions{consensus: consensus, normalize: normalize}}
						var sc []float32
						var es [][]float32
						switch form {
						case 1:
							sc = scale
						case 2:
							es = elem
						}
						want := make([]float32, n)
						addTaskVectors(m, want, in, keep, sc, es, make([]float32, lanes))
						got := make([]float32, n)
						for j := range got {
							got[j] = 42 // overwritten
						}
						cs := newCombinePool(lanes, consensus == ConsensusSign).Get().(*combineScratch)
						combineTaskVectors(m, got, in, keep, nil, sc, es, cs, true)
						// The masks packed (keepCache's), unpacked only past the
						// kernels' last multiple of 8.
						bits, tails := make([][]uint64, lanes), make([][]bool, lanes)
						for i, k := range keep {
							bits[i], tails[i] = make([]uint64, (n+63)/64), make([]bool, n)
							packBools(bits[i], k)
							unpackTail(tails[i], bits[i], n&^7)
						}
						fromBits := make([]float32, n)
						combineTaskVectors(m, fromBits, in, tails, bits, sc, es, cs, true)
						name := fmt.Sprintf("n=%d lanes=%d consensus=%d normalize=%v form=%d", n, lanes, consensus, normalize, form)
						for j := range got {
							if math.Float32bits(fromBits[j]) != math.Float32bits(got[j]) {
								t.Fatalf("%s [%d]: from packed masks %v (%#x), from bools %v (%#x)", name, j, fromBits[j], math.Float32bits(fromBits[j]), got[j], math.Float32bits(got[j]))
							}
							// Where two NaNs meet, which payload survives is the
							// compiler's choice in Go (it commutes float adds), as in
							// TestTiesCombineAsmMatchesGo: NaN compares as NaN.
							if math.Float32bits(got[j]) != math.Float32bits(want[j]) && !(got[j] != got[j] && want[j] != want[j]) {
								t.Fatalf("%s [%d]: asm %v (%#x), Go %v (%#x)", name, j, got[j], math.Float32bits(got[j]), want[j], math.Float32bits(want[j]))
							}
						}
					}
				}
			}
		}
	}
}

// TestDareKeepAsmMatchesGo: the AVX2 and AVX-512 draws keep what dareDraw keeps, for several
// lanes, offsets (including ones whose e·G wraps), densities from none to all, and
// lengths with and without a tail.
func TestDareKeepAsmMatchesGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU; dareDraw is the only path")
	}
	defer func(v bool) { haveDareAVX512 = v }(haveDareAVX512)
	kernels := []bool{false} // AVX2, and AVX-512 where the CPU has it
	if haveDareAVX512 {
		kernels = append(kernels, true)
	}
	thresholds := []uint64{0, densityThreshold(0.2), densityThreshold(0.5), 1 << 63, 1<<63 - 1, densityThreshold(0.9), math.MaxUint64}
	for _, n := range []int{0, 5, 8, 17, 4096, 4099} {
		for _, off := range []int64{0, 8, 65536 * 13, 1<<40 + 3} {
			keep, want := make([][]bool, len(thresholds)), make([][]bool, len(thresholds))
			for i := range keep {
				keep[i], want[i] = make([]bool, n), make([]bool, n)
			}
			key := dareKey(uint64(off)^7, "model.layers.0.mlp.up_proj.weight")
			dareKeepWith(want, key, thresholds, off, false)
			for _, avx512 := range kernels {
				haveDareAVX512 = avx512
				dareKeepWith(keep, key, thresholds, off, true)
				for i := range keep {
					for j := range keep[i] {
						if keep[i][j] != want[i][j] {
							t.Fatalf("n=%d off=%d lane %d [%d] avx512 %v: asm %v, Go %v", n, off, i, j, avx512, keep[i][j], want[i][j])
						}
					}
				}
			}
		}
	}
	// The threshold compare is unsigned: a draw at or above 2⁶³ is not below 2⁶³ − 1.
	for _, avx512 := range kernels {
		haveDareAVX512 = avx512
		k := [][]bool{make([]bool, 64)}
		dareKeepWith(k, 1, []uint64{1<<63 - 1}, 0, true)
		var kept int
		for _, v := range k[0] {
			kept += b2i(v)
		}
		if kept == 0 || kept == 64 {
			t.Fatalf("avx512 %v: half the draws should fall below 2⁶³−1, got %d of 64", avx512, kept)
		}
	}
}

// TestKeepBandMatchesCuts: keepBand, with and without its AVX2 kernel, keeps what
// cut.above says (above the lower cut and, with an upper cut, not above it), for cuts
// that keep all, none, every element at the boundary, or some of them by count, on
// magnitudes with many equal values.
func TestKeepBandMatchesCuts(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU; cut.above is the only path")
	}
	defer func(v bool) { haveTiesAsm = v }(haveTiesAsm)
	rng := rand.New(rand.NewPCG(17, 5))
	for _, n := range []int{5, 8, 64, 1003, 4096} {
		mags := make([]uint32, n)
		for j := range mags {
			mags[j] = absBits(float32(rng.IntN(9)) * 0.25) // many equal magnitudes
			if j%97 == 0 {
				mags[j] = absBits(float32(math.NaN()))
			}
		}
		// No tie in the first 64 elements of the larger chunks, so the kernel runs.
		for j := range min(n, 64) {
			mags[j] = absBits(3)
		}
		cuts := []*cut{
			{all: true}, {none: true},
			{t: absBits(0.5), r: 1 << 40}, // every element at 0.5 ranks above
			{t: absBits(0.5), r: 3, ties: true, before: []int64{2}},
			{t: absBits(1.5), r: 1, ties: true, before: []int64{0}},
			{t: absBits(1.75), r: 5, ties: true, before: []int64{1}},
			{t: absBits(0), r: 1 << 40},
		}
		for li, lo := range cuts {
			for hi := -1; hi < len(cuts); hi++ {
				want := make([]bool, n)
				lo.above(want, mags, Chunk{})
				var hc *cut
				if hi >= 0 {
					hc = cuts[hi]
					top := make([]bool, n)
					hc.above(top, mags, Chunk{})
					for j := range want {
						want[j] = want[j] && !top[j]
					}
				}
				for _, asm := range []bool{true, false} {
					haveTiesAsm = asm
					got := make([]bool, n)
					lw, hw := cutLane(lo, Chunk{}), tiesLane{gt: math.MaxInt32}
					if hc != nil {
						hw = cutLane(hc, Chunk{})
					}
					keepBand(got, mags, &lw, &hw)
					if !slices.Equal(got, want) {
						t.Fatalf("n=%d lo %d hi %d asm %v: keepBand differs from cut.above", n, li, hi, asm)
					}
				}
			}
		}
	}
}

// TestL1LanesAsmMatchesGo: l1Lanes.add with its AVX2 kernel gives l1LanesGo's lanes
// bit for bit (a NaN as any NaN: which payload survives is the compiler's operand
// order, and addTo reads every NaN as one), for lengths with and without a head and a tail, from every lane,
// continuing given lanes, with NaN payloads, ±Inf, ±0 and subnormals among the
// deltas; and a chunk's lanes taken in pieces (as della's rows take them) are the
// lanes of one call; addBF16 on BF16 words gives add's lanes on their values.
func TestL1LanesAsmMatchesGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 on this CPU; l1LanesGo is the only path")
	}
	defer func(a bool) { haveTiesAsm = a }(haveTiesAsm)
	rng := rand.New(rand.NewPCG(9, 23))
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.NaN()), math.Float32frombits(0x7fc12345),
		math.Float32frombits(0xffa00001), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-40, -3e-39}
	val := func(specials bool) float32 {
		if specials && rng.IntN(20) == 0 {
			return special[rng.IntN(len(special))]
		}
		return float32(rng.NormFloat64() * math.Exp2(float64(rng.IntN(40)-20)))
	}
	same := func(a, b l1Lanes) bool {
		for s := range a {
			for k := range a[s] {
				if !sameBits64(gramSum(a[s][k]), gramSum(b[s][k])) {
					return false
				}
			}
		}
		return true
	}
	for _, n := range []int{1, 3, 7, 8, 9, 16, 23, 64, 2048, 2051} {
		for from := range 10 {
			for _, specials := range []bool{false, true} {
				base, x, keep := make([]float32, n), make([]float32, n), make([]bool, n)
				for j := range base {
					base[j], x[j], keep[j] = val(specials), val(specials), rng.IntN(2) == 0
				}
				var start l1Lanes
				for s := range start {
					for k := range start[s] {
						start[s][k] = rng.Float64()
					}
				}
				want, got := start, start
				haveTiesAsm = false
				want.add(base, x, keep, from)
				haveTiesAsm = true
				got.add(base, x, keep, from)
				if !same(got, want) {
					t.Fatalf("n=%d from %d specials %v: lanes %v, want %v", n, from, specials, got, want)
				}
				// the same elements in pieces, each continuing the lanes
				pieces := start
				for j := 0; j < n; {
					e := min(n, j+1+rng.IntN(40))
					pieces.add(base[j:e], x[j:e], keep[j:e], from+j)
					j = e
				}
				if !same(pieces, want) {
					t.Fatalf("n=%d from %d specials %v: lanes in pieces %v, want %v", n, from, specials, pieces, want)
				}
				// from BF16 words (addBF16), with and without its kernel, against
				// add on the words' values
				bw, bv := bf16TestWords(rng, n, 7*b2i(specials))
				xw, xv := bf16TestWords(rng, n, 5*b2i(specials))
				want = start
				want.add(bv, xv, keep, from)
				for _, asm := range []bool{false, true} {
					haveTiesAsm = asm
					got = start
					got.addBF16(bw, xw, keep, from)
					if !same(got, want) {
						t.Fatalf("n=%d from %d specials %v asm %v: lanes from words %v, want %v", n, from, specials, asm, got, want)
					}
				}
			}
		}
	}
}

// TestL1LanesWordsMatchAddBF16: 2 to 4 models' L1 lanes at once from BF16 words
// (l1LanesBF16AVX512, where the CPU has AVX-512), continued by addBF16 past its
// last lane group, give each model's lanes as addBF16 alone does, from lanes that
// already hold sums, with special words (NaN payloads compared where they do not
// vary: gramSum) and random masks; it takes nothing for 1 or 5 models.
func TestL1LanesWordsMatchAddBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 29))
	for _, n := range []int{1, 7, 8, 9, 64, 1003, ChunkElems} {
		for nl := 1; nl <= 5; nl++ {
			base, _ := bf16TestWords(rng, n, 9)
			xs, keep := make([][]byte, nl), make([][]bool, nl)
			ls, want := make([]l1Lanes, nl), make([]l1Lanes, nl)
			for i := range nl {
				xs[i], _ = bf16TestWords(rng, n, 7)
				keep[i] = make([]bool, n)
				for j := range keep[i] {
					keep[i][j] = rng.IntN(3) > 0
				}
				for s := range ls[i] {
					for k := range ls[i][s] {
						ls[i][s][k] = rng.Float64()
					}
				}
				want[i] = ls[i]
				want[i].addBF16(base, xs[i], keep[i], 0)
			}
			j := l1LanesWordsAsm(ls, base, xs, keep)
			if wantJ := n &^ 7; haveAVX512BW && nl >= 2 && nl <= 4 && j != wantJ || !(haveAVX512BW && nl >= 2 && nl <= 4) && j != 0 {
				t.Fatalf("n %d, %d models: took %d elements", n, nl, j)
			}
			for i := range nl {
				ls[i].addBF16(base[2*j:], xs[i][2*j:], keep[i][j:], j)
				for s := range ls[i] {
					for k := range ls[i][s] {
						if !sameBits64(gramSum(ls[i][s][k]), gramSum(want[i][s][k])) {
							t.Fatalf("n %d, %d models: model %d sum %d lane %d: %#x, addBF16 %#x", n, nl, i, s, k,
								math.Float64bits(ls[i][s][k]), math.Float64bits(want[i][s][k]))
						}
					}
				}
			}
		}
	}
}

// TestBandMergeWords: breadcrumbs' merge from BF16 words (the AVX-512 kernels,
// bandMergeBF16AVX512, and tiesMergeBF16AVX512 with sign election, normalized and
// not, and the groups they leave to Go) gives the words of the decoding path
// (keepBand over the widened chunk, combineTaskVectors, rounding), with cuts that
// keep all, none, a tied boundary (counted from earlier chunks, on either cut) and
// an untied one, with and without rescale factors (a NaN one too), on lengths around
// the groups of sixteen, with many equal magnitudes and special values. DARE's merge
// with the masks its L1 pass kept (random rows, one keeping all, one none) gives the
// decoding path's words too, without sign election and with it (normalized and not).
func TestBandMergeWords(t *testing.T) {
	if !haveTiesBF16AVX512 {
		t.Skip("no AVX-512 kernel on this CPU: breadcrumbs merges through the decoding path")
	}
	rng := rand.New(rand.NewPCG(17, 9))
	special := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 0, float32(math.Copysign(0, -1))}
	cuts := [][]*cut{ // per model: the upper cut, then the lower
		{{t: absBits(0.75), r: 30, ties: true, before: []int64{0, 1}}, {t: absBits(0.25), r: 40, ties: true, before: []int64{0, 1}}},
		{{none: true}, {all: true}},
		{{t: absBits(0.5), r: 1 << 40}, {t: absBits(0.125), r: 5, ties: true, before: []int64{0, 0}}},
		{{t: absBits(0.5), r: 30, ties: true, before: []int64{0, 2}}, {all: true}},
	}
	pos := Chunk{Index: 1, Offset: ChunkElems}
	for _, n := range []int{1, 7, 8, 15, 16, 17, 64, 1003, ChunkElems} {
		for lanes := 1; lanes <= len(cuts); lanes++ {
			// A NaN factor (an L1 sum over a NaN) with a payload of its own: which NaN
			// a product keeps depends on the operands' order.
			for _, scale := range [][]float32{nil, []float32{1.5, 0.5, 2, 1}[:lanes], []float32{math.Float32frombits(0x7fc00123), 0.5, 2, 1}[:lanes]} {
				name := fmt.Sprintf("n=%d lanes=%d scale %v", n, lanes, scale)
				words := make([]Operand, lanes+1)
				wide := make([][]float32, lanes+1)
				for i := range words {
					x := make([]float32, n)
					for j := range x {
						x[j] = float32(rng.IntN(9)-4) * 0.125 // many equal |x−b|, both signs
						if rng.IntN(40) == 0 {
							x[j] = special[rng.IntN(len(special))]
						}
					}
					b := make([]byte, 2*n)
					must(t, dtype.Encode(b, x, dtype.BF16))
					wide[i] = make([]float32, n)
					must(t, dtype.Decode(wide[i], b, dtype.BF16))
					words[i] = Operand{DType: dtype.BF16, Data: b}
				}
				for _, form := range []struct {
					masked bool
					tv     tvOptions
				}{
					{false, tvOptions{sparsify: SparsifyOutliers}},
					{false, tvOptions{sparsify: SparsifyOutliers, consensus: ConsensusSign, normalize: true}},
					{false, tvOptions{sparsify: SparsifyOutliers, consensus: ConsensusSign}},
					{true, tvOptions{sparsify: SparsifyRandom}},
					{true, tvOptions{sparsify: SparsifyRandom, consensus: ConsensusSign, normalize: true}},
					{true, tvOptions{sparsify: SparsifyRandom, consensus: ConsensusSign}},
				} {
					masked, sign := form.masked, form.tv.consensus == ConsensusSign
					name := fmt.Sprintf("%s %+v", name, form.tv)
					m := &methodRun{weights: []float32{0.7, -0.3, 1.3, 0.5}[:lanes], lambda: 0.9, tv: form.tv}
					keep := make([][]bool, lanes)
					mags := make([]uint32, n)
					for i := range keep {
						keep[i] = make([]bool, n)
						if masked {
							for j := range keep[i] {
								keep[i][j] = i == 1 || i != 2 && rng.IntN(3) == 0 // model 1 keeps all, 2 none
							}
							continue
						}
						deltaMagnitudes(mags, i, wide)
						lo, hi := bandLanes(cuts[i], pos)
						keepBand(keep[i], mags, &lo, &hi)
					}
					ref := make([]float32, n)
					combineTaskVectors(m, ref, wide, keep, nil, scale, nil, newCombinePool(lanes, sign).Get().(*combineScratch), true)
					want := make([]byte, 2*n)
					must(t, dtype.Encode(want, ref, dtype.BF16))
					got := make([]byte, 2*n)
					bm := newBandMerge(m, cuts[:lanes], nil, scale, newCombinePool(lanes, sign))
					if masked {
						kc := newKeepCache(lanes, 1<<30)
						kc.store(keep, n, pos)
						bm = newBandMerge(m, nil, kc, scale, newCombinePool(lanes, sign))
					}
					if !bm.words(got, words, pos) {
						t.Fatalf("%s: BF16 words declined", name)
					}
					for e := range n {
						if got[2*e] != want[2*e] || got[2*e+1] != want[2*e+1] {
							t.Fatalf("%s: element %d: %#04x, the decoding path %#04x", name, e,
								uint16(got[2*e])|uint16(got[2*e+1])<<8, uint16(want[2*e])|uint16(want[2*e+1])<<8)
						}
					}
					if masked && bm.words(got, words, pos) {
						t.Fatalf("%s: BF16 words merged a chunk whose masks were taken", name)
					}
				}
			}
		}
	}
}
