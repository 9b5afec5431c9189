//go:build !purego

#include "textflag.h"

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
	MOVL         $0x7fffffff, AX
	VPBROADCASTD AX, Z4
	MOVL         $0x7f800000, AX
	VPBROADCASTD AX, Z14
	MOVL         $0x00400000, AX
	VPBROADCASTD AX, Z15
	MOVL         $0x7fff, AX
	VPBROADCASTD AX, Z16
	MOVL         $1, AX
	VPBROADCASTD AX, Z17
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

	// To BF16, as BF16_RNE: u + 0x7fff + lsb, or u with the quiet bit where a NaN.
	VPSRLD  $16, Z1, Z10
	VPANDD  Z17, Z10, Z10
	VPADDD  Z10, Z1, Z10
	VPADDD  Z16, Z10, Z10
	VPANDD  Z4, Z1, Z11
	VPCMPUD $6, Z14, Z11, K5 // |u| > inf: a NaN
	VPORD   Z15, Z1, K5, Z10
	VPSRLD  $16, Z10, Z10
	VPMOVDW Z10, (DI)(AX*2)
	ADDQ    $16, AX
	JMP     eloop

edone:
	VZEROUPPER
	RET
