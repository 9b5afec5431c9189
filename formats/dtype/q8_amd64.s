//go:build !purego

#include "textflag.h"

// func decodeQ8_0AVX2(dst *float32, src *byte, scales *float32, blocks int)
//
// For each 34-byte block (2 bytes of fp16 scale, skipped: scales[b] holds it as
// float32, converted by the caller) dst = float32(int8(q))·d, 32 elements. The same
// operations, in the same order, as decodeQ8_0Go.
TEXT ·decodeQ8_0AVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ scales+16(FP), R8
	MOVQ blocks+24(FP), CX

dloop:
	TESTQ CX, CX
	JZ    ddone
	VBROADCASTSS (R8), Y4
	VPMOVSXBD    2(SI), Y0
	VPMOVSXBD    10(SI), Y1
	VPMOVSXBD    18(SI), Y2
	VPMOVSXBD    26(SI), Y3
	VCVTDQ2PS    Y0, Y0
	VCVTDQ2PS    Y1, Y1
	VCVTDQ2PS    Y2, Y2
	VCVTDQ2PS    Y3, Y3
	VMULPS       Y4, Y0, Y0
	VMULPS       Y4, Y1, Y1
	VMULPS       Y4, Y2, Y2
	VMULPS       Y4, Y3, Y3
	VMOVUPS      Y0, (DI)
	VMOVUPS      Y1, 32(DI)
	VMOVUPS      Y2, 64(DI)
	VMOVUPS      Y3, 96(DI)
	ADDQ         $34, SI
	ADDQ         $128, DI
	ADDQ         $4, R8
	DECQ         CX
	JMP          dloop

ddone:
	VZEROUPPER
	RET

DATA q8abs<>+0(SB)/8, $0x7fffffff7fffffff
DATA q8abs<>+8(SB)/8, $0x7fffffff7fffffff
DATA q8abs<>+16(SB)/8, $0x7fffffff7fffffff
DATA q8abs<>+24(SB)/8, $0x7fffffff7fffffff
GLOBL q8abs<>(SB), RODATA|NOPTR, $32

DATA q8sign<>+0(SB)/8, $0x8000000080000000
DATA q8sign<>+8(SB)/8, $0x8000000080000000
DATA q8sign<>+16(SB)/8, $0x8000000080000000
DATA q8sign<>+24(SB)/8, $0x8000000080000000
GLOBL q8sign<>(SB), RODATA|NOPTR, $32

DATA q8one<>+0(SB)/8, $0x3f8000003f800000
DATA q8one<>+8(SB)/8, $0x3f8000003f800000
DATA q8one<>+16(SB)/8, $0x3f8000003f800000
DATA q8one<>+24(SB)/8, $0x3f8000003f800000
GLOBL q8one<>(SB), RODATA|NOPTR, $32

DATA q8half<>+0(SB)/8, $0x3f0000003f000000
DATA q8half<>+8(SB)/8, $0x3f0000003f000000
DATA q8half<>+16(SB)/8, $0x3f0000003f000000
DATA q8half<>+24(SB)/8, $0x3f0000003f000000
GLOBL q8half<>(SB), RODATA|NOPTR, $32

// 127.5: a scaled value at or past it (or a NaN) sends the block to the Go path.
DATA q8lim<>+0(SB)/8, $0x42ff000042ff0000
DATA q8lim<>+8(SB)/8, $0x42ff000042ff0000
DATA q8lim<>+16(SB)/8, $0x42ff000042ff0000
DATA q8lim<>+24(SB)/8, $0x42ff000042ff0000
GLOBL q8lim<>(SB), RODATA|NOPTR, $32

// Dword order that undoes VPACKSSDW/VPACKSSWB's per-lane interleaving.
DATA q8perm<>+0(SB)/8, $0x0000000400000000
DATA q8perm<>+8(SB)/8, $0x0000000500000001
DATA q8perm<>+16(SB)/8, $0x0000000600000002
DATA q8perm<>+24(SB)/8, $0x0000000700000003
GLOBL q8perm<>(SB), RODATA|NOPTR, $32

// func absMaxQ8_0AVX2(src *float32, amax *float32, bad *uint8, blocks int)
//
// amax[b] = the largest |x| of block b's 32 values (max is exact in any order when
// no value is NaN); bad[b] = 1 if the block holds a NaN (whose result depends on
// the order of C's MAX), else 0.
TEXT ·absMaxQ8_0AVX2(SB), NOSPLIT, $0-32
	MOVQ    src+0(FP), SI
	MOVQ    amax+8(FP), DI
	MOVQ    bad+16(FP), DX
	MOVQ    blocks+24(FP), CX
	VMOVUPS q8abs<>(SB), Y7

mloop:
	TESTQ        CX, CX
	JZ           mdone
	VMOVUPS      (SI), Y0
	VMOVUPS      32(SI), Y1
	VMOVUPS      64(SI), Y2
	VMOVUPS      96(SI), Y3
	VCMPPS       $3, Y0, Y0, Y4
	VCMPPS       $3, Y1, Y1, Y5
	VORPS        Y5, Y4, Y4
	VCMPPS       $3, Y2, Y2, Y5
	VORPS        Y5, Y4, Y4
	VCMPPS       $3, Y3, Y3, Y5
	VORPS        Y5, Y4, Y4
	VMOVMSKPS    Y4, AX
	TESTL        AX, AX
	SETNE        (DX)
	VANDPS       Y7, Y0, Y0
	VANDPS       Y7, Y1, Y1
	VANDPS       Y7, Y2, Y2
	VANDPS       Y7, Y3, Y3
	VMAXPS       Y1, Y0, Y0
	VMAXPS       Y3, Y2, Y2
	VMAXPS       Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0x4e, X0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0xb1, X0, X1
	VMAXPS       X1, X0, X0
	VMOVSS       X0, (DI)
	ADDQ         $128, SI
	ADDQ         $4, DI
	INCQ         DX
	DECQ         CX
	JMP          mloop

mdone:
	VZEROUPPER
	RET

// func quantQ8_0AVX2(dst *byte, src *float32, ids *float32, bad *uint8, blocks int)
//
// For each block: v = x·ids[b]; if every |v| < 127.5, q = v rounded half away from
// zero (trunc(v), plus sign(v) where |v − trunc(v)| ≥ 0.5: exact, and what roundAway
// gives), stored as 32 int8 at dst+34b+2. Otherwise bad[b] = 1 and the block is left
// for the Go path. dst's scale bytes are not touched.
TEXT ·quantQ8_0AVX2(SB), NOSPLIT, $0-40
	MOVQ    dst+0(FP), DI
	MOVQ    src+8(FP), SI
	MOVQ    ids+16(FP), R8
	MOVQ    bad+24(FP), DX
	MOVQ    blocks+32(FP), CX
	VMOVUPS q8abs<>(SB), Y7
	VMOVUPS q8lim<>(SB), Y8
	VMOVUPS q8half<>(SB), Y9
	VMOVUPS q8sign<>(SB), Y10
	VMOVUPS q8one<>(SB), Y11
	VMOVDQU q8perm<>(SB), Y12

qloop:
	TESTQ        CX, CX
	JZ           qdone
	VBROADCASTSS (R8), Y6
	VMULPS       (SI), Y6, Y0
	VMULPS       32(SI), Y6, Y1
	VMULPS       64(SI), Y6, Y2
	VMULPS       96(SI), Y6, Y3

	// All |v| < 127.5 (false for NaN)?
	VANDPS    Y7, Y0, Y4
	VCMPPS    $1, Y8, Y4, Y4
	VANDPS    Y7, Y1, Y5
	VCMPPS    $1, Y8, Y5, Y5
	VANDPS    Y5, Y4, Y4
	VANDPS    Y7, Y2, Y5
	VCMPPS    $1, Y8, Y5, Y5
	VANDPS    Y5, Y4, Y4
	VANDPS    Y7, Y3, Y5
	VCMPPS    $1, Y8, Y5, Y5
	VANDPS    Y5, Y4, Y4
	VMOVMSKPS Y4, AX
	CMPL      AX, $0xff
	JEQ       qround
	MOVB      $1, (DX)
	JMP       qnext

qround:
	// Y13 = trunc(v); Y14 = |v − trunc(v)| ≥ 0.5; Y15 = ±1 with v's sign.
	VROUNDPS   $3, Y0, Y13
	VSUBPS     Y13, Y0, Y14
	VANDPS     Y7, Y14, Y14
	VCMPPS     $13, Y9, Y14, Y14
	VANDPS     Y10, Y0, Y15
	VORPS      Y11, Y15, Y15
	VANDPS     Y15, Y14, Y14
	VADDPS     Y14, Y13, Y13
	VCVTTPS2DQ Y13, Y0

	VROUNDPS   $3, Y1, Y13
	VSUBPS     Y13, Y1, Y14
	VANDPS     Y7, Y14, Y14
	VCMPPS     $13, Y9, Y14, Y14
	VANDPS     Y10, Y1, Y15
	VORPS      Y11, Y15, Y15
	VANDPS     Y15, Y14, Y14
	VADDPS     Y14, Y13, Y13
	VCVTTPS2DQ Y13, Y1

	VROUNDPS   $3, Y2, Y13
	VSUBPS     Y13, Y2, Y14
	VANDPS     Y7, Y14, Y14
	VCMPPS     $13, Y9, Y14, Y14
	VANDPS     Y10, Y2, Y15
	VORPS      Y11, Y15, Y15
	VANDPS     Y15, Y14, Y14
	VADDPS     Y14, Y13, Y13
	VCVTTPS2DQ Y13, Y2

	VROUNDPS   $3, Y3, Y13
	VSUBPS     Y13, Y3, Y14
	VANDPS     Y7, Y14, Y14
	VCMPPS     $13, Y9, Y14, Y14
	VANDPS     Y10, Y3, Y15
	VORPS      Y11, Y15, Y15
	VANDPS     Y15, Y14, Y14
	VADDPS     Y14, Y13, Y13
	VCVTTPS2DQ Y13, Y3

	// 32 int32 in [-127, 127] → 32 int8 in element order.
	VPACKSSDW Y1, Y0, Y0
	VPACKSSDW Y3, Y2, Y2
	VPACKSSWB Y2, Y0, Y0
	VPERMD    Y0, Y12, Y0
	VMOVDQU   Y0, 2(DI)

qnext:
	ADDQ $128, SI
	ADDQ $34, DI
	ADDQ $4, R8
	INCQ DX
	DECQ CX
	JMP  qloop

qdone:
	VZEROUPPER
	RET
