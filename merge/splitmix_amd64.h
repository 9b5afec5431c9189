// SPLITMIX512 is splitmix64's finaliser (dareDraw's mix) on each 64-bit lane of v,
// with t1 as scratch, in AVX-512 (VPMULLQ is AVX512DQ): v += G; v = (v ^ v>>30)·M1;
// v = (v ^ v>>27)·M2; v ^= v>>31. The caller holds the constants: G
// (0x9e3779b97f4a7c15) in Z15, M1 (0xbf58476d1ce4e5b9) in Z14, M2
// (0x94d049bb133111eb) in Z12, which SPLITMIX512_CONSTS loads (through AX). Shared by
// DARE's keep masks (dare_amd64.s) and DELLA's draws (draws_amd64.s).
#define SPLITMIX512(v, t1) \
	VPADDQ  Z15, v, v \
	VPSRLQ  $30, v, t1 \
	VPXORQ  t1, v, v \
	VPMULLQ Z14, v, v \
	VPSRLQ  $27, v, t1 \
	VPXORQ  t1, v, v \
	VPMULLQ Z12, v, v \
	VPSRLQ  $31, v, t1 \
	VPXORQ  t1, v, v

#define SPLITMIX512_CONSTS \
	MOVQ $0x9e3779b97f4a7c15, AX \
	VPBROADCASTQ AX, Z15 \
	MOVQ $0xbf58476d1ce4e5b9, AX \
	VPBROADCASTQ AX, Z14 \
	MOVQ $0x94d049bb133111eb, AX \
	VPBROADCASTQ AX, Z12
