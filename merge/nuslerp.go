package merge

import (
	"math"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

func init() {
	weight := weightParam()
	weight.RecipeDefault = math.NaN() // mergekit requires each model's weight
	register(Method{
		Name: "nuslerp", Command: "nuslerp",
		Short: "NuSLERP: spherical interpolation of two models by their weights (with --base: of their task vectors), per tensor, row or column",
		Example: `  gomerge nuslerp a.safetensors:weight=0.7 b.safetensors:weight=0.3 --out nuslerp.safetensors
  gomerge nuslerp --base base.safetensors a.safetensors b.safetensors --nuslerp-flatten=false --out nuslerp.safetensors`,
		Base: BaseOptional, MinModels: 2, MaxModels: 2,
		Params: []Param{weight,
			{Name: "nuslerp_flatten", Flag: "nuslerp-flatten", Usage: "one angle for the whole tensor (false: one per row, or per column with --nuslerp-row-wise)",
				Kind: Bool, Default: 1, RecipeDefault: 1, field: func(p *Params) any { return &p.Geo.Flatten }},
			{Name: "nuslerp_row_wise", Flag: "nuslerp-row-wise", Usage: "without flattening: one angle per vector along the first dimension (a matrix's columns)",
				Kind: Bool, Default: 0, RecipeDefault: 0, field: func(p *Params) any { return &p.Geo.RowWise }},
		},
		kernel: nuslerpKernel,
	})
}

// segments splits a tensor into the vectors nuslerp interpolates one by one: the
// whole tensor (flattened, or 1-D), its rows (the last dimension's vectors), or its
// vectors along the first dimension (mergekit's nuslerp_row_wise, which transposes
// the first and last dimensions). Each chunk keeps its partial sums in local slots,
// one per segment it touches, so that Done adds every segment's sums in chunk order.
type segments struct {
	cols  bool  // vectors along dimension 0: element e is in segment e mod n
	size  int64 // rows: elements per segment (element e is in segment e/size)
	n     int64 // segments
	slots int   // local slots per chunk
}

func newSegments(shape []int64, flatten, rowWise bool) segments {
	numel := numElements(shape)
	if flatten || len(shape) <= 1 || numel == 0 {
		return segments{size: max(numel, 1), n: 1, slots: 1}
	}
	if rowWise {
		inner := numel / shape[0]
		return segments{cols: true, n: inner, slots: int(min(inner, ChunkElems))}
	}
	last := shape[len(shape)-1]
	rows := numel / last
	return segments{size: last, n: rows, slots: int(min(rows, ChunkElems/last+2))}
}

// first is the segment of the chunk's first local slot.
func (s segments) first(pos Chunk) int64 {
	switch {
	case s.cols && s.n <= ChunkElems:
		return 0
	case s.cols:
		return pos.Offset % s.n
	}
	return pos.Offset / s.size
}

// runs calls f(lo, hi, local slot) for the chunk's runs of elements [lo, hi) of one
// segment, in order: whole rows (or the whole chunk, for one segment), or single
// elements for columns.
func (s segments) runs(pos Chunk, n int, f func(lo, hi, slot int)) {
	e := pos.Offset
	if s.cols {
		// Local slot = (segment − first) mod n: with n ≤ ChunkElems (first = 0) the
		// segment itself, wrapping at n; otherwise j, as the chunk never wraps.
		slot := int((e%s.n - s.first(pos) + s.n) % s.n)
		for j := range n {
			f(j, j+1, slot)
			if slot++; int64(slot) == s.n {
				slot = 0
			}
		}
		return
	}
	lo, slot := 0, 0
	for hi := int(min(int64(n), s.size-e%s.size)); lo < n; hi = min(n, hi+int(s.size)) {
		f(lo, hi, slot)
		lo = hi
		slot++
	}
}

// walk calls f(j, local slot) for the chunk's elements j in [0, n), in order.
func (s segments) walk(pos Chunk, n int, f func(j, slot int)) {
	s.runs(pos, n, func(lo, hi, slot int) {
		for j := lo; j < hi; j++ {
			f(j, slot)
		}
	})
}

// segmentSums adds the per-chunk slots (k statistics each) into per-segment sums, in
// chunk order.
func (s segments) segmentSums(perChunk []float64, k int) [][]float64 {
	sums := make([][]float64, k)
	for i := range sums {
		sums[i] = make([]float64, s.n)
	}
	s.eachSlot(perChunk, k, func(seg int64, a []float64) {
		for i := range k {
			sums[i][seg] += a[i]
		}
	})
	return sums
}

// nuslerpKernel (docs/methods.md, nuslerp): t = w_1/(w_0+w_1) (0.5 when the weights
// sum to less than 1e-6 in magnitude); per segment, v0·v1, ‖v0‖² and ‖v1‖² in float64
// give the coefficients, and each element is c0·v0 + c1·v1 (+ the base), products
// rounded to float32. With a base, v_i are the task vectors θ_i − θ_base.
func nuslerpKernel(m *methodRun, tp *TensorPlan) Kernel {
	t := nuslerpT(m.models[0].Weight, m.models[1].Weight)
	seg := newSegments(tp.Shape, m.p.Geo.Flatten == SwitchOn, m.p.Geo.RowWise == SwitchOn)
	var c0, c1 []float32
	first := b2i(m.base)
	// Per segment, the Gram sums of its two vectors in gramPairs(2)'s order: ‖v0‖²,
	// v0·v1, ‖v1‖². A row's run in a chunk (the whole chunk, flattened) takes them as
	// gramScratch does a chunk (lanes counted from the run's first element), the same
	// sums as gramPass's; a column's elements are runs of one, whose one lane is the
	// product itself.
	pairs := gramPairs(2)
	grams := sync.Pool{New: func() any { return newGramScratch(2, pairs) }}
	pass := Pass{
		NumStats: 3 * seg.slots,
		Chunk: func(pos Chunk, in, _ [][]float32, acc []float64) {
			v0, v1 := in[first], in[first+1]
			var base []float32
			if m.base {
				base = in[0]
			}
			if !seg.cols {
				gs := grams.Get().(*gramScratch)
				defer grams.Put(gs)
				seg.runs(pos, len(v0), func(lo, hi, slot int) {
					var b []float32
					if base != nil {
						b = base[lo:hi]
					}
					gs.chunk([][]float32{v0[lo:hi], v1[lo:hi]}, b, acc[3*slot:3*slot+3])
				})
				return
			}
			seg.runs(pos, len(v0), func(j, _, slot int) {
				a, b := float64(v0[j]), float64(v1[j])
				if base != nil {
					a -= float64(base[j])
					b -= float64(base[j])
				}
				acc[3*slot] += float64(a * a) // rounded: no platform fuses it
				acc[3*slot+1] += float64(a * b)
				acc[3*slot+2] += float64(b * b)
			})
		},
		Done: func(perChunk []float64) error {
			sums := seg.segmentSums(perChunk, 3)
			c0, c1 = make([]float32, seg.n), make([]float32, seg.n)
			for i := range seg.n {
				a, b := nuslerpCoefficients(t, gramSum(sums[1][i]), gramSum(sums[0][i]), gramSum(sums[2][i]))
				c0[i], c1[i] = float32(a), float32(b)
			}
			return nil
		},
	}
	if !seg.cols {
		// Rows from BF16 words: the same differences and lanes (chunkBF16).
		pass.Fused = func(pos Chunk, in []Operand, acc []float64) bool {
			y, b, ok := bf16Operands(in, m.base)
			if !ok {
				return false
			}
			gs := grams.Get().(*gramScratch)
			defer grams.Put(gs)
			seg.runs(pos, len(y[0])/2, func(lo, hi, slot int) {
				var bb []byte
				if b != nil {
					bb = b[2*lo : 2*hi]
				}
				gs.chunkBF16([][]byte{y[0][2*lo : 2*hi], y[1][2*lo : 2*hi]}, bb, acc[3*slot:3*slot+3])
			})
			return true
		}
	}
	var fused func([]byte, dtype.DType, []Operand, []float64, Chunk) bool
	switch {
	case seg.n == 1 && !m.base:
		fused = lerpFused(func() (float32, float32, bool) { return c0[0], c1[0], true })
	case m.base && !seg.cols:
		// Each run from BF16 words with multislerp's combination, the bits of
		// combine, where the CPU has its AVX-512 kernel.
		fused = func(out []byte, outDT dtype.DType, in []Operand, _ []float64, pos Chunk) bool {
			if !haveAVX512BW || outDT != dtype.BF16 {
				return false
			}
			y, b, ok := bf16Operands(in, true)
			if !ok || len(out) != len(b) {
				return false
			}
			seg.runs(pos, len(b)/2, func(lo, hi, slot int) {
				s := nuslerpSegment(seg, pos, slot)
				combineBF16(out[2*lo:2*hi], [][]byte{y[0][2*lo : 2*hi], y[1][2*lo : 2*hi]}, b[2*lo:2*hi], []float32{c0[s], c1[s]}, sumFromBase, 0)
			})
			return true
		}
	}
	return Kernel{
		Passes: []Pass{pass},
		Merge: func(dst []float32, in, _ [][]float32, pos Chunk) {
			v0, v1 := in[first], in[first+1]
			seg.runs(pos, len(dst), func(lo, hi, slot int) {
				s := nuslerpSegment(seg, pos, slot)
				a, b := c0[s], c1[s]
				if !m.base {
					Lerp(dst[lo:hi], v0[lo:hi], v1[lo:hi], a, b)
					return
				}
				base := in[0]
				if seg.cols { // runs of one element, each with its coefficients
					dst[lo] = base[lo] + float32(a*(v0[lo]-base[lo])) + float32(b*(v1[lo]-base[lo]))
					return
				}
				// The same operations in the same order, eight at a time: combine.
				combine(dst[lo:hi], [][]float32{base[lo:hi], v0[lo:hi], v1[lo:hi]}, []float32{a, b}, true)
			})
		},
		Fused: fused,
	}
}

func nuslerpSegment(seg segments, pos Chunk, slot int) int64 {
	s := seg.first(pos) + int64(slot)
	if seg.cols {
		s %= seg.n
	}
	return s
}

// nuslerpT is the interpolation factor from the two weights.
func nuslerpT(w0, w1 float64) float64 {
	if math.Abs(w0+w1) < 1e-6 {
		return 0.5
	}
	return w1 / (w0 + w1)
}

// nuslerpCoefficients returns the weights of v0 and v1 from v0·v1, ‖v0‖² and ‖v1‖²:
// norms clamped to at least 1e-7, the angle θ from their clamped cosine, and
// sin((1−t)θ)/sin θ, sin(tθ)/sin θ, or 1−t, t where |sin θ| < 1e-8.
func nuslerpCoefficients(t, dot, n0sq, n1sq float64) (float64, float64) {
	n0, n1 := max(math.Sqrt(n0sq), 1e-7), max(math.Sqrt(n1sq), 1e-7)
	theta := math.Acos(max(-1, min(1, dot/(n0*n1))))
	s := math.Sin(theta)
	if math.Abs(s) < 1e-8 {
		return 1 - t, t
	}
	return math.Sin((1-t)*theta) / s, math.Sin(t*theta) / s
}
