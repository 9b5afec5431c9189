//go:build !purego

#include "textflag.h"

// LANES4 adds four elements, b, τx and τy in float32 in the low halves of three
// registers, to lanes 0..3 of Σ b² (Y6), Σ τx² (Y7), Σ τy² (Y8) and Σ τx·τy (Y9),
// widened to float64. Uses Y3, Y4, Y5, Y12.
#define LANES4(b, tx, ty) \
	VCVTPS2PD b, Y3;       \
	VMULPD    Y3, Y3, Y3;  \
	VADDPD    Y3, Y6, Y6;  \
	VCVTPS2PD tx, Y4;      \
	VCVTPS2PD ty, Y5;      \
	VMULPD    Y5, Y4, Y12; \
	VADDPD    Y12, Y9, Y9; \
	VMULPD    Y4, Y4, Y4;  \
	VADDPD    Y4, Y7, Y7;  \
	VMULPD    Y5, Y5, Y5;  \
	VADDPD    Y5, Y8, Y8

// func addPairAVX2(b, x, y *float32, n int, l *pairLanes)
//
// Adds elements [0, n) of a block (n a multiple of 8) to l: addPairGo's operations,
// eight elements at a time. τx = x − b and τy = y − b in float32; then, widened to
// float64, elements j..j+3 go to lanes 0..3 and elements j+4..j+7 to lanes 0..3 after
// them (l's order). The sign counts run on eight uint32 lanes.
//
// l's layout (pairLanes): base 0, sqA 32, sqB 64, dot 96 ([4]float64 each),
// conflict 128, both 160 ([8]uint32 each).
TEXT ·addPairAVX2(SB), NOSPLIT, $0-40
	MOVQ b+0(FP), SI
	MOVQ x+8(FP), DX
	MOVQ y+16(FP), R8
	MOVQ n+24(FP), CX
	MOVQ l+32(FP), DI

	VMOVUPD  (DI), Y6     // Σ b²
	VMOVUPD  32(DI), Y7   // Σ τx²
	VMOVUPD  64(DI), Y8   // Σ τy²
	VMOVUPD  96(DI), Y9   // Σ τx·τy
	VMOVDQU  128(DI), Y10 // conflicts
	VMOVDQU  160(DI), Y11 // both non-zero
	VPXOR    Y15, Y15, Y15
	VPCMPEQD Y14, Y14, Y14 // all ones

loop:
	CMPQ    CX, $8
	JLT     done
	VMOVUPS (SI), Y0
	VMOVUPS (DX), Y1
	VSUBPS  Y0, Y1, Y1 // τx
	VMOVUPS (R8), Y2
	VSUBPS  Y0, Y2, Y2 // τy

	// Sign counts: nz = τx ≠ ±0 and τy ≠ ±0 (all ones), conflict = nz and the
	// signs differ; each adds 1 to its lane by subtracting −1.
	VPSLLD   $1, Y1, Y3
	VPCMPEQD Y15, Y3, Y3
	VPSLLD   $1, Y2, Y4
	VPCMPEQD Y15, Y4, Y4
	VPOR     Y4, Y3, Y3
	VPXOR    Y14, Y3, Y3 // nz
	VPSUBD   Y3, Y11, Y11
	VPXOR    Y2, Y1, Y4
	VPSRAD   $31, Y4, Y4
	VPAND    Y3, Y4, Y4
	VPSUBD   Y4, Y10, Y10

	// Elements j..j+3, then j+4..j+7.
	LANES4(X0, X1, X2)
	VEXTRACTF128 $1, Y0, X0
	VEXTRACTF128 $1, Y1, X1
	VEXTRACTF128 $1, Y2, X2
	LANES4(X0, X1, X2)

	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, R8
	SUBQ $8, CX
	JMP  loop

done:
	VMOVUPD Y6, (DI)
	VMOVUPD Y7, 32(DI)
	VMOVUPD Y8, 64(DI)
	VMOVUPD Y9, 96(DI)
	VMOVDQU Y10, 128(DI)
	VMOVDQU Y11, 160(DI)
	VZEROUPPER
	RET
