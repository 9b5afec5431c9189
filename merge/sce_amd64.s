//go:build !purego

#include "textflag.h"

DATA sceAbs<>+0(SB)/8, $0x7fffffff7fffffff
DATA sceAbs<>+8(SB)/8, $0x7fffffff7fffffff
GLOBL sceAbs<>(SB), RODATA|NOPTR, $16

// func sceVarianceAVX2(dst *uint32, base *float32, models *[]float32, nModels, n int, inv float64)
// Per element, as sceVarianceRef: mean = ((+0 + d_0) + d_1 …)·inv with d_k the
// float32 x_k − b widened; v = (+0 + (d_0 − mean)² + …)·inv; dst = |float32(v)| bits.
// Each operation takes its operands in the order of the Go statement (the
// accumulator first); a NaN's payload may still differ from the compiled Go's, whose
// operand order the compiler picks.
TEXT ·sceVarianceAVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ models+16(FP), R8
	MOVQ nModels+24(FP), R9
	MOVQ n+32(FP), CX
	VBROADCASTSD inv+40(FP), Y7
	VMOVUPS sceAbs<>(SB), X6
	XORQ AX, AX // element index
loop:
	CMPQ AX, CX
	JGE  done
	VMOVUPS (SI)(AX*4), X0 // b
	VXORPD  Y1, Y1, Y1     // mean
	MOVQ R8, R10
	MOVQ R9, R11
mloop:
	MOVQ    (R10), R12
	VMOVUPS (R12)(AX*4), X2
	VSUBPS  X0, X2, X2 // x − b in float32
	VCVTPS2PD X2, Y2
	VADDPD  Y2, Y1, Y1
	ADDQ $24, R10
	DECQ R11
	JNZ  mloop
	VMULPD  Y7, Y1, Y1 // mean·inv
	VXORPD  Y3, Y3, Y3 // v
	MOVQ R8, R10
	MOVQ R9, R11
vloop:
	MOVQ    (R10), R12
	VMOVUPS (R12)(AX*4), X2
	VSUBPS  X0, X2, X2
	VCVTPS2PD X2, Y2
	VSUBPD  Y1, Y2, Y2 // d − mean
	VMULPD  Y2, Y2, Y2
	VADDPD  Y2, Y3, Y3
	ADDQ $24, R10
	DECQ R11
	JNZ  vloop
	VMULPD  Y7, Y3, Y3 // v·inv
	VCVTPD2PSY Y3, X3  // to float32, to nearest even
	VANDPS  X6, X3, X3
	VMOVUPS X3, (DI)(AX*4)
	ADDQ $4, AX
	JMP  loop
done:
	VZEROUPPER
	RET
