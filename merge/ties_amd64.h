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

// BAND_KEEP sets K3 to the group's elements whose |δ| bits (Z2) rank above the
// lower cut whose tiesLane rec points at and not above the upper cut, the record
// after it (its address left in up), a tied cut counted by TIES_SEEN; it jumps to done where a
// tied cut's rank falls among the group's elements at its pattern. Z3, K4, K6, DX
// and R10 are scratch. Its labels are its own: one use per function
// (bandMergeBF16AVX512, tiesMergeBF16AVX512).
#define BAND_KEEP(rec, up, done) \
	VPBROADCASTD 4(rec), Z3 \
	VPCMPGTD     Z3, Z2, K3 \
	CMPL         12(rec), $0 \
	JEQ          bandlodone \
	VPBROADCASTD 8(rec), Z3 \
	VPCMPEQD     Z3, Z2, K4 \
	KMOVW        K4, DX \
	TIES_SEEN(rec, bandloall, done) \
	JMP          bandlodone \
bandloall: \
	KORW         K4, K3, K3 \
bandlodone: \
	LEAQ         40(rec), up \
	VPBROADCASTD 4(up), Z3 \
	VPCMPGTD     Z3, Z2, K6 \
	CMPL         12(up), $0 \
	JEQ          bandhidone \
	VPBROADCASTD 8(up), Z3 \
	VPCMPEQD     Z3, Z2, K4 \
	KMOVW        K4, DX \
	TIES_SEEN(up, bandhiall, done) \
	JMP          bandhidone \
bandhiall: \
	KORW         K4, K6, K6 \
bandhidone: \
	KNOTW        K6, K6 \
	KANDW        K6, K3, K3
