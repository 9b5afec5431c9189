package merge

import "math"

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
	pairs := make([][2]int, 0, stats) // (i, k), i ≤ k, in acc's order
	for i := range n {
		for k := i; k < n; k++ {
			pairs = append(pairs, [2]int{i, k})
		}
	}
	pass := Pass{
		NumStats: stats,
		Chunk: func(_ Chunk, in, _ [][]float32, acc []float64) {
			var base []float32
			if withBase {
				base = in[0]
			}
			gramChunk(pairs, in[first:len(in)], base, acc)
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

// combine writes dst = Σ_i c_i·y_i (+ the base), with y_i = in[first+i] − in[0] when
// withBase: each difference and each product rounded to float32, added in model order
// to the base's value. It is how the Gram-matrix methods (karcher, multislerp) apply
// the coefficients they found.
func combine(dst []float32, in [][]float32, c []float32, withBase bool) {
	if !withBase {
		clear(dst)
		for i, w := range c {
			x := in[i][:len(dst)]
			for j := range dst {
				dst[j] += float32(w * x[j]) // rounded: no platform fuses it
			}
		}
		return
	}
	base := in[0][:len(dst)]
	copy(dst, base)
	for i, w := range c {
		x := in[1+i][:len(dst)]
		for j := range dst {
			dst[j] += float32(w * (x[j] - base[j]))
		}
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

// gramChunk adds to acc[p] the inner product ⟨y[i] − b, y[k] − b⟩ of each pair
// (i, k) = pairs[p] (b nil: ⟨y[i], y[k]⟩), each as dotDiff computes it (the same operations in the same
// order, so the same bits). The pairs go four at a time through one loop over the
// elements: their four sums are independent chains, where one pair at a time waits
// on each addition's latency and reads b once per pair.
func gramChunk(pairs [][2]int, y [][]float32, b []float32, acc []float64) {
	if b == nil {
		b = zeroChunk[:len(y[0])]
	}
	p := 0
	for ; p+4 <= len(pairs); p += 4 {
		q := pairs[p : p+4]
		s0, s1, s2, s3 := dot4(y[q[0][0]], y[q[0][1]], y[q[1][0]], y[q[1][1]],
			y[q[2][0]], y[q[2][1]], y[q[3][0]], y[q[3][1]], b)
		acc[p] += s0
		acc[p+1] += s1
		acc[p+2] += s2
		acc[p+3] += s3
	}
	for ; p+2 <= len(pairs); p += 2 {
		q := pairs[p : p+2]
		s0, s1 := dot2(y[q[0][0]], y[q[0][1]], y[q[1][0]], y[q[1][1]], b)
		acc[p] += s0
		acc[p+1] += s1
	}
	for ; p < len(pairs); p++ {
		acc[p] += dotDiff(y[pairs[p][0]], y[pairs[p][1]], b)
	}
}

// zeroChunk is the base of gramChunk when there is none: y − 0 is y exactly (−0
// included), so the products are dotDiff's without a base. Never written.
var zeroChunk [ChunkElems]float32

// dot4 is dotDiff(a0, c0, b), …, dotDiff(a3, c3, b) in one loop.
func dot4(a0, c0, a1, c1, a2, c2, a3, c3, b []float32) (s0, s1, s2, s3 float64) {
	a0, c0, a1, c1 = a0[:len(b)], c0[:len(b)], a1[:len(b)], c1[:len(b)]
	a2, c2, a3, c3 = a2[:len(b)], c2[:len(b)], a3[:len(b)], c3[:len(b)]
	for j, bj := range b {
		x := float64(bj)
		s0 += float64((float64(a0[j]) - x) * (float64(c0[j]) - x)) // rounded: no platform fuses it
		s1 += float64((float64(a1[j]) - x) * (float64(c1[j]) - x))
		s2 += float64((float64(a2[j]) - x) * (float64(c2[j]) - x))
		s3 += float64((float64(a3[j]) - x) * (float64(c3[j]) - x))
	}
	return s0, s1, s2, s3
}

// dot2 is dotDiff(a0, c0, b) and dotDiff(a1, c1, b) in one loop.
func dot2(a0, c0, a1, c1, b []float32) (s0, s1 float64) {
	a0, c0, a1, c1 = a0[:len(b)], c0[:len(b)], a1[:len(b)], c1[:len(b)]
	for j, bj := range b {
		x := float64(bj)
		s0 += float64((float64(a0[j]) - x) * (float64(c0[j]) - x)) // rounded: no platform fuses it
		s1 += float64((float64(a1[j]) - x) * (float64(c1[j]) - x))
	}
	return s0, s1
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
