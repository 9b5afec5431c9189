package gpu_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/gpu"
	"github.com/gomerge/gomerge/gpu/gputest"
)

// The tests run gomerge's kernels through the whole driver binding against a fake
// libcuda.so.1 (testdata/fakecuda.c, compiled here with the system's C compiler),
// which runs the same kernels.cu on the host; and, with GOMERGE_TEST_GPU=1, against
// the real driver, where a missing device is a failure.

func TestMain(m *testing.M) {
	if lib := os.Getenv("GOMERGE_FAKECUDA_CHILD"); lib != "" {
		os.Exit(injectChild(lib))
	}
	os.Exit(m.Run())
}

// fakeLibrary builds the fake driver (once per test binary, cached across runs) and
// returns its path. With no C compiler the tests that need it are skipped, unless
// GOMERGE_REQUIRE_CLANG is set (CI), when they fail. gputest does it for every
// package's tests.
func fakeLibrary(t testing.TB) string {
	t.Helper()
	return gputest.Library(t)
}

// openFake opens the fake device with staged chunks of chunkBlocks blocks, small, so
// that a test tensor spans several chunks on both streams.
func openFake(t testing.TB, chunkBlocks int) *gpu.Device {
	t.Helper()
	d, err := gpu.OpenWith(gpu.Config{Library: fakeLibrary(t), ChunkElems: chunkBlocks * gpu.BlockElems})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// openReal opens the real device when GOMERGE_TEST_GPU is set; then a missing device
// is a failure.
func openReal(t testing.TB, chunkBlocks int) *gpu.Device {
	t.Helper()
	if os.Getenv("GOMERGE_TEST_GPU") == "" {
		t.Skip("set GOMERGE_TEST_GPU=1 to run on a real CUDA device")
	}
	// GOMERGE_TEST_GPU_LIBRARY names a driver outside the loader's search path (or
	// the fake, to try these tests without a GPU).
	d, err := gpu.OpenWith(gpu.Config{Library: os.Getenv("GOMERGE_TEST_GPU_LIBRARY"), ChunkElems: chunkBlocks * gpu.BlockElems})
	if err != nil {
		t.Fatalf("GOMERGE_TEST_GPU is set but: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// buffer is an io.WriterAt over a byte slice.
type buffer []byte

func (b buffer) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(b)) {
		return 0, fmt.Errorf("write of %d bytes at %d outside %d", len(p), off, len(b))
	}
	return copy(b[off:], p), nil
}

func encode(t testing.TB, v []float32, dt dtype.DType) []byte {
	b := make([]byte, len(v)*dt.Size())
	if err := dtype.Encode(b, v, dt); err != nil {
		t.Fatal(err)
	}
	return b
}

func decode(t testing.TB, b []byte, dt dtype.DType) []float32 {
	v := make([]float32, len(b)/dt.Size())
	if err := dtype.Decode(v, b, dt); err != nil {
		t.Fatal(err)
	}
	return v
}

// sameBits compares encoded tensors element by element: equal bytes, or NaN on both
// sides (the device's NaN is canonical where the CPU's keeps an input's payload).
func sameBits(t testing.TB, what string, got, want []byte, dt dtype.DType) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	sz := dt.Size()
	gv, wv := decode(t, got, dt), decode(t, want, dt)
	bad := 0
	for j := range gv {
		if string(got[j*sz:(j+1)*sz]) == string(want[j*sz:(j+1)*sz]) || (gv[j] != gv[j] && wv[j] != wv[j]) {
			continue
		}
		if bad++; bad <= 5 {
			t.Errorf("%s: element %d is % x (%v), want % x (%v)", what, j, got[j*sz:(j+1)*sz], gv[j], want[j*sz:(j+1)*sz], wv[j])
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d elements differ", what, bad)
	}
}

// sameFloats compares reductions bit for bit (NaN matching NaN).
func sameFloats(t testing.TB, what string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] && !(got[i] != got[i] && want[i] != want[i]) {
			t.Errorf("%s[%d] = %v, want %v", what, i, got[i], want[i])
			return
		}
	}
}

var ctx = context.Background()

func fmtFloat(v float64) string { return fmt.Sprint(v) }

func fmtName(prefix string, i int) string { return fmt.Sprintf("%s%d.safetensors", prefix, i) }

// slowWriter is an output that takes its time over each write, records the offsets
// it was given, and fails the write at failAt (counting from 0) when failAt >= 0;
// it counts the writes that ran at once.
type slowWriter struct {
	buf      buffer
	failAt   int
	mu       sync.Mutex
	offs     []int64
	inFlight atomic.Int32
	overlap  atomic.Bool
}

var errWriteFailed = errors.New("disk full")

func (w *slowWriter) WriteAt(p []byte, off int64) (int, error) {
	if w.inFlight.Add(1) > 1 {
		w.overlap.Store(true)
	}
	defer w.inFlight.Add(-1)
	time.Sleep(2 * time.Millisecond) // the next chunk's staging runs meanwhile
	w.mu.Lock()
	i := len(w.offs)
	w.offs = append(w.offs, off)
	w.mu.Unlock()
	if i == w.failAt {
		return 0, errWriteFailed
	}
	return w.buf.WriteAt(p, off)
}

// TestOutputWrites: the device path writes each chunk's output on a goroutine of its
// own while it stages the next: the writes come one at a time, in chunk order, with
// the bytes a plain writer gets; a failed write fails the operation with its error,
// and no write runs after it returns.
func TestOutputWrites(t *testing.T) {
	d := openFake(t, 1)
	n := 5*gpu.BlockElems + 3
	a, x := make([]byte, 2*n), make([]byte, 2*n)
	for j := range n {
		a[2*j], a[2*j+1] = byte(j), byte(j>>8)^0x3c
		x[2*j], x[2*j+1] = byte(j*7), byte(j>>5)^0x3d
	}
	lerp := func(w io.WriterAt) error {
		_, err := d.Lerp(ctx, int64(n), gpu.Output{DType: dtype.BF16, W: w},
			gpu.Operand{Data: a, DType: dtype.BF16}, gpu.Operand{Data: x, DType: dtype.BF16}, 0.25, 0.75)
		return err
	}
	want := make(buffer, 2*n)
	if err := lerp(want); err != nil {
		t.Fatal(err)
	}
	w := &slowWriter{buf: make(buffer, 2*n), failAt: -1}
	if err := lerp(w); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.buf, want) || w.overlap.Load() {
		t.Errorf("slow writer: same bytes %v, writes at once %v", bytes.Equal(w.buf, want), w.overlap.Load())
	}
	for i, off := range w.offs {
		if off != int64(i)*2*gpu.BlockElems {
			t.Fatalf("write %d at %d: not in chunk order (%v)", i, off, w.offs)
		}
	}
	for _, failAt := range []int{0, 2, 5} {
		w := &slowWriter{buf: make(buffer, 2*n), failAt: failAt}
		if err := lerp(w); !errors.Is(err, errWriteFailed) {
			t.Errorf("write %d failing: %v", failAt, err)
		}
		w.mu.Lock()
		writes := len(w.offs)
		w.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		if w.inFlight.Load() != 0 || len(w.offs) != writes {
			t.Errorf("write %d failing: a write ran after the operation returned", failAt)
		}
		if writes > failAt+2 {
			t.Errorf("write %d failing: %d writes, the chunks went on", failAt, writes)
		}
	}
}
