// Rounding float32 lanes to bfloat16, round to nearest even with NaN kept quiet: the
// constants and the sequences shared by the kernels that write BF16 (eight lanes:
// lerp_bf16_amd64.s, ram_amd64.s; sixteen: sce_amd64.s, combine_bf16_amd64.s,
// model_stock_amd64.s). They do what dtype.Float32ToBF16 does.

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

// bf16abs clears a float32's sign bit (also used for |x| in the kernels).
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

// BF16_RNE rounds the float32 lanes of src to bfloat16: dst's upper 16 bits are the
// result (u + 0x7fff + lsb, or u with the quiet bit set where src is a NaN), its lower
// 16 bits are left over. ones is bf16ones<>(SB) or a register holding it; n and q are
// scratch. src is not changed.
#define BF16_RNE(src, ones, dst, n, q) \
	VPSRLD    $16, src, dst \
	VPAND     ones, dst, dst \
	VPADDD    dst, src, dst \
	VPADDD    bf16half<>(SB), dst, dst \
	VPAND     bf16abs<>(SB), src, n \
	VPCMPGTD  bf16inf<>(SB), n, n \
	VPOR      bf16quiet<>(SB), src, q \
	VPBLENDVB n, q, dst, dst

// BF16_RNE512_CONSTS loads the registers BF16_RNE512_STORE reads: Z4 the sign mask's
// complement, Z14 +Inf's bits, Z15 the quiet bit, Z16 0x7fff, Z17 1 (AX is clobbered).
#define BF16_RNE512_CONSTS \
	MOVL $0x7fffffff, AX \
	VPBROADCASTD AX, Z4 \
	MOVL $0x7f800000, AX \
	VPBROADCASTD AX, Z14 \
	MOVL $0x00400000, AX \
	VPBROADCASTD AX, Z15 \
	MOVL $0x7fff, AX \
	VPBROADCASTD AX, Z16 \
	MOVL $1, AX \
	VPBROADCASTD AX, Z17

// BF16_RNE512_STORE rounds the sixteen float32 lanes of src to bfloat16 as BF16_RNE
// does (u + 0x7fff + lsb, or u with the quiet bit where a NaN) and stores the sixteen
// words at dst; Z10, Z11 and K5 are scratch, src is not changed.
#define BF16_RNE512_STORE(src, dst) \
	VPSRLD  $16, src, Z10 \
	VPANDD  Z17, Z10, Z10 \
	VPADDD  Z10, src, Z10 \
	VPADDD  Z16, Z10, Z10 \
	VPANDD  Z4, src, Z11 \
	VPCMPUD $6, Z14, Z11, K5 \
	VPORD   Z15, src, K5, Z10 \
	VPSRLD  $16, Z10, Z10 \
	VPMOVDW Z10, dst
