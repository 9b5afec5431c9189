//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"
#include "ties_amd64.h"

// func tiesMergeBF16AVX512(dst, base *uint16, xs **uint16, lanes *tiesLane, nl int, lambda float32, j, n int, masks **uint64, scale *float32, normalize, band bool) int
// tiesMergeAVX2 sixteen elements at a time from BF16 words to BF16 words: each word
// widened as it is loaded, the result rounded to nearest even as it is stored
// (BF16_RNE512_STORE), and in between the same operations, in the same order and
// with the same operands first, as tiesMergeAVX2 (so the same NaN payloads). The
// masked additions of the agreeing deltas and weights leave the sums as adding +0
// would (the sums start at +0 and never become −0). The agreeing sums are made in
// the one sweep over the models, before the sign is elected: the positive Δ_i's
// (sign bit clear, not ±0) and their weights, and the negative ones', each in model
// order, and the elected sign picks a pair. These are the additions, in the same
// order, that summing the Δ_i agreeing with the elected sign makes, so the same
// bits, and no second sweep over the models. It stops where tiesMergeAVX2 stops (a
// group straddling a tied cut's rank, or fewer than 16 elements left) and returns
// where.
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
TEXT ·tiesMergeBF16AVX512(SB), NOSPLIT, $0-96
	BF16_RNE512_CONSTS               // Z4 = 0x7fffffff: also |x|'s mask (AX clobbered)
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ xs+16(FP), R8
	MOVQ lanes+24(FP), R9
	VBROADCASTSS lambda+40(FP), Z18
	MOVQ j+48(FP), AX
	MOVQ n+56(FP), CX
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
	VMOVAPS   Z21, Z23               // P: the positive Δ_i's sum
	VMOVAPS   Z21, Z24               // WP: their weights'
	VMOVAPS   Z21, Z25               // N: the negative Δ_i's sum
	VMOVAPS   Z21, Z26               // WN: their weights'
	XORQ BX, BX
	MOVQ R8, R12
	MOVQ R9, R13
btrim:
	LANE_DELTA
	MASK_KEEP(masks+64(FP), bcut, bscaled)

bcut:
	CMPB      band+81(FP), $0
	JEQ       bone
	BAND_KEEP(R13, R14, bdone)

bscaled:
	MOVQ      scale+72(FP), R10
	VBROADCASTSS (R10)(BX*4), Z5
	VMULPS    Z1, Z5, Z1             // s·δ
	VBROADCASTSS (R13), Z5
	VMULPS    Z1, Z5, Z1             // w·(s·δ)
	VMOVAPS.Z Z1, K3, Z22            // Δ_i: the kept products, +0 elsewhere
	JMP       bterm

bone:
	CUT_ABOVE(R13, K3, bkeepall, bkeep, bdone)
	VMULPS.BCST.Z (R13), Z1, K3, Z22 // Δ_i: the kept δ·w, +0 elsewhere

bterm:
	TESTQ     BX, BX
	JNZ       badd
	VMOVAPS   Z22, Z6                // the sum starts as Δ_0
	JMP       bsplit
badd:
	VADDPS    Z22, Z6, Z6            // sum + Δ_i
bsplit:
	VPTESTMD  Z4, Z22, K1            // Δ_i is not ±0: it counts where its sign wins
	VPTESTMD  Z20, Z22, K1, K2       // and is negative
	KANDNW    K1, K2, K1             // or positive
	VADDPS    Z22, Z23, K1, Z23      // P + Δ_i
	VADDPS.BCST (R13), Z24, K1, Z24  // WP + w_i
	VADDPS    Z22, Z25, K2, Z25      // N + Δ_i
	VADDPS.BCST (R13), Z26, K2, Z26  // WN + w_i
	INCQ BX
	ADDQ $8, R12
	ADDQ $40, R13
	CMPB band+81(FP), $0
	JEQ  bnextlane
	ADDQ $40, R13                    // two records a model
bnextlane:
	CMPQ BX, nl+32(FP)
	JLT  btrim

	// The group is done: each cut's seen becomes its next.
	XORQ BX, BX
	MOVQ R9, R13
bcommit:
	MOVQ 32(R13), R10
	MOVQ R10, 16(R13)
	CMPB band+81(FP), $0
	JEQ  bcommitlane
	MOVQ 72(R13), R10
	MOVQ R10, 56(R13)                // the upper cut's too
	ADDQ $40, R13
bcommitlane:
	ADDQ $40, R13
	INCQ BX
	CMPQ BX, nl+32(FP)
	JLT  bcommit

	VCMPPS    $1, Z21, Z6, K7        // LT_OS: sum < 0, the negative sign elected
	VMOVAPS   Z25, K7, Z23           // num: N there, P elsewhere
	VMOVAPS   Z26, K7, Z24           // den: WN there, WP elsewhere
	CMPB      normalize+80(FP), $0
	JEQ       bfinish
	VPTESTNMD Z4, Z24, K1            // den is ±0
	VMOVAPS   Z19, K1, Z24           // then 1
	VDIVPS    Z24, Z23, Z23          // num / q
bfinish:
	VMULPS    Z23, Z18, Z23          // λ·(num/q), or λ·num
	VADDPS    Z23, Z0, Z23           // b + that
	BF16_RNE512_STORE(Z23, (DI)(AX*2))
	ADDQ $16, AX
	JMP  bgroup
bdone:
	MOVQ AX, ret+88(FP)
	VZEROUPPER
	RET
