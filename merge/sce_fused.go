package merge

import (
	"encoding/binary"
	"math"
	"math/bits"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

// SCE's merge pass straight from BF16 bytes to BF16 bytes (Kernel.Fused): a position
// the mask drops is the base's value, whose BF16 bytes are the output's as they are
// (but for a NaN, which rounding to BF16 makes quiet); only the kept positions (a
// tenth of them at select_topk 0.1) are decoded, merged by sceMergeAt and rounded.
// The same bits as decoding every input, sceMergeChunk and encoding (tested).

// sceFused is the Fused function of sce's kernel for t: BF16 inputs and output, and
// a mask the weights pass kept (or none needed); pool gives sceScratch.
func sceFused(t *TensorPlan, sel *sceSelection, w []float32, pool *sync.Pool) func([]byte, dtype.DType, []Operand, []float64, Chunk) bool {
	return func(out []byte, outDT dtype.DType, in []Operand, _ []float64, pos Chunk) bool {
		if outDT != dtype.BF16 || !allBF16(in) || len(in[0].Data) != len(out) {
			return false
		}
		var mask []uint64
		if sel != nil {
			switch {
			case sel.none:
			case sel.kept[pos.Index] != nil:
				mask = sel.kept[pos.Index]
				sel.kept[pos.Index] = nil
			default:
				return false // computed again from the decoded inputs
			}
		}
		models := make([][]byte, len(in)-1)
		for i := range models {
			models[i] = in[i+1].Data
		}
		sc := pool.Get().(*sceScratch)
		defer pool.Put(sc)
		sceMergeBF16(out, in[0].Data, models, w, mask, sel != nil, sc.x)
		return true
	}
}

// sceMergeBF16 is sceMergeChunk on BF16 bytes (little-endian words): out from base
// and the models, with the mask (masked false: every position kept); x has a slot
// per model. With AVX-512, sixteen positions at a time, every one of them merged
// and the mask choosing (a tenth kept at select_topk 0.1 made the visits of the
// kept positions one by one the largest part of the merge).
func sceMergeBF16(out, base []byte, models [][]byte, w []float32, mask []uint64, masked bool, x []float32) {
	var j int
	if haveSCE512 && (!masked || mask != nil) { // masked, no mask: the base alone
		j = sceMergeBF16Asm(out, base, models, w, mask, masked)
	}
	sceMergeBF16Ref(out, base, models, w, mask, masked, x, j)
}

// sceMergeBF16Ref is sceMergeBF16 from position off on, one kept position at a
// time: the statement the assembly is tested against.
func sceMergeBF16Ref(out, base []byte, models [][]byte, w []float32, mask []uint64, masked bool, x []float32, off int) {
	le := binary.LittleEndian
	at := func(j int) {
		for i, m := range models {
			x[i] = dtype.BF16ToFloat32(le.Uint16(m[2*j:]))
		}
		le.PutUint16(out[2*j:], dtype.Float32ToBF16(sceMergeAt(dtype.BF16ToFloat32(le.Uint16(base[2*j:])), x, w)))
	}
	if !masked {
		for j := off; j < len(out)/2; j++ {
			at(j)
		}
		return
	}
	bf16Requiet(out[2*off:], base[2*off:])
	for wi := off / 64; wi < len(mask); wi++ {
		word := mask[wi]
		if wi == off/64 {
			word &^= 1<<(off%64) - 1 // the positions before off are done
		}
		for ; word != 0; word &= word - 1 {
			at(wi*64 + bits.TrailingZeros64(word))
		}
	}
}

// bf16Requiet copies BF16 words from src to dst as widening to float32 and rounding
// back would: the same words, but a NaN's quiet bit (0x0040) set. Four words at a
// time: a word is a NaN when its low 15 bits exceed 0x7f80, that is when adding
// 0x7f to them carries into bit 15, which (shifted down to bit 6) is the quiet bit;
// no lane carries into the next.
func bf16Requiet(dst, src []byte) {
	le := binary.LittleEndian
	j := 0
	for ; j+8 <= len(src); j += 8 {
		v := le.Uint64(src[j:])
		le.PutUint64(dst[j:], v|((v&0x7fff7fff7fff7fff+0x007f007f007f007f)&0x8000800080008000)>>9)
	}
	for ; j+2 <= len(src); j += 2 {
		h := le.Uint16(src[j:])
		le.PutUint16(dst[j:], h|((h&0x7fff+0x7f)&0x8000)>>9)
	}
}

// SCE's passes before the merge straight from BF16 bytes (Pass.Fused): the keys
// pass's variances widen the words themselves (sceVarianceZerosBF16) instead of
// reading float32s the engine decoded; the weights pass decodes only the positions
// its mask keeps (sceSquaresBF16: a tenth at select_topk 0.1), where the engine
// decoded every one. Both give the bits of the decoding path (tested).

// sceVarianceZerosBF16 is sceVarianceZeros on BF16 words (base and models, the
// words of len(dst) elements each): the same keys and count of zeros. The groups of
// sixteen with AVX-512; the rest (fewer than sixteen, the end of a tensor) decoded
// and given to sceVarianceZeros, which splits them as it would have (AVX2 groups of
// four, then element by element). Only where haveSCE512.
func sceVarianceZerosBF16(dst []uint32, base []byte, models [][]byte) (zeros int) {
	j, zeros := sceVarianceBF16Asm(dst, base, models)
	if j == len(dst) {
		return zeros
	}
	tail := make([][]float32, len(models)+1)
	for k, b := range append([][]byte{base}, models...) {
		tail[k] = make([]float32, len(dst)-j)
		decodeBF16Words(tail[k], b[2*j:])
	}
	return zeros + sceVarianceZeros(dst[j:], tail)
}

// decodeBF16Words widens len(dst) little-endian BF16 words of src.
func decodeBF16Words(dst []float32, src []byte) {
	for j := range dst {
		dst[j] = dtype.BF16ToFloat32(binary.LittleEndian.Uint16(src[2*j:]))
	}
}

// sceKeysFused is the keys pass's Pass.Fused: the chunk's keys from BF16 bytes,
// then what the pass's Chunk does with them (took). It declines other dtypes and
// CPUs without AVX-512 (decoding and the AVX2 variances are faster than widening
// word by word in Go).
func sceKeysFused(took func(pos Chunk, keys []uint32, zeros int)) func(Chunk, []Operand, []float64) bool {
	return func(pos Chunk, in []Operand, _ []float64) bool {
		if !haveSCE512 || !haveTiesAsm || len(in) < 2 {
			return false
		}
		models, base, ok := bf16Operands(in, true)
		if !ok {
			return false
		}
		keys := sceKeyPool.Get().(*[ChunkElems]uint32)[:len(base)/2]
		took(pos, keys, sceVarianceZerosBF16(keys, base, models))
		return true
	}
}

// sceWeightsFused is the weights pass's Pass.Fused: the chunk's mask (it declines
// where the mask must be computed again from the decoded inputs, before taking
// it), then each model's Σ δ² over the kept positions from their BF16 words.
func sceWeightsFused(sel *sceSelection, pool *sync.Pool) func(Chunk, []Operand, []float64) bool {
	return func(pos Chunk, in []Operand, acc []float64) bool {
		if len(in) < 2 || !sel.maskReady(pos) {
			return false
		}
		models, base, ok := bf16Operands(in, true)
		if !ok {
			return false
		}
		sc := pool.Get().(*sceScratch)
		defer pool.Put(sc)
		sceSquaresBF16(acc, base, models, sel.maskOf(sc, len(base)/2, pos, nil))
		return true
	}
}

// sceSquaresBF16 is sceSquares on BF16 words: each model's Σ δ_i² over the kept
// positions (mask nil: all), a float64 sum in element order from +0, added to
// acc[i]; only the kept positions' words are read and widened. Four models at a
// time, as sceSquares4.
func sceSquaresBF16(acc []float64, base []byte, models [][]byte, mask []uint64) {
	for i := 0; i < len(models); i += 4 {
		var x [4][]byte
		for k := range x {
			x[k] = base // a missing model: δ = 0, its sum not used
			if i+k < len(models) {
				x[k] = models[i+k]
			}
		}
		s := sceSquares4BF16(base, x, mask)
		for k := range min(4, len(models)-i) {
			acc[i+k] += s[k]
		}
	}
}

// maskWithin reports whether every set bit of mask names a position below n, so
// that the assembly, which reads the words the bits name unchecked, stays in n
// words (the Go loops' bounds checks refuse the others).
func maskWithin(mask []uint64, n int) bool {
	w := (n + 63) / 64
	if len(mask) > w {
		return false
	}
	r := n % 64
	return r == 0 || len(mask) < w || mask[w-1]>>r == 0
}

// sceSquares4BF16 is sceSquares4 on BF16 words: the same operations in the same
// order on the widened words; with a mask, the four models at once in assembly
// where the CPU has it (sceSquares4MaskedAsm).
func sceSquares4BF16(base []byte, x [4][]byte, mask []uint64) [4]float64 {
	var s0, s1, s2, s3 float64
	n := len(base) / 2
	x0, x1, x2, x3 := x[0][:2*n], x[1][:2*n], x[2][:2*n], x[3][:2*n]
	if haveSCESquaresAsm && len(mask) > 0 && maskWithin(mask, n) {
		return sceSquares4MaskedAsm(base[:2*n], [4][]byte{x0, x1, x2, x3}, mask)
	}
	at := func(p []byte, j int) float32 {
		return math.Float32frombits(uint32(binary.LittleEndian.Uint16(p[2*j:])) << 16)
	}
	add := func(j int) {
		b := at(base, j)
		d0, d1, d2, d3 := float64(at(x0, j)-b), float64(at(x1, j)-b), float64(at(x2, j)-b), float64(at(x3, j)-b)
		s0 += float64(d0 * d0)
		s1 += float64(d1 * d1)
		s2 += float64(d2 * d2)
		s3 += float64(d3 * d3)
	}
	if mask == nil {
		for j := range n {
			add(j)
		}
		return [4]float64{s0, s1, s2, s3}
	}
	for wi, word := range mask {
		for ; word != 0; word &= word - 1 {
			add(wi*64 + bits.TrailingZeros64(word))
		}
	}
	return [4]float64{s0, s1, s2, s3}
}
