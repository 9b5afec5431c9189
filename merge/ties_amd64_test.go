//go:build !purego

package merge

import (
	"github.com/gomerge/gomerge/formats/dtype"

	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"
)

// TestTrimAndScanAsmMatchGo: trimming and the in-bin scan give the same results with
// and without their AVX2 paths, with many elements at the boundary value.
func TestTrimAndScanAsmMatchGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU")
	}
	defer func(v bool) { haveTiesAsm = v }(haveTiesAsm)
	hasNear512 := haveNear512
	defer func() { haveNear512 = hasNear512 }()
	rng := rand.New(rand.NewPCG(15, 15))
	for _, n := range []int{5, 8, 64, 1003} {
		x, b := make([]float32, n), make([]float32, n)
		for j := range x {
			x[j], b[j] = float32(rng.IntN(7))*0.25, float32(rng.IntN(3))*0.25 // many equal |x−b|
			if j%50 == 0 {
				x[j] = float32(math.NaN())
			}
		}
		for _, c := range []*cut{
			{t: absBits(0.5), r: 3, ties: true, before: []int64{2}},
			{t: absBits(0.75), r: 1 << 40},
			{t: absBits(10), r: 0},
		} {
			run := func(asm bool) []float32 {
				haveTiesAsm = asm
				dst := make([]float32, n)
				trimWeighted(dst, x, b, 0.7, c, Chunk{})
				return dst
			}
			d1, d2 := run(true), run(false)
			for j := range d1 {
				if math.Float32bits(d1[j]) != math.Float32bits(d2[j]) {
					t.Fatalf("n=%d t=%#x [%d]: asm %v, Go %v", n, c.t, j, d1[j], d2[j])
				}
			}
		}
		mags := make([]uint32, n)
		deltaMagnitudesWith(mags, x, b, false)
		// The bin of most elements (the packing's case), one of some, and none;
		// appended after earlier lows; with the AVX-512 packing and without.
		for _, bin := range []uint32{mags[0] >> 16, mags[1] >> 16, 0x3f00, 0x7fff} {
			want := binLows([]uint16{7, 9}, mags, bin, false)
			for _, has512 := range []bool{true, false} {
				haveNear512 = has512 && hasNear512
				if got := binLows([]uint16{7, 9}, mags, bin, true); !slices.Equal(got, want) {
					t.Fatalf("n=%d bin %#x (AVX-512 %v): scans differ:\n%v\n%v", n, bin, haveNear512, got, want)
				}
			}
			haveNear512 = hasNear512
		}
	}
}

// TestNearWindowAsmMatchesGo: the AVX2 packing of the magnitudes in a window of bins
// keeps the same elements in the same order as the Go loop, on odd lengths, with
// windows at both ends of the bins, empty and full, and appending after earlier
// elements.
func TestNearWindowAsmMatchesGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU")
	}
	has512 := haveNear512
	defer func() { haveNear512 = has512 }()
	rng := rand.New(rand.NewPCG(17, 17))
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 63, 1000, ChunkElems} {
		mags := make([]uint32, n)
		for j := range mags {
			mags[j] = rng.Uint32()>>rng.UintN(2) | uint32(rng.IntN(5))<<16 // bins 0-4 often
			if j%9 == 0 {
				mags[j] = 0x3f80_0000 | rng.Uint32()&0xffff
			}
		}
		for _, w := range [][2]uint32{{0, 0}, {0, 4}, {2, 3}, {0x3f80, 0x3f80}, {0x3f7f, 0x3f81}, {0xfffe, 0xffff}, {0, 0xffff}} {
			prefix := []uint32{7, 8, 9}
			want, wantAbove := nearWindow(slices.Clone(prefix), mags, w[0], w[1], false)
			for _, wide := range []bool{false, has512} {
				haveNear512 = wide
				got, gotAbove := nearWindow(slices.Clone(prefix), mags, w[0], w[1], true)
				if !slices.Equal(got, want) {
					t.Fatalf("n=%d window %#x AVX-512 %v: asm kept %d, Go %d (or in another order)", n, w, wide, len(got), len(want))
				}
				if gotAbove != wantAbove {
					t.Fatalf("n=%d window %#x AVX-512 %v: asm counted %d above, Go %d", n, w, wide, gotAbove, wantAbove)
				}
			}
		}
	}
}

// TestDeltaNearMatchesWindow: pass 1's windows packed straight from BF16 words
// (deltaNearBF16: AVX-512 where the CPU has it, one window or two at once, and the
// Go loop) keep the elements, in order, and count those above, as nearWindow does
// over deltaMagnitudesBF16's magnitudes, window by window: on lengths across the
// groups of 16, with special words (NaN, ±Inf, ±0), windows at both ends of the
// bins, empty, full and overlapping, appending after earlier elements and adding to
// earlier counts, for one, two and three windows, for the base's lane and another.
func TestDeltaNearMatchesWindow(t *testing.T) {
	has512 := haveNear512
	defer func() { haveNear512 = has512 }()
	rng := rand.New(rand.NewPCG(17, 53))
	for _, n := range append([]int{0, 31, 32, 33}, bf16TestLengths...) {
		for _, every := range []int{0, 7} {
			var in []Operand
			for range 3 {
				b, _ := bf16TestWords(rng, n, every)
				in = append(in, Operand{DType: dtype.BF16, Data: b})
			}
			words, ok := bf16Words(nil, in, n)
			if !ok {
				t.Fatalf("n=%d: BF16 words declined", n)
			}
			for lane := range 2 {
				mags := make([]uint32, n)
				if !deltaMagnitudesBF16(mags, lane, in) {
					t.Fatalf("n=%d: magnitudes declined", n)
				}
				mid := uint32(0x3c00)
				if n > 0 {
					mid = mags[n/2] >> 16
				}
				all := [][2]uint32{{0, 0}, {mid, mid}, {mid - 40, mid + 3}, {0x7f80, 0x7fff}, {0xfffe, 0xffff}, {0, 0xffff}, {mid - 2, mid + 60}}
				for k := 1; k <= 3; k++ {
					for first := range all {
						wins := make([][2]uint32, k)
						for c := range wins {
							wins[c] = all[(first+c)%len(all)]
						}
						for _, wide := range []bool{false, has512} {
							haveNear512 = wide
							found, above := make([][]uint32, k), make([]int64, k)
							for c := range found {
								found[c], above[c] = []uint32{7, 8, uint32(c)}, int64(c)
							}
							deltaNearBF16(found, above, lane, words, wins)
							for c, w := range wins {
								want, wantAbove := nearWindow([]uint32{7, 8, uint32(c)}, mags, w[0], w[1], false)
								if !slices.Equal(found[c], want) || above[c] != wantAbove+int64(c) {
									t.Fatalf("n=%d every %d lane %d windows %#x (AVX-512 %v), window %d: kept %d (%d above), want %d (%d above), or another order",
										n, every, lane, wins, wide, c, len(found[c]), above[c]-int64(c), len(want), wantAbove)
								}
							}
						}
					}
				}
			}
		}
	}
	if _, ok := bf16Words(nil, []Operand{{DType: dtype.BF16, Data: make([]byte, 8)}, {DType: dtype.F32, Data: make([]byte, 8)}}, 4); ok {
		t.Error("bf16Words took an F32 operand")
	}
	if _, ok := bf16Words(nil, []Operand{{DType: dtype.BF16, Data: make([]byte, 6)}}, 4); ok {
		t.Error("bf16Words took an operand shorter than n words")
	}
}

// TestTiesMergeAsmMatchesGo: the one-sweep AVX2 merge gives the bits of the
// column-by-column Go merge, with cuts that keep all, none, a tied boundary (counted
// from earlier chunks) and an untied one, on odd lengths, with NaN, ±Inf, ±0, equal
// magnitudes and opposite deltas, for one to five models.
func TestTiesMergeAsmMatchesGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU")
	}
	defer func(v bool) { haveTiesAsm = v }(haveTiesAsm)
	has512 := haveTiesBF16AVX512
	defer func() { haveTiesBF16AVX512 = has512 }()
	var l tiesLane // the offsets tiesMergeAVX2 reads
	if got := []uintptr{unsafe.Offsetof(l.gt), unsafe.Offsetof(l.eq), unsafe.Offsetof(l.tie), unsafe.Offsetof(l.seen),
		unsafe.Offsetof(l.r), unsafe.Offsetof(l.next), unsafe.Sizeof(l)}; !slices.Equal(got, []uintptr{4, 8, 12, 16, 24, 32, 40}) {
		t.Fatalf("tiesLane layout %v", got)
	}
	rng := rand.New(rand.NewPCG(17, 5))
	special := []float32{float32(math.NaN()), math.Float32frombits(0xffc00001), float32(math.Inf(1)), float32(math.Inf(-1)), 0, float32(math.Copysign(0, -1))}
	cuts := []*cut{
		{t: absBits(0.5), r: 3, ties: true, before: []int64{0, 5}},
		{all: true},
		{t: absBits(0.25), r: 1 << 40}, // untied: every element equal to t ranks above
		{none: true},
		{t: absBits(0.75), r: 40, ties: true, before: []int64{0, 0}},
	}
	for _, n := range []int{1, 7, 8, 9, 64, 1003, ChunkElems} {
		for lanes := 1; lanes <= len(cuts); lanes++ {
			in := make([][]float32, lanes+1)
			for i := range in {
				in[i] = make([]float32, n)
				for j := range in[i] {
					in[i][j] = float32(rng.IntN(9)-4) * 0.125 // many equal |x−b|, both signs
					if rng.IntN(40) == 0 {
						in[i][j] = special[rng.IntN(len(special))]
					}
				}
			}
			weights := []float32{0.7, -0.3, 1.3, 0, 0.5}[:lanes]
			pos := Chunk{Index: 1, Offset: ChunkElems}
			got, cols, plain := make([]float32, n), make([]float32, n), make([]float32, n)
			tiesMergeChunk(got, in, cuts[:lanes], weights, 0.9, pos, newTiesMergeScratch(lanes))
			tiesMergeColumns(cols, in, cuts[:lanes], weights, 0.9, pos, newTiesScratch(lanes))
			haveTiesAsm = false
			tiesMergeColumns(plain, in, cuts[:lanes], weights, 0.9, pos, newTiesScratch(lanes))
			haveTiesAsm = true
			for j := range got {
				// The columns with their AVX2 steps are what the merge did before
				// (NaN payloads included); the plain Go columns are the reference,
				// where the compiler picks which NaN payload an addition keeps.
				if g, w := math.Float32bits(got[j]), math.Float32bits(cols[j]); g != w {
					t.Fatalf("n=%d lanes=%d [%d]: one sweep %#x, columns %#x", n, lanes, j, g, w)
				}
				if g, w := got[j], plain[j]; math.Float32bits(g) != math.Float32bits(w) && !(g != g && w != w) {
					t.Fatalf("n=%d lanes=%d [%d]: one sweep %v, plain Go %v", n, lanes, j, g, w)
				}
			}
			// From BF16 words, a span at a time (the tied cuts' counts carried
			// across spans): the words of the one sweep over the widened chunk.
			words := make([]Operand, lanes+1)
			wide := make([][]float32, lanes+1)
			for i, x := range in {
				b := make([]byte, 2*n)
				must(t, dtype.Encode(b, x, dtype.BF16))
				wide[i] = make([]float32, n)
				must(t, dtype.Decode(wide[i], b, dtype.BF16))
				words[i] = Operand{DType: dtype.BF16, Data: b}
			}
			tiesMergeChunk(got, wide, cuts[:lanes], weights, 0.9, pos, newTiesMergeScratch(lanes))
			want := make([]byte, 2*n)
			must(t, dtype.Encode(want, got, dtype.BF16))
			for _, wide := range []bool{false, has512} { // the span path, the AVX-512 kernel
				haveTiesBF16AVX512 = wide
				fused := make([]byte, 2*n)
				if !tiesMergeBF16(fused, words, cuts[:lanes], weights, 0.9, pos, newTiesMergeScratch(lanes)) {
					t.Fatalf("n=%d lanes=%d AVX-512 %v: BF16 words declined", n, lanes, wide)
				}
				if j := slices.Compare(fused, want); j != 0 {
					for e := 0; e < n; e++ {
						if fused[2*e] != want[2*e] || fused[2*e+1] != want[2*e+1] {
							t.Fatalf("n=%d lanes=%d AVX-512 %v: element %d: %#x, widened chunk's merge %#x", n, lanes, wide,
								e, uint16(fused[2*e])|uint16(fused[2*e+1])<<8, uint16(want[2*e])|uint16(want[2*e+1])<<8)
						}
					}
				}
			}
		}
	}
}

// BenchmarkTiesMergeWords: TIES' AVX-512 merge from BF16 words over one chunk, base
// and three models, each keeping about a fifth of its deltas (untied cuts), weights
// 1 and normalized: the merge pass's kernel alone, its inputs in L2.
func BenchmarkTiesMergeWords(b *testing.B) {
	if !haveTiesBF16AVX512 {
		b.Skip("no AVX-512 merge on this CPU")
	}
	rng := rand.New(rand.NewPCG(3, 3))
	const n, models = ChunkElems, 3
	words := func() []uint16 {
		w := make([]uint16, n)
		for j := range w {
			w[j] = uint16(0x3c00 + rng.IntN(0x200))
		}
		return w
	}
	base, dst := words(), make([]uint16, n)
	xs := make([]*uint16, models)
	lanes := make([]tiesLane, models)
	for i := range xs {
		xs[i] = &words()[0]
		lanes[i] = tiesLane{w: 1, gt: int32(math.Float32bits(0.06))}
	}
	b.SetBytes(2 * n * (models + 2))
	for b.Loop() {
		if j := tiesMergeWordsAsm(dst, base, xs, lanes, 1, 0, n, nil, nil, true, false); j != n {
			b.Fatalf("stopped at %d", j)
		}
	}
}
