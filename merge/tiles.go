package merge

import (
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

// The fused paths of the methods whose arithmetic is a few operations an element
// (linear, task_arithmetic) take a chunk a tile at a time: each input's tile decoded
// into 4 KiB of float32, combined into a 4 KiB sum, encoded, all in L1. The engine's
// path decodes whole chunks, a quarter of a MiB per input, which with three or four
// inputs no longer fit in L2: decoding into them was 60 % of linear's samples.

// tileElems is how many elements a tile holds.
const tileElems = 1024

// tileBufs are the two tiles of a fused call, the output's values and an input's:
// pooled, as handing them to the tile function (a func value) would move them to
// the heap, 8 KiB for every chunk.
var tileBufs = sync.Pool{New: func() any { return new([2][tileElems]float32) }}

// elementwiseTiles writes out a tile at a time: tile fills s (the output's values, as
// float32) for elements [off, off+len(s)), with x a buffer of the same length for an
// input's values (decodeTile), and reports false to leave the chunk to the engine's
// path; then s is encoded. Only float dtypes stored an element at a time (F16, BF16,
// F32, F64), in and out, are taken; block-quantized ones decode whole blocks.
func elementwiseTiles(out []byte, outDT dtype.DType, in []Operand, tile func(s, x []float32, off int64) bool) bool {
	if !elementwise(outDT) || !elementwiseOperands(in) {
		return false
	}
	n := int64(len(out)) / int64(outDT.Size())
	bufs := tileBufs.Get().(*[2][tileElems]float32)
	defer tileBufs.Put(bufs)
	s, x := &bufs[0], &bufs[1]
	for off := int64(0); off < n; off += tileElems {
		k := min(tileElems, n-off)
		if !tile(s[:k], x[:k], off) {
			return false
		}
		if err := dtype.Encode(out[outDT.Bytes(off):outDT.Bytes(off+k)], s[:k], outDT); err != nil {
			return false
		}
	}
	return true
}

// elementwise says whether dt is a float type stored an element at a time, which a
// tile can start anywhere in.
func elementwise(dt dtype.DType) bool { return dt.IsFloat() && !dt.IsBlock() }

// elementwiseOperands says whether every operand's dtype is elementwise.
func elementwiseOperands(in []Operand) bool {
	for _, op := range in {
		if !elementwise(op.DType) {
			return false
		}
	}
	return true
}

// decodeTile decodes op's elements [off, off+len(dst)) into dst; false on an error,
// which the engine's path then reports, naming the file.
func decodeTile(dst []float32, op Operand, off int64) bool {
	return dtype.Decode(dst, op.Data[op.DType.Bytes(off):], op.DType) == nil
}
