package lora

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/loratest"
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
			b.StopTimer()
			// The Daxpy rows the kernel replaced, timed once on the same data for the
			// table in bench/README-lora.md when GOMERGE_BENCH_DAXPY is set.
			if os.Getenv("GOMERGE_BENCH_DAXPY") != "" {
				t0 := time.Now()
				clear(w)
				forRows(s.rows, s.cols, L, R, s.rank, make([]float64, s.cols), func(i int, row []float64) {
					seg := w[i*s.cols : (i+1)*s.cols]
					for c, d := range row {
						seg[c] = float32(float64(seg[c]) + d)
					}
				})
				b.ReportMetric(float64(time.Since(t0).Nanoseconds()), "daxpy-ns")
			}
			b.StartTimer()
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

// BenchmarkWriteApplied applies a rank-16 adapter to every projection of a BF16
// llama-shaped model (2 layers of 1024 hidden, 2816 intermediate) and writes it:
// the whole per-tensor path, I/O included. Bytes are the base's.
func BenchmarkWriteApplied(b *testing.B) {
	dir := b.TempDir()
	base := filepath.Join(dir, "base.safetensors")
	rng := rand.New(rand.NewPCG(3, 4))
	var ts, as []loratest.Tensor
	var mods []string
	var size int64
	for l := range 2 {
		for _, m := range []struct {
			n       string
			out, in int
		}{{"self_attn.q_proj", 1024, 1024}, {"self_attn.o_proj", 1024, 1024}, {"mlp.gate_proj", 2816, 1024}, {"mlp.up_proj", 2816, 1024}, {"mlp.down_proj", 1024, 2816}} {
			name := fmt.Sprintf("model.layers.%d.%s", l, m.n)
			mods = append(mods, name)
			ts = append(ts, loratest.NewTensor(name+".weight", dtype.BF16, []int64{int64(m.out), int64(m.in)}, loratest.RandVals(rng, m.out*m.in, 0.1)))
			as = append(as, loratest.NewTensor(keyPrefix+name+".lora_A.weight", dtype.BF16, []int64{16, int64(m.in)}, loratest.RandVals(rng, 16*m.in, 0.1)),
				loratest.NewTensor(keyPrefix+name+".lora_B.weight", dtype.BF16, []int64{int64(m.out), 16}, loratest.RandVals(rng, 16*m.out, 0.1)))
			size += int64(2 * m.out * m.in)
		}
	}
	loratest.WriteST(b, base, ts)
	ad := filepath.Join(dir, "ad")
	os.MkdirAll(ad, 0o755)
	loratest.WriteST(b, filepath.Join(ad, WeightsFile), as)
	os.WriteFile(filepath.Join(ad, ConfigFile), []byte(`{"peft_type":"LORA","r":16,"lora_alpha":32}`), 0o644)
	bs, err := checkpoint.Open(base)
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	a, err := Open(ad)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	ap, err := NewApplied("x", bs, []Weighted{{a, 1}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		rep, err := WriteApplied(context.Background(), ap, filepath.Join(dir, "out.safetensors"), dtype.Invalid, nil)
		if err != nil || rep.TensorsAdapted != len(mods) {
			b.Fatal(err, rep)
		}
	}
}
