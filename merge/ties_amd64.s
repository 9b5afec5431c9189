//go:build !purego

#include "textflag.h"
#include "ties_amd64.h"

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

// tiesPack: for each 8-bit mask, the indices of its set bits in ascending order,
// one byte each, padded with zeros (left-packing eight lanes with VPERMD).
DATA tiesPack<>+0(SB)/8, $0x0000000000000000
DATA tiesPack<>+8(SB)/8, $0x0000000000000000
DATA tiesPack<>+16(SB)/8, $0x0000000000000001
DATA tiesPack<>+24(SB)/8, $0x0000000000000100
DATA tiesPack<>+32(SB)/8, $0x0000000000000002
DATA tiesPack<>+40(SB)/8, $0x0000000000000200
DATA tiesPack<>+48(SB)/8, $0x0000000000000201
DATA tiesPack<>+56(SB)/8, $0x0000000000020100
DATA tiesPack<>+64(SB)/8, $0x0000000000000003
DATA tiesPack<>+72(SB)/8, $0x0000000000000300
DATA tiesPack<>+80(SB)/8, $0x0000000000000301
DATA tiesPack<>+88(SB)/8, $0x0000000000030100
DATA tiesPack<>+96(SB)/8, $0x0000000000000302
DATA tiesPack<>+104(SB)/8, $0x0000000000030200
DATA tiesPack<>+112(SB)/8, $0x0000000000030201
DATA tiesPack<>+120(SB)/8, $0x0000000003020100
DATA tiesPack<>+128(SB)/8, $0x0000000000000004
DATA tiesPack<>+136(SB)/8, $0x0000000000000400
DATA tiesPack<>+144(SB)/8, $0x0000000000000401
DATA tiesPack<>+152(SB)/8, $0x0000000000040100
DATA tiesPack<>+160(SB)/8, $0x0000000000000402
DATA tiesPack<>+168(SB)/8, $0x0000000000040200
DATA tiesPack<>+176(SB)/8, $0x0000000000040201
DATA tiesPack<>+184(SB)/8, $0x0000000004020100
DATA tiesPack<>+192(SB)/8, $0x0000000000000403
DATA tiesPack<>+200(SB)/8, $0x0000000000040300
DATA tiesPack<>+208(SB)/8, $0x0000000000040301
DATA tiesPack<>+216(SB)/8, $0x0000000004030100
DATA tiesPack<>+224(SB)/8, $0x0000000000040302
DATA tiesPack<>+232(SB)/8, $0x0000000004030200
DATA tiesPack<>+240(SB)/8, $0x0000000004030201
DATA tiesPack<>+248(SB)/8, $0x0000000403020100
DATA tiesPack<>+256(SB)/8, $0x0000000000000005
DATA tiesPack<>+264(SB)/8, $0x0000000000000500
DATA tiesPack<>+272(SB)/8, $0x0000000000000501
DATA tiesPack<>+280(SB)/8, $0x0000000000050100
DATA tiesPack<>+288(SB)/8, $0x0000000000000502
DATA tiesPack<>+296(SB)/8, $0x0000000000050200
DATA tiesPack<>+304(SB)/8, $0x0000000000050201
DATA tiesPack<>+312(SB)/8, $0x0000000005020100
DATA tiesPack<>+320(SB)/8, $0x0000000000000503
DATA tiesPack<>+328(SB)/8, $0x0000000000050300
DATA tiesPack<>+336(SB)/8, $0x0000000000050301
DATA tiesPack<>+344(SB)/8, $0x0000000005030100
DATA tiesPack<>+352(SB)/8, $0x0000000000050302
DATA tiesPack<>+360(SB)/8, $0x0000000005030200
DATA tiesPack<>+368(SB)/8, $0x0000000005030201
DATA tiesPack<>+376(SB)/8, $0x0000000503020100
DATA tiesPack<>+384(SB)/8, $0x0000000000000504
DATA tiesPack<>+392(SB)/8, $0x0000000000050400
DATA tiesPack<>+400(SB)/8, $0x0000000000050401
DATA tiesPack<>+408(SB)/8, $0x0000000005040100
DATA tiesPack<>+416(SB)/8, $0x0000000000050402
DATA tiesPack<>+424(SB)/8, $0x0000000005040200
DATA tiesPack<>+432(SB)/8, $0x0000000005040201
DATA tiesPack<>+440(SB)/8, $0x0000000504020100
DATA tiesPack<>+448(SB)/8, $0x0000000000050403
DATA tiesPack<>+456(SB)/8, $0x0000000005040300
DATA tiesPack<>+464(SB)/8, $0x0000000005040301
DATA tiesPack<>+472(SB)/8, $0x0000000504030100
DATA tiesPack<>+480(SB)/8, $0x0000000005040302
DATA tiesPack<>+488(SB)/8, $0x0000000504030200
DATA tiesPack<>+496(SB)/8, $0x0000000504030201
DATA tiesPack<>+504(SB)/8, $0x0000050403020100
DATA tiesPack<>+512(SB)/8, $0x0000000000000006
DATA tiesPack<>+520(SB)/8, $0x0000000000000600
DATA tiesPack<>+528(SB)/8, $0x0000000000000601
DATA tiesPack<>+536(SB)/8, $0x0000000000060100
DATA tiesPack<>+544(SB)/8, $0x0000000000000602
DATA tiesPack<>+552(SB)/8, $0x0000000000060200
DATA tiesPack<>+560(SB)/8, $0x0000000000060201
DATA tiesPack<>+568(SB)/8, $0x0000000006020100
DATA tiesPack<>+576(SB)/8, $0x0000000000000603
DATA tiesPack<>+584(SB)/8, $0x0000000000060300
DATA tiesPack<>+592(SB)/8, $0x0000000000060301
DATA tiesPack<>+600(SB)/8, $0x0000000006030100
DATA tiesPack<>+608(SB)/8, $0x0000000000060302
DATA tiesPack<>+616(SB)/8, $0x0000000006030200
DATA tiesPack<>+624(SB)/8, $0x0000000006030201
DATA tiesPack<>+632(SB)/8, $0x0000000603020100
DATA tiesPack<>+640(SB)/8, $0x0000000000000604
DATA tiesPack<>+648(SB)/8, $0x0000000000060400
DATA tiesPack<>+656(SB)/8, $0x0000000000060401
DATA tiesPack<>+664(SB)/8, $0x0000000006040100
DATA tiesPack<>+672(SB)/8, $0x0000000000060402
DATA tiesPack<>+680(SB)/8, $0x0000000006040200
DATA tiesPack<>+688(SB)/8, $0x0000000006040201
DATA tiesPack<>+696(SB)/8, $0x0000000604020100
DATA tiesPack<>+704(SB)/8, $0x0000000000060403
DATA tiesPack<>+712(SB)/8, $0x0000000006040300
DATA tiesPack<>+720(SB)/8, $0x0000000006040301
DATA tiesPack<>+728(SB)/8, $0x0000000604030100
DATA tiesPack<>+736(SB)/8, $0x0000000006040302
DATA tiesPack<>+744(SB)/8, $0x0000000604030200
DATA tiesPack<>+752(SB)/8, $0x0000000604030201
DATA tiesPack<>+760(SB)/8, $0x0000060403020100
DATA tiesPack<>+768(SB)/8, $0x0000000000000605
DATA tiesPack<>+776(SB)/8, $0x0000000000060500
DATA tiesPack<>+784(SB)/8, $0x0000000000060501
DATA tiesPack<>+792(SB)/8, $0x0000000006050100
DATA tiesPack<>+800(SB)/8, $0x0000000000060502
DATA tiesPack<>+808(SB)/8, $0x0000000006050200
DATA tiesPack<>+816(SB)/8, $0x0000000006050201
DATA tiesPack<>+824(SB)/8, $0x0000000605020100
DATA tiesPack<>+832(SB)/8, $0x0000000000060503
DATA tiesPack<>+840(SB)/8, $0x0000000006050300
DATA tiesPack<>+848(SB)/8, $0x0000000006050301
DATA tiesPack<>+856(SB)/8, $0x0000000605030100
DATA tiesPack<>+864(SB)/8, $0x0000000006050302
DATA tiesPack<>+872(SB)/8, $0x0000000605030200
DATA tiesPack<>+880(SB)/8, $0x0000000605030201
DATA tiesPack<>+888(SB)/8, $0x0000060503020100
DATA tiesPack<>+896(SB)/8, $0x0000000000060504
DATA tiesPack<>+904(SB)/8, $0x0000000006050400
DATA tiesPack<>+912(SB)/8, $0x0000000006050401
DATA tiesPack<>+920(SB)/8, $0x0000000605040100
DATA tiesPack<>+928(SB)/8, $0x0000000006050402
DATA tiesPack<>+936(SB)/8, $0x0000000605040200
DATA tiesPack<>+944(SB)/8, $0x0000000605040201
DATA tiesPack<>+952(SB)/8, $0x0000060504020100
DATA tiesPack<>+960(SB)/8, $0x0000000006050403
DATA tiesPack<>+968(SB)/8, $0x0000000605040300
DATA tiesPack<>+976(SB)/8, $0x0000000605040301
DATA tiesPack<>+984(SB)/8, $0x0000060504030100
DATA tiesPack<>+992(SB)/8, $0x0000000605040302
DATA tiesPack<>+1000(SB)/8, $0x0000060504030200
DATA tiesPack<>+1008(SB)/8, $0x0000060504030201
DATA tiesPack<>+1016(SB)/8, $0x0006050403020100
DATA tiesPack<>+1024(SB)/8, $0x0000000000000007
DATA tiesPack<>+1032(SB)/8, $0x0000000000000700
DATA tiesPack<>+1040(SB)/8, $0x0000000000000701
DATA tiesPack<>+1048(SB)/8, $0x0000000000070100
DATA tiesPack<>+1056(SB)/8, $0x0000000000000702
DATA tiesPack<>+1064(SB)/8, $0x0000000000070200
DATA tiesPack<>+1072(SB)/8, $0x0000000000070201
DATA tiesPack<>+1080(SB)/8, $0x0000000007020100
DATA tiesPack<>+1088(SB)/8, $0x0000000000000703
DATA tiesPack<>+1096(SB)/8, $0x0000000000070300
DATA tiesPack<>+1104(SB)/8, $0x0000000000070301
DATA tiesPack<>+1112(SB)/8, $0x0000000007030100
DATA tiesPack<>+1120(SB)/8, $0x0000000000070302
DATA tiesPack<>+1128(SB)/8, $0x0000000007030200
DATA tiesPack<>+1136(SB)/8, $0x0000000007030201
DATA tiesPack<>+1144(SB)/8, $0x0000000703020100
DATA tiesPack<>+1152(SB)/8, $0x0000000000000704
DATA tiesPack<>+1160(SB)/8, $0x0000000000070400
DATA tiesPack<>+1168(SB)/8, $0x0000000000070401
DATA tiesPack<>+1176(SB)/8, $0x0000000007040100
DATA tiesPack<>+1184(SB)/8, $0x0000000000070402
DATA tiesPack<>+1192(SB)/8, $0x0000000007040200
DATA tiesPack<>+1200(SB)/8, $0x0000000007040201
DATA tiesPack<>+1208(SB)/8, $0x0000000704020100
DATA tiesPack<>+1216(SB)/8, $0x0000000000070403
DATA tiesPack<>+1224(SB)/8, $0x0000000007040300
DATA tiesPack<>+1232(SB)/8, $0x0000000007040301
DATA tiesPack<>+1240(SB)/8, $0x0000000704030100
DATA tiesPack<>+1248(SB)/8, $0x0000000007040302
DATA tiesPack<>+1256(SB)/8, $0x0000000704030200
DATA tiesPack<>+1264(SB)/8, $0x0000000704030201
DATA tiesPack<>+1272(SB)/8, $0x0000070403020100
DATA tiesPack<>+1280(SB)/8, $0x0000000000000705
DATA tiesPack<>+1288(SB)/8, $0x0000000000070500
DATA tiesPack<>+1296(SB)/8, $0x0000000000070501
DATA tiesPack<>+1304(SB)/8, $0x0000000007050100
DATA tiesPack<>+1312(SB)/8, $0x0000000000070502
DATA tiesPack<>+1320(SB)/8, $0x0000000007050200
DATA tiesPack<>+1328(SB)/8, $0x0000000007050201
DATA tiesPack<>+1336(SB)/8, $0x0000000705020100
DATA tiesPack<>+1344(SB)/8, $0x0000000000070503
DATA tiesPack<>+1352(SB)/8, $0x0000000007050300
DATA tiesPack<>+1360(SB)/8, $0x0000000007050301
DATA tiesPack<>+1368(SB)/8, $0x0000000705030100
DATA tiesPack<>+1376(SB)/8, $0x0000000007050302
DATA tiesPack<>+1384(SB)/8, $0x0000000705030200
DATA tiesPack<>+1392(SB)/8, $0x0000000705030201
DATA tiesPack<>+1400(SB)/8, $0x0000070503020100
DATA tiesPack<>+1408(SB)/8, $0x0000000000070504
DATA tiesPack<>+1416(SB)/8, $0x0000000007050400
DATA tiesPack<>+1424(SB)/8, $0x0000000007050401
DATA tiesPack<>+1432(SB)/8, $0x0000000705040100
DATA tiesPack<>+1440(SB)/8, $0x0000000007050402
DATA tiesPack<>+1448(SB)/8, $0x0000000705040200
DATA tiesPack<>+1456(SB)/8, $0x0000000705040201
DATA tiesPack<>+1464(SB)/8, $0x0000070504020100
DATA tiesPack<>+1472(SB)/8, $0x0000000007050403
DATA tiesPack<>+1480(SB)/8, $0x0000000705040300
DATA tiesPack<>+1488(SB)/8, $0x0000000705040301
DATA tiesPack<>+1496(SB)/8, $0x0000070504030100
DATA tiesPack<>+1504(SB)/8, $0x0000000705040302
DATA tiesPack<>+1512(SB)/8, $0x0000070504030200
DATA tiesPack<>+1520(SB)/8, $0x0000070504030201
DATA tiesPack<>+1528(SB)/8, $0x0007050403020100
DATA tiesPack<>+1536(SB)/8, $0x0000000000000706
DATA tiesPack<>+1544(SB)/8, $0x0000000000070600
DATA tiesPack<>+1552(SB)/8, $0x0000000000070601
DATA tiesPack<>+1560(SB)/8, $0x0000000007060100
DATA tiesPack<>+1568(SB)/8, $0x0000000000070602
DATA tiesPack<>+1576(SB)/8, $0x0000000007060200
DATA tiesPack<>+1584(SB)/8, $0x0000000007060201
DATA tiesPack<>+1592(SB)/8, $0x0000000706020100
DATA tiesPack<>+1600(SB)/8, $0x0000000000070603
DATA tiesPack<>+1608(SB)/8, $0x0000000007060300
DATA tiesPack<>+1616(SB)/8, $0x0000000007060301
DATA tiesPack<>+1624(SB)/8, $0x0000000706030100
DATA tiesPack<>+1632(SB)/8, $0x0000000007060302
DATA tiesPack<>+1640(SB)/8, $0x0000000706030200
DATA tiesPack<>+1648(SB)/8, $0x0000000706030201
DATA tiesPack<>+1656(SB)/8, $0x0000070603020100
DATA tiesPack<>+1664(SB)/8, $0x0000000000070604
DATA tiesPack<>+1672(SB)/8, $0x0000000007060400
DATA tiesPack<>+1680(SB)/8, $0x0000000007060401
DATA tiesPack<>+1688(SB)/8, $0x0000000706040100
DATA tiesPack<>+1696(SB)/8, $0x0000000007060402
DATA tiesPack<>+1704(SB)/8, $0x0000000706040200
DATA tiesPack<>+1712(SB)/8, $0x0000000706040201
DATA tiesPack<>+1720(SB)/8, $0x0000070604020100
DATA tiesPack<>+1728(SB)/8, $0x0000000007060403
DATA tiesPack<>+1736(SB)/8, $0x0000000706040300
DATA tiesPack<>+1744(SB)/8, $0x0000000706040301
DATA tiesPack<>+1752(SB)/8, $0x0000070604030100
DATA tiesPack<>+1760(SB)/8, $0x0000000706040302
DATA tiesPack<>+1768(SB)/8, $0x0000070604030200
DATA tiesPack<>+1776(SB)/8, $0x0000070604030201
DATA tiesPack<>+1784(SB)/8, $0x0007060403020100
DATA tiesPack<>+1792(SB)/8, $0x0000000000070605
DATA tiesPack<>+1800(SB)/8, $0x0000000007060500
DATA tiesPack<>+1808(SB)/8, $0x0000000007060501
DATA tiesPack<>+1816(SB)/8, $0x0000000706050100
DATA tiesPack<>+1824(SB)/8, $0x0000000007060502
DATA tiesPack<>+1832(SB)/8, $0x0000000706050200
DATA tiesPack<>+1840(SB)/8, $0x0000000706050201
DATA tiesPack<>+1848(SB)/8, $0x0000070605020100
DATA tiesPack<>+1856(SB)/8, $0x0000000007060503
DATA tiesPack<>+1864(SB)/8, $0x0000000706050300
DATA tiesPack<>+1872(SB)/8, $0x0000000706050301
DATA tiesPack<>+1880(SB)/8, $0x0000070605030100
DATA tiesPack<>+1888(SB)/8, $0x0000000706050302
DATA tiesPack<>+1896(SB)/8, $0x0000070605030200
DATA tiesPack<>+1904(SB)/8, $0x0000070605030201
DATA tiesPack<>+1912(SB)/8, $0x0007060503020100
DATA tiesPack<>+1920(SB)/8, $0x0000000007060504
DATA tiesPack<>+1928(SB)/8, $0x0000000706050400
DATA tiesPack<>+1936(SB)/8, $0x0000000706050401
DATA tiesPack<>+1944(SB)/8, $0x0000070605040100
DATA tiesPack<>+1952(SB)/8, $0x0000000706050402
DATA tiesPack<>+1960(SB)/8, $0x0000070605040200
DATA tiesPack<>+1968(SB)/8, $0x0000070605040201
DATA tiesPack<>+1976(SB)/8, $0x0007060504020100
DATA tiesPack<>+1984(SB)/8, $0x0000000706050403
DATA tiesPack<>+1992(SB)/8, $0x0000070605040300
DATA tiesPack<>+2000(SB)/8, $0x0000070605040301
DATA tiesPack<>+2008(SB)/8, $0x0007060504030100
DATA tiesPack<>+2016(SB)/8, $0x0000070605040302
DATA tiesPack<>+2024(SB)/8, $0x0007060504030200
DATA tiesPack<>+2032(SB)/8, $0x0007060504030201
DATA tiesPack<>+2040(SB)/8, $0x0706050403020100
GLOBL tiesPack<>(SB), RODATA|NOPTR, $2048

// func nearPackAVX2(dst, mags *uint32, n int, lo, hi uint32) (k, above int)
// Copies to dst, in order, the elements among the first n of mags (a multiple of 8)
// whose top 16 bits lie in [lo, hi], and returns how many, and how many have top
// bits above hi. It stores eight lanes at a time: dst needs room for that count
// plus 8.
TEXT ·nearPackAVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ mags+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL         lo+24(FP), R9
	VMOVD        R9, X5
	VPBROADCASTD X5, Y5
	MOVL         hi+28(FP), R9
	VMOVD        R9, X6
	VPBROADCASTD X6, Y6
	LEAQ tiesPack<>(SB), R11
	XORQ AX, AX
	XORQ BX, BX
ploop:
	CMPQ CX, $8
	JLT  pdone
	VMOVDQU   (SI), Y0
	VPSRLD    $16, Y0, Y1
	VPCMPGTD  Y6, Y1, Y7     // above hi (both below 2¹⁶: the signed compare holds)
	VMOVMSKPS Y7, R12
	POPCNTL   R12, R12
	ADDQ      R12, BX
	VPMAXUD   Y5, Y1, Y2     // max(bin, lo)
	VPMINUD   Y6, Y2, Y2     // clamped to [lo, hi]: equal to bin only inside
	VPCMPEQD  Y1, Y2, Y2
	VMOVMSKPS Y2, R10
	VPMOVZXBD (R11)(R10*8), Y3
	VPERMD    Y0, Y3, Y4     // the elements inside, first
	VMOVDQU   Y4, (DI)(AX*4) // stored whatever the mask: no branch to mispredict
	POPCNTL   R10, R10
	ADDQ      R10, AX
	ADDQ $32, SI
	SUBQ $8, CX
	JMP  ploop
pdone:
	MOVQ AX, k+32(FP)
	MOVQ BX, above+40(FP)
	VZEROUPPER
	RET

// NEAR_WINDOW is a window's step on sixteen magnitudes (Z0, their top 16 bits in
// Z1): those whose top bits lie in [lo, hi] (lo, hi − lo and hi broadcast in the
// registers named) packed by VPCOMPRESSD and stored at dst's element k, whatever
// the mask (no branch to mispredict: dst has room for the count plus 16), k
// advanced by their count and above by the count of those above hi. Z2, Z3, K1,
// K2, R10 and R11 are scratch.
#define NEAR_WINDOW(lo, span, hi, dst, k, above) \
	VPCMPUD     $6, hi, Z1, K2 \
	VPSUBD      lo, Z1, Z2 \
	VPCMPUD     $2, span, Z2, K1 \
	VPCOMPRESSD Z0, K1, Z3 \
	VMOVDQU32   Z3, (dst)(k*4) \
	KMOVW       K1, R10 \
	POPCNTL     R10, R10 \
	ADDQ        R10, k \
	KMOVW       K2, R11 \
	POPCNTL     R11, R11 \
	ADDQ        R11, above

// NEAR_WINDOW_CONSTS loads a window's bounds, lo and hi (uint32 arguments), into the
// registers NEAR_WINDOW reads as lo, hi − lo and hi: Z5, Z6 and Z7. R9 and R10 are
// scratch.
#define NEAR_WINDOW_CONSTS(lo, hi) \
	MOVL         lo, R9 \
	VPBROADCASTD R9, Z5 \
	MOVL         hi, R10 \
	VPBROADCASTD R10, Z7 \
	SUBL         R9, R10 \
	VPBROADCASTD R10, Z6

// func nearPackAVX512(dst, mags *uint32, n int, lo, hi uint32) (k, above int)
// nearPackAVX2 sixteen at a time (n a multiple of 16), the elements inside the
// window packed by VPCOMPRESSD: dst needs room for the count plus 16.
TEXT ·nearPackAVX512(SB), NOSPLIT, $0-48
	MOVQ         dst+0(FP), DI
	MOVQ         mags+8(FP), SI
	MOVQ         n+16(FP), CX
	NEAR_WINDOW_CONSTS(lo+24(FP), hi+28(FP))
	XORQ         AX, AX
	XORQ         BX, BX
qloop:
	CMPQ        CX, $16
	JLT         qdone
	VMOVDQU32   (SI), Z0
	VPSRLD      $16, Z0, Z1
	NEAR_WINDOW(Z5, Z6, Z7, DI, AX, BX)
	ADDQ        $64, SI
	SUBQ        $16, CX
	JMP         qloop
qdone:
	MOVQ AX, k+32(FP)
	MOVQ BX, above+40(FP)
	VZEROUPPER
	RET

// DELTA_MAGS16 sets Z0 to the bits of |x − b| for the sixteen BF16 words of x (SI)
// and b (DX) at element R8, each widened (deltaAbsBitsBF16AVX2's operations), and
// Z1 to their top 16 bits; Z4 holds |x|'s mask.
#define DELTA_MAGS16 \
	VPMOVZXWD   (SI)(R8*2), Z0 \
	VPSLLD      $16, Z0, Z0 \
	VPMOVZXWD   (DX)(R8*2), Z1 \
	VPSLLD      $16, Z1, Z1 \
	VSUBPS      Z1, Z0, Z0 \
	VPANDD      Z4, Z0, Z0 \
	VPSRLD      $16, Z0, Z1

// func deltaNearPackAVX512(dst *uint32, x, b *uint16, n int, lo, hi uint32) (k, above int)
// nearPackAVX512 over the magnitudes deltaAbsBitsBF16AVX2 makes of x and b (each
// word widened, |x − b| as float32 bits), sixteen at a time (n a multiple of 16),
// without storing them: the magnitudes whose top 16 bits lie in [lo, hi] packed in
// order into dst (room for the count plus 16), and how many have top bits above hi.
TEXT ·deltaNearPackAVX512(SB), NOSPLIT, $0-56
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         b+16(FP), DX
	MOVQ         n+24(FP), CX
	NEAR_WINDOW_CONSTS(lo+32(FP), hi+36(FP))
	MOVL         $0x7fffffff, R9
	VPBROADCASTD R9, Z4          // |x|'s mask
	XORQ         AX, AX
	XORQ         BX, BX
	XORQ         R8, R8
dloop:
	CMPQ        R8, CX
	JGE         ddone
	DELTA_MAGS16
	NEAR_WINDOW(Z5, Z6, Z7, DI, AX, BX)
	ADDQ        $16, R8
	JMP         dloop
ddone:
	MOVQ AX, k+40(FP)
	MOVQ BX, above+48(FP)
	VZEROUPPER
	RET

// func deltaNearPack2AVX512(dst0, dst1 *uint32, x, b *uint16, n int, win *[4]uint32, counts *[4]int)
// deltaNearPackAVX512 for two windows at once (breadcrumbs' two cuts), each
// magnitude made once: win holds lo and hi of window 0, then of window 1; window
// c's magnitudes go to dst<c>, and counts gets k and above of window 0, then of
// window 1.
TEXT ·deltaNearPack2AVX512(SB), NOSPLIT, $0-56
	MOVQ         dst0+0(FP), DI
	MOVQ         dst1+8(FP), R9
	MOVQ         x+16(FP), SI
	MOVQ         b+24(FP), DX
	MOVQ         n+32(FP), CX
	MOVQ         win+40(FP), R14
	VPBROADCASTD 0(R14), Z5      // lo₀
	VPBROADCASTD 4(R14), Z7      // hi₀
	VPSUBD       Z5, Z7, Z6      // hi₀ − lo₀
	VPBROADCASTD 8(R14), Z8      // lo₁
	VPBROADCASTD 12(R14), Z10    // hi₁
	VPSUBD       Z8, Z10, Z9     // hi₁ − lo₁
	MOVL         $0x7fffffff, R10
	VPBROADCASTD R10, Z4         // |x|'s mask
	XORQ         AX, AX
	XORQ         BX, BX
	XORQ         R12, R12
	XORQ         R13, R13
	XORQ         R8, R8
eloop:
	CMPQ        R8, CX
	JGE         edone
	DELTA_MAGS16
	NEAR_WINDOW(Z5, Z6, Z7, DI, AX, BX)
	NEAR_WINDOW(Z8, Z9, Z10, R9, R12, R13)
	ADDQ        $16, R8
	JMP         eloop
edone:
	MOVQ counts+48(FP), R14
	MOVQ AX, 0(R14)
	MOVQ BX, 8(R14)
	MOVQ R12, 16(R14)
	MOVQ R13, 24(R14)
	VZEROUPPER
	RET

// func binPackAVX512(dst *uint16, mags *uint32, n int, bin uint32) (k int)
// The low 16 bits of the magnitudes among mags[0:n] (n a multiple of 16) whose top
// 16 bits are bin, packed in order into dst; k of them. Each group's sixteen words
// are stored whatever its mask (dst has 16 words of room past the last), and the
// next group's start moves by the mask's count.
TEXT ·binPackAVX512(SB), NOSPLIT, $0-40
	MOVQ         dst+0(FP), DI
	MOVQ         mags+8(FP), SI
	MOVQ         n+16(FP), CX
	MOVL         bin+24(FP), R9
	VPBROADCASTD R9, Z5
	XORQ         AX, AX
bloop:
	CMPQ        CX, $16
	JLT         bdone
	VMOVDQU32   (SI), Z0
	VPSRLD      $16, Z0, Z1
	VPCMPEQD    Z5, Z1, K1
	VPCOMPRESSD Z0, K1, Z3
	VPMOVDW     Z3, (DI)(AX*2) // each dword's low word
	KMOVW       K1, R10
	POPCNTL     R10, R10
	ADDQ        R10, AX
	ADDQ        $64, SI
	SUBQ        $16, CX
	JMP         bloop
bdone:
	MOVQ AX, k+32(FP)
	VZEROUPPER
	RET

// func tiesMergeAVX2(dst, base *float32, xs **float32, lanes *tiesLane, nl int, d *float32, lambda float32, j, n int) int
// TIES over elements j.. of a chunk, eight at a time, every step of trimWeighted and
// tiesCombine in registers: per lane i (xs[i] its model, lanes[i] its weight and
// cut), Δ_i = float32(w_i·(x_i − b)) where |x_i − b| (as bits) > lanes[i].gt, or for
// a tied cut equals its pattern while fewer than r of those came before (seen), else
// +0, kept in d[8i:8i+8]; the sum in lane order; the sign; the agreeing sums; the
// division and base + λ·(num/q). It stops before the first group of eight whose
// elements at a tied cut's pattern fall on both sides of its rank (Go counts those
// one by one) or when fewer than eight are left, and returns where it stopped. A
// group's new seen counts go to next first and to seen once the group is done.
TEXT ·tiesMergeAVX2(SB), NOSPLIT, $0-80
	MOVQ dst+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ xs+16(FP), R8
	MOVQ lanes+24(FP), R9
	MOVQ d+40(FP), R11
	VBROADCASTSS lambda+48(FP), Y15
	MOVQ j+56(FP), AX
	MOVQ n+64(FP), CX
	VMOVDQU tiesAbs<>(SB), Y14
	VPXOR   Y13, Y13, Y13
	VMOVDQU tiesSignBit<>(SB), Y12
	VMOVDQU tiesOne<>(SB), Y11
	SUBQ $8, CX               // a group starts at most at n − 8
mgroup:
	CMPQ AX, CX
	JGT  mdone
	VMOVUPS (SI)(AX*4), Y0    // b
	XORQ BX, BX
	MOVQ R8, R12
	MOVQ R9, R13
	MOVQ R11, R14
mtrim:
	MOVQ     (R12), DX
	VMOVUPS  (DX)(AX*4), Y1
	VSUBPS   Y0, Y1, Y1       // δ = x − b
	VPAND    Y14, Y1, Y2      // |δ| bits
	VPXOR    Y4, Y4, Y4       // the elements at the pattern that rank above
	CMPL     12(R13), $0
	JEQ      mkeep
	VPBROADCASTD 8(R13), Y4
	VPCMPEQD Y4, Y2, Y4       // at the tied pattern
	VMOVMSKPS Y4, DX
	TIES_SEEN(R13, mkeep, mdone)
	VPXOR    Y4, Y4, Y4       // none does
mkeep:
	VPBROADCASTD 4(R13), Y3
	VPCMPGTD Y3, Y2, Y3       // |δ| > gt
	VPOR     Y4, Y3, Y3
	VBROADCASTSS (R13), Y5
	VMULPS   Y5, Y1, Y1       // δ·w
	VPAND    Y3, Y1, Y1
	VMOVUPS  Y1, (R14)
	TESTQ    BX, BX
	JNZ      madd
	VMOVAPS  Y1, Y6           // the sum starts as Δ_0
	JMP      mnext
madd:
	VADDPS   Y1, Y6, Y6       // sum + Δ_i
mnext:
	INCQ BX
	ADDQ $8, R12
	ADDQ $40, R13
	ADDQ $32, R14
	CMPQ BX, nl+32(FP)
	JLT  mtrim
	VCMPPS $1, Y13, Y6, Y7    // LT_OS: sum < 0
	VANDPS Y12, Y7, Y7        // the elected sign bit
	VXORPS Y8, Y8, Y8         // num
	VXORPS Y9, Y9, Y9         // den
	XORQ BX, BX
	MOVQ R9, R13
	MOVQ R11, R14
maccum:
	MOVQ     32(R13), R10
	MOVQ     R10, 16(R13)     // seen = next
	VMOVDQU  (R14), Y1
	VPSLLD   $1, Y1, Y2
	VPCMPEQD Y13, Y2, Y2      // Δ_i is ±0
	VPXOR    Y7, Y1, Y3
	VPSRAD   $31, Y3, Y3      // the signs differ
	VPOR     Y3, Y2, Y2       // Δ_i does not count
	VPANDN   Y1, Y2, Y3
	VADDPS   Y3, Y8, Y8       // num + Δ_i
	VBROADCASTSS (R13), Y5
	VPANDN   Y5, Y2, Y4
	VADDPS   Y4, Y9, Y9       // den + w_i
	INCQ BX
	ADDQ $40, R13
	ADDQ $32, R14
	CMPQ BX, nl+32(FP)
	JLT  maccum
	VPSLLD    $1, Y9, Y2
	VPCMPEQD  Y13, Y2, Y2     // den is ±0
	VBLENDVPS Y2, Y11, Y9, Y9 // then 1
	VDIVPS    Y9, Y8, Y8      // num / q
	VMULPS    Y8, Y15, Y8     // λ·(num/q)
	VADDPS    Y8, Y0, Y8      // b + λ·(num/q)
	VMOVUPS   Y8, (DI)(AX*4)
	ADDQ $8, AX
	JMP  mgroup
mdone:
	MOVQ AX, ret+72(FP)
	VZEROUPPER
	RET

// func deltaAbsBitsBF16AVX2(dst *uint32, x, b *uint16, n int)
// deltaAbsBitsAVX2 on BF16 words, each widened to float32 as it is loaded (the
// decoder's widening): dst[j] = bits of |x[j] − b[j]| in float32, for j < n (a
// multiple of 8), eight at a time.
TEXT ·deltaAbsBitsBF16AVX2(SB), NOSPLIT, $0-32
	MOVQ    dst+0(FP), DI
	MOVQ    x+8(FP), SI
	MOVQ    b+16(FP), DX
	MOVQ    n+24(FP), CX
	VMOVDQU tiesAbs<>(SB), Y7
	XORQ    AX, AX

wmloop:
	CMPQ      AX, CX
	JGE       wmdone
	VPMOVZXWD (SI)(AX*2), Y0
	VPSLLD    $16, Y0, Y0
	VPMOVZXWD (DX)(AX*2), Y1
	VPSLLD    $16, Y1, Y1
	VSUBPS    Y1, Y0, Y0 // x − b
	VPAND     Y7, Y0, Y0
	VMOVDQU   Y0, (DI)(AX*4)
	ADDQ      $8, AX
	JMP       wmloop

wmdone:
	VZEROUPPER
	RET
