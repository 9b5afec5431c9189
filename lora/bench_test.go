package lora

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkAddProduct is the arithmetic of applying a rank-16 adapter to one MLP
// matrix of the 1 GB bench model (5632×2048): the float64 product and the float32
// rounding, without I/O. Bytes are the matrix's float32 elements.
func BenchmarkAddProduct(b *testing.B) {
	for _, s := range []struct {
		name             string
		rows, cols, rank int
	}{{"5632x2048/r16", 5632, 2048, 16}, {"2048x2048/r16", 2048, 2048, 16}} {
		b.Run(s.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			L, R := make([]float64, s.rows*s.rank), make([]float64, s.rank*s.cols)
			for i := range L {
				L[i] = rng.NormFloat64()
			}
			for i := range R {
				R[i] = rng.NormFloat64()
			}
			w := make([]float32, s.rows*s.cols)
			b.SetBytes(int64(4 * len(w)))
			b.ReportAllocs()
			for b.Loop() {
				clear(w)
				AddProduct(w, s.rows, s.cols, L, R, s.rank)
			}
			var want float64
			for j := range s.rank {
				want += L[j] * R[j*s.cols]
			}
			if w[0] != float32(want) {
				b.Fatalf("w[0] = %v, want %v", w[0], float32(want))
			}
		})
	}
}
