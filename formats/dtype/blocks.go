package dtype

import "encoding/binary"

// decodeBlocks dequantizes whole blocks of a block type, following ggml's reference
// dequantize_row_* functions; the caller checked the lengths. Written by hand: no Go
// module implements ggml's block formats, and these must match ggml bit for bit (the
// GGUF package's tests compare them with literal transcriptions of ggml's loops).
func decodeBlocks(dst []float32, src []byte, dt DType) {
	le := binary.LittleEndian
	switch dt {
	case Q8_0: // d, qs[32]: x = q·d
		decodeQ8_0(dst, src)
	case Q4_0: // d, qs[16]: x = (q−8)·d; nibble j holds elements j (low) and j+16
		for b := 0; len(src) > 0; b, src = b+32, src[18:] {
			d := F16ToFloat32(le.Uint16(src))
			qs := src[2:18]
			y := dst[b : b+32]
			for j, q := range qs {
				y[j] = float32(int(q&0x0f)-8) * d
				y[j+16] = float32(int(q>>4)-8) * d
			}
		}
	case Q4_1: // d, m, qs[16]: x = q·d + m
		for b := 0; len(src) > 0; b, src = b+32, src[20:] {
			d := F16ToFloat32(le.Uint16(src))
			m := F16ToFloat32(le.Uint16(src[2:]))
			qs := src[4:20]
			y := dst[b : b+32]
			for j, q := range qs {
				// The explicit conversions round the product, as C does; Go may
				// otherwise fuse x·d + m.
				y[j] = float32(float32(q&0x0f)*d) + m
				y[j+16] = float32(float32(q>>4)*d) + m
			}
		}
	case Q5_0: // d, qh (32 high bits), qs[16]: x = (q | h<<4 − 16)·d
		for b := 0; len(src) > 0; b, src = b+32, src[22:] {
			d := F16ToFloat32(le.Uint16(src))
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
	case Q5_1: // d, m, qh, qs[16]: x = (q | h<<4)·d + m
		for b := 0; len(src) > 0; b, src = b+32, src[24:] {
			d := F16ToFloat32(le.Uint16(src))
			m := F16ToFloat32(le.Uint16(src[2:]))
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
	case Q2_K:
		for b := 0; len(src) > 0; b, src = b+256, src[84:] {
			dequantQ2K(dst[b:b+256], src[:84])
		}
	case Q3_K:
		for b := 0; len(src) > 0; b, src = b+256, src[110:] {
			dequantQ3K(dst[b:b+256], src[:110])
		}
	case Q4_K:
		for b := 0; len(src) > 0; b, src = b+256, src[144:] {
			dequantQ4K(dst[b:b+256], src[:144])
		}
	case Q5_K:
		for b := 0; len(src) > 0; b, src = b+256, src[176:] {
			dequantQ5K(dst[b:b+256], src[:176])
		}
	case Q6_K:
		for b := 0; len(src) > 0; b, src = b+256, src[210:] {
			dequantQ6K(dst[b:b+256], src[:210])
		}
	}
}

// The K-quants below follow ggml's dequantize_row_q2_K … dequantize_row_q6_K. Each
// works on one super-block of 256 elements. In the 2- and 3-bit types an element e
// has half h = e/128, pair p = e%128/32 and lane l = e%32: its bits are at shift 2p
// of qs[32h+l], and its scale is number 8h + 2p + l/16 (one per 16 elements).

// dequantQ2K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin:
// x = d·sc·q − dmin·m.
func dequantQ2K(y []float32, blk []byte) {
	scales, qs := blk[:16], blk[16:80]
	d := F16ToFloat32(binary.LittleEndian.Uint16(blk[80:]))
	dmin := F16ToFloat32(binary.LittleEndian.Uint16(blk[82:]))
	for e := range y[:256] {
		h, p, l := e/128, e%128/32, e%32
		sc := scales[8*h+2*p+l/16]
		dl := d * float32(sc&0x0f)
		ml := float32(dmin * float32(sc>>4)) // rounded: arm64 would fuse it into the subtraction
		q := qs[32*h+l] >> (2 * p) & 3
		y[e] = float32(dl*float32(q)) - ml
	}
}

// q3KScale returns Q3_K's 6-bit scale number j (0..15) from its 12 packed bytes:
// the low four bits are nibble j%8 (low nibbles of bytes 0..7 for j < 8, high
// nibbles for j ≥ 8), the high two bits are bits 2(j/4) of byte 8 + j%4. This is
// what ggml's kmask1/kmask2 word shuffle produces.
func q3KScale(s []byte, j int) int {
	var lo byte
	if j < 8 {
		lo = s[j] & 0x0f
	} else {
		lo = s[j-8] >> 4
	}
	hi := s[8+j%4] >> (2 * (j / 4)) & 3
	return int(lo|hi<<4) - 32
}

// dequantQ3K: hmask[32], qs[64], scales[12], d: x = d·(sc−32)·(q − (high bit clear ? 4 : 0)),
// where the high bit of element e is bit 4h+p of hmask[l].
func dequantQ3K(y []float32, blk []byte) {
	hmask, qs, scales := blk[:32], blk[32:96], blk[96:108]
	d := F16ToFloat32(binary.LittleEndian.Uint16(blk[108:]))
	var dl [16]float32
	for j := range dl {
		dl[j] = d * float32(q3KScale(scales, j))
	}
	for e := range y[:256] {
		h, p, l := e/128, e%128/32, e%32
		q := int(qs[32*h+l] >> (2 * p) & 3)
		if hmask[l]>>(4*h+p)&1 == 0 {
			q -= 4
		}
		y[e] = dl[8*h+2*p+l/16] * float32(q)
	}
}

// kScaleMin unpacks scale and min number j (0..7) of Q4_K/Q5_K's 12 scale bytes, as
// ggml's get_scale_min_k4: for j < 4, the low six bits of bytes j and j+4; otherwise
// a nibble of byte j+4 with the top two bits of byte j−4 (scale) or j (min).
func kScaleMin(s []byte, j int) (sc, m byte) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	return s[j+4]&0x0f | s[j-4]>>6<<4, s[j+4]>>4 | s[j]>>6<<4
}

// dequantQ4K: d, dmin, scales[12], qs[128]. Element 64c+l (l < 32) is the low nibble
// of qs[32c+l] with scale/min 2c; element 64c+32+l its high nibble with 2c+1.
// x = d·sc·q − dmin·m.
func dequantQ4K(y []float32, blk []byte) {
	d := F16ToFloat32(binary.LittleEndian.Uint16(blk))
	dmin := F16ToFloat32(binary.LittleEndian.Uint16(blk[2:]))
	scales, qs := blk[4:16], blk[16:144]
	for c := range 4 {
		sc1, m1 := kScaleMin(scales, 2*c)
		sc2, m2 := kScaleMin(scales, 2*c+1)
		d1, mn1 := d*float32(sc1), float32(dmin*float32(m1)) // rounded: no FMA on arm64
		d2, mn2 := d*float32(sc2), float32(dmin*float32(m2))
		q := qs[32*c : 32*c+32]
		out := y[64*c : 64*c+64]
		for l, b := range q {
			out[l] = float32(d1*float32(b&0x0f)) - mn1
			out[32+l] = float32(d2*float32(b>>4)) - mn2
		}
	}
}

// dequantQ5K: d, dmin, scales[12], qh[32], qs[128]; as Q4_K, plus 16 where bit 2c
// (low nibble) or 2c+1 (high nibble) of qh[l] is set.
func dequantQ5K(y []float32, blk []byte) {
	d := F16ToFloat32(binary.LittleEndian.Uint16(blk))
	dmin := F16ToFloat32(binary.LittleEndian.Uint16(blk[2:]))
	scales, qh, qs := blk[4:16], blk[16:48], blk[48:176]
	for c := range 4 {
		sc1, m1 := kScaleMin(scales, 2*c)
		sc2, m2 := kScaleMin(scales, 2*c+1)
		d1, mn1 := d*float32(sc1), float32(dmin*float32(m1)) // rounded: no FMA on arm64
		d2, mn2 := d*float32(sc2), float32(dmin*float32(m2))
		q := qs[32*c : 32*c+32]
		out := y[64*c : 64*c+64]
		for l, b := range q {
			lo := b&0x0f | qh[l]>>(2*c)&1<<4
			hi := b>>4 | qh[l]>>(2*c+1)&1<<4
			out[l] = float32(d1*float32(lo)) - mn1
			out[32+l] = float32(d2*float32(hi)) - mn2
		}
	}
}

// dequantQ6K: ql[128], qh[64], scales[16] (int8), d. In half h (128 elements), lane
// l < 32 gives four elements 128h + 32k + l (k = 0..3): the low nibble (k < 2) or
// high nibble (k ≥ 2) of ql[64h + l + 32(k%2)], with bits 2k..2k+1 of qh[32h+l] on
// top, minus 32, times d·scales[8h + l/16 + 2k].
func dequantQ6K(y []float32, blk []byte) {
	ql, qh, scales := blk[:128], blk[128:192], blk[192:208]
	d := F16ToFloat32(binary.LittleEndian.Uint16(blk[208:]))
	var ds [16]float32 // d·scale, rounded as ggml's d * sc[is] is before the level
	for i, sc := range scales {
		ds[i] = d * float32(int8(sc))
	}
	y = y[:256]
	for h := range 2 {
		lo, hi, hb := (*[32]byte)(ql[64*h:]), (*[32]byte)(ql[64*h+32:]), (*[32]byte)(qh[32*h:])
		for k := range 4 {
			out := (*[32]float32)(y[128*h+32*k:])
			src, shift := lo, uint(0)
			if k%2 == 1 {
				src = hi
			}
			if k >= 2 {
				shift = 4
			}
			s0, s1 := ds[8*h+2*k], ds[8*h+2*k+1]
			for l := range 32 {
				v := int(src[l]>>shift&0x0f|hb[l]>>(2*k)&3<<4) - 32
				if l < 16 {
					out[l] = s0 * float32(v)
				} else {
					out[l] = s1 * float32(v)
				}
			}
		}
	}
}

// decodeQ8_0Go is the reference Q8_0 dequantizer; faster paths are tested against it.
func decodeQ8_0Go(dst []float32, src []byte) {
	le := binary.LittleEndian
	// Array pointers let the compiler drop the bounds checks of the inner loop.
	for len(src) >= 34 && len(dst) >= 32 {
		d := F16ToFloat32(le.Uint16(src))
		qs, y := (*[32]byte)(src[2:34]), (*[32]float32)(dst[:32])
		for j := range y {
			y[j] = float32(int8(qs[j])) * d
		}
		src, dst = src[34:], dst[32:]
	}
}
