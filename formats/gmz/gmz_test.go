package gmz

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
)

func TestCRCCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range [][2]int{{0, 0}, {1, 0}, {0, 5}, {3, 7}, {1000, 1}, {4096, 65537}, {1 << 20, 12345}} {
		a := make([]byte, n[0])
		b := make([]byte, n[1])
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		want := crc32.Checksum(append(append([]byte{}, a...), b...), castagnoli)
		if got := crcCombine(checksum(a), checksum(b), int64(len(b))); got != want {
			t.Errorf("combine %v: %08x, want %08x", n, got, want)
		}
	}
}

func TestPlanes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, k := range []int{1, 2, 4, 8} {
		for _, n := range []int{0, 1, 7, 8, 9, 63, 1000} {
			src := make([]byte, n*k)
			for i := range src {
				src[i] = byte(rng.Uint32())
			}
			planes := make([]byte, len(src))
			splitPlanes(planes, src, k)
			for i := range n {
				for j := range k {
					if planes[j*n+i] != src[i*k+j] {
						t.Fatalf("k=%d n=%d: plane %d element %d is %d, want %d", k, n, j, i, planes[j*n+i], src[i*k+j])
					}
				}
			}
			back := make([]byte, len(src))
			var cols [][]byte
			for j := range k {
				cols = append(cols, planes[j*n:(j+1)*n])
			}
			mergePlanes(back, cols)
			if !bytes.Equal(back, src) {
				t.Fatalf("k=%d n=%d: merge(split(x)) != x", k, n)
			}
		}
	}
}

// fill returns n elements of dt: normal weights for floats (whose high bytes are
// skewed, as in trained models), random bits otherwise, or zeros.
func fill(rng *rand.Rand, dt dtype.DType, n int, kind string) []byte {
	b := make([]byte, n*dt.Size())
	switch {
	case kind == "zeros":
	case kind == "normal" && dt.IsFloat():
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(0.02 * rng.NormFloat64())
		}
		if dt == dtype.F64 {
			for i, x := range v {
				binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(float64(x)))
			}
		} else if err := dtype.Encode(b, v, dt); err != nil {
			panic(err)
		}
	case kind == "normal": // small integers: compressible by zstd
		for i := range b {
			b[i] = byte(rng.IntN(5))
		}
	default:
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	return b
}

var allTypes = []dtype.DType{dtype.F32, dtype.F16, dtype.BF16, dtype.F64, dtype.I8, dtype.I16, dtype.I32, dtype.I64,
	dtype.U8, dtype.U16, dtype.U32, dtype.U64, dtype.Bool}

// testInputs builds tensors of every dtype in odd and empty shapes; with ref, each
// tensor also gets a nearby reference (a few bits flipped in most elements).
func testInputs(seed uint64, withRef bool) []Input {
	return inputs(seed, withRef, []int64{300, 301})
}

// inputs is testInputs with the last shape given: a large one has planes of more
// than one 128 KiB block.
func inputs(seed uint64, withRef bool, last []int64) []Input {
	rng := rand.New(rand.NewPCG(seed, 5))
	shapes := [][]int64{{}, {0}, {3, 0, 2}, {1}, {7}, {13, 17}, {3, 5, 7}, last}
	var ins []Input
	for _, dt := range allTypes {
		for si, shape := range shapes {
			n := int64(1)
			for _, d := range shape {
				n *= d
			}
			kind := []string{"normal", "random", "zeros"}[si%3]
			if si == len(shapes)-1 {
				kind = "normal"
			}
			in := Input{Name: dt.String() + "/" + string(rune('a'+si)), DType: dt, Shape: shape, Data: fill(rng, dt, int(n), kind)}
			if dt == dtype.Bool {
				for i := range in.Data {
					in.Data[i] &= 1
				}
			}
			if withRef && si%4 != 1 {
				in.Ref = append([]byte(nil), in.Data...)
				for i := range in.Ref {
					if rng.IntN(3) == 0 {
						in.Ref[i] ^= byte(1 << rng.IntN(8))
					}
				}
			}
			ins = append(ins, in)
		}
	}
	return ins
}

// fakeSource builds a fake source header and the source file it implies.
func fakeSource(ins []Input) (Source, []byte) {
	hdr := []byte("\x10\x00\x00\x00\x00\x00\x00\x00{\"fake\":\"head\"}")
	file := append([]byte(nil), hdr...)
	for _, in := range ins {
		file = append(file, in.Data...)
	}
	return Source{Format: "safetensors", Header: hdr}, file
}

func writeGMZ(t testing.TB, ins []Input, opts Options) ([]byte, Stats) {
	t.Helper()
	src, _ := fakeSource(ins)
	var buf bytes.Buffer
	st, err := Write(context.Background(), &buf, src, map[string]string{"format": "pt"}, ins, opts)
	if err != nil {
		t.Fatal(err)
	}
	if st.FileBytes != int64(buf.Len()) {
		t.Fatalf("Stats.FileBytes %d, wrote %d", st.FileBytes, buf.Len())
	}
	return buf.Bytes(), st
}

func refFunc(ins []Input) RefFunc {
	return WholeRef(func(name string) ([]byte, error) {
		for _, in := range ins {
			if in.Name == name {
				return in.Ref, nil
			}
		}
		return nil, errors.New("no such reference tensor")
	})
}

func TestRoundTrip(t *testing.T) {
	for _, delta := range []bool{false, true} {
		for _, frame := range []int{8, 4096, DefaultFrameSize} {
			last := []int64{3, 50001} // planes of several huff0 blocks
			switch frame {
			case 8: // one element per F64 frame: keep it small
				last = []int64{5, 7}
			case 4096:
				last = []int64{30, 31}
			}
			ins := inputs(uint64(frame), delta, last)
			b, st := writeGMZ(t, ins, Options{FrameSize: frame, Workers: 3, Stats: true})
			f, err := NewFile(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatalf("delta=%v frame=%d: %v", delta, frame, err)
			}
			if f.Metadata["format"] != "pt" || f.FrameSize != int64(frame) {
				t.Errorf("metadata %v, frame size %d", f.Metadata, f.FrameSize)
			}
			if len(f.Tensors) != len(ins) {
				t.Fatalf("%d tensors, want %d", len(f.Tensors), len(ins))
			}
			for i, in := range ins {
				ti := &f.Tensors[i]
				if ti.Name != in.Name || ti.DType != in.DType || ti.Size != int64(len(in.Data)) || ti.Delta != (in.Ref != nil) {
					t.Fatalf("tensor %d: %+v, want %s %s %d bytes delta=%v", i, ti, in.Name, in.DType, len(in.Data), in.Ref != nil)
				}
				if ti.Checksum != checksum(in.Data) {
					t.Errorf("%s: checksum %08x, want CRC-32C of the bytes %08x", in.Name, ti.Checksum, checksum(in.Data))
				}
				got := make([]byte, len(in.Data))
				if err := f.ReadTensor(context.Background(), ti, got, in.Ref, 2); err != nil {
					t.Fatalf("%s: %v", in.Name, err)
				}
				if !bytes.Equal(got, in.Data) {
					t.Fatalf("delta=%v frame=%d: %s differs after the round trip", delta, frame, in.Name)
				}
			}
			_, want := fakeSource(ins)
			out := &memWriterAt{}
			if err := f.WriteSource(context.Background(), out, refFunc(ins), 3); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.b, want) || f.Source.Size != int64(len(want)) {
				t.Fatalf("delta=%v frame=%d: WriteSource differs from the source (%d vs %d bytes)", delta, frame, len(out.b), len(want))
			}
			if st.RawBytes != f.Source.Size-int64(len(f.Source.Header)) || st.StoredBytes > st.RawBytes {
				t.Errorf("stats %+v", st)
			}
		}
	}
}

// TestCodings checks that each coding is chosen where it should be, so the round
// trips above exercise all of them.
func TestCodings(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	ins := []Input{
		{Name: "bf16", DType: dtype.BF16, Shape: []int64{1 << 16}, Data: fill(rng, dtype.BF16, 1<<16, "normal")},
		{Name: "i32", DType: dtype.I32, Shape: []int64{1 << 14}, Data: fill(rng, dtype.I32, 1<<14, "normal")},
		{Name: "noise", DType: dtype.U8, Shape: []int64{1 << 14}, Data: fill(rng, dtype.U8, 1<<14, "random")},
		{Name: "zero", DType: dtype.F32, Shape: []int64{1 << 14}, Data: make([]byte, 1<<16)},
	}
	b, st := writeGMZ(t, ins, Options{Stats: true})
	f, err := NewFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"bf16": codingPlanesMH, "i32": codingZstd, "noise": codingRaw, "zero": codingPlanes}
	for _, tn := range f.Tensors {
		if c := tn.Frames[0].Coding; c != want[tn.Name] {
			t.Errorf("%s: coding %d, want %d", tn.Name, c, want[tn.Name])
		}
	}
	// Normal BF16 weights: the high byte carries ~2.7 bits, so the planes must save
	// at least a quarter; the zeros almost everything.
	bf, _ := f.Tensor("bf16")
	if r := float64(bf.Size) / float64(bf.Frames[0].Stored); r < 1.3 {
		t.Errorf("BF16 normal weights compress %.3fx, want ≥ 1.3x", r)
	}
	z, _ := f.Tensor("zero")
	if z.Frames[0].Stored > 64 {
		t.Errorf("zeros stored in %d bytes", z.Frames[0].Stored)
	}
	var bound float64
	for _, p := range st.Planes {
		if p.ElemSize == 2 {
			bound += float64(p.Bytes) * p.Bits / 8
		}
	}
	if r := float64(bf.Frames[0].Stored) / bound; r > 1.02 || r < 1 {
		t.Errorf("BF16 planes stored in %d bytes, %.4f× their order-0 bound %.0f", bf.Frames[0].Stored, r, bound)
	}
}

type memWriterAt struct {
	mu sync.Mutex
	b  []byte
}

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
}

// failingWriterAt fails every write after the first ok ones.
type failingWriterAt struct {
	mu sync.Mutex
	ok int
}

var errDiskFull = errors.New("disk full")

func (w *failingWriterAt) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ok == 0 {
		return 0, errDiskFull
	}
	w.ok--
	return len(p), nil
}

// TestWriteSourceStops checks that WriteSource's workers stop at the first failed
// write or a cancelled context, and return that error rather than hang or go on.
func TestWriteSourceStops(t *testing.T) {
	ins := testInputs(3, false)
	b, _ := writeGMZ(t, ins, Options{FrameSize: 64})
	f, err := NewFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range []int{0, 1, 5} {
		for _, workers := range []int{0, 1, 2, 4} { // 0: the default, twice GOMAXPROCS
			if err := f.WriteSource(context.Background(), &failingWriterAt{ok: ok}, nil, workers); !errors.Is(err, errDiskFull) {
				t.Errorf("ok=%d workers=%d: %v, want the write error", ok, workers, err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.WriteSource(ctx, &memWriterAt{}, nil, 2); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
}

func TestWrongReference(t *testing.T) {
	ins := inputs(7, true, []int64{30, 31})
	b, _ := writeGMZ(t, ins, Options{FrameSize: 64})
	f, err := NewFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var delta *Tensor
	for i := range f.Tensors {
		if f.Tensors[i].Delta && f.Tensors[i].Size > 100 {
			delta = &f.Tensors[i]
			break
		}
	}
	in := ins[slicesIndex(ins, delta.Name)]
	wrong := append([]byte(nil), in.Ref...)
	wrong[len(wrong)/2] ^= 1
	dst := make([]byte, delta.Size)
	var re *ReferenceError
	if err := f.ReadTensor(context.Background(), delta, dst, wrong, 2); !errors.As(err, &re) || re.Tensor != delta.Name || !errors.Is(err, ErrReference) {
		t.Errorf("wrong reference: %v, want a ReferenceError naming %q", err, delta.Name)
	}
	if err := f.ReadTensor(context.Background(), delta, dst, nil, 2); !errors.Is(err, ErrReference) {
		t.Errorf("missing reference: %v", err)
	}
	if err := f.WriteSource(context.Background(), &memWriterAt{}, nil, 2); !errors.Is(err, ErrReference) {
		t.Errorf("WriteSource without a reference: %v", err)
	}
	// Frame by frame the reference cannot be checked as a whole; the frame's
	// checksum catches it.
	fi := int(int64(len(wrong)/2) / f.FrameSize)
	fr := delta.Frames[fi]
	if err := f.ReadFrame(delta, fi, dst[:fr.Raw], wrong[fr.RawOff:fr.RawOff+fr.Raw]); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), delta.Name) {
		t.Errorf("frame against a wrong reference: %v", err)
	}
}

func slicesIndex(ins []Input, name string) int {
	for i := range ins {
		if ins[i].Name == name {
			return i
		}
	}
	return -1
}

// rewriteHeader replaces a file's header by edit(header), with a valid checksum, so
// that the checks behind the checksum are reached.
func rewriteHeader(t *testing.T, b []byte, edit func(h map[string]any)) []byte {
	t.Helper()
	n := int(binary.LittleEndian.Uint64(b[len(b)-trailerSize:]))
	hOff := len(b) - trailerSize - n
	var h map[string]any
	dec := json.NewDecoder(bytes.NewReader(b[hOff : hOff+n]))
	dec.UseNumber()
	if err := dec.Decode(&h); err != nil {
		t.Fatal(err)
	}
	edit(h)
	hdr, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out := append(append([]byte(nil), b[:hOff]...), hdr...)
	var tr [trailerSize]byte
	binary.LittleEndian.PutUint64(tr[:], uint64(len(hdr)))
	binary.LittleEndian.PutUint32(tr[8:], checksum(hdr))
	copy(tr[12:], magic[:])
	return append(out, tr[:]...)
}

func tensorsOf(h map[string]any) []any { return h["tensors"].([]any) }

func firstFrames(h map[string]any, name string) []any {
	for _, t := range tensorsOf(h) {
		tm := t.(map[string]any)
		if tm["name"] == name {
			return tm["frames"].([]any)
		}
	}
	panic(name)
}

func TestMalformed(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	ins := []Input{
		{Name: "w", DType: dtype.BF16, Shape: []int64{4096}, Data: fill(rng, dtype.BF16, 4096, "normal")},
		{Name: "ids", DType: dtype.I64, Shape: []int64{512}, Data: fill(rng, dtype.I64, 512, "normal")},
	}
	good, _ := writeGMZ(t, ins, Options{FrameSize: 2048})
	f, err := NewFile(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	w, _ := f.Tensor("w")
	frameByte := int(w.Frames[1].Off + w.Frames[1].Stored/2)

	flip := func(off int) []byte {
		b := append([]byte(nil), good...)
		b[off] ^= 0x40
		return b
	}
	hdrEdit := func(edit func(h map[string]any)) []byte { return rewriteHeader(t, good, edit) }
	setTensor := func(field string, v any) []byte {
		return hdrEdit(func(h map[string]any) { tensorsOf(h)[0].(map[string]any)[field] = v })
	}
	setFrame := func(name string, i, field int, v any) []byte {
		return hdrEdit(func(h map[string]any) { firstFrames(h, name)[i].([]any)[field] = v })
	}

	cases := []struct {
		name   string
		file   []byte
		open   string // substring of NewFile's error, or "" if it opens
		decode string // substring of the decode error (tensor named)
	}{
		{"empty", nil, "shorter than", ""},
		{"bad magic", flip(1), "bad magic", ""},
		{"version", func() []byte { b := append([]byte(nil), good...); b[8] = 9; return b }(), "version 9", ""},
		{"truncated", good[:len(good)-100], "trailing magic", ""},
		{"truncated frames", append(append([]byte(nil), good[:100]...), good[len(good)-trailerSize-1000:]...), "", ""},
		{"header checksum", flip(len(good) - trailerSize - 10), "header checksum", ""},
		{"header too long", func() []byte {
			b := append([]byte(nil), good...)
			binary.LittleEndian.PutUint64(b[len(b)-trailerSize:], 1<<40)
			return b
		}(), "exceeds the limit", ""},
		{"frame bytes", flip(frameByte), "", `tensor "w": frame 1`},
		{"unknown field", hdrEdit(func(h map[string]any) { h["extra"] = 1 }), "unknown field", ""},
		{"size lies", setTensor("size", 4000), "needs 8192 bytes", ""},
		{"shape lies", setTensor("shape", []any{4097}), "needs 8194 bytes", ""},
		{"negative dim", setTensor("shape", []any{-1, -4096}), "negative dimension", ""},
		{"huge shape", setTensor("shape", []any{1 << 40, 1 << 40}), "more than", ""},
		{"bad dtype", setTensor("dtype", "F8_E4M3"), "bad dtype", ""},
		{"dup name", setTensor("name", "ids"), "twice", ""},
		{"tensor checksum", setTensor("crc32c", 12345), "is not that of its frames", ""},
		{"frame checksum", setFrame("w", 0, 2, 999), "is not that of its frames", ""},
		{"stored lies", setFrame("w", 0, 0, 100), "", ""},
		{"stored huge", setFrame("w", 0, 0, 1<<40), "stored size", ""},
		{"raw lies", setFrame("w", 0, 1, 1024), "raw size", ""},
		{"unknown coding", setFrame("w", 0, 3, 7), "unknown coding", ""},
		{"planes for ints", setFrame("ids", 0, 3, codingPlanes), "byte planes for I64", ""},
		{"frame count", hdrEdit(func(h map[string]any) {
			m := tensorsOf(h)[0].(map[string]any)
			m["frames"] = m["frames"].([]any)[:2]
		}), "frames for 8192 bytes", ""},
		{"frame size", hdrEdit(func(h map[string]any) { h["frame_size"] = 1 << 30 }), "frame size", ""},
		{"source size", hdrEdit(func(h map[string]any) { h["source"].(map[string]any)["size"] = 5 }), "source size", ""},
		{"coding mislabelled", setFrame("ids", 0, 3, codingRaw), "raw frame stores", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := NewFile(bytes.NewReader(c.file), int64(len(c.file)))
			if c.open != "" || (err != nil && c.decode == "") {
				if err == nil || !errors.Is(err, ErrFormat) || (c.open != "" && !strings.Contains(err.Error(), c.open)) {
					t.Fatalf("NewFile: %v, want ErrFormat with %q", err, c.open)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewFile: %v", err)
			}
			err = f.WriteSource(context.Background(), &memWriterAt{}, nil, 2)
			if err == nil || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.decode) {
				t.Fatalf("decode: %v, want ErrFormat with %q", err, c.decode)
			}
		})
	}
}

func TestOpenFile(t *testing.T) {
	ins := testInputs(1, false)
	b, _ := writeGMZ(t, ins, Options{})
	dir := t.TempDir()
	p := filepath.Join(dir, "x.gmz")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Size() != int64(len(b)) || len(f.Tensors) != len(ins) {
		t.Fatalf("size %d, %d tensors", f.Size(), len(f.Tensors))
	}
	if _, err := Open(dir); !errors.Is(err, ErrFormat) {
		t.Errorf("Open(folder): %v, want ErrFormat", err)
	}
	if err := os.WriteFile(p, b[:len(b)-1], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Open(truncated): %v, want an error naming the file", err)
	}
}

func TestDeterministic(t *testing.T) {
	ins := inputs(5, true, []int64{3, 50001})
	a, _ := writeGMZ(t, ins, Options{FrameSize: 4096, Workers: 1})
	b, _ := writeGMZ(t, ins, Options{FrameSize: 4096, Workers: 7})
	if !bytes.Equal(a, b) {
		t.Fatal("output depends on the number of workers")
	}
}

func TestWriteCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ins := testInputs(5, false)
	src, _ := fakeSource(ins)
	if _, err := Write(ctx, &bytes.Buffer{}, src, nil, ins, Options{FrameSize: 8}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write after cancel: %v", err)
	}
}

// TestPlanes2 checks split2 and merge2 (assembly on amd64) against their pure-Go
// references at every length around the 16-element steps.
func TestPlanes2(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	for n := range 100 {
		src := make([]byte, 2*n)
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		lo, hi := make([]byte, n), make([]byte, n)
		loG, hiG := make([]byte, n), make([]byte, n)
		split2(lo, hi, src)
		split2Go(loG, hiG, src)
		if !bytes.Equal(lo, loG) || !bytes.Equal(hi, hiG) {
			t.Fatalf("n=%d: split2 differs from split2Go", n)
		}
		dst, dstG := make([]byte, 2*n), make([]byte, 2*n)
		merge2(dst, lo, hi)
		merge2Go(dstG, lo, hi)
		if !bytes.Equal(dst, dstG) || !bytes.Equal(dst, src) {
			t.Fatalf("n=%d: merge2 differs from merge2Go or the source", n)
		}
	}
}

// A source with bytes between tensors and after the last (a GGUF file's alignment
// padding), block-quantized tensors included, is written as version 2 and rebuilt
// byte for byte; one without is version 1, as before.
func TestGapsVersion2(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	q := Input{Name: "q8", DType: dtype.Q8_0, Shape: []int64{4, 64}, Data: fill(rng, dtype.U8, int(dtype.Q8_0.Bytes(256)), "random")}
	ins := append(testInputs(3, false)[:20], q)
	for i := range ins {
		ins[i].Gap = make([]byte, i%5*7) // 0 to 28 bytes
		for j := range ins[i].Gap {
			ins[i].Gap[j] = byte(i + j)
		}
	}
	hdr := []byte("GGUF-like header")
	src := Source{Format: "gguf", Header: hdr, Tail: []byte{0, 0, 7}}
	want := append([]byte(nil), hdr...)
	for _, in := range ins {
		want = append(append(want, in.Gap...), in.Data...)
	}
	want = append(want, src.Tail...)
	var buf bytes.Buffer
	if _, err := Write(context.Background(), &buf, src, nil, ins, Options{FrameSize: 64}); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if v := binary.LittleEndian.Uint32(b[8:]); v != versionGaps {
		t.Fatalf("version %d, want %d", v, versionGaps)
	}
	f, err := NewFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	out := &memWriterAt{}
	if err := f.WriteSource(context.Background(), out, nil, 2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.b, want) || f.Source.Size != int64(len(want)) {
		t.Fatalf("WriteSource differs from the source (%d vs %d bytes)", len(out.b), len(want))
	}
	for i, in := range ins {
		if got := f.Tensors[i].Offset; !bytes.Equal(want[got:got+int64(len(in.Data))], in.Data) {
			t.Fatalf("%s: Offset %d does not point at its bytes", in.Name, got)
		}
	}
	// Gaps that lie about the source's size, and gaps in a version 1 file.
	lie := rewriteHeader(t, b, func(h map[string]any) { tensorsOf(h)[1].(map[string]any)["gap"] = "AAAA" })
	if _, err := NewFile(bytes.NewReader(lie), int64(len(lie))); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "source size") {
		t.Errorf("a gap that changes the size: %v", err)
	}
	v1, _ := writeGMZ(t, testInputs(3, false), Options{})
	if v := binary.LittleEndian.Uint32(v1[8:]); v != version {
		t.Fatalf("a file without gaps: version %d, want %d", v, version)
	}
	gapped := rewriteHeader(t, v1, func(h map[string]any) { tensorsOf(h)[0].(map[string]any)["gap"] = "AAAA" })
	if _, err := NewFile(bytes.NewReader(gapped), int64(len(gapped))); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "version 1") {
		t.Errorf("gaps in a version 1 file: %v", err)
	}
}

// CheckReferences names the first delta tensor in file order whose reference is
// wrong, whatever the workers, and once it has passed WriteSource decodes the same
// bytes as without it.
func TestCheckReferences(t *testing.T) {
	ins := inputs(7, true, []int64{30, 31})
	b, _ := writeGMZ(t, ins, Options{FrameSize: 64})
	open := func() *File {
		f, err := NewFile(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	refs := map[string][]byte{}
	var deltas []string
	f := open()
	for _, tn := range f.Tensors {
		if tn.Delta && tn.Size > 0 {
			deltas = append(deltas, tn.Name)
		}
	}
	if len(deltas) < 3 {
		t.Fatalf("%d delta tensors with bytes: too few", len(deltas))
	}
	for _, in := range ins {
		refs[in.Name] = in.Ref
	}
	// The first wrong reference comes slowly, so that a later wrong one, checked
	// in parallel, fails first.
	refFunc := func(wrong ...string) RefFunc {
		return WholeRef(func(name string) ([]byte, error) {
			if len(wrong) > 1 && name == wrong[1] {
				time.Sleep(20 * time.Millisecond)
			}
			r := refs[name]
			if slices.Contains(wrong, name) {
				r = append([]byte(nil), r...)
				r[len(r)/2] ^= 1
			}
			return r, nil
		})
	}
	ctx := context.Background()
	for _, workers := range []int{0, 1, 2, 4} {
		for range 3 {
			var re *ReferenceError
			err := open().CheckReferences(ctx, refFunc(deltas[len(deltas)-1], deltas[1]), nil, workers)
			if !errors.As(err, &re) || re.Tensor != deltas[1] {
				t.Fatalf("workers=%d: %v, want the reference of %q, the first wrong one", workers, err, deltas[1])
			}
		}
	}
	missing := WholeRef(func(name string) ([]byte, error) {
		if name == deltas[0] {
			return nil, nil
		}
		return refs[name], nil
	})
	if err := open().CheckReferences(ctx, missing, nil, 2); !errors.Is(err, ErrReference) {
		t.Errorf("a missing reference: %v, want ErrReference", err)
	}
	var want, got memWriterAt
	if err := open().WriteSource(ctx, &want, refFunc(), 2); err != nil {
		t.Fatal(err)
	}
	f = open()
	if err := f.CheckReferences(ctx, refFunc(), nil, 2); err != nil {
		t.Fatalf("the right references: %v", err)
	}
	if err := f.WriteSource(ctx, &got, refFunc(), 2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.b, want.b) {
		t.Error("WriteSource after CheckReferences decodes other bytes")
	}
	// The reference is read once to check it and once to decode, a frame at a time
	// for the decoding; not checked again once CheckReferences has.
	var deltaBytes int64
	for _, tn := range f.Tensors {
		if tn.Delta {
			deltaBytes += tn.Size
		}
	}
	var read, largest atomic.Int64
	counted := func(name string, off int64, dst []byte) (bool, error) {
		read.Add(int64(len(dst)))
		for l := largest.Load(); int64(len(dst)) > l && !largest.CompareAndSwap(l, int64(len(dst))); l = largest.Load() {
		}
		return refFunc()(name, off, dst)
	}
	got = memWriterAt{}
	if err := open().WriteSource(ctx, &got, counted, 2); err != nil || !bytes.Equal(got.b, want.b) {
		t.Fatalf("WriteSource with a counted reference: %v", err)
	}
	if read.Load() != 2*deltaBytes {
		t.Errorf("WriteSource read %d bytes of the reference, want %d: once to check, once to decode", read.Load(), 2*deltaBytes)
	}
	f, got = open(), memWriterAt{}
	if err := f.CheckReferences(ctx, counted, nil, 2); err != nil {
		t.Fatal(err)
	}
	read.Store(0)
	largest.Store(0)
	if err := f.WriteSource(ctx, &got, counted, 2); err != nil || !bytes.Equal(got.b, want.b) {
		t.Fatalf("WriteSource after CheckReferences, counted: %v", err)
	}
	if read.Load() != deltaBytes || largest.Load() > f.FrameSize {
		t.Errorf("WriteSource after CheckReferences read %d bytes of the reference in pieces of up to %d, want %d in frames of %d", read.Load(), largest.Load(), deltaBytes, f.FrameSize)
	}
	// Checksums the reference knows are compared without reading it; a wrong one is
	// a wrong reference.
	sums := map[string]uint32{}
	for _, in := range ins {
		if in.Ref != nil {
			sums[in.Name] = checksum(in.Ref)
		}
	}
	known := func(name string) (uint32, bool) {
		c, ok := sums[name]
		return c, ok
	}
	read.Store(0)
	if err := open().CheckReferences(ctx, counted, known, 2); err != nil || read.Load() != 0 {
		t.Errorf("known checksums: %v, %d bytes of the reference read, want none", err, read.Load())
	}
	wrongSum := func(name string) (uint32, bool) {
		c, ok := known(name)
		if name == deltas[0] {
			c ^= 1
		}
		return c, ok
	}
	var re *ReferenceError
	if err := open().CheckReferences(ctx, counted, wrongSum, 2); !errors.As(err, &re) || re.Tensor != deltas[0] {
		t.Errorf("a wrong known checksum: %v, want a ReferenceError naming %q", err, deltas[0])
	}
}
