package merge

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/gomerge/gomerge/formats/dtype"
)

// ramBF16TestWords is n BF16 words: base's where a model's entry should not count,
// base's nudged by one unit in the last place or by about eps (the threshold), NaNs
// with payloads (signalling too), and fastTestValues rounded to BF16 (±0, ±Inf,
// subnormals, the largest).
func ramBF16TestWords(rng *rand.Rand, base []uint16, n int, eps float64) []uint16 {
	vals := fastTestValues(rng, n)
	w := make([]uint16, n)
	for j := range w {
		w[j] = dtype.Float32ToBF16(vals[j])
		if base == nil {
			continue
		}
		switch rng.IntN(8) {
		case 0:
			w[j] = base[j]
		case 1:
			w[j] = base[j] ^ 1
		case 2:
			b := math.Float32frombits(uint32(base[j]) << 16)
			w[j] = dtype.Float32ToBF16(b + float32(eps)*float32(1+rng.IntN(3))/2)
		case 3:
			if rng.IntN(8) == 0 {
				w[j] = 0x7f81 | uint16(rng.IntN(0x7e)) | uint16(rng.IntN(2))<<15 // NaN, any payload
			}
		}
	}
	return w
}

// TestRAMMergeBF16MatchesChunk: the fused BF16 loop (AVX2 where the CPU has it) gives
// the bits of decoding, ramMergeOne (the element-at-a-time reference) and encoding,
// for 1 to 5 models, on lengths that leave tails, λ of 1 (ram) and above.
func TestRAMMergeBF16MatchesChunk(t *testing.T) {
	if !haveLerpBF16Asm {
		// No fused path here: the engine decodes, runs ramMergeChunk (checked by
		// TestRAMChunkMatchesOneAtATime) and encodes, which the kernel must leave to it.
		k := ramKernel(&methodRun{weights: []float32{1}, p: Params{Epsilon: 1e-5}}, false)
		in := []Operand{{DType: dtype.BF16, Data: make([]byte, 16)}, {DType: dtype.BF16, Data: make([]byte, 16)}}
		if k.Fused(make([]byte, 16), dtype.BF16, in, nil, Chunk{}) {
			t.Fatal("Fused did the chunk without the assembly")
		}
		return
	}
	rng := rand.New(rand.NewPCG(17, 17))
	for nm := 1; nm <= 5; nm++ {
		for _, n := range []int{1, 7, 8, 9, 64, 1003, ChunkElems} {
			for _, eps := range []float64{1e-5, 0, 0.01, 1e-40, math.Copysign(0, -1), 1e300, math.Inf(1), math.NaN()} {
				bw := ramBF16TestWords(rng, nil, n, eps)
				ops := []Operand{{DType: dtype.BF16, Data: wordsBytes(bw)}}
				xs := make([][]float32, nm)
				lambda := make([]float32, nm)
				for i := range xs {
					xw := ramBF16TestWords(rng, bw, n, eps)
					ops = append(ops, Operand{DType: dtype.BF16, Data: wordsBytes(xw)})
					xs[i] = widenWords(xw)
					lambda[i] = 1
					if nm%2 == 0 {
						lambda[i] = 1 + float32(rng.Float64()*0.02)
					}
				}
				out := make([]byte, 2*n)
				if !ramMergeBF16(out, ops, eps, lambda, newRAMScratch(nm)) {
					t.Fatal("ramMergeBF16 refused aligned words")
				}
				// A model's bytes at an odd address (after an odd-sized tensor) are
				// left to the engine's decode.
				odd := append([]Operand(nil), ops...)
				buf := make([]byte, 2*n+1)
				if uintptr(unsafe.Pointer(&buf[0]))%2 == 0 {
					buf = buf[1:]
				}
				odd[nm].Data = buf[:copy(buf, odd[nm].Data)]
				if ramMergeBF16(make([]byte, 2*n), odd, eps, lambda, newRAMScratch(nm)) {
					t.Fatal("ramMergeBF16 took misaligned words")
				}
				want := make([]float32, n)
				ramMergeOne(want, widenWords(bw), xs, eps, lambda)
				got := widenWords(bytesWords(out))
				for j := range got {
					if !sameBits32(got[j], math.Float32frombits(uint32(dtype.Float32ToBF16(want[j]))<<16)) {
						t.Fatalf("models %d n %d eps %g: element %d: %v, want %v", nm, n, eps, j, got[j], want[j])
					}
				}
			}
		}
	}
}

// TestRAMUndecidedAtLo: a difference that rounds in float32 to exactly lo (the
// largest float32 not above eps) is one the float32 compare cannot decide; the
// float64 compare finds that it counts. Here |x − b| = 2⁻¹⁰ + 2⁻⁴⁰ against an eps
// of 2⁻¹⁰ + 2⁻⁴¹: the float32 difference is 2⁻¹⁰, which is lo. The merge and the
// counts from BF16 words must agree with the element-at-a-time reference.
func TestRAMUndecidedAtLo(t *testing.T) {
	if !haveLerpBF16Asm {
		return // no assembly: the engine's decoded path, which TestRAMChunkMatchesOneAtATime checks
	}
	const n = 40 // two groups of sixteen and a tail
	eps := math.Ldexp(1, -10) + math.Ldexp(1, -41)
	base, moved := make([]uint16, n), make([]uint16, n)
	for j := range n {
		base[j], moved[j] = 0x3a80, 0xab80 // 2⁻¹⁰, and −2⁻⁴⁰
	}
	if lo, _ := ramThresholds(eps); lo != float32(math.Ldexp(1, -10)) {
		t.Fatalf("lo %g: the case no longer meets the threshold", lo)
	}
	in := []Operand{{DType: dtype.BF16, Data: wordsBytes(base)}, {DType: dtype.BF16, Data: wordsBytes(moved)},
		{DType: dtype.BF16, Data: wordsBytes(base)}}
	xs := [][]float32{widenWords(moved), widenWords(base)}
	got, want := make([]float64, 4), make([]float64, 4)
	if !ramCountBF16(in, eps, newRAMScratch(2), got) {
		t.Fatal("ramCountBF16 declined aligned words")
	}
	ramCountChunk(widenWords(base), xs, eps, newRAMScratch(2), want)
	if !slices.Equal(got, want) || want[1] != n {
		t.Errorf("counts %v, ramCountChunk %v (the moved model's %d entries count, alone)", got, want, n)
	}
	out, ref := make([]byte, 2*n), make([]float32, n)
	if !ramMergeBF16(out, in, eps, []float32{1, 1}, newRAMScratch(2)) {
		t.Fatal("ramMergeBF16 declined aligned words")
	}
	ramMergeOne(ref, widenWords(base), xs, eps, []float32{1, 1})
	for j, w := range bytesWords(out) {
		if w != dtype.Float32ToBF16(ref[j]) {
			t.Fatalf("element %d: %#04x, want %#04x", j, w, dtype.Float32ToBF16(ref[j]))
		}
	}
}

// TestRAMCountChunkTails: ramCountChunk (all models per 8 elements in AVX2 where the
// CPU has it) counts as ramCountOne on lengths that leave tails and across
// several calls adding to the same acc.
func TestRAMCountChunkTails(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for nm := 1; nm <= 6; nm++ {
		s := newRAMScratch(nm)
		got, want := make([]float64, 2*nm), make([]float64, 2*nm)
		for _, n := range []int{1, 7, 8, 15, 1001, ChunkElems} {
			eps := []float64{1e-5, 0, 0.01, 1e-40, 1e300, math.Inf(1), math.NaN()}[rng.IntN(7)]
			bw := ramBF16TestWords(rng, nil, n, eps)
			x := make([][]float32, nm)
			for i := range x {
				x[i] = widenWords(ramBF16TestWords(rng, bw, n, eps))
			}
			base := widenWords(bw)
			ramCountChunk(base, x, eps, s, got)
			ramCountOne(base, x, eps, want)
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("models %d n %d eps %g: count %d: %v, want %v", nm, n, eps, i, got[i], want[i])
				}
			}
		}
	}
}

func widenWords(w []uint16) []float32 {
	out := make([]float32, len(w))
	for j, h := range w {
		out[j] = math.Float32frombits(uint32(h) << 16)
	}
	return out
}

func wordsBytes(w []uint16) []byte {
	b := make([]byte, 2*len(w))
	for j, h := range w {
		b[2*j], b[2*j+1] = byte(h), byte(h>>8)
	}
	return b
}

func bytesWords(b []byte) []uint16 {
	w := make([]uint16, len(b)/2)
	for j := range w {
		w[j] = uint16(b[2*j]) | uint16(b[2*j+1])<<8
	}
	return w
}

// BenchmarkRAMChunk: one chunk of 3 BF16 models, as the engine did it before the
// fused loop (decode, ramMergeChunk, encode) and as ramMergeBF16 does it, and
// ramplus_tl's count pass from the words and on the decoded chunk.
func BenchmarkRAMChunk(b *testing.B) {
	rng := rand.New(rand.NewPCG(17, 19))
	const nm, n, eps = 3, ChunkElems, 1e-5
	bw := make([]uint16, n)
	for j := range bw {
		bw[j] = dtype.Float32ToBF16(float32(rng.NormFloat64() * 0.02))
	}
	ops := []Operand{{DType: dtype.BF16, Data: wordsBytes(bw)}}
	in := [][]float32{make([]float32, n)}
	for range nm {
		xw := make([]uint16, n)
		for j := range xw {
			xw[j] = dtype.Float32ToBF16(math.Float32frombits(uint32(bw[j])<<16) + float32(rng.NormFloat64()*1e-3))
		}
		ops = append(ops, Operand{DType: dtype.BF16, Data: wordsBytes(xw)})
		in = append(in, make([]float32, n))
	}
	lambda := []float32{1, 1, 1}
	s := newRAMScratch(nm)
	out, dst := make([]byte, 2*n), make([]float32, n)
	decode := func() {
		for i, op := range ops {
			if err := dtype.Decode(in[i], op.Data, dtype.BF16); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("decode+merge+encode", func(b *testing.B) {
		for b.Loop() {
			decode()
			ramMergeChunk(dst, in[0], in[1:], eps, lambda, s)
			if err := dtype.Encode(out, dst, dtype.BF16); err != nil {
				b.Fatal(err)
			}
		}
	})
	if haveLerpBF16Asm {
		b.Run("fused", func(b *testing.B) {
			for b.Loop() {
				ramMergeBF16(out, ops, eps, lambda, s)
			}
		})
	}
	if haveLerpBF16Asm {
		b.Run("count", func(b *testing.B) {
			acc := make([]float64, 2*nm)
			for b.Loop() {
				ramCountBF16(ops, eps, s, acc)
			}
		})
	}
	b.Run("decode+count", func(b *testing.B) {
		acc := make([]float64, 2*nm)
		for b.Loop() {
			decode()
			ramCountChunk(in[0], in[1:], eps, s, acc)
		}
	})
}

// TestRAMPlusCountFusedMatchesDecoded: ramplus_tl through the engine with its count
// pass straight from BF16 words gives the bytes of the decoding path, over a tensor
// of several chunks whose models change a third of the base's entries each (so the
// unique and shared counts, and with them each λ, depend on every element), with
// and without special words and with epsilons the threshold test decides at once
// and ones it must decide in float64.
func TestRAMPlusCountFusedMatchesDecoded(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 48))
	m := 2*ChunkElems + 1003 // a last chunk past the assembly's groups of eight
	for _, eps := range []float64{1e-5, 0, 0.0625} {
		for _, every := range []int{0, 5000} {
			base, _ := bf16TestWords(rng, m, every)
			in := [][]byte{base}
			for range 3 {
				x := bytes.Clone(base)
				for j := 0; j < m; j++ {
					if rng.IntN(3) == 0 {
						w, _ := bf16TestWords(rng, 1, every)
						copy(x[2*j:], w)
					}
				}
				in = append(in, x)
			}
			r := &methodRun{models: make([]Model, 3), weights: make([]float32, 3), base: true,
				p: Params{Epsilon: eps, Geo: GeoParams{R: 0.5, Alpha: 10}}}
			fused, decoded := executeFusedAndDecoded(t, in, []int64{int64(m)}, haveLerpBF16Asm, haveLerpBF16Asm,
				func(*TensorPlan) Kernel { return ramKernel(r, true) })
			if !sameBF16Words(fused, decoded) {
				t.Errorf("eps %v every %d: the fused output differs from the decoded one", eps, every)
			}
		}
	}
}

// TestRAMCountBF16MatchesChunk: ramplus_tl's counts from BF16 words are
// ramCountChunk's on the decoded values, count for count, for 1 to 5 models over
// lengths that end inside and at a group of eight, with special words, at
// epsilons decided at once and in float64 (differences of exactly 0.0625 against
// an epsilon of 0.0625 take the assembly's exact compare).
func TestRAMCountBF16MatchesChunk(t *testing.T) {
	if !haveLerpBF16Asm {
		t.Skip("no assembly on this CPU or build")
	}
	rng := rand.New(rand.NewPCG(17, 50))
	for n := 1; n <= 5; n++ {
		for _, m := range bf16TestLengths {
			for _, eps := range []float64{1e-5, 0, 0.0625, math.NaN()} {
				bw, bf := bf16TestWords(rng, m, 7)
				for j := 0; j < m; j += 5 { // base 1 where a model may differ by exactly 0.0625
					bw[2*j], bw[2*j+1], bf[j] = 0x80, 0x3f, 1
				}
				in := []Operand{{DType: dtype.BF16, Data: bw}}
				var xf [][]float32
				for range n {
					x, f := bytes.Clone(bw), slices.Clone(bf)
					for j := range m {
						switch {
						case j%5 == 0 && rng.IntN(2) == 0: // 1.0625: |x − b| = 0.0625 (undecided at once)
							x[2*j], x[2*j+1], f[j] = 0x88, 0x3f, 1.0625
						case rng.IntN(2) == 0:
							w, v := bf16TestWords(rng, 1, 7)
							copy(x[2*j:], w)
							f[j] = v[0]
						}
					}
					in = append(in, Operand{DType: dtype.BF16, Data: x})
					xf = append(xf, f)
				}
				got, want := make([]float64, 2*n), make([]float64, 2*n)
				if !ramCountBF16(in, eps, newRAMScratch(n), got) {
					t.Fatal("ramCountBF16 declined aligned words")
				}
				ramCountChunk(bf, xf, eps, newRAMScratch(n), want)
				if !slices.Equal(got, want) {
					t.Fatalf("%d models, m %d, eps %v: counts %v, ramCountChunk %v", n, m, eps, got, want)
				}
			}
		}
	}
}
