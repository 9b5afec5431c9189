package merge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// streamLlama has tensors of several spans with a ragged tail (the embeddings: 3001
// × 96 elements), and others under one chunk.
var streamLlama = stt.LlamaConfig{Vocab: 3001, Hidden: 96, Intermediate: 700, Layers: 1, KVHidden: 32}

// writeCompressedInputs writes base, m0, m1, m2 and a Fisher as safetensors files,
// and their compressed forms: base.gmz full, m0.gmz a delta against
// base.safetensors, m1.gmz a delta against base.gmz, m2.gmz full, in frames of
// frameSize bytes. It returns the plain and the compressed path of each name.
func writeCompressedInputs(t *testing.T, dir string, frameSize int) (plain, gz func(string) string) {
	t.Helper()
	plain = func(n string) string { return filepath.Join(dir, n+".safetensors") }
	gz = func(n string) string { return filepath.Join(dir, n+".gmz") }
	base := stt.Random(streamLlama, dtype.BF16, 1)
	// An integer tensor of several spans, copied (zstd frames).
	ids := stt.Tensor{Name: "position_ids", DType: dtype.I32, Shape: []int64{1, 3 * ChunkElems / 2}}
	ids.Data = make([]byte, dtype.I32.Bytes(3*ChunkElems/2))
	for i := range len(ids.Data) / 4 {
		binary.LittleEndian.PutUint32(ids.Data[4*i:], uint32(i%4096))
	}
	must(t, stt.WriteFile(plain("base"), append(base, ids), nil))
	for i, seed := range []uint64{2, 3, 4} {
		must(t, stt.WriteFile(plain(fmt.Sprint("m", i)), append(stt.Perturb(base, 0.5, seed), ids), nil))
	}
	must(t, stt.WriteFile(plain("fisher"), stt.Fisher(base, 1e-2, 5), nil))
	ctx := context.Background()
	for _, c := range []struct{ name, against string }{
		{"base", ""}, {"m0", plain("base")}, {"m1", gz("base")}, {"m2", ""}, {"fisher", ""},
	} {
		if _, err := checkpoint.Compress(ctx, plain(c.name), gz(c.name), checkpoint.CompressOptions{Against: c.against, FrameSize: frameSize}); err != nil {
			t.Fatalf("compress %s: %v", c.name, err)
		}
	}
	return plain, gz
}

// Every method, and sfa with and without a Fisher and with a dtype change, writes
// the same bytes from compressed inputs (full, delta against a plain file, delta
// against a compressed one) as from the files they were made from: with frames that
// tile the engine's spans and with frames that straddle them.
func TestEveryMethodCompressedInputs(t *testing.T) {
	ctx := context.Background()
	frameSizes := []int{1 << 20, 40968}
	if raceBuild || testing.Short() {
		// Only the straddling frames under the race detector and the emulated arm64
		// run (CI's two longest stages, where the 60-odd merges took two minutes): the
		// plain run covers the tiling ones; the engine's spans do not depend on either.
		frameSizes = frameSizes[1:]
	}
	for _, frameSize := range frameSizes {
		dir := t.TempDir()
		plain, gz := writeCompressedInputs(t, dir, frameSize)
		type runFunc func(path func(string) string, out string) error
		runs := map[string]runFunc{
			"sfa": func(path func(string) string, out string) error {
				_, err := RunSFA(ctx, SFAJob{Anchor: path("base"), Current: path("m0"), SFA: SFA{Beta: 0.3},
					Job: Job{Out: out, Exec: ExecOptions{Threads: 2}}})
				return err
			},
			"sfa-f32": func(path func(string) string, out string) error {
				_, err := RunSFA(ctx, SFAJob{Anchor: path("m1"), Current: path("m2"), SFA: SFA{Beta: 0.6},
					Job: Job{Out: out, OutDType: dtype.F32, Exec: ExecOptions{Threads: 3}}})
				return err
			},
			"sfa-fisher": func(path func(string) string, out string) error {
				_, err := RunSFA(ctx, SFAJob{Anchor: path("base"), Current: path("m1"), Fisher: path("fisher"), SFA: SFA{Eta: 30},
					Job: Job{Out: out, Exec: ExecOptions{Threads: 2}}})
				return err
			},
		}
		for _, method := range append(testMethods(), "della-inv", "model_stock-filter_wise") {
			name := method
			runs[name] = func(path func(string) string, out string) error {
				_, err := RunMethod(ctx, methodTestJob(name, path, out, 2))
				return err
			}
		}
		for name, run := range runs {
			want, got := filepath.Join(dir, name+".want.safetensors"), filepath.Join(dir, name+".got.safetensors")
			if err := run(plain, want); err != nil {
				t.Fatalf("%s from files: %v", name, err)
			}
			if err := run(gz, got); err != nil {
				t.Fatalf("frames of %d: %s from .gmz: %v", frameSize, name, err)
			}
			if d := tensorsDiffer(t, got, want); d != "" {
				t.Errorf("frames of %d: %s: the merge from .gmz inputs differs from the merge from files: %s", frameSize, name, d)
			}
			os.Remove(want)
			os.Remove(got)
		}
	}
}

// rangeOnly serves a compressed checkpoint a range at a time and fails any whole
// tensor read, recording the largest range asked for.
type rangeOnly struct {
	checkpoint.RangeDecoder
	largest atomic.Int64
}

func (r *rangeOnly) Data(name string) ([]byte, error) {
	return nil, fmt.Errorf("tensor %q: read whole", name)
}

func (r *rangeOnly) DecodeRange(name string, off int64, dst []byte) error {
	for {
		l := r.largest.Load()
		if int64(len(dst)) <= l || r.largest.CompareAndSwap(l, int64(len(dst))) {
			break
		}
	}
	return r.RangeDecoder.DecodeRange(name, off, dst)
}

// The engine reads a compressed input a span at a time (a whole number of chunks
// covering whole frames), never a whole tensor, for a kernel with passes too; and a
// kernel that reads beyond its chunk loads whole tensors.
func TestCompressedInputsStream(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, gz := writeCompressedInputs(t, dir, 8192)
	var srcs []*rangeOnly
	var inputs []Source
	for _, n := range []string{"base", "m0", "m1"} {
		s, err := checkpoint.Open(gz(n))
		must(t, err)
		defer s.Close()
		rd, ok := s.(checkpoint.RangeDecoder)
		if !ok {
			t.Fatalf("%s: a .gmz source is not a checkpoint.RangeDecoder", n)
		}
		srcs = append(srcs, &rangeOnly{RangeDecoder: rd})
		inputs = append(inputs, srcs[len(srcs)-1])
	}
	// Integer tensors are compared whole across inputs when planning: one input
	// first, whose integer tensor is copied a span at a time.
	one, err := BuildPlan(inputs[:1], nil, PlanOptions{})
	must(t, err)
	copyIn := Kernel{Merge: func(dst []float32, in, _ [][]float32, _ Chunk) { copy(dst, in[0]) }}
	if _, err := Execute(ctx, one, discardSink{}, func(*TensorPlan) Kernel { return copyIn }, ExecOptions{Threads: 2}); err != nil {
		t.Fatal(err)
	}
	if got := srcs[0].largest.Swap(0); got == 0 || got > 4*ChunkElems {
		t.Errorf("one input: decoded ranges of up to %d bytes, want one span (%d for I32)", got, 4*ChunkElems)
	}
	plan, err := BuildPlan(inputs, nil, PlanOptions{FloatOnly: true})
	must(t, err)
	var largest int64
	for _, tp := range plan.Tensors {
		largest = max(largest, tp.In[0].Len())
	}
	if largest <= 2*ChunkElems*2 {
		t.Fatalf("the fixture's largest tensor is %d bytes: too small to tell spans from tensors", largest)
	}
	sink := discardSink{}
	// SFA (fused), and a kernel with a pass before its merge.
	for _, kernel := range []Kernel{
		SFA{Beta: 0.5}.Kernel(),
		{Passes: []Pass{{NumStats: 1, Chunk: func(_ Chunk, in, _ [][]float32, acc []float64) { acc[0] += float64(len(in[0])) }}},
			Merge: func(dst []float32, in, _ [][]float32, _ Chunk) { copy(dst, in[1]) }},
	} {
		if _, err := Execute(ctx, plan, sink, func(*TensorPlan) Kernel { return kernel }, ExecOptions{Threads: 2}); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range srcs {
		if got := s.largest.Load(); got == 0 || got > ChunkElems*2 {
			t.Errorf("input %d: decoded ranges of up to %d bytes, want one span (%d)", i, got, ChunkElems*2)
		}
	}
	// A kernel that reads beyond its chunk has the tensor read into the arena a
	// span at a time where it fits the arena (HoldBytes sets its size here: the
	// engine's own choice holds nothing this small), or, with no arena (HoldBytes <
	// 0), loads it whole.
	whole := Kernel{WholeInputs: true, Merge: func(dst []float32, in, _ [][]float32, _ Chunk) { copy(dst, in[0]) }}
	for _, s := range srcs {
		s.largest.Store(0)
	}
	if _, err := Execute(ctx, plan, sink, func(*TensorPlan) Kernel { return whole }, ExecOptions{Threads: 2, HoldBytes: 1 << 30}); err != nil {
		t.Fatalf("a WholeInputs kernel, held: %v", err)
	}
	for i, s := range srcs {
		if got := s.largest.Load(); got == 0 || got > ChunkElems*2 {
			t.Errorf("a WholeInputs kernel, held: input %d: decoded ranges of up to %d bytes, want one span (%d)", i, got, ChunkElems*2)
		}
	}
	_, err = Execute(ctx, plan, sink, func(*TensorPlan) Kernel { return whole }, ExecOptions{Threads: 2, HoldBytes: -1})
	if err == nil || !strings.Contains(err.Error(), "read whole") {
		t.Errorf("a WholeInputs kernel with no arena: %v, want the whole tensor read", err)
	}
}

// tensorsDiffer names the first tensor whose name, dtype, shape or bytes differ
// between two checkpoints (their metadata, which names the inputs, may differ).
func tensorsDiffer(t *testing.T, a, b string) string {
	t.Helper()
	sa, err := checkpoint.Open(a)
	must(t, err)
	defer sa.Close()
	sb, err := checkpoint.Open(b)
	must(t, err)
	defer sb.Close()
	ta, tb := sa.Tensors(), sb.Tensors()
	if len(ta) != len(tb) {
		return fmt.Sprintf("%d tensors, %d", len(ta), len(tb))
	}
	for i := range ta {
		if ta[i].Name != tb[i].Name || ta[i].DType != tb[i].DType || fmt.Sprint(ta[i].Shape) != fmt.Sprint(tb[i].Shape) {
			return fmt.Sprintf("tensor %d: %q %s %v, %q %s %v", i, ta[i].Name, ta[i].DType, ta[i].Shape, tb[i].Name, tb[i].DType, tb[i].Shape)
		}
		da, err := sa.Data(ta[i].Name)
		must(t, err)
		db, err := sb.Data(tb[i].Name)
		must(t, err)
		if !bytes.Equal(da, db) {
			return fmt.Sprintf("tensor %q", ta[i].Name)
		}
	}
	return ""
}

// countingDelta counts the bytes a delta source decodes against bytes handed in, and
// those of its delta tensors it decodes against its own reference.
type countingDelta struct {
	checkpoint.DeltaDecoder
	against, alone atomic.Int64
}

func (c *countingDelta) DecodeRangeAgainst(name string, off int64, dst, ref []byte) error {
	c.against.Add(int64(len(dst)))
	return c.DeltaDecoder.DecodeRangeAgainst(name, off, dst, ref)
}

func (c *countingDelta) DecodeRange(name string, off int64, dst []byte) error {
	if _, _, ok := c.DeltaReference(name); ok {
		c.alone.Add(int64(len(dst)))
	}
	return c.DeltaDecoder.DecodeRange(name, off, dst)
}

// A delta merged beside the checkpoint it is a delta against, or beside a
// compressed input with its reference's checksums, decodes against that input's
// span (linkDeltas), so the anchor is read or decoded once; the bytes are the same
// as from the files (TestEveryMethodCompressedInputs's m0 and m1). Beside another
// checkpoint it reads its own reference.
func TestDeltaDecodesAgainstInput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	plain, gz := writeCompressedInputs(t, dir, 1<<20)
	open := func(path string) Source {
		s, err := checkpoint.Open(path)
		must(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	}
	// m1 is a delta against base.gmz, m0 one against base.safetensors.
	for _, c := range []struct {
		delta, other string
		shared       bool
	}{
		{gz("m1"), gz("base"), true},     // its reference file
		{gz("m1"), gz("m2"), false},      // another checkpoint
		{gz("m0"), plain("base"), true},  // its reference file
		{gz("m0"), gz("base"), true},     // the reference's bytes, compressed: the same checksums
		{gz("m0"), plain("m2"), false},   // another checkpoint, plain
		{gz("m1"), plain("base"), false}, // the same bytes, but a plain file has no checksum to show it
	} {
		dd, ok := open(c.delta).(checkpoint.DeltaDecoder)
		if !ok {
			t.Fatal("a .gmz source is not a checkpoint.DeltaDecoder")
		}
		delta := &countingDelta{DeltaDecoder: dd}
		plan, err := BuildPlan([]Source{open(c.other), delta}, nil, PlanOptions{FloatOnly: true})
		must(t, err)
		if _, err := Execute(ctx, plan, discardSink{}, func(*TensorPlan) Kernel { return SFA{Beta: 0.5}.Kernel() }, ExecOptions{Threads: 2}); err != nil {
			t.Fatal(err)
		}
		against, alone := delta.against.Load(), delta.alone.Load()
		name := filepath.Base(c.delta) + " beside " + filepath.Base(c.other)
		if c.shared && (against == 0 || alone != 0) {
			t.Errorf("%s: %d bytes decoded against its span, %d against the delta's own reference; want all against the span", name, against, alone)
		}
		if !c.shared && (against != 0 || alone == 0) {
			t.Errorf("%s: %d bytes decoded against its span, %d against the delta's own reference; want none against another checkpoint", name, against, alone)
		}
	}
	// The anchor replaced by another checkpoint of the same layout after the delta
	// was made: the span it hands in fails the delta's frame checksums, and the
	// merge stops as bad input, naming the reference.
	data, err := os.ReadFile(gz("m2"))
	must(t, err)
	must(t, os.WriteFile(gz("base"), data, 0o644))
	plan, err := BuildPlan([]Source{open(gz("base")), open(gz("m1"))}, nil, PlanOptions{FloatOnly: true})
	must(t, err)
	_, err = Execute(ctx, plan, discardSink{}, func(*TensorPlan) Kernel { return SFA{Beta: 0.5}.Kernel() }, ExecOptions{Threads: 2})
	if !errors.Is(err, checkpoint.ErrBadInput) || !strings.Contains(err.Error(), "reference") {
		t.Errorf("a delta beside a changed anchor: %v, want bad input naming the reference", err)
	}
}

// TestFrameSpan: a span is a whole number of chunks within maxSpanElems; where a
// number of chunks that is a whole number of frames is at most four frames, the span
// is the fewest such (no frame decoded twice in a pass), else it covers four frames
// or the cap. The block types count in bytes: a Q4_K chunk is 36,864 bytes (before,
// a span took the frame's bytes for elements: 0.56 of a 1 MiB frame, each frame
// decoded by two or three spans).
func TestFrameSpan(t *testing.T) {
	for _, c := range []struct {
		dt     dtype.DType
		unit   int64
		chunks int64 // 0: check the properties only
	}{
		{dtype.BF16, 1 << 20, 8},
		{dtype.F32, 1 << 20, 4},
		{dtype.F32, 8192, 1},
		{dtype.F16, 1 << 26, maxSpanElems / ChunkElems}, // frames larger than the cap
		{dtype.Q4_K, 1 << 20, 114},                      // whole frames only every 256 chunks
		{dtype.Q8_0, 1 << 20, 61},
		{dtype.Q6_K, 1 << 20, 79},
		{dtype.Q8_0, 17 << 12, 1}, // frames of a chunk's bytes, 69,632
		{dtype.Q2_K, 1 << 20, 0},
		{dtype.BF16, 1000000, 0},
		{dtype.Q4_K, 8, 0},
	} {
		span := frameSpan(c.dt, c.unit)
		bytes, capBytes := c.dt.Bytes(span), c.dt.Bytes(maxSpanElems)
		if span%ChunkElems != 0 || span < ChunkElems || span > maxSpanElems {
			t.Errorf("%v frames of %d: a span of %d elements", c.dt, c.unit, span)
		}
		if c.chunks != 0 && span != c.chunks*ChunkElems {
			t.Errorf("%v frames of %d: %d chunks, want %d", c.dt, c.unit, span/ChunkElems, c.chunks)
		}
		if bytes%c.unit != 0 && bytes < min(4*c.unit, capBytes) {
			t.Errorf("%v frames of %d: %d bytes a span, neither whole frames nor four of them", c.dt, c.unit, bytes)
		}
		// Fewer chunks that are whole frames, at most four, would have been taken.
		for k := int64(1); k*ChunkElems < span; k++ {
			if b := c.dt.Bytes(k * ChunkElems); b%c.unit == 0 && b <= 4*c.unit {
				t.Errorf("%v frames of %d: %d chunks are whole frames, the span took %d", c.dt, c.unit, k, span/ChunkElems)
				break
			}
		}
	}
}

// TestSpanBuffersBoundWorkers: only tensors that decode a span at a time into a
// worker's buffers count against the scratch budget. The same plan of compressed
// inputs, every tensor with a pass: with no arena its tensors stream through span
// buffers and a budget of four workers' chunk scratch runs fewer than four; held in
// the arena, they need none and it runs four (before, held tensors counted too, and
// large frames held a whole run to one or two workers), unless every pass may skip
// itself, when the merge reads through span buffers.
func TestSpanBuffersBoundWorkers(t *testing.T) {
	dir := t.TempDir()
	_, gz := writeCompressedInputs(t, dir, 1<<20)
	var inputs []Source
	for _, n := range []string{"base", "m0", "m1"} {
		s, err := checkpoint.Open(gz(n))
		must(t, err)
		defer s.Close()
		inputs = append(inputs, s)
	}
	plan, err := BuildPlan(inputs, nil, PlanOptions{FloatOnly: true})
	must(t, err)
	kernels := make([]Kernel, len(plan.Tensors))
	for i := range kernels {
		kernels[i] = Kernel{Passes: []Pass{{NumStats: 1, Chunk: func(_ Chunk, in, _ [][]float32, acc []float64) { acc[0]++ }}},
			Merge: func(dst []float32, in, _ [][]float32, _ Chunk) { copy(dst, in[0]) }}
	}
	chunkScratch := int64(ChunkElems) * int64(4*(len(plan.Inputs)+1)+8)
	budget := 4*chunkScratch + 1
	ctx := context.Background()
	streamed := newExecution(ctx, plan, discardSink{}, kernels, nil, ExecOptions{Threads: 4, Budget: budget, HoldBytes: -1})
	// The largest tensor, the 3001×96 embeddings, is shorter than its span (8 chunks
	// of BF16 in 1 MiB frames): three operands' buffers of 288,096 elements.
	if got, want := streamed.spanBytes(), int64(3*288096*2); got != want {
		t.Errorf("streamed: span buffers of %d bytes, want %d", got, want)
	}
	if got := cap(streamed.sem); got >= 4 {
		t.Errorf("streamed: %d workers, want fewer than 4 (span buffers of %d bytes)", got, streamed.spanBytes())
	}
	held := newExecution(ctx, plan, discardSink{}, kernels, nil, ExecOptions{Threads: 4, Budget: budget, HoldBytes: 1 << 30})
	if got := cap(held.sem); got != 4 || held.spanBytes() != 0 {
		t.Errorf("held: %d workers, span buffers of %d bytes; want 4 and none", got, held.spanBytes())
	}
	// Tensors the device runs are loaded whole: neither the arena nor span buffers.
	onGPU := make([]bool, len(plan.Tensors))
	for i := range onGPU {
		onGPU[i] = true
	}
	device := newExecution(ctx, plan, discardSink{}, kernels, onGPU, ExecOptions{Threads: 4, Budget: budget, HoldBytes: 1 << 30})
	if got := cap(device.sem); got != 4 || device.spanBytes() != 0 || device.arenaSize != 0 {
		t.Errorf("on the device: %d workers, span buffers of %d bytes, an arena of %d; want 4 and none", got, device.spanBytes(), device.arenaSize)
	}
	if _, err := Execute(ctx, plan, discardSink{}, func(tp *TensorPlan) Kernel { return kernels[0] }, ExecOptions{Threads: 4, Budget: budget, HoldBytes: 1 << 30}); err != nil {
		t.Fatalf("the held run: %v", err)
	}
	// A held tensor whose passes may all skip themselves may merge through span
	// buffers after all (runHeld): it counts.
	for i := range kernels {
		kernels[i].Passes[0].Skip = func() bool { return true }
	}
	skipping := newExecution(ctx, plan, discardSink{}, kernels, nil, ExecOptions{Threads: 4, Budget: budget, HoldBytes: 1 << 30})
	if got, want := skipping.spanBytes(), streamed.spanBytes(); got != want {
		t.Errorf("held, every pass may skip: span buffers of %d bytes, want %d", got, want)
	}
}

// A scratch keeps each operand slot's largest span buffer across tensors, so where
// slots' types differ between tensors the budget counts each slot's largest: here
// w0 is F32 in the base and BF16 in m0, and w1 the other way round, so one tensor
// needs 1.5 MiB of span buffers and a scratch that ran both holds 2 MiB.
func TestSpanBytesPerSlot(t *testing.T) {
	dir := t.TempDir()
	const n = 4 * ChunkElems // one span of F32 and of BF16 in 1 MiB frames
	tensor := func(name string, dt dtype.DType, seed byte) stt.Tensor {
		data := make([]byte, dt.Bytes(n))
		for i := range data {
			data[i] = byte(i*7) ^ seed
		}
		if dt == dtype.BF16 {
			for i := 1; i < len(data); i += 2 {
				data[i] &= 0x3f // finite, small
			}
		} else {
			for i := 3; i < len(data); i += 4 {
				data[i] &= 0x3f
			}
		}
		return stt.Tensor{Name: name, DType: dt, Shape: []int64{4, n / 4}, Data: data}
	}
	ctx := context.Background()
	var inputs []Source
	for i, dts := range [][2]dtype.DType{{dtype.F32, dtype.BF16}, {dtype.BF16, dtype.F32}} {
		plain, gz := filepath.Join(dir, fmt.Sprint(i, ".safetensors")), filepath.Join(dir, fmt.Sprint(i, ".gmz"))
		must(t, stt.WriteFile(plain, []stt.Tensor{tensor("w0", dts[0], byte(i)), tensor("w1", dts[1], byte(i+2))}, nil))
		if _, err := checkpoint.Compress(ctx, plain, gz, checkpoint.CompressOptions{FrameSize: 1 << 20}); err != nil {
			t.Fatal(err)
		}
		s, err := checkpoint.Open(gz)
		must(t, err)
		defer s.Close()
		inputs = append(inputs, s)
	}
	plan, err := BuildPlan(inputs, nil, PlanOptions{FloatOnly: true})
	must(t, err)
	kernel := Kernel{Merge: func(dst []float32, in, _ [][]float32, _ Chunk) { copy(dst, in[0]) }}
	kernels := []Kernel{kernel, kernel}
	x := newExecution(ctx, plan, discardSink{}, kernels, nil, ExecOptions{Threads: 1, HoldBytes: -1}) // one scratch runs both
	if got, want := x.spanBytes(), int64(2*4*n); got != want {
		t.Errorf("span buffers of %d bytes, want %d (each slot's largest)", got, want)
	}
	x.runCPU()
	must(t, x.g.Wait())
	for len(x.free) > 0 {
		s := <-x.free
		var held int64
		for _, b := range s.spans {
			held += int64(cap(b))
		}
		if held > x.spanBytes() {
			t.Errorf("a scratch holds %d bytes of span buffers, over the %d budgeted", held, x.spanBytes())
		}
	}
}
