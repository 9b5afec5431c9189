//go:build !purego

#include "textflag.h"

// The general task-vector combine (combineTaskVectors), column by column: each model's
// weighted delta is added into a running sum, eight elements at a time. The float32
// operations and their order are addTaskVectors' (tested bit for bit against it):
// first operands as in the Go expressions, one rounding per operation, no FMA.

// func tvDeltaAVX2(sum, d, x, b *float32, keep *bool, elem *float32, scale, w float32, n int)
// v = float32(w·float32(s·(x[j] − b[j]))) where keep[j], +0 elsewhere, with s = elem[j]
// (elem not nil) or scale; d[j] = v (d not nil); sum[j] = sum[j] + v. n: a multiple of 8.
TEXT ·tvDeltaAVX2(SB), NOSPLIT, $0-64
	MOVQ sum+0(FP), DI
	MOVQ d+8(FP), R10
	MOVQ x+16(FP), SI
	MOVQ b+24(FP), DX
	MOVQ keep+32(FP), R8
	MOVQ elem+40(FP), R9
	VBROADCASTSS scale+48(FP), Y5
	VBROADCASTSS w+52(FP), Y6
	MOVQ n+56(FP), CX
	VPXOR Y7, Y7, Y7
	XORQ AX, AX // byte offset of the element
	XORQ BX, BX // element index, for the masks
dloop:
	CMPQ CX, $8
	JLT  ddone
	VMOVUPS   (SI)(AX*1), Y0
	VMOVUPS   (DX)(AX*1), Y1
	VSUBPS    Y1, Y0, Y0       // δ = x − b
	TESTQ     R9, R9
	JZ        dscalar
	VMOVUPS   (R9)(AX*1), Y1
	VMULPS    Y0, Y1, Y0       // elem·δ
	JMP       dweight
dscalar:
	VMULPS    Y0, Y5, Y0       // scale·δ
dweight:
	VMULPS    Y0, Y6, Y0       // w·(s·δ)
	VPMOVZXBD (R8)(BX*1), Y2   // the eight keep bytes as 0 or 1
	VPCMPEQD  Y7, Y2, Y2       // all ones where dropped
	VPANDN    Y0, Y2, Y0       // dropped entries become +0
	TESTQ     R10, R10
	JZ        dsum
	VMOVUPS   Y0, (R10)(AX*1)
dsum:
	VMOVUPS   (DI)(AX*1), Y3
	VADDPS    Y0, Y3, Y3       // sum + v (sum the first operand, as in Go)
	VMOVUPS   Y3, (DI)(AX*1)
	ADDQ $32, AX
	ADDQ $8, BX
	SUBQ $8, CX
	JMP  dloop
ddone:
	VZEROUPPER
	RET

// func tvFinishAVX2(dst, base *float32, lambda float32, n int)
// dst[j] = base[j] + float32(λ·dst[j]). n: a multiple of 8.
TEXT ·tvFinishAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	VBROADCASTSS lambda+16(FP), Y6
	MOVQ n+24(FP), CX
floop:
	CMPQ CX, $8
	JLT  fdone
	VMOVUPS (DI), Y0
	VMULPS  Y0, Y6, Y0 // λ·sum
	VMOVUPS (SI), Y1
	VADDPS  Y0, Y1, Y0 // base + λ·sum
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	SUBQ $8, CX
	JMP  floop
fdone:
	VZEROUPPER
	RET

// func keepBandAVX2(keep *bool, mags *uint32, n int, loGT, hiGT int32, loTie, hiTie uint32) int
// keep[j] = mags[j] > loGT && !(mags[j] > hiGT) (signed compares), eight at a time,
// stopping before the first group of eight that holds an element equal to loTie or
// hiTie (those need the tie counts, kept in Go). n: a multiple of 8. Returns how many
// elements it did.
TEXT ·keepBandAVX2(SB), NOSPLIT, $0-48
	MOVQ keep+0(FP), DI
	MOVQ mags+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL         loGT+24(FP), AX
	VMOVD        AX, X4
	VPBROADCASTD X4, Y4
	MOVL         hiGT+28(FP), AX
	VMOVD        AX, X5
	VPBROADCASTD X5, Y5
	MOVL         loTie+32(FP), AX
	VMOVD        AX, X6
	VPBROADCASTD X6, Y6
	MOVL         hiTie+36(FP), AX
	VMOVD        AX, X7
	VPBROADCASTD X7, Y7
	MOVQ $0x0101010101010101, R8
	MOVQ $0x8040201008040201, R9
	MOVQ $0x7f7f7f7f7f7f7f7f, R10
	XORQ DX, DX
bloop:
	CMPQ CX, $8
	JLT  bdone
	VMOVDQU  (SI), Y0
	VPCMPEQD Y6, Y0, Y1
	VPCMPEQD Y7, Y0, Y2
	VPOR     Y2, Y1, Y1
	VPTEST   Y1, Y1
	JNZ      bdone      // an element at a tie: Go counts it
	VPCMPGTD Y4, Y0, Y1 // above the lower cut
	VPCMPGTD Y5, Y0, Y2 // above the upper cut
	VPANDN   Y1, Y2, Y1
	VMOVMSKPS Y1, AX    // bit k: element k kept
	IMULQ R8, AX        // as in dareKeepAVX2: bit k to byte k
	ANDQ  R9, AX
	ADDQ  R10, AX
	SHRQ  $7, AX
	ANDQ  R8, AX
	MOVQ  AX, (DI)
	ADDQ $32, SI
	ADDQ $8, DI
	ADDQ $8, DX
	SUBQ $8, CX
	JMP  bloop
bdone:
	MOVQ DX, ret+40(FP)
	VZEROUPPER
	RET

DATA tvLaneBits<>+0(SB)/8, $0x0000000200000001
DATA tvLaneBits<>+8(SB)/8, $0x0000000800000004
DATA tvLaneBits<>+16(SB)/8, $0x0000002000000010
DATA tvLaneBits<>+24(SB)/8, $0x0000008000000040
GLOBL tvLaneBits<>(SB), RODATA|NOPTR, $32

// func tvDeltaBitsAVX2(sum, d, x, b *float32, bits *byte, elem *float32, scale, w float32, n int)
// tvDeltaAVX2 with the keep masks packed (keepCache's: bit j%8 of bits[j/8] is
// keep[j]), read a byte per eight elements: the byte broadcast, each lane's bit
// selected and compared with 0. n: a multiple of 8.
TEXT ·tvDeltaBitsAVX2(SB), NOSPLIT, $0-64
	MOVQ sum+0(FP), DI
	MOVQ d+8(FP), R10
	MOVQ x+16(FP), SI
	MOVQ b+24(FP), DX
	MOVQ bits+32(FP), R8
	MOVQ elem+40(FP), R9
	VBROADCASTSS scale+48(FP), Y5
	VBROADCASTSS w+52(FP), Y6
	MOVQ n+56(FP), CX
	VPXOR   Y7, Y7, Y7
	VMOVDQU tvLaneBits<>(SB), Y8
	XORQ AX, AX // byte offset of the element
	XORQ BX, BX // byte of the masks
bloop:
	CMPQ CX, $8
	JLT  bdone
	VMOVUPS   (SI)(AX*1), Y0
	VMOVUPS   (DX)(AX*1), Y1
	VSUBPS    Y1, Y0, Y0       // δ = x − b
	TESTQ     R9, R9
	JZ        bscalar
	VMOVUPS   (R9)(AX*1), Y1
	VMULPS    Y0, Y1, Y0       // elem·δ
	JMP       bweight
bscalar:
	VMULPS    Y0, Y5, Y0       // scale·δ
bweight:
	VMULPS    Y0, Y6, Y0       // w·(s·δ)
	MOVBLZX   (R8)(BX*1), R11
	MOVD      R11, X2
	VPBROADCASTD X2, Y2
	VPAND     Y8, Y2, Y2       // lane k: bit k of the byte
	VPCMPEQD  Y7, Y2, Y2       // all ones where dropped
	VPANDN    Y0, Y2, Y0       // dropped entries become +0
	TESTQ     R10, R10
	JZ        bsum
	VMOVUPS   Y0, (R10)(AX*1)
bsum:
	VMOVUPS   (DI)(AX*1), Y3
	VADDPS    Y0, Y3, Y3       // sum + v (sum the first operand, as in Go)
	VMOVUPS   Y3, (DI)(AX*1)
	ADDQ $32, AX
	INCQ BX
	SUBQ $8, CX
	JMP  bloop
bdone:
	VZEROUPPER
	RET

// func packBoolsAVX512(dst *uint64, src *bool, n int)
// dst[k] = the bits of src[64k : 64k+64] (bit i: src[64k+i] != 0) for 64k < n (a
// multiple of 64, at least 64): the bytes tested against themselves into a mask.
TEXT ·packBoolsAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
ploop:
	VMOVDQU8 (SI), Z0
	VPTESTMB Z0, Z0, K1
	KMOVQ    K1, (DI)
	ADDQ     $64, SI
	ADDQ     $8, DI
	SUBQ     $64, CX
	JNZ      ploop
	VZEROUPPER
	RET

DATA l1KeepShuf<>+0(SB)/8, $0x0d0905010c080400
DATA l1KeepShuf<>+8(SB)/8, $0x0f0b07030e0a0602
GLOBL l1KeepShuf<>(SB), RODATA|NOPTR, $16

// func l1ChainAVX2(acc *[8]float64, base, x0, x1, x2, x3 *float32, k0, k1, k2, k3 *bool, n int)
// l1SumsChain for four models over j < n (a multiple of 4, at least 4), the models
// as the four float64 lanes: acc[i] += |x_i[j] − base[j]| and acc[4+i] += the same
// where k_i[j] (else +0), in element order. Four elements at a time: the four
// models' float32 deltas transposed to one vector per element, the keep bytes
// shuffled to element order and widened to lane masks.
TEXT ·l1ChainAVX2(SB), NOSPLIT, $0-88
	MOVQ acc+0(FP), AX
	MOVQ base+8(FP), BX
	MOVQ x0+16(FP), R8
	MOVQ x1+24(FP), R9
	MOVQ x2+32(FP), R10
	MOVQ x3+40(FP), R11
	MOVQ k0+48(FP), R12
	MOVQ k1+56(FP), R13
	MOVQ k2+64(FP), R14
	MOVQ k3+72(FP), R15
	MOVQ n+80(FP), CX
	VMOVUPD (AX), Y0   // Σ|δ| per model
	VMOVUPD 32(AX), Y1 // Σ kept |δ|
	VPCMPEQQ Y15, Y15, Y15
	VPSRLQ   $1, Y15, Y15 // clears the sign
	VMOVDQU  l1KeepShuf<>(SB), X14
	VPXOR    X13, X13, X13
	XORQ     DX, DX

lloop:
	VMOVUPS (BX)(DX*4), X8
	VMOVUPS (R8)(DX*4), X2
	VSUBPS  X8, X2, X2
	VMOVUPS (R9)(DX*4), X3
	VSUBPS  X8, X3, X3
	VMOVUPS (R10)(DX*4), X4
	VSUBPS  X8, X4, X4
	VMOVUPS (R11)(DX*4), X5
	VSUBPS  X8, X5, X5
	VUNPCKLPS X3, X2, X6  // d0[0] d1[0] d0[1] d1[1]
	VUNPCKHPS X3, X2, X7  // d0[2] d1[2] d0[3] d1[3]
	VUNPCKLPS X5, X4, X9  // d2[0] d3[0] d2[1] d3[1]
	VUNPCKHPS X5, X4, X10 // d2[2] d3[2] d2[3] d3[3]
	VMOVLHPS  X9, X6, X2  // element 0: d0[0] d1[0] d2[0] d3[0]
	VMOVHLPS  X6, X9, X3  // element 1
	VMOVLHPS  X10, X7, X4 // element 2
	VMOVHLPS  X7, X10, X5 // element 3
	MOVL    (R12)(DX*1), SI
	VMOVD   SI, X11
	MOVL    (R13)(DX*1), SI
	VPINSRD $1, SI, X11, X11
	MOVL    (R14)(DX*1), SI
	VPINSRD $2, SI, X11, X11
	MOVL    (R15)(DX*1), SI
	VPINSRD $3, SI, X11, X11
	VPSHUFB X14, X11, X11 // k0[0] k1[0] k2[0] k3[0] k0[1] …
	VPSUBB  X11, X13, X11 // 1 → 0xff

	VCVTPS2PD X2, Y6
	VANDPD    Y15, Y6, Y6
	VADDPD    Y6, Y0, Y0
	VPMOVSXBQ X11, Y12
	VANDPD    Y12, Y6, Y6
	VADDPD    Y6, Y1, Y1

	VCVTPS2PD X3, Y6
	VANDPD    Y15, Y6, Y6
	VADDPD    Y6, Y0, Y0
	VPSRLDQ   $4, X11, X12
	VPMOVSXBQ X12, Y12
	VANDPD    Y12, Y6, Y6
	VADDPD    Y6, Y1, Y1

	VCVTPS2PD X4, Y6
	VANDPD    Y15, Y6, Y6
	VADDPD    Y6, Y0, Y0
	VPSRLDQ   $8, X11, X12
	VPMOVSXBQ X12, Y12
	VANDPD    Y12, Y6, Y6
	VADDPD    Y6, Y1, Y1

	VCVTPS2PD X5, Y6
	VANDPD    Y15, Y6, Y6
	VADDPD    Y6, Y0, Y0
	VPSRLDQ   $12, X11, X12
	VPMOVSXBQ X12, Y12
	VANDPD    Y12, Y6, Y6
	VADDPD    Y6, Y1, Y1

	ADDQ $4, DX
	CMPQ DX, CX
	JB   lloop
	VMOVUPD Y0, (AX)
	VMOVUPD Y1, 32(AX)
	VZEROUPPER
	RET
