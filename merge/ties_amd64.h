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
