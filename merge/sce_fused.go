package merge

import (
	"encoding/binary"
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
		if outDT != dtype.BF16 {
			return false
		}
		for _, op := range in {
			if op.DType != dtype.BF16 || len(op.Data) != len(out) {
				return false
			}
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
