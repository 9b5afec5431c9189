//go:build ignore

// Command phases times, on one core and on cache-resident 64 Ki-element chunks, each
// step gomerge sfa does per chunk of a BF16 merge, to show where its CPU time goes:
//
//	go run bench/phases/main.go
//
// It calls the engine's own dtype.Decode, merge.Lerp and dtype.Encode; the SFA
// statistics pass (merge's unexported observeSFA) is copied here as it was in
// merge/sfa.go at 2ff7358 (it has since been fused into the BF16 kernel). "fused" is
// one pass from two BF16 inputs to a BF16 output with the same arithmetic (products rounded to float32, no FMA, round to nearest even), as a bound
// on what a fused kernel could do in plain Go. Each figure is the best of 15 rounds; on a
// shared VM they still move by ±30% from one run to the next.
package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
	"unsafe"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/merge"
)

const n = merge.ChunkElems

func observe(out []float32, in [][]float32, acc []float64) { // = merge.observeSFA
	anchor, current := in[0], in[1]
	var before, after float64
	for j, a := range anchor {
		d := float64(current[j]) - float64(a)
		before += d * d
	}
	if out != nil {
		for j, a := range anchor {
			d := float64(out[j]) - float64(a)
			after += d * d
		}
	}
	acc[0] += before
	acc[1] += after
}

func u16(b []byte) []uint16 {
	return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/2)
}

func fused(dst, a, c []uint16, b, cb float32) {
	a, c = a[:len(dst)], c[:len(dst)]
	for i := range dst {
		x := math.Float32frombits(uint32(a[i]) << 16)
		y := math.Float32frombits(uint32(c[i]) << 16)
		dst[i] = dtype.Float32ToBF16(float32(b*x) + float32(cb*y))
	}
}

func main() {
	r := rand.New(rand.NewPCG(1, 2))
	a, c, o := make([]byte, 2*n), make([]byte, 2*n), make([]byte, 2*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint16(a[2*i:], dtype.Float32ToBF16(float32(r.NormFloat64()*0.02)))
		binary.LittleEndian.PutUint16(c[2*i:], dtype.Float32ToBF16(float32(r.NormFloat64()*0.02)))
	}
	fa, fc, dst := make([]float32, n), make([]float32, n), make([]float32, n)
	acc := make([]float64, 2)
	steps := []struct {
		name string
		f    func()
	}{
		{"decode BF16 (x2 per chunk: anchor, current)", func() { dtype.Decode(fa, a, dtype.BF16) }},
		{"merge.Lerp", func() { merge.Lerp(dst, fa, fc, 0.5, 0.5) }},
		{"encode BF16", func() { dtype.Encode(o, dst, dtype.BF16) }},
		{"decode BF16 of the output (for Observe)", func() { dtype.Decode(dst, o, dtype.BF16) }},
		{"observeSFA (L2 before/after, float64)", func() { observe(dst, [][]float32{fa, fc}, acc) }},
		{"fused BF16 lerp, one pass (no stats; sketch)", func() { fused(u16(o), u16(a), u16(c), 0.5, 0.5) }},
	}
	dtype.Decode(fc, c, dtype.BF16)
	fmt.Printf("%-45s %8s\n", "step (one core, 64 Ki elements in cache)", "ns/elem")
	total := 0.0
	dtype.Decode(fa, a, dtype.BF16) // warm up
	for i, s := range steps {
		best := math.Inf(1)
		for rep := 0; rep < 15; rep++ {
			t0 := time.Now()
			const iters = 100
			for k := 0; k < iters; k++ {
				s.f()
			}
			best = min(best, float64(time.Since(t0).Nanoseconds())/iters/n)
		}
		fmt.Printf("%-45s %8.3f\n", s.name, best)
		switch {
		case i == 0:
			total += 2 * best
		case i < 5: // the fused sketch is not part of the engine
			total += best
		}
	}
	fmt.Printf("%-45s %8.3f\n", "engine total per element (decode counted x2)", total)
}
