//go:build !purego

package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestCombineTaskVectorsAsmMatchesGo: the AVX2 combine gives addTaskVectors' bits for
// every consensus, normalize and rescale form (none, per model, per element), on
// random values with ±0, NaN (with payloads), Inf, subnormals and exact cancellations, random keep
// masks, and lengths with and without a tail.
func TestCombineTaskVectorsAsmMatchesGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU; addTaskVectors is the only path")
	}
	rng := rand.New(rand.NewPCG(17, 4))
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.NaN()), math.Float32frombits(0x7fc12345), math.Float32frombits(0xffa00001), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-40, -3e-39}
	val := func() float32 {
		switch r := rng.IntN(10); {
		case r < 2:
			return 0
		case r == 2:
			return special[rng.IntN(len(special))]
		default:
			return float32(rng.NormFloat64())
		}
	}
	for _, n := range []int{0, 3, 8, 13, 1000, 1003} {
		for _, lanes := range []int{1, 2, 3, 4} {
			base := make([]float32, n)
			for j := range base {
				base[j] = val()
			}
			in := [][]float32{base}
			keep := make([][]bool, lanes)
			elem := make([][]float32, lanes)
			for i := range lanes {
				x, k, e := make([]float32, n), make([]bool, n), make([]float32, n)
				for j := range x {
					x[j] = val()
					if rng.IntN(4) == 0 {
						x[j] = base[j] // δ = 0
					}
					k[j] = rng.IntN(3) != 0
					e[j] = float32(1 + rng.Float64()*4)
				}
				if n > 2 && i == 1 {
					x[2] = base[2] - (in[1][2] - base[2]) // cancels model 0's delta at element 2
					keep[0][2], k[2] = true, true
				}
				in, keep[i], elem[i] = append(in, x), k, e
			}
			weights := []float32{0.7, -0.25, 1.5, 2}[:lanes]
			scale := []float32{1.25, 3, 0.5, float32(math.Inf(1))}[:lanes]
			for _, consensus := range []Consensus{ConsensusNone, ConsensusSign} {
				for _, normalize := range []bool{false, true} {
					for form := range 3 {
						m := &methodRun{weights: weights, lambda: 0.9, tv: tvOptions{consensus: consensus, normalize: normalize}}
						var sc []float32
						var es [][]float32
						switch form {
						case 1:
							sc = scale
						case 2:
							es = elem
						}
						want := make([]float32, n)
						addTaskVectors(m, want, in, keep, sc, es, make([]float32, lanes))
						got := make([]float32, n)
						for j := range got {
							got[j] = 42 // overwritten
						}
						cs := newCombinePool(lanes, consensus == ConsensusSign).Get().(*combineScratch)
						combineTaskVectors(m, got, in, keep, sc, es, cs, true)
						name := fmt.Sprintf("n=%d lanes=%d consensus=%d normalize=%v form=%d", n, lanes, consensus, normalize, form)
						for j := range got {
							// Where two NaNs meet, which payload survives is the
							// compiler's choice in Go (it commutes float adds), as in
							// TestTiesCombineAsmMatchesGo: NaN compares as NaN.
							if math.Float32bits(got[j]) != math.Float32bits(want[j]) && !(got[j] != got[j] && want[j] != want[j]) {
								t.Fatalf("%s [%d]: asm %v (%#x), Go %v (%#x)", name, j, got[j], math.Float32bits(got[j]), want[j], math.Float32bits(want[j]))
							}
						}
					}
				}
			}
		}
	}
}

// TestDareKeepAsmMatchesGo: the AVX2 draws keep what dareDraw keeps, for several
// lanes, offsets (including ones whose e·G wraps), densities from none to all, and
// lengths with and without a tail.
func TestDareKeepAsmMatchesGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU; dareDraw is the only path")
	}
	thresholds := []uint64{0, densityThreshold(0.2), densityThreshold(0.5), 1 << 63, 1<<63 - 1, densityThreshold(0.9), math.MaxUint64}
	for _, n := range []int{0, 5, 8, 17, 4096, 4099} {
		for _, off := range []int64{0, 8, 65536 * 13, 1<<40 + 3} {
			keep, want := make([][]bool, len(thresholds)), make([][]bool, len(thresholds))
			for i := range keep {
				keep[i], want[i] = make([]bool, n), make([]bool, n)
			}
			key := dareKey(uint64(off)^7, "model.layers.0.mlp.up_proj.weight")
			dareKeepWith(keep, key, thresholds, off, true)
			dareKeepWith(want, key, thresholds, off, false)
			for i := range keep {
				for j := range keep[i] {
					if keep[i][j] != want[i][j] {
						t.Fatalf("n=%d off=%d lane %d [%d]: asm %v, Go %v", n, off, i, j, keep[i][j], want[i][j])
					}
				}
			}
		}
	}
	// The threshold compare is unsigned: a draw at or above 2⁶³ is not below 2⁶³ − 1.
	k := [][]bool{make([]bool, 64)}
	dareKeepWith(k, 1, []uint64{1<<63 - 1}, 0, true)
	var kept int
	for _, v := range k[0] {
		kept += b2i(v)
	}
	if kept == 0 || kept == 64 {
		t.Fatalf("half the draws should fall below 2⁶³−1, got %d of 64", kept)
	}
}
