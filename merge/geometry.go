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
