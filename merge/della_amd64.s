//go:build !purego

#include "textflag.h"

// The two magnitude kernels' shared steps (dellaMagsAVX2 on float32, dellaMagsBF16AVX2
// on widened words). DELLA_MAG_STORE: Y0 = x − base; stores |Y0| at mags (DI+DX*4) and
// keeps the lanes' largest |·|>>16 in Y14 (Y15 the sign mask's complement, Y1 scratch).
// DELLA_MAG_MAX: Y14's largest lane to AX (the caller stores it: vet checks the
// result's store where it can see it).
#define DELLA_MAG_STORE \
	VPAND    Y15, Y0, Y0 \
	VMOVDQU  Y0, (DI)(DX*4) \
	VPSRLD   $16, Y0, Y1 \
	VPMAXUD  Y1, Y14, Y14

#define DELLA_MAG_MAX \
	VEXTRACTI128 $1, Y14, X1 \
	VPMAXUD  X1, X14, X14 \
	VPSHUFD  $0x4e, X14, X1 \
	VPMAXUD  X1, X14, X14 \
	VPSHUFD  $0xb1, X14, X1 \
	VPMAXUD  X1, X14, X14 \
	VMOVD    X14, AX

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
	DELLA_MAG_STORE
	ADDQ     $8, DX
	CMPQ     DX, CX
	JB       mloop
	DELLA_MAG_MAX
	MOVL     AX, ret+32(FP)
	VZEROUPPER
	RET

// func dellaMagsBF16AVX2(mags *uint32, base, x *byte, n int) uint32
// dellaMagsAVX2 on BF16 words: mags[j] = bits of |x[j] − base[j]| of the widened
// words (a word's bits shifted up 16) for j < n (a multiple of 8, at least 8);
// returns the largest mags[j]>>16 (rowMagnitudesBF16).
TEXT ·dellaMagsBF16AVX2(SB), NOSPLIT, $0-36
	MOVQ mags+0(FP), DI
	MOVQ base+8(FP), BX
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
	VPCMPEQD Y15, Y15, Y15
	VPSRLD   $1, Y15, Y15 // 0x7fffffff: clears the sign
	VPXOR    Y14, Y14, Y14
	XORQ     DX, DX

hloop:
	VPMOVZXWD (SI)(DX*2), Y0
	VPSLLD    $16, Y0, Y0
	VPMOVZXWD (BX)(DX*2), Y1
	VPSLLD    $16, Y1, Y1
	VSUBPS    Y1, Y0, Y0 // x − base, as Go's float32 subtraction
	DELLA_MAG_STORE
	ADDQ      $8, DX
	CMPQ      DX, CX
	JB        hloop
	DELLA_MAG_MAX
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

// func dellaDecideAVX512(keep *bool, undec *int32, draw *uint64, bk *uint16, start *int32, tb *thresholdBounds, n int) int
// decideBuckets for j < n (a multiple of 8, at least 8), eight entries at a time:
// each entry's bucket's ranks gathered as one word (start[b], start[b+1]), the
// bounds fma(start[b], c, lo) and fma(start[b+1]−1, c, hi), keep[j] = the draw's top
// 32 bits below the first, and j appended to undec where they are not but are at or
// below the second. Returns how many were appended; undec has room for n.
TEXT ·dellaDecideAVX512(SB), NOSPLIT, $0-64
	MOVQ keep+0(FP), DI
	MOVQ undec+8(FP), R10
	MOVQ draw+16(FP), SI
	MOVQ bk+24(FP), BX
	MOVQ start+32(FP), R8
	MOVQ tb+40(FP), AX
	MOVQ n+48(FP), CX
	VBROADCASTSD 0(AX), Z13  // c
	VBROADCASTSD 8(AX), Z14  // lo
	VBROADCASTSD 16(AX), Z15 // hi
	MOVL $0xffffffff, AX
	VPBROADCASTQ AX, Z12     // the low halves
	MOVL $1, AX
	VPBROADCASTQ AX, Z11
	XORQ DX, DX
	XORQ R11, R11

dloop:
	VPMOVZXWD (BX)(DX*2), Y1
	KXNORB    K1, K1, K1
	VPXORQ    Z4, Z4, Z4
	VPGATHERDQ (R8)(Y1*4), K1, Z4 // start[b] | start[b+1]<<32
	VPANDQ    Z12, Z4, Z5          // the lowest rank
	VPSRLQ    $32, Z4, Z4
	VPSUBQ    Z11, Z4, Z4          // the highest
	VCVTUQQ2PD Z5, Z5
	VCVTUQQ2PD Z4, Z4
	VFMADD213PD Z14, Z13, Z5       // its threshold's lower bound
	VFMADD213PD Z15, Z13, Z4       // the highest's upper bound
	VMOVDQU64 (SI)(DX*8), Z6
	VPSRLQ    $32, Z6, Z6
	VCVTUQQ2PD Z6, Z6              // the draws' top 32 bits
	VCMPPD    $1, Z5, Z6, K2       // below the lower bound: kept
	VCMPPD    $2, Z4, Z6, K3       // at or below the upper bound
	VPMOVM2B  K2, X7
	VPABSB    X7, X7
	VMOVQ     X7, (DI)(DX*1)
	KANDNB    K3, K2, K4           // neither kept nor dropped: undecided
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

DATA dellaRankIota<>+0(SB)/8, $0x0000000100000000
DATA dellaRankIota<>+8(SB)/8, $0x0000000300000002
DATA dellaRankIota<>+16(SB)/8, $0x0000000500000004
DATA dellaRankIota<>+24(SB)/8, $0x0000000700000006
DATA dellaRankIota<>+32(SB)/8, $0x0000000900000008
DATA dellaRankIota<>+40(SB)/8, $0x0000000b0000000a
DATA dellaRankIota<>+48(SB)/8, $0x0000000d0000000c
DATA dellaRankIota<>+56(SB)/8, $0x0000000f0000000e
GLOBL dellaRankIota<>(SB), RODATA|NOPTR, $64

// func dellaRankAVX512(bk *uint16, mags *uint32, n int, b, m uint32, r int) int
// bucketRank over k < n (a multiple of 32, at least 32): counts the k with
// bk[k] == b and (mags[k] < m, or mags[k] == m and k < r). Thirty-two buckets
// compared at a time; the magnitudes only where one matches (a bucket holds a few
// entries of a row).
TEXT ·dellaRankAVX512(SB), NOSPLIT, $0-48
	MOVQ bk+0(FP), BX
	MOVQ mags+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL b+24(FP), AX
	MOVD AX, X10
	VPBROADCASTW X10, Z10
	MOVL m+28(FP), AX
	MOVD AX, X11
	VPBROADCASTD X11, Z11
	MOVQ r+32(FP), AX
	MOVD AX, X12
	VPBROADCASTD X12, Z12
	MOVL $16, AX
	MOVD AX, X14
	VPBROADCASTD X14, Z14
	VMOVDQU32 dellaRankIota<>(SB), Z13 // k
	XORQ DX, DX
	XORQ R8, R8

rloop:
	VMOVDQU16 (BX)(DX*2), Z0
	VPCMPEQW  Z10, Z0, K1          // in bucket b
	KORTESTD  K1, K1
	JZ        rnext
	VMOVDQU32 (SI)(DX*4), Z1       // the first sixteen
	VPCMPUD   $1, Z11, Z1, K1, K2  // in the bucket and smaller
	VPCMPEQD  Z11, Z1, K1, K3      // and equal
	VPCMPUD   $1, Z12, Z13, K3, K3 // and before r
	KORW      K2, K3, K2
	KMOVW     K2, AX
	POPCNTL   AX, AX
	ADDQ      AX, R8
	KSHIFTRD  $16, K1, K1          // the next sixteen
	VMOVDQU32 64(SI)(DX*4), Z1
	VPADDD    Z14, Z13, Z2
	VPCMPUD   $1, Z11, Z1, K1, K2
	VPCMPEQD  Z11, Z1, K1, K3
	VPCMPUD   $1, Z12, Z2, K3, K3
	KORW      K2, K3, K2
	KMOVW     K2, AX
	POPCNTL   AX, AX
	ADDQ      AX, R8

rnext:
	VPADDD    Z14, Z13, Z13
	VPADDD    Z14, Z13, Z13
	ADDQ      $32, DX
	CMPQ      DX, CX
	JB        rloop
	MOVQ      R8, ret+40(FP)
	VZEROUPPER
	RET

DATA dellaLast<>+0(SB)/8, $0x0000000f0000000f
DATA dellaLast<>+8(SB)/8, $0x0000000f0000000f
DATA dellaLast<>+16(SB)/8, $0x0000000f0000000f
DATA dellaLast<>+24(SB)/8, $0x0000000f0000000f
DATA dellaLast<>+32(SB)/8, $0x0000000f0000000f
DATA dellaLast<>+40(SB)/8, $0x0000000f0000000f
DATA dellaLast<>+48(SB)/8, $0x0000000f0000000f
DATA dellaLast<>+56(SB)/8, $0x0000000f0000000f
GLOBL dellaLast<>(SB), RODATA|NOPTR, $64

// func dellaPrefixAVX512(c *int32, n int)
// c[k] = c[0] + … + c[k] for k < n (a multiple of 16, at least 16), sixteen at a
// time: the running sums inside the vector from four shifted adds, then the sum of
// the ones before, carried as a broadcast of the last lane.
TEXT ·dellaPrefixAVX512(SB), NOSPLIT, $0-16
	MOVQ c+0(FP), DI
	MOVQ n+8(FP), CX
	VPXORD    Z15, Z15, Z15       // 0
	VPXORD    Z14, Z14, Z14       // the sum of the counts before
	VMOVDQU32 dellaLast<>(SB), Z13
	XORQ      DX, DX

ploop:
	VMOVDQU32 (DI)(DX*4), Z0
	VALIGND   $15, Z15, Z0, Z1    // lane k: c[k−1], lane 0: 0
	VPADDD    Z1, Z0, Z0
	VALIGND   $14, Z15, Z0, Z1    // two lanes up
	VPADDD    Z1, Z0, Z0
	VALIGND   $12, Z15, Z0, Z1    // four
	VPADDD    Z1, Z0, Z0
	VALIGND   $8, Z15, Z0, Z1     // eight
	VPADDD    Z1, Z0, Z0
	VPADDD    Z14, Z0, Z0
	VMOVDQU32 Z0, (DI)(DX*4)
	VPERMD    Z0, Z13, Z14        // the last lane, broadcast
	ADDQ      $16, DX
	CMPQ      DX, CX
	JB        ploop
	VZEROUPPER
	RET

// lane k's bit of a mask byte (tvLaneBits', which is local to its file)
DATA dellaLaneBits<>+0(SB)/8, $0x0000000200000001
DATA dellaLaneBits<>+8(SB)/8, $0x0000000800000004
DATA dellaLaneBits<>+16(SB)/8, $0x0000002000000010
DATA dellaLaneBits<>+24(SB)/8, $0x0000008000000040
GLOBL dellaLaneBits<>(SB), RODATA|NOPTR, $32

// func dellaDeltaBF16AVX2(sum, d *float32, x *byte, b *float32, bits *byte, scale, w float32, n int)
// tvDeltaBitsAVX2 (no per-element factors) with the model's values BF16 words
// widened as they are loaded: v = w·(scale·(x[j] − b[j])), +0 where bit j%8 of
// bits[j/8] is clear; d[j] = v when d is not nil; sum[j] += v; for j < n (a
// multiple of 8).
TEXT ·dellaDeltaBF16AVX2(SB), NOSPLIT, $0-56
	MOVQ sum+0(FP), DI
	MOVQ d+8(FP), R10
	MOVQ x+16(FP), SI
	MOVQ b+24(FP), DX
	MOVQ bits+32(FP), R8
	VBROADCASTSS scale+40(FP), Y5
	VBROADCASTSS w+44(FP), Y6
	MOVQ n+48(FP), CX
	VPXOR   Y7, Y7, Y7
	VMOVDQU dellaLaneBits<>(SB), Y8
	XORQ AX, AX // byte offset of the float32 element
	XORQ BX, BX // byte of the masks
	XORQ R9, R9 // byte offset of the BF16 word
wloop:
	CMPQ CX, $8
	JLT  wdone
	VPMOVZXWD (SI)(R9*1), Y0
	VPSLLD    $16, Y0, Y0      // the words widened
	VMOVUPS   (DX)(AX*1), Y1
	VSUBPS    Y1, Y0, Y0       // δ = x − b
	VMULPS    Y0, Y5, Y0       // scale·δ
	VMULPS    Y0, Y6, Y0       // w·(s·δ)
	MOVBLZX   (R8)(BX*1), R11
	MOVD      R11, X2
	VPBROADCASTD X2, Y2
	VPAND     Y8, Y2, Y2       // lane k: bit k of the byte
	VPCMPEQD  Y7, Y2, Y2       // all ones where dropped
	VPANDN    Y0, Y2, Y0       // dropped entries become +0
	TESTQ     R10, R10
	JZ        wsum
	VMOVUPS   Y0, (R10)(AX*1)
wsum:
	VMOVUPS   (DI)(AX*1), Y3
	VADDPS    Y0, Y3, Y3       // sum + v (sum the first operand, as in Go)
	VMOVUPS   Y3, (DI)(AX*1)
	ADDQ $32, AX
	ADDQ $16, R9
	INCQ BX
	SUBQ $8, CX
	JMP  wloop
wdone:
	VZEROUPPER
	RET

// func dellaMagsBF16AVX512(mags *uint32, base, x *byte, n int) uint32
// dellaMagsBF16AVX2 sixteen lanes at a time (n a multiple of 16, at least 16): the
// same operations on each lane, so the same bits.
TEXT ·dellaMagsBF16AVX512(SB), NOSPLIT, $0-36
	MOVQ mags+0(FP), DI
	MOVQ base+8(FP), BX
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
	VPTERNLOGD $0xff, Z15, Z15, Z15
	VPSRLD     $1, Z15, Z15 // 0x7fffffff: clears the sign
	VPXORD     Z14, Z14, Z14
	XORQ       DX, DX

zhloop:
	VPMOVZXWD (SI)(DX*2), Z0
	VPSLLD    $16, Z0, Z0
	VPMOVZXWD (BX)(DX*2), Z1
	VPSLLD    $16, Z1, Z1
	VSUBPS    Z1, Z0, Z0 // x − base, as Go's float32 subtraction
	VPANDD    Z15, Z0, Z0
	VMOVDQU32 Z0, (DI)(DX*4)
	VPSRLD    $16, Z0, Z1
	VPMAXUD   Z1, Z14, Z14
	ADDQ      $16, DX
	CMPQ      DX, CX
	JB        zhloop
	VEXTRACTI64X4 $1, Z14, Y1
	VPMAXUD   Y1, Y14, Y14
	DELLA_MAG_MAX
	MOVL      AX, ret+32(FP)
	VZEROUPPER
	RET
