package merge

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// modelStockTestFactors are t and 1 − t for the merge tests: ordinary, 0 and 1, and
// NaN of several payloads (as a NaN in a tensor's statistics makes them).
var modelStockTestFactors = [][2]float32{{0.6, 0.4}, {1, 0}, {0, 1},
	{math.Float32frombits(0x7fc00000), math.Float32frombits(0x7fc00000)},
	{math.Float32frombits(0xffc00123), math.Float32frombits(0x7fd00000)}, {0.999, 1e-3}}

// TestModelStockMergeBF16MatchesMerge: model_stock's merge from BF16 words (AVX-512
// where the CPU has it) is decoding, modelStockMerge and rounding to BF16, bit for
// bit, for 2 to 5 models, with special words and with factors that are NaN (of
// several payloads, as a NaN in a tensor's statistics makes them), 0 or 1.
func TestModelStockMergeBF16MatchesMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 44))
	for n := 2; n <= 5; n++ {
		for _, m := range bf16TestLengths {
			for _, every := range []int{0, 20, 3} {
				b, bf := bf16TestWords(rng, m, every)
				y, yf := make([][]byte, n), make([][]float32, n)
				for i := range y {
					y[i], yf[i] = bf16TestWords(rng, m, every)
				}
				for _, f := range modelStockTestFactors {
					got := make([]byte, 2*m)
					modelStockMergeBF16(got, b, y, f[0], f[1])
					dst := make([]float32, m)
					modelStockMergeGo(dst, bf, yf, f[0], f[1])
					for j := range m {
						g := uint16(got[2*j]) | uint16(got[2*j+1])<<8
						if want := dtype.Float32ToBF16(dst[j]); g != want && !(nanPayloadsVary && isBF16NaN(g) && isBF16NaN(want)) {
							t.Fatalf("n %d m %d every %d factors %v (AVX-512 %v) element %d: %#04x, want %#04x", n, m, every, f,
								haveModelStock512, j, g, want)
						}
					}
				}
			}
		}
	}
}

// TestModelStockMergeAsmMatchesGo: model_stock's merge on decoded values (AVX2
// eight at a time where the CPU has it) is modelStockMergeGo bit for bit, for 2 to 5
// models, with special values and with factors that are NaN, 0 or 1; it fails if
// an operation or an operand order of the assembly differs.
func TestModelStockMergeAsmMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 49))
	for n := 2; n <= 5; n++ {
		for _, m := range bf16TestLengths {
			for _, every := range []int{0, 20, 3} {
				_, bf := bf16TestWords(rng, m, every)
				yf := make([][]float32, n)
				for i := range yf {
					_, yf[i] = bf16TestWords(rng, m, every)
				}
				for _, f := range modelStockTestFactors {
					got, want := make([]float32, m), make([]float32, m)
					modelStockMerge(got, bf, yf, f[0], f[1])
					modelStockMergeGo(want, bf, yf, f[0], f[1])
					for j := range m {
						if !sameBits32(got[j], want[j]) {
							t.Fatalf("n %d m %d every %d factors %v element %d: %#x, Go %#x", n, m, every, f, j,
								math.Float32bits(got[j]), math.Float32bits(want[j]))
						}
					}
				}
			}
		}
	}
}

// TestModelStockFusedMatchesDecoded: model_stock per tensor through the engine with
// its fused passes gives the bytes of the decoding path, over a tensor of several
// chunks, with ordinary words and with a NaN among them.
func TestModelStockFusedMatchesDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 45))
	m := 2*ChunkElems + 1003 // a last chunk that ends past the assembly's groups
	for _, every := range []int{0, 50000} {
		base, basef := bf16TestWords(rng, m, every)
		in := [][]byte{base}
		for range 3 {
			d, _ := bf16TestWords(rng, m, every)
			x := make([]byte, len(d))
			for j := range m { // the base plus a small task vector, so that t is neither 0 nor 1
				v := basef[j] + 0.01*dtype.BF16ToFloat32(uint16(d[2*j])|uint16(d[2*j+1])<<8)
				h := dtype.Float32ToBF16(v)
				x[2*j], x[2*j+1] = byte(h), byte(h>>8)
			}
			in = append(in, x)
		}
		r := &methodRun{models: make([]Model, 3), weights: make([]float32, 3), base: true}
		fused, decoded := executeFusedAndDecoded(t, in, []int64{int64(m)}, haveModelStock512, haveLerpBF16Asm,
			func(tp *TensorPlan) Kernel { return modelStockKernel(r, tp) })
		if !sameBF16Words(fused, decoded) {
			t.Errorf("every %d: the fused output differs from the decoded one", every)
		}
	}
}
