//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"
#include "ties_amd64.h"

// func bandMergeBF16AVX512(dst, base *uint16, xs **uint16, lanes *tiesLane, nl int, lambda float32, j, n int, masks **uint64) int
// Breadcrumbs without sign election over elements j.. of a chunk of BF16 words,
// sixteen at a time, widened as loaded and rounded to nearest even as stored: per
// model i (xs[i] its words; lanes[2i] its lower cut, with its weight w in the w
// field, lanes[2i+1] its upper cut, with its rescale factor s there), δ = x − b is
// kept where |δ| ranks above the lower cut and not above the upper one (a tied cut
// as tiesMergeAVX2 counts it), v = float32(w·float32(s·δ)) or +0, sum = sum + v in
// model order from +0, and the output is b + float32(λ·sum): tvDeltaAVX2 and
// tvFinishAVX2's operations with the same operands first. It stops before a group
// where a tied cut's rank falls among the elements at its pattern, or when fewer
// than 16 are left, and returns where.
//
// With masks set (DARE's masks, packed as packBools packs them: masks[i] model i's
// row of bits, j a multiple of 8), δ is kept where its bit is set instead, the cuts
// unused; the groups are the same.
TEXT ·bandMergeBF16AVX512(SB), NOSPLIT, $0-80
	BF16_RNE512_CONSTS               // Z4 = 0x7fffffff: also |x|'s mask (AX clobbered)
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ xs+16(FP), R8
	MOVQ lanes+24(FP), R9
	VBROADCASTSS lambda+40(FP), Z18
	MOVQ j+48(FP), AX
	MOVQ n+56(FP), CX
	VPXORD Z21, Z21, Z21             // 0
	SUBQ $16, CX                     // a group starts at most at n − 16
cgroup:
	CMPQ AX, CX
	JGT  cdone
	VPMOVZXWD (SI)(AX*2), Z0
	VPSLLD    $16, Z0, Z0            // b
	VMOVAPS   Z21, Z6                // sum
	XORQ BX, BX
	MOVQ R8, R12
	MOVQ R9, R13
clane:
	LANE_DELTA
	LEAQ      40(R13), R14           // the upper cut's record: s
	MASK_KEEP(masks+64(FP), cband, ckept)

cband:
	BAND_KEEP(R13, R14, cdone)       // K3: above the lower cut, not above the upper

ckept:
	VBROADCASTSS (R14), Z5           // s
	VMULPS    Z1, Z5, Z1             // s·δ
	VBROADCASTSS (R13), Z5           // w
	VMULPS    Z1, Z5, Z1             // w·(s·δ)
	VADDPS    Z1, Z6, K3, Z6         // sum + v where kept; adding v = +0 where dropped
	                                 // would leave sum as it is (it starts at +0 and
	                                 // never becomes −0)
	INCQ BX
	ADDQ $8, R12
	ADDQ $80, R13
	CMPQ BX, nl+32(FP)
	JLT  clane

	// The group is done: each cut's seen becomes its next.
	XORQ BX, BX
	MOVQ R9, R13
ccommit:
	MOVQ 32(R13), R10
	MOVQ R10, 16(R13)
	MOVQ 72(R13), R10
	MOVQ R10, 56(R13)
	INCQ BX
	ADDQ $80, R13
	CMPQ BX, nl+32(FP)
	JLT  ccommit

	VMULPS    Z6, Z18, Z6            // λ·sum
	VADDPS    Z6, Z0, Z6             // b + λ·sum
	BF16_RNE512_STORE(Z6, (DI)(AX*2))
	ADDQ $16, AX
	JMP  cgroup
cdone:
	MOVQ AX, ret+72(FP)
	VZEROUPPER
	RET
