//go:build unix

package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestFloorPass checks the output and the tail checksum against a byte-by-byte loop,
// for inputs of unequal sizes (not multiples of 8, spanning several blocks), at several
// thread counts and output sizes, the inputs mapped or read with pread, the output
// written with pwrite (with writeback started as it goes, and without) and through a
// mapping.
func TestFloorPass(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{3*block + 13, block - 5, 5*block + 8, 0}
	var paths []string
	var data [][]byte
	for i, n := range sizes {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, fmt.Sprint("in", i))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths, data = append(paths, p), append(data, b)
	}
	for _, size := range []int64{-1, 0, 7, 6*block + 1} {
		outSize := int(size)
		if size < 0 {
			outSize = sizes[0]
		}
		want := make([]byte, outSize)
		var wantSum uint64
		for _, in := range data {
			for j, v := range in {
				if j < outSize {
					want[j] ^= v
				} else {
					wantSum ^= uint64(v) << (8 * (j % 8))
				}
			}
		}
		for _, way := range []struct{ preads, mapped, writeback bool }{
			{false, false, true}, {false, false, false}, {false, true, false}, {true, false, true}, {true, true, false},
		} {
			for _, threads := range []int{1, 2, 3, 16} {
				out := filepath.Join(dir, "out")
				sum, err := run(paths, out, size, threads, way.preads, way.mapped, way.writeback)
				if err != nil {
					t.Fatalf("size %d, %+v, %d threads: %v", size, way, threads, err)
				}
				got, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("size %d, %+v, %d threads: output differs from the XOR of the inputs", size, way, threads)
				}
				if sum != wantSum {
					t.Errorf("size %d, %+v, %d threads: tail checksum %#x, want %#x", size, way, threads, sum, wantSum)
				}
			}
		}
	}
	if _, err := run([]string{filepath.Join(dir, "missing")}, filepath.Join(dir, "o"), -1, 1, false, false, true); err == nil {
		t.Error("a missing input was not an error")
	}
}
