package merge

import "github.com/gomerge/gomerge/formats/dtype"

// Multislerp's merge straight from BF16 bytes (Kernel.Fused); its Gram pass is
// gramPass's (gram.go).

// combineFused is the Kernel.Fused of multislerp: BF16 inputs and output, where the
// CPU has AVX-512; coef gives γ once the Gram pass is done.
func combineFused(withBase bool, coef func() []float32) func([]byte, dtype.DType, []Operand, []float64, Chunk) bool {
	return func(out []byte, outDT dtype.DType, in []Operand, _ []float64, _ Chunk) bool {
		if !haveAVX512BW || outDT != dtype.BF16 {
			return false
		}
		y, b, ok := bf16Operands(in, withBase)
		if !ok || len(out) != len(in[0].Data) {
			return false
		}
		combineBF16(out, y, b, coef(), sumFromBase, 0)
		return true
	}
}
