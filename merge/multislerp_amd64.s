//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"

// func gramDiffBF16AVX2(d *float64, y, b *byte, n int)
//
// d[j] = float64(y_j) − float64(b_j) for the first n (a multiple of 8) BF16 words of
// y and b (b nil: float64(y_j)), eight at a time: the words widened to float32, then
// exactly to float64 (a NaN made quiet, as Go's conversion does), the difference
// rounded, y first as in gramDiffBF16Go.
TEXT ·gramDiffBF16AVX2(SB), NOSPLIT, $0-32
	MOVQ  d+0(FP), DI
	MOVQ  y+8(FP), SI
	MOVQ  b+16(FP), DX
	MOVQ  n+24(FP), CX
	XORQ  AX, AX
	TESTQ DX, DX
	JZ    yloop

dloop:
	CMPQ         AX, CX
	JGE          ddone
	VPMOVZXWD    (SI)(AX*2), Y0
	VPSLLD       $16, Y0, Y0
	VPMOVZXWD    (DX)(AX*2), Y1
	VPSLLD       $16, Y1, Y1
	VCVTPS2PD    X0, Y2
	VCVTPS2PD    X1, Y3
	VSUBPD       Y3, Y2, Y2
	VMOVUPD      Y2, (DI)(AX*8)
	VEXTRACTF128 $1, Y0, X0
	VEXTRACTF128 $1, Y1, X1
	VCVTPS2PD    X0, Y2
	VCVTPS2PD    X1, Y3
	VSUBPD       Y3, Y2, Y2
	VMOVUPD      Y2, 32(DI)(AX*8)
	ADDQ         $8, AX
	JMP          dloop

yloop:
	CMPQ         AX, CX
	JGE          ddone
	VPMOVZXWD    (SI)(AX*2), Y0
	VPSLLD       $16, Y0, Y0
	VCVTPS2PD    X0, Y2
	VMOVUPD      Y2, (DI)(AX*8)
	VEXTRACTF128 $1, Y0, X0
	VCVTPS2PD    X0, Y2
	VMOVUPD      Y2, 32(DI)(AX*8)
	ADDQ         $8, AX
	JMP          yloop

ddone:
	VZEROUPPER
	RET

// func gramDiffBF16AVX512(d *float64, y, b *byte, n int)
//
// gramDiffBF16AVX2 with the widening to float64 eight lanes at once.
TEXT ·gramDiffBF16AVX512(SB), NOSPLIT, $0-32
	MOVQ  d+0(FP), DI
	MOVQ  y+8(FP), SI
	MOVQ  b+16(FP), DX
	MOVQ  n+24(FP), CX
	XORQ  AX, AX
	TESTQ DX, DX
	JZ    zyloop

zdloop:
	CMPQ      AX, CX
	JGE       zdone
	VPMOVZXWD (SI)(AX*2), Y0
	VPSLLD    $16, Y0, Y0
	VPMOVZXWD (DX)(AX*2), Y1
	VPSLLD    $16, Y1, Y1
	VCVTPS2PD Y0, Z2
	VCVTPS2PD Y1, Z3
	VSUBPD    Z3, Z2, Z2
	VMOVUPD   Z2, (DI)(AX*8)
	ADDQ      $8, AX
	JMP       zdloop

zyloop:
	CMPQ      AX, CX
	JGE       zdone
	VPMOVZXWD (SI)(AX*2), Y0
	VPSLLD    $16, Y0, Y0
	VCVTPS2PD Y0, Z2
	VMOVUPD   Z2, (DI)(AX*8)
	ADDQ      $8, AX
	JMP       zyloop

zdone:
	VZEROUPPER
	RET

// func gramMulAVX2(p, a, c *float64, n int)
//
// p[j] = a[j]·c[j], rounded, for j < n (a multiple of 4), four at a time, a first.
TEXT ·gramMulAVX2(SB), NOSPLIT, $0-32
	MOVQ p+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ c+16(FP), DX
	MOVQ n+24(FP), CX
	XORQ AX, AX

mloop:
	CMPQ    AX, CX
	JGE     mdone
	VMOVUPD (SI)(AX*8), Y0
	VMULPD  (DX)(AX*8), Y0, Y0
	VMOVUPD Y0, (DI)(AX*8)
	ADDQ    $4, AX
	JMP     mloop

mdone:
	VZEROUPPER
	RET

// func gramChainsAVX(sums, p *float64, n int)
//
// sums[q] += p[q·257 + j] for j < n (n ≥ 1), in order, for the six rows q of p
// (gramFusedStride = 257 float64s apart): six chains of scalar additions side by
// side, each sum the first operand as in gramChainsGo's s += v.
TEXT ·gramChainsAVX(SB), NOSPLIT, $0-24
	MOVQ   sums+0(FP), DI
	MOVQ   p+8(FP), SI
	MOVQ   n+16(FP), CX
	VMOVSD 0(DI), X0
	VMOVSD 8(DI), X1
	VMOVSD 16(DI), X2
	VMOVSD 24(DI), X3
	VMOVSD 32(DI), X4
	VMOVSD 40(DI), X5
	XORQ   AX, AX

cloop:
	VADDSD 0(SI)(AX*8), X0, X0
	VADDSD 2056(SI)(AX*8), X1, X1
	VADDSD 4112(SI)(AX*8), X2, X2
	VADDSD 6168(SI)(AX*8), X3, X3
	VADDSD 8224(SI)(AX*8), X4, X4
	VADDSD 10280(SI)(AX*8), X5, X5
	INCQ   AX
	CMPQ   AX, CX
	JLT    cloop
	VMOVSD X0, 0(DI)
	VMOVSD X1, 8(DI)
	VMOVSD X2, 16(DI)
	VMOVSD X3, 24(DI)
	VMOVSD X4, 32(DI)
	VMOVSD X5, 40(DI)
	RET

// func gramChains3AVX(sums, d *float64, n int, stock bool)
//
// For three rows d0, d1, d2 of differences (257 float64s apart) and j < n (n ≥ 1),
// in order, the six pairs' products rounded and added to their sums, each sum the
// first operand of its addition, as gramMul and gramChainsAVX do one after the
// other. The products' first operands (which decide the payload where two NaNs
// meet), and the sums' order: stock false (multislerp, gramChunkOperands(3)): d0·d0,
// d1·d0, d2·d0, d1·d1, d1·d2, d2·d2; stock true (model_stock): d0·d1, d0·d2,
// d1·d2, d0·d0, d1·d1, d2·d2.
TEXT ·gramChains3AVX(SB), NOSPLIT, $0-25
	MOVQ    sums+0(FP), DI
	MOVQ    d+8(FP), SI
	MOVQ    n+16(FP), CX
	MOVBLZX stock+24(FP), DX
	VMOVSD  0(DI), X0
	VMOVSD  8(DI), X1
	VMOVSD  16(DI), X2
	VMOVSD  24(DI), X3
	VMOVSD  32(DI), X4
	VMOVSD  40(DI), X5
	XORQ    AX, AX
	TESTQ   DX, DX
	JNZ     tstock

tslerp:
	VMOVSD 0(SI)(AX*8), X10
	VMOVSD 2056(SI)(AX*8), X11
	VMOVSD 4112(SI)(AX*8), X12
	VMULSD X10, X10, X6  // d0·d0
	VMULSD X10, X11, X7  // d1·d0
	VMULSD X10, X12, X8  // d2·d0
	VMULSD X11, X11, X9  // d1·d1
	VMULSD X12, X11, X13 // d1·d2
	VMULSD X12, X12, X14 // d2·d2
	VADDSD X6, X0, X0
	VADDSD X7, X1, X1
	VADDSD X8, X2, X2
	VADDSD X9, X3, X3
	VADDSD X13, X4, X4
	VADDSD X14, X5, X5
	INCQ   AX
	CMPQ   AX, CX
	JLT    tslerp
	JMP    tdone

tstock:
	VMOVSD 0(SI)(AX*8), X10
	VMOVSD 2056(SI)(AX*8), X11
	VMOVSD 4112(SI)(AX*8), X12
	VMULSD X11, X10, X6  // d0·d1
	VMULSD X12, X10, X7  // d0·d2
	VMULSD X12, X11, X8  // d1·d2
	VMULSD X10, X10, X9  // d0·d0
	VMULSD X11, X11, X13 // d1·d1
	VMULSD X12, X12, X14 // d2·d2
	VADDSD X6, X0, X0
	VADDSD X7, X1, X1
	VADDSD X8, X2, X2
	VADDSD X9, X3, X3
	VADDSD X13, X4, X4
	VADDSD X14, X5, X5
	INCQ   AX
	CMPQ   AX, CX
	JLT    tstock

tdone:
	VMOVSD X0, 0(DI)
	VMOVSD X1, 8(DI)
	VMOVSD X2, 16(DI)
	VMOVSD X3, 24(DI)
	VMOVSD X4, 32(DI)
	VMOVSD X5, 40(DI)
	RET

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
