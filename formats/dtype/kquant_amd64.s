//go:build !purego

#include "textflag.h"

// Lane-wise K-quant candidate passes (see kquant_amd64.go). Every operation is one
// IEEE float32 operation of the scalar reference, in its order; nearest_int is
// ggml's bit trick: (f + 1.5·2²³) & 0x7fffff − 0x400000.

// func kqLevelsAVX2(xm, x, w, laux, iscale, sums *float32, nmax, rows int)
TEXT ·kqLevelsAVX2(SB), NOSPLIT, $0-64
	MOVQ xm+0(FP), SI
	MOVQ x+8(FP), DX
	MOVQ w+16(FP), BX
	MOVQ laux+24(FP), DI
	MOVQ iscale+32(FP), R8
	MOVQ sums+40(FP), R9
	MOVQ nmax+48(FP), AX
	MOVQ rows+56(FP), CX
	VMOVD        AX, X10
	VPBROADCASTD X10, Y10
	MOVL         $0x4B400000, AX
	VMOVD        AX, X11
	VPBROADCASTD X11, Y11
	MOVL         $0x007fffff, AX
	VMOVD        AX, X12
	VPBROADCASTD X12, Y12
	MOVL         $0x00400000, AX
	VMOVD        AX, X13
	VPBROADCASTD X13, Y13
	VPXOR        Y14, Y14, Y14
	VMOVUPS      (R8), Y15
	VXORPS       Y0, Y0, Y0
	VXORPS       Y1, Y1, Y1
	VXORPS       Y2, Y2, Y2

lloop:
	VMULPS    (SI), Y15, Y3
	VADDPS    Y11, Y3, Y3
	VPAND     Y12, Y3, Y3
	VPSUBD    Y13, Y3, Y3
	VPMAXSD   Y14, Y3, Y3
	VPMINSD   Y10, Y3, Y3
	VCVTDQ2PS Y3, Y3
	VMOVUPS   Y3, (DI)
	VMULPS    (BX), Y3, Y4
	VADDPS    Y4, Y0, Y0
	VMULPS    Y3, Y4, Y5
	VADDPS    Y5, Y1, Y1
	VMULPS    (DX), Y4, Y5
	VADDPS    Y5, Y2, Y2
	ADDQ      $32, SI
	ADDQ      $32, DX
	ADDQ      $32, BX
	ADDQ      $32, DI
	DECQ      CX
	JNZ       lloop

	VMOVUPS Y0, (R9)
	VMOVUPS Y1, 32(R9)
	VMOVUPS Y2, 64(R9)
	VZEROUPPER
	RET

// func kqErrAVX2(x, w, laux, scale, min, err *float32, rows int)
TEXT ·kqErrAVX2(SB), NOSPLIT, $0-56
	MOVQ    x+0(FP), DX
	MOVQ    w+8(FP), BX
	MOVQ    laux+16(FP), SI
	MOVQ    scale+24(FP), R8
	MOVQ    min+32(FP), R9
	MOVQ    err+40(FP), DI
	MOVQ    rows+48(FP), CX
	VMOVUPS (R8), Y14
	VMOVUPS (R9), Y15
	VXORPS  Y0, Y0, Y0

eloop:
	VMULPS  (SI), Y14, Y3
	VADDPS  Y15, Y3, Y3
	VSUBPS  (DX), Y3, Y3
	VMULPS  Y3, Y3, Y3
	VMULPS  (BX), Y3, Y3
	VADDPS  Y3, Y0, Y0
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, BX
	DECQ    CX
	JNZ     eloop

	VMOVUPS Y0, (DI)
	VZEROUPPER
	RET

// func kqxAVX2(x, w, wx, laux, iscale, sums *float32, lo, hi, rows int)
TEXT ·kqxAVX2(SB), NOSPLIT, $0-72
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), BX
	MOVQ wx+16(FP), DX
	MOVQ laux+24(FP), DI
	MOVQ iscale+32(FP), R8
	MOVQ sums+40(FP), R9
	MOVQ lo+48(FP), AX
	VMOVD        AX, X9
	VPBROADCASTD X9, Y9
	MOVQ hi+56(FP), AX
	VMOVD        AX, X10
	VPBROADCASTD X10, Y10
	MOVQ rows+64(FP), CX
	MOVL         $0x4B400000, AX
	VMOVD        AX, X11
	VPBROADCASTD X11, Y11
	MOVL         $0x007fffff, AX
	VMOVD        AX, X12
	VPBROADCASTD X12, Y12
	MOVL         $0x00400000, AX
	VMOVD        AX, X13
	VPBROADCASTD X13, Y13
	VMOVUPS      (R8), Y15
	VXORPS       Y0, Y0, Y0
	VXORPS       Y1, Y1, Y1

xloop:
	VMULPS    (SI), Y15, Y3
	VADDPS    Y11, Y3, Y3
	VPAND     Y12, Y3, Y3
	VPSUBD    Y13, Y3, Y3
	VPMAXSD   Y9, Y3, Y3
	VPMINSD   Y10, Y3, Y3
	VCVTDQ2PS Y3, Y3
	VMOVUPS   Y3, (DI)
	VMULPS    (DX), Y3, Y4
	VADDPS    Y4, Y0, Y0
	VMULPS    (BX), Y3, Y5
	VMULPS    Y3, Y5, Y5
	VADDPS    Y5, Y1, Y1
	ADDQ      $32, SI
	ADDQ      $32, DX
	ADDQ      $32, BX
	ADDQ      $32, DI
	DECQ      CX
	JNZ       xloop

	VMOVUPS Y0, (R9)
	VMOVUPS Y1, 32(R9)
	VZEROUPPER
	RET

// The state kqSearchAVX2 works on, laid out as kqState in kquant_amd64.go.
#define S_XT 0
#define S_WT 1024
#define S_XM 2048
#define S_LAUX 3072
#define S_LBEST 4096
#define S_HI 5120
#define S_SUMW 5152
#define S_SUMX 5184
#define S_SC 5216
#define S_MN 5248
#define S_BEST 5280
#define S_LIVE 5312

// func kqSearchAVX2(s *kqState, nums *float32, steps, nmax int)
//
// The candidate loop of make_qkx2_quants (useMAD false) for the eight lanes of s:
// for each of the steps numerators n: iscale = n/(hi − mn), the levels and their
// sums (as kqLevelsAVX2), the least-squares scale and min (with min ≤ 0), their
// weighted squared error (as kqErrAVX2), and, in the live lanes where the solve's
// determinant is positive and the error is below the best so far, the new best
// error, scale, min and levels, and xm = x − mn for the next candidates.
TEXT ·kqSearchAVX2(SB), NOSPLIT, $0-32
	MOVQ s+0(FP), R8
	MOVQ nums+8(FP), R9
	MOVQ steps+16(FP), R10
	MOVQ nmax+24(FP), AX
	VMOVD        AX, X10
	VPBROADCASTD X10, Y10
	MOVL         $0x4B400000, AX
	VMOVD        AX, X11
	VPBROADCASTD X11, Y11
	MOVL         $0x007fffff, AX
	VMOVD        AX, X12
	VPBROADCASTD X12, Y12
	MOVL         $0x00400000, AX
	VMOVD        AX, X13
	VPBROADCASTD X13, Y13
	VPXOR        Y14, Y14, Y14

sstep:
	TESTQ R10, R10
	JZ    sdone
	// iscale = n / (hi − mn)
	VMOVUPS      S_HI(R8), Y3
	VSUBPS       S_MN(R8), Y3, Y3
	VBROADCASTSS (R9), Y15
	VDIVPS       Y3, Y15, Y15

	LEAQ    S_XM(R8), SI
	LEAQ    S_XT(R8), DX
	LEAQ    S_WT(R8), BX
	LEAQ    S_LAUX(R8), DI
	MOVQ    $32, CX
	VXORPS  Y0, Y0, Y0
	VXORPS  Y1, Y1, Y1
	VXORPS  Y2, Y2, Y2

slev:
	VMULPS    (SI), Y15, Y3
	VADDPS    Y11, Y3, Y3
	VPAND     Y12, Y3, Y3
	VPSUBD    Y13, Y3, Y3
	VPMAXSD   Y14, Y3, Y3
	VPMINSD   Y10, Y3, Y3
	VCVTDQ2PS Y3, Y3
	VMOVUPS   Y3, (DI)
	VMULPS    (BX), Y3, Y4
	VADDPS    Y4, Y0, Y0
	VMULPS    Y3, Y4, Y5
	VADDPS    Y5, Y1, Y1
	VMULPS    (DX), Y4, Y5
	VADDPS    Y5, Y2, Y2
	ADDQ      $32, SI
	ADDQ      $32, DX
	ADDQ      $32, BX
	ADDQ      $32, DI
	DECQ      CX
	JNZ       slev

	// Y0 sumL, Y1 sumL2, Y2 sumXL. D = sumW·sumL2 − sumL·sumL.
	VMOVUPS S_SUMW(R8), Y3
	VMOVUPS S_SUMX(R8), Y4
	VMULPS  Y1, Y3, Y8
	VMULPS  Y0, Y0, Y5
	VSUBPS  Y5, Y8, Y8
	// ts = (sumW·sumXL − sumX·sumL)/D
	VMULPS  Y2, Y3, Y6
	VMULPS  Y0, Y4, Y5
	VSUBPS  Y5, Y6, Y6
	VDIVPS  Y8, Y6, Y6
	// tm = (sumL2·sumX − sumL·sumXL)/D
	VMULPS  Y4, Y1, Y7
	VMULPS  Y2, Y0, Y5
	VSUBPS  Y5, Y7, Y7
	VDIVPS  Y8, Y7, Y7
	// where tm > 0: tm = 0, ts = sumXL/sumL2
	VXORPS    Y9, Y9, Y9
	VCMPPS    $0x0e, Y9, Y7, Y5
	VDIVPS    Y1, Y2, Y3
	VBLENDVPS Y5, Y9, Y7, Y7
	VBLENDVPS Y5, Y3, Y6, Y6

	LEAQ S_XT(R8), DX
	LEAQ S_WT(R8), BX
	LEAQ S_LAUX(R8), SI
	MOVQ $32, CX

serr:
	VMULPS (SI), Y6, Y3
	VADDPS Y7, Y3, Y3
	VSUBPS (DX), Y3, Y3
	VMULPS Y3, Y3, Y3
	VMULPS (BX), Y3, Y3
	VADDPS Y3, Y9, Y9
	ADDQ   $32, SI
	ADDQ   $32, DX
	ADDQ   $32, BX
	DECQ   CX
	JNZ    serr

	// better = live && D > 0 && err < best
	VXORPS    Y4, Y4, Y4
	VCMPPS    $0x0e, Y4, Y8, Y5
	VCMPPS    $0x01, S_BEST(R8), Y9, Y4
	VANDPS    Y4, Y5, Y5
	VANDPS    S_LIVE(R8), Y5, Y5
	VMOVMSKPS Y5, AX
	TESTL     AX, AX
	JZ        snext

	VMOVUPS   S_BEST(R8), Y3
	VBLENDVPS Y5, Y9, Y3, Y3
	VMOVUPS   Y3, S_BEST(R8)
	VMOVUPS   S_SC(R8), Y3
	VBLENDVPS Y5, Y6, Y3, Y3
	VMOVUPS   Y3, S_SC(R8)
	VMOVUPS   S_MN(R8), Y3
	VBLENDVPS Y5, Y7, Y3, Y7
	VMOVUPS   Y7, S_MN(R8)

	LEAQ S_XT(R8), DX
	LEAQ S_XM(R8), BX
	LEAQ S_LAUX(R8), SI
	LEAQ S_LBEST(R8), DI
	MOVQ $32, CX

skeep:
	VMOVUPS   (SI), Y3
	VMOVUPS   (DI), Y4
	VBLENDVPS Y5, Y3, Y4, Y4
	VMOVUPS   Y4, (DI)
	VMOVUPS   (DX), Y3
	VSUBPS    Y7, Y3, Y3
	VMOVUPS   (BX), Y4
	VBLENDVPS Y5, Y3, Y4, Y4
	VMOVUPS   Y4, (BX)
	ADDQ      $32, SI
	ADDQ      $32, DI
	ADDQ      $32, DX
	ADDQ      $32, BX
	DECQ      CX
	JNZ       skeep

snext:
	ADDQ $4, R9
	DECQ R10
	JMP  sstep

sdone:
	VZEROUPPER
	RET

// The state kqFit512 works on, laid out as kqState16 in kquant_amd64.go: the
// rows hold 16 lanes (lane j = group j of two consecutive blocks).
#define T_XT 0
#define T_WT 2048
#define T_XM 4096
#define T_LAUX 6144
#define T_LBEST 8192
#define T_HI 10240
#define T_SUMW 10304
#define T_SUMX 10368
#define T_SC 10432
#define T_MN 10496
#define T_BEST 10560
#define T_LIVE 10624

// kqIdx is the offsets of element 0 of the sixteen groups of two blocks, for the
// gathers that put group j in lane j.
DATA kqIdx<>+0(SB)/4, $0
DATA kqIdx<>+4(SB)/4, $32
DATA kqIdx<>+8(SB)/4, $64
DATA kqIdx<>+12(SB)/4, $96
DATA kqIdx<>+16(SB)/4, $128
DATA kqIdx<>+20(SB)/4, $160
DATA kqIdx<>+24(SB)/4, $192
DATA kqIdx<>+28(SB)/4, $224
DATA kqIdx<>+32(SB)/4, $256
DATA kqIdx<>+36(SB)/4, $288
DATA kqIdx<>+40(SB)/4, $320
DATA kqIdx<>+44(SB)/4, $352
DATA kqIdx<>+48(SB)/4, $384
DATA kqIdx<>+52(SB)/4, $416
DATA kqIdx<>+56(SB)/4, $448
DATA kqIdx<>+60(SB)/4, $480
GLOBL kqIdx<>(SB), RODATA|NOPTR, $64

// func kqFit512(s *kqState16, x, w, nums *float32, steps, nmax int) bool
//
// make_qkx2_quants (useMAD false) for the sixteen groups of 32 of x[0:512] (two
// blocks), lane j = group j, with AVX-512's sixteen lanes so that one instruction
// serves two blocks. Each lane makes the scalar reference's operations in its order:
// the set-up (x gathered into rows; min, max and Σx² element after element; the
// weights w[0:512], or where w is nil the weights rms + |x| of kWeights; Σw and Σw·x
// element after element; min ≤ 0; live
// where max ≠ min; the first candidate nmax/(max − min) with its levels in lbest and
// its error in best), then the steps candidates of kqSearchAVX2. It reports false,
// having stopped early, where x or a weight is not finite.
TEXT ·kqFit512(SB), NOSPLIT, $0-49
	MOVQ s+0(FP), R8
	MOVQ x+8(FP), SI
	MOVQ nums+24(FP), R9
	MOVQ steps+32(FP), R10
	MOVQ nmax+40(FP), AX
	VPBROADCASTD AX, Z10
	MOVL         $0x4B400000, AX
	VPBROADCASTD AX, Z11
	MOVL         $0x007fffff, AX
	VPBROADCASTD AX, Z12
	MOVL         $0x00400000, AX
	VPBROADCASTD AX, Z13
	VPXORD       Z14, Z14, Z14
	MOVL         $0x7f800000, AX
	VPBROADCASTD AX, Z22
	MOVL         $0x7fffffff, AX
	VPBROADCASTD AX, Z23
	VMOVDQU32    kqIdx<>(SB), Z20
	// nearest_int and the clamp on the float bits: (v & 0x7fffff) | 0x4b000000 is
	// 2²³ + the masked bits, so clamping it between 1.5·2²³ + lo and 1.5·2²³ + hi
	// and subtracting 1.5·2²³ gives float(clamp(nearest_int, lo, hi)) exactly.
	MOVL         $0x4B000000, AX
	VPBROADCASTD AX, Z24
	VPADDD       Z11, Z14, Z25
	VPADDD       Z11, Z10, Z26

	// Pass 1: x into rows; min (Z16, from +∞), max (Z17, from −∞), Σx² (Z18);
	// K5 marks lanes holding an infinity or a NaN.
	MOVL         $0x7f800000, AX
	VPBROADCASTD AX, Z16
	MOVL         $0xff800000, AX
	VPBROADCASTD AX, Z17
	VPXORD       Z18, Z18, Z18
	KXORW        K5, K5, K5
	LEAQ         T_XT(R8), DI
	MOVQ         $32, CX

tgather:
	KXNORW     K1, K1, K1
	VGATHERDPS (SI)(Z20*4), K1, Z3
	VMOVUPS    Z3, (DI)
	VMINPS     Z16, Z3, Z16
	VMAXPS     Z17, Z3, Z17
	VMULPS     Z3, Z3, Z4
	VADDPS     Z4, Z18, Z18
	VPANDD     Z22, Z3, Z4
	VPCMPEQD   Z22, Z4, K1
	KORW       K1, K5, K5
	ADDQ       $4, SI
	ADDQ       $64, DI
	DECQ       CX
	JNZ        tgather
	KORTESTW   K5, K5
	JNZ        tfail

	// avX = sqrt(Σx²/32) (sqrtf, correctly rounded like the reference's float64
	// square root rounded to float32).
	MOVL         $0x42000000, AX
	VPBROADCASTD AX, Z3
	VDIVPS       Z3, Z18, Z18
	VSQRTPS      Z18, Z18

	// Pass 2: the weights into rows: w's (gathered) when w is not nil, else
	// avX + |x|; K5 marks lanes where one is infinite or NaN.
	MOVQ  w+16(FP), DX
	LEAQ  T_XT(R8), DI
	MOVQ  $32, CX
	TESTQ DX, DX
	JZ    tweights

tgivenw:
	KXNORW     K1, K1, K1
	VGATHERDPS (DX)(Z20*4), K1, Z4
	VMOVUPS    Z4, T_WT(DI)
	VPANDD     Z22, Z4, Z5
	VPCMPEQD   Z22, Z5, K1
	KORW       K1, K5, K5
	ADDQ       $4, DX
	ADDQ       $64, DI
	DECQ       CX
	JNZ        tgivenw
	JMP        twdone

tweights:
	VMOVUPS  (DI), Z3
	VPANDD   Z23, Z3, Z4
	VADDPS   Z4, Z18, Z4
	VMOVUPS  Z4, T_WT(DI)
	VPANDD   Z22, Z4, Z5
	VPCMPEQD Z22, Z5, K1
	KORW     K1, K5, K5
	ADDQ     $64, DI
	DECQ     CX
	JNZ      tweights

twdone:
	KORTESTW K5, K5
	JNZ      tfail

	// Σw (Z18) and Σw·x (Z19), from row 0 on, element after element.
	LEAQ    T_XT(R8), DI
	VMOVUPS T_WT(DI), Z18
	VMULPS  (DI), Z18, Z19
	ADDQ    $64, DI
	MOVQ    $31, CX

tsums:
	VMOVUPS T_WT(DI), Z4
	VADDPS  Z4, Z18, Z18
	VMULPS  (DI), Z4, Z5
	VADDPS  Z5, Z19, Z19
	ADDQ    $64, DI
	DECQ    CX
	JNZ     tsums

	// min > 0 → 0; live = max ≠ min; iscale = nmax/(max − min), sc = 1/iscale.
	VPXORD    Z9, Z9, Z9
	VCMPPS    $0x0e, Z9, Z16, K1
	VMOVAPS   Z9, K1, Z16
	VMOVUPS   Z16, T_MN(R8)
	VMOVUPS   Z17, T_HI(R8)
	VMOVUPS   Z18, T_SUMW(R8)
	VMOVUPS   Z19, T_SUMX(R8)
	VCMPPS    $0x04, Z16, Z17, K4
	KMOVW     K4, T_LIVE(R8)
	VCVTDQ2PS Z10, Z15
	VSUBPS    Z16, Z17, Z3
	VDIVPS    Z3, Z15, Z15
	MOVL      $0x3f800000, AX
	VPBROADCASTD AX, Z3
	VDIVPS    Z15, Z3, Z6
	VMOVUPS   Z6, T_SC(R8)

	// The first candidate: xm = x − min, levels into lbest.
	LEAQ T_XT(R8), DX
	LEAQ T_XM(R8), SI
	LEAQ T_LBEST(R8), DI
	MOVQ $32, CX

tfirst:
	VMOVUPS   (DX), Z3
	VSUBPS    Z16, Z3, Z3
	VMOVUPS   Z3, (SI)
	VMULPS    Z3, Z15, Z3
	VADDPS     Z11, Z3, Z3
	VPTERNLOGD $0xea, Z24, Z12, Z3
	VMAXPS     Z25, Z3, Z3
	VMINPS     Z26, Z3, Z3
	VSUBPS     Z11, Z3, Z3
	VMOVUPS   Z3, (DI)
	ADDQ      $64, DX
	ADDQ      $64, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       tfirst

	// Its error, at sc and min, into best.
	VMOVAPS Z16, Z7
	VPXORD  Z9, Z9, Z9
	LEAQ    T_XT(R8), DX
	LEAQ    T_WT(R8), BX
	LEAQ    T_LBEST(R8), SI
	MOVQ    $32, CX

tferr:
	VMULPS (SI), Z6, Z3
	VADDPS Z7, Z3, Z3
	VSUBPS (DX), Z3, Z3
	VMULPS Z3, Z3, Z3
	VMULPS (BX), Z3, Z3
	VADDPS Z3, Z9, Z9
	ADDQ   $64, SI
	ADDQ   $64, DX
	ADDQ   $64, BX
	DECQ   CX
	JNZ    tferr
	VMOVUPS Z9, T_BEST(R8)

tstep:
	TESTQ R10, R10
	JZ    tdone
	// iscale = n / (hi − mn)
	VMOVUPS      T_HI(R8), Z3
	VSUBPS       T_MN(R8), Z3, Z3
	VBROADCASTSS (R9), Z15
	VDIVPS       Z3, Z15, Z15

	LEAQ   T_XM(R8), SI
	LEAQ   T_XT(R8), DX
	LEAQ   T_WT(R8), BX
	LEAQ   T_LAUX(R8), DI
	MOVQ   $32, CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2

tlev:
	VMULPS    (SI), Z15, Z3
	VADDPS     Z11, Z3, Z3
	VPTERNLOGD $0xea, Z24, Z12, Z3
	VMAXPS     Z25, Z3, Z3
	VMINPS     Z26, Z3, Z3
	VSUBPS     Z11, Z3, Z3
	VMOVUPS   Z3, (DI)
	VMULPS    (BX), Z3, Z4
	VADDPS    Z4, Z0, Z0
	VMULPS    Z3, Z4, Z5
	VADDPS    Z5, Z1, Z1
	VMULPS    (DX), Z4, Z5
	VADDPS    Z5, Z2, Z2
	ADDQ      $64, SI
	ADDQ      $64, DX
	ADDQ      $64, BX
	ADDQ      $64, DI
	DECQ      CX
	JNZ       tlev

	// Z0 sumL, Z1 sumL2, Z2 sumXL. D = sumW·sumL2 − sumL·sumL.
	VMOVUPS T_SUMW(R8), Z3
	VMOVUPS T_SUMX(R8), Z4
	VMULPS  Z1, Z3, Z8
	VMULPS  Z0, Z0, Z5
	VSUBPS  Z5, Z8, Z8
	// ts = (sumW·sumXL − sumX·sumL)/D
	VMULPS  Z2, Z3, Z6
	VMULPS  Z0, Z4, Z5
	VSUBPS  Z5, Z6, Z6
	VDIVPS  Z8, Z6, Z6
	// tm = (sumL2·sumX − sumL·sumXL)/D
	VMULPS  Z4, Z1, Z7
	VMULPS  Z2, Z0, Z5
	VSUBPS  Z5, Z7, Z7
	VDIVPS  Z8, Z7, Z7
	// where tm > 0: tm = 0, ts = sumXL/sumL2
	VPXORD  Z9, Z9, Z9
	VCMPPS  $0x0e, Z9, Z7, K1
	VDIVPS  Z1, Z2, Z3
	VMOVAPS Z9, K1, Z7
	VMOVAPS Z3, K1, Z6

	LEAQ T_XT(R8), DX
	LEAQ T_WT(R8), BX
	LEAQ T_LAUX(R8), SI
	MOVQ $32, CX

terr:
	VMULPS (SI), Z6, Z3
	VADDPS Z7, Z3, Z3
	VSUBPS (DX), Z3, Z3
	VMULPS Z3, Z3, Z3
	VMULPS (BX), Z3, Z3
	VADDPS Z3, Z9, Z9
	ADDQ   $64, SI
	ADDQ   $64, DX
	ADDQ   $64, BX
	DECQ   CX
	JNZ    terr

	// better = live && D > 0 && err < best
	VPXORD   Z4, Z4, Z4
	VCMPPS   $0x0e, Z4, Z8, K2
	VCMPPS   $0x01, T_BEST(R8), Z9, K3
	KANDW    K3, K2, K2
	KANDW    K4, K2, K2
	KORTESTW K2, K2
	JZ       tnext

	VMOVUPS Z9, K2, T_BEST(R8)
	VMOVUPS Z6, K2, T_SC(R8)
	VMOVUPS Z7, K2, T_MN(R8)

	LEAQ T_XT(R8), DX
	LEAQ T_XM(R8), BX
	LEAQ T_LAUX(R8), SI
	LEAQ T_LBEST(R8), DI
	MOVQ $32, CX

tkeep:
	VMOVUPS (SI), Z3
	VMOVUPS Z3, K2, (DI)
	VMOVUPS (DX), Z3
	VSUBPS  Z7, Z3, Z3
	VMOVUPS Z3, K2, (BX)
	ADDQ    $64, SI
	ADDQ    $64, DI
	ADDQ    $64, DX
	ADDQ    $64, BX
	DECQ    CX
	JNZ     tkeep

tnext:
	ADDQ $4, R9
	DECQ R10
	JMP  tstep

tdone:
	MOVB $1, ret+48(FP)
	VZEROUPPER
	RET

tfail:
	MOVB $0, ret+48(FP)
	VZEROUPPER
	RET

// func kqRequant512(x, d, dm *float32, L *uint8, groups, per, lo, hi, off int)
//
// K-quants' final levels for groups groups of 16·per elements of x: for each group
// j whose scale d[j] is not zero, L = clamp(nearest_int((x + dm[j])/d[j]), lo, hi)
// + off as bytes; the groups whose scale is zero are left alone (kRequantize,
// quantizeQ6KBy).
TEXT ·kqRequant512(SB), NOSPLIT, $0-72
	MOVQ x+0(FP), SI
	MOVQ d+8(FP), R8
	MOVQ dm+16(FP), R9
	MOVQ L+24(FP), DI
	MOVQ groups+32(FP), CX
	MOVQ per+40(FP), R10
	MOVQ lo+48(FP), AX
	VPBROADCASTD AX, Z14
	MOVQ hi+56(FP), AX
	VPBROADCASTD AX, Z10
	MOVQ off+64(FP), AX
	VPBROADCASTD AX, Z16
	MOVL         $0x4B400000, AX
	VPBROADCASTD AX, Z11
	MOVL         $0x007fffff, AX
	VPBROADCASTD AX, Z12
	MOVL         $0x00400000, AX
	VPBROADCASTD AX, Z13

rgroup:
	MOVQ  R10, DX
	MOVL  (R8), AX
	TESTL $0x7fffffff, AX
	JZ    rskip
	VBROADCASTSS (R8), Z15
	VBROADCASTSS (R9), Z9

rchunk:
	VADDPS  (SI), Z9, Z3
	VDIVPS  Z15, Z3, Z3
	VADDPS  Z11, Z3, Z3
	VPANDD  Z12, Z3, Z3
	VPSUBD  Z13, Z3, Z3
	VPMAXSD Z14, Z3, Z3
	VPMINSD Z10, Z3, Z3
	VPADDD  Z16, Z3, Z3
	VPMOVDB Z3, (DI)
	ADDQ    $64, SI
	ADDQ    $16, DI
	DECQ    DX
	JNZ     rchunk
	JMP     rnext

rskip:
	MOVQ R10, AX
	SHLQ $6, AX
	ADDQ AX, SI
	SHRQ $2, AX
	ADDQ AX, DI

rnext:
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ CX
	JNZ  rgroup
	VZEROUPPER
	RET

// The state kqx512 works on, laid out as q6State in kquant_amd64.go: rows of 16
// lanes, lane j = group j of 16 of one Q6_K block.
#define U_XT 0
#define U_W 1024
#define U_WX 2048
#define U_LAUX 3072
#define U_LBEST 4096
#define U_MX 5120
#define U_SC 5184
#define U_BEST 5248
#define U_LIVE 5312

// q6Idx is the offsets of element 0 of the sixteen groups of a Q6_K block.
DATA q6Idx<>+0(SB)/4, $0
DATA q6Idx<>+4(SB)/4, $16
DATA q6Idx<>+8(SB)/4, $32
DATA q6Idx<>+12(SB)/4, $48
DATA q6Idx<>+16(SB)/4, $64
DATA q6Idx<>+20(SB)/4, $80
DATA q6Idx<>+24(SB)/4, $96
DATA q6Idx<>+28(SB)/4, $112
DATA q6Idx<>+32(SB)/4, $128
DATA q6Idx<>+36(SB)/4, $144
DATA q6Idx<>+40(SB)/4, $160
DATA q6Idx<>+44(SB)/4, $176
DATA q6Idx<>+48(SB)/4, $192
DATA q6Idx<>+52(SB)/4, $208
DATA q6Idx<>+56(SB)/4, $224
DATA q6Idx<>+60(SB)/4, $240
GLOBL q6Idx<>(SB), RODATA|NOPTR, $64

// func kqx512(s *q6State, x, qw, nums *float32, steps, nmax int, eps float32)
//
// make_qx_quants (rmse_type 1) for the sixteen groups of 16 of the Q6_K block x,
// lane j = group j, each lane making the scalar reference's operations in its order:
// the set-up (x, and qw or x² as weights, gathered into rows; the element of largest
// magnitude, first one on ties; live where that magnitude is at least eps), the first
// candidate −nmax/max (always kept: levels into lbest, scale Σwxl/Σwl² where that sum
// is not zero, best = scale·Σwxl), then the steps candidates nums[k]/max, each kept
// where Σwl² > 0 and (Σwxl)² > best·Σwl².
TEXT ·kqx512(SB), NOSPLIT, $0-52
	MOVQ s+0(FP), R8
	MOVQ x+8(FP), SI
	MOVQ qw+16(FP), DX
	MOVQ nums+24(FP), R9
	MOVQ steps+32(FP), R10
	MOVQ nmax+40(FP), AX
	VPBROADCASTD AX, Z10
	VCVTDQ2PS    Z10, Z21               // nmax as float
	DECQ         AX
	VPBROADCASTD AX, Z10                // hi = nmax − 1
	NEGQ         AX
	DECQ         AX
	VPBROADCASTD AX, Z14                // lo = −nmax
	MOVL         $0x4B400000, AX
	VPBROADCASTD AX, Z11
	MOVL         $0x007fffff, AX
	VPBROADCASTD AX, Z12
	MOVL         $0x00400000, AX
	VPBROADCASTD AX, Z13
	MOVL         $0x7fffffff, AX
	VPBROADCASTD AX, Z22
	VMOVDQU32    q6Idx<>(SB), Z20
	// nearest_int and the clamp on the float bits: (v & 0x7fffff) | 0x4b000000 is
	// 2²³ + the masked bits, so clamping it between 1.5·2²³ + lo and 1.5·2²³ + hi
	// and subtracting 1.5·2²³ gives float(clamp(nearest_int, lo, hi)) exactly.
	MOVL         $0x4B000000, AX
	VPBROADCASTD AX, Z24
	VPADDD       Z11, Z14, Z25
	VPADDD       Z11, Z10, Z26

	// Gather rows: x, w (qw or x·x), w·x; the largest magnitude (Z17, its element
	// Z16).
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	LEAQ   U_XT(R8), DI
	MOVQ   $16, CX

ugather:
	KXNORW     K1, K1, K1
	VGATHERDPS (SI)(Z20*4), K1, Z3
	TESTQ      DX, DX
	JZ         usq
	KXNORW     K1, K1, K1
	VGATHERDPS (DX)(Z20*4), K1, Z4
	ADDQ       $4, DX
	JMP        uw

usq:
	VMULPS Z3, Z3, Z4

uw:
	VMULPS  Z3, Z4, Z5
	VMOVUPS Z3, (DI)
	VMOVUPS Z4, U_W(DI)
	VMOVUPS Z5, U_WX(DI)
	VPANDD  Z22, Z3, Z6
	VCMPPS  $0x0e, Z17, Z6, K1
	VMOVAPS Z6, K1, Z17
	VMOVAPS Z3, K1, Z16
	ADDQ    $4, SI
	ADDQ    $64, DI
	DECQ    CX
	JNZ     ugather

	VMOVUPS      Z16, U_MX(R8)
	VBROADCASTSS eps+48(FP), Z3
	VCMPPS       $0x0d, Z3, Z17, K4     // amax ≥ eps (not amax < eps)
	KMOVW        K4, U_LIVE(R8)

	// The first candidate, iscale = −nmax/max.
	VPXORD  Z15, Z15, Z15
	VSUBPS  Z21, Z15, Z15
	VDIVPS  Z16, Z15, Z15
	LEAQ    U_XT(R8), SI
	LEAQ    U_LBEST(R8), DI
	MOVQ    $16, CX
	VPXORD  Z0, Z0, Z0
	VPXORD  Z1, Z1, Z1

ufirst:
	VMULPS    (SI), Z15, Z3
	VADDPS     Z11, Z3, Z3
	VPTERNLOGD $0xea, Z24, Z12, Z3
	VMAXPS     Z25, Z3, Z3
	VMINPS     Z26, Z3, Z3
	VSUBPS     Z11, Z3, Z3
	VMOVUPS   Z3, (DI)
	VMULPS    U_WX(SI), Z3, Z4
	VADDPS    Z4, Z0, Z0
	VMULPS    U_W(SI), Z3, Z5
	VMULPS    Z3, Z5, Z5
	VADDPS    Z5, Z1, Z1
	ADDQ      $64, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       ufirst

	// scale = suml2 ≠ 0 ? sumlx/suml2 : 0; best = scale·sumlx
	VPXORD  Z9, Z9, Z9
	VDIVPS  Z1, Z0, Z6
	VCMPPS  $0x00, Z9, Z1, K1
	VMOVAPS Z9, K1, Z6
	VMOVUPS Z6, U_SC(R8)
	VMULPS  Z0, Z6, Z7
	VMOVUPS Z7, U_BEST(R8)

ustep:
	TESTQ R10, R10
	JZ    udone
	VBROADCASTSS (R9), Z15
	VDIVPS       Z16, Z15, Z15
	LEAQ         U_XT(R8), SI
	LEAQ         U_LAUX(R8), DI
	MOVQ         $16, CX
	VPXORD       Z0, Z0, Z0
	VPXORD       Z1, Z1, Z1

ulev:
	VMULPS    (SI), Z15, Z3
	VADDPS     Z11, Z3, Z3
	VPTERNLOGD $0xea, Z24, Z12, Z3
	VMAXPS     Z25, Z3, Z3
	VMINPS     Z26, Z3, Z3
	VSUBPS     Z11, Z3, Z3
	VMOVUPS   Z3, (DI)
	VMULPS    U_WX(SI), Z3, Z4
	VADDPS    Z4, Z0, Z0
	VMULPS    U_W(SI), Z3, Z5
	VMULPS    Z3, Z5, Z5
	VADDPS    Z5, Z1, Z1
	ADDQ      $64, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       ulev

	// better = live && suml2 > 0 && sumlx·sumlx > best·suml2
	VPXORD   Z9, Z9, Z9
	VCMPPS   $0x0e, Z9, Z1, K2
	VMULPS   Z0, Z0, Z3
	VMULPS   U_BEST(R8), Z1, Z4
	VCMPPS   $0x0e, Z4, Z3, K3
	KANDW    K3, K2, K2
	KANDW    K4, K2, K2
	KORTESTW K2, K2
	JZ       unext

	VDIVPS  Z1, Z0, Z6
	VMULPS  Z0, Z6, Z7
	VMOVUPS Z6, K2, U_SC(R8)
	VMOVUPS Z7, K2, U_BEST(R8)
	LEAQ    U_LAUX(R8), SI
	LEAQ    U_LBEST(R8), DI
	MOVQ    $16, CX

ukeep:
	VMOVUPS (SI), Z3
	VMOVUPS Z3, K2, (DI)
	ADDQ    $64, SI
	ADDQ    $64, DI
	DECQ    CX
	JNZ     ukeep

unext:
	ADDQ $4, R9
	DECQ R10
	JMP  ustep

udone:
	VZEROUPPER
	RET
