package dtype

import (
	"encoding/binary"
	"fmt"
	"math"
)

// BF16ToFloat32 widens a bfloat16 bit pattern; it is exact.
func BF16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// Float32ToBF16 rounds f to bfloat16, to nearest with ties to even. A NaN stays a quiet
// NaN with the same sign and the top seven bits of its payload.
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN
		return uint16(b>>16) | 0x0040
	}
	// Adding 0x7fff rounds up past the halfway point; the extra 1 for an odd result bit
	// turns exact halves into ties-to-even. Overflow carries into the exponent, which is
	// the correctly rounded result (up to infinity).
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F16ToFloat32 widens an IEEE half-precision bit pattern; it is exact, subnormals and
// NaN payloads included.
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch exp {
	case 0x1f: // Inf or NaN: keep the payload.
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case 0: // zero or subnormal: man · 2⁻²⁴, exact in float32.
		v := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}

// Float32ToF16 rounds f to IEEE half precision, to nearest with ties to even, with
// gradual underflow to subnormals and overflow to infinity. A NaN stays a quiet NaN.
func Float32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7c00 | 0x0200 | uint16(man>>13)
	}
	e := exp - 127 + 15 // biased half exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half: the result counts units of 2⁻²⁴. The float32 value is
		// m·2^(e−38) with m the 24-bit significand, so shift m right by 14−e.
		if e < -10 { // below 2⁻²⁵: rounds to zero
			return sign
		}
		m := man | 0x800000
		shift := uint32(14 - e)
		r := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++ // may carry into the smallest normal, 0x0400, which is right
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, up to 0x7c00 (Inf), which is right
	}
	return sign | uint16(r)
}

// Decode converts len(dst) elements of type d from src to float32. src must hold at
// least d.Bytes(len(dst)) bytes; for a block type len(dst) must be a multiple of its
// block size. F64 is rounded to nearest even.
func Decode(dst []float32, src []byte, d DType) error {
	n := len(dst)
	if !d.IsFloat() || int64(len(src)) < d.Bytes(int64(n)) || n%d.BlockSize() != 0 {
		return fmt.Errorf("dtype: decode %d elements of %s from %d bytes", n, d, len(src))
	}
	if d.IsBlock() {
		decodeBlocks(dst, src[:d.Bytes(int64(n))], d)
		return nil
	}
	if decodeFast(dst, src, d) {
		return nil
	}
	switch d {
	case BF16:
		src = src[:2*n]
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
		}
	case F16:
		src = src[:2*n]
		for i := range dst {
			dst[i] = F16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case F32:
		src = src[:4*n]
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F64:
		src = src[:8*n]
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
		}
	}
	return nil
}

// Encode converts src to type d into dst, which must hold d.Bytes(len(src)) bytes,
// rounding to nearest even; block types are quantized as ggml's reference quantizers
// do (see encodeBlocks), whole blocks only. Types that CanEncode reports false for
// give an error wrapping ErrUnsupported.
func Encode(dst []byte, src []float32, d DType) error {
	n := len(src)
	if !d.CanEncode() {
		return fmt.Errorf("dtype: %w %s: gomerge cannot quantize to it", ErrUnsupported, d)
	}
	if int64(len(dst)) < d.Bytes(int64(n)) || n%d.BlockSize() != 0 {
		return fmt.Errorf("dtype: encode %d elements as %s into %d bytes", n, d, len(dst))
	}
	if d.IsBlock() {
		encodeBlocks(dst[:d.Bytes(int64(n))], src, d)
		return nil
	}
	if encodeFast(dst, src, d) {
		return nil
	}
	switch d {
	case BF16:
		dst = dst[:2*n]
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], Float32ToBF16(v))
		}
	case F16:
		dst = dst[:2*n]
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], Float32ToF16(v))
		}
	case F32:
		dst = dst[:4*n]
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F64:
		dst = dst[:8*n]
		for i, v := range src {
			binary.LittleEndian.PutUint64(dst[8*i:], math.Float64bits(float64(v)))
		}
	}
	return nil
}
