package merge

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// SCE (Wan et al., FuseChat, "Select, Calculate, Erase"; mergekit's sce): with task
// vectors δ_i = θ_i − θ_base,
//
//  1. select: where select_topk < 1, keep only the ⌊select_topk·nz⌋ element positions
//     with the largest variance of δ across the models (population variance; nz:
//     the positions whose variance is not 0), zeroing the others in every δ_i;
//  2. calculate: one weight per model and tensor, w_i = mean(δ_i²) / Σ_k mean(δ_k²)
//     (1/N each when that sum is below 1e-6);
//  3. erase: TIES's sign election on Σ_i δ_i (unweighted), and
//
// θ = θ_base + Σ_i w_i·δ_i·[agrees_i] / max(Σ_i w_i·[agrees_i], 1e-6).
//
// The models take no weight: SCE computes its own.

func init() {
	register(Method{
		Name: "sce", Command: "sce",
		Short: "SCE: keep the positions where the task vectors vary most, weight each model by its mean square, elect signs, average",
		Example: `  gomerge sce --base base.safetensors a.safetensors b.safetensors c.safetensors --select-topk 0.1 --out sce.safetensors
  gomerge sce --base base.safetensors a.safetensors b.safetensors --out sce.safetensors`,
		Base: BaseRequired, MinModels: 1,
		Params: []Param{
			{Name: "select_topk", Flag: "select-topk", Usage: "fraction of element positions kept, by the variance of the task vectors across models",
				Kind: Number, Default: 1, RecipeDefault: 1, check: unitInterval, Report: true,
				field: func(p *Params) any { return &p.SelectTopK }},
			int8Param(),
		},
		kernel: sceKernel,
	})
}

// sceVariance writes the bits of the float32-rounded population variance of the
// models' deltas at each element of a chunk (inputs: base first): the rank key of
// SCE's selection. The variance is summed in float64, in model order. With AVX2,
// four elements at a time (sceVarianceAVX2: the same operations in the same order,
// so the same bits, tested; but for which payload a NaN key carries, which Go's own
// code leaves to the compiler's operand order); the loop below was most of sce's
// time.
func sceVariance(dst []uint32, _ int, in [][]float32) {
	sceVarianceZeros(dst, in)
}

// sceVarianceZeros is sceVariance, and returns how many keys are 0 (the keys pass
// needs the count; a loop over the keys for it took as long as the histogram).
// With AVX-512, sixteen elements at a time, the same operations in eight float64
// lanes (so the same bits as AVX2, NaN payloads included), the zeros counted in
// lanes too.
func sceVarianceZeros(dst []uint32, in [][]float32) (zeros int) {
	var j, from int
	switch {
	case haveSCE512 && len(dst) >= 16:
		zeros = sceVariance512Asm(dst, in)
		j, from = len(dst)&^3, len(dst)&^15
	case haveTiesAsm && len(dst) >= 4:
		j = sceVarianceAsm(dst, in)
	}
	sceVarianceRef(dst[j:], in, j)
	for _, k := range dst[from:] {
		zeros += b2i(k == 0)
	}
	return zeros
}

// sceVarianceRef is sceVariance element by element, from element off of the inputs
// on: the statement the assembly is tested against.
func sceVarianceRef(dst []uint32, in [][]float32, off int) {
	base, models := in[0][off:off+len(dst)], in[1:]
	inv := 1 / float64(len(models))
	for j := range dst {
		var mean float64
		for _, x := range models {
			mean += float64(x[off+j] - base[j])
		}
		// Rounded here: arm64 would fuse the product into each d below (across
		// statements, as Go allows), and a rank key must not depend on the platform.
		mean = float64(mean * inv)
		var v float64
		for _, x := range models {
			d := float64(x[off+j]-base[j]) - mean
			v += float64(d * d) // the conversion keeps arm64 from fusing: a rank key must not depend on the platform
		}
		dst[j] = absBits(float32(v * inv))
	}
}

// sceTopK is how many positions select_topk keeps of nz with a non-zero variance:
// mergekit's int(count_nonzero(var) · select_topk), whose product torch takes in
// float32.
func sceTopK(topk float64, nz int64) int64 {
	return int64(float32(nz) * float32(topk))
}

func sceKernel(m *methodRun, t *TensorPlan) Kernel {
	n := t.NumElements()
	lanes := len(m.weights)
	// keepCacheLimit: a test's lower bound replaces both maxSCEKeyBytes and the
	// masks' bound, to exercise sceBig and masks computed again.
	keyLimit := int64(maxSCEKeyBytes)
	if m.p.keepCacheBytes != 0 {
		keyLimit = m.p.keepCacheBytes
	}
	sel := newSCESelection(n, m.p.SelectTopK, keyLimit, m.keepCacheLimit())
	pool := sharedPool(m, fmt.Sprintf("sce/%d", lanes), func() any { return newSCEScratch(lanes) })
	w := make([]float32, lanes)
	passes := append(sel.passes(), Pass{ // the weights: Σ δ̂_i² per model
		NumStats: lanes,
		Chunk: func(pos Chunk, in, _ [][]float32, acc []float64) {
			sc := pool.Get().(*sceScratch)
			defer pool.Put(sc)
			sceSquares(acc, in[0], in[1:], sel.weightsMask(sc, in, pos))
		},
		Fused: sceWeightsFused(sel, pool),
		Done: func(perChunk []float64) error {
			copy(w, sceWeights(perChunk, lanes, n))
			return nil
		},
	})
	return Kernel{
		Passes: passes,
		Merge: func(dst []float32, in, _ [][]float32, pos Chunk) {
			sc := pool.Get().(*sceScratch)
			defer pool.Put(sc)
			sceMergeChunk(dst, in[0][:len(dst)], in[1:], w, sel.mergeMask(sc, in, pos), sc.x)
		},
		Fused: sceFused(t, sel, w, pool),
	}
}

// sceSquares adds each model's Σ δ_i² over a chunk's kept positions (mask, one bit
// per position; nil: all), a float64 sum in element order from +0, to acc[i]. Four models at a time (sceSquares4), each sum in a
// register of its own: one loop over every model, summing through sq in memory,
// made each kept position wait on a store and a load per model.
func sceSquares(acc []float64, base []float32, models [][]float32, mask []uint64) {
	for i := 0; i < len(models); i += 4 {
		var x [4][]float32
		for k := range x {
			x[k] = base // a missing model: δ = 0, its sum not used
			if i+k < len(models) {
				x[k] = models[i+k]
			}
		}
		s := sceSquares4(base, x, mask)
		for k := range min(4, len(models)-i) {
			acc[i+k] += s[k]
		}
	}
}

// sceSquaresRef is sceSquares one model after the other: the statement it is
// tested against.
func sceSquaresRef(acc []float64, base []float32, models [][]float32, mask []uint64) {
	for i, x := range models {
		var sq float64
		for j := range base {
			if mask == nil || maskBit(mask, j) {
				d := float64(x[j] - base[j])
				sq += float64(d * d)
			}
		}
		acc[i] += sq
	}
}

// sceSquares4 is sceSquares for four models, returning their sums.
func sceSquares4(base []float32, x [4][]float32, mask []uint64) [4]float64 {
	var s0, s1, s2, s3 float64
	x0, x1, x2, x3 := x[0][:len(base)], x[1][:len(base)], x[2][:len(base)], x[3][:len(base)]
	add := func(j int) {
		b := base[j]
		d0, d1, d2, d3 := float64(x0[j]-b), float64(x1[j]-b), float64(x2[j]-b), float64(x3[j]-b)
		s0 += float64(d0 * d0)
		s1 += float64(d1 * d1)
		s2 += float64(d2 * d2)
		s3 += float64(d3 * d3)
	}
	if mask == nil {
		for j := range base {
			add(j)
		}
		return [4]float64{s0, s1, s2, s3}
	}
	for wi, word := range mask {
		for ; word != 0; word &= word - 1 {
			add(wi*64 + bits.TrailingZeros64(word))
		}
	}
	return [4]float64{s0, s1, s2, s3}
}

// sceMergeChunk merges a chunk: the base where the mask drops the position (every
// δ̂ is 0 there, so nothing agrees), sceMergeAt where it keeps it (nil: everywhere);
// x has a slot per model.
func sceMergeChunk(dst, base []float32, models [][]float32, w []float32, mask []uint64, x []float32) {
	at := func(j int) {
		for i, m := range models {
			x[i] = m[j]
		}
		dst[j] = sceMergeAt(base[j], x, w)
	}
	if mask == nil {
		for j := range dst {
			at(j)
		}
		return
	}
	copy(dst, base)
	forEachSet(mask, at)
}

// sceMergeAt is one kept position: the sign elected by Σ_i δ_i (float32, in model
// order), then Σ w_i·δ_i over the models that agree with it, over Σ w_i of those.
func sceMergeAt(b float32, x, w []float32) float32 {
	var sum float32
	for _, v := range x {
		sum += v - b
	}
	s := electedSign(sum)
	var num, den float32
	for i, v := range x {
		d := v - b
		mk := agreeMask(d, s)
		num += math.Float32frombits(math.Float32bits(float32(w[i]*d)) & mk)
		den += math.Float32frombits(math.Float32bits(w[i]) & mk)
	}
	return b + num/max(den, 1e-6)
}

// sceWeights turns the per-chunk Σ δ̂_i² (lanes per chunk, in chunk order) into
// SCE's weights: mean squares over the n elements, normalized to sum 1, or 1/N each
// where their sum is below 1e-6.
func sceWeights(perChunk []float64, lanes int, n int64) []float32 {
	ms := make([]float64, lanes)
	for c := 0; c < len(perChunk); c += lanes {
		for i := range ms {
			ms[i] += perChunk[c+i]
		}
	}
	var sum float64
	for i := range ms {
		ms[i] /= float64(max(n, 1))
		sum += ms[i]
	}
	w := make([]float32, lanes)
	for i := range w {
		if math.Abs(sum) < 1e-6 {
			w[i] = float32(1 / float64(lanes))
		} else {
			w[i] = float32(ms[i] / sum)
		}
	}
	return w
}

// sceRef is SCE's plain statement for one tensor in float64, but for what the method
// defines in float32: the selection ranks the float32-rounded variances (a stable
// sort; equal variances by index), and the sign election sums the float32 deltas in
// model order.
func sceRef(base []float32, models [][]float32, topk float64) (ref, scale []float64) {
	n := len(base)
	N := float64(len(models))
	keep := make([]bool, n)
	switch {
	case topk >= 1:
		for j := range keep {
			keep[j] = true
		}
	case topk > 0:
		v := make([]float32, n)
		var nz int64
		for j := range base {
			// The rank key as docs/task-vectors.md defines it, rounding for rounding
			// (sum, then times 1/N): a selection at a near-tie must not depend on how
			// the variance is spelled.
			var mean, sq float64
			for _, x := range models {
				mean += float64(x[j] - base[j])
			}
			mean = float64(mean * (1 / N)) // rounded, as in sceVarianceRef
			for _, x := range models {
				d := float64(x[j]-base[j]) - mean
				sq += float64(d * d)
			}
			v[j] = float32(sq * (1 / N))
			if v[j] != 0 {
				nz++
			}
		}
		idx := make([]int, n)
		for j := range idx {
			idx[j] = j
		}
		// Descending variance, equal variances by position: what a stable sort gives,
		// in one pdqsort on distinct keys (a stable sort took most of the tests' time).
		slices.SortFunc(idx, func(a, b int) int { return cmp.Or(cmp.Compare(v[b], v[a]), cmp.Compare(a, b)) })
		for _, j := range idx[:sceTopK(topk, nz)] {
			keep[j] = true
		}
	}
	w := make([]float64, len(models))
	var wsum float64
	for i, x := range models {
		for j := range base {
			if keep[j] {
				d := float64(x[j] - base[j])
				w[i] += float64(d * d)
			}
		}
		w[i] /= float64(n)
		wsum += w[i]
	}
	for i := range w {
		if math.Abs(wsum) < 1e-6 {
			w[i] = 1 / N
		} else {
			w[i] /= wsum
		}
	}
	ref, scale = make([]float64, n), make([]float64, n)
	for j := range base {
		ref[j] = float64(base[j])
		scale[j] = math.Abs(float64(base[j]))
		if !keep[j] {
			continue
		}
		var sum32 float32
		for _, x := range models {
			sum32 += x[j] - base[j]
		}
		var num, den, mag float64
		for i, x := range models {
			d := float64(x[j] - base[j])
			if d != 0 && (d < 0) == (sum32 < 0) {
				num += float64(w[i] * d)
				den += w[i]
				mag += math.Abs(w[i] * d)
			}
		}
		den = math.Max(den, 1e-6)
		ref[j] += num / den
		scale[j] += mag / den
	}
	return ref, scale
}

// forEachSet calls f with the index of every set bit of mask (bit j of word j/64), in
// increasing order.
func forEachSet(mask []uint64, f func(int)) {
	for wi, word := range mask {
		for ; word != 0; word &= word - 1 {
			f(wi*64 + bits.TrailingZeros64(word))
		}
	}
}
