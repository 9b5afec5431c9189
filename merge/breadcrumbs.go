package merge

import (
	"context"
	"math"

	"github.com/gomerge/gomerge/gpu"
)

// breadcrumbsKernel (SPEC §2 breadcrumbs, breadcrumbs_ties): of each δ_i drop the
// n_bot smallest and the n_top largest magnitudes, then add the weighted deltas as
// task arithmetic does; breadcrumbs_ties first masks them with the elected sign,
// without dividing.
func breadcrumbsKernel(m *methodRun, t *TensorPlan) Kernel {
	n := t.NumElements()
	ranks := make([][]int64, len(m.weights))
	for i, d := range m.dens {
		keep := topK(d, n)
		nTop := int64(math.Floor(m.p.Gamma * float64(n)))
		nBot := n - keep - nTop
		if nBot < 0 {
			nTop += nBot
			nBot = 0
		}
		// Keep descending ranks [nTop, n−nBot): above the second cut, not the first.
		ranks[i] = []int64{nTop, n - nBot}
	}
	sel := newRankSelector(n, ranks, deltaMagnitudes)
	pool := newMaskPool(len(m.weights))
	return Kernel{
		Passes: sel.passes(),
		Merge: func(dst []float32, in, _ [][]float32, pos Chunk) {
			sc := pool.get(len(dst))
			defer pool.put(sc)
			keepMasks(sel, sc, in, pos)
			addTaskVectors(m, dst, in, sc.keep, nil, sc.deltas)
		},
		GPU: func(ctx context.Context, dev *gpu.Device, t *TensorPlan, out gpu.Output) ([]float64, error) {
			in := gpuOperands(t.In)
			cuts, err := dev.Cuts(ctx, n, in[0], in[1:], ranks)
			if err != nil {
				return nil, err
			}
			tm := make([]gpu.TaskModel, len(m.weights))
			for i := range tm {
				tm[i] = gpu.TaskModel{X: in[i+1], Weight: m.weights[i], Mode: gpu.KeepBand, Cuts: [2]gpu.Cut{cuts[i][0], cuts[i][1]}}
			}
			return nil, dev.TaskVectors(ctx, n, out, in[0], tm, float32(m.p.Lambda), m.tiesSign)
		},
	}
}

// addTaskVectors sets dst = base + λ·Σ_i Δ_i with Δ_i = w_i·(scale_i·δ_i) where keep
// says so (scale nil: 1), masked by the elected sign when the method says so.
// d is scratch of one element per model.
func addTaskVectors(m *methodRun, dst []float32, in [][]float32, keep [][]bool, scale, d []float32) {
	base, models := in[0][:len(dst)], in[1:]
	lambda := float32(m.p.Lambda)
	for j := range dst {
		b := base[j]
		for i, x := range models {
			d[i] = 0
			if keep[i][j] {
				delta := x[j] - b
				if scale != nil {
					delta = float32(scale[i] * delta)
				}
				d[i] = float32(m.weights[i] * delta)
			}
		}
		var sum float32
		if m.tiesSign {
			s := electSign(d)
			for _, di := range d {
				if signMatches(di, s) {
					sum += di
				}
			}
		} else {
			for _, di := range d {
				sum += di
			}
		}
		dst[j] = b + float32(lambda*sum)
	}
}
