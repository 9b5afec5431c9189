//go:build !purego

package dtype

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestKQuantPairUsed makes sure that on a CPU with AVX-512 the two-block Q4_K/Q5_K
// path (which TestKQuantFitsMatchGo checks through Encode) runs on finite input and
// declines non-finite input, so that the comparison there is not silently of the
// single-block path with itself.
func TestKQuantPairUsed(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, 2*qkK)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	y := make([]byte, 2*144)
	if got := quantizeQ45KPair(y, 144, x, 15); got != haveK512 {
		t.Fatalf("quantizeQ45KPair on finite input = %v, want %v (AVX-512 present)", got, haveK512)
	}
	x[300] = float32(math.Inf(1))
	if quantizeQ45KPair(y, 144, x, 15) {
		t.Fatal("quantizeQ45KPair took a block holding +Inf")
	}
	// Finite, but x² overflows, so the group's weights are infinite.
	x[300] = 3e37
	if quantizeQ45KPair(y, 144, x, 15) {
		t.Fatal("quantizeQ45KPair took a group whose weights are infinite")
	}
}

// TestQ6FitsVariants compares both vectorized Q6_K fits, AVX2 and AVX-512 (where
// the CPU has them; Encode uses only the widest), with the reference on every finite
// block of kquantInputs and on random blocks, with and without importance weights:
// same levels, same scale bits.
func TestQ6FitsVariants(t *testing.T) {
	xs := kquantInputs()
	rng := rand.New(rand.NewPCG(5, 6))
	for b := range 2000 {
		scale := math.Pow(10, rng.Float64()*8-4)
		for range qkK {
			v := rng.NormFloat64()
			if b%3 == 1 && rng.IntN(4) != 0 {
				v = 0
			}
			xs = append(xs, float32(scale*v))
		}
	}
	qws := make([]float32, qkK)
	for i := range qws {
		qws[i] = float32(math.Exp(2 * rng.NormFloat64()))
	}
	variants := map[string]func(x, qw []float32, L *[qkK]int8, scales *[16]float32){}
	if haveKAsm {
		variants["AVX2"] = q6FitsAVX2
	}
	if haveK512 {
		variants["AVX-512"] = q6Fits512
	}
	if len(variants) == 0 {
		t.Skip("no AVX2 on this CPU")
	}
	checked := 0
	for b := 0; b < len(xs)/qkK; b++ {
		x := xs[b*qkK : (b+1)*qkK]
		if !finite(x) {
			continue
		}
		for _, qw := range [][]float32{nil, qws} {
			var wantL [qkK]int8
			var want [16]float32
			q6FitsGo(x, qw, &wantL, &want)
			for name, f := range variants {
				var gotL [qkK]int8
				var got [16]float32
				f(x, qw, &gotL, &got)
				for j := range 16 {
					if math.Float32bits(got[j]) != math.Float32bits(want[j]) {
						t.Fatalf("%s block %d (weights %v): scale %d = %g, reference %g", name, b, qw != nil, j, got[j], want[j])
					}
				}
				if gotL != wantL {
					t.Fatalf("%s block %d (weights %v): levels %v, reference %v", name, b, qw != nil, gotL, wantL)
				}
				checked++
			}
		}
	}
	if checked < 2*len(variants)*2000 {
		t.Fatalf("only %d comparisons", checked)
	}
}

// TestKQuantStateLayout pins the Go state structs to the offsets the assembly uses
// (the T_* and U_* constants in kquant_amd64.s).
func TestKQuantStateLayout(t *testing.T) {
	var s kqState16
	var q q6State
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"kqState16.wt", unsafe.Offsetof(s.wt), 2048},
		{"kqState16.xm", unsafe.Offsetof(s.xm), 4096},
		{"kqState16.laux", unsafe.Offsetof(s.laux), 6144},
		{"kqState16.lbest", unsafe.Offsetof(s.lbest), 8192},
		{"kqState16.hi", unsafe.Offsetof(s.hi), 10240},
		{"kqState16.sumW", unsafe.Offsetof(s.sumW), 10304},
		{"kqState16.sumX", unsafe.Offsetof(s.sumX), 10368},
		{"kqState16.sc", unsafe.Offsetof(s.sc), 10432},
		{"kqState16.mn", unsafe.Offsetof(s.mn), 10496},
		{"kqState16.best", unsafe.Offsetof(s.best), 10560},
		{"kqState16.live", unsafe.Offsetof(s.live), 10624},
		{"q6State.w", unsafe.Offsetof(q.w), 1024},
		{"q6State.wx", unsafe.Offsetof(q.wx), 2048},
		{"q6State.laux", unsafe.Offsetof(q.laux), 3072},
		{"q6State.lbest", unsafe.Offsetof(q.lbest), 4096},
		{"q6State.mx", unsafe.Offsetof(q.mx), 5120},
		{"q6State.sc", unsafe.Offsetof(q.sc), 5184},
		{"q6State.best", unsafe.Offsetof(q.best), 5248},
		{"q6State.live", unsafe.Offsetof(q.live), 5312},
	} {
		if c.got != c.want {
			t.Errorf("%s at %d, the assembly expects %d", c.name, c.got, c.want)
		}
	}
}
