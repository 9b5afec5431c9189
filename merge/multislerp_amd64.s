//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"

// func combineBF16AVX512(out, base *byte, models *[]byte, nModels int, c *float32, n int)
//
// combineBF16 for the first n elements (a multiple of 16), sixteen at a time: v the
// base (+0 with base nil), then for each model v = γ_i·(x − b) + v (without a base
// γ_i·x + v), each operation rounded to float32 with its operands in the order of
// addScaled's (so a NaN keeps the same payload), and v rounded to BF16 to nearest
// even, a NaN made quiet (as BF16_RNE).
TEXT ·combineBF16AVX512(SB), NOSPLIT, $0-48
	MOVQ         out+0(FP), DI
	MOVQ         base+8(FP), SI
	MOVQ         models+16(FP), R8
	MOVQ         nModels+24(FP), R9
	MOVQ         c+32(FP), DX
	MOVQ         n+40(FP), CX
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

	BF16_RNE512_STORE(Z1, (DI)(AX*2))
	ADDQ    $16, AX
	JMP     eloop

edone:
	VZEROUPPER
	RET
