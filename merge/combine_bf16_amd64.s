//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"

// func combineBF16AVX512(out, base *byte, models *[]byte, nModels int, c *float32, n int, form sumForm, k float32)
//
// combineBF16 for the first n elements (a multiple of 16), sixteen at a time. v
// starts as the base (sumFromBase; +0 with base nil) or as +0 (sumOntoBase,
// sumOver); for each model v = γ_i·(x − b) + v (without a base γ_i·x + v); then
// sumOntoBase ends with v·k + b (scaleOnto's) and sumOver with v / k (divide's).
// Each operation is rounded to float32 with its operands in the order of the AVX2
// kernels it stands for (addScaled's, scaleOnto's, divide's), so a NaN keeps the
// same payload, and v is rounded to BF16 to nearest even, a NaN made quiet (as
// BF16_RNE).
TEXT ·combineBF16AVX512(SB), NOSPLIT, $0-60
	MOVQ         out+0(FP), DI
	MOVQ         base+8(FP), SI
	MOVQ         models+16(FP), R8
	MOVQ         nModels+24(FP), R9
	MOVQ         c+32(FP), DX
	MOVQ         n+40(FP), CX
	MOVQ         form+48(FP), R13
	VBROADCASTSS k+56(FP), Z8
	BF16_RNE512_CONSTS
	XORQ         AX, AX

eloop:
	CMPQ      AX, CX
	JGE       edone
	VPXORD    Z1, Z1, Z1 // v = +0
	TESTQ     SI, SI
	JZ        emodels
	VPMOVZXWD (SI)(AX*2), Z0
	VPSLLD    $16, Z0, Z0 // b
	CMPQ      R13, $0     // sumFromBase
	JNE       emodels
	VMOVAPS   Z0, Z1      // v = b

emodels:
	MOVQ R8, R10
	MOVQ R9, R11
	MOVQ DX, BX

xloop:
	MOVQ         (R10), R12
	VPMOVZXWD    (R12)(AX*2), Z2
	VPSLLD       $16, Z2, Z2 // x
	TESTQ        SI, SI
	JZ           xscale
	VSUBPS       Z0, Z2, Z2  // x − b

xscale:
	VBROADCASTSS (BX), Z7
	VMULPS       Z7, Z2, Z2  // that·γ_i
	VADDPS       Z1, Z2, Z1  // that + v
	ADDQ         $24, R10
	ADDQ         $4, BX
	DECQ         R11
	JNZ          xloop

	CMPQ   R13, $1 // sumOntoBase
	JNE    ediv
	VMULPS Z8, Z1, Z1 // v·k
	VADDPS Z0, Z1, Z1 // that + b
	JMP    estore

ediv:
	CMPQ   R13, $2 // sumOver
	JNE    estore
	VDIVPS Z8, Z1, Z1 // v / k

estore:
	BF16_RNE512_STORE(Z1, (DI)(AX*2))
	ADDQ    $16, AX
	JMP     eloop

edone:
	VZEROUPPER
	RET
