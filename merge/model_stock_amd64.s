//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"

// func modelStockMergeBF16AVX512(out, base *byte, models *[]byte, nModels int, wt, wb, inv float32, n int)
//
// modelStockMergeBF16 for the first n elements (a multiple of 16), sixteen at a
// time: sum = +0 + x_0 + x_1 …, then (sum/inv)·wt + b·wb, each operation rounded
// to float32 with its operands in the order the Go compiler gives modelStockMerge's
// (which decides the payload where two NaNs meet), rounded to BF16 to nearest even,
// a NaN made quiet (as BF16_RNE).
TEXT ·modelStockMergeBF16AVX512(SB), NOSPLIT, $0-56
	MOVQ         out+0(FP), DI
	MOVQ         base+8(FP), SI
	MOVQ         models+16(FP), R8
	MOVQ         nModels+24(FP), R9
	VBROADCASTSS wt+32(FP), Z5
	VBROADCASTSS wb+36(FP), Z6
	VBROADCASTSS inv+40(FP), Z7
	MOVQ         n+48(FP), CX
	BF16_RNE512_CONSTS
	XORQ         AX, AX

eloop:
	CMPQ   AX, CX
	JGE    edone
	VPXORD Z1, Z1, Z1 // sum = +0
	MOVQ   R8, R10
	MOVQ   R9, R11

xloop:
	MOVQ      (R10), R12
	VPMOVZXWD (R12)(AX*2), Z2
	VPSLLD    $16, Z2, Z2 // x
	VADDPS    Z2, Z1, Z1  // sum + x
	ADDQ      $24, R10
	DECQ      R11
	JNZ       xloop

	VDIVPS    Z7, Z1, Z1  // sum / inv
	VMULPS    Z5, Z1, Z1  // that·wt
	VPMOVZXWD (SI)(AX*2), Z0
	VPSLLD    $16, Z0, Z0 // b
	VMULPS    Z6, Z0, Z0  // b·wb
	VADDPS    Z0, Z1, Z1  // the first + the second

	BF16_RNE512_STORE(Z1, (DI)(AX*2))
	ADDQ    $16, AX
	JMP     eloop

edone:
	VZEROUPPER
	RET

// func modelStockMergeAVX2(out, base *float32, models *[]float32, nModels int, wt, wb, inv float32, n int)
//
// modelStockMergeGo for the first n float32 elements (a multiple of 8), eight at a
// time, the operations and operand orders of modelStockMergeBF16AVX512 on decoded
// values: sum = +0 + x_0 + x_1 …, then (sum/inv)·wt + b·wb.
TEXT ·modelStockMergeAVX2(SB), NOSPLIT, $0-56
	MOVQ         out+0(FP), DI
	MOVQ         base+8(FP), SI
	MOVQ         models+16(FP), R8
	MOVQ         nModels+24(FP), R9
	VBROADCASTSS wt+32(FP), Y5
	VBROADCASTSS wb+36(FP), Y6
	VBROADCASTSS inv+40(FP), Y7
	MOVQ         n+48(FP), CX
	XORQ         AX, AX

floop:
	CMPQ  AX, CX
	JGE   fdone
	VPXOR Y1, Y1, Y1 // sum = +0
	MOVQ  R8, R10
	MOVQ  R9, R11

fxloop:
	MOVQ   (R10), R12
	VADDPS (R12)(AX*4), Y1, Y1 // sum + x
	ADDQ   $24, R10
	DECQ   R11
	JNZ    fxloop

	VDIVPS  Y7, Y1, Y1       // sum / inv
	VMULPS  Y5, Y1, Y1       // that·wt
	VMOVUPS (SI)(AX*4), Y0   // b
	VMULPS  Y6, Y0, Y0       // b·wb
	VADDPS  Y0, Y1, Y1       // the first + the second
	VMOVUPS Y1, (DI)(AX*4)
	ADDQ    $8, AX
	JMP     floop

fdone:
	VZEROUPPER
	RET
