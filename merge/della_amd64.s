//go:build !purego

#include "textflag.h"

// func dellaMagsAVX2(mags *uint32, base, x *float32, n int) uint32
// mags[j] = bits of |x[j] − base[j]| for j < n (a multiple of 8, at least 8);
// returns the largest mags[j]>>16 (rowMagnitudes).
TEXT ·dellaMagsAVX2(SB), NOSPLIT, $0-36
	MOVQ mags+0(FP), DI
	MOVQ base+8(FP), BX
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
	VPCMPEQD Y15, Y15, Y15
	VPSRLD   $1, Y15, Y15 // 0x7fffffff: clears the sign
	VPXOR    Y14, Y14, Y14
	XORQ     DX, DX

mloop:
	VMOVUPS  (SI)(DX*4), Y0
	VSUBPS   (BX)(DX*4), Y0, Y0 // x − base, as Go's float32 subtraction
	VPAND    Y15, Y0, Y0
	VMOVDQU  Y0, (DI)(DX*4)
	VPSRLD   $16, Y0, Y1
	VPMAXUD  Y1, Y14, Y14
	ADDQ     $8, DX
	CMPQ     DX, CX
	JB       mloop
	VEXTRACTI128 $1, Y14, X1
	VPMAXUD  X1, X14, X14
	VPSHUFD  $0x4e, X14, X1
	VPMAXUD  X1, X14, X14
	VPSHUFD  $0xb1, X14, X1
	VPMAXUD  X1, X14, X14
	VMOVD    X14, AX
	MOVL     AX, ret+32(FP)
	VZEROUPPER
	RET

// func dellaBucketsAVX2(bk *uint16, mags *uint32, n int, floor int32) int32
// bk[j] = max(mags[j]>>16 − floor, 0) for j < n (a multiple of 8, at least 8);
// returns the smallest bk[j] (bucketCounts' buckets, without the counts). The
// caller's floor is the row's largest mags>>16 less dellaBuckets−1, so every
// bucket fits 16 bits.
TEXT ·dellaBucketsAVX2(SB), NOSPLIT, $0-36
	MOVQ bk+0(FP), DI
	MOVQ mags+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL floor+24(FP), AX
	MOVD AX, X13
	VPBROADCASTD X13, Y13
	VPXOR    Y12, Y12, Y12     // 0
	VPCMPEQD Y14, Y14, Y14
	VPSRLD   $1, Y14, Y14      // the running minimum, from 0x7fffffff
	XORQ     DX, DX

bloop:
	VMOVDQU  (SI)(DX*4), Y0
	VPSRLD   $16, Y0, Y0
	VPSUBD   Y13, Y0, Y0
	VPMAXSD  Y12, Y0, Y0
	VPMINSD  Y0, Y14, Y14
	VEXTRACTI128 $1, Y0, X1
	VPACKUSDW X1, X0, X0       // eight buckets, each < 65536
	VMOVDQU  X0, (DI)(DX*2)
	ADDQ     $8, DX
	CMPQ     DX, CX
	JB       bloop
	VEXTRACTI128 $1, Y14, X1
	VPMINSD  X1, X14, X14
	VPSHUFD  $0x4e, X14, X1
	VPMINSD  X1, X14, X14
	VPSHUFD  $0xb1, X14, X1
	VPMINSD  X1, X14, X14
	VMOVD    X14, AX
	MOVL     AX, ret+32(FP)
	VZEROUPPER
	RET

// func dellaDecideAVX512(keep *bool, undec *int32, draw *uint64, bk *uint16, start *int32, thr *uint64, n int) int
// decideBuckets for j < n (a multiple of 8, at least 8), eight entries at a time:
// the bounds of each entry's bucket (start[b], start[b+1]−1) and their thresholds
// gathered, keep[j] = draw[j] < thr[start[b]], and j appended to undec where that
// differs from draw[j] < thr[start[b+1]−1]. Returns how many were appended; undec
// has room for n.
TEXT ·dellaDecideAVX512(SB), NOSPLIT, $0-64
	MOVQ keep+0(FP), DI
	MOVQ undec+8(FP), R10
	MOVQ draw+16(FP), SI
	MOVQ bk+24(FP), BX
	MOVQ start+32(FP), R8
	MOVQ thr+40(FP), R9
	MOVQ n+48(FP), CX
	MOVL $1, AX
	MOVD AX, X15
	VPBROADCASTD X15, Y15
	XORQ DX, DX
	XORQ R11, R11

dloop:
	VPMOVZXWD (BX)(DX*2), Y1
	KXNORB    K1, K1, K1
	VPXOR     Y2, Y2, Y2
	VPGATHERDD (R8)(Y1*4), K1, Y2  // start[b]
	KXNORB    K1, K1, K1
	VPXOR     Y3, Y3, Y3
	VPGATHERDD 4(R8)(Y1*4), K1, Y3 // start[b+1]
	VPSUBD    Y15, Y3, Y3
	KXNORB    K1, K1, K1
	VPXORQ    Z4, Z4, Z4
	VPGATHERDQ (R9)(Y2*8), K1, Z4  // thr[start[b]]
	KXNORB    K1, K1, K1
	VPXORQ    Z5, Z5, Z5
	VPGATHERDQ (R9)(Y3*8), K1, Z5  // thr[start[b+1]−1]
	VMOVDQU64 (SI)(DX*8), Z6
	VPCMPUQ   $1, Z4, Z6, K2       // draw < thr[start[b]]
	VPCMPUQ   $1, Z5, Z6, K3
	VPMOVM2B  K2, X7
	VPABSB    X7, X7
	VMOVQ     X7, (DI)(DX*1)
	KXORB     K2, K3, K4
	KMOVB     K4, AX
	TESTL     AX, AX
	JZ        dnext

dbits:
	BSFL      AX, R12
	ADDL      DX, R12
	MOVL      R12, (R10)(R11*4)
	INCQ      R11
	LEAL      -1(AX), R12
	ANDL      R12, AX
	JNZ       dbits

dnext:
	ADDQ      $8, DX
	CMPQ      DX, CX
	JB        dloop
	MOVQ      R11, ret+56(FP)
	VZEROUPPER
	RET
