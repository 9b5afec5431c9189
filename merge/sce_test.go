package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// TestSCEAgainstReference: sce on BF16 and F32 at several select_topk (1: no
// selection; 0: the base), compared with sceRef.
func TestSCEAgainstReference(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		base, models := methodFixture(23, dt, 3)
		for _, topk := range []float64{1, 0.5, 0.1, 1e-4, 0} {
			// The selection kept from the weights pass for the merge pass: all of it,
			// one chunk's, none.
			for _, limit := range []int64{0, ChunkElems / 8, 1} {
				got := runMethodFiles(t, dt, "sce", Params{SelectTopK: topk, keepCacheBytes: limit}, base, models, nil, nil, 2)
				for _, name := range referenceNames(base) {
					ref, scale := sceRef(base.vals[name], vals(models, name), topk)
					checkClose(t, fmt.Sprintf("%s select_topk=%g cache=%d %s", dt, topk, limit, name), got[name], ref, scale, dt)
				}
			}
		}
	}
}

// TestSCEHandWorked pins sce on numbers worked out by hand.
func TestSCEHandWorked(t *testing.T) {
	one := func(vals ...float32) *ckpt {
		return &ckpt{names: []string{"w"}, shapes: map[string][]int64{"w": {int64(len(vals))}}, vals: map[string][]float32{"w": vals}}
	}
	check := func(what string, got, want []float32) {
		t.Helper()
		for j := range want {
			if math.Abs(float64(got[j]-want[j])) > 1e-6 {
				t.Errorf("%s: got %v, want %v", what, got, want)
				return
			}
		}
	}
	// δ_1 = (2, 0, 1, −1), δ_2 = (0, 2, −3, −1). Mean squares 6/4 and 14/4: weights
	// 0.3 and 0.7. Signs of δ_1 + δ_2 = (2, 2, −2, −2): +, +, −, −.
	// → 2·0.3/0.3, 2·0.7/0.7, −3·0.7/0.7, (−0.3 − 0.7)/1.
	base := one(0, 0, 0, 0)
	ms := []*ckpt{one(2, 0, 1, -1), one(0, 2, -3, -1)}
	check("sce", runMethodFiles(t, dtype.F32, "sce", Params{SelectTopK: 1}, base, ms, nil, nil, 1)["w"], []float32{2, 2, -3, -1})
	// select_topk 0.5: variances (1, 1, 4, 0); 3 non-zero, k = ⌊1.5⌋ = 1: only
	// position 2 stays. Weights from δ̂_1 = (0, 0, 1, 0), δ̂_2 = (0, 0, −3, 0): 0.1, 0.9;
	// the sign is −: −3·0.9/0.9.
	check("sce topk", runMethodFiles(t, dtype.F32, "sce", Params{SelectTopK: 0.5}, base, ms, nil, nil, 1)["w"], []float32{0, 0, -3, 0})
	// Equal variances: the lower index is selected. δ_1 = (1, 1), δ_2 = (−1, −1),
	// k = ⌊2·0.5⌋ = 1: position 0; its sum is 0, elected +: δ_1 alone.
	check("sce ties", runMethodFiles(t, dtype.F32, "sce", Params{SelectTopK: 0.5}, one(0, 0), []*ckpt{one(1, 1), one(-1, -1)}, nil, nil, 1)["w"], []float32{1, 0})
}

// TestSCEVarianceAsm: sceVariance (with AVX2 where the CPU has it) is sceVarianceRef,
// bit for bit, for 1 to 5 models, lengths across the assembly's groups of four, and
// deltas with ±0, ±Inf, NaN, equal values and magnitudes far apart; but a NaN key is
// only checked to be NaN: which payload an addition of two NaNs keeps follows the
// operand order, which Go's compiler chooses (float additions commute; the -race
// build keeps the other one), so the reference does not pin it either.
func TestSCEVarianceAsm(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	vals := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.Float32frombits(0xffc00123), math.Float32frombits(0x7f800321), 1e-30, 3e30, 0.25}
	isNaN := func(k uint32) bool { return k > 0x7f800000 }
	for _, models := range []int{1, 2, 3, 4, 5} {
		for _, n := range []int{0, 1, 3, 4, 7, 64, 1001} {
			in := make([][]float32, models+1)
			for k := range in {
				in[k] = make([]float32, n)
				for j := range in[k] {
					if rng.IntN(8) == 0 {
						in[k][j] = vals[rng.IntN(len(vals))]
					} else {
						in[k][j] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(9)-4)))
					}
				}
			}
			got, want := make([]uint32, n), make([]uint32, n)
			sceVariance(got, 0, in)
			sceVarianceRef(want, in, 0)
			for j := range got {
				if got[j] != want[j] && !(isNaN(got[j]) && isNaN(want[j])) {
					t.Fatalf("%d models, %d elements (assembly %v), element %d: key %#x, reference %#x", models, n, haveTiesAsm, j, got[j], want[j])
				}
			}
		}
	}
}

// sceTieInputs is a tensor of n elements (base first, then models) whose deltas
// come from a few values, so that many variances are equal (as with BF16 task
// vectors), with zeros, and ±Inf and NaN sprinkled in where odd.
func sceTieInputs(rng *rand.Rand, n, models int, odd bool) [][]float32 {
	deltas := []float32{0, 0.5, -0.5, 1, -1, 0.25, 2}
	odds := []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 0, float32(math.Copysign(0, -1))}
	in := make([][]float32, models+1)
	for k := range in {
		in[k] = make([]float32, n)
		for j := range in[k] {
			switch {
			case k == 0:
				in[k][j] = float32(rng.IntN(5))
			case odd && rng.IntN(5000) == 0:
				in[k][j] = odds[rng.IntN(len(odds))]
			default:
				in[k][j] = in[0][j] + deltas[rng.IntN(len(deltas))]
			}
		}
	}
	return in
}

// runSCEPasses runs passes over in, chunk after chunk, as the engine does (a pass's
// Skip asked once the previous one is done).
func runSCEPasses(passes []Pass, in [][]float32) {
	n := int64(len(in[0]))
	for _, p := range passes {
		if p.Skip != nil && p.Skip() {
			continue
		}
		for c := int64(0); c*ChunkElems < n; c++ {
			end := min(n, (c+1)*ChunkElems)
			chunk := make([][]float32, len(in))
			for k := range in {
				chunk[k] = in[k][c*ChunkElems : end]
			}
			p.Chunk(Chunk{Index: c, Offset: c * ChunkElems}, chunk, nil, nil)
		}
		if p.Done != nil {
			if err := p.Done(nil); err != nil {
				panic(err)
			}
		}
	}
}

// TestSCEKeysMatchRankSelector: the masks sceKeys makes from its kept keys are the
// rank selector's (the variances computed again in each of its passes), on tensors
// of one to several chunks with many equal variances at the cut (the tie path,
// checked to be taken), zeros, ±Inf and NaN, at several select_topk.
func TestSCEKeysMatchRankSelector(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 4))
	var tied int
	for _, n := range []int{1, 70, ChunkElems, 2*ChunkElems + 333} {
		for _, models := range []int{1, 3} {
			in := sceTieInputs(rng, n, models, true)
			for _, topk := range []float64{1e-5, 0.1, 0.37, 0.5, 0.999} {
				keyed := newSCESelection(int64(n), topk, 1<<40, 1<<40)
				runSCEPasses(keyed.passes(), in)
				ranked := newSCESelection(int64(n), topk, 0, 0)
				ranked.big.rankOnly = true
				runSCEPasses(ranked.passes(), in)
				if keyed.keys == nil || ranked.sel == nil || !ranked.big.fallback {
					t.Fatal("the limits did not choose the two selections")
				}
				if keyed.keys.ties {
					tied++
				}
				for c := int64(0); c*ChunkElems < int64(n); c++ {
					end := min(int64(n), (c+1)*ChunkElems)
					chunk := make([][]float32, len(in))
					for k := range in {
						chunk[k] = in[k][c*ChunkElems : end]
					}
					pos := Chunk{Index: c, Offset: c * ChunkElems}
					got := keyed.weightsMask(newSCEScratch(models), chunk, pos)
					want := ranked.weightsMask(newSCEScratch(models), chunk, pos)
					for w := range want {
						if got[w] != want[w] {
							t.Fatalf("n=%d models=%d topk=%g chunk %d word %d: keys' mask %#x, rank selector's %#x", n, models, topk, c, w, got[w], want[w])
						}
					}
					// The merge pass: the kept mask (keys), computed again (rank selector,
					// no room), and computed again from the keys' cut.
					kept := keyed.mergeMask(newSCEScratch(models), chunk, pos)
					again := ranked.mergeMask(newSCEScratch(models), chunk, pos)
					fresh := make([]uint64, len(want))
					keyed.fresh(fresh, newSCEScratch(models), chunk, pos)
					if !slicesEqual(kept, want) || !slicesEqual(again, want) || !slicesEqual(fresh, want) {
						t.Fatalf("n=%d topk=%g chunk %d: the merge pass's mask differs", n, topk, c)
					}
				}
			}
		}
	}
	if tied == 0 {
		t.Error("no case had equal keys on both sides of the cut")
	}
}

// TestSCEBigMatchesRankSelector: the masks sceBig makes (the cut from a sample, the
// keys computed in two passes and none kept) are the rank selector's, for the
// weights pass and the merge pass (kept, and computed again), on tensors of one to
// several chunks, smooth, with many equal keys, with a sample that misleads and with
// more keys in the sample's range than a lowered bound takes (the rank selector's
// passes then run: checked to happen), at select_topk from 1e-5 to 0.999.
func TestSCEBigMatchesRankSelector(t *testing.T) {
	rng := rand.New(rand.NewPCG(29, 8))
	var windowed, sampled, fellBack, tied int
	for _, n := range []int{1, 17, 1000, ChunkElems, 3*ChunkElems + 77} {
		for _, kind := range []string{"smooth", "ties", "sample misleads", "all equal", "bound"} {
			in := sceTieInputs(rng, n, 3, kind == "ties")
			for i, x := range in[1:] {
				for j := range x {
					switch kind {
					case "smooth", "bound":
						x[j] = in[0][j] + float32(rng.NormFloat64())
					case "sample misleads":
						x[j] = in[0][j] + float32(rng.NormFloat64())*float32(1+999*b2i(j%sceSampleStride == 0))
					case "all equal":
						x[j] = in[0][j] + float32(b2i(i == 0))
					}
				}
			}
			for _, topk := range []float64{1e-5, 1e-3, 0.1, 0.5, 0.999} {
				big := newSCESelection(int64(n), topk, 0, 1<<40)
				if kind == "bound" {
					big.big.maxCand = 10
				}
				big.big.noWindow = rng.IntN(2) == 0
				runSCEPasses(big.passes(), in)
				ranked := newSCESelection(int64(n), topk, 0, 0)
				ranked.big.rankOnly = true
				runSCEPasses(ranked.passes(), in)
				if big.big == nil || !ranked.big.fallback {
					t.Fatal("the limits did not choose the two selections")
				}
				switch {
				case big.big.byWindow:
					windowed++
				case big.big.bySample:
					sampled++
				case big.big.fallback:
					fellBack++
				}
				if big.big.bySample && big.big.ties {
					tied++
				}
				for c := int64(0); c*ChunkElems < int64(n); c++ {
					end := min(int64(n), (c+1)*ChunkElems)
					chunk := make([][]float32, len(in))
					for k := range in {
						chunk[k] = in[k][c*ChunkElems : end]
					}
					pos := Chunk{Index: c, Offset: c * ChunkElems}
					got := big.weightsMask(newSCEScratch(3), chunk, pos)
					want := ranked.weightsMask(newSCEScratch(3), chunk, pos)
					if !slicesEqual(got, want) {
						t.Fatalf("n=%d %s topk=%g chunk %d: sampled mask differs from the rank selector's (by sample %v)", n, kind, topk, c, big.big.bySample)
					}
					kept := big.mergeMask(newSCEScratch(3), chunk, pos)
					fresh := make([]uint64, len(want))
					big.fresh(fresh, newSCEScratch(3), chunk, pos)
					if !slicesEqual(kept, want) || !slicesEqual(fresh, want) {
						t.Fatalf("n=%d %s topk=%g chunk %d: the merge pass's mask differs", n, kind, topk, c)
					}
				}
			}
		}
	}
	if windowed == 0 || sampled == 0 || fellBack == 0 || tied == 0 {
		t.Errorf("cuts from the window %d, from the sample %d, from the rank selector %d, with equal keys on both sides %d: each must happen", windowed, sampled, fellBack, tied)
	}
}

// TestSCECutFromSample: the cut found from the sample's range (where it is found)
// is the cut from a histogram of every key, on tensors of one to several chunks,
// smooth (the sample's bounds hold the cut) and with many equal keys (they may
// not), at select_topk from 1e-5 to 0.999, and so are the counts of equal keys
// before each chunk; both happen, and so do equal keys on both sides of the cut.
func TestSCECutFromSample(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 6))
	// checkBefore: the equals before each chunk, counted from the collected keys,
	// where the cut has equal keys on both sides.
	checkBefore := func(k *sceKeys, n int, kind string, topk float64) {
		t.Helper()
		if !k.ties {
			return
		}
		var seen int64
		for c, keys := range k.keys {
			if k.before[c] != seen {
				t.Fatalf("n=%d %s topk=%g chunk %d: %d equal keys before it, want %d", n, kind, topk, c, k.before[c], seen)
			}
			for _, key := range keys {
				seen += int64(b2i(key == k.t))
			}
		}
	}
	var windowed, sampled, histogrammed, tied int
	for _, n := range []int{1, 17, 1000, ChunkElems, 3*ChunkElems + 77, 5 * ChunkElems} {
		for _, kind := range []string{"smooth", "ties", "sample misleads", "all equal"} {
			in := sceTieInputs(rng, n, 3, true)
			for i, x := range in[1:] {
				for j := range x {
					switch kind {
					case "smooth":
						x[j] = in[0][j] + float32(rng.NormFloat64())
					case "sample misleads": // the sampled positions vary the most
						x[j] = in[0][j] + float32(rng.NormFloat64())*float32(1+999*b2i(j%sceSampleStride == 0))
					case "all equal": // more equal keys at the cut than the sample's range may hold
						x[j] = in[0][j] + float32(b2i(i == 0))
					}
				}
			}
			for _, topk := range []float64{1e-5, 1e-3, 0.1, 0.5, 0.999} {
				k := newSCEKeys(int64(n), topk)
				runSCEPasses([]Pass{{Chunk: k.pass().Chunk}}, in)
				rank := sceTopK(topk, k.n-k.zeros)
				if rank <= 0 || rank >= k.n {
					continue
				}
				if k.cutFromWindow(rank) {
					windowed++
					checkBefore(k, n, kind, topk)
					got := [3]any{k.t, k.r, k.ties}
					k.cutFromHistogram(rank)
					if want := [3]any{k.t, k.r, k.ties}; got != want {
						t.Fatalf("n=%d %s topk=%g: cut (t, r, ties) %v from the window, %v from every key", n, kind, topk, got, want)
					}
					k.before = nil
				}
				if !k.cutFromSample(rank) {
					histogrammed++
					continue
				}
				sampled++
				checkBefore(k, n, kind, topk)
				got := [3]any{k.t, k.r, k.ties}
				k.cutFromHistogram(rank)
				if want := [3]any{k.t, k.r, k.ties}; got != want {
					t.Fatalf("n=%d %s topk=%g: cut (t, r, ties) %v from the sample, %v from every key", n, kind, topk, got, want)
				}
				if k.ties {
					tied++
				}
			}
		}
	}
	if windowed == 0 || sampled == 0 || histogrammed == 0 || tied == 0 {
		t.Errorf("cuts from the window %d, from the sample %d, from every key %d, with equal keys on both sides %d: each must happen", windowed, sampled, histogrammed, tied)
	}
}

// TestSCESquares: sceSquares (four models at a time) is sceSquaresRef bit for bit
// (NaN payloads included where the assembly runs: sameBits64), for 1 to 9 models, with and without a mask, on deltas
// that include ±0, ±Inf, NaNs of both signs and magnitudes far apart.
func TestSCESquares(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 21))
	vals := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.Float32frombits(0xffc00123), math.Float32frombits(0x7fc04000), 1e-30, 3e30}
	for _, models := range []int{1, 2, 3, 4, 5, 8, 9} {
		for _, n := range []int{1, 63, 64, 1001} {
			in := make([][]float32, models+1)
			for k := range in {
				in[k] = make([]float32, n)
				for j := range in[k] {
					in[k][j] = float32(rng.NormFloat64())
					if rng.IntN(50) == 0 {
						in[k][j] = vals[rng.IntN(len(vals))]
					}
				}
			}
			mask := make([]uint64, (n+63)/64)
			for j := range n {
				if rng.IntN(4) == 0 {
					mask[j/64] |= 1 << (j % 64)
				}
			}
			for _, m := range [][]uint64{nil, mask} {
				got, want := make([]float64, models), make([]float64, models)
				for i := range got { // what the chunk's accumulator may hold before
					got[i], want[i] = 0.5, 0.5
				}
				sceSquares(got, in[0], in[1:], m)
				sceSquaresRef(want, in[0], in[1:], m)
				for i := range got {
					if !sameBits64(got[i], want[i]) {
						t.Fatalf("%d models, n=%d, masked %v, model %d: %v, want %v", models, n, m != nil, i, got[i], want[i])
					}
				}
			}
		}
	}
}

func slicesEqual(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSCEMaskAsm: sceMaskBits (AVX2 where the CPU has it) is sceMaskRef for lengths
// across the groups of 64, with keys equal to t, just above and below it, 0 and the
// largest (a NaN's); keys have no sign bit, as absBits makes them.
func TestSCEMaskAsm(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	for _, n := range []int{0, 1, 63, 64, 65, 128, 200, 1000} {
		for _, tk := range []uint32{1, 0x3f800000, 0x7f800000, 0x7fffffff} {
			keys := make([]uint32, n)
			for j := range keys {
				switch rng.IntN(5) {
				case 0:
					keys[j] = tk
				case 1:
					keys[j] = tk + 1
				case 2:
					keys[j] = tk - 1
				case 3:
					keys[j] = []uint32{0, 0x7fffffff, 0x7fc00000}[rng.IntN(3)]
				default:
					keys[j] = rng.Uint32()
				}
				keys[j] &^= 1 << 31 // a key has no sign bit (absBits)
			}
			words := (n + 63) / 64
			ga, ge, wa, we := make([]uint64, words), make([]uint64, words), make([]uint64, words), make([]uint64, words)
			sceMaskBits(ga, ge, keys, tk)
			sceMaskRef(wa, we, keys, tk)
			for w := range words {
				if ga[w] != wa[w] || ge[w] != we[w] {
					t.Fatalf("n=%d t=%#x word %d (assembly %v): above %#x equal %#x, reference %#x %#x", n, tk, w, haveTiesAsm, ga[w], ge[w], wa[w], we[w])
				}
			}
		}
	}
}

// TestSCEKeysSameBits: sce's output with the keys kept (the weights summed from the
// BF16 bytes, the masks carried to the merge pass) is the output through the rank
// selector, the weights pass and the decoded merge (masks computed again), bit for
// bit, on BF16 and F32 tensors of several chunks with many equal variances, one of
// them with NaN and ±Inf (whose weights are NaN, so the other pins the weights),
// with one and two threads.
func TestSCEKeysSameBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	n := 2*ChunkElems + 333
	clean, odd := sceTieInputs(rng, n, 3, false), sceTieInputs(rng, n, 3, true)
	mk := func(k int) *ckpt {
		return &ckpt{names: []string{"w", "v"}, shapes: map[string][]int64{"w": {int64(n)}, "v": {int64(n)}},
			vals: map[string][]float32{"w": clean[k], "v": odd[k]}}
	}
	base, models := mk(0), []*ckpt{mk(1), mk(2), mk(3)}
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		for _, topk := range []float64{0.1, 0.6, 1} {
			want := runMethodFiles(t, dt, "sce", Params{SelectTopK: topk, keepCacheBytes: 1}, base, models, nil, nil, 1)
			for _, threads := range []int{1, 2} {
				got := runMethodFiles(t, dt, "sce", Params{SelectTopK: topk}, base, models, nil, nil, threads)
				for _, name := range base.names {
					for j := range want[name] {
						if math.Float32bits(got[name][j]) != math.Float32bits(want[name][j]) {
							t.Fatalf("%s %s select_topk=%g threads=%d element %d: %v with the keys, %v without", dt, name, topk, threads, j, got[name][j], want[name][j])
						}
					}
				}
			}
		}
	}
}

// TestBF16Requiet: bf16Requiet is widening and rounding back, for every BF16 word
// (signalling NaNs included), at every position of an odd-length run.
func TestBF16Requiet(t *testing.T) {
	src := make([]byte, 2*(1<<16)+2) // one word more: a tail after the groups of four
	for h := range 1 << 16 {
		src[2*h], src[2*h+1] = byte(h), byte(h>>8)
	}
	src[len(src)-2], src[len(src)-1] = 0x81, 0x7f // a signalling NaN in the tail
	dst := make([]byte, len(src))
	bf16Requiet(dst, src)
	for j := 0; j < len(src); j += 2 {
		h := uint16(src[j]) | uint16(src[j+1])<<8
		got := uint16(dst[j]) | uint16(dst[j+1])<<8
		if want := dtype.Float32ToBF16(dtype.BF16ToFloat32(h)); got != want {
			t.Fatalf("word %#04x: %#04x, want %#04x", h, got, want)
		}
	}
}

// TestSCEMergeBF16: the fused merge on BF16 bytes (AVX-512 where the CPU has it) is
// decoding, sceMergeChunk and rounding, bit for bit, with and without a mask, on
// words that include signalling and quiet NaNs of both signs, ±Inf and ±0 (dense
// enough that two NaNs meet in one sum), with ordinary weights and with weights
// that are NaN, ±Inf or 0 (as a tensor holding a NaN or an Inf makes them).
func TestSCEMergeBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 2))
	special := []uint16{0x7f81, 0xffc1, 0x7fc0, 0xff90, 0x7f80, 0xff80, 0x0000, 0x8000, 0x0001}
	weights := [][]float32{{0.2, 0.5, 0.3}, {0.2, float32(math.NaN()), 0.3}, {float32(math.Inf(1)), 0, float32(math.Inf(-1))},
		{float32(math.NaN()), float32(math.Float32frombits(0xffc00001)), 1e-7}, {1e-7, 0, 1e-8}}
	for _, n := range []int{1, 3, 15, 16, 17, 64, 100, 1001, 4096 + 5} {
		for _, every := range []int{20, 3} { // one word in every of them special
			words := func() ([]byte, []float32) {
				b, f := make([]byte, 2*n), make([]float32, n)
				for j := range n {
					h := uint16(0x3c00 + rng.IntN(0x800))
					if rng.IntN(2) == 0 {
						h |= 0x8000
					}
					if rng.IntN(every) == 0 {
						h = special[rng.IntN(len(special))]
					}
					b[2*j], b[2*j+1] = byte(h), byte(h>>8)
					f[j] = dtype.BF16ToFloat32(h)
				}
				return b, f
			}
			base, basef := words()
			var models [][]byte
			var modelsf [][]float32
			for range 3 {
				b, f := words()
				models, modelsf = append(models, b), append(modelsf, f)
			}
			// A mask that keeps a third, and one that keeps a fortieth (most groups of
			// sixteen without a kept position, which the assembly skips).
			mask, sparse := make([]uint64, (n+63)/64), make([]uint64, (n+63)/64)
			for j := range n {
				if rng.IntN(3) == 0 {
					mask[j/64] |= 1 << (j % 64)
				}
				if rng.IntN(40) == 0 {
					sparse[j/64] |= 1 << (j % 64)
				}
			}
			for _, w := range weights {
				none := make([]byte, 2*n) // masked, with no mask: no position kept
				sceMergeBF16(none, base, models, w, nil, true, make([]float32, 3))
				for j := range n {
					if g, want := uint16(none[2*j])|uint16(none[2*j+1])<<8, dtype.Float32ToBF16(basef[j]); g != want {
						t.Fatalf("n=%d no position kept, element %d: %#04x, want %#04x", n, j, g, want)
					}
				}
				for _, m := range [][]uint64{nil, mask, sparse} {
					got := make([]byte, 2*n)
					sceMergeBF16(got, base, models, w, m, m != nil, make([]float32, 3))
					dst := make([]float32, n)
					sceMergeChunk(dst, basef, modelsf, w, m, make([]float32, 3))
					for j := range n {
						g := uint16(got[2*j]) | uint16(got[2*j+1])<<8
						want := dtype.Float32ToBF16(dst[j])
						if g != want {
							t.Fatalf("n=%d w=%v masked=%v (AVX-512 %v) element %d: %#04x, want %#04x (base %#04x, models %#04x %#04x %#04x)", n, w, m != nil, haveSCE512, j, g, want,
								uint16(base[2*j])|uint16(base[2*j+1])<<8, uint16(models[0][2*j])|uint16(models[0][2*j+1])<<8,
								uint16(models[1][2*j])|uint16(models[1][2*j+1])<<8, uint16(models[2][2*j])|uint16(models[2][2*j+1])<<8)
						}
					}
				}
			}
		}
	}
}

// TestSCESquaresBF16: the weights pass's sums from BF16 words (sceSquaresBF16, only
// the kept positions widened; with a mask, the four models at once in assembly
// where the CPU has it) are sceSquaresRef's on the decoded words bit for bit
// (NaN payloads included where they do not vary: sameBits64), for 1 to 9 models,
// with and without a mask, on words with signalling and quiet NaNs of both signs,
// ±Inf, ±0 and subnormals.
func TestSCESquaresBF16(t *testing.T) { checkSCESquaresBF16(t) }

// checkSCESquaresBF16 is TestSCESquaresBF16's check, which the amd64 tests run
// again with the assembly off.
func checkSCESquaresBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 31))
	for _, models := range []int{1, 2, 3, 4, 5, 8, 9} {
		for _, n := range []int{1, 63, 64, 65, 1001} {
			for _, every := range []int{0, 20, 3} {
				var words [][]byte
				var vals [][]float32
				for range models + 1 {
					b, f := bf16TestWords(rng, n, every)
					words, vals = append(words, b), append(vals, f)
				}
				mask := make([]uint64, (n+63)/64)
				for j := range n {
					if rng.IntN(4) == 0 {
						mask[j/64] |= 1 << (j % 64)
					}
				}
				for _, m := range [][]uint64{nil, mask} {
					got, want := make([]float64, models), make([]float64, models)
					for i := range got { // what the chunk's accumulator may hold before
						got[i], want[i] = 0.5, 0.5
					}
					sceSquaresBF16(got, words[0], words[1:], m)
					sceSquaresRef(want, vals[0], vals[1:], m)
					for i := range got {
						if !sameBits64(got[i], want[i]) {
							t.Fatalf("%d models, n=%d, every %d, masked %v, model %d: %v, want %v", models, n, every, m != nil, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}

// TestSCEFusedMatchesDecoded: sce through the engine with its passes and merge on
// BF16 bytes gives the bytes of the decoding path, over a tensor of several chunks
// whose last ends off the groups of sixteen, with the keys kept and through sceBig,
// with ordinary words and with NaNs and ±Inf among them, at several select_topk;
// no fused pass declines a chunk where the CPU runs the assembly.
func TestSCEFusedMatchesDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 44))
	m := 2*ChunkElems + 1003
	for _, every := range []int{0, 50000} {
		var in [][]byte
		for range 4 {
			b, _ := bf16TestWords(rng, m, every)
			in = append(in, b)
		}
		for _, limit := range []int64{0, 4*int64(m) - 4} { // the keys kept; sceBig
			for _, topk := range []float64{0.1, 0.5, 1} {
				r := &methodRun{weights: make([]float32, 3), base: true, p: Params{SelectTopK: topk, keepCacheBytes: limit}}
				fused, decoded := executeFusedAndDecoded(t, in, []int64{int64(m)}, haveSCE512, haveSCE512 && haveTiesAsm,
					func(tp *TensorPlan) Kernel { return sceKernel(r, tp) })
				if !sameBF16Words(fused, decoded) {
					t.Errorf("every %d limit %d select_topk %g: the fused output differs from the decoded one", every, limit, topk)
				}
			}
		}
	}
}
