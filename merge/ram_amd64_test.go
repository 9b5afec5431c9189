//go:build !purego

package merge

import "testing"

// TestRAMBF16AVX2: where the CPU has AVX-512, ram's BF16 merge and ramplus_tl's
// counts run sixteen lanes at a time; this runs their tests on the AVX2 loops too.
func TestRAMBF16AVX2(t *testing.T) {
	old := haveRAM512
	haveRAM512 = false
	defer func() { haveRAM512 = old }()
	t.Run("merge", TestRAMMergeBF16MatchesChunk)
	t.Run("count", TestRAMCountBF16MatchesChunk)
	t.Run("count fused", TestRAMPlusCountFusedMatchesDecoded)
	t.Run("undecided at lo", TestRAMUndecidedAtLo)
}
