package merge

import "github.com/gomerge/gomerge/formats/dtype"

// Weighted sums straight from BF16 words to BF16 words (Kernel.Fused): linear's,
// task arithmetic's and the geometric methods' merges (multislerp, karcher,
// nuslerp), each the same bits as decoding, the method's float32 merge and encoding.

// sumForm says where combineBF16's sum starts and how it ends, as the method's
// float32 merge does.
type sumForm int

const (
	// sumFromBase: v = b, then v += γ_i·(x_i − b) per model (combine's, with a base;
	// without one v = 0 and v += γ_i·x_i).
	sumFromBase sumForm = iota
	// sumOntoBase: v = 0, v += γ_i·(x_i − b) per model, then b + k·v (task
	// arithmetic: addScaled's, then scaleOnto's).
	sumOntoBase
	// sumOver: v = 0, v += γ_i·x_i per model, then v / k (linear: combine's without a
	// base, then divide's).
	sumOver
)

// combineBF16 writes out = the sum of form over the models' words y and the base's
// b (nil: none; sumOntoBase needs one), with coefficients c and form's k, each
// difference, product, sum and quotient rounded to float32 as the float32 merge
// does, then rounded to BF16 as the encoder does. With AVX-512 sixteen at a time;
// the rest as the engine does without a fused path (bf16Tail).
func combineBF16(out []byte, y [][]byte, b []byte, c []float32, form sumForm, k float32) {
	j := 0
	if haveAVX512BW {
		j = combineBF16Asm(out, y, b, c, form, k)
	}
	bf16Tail(out, y, b, j, func(dst []float32, in [][]float32) { sumF32(dst, in, c, b != nil, form, k) })
}

// sumF32 is combineBF16's sum on decoded values (in: the base first, if any), the
// reference it matches.
func sumF32(dst []float32, in [][]float32, c []float32, withBase bool, form sumForm, k float32) {
	switch form {
	case sumFromBase:
		combine(dst, in, c, withBase)
	case sumOntoBase:
		clear(dst)
		for i, w := range c {
			addScaled(dst, in[1+i], in[0], w)
		}
		scaleOnto(dst, in[0], k)
	case sumOver:
		combine(dst, in, c, false)
		divide(dst, k)
	}
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
