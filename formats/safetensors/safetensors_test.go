package safetensors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	lib "github.com/nlpodyssey/safetensors"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/internal/atomicout"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mixedTensors() []stt.Tensor {
	ts := stt.Random(stt.TinyLlama, dtype.BF16, 1)[:5]
	ts = append(ts,
		stt.FromFloat32("f32", dtype.F32, []int64{3, 1}, []float32{1, -2, 3.5}),
		stt.FromFloat32("f16", dtype.F16, []int64{2}, []float32{0.5, 65504}),
		stt.FromFloat32("f64", dtype.F64, []int64{1}, []float32{1e-3}),
		stt.Tensor{Name: "ids", DType: dtype.I64, Shape: []int64{2}, Data: []byte{1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}},
		stt.Tensor{Name: "mask", DType: dtype.Bool, Shape: []int64{3}, Data: []byte{1, 0, 1}},
		stt.Tensor{Name: "empty", DType: dtype.F32, Shape: []int64{0, 4}, Data: nil},
	)
	return ts
}

// TestReadsLibraryFiles: what the independent library writes, Open reads back exactly.
func TestReadsLibraryFiles(t *testing.T) {
	ts := mixedTensors()
	path := filepath.Join(t.TempDir(), "x.safetensors")
	must(t, stt.WriteFile(path, ts, map[string]string{"format": "pt", "k": "v"}))
	f, err := Open(path)
	must(t, err)
	defer f.Close()
	if !f.Mapped() {
		t.Error("Open did not map the file")
	}
	if f.Metadata["k"] != "v" || len(f.Tensors) != len(ts) {
		t.Fatalf("metadata %v, %d tensors", f.Metadata, len(f.Tensors))
	}
	for _, want := range ts {
		got, ok := f.Tensor(want.Name)
		if !ok {
			t.Fatalf("tensor %s missing", want.Name)
		}
		if got.DType != want.DType || !slices.Equal(got.Shape, want.Shape) {
			t.Errorf("%s: %s %v, want %s %v", want.Name, got.DType, got.Shape, want.DType, want.Shape)
		}
		b, err := f.Bytes(got)
		must(t, err)
		if !bytes.Equal(b, want.Data) {
			t.Errorf("%s: bytes differ", want.Name)
		}
	}
	// The same through NewFile (ReadAt, not mapped).
	data, _ := os.ReadFile(path)
	g, err := NewFile(bytes.NewReader(data), int64(len(data)))
	must(t, err)
	ti, _ := g.Tensor("f32")
	b, err := g.Bytes(ti)
	must(t, err)
	if !bytes.Equal(b, ts[5].Data) {
		t.Error("NewFile: bytes differ")
	}
}

// TestWriterOutputAcceptedByLibrary: files gomerge writes parse with the independent
// library, with the same tensors, and keep the caller's order and metadata.
func TestWriterOutputAcceptedByLibrary(t *testing.T) {
	ts := mixedTensors()
	var specs []Spec
	for _, x := range ts {
		specs = append(specs, Spec{Name: x.Name, DType: x.DType, Shape: x.Shape})
	}
	specsBefore := slices.Clone(specs)
	path := filepath.Join(t.TempDir(), "out.safetensors")
	d, err := lockOut(context.Background(), path, nil)
	must(t, err)
	o, err := Create(d, OutputOptions{Specs: specs, Metadata: map[string]string{"format": "pt", "quote\"key": "a\nb"}})
	must(t, err)
	for i, x := range ts {
		must(t, o.WriteAt(i, 0, x.Data))
	}
	if err := o.WriteAt(0, o.Size(0), []byte{1}); err == nil {
		t.Error("WriteAt past the tensor's end accepted")
	}
	must(t, o.Commit())
	d.Unlock()
	if !slices.EqualFunc(specs, specsBefore, func(a, b Spec) bool { return a.Name == b.Name }) {
		t.Error("Create reordered the caller's specs")
	}
	data, err := os.ReadFile(path)
	must(t, err)
	n := int(data[0]) | int(data[1])<<8
	if n%8 != 0 || !bytes.HasPrefix(data[8:], []byte(`{"__metadata__":`)) {
		t.Errorf("header length %d not padded to 8, or metadata not first", n)
	}
	parsed, err := lib.Deserialize(data)
	must(t, err)
	for _, x := range ts {
		v, ok := parsed.Tensor(x.Name)
		if !ok || !bytes.Equal(v.Data(), x.Data) {
			t.Errorf("library reads %s wrong", x.Name)
		}
	}
	f, err := Open(path)
	must(t, err)
	defer f.Close()
	if !slices.Equal(f.Names(), func() []string {
		var n []string
		for _, s := range specs {
			n = append(n, s.Name)
		}
		return n
	}()) {
		t.Errorf("file order %v is not the caller's", f.Names())
	}
	if f.Metadata["quote\"key"] != "a\nb" {
		t.Errorf("metadata escaping: %q", f.Metadata)
	}
}

func TestMalformedHeaders(t *testing.T) {
	four := []byte{0, 0, 128, 63}
	cases := []struct {
		name, header string
		data         []byte
		want         string
	}{
		{"not json", `{"a": nope}`, four, "entry is not"},
		{"not json key", `{1: 2}`, four, "not valid JSON"},
		{"array", `[1,2]   `, nil, "not a JSON object"},
		{"duplicate", `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, four, "appears twice"},
		{"f8", `{"a":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}`, four, "unsupported dtype F8_E4M3"},
		{"unknown dtype", `{"a":{"dtype":"Q4","shape":[4],"data_offsets":[0,4]}}`, four, "unknown dtype"},
		{"negative dim", `{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, four, "not a non-negative integer"},
		{"size mismatch", `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, four, "needs 8 bytes"},
		{"overlap", `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, make([]byte, 6), "overlaps"},
		{"hole", `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[1],"data_offsets":[6,7]}}`, make([]byte, 7), "hole of 2 bytes"},
		{"not from zero", `{"a":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}}`, four, "not 0"},
		{"trailing data", `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, four, "3 unused bytes"},
		{"truncated", `{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, four, "truncated"},
		{"metadata not strings", `{"__metadata__":{"a":1}}`, nil, "__metadata__"},
		{"rank", `{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}`, []byte{0}, "rank 17"},
		{"overflow", `{"a":{"dtype":"F64","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}`, make([]byte, 8), "more than"},
		{"offsets", `{"a":{"dtype":"U8","shape":[1],"data_offsets":[1]}}`, []byte{0}, "data_offsets must be"},
		{"trailing json", `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}} x`, []byte{0}, "trailing bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := stt.Raw(tc.header, tc.data)
			_, err := NewFile(bytes.NewReader(b), int64(len(b)))
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrFormat containing %q", err, tc.want)
			}
		})
	}
	scalar := stt.Raw(`{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, four)
	if f, err := NewFile(bytes.NewReader(scalar), int64(len(scalar))); err != nil || f.Tensors[0].NumElements() != 1 {
		t.Errorf("scalar tensor: %v", err)
	}
	for _, b := range [][]byte{{1, 2, 3}, {255, 255, 255, 255, 255, 255, 255, 255, '{', '}'}, {200, 0, 0, 0, 0, 0, 0, 0, '{'}} {
		if _, err := NewFile(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrFormat) {
			t.Errorf("%v: got %v", b, err)
		}
	}
}

func TestShardedCheckpoint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt")
	ts := stt.Random(stt.TinyLlama, dtype.BF16, 2)
	must(t, stt.WriteFolder(dir, ts, 4, nil))
	c, err := OpenCheckpoint(dir)
	must(t, err)
	defer c.Close()
	if len(c.Shards) != 4 || len(c.Tensors()) != len(ts) {
		t.Fatalf("%d shards, %d tensors", len(c.Shards), len(c.Tensors()))
	}
	for _, x := range ts {
		got, ok := c.Tensor(x.Name)
		if !ok {
			t.Fatalf("%s missing", x.Name)
		}
		b, _ := c.Bytes(got)
		if !bytes.Equal(b, x.Data) {
			t.Errorf("%s differs", x.Name)
		}
	}
}

func TestSplitShards(t *testing.T) {
	specs := []Spec{{"a", dtype.F32, []int64{10}}, {"b", dtype.F32, []int64{10}}, {"c", dtype.F32, []int64{30}}, {"d", dtype.F32, []int64{1}}}
	got := SplitShards(specs, 80)
	var names [][]string
	for _, g := range got {
		var n []string
		for _, s := range g {
			n = append(n, s.Name)
		}
		names = append(names, n)
	}
	want := [][]string{{"a", "b"}, {"c"}, {"d"}}
	if !slices.EqualFunc(names, want, slices.Equal) {
		t.Errorf("got %v, want %v", names, want)
	}
	if ShardName(0, 3) != "model-00001-of-00003.safetensors" {
		t.Error(ShardName(0, 3))
	}
}

func writeFolderOutput(t *testing.T, d *atomicout.Dest, ts []stt.Tensor, opts OutputOptions) {
	t.Helper()
	for _, x := range ts {
		opts.Specs = append(opts.Specs, Spec{Name: x.Name, DType: x.DType, Shape: x.Shape})
	}
	o, err := Create(d, opts)
	must(t, err)
	for i, x := range ts {
		must(t, o.WriteAt(i, 0, x.Data))
	}
	must(t, o.Commit())
}

// TestFolderReplaceFallback: with the exchange disabled, replacing a folder takes the
// two-rename path and ends with the new folder and nothing left behind.
func TestFolderReplaceFallback(t *testing.T) {
	parent := t.TempDir()
	dest := filepath.Join(parent, "ckpt")
	old := stt.Random(stt.TinyLlama, dtype.BF16, 3)
	must(t, stt.WriteFolder(dest, old, 2, nil))
	for _, noExchange := range []bool{true, false} {
		d, err := lockOut(context.Background(), dest, nil)
		must(t, err)
		d.NoExchange = noExchange
		ts := stt.Perturb(old, 1, 4)
		writeFolderOutput(t, d, ts, OutputOptions{ShardSize: 30_000, ExtraFrom: dest, Link: true})
		d.Unlock()
		c, err := OpenCheckpoint(dest)
		must(t, err)
		got, _ := c.Tensor(ts[0].Name)
		b, _ := c.Bytes(got)
		if !bytes.Equal(b, ts[0].Data) {
			t.Errorf("noExchange=%v: folder not replaced", noExchange)
		}
		c.Close()
		if _, err := os.Stat(filepath.Join(dest, "config.json")); err != nil {
			t.Errorf("noExchange=%v: config.json lost: %v", noExchange, err)
		}
		entries, _ := os.ReadDir(parent)
		if len(entries) != 1 {
			t.Errorf("noExchange=%v: parent holds %v", noExchange, entries)
		}
	}
}

// TestRecoverInterruptedSwitch: the states a crash can leave the fallback switch in are
// repaired by the next Lock.
func TestRecoverInterruptedSwitch(t *testing.T) {
	parent := t.TempDir()
	dest := filepath.Join(parent, "ckpt")
	ts := stt.Random(stt.TinyLlama, dtype.BF16, 5)
	// Crash between the two renames: only .ckpt.gomerge-old and a complete temp exist.
	must(t, stt.WriteFolder(filepath.Join(parent, ".ckpt.gomerge-old"), ts, 2, nil))
	must(t, stt.WriteFolder(filepath.Join(parent, ".ckpt.gomerge-tmp-123"), stt.Perturb(ts, 1, 6), 2, nil))
	must(t, os.WriteFile(filepath.Join(parent, ".ckpt.gomerge-tmp-456"), []byte("partial"), 0o644))
	d, err := lockOut(context.Background(), dest, nil)
	must(t, err)
	d.Unlock()
	c, err := OpenCheckpoint(dest)
	must(t, err)
	got, _ := c.Tensor(ts[0].Name)
	b, _ := c.Bytes(got)
	if !bytes.Equal(b, ts[0].Data) {
		t.Error("old checkpoint not restored")
	}
	c.Close()
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 || entries[0].Name() != "ckpt" {
		t.Errorf("after recovery the folder holds %v", entries)
	}
	// Crash after the second rename: both ckpt and .ckpt.gomerge-old exist; the old goes.
	must(t, stt.WriteFolder(filepath.Join(parent, ".ckpt.gomerge-old"), ts, 2, nil))
	d, err = lockOut(context.Background(), dest, nil)
	must(t, err)
	d.Unlock()
	if _, err := os.Stat(filepath.Join(parent, ".ckpt.gomerge-old")); !os.IsNotExist(err) {
		t.Error("stale old folder not removed")
	}
}

// TestLockExcludes: a second writer of the same destination waits for the first.
func TestLockExcludes(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "m.safetensors")
	first, err := lockOut(context.Background(), dest, nil)
	must(t, err)
	waited := make(chan struct{})
	acquired := make(chan *atomicout.Dest)
	go func() {
		d, err := lockOut(context.Background(), dest, func() { close(waited) })
		if err != nil {
			t.Error(err)
		}
		acquired <- d
	}()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("second Lock neither waited nor reported waiting")
	}
	select {
	case <-acquired:
		t.Fatal("second Lock acquired while the first held it")
	case <-time.After(50 * time.Millisecond):
	}
	first.Unlock()
	select {
	case d := <-acquired:
		d.Unlock()
	case <-time.After(5 * time.Second):
		t.Fatal("second Lock never acquired")
	}
}

// TestRefuseToReplaceNonCheckpoint: --out naming a folder of other things is refused.
func TestRefuseToReplaceNonCheckpoint(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "home")
	must(t, os.MkdirAll(dest, 0o755))
	must(t, os.WriteFile(filepath.Join(dest, "thesis.tex"), []byte("precious"), 0o644))
	d, err := lockOut(context.Background(), dest, nil)
	must(t, err)
	defer d.Unlock()
	_, err = Create(d, OutputOptions{Specs: []Spec{{"a", dtype.F32, []int64{1}}}})
	if err == nil {
		t.Fatal("replaced a folder that holds no checkpoint")
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "thesis.tex")); string(b) != "precious" {
		t.Error("folder contents damaged")
	}
}

func FuzzOpen(f *testing.F) {
	for _, ts := range [][]stt.Tensor{mixedTensors(), stt.Random(stt.TinyLlama, dtype.F16, 1)[:3]} {
		b, err := stt.Encode(ts, map[string]string{"format": "pt"})
		if err != nil {
			f.Fatal(err)
		}
		// The seeds must reach the differential check: both readers accept them.
		file, err := NewFile(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			f.Fatal(err)
		}
		parsed, err := lib.Deserialize(b)
		if err != nil {
			f.Fatalf("the library refuses a seed: %v", err)
		}
		if err := diffLibrary(file, b, parsed); err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(stt.Raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add(stt.Raw(`{"a":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := NewFile(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error does not wrap ErrFormat: %v", err)
			}
			return
		}
		var total int64
		for _, name := range file.Names() {
			ti, ok := file.Tensor(name)
			if !ok {
				t.Fatalf("listed tensor %q not found", name)
			}
			data, err := file.Bytes(ti)
			if err != nil || int64(len(data)) != ti.Size() || ti.NumElements()*int64(ti.DType.Size()) != ti.Size() {
				t.Fatalf("tensor %q: %d bytes, err %v", name, len(data), err)
			}
			if sec := file.Section(ti); sec.Size() != ti.Size() {
				t.Fatalf("section size")
			}
			total += ti.Size()
		}
		if total != file.Size()-8-file.HeaderSize() {
			t.Fatalf("tensors cover %d of %d data bytes", total, file.Size()-8-file.HeaderSize())
		}
		// Where the independent library also accepts the file, it must agree on
		// everything: the tensors, each one's dtype, shape, offsets and bytes, and
		// the __metadata__.
		if parsed, err := lib.Deserialize(b); err == nil {
			if err := diffLibrary(file, b, parsed); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// diffLibrary says how file (our reading of b) and parsed (the independent library's)
// differ: in the tensors, a tensor's dtype, shape, data offsets or bytes, or the
// metadata; nil if they agree.
func diffLibrary(file *File, b []byte, parsed lib.SafeTensors) error {
	_, meta, err := lib.ReadMetadata(b)
	if err != nil {
		return fmt.Errorf("the library deserializes the file but cannot read its header: %v", err)
	}
	if !maps.Equal(file.Metadata, meta.Metadata()) {
		return fmt.Errorf("metadata %v, the library's %v", file.Metadata, meta.Metadata())
	}
	infos := meta.Tensors()
	views := parsed.Tensors()
	if len(views) != len(file.Tensors) || len(infos) != len(file.Tensors) {
		return fmt.Errorf("%d tensors, the library's %d (%d infos)", len(file.Tensors), len(views), len(infos))
	}
	dataStart := 8 + file.HeaderSize()
	for _, v := range views {
		ti, ok := file.Tensor(v.Name)
		if !ok {
			return fmt.Errorf("the library sees tensor %q that we do not", v.Name)
		}
		if got, want := ti.DType.String(), v.TensorView.DType().String(); got != want {
			return fmt.Errorf("tensor %q: dtype %s, the library's %s", v.Name, got, want)
		}
		shape := make([]int64, len(v.TensorView.Shape()))
		for i, d := range v.TensorView.Shape() {
			if d > math.MaxInt64 {
				return fmt.Errorf("tensor %q: shape %v, the library's dimension %d does not fit int64", v.Name, ti.Shape, d)
			}
			shape[i] = int64(d)
		}
		if !slices.Equal(ti.Shape, shape) {
			return fmt.Errorf("tensor %q: shape %v, the library's %v", v.Name, ti.Shape, shape)
		}
		info, ok := infos[v.Name]
		if !ok {
			return fmt.Errorf("tensor %q: the library lists it without its info", v.Name)
		}
		if begin, end := ti.Begin-dataStart, ti.End-dataStart; begin < 0 || uint64(begin) != info.DataOffsets[0] || uint64(end) != info.DataOffsets[1] {
			return fmt.Errorf("tensor %q: data offsets [%d, %d], the library's %v", v.Name, begin, end, info.DataOffsets)
		}
		data, err := file.Bytes(ti)
		if err != nil || !bytes.Equal(data, v.TensorView.Data()) {
			return fmt.Errorf("tensor %q: bytes differ from the library's (err %v)", v.Name, err)
		}
	}
	return nil
}

// TestDiffLibrary: the differential check sees a difference in each field it
// compares. The library's reading of one file is checked against ours of another
// that differs from it in that one field.
func TestDiffLibrary(t *testing.T) {
	const second = `,"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}`
	hdr := func(dt, shape, format string) string {
		return fmt.Sprintf(`{"a":{"dtype":%q,"shape":%s,"data_offsets":[0,8]}%s,"__metadata__":{"format":%q}}`, dt, shape, second, format)
	}
	data := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	base := stt.Raw(hdr("F32", "[2]", "pt"), data)
	variants := []struct {
		field, say string
		b          []byte
	}{
		{"dtype", "dtype I32", stt.Raw(hdr("I32", "[2]", "pt"), data)},
		{"shape", "shape [1 2]", stt.Raw(hdr("F32", "[1,2]", "pt"), data)},
		{"bytes", "bytes differ", stt.Raw(hdr("F32", "[2]", "pt"), append([]byte{0}, data[1:]...))},
		{"metadata", "metadata", stt.Raw(hdr("F32", "[2]", "np"), data)},
		{"offsets", "data offsets [4, 12]", stt.Raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"format":"pt"}}`, data)},
		{"tensors", "1 tensors", stt.Raw(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"__metadata__":{"format":"pt"}}`, data)},
	}
	ours := func(b []byte) *File {
		t.Helper()
		f, err := NewFile(bytes.NewReader(b), int64(len(b)))
		must(t, err)
		return f
	}
	theirs, err := lib.Deserialize(base)
	must(t, err)
	if err := diffLibrary(ours(base), base, theirs); err != nil {
		t.Fatalf("the check fails a file against itself: %v", err)
	}
	for _, v := range variants {
		err := diffLibrary(ours(v.b), base, theirs)
		if err == nil || !strings.Contains(err.Error(), v.say) {
			t.Errorf("a difference in %s: %v, want an error saying %q", v.field, err, v.say)
		}
	}
}

// TestLockCancel: waiting for another writer's lock ends when the context does.
func TestLockCancel(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "m.safetensors")
	first, err := lockOut(context.Background(), dest, nil)
	must(t, err)
	defer first.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if _, err := lockOut(ctx, dest, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's error", err)
	}
}

func FuzzIndex(f *testing.F) {
	f.Add([]byte(`{"metadata":{"total_size":8},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map":{"a":"../evil.safetensors"}}`))
	f.Add([]byte(`{"weight_map":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, shards, err := ParseIndex(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error does not wrap ErrFormat: %v", err)
			}
			return
		}
		if !slices.IsSorted(shards) || len(shards) == 0 {
			t.Fatalf("shards %v", shards)
		}
		for name, s := range idx.WeightMap {
			if !slices.Contains(shards, s) {
				t.Fatalf("tensor %q's shard %q not listed", name, s)
			}
			if filepath.Base(s) != s || !strings.HasSuffix(s, ".safetensors") {
				t.Fatalf("unsafe shard name %q accepted", s)
			}
		}
	})
}

// lockOut locks an output path the way the checkpoint layer does: a path ending in
// .safetensors is a file, anything else a folder.
func lockOut(ctx context.Context, path string, onWait func()) (*atomicout.Dest, error) {
	return atomicout.Lock(ctx, path, !strings.HasSuffix(path, FileExt), onWait)
}
