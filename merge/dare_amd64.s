//go:build !purego

#include "textflag.h"
#include "splitmix_amd64.h"

// DARE's draws (dareDraw) four at a time in 64-bit lanes. AVX2 has no 64-bit
// multiply: x·c mod 2⁶⁴ is lo(x)·lo(c) + (hi(x)·lo(c) + lo(x)·hi(c))·2³², three
// VPMULUDQs. The results are dareDraw's exactly (TestDareKeepAsmMatchesGo).

// k·0x9e3779b97f4a7c15 mod 2⁶⁴ for k = 0..7: the eight elements' e·G past the first.
DATA dareLaneG<>+0(SB)/8, $0x0000000000000000
DATA dareLaneG<>+8(SB)/8, $0x9e3779b97f4a7c15
DATA dareLaneG<>+16(SB)/8, $0x3c6ef372fe94f82a
DATA dareLaneG<>+24(SB)/8, $0xdaa66d2c7ddf743f
DATA dareLaneG<>+32(SB)/8, $0x78dde6e5fd29f054
DATA dareLaneG<>+40(SB)/8, $0x1715609f7c746c69
DATA dareLaneG<>+48(SB)/8, $0xb54cda58fbbee87e
DATA dareLaneG<>+56(SB)/8, $0x538454127b096493
GLOBL dareLaneG<>(SB), RODATA|NOPTR, $64

// v = v·c mod 2⁶⁴, c's low 32 bits in the low half of each lane of clo, its high 32
// bits in chi.
#define MUL64(v, clo, chi, t1, t2) \
	VPSRLQ   $32, v, t1 \
	VPMULUDQ clo, t1, t1 \
	VPMULUDQ chi, v, t2 \
	VPADDQ   t2, t1, t1 \
	VPSLLQ   $32, t1, t1 \
	VPMULUDQ clo, v, v \
	VPADDQ   t1, v, v

// splitmix64(v): Y15 the golden increment, Y14/Y13 and Y12/Y11 the two multipliers.
#define SPLITMIX(v, t1, t2) \
	VPADDQ Y15, v, v \
	VPSRLQ $30, v, t1 \
	VPXOR  t1, v, v \
	MUL64(v, Y14, Y13, t1, t2) \
	VPSRLQ $27, v, t1 \
	VPXOR  t1, v, v \
	MUL64(v, Y12, Y11, t1, t2) \
	VPSRLQ $31, v, t1 \
	VPXOR  t1, v, v

// keep = dareDraw(key, lane, e) < threshold for the four elements of eg (their e·G):
// Y9 the lane's mix, Y10 the key, Y7 the sign bit, Y8 threshold^sign (an unsigned
// compare from the signed one). Leaves the compare mask in v.
#define DRAW(eg, v, t1, t2) \
	VPXOR    Y9, eg, v \
	SPLITMIX(v, t1, t2) \
	VPXOR    Y10, v, v \
	SPLITMIX(v, t1, t2) \
	VPXOR    Y7, v, v \
	VPCMPGTQ v, Y8, v

#define BCAST(imm, reg, y) \
	MOVQ         imm, reg \
	VMOVQ        reg, X0 \
	VPBROADCASTQ X0, y

// func dareKeepAVX2(keep *bool, n int, off int64, key, lmix, threshold uint64)
// keep[j] = dareDraw(key, lane, off+j) < threshold for j < n (a multiple of 8), with
// lmix = (lane+1)·0xd1b54a32d192ed03.
TEXT ·dareKeepAVX2(SB), NOSPLIT, $0-48
	MOVQ keep+0(FP), DI
	MOVQ n+8(FP), CX
	BCAST($0x9e3779b97f4a7c15, AX, Y15)
	BCAST($0xbf58476d1ce4e5b9, AX, Y14)
	BCAST($0xbf58476d, AX, Y13)
	BCAST($0x94d049bb133111eb, AX, Y12)
	BCAST($0x94d049bb, AX, Y11)
	BCAST(key+24(FP), AX, Y10)
	BCAST(lmix+32(FP), AX, Y9)
	BCAST($0x8000000000000000, AX, Y7)
	MOVQ threshold+40(FP), AX
	BTCQ $63, AX
	BCAST(AX, AX, Y8)
	BCAST($0xf1bbcdcbfa53e0a8, AX, Y6) // 8·G: the step
	MOVQ off+16(FP), AX
	MOVQ $0x9e3779b97f4a7c15, BX
	IMULQ BX, AX                       // off·G
	VMOVQ AX, X0
	VPBROADCASTQ X0, Y0
	VPADDQ dareLaneG<>+0(SB), Y0, Y4
	VPADDQ dareLaneG<>+32(SB), Y0, Y5
	MOVQ $0x0101010101010101, R8
	MOVQ $0x8040201008040201, R9
	MOVQ $0x7f7f7f7f7f7f7f7f, R10
kloop:
	CMPQ CX, $8
	JLT  kdone
	DRAW(Y4, Y0, Y1, Y2)
	DRAW(Y5, Y3, Y1, Y2)
	VMOVMSKPD Y0, AX
	VMOVMSKPD Y3, BX
	SHLQ $4, BX
	ORQ  BX, AX   // bit k: element k kept
	IMULQ R8, AX  // the byte in every byte
	ANDQ R9, AX   // byte k: bit k
	ADDQ R10, AX  // byte k's top bit: bit k was set (no carries: each byte ≤ 0x80)
	SHRQ $7, AX
	ANDQ R8, AX   // byte k: 0 or 1
	MOVQ AX, (DI)
	VPADDQ Y6, Y4, Y4
	VPADDQ Y6, Y5, Y5
	ADDQ $8, DI
	SUBQ $8, CX
	JMP  kloop
kdone:
	VZEROUPPER
	RET

// The same draws eight at a time where AVX-512 (F and DQ) has the 64-bit multiply
// (VPMULLQ) and the unsigned compare.
// SPLITMIX512: splitmix_amd64.h.

// func dareKeepAVX512(keep *bool, n int, off int64, key, lmix, threshold uint64)
// dareKeepAVX2's contract.
TEXT ·dareKeepAVX512(SB), NOSPLIT, $0-48
	MOVQ keep+0(FP), DI
	MOVQ n+8(FP), CX
	SPLITMIX512_CONSTS
	MOVQ key+24(FP), AX
	VPBROADCASTQ AX, Z10
	MOVQ lmix+32(FP), AX
	VPBROADCASTQ AX, Z9
	MOVQ threshold+40(FP), AX
	VPBROADCASTQ AX, Z8
	MOVQ $0xf1bbcdcbfa53e0a8, AX // 8·G: the step
	VPBROADCASTQ AX, Z6
	MOVQ off+16(FP), AX
	MOVQ $0x9e3779b97f4a7c15, BX
	IMULQ BX, AX                 // off·G
	VPBROADCASTQ AX, Z4
	VPADDQ dareLaneG<>+0(SB), Z4, Z4
	MOVQ $0x0101010101010101, R8
	MOVQ $0x8040201008040201, R9
	MOVQ $0x7f7f7f7f7f7f7f7f, R10
zloop:
	CMPQ CX, $8
	JLT  zdone
	VPXORQ Z9, Z4, Z0
	SPLITMIX512(Z0, Z1)
	VPXORQ Z10, Z0, Z0
	SPLITMIX512(Z0, Z1)
	VPCMPUQ $1, Z8, Z0, K1 // draw < threshold
	KMOVB K1, AX
	IMULQ R8, AX           // as in dareKeepAVX2: bit k to byte k
	ANDQ  R9, AX
	ADDQ  R10, AX
	SHRQ  $7, AX
	ANDQ  R8, AX
	MOVQ  AX, (DI)
	VPADDQ Z6, Z4, Z4
	ADDQ $8, DI
	SUBQ $8, CX
	JMP  zloop
zdone:
	VZEROUPPER
	RET
