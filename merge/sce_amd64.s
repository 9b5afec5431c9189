//go:build !purego

#include "textflag.h"

DATA sceAbs<>+0(SB)/8, $0x7fffffff7fffffff
DATA sceAbs<>+8(SB)/8, $0x7fffffff7fffffff
GLOBL sceAbs<>(SB), RODATA|NOPTR, $16

// func sceVarianceAVX2(dst *uint32, base *float32, models *[]float32, nModels, n int, inv float64)
// Per element, as sceVarianceRef: mean = ((+0 + d_0) + d_1 …)·inv with d_k the
// float32 x_k − b widened; v = (+0 + (d_0 − mean)² + …)·inv; dst = |float32(v)| bits.
// Each operation takes its operands in the order of the Go statement (the
// accumulator first); a NaN's payload may still differ from the compiled Go's, whose
// operand order the compiler picks.
TEXT ·sceVarianceAVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ models+16(FP), R8
	MOVQ nModels+24(FP), R9
	MOVQ n+32(FP), CX
	VBROADCASTSD inv+40(FP), Y7
	VMOVUPS sceAbs<>(SB), X6
	XORQ AX, AX // element index
loop:
	CMPQ AX, CX
	JGE  done
	VMOVUPS (SI)(AX*4), X0 // b
	VXORPD  Y1, Y1, Y1     // mean
	MOVQ R8, R10
	MOVQ R9, R11
mloop:
	MOVQ    (R10), R12
	VMOVUPS (R12)(AX*4), X2
	VSUBPS  X0, X2, X2 // x − b in float32
	VCVTPS2PD X2, Y2
	VADDPD  Y2, Y1, Y1
	ADDQ $24, R10
	DECQ R11
	JNZ  mloop
	VMULPD  Y7, Y1, Y1 // mean·inv
	VXORPD  Y3, Y3, Y3 // v
	MOVQ R8, R10
	MOVQ R9, R11
vloop:
	MOVQ    (R10), R12
	VMOVUPS (R12)(AX*4), X2
	VSUBPS  X0, X2, X2
	VCVTPS2PD X2, Y2
	VSUBPD  Y1, Y2, Y2 // d − mean
	VMULPD  Y2, Y2, Y2
	VADDPD  Y2, Y3, Y3
	ADDQ $24, R10
	DECQ R11
	JNZ  vloop
	VMULPD  Y7, Y3, Y3 // v·inv
	VCVTPD2PSY Y3, X3  // to float32, to nearest even
	VANDPS  X6, X3, X3
	VMOVUPS X3, (DI)(AX*4)
	ADDQ $4, AX
	JMP  loop
done:
	VZEROUPPER
	RET

// One group of eight keys at byte offset off of SI: VPCMPGTD and VPCMPEQD against
// t (Y5), their sign bits appended below the words built so far in R9 (above) and
// R10 (equal).
#define SCE_MASK_GROUP(off) \
	VMOVDQU   off(SI), Y0 \
	VPCMPGTD  Y5, Y0, Y1 \
	VPCMPEQD  Y5, Y0, Y2 \
	VMOVMSKPS Y1, AX \
	VMOVMSKPS Y2, BX \
	SHLQ      $8, R9 \
	SHLQ      $8, R10 \
	ORQ       AX, R9 \
	ORQ       BX, R10

// func sceMaskAVX2(above, equal *uint64, keys *uint32, words int, t uint32)
// For each of words groups of 64 keys, bit b of above[w] is keys[64w+b] > t and of
// equal[w] keys[64w+b] == t. Keys and t are below 1<<31 (no sign bit), so the
// signed comparison orders them as unsigned. The groups of eight go from the last
// to the first, each shifted in below the ones before.
TEXT ·sceMaskAVX2(SB), NOSPLIT, $0-36
	MOVQ above+0(FP), DI
	MOVQ equal+8(FP), R8
	MOVQ keys+16(FP), SI
	MOVQ words+24(FP), CX
	MOVL t+32(FP), AX
	VMOVD        AX, X5
	VPBROADCASTD X5, Y5
mwloop:
	TESTQ CX, CX
	JZ    mdone
	XORQ  R9, R9
	XORQ  R10, R10
	SCE_MASK_GROUP(224)
	SCE_MASK_GROUP(192)
	SCE_MASK_GROUP(160)
	SCE_MASK_GROUP(128)
	SCE_MASK_GROUP(96)
	SCE_MASK_GROUP(64)
	SCE_MASK_GROUP(32)
	SCE_MASK_GROUP(0)
	MOVQ R9, (DI)
	MOVQ R10, (R8)
	ADDQ $256, SI
	ADDQ $8, DI
	ADDQ $8, R8
	DECQ CX
	JMP  mwloop
mdone:
	VZEROUPPER
	RET
