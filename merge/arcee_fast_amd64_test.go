//go:build !purego

package merge

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestArceeStatsRowsAVX2: where the CPU has AVX-512, arceeStats.rows runs
// arceeExpAVX512 and arceeKLAVX512; this runs its checks on the AVX2 loops as well.
func TestArceeStatsRowsAVX2(t *testing.T) {
	oldExp, oldKL := haveArceeExp512, haveArceeKL512
	haveArceeExp512, haveArceeKL512 = false, false
	defer func() { haveArceeExp512, haveArceeKL512 = oldExp, oldKL }()
	checkArceeStatsRows(t)
}

// TestArceeExpAVX2: TestArceeExpMatchesGo on arceeExpAVX2 where the CPU has AVX-512.
func TestArceeExpAVX2(t *testing.T) {
	old := haveArceeExp512
	haveArceeExp512 = false
	defer func() { haveArceeExp512 = old }()
	TestArceeExpMatchesGo(t)
}

// TestArceeKLAVX2: where the CPU has AVX-512, arceeKL runs arceeKLAVX512; this runs
// TestArceeKLMatchesGo on arceeKLAVX2 as well.
func TestArceeKLAVX2(t *testing.T) {
	old := haveArceeKL512
	haveArceeKL512 = false
	defer func() { haveArceeKL512 = old }()
	TestArceeKLMatchesGo(t)
}

// TestArceeKLScales8: math.Log over p/q of every scale the divergence can meet, in
// blocks of eight (TestArceeKLMatchesGo's scales come four at a time, under the
// AVX-512 loop's width), so that arceeKLAVX512 meets them where the CPU has it.
func TestArceeKLScales8(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 14))
	ex, eb := make([]float64, 8), make([]float64, 8)
	for range 20000 {
		for j := range ex {
			ex[j], eb[j] = math.Pow(10, rng.Float64()*20-10), math.Pow(10, rng.Float64()*20-10)
		}
		zx, zb := math.Pow(10, rng.Float64()*4), math.Pow(10, rng.Float64()*4)
		var want float64
		for j := range ex {
			want += arceeKLTerm(ex[j], eb[j], zx, zb)
		}
		if got := arceeKL(ex, eb, zx, zb); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("ex %v eb %v zx %v zb %v: %v, want %v", ex, eb, zx, zb, got, want)
		}
	}
}

// TestArceeKeysSelectAVX2: where the CPU has AVX-512, arceeKeys, arceeSelect and
// arceeKeysInBins run arceeKeysAVX512, arceeSelectAVX512 and arceeKeysInBinsAVX512
// first; this runs their checks on the AVX2 loops alone as well, and
// arceeKeysInBinsBF16's on its Go path alone.
func TestArceeKeysSelectAVX2(t *testing.T) {
	old := haveArceeKeys512
	haveArceeKeys512 = false
	defer func() { haveArceeKeys512 = old }()
	TestArceeKeysMatchesGo(t)
	TestArceeSelectMatchesGo(t)
	TestArceeKeysInBinsMatchesGo(t)
	TestArceeKeysInBinsBF16MatchesGo(t)
}
