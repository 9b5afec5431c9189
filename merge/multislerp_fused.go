package merge

import (
	"encoding/binary"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

// Multislerp's two passes straight from BF16 bytes: the Gram pass (Pass.Fused) and
// the merge (Kernel.Fused). Model_stock's statistics are the same inner products of
// the task vectors in another order, so it shares the Gram half.
//
// The Gram sums are chains: each pair's float64 sum adds its products one element
// after another, as gramChunk does, so no sum can be split across lanes without
// changing its bits. What a chunk can do faster is everything around the chains:
// the BF16 words widened and the differences taken eight at a time, each pair's
// products a vector at a time, and then six pairs' chains side by side, one scalar
// addition each per element (independent chains fill the adders a lone chain
// leaves waiting on each addition's latency).

// gramFusedBlock is the elements gramBF16 takes at a time: the differences and the
// products of a block stay in the first-level cache for the chains that read them.
// The chains' assembly addresses the products' rows at this stride.
const gramFusedBlock = 256

// gramFusedStride is the distance in float64s between the rows of differences and
// of products that the chains read side by side: one more than a block, so that
// the loads of an element fall in different banks of the first-level cache (at
// 2048 bytes apart they contend for one, and the chains ran at half speed).
const gramFusedStride = gramFusedBlock + 1

// gramFusedWidth is the pairs whose chains run side by side.
const gramFusedWidth = 6

// gramFusedScratch is gramBF16's: a block's differences per vector, a group's
// products per pair, and the sums, gramFusedWidth per group.
type gramFusedScratch struct {
	d    []float64 // vector i's differences at d[i*gramFusedStride:]
	p    []float64 // a group's pair q's products at p[q*gramFusedStride:]
	sums []float64
}

func newGramFusedScratch(vectors, pairs int) *gramFusedScratch {
	groups := (pairs + gramFusedWidth - 1) / gramFusedWidth
	return &gramFusedScratch{
		d:    make([]float64, vectors*gramFusedStride),
		p:    make([]float64, gramFusedWidth*gramFusedStride),
		sums: make([]float64, groups*gramFusedWidth),
	}
}

// gramFused returns a Pass.Fused that adds to acc[p] the inner product of the pair
// pairs[p] of y_i = in[first+i] − in[0] (withBase) or y_i = in[i], over a chunk's
// BF16 words: the bits gramChunk gives on the decoded chunk (and model_stock's
// statistics, in their order). It declines other dtypes, and machines without the
// assembly, where decoding and gramChunk are the faster way.
func gramFused(vectors int, pairs [][2]int, withBase bool) func(Chunk, []Operand, []float64) bool {
	pool := sync.Pool{New: func() any { return newGramFusedScratch(vectors, len(pairs)) }}
	return func(_ Chunk, in []Operand, acc []float64) bool {
		if !haveLerpBF16Asm {
			return false
		}
		y, b, ok := bf16Operands(in, withBase)
		if !ok {
			return false
		}
		s := pool.Get().(*gramFusedScratch)
		defer pool.Put(s)
		gramBF16(pairs, y, b, acc, s)
		return true
	}
}

// gramChunkOperands is gramPairs(n) with each pair's vectors in the order gramChunk's
// compiled loops multiply them, which decides the payload where two NaNs meet: the
// pairs dot4 takes (all but the last len%4), (k, i) (the compiler's choice); those
// dot1 takes, (i, k). gramBF16 multiplies d[pair[0]] by d[pair[1]].
func gramChunkOperands(n int) [][2]int {
	pairs := gramPairs(n)
	for p := range len(pairs) &^ 3 {
		pairs[p][0], pairs[p][1] = pairs[p][1], pairs[p][0]
	}
	return pairs
}

// gramBF16 adds to acc[p] ⟨y[i] − b, y[k] − b⟩ for each pair (i, k) = pairs[p], over
// BF16 words (b nil: ⟨y[i], y[k]⟩): each difference taken in float64 from the
// widened words, each product rounded (y[i]'s difference its first operand), added
// in element order to a sum that starts at +0, as gramChunk does on the decoded
// values.
// Three vectors in one of the orders gramThreeLayout knows take gramChains3, their
// products made in the chains' loop; any other case, a group of pairs' products a
// vector at a time, then gramChains.
func gramBF16(pairs [][2]int, y [][]byte, b []byte, acc []float64, s *gramFusedScratch) {
	m := len(y[0]) / 2
	sums := s.sums
	clear(sums)
	stock, three := gramThreeLayout(pairs)
	three = three && haveLerpBF16Asm
	for lo := 0; lo < m; lo += gramFusedBlock {
		hi := min(lo+gramFusedBlock, m)
		n := hi - lo
		for i, yi := range y {
			var bb []byte
			if b != nil {
				bb = b[2*lo : 2*hi]
			}
			gramDiffBF16(s.d[i*gramFusedStride:][:n], yi[2*lo:2*hi], bb)
		}
		if three {
			gramChains3Asm(sums, s.d, n, stock)
			continue
		}
		for g := 0; g < len(pairs); g += gramFusedWidth {
			group := pairs[g:min(g+gramFusedWidth, len(pairs))]
			for q, pr := range group {
				gramMul(s.p[q*gramFusedStride:][:n], s.d[pr[0]*gramFusedStride:][:n], s.d[pr[1]*gramFusedStride:][:n])
			}
			// A short last group's spare rows hold stale products; their sums are
			// never read.
			gramChains(sums[g:g+gramFusedWidth], s.p, n)
		}
	}
	for p := range pairs {
		acc[p] += sums[p]
	}
}

// gramThreeLayout reports whether pairs is one of the two orders of three vectors'
// six pairs that gramChains3Asm knows, and which: multislerp's (gramChunkOperands(3),
// stock false) or model_stock's (modelStockPairs(3), stock true).
func gramThreeLayout(pairs [][2]int) (stock, ok bool) {
	if len(pairs) != 6 {
		return false, false
	}
	switch [6][2]int(pairs) {
	case [6][2]int{{0, 0}, {1, 0}, {2, 0}, {1, 1}, {1, 2}, {2, 2}}:
		return false, true
	case [6][2]int{{0, 1}, {0, 2}, {1, 2}, {0, 0}, {1, 1}, {2, 2}}:
		return true, true
	}
	return false, false
}

// gramDiffBF16 writes d[j] = float64(y_j) − float64(b_j) for the BF16 words y and b
// (b nil: float64(y_j)): with AVX2 eight at a time, gramDiffBF16Go for the rest.
func gramDiffBF16(d []float64, y, b []byte) {
	j := 0
	if haveLerpBF16Asm {
		j = gramDiffBF16Asm(d, y, b)
	}
	if b != nil {
		b = b[2*j:]
	}
	gramDiffBF16Go(d[j:], y[2*j:], b)
}

// gramDiffBF16Go is gramDiffBF16 in Go: the reference of the assembly, and
// gramChunk's differences on the decoded words.
func gramDiffBF16Go(d []float64, y, b []byte) {
	le := binary.LittleEndian
	y = y[:2*len(d)]
	if b == nil {
		for j := range d {
			d[j] = float64(dtype.BF16ToFloat32(le.Uint16(y[2*j:])))
		}
		return
	}
	b = b[:2*len(d)]
	for j := range d {
		d[j] = float64(dtype.BF16ToFloat32(le.Uint16(y[2*j:]))) - float64(dtype.BF16ToFloat32(le.Uint16(b[2*j:])))
	}
}

// gramMul writes p[j] = a[j]·c[j], rounded: with AVX2 four at a time, gramMulGo for
// the rest.
func gramMul(p, a, c []float64) {
	j := 0
	if haveLerpBF16Asm {
		j = gramMulAsm(p, a, c)
	}
	gramMulGo(p[j:], a[j:], c[j:])
}

// gramMulGo is gramMul in Go: the reference of the assembly.
func gramMulGo(p, a, c []float64) {
	a, c = a[:len(p)], c[:len(p)]
	for j := range p {
		p[j] = a[j] * c[j]
	}
}

// gramChains adds, for each of the gramFusedWidth rows q of p (at stride
// gramFusedStride), its first n products in order to sums[q]: in assembly where the
// CPU has AVX2, else gramChainsGo.
func gramChains(sums, p []float64, n int) {
	_ = p[(gramFusedWidth-1)*gramFusedStride+n-1]
	if haveLerpBF16Asm {
		gramChainsAsm(sums, p, n)
		return
	}
	gramChainsGo(sums, p, n)
}

// gramChainsGo is gramChains in Go: the reference of the assembly.
func gramChainsGo(sums, p []float64, n int) {
	sums = sums[:gramFusedWidth]
	for q := range sums {
		s := sums[q]
		for _, v := range p[q*gramFusedStride:][:n] {
			s += v
		}
		sums[q] = s
	}
}

// combineBF16 is multislerp's merge on BF16 words (Kernel.Fused): out = the base
// (+0 without one) plus γ_i·(y_i − b) for each model in order (b nil: γ_i·y_i), each
// difference, product and sum rounded to float32 as combine does, then rounded to
// BF16 as the encoder does. With AVX-512 sixteen at a time; the rest as the engine
// does without a fused path (bf16Tail).
func combineBF16(out []byte, y [][]byte, b []byte, c []float32) {
	j := 0
	if haveMultislerp512 {
		j = combineBF16Asm(out, y, b, c)
	}
	bf16Tail(out, y, b, j, func(dst []float32, in [][]float32) { combine(dst, in, c, b != nil) })
}

// bf16Tail does a fused merge's elements from off on as the engine's decoding path
// does, which is the reference the fused path must match: the words decoded (the
// base first, if any), merge, the result rounded to BF16. It is for the few
// elements past the assembly's last whole group, so its allocations do not count.
func bf16Tail(out []byte, y [][]byte, b []byte, off int, merge func(dst []float32, in [][]float32)) {
	m := len(out)/2 - off
	if m <= 0 {
		return
	}
	var in [][]float32
	for _, w := range append([][]byte{b}, y...) {
		if w == nil {
			continue
		}
		f := make([]float32, m)
		if err := dtype.Decode(f, w[2*off:][:2*m], dtype.BF16); err != nil {
			panic(err) // BF16 of a whole number of words always decodes
		}
		in = append(in, f)
	}
	dst := make([]float32, m)
	merge(dst, in)
	if err := dtype.Encode(out[2*off:], dst, dtype.BF16); err != nil {
		panic(err) // BF16 always encodes
	}
}

// combineFused is the Kernel.Fused of multislerp: BF16 inputs and output, where the
// CPU has AVX-512; coef gives γ once the Gram pass is done.
func combineFused(withBase bool, coef func() []float32) func([]byte, dtype.DType, []Operand, []float64, Chunk) bool {
	return func(out []byte, outDT dtype.DType, in []Operand, _ []float64, _ Chunk) bool {
		if !haveMultislerp512 || outDT != dtype.BF16 {
			return false
		}
		y, b, ok := bf16Operands(in, withBase)
		if !ok || len(out) != len(in[0].Data) {
			return false
		}
		combineBF16(out, y, b, coef())
		return true
	}
}
