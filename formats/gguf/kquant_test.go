package gguf

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// Hand-built K-quant super-blocks. Element e of the 2- and 3-bit types is
// e = 128h + 32p + l (h < 2, p < 4, l < 32), with scale number k = 8h + 2p + l/16;
// the expected values in TestDequantizeBlocks are worked out from these comments.

// blockQ2K: d = 1, dmin = 0.5; scales[k] = k | (15−k)<<4 (scale k, min 15−k);
// qs = 0xE4 (q = p) except qs[52] (h = 1, l = 20) = 0x1B (q = 3−p).
// x = k·q − 0.5·(15−k): e.g. e = 127 → k = 7, q = 3: 21 − 4 = 17;
// e = 148 → k = 9, q = 3: 27 − 3 = 24; e = 244 → k = 15, q = 0: 0.
func blockQ2K() []byte {
	b := make([]byte, 0, 84)
	for k := range 16 {
		b = append(b, byte(k)|byte(15-k)<<4)
	}
	qs := bytes.Repeat([]byte{0xE4}, 64)
	qs[52] = 0x1B
	b = append(b, qs...)
	return append(append(b, f16(0x3C00)...), f16(0x3800)...)
}

// blockQ3K: d = 0.5. hmask all set (no −4) except hmask[3] = 0 (l = 3 always −4)
// and hmask[20] = 0x20 (l = 20 only bit 4h+p = 5, i.e. e = 180, keeps its high bit).
// qs as blockQ2K. The 6-bit scales are 32 + k (low nibble k, top bits 2 = 0xAA in
// bytes 8..11), except scale 13 whose top bits (byte 9, bits 6..7) are 3 → 61, and
// scale 6 whose top bits (byte 10, bits 2..3) are 0 → 6. So sc−32 = k, except
// sc6 = −26 and sc13 = 29. x = 0.5·(sc−32)·(q − 4·[high bit clear]):
// e = 99 → k = 6, q = 3−4: 0.5·−26·−1 = 13; e = 212 → k = 13, q = 1−4: −43.5.
func blockQ3K() []byte {
	hmask := bytes.Repeat([]byte{0xFF}, 32)
	hmask[3], hmask[20] = 0, 0x20
	qs := bytes.Repeat([]byte{0xE4}, 64)
	qs[52] = 0x1B
	scales := make([]byte, 12)
	for j := range 8 {
		scales[j] = byte(j) | byte(j+8)<<4
	}
	scales[8], scales[9], scales[10], scales[11] = 0xAA, 0xEA, 0xA2, 0xAA
	b := append(append(hmask, qs...), scales...)
	return append(b, f16(0x3800)...)
}

// kScales packs scales (1, 2, 3, 4, 5, 6, 7, 40) and mins (0, 1, 2, 3, 4, 5, 33, 7)
// the get_scale_min_k4 way: 33 = 2<<4 | 1 puts 1 in byte 10's high nibble and 2 in
// byte 6's top bits; 40 = 2<<4 | 8 puts 8 in byte 11's low nibble, 2 in byte 3's top bits.
func kScales() []byte {
	return []byte{1, 2, 3, 4 | 2<<6, 0, 1, 2 | 2<<6, 3, 0x45, 0x56, 0x17, 0x78}
}

// kQs is 0x5A everywhere (low nibble 10, high 5) except qs[100] (c = 3, l = 4) = 0xF0.
func kQs() []byte {
	qs := bytes.Repeat([]byte{0x5A}, 128)
	qs[100] = 0xF0
	return qs
}

// blockQ4K: d = 1, dmin = 2, kScales, kQs. Element 64c+l = sc[2c]·lo − 2·m[2c],
// 64c+32+l = sc[2c+1]·hi − 2·m[2c+1]: e = 192 → 7·10 − 66 = 4; e = 224 → 40·5 − 14
// = 186; e = 196 → 7·0 − 66; e = 228 → 40·15 − 14 = 586.
func blockQ4K() []byte {
	b := append(append(f16(0x3C00), f16(0x4000)...), kScales()...)
	return append(b, kQs()...)
}

// blockQ5K: as blockQ4K with qh[4] = 0x81 (bit 0: e = 4 gets +16; bit 7: e = 228)
// and qh[31] = 0x04 (bit 2: c = 1 low nibble, e = 95). e = 4 → 26; e = 95 →
// 3·26 − 4 = 74; e = 228 → 40·31 − 14 = 1226.
func blockQ5K() []byte {
	qh := make([]byte, 32)
	qh[4], qh[31] = 0x81, 0x04
	b := append(append(f16(0x3C00), f16(0x4000)...), kScales()...)
	return append(append(b, qh...), kQs()...)
}

// blockQ6K: d = 0.25; scales[i] = i+1 except scales[10] = −3; ql = 0x21 (low 1,
// high 2) and qh = 0, so q − 32 = −31 (k = 0, 1) or −30 (k = 2, 3); except for
// h = 1, l = 6: ql[70] = 0xF0 and qh[38] = 0xE4 give q = 0, 17, 47, 50 for
// e = 134, 166, 198, 230. x = 0.25·scales[8h + l/16 + 2k]·(q−32):
// e = 166 → 0.25·−3·−15 = 11.25; e = 230 → 0.25·15·18 = 67.5.
func blockQ6K() []byte {
	ql := bytes.Repeat([]byte{0x21}, 128)
	ql[70] = 0xF0
	qh := make([]byte, 64)
	qh[38] = 0xE4
	scales := make([]byte, 16)
	for i := range scales {
		scales[i] = byte(i + 1)
	}
	scales[10] = 0xFD
	b := append(append(ql, qh...), scales...)
	return append(b, f16(0x3400)...)
}

// The functions below transcribe ggml's dequantize_row_q*_K loops literally (output
// pointer stepping, kmask word shuffle), for comparison on random blocks.

func f16at(b []byte) float32 {
	return float16to32(binary.LittleEndian.Uint16(b))
}

func float16to32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := int(h >> 10 & 0x1f)
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0:
		v := float32(mant) / 1024 / 16384 // subnormal: mant·2^−24
		if sign != 0 {
			return -v
		}
		return v
	case exp == 31:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | uint32(exp-15+127)<<23 | mant<<13)
}

func refQ2K(x []byte, y []float32) {
	d, min := f16at(x[80:]), f16at(x[82:])
	q := x[16:80]
	is, yi := 0, 0
	for n := 0; n < 256; n += 128 {
		shift := 0
		for j := 0; j < 4; j++ {
			sc := x[is]
			is++
			dl, ml := d*float32(sc&0xF), float32(min*float32(sc>>4))
			for l := 0; l < 16; l++ {
				y[yi] = float32(dl*float32(int8(q[l]>>shift&3))) - ml
				yi++
			}
			sc = x[is]
			is++
			dl, ml = d*float32(sc&0xF), float32(min*float32(sc>>4))
			for l := 0; l < 16; l++ {
				y[yi] = float32(dl*float32(int8(q[l+16]>>shift&3))) - ml
				yi++
			}
			shift += 2
		}
		q = q[32:]
	}
}

func refQ3K(x []byte, y []float32) {
	const kmask1, kmask2 = 0x03030303, 0x0f0f0f0f
	hm, q := x[:32], x[32:96]
	dAll := f16at(x[108:])
	var aux [4]uint32
	for i := range 3 {
		aux[i] = binary.LittleEndian.Uint32(x[96+4*i:])
	}
	tmp := aux[2]
	aux[2] = aux[0]>>4&kmask2 | (tmp>>4&kmask1)<<4
	aux[3] = aux[1]>>4&kmask2 | (tmp>>6&kmask1)<<4
	aux[0] = aux[0]&kmask2 | (tmp>>0&kmask1)<<4
	aux[1] = aux[1]&kmask2 | (tmp>>2&kmask1)<<4
	var scales [16]int8
	for i := range 16 {
		scales[i] = int8(aux[i/4] >> (8 * (i % 4)))
	}
	m := byte(1)
	is, yi := 0, 0
	for n := 0; n < 256; n += 128 {
		shift := 0
		for j := 0; j < 4; j++ {
			for half := 0; half < 2; half++ {
				dl := dAll * float32(int(scales[is])-32)
				is++
				for l := 16 * half; l < 16*half+16; l++ {
					v := int(int8(q[l] >> shift & 3))
					if hm[l]&m == 0 {
						v -= 4
					}
					y[yi] = dl * float32(v)
					yi++
				}
			}
			shift += 2
			m <<= 1
		}
		q = q[32:]
	}
}

func refScaleMin(j int, q []byte) (byte, byte) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return (q[j+4] & 0xF) | ((q[j-4] >> 6) << 4), (q[j+4] >> 4) | ((q[j-0] >> 6) << 4)
}

func refQ45K(x []byte, y []float32, five bool) {
	d, min := f16at(x), f16at(x[2:])
	scales := x[4:16]
	var qh, ql []byte
	if five {
		qh, ql = x[16:48], x[48:176]
	} else {
		ql = x[16:144]
	}
	is, yi := 0, 0
	u1, u2 := byte(1), byte(2)
	for j := 0; j < 256; j += 64 {
		sc, m := refScaleMin(is+0, scales)
		d1, m1 := d*float32(sc), float32(min*float32(m))
		sc, m = refScaleMin(is+1, scales)
		d2, m2 := d*float32(sc), float32(min*float32(m))
		for l := 0; l < 32; l++ {
			v := int(ql[l] & 0xF)
			if five && qh[l]&u1 != 0 {
				v += 16
			}
			y[yi] = float32(d1*float32(v)) - m1
			yi++
		}
		for l := 0; l < 32; l++ {
			v := int(ql[l] >> 4)
			if five && qh[l]&u2 != 0 {
				v += 16
			}
			y[yi] = float32(d2*float32(v)) - m2
			yi++
		}
		ql = ql[32:]
		is += 2
		u1 <<= 2
		u2 <<= 2
	}
}

func refQ6K(x []byte, y []float32) {
	ql, qh, sc := x[:128], x[128:192], x[192:208]
	d := f16at(x[208:])
	for n := 0; n < 256; n += 128 {
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int8((ql[l+0]&0xF)|((qh[l]>>0&3)<<4)) - 32
			q2 := int8((ql[l+32]&0xF)|((qh[l]>>2&3)<<4)) - 32
			q3 := int8((ql[l+0]>>4)|((qh[l]>>4&3)<<4)) - 32
			q4 := int8((ql[l+32]>>4)|((qh[l]>>6&3)<<4)) - 32
			y[l+0] = d * float32(int8(sc[is+0])) * float32(q1)
			y[l+32] = d * float32(int8(sc[is+2])) * float32(q2)
			y[l+64] = d * float32(int8(sc[is+4])) * float32(q3)
			y[l+96] = d * float32(int8(sc[is+6])) * float32(q4)
		}
		y = y[128:]
		ql, qh, sc = ql[64:], qh[32:], sc[8:]
	}
}

// TestKQuantsMatchReference compares DequantizeBlocks with the literal transcriptions
// on random super-blocks whose f16 scales are finite.
func TestKQuantsMatchReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randF16 := func(b []byte) { // finite, sign and exponent random
		binary.LittleEndian.PutUint16(b, uint16(rng.IntN(0x7C00))|uint16(rng.IntN(2))<<15)
	}
	refs := map[Type]struct {
		f16s []int // byte offsets of f16 fields
		ref  func(x []byte, y []float32)
	}{
		TypeQ2_K: {[]int{80, 82}, refQ2K},
		TypeQ3_K: {[]int{108}, refQ3K},
		TypeQ4_K: {[]int{0, 2}, func(x []byte, y []float32) { refQ45K(x, y, false) }},
		TypeQ5_K: {[]int{0, 2}, func(x []byte, y []float32) { refQ45K(x, y, true) }},
		TypeQ6_K: {[]int{208}, refQ6K},
	}
	for typ, r := range refs {
		const blocks = 64
		ts := int(typ.TypeSize())
		src := make([]byte, blocks*ts)
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		for b := range blocks {
			for _, off := range r.f16s {
				randF16(src[b*ts+off:])
			}
		}
		got := make([]float32, blocks*256)
		if err := DequantizeBlocks(got, src, typ); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		want := make([]float32, 256)
		for b := range blocks {
			r.ref(src[b*ts:(b+1)*ts], want)
			for e, w := range want {
				if g := got[b*256+e]; math.Float32bits(g) != math.Float32bits(w) {
					t.Fatalf("%s block %d element %d = %v, want %v", typ, b, e, g, w)
				}
			}
		}
	}
}
