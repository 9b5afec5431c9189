package gguf

import (
	"fmt"

	"github.com/gomerge/gomerge/formats/dtype"
)

// Dequantize converts the tensor's elements [start, start+len(dst)) to float32, in
// ggml's element order (ne[0] fastest, i.e. row-major). start and len(dst) must be
// multiples of the type's block size. Types that CanDequantize reports false for give
// an error wrapping ErrUnsupported. Concurrent calls are safe.
func (f *File) Dequantize(dst []float32, t *TensorInfo, start int64) error {
	bs, ts := t.Type.BlockSize(), t.Type.TypeSize()
	if !t.Type.CanDequantize() {
		return fmt.Errorf("gguf: tensor %q: %w %s: gomerge cannot dequantize this type", t.Name, ErrUnsupported, t.Type)
	}
	n := int64(len(dst))
	numel := t.NumElements()
	if start < 0 || start%bs != 0 || n%bs != 0 || start > numel || n > numel-start {
		return fmt.Errorf("gguf: tensor %q: elements [%d, +%d) are not whole %s blocks inside its %d elements", t.Name, start, n, t.Type, numel)
	}
	if n == 0 {
		return nil
	}
	begin := t.Begin + start/bs*ts
	length := n / bs * ts
	var src []byte
	if f.mapped != nil && begin >= 0 && length <= int64(len(f.mapped))-begin {
		src = f.mapped[begin : begin+length]
	} else {
		src = make([]byte, length) // bounded by len(dst)
		if err := readFull(f.r, src, begin); err != nil {
			return fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
	}
	return DequantizeBlocks(dst, src, t.Type)
}

// DequantizeBlocks converts whole blocks of type typ from src to float32 in dst,
// following ggml's reference dequantize_row_* functions (the kernels live in package
// dtype, which the merge engine shares). len(dst) must be a multiple of the block size
// and src must hold exactly len(dst)/BlockSize blocks.
func DequantizeBlocks(dst []float32, src []byte, typ Type) error {
	dt := typ.DType()
	if dt == dtype.Invalid {
		return fmt.Errorf("gguf: %w %s: gomerge cannot dequantize this type", ErrUnsupported, typ)
	}
	bs, ts := typ.BlockSize(), typ.TypeSize()
	n := int64(len(dst))
	if n%bs != 0 || int64(len(src)) != n/bs*ts {
		return fmt.Errorf("gguf: %d %s elements need %d bytes, got %d", n, typ, n/bs*ts, len(src))
	}
	return dtype.Decode(dst, src, dt)
}
