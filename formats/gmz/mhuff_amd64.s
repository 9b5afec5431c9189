//go:build !purego

#include "textflag.h"

// The four streams' bit buffers (v), as mhDecodeFastGo keeps them: the next bits
// at the top, a sentinel bit below the bits not yet used.
#define V0 R8
#define V1 R9
#define V2 R10
#define V3 R11

// Output pointers.
#define O0 R12
#define O1 R13
#define O2 R14
#define O3 R15

// One lookup: shift out the entry's bits (its low 6 bits, so that the next lookup
// waits only on the load and this shift), store its (up to) 4 symbols (bytes 1..4),
// move on by their count. CX holds 64-mhTableLog, SI the table.
#define STEP(v, o) \
	SHRXQ CX, v, AX; \
	MOVQ  (SI)(AX*8), BX; \
	SHLXQ BX, v, v; \
	RORXQ $8, BX, AX; \
	MOVL  AX, (o); \
	SHRQ  $61, BX; \
	ADDQ  BX, o

// After a round: the bits used are the sentinel's distance from bit 7; the new bit
// position replaces v (and its stack slot).
#define ADVANCE(v, pmem) \
	TZCNTQ v, AX; \
	MOVQ   pmem, v; \
	LEAQ   -7(v)(AX*1), v; \
	MOVQ   v, pmem

// The loop's condition for one stream: 8 bytes to read at p>>3 (p ≤ DX =
// 8*lim+7, lim the last offset where they are), room for a round of stores at o.
#define CHECK(v, o, emem) \
	CMPQ v, DX; \
	JGT  done; \
	CMPQ o, emem; \
	JHI  done

// Load 8 bytes big-endian at bit position v, align to bit v, and make the low byte
// the sentinel (0x80; one byte write, which merges into v).
#define REFILL(v) \
	MOVQ   v, AX; \
	SHRQ   $3, AX; \
	MOVBEQ (DI)(AX*1), BX; \
	ANDQ   $7, v; \
	SHLXQ  v, BX, v; \
	MOVB   $0x80, v

// func mhDecodeFastBMI2(dst, in *byte, lim int, tab *[mhTableLen]uint64, p, o, e *[mhStreams]int)
//
// Stack: the bit positions p at 0..24(SP), the output limits (pointers) at 32..56.
TEXT ·mhDecodeFastBMI2(SB), NOSPLIT, $64-56
	MOVQ dst+0(FP), AX
	MOVQ in+8(FP), DI
	MOVQ lim+16(FP), DX
	LEAQ 7(DX*8), DX
	MOVQ tab+24(FP), SI

	MOVQ e+48(FP), BX
	MOVQ 0(BX), CX
	ADDQ AX, CX
	MOVQ CX, 32(SP)
	MOVQ 8(BX), CX
	ADDQ AX, CX
	MOVQ CX, 40(SP)
	MOVQ 16(BX), CX
	ADDQ AX, CX
	MOVQ CX, 48(SP)
	MOVQ 24(BX), CX
	ADDQ AX, CX
	MOVQ CX, 56(SP)

	MOVQ o+40(FP), BX
	MOVQ 0(BX), O0
	ADDQ AX, O0
	MOVQ 8(BX), O1
	ADDQ AX, O1
	MOVQ 16(BX), O2
	ADDQ AX, O2
	MOVQ 24(BX), O3
	ADDQ AX, O3

	MOVQ p+32(FP), BX
	MOVQ 0(BX), V0
	MOVQ V0, 0(SP)
	MOVQ 8(BX), V1
	MOVQ V1, 8(SP)
	MOVQ 16(BX), V2
	MOVQ V2, 16(SP)
	MOVQ 24(BX), V3
	MOVQ V3, 24(SP)

	MOVL $53, CX // 64 - mhTableLog
	JMP  refill

loop:
	STEP(V0, O0)
	STEP(V1, O1)
	STEP(V2, O2)
	STEP(V3, O3)
	STEP(V0, O0)
	STEP(V1, O1)
	STEP(V2, O2)
	STEP(V3, O3)
	STEP(V0, O0)
	STEP(V1, O1)
	STEP(V2, O2)
	STEP(V3, O3)
	STEP(V0, O0)
	STEP(V1, O1)
	STEP(V2, O2)
	STEP(V3, O3)
	STEP(V0, O0)
	STEP(V1, O1)
	STEP(V2, O2)
	STEP(V3, O3)

	// All four positions move before any check, as in the Go loop.
	ADVANCE(V0, 0(SP))
	ADVANCE(V1, 8(SP))
	ADVANCE(V2, 16(SP))
	ADVANCE(V3, 24(SP))
	CHECK(V0, O0, 32(SP))
	CHECK(V1, O1, 40(SP))
	CHECK(V2, O2, 48(SP))
	CHECK(V3, O3, 56(SP))

refill:
	REFILL(V0)
	REFILL(V1)
	REFILL(V2)
	REFILL(V3)
	JMP loop

done:
	MOVQ p+32(FP), BX
	MOVQ 0(SP), CX
	MOVQ CX, 0(BX)
	MOVQ 8(SP), CX
	MOVQ CX, 8(BX)
	MOVQ 16(SP), CX
	MOVQ CX, 16(BX)
	MOVQ 24(SP), CX
	MOVQ CX, 24(BX)

	MOVQ dst+0(FP), AX
	MOVQ o+40(FP), BX
	SUBQ AX, O0
	MOVQ O0, 0(BX)
	SUBQ AX, O1
	MOVQ O1, 8(BX)
	SUBQ AX, O2
	MOVQ O2, 16(BX)
	SUBQ AX, O3
	MOVQ O3, 24(BX)
	RET
