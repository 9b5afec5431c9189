//go:build !purego

#include "textflag.h"
#include "splitmix_amd64.h"

DATA drawsIota<>+0(SB)/8, $0
DATA drawsIota<>+8(SB)/8, $1
DATA drawsIota<>+16(SB)/8, $2
DATA drawsIota<>+24(SB)/8, $3
DATA drawsIota<>+32(SB)/8, $4
DATA drawsIota<>+40(SB)/8, $5
DATA drawsIota<>+48(SB)/8, $6
DATA drawsIota<>+56(SB)/8, $7
GLOBL drawsIota<>(SB), RODATA|NOPTR, $64

// func dareDrawsAVX512(dst *uint64, n int, key, h, e0 uint64)
TEXT ·dareDrawsAVX512(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ n+8(FP), CX
	SPLITMIX512_CONSTS // Z15 = G: also the index multiplier
	MOVQ key+16(FP), AX
	VPBROADCASTQ AX, Z13
	MOVQ h+24(FP), AX
	VPBROADCASTQ AX, Z11
	MOVQ e0+32(FP), AX
	VPBROADCASTQ AX, Z0
	VPADDQ drawsIota<>(SB), Z0, Z0
	VPMULLQ Z15, Z0, Z0 // (e0+lane)·golden
	MOVQ $8, AX
	VPBROADCASTQ AX, Z10
	VPMULLQ Z15, Z10, Z10 // 8·golden: the step of (e)·golden
loop:
	VPXORQ Z11, Z0, Z1
	SPLITMIX512(Z1, Z2)
	VPXORQ Z13, Z1, Z1
	SPLITMIX512(Z1, Z2)
	VMOVDQU64 Z1, (DI)
	VPADDQ Z10, Z0, Z0
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ  loop
	VZEROUPPER
	RET
