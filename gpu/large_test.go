package gpu_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/gpu"
	"github.com/gomerge/gomerge/merge"
)

// TestDeviceTIESLarge is the end-to-end comparison devcheck.sh runs: TIES (density
// 0.2, two models) over GOMERGE_TIES_BYTES of BF16 inputs in safetensors files, by
// merge.RunMethod on the CPU and by Cuts + TIES on the device from the same mapped
// files; it logs both times and checks that the outputs are the same bytes. The
// files go to GOMERGE_TMP (default the test's temporary folder; /dev/shm keeps the
// disk out of the timing).
func TestDeviceTIESLarge(t *testing.T) {
	total, _ := strconv.ParseInt(os.Getenv("GOMERGE_TIES_BYTES"), 10, 64)
	if total <= 0 {
		t.Skip("set GOMERGE_TIES_BYTES (and GOMERGE_TEST_GPU=1) to run the large TIES comparison")
	}
	d := openReal(t, 0)
	dir := t.TempDir()
	if tmp := os.Getenv("GOMERGE_TMP"); tmp != "" {
		var err error
		if dir, err = os.MkdirTemp(tmp, "gomerge-ties-"); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	const tensorElems = 32 << 20
	nTensors := max(1, int(total/3/2/tensorElems))
	t.Logf("%d tensors of %d BF16 elements in each of 3 files (%.2f GB in all)", nTensors, tensorElems, float64(3*2*nTensors*tensorElems)/1e9)
	start := time.Now()
	names := make([]string, nTensors)
	files := []string{"base", "m0", "m1"}
	rng := rand.New(rand.NewPCG(1, 1))
	vals := make([][]float32, 3)
	for fi, f := range files {
		var ts []stt.Tensor
		for ti := range nTensors {
			names[ti] = fmt.Sprintf("layers.%d.weight", ti)
			v := make([]float32, tensorElems)
			for j := range v {
				if fi == 0 {
					v[j] = float32(rng.NormFloat64() * 0.02)
				} else {
					v[j] = vals[0][j] + float32(rng.NormFloat64()*0.002)
				}
			}
			if ti == 0 {
				vals[fi] = v
			}
			ts = append(ts, stt.FromFloat32(names[ti], dtype.BF16, []int64{tensorElems}, v))
		}
		if err := stt.WriteFile(filepath.Join(dir, f+".safetensors"), ts, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("inputs written in %v", time.Since(start))

	weights, density := []float64{0.6, 0.4}, 0.2
	out := filepath.Join(dir, "cpu.safetensors")
	job := merge.MethodJob{Method: "ties", Base: filepath.Join(dir, "base.safetensors"), Params: merge.Params{Density: density, Lambda: 1},
		Job: merge.Job{Out: out}}
	for i, w := range weights {
		job.Models = append(job.Models, merge.Model{Path: filepath.Join(dir, files[1+i]+".safetensors"), Weight: w, Density: math.NaN()})
	}
	start = time.Now()
	if _, err := merge.RunMethod(ctx, job); err != nil {
		t.Fatal(err)
	}
	cpuTime := time.Since(start)

	open := func(name string) *safetensors.File {
		f, err := safetensors.Open(filepath.Join(dir, name+".safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	in := []*safetensors.File{open("base"), open("m0"), open("m1")}
	want := open("cpu")
	w32 := []float32{float32(weights[0]), float32(weights[1])}
	got := make(buffer, 2*tensorElems)
	var gpuTime time.Duration
	before := d.Stats()
	for _, name := range names {
		ops := make([]gpu.Operand, 3)
		for i, f := range in {
			ti, _ := f.Tensor(name)
			b, err := f.Bytes(ti)
			if err != nil {
				t.Fatal(err)
			}
			ops[i] = gpu.Operand{Data: b, DType: dtype.BF16}
		}
		n := int64(tensorElems)
		k := int64(math.Floor(density * float64(n)))
		start := time.Now()
		cuts, err := d.Cuts(ctx, n, ops[0], ops[1:], [][]int64{{k}, {k}})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.TIES(ctx, n, gpu.Output{DType: dtype.BF16, W: got}, ops[0], ops[1:], w32, []gpu.Cut{cuts[0][0], cuts[1][0]}, 1); err != nil {
			t.Fatal(err)
		}
		gpuTime += time.Since(start)
		ti, _ := want.Tensor(name)
		wb, err := want.Bytes(ti)
		if err != nil {
			t.Fatal(err)
		}
		sameBits(t, name, got, wb, dtype.BF16)
	}
	inBytes := float64(3 * 2 * nTensors * tensorElems)
	t.Logf("TIES, %.2f GB of BF16 inputs: CPU (merge.RunMethod, %d threads, writing the file) %v = %.2f GB/s; device (Cuts + TIES from the mapped files, into memory) %v = %.2f GB/s; about %.1f GB sent to the device",
		inBytes/1e9, runtime.GOMAXPROCS(0), cpuTime, inBytes/cpuTime.Seconds()/1e9, gpuTime, inBytes/gpuTime.Seconds()/1e9, float64(d.Stats().BytesToDevice-before.BytesToDevice)/1e9)
}

// BenchmarkDeviceLerp is SFA's merge end to end on the device: from host BF16 to host
// BF16, through the staging buffers.
func BenchmarkDeviceLerp(b *testing.B) {
	d := openReal(b, 0)
	n := 256 << 20
	a, x := make([]byte, 2*n), make([]byte, 2*n)
	for j := range n {
		a[2*j+1], x[2*j+1] = 0x3f, 0x3e
	}
	out := make(buffer, 2*n)
	b.Run("BF16/256M", func(b *testing.B) {
		b.SetBytes(int64(6 * n))
		for b.Loop() {
			if _, err := d.Lerp(ctx, int64(n), gpu.Output{DType: dtype.BF16, W: out}, gpu.Operand{Data: a, DType: dtype.BF16}, gpu.Operand{Data: x, DType: dtype.BF16}, 0.5, 0.5); err != nil {
				b.Fatal(err)
			}
		}
	})
}
