package gguf

import (
	"encoding/binary"
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
		return fmt.Errorf("gguf: tensor %q: %w %s: dequantizing is not implemented", t.Name, ErrUnsupported, t.Type)
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
// following ggml's reference dequantize_row_* functions. len(dst) must be a multiple
// of the block size and src must hold exactly len(dst)/BlockSize blocks.
func DequantizeBlocks(dst []float32, src []byte, typ Type) error {
	if !typ.CanDequantize() {
		return fmt.Errorf("gguf: %w %s: dequantizing is not implemented", ErrUnsupported, typ)
	}
	bs, ts := typ.BlockSize(), typ.TypeSize()
	n := int64(len(dst))
	if n%bs != 0 || int64(len(src)) != n/bs*ts {
		return fmt.Errorf("gguf: %d %s elements need %d bytes, got %d", n, typ, n/bs*ts, len(src))
	}
	le := binary.LittleEndian
	switch typ {
	case TypeF32:
		return dtype.Decode(dst, src, dtype.F32)
	case TypeF16:
		return dtype.Decode(dst, src, dtype.F16)
	case TypeBF16:
		return dtype.Decode(dst, src, dtype.BF16)
	case TypeQ8_0: // d, qs[32]: x = q·d
		for b := 0; len(src) > 0; b, src = b+32, src[34:] {
			d := dtype.F16ToFloat32(le.Uint16(src))
			y := dst[b : b+32]
			for j := range y {
				y[j] = float32(int8(src[2+j])) * d
			}
		}
	case TypeQ4_0: // d, qs[16]: x = (q−8)·d; nibble j holds elements j (low) and j+16
		for b := 0; len(src) > 0; b, src = b+32, src[18:] {
			d := dtype.F16ToFloat32(le.Uint16(src))
			qs := src[2:18]
			y := dst[b : b+32]
			for j, q := range qs {
				y[j] = float32(int(q&0x0f)-8) * d
				y[j+16] = float32(int(q>>4)-8) * d
			}
		}
	case TypeQ4_1: // d, m, qs[16]: x = q·d + m
		for b := 0; len(src) > 0; b, src = b+32, src[20:] {
			d := dtype.F16ToFloat32(le.Uint16(src))
			m := dtype.F16ToFloat32(le.Uint16(src[2:]))
			qs := src[4:20]
			y := dst[b : b+32]
			for j, q := range qs {
				// The explicit conversions round the product, as C does; Go may
				// otherwise fuse x·d + m.
				y[j] = float32(float32(q&0x0f)*d) + m
				y[j+16] = float32(float32(q>>4)*d) + m
			}
		}
	case TypeQ5_0: // d, qh (32 high bits), qs[16]: x = (q | h<<4 − 16)·d
		for b := 0; len(src) > 0; b, src = b+32, src[22:] {
			d := dtype.F16ToFloat32(le.Uint16(src))
			qh := le.Uint32(src[2:])
			qs := src[6:22]
			y := dst[b : b+32]
			for j, q := range qs {
				h0 := byte(qh>>j<<4) & 0x10
				h1 := byte(qh>>(j+12)) & 0x10
				y[j] = float32(int(q&0x0f|h0)-16) * d
				y[j+16] = float32(int(q>>4|h1)-16) * d
			}
		}
	case TypeQ5_1: // d, m, qh, qs[16]: x = (q | h<<4)·d + m
		for b := 0; len(src) > 0; b, src = b+32, src[24:] {
			d := dtype.F16ToFloat32(le.Uint16(src))
			m := dtype.F16ToFloat32(le.Uint16(src[2:]))
			qh := le.Uint32(src[4:])
			qs := src[8:24]
			y := dst[b : b+32]
			for j, q := range qs {
				h0 := byte(qh>>j<<4) & 0x10
				h1 := byte(qh>>(j+12)) & 0x10
				y[j] = float32(float32(q&0x0f|h0)*d) + m
				y[j+16] = float32(float32(q>>4|h1)*d) + m
			}
		}
	}
	return nil
}
