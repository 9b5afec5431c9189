package merge

import (
	"hash/fnv"
	"math"
)

func init() {
	register(taskVectorMethod(taskVectorPreset{
		name: "dare_linear", command: "dare",
		short: "DARE: randomly drop task-vector entries, rescale, add (--ties: with TIES sign election)",
		example: `  gomerge dare --base base.safetensors a.safetensors b.safetensors --density 0.3 --seed 7 --out dare.safetensors
  gomerge dare --ties --base base.safetensors a.safetensors b.safetensors:density=0.5 --out dare_ties.safetensors`,
		sparsify: SparsifyRandom, rescale: true, density: 0.2, rescaleFlag: true,
	}))
	register(taskVectorMethod(taskVectorPreset{
		name: "dare_ties", command: "dare", commandSwitch: "ties",
		short:    "elect a sign per element as TIES does (mergekit's dare_ties)",
		sparsify: SparsifyRandom, consensus: ConsensusSign, rescale: true, density: 0.2, rescaleFlag: true,
	}))
}

// DARE's random drop (SparsifyRandom): element e of model i is kept with probability
// density_i. Its draw depends only on (seed, tensor name, i, e), through a
// counter-based generator, so the result is the same whatever the chunking, the
// thread count or the order in which tensors are processed.

// dareKeep fills each model's keep mask for the chunk at flat offset off.
func dareKeep(keep [][]bool, key uint64, threshold []uint64, off int64) {
	for i, k := range keep {
		for j := range k {
			k[j] = dareDraw(key, i, off+int64(j)) < threshold[i]
		}
	}
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
	return splitmix64(key ^ splitmix64(uint64(lane+1)*dareLaneMul^uint64(e)*0x9e3779b97f4a7c15))
}

// dareLaneMul spreads the model index of dareDraw's input.
const dareLaneMul = 0xd1b54a32d192ed03

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
