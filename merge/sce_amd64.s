//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"

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

// func sceMergeBF16AVX512(out, base *byte, models *[]byte, nModels int, w *float32, mask *uint64, n int)
// sceMergeBF16Ref for the first n elements (a multiple of 16), sixteen at a time:
// every lane merged as sceMergeAt does (sum = (+0 + d_0) + d_1 …, the sign it
// elects, num and den from +0 adding each model's masked w·d and w, then
// b + num/max(den, 1e-6)), the base kept where the mask's bit is clear (mask nil:
// every lane merged), and the result rounded to BF16 to nearest even (a NaN made
// quiet); a group with no kept lane is only the base rounded. Each operation takes
// its operands in the order of the Go code, so that a NaN carries the same payload.
TEXT ·sceMergeBF16AVX512(SB), NOSPLIT, $0-56
	MOVQ out+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ models+16(FP), R8
	MOVQ nModels+24(FP), R9
	MOVQ w+32(FP), DX
	MOVQ mask+40(FP), R13
	MOVQ n+48(FP), CX
	VPXORD Z3, Z3, Z3 // +0
	BF16_RNE512_CONSTS
	MOVL $0x358637bd, AX // float32(1e-6)
	VPBROADCASTD AX, Z5
	XORQ AX, AX // element index
bloop:
	CMPQ AX, CX
	JGE  bdone
	TESTQ R13, R13
	JZ    ball
	MOVQ  AX, BX
	SHRQ  $3, BX
	KMOVW (R13)(BX*1), K7 // the mask's 16 bits of these lanes
	JMP   bgo
ball:
	KXNORW K7, K7, K7
bgo:
	VPMOVZXWD (SI)(AX*2), Z0
	VPSLLD    $16, Z0, Z0 // b
	KORTESTW  K7, K7
	JZ        bround      // no lane kept: the base, rounded
	VMOVAPS   Z3, Z1      // sum
	MOVQ R8, R10
	MOVQ R9, R11
sloop:
	MOVQ      (R10), R12
	VPMOVZXWD (R12)(AX*2), Z2
	VPSLLD    $16, Z2, Z2
	VSUBPS    Z0, Z2, Z2 // d = x − b
	VADDPS    Z2, Z1, Z1 // sum + d
	ADDQ $24, R10
	DECQ R11
	JNZ  sloop
	VCMPPS    $0x11, Z3, Z1, K1 // sum < 0 (LT_OQ: not −0, not NaN): the elected sign is −
	VMOVAPS   Z3, Z8            // num
	VMOVAPS   Z3, Z9            // den
	MOVQ R8, R10
	MOVQ R9, R11
	MOVQ DX, BX
aloop:
	MOVQ      (R10), R12
	VPMOVZXWD (R12)(AX*2), Z2
	VPSLLD    $16, Z2, Z2
	VSUBPS    Z0, Z2, Z2 // d
	VPMOVD2M  Z2, K2     // d's sign bit
	VPTESTMD  Z4, Z2, K3 // d ≠ ±0
	KXNORW    K2, K1, K4 // d's sign is the elected one
	KANDW     K3, K4, K4 // agrees
	VBROADCASTSS (BX), Z7 // w_i
	VMULPS.Z  Z2, Z7, K4, Z6 // w·d where it agrees, +0 elsewhere
	VADDPS    Z6, Z8, Z8     // num + term
	VMOVAPS.Z Z7, K4, Z6
	VADDPS    Z6, Z9, Z9     // den + term
	ADDQ $24, R10
	ADDQ $4, BX
	DECQ R11
	JNZ  aloop
	VMAXPS    Z9, Z5, Z9     // max(den, 1e-6): den where it is a NaN
	VDIVPS    Z9, Z8, Z8     // num / that
	VADDPS    Z8, Z0, K7, Z0 // b + it where the mask keeps the lane
bround:
	BF16_RNE512_STORE(Z0, (DI)(AX*2))
	ADDQ $16, AX
	JMP  bloop
bdone:
	VZEROUPPER
	RET

// The sixteen-key variance kernels' shared steps (sceVarianceAVX512 loads float32
// models, sceVarianceBF16AVX512 widens BF16 words; from then on the operations, and so
// the keys, are the same). Z0: the base's sixteen, Z2: a model's, Z1/Z11: the means of
// elements 0-7 and 8-15, Z3/Z13: the sums of squares, Z7: 1/N, Z6: the abs mask;
// DI+AX*4: the keys' place, R13: the zero count. The mean is taken of x − b in
// float32 widened; the keys are v·(1/N) rounded to float32 to nearest even.
#define SCE_VAR_MEAN16 \
	VSUBPS  Z0, Z2, Z2 \
	VEXTRACTF32X8 $1, Z2, Y12 \
	VCVTPS2PD Y2, Z2 \
	VCVTPS2PD Y12, Z12 \
	VADDPD  Z2, Z1, Z1 \
	VADDPD  Z12, Z11, Z11

#define SCE_VAR_SQUARES16 \
	VSUBPS  Z0, Z2, Z2 \
	VEXTRACTF32X8 $1, Z2, Y12 \
	VCVTPS2PD Y2, Z2 \
	VCVTPS2PD Y12, Z12 \
	VSUBPD  Z1, Z2, Z2 \
	VSUBPD  Z11, Z12, Z12 \
	VMULPD  Z2, Z2, Z2 \
	VMULPD  Z12, Z12, Z12 \
	VADDPD  Z2, Z3, Z3 \
	VADDPD  Z12, Z13, Z13

#define SCE_VAR_STORE16 \
	VMULPD  Z7, Z3, Z3 \
	VMULPD  Z7, Z13, Z13 \
	VCVTPD2PS Z3, Y3 \
	VCVTPD2PS Z13, Y13 \
	VINSERTF32X8 $1, Y13, Z3, Z3 \
	VPANDD  Z6, Z3, Z3 \
	VMOVUPS Z3, (DI)(AX*4) \
	VPTESTNMD Z3, Z3, K1 \
	KMOVW   K1, BX \
	POPCNTL BX, BX \
	ADDQ    BX, R13

// func sceVarianceAVX512(dst *uint32, base *float32, models *[]float32, nModels, n int, inv float64) (zeros int)
// sceVarianceAVX2 for the first n elements (a multiple of 4): sixteen at a time,
// each half of them the AVX2 kernel's operations in eight float64 lanes, then the
// last multiple of 4 as that kernel does them (the same bits, so a key never depends
// on which loop made it). zeros: how many keys of the groups of sixteen are 0
// (which the keys pass would otherwise count key by key).
TEXT ·sceVarianceAVX512(SB), NOSPLIT, $0-56
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ models+16(FP), R8
	MOVQ nModels+24(FP), R9
	MOVQ n+32(FP), CX
	VBROADCASTSD inv+40(FP), Z7
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z6
	XORQ R13, R13 // zeros
	XORQ AX, AX // element index
	MOVQ CX, DX
	ANDQ $-16, DX
zloop:
	CMPQ AX, DX
	JGE  ztail
	VMOVUPS (SI)(AX*4), Z0 // b
	VXORPD  Z1, Z1, Z1     // mean, elements 0-7
	VXORPD  Z11, Z11, Z11  // mean, elements 8-15
	MOVQ R8, R10
	MOVQ R9, R11
zmloop:
	MOVQ    (R10), R12
	VMOVUPS (R12)(AX*4), Z2
	SCE_VAR_MEAN16
	ADDQ $24, R10
	DECQ R11
	JNZ  zmloop
	VMULPD  Z7, Z1, Z1 // mean·inv
	VMULPD  Z7, Z11, Z11
	VXORPD  Z3, Z3, Z3 // v
	VXORPD  Z13, Z13, Z13
	MOVQ R8, R10
	MOVQ R9, R11
zvloop:
	MOVQ    (R10), R12
	VMOVUPS (R12)(AX*4), Z2
	SCE_VAR_SQUARES16
	ADDQ $24, R10
	DECQ R11
	JNZ  zvloop
	SCE_VAR_STORE16
	ADDQ $16, AX
	JMP  zloop
ztail:
	// The groups of four left, as sceVarianceAVX2.
	CMPQ AX, CX
	JGE  zdone
	VMOVUPS (SI)(AX*4), X0
	VXORPD  Y1, Y1, Y1
	MOVQ R8, R10
	MOVQ R9, R11
tmloop:
	MOVQ    (R10), R12
	VMOVUPS (R12)(AX*4), X2
	VSUBPS  X0, X2, X2
	VCVTPS2PD X2, Y2
	VADDPD  Y2, Y1, Y1
	ADDQ $24, R10
	DECQ R11
	JNZ  tmloop
	VMULPD  Y7, Y1, Y1
	VXORPD  Y3, Y3, Y3
	MOVQ R8, R10
	MOVQ R9, R11
tvloop:
	MOVQ    (R10), R12
	VMOVUPS (R12)(AX*4), X2
	VSUBPS  X0, X2, X2
	VCVTPS2PD X2, Y2
	VSUBPD  Y1, Y2, Y2
	VMULPD  Y2, Y2, Y2
	VADDPD  Y2, Y3, Y3
	ADDQ $24, R10
	DECQ R11
	JNZ  tvloop
	VMULPD  Y7, Y3, Y3
	VCVTPD2PSY Y3, X3
	VPANDD  X6, X3, X3
	VMOVUPS X3, (DI)(AX*4)
	ADDQ $4, AX
	JMP  ztail
zdone:
	MOVQ R13, zeros+48(FP)
	VZEROUPPER
	RET

// func sceRangeAVX512(keys *uint32, n int, lo, hi uint32, out *uint32) (above, in int)
// For the first n keys (a multiple of 16): above counts those > hi; the ones in
// [lo, hi] are written to out in order (in of them), sixteen lanes compressed at a
// time, each store 64 bytes wide (out has room for 16 more than it receives).
// Unsigned compares: keys have no sign bit, and lo may be 0.
TEXT ·sceRangeAVX512(SB), NOSPLIT, $0-48
	MOVQ keys+0(FP), SI
	MOVQ n+8(FP), CX
	MOVL lo+16(FP), AX
	VPBROADCASTD AX, Z5
	MOVL hi+20(FP), AX
	VPBROADCASTD AX, Z6
	MOVQ out+24(FP), DI
	XORQ R8, R8 // above
	XORQ R9, R9 // in
	XORQ AX, AX // key index
rloop:
	CMPQ AX, CX
	JGE  rdone
	VMOVDQU32 (SI)(AX*4), Z0
	VPCMPUD   $6, Z6, Z0, K1 // > hi
	VPCMPUD   $5, Z5, Z0, K2 // ≥ lo
	KMOVW     K1, BX
	POPCNTL   BX, BX
	ADDQ      BX, R8
	KANDNW    K2, K1, K3     // ≥ lo and not > hi
	KORTESTW  K3, K3
	JZ        rnext
	VPCOMPRESSD.Z Z0, K3, Z1
	VMOVDQU32 Z1, (DI)(R9*4)
	KMOVW     K3, BX
	POPCNTL   BX, BX
	ADDQ      BX, R9
rnext:
	ADDQ $16, AX
	JMP  rloop
rdone:
	MOVQ R8, above+32(FP)
	MOVQ R9, in+40(FP)
	VZEROUPPER
	RET

// One group of sixteen keys at byte offset off of SI: above t (Z5) into ka, equal
// to t into ke.
#define SCE_MASK16(off, ka, ke) \
	VMOVDQU32 off(SI), Z0 \
	VPCMPUD   $6, Z5, Z0, ka \
	VPCMPUD   $0, Z5, Z0, ke

// func sceMaskAVX512(above, equal *uint64, keys *uint32, words int, t uint32)
// sceMaskAVX2 with sixteen keys a compare, the four masks of a word joined by
// KUNPCKWD and KUNPCKDQ (the higher keys in the higher bits).
TEXT ·sceMaskAVX512(SB), NOSPLIT, $0-36
	MOVQ above+0(FP), DI
	MOVQ equal+8(FP), R8
	MOVQ keys+16(FP), SI
	MOVQ words+24(FP), CX
	MOVL t+32(FP), AX
	VPBROADCASTD AX, Z5
kwloop:
	TESTQ CX, CX
	JZ    kdone
	SCE_MASK16(0, K1, K2)
	SCE_MASK16(64, K3, K4)
	SCE_MASK16(128, K5, K6)
	SCE_MASK16(192, K7, K0)
	KUNPCKWD K1, K3, K1 // keys 0-31: K3 the high half
	KUNPCKWD K2, K4, K2
	KUNPCKWD K5, K7, K5 // keys 32-63
	KUNPCKWD K6, K0, K6
	KUNPCKDQ K1, K5, K1
	KUNPCKDQ K2, K6, K2
	KMOVQ    K1, (DI)
	KMOVQ    K2, (R8)
	ADDQ $256, SI
	ADDQ $8, DI
	ADDQ $8, R8
	DECQ CX
	JMP  kwloop
kdone:
	VZEROUPPER
	RET

// func sceVarianceBF16AVX512(dst *uint32, base *byte, models *[]byte, nModels, n int, inv float64) (zeros int)
// sceVarianceAVX512's groups of sixteen on BF16 words (n a multiple of 16): each
// word widened to the float32 that decoding gives (shifted into the high half),
// then the same operations in the same order, so the same keys; zeros: how many
// keys are 0.
TEXT ·sceVarianceBF16AVX512(SB), NOSPLIT, $0-56
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ models+16(FP), R8
	MOVQ nModels+24(FP), R9
	MOVQ n+32(FP), CX
	VBROADCASTSD inv+40(FP), Z7
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z6
	XORQ R13, R13 // zeros
	XORQ AX, AX // element index
hloop:
	CMPQ AX, CX
	JGE  hdone
	VPMOVZXWD (SI)(AX*2), Z0
	VPSLLD    $16, Z0, Z0 // b
	VXORPD  Z1, Z1, Z1     // mean, elements 0-7
	VXORPD  Z11, Z11, Z11  // mean, elements 8-15
	MOVQ R8, R10
	MOVQ R9, R11
hmloop:
	MOVQ      (R10), R12
	VPMOVZXWD (R12)(AX*2), Z2
	VPSLLD    $16, Z2, Z2
	SCE_VAR_MEAN16
	ADDQ $24, R10
	DECQ R11
	JNZ  hmloop
	VMULPD  Z7, Z1, Z1 // mean·inv
	VMULPD  Z7, Z11, Z11
	VXORPD  Z3, Z3, Z3 // v
	VXORPD  Z13, Z13, Z13
	MOVQ R8, R10
	MOVQ R9, R11
hvloop:
	MOVQ      (R10), R12
	VPMOVZXWD (R12)(AX*2), Z2
	VPSLLD    $16, Z2, Z2
	SCE_VAR_SQUARES16
	ADDQ $24, R10
	DECQ R11
	JNZ  hvloop
	SCE_VAR_STORE16
	ADDQ $16, AX
	JMP  hloop
hdone:
	MOVQ R13, zeros+48(FP)
	VZEROUPPER
	RET

// func sceSquares4MaskedAVX2(s *[4]float64, base *byte, x *[4]*byte, mask *uint64, words int)
// sceSquares4BF16's masked sums with the four models in the lanes of one register:
// for each position j set in mask[0:words], in order, δ_k = x_k[j] − base[j] on the
// widened BF16 words (float32, four lanes at once), and s[k] += float64(δ_k)² in
// float64 (the square exact, one addition per position and model, in position
// order: each lane's own chain of sceSquares4's additions).
TEXT ·sceSquares4MaskedAVX2(SB), NOSPLIT, $0-40
	MOVQ    s+0(FP), DI
	MOVQ    base+8(FP), SI
	MOVQ    x+16(FP), R8
	MOVQ    0(R8), R9            // x_0
	MOVQ    8(R8), R10           // x_1
	MOVQ    16(R8), R11          // x_2
	MOVQ    24(R8), R12          // x_3
	MOVQ    mask+24(FP), R13
	MOVQ    words+32(FP), CX
	VMOVUPD (DI), Y3             // the sums
	XORQ    BX, BX
qword:
	CMPQ    BX, CX
	JGE     qdone
	MOVQ    (R13)(BX*8), DX
	MOVQ    BX, R14
	SHLQ    $6, R14              // the word's first position
qbit:
	TESTQ   DX, DX
	JZ      qnext
	TZCNTQ  DX, AX
	BLSRQ   DX, DX
	ADDQ    R14, AX              // j
	MOVWLZX (SI)(AX*2), R8
	SHLL    $16, R8
	VMOVD   R8, X2
	VPBROADCASTD X2, X2          // b in the four lanes
	MOVWLZX (R9)(AX*2), R8
	VMOVD   R8, X1
	MOVWLZX (R10)(AX*2), R8
	VPINSRD $1, R8, X1, X1
	MOVWLZX (R11)(AX*2), R8
	VPINSRD $2, R8, X1, X1
	MOVWLZX (R12)(AX*2), R8
	VPINSRD $3, R8, X1, X1
	VPSLLD  $16, X1, X1          // x_0 … x_3
	VSUBPS  X2, X1, X1           // δ = x − b
	VCVTPS2PD X1, Y1
	VMULPD  Y1, Y1, Y1           // δ², exact
	VADDPD  Y1, Y3, Y3           // s + δ²
	JMP     qbit
qnext:
	INCQ    BX
	JMP     qword
qdone:
	VMOVUPD Y3, (DI)
	VZEROUPPER
	RET
