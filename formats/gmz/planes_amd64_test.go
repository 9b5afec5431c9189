//go:build !purego

package gmz

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestMerge2Paths checks both assembly paths of merge2 (SSE2, and AVX2 where the CPU
// has it) against merge2Go at every length around their 16- and 32-element steps.
func TestMerge2Paths(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	paths := []bool{false}
	if haveAVX2 {
		paths = append(paths, true)
	}
	for n := range 200 {
		lo, hi := make([]byte, n), make([]byte, n)
		for i := range lo {
			lo[i], hi[i] = byte(rng.Uint32()), byte(rng.Uint32())
		}
		want := make([]byte, 2*n)
		merge2Go(want, lo, hi)
		for _, avx2 := range paths {
			got := make([]byte, 2*n)
			merge2With(got, lo, hi, avx2)
			if !bytes.Equal(got, want) {
				t.Fatalf("n=%d avx2=%v: merge2 differs from merge2Go", n, avx2)
			}
		}
	}
}

// BenchmarkMerge2 interleaves one 128 KiB column, as the decoder does.
func BenchmarkMerge2(b *testing.B) {
	lo, hi, dst := make([]byte, blockSize), make([]byte, blockSize), make([]byte, 2*blockSize)
	for _, avx2 := range []bool{false, true} {
		if avx2 && !haveAVX2 {
			continue
		}
		b.Run(fmt.Sprintf("avx2=%v", avx2), func(b *testing.B) {
			b.SetBytes(int64(len(dst)))
			for b.Loop() {
				merge2With(dst, lo, hi, avx2)
			}
		})
	}
}
