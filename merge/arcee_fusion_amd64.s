//go:build !purego

#include "textflag.h"

// Four copies of each constant, for 256-bit memory operands: the KL divergence's
// 1e-8, the bounds of a positive normal number, and the constants and masks of the
// logarithm of Go's math.Log on amd64 (fdlibm's: Frexp's masks, √2/2, L1..L7, ln 2 in
// two parts; 2^52 and 2^52 + 1022 turn the exponent bits into a float64).
DATA arceeklconst<>+0(SB)/8, $1e-08
DATA arceeklconst<>+8(SB)/8, $1e-08
DATA arceeklconst<>+16(SB)/8, $1e-08
DATA arceeklconst<>+24(SB)/8, $1e-08
DATA arceeklconst<>+32(SB)/8, $0x0010000000000000
DATA arceeklconst<>+40(SB)/8, $0x0010000000000000
DATA arceeklconst<>+48(SB)/8, $0x0010000000000000
DATA arceeklconst<>+56(SB)/8, $0x0010000000000000
DATA arceeklconst<>+64(SB)/8, $0x7FEFFFFFFFFFFFFF
DATA arceeklconst<>+72(SB)/8, $0x7FEFFFFFFFFFFFFF
DATA arceeklconst<>+80(SB)/8, $0x7FEFFFFFFFFFFFFF
DATA arceeklconst<>+88(SB)/8, $0x7FEFFFFFFFFFFFFF
DATA arceeklconst<>+96(SB)/8, $0x000FFFFFFFFFFFFF
DATA arceeklconst<>+104(SB)/8, $0x000FFFFFFFFFFFFF
DATA arceeklconst<>+112(SB)/8, $0x000FFFFFFFFFFFFF
DATA arceeklconst<>+120(SB)/8, $0x000FFFFFFFFFFFFF
DATA arceeklconst<>+128(SB)/8, $0x3FE0000000000000
DATA arceeklconst<>+136(SB)/8, $0x3FE0000000000000
DATA arceeklconst<>+144(SB)/8, $0x3FE0000000000000
DATA arceeklconst<>+152(SB)/8, $0x3FE0000000000000
DATA arceeklconst<>+160(SB)/8, $0x4330000000000000
DATA arceeklconst<>+168(SB)/8, $0x4330000000000000
DATA arceeklconst<>+176(SB)/8, $0x4330000000000000
DATA arceeklconst<>+184(SB)/8, $0x4330000000000000
DATA arceeklconst<>+192(SB)/8, $0x43300000000003FE
DATA arceeklconst<>+200(SB)/8, $0x43300000000003FE
DATA arceeklconst<>+208(SB)/8, $0x43300000000003FE
DATA arceeklconst<>+216(SB)/8, $0x43300000000003FE
DATA arceeklconst<>+224(SB)/8, $7.07106781186547524401e-01
DATA arceeklconst<>+232(SB)/8, $7.07106781186547524401e-01
DATA arceeklconst<>+240(SB)/8, $7.07106781186547524401e-01
DATA arceeklconst<>+248(SB)/8, $7.07106781186547524401e-01
DATA arceeklconst<>+256(SB)/8, $0x3FF0000000000000
DATA arceeklconst<>+264(SB)/8, $0x3FF0000000000000
DATA arceeklconst<>+272(SB)/8, $0x3FF0000000000000
DATA arceeklconst<>+280(SB)/8, $0x3FF0000000000000
DATA arceeklconst<>+288(SB)/8, $0x4000000000000000
DATA arceeklconst<>+296(SB)/8, $0x4000000000000000
DATA arceeklconst<>+304(SB)/8, $0x4000000000000000
DATA arceeklconst<>+312(SB)/8, $0x4000000000000000
DATA arceeklconst<>+320(SB)/8, $0x3FE5555555555593
DATA arceeklconst<>+328(SB)/8, $0x3FE5555555555593
DATA arceeklconst<>+336(SB)/8, $0x3FE5555555555593
DATA arceeklconst<>+344(SB)/8, $0x3FE5555555555593
DATA arceeklconst<>+352(SB)/8, $0x3FD999999997FA04
DATA arceeklconst<>+360(SB)/8, $0x3FD999999997FA04
DATA arceeklconst<>+368(SB)/8, $0x3FD999999997FA04
DATA arceeklconst<>+376(SB)/8, $0x3FD999999997FA04
DATA arceeklconst<>+384(SB)/8, $0x3FD2492494229359
DATA arceeklconst<>+392(SB)/8, $0x3FD2492494229359
DATA arceeklconst<>+400(SB)/8, $0x3FD2492494229359
DATA arceeklconst<>+408(SB)/8, $0x3FD2492494229359
DATA arceeklconst<>+416(SB)/8, $0x3FCC71C51D8E78AF
DATA arceeklconst<>+424(SB)/8, $0x3FCC71C51D8E78AF
DATA arceeklconst<>+432(SB)/8, $0x3FCC71C51D8E78AF
DATA arceeklconst<>+440(SB)/8, $0x3FCC71C51D8E78AF
DATA arceeklconst<>+448(SB)/8, $0x3FC7466496CB03DE
DATA arceeklconst<>+456(SB)/8, $0x3FC7466496CB03DE
DATA arceeklconst<>+464(SB)/8, $0x3FC7466496CB03DE
DATA arceeklconst<>+472(SB)/8, $0x3FC7466496CB03DE
DATA arceeklconst<>+480(SB)/8, $0x3FC39A09D078C69F
DATA arceeklconst<>+488(SB)/8, $0x3FC39A09D078C69F
DATA arceeklconst<>+496(SB)/8, $0x3FC39A09D078C69F
DATA arceeklconst<>+504(SB)/8, $0x3FC39A09D078C69F
DATA arceeklconst<>+512(SB)/8, $0x3FC2F112DF3E5244
DATA arceeklconst<>+520(SB)/8, $0x3FC2F112DF3E5244
DATA arceeklconst<>+528(SB)/8, $0x3FC2F112DF3E5244
DATA arceeklconst<>+536(SB)/8, $0x3FC2F112DF3E5244
DATA arceeklconst<>+544(SB)/8, $0x3fe62e42fee00000
DATA arceeklconst<>+552(SB)/8, $0x3fe62e42fee00000
DATA arceeklconst<>+560(SB)/8, $0x3fe62e42fee00000
DATA arceeklconst<>+568(SB)/8, $0x3fe62e42fee00000
DATA arceeklconst<>+576(SB)/8, $0x3dea39ef35793c76
DATA arceeklconst<>+584(SB)/8, $0x3dea39ef35793c76
DATA arceeklconst<>+592(SB)/8, $0x3dea39ef35793c76
DATA arceeklconst<>+600(SB)/8, $0x3dea39ef35793c76
GLOBL arceeklconst<>(SB), RODATA, $608

// func arceeKLAVX2(ex, eb *float64, n int, zx, zb float64, kl *float64) int
//
// *kl += p·log(p/q) for j < n (a multiple of 4), p = ex[j]/zx + 1e-8 and
// q = eb[j]/zb + 1e-8, four lanes at a time with arceeKLTerm's operations and the
// logarithm computed as Go's math.Log computes it on amd64 (the same operations, so
// the same bits); the four terms are added to *kl one at a time, in order. It stops
// before the first block of four where some p/q is not a positive normal number (zero,
// subnormal, infinite or NaN: math.Log's special cases), which the caller does in Go,
// and returns the elements it did.
TEXT ·arceeKLAVX2(SB), NOSPLIT, $0-56
	MOVQ         ex+0(FP), SI
	MOVQ         eb+8(FP), DX
	MOVQ         n+16(FP), CX
	VBROADCASTSD zx+24(FP), Y15
	VBROADCASTSD zb+32(FP), Y14
	MOVQ         kl+40(FP), DI
	VMOVSD       (DI), X12
	VMOVUPD      arceeklconst<>+0(SB), Y13
	XORQ         AX, AX

loop:
	CMPQ    AX, CX
	JGE     done
	VMOVUPD (SI)(AX*8), Y0
	VDIVPD  Y15, Y0, Y0
	VADDPD  Y13, Y0, Y0                         // p
	VMOVUPD (DX)(AX*8), Y1
	VDIVPD  Y14, Y1, Y1
	VADDPD  Y13, Y1, Y1                         // q
	VDIVPD  Y1, Y0, Y2                          // r = p/q
	VCMPPD  $0x1D, arceeklconst<>+32(SB), Y2, Y3  // r ≥ the least normal (false for NaN)
	VCMPPD  $0x12, arceeklconst<>+64(SB), Y2, Y4     // r ≤ the largest finite
	VANDPD  Y4, Y3, Y3
	VMOVMSKPD Y3, BX
	CMPQ    BX, $15
	JNE     done

	// log r: r = f1·2^k with f1 in [0.5, 1)
	VANDPD  arceeklconst<>+96(SB), Y2, Y5
	VORPD   arceeklconst<>+128(SB), Y5, Y5               // f1
	VPSRLQ  $52, Y2, Y6
	VPOR    arceeklconst<>+160(SB), Y6, Y6
	VSUBPD  arceeklconst<>+192(SB), Y6, Y6           // k
	// if !(√2/2 < f1) { k −= 1; f1 *= 2 }, with math.Log's masks
	VMOVUPD arceeklconst<>+224(SB), Y7
	VCMPPD  $5, Y5, Y7, Y7
	VANDPD  arceeklconst<>+256(SB), Y7, Y7
	VSUBPD  Y7, Y6, Y6
	VADDPD  arceeklconst<>+256(SB), Y7, Y7
	VMULPD  Y7, Y5, Y5
	VSUBPD  arceeklconst<>+256(SB), Y5, Y5                // f = f1 − 1
	VADDPD  arceeklconst<>+288(SB), Y5, Y8
	VDIVPD  Y8, Y5, Y8                          // s = f/(2 + f)
	VMULPD  Y8, Y8, Y9                          // s2
	VMULPD  Y9, Y9, Y10                         // s4
	VMULPD  arceeklconst<>+512(SB), Y10, Y11
	VADDPD  arceeklconst<>+448(SB), Y11, Y11
	VMULPD  Y10, Y11, Y11
	VADDPD  arceeklconst<>+384(SB), Y11, Y11
	VMULPD  Y10, Y11, Y11
	VADDPD  arceeklconst<>+320(SB), Y11, Y11
	VMULPD  Y11, Y9, Y9                         // t1
	VMULPD  arceeklconst<>+480(SB), Y10, Y11
	VADDPD  arceeklconst<>+416(SB), Y11, Y11
	VMULPD  Y10, Y11, Y11
	VADDPD  arceeklconst<>+352(SB), Y11, Y11
	VMULPD  Y11, Y10, Y10                       // t2
	VADDPD  Y10, Y9, Y9                         // R
	VMULPD  arceeklconst<>+128(SB), Y5, Y10
	VMULPD  Y5, Y10, Y10                        // hfsq = 0.5·f·f
	VADDPD  Y10, Y9, Y9                         // hfsq + R
	VMULPD  Y9, Y8, Y8                          // s·(hfsq + R)
	VMULPD  arceeklconst<>+576(SB), Y6, Y9
	VADDPD  Y9, Y8, Y8                          // s·(hfsq + R) + k·Ln2Lo
	VSUBPD  Y8, Y10, Y10
	VSUBPD  Y5, Y10, Y10                        // (hfsq − (…)) − f
	VMULPD  arceeklconst<>+544(SB), Y6, Y6
	VSUBPD  Y10, Y6, Y6                         // log r

	VMULPD      Y6, Y0, Y0                      // p·log r
	VADDSD      X0, X12, X12
	VPERMILPD   $1, X0, X1
	VADDSD      X1, X12, X12
	VEXTRACTF128 $1, Y0, X0
	VADDSD      X0, X12, X12
	VPERMILPD   $1, X0, X1
	VADDSD      X1, X12, X12
	ADDQ        $4, AX
	JMP         loop

done:
	VMOVSD X12, (DI)
	MOVQ   AX, ret+48(FP)
	VZEROUPPER
	RET
