//go:build !purego

#include "textflag.h"

// func addRowAVX2(w *float32, l, r *float64, k, n, stride int)
//
// For c < n (a multiple of 32): w[c] = float32(float64(w[c]) + Σⱼ l[j]·r[j·stride+c]),
// each product rounded to float64 and added in the order of j to a sum that starts
// at +0: addRowRef's operations in its order, 32 columns (8 registers) at a step.
// No FMA: the reference rounds the product and the sum separately.
TEXT ·addRowAVX2(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), DI
	MOVQ l+8(FP), SI
	MOVQ r+16(FP), DX
	MOVQ k+24(FP), R8
	MOVQ n+32(FP), CX
	MOVQ stride+40(FP), R9
	SHLQ $3, R9

group:
	CMPQ CX, $32
	JLT  done
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	VXORPD Y4, Y4, Y4
	VXORPD Y5, Y5, Y5
	VXORPD Y6, Y6, Y6
	VXORPD Y7, Y7, Y7
	MOVQ DX, R10
	MOVQ SI, R11
	MOVQ R8, BX

terms:
	TESTQ BX, BX
	JZ    store
	VBROADCASTSD (R11), Y8
	VMULPD 0(R10), Y8, Y9
	VADDPD Y9, Y0, Y0
	VMULPD 32(R10), Y8, Y10
	VADDPD Y10, Y1, Y1
	VMULPD 64(R10), Y8, Y11
	VADDPD Y11, Y2, Y2
	VMULPD 96(R10), Y8, Y12
	VADDPD Y12, Y3, Y3
	VMULPD 128(R10), Y8, Y9
	VADDPD Y9, Y4, Y4
	VMULPD 160(R10), Y8, Y10
	VADDPD Y10, Y5, Y5
	VMULPD 192(R10), Y8, Y11
	VADDPD Y11, Y6, Y6
	VMULPD 224(R10), Y8, Y12
	VADDPD Y12, Y7, Y7
	ADDQ $8, R11
	ADDQ R9, R10
	DECQ BX
	JMP  terms

store:
	VCVTPS2PD 0(DI), Y9
	VADDPD    Y0, Y9, Y0
	VCVTPD2PSY Y0, X0
	VMOVUPS   X0, 0(DI)
	VCVTPS2PD 16(DI), Y9
	VADDPD    Y1, Y9, Y1
	VCVTPD2PSY Y1, X1
	VMOVUPS   X1, 16(DI)
	VCVTPS2PD 32(DI), Y9
	VADDPD    Y2, Y9, Y2
	VCVTPD2PSY Y2, X2
	VMOVUPS   X2, 32(DI)
	VCVTPS2PD 48(DI), Y9
	VADDPD    Y3, Y9, Y3
	VCVTPD2PSY Y3, X3
	VMOVUPS   X3, 48(DI)
	VCVTPS2PD 64(DI), Y9
	VADDPD    Y4, Y9, Y4
	VCVTPD2PSY Y4, X4
	VMOVUPS   X4, 64(DI)
	VCVTPS2PD 80(DI), Y9
	VADDPD    Y5, Y9, Y5
	VCVTPD2PSY Y5, X5
	VMOVUPS   X5, 80(DI)
	VCVTPS2PD 96(DI), Y9
	VADDPD    Y6, Y9, Y6
	VCVTPD2PSY Y6, X6
	VMOVUPS   X6, 96(DI)
	VCVTPS2PD 112(DI), Y9
	VADDPD    Y7, Y9, Y7
	VCVTPD2PSY Y7, X7
	VMOVUPS   X7, 112(DI)
	ADDQ $128, DI
	ADDQ $256, DX
	SUBQ $32, CX
	JMP  group

done:
	VZEROUPPER
	RET
