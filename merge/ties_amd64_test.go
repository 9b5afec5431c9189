//go:build !purego

package merge

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestTrimAndScanAsmMatchGo: trimming and the in-bin scan give the same results with
// and without their AVX2 paths, with many elements at the boundary value.
func TestTrimAndScanAsmMatchGo(t *testing.T) {
	if !haveTiesAsm {
		t.Skip("no AVX2 kernels on this CPU")
	}
	defer func(v bool) { haveTiesAsm = v }(haveTiesAsm)
	rng := rand.New(rand.NewPCG(15, 15))
	for _, n := range []int{5, 8, 64, 1003} {
		x, b := make([]float32, n), make([]float32, n)
		for j := range x {
			x[j], b[j] = float32(rng.IntN(7))*0.25, float32(rng.IntN(3))*0.25 // many equal |x−b|
			if j%50 == 0 {
				x[j] = float32(math.NaN())
			}
		}
		for _, c := range []*cut{
			{t: absBits(0.5), r: 3, ties: true, before: []int64{2}},
			{t: absBits(0.75), r: 1 << 40},
			{t: absBits(10), r: 0},
		} {
			run := func(asm bool) []float32 {
				haveTiesAsm = asm
				dst := make([]float32, n)
				trimWeighted(dst, x, b, 0.7, c, Chunk{})
				return dst
			}
			d1, d2 := run(true), run(false)
			for j := range d1 {
				if math.Float32bits(d1[j]) != math.Float32bits(d2[j]) {
					t.Fatalf("n=%d t=%#x [%d]: asm %v, Go %v", n, c.t, j, d1[j], d2[j])
				}
			}
		}
		mags := make([]uint32, n)
		deltaMagnitudesWith(mags, x, b, false)
		for _, bin := range []uint32{mags[0] >> 16, 0x3f00, 0x7fff} {
			scan := func(asm bool) []uint16 {
				haveTiesAsm = asm
				var found []uint16
				for j := 0; j < len(mags); {
					if haveTiesAsm && len(mags)-j >= 8 {
						j += binScanAsm(mags[j:], (len(mags)-j)&^7, bin)
					}
					for end := min(j+8, len(mags)); j < end; j++ {
						if mags[j]>>16 == bin {
							found = append(found, uint16(mags[j]))
						}
					}
				}
				return found
			}
			if !slices.Equal(scan(true), scan(false)) {
				t.Fatalf("n=%d bin %#x: scans differ", n, bin)
			}
		}
	}
}
