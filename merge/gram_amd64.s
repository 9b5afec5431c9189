//go:build !purego

#include "textflag.h"

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

// func dotLanesAVX2(s *[8]float64, a, c *float64, n int)
//
// s[j mod 8] += a[j]·c[j] for j < n (a multiple of 8), each product rounded and
// then added, a first: gramLanesGo for one pair, its eight lanes in two registers.
TEXT ·dotLanesAVX2(SB), NOSPLIT, $0-32
	MOVQ    s+0(FP), DI
	MOVQ    a+8(FP), SI
	MOVQ    c+16(FP), DX
	MOVQ    n+24(FP), CX
	VMOVUPD 0(DI), Y0
	VMOVUPD 32(DI), Y1
	XORQ    AX, AX

p1loop:
	CMPQ    AX, CX
	JGE     p1done
	VMOVUPD (SI)(AX*8), Y2
	VMULPD  (DX)(AX*8), Y2, Y2
	VADDPD  Y2, Y0, Y0
	VMOVUPD 32(SI)(AX*8), Y3
	VMULPD  32(DX)(AX*8), Y3, Y3
	VADDPD  Y3, Y1, Y1
	ADDQ    $8, AX
	JMP     p1loop

p1done:
	VMOVUPD Y0, 0(DI)
	VMOVUPD Y1, 32(DI)
	VZEROUPPER
	RET

// func gram2LanesAVX2(s *[3][8]float64, d0, d1 *float64, n int)
//
// gramLanesGo for the pairs (0,0), (0,1), (1,1) of two rows, j < n (a multiple of
// 8): six sums of four lanes side by side, pair p's lanes 0-3 in Y(2p), 4-7 in
// Y(2p+1).
TEXT ·gram2LanesAVX2(SB), NOSPLIT, $0-32
	MOVQ    s+0(FP), DI
	MOVQ    d0+8(FP), SI
	MOVQ    d1+16(FP), DX
	MOVQ    n+24(FP), CX
	VMOVUPD 0(DI), Y0
	VMOVUPD 32(DI), Y1
	VMOVUPD 64(DI), Y2
	VMOVUPD 96(DI), Y3
	VMOVUPD 128(DI), Y4
	VMOVUPD 160(DI), Y5
	XORQ    AX, AX

p2loop:
	CMPQ    AX, CX
	JGE     p2done
	VMOVUPD (SI)(AX*8), Y12
	VMOVUPD (DX)(AX*8), Y13
	VMULPD  Y12, Y12, Y14
	VADDPD  Y14, Y0, Y0
	VMULPD  Y13, Y12, Y15
	VADDPD  Y15, Y2, Y2
	VMULPD  Y13, Y13, Y14
	VADDPD  Y14, Y4, Y4
	VMOVUPD 32(SI)(AX*8), Y12
	VMOVUPD 32(DX)(AX*8), Y13
	VMULPD  Y12, Y12, Y14
	VADDPD  Y14, Y1, Y1
	VMULPD  Y13, Y12, Y15
	VADDPD  Y15, Y3, Y3
	VMULPD  Y13, Y13, Y14
	VADDPD  Y14, Y5, Y5
	ADDQ    $8, AX
	JMP     p2loop

p2done:
	VMOVUPD Y0, 0(DI)
	VMOVUPD Y1, 32(DI)
	VMOVUPD Y2, 64(DI)
	VMOVUPD Y3, 96(DI)
	VMOVUPD Y4, 128(DI)
	VMOVUPD Y5, 160(DI)
	VZEROUPPER
	RET

// func gram3LanesAVX2(s *[6][8]float64, d0, d1, d2 *float64, n int)
//
// gramLanesGo for the pairs (0,0), (0,1), (0,2), (1,1), (1,2), (2,2) of three rows,
// j < n (a multiple of 8): twelve sums of four lanes side by side, pair p's lanes
// 0-3 in Y(2p), 4-7 in Y(2p+1); Y12-Y14 hold the rows' four elements, Y15 a product.
TEXT ·gram3LanesAVX2(SB), NOSPLIT, $0-40
	MOVQ    s+0(FP), DI
	MOVQ    d0+8(FP), SI
	MOVQ    d1+16(FP), DX
	MOVQ    d2+24(FP), R8
	MOVQ    n+32(FP), CX
	VMOVUPD 0(DI), Y0
	VMOVUPD 32(DI), Y1
	VMOVUPD 64(DI), Y2
	VMOVUPD 96(DI), Y3
	VMOVUPD 128(DI), Y4
	VMOVUPD 160(DI), Y5
	VMOVUPD 192(DI), Y6
	VMOVUPD 224(DI), Y7
	VMOVUPD 256(DI), Y8
	VMOVUPD 288(DI), Y9
	VMOVUPD 320(DI), Y10
	VMOVUPD 352(DI), Y11
	XORQ    AX, AX

p3loop:
	CMPQ    AX, CX
	JGE     p3done
	VMOVUPD (SI)(AX*8), Y12
	VMOVUPD (DX)(AX*8), Y13
	VMOVUPD (R8)(AX*8), Y14
	VMULPD  Y12, Y12, Y15
	VADDPD  Y15, Y0, Y0
	VMULPD  Y13, Y12, Y15
	VADDPD  Y15, Y2, Y2
	VMULPD  Y14, Y12, Y15
	VADDPD  Y15, Y4, Y4
	VMULPD  Y13, Y13, Y15
	VADDPD  Y15, Y6, Y6
	VMULPD  Y14, Y13, Y15
	VADDPD  Y15, Y8, Y8
	VMULPD  Y14, Y14, Y15
	VADDPD  Y15, Y10, Y10
	VMOVUPD 32(SI)(AX*8), Y12
	VMOVUPD 32(DX)(AX*8), Y13
	VMOVUPD 32(R8)(AX*8), Y14
	VMULPD  Y12, Y12, Y15
	VADDPD  Y15, Y1, Y1
	VMULPD  Y13, Y12, Y15
	VADDPD  Y15, Y3, Y3
	VMULPD  Y14, Y12, Y15
	VADDPD  Y15, Y5, Y5
	VMULPD  Y13, Y13, Y15
	VADDPD  Y15, Y7, Y7
	VMULPD  Y14, Y13, Y15
	VADDPD  Y15, Y9, Y9
	VMULPD  Y14, Y14, Y15
	VADDPD  Y15, Y11, Y11
	ADDQ    $8, AX
	JMP     p3loop

p3done:
	VMOVUPD Y0, 0(DI)
	VMOVUPD Y1, 32(DI)
	VMOVUPD Y2, 64(DI)
	VMOVUPD Y3, 96(DI)
	VMOVUPD Y4, 128(DI)
	VMOVUPD Y5, 160(DI)
	VMOVUPD Y6, 192(DI)
	VMOVUPD Y7, 224(DI)
	VMOVUPD Y8, 256(DI)
	VMOVUPD Y9, 288(DI)
	VMOVUPD Y10, 320(DI)
	VMOVUPD Y11, 352(DI)
	VZEROUPPER
	RET

// func gramDiffF32AVX2(d *float64, y, b *float32, n int)
//
// d[j] = float64(y_j) − float64(b_j) for the first n (a multiple of 8) float32
// values of y and b (b nil: float64(y_j)), four at a time: each value widened
// exactly to float64 (a NaN made quiet, as Go's conversion does), the difference
// rounded, y first, as gramScratch.chunk's loop.
TEXT ·gramDiffF32AVX2(SB), NOSPLIT, $0-32
	MOVQ  d+0(FP), DI
	MOVQ  y+8(FP), SI
	MOVQ  b+16(FP), DX
	MOVQ  n+24(FP), CX
	XORQ  AX, AX
	TESTQ DX, DX
	JZ    fyloop

fdloop:
	CMPQ      AX, CX
	JGE       fdone
	VCVTPS2PD (SI)(AX*4), Y0
	VCVTPS2PD (DX)(AX*4), Y1
	VSUBPD    Y1, Y0, Y0
	VMOVUPD   Y0, (DI)(AX*8)
	VCVTPS2PD 16(SI)(AX*4), Y2
	VCVTPS2PD 16(DX)(AX*4), Y3
	VSUBPD    Y3, Y2, Y2
	VMOVUPD   Y2, 32(DI)(AX*8)
	ADDQ      $8, AX
	JMP       fdloop

fyloop:
	CMPQ      AX, CX
	JGE       fdone
	VCVTPS2PD (SI)(AX*4), Y0
	VMOVUPD   Y0, (DI)(AX*8)
	VCVTPS2PD 16(SI)(AX*4), Y2
	VMOVUPD   Y2, 32(DI)(AX*8)
	ADDQ      $8, AX
	JMP       fyloop

fdone:
	VZEROUPPER
	RET

// GRAM_ROW widens the eight BF16 words of src at element AX to float64 in dst and
// subtracts Z14 (the base's, or +0), as gramDiffBF16AVX512 does; Y13 is scratch.
#define GRAM_ROW(src, dst) \
	VPMOVZXWD (src)(AX*2), Y13 \
	VPSLLD    $16, Y13, Y13 \
	VCVTPS2PD Y13, dst \
	VSUBPD    Z14, dst, dst

// func gramBF16AVX512(s *[6][8]float64, y0, y1, y2, b *byte, three bool, n int)
//
// gramDiffBF16AVX512 and gram3LanesAVX2 (three) or gram2LanesAVX2 in one pass over
// the BF16 words, j < n (a multiple of 8), no differences stored: each eight
// elements' differences y_i − b (b nil: y_i; y2 unused without three) in float64,
// then each pair's products, its eight lanes in one register (pair p in Zp),
// element j into lane j mod 8 in element order, each product rounded and then added
// to the lane, the lane first: the same sums as the two kernels.
TEXT ·gramBF16AVX512(SB), NOSPLIT, $0-56
	MOVQ    s+0(FP), DI
	MOVQ    y0+8(FP), SI
	MOVQ    y1+16(FP), DX
	MOVQ    y2+24(FP), R8
	MOVQ    b+32(FP), R9
	MOVQ    n+48(FP), CX
	XORQ    AX, AX
	VMOVUPD 0(DI), Z0
	VMOVUPD 64(DI), Z1
	VMOVUPD 128(DI), Z2
	CMPB    three+40(FP), $0
	JEQ     g2loop
	VMOVUPD 192(DI), Z3
	VMOVUPD 256(DI), Z4
	VMOVUPD 320(DI), Z5

g3loop:
	CMPQ      AX, CX
	JGE       g3done
	VPXORQ    Z14, Z14, Z14
	TESTQ     R9, R9
	JZ        g3rows
	VPMOVZXWD (R9)(AX*2), Y13
	VPSLLD    $16, Y13, Y13
	VCVTPS2PD Y13, Z14             // b

g3rows:
	GRAM_ROW(SI, Z10)
	GRAM_ROW(DX, Z11)
	GRAM_ROW(R8, Z12)
	VMULPD    Z10, Z10, Z15
	VADDPD    Z15, Z0, Z0
	VMULPD    Z11, Z10, Z15
	VADDPD    Z15, Z1, Z1
	VMULPD    Z12, Z10, Z15
	VADDPD    Z15, Z2, Z2
	VMULPD    Z11, Z11, Z15
	VADDPD    Z15, Z3, Z3
	VMULPD    Z12, Z11, Z15
	VADDPD    Z15, Z4, Z4
	VMULPD    Z12, Z12, Z15
	VADDPD    Z15, Z5, Z5
	ADDQ      $8, AX
	JMP       g3loop

g3done:
	VMOVUPD Z3, 192(DI)
	VMOVUPD Z4, 256(DI)
	VMOVUPD Z5, 320(DI)
	JMP     gdone

g2loop:
	CMPQ      AX, CX
	JGE       gdone
	VPXORQ    Z14, Z14, Z14
	TESTQ     R9, R9
	JZ        g2rows
	VPMOVZXWD (R9)(AX*2), Y13
	VPSLLD    $16, Y13, Y13
	VCVTPS2PD Y13, Z14             // b

g2rows:
	GRAM_ROW(SI, Z10)
	GRAM_ROW(DX, Z11)
	VMULPD    Z10, Z10, Z15
	VADDPD    Z15, Z0, Z0
	VMULPD    Z11, Z10, Z15
	VADDPD    Z15, Z1, Z1
	VMULPD    Z11, Z11, Z15
	VADDPD    Z15, Z2, Z2
	ADDQ      $8, AX
	JMP       g2loop

gdone:
	VMOVUPD Z0, 0(DI)
	VMOVUPD Z1, 64(DI)
	VMOVUPD Z2, 128(DI)
	VZEROUPPER
	RET
