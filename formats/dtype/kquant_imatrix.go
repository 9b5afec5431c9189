package dtype

import (
	"fmt"
	"math"
)

// Quantizing with an importance matrix (llama.cpp's --imatrix) follows ggml's
// quantize_row_q2_K_impl … _q6_K_impl, which llama.cpp's quantizer
// calls when it has one: each column of a weight matrix has an importance (the mean
// square of the activations it multiplies, measured on calibration text), and the
// scale searches minimize the error weighted by it. For Q4_K and Q5_K that is a
// different search from the reference's: weights qw·sqrt(2·mean(x²) + x²), 37
// candidate scales instead of 21, and the eight group scales and mins quantized by
// make_qp_quants (a weighted fit of their own) instead of by their maximum. Q6_K
// keeps its search with qw in place of x²; Q3_K weights its search as Q4_K does and
// fits its group scales with a weighted search too; Q2_K is Q4_K's scheme on groups
// of 16. docs/kquants.md has the measured gain.

// ImportanceTypes reports whether EncodeImportance uses the importance of d (the
// K-quants); for other types it quantizes as Encode does (ggml's Q8_0 has no weighted
// form; its Q4_0 … Q5_1 have one that gomerge does not implement).
func ImportanceTypes(d DType) bool {
	switch d {
	case Q2_K, Q3_K, Q4_K, Q5_K, Q6_K:
		return true
	}
	return false
}

// EncodeImportance quantizes src to d as Encode does, but with the importance qw of
// each column: qw holds one weight per element of a row (its length is the row
// length, a multiple of 256), and src[0] is column col of its row; rows follow one
// another. Types ImportanceTypes rejects are quantized without it.
func EncodeImportance(dst []byte, src []float32, d DType, qw []float32, col int) error {
	if !ImportanceTypes(d) {
		return Encode(dst, src, d)
	}
	n := len(src)
	if int64(len(dst)) < d.Bytes(int64(n)) || n%qkK != 0 {
		return fmt.Errorf("dtype: encode %d elements as %s into %d bytes", n, d, len(dst))
	}
	if len(qw) == 0 || len(qw)%qkK != 0 || col < 0 || col%qkK != 0 || col >= len(qw) {
		return fmt.Errorf("dtype: importance of %d columns does not fit rows of %s blocks from column %d", len(qw), d, col)
	}
	bb := int(d.Bytes(qkK))
	next := func(c int) int {
		if c += qkK; c == len(qw) {
			return 0
		}
		return c
	}
	for b := 0; b < n/qkK; b++ {
		y, x, w := dst[b*bb:(b+1)*bb], src[b*qkK:(b+1)*qkK], qw[col:col+qkK]
		if (d == Q4_K || d == Q5_K) && b+1 < n/qkK {
			// Two blocks at once where the CPU can (quantizeKImplPair).
			nmax, c2 := int32(15), next(col)
			if d == Q5_K {
				nmax = 31
			}
			if quantizeKImplPair(dst[b*bb:(b+2)*bb], bb, src[b*qkK:(b+2)*qkK], w, qw[c2:c2+qkK], nmax) {
				b++
				col = next(c2)
				continue
			}
		}
		switch d {
		case Q2_K:
			quantizeQ2KImpl(y, x, w)
		case Q3_K:
			quantizeQ3KImpl(y, x, w)
		case Q4_K:
			quantizeKImpl(y, x, w, 15, false)
		case Q5_K:
			quantizeKImpl(y, x, w, 31, false)
		case Q6_K:
			quantizeQ6KBy(y, x, w, false)
		}
		col = next(col)
	}
	return nil
}

// quantizeKImpl is quantize_row_q4_K_impl (nmax 15) or _q5_K_impl (nmax 31) for one
// block with importance qw, with the reference group fits if ref.
func quantizeKImpl(y []byte, x, qw []float32, nmax int32, ref bool) {
	var (
		L              [qkK]uint8
		w              [qkK]float32
		sw, mins, scls [8]float32
	)
	importanceWeights(w[:], sw[:], x, qw)
	kFit(x, &w, &L, &scls, &mins, nmax, -0.9, 0.05, 36, ref)
	kImplFinish(y, x, &L, &scls, &mins, &sw, nmax)
}

// kImplFinish is the end of quantize_row_q4_K_impl/_q5_K_impl for one block, after
// the group fits (levels L, scales scls, mins, group importances sw): the group
// scales and mins quantized by make_qp_quants, the final levels, the packing.
func kImplFinish(y []byte, x []float32, L *[qkK]uint8, scls, mins, sw *[8]float32, nmax int32) {
	var Ls, Lm [8]uint8
	dBlock := makeQPQuants(63, scls[:], Ls[:], sw[:])
	mBlock := makeQPQuants(63, mins[:], Lm[:], sw[:])
	s := y[4:16]
	for j := range 8 {
		ls, lm := min(63, Ls[j]), min(63, Lm[j])
		if j < 4 {
			s[j], s[j+4] = ls, lm
		} else {
			s[j+4] = ls&0x0f | lm<<4
			s[j-4] |= ls >> 4 << 6
			s[j] |= lm >> 4 << 6
		}
	}
	putF16(y, kF16(dBlock))
	putF16(y[2:], kF16(mBlock))
	kRequantize(y, x, L, nmax)
	if nmax == 15 {
		packQ4K(y, L)
	} else {
		packQ5K(y, L)
	}
}

func putF16(b []byte, h uint16) { b[0], b[1] = byte(h), byte(h>>8) }

// makeQPQuants is ggml's make_qp_quants: it quantizes the non-negative values x
// (a block's group scales or mins) to levels 0 … nmax under one scale, weighted by
// qw: the best of nine scales near nmax/max by weighted squared error, then up to
// five passes that move single levels where that improves the least-squares fit.
// It returns the scale.
func makeQPQuants(nmax int32, x []float32, L []uint8, qw []float32) float32 {
	var max float32
	for _, v := range x {
		max = cmax(max, v)
	}
	if max == 0 {
		clear(L[:len(x)])
		return 0
	}
	iscale := float32(nmax) / max
	for i, v := range x {
		L[i] = uint8(nearestInt(float32(iscale * v)))
	}
	scale := 1 / iscale
	var bestMSE float32
	for i, v := range x {
		diff := v - float32(scale*float32(L[i]))
		bestMSE += float32(float32(qw[i]*diff) * diff)
	}
	for is := int32(-4); is <= 4; is++ {
		if is == 0 {
			continue
		}
		iscaleIs := (float32(0.1*float32(is)) + float32(nmax)) / max
		scaleIs := 1 / iscaleIs
		var mse float32
		for i, v := range x {
			l := min(nmax, nearestInt(float32(iscaleIs*v)))
			diff := v - float32(scaleIs*float32(l))
			mse += float32(float32(qw[i]*diff) * diff)
		}
		if mse < bestMSE {
			bestMSE, iscale = mse, iscaleIs
		}
	}
	var sumlx, suml2 float32
	for i, v := range x {
		l := min(nmax, nearestInt(float32(iscale*v)))
		L[i] = uint8(l)
		fl := float32(l)
		sumlx += float32(float32(qw[i]*v) * fl)
		suml2 += float32(float32(qw[i]*fl) * fl)
	}
	for range 5 {
		changed := 0
		for i, v := range x {
			w, li := qw[i], float32(L[i])
			slx := sumlx - float32(float32(w*v)*li)
			sl2 := suml2 - float32(float32(w*li)*li)
			if slx > 0 && sl2 > 0 {
				nl := min(nmax, nearestInt(float32(v*sl2)/slx))
				if nl != int32(L[i]) {
					fn := float32(nl)
					slx += float32(float32(w*v) * fn)
					sl2 += float32(float32(w*fn) * fn)
					if float32(float32(slx*slx)*suml2) > float32(float32(sumlx*sumlx)*sl2) {
						L[i] = uint8(nl)
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
	return sumlx / suml2
}

// quantizeQ2KImpl is quantize_row_q2_K_impl for one block with importance qw: groups
// of 16 fitted with weights qw·sqrt(mean(x²) + x²) by make_qkx3_quants' search (37
// candidates), their scales and mins fitted to 4 bits by make_qp_quants.
func quantizeQ2KImpl(y []byte, x, qw []float32) {
	var (
		L              [qkK]uint8
		Laux           [16]uint8
		w              [16]float32
		sw, mins, scls [16]float32
		Ls, Lm         [16]uint8
	)
	var sumX2 float32
	for _, v := range x[:qkK] {
		sumX2 += float32(v * v)
	}
	sigma2 := float32(sumX2 / qkK) // rounded: arm64 would fuse the product by 1/256 into the sum below
	for j := range 16 {
		for l := range 16 {
			v := x[16*j+l]
			w[l] = float32(qw[16*j+l] * float32(math.Sqrt(float64(sigma2+float32(v*v)))))
			sw[j] += w[l]
		}
		scls[j], mins[j] = makeQKX2Quants(3, x[16*j:16*j+16], w[:], L[16*j:16*j+16], Laux[:], -0.9, 0.05, 36, false)
	}
	dm := makeQPQuants(15, scls[:], Ls[:], sw[:])
	mm := makeQPQuants(15, mins[:], Lm[:], sw[:])
	putF16(y[80:], kF16(dm))
	putF16(y[82:], kF16(mm))
	for j := range 16 {
		y[j] = Ls[j] | Lm[j]<<4
	}
	q2Finish(y, x, &L)
}

// quantizeQ3KImpl is quantize_row_q3_K_impl for one block with importance qw: each
// group of 16 fitted by make_qx_quants with weights qw·sqrt(2·mean(x²) + x²), the
// group scales then fitted to 6 bits by make_qx_quants weighted by the groups' total
// weights.
func quantizeQ3KImpl(y []byte, x, qw []float32) {
	var (
		L          [qkK]int8
		w          [qkK]float32
		sw, scales [16]float32
		Ls         [16]int8
	)
	importanceWeights(w[:], sw[:], x, qw)
	for j := range 16 {
		scales[j] = makeQXQuants(4, x[16*j:16*j+16], L[16*j:16*j+16], w[16*j:16*j+16])
	}
	sb := y[96:108]
	clear(sb)
	d := makeQXQuants(32, scales[:], Ls[:], sw[:])
	for j := range 16 {
		putQ3Scale(sb, j, Ls[j])
	}
	putF16(y[108:], kF16(d))
	q3Finish(y, x, &L)
}

// importanceWeights sets the weights of a super-block's values for the Q3_K, Q4_K and
// Q5_K searches, as ggml does: w = qw·√(σ² + x²) with σ² = 2·Σx²/256, every product
// rounded to float32, and sw[j] the sum of group j's weights (len(w)/len(sw) values per
// group: 32 for Q4_K and Q5_K, 16 for Q3_K).
func importanceWeights(w, sw, x, qw []float32) {
	var sumX2 float32
	for _, v := range x[:qkK] {
		sumX2 += float32(v * v)
	}
	sigma2 := float32(2 * sumX2 / qkK) // rounded, as above
	group := len(w) / len(sw)
	for j := range sw {
		var sum float32
		for l := range group {
			i := group*j + l
			v := x[i]
			w[i] = float32(qw[i] * float32(math.Sqrt(float64(sigma2+float32(v*v)))))
			sum += w[i]
		}
		sw[j] = sum
	}
}
