package merge

import (
	"math"
	"sync"
)

// Shared machinery of the methods that treat a tensor (or each of its rows) as a
// vector: nuslerp, multislerp, karcher and arcee_fusion. Their tensor-wide
// quantities (norms, inner products, softmax sums) are float64 sums taken in one
// streaming pass per quantity; each chunk adds its own partial sums, and Done adds
// the chunks' in chunk order, so that the result does not depend on the thread count.

// GeoParams are the method-wide parameters of nuslerp, karcher and ramplus_tl.
type GeoParams struct {
	Flatten Switch  // nuslerp_flatten: one angle for the whole tensor (default on)
	RowWise Switch  // nuslerp_row_wise: one angle per column (vectors along dimension 0)
	MaxIter uint64  // karcher's max_iter
	Tol     float64 // karcher's tol
	R       float64 // ramplus_tl's r
	Alpha   float64 // ramplus_tl's alpha
}

// gramPass returns a pass that sums, over the whole tensor, the inner products
// ⟨y_i, y_k⟩ (i ≤ k) of the vectors y_i = in[first+i] − in[0] (withBase) or
// y_i = in[i], and a function that reads the sums as a symmetric matrix once the
// pass is done. The differences and products are taken in float64 (exact for
// float32 inputs), each product added in float64.
func gramPass(n int, withBase bool) (Pass, func() [][]float64) {
	stats := n * (n + 1) / 2
	g := make([][]float64, n)
	for i := range g {
		g[i] = make([]float64, n)
	}
	first := 0
	if withBase {
		first = 1
	}
	pairs := gramPairs(n)
	pool := sync.Pool{New: func() any { return newGramScratch(n, stats) }}
	pass := Pass{
		NumStats: stats,
		Chunk: func(_ Chunk, in, _ [][]float32, acc []float64) {
			var base []float32
			if withBase {
				base = in[0]
			}
			s := pool.Get().(*gramScratch)
			defer pool.Put(s)
			gramChunk(pairs, in[first:len(in)], base, acc, s)
		},
		Done: func(perChunk []float64) error {
			sums := make([]float64, stats)
			for c := 0; c < len(perChunk); c += stats {
				for s := range sums {
					sums[s] += perChunk[c+s]
				}
			}
			s := 0
			for i := range n {
				for k := i; k < n; k++ {
					g[i][k], g[k][i] = sums[s], sums[s]
					s++
				}
			}
			return nil
		},
	}
	return pass, func() [][]float64 { return g }
}

// gramPairs is the pairs (i, k), i ≤ k, of n vectors in the order of gramPass's
// sums.
func gramPairs(n int) [][2]int {
	pairs := make([][2]int, 0, n*(n+1)/2)
	for i := range n {
		for k := i; k < n; k++ {
			pairs = append(pairs, [2]int{i, k})
		}
	}
	return pairs
}

// combine writes dst = Σ_i c_i·y_i (+ the base), with y_i = in[first+i] − in[0] when
// withBase: each difference and each product rounded to float32, added in model order
// to the base's value. It is how the Gram-matrix methods (karcher, multislerp) apply
// the coefficients they found.
func combine(dst []float32, in [][]float32, c []float32, withBase bool) {
	if !withBase {
		clear(dst)
		for i, w := range c {
			addScaled(dst, in[i], nil, w)
		}
		return
	}
	copy(dst, in[0])
	for i, w := range c {
		addScaled(dst, in[1+i], in[0], w)
	}
}

// addScaled adds w·(x − b) to dst (b nil: w·x), the difference, product and sum each
// rounded to float32: with AVX2 eight at a time (the same operations), addScaledGo
// for the rest.
func addScaled(dst, x, b []float32, w float32) {
	x = x[:len(dst)]
	if b != nil {
		b = b[:len(dst)]
	}
	j := 0
	if haveLerpBF16Asm {
		j = addScaledAsm(dst, x, b, w)
	}
	if b != nil {
		b = b[j:]
	}
	addScaledGo(dst[j:], x[j:], b, w)
}

// divide sets dst[j] /= d, each quotient rounded to float32: with AVX2 eight at a time
// (the same operation), divideGo for the rest.
func divide(dst []float32, d float32) {
	j := 0
	if haveLerpBF16Asm {
		j = divideAsm(dst, d)
	}
	divideGo(dst[j:], d)
}

// divideGo is divide in Go: the reference of the assembly.
func divideGo(dst []float32, d float32) {
	for j := range dst {
		dst[j] /= d
	}
}

// scaleOnto sets dst[j] = base[j] + float32(w·dst[j]), the product and the sum each
// rounded to float32: with AVX2 eight at a time (the same operations), scaleOntoGo
// for the rest.
func scaleOnto(dst, base []float32, w float32) {
	base = base[:len(dst)]
	j := 0
	if haveLerpBF16Asm {
		j = scaleOntoAsm(dst, base, w)
	}
	scaleOntoGo(dst[j:], base[j:], w)
}

// scaleOntoGo is scaleOnto in Go: the reference of the assembly.
func scaleOntoGo(dst, base []float32, w float32) {
	base = base[:len(dst)]
	for j := range dst {
		dst[j] = base[j] + float32(w*dst[j])
	}
}

// addScaledGo is addScaled in Go: the reference of the assembly.
func addScaledGo(dst, x, b []float32, w float32) {
	x = x[:len(dst)]
	if b == nil {
		for j := range dst {
			dst[j] += float32(w * x[j]) // rounded: no platform fuses it
		}
		return
	}
	b = b[:len(dst)]
	for j := range dst {
		dst[j] += float32(w * (x[j] - b[j]))
	}
}

// combineRef is combine in float64: Σ c_i y_i (+ base), and the magnitude scale of
// its terms for tolerances.
func combineRef(base []float32, models [][]float32, c []float64) (ref, scale []float64) {
	n := len(models[0])
	ref, scale = make([]float64, n), make([]float64, n)
	for j := range n {
		var b float64
		if base != nil {
			b = float64(base[j])
		}
		ref[j], scale[j] = b, math.Abs(b)
		for i, x := range models {
			term := c[i] * (float64(x[j]) - b)
			ref[j] += term
			scale[j] += math.Abs(term)
		}
	}
	return ref, scale
}

// gramRef is the float64 Gram matrix of y_i = models[i] − base (base may be nil).
func gramRef(base []float32, models [][]float32) [][]float64 {
	g := make([][]float64, len(models))
	for i := range g {
		g[i] = make([]float64, len(models))
		for k := range g {
			for j := range models[i] {
				a, b := float64(models[i][j]), float64(models[k][j])
				if base != nil {
					a -= float64(base[j])
					b -= float64(base[j])
				}
				g[i][k] += a * b
			}
		}
	}
	return g
}

// quad is cᵀ G d.
func quad(g [][]float64, c, d []float64) float64 {
	var s float64
	for i := range c {
		for k := range d {
			s += float64(c[i] * g[i][k] * d[k]) // rounded: no platform fuses it
		}
	}
	return s
}

// to32 rounds coefficients to float32, as the kernels apply them.
func to32(c []float64) []float32 {
	out := make([]float32, len(c))
	for i, v := range c {
		out[i] = float32(v)
	}
	return out
}

// gramBlock is the elements gramChunk takes at a time: the vectors' differences of a
// block stay in the cache for the pairs that read them.
const gramBlock = 256

// gramScratch is gramChunk's: a block's differences per vector, and the pairs' sums.
type gramScratch struct {
	d    [][]float64
	sums []float64
}

func newGramScratch(vectors, pairs int) *gramScratch {
	s := &gramScratch{d: make([][]float64, vectors), sums: make([]float64, pairs)}
	for i := range s.d {
		s.d[i] = make([]float64, gramBlock)
	}
	return s
}

// gramChunk adds to acc[p] the inner product ⟨y[i] − b, y[k] − b⟩ of each pair
// (i, k) = pairs[p] (b nil: ⟨y[i], y[k]⟩), each as dotDiff computes it: the same
// differences and products, added in the same order, so the same bits. A block at a
// time, each vector's differences are taken once (not once per pair), and the pairs
// go four at a time through one loop, their sums independent chains where one pair
// at a time waits on each addition's latency.
func gramChunk(pairs [][2]int, y [][]float32, b []float32, acc []float64, s *gramScratch) {
	m := len(y[0])
	sums := s.sums[:len(pairs)]
	clear(sums)
	for lo := 0; lo < m; lo += gramBlock {
		hi := min(lo+gramBlock, m)
		for i := range y {
			d, yi := s.d[i][:hi-lo], y[i][lo:hi]
			if b == nil {
				for j, v := range yi {
					d[j] = float64(v)
				}
				continue
			}
			bb := b[lo:hi][:len(yi)]
			for j, v := range yi {
				d[j] = float64(v) - float64(bb[j])
			}
		}
		d := s.d
		p := 0
		for ; p+4 <= len(pairs); p += 4 {
			q := pairs[p : p+4]
			sums[p], sums[p+1], sums[p+2], sums[p+3] = dot4(sums[p], sums[p+1], sums[p+2], sums[p+3],
				d[q[0][0]], d[q[0][1]], d[q[1][0]], d[q[1][1]], d[q[2][0]], d[q[2][1]], d[q[3][0]], d[q[3][1]], hi-lo)
		}
		for ; p < len(pairs); p++ {
			sums[p] = dot1(sums[p], d[pairs[p][0]], d[pairs[p][1]], hi-lo)
		}
	}
	for p := range sums {
		acc[p] += sums[p]
	}
}

// dot4 adds the products of the first m entries of four pairs of vectors to the
// four sums, in order, in one loop.
func dot4(s0, s1, s2, s3 float64, a0, c0, a1, c1, a2, c2, a3, c3 []float64, m int) (float64, float64, float64, float64) {
	a0, c0, a1, c1 = a0[:m], c0[:m], a1[:m], c1[:m]
	a2, c2, a3, c3 = a2[:m], c2[:m], a3[:m], c3[:m]
	for j := range m {
		s0 += float64(a0[j] * c0[j]) // rounded: no platform fuses it
		s1 += float64(a1[j] * c1[j])
		s2 += float64(a2[j] * c2[j])
		s3 += float64(a3[j] * c3[j])
	}
	return s0, s1, s2, s3
}

// dot1 is dot4 for one pair.
func dot1(s float64, a, c []float64, m int) float64 {
	a, c = a[:m], c[:m]
	for j := range m {
		s += float64(a[j] * c[j]) // rounded: no platform fuses it
	}
	return s
}

// dotDiff is Σ_j (a_j − b_j)(c_j − b_j) in float64 (b nil: Σ a_j c_j); for float32
// inputs the differences and products are exact, the sums rounded in order.
func dotDiff(a, c, b []float32) float64 {
	var dot float64
	c = c[:len(a)]
	if b == nil {
		for j := range a {
			dot += float64(float64(a[j]) * float64(c[j])) // rounded: no platform fuses it
		}
		return dot
	}
	b = b[:len(a)]
	for j := range a {
		dot += float64((float64(a[j]) - float64(b[j])) * (float64(c[j]) - float64(b[j])))
	}
	return dot
}
