//go:build !purego

#include "textflag.h"

// func split2SSE2(lo, hi, src *byte, n int)
//
// lo[i], hi[i] = src[2i], src[2i+1] for i < n, 16 elements a step; n is a multiple
// of 16. The same as split2Go, which the tests check it against.
TEXT ·split2SSE2(SB), NOSPLIT, $0-32
	MOVQ     lo+0(FP), DI
	MOVQ     hi+8(FP), DX
	MOVQ     src+16(FP), SI
	MOVQ     n+24(FP), CX
	PCMPEQW  X7, X7
	PSRLW    $8, X7     // 0x00ff in every 16-bit lane

loop:
	CMPQ     CX, $16
	JLT      done
	MOVOU    (SI), X0
	MOVOU    16(SI), X1
	MOVO     X0, X2
	MOVO     X1, X3
	PAND     X7, X0
	PAND     X7, X1
	PACKUSWB X1, X0     // the low bytes of 16 elements
	PSRLW    $8, X2
	PSRLW    $8, X3
	PACKUSWB X3, X2     // the high bytes
	MOVOU    X0, (DI)
	MOVOU    X2, (DX)
	ADDQ     $32, SI
	ADDQ     $16, DI
	ADDQ     $16, DX
	SUBQ     $16, CX
	JMP      loop

done:
	RET

// func merge2SSE2(dst, lo, hi *byte, n int)
//
// dst[2i], dst[2i+1] = lo[i], hi[i] for i < n, 16 elements a step; n is a multiple
// of 16. The same as merge2Go.
TEXT ·merge2SSE2(SB), NOSPLIT, $0-32
	MOVQ      dst+0(FP), DI
	MOVQ      lo+8(FP), SI
	MOVQ      hi+16(FP), DX
	MOVQ      n+24(FP), CX

loop:
	CMPQ      CX, $16
	JLT       done
	MOVOU     (SI), X0
	MOVOU     (DX), X1
	MOVO      X0, X2
	PUNPCKLBW X1, X0
	PUNPCKHBW X1, X2
	MOVOU     X0, (DI)
	MOVOU     X2, 16(DI)
	ADDQ      $16, SI
	ADDQ      $16, DX
	ADDQ      $32, DI
	SUBQ      $16, CX
	JMP       loop

done:
	RET

// func merge2AVX2(dst, lo, hi *byte, n int)
//
// merge2SSE2 with 32 elements a step; n is a multiple of 32. Unpacking works within
// each 128-bit lane, so the two lanes' halves are put back in order with VPERM2I128.
TEXT ·merge2AVX2(SB), NOSPLIT, $0-32
	MOVQ       dst+0(FP), DI
	MOVQ       lo+8(FP), SI
	MOVQ       hi+16(FP), DX
	MOVQ       n+24(FP), CX

loop:
	CMPQ       CX, $32
	JLT        done
	VMOVDQU    (SI), Y0
	VMOVDQU    (DX), Y1
	VPUNPCKLBW Y1, Y0, Y2 // elements 0-7 | 16-23
	VPUNPCKHBW Y1, Y0, Y3 // elements 8-15 | 24-31
	VPERM2I128 $0x20, Y3, Y2, Y4
	VPERM2I128 $0x31, Y3, Y2, Y5
	VMOVDQU    Y4, (DI)
	VMOVDQU    Y5, 32(DI)
	ADDQ       $32, SI
	ADDQ       $32, DX
	ADDQ       $64, DI
	SUBQ       $32, CX
	JMP        loop

done:
	VZEROUPPER
	RET
