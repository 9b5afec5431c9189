//go:build !purego

package dtype

import (
	"encoding/binary"
	"math"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// The K-quant group fits try 16 to 22 candidate scales per group, each a pass over
// the group with running float32 sums; that search is nearly all of the time of
// quantizing Q4_K, Q5_K and Q6_K. The sums must be taken in ggml's order, element
// after element, so the vectorized fits below do not split a group across lanes:
// each lane runs one whole group, through exactly the scalar reference's operations,
// each rounded on its own. With AVX-512 there are sixteen lanes: the sixteen groups
// of two Q4_K/Q5_K blocks (quantizeQ45KPair) or of one Q6_K block (q6Fits512), with
// the whole search in assembly. With AVX2 there are eight: the groups of a Q4_K/Q5_K
// block (kGroupFits, the candidate loop in assembly) or of half a Q6_K block
// (q6FitsAVX2, the bookkeeping between passes in Go, written as in the reference).
// A block holding a NaN or an infinity goes to the reference, whose behaviour on
// those is ggml's by emulation and not worth a second copy.

var haveKAsm = cpu.X86.HasAVX2

// haveK512 selects the AVX-512 fits, which run sixteen groups (two Q4_K/Q5_K
// blocks, or a whole Q6_K block) per instruction instead of eight.
var haveK512 = cpu.X86.HasAVX512F

// kqLevelsAVX2 makes one candidate pass over rows rows of 8 lanes (row i, lane j at
// [8i+j]): fl = clamp(nearest_int(iscale·xm), 0, nmax) into laux, and the sums
// Σw·fl, Σ(w·fl)·fl, Σ(w·fl)·x into sums[0:8], [8:16], [16:24].
//
//go:noescape
func kqLevelsAVX2(xm, x, w, laux, iscale, sums *float32, nmax, rows int)

// kqErrAVX2 sums w·(scale·fl + min − x)² over rows rows of 8 lanes into err (the
// initial error; kqSearchAVX2 has its own copy of this loop).
//
//go:noescape
func kqErrAVX2(x, w, laux, scale, min, err *float32, rows int)

// kqxAVX2 makes one make_qx_quants pass: fl = clamp(nearest_int(iscale·x), lo, hi)
// into laux, Σ(x²·x)·fl into sums[0:8] and Σ(x²·fl)·fl into sums[8:16].
//
//go:noescape
func kqxAVX2(x, w, wx, laux, iscale, sums *float32, lo, hi, rows int)

// finite reports whether x holds neither NaN nor an infinity.
func finite(x []float32) bool {
	for _, v := range x {
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 {
			return false
		}
	}
	return true
}

// kqState is what kqSearchAVX2 works on: eight lanes (lane j = group j), rows of 8.
// Its layout is fixed by the S_* offsets in kquant_amd64.s.
type kqState struct {
	xt, wt, xm, laux, lbest      [qkK]float32 // x, weights, x − mn, levels tried, best levels
	hi, sumW, sumX, sc, mn, best [8]float32   // max, Σw, Σw·x; best scale, min (≤ 0), error
	live                         [8]uint32    // all ones where the lane searches
}

// kqSearchAVX2 runs make_qkx2_quants' candidate loop (see kquant_amd64.s).
//
//go:noescape
func kqSearchAVX2(s *kqState, nums *float32, steps, nmax int)

// kGroupFits is kGroupFitsGo with the eight groups run side by side in AVX2 lanes.
// Each lane follows makeQKX2Quants (useMAD false): Go sets up the groups'
// sums and the first candidate, assembly runs the nstep+1 others.
func kGroupFits(x []float32, w *[qkK]float32, L *[qkK]uint8, scales, mins *[8]float32, nmax int32, rmin, rdelta float32, nstep int32) {
	if !haveKAsm || !finite(x[:qkK]) || !finite(w[:]) || nstep >= 64 {
		kGroupFitsGo(x, w, L, scales, mins, nmax, rmin, rdelta, nstep)
		return
	}
	var (
		s      kqState
		iscale [8]float32
		sums   [24]float32
		nums   [64]float32
	)
	for j := range 8 {
		g := x[32*j : 32*j+32]
		weights := w[32*j : 32*j+32]
		mn, mx := g[0], g[0]
		sw := weights[0]
		sx := float32(sw * g[0])
		for i := 1; i < 32; i++ {
			mn = min32(mn, g[i])
			mx = cmax(g[i], mx)
			sw += weights[i]
			sx += float32(weights[i] * g[i])
		}
		if mn > 0 {
			mn = 0
		}
		s.hi[j], s.sumW[j], s.sumX[j], s.mn[j] = mx, sw, sx, mn
		for i, v := range g {
			s.xt[8*i+j], s.xm[8*i+j], s.wt[8*i+j] = v, v-mn, weights[i]
		}
		if mx == mn { // a constant group: all levels 0, its lane idle
			continue
		}
		s.live[j] = ^uint32(0)
		iscale[j] = float32(nmax) / (mx - mn)
		s.sc[j] = 1 / iscale[j]
	}
	kqLevelsAVX2(&s.xm[0], &s.xt[0], &s.wt[0], &s.lbest[0], &iscale[0], &sums[0], int(nmax), 32)
	kqErrAVX2(&s.xt[0], &s.wt[0], &s.lbest[0], &s.sc[0], &s.mn[0], &s.best[0], 32)
	if nstep >= 1 {
		for is := range nstep + 1 {
			nums[is] = rmin + float32(rdelta*float32(is)) + float32(nmax)
		}
		kqSearchAVX2(&s, &nums[0], int(nstep+1), int(nmax))
	}
	for j := range 8 {
		if s.live[j] == 0 {
			for i := range 32 {
				L[32*j+i] = 0
			}
			scales[j], mins[j] = 0, -s.mn[j]
			continue
		}
		for i := range 32 {
			L[32*j+i] = uint8(s.lbest[8*i+j])
		}
		scales[j], mins[j] = s.sc[j], -s.mn[j]
	}
}

// kqState16 is what kqFit512 works on: sixteen lanes (lane j = group j of two
// consecutive blocks), rows of 16. Its layout is fixed by the T_* offsets in
// kquant_amd64.s.
type kqState16 struct {
	xt, wt, xm, laux, lbest      [2 * qkK]float32 // x, weights, x − mn, levels tried, best levels
	hi, sumW, sumX, sc, mn, best [16]float32      // max, Σw, Σw·x; best scale, min (≤ 0), error
	live                         uint16           // bit j set where lane j searches
}

// kqFit512 runs make_qkx2_quants on the sixteen groups of two blocks with the
// weights w, or kWeights' where w is nil; false where the input or a weight is not
// finite (see kquant_amd64.s).
//
//go:noescape
func kqFit512(s *kqState16, x, w, nums *float32, steps, nmax int) bool

// kqRequant512 sets K-quants' final levels from the rounded group scales (see
// kquant_amd64.s).
//
//go:noescape
func kqRequant512(x, d, dm *float32, L *uint8, groups, per, lo, hi, off int)

// kPairFits is kGroupFitsGo on two consecutive blocks at once (x[0:512]), with the
// weights w (nil: kWeights'), the sixteen groups in AVX-512 lanes: scales and mins
// 0–7 are the first block's, 8–15 the second's. The levels stay in s (kPairLevels
// reads them). It reports false where AVX-512 is missing or the input or a weight is
// not finite.
func kPairFits(s *kqState16, x []float32, w *[2 * qkK]float32, scales, mins *[16]float32, nmax int32, rmin, rdelta float32, nstep int32) bool {
	if !haveK512 || nstep < 1 || nstep >= 64 {
		return false
	}
	var nums [64]float32
	for is := range nstep + 1 {
		nums[is] = rmin + float32(rdelta*float32(is)) + float32(nmax)
	}
	var wp *float32
	if w != nil {
		wp = &w[0]
	}
	if !kqFit512(s, &x[:2*qkK][0], wp, &nums[0], int(nstep+1), int(nmax)) {
		return false
	}
	for j := range 16 {
		scales[j], mins[j] = 0, -s.mn[j]
		if s.live&(1<<j) != 0 {
			scales[j] = s.sc[j]
		}
	}
	return true
}

// kPairLevels copies the fit's levels of group j (of sixteen) from s to g: those
// of the best candidate, or zeros for a constant group.
func kPairLevels(s *kqState16, j int, g []uint8) {
	for i := range 32 {
		g[i] = 0
		if s.live&(1<<j) != 0 {
			g[i] = uint8(s.lbest[16*i+j])
		}
	}
}

// kPairRequantize is kRequantize on two blocks (y[0:16] and y[bb:bb+16] hold their
// packed scales), the groups with a non-zero scale in AVX-512 lanes, the others
// keeping the fit's levels from s.
func kPairRequantize(s *kqState16, y []byte, bb int, x []float32, L *[2 * qkK]uint8, nmax int32) {
	var d, dm [16]float32
	for h := range 2 {
		yh := y[h*bb:]
		dAll := F16ToFloat32(binary.LittleEndian.Uint16(yh))
		mAll := F16ToFloat32(binary.LittleEndian.Uint16(yh[2:]))
		for j := range 8 {
			sc, m := kScaleMin(yh[4:16], j)
			g := 8*h + j
			d[g], dm[g] = float32(dAll*float32(sc)), float32(mAll*float32(m))
			if d[g] == 0 {
				kPairLevels(s, g, L[32*g:32*g+32])
			}
		}
	}
	kqRequant512(&x[0], &d[0], &dm[0], &L[0], 16, 2, 0, int(nmax), 0)
}

// quantizeQ45KPair quantizes two consecutive Q4_K (nmax 15) or Q5_K (nmax 31) blocks,
// x[0:256] into y[0:bb] and x[256:512] into y[bb:2bb], with kPairFits, which fits
// the sixteen groups of both at once, and kPairRequantize. It reports false, writing
// nothing, where there is no such fit (other CPUs, non-finite input); the caller then
// quantizes the blocks one by one. The bytes are quantizeQ4K's or quantizeQ5K's.
func quantizeQ45KPair(y []byte, bb int, x []float32, nmax int32) bool {
	var (
		s            kqState16
		L            [2 * qkK]uint8
		mins, scales [16]float32
	)
	rmin, nstep := float32(-1), int32(20)
	if nmax == 31 {
		rmin, nstep = -0.5, 15
	}
	if !kPairFits(&s, x, nil, &scales, &mins, nmax, rmin, 0.1, nstep) {
		return false
	}
	kPackScales(y[:bb], (*[8]float32)(scales[:8]), (*[8]float32)(mins[:8]))
	kPackScales(y[bb:2*bb], (*[8]float32)(scales[8:]), (*[8]float32)(mins[8:]))
	kPairRequantize(&s, y, bb, x, &L, nmax)
	for h := range 2 {
		yh, Lh := y[h*bb:(h+1)*bb], (*[qkK]uint8)(L[h*qkK:])
		if nmax == 15 {
			packQ4K(yh, Lh)
		} else {
			packQ5K(yh, Lh)
		}
	}
	return true
}

// quantizeKImplPair is quantizeKImpl (no reference fits) on two consecutive blocks,
// x[0:256] with the importances qw0 into y[0:bb] and x[256:512] with qw1 into
// y[bb:2bb], the sixteen group fits in AVX-512 lanes (kPairFits). It reports false,
// writing nothing, where there is no such fit (other CPUs, non-finite input or
// weights); the caller then quantizes the blocks one by one.
func quantizeKImplPair(y []byte, bb int, x, qw0, qw1 []float32, nmax int32) bool {
	var (
		s              kqState16
		w              [2 * qkK]float32
		L              [2 * qkK]uint8
		sw, mins, scls [16]float32
	)
	importanceWeights(w[:qkK], sw[:8], x[:qkK], qw0)
	importanceWeights(w[qkK:], sw[8:], x[qkK:2*qkK], qw1)
	if !kPairFits(&s, x, &w, &scls, &mins, nmax, -0.9, 0.05, 36) {
		return false
	}
	for j := range 16 {
		kPairLevels(&s, j, L[32*j:32*j+32])
	}
	for h := range 2 {
		kImplFinish(y[h*bb:(h+1)*bb], x[h*qkK:(h+1)*qkK], (*[qkK]uint8)(L[h*qkK:]),
			(*[8]float32)(scls[8*h:]), (*[8]float32)(mins[8*h:]), (*[8]float32)(sw[8*h:]), nmax)
	}
	return true
}

// q6State is what kqx512 works on: sixteen lanes (lane j = group j of a Q6_K block),
// rows of 16. Its layout is fixed by the U_* offsets in kquant_amd64.s.
type q6State struct {
	xt, w, wx, laux, lbest [qkK]float32 // x, weights, w·x, levels tried, best levels
	mx, sc, best           [16]float32  // element of largest magnitude; best scale, Σwxl²/Σwl²
	live                   uint16       // bit j set where group j is not all below groupMaxEps
}

// kqx512 runs make_qx_quants on the sixteen groups of a Q6_K block (see
// kquant_amd64.s).
//
//go:noescape
func kqx512(s *q6State, x, qw, nums *float32, steps, nmax int, eps float32)

// q6Fits512 is q6FitsGo with the sixteen groups in AVX-512 lanes, the whole search
// in assembly. The caller checked that x and qw are finite.
func q6Fits512(x, qw []float32, L *[qkK]int8, scales *[16]float32) {
	const nmax = 32
	var (
		s    q6State
		nums [18]float32
	)
	k := 0
	for is := int32(-9); is <= 9; is++ {
		if is != 0 {
			nums[k] = -(float32(nmax) + float32(0.1*float32(is)))
			k++
		}
	}
	var w *float32
	if qw != nil {
		w = &qw[0]
	}
	kqx512(&s, &x[0], w, &nums[0], len(nums), nmax, groupMaxEps)
	for j := range 16 {
		if s.live&(1<<j) == 0 {
			scales[j] = 0
			for i := range 16 {
				L[16*j+i] = 0
			}
			continue
		}
		scales[j] = s.sc[j]
		for i := range 16 {
			L[16*j+i] = int8(int32(s.lbest[16*i+j]) + nmax)
		}
	}
}

// q6GroupFits is q6FitsGo with the candidate passes run side by side in vector
// lanes: all sixteen groups and the whole search in AVX-512 (q6Fits512), else eight
// groups at a time in AVX2 (q6FitsAVX2).
func q6GroupFits(x, qw []float32, L *[qkK]int8, scales *[16]float32) {
	if !haveKAsm || !finite(x[:qkK]) || qw != nil && !finite(qw[:qkK]) {
		q6FitsGo(x, qw, L, scales)
		return
	}
	if haveK512 {
		q6Fits512(x, qw, L, scales)
		return
	}
	q6FitsAVX2(x, qw, L, scales)
}

// q6FitsAVX2 is q6FitsGo with the candidate passes of eight groups at a time run
// side by side in AVX2 lanes, the bookkeeping in Go. Each lane follows makeQXQuants
// (nmax 32). The caller checked that x and qw are finite.
func q6FitsAVX2(x, qw []float32, L *[qkK]int8, scales *[16]float32) {
	const nmax = 32
	for half := range 2 {
		var (
			xt, w, wx, laux [128]float32
			mx, iscale      [8]float32
			scale, best     [8]float32
			sums            [16]float32
			zero            [8]bool
		)
		base := 128 * half
		for j := range 8 {
			g := x[base+16*j : base+16*j+16]
			var max, amax float32
			for i, v := range g {
				if ax := abs32(v); ax > amax {
					amax, max = ax, v
				}
				xt[8*i+j] = v
				if qw != nil {
					w[8*i+j] = qw[base+16*j+i]
				} else {
					w[8*i+j] = float32(v * v)
				}
				wx[8*i+j] = float32(w[8*i+j] * v)
			}
			mx[j] = max
			if amax < groupMaxEps {
				zero[j] = true
				continue
			}
			iscale[j] = float32(-nmax) / max
		}
		kqxAVX2(&xt[0], &w[0], &wx[0], &laux[0], &iscale[0], &sums[0], -nmax, nmax-1, 16)
		for j := range 8 {
			if zero[j] {
				continue
			}
			keepQ6(L, &laux, base+16*j, j)
			sumlx, suml2 := sums[j], sums[8+j]
			if suml2 != 0 {
				scale[j] = sumlx / suml2
			}
			best[j] = float32(scale[j] * sumlx)
		}
		for is := int32(-9); is <= 9; is++ {
			if is == 0 {
				continue
			}
			for j := range 8 {
				iscale[j] = -(float32(nmax) + float32(0.1*float32(is))) / mx[j]
			}
			kqxAVX2(&xt[0], &w[0], &wx[0], &laux[0], &iscale[0], &sums[0], -nmax, nmax-1, 16)
			for j := range 8 {
				sumlx, suml2 := sums[j], sums[8+j]
				if zero[j] || !(suml2 > 0 && float32(sumlx*sumlx) > float32(best[j]*suml2)) {
					continue
				}
				keepQ6(L, &laux, base+16*j, j)
				scale[j] = sumlx / suml2
				best[j] = float32(scale[j] * sumlx)
			}
		}
		for j := range 8 {
			if zero[j] {
				for i := range 16 {
					L[base+16*j+i] = 0
				}
			}
			scales[8*half+j] = scale[j]
		}
	}
}

// keepQ6 copies lane j's levels from laux, shifted by 32, to the group at L[at:].
func keepQ6(L *[qkK]int8, laux *[128]float32, at, j int) {
	for i := range 16 {
		L[at+i] = int8(int32(laux[8*i+j]) + 32)
	}
}

// min32 is the reference's `if (x[i] < min) min = x[i]`: min32(min, x[i]).
func min32(a, b float32) float32 {
	if b < a {
		return b
	}
	return a
}

// q6Requantize sets a Q6_K block's final levels (see quantizeQ6KBy) from the group
// scales d, the groups with a non-zero scale in AVX-512 lanes where the CPU has
// them; it reports false, doing nothing, where it has not or x is not finite.
func q6Requantize(x []float32, d *[16]float32, L *[qkK]int8) bool {
	if !haveK512 || !finite(x[:qkK]) {
		return false
	}
	var dm [16]float32
	kqRequant512(&x[0], &d[0], &dm[0], (*uint8)(unsafe.Pointer(&L[0])), 16, 1, -32, 31, 32)
	return true
}
