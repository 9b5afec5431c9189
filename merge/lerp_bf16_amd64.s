//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"

// Constants, 8 lanes of 32 bits each.
DATA bf16hi<>+0(SB)/8, $0xffff0000ffff0000
DATA bf16hi<>+8(SB)/8, $0xffff0000ffff0000
DATA bf16hi<>+16(SB)/8, $0xffff0000ffff0000
DATA bf16hi<>+24(SB)/8, $0xffff0000ffff0000
GLOBL bf16hi<>(SB), RODATA|NOPTR, $32

// func lerpBF16AVX2(out, a, x *uint16, n int, b, c float32, sums *[16]float64)
//
// The same arithmetic as lerpBF16Generic, eight elements at a time: products and sum
// in float32 (separate multiply and add, no FMA), round to nearest even into BF16 with
// NaN kept quiet, and the squared distances summed in float64 into lanes j mod 8.
TEXT ·lerpBF16AVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ x+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS b+32(FP), Y14
	VBROADCASTSS c+36(FP), Y15
	MOVQ sums+40(FP), R8
	VMOVUPD 0(R8), Y10
	VMOVUPD 32(R8), Y11
	VMOVUPD 64(R8), Y12
	VMOVUPD 96(R8), Y13

loop:
	CMPQ CX, $8
	JLT  done
	VPMOVZXWD (SI), Y0
	VPSLLD    $16, Y0, Y0         // anchor as float32
	VPMOVZXWD (DX), Y1
	VPSLLD    $16, Y1, Y1         // current as float32
	VMULPS    Y14, Y0, Y2         // b·a
	VMULPS    Y15, Y1, Y3         // c·x
	VADDPS    Y3, Y2, Y2          // b·a + c·x
	BF16_RNE(Y2, bf16ones<>(SB), Y3, Y4, Y5)
	VPAND     bf16hi<>(SB), Y3, Y3   // the rounded value, as float32
	VPSRLD    $16, Y3, Y4
	VEXTRACTI128 $1, Y4, X5
	VPACKUSDW X5, X4, X4
	VMOVDQU   X4, (DI)

	VCVTPS2PD X0, Y5
	VCVTPS2PD X1, Y6
	VCVTPS2PD X3, Y7
	VSUBPD    Y5, Y6, Y6
	VSUBPD    Y5, Y7, Y7
	VMULPD    Y6, Y6, Y6
	VMULPD    Y7, Y7, Y7
	VADDPD    Y6, Y10, Y10
	VADDPD    Y7, Y12, Y12
	VEXTRACTF128 $1, Y0, X0
	VEXTRACTF128 $1, Y1, X1
	VEXTRACTF128 $1, Y3, X3
	VCVTPS2PD X0, Y5
	VCVTPS2PD X1, Y6
	VCVTPS2PD X3, Y7
	VSUBPD    Y5, Y6, Y6
	VSUBPD    Y5, Y7, Y7
	VMULPD    Y6, Y6, Y6
	VMULPD    Y7, Y7, Y7
	VADDPD    Y6, Y11, Y11
	VADDPD    Y7, Y13, Y13

	ADDQ $16, SI
	ADDQ $16, DX
	ADDQ $16, DI
	SUBQ $8, CX
	JMP  loop

done:
	VMOVUPD Y10, 0(R8)
	VMOVUPD Y11, 32(R8)
	VMOVUPD Y12, 64(R8)
	VMOVUPD Y13, 96(R8)
	VZEROUPPER
	RET

// func lerpBF16AVX512(out, a, x *uint16, n int, b, c float32, sums *[16]float64)
//
// lerpBF16AVX2 sixteen elements at a time (n a multiple of 16): the same products,
// sum and rounding, and the squared distances of elements j and j+8 added, in that
// order, into lane j mod 8, so that every lane adds its elements in index order as
// the AVX2 kernel and the Go loop do.
TEXT ·lerpBF16AVX512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ x+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS b+32(FP), Z18
	VBROADCASTSS c+36(FP), Z19
	MOVQ sums+40(FP), R8
	BF16_RNE512_CONSTS
	VMOVUPD 0(R8), Z12  // Σ (x−a)², lanes 0..7
	VMOVUPD 64(R8), Z13 // Σ (out−a)², lanes 0..7

loop512:
	CMPQ CX, $16
	JLT  done512
	VPMOVZXWD (SI), Z0
	VPSLLD    $16, Z0, Z0 // anchor as float32
	VPMOVZXWD (DX), Z1
	VPSLLD    $16, Z1, Z1 // current as float32
	VMULPS    Z18, Z0, Z2 // b·a
	VMULPS    Z19, Z1, Z3 // c·x
	VADDPS    Z3, Z2, Z2  // b·a + c·x

	// Round to nearest even (BF16_RNE512_STORE, keeping the rounded value).
	VPSRLD  $16, Z2, Z10
	VPANDD  Z17, Z10, Z10
	VPADDD  Z10, Z2, Z10
	VPADDD  Z16, Z10, Z10
	VPANDD  Z4, Z2, Z11
	VPCMPUD $6, Z14, Z11, K5
	VPORD   Z15, Z2, K5, Z10
	VPSRLD  $16, Z10, Z10
	VPMOVDW Z10, (DI)
	VPSLLD  $16, Z10, Z3 // the rounded value, as float32

	VCVTPS2PD Y0, Z5
	VCVTPS2PD Y1, Z6
	VCVTPS2PD Y3, Z7
	VSUBPD    Z5, Z6, Z6
	VSUBPD    Z5, Z7, Z7
	VMULPD    Z6, Z6, Z6
	VMULPD    Z7, Z7, Z7
	VADDPD    Z6, Z12, Z12
	VADDPD    Z7, Z13, Z13
	VEXTRACTF32X8 $1, Z0, Y0
	VEXTRACTF32X8 $1, Z1, Y1
	VEXTRACTF32X8 $1, Z3, Y3
	VCVTPS2PD Y0, Z5
	VCVTPS2PD Y1, Z6
	VCVTPS2PD Y3, Z7
	VSUBPD    Z5, Z6, Z6
	VSUBPD    Z5, Z7, Z7
	VMULPD    Z6, Z6, Z6
	VMULPD    Z7, Z7, Z7
	VADDPD    Z6, Z12, Z12
	VADDPD    Z7, Z13, Z13

	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	SUBQ $16, CX
	JMP  loop512

done512:
	VMOVUPD Z12, 0(R8)
	VMOVUPD Z13, 64(R8)
	VZEROUPPER
	RET
