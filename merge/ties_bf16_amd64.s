//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"
#include "ties_amd64.h"

// func tiesMergeBF16AVX512(dst, base *uint16, xs **uint16, lanes *tiesLane, nl int, d *float32, lambda float32, j, n int, masks **uint64, scale *float32, normalize, band bool) int
// tiesMergeAVX2 sixteen elements at a time from BF16 words to BF16 words: each word
// widened as it is loaded, the result rounded to nearest even as it is stored
// (BF16_RNE512_STORE), and in between the same operations, in the same order and
// with the same operands first, as tiesMergeAVX2 (so the same NaN payloads). The
// masked additions of the agreeing deltas and weights leave the sums as adding +0
// would (the sums start at +0 and never become −0). d holds 16 floats per lane. It
// stops where tiesMergeAVX2 stops (a group straddling a tied cut's rank, or fewer
// than 16 elements left) and returns where.
//
// With masks set (DARE with sign election: masks[i] model i's row of bits packed as
// packBools packs them, j a multiple of 8), model i keeps δ where its bit is set,
// the cuts unused, and its term is float32(w·float32(s_i·δ)) with s_i = scale[i],
// as tvDeltaBitsAVX2 makes it; then the election and the sums as above, and the
// output b + float32(λ·(num/q)) with normalize (tiesFinishAVX2's), else
// b + float32(λ·num) (tvFinishAVX2's).
//
// With band set (breadcrumbs with sign election), lanes holds two records per model,
// its lower cut (w: the weight) and its upper one, and model i keeps δ where |δ|
// ranks above the lower cut and not above the upper (BAND_KEEP, as
// bandMergeBF16AVX512 keeps it); its term, the election, the sums and the output
// are as with masks. nl counts models.
TEXT ·tiesMergeBF16AVX512(SB), NOSPLIT, $0-104
	BF16_RNE512_CONSTS               // Z4 = 0x7fffffff: also |x|'s mask (AX clobbered)
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ xs+16(FP), R8
	MOVQ lanes+24(FP), R9
	MOVQ d+40(FP), R11
	VBROADCASTSS lambda+48(FP), Z18
	MOVQ j+56(FP), AX
	MOVQ n+64(FP), CX
	MOVL $0x80000000, R10
	VPBROADCASTD R10, Z20            // the sign bit
	MOVL $0x3f800000, R10
	VPBROADCASTD R10, Z19            // 1.0
	VPXORD Z21, Z21, Z21             // 0
	SUBQ $16, CX                     // a group starts at most at n − 16
bgroup:
	CMPQ AX, CX
	JGT  bdone
	VPMOVZXWD (SI)(AX*2), Z0
	VPSLLD    $16, Z0, Z0            // b
	XORQ BX, BX
	MOVQ R8, R12
	MOVQ R9, R13
	MOVQ R11, R14
btrim:
	LANE_DELTA
	MASK_KEEP(masks+72(FP), bcut, bscaled)

bcut:
	CMPB      band+89(FP), $0
	JEQ       bone
	BAND_KEEP(R13, R14, bdone)
	MOVQ      BX, R14                // d's row for model i again
	SHLQ      $6, R14
	ADDQ      R11, R14

bscaled:
	MOVQ      scale+80(FP), R10
	VBROADCASTSS (R10)(BX*4), Z5
	VMULPS    Z1, Z5, Z1             // s·δ
	VBROADCASTSS (R13), Z5
	VMULPS    Z1, Z5, Z1             // w·(s·δ)
	JMP       bterm

bone:
	CUT_ABOVE(R13, K3, bkeepall, bkeep, bdone)
	VMULPS.BCST.Z (R13), Z1, K3, Z22 // Δ_i: the kept δ·w, +0 elsewhere
	JMP       bstore

bterm:
	VMOVAPS.Z Z1, K3, Z22            // Δ_i: the kept products, +0 elsewhere
bstore:
	VMOVUPS   Z22, (R14)
	TESTQ     BX, BX
	JNZ       badd
	VMOVAPS   Z22, Z6                // the sum starts as Δ_0
	JMP       bnext
badd:
	VADDPS    Z22, Z6, Z6            // sum + Δ_i
bnext:
	INCQ BX
	ADDQ $8, R12
	ADDQ $64, R14
	ADDQ $40, R13
	CMPB band+89(FP), $0
	JEQ  bnextlane
	ADDQ $40, R13                    // two records a model
bnextlane:
	CMPQ BX, nl+32(FP)
	JLT  btrim
	VCMPPS    $1, Z21, Z6, K7        // LT_OS: sum < 0
	VMOVAPS   Z21, Z7
	VMOVAPS   Z20, K7, Z7            // the elected sign bit
	VMOVAPS   Z21, Z8                // num
	VMOVAPS   Z21, Z9                // den
	XORQ BX, BX
	MOVQ R9, R13
	MOVQ R11, R14
baccum:
	MOVQ      32(R13), R10
	MOVQ      R10, 16(R13)           // seen = next
	CMPB      band+89(FP), $0
	JEQ       bsum
	MOVQ      72(R13), R10
	MOVQ      R10, 56(R13)           // the upper cut's too
bsum:
	VMOVUPS   (R14), Z1
	VPXORD    Z7, Z1, Z3
	VPTESTNMD Z20, Z3, K2            // the signs agree
	VPTESTMD  Z4, Z1, K2, K1         // and Δ_i is not ±0: it counts
	VADDPS    Z1, Z8, K1, Z8         // num + Δ_i
	VADDPS.BCST (R13), Z9, K1, Z9    // den + w_i
	INCQ BX
	ADDQ $64, R14
	ADDQ $40, R13
	CMPB band+89(FP), $0
	JEQ  baccumlane
	ADDQ $40, R13
baccumlane:
	CMPQ BX, nl+32(FP)
	JLT  baccum
	CMPB      normalize+88(FP), $0
	JEQ       bfinish
	VPSLLD    $1, Z9, Z2
	VPTESTNMD Z2, Z2, K1             // den is ±0
	VMOVAPS   Z19, K1, Z9            // then 1
	VDIVPS    Z9, Z8, Z8             // num / q
bfinish:
	VMULPS    Z8, Z18, Z8            // λ·(num/q), or λ·num
	VADDPS    Z8, Z0, Z8             // b + that
	BF16_RNE512_STORE(Z8, (DI)(AX*2))
	ADDQ $16, AX
	JMP  bgroup
bdone:
	MOVQ AX, ret+96(FP)
	VZEROUPPER
	RET
