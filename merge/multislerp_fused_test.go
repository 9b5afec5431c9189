package merge

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// bf16TestSpecial is BF16 words a fused path must treat as decoding would:
// signalling and quiet NaNs of both signs and several payloads, ±Inf, ±0,
// subnormals and the largest finite values.
var bf16TestSpecial = []uint16{0x7f81, 0xffc1, 0x7fc0, 0xff90, 0x7fa5, 0xffff, 0x7f80, 0xff80,
	0x0000, 0x8000, 0x0001, 0x8003, 0x7f7f, 0xff7f}

// bf16TestWords is n BF16 words (little-endian) and their values: mostly ordinary
// values of mixed magnitude, one in every `every` a special word (every 0: none).
func bf16TestWords(rng *rand.Rand, n, every int) ([]byte, []float32) {
	b, f := make([]byte, 2*n), make([]float32, n)
	for j := range n {
		h := uint16(0x3a00 + rng.IntN(0xa00)) // about 5e-4 to 4
		if rng.IntN(2) == 0 {
			h |= 0x8000
		}
		if every > 0 && rng.IntN(every) == 0 {
			h = bf16TestSpecial[rng.IntN(len(bf16TestSpecial))]
		}
		b[2*j], b[2*j+1] = byte(h), byte(h>>8)
		f[j] = dtype.BF16ToFloat32(h)
	}
	return b, f
}

// bf16TestLengths cross the assembly's groups (8, 16) and the Gram sums' blocks.
var bf16TestLengths = []int{1, 7, 8, 9, 15, 16, 17, 255, gramBlock, gramBlock + 1, 1000, 3*gramBlock + 5}

// TestCombineBF16MatchesCombine: the weighted sums from BF16 words (AVX-512 where
// the CPU has it) are decoding, the float32 merge (sumF32: combine's, task
// arithmetic's, linear's) and rounding to BF16, bit for bit, for 1 to 5 models with
// a base and without, in each form, with special words and with coefficients and
// final factors that are NaN, ±Inf, ±0 or tiny (as a tensor holding a NaN or an
// Inf makes them).
func TestCombineBF16MatchesCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 42))
	nan := math.Float32frombits
	inf := float32(math.Inf(1))
	coefs := [][]float32{{0.3, -0.7, 1.4, 0.25, -2}, {nan(0x7fc00000), 0.5, nan(0xffc00123), 1, 0},
		{inf, 0, -inf, -0.0, 1e-30}, {1e-7, -1e-8, 3, 1, 1}}
	forms := []struct {
		form     sumForm
		withBase []bool
		k        []float32
	}{
		{sumFromBase, []bool{false, true}, []float32{0}},
		{sumOntoBase, []bool{true}, []float32{1, 0.6, -3, 0, nan(0x7fc00042), inf}},
		{sumOver, []bool{false}, []float32{1, 3, 0.37, 0, -0.0, nan(0xffc00042), inf}},
	}
	for _, f := range forms {
		for n := 1; n <= 5; n++ {
			for _, withBase := range f.withBase {
				for _, m := range bf16TestLengths {
					for _, every := range []int{0, 20, 3} {
						y, yf := make([][]byte, n), make([][]float32, n)
						for i := range y {
							y[i], yf[i] = bf16TestWords(rng, m, every)
						}
						var b []byte
						in := yf
						if withBase {
							var bf []float32
							b, bf = bf16TestWords(rng, m, every)
							in = append([][]float32{bf}, yf...)
						}
						for _, c := range coefs {
							c = c[:n]
							for _, k := range f.k {
								got := make([]byte, 2*m)
								combineBF16(got, y, b, c, f.form, k)
								dst := make([]float32, m)
								sumF32(dst, in, c, withBase, f.form, k)
								for j := range m {
									g := uint16(got[2*j]) | uint16(got[2*j+1])<<8
									if want := dtype.Float32ToBF16(dst[j]); g != want && !(nanPayloadsVary && isBF16NaN(g) && isBF16NaN(want)) {
										t.Fatalf("form %d n %d base %v m %d every %d γ %v k %v (AVX-512 %v) element %d: %#04x, want %#04x",
											f.form, n, withBase, m, every, c, k, haveAVX512BW, j, g, want)
									}
								}
							}
						}
					}
				}
			}
		}
	}
}

func isBF16NaN(h uint16) bool { return h&0x7fff > 0x7f80 }

// sameBF16Words says whether two outputs hold the same BF16 words; where NaN
// payloads vary (nanPayloadsVary), two NaNs count as the same.
func sameBF16Words(a, b []byte) bool {
	if !nanPayloadsVary || len(a) != len(b) {
		return bytes.Equal(a, b)
	}
	for j := 0; j+1 < len(a); j += 2 {
		g, w := uint16(a[j])|uint16(a[j+1])<<8, uint16(b[j])|uint16(b[j+1])<<8
		if g != w && !(isBF16NaN(g) && isBF16NaN(w)) {
			return false
		}
	}
	return true
}

// memSink keeps what an Execute writes, per tensor.
type memSink struct {
	mu   sync.Mutex
	bufs [][]byte
}

func (s *memSink) WriteAt(i int, off int64, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(s.bufs[i][off:], p)
	return nil
}

// executeFusedAndDecoded runs kernel over one BF16 tensor of the given inputs twice,
// as it is and with its fused paths (Kernel.Fused, Pass.Fused) taken away, and
// returns both outputs. It fails the test if the fused paths declined a chunk where
// the CPU runs their assembly (mergeAsm for the merge, passAsm for the passes).
func executeFusedAndDecoded(t *testing.T, in [][]byte, shape []int64, mergeAsm, passAsm bool, kernel func(*TensorPlan) Kernel) (fused, decoded []byte) {
	t.Helper()
	var declined atomic.Int64
	counted := func(f func(Chunk, []Operand, []float64) bool) func(Chunk, []Operand, []float64) bool {
		return func(pos Chunk, in []Operand, acc []float64) bool {
			ok := f(pos, in, acc)
			if !ok && passAsm {
				declined.Add(1)
			}
			return ok
		}
	}
	run := func(strip bool) []byte {
		tp := TensorPlan{Name: "w", Shape: shape, OutDType: dtype.BF16, Merge: true}
		for _, b := range in {
			tp.In = append(tp.In, Operand{DType: dtype.BF16, Data: b, File: "mem"})
		}
		sink := &memSink{bufs: [][]byte{make([]byte, len(in[0]))}}
		plan := &Plan{Inputs: make([]Source, len(in)), Tensors: []TensorPlan{tp}} // Inputs: the scratch's size
		_, err := Execute(context.Background(), plan, sink, func(tp *TensorPlan) Kernel {
			k := kernel(tp)
			passes := append([]Pass(nil), k.Passes...)
			for i := range passes {
				if passes[i].Fused == nil || strip {
					passes[i].Fused = nil
					continue
				}
				passes[i].Fused = counted(passes[i].Fused)
			}
			k.Passes = passes
			if f := k.Fused; f != nil && !strip {
				k.Fused = func(out []byte, dt dtype.DType, in []Operand, acc []float64, pos Chunk) bool {
					ok := f(out, dt, in, acc, pos)
					if !ok && mergeAsm {
						declined.Add(1)
					}
					return ok
				}
			}
			if strip {
				k.Fused = nil
			}
			return k
		}, ExecOptions{Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		return sink.bufs[0]
	}
	fused, decoded = run(false), run(true)
	if n := declined.Load(); n > 0 {
		t.Errorf("the fused paths declined %d chunks", n)
	}
	return fused, decoded
}

// TestMultislerpFusedMatchesDecoded: multislerp through the engine with its fused
// passes gives the bytes of the decoding path, over a tensor of several chunks,
// with a base and without, with ordinary words and with a NaN among them.
func TestMultislerpFusedMatchesDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 43))
	m := 2*ChunkElems + 1003 // a last chunk that ends past the assembly's groups
	for _, withBase := range []bool{false, true} {
		for _, every := range []int{0, 50000} {
			var in [][]byte
			for range 4 {
				b, _ := bf16TestWords(rng, m, every)
				in = append(in, b)
			}
			models := []Model{{Weight: 1}, {Weight: 2}, {Weight: 0.5}, {Weight: 1}}
			if withBase {
				models = models[1:]
			}
			r := &methodRun{models: models, weights: make([]float32, len(models)), base: withBase,
				p: Params{Normalize: SwitchOn, Epsilon: 1e-8}}
			fused, decoded := executeFusedAndDecoded(t, in, []int64{int64(m)}, haveAVX512BW, haveLerpBF16Asm,
				func(tp *TensorPlan) Kernel { return multislerpKernel(r, tp) })
			if !sameBF16Words(fused, decoded) {
				t.Errorf("base %v every %d: the fused output differs from the decoded one", withBase, every)
			}
		}
	}
}
