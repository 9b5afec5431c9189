package merge

import (
	"context"
	"hash/fnv"
	"math"

	"github.com/gomerge/gomerge/gpu"
)

// dareKernel (SPEC §2 dare_linear, dare_ties): keep each element of δ_i with
// probability density, rescale what is kept (by ‖δ_i‖₁/‖δ̂_i‖₁, or 1/density with
// --rescale inverse), then add as task arithmetic (dare_ties: sign-masked, without
// dividing).
//
// The random draw of element e of model i depends only on (seed, tensor name, i, e),
// through a counter-based generator, so the result is the same whatever the chunking,
// the thread count or the order in which tensors are processed.
func dareKernel(m *methodRun, t *TensorPlan) Kernel {
	lanes := len(m.weights)
	key := dareKey(m.p.Seed, t.Name)
	thresholds := make([]uint64, lanes)
	for i, d := range m.dens {
		thresholds[i] = densityThreshold(d)
	}
	pool := newMaskPool(lanes)
	keepChunk := func(sc *maskScratch, pos Chunk) [][]bool {
		for i, keep := range sc.keep {
			for j := range keep {
				keep[j] = dareDraw(key, i, pos.Offset+int64(j)) < thresholds[i]
			}
		}
		return sc.keep
	}
	scale := make([]float32, lanes)
	k := Kernel{
		Merge: func(dst []float32, in, _ [][]float32, pos Chunk) {
			sc := pool.get(len(dst))
			defer pool.put(sc)
			addTaskVectors(m, dst, in, keepChunk(sc, pos), scale, sc.deltas)
		},
		// The same draws (key, thresholds, lane = model index), the L1 sums per
		// block added in chunk order as the pass below adds them, then the merge.
		GPU: func(ctx context.Context, dev *gpu.Device, t *TensorPlan, out gpu.Output) ([]float64, error) {
			in := gpuOperands(t.In)
			n := t.NumElements()
			tm := make([]gpu.TaskModel, lanes)
			for i := range tm {
				tm[i] = gpu.TaskModel{X: in[i+1], Weight: m.weights[i], Mode: gpu.KeepDARE, Key: key, Threshold: thresholds[i],
					Scale: inverseScale(m.dens[i]), HasScale: true}
			}
			if m.p.Rescale != "inverse" {
				perChunk, err := dev.DAREL1(ctx, n, in[0], tm)
				if err != nil {
					return nil, err
				}
				for i, s := range l1Scales(perChunk, lanes) {
					tm[i].Scale = s
				}
			}
			return nil, dev.TaskVectors(ctx, n, out, in[0], tm, float32(m.p.Lambda), m.tiesSign)
		},
	}
	if m.p.Rescale == "inverse" {
		for i, d := range m.dens {
			scale[i] = inverseScale(d)
		}
		return k
	}
	// l1: a pass sums |δ_i| and |δ̂_i| over the tensor (float64, per chunk, added in
	// chunk order) to find each model's rescale factor.
	k.Passes = []Pass{{
		NumStats: 2 * lanes,
		Chunk: func(pos Chunk, in, _ [][]float32, acc []float64) {
			sc := pool.get(len(in[0]))
			defer pool.put(sc)
			keep := keepChunk(sc, pos)
			base := in[0]
			for i, x := range in[1:] {
				var all, kept float64
				for j := range base {
					a := math.Abs(float64(x[j] - base[j]))
					all += a
					if keep[i][j] {
						kept += a
					}
				}
				acc[2*i] += all
				acc[2*i+1] += kept
			}
		},
		Done: func(perChunk []float64) error {
			copy(scale, l1Scales(perChunk, lanes))
			return nil
		},
	}}
	return k
}

// inverseScale is --rescale inverse's factor: 1/density (0 for a density of 0, which
// keeps nothing anyway).
func inverseScale(d float64) float32 {
	if d > 0 {
		return float32(1 / d)
	}
	return 0
}

// l1Scales turns the per-chunk sums [Σ|δ_i|, Σ kept |δ_i|] per model (2·lanes per
// chunk, in chunk order) into each model's rescale factor ‖δ_i‖₁/‖δ̂_i‖₁, or 1 where
// either norm is below 1e-7. The CPU pass and the device both end here, so the sums
// are added in the same order.
func l1Scales(perChunk []float64, lanes int) []float32 {
	sums := make([]float64, 2*lanes)
	for c := 0; c < len(perChunk); c += 2 * lanes {
		for s := range sums {
			sums[s] += perChunk[c+s]
		}
	}
	scale := make([]float32, lanes)
	for i := range lanes {
		all, kept := sums[2*i], sums[2*i+1]
		scale[i] = 1
		if all >= 1e-7 && kept >= 1e-7 {
			scale[i] = float32(all / kept)
		}
	}
	return scale
}

func dareKey(seed uint64, tensor string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(tensor))
	return splitmix64(seed ^ h.Sum64())
}

// dareDraw is a uniform 64-bit number for element e of model lane.
func dareDraw(key uint64, lane int, e int64) uint64 {
	return splitmix64(key ^ splitmix64(uint64(lane+1)*0xd1b54a32d192ed03^uint64(e)*0x9e3779b97f4a7c15))
}

// densityThreshold maps a keep probability to the 64-bit draw below which an element
// is kept.
func densityThreshold(d float64) uint64 {
	v := d * 0x1p64
	if v >= 0x1p64 {
		return math.MaxUint64
	}
	return uint64(v)
}

// splitmix64 is the finaliser of Steele, Lea and Flood's SplitMix64: a bijective mix
// whose outputs for consecutive inputs pass BigCrush.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
