//go:build !purego

#include "textflag.h"

// func widenBF16AVX2(dst *float32, src *uint16, n int)
//
// dst[i] = float32 with the bits src[i] << 16, 16 elements a step; n is a multiple
// of 16. The same as the Go loop in decodeFast, which checks it.
TEXT ·widenBF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

loop:
	CMPQ CX, $16
	JLT  done
	VPMOVZXWD (SI), Y0
	VPMOVZXWD 16(SI), Y1
	VPSLLD    $16, Y0, Y0
	VPSLLD    $16, Y1, Y1
	VMOVDQU   Y0, (DI)
	VMOVDQU   Y1, 32(DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	SUBQ      $16, CX
	JMP       loop

done:
	VZEROUPPER
	RET

DATA bf16ones<>+0(SB)/8, $0x0000000100000001
DATA bf16ones<>+8(SB)/8, $0x0000000100000001
DATA bf16ones<>+16(SB)/8, $0x0000000100000001
DATA bf16ones<>+24(SB)/8, $0x0000000100000001
GLOBL bf16ones<>(SB), RODATA|NOPTR, $32

DATA bf16half<>+0(SB)/8, $0x00007fff00007fff
DATA bf16half<>+8(SB)/8, $0x00007fff00007fff
DATA bf16half<>+16(SB)/8, $0x00007fff00007fff
DATA bf16half<>+24(SB)/8, $0x00007fff00007fff
GLOBL bf16half<>(SB), RODATA|NOPTR, $32

DATA bf16abs<>+0(SB)/8, $0x7fffffff7fffffff
DATA bf16abs<>+8(SB)/8, $0x7fffffff7fffffff
DATA bf16abs<>+16(SB)/8, $0x7fffffff7fffffff
DATA bf16abs<>+24(SB)/8, $0x7fffffff7fffffff
GLOBL bf16abs<>(SB), RODATA|NOPTR, $32

DATA bf16inf<>+0(SB)/8, $0x7f8000007f800000
DATA bf16inf<>+8(SB)/8, $0x7f8000007f800000
DATA bf16inf<>+16(SB)/8, $0x7f8000007f800000
DATA bf16inf<>+24(SB)/8, $0x7f8000007f800000
GLOBL bf16inf<>(SB), RODATA|NOPTR, $32

DATA bf16quiet<>+0(SB)/8, $0x0040000000400000
DATA bf16quiet<>+8(SB)/8, $0x0040000000400000
DATA bf16quiet<>+16(SB)/8, $0x0040000000400000
DATA bf16quiet<>+24(SB)/8, $0x0040000000400000
GLOBL bf16quiet<>(SB), RODATA|NOPTR, $32

// func narrowBF16AVX2(dst *uint16, src *float32, n int)
//
// dst[i] = Float32ToBF16(src[i]), 8 elements a step; n is a multiple of 8: add
// 0x7fff plus the lowest kept bit (round to nearest, ties to even), or, for a NaN, set
// the quiet bit; keep the top 16 bits.
TEXT ·narrowBF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

nloop:
	CMPQ CX, $8
	JLT  ndone
	VMOVDQU   (SI), Y2
	VPSRLD    $16, Y2, Y3
	VPAND     bf16ones<>(SB), Y3, Y3
	VPADDD    Y3, Y2, Y3
	VPADDD    bf16half<>(SB), Y3, Y3
	VPAND     bf16abs<>(SB), Y2, Y4
	VPCMPGTD  bf16inf<>(SB), Y4, Y4
	VPOR      bf16quiet<>(SB), Y2, Y5
	VPBLENDVB Y4, Y5, Y3, Y3
	VPSRLD    $16, Y3, Y4
	VEXTRACTI128 $1, Y4, X5
	VPACKUSDW X5, X4, X4
	VMOVDQU   X4, (DI)
	ADDQ $32, SI
	ADDQ $16, DI
	SUBQ $8, CX
	JMP  nloop

ndone:
	VZEROUPPER
	RET
