//go:build !purego

#include "textflag.h"

// func addScaledDiffAVX2(dst, x, b *float32, n int, w float32)
//
// dst[j] += w·(x[j] − b[j]) for j < n (a multiple of 8), eight at a time: a float32
// difference, product and sum, each rounded, as addScaledGo does (no FMA). The
// operands go in the order of the Go compiler's SUBSS, MULSS and ADDSS there
// ((x − b)·w, then that + dst), which decides the payload of a NaN when two meet.
TEXT ·addScaledDiffAVX2(SB), NOSPLIT, $0-36
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         b+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS w+32(FP), Y7
	XORQ         AX, AX

dloop:
	CMPQ    AX, CX
	JGE     ddone
	VMOVUPS (SI)(AX*4), Y0
	VSUBPS  (DX)(AX*4), Y0, Y0
	VMULPS  Y7, Y0, Y0
	VADDPS  (DI)(AX*4), Y0, Y0
	VMOVUPS Y0, (DI)(AX*4)
	ADDQ    $8, AX
	JMP     dloop

ddone:
	VZEROUPPER
	RET

// func addScaledAVX2(dst, x *float32, n int, w float32)
//
// dst[j] += w·x[j] for j < n (a multiple of 8), eight at a time, the product rounded
// before the sum.
TEXT ·addScaledAVX2(SB), NOSPLIT, $0-28
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS w+24(FP), Y7
	XORQ         AX, AX

sloop:
	CMPQ    AX, CX
	JGE     sdone
	VMOVUPS (SI)(AX*4), Y0
	VMULPS  Y7, Y0, Y0
	VADDPS  (DI)(AX*4), Y0, Y0
	VMOVUPS Y0, (DI)(AX*4)
	ADDQ    $8, AX
	JMP     sloop

sdone:
	VZEROUPPER
	RET

// func divideAVX2(dst *float32, n int, d float32)
//
// dst[j] /= d for j < n (a multiple of 8), eight at a time: VDIVPS rounds each
// quotient as DIVSS does, with the same operand order, so NaNs come out the same.
TEXT ·divideAVX2(SB), NOSPLIT, $0-20
	MOVQ         dst+0(FP), DI
	MOVQ         n+8(FP), CX
	VBROADCASTSS d+16(FP), Y7
	XORQ         AX, AX

dloop:
	CMPQ    AX, CX
	JGE     ddone
	VMOVUPS (DI)(AX*4), Y0
	VDIVPS  Y7, Y0, Y0
	VMOVUPS Y0, (DI)(AX*4)
	ADDQ    $8, AX
	JMP     dloop

ddone:
	VZEROUPPER
	RET

// func scaleOntoAVX2(dst, base *float32, n int, w float32)
//
// dst[j] = base[j] + float32(w·dst[j]) for j < n (a multiple of 8), eight at a time:
// the product rounded, then the sum, with the operands in the order the Go loop
// (scaleOntoGo) gives its instructions, so that where two NaNs meet the same payload
// comes out (TestScaleOntoMatchesGo).
TEXT ·scaleOntoAVX2(SB), NOSPLIT, $0-28
	MOVQ         dst+0(FP), DI
	MOVQ         base+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS w+24(FP), Y7
	XORQ         AX, AX

oloop:
	CMPQ    AX, CX
	JGE     odone
	VMOVUPS (DI)(AX*4), Y0
	VMULPS  Y7, Y0, Y0
	VADDPS  (SI)(AX*4), Y0, Y0
	VMOVUPS Y0, (DI)(AX*4)
	ADDQ    $8, AX
	JMP     oloop

odone:
	VZEROUPPER
	RET
