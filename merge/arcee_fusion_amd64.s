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

// func arceeKLAVX2(dst, ex, eb *float64, n int, zx, zb float64) int
//
// dst[j] = p·log(p/q) for j < n (a multiple of 4), p = ex[j]/zx + 1e-8 and
// q = eb[j]/zb + 1e-8, four lanes at a time with arceeKLTerm's operations and the
// logarithm computed as Go's math.Log computes it on amd64 (the same operations, so
// the same bits); dst may be ex or eb (the caller adds the terms). It stops
// before the first block of four where some p/q is not a positive normal number (zero,
// subnormal, infinite or NaN: math.Log's special cases), which the caller does in Go,
// and returns the elements it did.
TEXT ·arceeKLAVX2(SB), NOSPLIT, $0-56
	MOVQ         dst+0(FP), DI
	MOVQ         ex+8(FP), SI
	MOVQ         eb+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD zx+32(FP), Y15
	VBROADCASTSD zb+40(FP), Y14
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
	VMOVUPD     Y0, (DI)(AX*8)
	ADDQ        $4, AX
	JMP         loop

done:
	MOVQ   AX, ret+48(FP)
	VZEROUPPER
	RET


// Four copies of each constant of the exponential of Go's math.Exp on amd64 (its
// argument reduction by ln 2 in two parts, its Taylor coefficients, the exponent
// bias), and the bounds within which it takes neither its overflow nor its
// subnormal path.
DATA arceeexpconst<>+0(SB)/8, $-708.0
DATA arceeexpconst<>+8(SB)/8, $-708.0
DATA arceeexpconst<>+16(SB)/8, $-708.0
DATA arceeexpconst<>+24(SB)/8, $-708.0
DATA arceeexpconst<>+32(SB)/8, $708.0
DATA arceeexpconst<>+40(SB)/8, $708.0
DATA arceeexpconst<>+48(SB)/8, $708.0
DATA arceeexpconst<>+56(SB)/8, $708.0
DATA arceeexpconst<>+64(SB)/8, $1.4426950408889634073599246810018920
DATA arceeexpconst<>+72(SB)/8, $1.4426950408889634073599246810018920
DATA arceeexpconst<>+80(SB)/8, $1.4426950408889634073599246810018920
DATA arceeexpconst<>+88(SB)/8, $1.4426950408889634073599246810018920
DATA arceeexpconst<>+96(SB)/8, $0.69314718055966295651160180568695068359375
DATA arceeexpconst<>+104(SB)/8, $0.69314718055966295651160180568695068359375
DATA arceeexpconst<>+112(SB)/8, $0.69314718055966295651160180568695068359375
DATA arceeexpconst<>+120(SB)/8, $0.69314718055966295651160180568695068359375
DATA arceeexpconst<>+128(SB)/8, $0.28235290563031577122588448175013436025525412068e-12
DATA arceeexpconst<>+136(SB)/8, $0.28235290563031577122588448175013436025525412068e-12
DATA arceeexpconst<>+144(SB)/8, $0.28235290563031577122588448175013436025525412068e-12
DATA arceeexpconst<>+152(SB)/8, $0.28235290563031577122588448175013436025525412068e-12
DATA arceeexpconst<>+160(SB)/8, $0.0625
DATA arceeexpconst<>+168(SB)/8, $0.0625
DATA arceeexpconst<>+176(SB)/8, $0.0625
DATA arceeexpconst<>+184(SB)/8, $0.0625
DATA arceeexpconst<>+192(SB)/8, $2.4801587301587301587e-5
DATA arceeexpconst<>+200(SB)/8, $2.4801587301587301587e-5
DATA arceeexpconst<>+208(SB)/8, $2.4801587301587301587e-5
DATA arceeexpconst<>+216(SB)/8, $2.4801587301587301587e-5
DATA arceeexpconst<>+224(SB)/8, $1.9841269841269841270e-4
DATA arceeexpconst<>+232(SB)/8, $1.9841269841269841270e-4
DATA arceeexpconst<>+240(SB)/8, $1.9841269841269841270e-4
DATA arceeexpconst<>+248(SB)/8, $1.9841269841269841270e-4
DATA arceeexpconst<>+256(SB)/8, $1.3888888888888888889e-3
DATA arceeexpconst<>+264(SB)/8, $1.3888888888888888889e-3
DATA arceeexpconst<>+272(SB)/8, $1.3888888888888888889e-3
DATA arceeexpconst<>+280(SB)/8, $1.3888888888888888889e-3
DATA arceeexpconst<>+288(SB)/8, $8.3333333333333333333e-3
DATA arceeexpconst<>+296(SB)/8, $8.3333333333333333333e-3
DATA arceeexpconst<>+304(SB)/8, $8.3333333333333333333e-3
DATA arceeexpconst<>+312(SB)/8, $8.3333333333333333333e-3
DATA arceeexpconst<>+320(SB)/8, $4.1666666666666666667e-2
DATA arceeexpconst<>+328(SB)/8, $4.1666666666666666667e-2
DATA arceeexpconst<>+336(SB)/8, $4.1666666666666666667e-2
DATA arceeexpconst<>+344(SB)/8, $4.1666666666666666667e-2
DATA arceeexpconst<>+352(SB)/8, $1.6666666666666666667e-1
DATA arceeexpconst<>+360(SB)/8, $1.6666666666666666667e-1
DATA arceeexpconst<>+368(SB)/8, $1.6666666666666666667e-1
DATA arceeexpconst<>+376(SB)/8, $1.6666666666666666667e-1
DATA arceeexpconst<>+384(SB)/8, $0.5
DATA arceeexpconst<>+392(SB)/8, $0.5
DATA arceeexpconst<>+400(SB)/8, $0.5
DATA arceeexpconst<>+408(SB)/8, $0.5
DATA arceeexpconst<>+416(SB)/8, $1.0
DATA arceeexpconst<>+424(SB)/8, $1.0
DATA arceeexpconst<>+432(SB)/8, $1.0
DATA arceeexpconst<>+440(SB)/8, $1.0
DATA arceeexpconst<>+448(SB)/8, $2.0
DATA arceeexpconst<>+456(SB)/8, $2.0
DATA arceeexpconst<>+464(SB)/8, $2.0
DATA arceeexpconst<>+472(SB)/8, $2.0
DATA arceeexpconst<>+480(SB)/8, $1023
DATA arceeexpconst<>+488(SB)/8, $1023
DATA arceeexpconst<>+496(SB)/8, $1023
DATA arceeexpconst<>+504(SB)/8, $1023
GLOBL arceeexpconst<>(SB), RODATA, $512

// func arceeExpAVX2(dst *float64, src *float32, n int, m float64) int
//
// dst[j] = exp(float64(src[j]) − m) for j < n (a multiple of 4), four lanes at a
// time (the caller adds them: several rows' sums at once overlap their chains of
// additions), the exponential computed as Go's math.Exp computes it
// on amd64 when the CPU has FMA (the same operations, fused where it fuses them, so
// the same bits; the caller checks for FMA). It stops before the first block of four
// where some argument is outside [−708, 708] or NaN (math.Exp's special, subnormal
// and overflow paths), which the caller does in Go, and returns the elements it did.
TEXT ·arceeExpAVX2(SB), NOSPLIT, $0-40
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSD m+24(FP), Y15
	XORQ         AX, AX

eloop:
	CMPQ      AX, CX
	JGE       edone
	VCVTPS2PD (SI)(AX*4), Y0
	VSUBPD    Y15, Y0, Y0                         // x
	VCMPPD    $0x1D, arceeexpconst<>+0(SB), Y0, Y3        // x ≥ −708 (false for NaN)
	VCMPPD    $0x12, arceeexpconst<>+32(SB), Y0, Y4        // x ≤ 708
	VANDPD    Y4, Y3, Y3
	VMOVMSKPD Y3, BX
	CMPQ      BX, $15
	JNE       edone
	VMULPD    arceeexpconst<>+64(SB), Y0, Y1
	VCVTPD2DQY Y1, X2                             // k, rounded to nearest
	VCVTDQ2PD X2, Y1
	VFNMADD231PD arceeexpconst<>+96(SB), Y1, Y0          // x − k·LN2U, fused
	VFNMADD231PD arceeexpconst<>+128(SB), Y1, Y0          // − k·LN2L, fused
	VMULPD    arceeexpconst<>+160(SB), Y0, Y0
	VMOVUPD   arceeexpconst<>+192(SB), Y1
	VFMADD213PD arceeexpconst<>+224(SB), Y0, Y1
	VFMADD213PD arceeexpconst<>+256(SB), Y0, Y1
	VFMADD213PD arceeexpconst<>+288(SB), Y0, Y1
	VFMADD213PD arceeexpconst<>+320(SB), Y0, Y1
	VFMADD213PD arceeexpconst<>+352(SB), Y0, Y1
	VFMADD213PD arceeexpconst<>+384(SB), Y0, Y1
	VFMADD213PD arceeexpconst<>+416(SB), Y0, Y1
	VMULPD    Y1, Y0, Y0
	VADDPD    arceeexpconst<>+448(SB), Y0, Y1
	VMULPD    Y1, Y0, Y0
	VADDPD    arceeexpconst<>+448(SB), Y0, Y1
	VMULPD    Y1, Y0, Y0
	VADDPD    arceeexpconst<>+448(SB), Y0, Y1
	VMULPD    Y1, Y0, Y0
	VADDPD    arceeexpconst<>+448(SB), Y0, Y1
	VFMADD213PD arceeexpconst<>+416(SB), Y1, Y0
	VPMOVSXDQ X2, Y3
	VPADDQ    arceeexpconst<>+480(SB), Y3, Y3
	VPSLLQ    $52, Y3, Y3                          // 2^k
	VMULPD    Y3, Y0, Y0
	VMOVUPD   Y0, (DI)(AX*8)
	ADDQ      $4, AX
	JMP       eloop

edone:
	MOVQ   AX, ret+32(FP)
	VZEROUPPER
	RET


// The float64 magnitude mask (four copies) and the float32 sign bit (four copies),
// for the importances' order keys; BF16's magnitude mask, its +Inf and its quiet
// bit (four copies each), for arceeSelectBF16AVX512's NaNs.
DATA arceekeyconst<>+0(SB)/8, $0x7FFFFFFFFFFFFFFF
DATA arceekeyconst<>+8(SB)/8, $0x7FFFFFFFFFFFFFFF
DATA arceekeyconst<>+16(SB)/8, $0x7FFFFFFFFFFFFFFF
DATA arceekeyconst<>+24(SB)/8, $0x7FFFFFFFFFFFFFFF
DATA arceekeyconst<>+32(SB)/8, $0x8000000080000000
DATA arceekeyconst<>+40(SB)/8, $0x8000000080000000
DATA arceekeyconst<>+48(SB)/8, $0x7FFF7FFF7FFF7FFF
DATA arceekeyconst<>+56(SB)/8, $0x7F807F807F807F80
DATA arceekeyconst<>+64(SB)/8, $0x0040004000400040
GLOBL arceekeyconst<>(SB), RODATA, $72

// ARCEE_IMP4(off, dst) sets Xdst to the four importances
// float32(|float64(x[j]) − float64(b[j])|·kl) from x = SI, b = DX at element AX + off
// (kl in Y15), as arceeImportance computes them (one subtraction, the sign cleared,
// one product, rounded to nearest), and Y13 to the four differences.
#define ARCEE_IMP4(off, dst) \
	VCVTPS2PD  off(SI)(AX*4), Y13; \
	VCVTPS2PD  off(DX)(AX*4), Y12; \
	VSUBPD     Y12, Y13, Y13; \
	VANDPD     arceekeyconst<>+0(SB), Y13, Y12; \
	VMULPD     Y15, Y12, Y12; \
	VCVTPD2PSY Y12, dst

// func arceeKeysAVX2(keys *uint32, x, b *float32, n int, kl float64) int
//
// keys[j] = orderKey(arceeImportance(x[j], b[j], kl)) for j < n (a multiple of 8),
// eight at a time. It stops before the first block of eight where some difference
// x − b is NaN (which NaN the product keeps is then the compiler's choice in Go, so
// the caller does that block in Go) and returns the elements it did.
TEXT ·arceeKeysAVX2(SB), NOSPLIT, $0-48
	MOVQ         keys+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         b+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD kl+32(FP), Y15
	VMOVDQU      arceekeyconst<>+32(SB), X14
	XORQ         AX, AX

kloop:
	CMPQ       AX, CX
	JGE        kdone
	ARCEE_IMP4(0, X0)
	VCMPPD     $3, Y13, Y13, Y11           // the differences that are NaN
	ARCEE_IMP4(16, X1)
	VCMPPD     $3, Y13, Y13, Y10
	VORPD      Y10, Y11, Y11
	VMOVMSKPD  Y11, BX
	TESTQ      BX, BX
	JNE        kdone
	// order key: bits ^ 0xFFFFFFFF for a set sign bit, bits | 1<<31 otherwise
	VPSRAD     $31, X0, X2
	VPOR       X14, X2, X2
	VPXOR      X2, X0, X0
	VPSRAD     $31, X1, X3
	VPOR       X14, X3, X3
	VPXOR      X3, X1, X1
	VMOVDQU    X0, (DI)(AX*4)
	VMOVDQU    X1, 16(DI)(AX*4)
	ADDQ       $8, AX
	JMP        kloop

kdone:
	MOVQ   AX, ret+40(FP)
	VZEROUPPER
	RET

// ARCEE_DIFFS16 sets Z0 and Z2 to the float64 differences x − b of 16 elements, AX
// on (the first eight, then the next), x and b the float32 words at SI and DX.
// Z1 and Z3 are scratch.
#define ARCEE_DIFFS16 \
	VCVTPS2PD    (SI)(AX*4), Z0 \
	VCVTPS2PD    (DX)(AX*4), Z1 \
	VSUBPD       Z1, Z0, Z0 \
	VCVTPS2PD    32(SI)(AX*4), Z2 \
	VCVTPS2PD    32(DX)(AX*4), Z3 \
	VSUBPD       Z3, Z2, Z2

// ARCEE_DIFFS16_BF16 is ARCEE_DIFFS16 with x and b the BF16 words at SI and DX,
// widened to float32 (exact: the words are the top halves) as decoding widens them,
// so the same differences.
#define ARCEE_DIFFS16_BF16 \
	VPMOVZXWD     (SI)(AX*2), Z0 \
	VPSLLD        $16, Z0, Z0 \
	VPMOVZXWD     (DX)(AX*2), Z1 \
	VPSLLD        $16, Z1, Z1 \
	VEXTRACTF64X4 $1, Z0, Y2 \
	VEXTRACTF64X4 $1, Z1, Y3 \
	VCVTPS2PD     Y0, Z0 \
	VCVTPS2PD     Y1, Z1 \
	VSUBPD        Z1, Z0, Z0 \
	VCVTPS2PD     Y2, Z2 \
	VCVTPS2PD     Y3, Z3 \
	VSUBPD        Z3, Z2, Z2

// ARCEE_KEYS_OF_DIFFS computes the order keys of 16 elements into Z0 from their
// differences in Z0 and Z2 (ARCEE_DIFFS16's): the importances float32(|x − b|·kl),
// kl in Z15's float64 lanes, then bits ^ 0xFFFFFFFF for a set sign bit, bits | 1<<31
// otherwise (Z14: the float64 abs mask; Z13: 1<<31 in each dword). Where a
// difference is NaN it jumps to nan, for the Go path. Z2 is consumed; Z1, K1 and
// K2 are scratch.
#define ARCEE_KEYS_OF_DIFFS(nan) \
	VCMPPD       $3, Z0, Z0, K1 \
	VCMPPD       $3, Z2, Z2, K2 \
	KORTESTW     K1, K2 \
	JNE          nan \
	VANDPD       Z14, Z0, Z0 \
	VMULPD       Z15, Z0, Z0 \
	VCVTPD2PS    Z0, Y0 \
	VANDPD       Z14, Z2, Z2 \
	VMULPD       Z15, Z2, Z2 \
	VCVTPD2PS    Z2, Y2 \
	VINSERTF64X4 $1, Y2, Z0, Z0 \
	VPSRAD       $31, Z0, Z1 \
	VPORD        Z13, Z1, Z1 \
	VPXORD       Z1, Z0, Z0

// ARCEE_KEYS16 computes the order keys of 16 elements, AX on, into Z0, x and b the
// float32 words at SI and DX (ARCEE_DIFFS16, ARCEE_KEYS_OF_DIFFS). Z1-Z3, K1 and K2
// are scratch. For arceeKeysAVX512.
#define ARCEE_KEYS16(nan) \
	ARCEE_DIFFS16 \
	ARCEE_KEYS_OF_DIFFS(nan)

// func arceeKeysAVX512(keys *uint32, x, b *float32, n int, kl float64) int
//
// arceeKeysAVX2 sixteen at a time (n a multiple of 16): the same operations on eight
// float64 lanes twice, the keys made on sixteen float32 lanes. It stops before the
// first block of sixteen with a NaN difference and returns the elements it did.
TEXT ·arceeKeysAVX512(SB), NOSPLIT, $0-48
	MOVQ         keys+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         b+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD kl+32(FP), Z15
	VPBROADCASTQ arceekeyconst<>+0(SB), Z14
	VPBROADCASTD arceekeyconst<>+32(SB), Z13
	XORQ         AX, AX

k16loop:
	CMPQ         AX, CX
	JGE          k16done
	ARCEE_KEYS16(k16done)
	VMOVDQU32    Z0, (DI)(AX*4)
	ADDQ         $16, AX
	JMP          k16loop

k16done:
	MOVQ   AX, ret+40(FP)
	VZEROUPPER
	RET

// func arceeMatchAVX2(keys *uint32, n int, bins *[3]uint32) int
//
// The index of the first block of eight keys, j < n (a multiple of 8), of which
// some key's top 16 bits are one of bins, or n where none is: pass 5 looks at those
// blocks only.
TEXT ·arceeMatchAVX2(SB), NOSPLIT, $0-32
	MOVQ         keys+0(FP), SI
	MOVQ         n+8(FP), CX
	MOVQ         bins+16(FP), DX
	VPBROADCASTD 0(DX), Y13
	VPBROADCASTD 4(DX), Y14
	VPBROADCASTD 8(DX), Y15
	XORQ         AX, AX

fmloop:
	CMPQ      AX, CX
	JGE       fmdone
	VMOVDQU   (SI)(AX*4), Y0
	VPSRLD    $16, Y0, Y0
	VPCMPEQD  Y13, Y0, Y1
	VPCMPEQD  Y14, Y0, Y2
	VPOR      Y2, Y1, Y1
	VPCMPEQD  Y15, Y0, Y2
	VPOR      Y2, Y1, Y1
	VPTEST    Y1, Y1
	JNE       fmdone
	ADDQ      $8, AX
	JMP       fmloop

fmdone:
	MOVQ   AX, ret+24(FP)
	VZEROUPPER
	RET

// ARCEE_IN_BINS stores the keys in Z0 whose top 16 bits are a bin's (Z10-Z12) at
// out[q][counts[q]:] (out[q] in R8-R10, counts[q] in R11-R13), advancing counts[q];
// it jumps to none where no key is in a bin, the common case. Z1, Z4, K1-K4 and BX
// are scratch.
#define ARCEE_IN_BINS(none) \
	VPSRLD       $16, Z0, Z1 \
	VPCMPEQD     Z10, Z1, K1 \
	VPCMPEQD     Z11, Z1, K2 \
	VPCMPEQD     Z12, Z1, K3 \
	KORW         K1, K2, K4 \
	KORTESTW     K4, K3 \
	JEQ          none \
	VPCOMPRESSD  Z0, K1, Z4 \
	VMOVDQU32    Z4, (R8)(R11*4) \
	KMOVW        K1, BX \
	POPCNTL      BX, BX \
	ADDQ         BX, R11 \
	VPCOMPRESSD  Z0, K2, Z4 \
	VMOVDQU32    Z4, (R9)(R12*4) \
	KMOVW        K2, BX \
	POPCNTL      BX, BX \
	ADDQ         BX, R12 \
	VPCOMPRESSD  Z0, K3, Z4 \
	VMOVDQU32    Z4, (R10)(R13*4) \
	KMOVW        K3, BX \
	POPCNTL      BX, BX \
	ADDQ         BX, R13

// func arceeKeysInBinsAVX512(x, b unsafe.Pointer, n int, kl float64, bins *[3]uint32, out *[3]*uint32, counts *[3]int, words bool) int
//
// arceeKeysAVX512's keys, sixteen at a time (n a multiple of 16), not stored: those
// whose top 16 bits are bins[q] are written, in order, to out[q] from index
// counts[q] on (which it advances; each out[q] has room for n + 16 more: a block's
// keys are compressed into a register and stored whole). x and b are float32 words,
// or with words set BF16 words, widened as decoding widens them (exact), so the
// same keys. It stops before the first block of sixteen with a NaN difference and
// returns the elements it did.
TEXT ·arceeKeysInBinsAVX512(SB), NOSPLIT, $0-72
	MOVQ         x+0(FP), SI
	MOVQ         b+8(FP), DX
	MOVQ         n+16(FP), CX
	VBROADCASTSD kl+24(FP), Z15
	VPBROADCASTQ arceekeyconst<>+0(SB), Z14
	VPBROADCASTD arceekeyconst<>+32(SB), Z13
	MOVQ         bins+32(FP), DI
	VPBROADCASTD 0(DI), Z10
	VPBROADCASTD 4(DI), Z11
	VPBROADCASTD 8(DI), Z12
	MOVQ         out+40(FP), DI
	MOVQ         0(DI), R8
	MOVQ         8(DI), R9
	MOVQ         16(DI), R10
	MOVQ         counts+48(FP), DI
	MOVQ         0(DI), R11
	MOVQ         8(DI), R12
	MOVQ         16(DI), R13
	XORQ         AX, AX

kbloop:
	CMPQ         AX, CX
	JGE          kbdone
	CMPB         words+56(FP), $0
	JNE          kbwords
	ARCEE_DIFFS16
	JMP          kbkeys

kbwords:
	ARCEE_DIFFS16_BF16

kbkeys:
	ARCEE_KEYS_OF_DIFFS(kbdone)               // the keys
	ARCEE_IN_BINS(kbnext)

kbnext:
	ADDQ         $16, AX
	JMP          kbloop

kbdone:
	MOVQ   R11, 0(DI)
	MOVQ   R12, 8(DI)
	MOVQ   R13, 16(DI)
	MOVQ   AX, ret+64(FP)
	VZEROUPPER
	RET

// func arceeSelectAVX512(dst, x, b *float32, n int, kl, t float64)
//
// arceeSelectAVX2 sixteen at a time (n a multiple of 16): the same importances and
// comparisons on eight float64 lanes twice, the choice a masked load of x over b.
TEXT ·arceeSelectAVX512(SB), NOSPLIT, $0-48
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         b+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD kl+32(FP), Z15
	VBROADCASTSD t+40(FP), Z13
	VPBROADCASTQ arceekeyconst<>+0(SB), Z14
	XORQ         AX, AX

s16loop:
	CMPQ         AX, CX
	JGE          s16done
	VCVTPS2PD    (SI)(AX*4), Z0
	VCVTPS2PD    (DX)(AX*4), Z1
	VSUBPD       Z1, Z0, Z0
	VANDPD       Z14, Z0, Z0
	VMULPD       Z15, Z0, Z0
	VCVTPD2PS    Z0, Y0
	VCVTPS2PD    Y0, Z0                       // float64(importance)
	VCMPPD       $0x1D, Z13, Z0, K1           // ≥ t (false for NaN)
	VCVTPS2PD    32(SI)(AX*4), Z2
	VCVTPS2PD    32(DX)(AX*4), Z3
	VSUBPD       Z3, Z2, Z2
	VANDPD       Z14, Z2, Z2
	VMULPD       Z15, Z2, Z2
	VCVTPD2PS    Z2, Y2
	VCVTPS2PD    Y2, Z2
	VCMPPD       $0x1D, Z13, Z2, K2
	KSHIFTLW     $8, K2, K2
	KORW         K2, K1, K1
	VMOVUPS      (DX)(AX*4), Z4
	VMOVUPS      (SI)(AX*4), K1, Z4
	VMOVUPS      Z4, (DI)(AX*4)
	ADDQ         $16, AX
	JMP          s16loop

s16done:
	VZEROUPPER
	RET

// func arceeSelectBF16AVX512(dst, x, b *uint16, n int, kl, t float64)
//
// arceeSelectAVX512 on BF16 words (n a multiple of 16), as decoding, selecting and
// encoding give it: the importances of the widened words, and dst[j] the word of
// x where float64(importance) ≥ t, of b elsewhere, with the quiet bit set where that
// word is a NaN (as rounding to BF16 sets it). Needs AVX-512 BW and VL.
TEXT ·arceeSelectBF16AVX512(SB), NOSPLIT, $0-48
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         b+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD kl+32(FP), Z15
	VBROADCASTSD t+40(FP), Z13
	VPBROADCASTQ arceekeyconst<>+0(SB), Z14
	VPBROADCASTQ arceekeyconst<>+48(SB), Y12
	VPBROADCASTQ arceekeyconst<>+56(SB), Y11
	VPBROADCASTQ arceekeyconst<>+64(SB), Y10
	XORQ         AX, AX

sbloop:
	CMPQ          AX, CX
	JGE           sbdone
	VMOVDQU       (SI)(AX*2), Y0              // x's words
	VMOVDQU       (DX)(AX*2), Y1              // b's words
	VPMOVZXWD     Y0, Z2
	VPSLLD        $16, Z2, Z2                 // widened
	VPMOVZXWD     Y1, Z3
	VPSLLD        $16, Z3, Z3
	VCVTPS2PD     Y2, Z4
	VCVTPS2PD     Y3, Z5
	VSUBPD        Z5, Z4, Z4
	VANDPD        Z14, Z4, Z4
	VMULPD        Z15, Z4, Z4
	VCVTPD2PS     Z4, Y4
	VCVTPS2PD     Y4, Z4                      // float64(importance)
	VCMPPD        $0x1D, Z13, Z4, K1          // ≥ t (false for NaN)
	VEXTRACTF64X4 $1, Z2, Y6
	VEXTRACTF64X4 $1, Z3, Y7
	VCVTPS2PD     Y6, Z6
	VCVTPS2PD     Y7, Z7
	VSUBPD        Z7, Z6, Z6
	VANDPD        Z14, Z6, Z6
	VMULPD        Z15, Z6, Z6
	VCVTPD2PS     Z6, Y6
	VCVTPS2PD     Y6, Z6
	VCMPPD        $0x1D, Z13, Z6, K2
	KSHIFTLW      $8, K2, K2
	KORW          K2, K1, K1
	VPBLENDMW     Y0, Y1, K1, Y8              // x's word there, b's elsewhere
	VPAND         Y12, Y8, Y9
	VPCMPGTW      Y11, Y9, Y9                 // NaN: magnitude above +Inf's
	VPAND         Y10, Y9, Y9
	VPOR          Y9, Y8, Y8
	VMOVDQU       Y8, (DI)(AX*2)
	ADDQ          $16, AX
	JMP           sbloop

sbdone:
	VZEROUPPER
	RET

// func arceeSelectAVX2(dst, x, b *float32, n int, kl, t float64)
//
// dst[j] = x[j] where float64(arceeImportance(x[j], b[j], kl)) ≥ t, else b[j], for
// j < n (a multiple of 4), four at a time. The output is one input's bits either
// way, and a NaN importance compares false whatever its payload, so no block needs
// Go.
TEXT ·arceeSelectAVX2(SB), NOSPLIT, $0-48
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         b+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD kl+32(FP), Y15
	VBROADCASTSD t+40(FP), Y14
	XORQ         AX, AX

sloop:
	CMPQ       AX, CX
	JGE        sdone
	ARCEE_IMP4(0, X0)
	VCVTPS2PD  X0, Y0
	VCMPPD     $0x1D, Y14, Y0, Y0          // importance ≥ t (false for NaN)
	VEXTRACTF128 $1, Y0, X1
	VSHUFPS    $0x88, X1, X0, X0           // the four masks as 32-bit lanes
	VMOVUPS    (DX)(AX*4), X2
	VBLENDVPS  X0, (SI)(AX*4), X2, X2
	VMOVUPS    X2, (DI)(AX*4)
	ADDQ       $4, AX
	JMP        sloop

sdone:
	VZEROUPPER
	RET

// func arceeMaxAVX2(x, b *float32, n int, mx, mb *float32) bool
//
// *mx and *mb = the largest of x[j] and of b[j], j < n (a multiple of 8, at least 8),
// eight at a time; it returns false, leaving the caller to do the row in Go, where
// some element is NaN or a largest value is ±0 (where Go's max and VMAXPS may differ
// in which value they give).
TEXT ·arceeMaxAVX2(SB), NOSPLIT, $0-41
	MOVQ    x+0(FP), SI
	MOVQ    b+8(FP), DX
	MOVQ    n+16(FP), CX
	VMOVUPS (SI), Y0
	VMOVUPS (DX), Y1
	VCMPPS  $3, Y0, Y0, Y2                 // NaN lanes seen
	VCMPPS  $3, Y1, Y1, Y5
	VORPS   Y5, Y2, Y2
	MOVQ    $8, AX

mloop:
	CMPQ    AX, CX
	JGE     mred
	VMOVUPS (SI)(AX*4), Y3
	VMOVUPS (DX)(AX*4), Y4
	VCMPPS  $3, Y3, Y3, Y5
	VORPS   Y5, Y2, Y2
	VCMPPS  $3, Y4, Y4, Y5
	VORPS   Y5, Y2, Y2
	VMAXPS  Y3, Y0, Y0
	VMAXPS  Y4, Y1, Y1
	ADDQ    $8, AX
	JMP     mloop

mred:
	VMOVMSKPS Y2, BX
	TESTQ   BX, BX
	JNE     mbad
	VEXTRACTF128 $1, Y0, X3
	VMAXPS  X3, X0, X0
	VPERMILPS $0x4E, X0, X3
	VMAXPS  X3, X0, X0
	VPERMILPS $0xB1, X0, X3
	VMAXPS  X3, X0, X0
	VEXTRACTF128 $1, Y1, X3
	VMAXPS  X3, X1, X1
	VPERMILPS $0x4E, X1, X3
	VMAXPS  X3, X1, X1
	VPERMILPS $0xB1, X1, X3
	VMAXPS  X3, X1, X1
	VXORPS  X4, X4, X4
	VUCOMISS X4, X0
	JEQ     mbad
	VUCOMISS X4, X1
	JEQ     mbad
	MOVQ    mx+24(FP), DI
	VMOVSS  X0, (DI)
	MOVQ    mb+32(FP), DI
	VMOVSS  X1, (DI)
	MOVB    $1, ret+40(FP)
	VZEROUPPER
	RET

mbad:
	MOVB    $0, ret+40(FP)
	VZEROUPPER
	RET

// ARCEE_EXP8(X, T, K) sets X (a Z register) to math.Exp of its eight lanes, the
// operations of arceeExpAVX2's loop (k in K, a Y register; T a Z scratch), the
// constants broadcast from their first copy.
#define ARCEE_EXP8(X, T, K) \
	VMULPD.BCST       arceeexpconst<>+64(SB), X, T; \
	VCVTPD2DQ         T, K; \
	VCVTDQ2PD         K, T; \
	VFNMADD231PD.BCST arceeexpconst<>+96(SB), T, X; \
	VFNMADD231PD.BCST arceeexpconst<>+128(SB), T, X; \
	VMULPD.BCST       arceeexpconst<>+160(SB), X, X; \
	VBROADCASTSD      arceeexpconst<>+192(SB), T; \
	VFMADD213PD.BCST  arceeexpconst<>+224(SB), X, T; \
	VFMADD213PD.BCST  arceeexpconst<>+256(SB), X, T; \
	VFMADD213PD.BCST  arceeexpconst<>+288(SB), X, T; \
	VFMADD213PD.BCST  arceeexpconst<>+320(SB), X, T; \
	VFMADD213PD.BCST  arceeexpconst<>+352(SB), X, T; \
	VFMADD213PD.BCST  arceeexpconst<>+384(SB), X, T; \
	VFMADD213PD.BCST  arceeexpconst<>+416(SB), X, T; \
	VMULPD            T, X, X; \
	VADDPD.BCST       arceeexpconst<>+448(SB), X, T; \
	VMULPD            T, X, X; \
	VADDPD.BCST       arceeexpconst<>+448(SB), X, T; \
	VMULPD            T, X, X; \
	VADDPD.BCST       arceeexpconst<>+448(SB), X, T; \
	VMULPD            T, X, X; \
	VADDPD.BCST       arceeexpconst<>+448(SB), X, T; \
	VFMADD213PD.BCST  arceeexpconst<>+416(SB), T, X; \
	VPMOVSXDQ         K, T; \
	VPADDQ.BCST       arceeexpconst<>+480(SB), T, T; \
	VPSLLQ            $52, T, T; \
	VMULPD            T, X, X

// The constants of arceeExpAVX512's argument reduction, for an argument taken a
// sixteenth at a time from the start: 16·log₂e, LN2U/16, LN2L/16 and ±708/16 (each
// exactly its constant scaled, so that every rounding of the reduction rounds the
// sixteenth of what arceeExpAVX2's rounds, to the sixteenth of its result).
DATA arceeexp16<>+0(SB)/8, $0x40371547652B82FE
DATA arceeexp16<>+8(SB)/8, $0x3FA62E42FEFA3000
DATA arceeexp16<>+16(SB)/8, $0x3D13DE6AF278ECE6
DATA arceeexp16<>+24(SB)/8, $0xC046200000000000
DATA arceeexp16<>+32(SB)/8, $0x4046200000000000
GLOBL arceeexp16<>(SB), RODATA, $40

// func arceeExpAVX512(dst *float64, src *float32, n int, m float64) int
//
// arceeExpAVX2 eight lanes at a time (n a multiple of 8), with the same values at
// every step, so the same bits, in fewer instructions: the argument is taken as
// float64(src[j])/16 − m/16 in one fused operation (a power of two scales a
// rounding exactly, and arceeExpAVX2 multiplies by 1/16 anyway before its
// polynomial), so the reduction's constants are scaled by 1/16 and 16; k is rounded
// to an integer in place (VRNDSCALEPD: nearest, as the conversion to int32 and back
// rounds it), and the result scaled by 2^k with VSCALEFPD (exact, as the product by
// 2^k is, where the result is normal: arguments in [−708, 708]). It stops before the
// first block of eight with an argument outside [−708, 708] or NaN and returns the
// elements it did.
TEXT ·arceeExpAVX512(SB), NOSPLIT, $0-40
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSD arceeexpconst<>+160(SB), Z31 // 1/16
	VBROADCASTSD m+24(FP), Z30
	VMULPD       Z31, Z30, Z30                   // m/16, exact
	VBROADCASTSD arceeexp16<>+0(SB), Z29
	VBROADCASTSD arceeexp16<>+8(SB), Z28
	VBROADCASTSD arceeexp16<>+16(SB), Z27
	VBROADCASTSD arceeexp16<>+24(SB), Z26
	VBROADCASTSD arceeexp16<>+32(SB), Z25
	VBROADCASTSD arceeexpconst<>+192(SB), Z24    // the Taylor coefficients, 1/8! …
	VBROADCASTSD arceeexpconst<>+224(SB), Z23
	VBROADCASTSD arceeexpconst<>+256(SB), Z22
	VBROADCASTSD arceeexpconst<>+288(SB), Z21
	VBROADCASTSD arceeexpconst<>+320(SB), Z20
	VBROADCASTSD arceeexpconst<>+352(SB), Z19
	VBROADCASTSD arceeexpconst<>+384(SB), Z18
	VBROADCASTSD arceeexpconst<>+416(SB), Z17    // … 1
	VBROADCASTSD arceeexpconst<>+448(SB), Z16    // 2
	XORQ         AX, AX

e5loop:
	CMPQ         AX, CX
	JGE          e5done
	VCVTPS2PD    (SI)(AX*4), Z0
	VFMSUB213PD  Z30, Z31, Z0                    // x/16 = float64(src)/16 − m/16
	VCMPPD       $0x1D, Z26, Z0, K1               // x ≥ −708 (false for NaN)
	VCMPPD       $0x12, Z25, Z0, K1, K1           // and x ≤ 708
	KMOVB        K1, BX
	CMPQ         BX, $0xFF
	JNE          e5done
	VMULPD       Z29, Z0, Z1                      // x·log₂e
	VRNDSCALEPD  $0, Z1, Z1                       // k
	VFNMADD231PD Z28, Z1, Z0                      // (x − k·LN2U)/16
	VFNMADD231PD Z27, Z1, Z0                      // (… − k·LN2L)/16
	VMOVAPD      Z24, Z2
	VFMADD213PD  Z23, Z0, Z2
	VFMADD213PD  Z22, Z0, Z2
	VFMADD213PD  Z21, Z0, Z2
	VFMADD213PD  Z20, Z0, Z2
	VFMADD213PD  Z19, Z0, Z2
	VFMADD213PD  Z18, Z0, Z2
	VFMADD213PD  Z17, Z0, Z2
	VMULPD       Z2, Z0, Z0
	VADDPD       Z16, Z0, Z2
	VMULPD       Z2, Z0, Z0
	VADDPD       Z16, Z0, Z2
	VMULPD       Z2, Z0, Z0
	VADDPD       Z16, Z0, Z2
	VMULPD       Z2, Z0, Z0
	VADDPD       Z16, Z0, Z2
	VFMADD213PD  Z17, Z2, Z0
	VSCALEFPD    Z1, Z0, Z0                       // ·2^k
	VMOVUPD      Z0, (DI)(AX*8)
	ADDQ         $8, AX
	JMP          e5loop

e5done:
	MOVQ   AX, ret+32(FP)
	VZEROUPPER
	RET

// func arceeKLAVX512(dst, ex, eb *float64, n int, zx, zb float64) int
//
// arceeKLAVX2 eight lanes at a time (n a multiple of 8): the same operations on the
// same constants (broadcast from their first copy; the integer forms of the masks,
// which give the same bits).
TEXT ·arceeKLAVX512(SB), NOSPLIT, $0-56
	MOVQ         dst+0(FP), DI
	MOVQ         ex+8(FP), SI
	MOVQ         eb+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD zx+32(FP), Z15
	VBROADCASTSD zb+40(FP), Z14
	VBROADCASTSD arceeklconst<>+0(SB), Z13
	VBROADCASTSD arceeklconst<>+224(SB), Z16
	VBROADCASTSD arceeklconst<>+256(SB), Z17
	XORQ         AX, AX

k5loop:
	CMPQ    AX, CX
	JGE     k5done
	VMOVUPD (SI)(AX*8), Z0
	VDIVPD  Z15, Z0, Z0
	VADDPD  Z13, Z0, Z0                           // p
	VMOVUPD (DX)(AX*8), Z1
	VDIVPD  Z14, Z1, Z1
	VADDPD  Z13, Z1, Z1                           // q
	VDIVPD  Z1, Z0, Z2                            // r = p/q
	VFPCLASSPDZ $0xFF, Z2, K1                     // r is not a positive normal number
	KORTESTB K1, K1
	JNE     k5done

	// math.Log's f1 and k (Frexp: r = f1·2^k, f1 in [0.5, 1)) from the exponent and
	// mantissa instructions, and its adjustment (if !(√2/2 < f1) { k−−; f1 *= 2 },
	// the doubling as f1 + f1) as masked additions: the same values.
	VGETMANTPD   $2, Z2, Z5                       // f1
	VGETEXPPD    Z2, Z6                           // k − 1
	VCMPPD       $1, Z5, Z16, K3                  // √2/2 < f1
	KNOTB        K3, K2
	VADDPD       Z17, Z6, K3, Z6                  // k, less 1 where f1 ≤ √2/2
	VADDPD       Z5, Z5, K2, Z5                   // f1, doubled there
	VSUBPD       Z17, Z5, Z5                      // f = f1 − 1
	VADDPD.BCST  arceeklconst<>+288(SB), Z5, Z8
	VDIVPD       Z8, Z5, Z8                       // s = f/(2 + f)
	VMULPD       Z8, Z8, Z9                       // s2
	VMULPD       Z9, Z9, Z10                      // s4
	VMULPD.BCST  arceeklconst<>+512(SB), Z10, Z11
	VADDPD.BCST  arceeklconst<>+448(SB), Z11, Z11
	VMULPD       Z10, Z11, Z11
	VADDPD.BCST  arceeklconst<>+384(SB), Z11, Z11
	VMULPD       Z10, Z11, Z11
	VADDPD.BCST  arceeklconst<>+320(SB), Z11, Z11
	VMULPD       Z11, Z9, Z9                      // t1
	VMULPD.BCST  arceeklconst<>+480(SB), Z10, Z11
	VADDPD.BCST  arceeklconst<>+416(SB), Z11, Z11
	VMULPD       Z10, Z11, Z11
	VADDPD.BCST  arceeklconst<>+352(SB), Z11, Z11
	VMULPD       Z11, Z10, Z10                    // t2
	VADDPD       Z10, Z9, Z9                      // R
	VMULPD.BCST  arceeklconst<>+128(SB), Z5, Z10
	VMULPD       Z5, Z10, Z10                     // hfsq = 0.5·f·f
	VADDPD       Z10, Z9, Z9                      // hfsq + R
	VMULPD       Z9, Z8, Z8                       // s·(hfsq + R)
	VMULPD.BCST  arceeklconst<>+576(SB), Z6, Z9
	VADDPD       Z9, Z8, Z8                       // s·(hfsq + R) + k·Ln2Lo
	VSUBPD       Z8, Z10, Z10
	VSUBPD       Z5, Z10, Z10                     // (hfsq − (…)) − f
	VMULPD.BCST  arceeklconst<>+544(SB), Z6, Z6
	VSUBPD       Z10, Z6, Z6                      // log r

	VMULPD        Z6, Z0, Z0                      // p·log r
	VMOVUPD       Z0, (DI)(AX*8)
	ADDQ          $8, AX
	JMP           k5loop

k5done:
	MOVQ   AX, ret+48(FP)
	VZEROUPPER
	RET

// func arceeRangeAVX2(keys *uint32, n int) (lo, hi uint32)
//
// The least and the greatest of keys[:n] (n a multiple of 8, at least 8), eight
// lanes at a time.
TEXT ·arceeRangeAVX2(SB), NOSPLIT, $0-24
	MOVQ    keys+0(FP), SI
	MOVQ    n+8(FP), CX
	VMOVDQU (SI), Y0
	VMOVDQA Y0, Y1
	MOVQ    $8, AX

rgloop:
	CMPQ    AX, CX
	JGE     rgred
	VMOVDQU (SI)(AX*4), Y2
	VPMINUD Y2, Y0, Y0
	VPMAXUD Y2, Y1, Y1
	ADDQ    $8, AX
	JMP     rgloop

rgred:
	VEXTRACTI128 $1, Y0, X2
	VPMINUD      X2, X0, X0
	VPSHUFD      $0x4E, X0, X2
	VPMINUD      X2, X0, X0
	VPSHUFD      $0xB1, X0, X2
	VPMINUD      X2, X0, X0
	VEXTRACTI128 $1, Y1, X2
	VPMAXUD      X2, X1, X1
	VPSHUFD      $0x4E, X1, X2
	VPMAXUD      X2, X1, X1
	VPSHUFD      $0xB1, X1, X2
	VPMAXUD      X2, X1, X1
	VMOVD        X0, AX
	MOVL         AX, lo+16(FP)
	VMOVD        X1, AX
	MOVL         AX, hi+20(FP)
	VZEROUPPER
	RET
