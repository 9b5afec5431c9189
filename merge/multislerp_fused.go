package merge

import "github.com/gomerge/gomerge/formats/dtype"

// Multislerp's merge straight from BF16 bytes (Kernel.Fused); its Gram pass is
// gramPass's (gram.go).

// combineBF16 is multislerp's merge on BF16 words (Kernel.Fused): out = the base
// (+0 without one) plus γ_i·(y_i − b) for each model in order (b nil: γ_i·y_i), each
// difference, product and sum rounded to float32 as combine does, then rounded to
// BF16 as the encoder does. With AVX-512 sixteen at a time; the rest as the engine
// does without a fused path (bf16Tail).
func combineBF16(out []byte, y [][]byte, b []byte, c []float32) {
	j := 0
	if haveMultislerp512 {
		j = combineBF16Asm(out, y, b, c)
	}
	bf16Tail(out, y, b, j, func(dst []float32, in [][]float32) { combine(dst, in, c, b != nil) })
}

// bf16Tail does a fused merge's elements from off on as the engine's decoding path
// does, which is the reference the fused path must match: the words decoded (the
// base first, if any), merge, the result rounded to BF16. It is for the few
// elements past the assembly's last whole group, so its allocations do not count.
func bf16Tail(out []byte, y [][]byte, b []byte, off int, merge func(dst []float32, in [][]float32)) {
	m := len(out)/2 - off
	if m <= 0 {
		return
	}
	var in [][]float32
	for _, w := range append([][]byte{b}, y...) {
		if w == nil {
			continue
		}
		f := make([]float32, m)
		if err := dtype.Decode(f, w[2*off:][:2*m], dtype.BF16); err != nil {
			panic(err) // BF16 of a whole number of words always decodes
		}
		in = append(in, f)
	}
	dst := make([]float32, m)
	merge(dst, in)
	if err := dtype.Encode(out[2*off:], dst, dtype.BF16); err != nil {
		panic(err) // BF16 always encodes
	}
}

// combineFused is the Kernel.Fused of multislerp: BF16 inputs and output, where the
// CPU has AVX-512; coef gives γ once the Gram pass is done.
func combineFused(withBase bool, coef func() []float32) func([]byte, dtype.DType, []Operand, []float64, Chunk) bool {
	return func(out []byte, outDT dtype.DType, in []Operand, _ []float64, _ Chunk) bool {
		if !haveMultislerp512 || outDT != dtype.BF16 {
			return false
		}
		y, b, ok := bf16Operands(in, withBase)
		if !ok || len(out) != len(in[0].Data) {
			return false
		}
		combineBF16(out, y, b, coef())
		return true
	}
}
