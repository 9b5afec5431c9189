//go:build !purego

#include "textflag.h"

DATA tiesSignBit<>+0(SB)/8, $0x8000000080000000
DATA tiesSignBit<>+8(SB)/8, $0x8000000080000000
DATA tiesSignBit<>+16(SB)/8, $0x8000000080000000
DATA tiesSignBit<>+24(SB)/8, $0x8000000080000000
GLOBL tiesSignBit<>(SB), RODATA|NOPTR, $32

DATA tiesOne<>+0(SB)/8, $0x3f8000003f800000
DATA tiesOne<>+8(SB)/8, $0x3f8000003f800000
DATA tiesOne<>+16(SB)/8, $0x3f8000003f800000
DATA tiesOne<>+24(SB)/8, $0x3f8000003f800000
GLOBL tiesOne<>(SB), RODATA|NOPTR, $32

// func tiesSignAVX2(sign *uint32, sum *float32, n int)
// sign[j] = 1<<31 if sum[j] < 0 (ordered: false for NaN and −0), else 0.
TEXT ·tiesSignAVX2(SB), NOSPLIT, $0-24
	MOVQ sign+0(FP), DI
	MOVQ sum+8(FP), SI
	MOVQ n+16(FP), CX
	VXORPS Y7, Y7, Y7
sloop:
	CMPQ CX, $8
	JLT  sdone
	VMOVUPS (SI), Y0
	VCMPPS  $1, Y7, Y0, Y1 // LT_OS: sum < 0
	VANDPS  tiesSignBit<>(SB), Y1, Y1
	VMOVUPS Y1, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  sloop
sdone:
	VZEROUPPER
	RET

// func tiesAccumAVX2(num, den, d *float32, sign *uint32, w float32, n int)
// Where d[j] ≠ 0 (any bits but ±0) and its sign bit equals sign[j]:
// num[j] += d[j], den[j] += w.
TEXT ·tiesAccumAVX2(SB), NOSPLIT, $0-48
	MOVQ num+0(FP), DI
	MOVQ den+8(FP), SI
	MOVQ d+16(FP), DX
	MOVQ sign+24(FP), R8
	VBROADCASTSS w+32(FP), Y6
	MOVQ n+40(FP), CX
	VPXOR Y7, Y7, Y7
aloop:
	CMPQ CX, $8
	JLT  adone
	VMOVDQU  (DX), Y0          // d bits
	VPSLLD   $1, Y0, Y1
	VPCMPEQD Y7, Y1, Y1        // all ones where d is ±0
	VPXOR    (R8), Y0, Y2
	VPSRAD   $31, Y2, Y2       // all ones where the signs differ
	VPOR     Y2, Y1, Y1        // all ones where the model does not count
	VPANDN   Y0, Y1, Y3        // d & ^skip
	VPANDN   Y6, Y1, Y4        // w & ^skip
	VMOVUPS  (DI), Y5
	VADDPS   Y3, Y5, Y3        // num + d (num the first operand, as in Go)
	VMOVUPS  (SI), Y5
	VADDPS   Y4, Y5, Y4        // den + w
	VMOVUPS  Y3, (DI)
	VMOVUPS  Y4, (SI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, R8
	SUBQ $8, CX
	JMP  aloop
adone:
	VZEROUPPER
	RET

// func tiesFinishAVX2(dst, base, den *float32, lambda float32, n int)
// dst[j] = base[j] + float32(λ·(dst[j]/q)), q = den[j], or 1 where den[j] is ±0.
TEXT ·tiesFinishAVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ den+16(FP), DX
	VBROADCASTSS lambda+24(FP), Y6
	MOVQ n+32(FP), CX
	VPXOR Y7, Y7, Y7
floop:
	CMPQ CX, $8
	JLT  fdone
	VMOVDQU   (DX), Y0
	VPSLLD    $1, Y0, Y1
	VPCMPEQD  Y7, Y1, Y1       // den is ±0
	VBLENDVPS Y1, tiesOne<>(SB), Y0, Y0
	VMOVUPS   (DI), Y2
	VDIVPS    Y0, Y2, Y2       // num / q
	VMULPS    Y2, Y6, Y2       // λ·(num/q)
	VMOVUPS   (SI), Y3
	VADDPS    Y2, Y3, Y2       // base + λ·(num/q)
	VMOVUPS   Y2, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $32, DX
	SUBQ $8, CX
	JMP  floop
fdone:
	VZEROUPPER
	RET

DATA tiesAbs<>+0(SB)/8, $0x7fffffff7fffffff
DATA tiesAbs<>+8(SB)/8, $0x7fffffff7fffffff
DATA tiesAbs<>+16(SB)/8, $0x7fffffff7fffffff
DATA tiesAbs<>+24(SB)/8, $0x7fffffff7fffffff
GLOBL tiesAbs<>(SB), RODATA|NOPTR, $32

// func deltaAbsBitsAVX2(dst *uint32, x, b *float32, n int)
// dst[j] = bits(x[j] − b[j]) with the sign bit cleared.
TEXT ·deltaAbsBitsAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	VMOVDQU tiesAbs<>(SB), Y7
mloop:
	CMPQ CX, $8
	JLT  mdone
	VMOVUPS (SI), Y0
	VMOVUPS (DX), Y1
	VSUBPS  Y1, Y0, Y0 // x − b
	VPAND   Y7, Y0, Y0
	VMOVDQU Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  mloop
mdone:
	VZEROUPPER
	RET

// func trimAVX2(dst, x, b *float32, n int, w float32, t uint32) int
// dst[j] = float32(w·(x[j]−b[j])) where |x[j]−b[j]| (as bits) > t, else 0, eight at a
// time, stopping before the first group of eight that holds an element equal to t
// (those need the tie count, kept in Go). Returns how many elements it did.
TEXT ·trimAVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS w+32(FP), Y6
	MOVL         t+36(FP), R9
	VMOVD        R9, X5
	VPBROADCASTD X5, Y5
	VMOVDQU tiesAbs<>(SB), Y7
	XORQ AX, AX
tloop:
	CMPQ CX, $8
	JLT  tdone
	VMOVUPS  (SI), Y0
	VMOVUPS  (DX), Y1
	VSUBPS   Y1, Y0, Y0 // d = x − b
	VPAND    Y7, Y0, Y2 // |d| bits
	VPCMPEQD Y5, Y2, Y3
	VPTEST   Y3, Y3
	JNZ      tdone      // an element at the boundary: Go counts the ties
	VPCMPGTD Y5, Y2, Y3 // |d| > t
	VMULPS   Y6, Y0, Y0 // d·w
	VPAND    Y3, Y0, Y0
	VMOVUPS  Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	ADDQ $8, AX
	SUBQ $8, CX
	JMP  tloop
tdone:
	MOVQ AX, ret+40(FP)
	VZEROUPPER
	RET

// func binScanAVX2(mags *uint32, n int, bin uint32) int
// The start of the first group of eight, among the first n (a multiple of 8), that
// holds an element whose top 16 bits equal bin; n if none does.
TEXT ·binScanAVX2(SB), NOSPLIT, $0-32
	MOVQ mags+0(FP), SI
	MOVQ n+8(FP), CX
	MOVL         bin+16(FP), R9
	VMOVD        R9, X5
	VPBROADCASTD X5, Y5
	XORQ AX, AX
bloop:
	CMPQ AX, CX
	JGE  bdone
	VMOVDQU  (SI), Y0
	VPSRLD   $16, Y0, Y0
	VPCMPEQD Y5, Y0, Y0
	VPTEST   Y0, Y0
	JNZ      bdone
	ADDQ $32, SI
	ADDQ $8, AX
	JMP  bloop
bdone:
	MOVQ AX, ret+24(FP)
	VZEROUPPER
	RET
