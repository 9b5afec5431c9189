//go:build !purego

#include "textflag.h"
#include "bf16_amd64.h"

// Constants, 8 lanes of 32 or 4 of 64 bits.
DATA ramAbs64<>+0(SB)/8, $0x7fffffffffffffff
DATA ramAbs64<>+8(SB)/8, $0x7fffffffffffffff
DATA ramAbs64<>+16(SB)/8, $0x7fffffffffffffff
DATA ramAbs64<>+24(SB)/8, $0x7fffffffffffffff
GLOBL ramAbs64<>(SB), RODATA|NOPTR, $32

// RAM_KEEP sets Y6 to model x's keep mask (all ones where |float64(x) − float64(b)|
// > eps, ordered: false for a NaN) from x in Y4, b as float64 in Y1 (elements 0-3)
// and Y2 (4-7), eps in Y15 and the float64 |·| mask in Y14; it clobbers Y7. The
// shuffle takes the masks' low halves (0 1 4 5 | 2 3 6 7), the permute orders them.
#define RAM_KEEP \
	VCVTPS2PD    X4, Y6          \
	VEXTRACTF128 $1, Y4, X7      \
	VCVTPS2PD    X7, Y7          \
	VSUBPD       Y1, Y6, Y6      \
	VSUBPD       Y2, Y7, Y7      \
	VANDPD       Y14, Y6, Y6     \
	VANDPD       Y14, Y7, Y7     \
	VCMPPD       $0x1E, Y15, Y6, Y6 \
	VCMPPD       $0x1E, Y15, Y7, Y7 \
	VSHUFPS      $0x88, Y7, Y6, Y6  \
	VPERMQ       $0xD8, Y6, Y6

// RAM_BASE widens b in Y0 to float64 in Y1 (elements 0-3) and Y2 (4-7).
#define RAM_BASE \
	VCVTPS2PD    X0, Y1     \
	VEXTRACTF128 $1, Y0, X2 \
	VCVTPS2PD    X2, Y2

// func ramMaskAVX2(keep, count *uint32, x, b *float32, n int, eps float64)
//
// keep[j] = 1 where |float64(x[j]) − float64(b[j])| > eps, else 0, and
// count[j] += keep[j], for j < n (a multiple of 8), eight at a time: ramCounts'
// exact float64 difference and ordered compare (false for a NaN).
TEXT ·ramMaskAVX2(SB), NOSPLIT, $0-48
	MOVQ         keep+0(FP), DI
	MOVQ         count+8(FP), R8
	MOVQ         x+16(FP), SI
	MOVQ         b+24(FP), DX
	MOVQ         n+32(FP), CX
	VBROADCASTSD eps+40(FP), Y15
	VMOVUPD      ramAbs64<>(SB), Y14
	XORQ         AX, AX

loop:
	CMPQ      AX, CX
	JGE       done
	VMOVUPS   (DX)(AX*4), Y0
	RAM_BASE
	VMOVUPS   (SI)(AX*4), Y4
	RAM_KEEP
	VPSRLD    $31, Y6, Y6                   // 1 or 0
	VMOVDQU   Y6, (DI)(AX*4)
	VPADDD    (R8)(AX*4), Y6, Y6
	VMOVDQU   Y6, (R8)(AX*4)
	ADDQ      $8, AX
	JMP       loop

done:
	VZEROUPPER
	RET

// RAM_KEEP32 sets Y6 to the keep mask of |d| in Y7 (all ones where |d| > hi in
// Y11) and ORs into Y8 the lanes where lo in Y12 ≤ |d| ≤ hi: where d = x − b is
// rounded to float32, those are the lanes the float32 compare cannot decide (see
// ramThresholds); elsewhere it is the float64 compare's answer.
#define RAM_KEEP32 \
	VCMPPS $0x1E, Y11, Y7, Y6 \
	VCMPPS $0x1D, Y12, Y7, Y7 \
	VPANDN Y7, Y6, Y7         \
	VPOR   Y7, Y8, Y8

// func ramCountAVX2(base *float32, models *[]float32, nModels, n int, eps float64, lo, hi float32, tmp, sums *uint32)
//
// ramCountChunk's counts for the first n elements (a multiple of 8), eight at a
// time: per model k, sums[16k+l] += its counting entries j ≡ l (mod 8) that other
// models share, sums[16k+8+l] those it alone has. tmp holds 8 words per model. The
// keep masks come from float32 differences and the thresholds lo and hi; a group of
// eight where one lane is undecided takes RAM_KEEP's float64 compare for all.
TEXT ·ramCountAVX2(SB), NOSPLIT, $0-64
	MOVQ         base+0(FP), SI
	MOVQ         models+8(FP), R8
	MOVQ         nModels+16(FP), R9
	MOVQ         n+24(FP), CX
	VBROADCASTSD eps+32(FP), Y15
	VBROADCASTSS lo+40(FP), Y12
	VBROADCASTSS hi+44(FP), Y11
	MOVQ         tmp+48(FP), DX
	MOVQ         sums+56(FP), DI
	VMOVUPD      ramAbs64<>(SB), Y14
	VMOVDQU      bf16ones<>(SB), Y13
	VMOVUPS      bf16abs<>(SB), Y10
	XORQ         AX, AX

cloop:
	CMPQ    AX, CX
	JGE     cdone
	VMOVUPS (SI)(AX*4), Y0
	VPXOR   Y3, Y3, Y3 // count
	VPXOR   Y8, Y8, Y8 // undecided lanes
	MOVQ    R8, R10
	MOVQ    R9, R11
	MOVQ    DX, BX

ckeep:
	MOVQ    (R10), R12
	VMOVUPS (R12)(AX*4), Y4
	VSUBPS  Y0, Y4, Y7
	VANDPS  Y10, Y7, Y7 // |x − b| rounded to float32
	RAM_KEEP32
	VMOVDQU Y6, (BX)
	VPSUBD  Y6, Y3, Y3
	ADDQ    $24, R10
	ADDQ    $32, BX
	DECQ    R11
	JNZ     ckeep
	VPTEST  Y8, Y8
	JNZ     cexact

ccount:
	VPCMPEQD Y13, Y3, Y9 // count == 1
	MOVQ     R9, R11
	MOVQ     DX, BX
	MOVQ     DI, R10

csum:
	VMOVDQU (BX), Y6
	VPANDN  Y6, Y9, Y7 // shared: keep, count > 1
	VPAND   Y9, Y6, Y6 // unique
	VMOVDQU (R10), Y4
	VPSUBD  Y7, Y4, Y4
	VMOVDQU Y4, (R10)
	VMOVDQU 32(R10), Y4
	VPSUBD  Y6, Y4, Y4
	VMOVDQU Y4, 32(R10)
	ADDQ    $32, BX
	ADDQ    $64, R10
	DECQ    R11
	JNZ     csum

	ADDQ $8, AX
	JMP  cloop

cexact: // the masks again, from float64 differences
	RAM_BASE
	VPXOR   Y3, Y3, Y3
	MOVQ    R8, R10
	MOVQ    R9, R11
	MOVQ    DX, BX

cexkeep:
	MOVQ    (R10), R12
	VMOVUPS (R12)(AX*4), Y4
	RAM_KEEP
	VMOVDQU Y6, (BX)
	VPSUBD  Y6, Y3, Y3
	ADDQ    $24, R10
	ADDQ    $32, BX
	DECQ    R11
	JNZ     cexkeep
	JMP     ccount

cdone:
	VZEROUPPER
	RET

// func ramCountBF16AVX2(base *uint16, models *[]uint16, nModels, n int, eps float64, lo, hi float32, tmp, sums *uint32)
//
// ramCountAVX2 on BF16 words, each widened to float32 as it is loaded (the
// decoder's widening): ramCountChunk's counts on the decoded values for the first n
// elements (a multiple of 8), eight at a time: per model k, sums[16k+l] += its counting entries j ≡ l (mod 8) that other
// models share, sums[16k+8+l] those it alone has. tmp holds 8 words per model. The
// keep masks come from float32 differences and the thresholds lo and hi; a group of
// eight where one lane is undecided takes RAM_KEEP's float64 compare for all.
TEXT ·ramCountBF16AVX2(SB), NOSPLIT, $0-64
	MOVQ         base+0(FP), SI
	MOVQ         models+8(FP), R8
	MOVQ         nModels+16(FP), R9
	MOVQ         n+24(FP), CX
	VBROADCASTSD eps+32(FP), Y15
	VBROADCASTSS lo+40(FP), Y12
	VBROADCASTSS hi+44(FP), Y11
	MOVQ         tmp+48(FP), DX
	MOVQ         sums+56(FP), DI
	VMOVUPD      ramAbs64<>(SB), Y14
	VMOVDQU      bf16ones<>(SB), Y13
	VMOVUPS      bf16abs<>(SB), Y10
	XORQ         AX, AX

wcloop:
	CMPQ    AX, CX
	JGE     wcdone
	VPMOVZXWD (SI)(AX*2), Y0
	VPSLLD  $16, Y0, Y0
	VPXOR   Y3, Y3, Y3 // count
	VPXOR   Y8, Y8, Y8 // undecided lanes
	MOVQ    R8, R10
	MOVQ    R9, R11
	MOVQ    DX, BX

wckeep:
	MOVQ    (R10), R12
	VPMOVZXWD (R12)(AX*2), Y4
	VPSLLD  $16, Y4, Y4
	VSUBPS  Y0, Y4, Y7
	VANDPS  Y10, Y7, Y7 // |x − b| rounded to float32
	RAM_KEEP32
	VMOVDQU Y6, (BX)
	VPSUBD  Y6, Y3, Y3
	ADDQ    $24, R10
	ADDQ    $32, BX
	DECQ    R11
	JNZ     wckeep
	VPTEST  Y8, Y8
	JNZ     wcexact

wccount:
	VPCMPEQD Y13, Y3, Y9 // count == 1
	MOVQ     R9, R11
	MOVQ     DX, BX
	MOVQ     DI, R10

wcsum:
	VMOVDQU (BX), Y6
	VPANDN  Y6, Y9, Y7 // shared: keep, count > 1
	VPAND   Y9, Y6, Y6 // unique
	VMOVDQU (R10), Y4
	VPSUBD  Y7, Y4, Y4
	VMOVDQU Y4, (R10)
	VMOVDQU 32(R10), Y4
	VPSUBD  Y6, Y4, Y4
	VMOVDQU Y4, 32(R10)
	ADDQ    $32, BX
	ADDQ    $64, R10
	DECQ    R11
	JNZ     wcsum

	ADDQ $8, AX
	JMP  wcloop

wcexact: // the masks again, from float64 differences
	RAM_BASE
	VPXOR   Y3, Y3, Y3
	MOVQ    R8, R10
	MOVQ    R9, R11
	MOVQ    DX, BX

wcexkeep:
	MOVQ    (R10), R12
	VPMOVZXWD (R12)(AX*2), Y4
	VPSLLD  $16, Y4, Y4
	RAM_KEEP
	VMOVDQU Y6, (BX)
	VPSUBD  Y6, Y3, Y3
	ADDQ    $24, R10
	ADDQ    $32, BX
	DECQ    R11
	JNZ     wcexkeep
	JMP     wccount

wcdone:
	VZEROUPPER
	RET

// func ramBF16AVX2(out, base *uint16, models *[]uint16, nModels, n int, eps float64, lo, hi float32, lambda, tmp *float32)
//
// ram's merge from BF16 inputs to BF16 out for the first n elements (a multiple of
// 8), eight at a time, with ramMergeChunk's arithmetic: d = x − b in float32 (the
// float64 difference rounded once to float32 is the float32 difference: 53 ≥ 2·24+2
// bits), the keep masks as ramCountAVX2's, term λ·d where one model counts and
// d/count where several do, the terms added to +0 in model order, b + sum, and the
// sum rounded to nearest even into BF16 with NaN kept quiet (dtype.Float32ToBF16).
// tmp holds 16 floats per model: its d, then its keep mask.
TEXT ·ramBF16AVX2(SB), NOSPLIT, $0-72
	MOVQ         out+0(FP), DI
	MOVQ         base+8(FP), SI
	MOVQ         models+16(FP), R8
	MOVQ         nModels+24(FP), R9
	MOVQ         n+32(FP), CX
	VBROADCASTSD eps+40(FP), Y15
	MOVQ         lambda+56(FP), R13
	MOVQ         tmp+64(FP), DX
	VMOVUPD      ramAbs64<>(SB), Y14
	VMOVDQU      bf16ones<>(SB), Y13
	XORQ         AX, AX

bloop:
	CMPQ         AX, CX
	JGE          bdone
	VBROADCASTSS lo+48(FP), Y12
	VBROADCASTSS hi+52(FP), Y11
	VPMOVZXWD    (SI)(AX*2), Y0
	VPSLLD       $16, Y0, Y0 // b
	VPXOR        Y3, Y3, Y3  // count
	VPXOR        Y8, Y8, Y8  // undecided lanes
	MOVQ         R8, R10
	MOVQ         R9, R11
	MOVQ         DX, BX

bkeep:
	MOVQ      (R10), R12
	VPMOVZXWD (R12)(AX*2), Y4
	VPSLLD    $16, Y4, Y4 // x
	VSUBPS    Y0, Y4, Y5  // d = x − b
	VMOVUPS   Y5, (BX)
	VANDPS    bf16abs<>(SB), Y5, Y7
	RAM_KEEP32
	VMOVDQU   Y6, 32(BX)
	VPSUBD    Y6, Y3, Y3
	ADDQ      $24, R10
	ADDQ      $64, BX
	DECQ      R11
	JNZ       bkeep
	VPTEST    Y8, Y8
	JNZ       bexact

bmerge:
	VCVTDQ2PS Y3, Y8      // count as float32
	VPCMPEQD  Y13, Y3, Y9 // count == 1
	VXORPS    Y10, Y10, Y10
	MOVQ      R13, R10
	MOVQ      R9, R11
	MOVQ      DX, BX

bterm:
	VMOVUPS      (BX), Y5
	VBROADCASTSS (R10), Y11
	VMULPS       Y11, Y5, Y12    // λ·d
	VDIVPS       Y8, Y5, Y4      // d/count
	VBLENDVPS    Y9, Y12, Y4, Y4 // λ·d where count == 1
	VANDPS       32(BX), Y4, Y4  // +0 where the entry does not count
	VADDPS       Y4, Y10, Y10
	ADDQ         $4, R10
	ADDQ         $64, BX
	DECQ         R11
	JNZ          bterm

	VADDPS    Y10, Y0, Y0 // b + sum
	BF16_RNE(Y0, Y13, Y3, Y4, Y5)
	VPSRLD    $16, Y3, Y3
	VEXTRACTI128 $1, Y3, X4
	VPACKUSDW X4, X3, X3
	VMOVDQU   X3, (DI)(AX*2)
	ADDQ      $8, AX
	JMP       bloop

bexact: // the masks again, from float64 differences
	RAM_BASE
	VPXOR     Y3, Y3, Y3
	MOVQ      R8, R10
	MOVQ      R9, R11
	MOVQ      DX, BX

bexkeep:
	MOVQ      (R10), R12
	VPMOVZXWD (R12)(AX*2), Y4
	VPSLLD    $16, Y4, Y4
	RAM_KEEP
	VMOVDQU   Y6, 32(BX)
	VPSUBD    Y6, Y3, Y3
	ADDQ      $24, R10
	ADDQ      $64, BX
	DECQ      R11
	JNZ       bexkeep
	JMP       bmerge

bdone:
	VZEROUPPER
	RET

// RAM_CONSTS512 loads what the AVX-512 loops read besides BF16_RNE512_CONSTS' Z4
// (|x|'s mask) and Z17 (ones): Z18 lo, Z19 hi, Z20 eps, Z21 float64 |x|'s mask. It
// takes lo, hi and eps from the arguments at their offsets; R12 is clobbered.
#define RAM_CONSTS512(eps, lo, hi) \
	VBROADCASTSS  lo, Z18 \
	VBROADCASTSS  hi, Z19 \
	VBROADCASTSD  eps, Z20 \
	MOVQ          $0x7fffffffffffffff, R12 \
	VPBROADCASTQ  R12, Z21

// RAM_ARGS512 loads the AVX-512 loops' shared arguments: the models' words' slices
// to R8, their count to R9, n to CX, tmp to DX, the constants RAM_CONSTS512 loads,
// and AX, the element, to 0.
#define RAM_ARGS512(models, nModels, n, eps, lo, hi, tmp) \
	MOVQ models, R8 \
	MOVQ nModels, R9 \
	MOVQ n, CX \
	RAM_CONSTS512(eps, lo, hi) \
	MOVQ tmp, DX \
	XORQ AX, AX

// RAM_WIDEN512 sets dst to the sixteen BF16 words at addr widened to float32.
#define RAM_WIDEN512(addr, dst) \
	VPMOVZXWD addr, dst \
	VPSLLD    $16, dst, dst

// RAM_KEEP512 sets K2 to the keep mask of the model's d = x − b in Z5 (|d| > hi in
// Z19) and ORs into K6 the lanes where lo in Z18 ≤ |d| ≤ hi, the ones the float32
// compare cannot decide (ramThresholds); Z7 and K3 are clobbered.
#define RAM_KEEP512 \
	VPANDD   Z4, Z5, Z7        \
	VCMPPS   $0x1E, Z19, Z7, K2 \
	VCMPPS   $0x1D, Z18, Z7, K3 \
	KANDNW   K3, K2, K3        \
	KORW     K3, K6, K6

// RAM_BASE512 widens b in Z0 to float64 in Z1 (elements 0-7) and Z2 (8-15).
#define RAM_BASE512 \
	VCVTPS2PD     Y0, Z1     \
	VEXTRACTF64X4 $1, Z0, Y2 \
	VCVTPS2PD     Y2, Z2

// RAM_EXACT512 sets K2 to the keep mask of x in Z6 from the float64 difference
// against b in Z1 and Z2 (RAM_BASE512): |float64(x) − float64(b)| > eps in Z20,
// ordered (false for a NaN), as RAM_KEEP does for eight lanes; Z6, Z7 and K3 are
// clobbered.
#define RAM_EXACT512 \
	VCVTPS2PD     Y6, Z7         \
	VEXTRACTF64X4 $1, Z6, Y6     \
	VCVTPS2PD     Y6, Z6         \
	VSUBPD        Z1, Z7, Z7     \
	VSUBPD        Z2, Z6, Z6     \
	VPANDQ        Z21, Z7, Z7    \
	VPANDQ        Z21, Z6, Z6    \
	VCMPPD        $0x1E, Z20, Z7, K2 \
	VCMPPD        $0x1E, Z20, Z6, K3 \
	KUNPCKBW      K2, K3, K2

// RAM_KEEPS512 widens the base's sixteen words at element AX (from SI) into b in
// Z0 and makes the group's keep masks from float32 differences, a model at a time
// (the models' words from R8, R9 of them): each model's d = x − b and keep mask go
// to its 128 bytes of tmp at DX (d, then the mask's 16 bits at 64), and Z3 counts
// the models that keep each lane. Where RAM_KEEP512 left a lane undecided it jumps
// to exact, which redoes the masks with RAM_EXACTS512. loop is the label it
// defines; R10, R11, R12 and BX are scratch.
#define RAM_KEEPS512(loop, exact) \
	RAM_WIDEN512((SI)(AX*2), Z0) \
	VPXORD  Z3, Z3, Z3 \
	KXORW   K6, K6, K6 \
	MOVQ    R8, R10 \
	MOVQ    R9, R11 \
	MOVQ    DX, BX \
loop: \
	MOVQ    (R10), R12 \
	RAM_WIDEN512((R12)(AX*2), Z6) \
	VSUBPS  Z0, Z6, Z5 \
	VMOVUPS Z5, (BX) \
	RAM_KEEP512 \
	KMOVW   K2, 64(BX) \
	VPADDD  Z17, Z3, K2, Z3 \
	ADDQ    $24, R10 \
	ADDQ    $128, BX \
	DECQ    R11 \
	JNZ     loop \
	KORTESTW K6, K6 \
	JNZ     exact

// RAM_EXACTS512 makes the keep masks and Z3's counts again, as RAM_KEEPS512 does,
// from float64 differences (RAM_EXACT512), for a group where some lane was
// undecided; the differences RAM_KEEPS512 stored stay. loop is the label it
// defines.
#define RAM_EXACTS512(loop) \
	RAM_BASE512 \
	VPXORD  Z3, Z3, Z3 \
	MOVQ    R8, R10 \
	MOVQ    R9, R11 \
	MOVQ    DX, BX \
loop: \
	MOVQ    (R10), R12 \
	RAM_WIDEN512((R12)(AX*2), Z6) \
	RAM_EXACT512 \
	KMOVW   K2, 64(BX) \
	VPADDD  Z17, Z3, K2, Z3 \
	ADDQ    $24, R10 \
	ADDQ    $128, BX \
	DECQ    R11 \
	JNZ     loop

// func ramBF16AVX512(out, base *uint16, models *[]uint16, nModels, n int, eps float64, lo, hi float32, lambda, tmp *float32)
//
// ramBF16AVX2 sixteen lanes at a time, for the first n elements (a multiple of 16):
// the same operations on each lane, in the same order and with the same operands
// first. The keep masks are mask registers: a model whose entry does not count
// leaves the lane's sum as it is (merge-masked), where the AVX2 loop adds +0, the
// same since the sum, begun at +0, is never −0. tmp holds 32 floats per model: its
// d, then its keep mask's 16 bits.
TEXT ·ramBF16AVX512(SB), NOSPLIT, $0-72
	BF16_RNE512_CONSTS // Z4 |x|'s mask, Z17 ones (AX clobbered)
	MOVQ out+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ lambda+56(FP), R13
	RAM_ARGS512(models+16(FP), nModels+24(FP), n+32(FP), eps+40(FP), lo+48(FP), hi+52(FP), tmp+64(FP))

zloop:
	CMPQ   AX, CX
	JGE    zdone
	RAM_KEEPS512(zkeep, zexact)

zmerge:
	VCVTDQ2PS Z3, Z8       // count as float32
	VPCMPEQD  Z17, Z3, K4  // count == 1
	VPXORD    Z9, Z9, Z9   // the sum
	MOVQ      R13, R10
	MOVQ      R9, R11
	MOVQ      DX, BX

zterm:
	VMOVUPS     (BX), Z5
	KMOVW       64(BX), K2
	VDIVPS      Z8, Z5, Z12          // d/count
	VMULPS.BCST (R10), Z5, K4, Z12   // λ·d where count == 1
	VADDPS      Z12, Z9, K2, Z9      // added where the entry counts
	ADDQ        $4, R10
	ADDQ        $128, BX
	DECQ        R11
	JNZ         zterm

	VADDPS Z9, Z0, Z0 // b + sum
	BF16_RNE512_STORE(Z0, (DI)(AX*2))
	ADDQ   $16, AX
	JMP    zloop

zexact: // the masks again, from float64 differences
	RAM_EXACTS512(zexkeep)
	JMP    zmerge

zdone:
	VZEROUPPER
	RET

// func ramCountBF16AVX512(base *uint16, models *[]uint16, nModels, n int, eps float64, lo, hi float32, tmp *float32, sums *uint32)
//
// ramCountBF16AVX2's counts sixteen lanes at a time, for the first n elements (a
// multiple of 16), with the keep masks in mask registers: per model k,
// sums[16k] += its counting entries that other models share and sums[16k+8] those
// it alone has (whole counts, which addCounts adds as it adds the AVX2 loop's
// per-lane ones). tmp holds 128 bytes per model, as RAM_KEEPS512 lays them out.
TEXT ·ramCountBF16AVX512(SB), NOSPLIT, $0-64
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z4
	MOVL $1, AX
	VPBROADCASTD AX, Z17
	MOVQ base+0(FP), SI
	MOVQ sums+56(FP), DI
	RAM_ARGS512(models+8(FP), nModels+16(FP), n+24(FP), eps+32(FP), lo+40(FP), hi+44(FP), tmp+48(FP))

yloop:
	CMPQ   AX, CX
	JGE    ydone
	RAM_KEEPS512(ykeep, yexact)

ycount:
	VPCMPEQD Z17, Z3, K4 // count == 1
	MOVQ     R9, R11
	MOVQ     DX, BX
	MOVQ     DI, R10

ysum:
	KMOVW   64(BX), K2
	KANDNW  K2, K4, K3 // shared: keep, count > 1
	KANDW   K2, K4, K2 // unique
	KMOVW   K3, R12
	POPCNTL R12, R12
	ADDL    R12, (R10)
	KMOVW   K2, R12
	POPCNTL R12, R12
	ADDL    R12, 32(R10)
	ADDQ    $128, BX
	ADDQ    $64, R10
	DECQ    R11
	JNZ     ysum

	ADDQ $16, AX
	JMP  yloop

yexact: // the masks again, from float64 differences
	RAM_EXACTS512(yexkeep)
	JMP    ycount

ydone:
	VZEROUPPER
	RET
