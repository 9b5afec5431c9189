package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// TestDivideMatchesGo: divide (AVX2 where the CPU has it) gives divideGo's bits, on
// lengths that leave tails, the special values and divisors of every kind.
func TestDivideMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 5))
	for _, n := range []int{0, 1, 7, 8, 13, 1001, 4096} {
		x := fastTestValues(rng, n)
		if n == 4096 { // NaNs of several payloads
			for j := range x {
				if j%3 == 0 {
					x[j] = math.Float32frombits(0x7fc00000 | uint32(j))
				}
			}
		}
		for _, d := range []float32{3, -0.7, 1, 0, float32(math.Inf(-1)), math.Float32frombits(0x7fc00005), 1e-38} {
			got, want := append([]float32(nil), x...), append([]float32(nil), x...)
			divide(got, d)
			divideGo(want, d)
			for j := range got {
				if !sameBits32(got[j], want[j]) {
					t.Fatalf("n %d d %v: element %d: %v / d = %v, want %v", n, d, j, x[j], got[j], want[j])
				}
			}
		}
	}
}

// TestScaleOntoMatchesGo: scaleOnto (AVX2 where the CPU has it) gives scaleOntoGo's
// bits, on lengths that leave tails, the special values and NaNs of several payloads
// meeting each other.
func TestScaleOntoMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(29, 3))
	for _, n := range []int{0, 1, 7, 8, 13, 1001, 4096} {
		x, b := fastTestValues(rng, n), fastTestValues(rng, n)
		if n == 4096 {
			for j := range x {
				if j%3 == 0 {
					x[j], b[j] = math.Float32frombits(0x7fc00000|uint32(j)), math.Float32frombits(0xffc00000|uint32(j+1))
				}
			}
		}
		for _, w := range []float32{0.3, -1.7, 0, 3e30, math.Float32frombits(0x7fc00005)} {
			got, want := append([]float32(nil), x...), append([]float32(nil), x...)
			scaleOnto(got, b, w)
			scaleOntoGo(want, b, w)
			for j := range got {
				if !sameBits32(got[j], want[j]) {
					t.Fatalf("n %d w %v: element %d: %v, want %v", n, w, j, got[j], want[j])
				}
			}
		}
	}
}

// tileOperands encodes n special-laden values (fastTestValues) in each of dts: the
// operands a fused path reads, and the values the engine's path would decode.
func tileOperands(t *testing.T, rng *rand.Rand, dts []dtype.DType, n int) ([]Operand, [][]float32) {
	t.Helper()
	ops := make([]Operand, len(dts))
	vals := make([][]float32, len(dts))
	for i, dt := range dts {
		b := make([]byte, dt.Bytes(int64(n)))
		must(t, dtype.Encode(b, fastTestValues(rng, n), dt))
		ops[i] = Operand{DType: dt, Data: b}
		vals[i] = make([]float32, n)
		must(t, dtype.Decode(vals[i], b, dt))
	}
	return ops, vals
}

// checkEncoded fails unless fused (a fused path's output, in dt) holds ref's values
// as encoding them gives.
func checkEncoded(t *testing.T, name string, fused []byte, ref []float32, dt dtype.DType) {
	t.Helper()
	generic := make([]byte, len(fused))
	must(t, dtype.Encode(generic, ref, dt))
	got, want := make([]float32, len(ref)), make([]float32, len(ref))
	must(t, dtype.Decode(got, fused, dt))
	must(t, dtype.Decode(want, generic, dt))
	for j := range got {
		if !sameBits32(got[j], want[j]) {
			t.Fatalf("%s: fused element %d: %v, want %v", name, j, got[j], want[j])
		}
	}
}

// checkValues32 fails unless got holds want's bits (sameBits32).
func checkValues32(t *testing.T, name string, got, want []float32) {
	t.Helper()
	for j := range got {
		if !sameBits32(got[j], want[j]) {
			t.Fatalf("%s: element %d: %v, want %v", name, j, got[j], want[j])
		}
	}
}

// linearPlain is linear's chunk as its definition reads, element by element: each
// product rounded to float32, added in model order, divided.
func linearPlain(dst []float32, in [][]float32, w []float32, den float32) {
	for j := range dst {
		var s float32
		for i, x := range in {
			s += float32(w[i] * x[j])
		}
		dst[j] = s / den
	}
}

// TestLinearFusedMatchesGeneric: linear's tiled path from the inputs' bytes writes the
// bytes of decoding, the plain per-element sum and encoding, over dtype mixes, lengths
// around the tile, special values, and with and without normalizing; it declines
// block-quantized types.
func TestLinearFusedMatchesGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 31))
	cases := []struct {
		in  []dtype.DType
		out dtype.DType
	}{
		{[]dtype.DType{dtype.BF16, dtype.BF16, dtype.BF16}, dtype.BF16},
		{[]dtype.DType{dtype.F32, dtype.F16, dtype.BF16}, dtype.F16},
		{[]dtype.DType{dtype.F16}, dtype.F32},
		{[]dtype.DType{dtype.BF16, dtype.F32}, dtype.BF16},
		{[]dtype.DType{dtype.F64, dtype.BF16}, dtype.F64},
	}
	for _, tc := range cases {
		for _, n := range []int{0, 1, 7, tileElems - 1, tileElems, tileElems + 1, 5000} {
			ops, vals := tileOperands(t, rng, tc.in, n)
			w := make([]float32, len(tc.in))
			for i := range w {
				w[i] = float32(rng.NormFloat64())
			}
			for _, den := range []float32{1, 0.37} {
				name := fmt.Sprint(tc.in, "->", tc.out, " n ", n, " den ", den)
				fused := make([]byte, tc.out.Bytes(int64(n)))
				if !linearTiled(fused, tc.out, ops, w, den) {
					t.Fatalf("%s: the fused path declined", name)
				}
				ref := make([]float32, n)
				linearPlain(ref, vals, w, den)
				checkEncoded(t, name, fused, ref, tc.out)
				// The engine's path (decode, the kernel's Merge, encode) gives them too.
				dst := make([]float32, n)
				sumF32(dst, vals, w, false, sumOver, den)
				checkValues32(t, name+": sumF32", dst, ref)
				// And so does the BF16 words' path, the kernel's Fused for BF16.
				if y, _, ok := bf16Operands(ops, false); ok && tc.out == dtype.BF16 {
					words := make([]byte, 2*n)
					combineBF16(words, y, nil, w, sumOver, den)
					checkEncoded(t, name+": combineBF16", words, ref, dtype.BF16)
				}
			}
		}
	}
	q := make([]byte, dtype.Q8_0.Bytes(64))
	if linearTiled(q, dtype.Q8_0, []Operand{{DType: dtype.Q8_0, Data: q}}, []float32{1}, 1) {
		t.Error("the fused path took a block-quantized type")
	}
}

// TestTaskArithmeticFusedMatchesGeneric: task_arithmetic's kernel, fused from the
// inputs' bytes and through Merge, writes the bits of its plain per-element
// statement (δ_i rounded, each w_i·δ_i rounded and added in model order, then
// θ_base + float32(λ·sum)), over dtype mixes, lengths around the tile and special
// values; it declines block-quantized types.
func TestTaskArithmeticFusedMatchesGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 13))
	cases := []struct {
		in  []dtype.DType // the base first
		out dtype.DType
	}{
		{[]dtype.DType{dtype.BF16, dtype.BF16, dtype.BF16, dtype.BF16}, dtype.BF16},
		{[]dtype.DType{dtype.F32, dtype.F16, dtype.BF16}, dtype.F16},
		{[]dtype.DType{dtype.F16, dtype.F32}, dtype.F32},
	}
	for _, tc := range cases {
		for _, n := range []int{0, 1, 9, tileElems - 1, tileElems, tileElems + 1, 5000} {
			ops, vals := tileOperands(t, rng, tc.in, n)
			w := make([]float32, len(tc.in)-1)
			for i := range w {
				w[i] = float32(rng.NormFloat64())
			}
			for _, lambda := range []float32{1, 0.6} {
				name := fmt.Sprint(tc.in, "->", tc.out, " n ", n, " λ ", lambda)
				k := taskArithmeticKernel(&methodRun{weights: w, lambda: lambda}, nil)
				ref := make([]float32, n)
				for j := range ref {
					var sum float32
					for i, x := range vals[1:] {
						sum += float32(w[i] * (x[j] - vals[0][j]))
					}
					ref[j] = vals[0][j] + float32(lambda*sum)
				}
				dst := make([]float32, n)
				k.Merge(dst, vals, nil, Chunk{})
				checkValues32(t, name+": Merge", dst, ref)
				fused := make([]byte, tc.out.Bytes(int64(n)))
				if !k.Fused(fused, tc.out, ops, nil, Chunk{}) {
					t.Fatalf("%s: the fused path declined", name)
				}
				checkEncoded(t, name, fused, ref, tc.out)
			}
		}
	}
	q := make([]byte, dtype.Q8_0.Bytes(64))
	k := taskArithmeticKernel(&methodRun{weights: []float32{1}, lambda: 1}, nil)
	if k.Fused(q, dtype.Q8_0, []Operand{{DType: dtype.Q8_0, Data: q}, {DType: dtype.Q8_0, Data: q}}, nil, Chunk{}) {
		t.Error("the fused path took a block-quantized type")
	}
}
