package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// TestSCEAgainstReference: sce on BF16 and F32 at several select_topk (1: no
// selection; 0: the base), compared with sceRef.
func TestSCEAgainstReference(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		base, models := methodFixture(23, dt, 3)
		for _, topk := range []float64{1, 0.5, 0.1, 1e-4, 0} {
			// The selection kept from the weights pass for the merge pass: all of it,
			// one chunk's, none.
			for _, limit := range []int64{0, ChunkElems / 8, 1} {
				got := runMethodFiles(t, dt, "sce", Params{SelectTopK: topk, keepCacheBytes: limit}, base, models, nil, nil, 2)
				for _, name := range base.names {
					ref, scale := sceRef(base.vals[name], vals(models, name), topk)
					checkClose(t, fmt.Sprintf("%s select_topk=%g cache=%d %s", dt, topk, limit, name), got[name], ref, scale, dt)
				}
			}
		}
	}
}

// TestSCEHandWorked pins sce on numbers worked out by hand.
func TestSCEHandWorked(t *testing.T) {
	one := func(vals ...float32) *ckpt {
		return &ckpt{names: []string{"w"}, shapes: map[string][]int64{"w": {int64(len(vals))}}, vals: map[string][]float32{"w": vals}}
	}
	check := func(what string, got, want []float32) {
		t.Helper()
		for j := range want {
			if math.Abs(float64(got[j]-want[j])) > 1e-6 {
				t.Errorf("%s: got %v, want %v", what, got, want)
				return
			}
		}
	}
	// δ_1 = (2, 0, 1, −1), δ_2 = (0, 2, −3, −1). Mean squares 6/4 and 14/4: weights
	// 0.3 and 0.7. Signs of δ_1 + δ_2 = (2, 2, −2, −2): +, +, −, −.
	// → 2·0.3/0.3, 2·0.7/0.7, −3·0.7/0.7, (−0.3 − 0.7)/1.
	base := one(0, 0, 0, 0)
	ms := []*ckpt{one(2, 0, 1, -1), one(0, 2, -3, -1)}
	check("sce", runMethodFiles(t, dtype.F32, "sce", Params{SelectTopK: 1}, base, ms, nil, nil, 1)["w"], []float32{2, 2, -3, -1})
	// select_topk 0.5: variances (1, 1, 4, 0); 3 non-zero, k = ⌊1.5⌋ = 1: only
	// position 2 stays. Weights from δ̂_1 = (0, 0, 1, 0), δ̂_2 = (0, 0, −3, 0): 0.1, 0.9;
	// the sign is −: −3·0.9/0.9.
	check("sce topk", runMethodFiles(t, dtype.F32, "sce", Params{SelectTopK: 0.5}, base, ms, nil, nil, 1)["w"], []float32{0, 0, -3, 0})
	// Equal variances: the lower index is selected. δ_1 = (1, 1), δ_2 = (−1, −1),
	// k = ⌊2·0.5⌋ = 1: position 0; its sum is 0, elected +: δ_1 alone.
	check("sce ties", runMethodFiles(t, dtype.F32, "sce", Params{SelectTopK: 0.5}, one(0, 0), []*ckpt{one(1, 1), one(-1, -1)}, nil, nil, 1)["w"], []float32{1, 0})
}

// TestSCEVarianceAsm: sceVariance (with AVX2 where the CPU has it) is sceVarianceRef,
// bit for bit, for 1 to 5 models, lengths across the assembly's groups of four, and
// deltas with ±0, ±Inf, NaN, equal values and magnitudes far apart; but a NaN key is
// only checked to be NaN: which payload an addition of two NaNs keeps follows the
// operand order, which Go's compiler chooses (float additions commute; the -race
// build keeps the other one), so the reference does not pin it either.
func TestSCEVarianceAsm(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	vals := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.Float32frombits(0xffc00123), math.Float32frombits(0x7f800321), 1e-30, 3e30, 0.25}
	isNaN := func(k uint32) bool { return k > 0x7f800000 }
	for _, models := range []int{1, 2, 3, 4, 5} {
		for _, n := range []int{0, 1, 3, 4, 7, 64, 1001} {
			in := make([][]float32, models+1)
			for k := range in {
				in[k] = make([]float32, n)
				for j := range in[k] {
					if rng.IntN(8) == 0 {
						in[k][j] = vals[rng.IntN(len(vals))]
					} else {
						in[k][j] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(9)-4)))
					}
				}
			}
			got, want := make([]uint32, n), make([]uint32, n)
			sceVariance(got, 0, in)
			sceVarianceRef(want, in, 0)
			for j := range got {
				if got[j] != want[j] && !(isNaN(got[j]) && isNaN(want[j])) {
					t.Fatalf("%d models, %d elements (assembly %v), element %d: key %#x, reference %#x", models, n, haveTiesAsm, j, got[j], want[j])
				}
			}
		}
	}
}
