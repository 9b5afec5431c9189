// TIES_SEEN is the tied cut's step shared by tiesMergeAVX2 and tiesMergeBF16AVX512:
// DX holds one bit per element of the group at lane R13's tied pattern (a tiesLane).
// It sets the lane's next to seen plus their count and jumps to keep when all of them
// rank above (next ≤ r), to done when the rank falls among them (seen < r < next: Go
// counts those one by one), and falls through when none does (seen ≥ r). R10 is
// scratch.
#define TIES_SEEN(keep, done) \
	POPCNTL DX, DX \
	MOVQ    16(R13), R10 \
	ADDQ    R10, DX \
	MOVQ    DX, 32(R13) \
	CMPQ    DX, 24(R13) \
	JLE     keep \
	CMPQ    R10, 24(R13) \
	JLT     done
