package dtype

import (
	"encoding/binary"
	"math"
)

// The K-quant quantizers below follow ggml's reference quantize_row_q2_K_ref …
// quantize_row_q6_K_ref (ggml-quants.c), which llama.cpp's quantizer calls when it has
// no importance matrix. They search for each sub-block's scale (and minimum) by trying
// a few candidate scales and keeping the one with the smallest weighted error, then
// quantize the sub-block scales themselves to 4, 6 or 8 bits under one F16 super-scale.
//
// Bit-exactness with ggml rests on three habits kept throughout:
//   - every float32 operation happens in ggml's order, each rounded on its own: every
//     product that feeds a sum is wrapped in float32(…), which stops Go from fusing it
//     into a multiply-add (it may on arm64 and on amd64 v3);
//   - rounding to an integer is ggml's nearest_int, emulated through the same bits
//     (see nearestInt), so even out-of-range and NaN arguments give ggml's integers;
//   - integer narrowing (C's int → uint8_t/int8_t stores) wraps as in C.
//
// The functions work on one super-block of 256 elements each; the caller checked the
// lengths. They are plain loops, the reference; the group fits of Q4_K, Q5_K and Q6_K,
// where the time goes, have a faster twin on amd64 (kquant_amd64.go) that gives the
// same bits and is tested against these.

const qkK = 256

// groupMaxEps is ggml's GROUP_MAX_EPS: a group whose largest magnitude is below it is
// quantized as all zero.
const groupMaxEps = 1e-15

// nearestInt is ggml's nearest_int: adding 1.5·2²³ puts the integer part of f in the
// low mantissa bits, rounded to nearest with ties to even, for |f| < 2²². Outside that
// range (ggml only asserts it in debug builds) the same bit arithmetic gives the same
// garbage as ggml; NaN gives whatever its payload says (0 for the default quiet NaN).
// Callers pass an already rounded float32 (wrap products in float32(…)).
func nearestInt(f float32) int32 {
	v := f + 12582912
	return int32(math.Float32bits(v)&0x007fffff) - 0x00400000
}

// kF16 is ggml's GGML_FP32_TO_FP16 as the K-quant super-scales use it: round to
// nearest even like Float32ToF16, but a NaN becomes the canonical quiet NaN 0x7E00
// (with its sign), as ggml's conversion does, so a block built from a NaN input still
// matches ggml byte for byte.
func kF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16)&0x8000 | 0x7e00
	}
	return Float32ToF16(f)
}

// clampInt is C's MAX(lo, MIN(hi, v)).
func clampInt(v, lo, hi int32) int32 {
	if v > hi {
		v = hi
	}
	if v < lo {
		v = lo
	}
	return v
}

// makeQXQuants is ggml's make_qx_quants with rmse_type 1 (the only way the Q6_K
// quantizers call it): weights qw, or x² without an importance matrix (qw nil), a
// first scale from the element of largest magnitude, then 18 nearby scales tried,
// keeping the one whose least-squares fit is best. L gets the levels shifted to
// 0 … 2·nmax−1; the result is the scale.
func makeQXQuants(nmax int32, x []float32, L []int8, qw []float32) float32 {
	var max, amax float32
	for _, v := range x {
		if ax := abs32(v); ax > amax {
			amax, max = ax, v
		}
	}
	if amax < groupMaxEps {
		for i := range x {
			L[i] = 0
		}
		return 0
	}
	weight := func(i int, v float32) float32 {
		if qw != nil {
			return qw[i]
		}
		return float32(v * v)
	}
	iscale := float32(-nmax) / max
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampInt(nearestInt(float32(iscale*v)), -nmax, nmax-1)
		L[i] = int8(l + nmax)
		w := weight(i, v)
		fl := float32(l)
		sumlx += float32(float32(w*v) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := float32(scale * sumlx)
	for is := int32(-9); is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(float32(nmax) + float32(0.1*float32(is))) / max
		sumlx, suml2 = 0, 0
		for i, v := range x {
			l := clampInt(nearestInt(float32(iscale*v)), -nmax, nmax-1)
			w := weight(i, v)
			fl := float32(l)
			sumlx += float32(float32(w*v) * fl)
			suml2 += float32(float32(w*fl) * fl)
		}
		if suml2 > 0 && float32(sumlx*sumlx) > float32(best*suml2) {
			for i, v := range x {
				L[i] = int8(nmax + clampInt(nearestInt(float32(iscale*v)), -nmax, nmax-1))
			}
			scale = sumlx / suml2
			best = float32(scale * sumlx)
		}
	}
	return scale
}

// makeQ3Quants is ggml's make_q3_quants with do_rmse (as the Q3_K reference calls it):
// levels from the largest magnitude, then up to five passes that move single
// elements to the level that improves the x²-weighted least-squares fit. L gets the
// levels shifted to 0 … 2·nmax−1; the result is the scale.
func makeQ3Quants(nmax int32, x []float32, L []int8) float32 {
	var max, amax float32
	for _, v := range x {
		if ax := abs32(v); ax > amax {
			amax, max = ax, v
		}
	}
	if amax < groupMaxEps {
		for i := range x {
			L[i] = 0
		}
		return 0
	}
	iscale := float32(-nmax) / max
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampInt(nearestInt(float32(iscale*v)), -nmax, nmax-1)
		L[i] = int8(l)
		w := float32(v * v)
		fl := float32(l)
		sumlx += float32(float32(w*v) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	for range 5 {
		changed := 0
		for i, v := range x {
			w := float32(v * v)
			li := float32(L[i])
			slx := sumlx - float32(float32(w*v)*li)
			if slx > 0 {
				sl2 := suml2 - float32(float32(w*li)*li)
				nl := clampInt(nearestInt(float32(v*sl2)/slx), -nmax, nmax-1)
				if nl != int32(L[i]) {
					fn := float32(nl)
					slx += float32(float32(w*v) * fn)
					sl2 += float32(float32(w*fn) * fn)
					if sl2 > 0 && float32(float32(slx*slx)*suml2) > float32(float32(sumlx*sumlx)*sl2) {
						L[i] = int8(nl)
						sumlx, suml2 = slx, sl2
						changed++
					}
				}
			}
		}
		if changed == 0 {
			break
		}
	}
	for i := range x {
		L[i] += int8(nmax)
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}

// makeQKX2Quants is ggml's make_qkx2_quants: an affine fit x ≈ scale·l − m with
// l in 0 … nmax and m ≥ 0, starting from the range of the group (with 0 in it) and
// trying nstep+1 scales (nmax + rmin + rdelta·k)/(max − min), each followed by a
// weighted least-squares solve for scale and min; the candidate with the smallest
// weighted error (absolute with useMAD, squared otherwise) wins. It returns the scale
// and m (ggml's *the_min, the negated minimum).
func makeQKX2Quants(nmax int32, x, weights []float32, L, Laux []uint8, rmin, rdelta float32, nstep int32, useMAD bool) (scale, theMin float32) {
	n := len(x)
	min, max := x[0], x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		if x[i] < min {
			min = x[i]
		}
		if x[i] > max {
			max = x[i]
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * x[i])
	}
	if min > 0 {
		min = 0
	}
	if max == min {
		for i := range n {
			L[i] = 0
		}
		return 0, -min
	}
	iscale := float32(nmax) / (max - min)
	scale = 1 / iscale
	var bestError float32
	for i, v := range x {
		l := clampInt(nearestInt(float32(iscale*(v-min))), 0, nmax)
		L[i] = uint8(l)
		bestError += float32(weights[i] * qkx2Err(float32(scale*float32(L[i]))+min-v, useMAD))
	}
	if nstep < 1 {
		return scale, -min
	}
	for is := int32(0); is <= nstep; is++ {
		iscale = (rmin + float32(rdelta*float32(is)) + float32(nmax)) / (max - min)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := clampInt(nearestInt(float32(iscale*(v-min))), 0, nmax)
			Laux[i] = uint8(l)
			w := weights[i]
			fl := float32(l)
			wl := float32(w * fl)
			sumL += wl
			sumL2 += float32(wl * fl)
			sumXL += float32(wl * v)
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var curError float32
			for i, v := range x {
				curError += float32(weights[i] * qkx2Err(float32(thisScale*float32(Laux[i]))+thisMin-v, useMAD))
			}
			if curError < bestError {
				copy(L[:n], Laux[:n])
				bestError, scale, min = curError, thisScale, thisMin
			}
		}
	}
	return scale, -min
}

// qkx2Err is make_qkx2_quants' error of one element: |d| or d².
func qkx2Err(d float32, useMAD bool) float32 {
	if useMAD {
		return abs32(d)
	}
	return float32(d * d)
}

// pack2 stores 2-bit levels the Q2_K/Q3_K way: in each half of 128, byte l holds
// elements l, l+32, l+64 and l+96 at shifts 0, 2, 4 and 6.
func pack2(qs []byte, L []int8) {
	for j := 0; j < qkK; j += 128 {
		for l := range 32 {
			qs[j/4+l] = byte(L[j+l]) | byte(L[j+l+32])<<2 | byte(L[j+l+64])<<4 | byte(L[j+l+96])<<6
		}
	}
}

// quantizeQ2K is quantize_row_q2_K_ref for one block: 16 groups of 16 with a 4-bit
// scale and a 4-bit min each (|x|-weighted absolute error), under F16 d and dmin.
// Layout: scales[16], qs[64], d, dmin.
func quantizeQ2K(y []byte, x []float32) {
	var (
		L              [qkK]uint8
		Laux           [16]uint8
		weights        [16]float32
		mins, scales   [16]float32
		maxScale, maxM float32
	)
	for j := range 16 {
		g := x[16*j : 16*j+16]
		for l, v := range g {
			weights[l] = abs32(v)
		}
		scales[j], mins[j] = makeQKX2Quants(3, g, weights[:], L[16*j:16*j+16], Laux[:], -0.5, 0.1, 15, true)
		if scales[j] > maxScale {
			maxScale = scales[j]
		}
		if mins[j] > maxM {
			maxM = mins[j]
		}
	}
	sc := y[:16]
	le := binary.LittleEndian
	if maxScale > 0 {
		iscale := 15 / maxScale
		for j := range 16 {
			sc[j] = uint8(nearestInt(float32(iscale * scales[j])))
		}
		le.PutUint16(y[80:], kF16(maxScale/15))
	} else {
		clear(sc)
		le.PutUint16(y[80:], kF16(0))
	}
	if maxM > 0 {
		iscale := 15 / maxM
		for j := range 16 {
			sc[j] |= uint8(nearestInt(float32(iscale*mins[j])) << 4)
		}
		le.PutUint16(y[82:], kF16(maxM/15))
	} else {
		le.PutUint16(y[82:], kF16(0))
	}
	q2Finish(y, x, &L)
}

// q2Finish sets a Q2_K block's levels from its stored scales, mins, d and dmin
// (y[0:16], y[80:84]): l = round((x + dmin·m)/(d·sc)), clamped to 0 … 3, a group
// whose scale is zero keeping the levels in L; then packs them.
func q2Finish(y []byte, x []float32, L *[qkK]uint8) {
	le := binary.LittleEndian
	sc := y[:16]
	dAll := F16ToFloat32(le.Uint16(y[80:]))
	mAll := F16ToFloat32(le.Uint16(y[82:]))
	for j := range 16 {
		d := float32(dAll * float32(sc[j]&0x0f))
		if d == 0 {
			continue
		}
		dm := float32(mAll * float32(sc[j]>>4))
		for ii := range 16 {
			L[16*j+ii] = uint8(clampInt(nearestInt((x[16*j+ii]+dm)/d), 0, 3))
		}
	}
	qs := y[16:80]
	for j := 0; j < qkK; j += 128 {
		for l := range 32 {
			qs[j/4+l] = L[j+l] | L[j+l+32]<<2 | L[j+l+64]<<4 | L[j+l+96]<<6
		}
	}
}

// quantizeQ3K is quantize_row_q3_K_ref for one block: 16 groups of 16 with signed
// 3-bit levels and a 6-bit signed scale each, under F16 d. Layout: hmask[32], qs[64],
// scales[12], d.
func quantizeQ3K(y []byte, x []float32) {
	var (
		L      [qkK]int8
		scales [16]float32
	)
	var maxScale, amax float32
	for j := range 16 {
		scales[j] = makeQ3Quants(4, x[16*j:16*j+16], L[16*j:16*j+16])
		if s := abs32(scales[j]); s > amax {
			amax, maxScale = s, scales[j]
		}
	}
	sb := y[96:108]
	le := binary.LittleEndian
	clear(sb)
	if maxScale != 0 {
		iscale := -32 / maxScale
		for j := range 16 {
			l := int8(nearestInt(float32(iscale * scales[j])))
			putQ3Scale(sb, j, int8(clampInt(int32(l), -32, 31)+32))
		}
		le.PutUint16(y[108:], kF16(1/iscale))
	} else {
		le.PutUint16(y[108:], kF16(0))
	}
	q3Finish(y, x, &L)
}

// putQ3Scale stores Q3_K's 6-bit scale number j, l (0 … 63, the scale plus 32), into
// the scale bytes sb, which start cleared: the low four bits in nibble j%8 (low
// nibbles for j < 8), the high two at bits 2(j/4) of byte 8 + j%4 (q3KScale reads it).
func putQ3Scale(sb []byte, j int, l int8) {
	if j < 8 {
		sb[j] = byte(l) & 0x0f
	} else {
		sb[j-8] |= (byte(l) & 0x0f) << 4
	}
	l >>= 4
	sb[j%4+8] |= byte(l) << (2 * (j / 4))
}

// q3Finish sets a Q3_K block's levels from its stored scales and d (y[96:110]):
// l = round(x/(d·sc)), clamped to −4 … 3, a group whose scale is zero keeping the
// levels in L (shifted by 4); then packs them with their high bits in hmask.
func q3Finish(y []byte, x []float32, L *[qkK]int8) {
	hmask, qs, sb := y[:32], y[32:96], y[96:108]
	dAll := F16ToFloat32(binary.LittleEndian.Uint16(y[108:]))
	for j := range 16 {
		d := float32(dAll * float32(q3KScale(sb, j)))
		if d == 0 {
			continue
		}
		for ii := range 16 {
			L[16*j+ii] = int8(clampInt(nearestInt(x[16*j+ii]/d), -4, 3) + 4)
		}
	}
	// The high bit of element j goes to bit j/32 of hmask[j%32].
	clear(hmask)
	for j := range qkK {
		if L[j] > 3 {
			hmask[j%32] |= 1 << (j / 32)
			L[j] -= 4
		}
	}
	pack2(qs, L[:])
}

// kGroupFitsGo runs make_qkx2_quants (make_qkx3_quants, which is the same search for
// finite input, with an importance matrix) over the eight groups of 32 of a Q4_K or
// Q5_K block with the weights w.
func kGroupFitsGo(x []float32, w *[qkK]float32, L *[qkK]uint8, scales, mins *[8]float32, nmax int32, rmin, rdelta float32, nstep int32) {
	var Laux [32]uint8
	for j := range 8 {
		g := x[32*j : 32*j+32]
		scales[j], mins[j] = makeQKX2Quants(nmax, g, w[32*j:32*j+32], L[32*j:32*j+32], Laux[:], rmin, rdelta, nstep, false)
	}
}

// kWeights sets w to ggml's Q4_K/Q5_K weights for the group g of 32: rms(g) + |x|.
func kWeights(w, g []float32) {
	var sumX2 float32
	for _, v := range g {
		sumX2 += float32(v * v)
	}
	avX := float32(math.Sqrt(float64(sumX2 / 32)))
	for l, v := range g {
		w[l] = avX + abs32(v)
	}
}

// kFit is kGroupFitsGo if ref, else kGroupFits, its faster twin where there is one.
func kFit(x []float32, w *[qkK]float32, L *[qkK]uint8, scales, mins *[8]float32, nmax int32, rmin, rdelta float32, nstep int32, ref bool) {
	if ref {
		kGroupFitsGo(x, w, L, scales, mins, nmax, rmin, rdelta, nstep)
	} else {
		kGroupFits(x, w, L, scales, mins, nmax, rmin, rdelta, nstep)
	}
}

// kFitGroups fits the eight groups of a Q4_K or Q5_K block (with kGroupFitsGo if ref,
// else with kGroupFits, its faster twin where there is one) and packs the group
// scales and mins (kPackScales). L gets the levels of the fit.
func kFitGroups(y []byte, x []float32, L *[qkK]uint8, nmax int32, rmin float32, nstep int32, ref bool) {
	var (
		w            [qkK]float32
		mins, scales [8]float32
	)
	for j := range 8 {
		kWeights(w[32*j:32*j+32], x[32*j:32*j+32])
	}
	kFit(x, &w, L, &scales, &mins, nmax, rmin, 0.1, nstep, ref)
	kPackScales(y, &scales, &mins)
}

// kPackScales packs a Q4_K or Q5_K block's eight group scales and mins to six bits
// each under F16 d and dmin (y[0:4]) into the 12 scale bytes y[4:16], the
// get_scale_min_k4 way.
func kPackScales(y []byte, scales, mins *[8]float32) {
	var maxScale, maxM float32
	for j := range 8 {
		if scales[j] > maxScale {
			maxScale = scales[j]
		}
		if mins[j] > maxM {
			maxM = mins[j]
		}
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxM > 0 {
		invMin = 63 / maxM
	}
	s := y[4:16]
	for j := range 8 {
		ls := min(63, uint8(nearestInt(float32(invScale*scales[j]))))
		lm := min(63, uint8(nearestInt(float32(invMin*mins[j]))))
		if j < 4 {
			s[j], s[j+4] = ls, lm
		} else {
			s[j+4] = ls&0x0f | lm<<4
			s[j-4] |= ls >> 4 << 6
			s[j] |= lm >> 4 << 6
		}
	}
	binary.LittleEndian.PutUint16(y, kF16(maxScale/63))
	binary.LittleEndian.PutUint16(y[2:], kF16(maxM/63))
}

// kRequantize sets the final levels of a Q4_K/Q5_K block from its stored (rounded)
// scales: l = round((x + dmin·m)/(d·sc)), clamped to 0 … nmax; a group whose scale is
// zero keeps the levels of its fit, as in ggml.
func kRequantize(y []byte, x []float32, L *[qkK]uint8, nmax int32) {
	dAll := F16ToFloat32(binary.LittleEndian.Uint16(y))
	mAll := F16ToFloat32(binary.LittleEndian.Uint16(y[2:]))
	for j := range 8 {
		sc, m := kScaleMin(y[4:16], j)
		d := float32(dAll * float32(sc))
		if d == 0 {
			continue
		}
		dm := float32(mAll * float32(m))
		for ii := range 32 {
			L[32*j+ii] = uint8(clampInt(nearestInt((x[32*j+ii]+dm)/d), 0, nmax))
		}
	}
}

// quantizeQ4K is quantize_row_q4_K_ref for one block. Layout: d, dmin, scales[12],
// qs[128] (byte 32c+l holds element 64c+l low and 64c+32+l high).
func quantizeQ4K(y []byte, x []float32) { quantizeQ4KBy(y, x, false) }

// quantizeQ4KBy is quantizeQ4K with the reference group fits if ref.
func quantizeQ4KBy(y []byte, x []float32, ref bool) {
	var L [qkK]uint8
	kFitGroups(y, x, &L, 15, -1, 20, ref)
	kRequantize(y, x, &L, 15)
	packQ4K(y, &L)
}

// packQ4K stores Q4_K levels: byte 32c+l of qs holds element 64c+l low and 64c+32+l
// high.
func packQ4K(y []byte, L *[qkK]uint8) {
	q := y[16:144]
	for c := range 4 {
		for l := range 32 {
			q[32*c+l] = L[64*c+l] | L[64*c+32+l]<<4
		}
	}
}

// quantizeQ5K is quantize_row_q5_K_ref for one block. Layout: d, dmin, scales[12],
// qh[32], qs[128]; the fifth bit of element 64c+l is bit 2c of qh[l], of 64c+32+l
// bit 2c+1.
func quantizeQ5K(y []byte, x []float32) { quantizeQ5KBy(y, x, false) }

// quantizeQ5KBy is quantizeQ5K with the reference group fits if ref.
func quantizeQ5KBy(y []byte, x []float32, ref bool) {
	var L [qkK]uint8
	kFitGroups(y, x, &L, 31, -0.5, 15, ref)
	kRequantize(y, x, &L, 31)
	packQ5K(y, &L)
}

// packQ5K stores Q5_K levels: the low four bits as Q4_K's, the fifth bit of element
// 64c+l at bit 2c of qh[l], of 64c+32+l at bit 2c+1.
func packQ5K(y []byte, L *[qkK]uint8) {
	qh, ql := y[16:48], y[48:176]
	clear(qh)
	for c := range 4 {
		for j := range 32 {
			l1, l2 := L[64*c+j], L[64*c+32+j]
			if l1 > 15 {
				l1 -= 16
				qh[j] |= 1 << (2 * c)
			}
			if l2 > 15 {
				l2 -= 16
				qh[j] |= 2 << (2 * c)
			}
			ql[32*c+j] = l1 | l2<<4
		}
	}
}

// quantizeQ6K is quantize_row_q6_K_ref for one block: 16 groups of 16 with signed
// 6-bit levels (make_qx_quants) and an 8-bit signed scale each, under F16 d. A block
// whose scales are all below groupMaxEps is stored as zeros. Layout: ql[128], qh[64],
// scales[16], d.
func quantizeQ6K(y []byte, x []float32) { quantizeQ6KBy(y, x, nil, false) }

// q6FitsGo finds the scale of each of the 16 groups of 16 of a Q6_K block and their
// levels in L (make_qx_quants); q6GroupFits is its faster twin where there is one.
// With an importance matrix, qw holds the block's 256 weights.
func q6FitsGo(x, qw []float32, L *[qkK]int8, scales *[16]float32) {
	for ib := range 16 {
		var w []float32
		if qw != nil {
			w = qw[16*ib : 16*ib+16]
		}
		scales[ib] = makeQXQuants(32, x[16*ib:16*ib+16], L[16*ib:16*ib+16], w)
	}
}

// quantizeQ6KBy is quantizeQ6K with the importance weights qw (nil: none, the
// reference quantizer; else ggml's quantize_row_q6_K_impl) and the reference group
// fits if ref.
func quantizeQ6KBy(y []byte, x, qw []float32, ref bool) {
	var (
		L      [qkK]int8
		scales [16]float32
	)
	if ref {
		q6FitsGo(x, qw, &L, &scales)
	} else {
		q6GroupFits(x, qw, &L, &scales)
	}
	var maxScale, maxAbs float32
	for ib := range 16 {
		if a := abs32(scales[ib]); a > maxAbs {
			maxAbs, maxScale = a, scales[ib]
		}
	}
	le := binary.LittleEndian
	if maxAbs < groupMaxEps {
		clear(y[:210])
		le.PutUint16(y[208:], kF16(0))
		return
	}
	iscale := -128 / maxScale
	le.PutUint16(y[208:], kF16(1/iscale))
	sc := y[192:208]
	for ib := range 16 {
		sc[ib] = byte(int8(min(127, nearestInt(float32(iscale*scales[ib])))))
	}
	dAll := F16ToFloat32(le.Uint16(y[208:]))
	var d [16]float32
	for j := range 16 {
		d[j] = float32(dAll * float32(int8(sc[j])))
	}
	if ref || !q6Requantize(x, &d, &L) {
		for j := range 16 {
			if d[j] == 0 {
				continue
			}
			for ii := range 16 {
				L[16*j+ii] = int8(clampInt(nearestInt(x[16*j+ii]/d[j]), -32, 31) + 32)
			}
		}
	}
	ql, qh := y[:128], y[128:192]
	for h := range 2 {
		for l := range 32 {
			b := 128 * h
			q1, q2, q3, q4 := byte(L[b+l]), byte(L[b+l+32]), byte(L[b+l+64]), byte(L[b+l+96])
			ql[64*h+l] = q1&0x0f | q3<<4
			ql[64*h+32+l] = q2&0x0f | q4<<4
			qh[32*h+l] = q1>>4 | q2>>4<<2 | q3>>4<<4 | q4>>4<<6
		}
	}
}
