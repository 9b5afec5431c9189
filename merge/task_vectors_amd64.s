//go:build !purego

#include "textflag.h"

// The general task-vector combine (combineTaskVectors), column by column: each model's
// weighted delta is added into a running sum, eight elements at a time. The float32
// operations and their order are addTaskVectors' (tested bit for bit against it):
// first operands as in the Go expressions, one rounding per operation, no FMA.

// func tvDeltaAVX2(sum, d, x, b *float32, keep *bool, elem *float32, scale, w float32, n int)
// v = float32(w·float32(s·(x[j] − b[j]))) where keep[j], +0 elsewhere, with s = elem[j]
// (elem not nil) or scale; d[j] = v (d not nil); sum[j] = sum[j] + v. n: a multiple of 8.
TEXT ·tvDeltaAVX2(SB), NOSPLIT, $0-64
	MOVQ sum+0(FP), DI
	MOVQ d+8(FP), R10
	MOVQ x+16(FP), SI
	MOVQ b+24(FP), DX
	MOVQ keep+32(FP), R8
	MOVQ elem+40(FP), R9
	VBROADCASTSS scale+48(FP), Y5
	VBROADCASTSS w+52(FP), Y6
	MOVQ n+56(FP), CX
	VPXOR Y7, Y7, Y7
	XORQ AX, AX // byte offset of the element
	XORQ BX, BX // element index, for the masks
dloop:
	CMPQ CX, $8
	JLT  ddone
	VMOVUPS   (SI)(AX*1), Y0
	VMOVUPS   (DX)(AX*1), Y1
	VSUBPS    Y1, Y0, Y0       // δ = x − b
	TESTQ     R9, R9
	JZ        dscalar
	VMOVUPS   (R9)(AX*1), Y1
	VMULPS    Y0, Y1, Y0       // elem·δ
	JMP       dweight
dscalar:
	VMULPS    Y0, Y5, Y0       // scale·δ
dweight:
	VMULPS    Y0, Y6, Y0       // w·(s·δ)
	VPMOVZXBD (R8)(BX*1), Y2   // the eight keep bytes as 0 or 1
	VPCMPEQD  Y7, Y2, Y2       // all ones where dropped
	VPANDN    Y0, Y2, Y0       // dropped entries become +0
	TESTQ     R10, R10
	JZ        dsum
	VMOVUPS   Y0, (R10)(AX*1)
dsum:
	VMOVUPS   (DI)(AX*1), Y3
	VADDPS    Y0, Y3, Y3       // sum + v (sum the first operand, as in Go)
	VMOVUPS   Y3, (DI)(AX*1)
	ADDQ $32, AX
	ADDQ $8, BX
	SUBQ $8, CX
	JMP  dloop
ddone:
	VZEROUPPER
	RET

// func tvFinishAVX2(dst, base *float32, lambda float32, n int)
// dst[j] = base[j] + float32(λ·dst[j]). n: a multiple of 8.
TEXT ·tvFinishAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	VBROADCASTSS lambda+16(FP), Y6
	MOVQ n+24(FP), CX
floop:
	CMPQ CX, $8
	JLT  fdone
	VMOVUPS (DI), Y0
	VMULPS  Y0, Y6, Y0 // λ·sum
	VMOVUPS (SI), Y1
	VADDPS  Y0, Y1, Y0 // base + λ·sum
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	SUBQ $8, CX
	JMP  floop
fdone:
	VZEROUPPER
	RET

// func keepBandAVX2(keep *bool, mags *uint32, n int, loGT, hiGT int32, loTie, hiTie uint32) int
// keep[j] = mags[j] > loGT && !(mags[j] > hiGT) (signed compares), eight at a time,
// stopping before the first group of eight that holds an element equal to loTie or
// hiTie (those need the tie counts, kept in Go). n: a multiple of 8. Returns how many
// elements it did.
TEXT ·keepBandAVX2(SB), NOSPLIT, $0-48
	MOVQ keep+0(FP), DI
	MOVQ mags+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL         loGT+24(FP), AX
	VMOVD        AX, X4
	VPBROADCASTD X4, Y4
	MOVL         hiGT+28(FP), AX
	VMOVD        AX, X5
	VPBROADCASTD X5, Y5
	MOVL         loTie+32(FP), AX
	VMOVD        AX, X6
	VPBROADCASTD X6, Y6
	MOVL         hiTie+36(FP), AX
	VMOVD        AX, X7
	VPBROADCASTD X7, Y7
	MOVQ $0x0101010101010101, R8
	MOVQ $0x8040201008040201, R9
	MOVQ $0x7f7f7f7f7f7f7f7f, R10
	XORQ DX, DX
bloop:
	CMPQ CX, $8
	JLT  bdone
	VMOVDQU  (SI), Y0
	VPCMPEQD Y6, Y0, Y1
	VPCMPEQD Y7, Y0, Y2
	VPOR     Y2, Y1, Y1
	VPTEST   Y1, Y1
	JNZ      bdone      // an element at a tie: Go counts it
	VPCMPGTD Y4, Y0, Y1 // above the lower cut
	VPCMPGTD Y5, Y0, Y2 // above the upper cut
	VPANDN   Y1, Y2, Y1
	VMOVMSKPS Y1, AX    // bit k: element k kept
	IMULQ R8, AX        // as in dareKeepAVX2: bit k to byte k
	ANDQ  R9, AX
	ADDQ  R10, AX
	SHRQ  $7, AX
	ANDQ  R8, AX
	MOVQ  AX, (DI)
	ADDQ $32, SI
	ADDQ $8, DI
	ADDQ $8, DX
	SUBQ $8, CX
	JMP  bloop
bdone:
	MOVQ DX, ret+40(FP)
	VZEROUPPER
	RET

DATA tvLaneBits<>+0(SB)/8, $0x0000000200000001
DATA tvLaneBits<>+8(SB)/8, $0x0000000800000004
DATA tvLaneBits<>+16(SB)/8, $0x0000002000000010
DATA tvLaneBits<>+24(SB)/8, $0x0000008000000040
GLOBL tvLaneBits<>(SB), RODATA|NOPTR, $32

// func tvDeltaBitsAVX2(sum, d, x, b *float32, bits *byte, elem *float32, scale, w float32, n int)
// tvDeltaAVX2 with the keep masks packed (keepCache's: bit j%8 of bits[j/8] is
// keep[j]), read a byte per eight elements: the byte broadcast, each lane's bit
// selected and compared with 0. n: a multiple of 8.
TEXT ·tvDeltaBitsAVX2(SB), NOSPLIT, $0-64
	MOVQ sum+0(FP), DI
	MOVQ d+8(FP), R10
	MOVQ x+16(FP), SI
	MOVQ b+24(FP), DX
	MOVQ bits+32(FP), R8
	MOVQ elem+40(FP), R9
	VBROADCASTSS scale+48(FP), Y5
	VBROADCASTSS w+52(FP), Y6
	MOVQ n+56(FP), CX
	VPXOR   Y7, Y7, Y7
	VMOVDQU tvLaneBits<>(SB), Y8
	XORQ AX, AX // byte offset of the element
	XORQ BX, BX // byte of the masks
bloop:
	CMPQ CX, $8
	JLT  bdone
	VMOVUPS   (SI)(AX*1), Y0
	VMOVUPS   (DX)(AX*1), Y1
	VSUBPS    Y1, Y0, Y0       // δ = x − b
	TESTQ     R9, R9
	JZ        bscalar
	VMOVUPS   (R9)(AX*1), Y1
	VMULPS    Y0, Y1, Y0       // elem·δ
	JMP       bweight
bscalar:
	VMULPS    Y0, Y5, Y0       // scale·δ
bweight:
	VMULPS    Y0, Y6, Y0       // w·(s·δ)
	MOVBLZX   (R8)(BX*1), R11
	MOVD      R11, X2
	VPBROADCASTD X2, Y2
	VPAND     Y8, Y2, Y2       // lane k: bit k of the byte
	VPCMPEQD  Y7, Y2, Y2       // all ones where dropped
	VPANDN    Y0, Y2, Y0       // dropped entries become +0
	TESTQ     R10, R10
	JZ        bsum
	VMOVUPS   Y0, (R10)(AX*1)
bsum:
	VMOVUPS   (DI)(AX*1), Y3
	VADDPS    Y0, Y3, Y3       // sum + v (sum the first operand, as in Go)
	VMOVUPS   Y3, (DI)(AX*1)
	ADDQ $32, AX
	INCQ BX
	SUBQ $8, CX
	JMP  bloop
bdone:
	VZEROUPPER
	RET

// func packBoolsAVX512(dst *uint64, src *bool, n int)
// dst[k] = the bits of src[64k : 64k+64] (bit i: src[64k+i] != 0) for 64k < n (a
// multiple of 64, at least 64): the bytes tested against themselves into a mask.
TEXT ·packBoolsAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
ploop:
	VMOVDQU8 (SI), Z0
	VPTESTMB Z0, Z0, K1
	KMOVQ    K1, (DI)
	ADDQ     $64, SI
	ADDQ     $8, DI
	SUBQ     $64, CX
	JNZ      ploop
	VZEROUPPER
	RET

DATA l1Abs<>+0(SB)/8, $0x7fffffff7fffffff
DATA l1Abs<>+8(SB)/8, $0x7fffffff7fffffff
DATA l1Abs<>+16(SB)/8, $0x7fffffff7fffffff
DATA l1Abs<>+24(SB)/8, $0x7fffffff7fffffff
GLOBL l1Abs<>(SB), RODATA|NOPTR, $32

// L1_LANES_ENTER loads the arguments (l, base, x, keep, n) and l's lanes: Y0/Y1 hold
// l[0]'s lanes 0–3 and 4–7, Y2/Y3 l[1]'s; Y15 is the sign-clearing mask, Y13 zero.
#define L1_LANES_ENTER \
	MOVQ l+0(FP), AX \
	MOVQ base+8(FP), BX \
	MOVQ x+16(FP), R8 \
	MOVQ keep+24(FP), R9 \
	MOVQ n+32(FP), CX \
	VMOVUPD (AX), Y0 \
	VMOVUPD 32(AX), Y1 \
	VMOVUPD 64(AX), Y2 \
	VMOVUPD 96(AX), Y3 \
	VMOVDQU l1Abs<>(SB), Y15 \
	VPXOR   Y13, Y13, Y13 \
	XORQ    DX, DX

// L1_LANES_ADD adds the eight float32 differences x − base in Y8 (elements DX to
// DX+7) into the lanes: their magnitudes to l[0]'s, and where keep to l[1]'s (else
// +0). The sign is cleared before the widening, which gives the bits math.Abs gives
// after (the widening keeps the sign and quiets a NaN either way).
#define L1_LANES_ADD \
	VANDPS       Y15, Y8, Y8 \
	VCVTPS2PD    X8, Y10 \
	VEXTRACTF128 $1, Y8, X11 \
	VCVTPS2PD    X11, Y11 \
	VADDPD       Y10, Y0, Y0 \
	VADDPD       Y11, Y1, Y1 \
	VPMOVZXBQ    (R9)(DX*1), Y12 \
	VPMOVZXBQ    4(R9)(DX*1), Y14 \
	VPCMPEQQ     Y13, Y12, Y12 \
	VPCMPEQQ     Y13, Y14, Y14 \
	VANDNPD      Y10, Y12, Y10 \
	VANDNPD      Y11, Y14, Y11 \
	VADDPD       Y10, Y2, Y2 \
	VADDPD       Y11, Y3, Y3

// L1_LANES_LEAVE stores the lanes back into l.
#define L1_LANES_LEAVE \
	VMOVUPD Y0, (AX) \
	VMOVUPD Y1, 32(AX) \
	VMOVUPD Y2, 64(AX) \
	VMOVUPD Y3, 96(AX) \
	VZEROUPPER

// func l1LanesAVX2(l *l1Lanes, base, x *float32, keep *bool, n int)
// l1LanesGo over j < n (a multiple of 8, at least 8; element 0 in lane 0): lane k of
// l[0] adds |x_j − base_j| for every j ≡ k (mod 8), in element order, and lane k of
// l[1] the same where keep[j] (else +0).
TEXT ·l1LanesAVX2(SB), NOSPLIT, $0-40
	L1_LANES_ENTER

l1lloop:
	VMOVUPS (R8)(DX*4), Y8
	VSUBPS  (BX)(DX*4), Y8, Y8
	L1_LANES_ADD
	ADDQ    $8, DX
	CMPQ    DX, CX
	JB      l1lloop
	L1_LANES_LEAVE
	RET

// func l1LanesBF16AVX2(l *l1Lanes, base, x *byte, keep *bool, n int)
// l1LanesAVX2 on BF16 words: each eight words widened to the float32s they are (the
// word in the top 16 bits) before the same steps.
TEXT ·l1LanesBF16AVX2(SB), NOSPLIT, $0-40
	L1_LANES_ENTER

l1bloop:
	VPMOVZXWD (R8)(DX*2), Y8
	VPSLLD    $16, Y8, Y8
	VPMOVZXWD (BX)(DX*2), Y9
	VPSLLD    $16, Y9, Y9
	VSUBPS    Y9, Y8, Y8
	L1_LANES_ADD
	ADDQ      $8, DX
	CMPQ      DX, CX
	JB        l1bloop
	L1_LANES_LEAVE
	RET

// L1_WORDS_MODEL adds one model's eight elements at DX into its lanes a0 (|δ|) and
// a1 (|δ| where kept), as L1_LANES_ADD does: the BF16 words at xp widened, less the
// base's (Y9), the sign cleared (Y15), widened to float64 and added, the lanes
// first; where keep (the bools at kp) is false a1 is left as adding +0 leaves it (a
// sum of magnitudes is never −0). Y8, Z10, X11 and K1 are scratch.
#define L1_WORDS_MODEL(xp, kp, a0, a1) \
	VPMOVZXWD (xp)(DX*2), Y8 \
	VPSLLD    $16, Y8, Y8 \
	VSUBPS    Y9, Y8, Y8 \
	VANDPS    Y15, Y8, Y8 \
	VCVTPS2PD Y8, Z10 \
	VADDPD    Z10, a0, a0 \
	VMOVQ     (kp)(DX*1), X11 \
	VPTESTMB  X11, X11, K1 \
	VADDPD    Z10, a1, K1, a1

// L1_WORDS_BASE widens the base's eight words at DX into Y9.
#define L1_WORDS_BASE \
	VPMOVZXWD (SI)(DX*2), Y9 \
	VPSLLD    $16, Y9, Y9

// func l1LanesBF16AVX512(ls *l1Lanes, base *byte, xs **byte, keeps **bool, nl, n int)
//
// l1LanesBF16AVX2 for nl models at once (2, 3 or 4: ls[i] model i's lanes, xs[i]
// its words, keeps[i] its masks), j < n (a multiple of 8, element 0 in lane 0): a
// model's eight lanes in one register each, so that the models' sums, each added in
// element order as before, wait on each other's latency no more. The third and
// fourth models are taken where nl has them (two branches an iteration, always
// taken the same way).
TEXT ·l1LanesBF16AVX512(SB), NOSPLIT, $0-48
	MOVQ    ls+0(FP), DI
	MOVQ    base+8(FP), SI
	MOVQ    xs+16(FP), AX
	MOVQ    keeps+24(FP), BX
	MOVQ    nl+32(FP), R9
	MOVQ    n+40(FP), CX
	VMOVDQU l1Abs<>(SB), Y15
	MOVQ    0(AX), R8             // the models' words: R8, R10, R11, R12
	MOVQ    8(AX), R10
	CMPQ    R9, $3
	JLT     wkeeps
	MOVQ    16(AX), R11
	CMPQ    R9, $4
	JLT     wkeeps
	MOVQ    24(AX), R12

wkeeps:
	MOVQ    0(BX), R13            // their masks: R13, R14, AX, BX
	MOVQ    8(BX), R14
	CMPQ    R9, $3
	JLT     wlanes
	MOVQ    16(BX), AX
	CMPQ    R9, $4
	JLT     wlanes
	MOVQ    24(BX), BX

wlanes:
	VMOVUPD 0(DI), Z0
	VMOVUPD 64(DI), Z1
	VMOVUPD 128(DI), Z2
	VMOVUPD 192(DI), Z3
	CMPQ    R9, $3
	JLT     wfrom
	VMOVUPD 256(DI), Z4
	VMOVUPD 320(DI), Z5
	CMPQ    R9, $4
	JLT     wfrom
	VMOVUPD 384(DI), Z6
	VMOVUPD 448(DI), Z7

wfrom:
	XORQ    DX, DX

wloop:
	L1_WORDS_BASE
	L1_WORDS_MODEL(R8, R13, Z0, Z1)
	L1_WORDS_MODEL(R10, R14, Z2, Z3)
	CMPQ R9, $3
	JLT  wnext
	L1_WORDS_MODEL(R11, AX, Z4, Z5)
	CMPQ R9, $4
	JLT  wnext
	L1_WORDS_MODEL(R12, BX, Z6, Z7)

wnext:
	ADDQ $8, DX
	CMPQ DX, CX
	JB   wloop
	VMOVUPD Z0, 0(DI)
	VMOVUPD Z1, 64(DI)
	VMOVUPD Z2, 128(DI)
	VMOVUPD Z3, 192(DI)
	CMPQ    R9, $3
	JLT     wdone
	VMOVUPD Z4, 256(DI)
	VMOVUPD Z5, 320(DI)
	CMPQ    R9, $4
	JLT     wdone
	VMOVUPD Z6, 384(DI)
	VMOVUPD Z7, 448(DI)

wdone:
	VZEROUPPER
	RET
