package merge

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/testexec"
)

// TestCalibrationFault: the calibration reads the run's own mapped pages on both
// sides; an input truncated under the run, so that the device's slice faults while it
// is staged, is an error naming the tensor, not a crash.
func TestCalibrationFault(t *testing.T) {
	if os.Getenv(testexec.Env) != "" {
		// qemu-user delivers the SIGBUS of a truncated mapping with address 0, which
		// the guard must take for a nil dereference (as TestInputTruncatedWhileMapped
		// says); the amd64 run tests this.
		t.Skip("the fault address is lost under qemu-user: tested natively")
	}
	const n = 4 * ChunkElems
	size := int(dtype.BF16.Bytes(n))
	path := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(data)
	// the CPU's slice (the first two chunks) stays; the device's (the next two) goes
	if err := os.Truncate(path, dtype.BF16.Bytes(2*ChunkElems)); err != nil {
		t.Fatal(err)
	}
	tp := &TensorPlan{Name: "w", Shape: []int64{n}, OutDType: dtype.BF16, Merge: true, In: []Operand{
		{DType: dtype.BF16, Data: make([]byte, size), File: "anchor"},
		{DType: dtype.BF16, Data: data, File: path},
	}}
	dev := &Device{GPU: openFakeGPU(t), FixedCost: -1}
	k := SFA{Beta: 0.5}.Kernel()
	_, err = dev.Calibrate(context.Background(), tp, &k, func(*TensorPlan) Kernel { return SFA{Beta: 0.5}.Kernel() }, true, 2, n)
	if err == nil || !strings.Contains(err.Error(), `"w"`) {
		t.Fatalf("calibrating on a truncated input: %v, want an error naming the tensor", err)
	}
}
