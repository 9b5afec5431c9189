package dtype

import (
	"math"
	"unsafe"
)

// The fast paths below read and write byte slices as []uint16 or []float32 in place.
// They apply only on little-endian hosts and to suitably aligned slices (Go's checkptr,
// on under -race, rejects misaligned conversions; safetensors data can be misaligned
// after an odd-sized tensor), and fall back to the byte-wise loops otherwise. They are
// checked against those loops in the tests.

func aligned(b []byte, n uintptr) bool {
	return nativeLittleEndian && len(b) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%n == 0
}

func asUint16(b []byte, n int) []uint16 {
	return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), n)
}

func asFloat32(b []byte, n int) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), n)
}

// decodeFast decodes BF16, F16 and F32 in place where it can; it reports whether it did.
func decodeFast(dst []float32, src []byte, d DType) bool {
	n := len(dst)
	switch {
	case d == BF16 && aligned(src, 2):
		widenBF16(dst, asUint16(src, n))
		return true
	case d == F16 && aligned(src, 2):
		s := asUint16(src, n)
		for i, h := range s {
			dst[i] = F16ToFloat32(h)
		}
		return true
	case d == F32 && aligned(src, 4):
		copy(dst, asFloat32(src, n))
		return true
	}
	return false
}

// encodeFast encodes BF16, F16 and F32 in place where it can; it reports whether it did.
func encodeFast(dst []byte, src []float32, d DType) bool {
	n := len(src)
	switch {
	case d == BF16 && aligned(dst, 2):
		narrowBF16(asUint16(dst, n), src)
		return true
	case d == F16 && aligned(dst, 2):
		s := asUint16(dst, n)
		for i, v := range src {
			s[i] = Float32ToF16(v)
		}
		return true
	case d == F32 && aligned(dst, 4):
		copy(asFloat32(dst, n), src)
		return true
	}
	return false
}

// Uint16s views b as little-endian 16-bit words in place (BF16 and F16 data), when
// the host's byte order and b's alignment allow; ok is false otherwise and the caller
// must read b byte-wise.
func Uint16s(b []byte) (words []uint16, ok bool) {
	if len(b) == 0 {
		return nil, true
	}
	if !aligned(b, 2) {
		return nil, false
	}
	return asUint16(b, len(b)/2), true
}

// widenBF16Go is the reference widening of BF16 words to float32 (exact).
func widenBF16Go(dst []float32, src []uint16) {
	src = src[:len(dst)]
	for i, h := range src {
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
}

// narrowBF16Go is the reference rounding of float32 to BF16 words.
func narrowBF16Go(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = Float32ToBF16(v)
	}
}
