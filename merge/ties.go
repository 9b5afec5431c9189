package merge

import "math"

// deltaMagnitudes is the rank key of TIES, DARE and breadcrumbs: the bits of
// |θ_i − θ_base| for model lane (inputs: base first).
func deltaMagnitudes(dst []uint32, lane int, in [][]float32) {
	base, x := in[0][:len(dst)], in[lane+1][:len(dst)]
	for j := range dst {
		dst[j] = absBits(x[j] - base[j])
	}
}

// topK is how many elements density keeps of n: floor(density·n), in float64.
func topK(density float64, n int64) int64 {
	return int64(math.Floor(density * float64(n)))
}

// keepMasks fills, for each model, whether each element of the chunk survives
// trimming: it ranks above hi and not above lo (lo nil: no lower cut).
func keepMasks(sel *rankSelector, in [][]float32, pos Chunk, n int, withLo bool) [][]bool {
	lanes := len(sel.cuts)
	keep := make([][]bool, lanes)
	mags := make([]uint32, n)
	var top []bool
	if withLo {
		top = make([]bool, n)
	}
	for i := range lanes {
		keep[i] = make([]bool, n)
		deltaMagnitudes(mags, i, in)
		cuts := sel.cuts[i]
		cuts[len(cuts)-1].above(keep[i], mags, pos)
		if withLo {
			cuts[0].above(top, mags, pos)
			for j, t := range top {
				keep[i][j] = keep[i][j] && !t
			}
		}
	}
	return keep
}

// tiesKernel (SPEC §2 ties): trim each δ_i to its k = floor(density·numel) largest
// magnitudes (ties: lower flat index first), weight, elect a sign per element, and
// average the agreeing weighted deltas.
func tiesKernel(m *methodRun, t *TensorPlan) Kernel {
	n := t.NumElements()
	ranks := make([][]int64, len(m.weights))
	for i, d := range m.dens {
		ranks[i] = []int64{topK(d, n)}
	}
	sel := newRankSelector(n, ranks, deltaMagnitudes)
	lambda := float32(m.p.Lambda)
	return Kernel{
		Passes: sel.passes(),
		Merge: func(dst []float32, in, _ [][]float32, pos Chunk) {
			keep := keepMasks(sel, in, pos, len(dst), false)
			base, models := in[0][:len(dst)], in[1:]
			d := make([]float32, len(models))
			for j := range dst {
				b := base[j]
				for i, x := range models {
					d[i] = 0
					if keep[i][j] {
						d[i] = float32(m.weights[i] * (x[j] - b))
					}
				}
				s := electSign(d)
				var num, den float32
				for i, di := range d {
					if signMatches(di, s) {
						num += di
						den += m.weights[i]
					}
				}
				if den == 0 {
					den = 1
				}
				dst[j] = b + float32(lambda*(num/den))
			}
		},
	}
}
