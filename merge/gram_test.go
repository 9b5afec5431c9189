package merge

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// gramLanesRef is the Gram sums' statement (docs/numerics.md#reductions) on one
// chunk's decoded values, written without blocks or kernels: for each pair (i, k),
// (y_i[j] − b[j])·(y_k[j] − b[j]) in float64 added into lane j mod 8, the lanes
// combined by combineLanes.
func gramLanesRef(pairs [][2]int, y [][]float32, b []float32) []float64 {
	out := make([]float64, len(pairs))
	for p, q := range pairs {
		var s [lanes]float64
		for j := range y[0] {
			u, v := float64(y[q[0]][j]), float64(y[q[1]][j])
			if b != nil {
				u -= float64(b[j])
				v -= float64(b[j])
			}
			s[j%lanes] += float64(u * v) // rounded: no platform fuses it
		}
		out[p] = combineLanes(s[:])
	}
	return out
}

// sameSum says whether two Gram sums are the same: the same bits, or both NaN. A NaN
// sum's payload is which NaN won the products and additions that met it, the
// compiler's choice of operand order in the Go loops; gramPass reads every NaN sum
// as math.NaN(), so the payload never reaches a coefficient.
func sameSum(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || a != a && b != b
}

// TestGramSumsMatchStatement: a chunk's Gram sums, from decoded values (chunk) and
// from BF16 words (chunkBF16, the assembly where the CPU has it), are the
// statement's bit for bit (sameSum), for 1 to 7
// vectors (the two- and three-vector kernels and the pair-at-a-time one), with a
// base and without, over lengths that cross the kernels' groups and the blocks,
// with and without special words. It fails if a lane, the combination, a block's
// offset or a difference is wrong.
func TestGramSumsMatchStatement(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 40))
	for n := 1; n <= 7; n++ {
		pairs := gramPairs(n)
		for _, withBase := range []bool{false, true} {
			for _, m := range append(bf16TestLengths, ChunkElems) {
				for _, every := range []int{0, 30, 3} {
					y, yf := make([][]byte, n), make([][]float32, n)
					for i := range y {
						y[i], yf[i] = bf16TestWords(rng, m, every)
					}
					var b []byte
					var bf []float32
					if withBase {
						b, bf = bf16TestWords(rng, m, every)
					}
					want := gramLanesRef(pairs, yf, bf)
					s := newGramScratch(n, pairs)
					dec, words := make([]float64, len(pairs)), make([]float64, len(pairs))
					s.chunk(yf, bf, dec)
					s.chunkBF16(y, b, words)
					for p := range pairs {
						if !sameSum(dec[p], want[p]) || !sameSum(words[p], want[p]) {
							t.Fatalf("n %d base %v m %d every %d pair %v: decoded %v (%#x), words %v (%#x), statement %v (%#x)",
								n, withBase, m, every, pairs[p], dec[p], math.Float64bits(dec[p]),
								words[p], math.Float64bits(words[p]), want[p], math.Float64bits(want[p]))
						}
					}
				}
			}
		}
	}
}

// TestGramPassCanonicalNaN: a Gram sum that is NaN reaches the coefficients as
// math.NaN() whatever its payload, and the others as they are.
func TestGramPassCanonicalNaN(t *testing.T) {
	pass, gram := gramPass(2, false)
	odd := math.Float64frombits(0xfff8_0000_0000_0123)
	if err := pass.Done([]float64{1, odd, 2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	g := gram()
	if math.Float64bits(g[0][1]) != math.Float64bits(math.NaN()) || math.Float64bits(g[1][0]) != math.Float64bits(math.NaN()) {
		t.Errorf("NaN sum read as %#x, want math.NaN()", math.Float64bits(g[0][1]))
	}
	if g[0][0] != 4 || g[1][1] != 7 {
		t.Errorf("sums %v, want 4 and 7 on the diagonal", g)
	}
}

// TestGramAsmMatchesGo: each assembly piece of the Gram sums is its Go loop bit for
// bit, where the CPU runs it: the differences from BF16 words and from float32
// values (NaN payloads
// included, but where they vary: sameBits64), and the lanes in each layout from
// lanes that already hold sums (sameSum).
func TestGramAsmMatchesGo(t *testing.T) {
	if !haveLerpBF16Asm {
		t.Skip("no assembly on this CPU or build")
	}
	rng := rand.New(rand.NewPCG(17, 41))
	for _, m := range bf16TestLengths {
		y, _ := bf16TestWords(rng, m, 3)
		b, _ := bf16TestWords(rng, m, 3)
		for _, base := range [][]byte{nil, b} {
			got, want := make([]float64, m), make([]float64, m)
			gramDiffBF16(got, y, base)
			gramDiffBF16Go(want, y, base)
			for j := range got {
				if !sameBits64(got[j], want[j]) {
					t.Fatalf("differences, m %d base %v, element %d: %#x, Go %#x", m, base != nil, j, math.Float64bits(got[j]), math.Float64bits(want[j]))
				}
			}
		}
		_, yf := bf16TestWords(rng, m, 3)
		_, bf := bf16TestWords(rng, m, 3)
		for j := 0; j < m; j += 5 { // float32 NaNs whose payloads BF16 cannot hold
			yf[j] = math.Float32frombits(0x7f800001 + uint32(rng.IntN(0x3fffff)))
		}
		for _, base := range [][]float32{nil, bf} {
			got, want := make([]float64, m), make([]float64, m)
			gramDiffF32(got, yf, base)
			gramDiffF32Go(want, yf, base)
			for j := range got {
				if !sameBits64(got[j], want[j]) {
					t.Fatalf("float32 differences, m %d base %v, element %d: %#x, Go %#x", m, base != nil, j, math.Float64bits(got[j]), math.Float64bits(want[j]))
				}
			}
		}
		if m > gramBlock || m < lanes {
			continue
		}
		n := m &^ (lanes - 1)
		for vectors := 1; vectors <= 4; vectors++ {
			pairs := gramPairs(vectors)
			d := make([]float64, vectors*gramStride)
			for i := range vectors {
				w, _ := bf16TestWords(rng, m, 4)
				v, _ := bf16TestWords(rng, m, 4)
				gramDiffBF16Go(d[i*gramStride:][:m], w, v)
			}
			got, want := make([][lanes]float64, len(pairs)), make([][lanes]float64, len(pairs))
			for p := range got {
				for l := range lanes {
					got[p][l] = rng.NormFloat64()
				}
			}
			copy(want, got)
			if r := gramLanesAsm(got, d, pairs, layoutOf(pairs), n); r != n {
				t.Fatalf("gramLanesAsm did %d elements, want %d", r, n)
			}
			gramLanesGo(want, d, pairs, 0, n)
			for p := range got {
				for l := range lanes {
					if !sameSum(got[p][l], want[p][l]) {
						t.Fatalf("%d vectors (layout %d), m %d, pair %v lane %d: %#x, Go %#x", vectors, layoutOf(pairs), n,
							pairs[p], l, math.Float64bits(got[p][l]), math.Float64bits(want[p][l]))
					}
				}
			}
		}
	}
}

// TestGramWordsMatchBlocks: a chunk's Gram sums of two or three vectors of BF16
// words, with a base and without (gramBF16AVX512 where the CPU has AVX-512, then
// the blocks for the last few), leave in each lane the bits of the block path (the
// differences stored, then each pair's lanes in Go), with NaNs and infinities
// among the words (sameSum), on lengths around the blocks and the lanes.
func TestGramWordsMatchBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 47))
	for _, m := range append(bf16TestLengths, ChunkElems) {
		for vectors := 2; vectors <= 3; vectors++ {
			for _, withBase := range []bool{false, true} {
				y := make([][]byte, vectors)
				for i := range y {
					y[i], _ = bf16TestWords(rng, m, 50)
				}
				var b []byte
				if withBase {
					b, _ = bf16TestWords(rng, m, 50)
				}
				pairs := gramPairs(vectors)
				s := newGramScratch(vectors, pairs)
				s.chunkBF16(y, b, make([]float64, len(pairs)))
				want := make([][lanes]float64, len(pairs))
				d := make([]float64, vectors*gramStride)
				for lo := 0; lo < m; lo += gramBlock {
					hi := min(lo+gramBlock, m)
					var bb []byte
					if b != nil {
						bb = b[2*lo : 2*hi]
					}
					for i, yi := range y {
						gramDiffBF16Go(d[i*gramStride:][:hi-lo], yi[2*lo:2*hi], bb)
					}
					gramLanesGo(want, d, pairs, 0, hi-lo)
				}
				for p := range want {
					for l := range lanes {
						if !sameSum(s.lanes[p][l], want[p][l]) {
							t.Fatalf("%d vectors base %v m %d (AVX-512 %v): pair %v lane %d: %#x, the blocks %#x", vectors, withBase, m,
								haveAVX512BW, pairs[p], l, math.Float64bits(s.lanes[p][l]), math.Float64bits(want[p][l]))
						}
					}
				}
			}
		}
	}
}

// BenchmarkGramChunk is one chunk's Gram sums of three task vectors (multislerp's
// and model_stock's statistics with three models and a base) and of two vectors
// (slerp's): from BF16 words and, for scale, decoding then the sums. Bytes are the
// words read.
func BenchmarkGramChunk(b *testing.B) {
	rng := rand.New(rand.NewPCG(17, 46))
	for _, c := range []struct {
		name     string
		n        int
		withBase bool
	}{{"three+base", 3, true}, {"two", 2, false}} {
		const m = ChunkElems
		y := make([][]byte, c.n)
		for i := range y {
			y[i], _ = bf16TestWords(rng, m, 0)
		}
		var base []byte
		words := c.n
		if c.withBase {
			base, _ = bf16TestWords(rng, m, 0)
			words++
		}
		pairs := gramPairs(c.n)
		b.Run(c.name+"/bf16", func(b *testing.B) {
			s := newGramScratch(c.n, pairs)
			acc := make([]float64, len(pairs))
			b.SetBytes(int64(2 * m * words))
			b.ReportAllocs()
			for b.Loop() {
				s.chunkBF16(y, base, acc)
			}
		})
		b.Run(c.name+"/decoded", func(b *testing.B) {
			s := newGramScratch(c.n, pairs)
			acc := make([]float64, len(pairs))
			dec := make([][]float32, c.n)
			for i := range dec {
				dec[i] = make([]float32, m)
			}
			var bf []float32
			if base != nil {
				bf = make([]float32, m)
			}
			b.SetBytes(int64(2 * m * words))
			b.ReportAllocs()
			for b.Loop() {
				for i, w := range y {
					if err := dtype.Decode(dec[i], w, dtype.BF16); err != nil {
						b.Fatal(err)
					}
				}
				if bf != nil {
					if err := dtype.Decode(bf, base, dtype.BF16); err != nil {
						b.Fatal(err)
					}
				}
				s.chunk(dec, bf, acc)
			}
		})
	}
}

// TestGramMethodsFusedMatchDecoded: slerp, nuslerp (one vector, with a base and
// without; rows), karcher and model_stock (per tensor; per row, rows across chunks,
// and rows that divide a chunk, which read only the chunk's words)
// through the engine with their fused paths (the Gram sums from BF16 words;
// slerp's and nuslerp's lerp, their combinations and model_stock's merge from
// words) give the bytes of the decoding path, over a tensor of several chunks, with
// ordinary words and with NaNs and infinities among them.
func TestGramMethodsFusedMatchDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 47))
	m := 2*ChunkElems + 1003 // a last chunk that ends past the assembly's groups
	cases := []struct {
		name     string
		inputs   int
		mergeAsm bool
		kernel   func(tp *TensorPlan) Kernel
		shape    []int64 // nil: one dimension
	}{
		{"slerp", 2, true, func(tp *TensorPlan) Kernel {
			return slerpKernel(&methodRun{p: Params{T: 0.3}}, tp)
		}, nil},
		{"nuslerp", 2, true, func(tp *TensorPlan) Kernel {
			r := &methodRun{models: []Model{{Weight: 0.7}, {Weight: 0.3}}, p: Params{Geo: GeoParams{Flatten: SwitchOn}}}
			return nuslerpKernel(r, tp)
		}, nil},
		{"nuslerp-base", 3, haveAVX512BW, func(tp *TensorPlan) Kernel {
			r := &methodRun{models: []Model{{Weight: 0.7}, {Weight: 0.3}}, base: true, p: Params{Geo: GeoParams{Flatten: SwitchOn}}}
			return nuslerpKernel(r, tp)
		}, nil},
		{"nuslerp-rows", 3, haveAVX512BW, func(tp *TensorPlan) Kernel {
			r := &methodRun{models: []Model{{Weight: 0.7}, {Weight: 0.3}}, base: true, p: Params{Geo: GeoParams{Flatten: SwitchOff}}}
			return nuslerpKernel(r, tp)
		}, []int64{225, 587}}, // rows of an odd length, some across chunks
		{"karcher", 3, haveAVX512BW, func(tp *TensorPlan) Kernel {
			r := &methodRun{models: make([]Model, 3), weights: make([]float32, 3), p: Params{Geo: GeoParams{MaxIter: 10, Tol: 1e-5}}}
			return karcherKernel(r, tp)
		}, nil},
		{"model_stock", 4, haveModelStock512, func(tp *TensorPlan) Kernel {
			r := &methodRun{models: make([]Model, 3), weights: make([]float32, 3), base: true}
			return modelStockKernel(r, tp)
		}, nil},
		{"model_stock-filter_wise", 4, haveModelStock512, func(tp *TensorPlan) Kernel {
			r := &methodRun{models: make([]Model, 3), weights: make([]float32, 3), base: true, p: Params{FilterWise: SwitchOn}}
			return modelStockKernel(r, tp)
		}, []int64{225, 587}},
		{"model_stock-filter_wise-whole-rows", 4, haveModelStock512, func(tp *TensorPlan) Kernel {
			r := &methodRun{models: make([]Model, 3), weights: make([]float32, 3), base: true, p: Params{FilterWise: SwitchOn}}
			return modelStockKernel(r, tp)
		}, []int64{70, 2048}}, // 2 chunks and a part
	}
	for _, c := range cases {
		for _, every := range []int{0, 50000} {
			n := m
			if c.shape != nil {
				n = int(numElements(c.shape))
			}
			var in [][]byte
			for range c.inputs {
				b, _ := bf16TestWords(rng, n, every)
				in = append(in, b)
			}
			// With NaNs among the words nuslerp's coefficients are NaN, which its
			// fused lerp declines.
			mergeAsm := c.mergeAsm && !(c.name == "nuslerp" && every > 0)
			shape := c.shape
			if shape == nil {
				shape = []int64{int64(n)}
			}
			fused, decoded := executeFusedAndDecoded(t, in, shape, mergeAsm, true, c.kernel)
			if !sameBF16Words(fused, decoded) {
				t.Errorf("%s every %d: the fused output differs from the decoded one", c.name, every)
			}
		}
	}
}

// TestGramIndex: gramIndex finds every pair of gramPairs(n).
func TestGramIndex(t *testing.T) {
	for n := 1; n <= 7; n++ {
		for p, q := range gramPairs(n) {
			if got := gramIndex(n, q[0], q[1]); got != p {
				t.Errorf("n %d pair %v: index %d, want %d", n, q, got, p)
			}
		}
	}
}
