package merge

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// BenchmarkLerp is the SFA kernel alone, on float32 slices in cache.
func BenchmarkLerp(b *testing.B) {
	for _, n := range []int{4 << 10, ChunkElems} {
		b.Run(fmt.Sprintf("F32/%d", n), func(b *testing.B) {
			a, x, dst := randF32(n, 1), randF32(n, 2), make([]float32, n)
			b.SetBytes(int64(8 * n))
			b.ReportAllocs()
			for b.Loop() {
				Lerp(dst, a, x, 0.25, 0.75)
			}
			if dst[0] != float32(0.25*a[0])+float32(0.75*x[0]) {
				b.Fatal("wrong result")
			}
		})
	}
}

func randF32(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// BenchmarkRunSFA is a whole merge, files to file, per dtype: inputs in the page cache,
// output fsynced. Bytes are input bytes read.
func BenchmarkRunSFA(b *testing.B) {
	cfg := stt.LlamaConfig{Vocab: 8000, Hidden: 512, Intermediate: 1400, Layers: 2, KVHidden: 128} // ~12.6M parameters
	for _, dt := range []dtype.DType{dtype.BF16, dtype.F32} {
		b.Run(fmt.Sprintf("%s/%dM", dt, 12), func(b *testing.B) {
			f := newFixture(b, cfg, dt, 1)
			out := filepath.Join(f.dir, "m.safetensors")
			b.ReportAllocs()
			var rep *Report
			for b.Loop() {
				var err error
				rep, err = RunSFA(context.Background(), sfaJob(f, out, 0.5, 0))
				if err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(rep.BytesRead)
			if *rep.L2After >= *rep.L2Before {
				b.Fatal("merge did not move toward the anchor")
			}
		})
	}
}

func BenchmarkSumSqDiff(b *testing.B) {
	x, y := randF32(ChunkElems, 1), randF32(ChunkElems, 2)
	b.SetBytes(8 * ChunkElems)
	b.ReportAllocs()
	var s float64
	for b.Loop() {
		s = sumSqDiff(x, y)
	}
	if !(s > 0) {
		b.Fatal("wrong sum")
	}
}

func BenchmarkLerpBF16Fused(b *testing.B) {
	n := ChunkElems
	a, x, out := make([]byte, 2*n), make([]byte, 2*n), make([]byte, 2*n)
	for i, v := range randF32(n, 1) {
		h := dtype.Float32ToBF16(v)
		a[2*i], a[2*i+1] = byte(h), byte(h>>8)
	}
	for i, v := range randF32(n, 2) {
		h := dtype.Float32ToBF16(v)
		x[2*i], x[2*i+1] = byte(h), byte(h>>8)
	}
	b.SetBytes(int64(4 * n))
	b.ReportAllocs()
	var before float64
	for b.Loop() {
		before, _ = lerpBF16(out, a, x, 0.5, 0.5)
	}
	if !(before > 0) {
		b.Fatal("no distance")
	}
}

// BenchmarkRunTaskVectors is a whole merge of a base and three models, files to
// file, by the task-vector presets with their own kernels (ties) and the general
// one (dare_ties, breadcrumbs_ties, della with its per-row ranks), and by sce. Bytes
// are input bytes read.
func BenchmarkRunTaskVectors(b *testing.B) {
	basePath, base, models := benchMethodFixture(b, 3)
	for _, method := range []string{"ties", "dare_ties", "breadcrumbs_ties", "della", "sce"} {
		b.Run(method, func(b *testing.B) {
			p := Params{Density: 0.2, Lambda: 1, Gamma: 0.01, Rescale: "l1", Epsilon: 0.1, SelectTopK: 0.3}
			benchRunMethod(b, MethodJob{Method: method, Base: basePath, Models: models, Params: p,
				Job: Job{Out: filepath.Join(b.TempDir(), method+".out.safetensors")}}, len(base))
		})
	}
}

// benchMethodFixture writes a BF16 llama-shaped base of ~12.6M parameters and n
// perturbed models of it (weights 1, 2, ...) into a temporary folder.
func benchMethodFixture(b *testing.B, n int) (basePath string, base []stt.Tensor, models []Model) {
	cfg := stt.LlamaConfig{Vocab: 8000, Hidden: 512, Intermediate: 1400, Layers: 2, KVHidden: 128}
	dir := b.TempDir()
	base = stt.Random(cfg, dtype.BF16, 1)
	basePath = filepath.Join(dir, "base.safetensors")
	must(b, stt.WriteFile(basePath, base, nil))
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("m%d.safetensors", i))
		must(b, stt.WriteFile(p, stt.Perturb(base, 0.5, uint64(i+2)), nil))
		models = append(models, Model{Path: p, Weight: float64(i + 1), Density: math.NaN()})
	}
	return basePath, base, models
}

// benchRunMethod times job, files to file, with input bytes read as the benchmark's
// bytes, and checks that it merged all tensors tensors.
func benchRunMethod(b *testing.B, job MethodJob, tensors int) {
	b.ReportAllocs()
	var rep *Report
	for b.Loop() {
		var err error
		if rep, err = RunMethod(context.Background(), job); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(rep.BytesRead)
	if rep.TensorsMerged != tensors {
		b.Fatal("not every tensor merged")
	}
}
