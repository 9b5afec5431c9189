//go:build !purego

#include "textflag.h"

// func lerpAVX2(dst, a, x *float32, n int, b, c float32)
//
// dst = float32(b·a) + float32(c·x), eight at a time; n is a multiple of 8. Separate
// multiplies and add (no FMA): lerpGo's operations.
TEXT ·lerpAVX2(SB), NOSPLIT, $0-40
	MOVQ         dst+0(FP), DI
	MOVQ         a+8(FP), SI
	MOVQ         x+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS b+32(FP), Y6
	VBROADCASTSS c+36(FP), Y7

lloop:
	CMPQ    CX, $8
	JLT     ldone
	VMULPS  (SI), Y6, Y0
	VMULPS  (DX), Y7, Y1
	VADDPS  Y1, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, DI
	SUBQ    $8, CX
	JMP     lloop

ldone:
	VZEROUPPER
	RET

// func sumSqDiffAVX2(x, y *float32, n int, sums *[8]float64)
//
// sums[j mod 8] += (float64(x[j]) − float64(y[j]))², in float64, for j < n (a multiple
// of 8): sumSqDiffLanes's operations, the eight lanes in two registers.
TEXT ·sumSqDiffAVX2(SB), NOSPLIT, $0-32
	MOVQ    x+0(FP), SI
	MOVQ    y+8(FP), DX
	MOVQ    n+16(FP), CX
	MOVQ    sums+24(FP), DI
	VMOVUPD (DI), Y4
	VMOVUPD 32(DI), Y5

sloop:
	CMPQ      CX, $8
	JLT       sdone
	VCVTPS2PD (SI), Y0
	VCVTPS2PD 16(SI), Y1
	VCVTPS2PD (DX), Y2
	VCVTPS2PD 16(DX), Y3
	VSUBPD    Y2, Y0, Y0
	VSUBPD    Y3, Y1, Y1
	VMULPD    Y0, Y0, Y0
	VMULPD    Y1, Y1, Y1
	VADDPD    Y0, Y4, Y4
	VADDPD    Y1, Y5, Y5
	ADDQ      $32, SI
	ADDQ      $32, DX
	SUBQ      $8, CX
	JMP       sloop

sdone:
	VMOVUPD Y4, (DI)
	VMOVUPD Y5, 32(DI)
	VZEROUPPER
	RET
