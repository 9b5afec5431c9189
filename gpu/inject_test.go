package gpu_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/gomerge/gomerge/internal/testexec"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/gpu"
)

// TestInjectedFailures makes each driver entry point fail in turn (the fake driver's
// FAKECUDA_FAIL), in a child process so that a crash or a hang cannot take the test
// binary with it, and checks that the failure comes back as an error naming the call
// and its CUresult, that failures while opening wrap ErrUnavailable, and that the
// child exits normally within the time limit.
func TestInjectedFailures(t *testing.T) {
	lib := fakeLibrary(t)
	cases := []struct {
		fail   string // FAKECUDA_FAIL
		env    string // another variable for the fake, if any
		open   bool   // fails Open, with ErrUnavailable
		expect string // in the child's output; "" means the call's name
	}{
		{fail: "cuInit", open: true},
		{env: "FAKECUDA_DEVICES=0", open: true, expect: "CUDA_ERROR_NO_DEVICE"},
		{fail: "cuDriverGetVersion", open: true},
		{fail: "cuDeviceGetCount", open: true},
		{fail: "cuDeviceGet", open: true},
		{fail: "cuDeviceGetName", open: true},
		{fail: "cuDeviceGetAttribute:3", open: true},
		{fail: "cuDeviceTotalMem_v2", open: true},
		{fail: "cuDevicePrimaryCtxRetain", open: true},
		{fail: "cuCtxSetCurrent", open: true},
		{fail: "cuModuleLoadDataEx", open: true, expect: "fake ptxas: injected failure"},
		{fail: "cuModuleGetFunction:5", open: true, expect: "gm_hist_hi"},
		{fail: "cuStreamCreate:2", open: true},
		{fail: "cuMemAlloc_v2"},
		{fail: "cuMemAlloc_v2:9"},
		{fail: "cuMemHostAlloc:2"},
		{fail: "cuMemcpyHtoDAsync_v2:5"},
		{fail: "cuMemcpyDtoHAsync_v2:2"},
		{fail: "cuMemsetD32Async:3"},
		{fail: "cuLaunchKernel:4", expect: "(kernel "},
		{fail: "cuStreamSynchronize:3"},
		{fail: "cuMemFree_v2:2"},
		{fail: "cuMemFreeHost"},
		{fail: "cuStreamDestroy_v2:2"},
		{fail: "cuModuleUnload"},
		{fail: "cuDevicePrimaryCtxRelease_v2"},
	}
	for _, c := range cases {
		name := c.fail + c.env
		t.Run(name, func(t *testing.T) {
			cx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := testexec.CommandContext(cx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "GOMERGE_FAKECUDA_CHILD="+lib, "FAKECUDA_FAIL="+c.fail)
			if c.env != "" {
				cmd.Env = append(cmd.Env, c.env)
			}
			outb, err := cmd.CombinedOutput()
			out := string(outb)
			if cx.Err() != nil {
				t.Fatalf("the child hung:\n%s", out)
			}
			if err != nil {
				t.Fatalf("the child failed: %v\n%s", err, out)
			}
			call, _, _ := strings.Cut(c.fail, ":")
			expect := c.expect
			if expect == "" {
				expect = "gpu: " + call + " failed: CUDA_ERROR_UNKNOWN (999)"
			}
			if !strings.Contains(out, expect) {
				t.Errorf("the child's errors do not say %q:\n%s", expect, out)
			}
			if c.open != strings.Contains(out, "open: unavailable=true") {
				t.Errorf("want Open to fail (ErrUnavailable): %v; the child says:\n%s", c.open, out)
			}
			if strings.Contains(out, "unavailable=false") {
				t.Errorf("an Open failure does not wrap ErrUnavailable:\n%s", out)
			}
		})
	}
	t.Run("NoLibrary", func(t *testing.T) {
		_, err := gpu.OpenWith(gpu.Config{Library: filepath.Join(t.TempDir(), "libcuda.so.1")})
		if !errors.Is(err, gpu.ErrUnavailable) {
			t.Fatalf("Open without a driver: %v", err)
		}
	})
	t.Run("NoInjection", func(t *testing.T) {
		cmd := testexec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "GOMERGE_FAKECUDA_CHILD="+lib)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Contains(string(out), "failed") || !strings.Contains(string(out), "close: <nil>") {
			t.Fatalf("%v\n%s", err, out)
		}
	})
}

// injectChild is the child's side: open the fake device and run a few operations,
// printing each error, then exit 0. A panic or a hang is what the parent looks for.
func injectChild(lib string) int {
	d, err := gpu.OpenWith(gpu.Config{Library: lib, ChunkElems: 2 * gpu.BlockElems})
	if err != nil {
		fmt.Printf("open: unavailable=%v: %v\n", errors.Is(err, gpu.ErrUnavailable), err)
		return 0
	}
	n := 5*gpu.BlockElems + 3
	a, x := make([]byte, 2*n), make([]byte, 2*n)
	for j := range n {
		a[2*j], x[2*j] = byte(j), byte(j*7)
		a[2*j+1], x[2*j+1] = 0x3f, 0x3f
	}
	A, X := gpu.Operand{Data: a, DType: dtype.BF16}, gpu.Operand{Data: x, DType: dtype.BF16}
	out := gpu.Output{DType: dtype.BF16, W: make(buffer, 2*n)}
	ctx := context.Background()
	_, err = d.Lerp(ctx, int64(n), out, A, X, 0.5, 0.5)
	fmt.Printf("lerp: %v\n", err)
	cuts, err := d.Cuts(ctx, int64(n), A, []gpu.Operand{X}, [][]int64{{int64(n / 3)}})
	fmt.Printf("cuts: %v\n", err)
	if err == nil {
		err = d.TIES(ctx, int64(n), out, A, []gpu.Operand{X}, []float32{1}, []gpu.Cut{cuts[0][0]}, 1)
		fmt.Printf("ties: %v\n", err)
	}
	_, err = d.DAREL1(ctx, int64(n), A, []gpu.TaskModel{{X: X, Weight: 1, Mode: gpu.KeepDARE, Threshold: math.MaxUint64 / 2}})
	fmt.Printf("dare: %v\n", err)
	_, err = d.Lerp(ctx, int64(n), out, A, X, 0.5, 0.5) // after a failure, the device still answers
	fmt.Printf("lerp again: %v\n", err)
	fmt.Printf("close: %v\n", d.Close())
	return 0
}
