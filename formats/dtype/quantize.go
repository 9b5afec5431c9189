package dtype

import (
	"encoding/binary"
	"math"
)

// encodeBlocks quantizes whole blocks of src into dst with ggml's reference quantizers
// (quantize_row_*_ref, the ones llama.cpp's own tools use "for deterministic creation
// of model files"), bit for bit: Q8_0 rounds half away from zero; Q4_0, Q4_1, Q5_0 and
// Q5_1 truncate x·id + 8.5 (+16.5, +0.5) toward zero, with id = 1/d computed from the
// float32 d, not from its fp16 rounding. Every product and sum is rounded on its own
// (no fused multiply-add), as ggml's reference C is. The caller checked the lengths
// and that d is one of these types. Written by hand for the same reason as
// decodeBlocks.
func encodeBlocks(dst []byte, src []float32, d DType) {
	switch d {
	case Q8_0:
		encodeQ8_0(dst, src)
		return
	case Q2_K, Q3_K, Q4_K, Q5_K, Q6_K:
		encodeKBlocks(dst, src, d)
		return
	}
	le := binary.LittleEndian
	bs, bb := info[d].block, info[d].bytes
	for len(src) > 0 {
		x, y := src[:bs], dst[:bb]
		switch d {
		case Q8_0:
			encodeQ8_0Go(y, x)
		case Q4_0, Q5_0:
			mx := signedAbsMax(x)
			levels, half := float32(-8), float32(8.5)
			if d == Q5_0 {
				levels, half = -16, 16.5
			}
			dd := mx / levels
			id := inverse(dd)
			le.PutUint16(y, Float32ToF16(dd))
			top := int32(2*(-levels) - 1) // 15 or 31
			var qh uint32
			qs := y[len(y)-16:]
			for j := range 16 {
				q0 := min(top, truncToInt8(float32(x[j]*id)+half))
				q1 := min(top, truncToInt8(float32(x[j+16]*id)+half))
				qs[j] = byte(q0&0x0f) | byte(q1&0x0f)<<4
				qh |= uint32(q0>>4&1)<<j | uint32(q1>>4&1)<<(j+16)
			}
			if d == Q5_0 {
				le.PutUint32(y[2:], qh)
			}
		case Q4_1, Q5_1:
			lo, hi := float32(math.MaxFloat32), float32(-math.MaxFloat32)
			for _, v := range x {
				if v < lo {
					lo = v
				}
				if v > hi {
					hi = v
				}
			}
			steps := float32(15)
			if d == Q5_1 {
				steps = 31
			}
			dd := (hi - lo) / steps
			id := inverse(dd)
			le.PutUint16(y, Float32ToF16(dd))
			le.PutUint16(y[2:], Float32ToF16(lo))
			var qh uint32
			qs := y[len(y)-16:]
			for j := range 16 {
				q0 := truncToInt8(float32((x[j]-lo)*id) + 0.5)
				q1 := truncToInt8(float32((x[j+16]-lo)*id) + 0.5)
				if d == Q4_1 { // ggml clamps Q4_1 to 15; Q5_1 cannot exceed 31
					q0, q1 = min(15, q0), min(15, q1)
				}
				qs[j] = byte(q0&0x0f) | byte(q1&0x0f)<<4
				qh |= uint32(q0>>4&1)<<j | uint32(q1>>4&1)<<(j+16)
			}
			if d == Q5_1 {
				le.PutUint32(y[4:], qh)
			}
		}
		src, dst = src[bs:], dst[bb:]
	}
}

// encodeKBlocks quantizes whole K-quant super-blocks (see kquant.go).
func encodeKBlocks(dst []byte, src []float32, d DType) {
	var q func([]byte, []float32)
	switch d {
	case Q2_K:
		q = quantizeQ2K
	case Q3_K:
		q = quantizeQ3K
	case Q4_K:
		q = quantizeQ4K
	case Q5_K:
		q = quantizeQ5K
	default:
		q = quantizeQ6K
	}
	bb := info[d].bytes
	if d == Q4_K || d == Q5_K {
		nmax := int32(15)
		if d == Q5_K {
			nmax = 31
		}
		for len(src) >= 2*qkK && quantizeQ45KPair(dst[:2*bb], bb, src[:2*qkK], nmax) {
			src, dst = src[2*qkK:], dst[2*bb:]
		}
	}
	for len(src) > 0 {
		q(dst[:bb], src[:qkK])
		src, dst = src[qkK:], dst[bb:]
	}
}

// encodeQ8_0Go is the reference Q8_0 quantizer for whole blocks; faster paths are
// tested against it.
func encodeQ8_0Go(dst []byte, src []float32) {
	le := binary.LittleEndian
	for len(src) >= 32 && len(dst) >= 34 {
		xs, qs := (*[32]float32)(src[:32]), (*[32]byte)(dst[2:34])
		var amax float32
		for _, v := range xs {
			amax = cmax(amax, abs32(v))
		}
		d := amax / 127
		id := inverse(d)
		le.PutUint16(dst, Float32ToF16(d))
		for j, v := range xs {
			qs[j] = byte(int8(roundAway(v * id)))
		}
		src, dst = src[32:], dst[34:]
	}
}

// cmax is C's MAX(a, b): a > b ? a : b (so a NaN b wins, as in ggml).
func cmax(a, b float32) float32 {
	if a > b {
		return a
	}
	return b
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// inverse is ggml's `d ? 1.0f/d : 0.0f`.
func inverse(d float32) float32 {
	if d != 0 {
		return 1 / d
	}
	return 0
}

// signedAbsMax returns the value of largest magnitude, the first one on ties (ggml's
// `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`), 0 for an all-zero block.
func signedAbsMax(x []float32) float32 {
	var amax, mx float32
	for _, v := range x {
		if a := abs32(v); amax < a {
			amax, mx = a, v
		}
	}
	return mx
}

// roundAway is C's roundf (to nearest, halves away from zero) for the values Q8_0
// produces: adding ±0.5 in float64 is exact for any float32 below 2²⁴, and the
// conversion then truncates toward zero. It is several times faster than math.Round,
// which Go does not compile to one instruction. Values outside int8's range (C leaves
// them undefined; they come only from NaN or infinite inputs) are clamped, so nothing
// panics.
func roundAway(v float32) int32 {
	t := float64(v)
	if !(t > -128.5 && t < 127.5) {
		if t >= 127.5 {
			return 127
		}
		return -128
	}
	return int32(t + math.Copysign(0.5, t))
}

// truncToInt8 is C's (int8_t)v: toward zero. Values outside int8's range (undefined in
// C; they arise only from NaN or infinite inputs) are clamped so nothing panics.
func truncToInt8(v float32) int32 {
	if !(v > -129 && v < 128) {
		if v >= 128 {
			return 127
		}
		return 0
	}
	return int32(v)
}
