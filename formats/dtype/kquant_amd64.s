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
