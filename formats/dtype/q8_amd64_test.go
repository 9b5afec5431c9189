//go:build !purego

package dtype

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// TestQ8AsmMatchesGo compares the AVX2 Q8_0 paths with the Go reference byte for byte
// (bit for bit when decoding), on blocks built to hit every branch: NaN and infinite
// values, subnormal and zero scales, exact halves, −0, and values near float32's top,
// in batches longer and shorter than q8Batch.
func TestQ8AsmMatchesGo(t *testing.T) {
	if !haveQ8Asm {
		t.Skip("no AVX2 on this CPU: the assembly is not used")
	}
	rng := rand.New(rand.NewPCG(11, 12))
	specials := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-45, -1e-40,
		float32(math.Copysign(0, -1)), 0.5, -0.5, 2.5, -2.5, 3.4e38, -3.4e38, 1.17549435e-38}
	const blocks = 3*q8Batch + 7
	x := make([]float32, 32*blocks)
	for b := range blocks {
		scale := float32(math.Pow(10, rng.Float64()*80-40))
		for j := range 32 {
			v := float32(rng.NormFloat64()) * scale
			switch {
			case b%5 == 1 && j == b%32:
				v = specials[b%len(specials)]
			case b%7 == 2:
				v = float32(rng.IntN(255)-127) / 2 // halves, amax 63.5
			case b%11 == 3:
				v = 0
			}
			x[32*b+j] = v
		}
	}
	got, want := make([]byte, 34*blocks), make([]byte, 34*blocks)
	encodeQ8_0(got, x)
	encodeQ8_0Go(want, x)
	for b := range blocks {
		if g, w := got[34*b:34*b+34], want[34*b:34*b+34]; !bytes.Equal(g, w) {
			t.Fatalf("encode block %d (%v):\n asm %x\n  go %x", b, x[32*b:32*b+32], g, w)
		}
	}

	// Decode: every q byte under scales that are normal, subnormal, zero, ±inf and NaN.
	src := make([]byte, 34*blocks)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	for b := range blocks {
		h := uint16(rng.Uint32())
		switch b % 6 {
		case 0:
			h = 0x7C00 // +inf
		case 1:
			h = 0x7E01 // NaN
		case 2:
			h = 0x0001 // subnormal
		case 3:
			h = 0x8000 // −0
		}
		binary.LittleEndian.PutUint16(src[34*b:], h)
	}
	dg, dw := make([]float32, 32*blocks), make([]float32, 32*blocks)
	decodeQ8_0(dg, src)
	decodeQ8_0Go(dw, src)
	for i := range dg {
		if math.Float32bits(dg[i]) != math.Float32bits(dw[i]) {
			t.Fatalf("decode element %d: asm %v (%#x), go %v (%#x)", i, dg[i], math.Float32bits(dg[i]), dw[i], math.Float32bits(dw[i]))
		}
	}
}
