package checkpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/internal/atomicout"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenDetects: the format comes from what the path holds: a folder, a
// safetensors file, a GGUF file by its name or, renamed, by its magic.
func TestOpenDetects(t *testing.T) {
	dir := t.TempDir()
	st := stt.Random(stt.TinyLlama, dtype.BF16, 1)
	must(t, stt.WriteFile(filepath.Join(dir, "m.safetensors"), st, nil))
	must(t, stt.WriteFolder(filepath.Join(dir, "folder"), st, 2, nil))
	g := gguftest.Random(gguftest.Tiny, dtype.Q8_0, 1)
	must(t, gguftest.WriteFile(filepath.Join(dir, "m.gguf"), gguftest.Metadata(gguftest.Tiny, "t"), g))
	must(t, os.Link(filepath.Join(dir, "m.gguf"), filepath.Join(dir, "renamed.bin")))
	for name, want := range map[string]Format{"m.safetensors": Safetensors, "folder": Safetensors, "m.gguf": GGUF, "renamed.bin": GGUF} {
		s, err := Open(filepath.Join(dir, name))
		must(t, err)
		n := len(st)
		if want == GGUF {
			n = len(g)
		}
		if s.Format() != want || len(s.Tensors()) != n || s.Path() != filepath.Join(dir, name) {
			t.Errorf("%s: format %v, %d tensors; want %v, %d", name, s.Format(), len(s.Tensors()), want, n)
		}
		first := s.Tensors()[0]
		if b, err := s.Data(first.Name); err != nil || int64(len(b)) != first.DType.Bytes(first.NumElements()) {
			t.Errorf("%s: tensor %s: %d bytes, %v", name, first.Name, len(b), err)
		}
		if _, err := s.Data("no such tensor"); err == nil {
			t.Errorf("%s: a missing tensor read without error", name)
		}
		must(t, s.Close())
	}
}

func TestOutputFormat(t *testing.T) {
	for path, want := range map[string]struct {
		f      Format
		folder bool
	}{"a/m.gguf": {GGUF, false}, "m.GGUF": {GGUF, false}, "m.safetensors": {Safetensors, false}, "out/merged": {Safetensors, true}, "v1.5": {Safetensors, true}} {
		f, folder, err := OutputFormat(path)
		if err != nil || f != want.f || folder != want.folder {
			t.Errorf("%s: %v folder=%v %v; want %v folder=%v", path, f, folder, err, want.f, want.folder)
		}
	}
	for _, path := range []string{"m.bin", "m.pt", "m.json"} {
		if _, _, err := OutputFormat(path); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", path, err)
		}
	}
}

func TestOutTypes(t *testing.T) {
	if _, err := Safetensors.OutType(dtype.Q8_0, OutOptions{}, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("safetensors accepted Q8_0: %v", err)
	}
	st, err := Safetensors.OutType(dtype.F16, OutOptions{}, nil)
	must(t, err)
	if st("x", dtype.F32, []int64{4}) != dtype.F16 || st("x", dtype.I64, []int64{4}) != dtype.I64 {
		t.Error("safetensors: float tensors take the asked type, integer ones keep theirs")
	}
	same, err := GGUF.OutType(dtype.Invalid, OutOptions{}, nil)
	must(t, err)
	asked, err := GGUF.OutType(dtype.Q4_0, OutOptions{}, nil)
	must(t, err)
	for _, tc := range []struct {
		rule  func(string, dtype.DType, []int64) dtype.DType
		from  dtype.DType
		shape []int64
		want  dtype.DType
	}{
		{same, dtype.Q8_0, []int64{2, 64}, dtype.Q8_0},
		{same, dtype.Q4_K, []int64{2, 256}, dtype.Q4_K}, // K-quants are written as they are
		{asked, dtype.F16, []int64{2, 64}, dtype.Q4_0},
		{asked, dtype.F32, []int64{64}, dtype.F32},     // 1-D tensors keep their type
		{asked, dtype.F16, []int64{2, 48}, dtype.F16},  // 48 is no multiple of 32
		{asked, dtype.Q8_0, []int64{2, 40}, dtype.F16}, // nor 40
	} {
		if got := tc.rule("x", tc.from, tc.shape); got != tc.want {
			t.Errorf("%s %v: %s, want %s", tc.from, tc.shape, got, tc.want)
		}
	}
}

// TestGGUFPlan: a GGUF output keeps the reference's metadata less its gomerge keys,
// adds the provenance, lists its type changes, and sets general.file_type only when
// types changed.
func TestGGUFPlan(t *testing.T) {
	dir := t.TempDir()
	meta := append(gguftest.Metadata(gguftest.Tiny, "t"), gguf.KV{Key: "gomerge.method", Value: gguf.Value{Type: gguf.ValueString, Data: "old"}})
	g := gguftest.Random(gguftest.Tiny, dtype.Q8_0, 1)
	must(t, gguftest.WriteFile(filepath.Join(dir, "m.gguf"), meta, g))
	ref, err := Open(filepath.Join(dir, "m.gguf"))
	must(t, err)
	defer ref.Close()
	out := Output{Name: "o.gguf", Ref: ref, Provenance: [][2]string{{"gomerge.method", "linear"}}}
	for _, m := range ref.Tensors() {
		out.Tensors = append(out.Tensors, Tensor{Name: m.Name, Shape: m.Shape, DType: m.DType, From: m.DType})
	}
	l, err := GGUF.Plan(out)
	must(t, err)
	if len(l.TypeChanges) != 0 || len(l.Files) != 1 || len(l.Regions) != len(out.Tensors) {
		t.Fatalf("unchanged types: %d changes, %d files, %d regions", len(l.TypeChanges), len(l.Files), len(l.Regions))
	}
	f := writeLayout(t, filepath.Join(dir, "same.gguf"), l, nil)
	if v, _ := f.Lookup("gomerge.method"); v.Data != "linear" {
		t.Errorf("gomerge.method %v, want the provenance's", v.Data)
	}
	if _, ok := f.Lookup("general.file_type"); ok {
		t.Error("general.file_type set though no type changed")
	}
	f.Close()

	n := 0
	for i := range out.Tensors {
		if len(out.Tensors[i].Shape) >= 2 {
			out.Tensors[i].DType = dtype.F16
			n++
		}
	}
	l, err = GGUF.Plan(out)
	must(t, err)
	if len(l.TypeChanges) != n || l.TypeChanges[0].From != "Q8_0" || l.TypeChanges[0].To != "F16" {
		t.Errorf("type changes %v, want %d from Q8_0 to F16", l.TypeChanges, n)
	}
	f = writeLayout(t, filepath.Join(dir, "f16.gguf"), l, nil)
	if v, _ := f.Lookup("general.file_type"); v.Data != uint32(1) {
		t.Errorf("general.file_type %v, want 1 (mostly F16)", v.Data)
	}
	f.Close()
	if _, err := GGUF.Plan(Output{Name: "x", Folder: true, Ref: ref}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("a GGUF folder planned: %v", err)
	}
}

// writeLayout writes a planned file (zero data) and opens it as GGUF.
func writeLayout(t *testing.T, path string, l *Layout, _ []byte) *gguf.File {
	t.Helper()
	d, err := atomicout.Lock(context.Background(), path, false, nil)
	must(t, err)
	defer d.Unlock()
	o, err := d.Create(l.Layout)
	must(t, err)
	must(t, o.Commit())
	f, err := gguf.Open(path)
	must(t, err)
	return f
}

// TestSafetensorsPlanKeepsFolder: a folder output of a folder reference keeps its
// shard names and placement, carries its other files, and records the provenance.
func TestSafetensorsPlanKeepsFolder(t *testing.T) {
	dir := t.TempDir()
	st := stt.Random(stt.TinyLlama, dtype.BF16, 1)
	refDir := filepath.Join(dir, "ref")
	must(t, stt.WriteFolder(refDir, st, 3, map[string]string{"kept": "yes"}))
	must(t, os.WriteFile(filepath.Join(refDir, "config.json"), []byte("{}"), 0o644))
	must(t, os.WriteFile(filepath.Join(refDir, "pytorch_model.bin"), []byte("old weights"), 0o644))
	ref, err := Open(refDir)
	must(t, err)
	defer ref.Close()
	out := Output{Name: "out", Folder: true, Ref: ref, Provenance: [][2]string{{"gomerge.method", "linear"}}}
	for _, m := range ref.Tensors() {
		out.Tensors = append(out.Tensors, Tensor{Name: m.Name, Shape: m.Shape, DType: m.DType, From: m.DType})
	}
	l, err := Safetensors.Plan(out)
	must(t, err)
	d, err := atomicout.Lock(context.Background(), filepath.Join(dir, "out"), true, nil)
	must(t, err)
	o, err := d.Create(l.Layout)
	must(t, err)
	must(t, o.Commit())
	d.Unlock()
	got, err := Open(filepath.Join(dir, "out"))
	must(t, err)
	defer got.Close()
	if len(got.Tensors()) != len(st) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors()), len(st))
	}
	for i, m := range got.Tensors() {
		if w := ref.Tensors()[i]; filepath.Base(m.File) != filepath.Base(w.File) || m.Name != w.Name {
			t.Errorf("tensor %s in %s, want %s in %s", m.Name, filepath.Base(m.File), w.Name, filepath.Base(w.File))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "config.json")); err != nil {
		t.Errorf("config.json not carried: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "pytorch_model.bin")); err == nil {
		t.Error("another format's weights carried into the output")
	}
	c := got.(*safetensorsSource).c
	if c.Metadata["kept"] != "yes" || c.Metadata["gomerge.method"] != "linear" || c.Metadata["format"] != "pt" {
		t.Errorf("metadata %v", c.Metadata)
	}
}
