//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"

DATA nearswapconst<>+0(SB)/8, $1e-06
DATA nearswapconst<>+8(SB)/8, $1.0
DATA nearswapconst<>+16(SB)/8, $0x7FF0000000000000 // +Inf
DATA nearswapconst<>+24(SB)/4, $1.0
GLOBL nearswapconst<>(SB), RODATA, $28

// func nearswapAVX2(dst, a, b *float32, n int, t float64) int
//
// nearswapGo's operations eight at a time, n a multiple of 8: in float64,
// d = max(|a − b|, 1e-6), w = max(0, min(1, t/d)), rounded to float32; then
// dst = float32(w·b) + float32((1−w)·a). It stops before the first block of eight
// where some a − b is a NaN or an infinity (an input that is one), which the caller
// does in Go, and returns the elements it did. The caller gives a finite t > 0, so
// that t/d is a finite non-negative number and min and max meet no NaN or −0.
TEXT ·nearswapAVX2(SB), NOSPLIT, $0-48
	MOVQ         dst+0(FP), DI
	MOVQ         a+8(FP), SI
	MOVQ         b+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD t+32(FP), Y10
	XORQ         AX, AX
	VPCMPEQQ     Y8, Y8, Y8
	VPSRLQ       $1, Y8, Y8                   // |x| mask
	VBROADCASTSD nearswapconst<>+0(SB), Y9    // 1e-6
	VBROADCASTSD nearswapconst<>+8(SB), Y11   // 1.0
	VXORPD       Y12, Y12, Y12                // +0
	VBROADCASTSD nearswapconst<>+16(SB), Y13  // +Inf
	VBROADCASTSS nearswapconst<>+24(SB), Y14  // float32 1.0

loop:
	CMPQ      AX, CX
	JGE       done
	VCVTPS2PD (SI)(AX*4), Y0
	VCVTPS2PD 16(SI)(AX*4), Y1
	VCVTPS2PD (DX)(AX*4), Y2
	VCVTPS2PD 16(DX)(AX*4), Y3
	VSUBPD    Y2, Y0, Y4
	VSUBPD    Y3, Y1, Y5
	VANDPD    Y8, Y4, Y4
	VANDPD    Y8, Y5, Y5
	VCMPPD    $0x15, Y13, Y4, Y6              // not less than +Inf, or unordered
	VCMPPD    $0x15, Y13, Y5, Y7
	VORPD     Y7, Y6, Y6
	VPTEST    Y6, Y6
	JNZ       done
	VMAXPD    Y9, Y4, Y4
	VMAXPD    Y9, Y5, Y5
	VDIVPD    Y4, Y10, Y4                     // t/d
	VDIVPD    Y5, Y10, Y5
	VMINPD    Y11, Y4, Y4
	VMINPD    Y11, Y5, Y5
	VMAXPD    Y12, Y4, Y4
	VMAXPD    Y12, Y5, Y5
	VCVTPD2PSY Y4, X4
	VCVTPD2PSY Y5, X5
	VINSERTF128 $1, X5, Y4, Y4               // w
	VMOVUPS   (DX)(AX*4), Y2
	VMOVUPS   (SI)(AX*4), Y0
	VMULPS    Y2, Y4, Y6                      // w·b
	VSUBPS    Y4, Y14, Y7                     // 1 − w
	VMULPS    Y0, Y7, Y7                      // (1 − w)·a
	VADDPS    Y7, Y6, Y6
	VMOVUPS   Y6, (DI)(AX*4)
	ADDQ      $8, AX
	JMP       loop

done:
	MOVQ AX, ret+40(FP)
	VZEROUPPER
	RET

DATA nearswap512<>+0(SB)/8, $1e-06
DATA nearswap512<>+8(SB)/8, $1.0
DATA nearswap512<>+16(SB)/8, $0x7FF0000000000000 // +Inf
DATA nearswap512<>+24(SB)/8, $0x7FFFFFFFFFFFFFFF // |x|'s mask
DATA nearswap512<>+32(SB)/4, $1.0
GLOBL nearswap512<>(SB), RODATA|NOPTR, $36

// func nearswapBF16AVX512(dst, a, b *uint16, n int, t float64) int
//
// nearswapAVX2's operations from BF16 words to BF16 words, sixteen at a time (n a
// multiple of 16): a and b widened as loaded, in float64 eight at a time
// d = max(|a − b|, 1e-6), w = max(0, min(1, t/d)) rounded to float32, then
// dst = float32(w·b) + float32((1−w)·a) rounded to BF16 to nearest even as stored. It
// stops before the first group of sixteen where some a − b is a NaN or an infinity,
// which the caller does in Go, and returns the elements it did. The caller gives a
// finite t > 0.
TEXT ·nearswapBF16AVX512(SB), NOSPLIT, $0-48
	MOVQ         dst+0(FP), DI
	MOVQ         a+8(FP), SI
	MOVQ         b+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD t+32(FP), Z26
	BF16_RNE512_CONSTS
	XORQ         AX, AX
	VBROADCASTSD nearswap512<>+0(SB), Z25  // 1e-6
	VBROADCASTSD nearswap512<>+8(SB), Z27  // 1.0
	VPXORQ       Z28, Z28, Z28             // +0
	VBROADCASTSD nearswap512<>+16(SB), Z29 // +Inf
	VBROADCASTSD nearswap512<>+24(SB), Z24 // |x|'s mask
	VBROADCASTSS nearswap512<>+32(SB), Z30 // float32 1.0

wloop:
	CMPQ      AX, CX
	JGE       wdone
	VPMOVZXWD (SI)(AX*2), Z0
	VPSLLD    $16, Z0, Z0                  // a
	VPMOVZXWD (DX)(AX*2), Z1
	VPSLLD    $16, Z1, Z1                  // b
	VEXTRACTF32X8 $1, Z0, Y2
	VEXTRACTF32X8 $1, Z1, Y3
	VCVTPS2PD Y0, Z18
	VCVTPS2PD Y2, Z19
	VCVTPS2PD Y1, Z20
	VCVTPS2PD Y3, Z21
	VSUBPD    Z20, Z18, Z18                // a − b
	VSUBPD    Z21, Z19, Z19
	VANDPD    Z24, Z18, Z18
	VANDPD    Z24, Z19, Z19
	VCMPPD    $0x15, Z29, Z18, K1          // not less than +Inf, or unordered
	VCMPPD    $0x15, Z29, Z19, K2
	KORTESTB  K1, K2
	JNZ       wdone
	VMAXPD    Z25, Z18, Z18
	VMAXPD    Z25, Z19, Z19
	VDIVPD    Z18, Z26, Z18                // t/d
	VDIVPD    Z19, Z26, Z19
	VMINPD    Z27, Z18, Z18
	VMINPD    Z27, Z19, Z19
	VMAXPD    Z28, Z18, Z18
	VMAXPD    Z28, Z19, Z19
	VCVTPD2PS Z18, Y18
	VCVTPD2PS Z19, Y19
	VINSERTF32X8 $1, Y19, Z18, Z18         // w
	VMULPS    Z1, Z18, Z6                  // w·b
	VSUBPS    Z18, Z30, Z7                 // 1 − w
	VMULPS    Z0, Z7, Z7                   // (1 − w)·a
	VADDPS    Z7, Z6, Z6
	BF16_RNE512_STORE(Z6, (DI)(AX*2))
	ADDQ      $16, AX
	JMP       wloop

wdone:
	MOVQ AX, ret+40(FP)
	VZEROUPPER
	RET
