//go:build !purego

#include "textflag.h"

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
	VBROADCASTSD eps+40(FP), Y9
	VPCMPEQQ     Y8, Y8, Y8
	VPSRLQ       $1, Y8, Y8                   // |x| mask
	XORQ         AX, AX

loop:
	CMPQ      AX, CX
	JGE       done
	VCVTPS2PD (SI)(AX*4), Y0
	VCVTPS2PD 16(SI)(AX*4), Y1
	VCVTPS2PD (DX)(AX*4), Y2
	VCVTPS2PD 16(DX)(AX*4), Y3
	VSUBPD    Y2, Y0, Y0
	VSUBPD    Y3, Y1, Y1
	VANDPD    Y8, Y0, Y0
	VANDPD    Y8, Y1, Y1
	VCMPPD    $0x1E, Y9, Y0, Y0             // > eps, ordered
	VCMPPD    $0x1E, Y9, Y1, Y1
	VSHUFPS   $0x88, Y1, Y0, Y0             // the masks' low halves: 0 1 4 5 | 2 3 6 7
	VPERMQ    $0xD8, Y0, Y0                 // 0 1 2 3 4 5 6 7
	VPSRLD    $31, Y0, Y0                   // 1 or 0
	VMOVDQU   Y0, (DI)(AX*4)
	VPADDD    (R8)(AX*4), Y0, Y0
	VMOVDQU   Y0, (R8)(AX*4)
	ADDQ      $8, AX
	JMP       loop

done:
	VZEROUPPER
	RET
