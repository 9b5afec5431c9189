package merge

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkArceeRow: one 2,048-element row's statistics and its keys, the work pass
// 1 does per whole row, and its parts; "rows8" is eight rows' statistics at once
// (arceeStats.rows, as pass 1 does them), per row.
func BenchmarkArceeRow(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 2048
	x, y := make([]float32, n), make([]float32, n)
	for j := range x {
		x[j] = float32(rng.NormFloat64() * 0.02)
		y[j] = x[j] + float32(rng.NormFloat64()*0.001)
	}
	ex, eb := make([]float64, n), make([]float64, n)
	keys := make([]uint32, n)
	b.Run("max", func(b *testing.B) {
		for b.Loop() {
			arceeMax(x, y)
		}
		b.SetBytes(n)
	})
	b.Run("exp2", func(b *testing.B) {
		for b.Loop() {
			arceeExp(ex, x, 0.1)
			arceeExp(eb, y, 0.1)
		}
		b.SetBytes(n)
	})
	zx, zb := arceeExp(ex, x, 0.1), arceeExp(eb, y, 0.1)
	b.Run("kl", func(b *testing.B) {
		for b.Loop() {
			arceeKL(ex, eb, zx, zb)
		}
		b.SetBytes(n)
	})
	b.Run("rows8", func(b *testing.B) {
		xs, ys := make([][]float32, arceeGroup), make([][]float32, arceeGroup)
		for i := range xs {
			xs[i], ys[i] = x, y
		}
		st := newArceeStats(arceeGroup)
		buf := make([]float64, 2*arceeGroup*n)
		for b.Loop() {
			st.rows(0, xs, ys, buf)
		}
		if want := arceeRowStatsRef(x, y); st.kl[arceeGroup-1] != want[4] {
			b.Fatalf("KL %v, want %v", st.kl[arceeGroup-1], want[4])
		}
		b.SetBytes(n * arceeGroup)
	})
	b.Run("keys", func(b *testing.B) {
		for b.Loop() {
			arceeKeys(keys, x, y, 0.01)
		}
		b.SetBytes(n)
	})
}
