// TIES_SEEN is the tied cut's step shared by tiesMergeAVX2, tiesMergeBF16AVX512 and
// bandMergeBF16AVX512: DX holds one bit per element of the group at the tied pattern
// of the cut whose tiesLane rec points at. It sets the cut's next to seen plus their
// count and jumps to keep when all of them
// rank above (next ≤ r), to done when the rank falls among them (seen < r < next: Go
// counts those one by one), and falls through when none does (seen ≥ r). R10 is
// scratch.
#define TIES_SEEN(rec, keep, done) \
	POPCNTL DX, DX \
	MOVQ    16(rec), R10 \
	ADDQ    R10, DX \
	MOVQ    DX, 32(rec) \
	CMPQ    DX, 24(rec) \
	JLE     keep \
	CMPQ    R10, 24(rec) \
	JLT     done

// LANE_DELTA loads model i's sixteen BF16 words at element AX (the model's pointer
// at (R12)), widened, and sets Z1 to δ = x − b (b in Z0) and Z2 to |δ|'s bits (Z4
// the mask); DX is scratch. For tiesMergeBF16AVX512 and bandMergeBF16AVX512.
#define LANE_DELTA \
	MOVQ      (R12), DX \
	VPMOVZXWD (DX)(AX*2), Z1 \
	VPSLLD    $16, Z1, Z1 \
	VSUBPS    Z0, Z1, Z1 \
	VPANDD    Z4, Z1, Z2

// MASK_KEEP sets K3 to model BX's sixteen bits at element AX (a multiple of 8) of
// masks (a **uint64 argument: one row of packBools' bits per model) and jumps to
// kept; with masks nil it jumps to none. R10 and DX are scratch.
#define MASK_KEEP(masks, none, kept) \
	MOVQ  masks, R10 \
	TESTQ R10, R10 \
	JZ    none \
	MOVQ  (R10)(BX*8), R10 \
	MOVQ  AX, DX \
	SHRQ  $3, DX \
	KMOVW (R10)(DX*1), K3 \
	JMP   kept

// CUT_ABOVE sets k to the group's elements whose |δ| bits (Z2) rank above the cut
// whose tiesLane rec points at: above its gt, and where it is tied, those at its
// pattern as TIES_SEEN counts them; it jumps to done where the cut's rank falls
// among the group's elements at its pattern, and goes on at none. all and none are
// the labels it defines; Z3, K4, DX and R10 are scratch (Z3 only at a tied cut).
#define CUT_ABOVE(rec, k, all, none, done) \
	VPCMPGTD.BCST 4(rec), Z2, k \
	CMPL         12(rec), $0 \
	JEQ          none \
	VPBROADCASTD 8(rec), Z3 \
	VPCMPEQD     Z3, Z2, K4 \
	KMOVW        K4, DX \
	TIES_SEEN(rec, all, done) \
	JMP          none \
all: \
	KORW         K4, k, k \
none:

// BAND_KEEP sets K3 to the group's elements whose |δ| bits (Z2) rank above the
// lower cut whose tiesLane rec points at and not above the upper cut, the record
// after it (its address left in up), each as CUT_ABOVE finds them; it jumps to done
// where a tied cut's rank falls among the group's elements at its pattern. Z3, K4,
// K6, DX and R10 are scratch. Its labels are its own: one use per function
// (bandMergeBF16AVX512, tiesMergeBF16AVX512).
#define BAND_KEEP(rec, up, done) \
	CUT_ABOVE(rec, K3, bandloall, bandlodone, done) \
	LEAQ         40(rec), up \
	CUT_ABOVE(up, K6, bandhiall, bandhidone, done) \
	KNOTW        K6, K6 \
	KANDW        K6, K3, K3
