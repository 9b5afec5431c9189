package torchbin_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/torchbin"
	tbt "github.com/gomerge/gomerge/formats/torchbin/torchbintest"
	"github.com/gomerge/gomerge/internal/testexec"
)

type manifestTensor struct {
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
	Hex   string  `json:"hex"`
}

// torchFixtures runs testdata/gen.py with torch and returns its folder and manifest.
func torchFixtures(t *testing.T) (string, map[string]map[string]manifestTensor) {
	t.Helper()
	ctx := context.Background()
	py := testexec.Python(ctx, t, "torch", "python3-torch")
	dir := t.TempDir()
	if out, err := exec.CommandContext(ctx, py, "testdata/gen.py", dir).CombinedOutput(); err != nil {
		t.Fatalf("gen.py: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]map[string]manifestTensor
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

var torchDTypes = map[string]dtype.DType{
	"torch.float32": dtype.F32, "torch.float16": dtype.F16, "torch.bfloat16": dtype.BF16, "torch.float64": dtype.F64,
	"torch.int64": dtype.I64, "torch.int32": dtype.I32, "torch.int16": dtype.I16, "torch.int8": dtype.I8,
	"torch.uint8": dtype.U8, "torch.bool": dtype.Bool,
}

// TestTorchWritten reads every fixture torch wrote, memory-mapped and through a
// plain ReaderAt, and checks each tensor's type, shape and bytes against what torch
// says they are: every dtype, tied storages, views with offsets and strides.
func TestTorchWritten(t *testing.T) {
	dir, manifest := torchFixtures(t)
	for name, want := range manifest {
		if name == "legacy.bin" || name == "expanded.bin" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			f, err := torchbin.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if !f.Mapped() || len(f.Tensors) != len(want) {
				t.Fatalf("mapped %v, %d tensors, want %d", f.Mapped(), len(f.Tensors), len(want))
			}
			fd, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer fd.Close()
			st, _ := fd.Stat()
			plain, err := torchbin.NewFile(fd, st.Size())
			if err != nil {
				t.Fatal(err)
			}
			for i := range f.Tensors {
				ti := &f.Tensors[i]
				w, ok := want[ti.Name]
				if !ok {
					t.Fatalf("tensor %q is not in the manifest", ti.Name)
				}
				if ti.DType != torchDTypes[w.DType] || !slices.Equal(ti.Shape, w.Shape) {
					t.Errorf("%s: %s %v, torch says %s %v", ti.Name, ti.DType, ti.Shape, w.DType, w.Shape)
				}
				for _, src := range []*torchbin.File{f, plain} {
					pt, _ := src.Tensor(ti.Name)
					b, err := src.Bytes(pt)
					if err != nil {
						t.Fatal(err)
					}
					if got := hex.EncodeToString(b); got != w.Hex {
						t.Errorf("%s (mapped %v): bytes %s, torch says %s", ti.Name, src.Mapped(), got, w.Hex)
					}
				}
			}
		})
	}
	t.Run("tied and views", func(t *testing.T) {
		f, err := torchbin.Open(filepath.Join(dir, "views.bin"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		w, _ := f.Tensor("w")
		tied, _ := f.Tensor("tied")
		tr, _ := f.Tensor("t")
		rows, _ := f.Tensor("rows")
		bw, _ := f.Bytes(w)
		bt, _ := f.Bytes(tied)
		if &bw[0] != &bt[0] || w.Storage != tied.Storage {
			t.Error("tied tensors do not share their mapped bytes")
		}
		if tr.Contiguous() || !rows.Contiguous() || rows.Offset != 12 {
			t.Errorf("contiguity: transpose %v, rows %v (offset %d)", tr.Contiguous(), rows.Contiguous(), rows.Offset)
		}
	})
	t.Run("refused", func(t *testing.T) {
		for name, msg := range map[string]string{"legacy.bin": "legacy torch.save format", "expanded.bin": "larger than its storage"} {
			_, err := torchbin.Open(filepath.Join(dir, name))
			if !errors.Is(err, torchbin.ErrFormat) || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), name) {
				t.Errorf("%s: %v, want ErrFormat saying %q and naming the file", name, err, msg)
			}
		}
	})
}

// le is the little-endian bytes of float32 values.
func le(vals ...float32) []byte {
	var b []byte
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// f32 is the bytes of n float32 counting from 0.
func f32(n int) []byte {
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(i)
	}
	return le(vals...)
}

// goodTensors is a well-formed state dict: a 3×4 float32, its transpose and a row view.
var goodTensors = []tbt.Tensor{
	{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 12, Shape: []int64{3, 4}, Stride: []int64{4, 1}},
	{Name: "t", StorageType: "FloatStorage", Key: "0", Numel: 12, Shape: []int64{4, 3}, Stride: []int64{1, 4}},
	{Name: "r", StorageType: "FloatStorage", Key: "0", Numel: 12, Offset: 8, Shape: []int64{4}, Stride: []int64{1}},
}

func goodArchive() []byte { return tbt.StateDictArchive(goodTensors, map[string][]byte{"0": f32(12)}) }

// TestBuilt reads a hand-built archive (no torch needed) and gathers its strided view.
func TestBuilt(t *testing.T) {
	b := goodArchive()
	f, err := torchbin.NewFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]float32{"w": {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, "t": {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}, "r": {8, 9, 10, 11}}
	for name, w := range want {
		ti, ok := f.Tensor(name)
		if !ok {
			t.Fatalf("no tensor %q", name)
		}
		got, err := f.Bytes(ti)
		if err != nil {
			t.Fatal(err)
		}
		if exp := le(w...); !bytes.Equal(got, exp) {
			t.Errorf("%s: % x, want % x", name, got, exp)
		}
	}
}

// TestGatherTiles: transposed views across tile boundaries, with an offset, in every
// element size, against the element formula.
func TestGatherTiles(t *testing.T) {
	const rows, cols, off = 70, 45, 3
	for st, es := range map[string]int{"HalfStorage": 2, "FloatStorage": 4, "DoubleStorage": 8, "ByteStorage": 1} {
		numel := int64(off + rows*cols)
		storage := make([]byte, numel*int64(es))
		for i := range storage {
			storage[i] = byte(i*7 + i/251)
		}
		ts := []tbt.Tensor{{Name: "t", StorageType: st, Key: "0", Numel: numel, Offset: off, Shape: []int64{rows, cols}, Stride: []int64{1, rows}}}
		arc := tbt.StateDictArchive(ts, map[string][]byte{"0": storage})
		f, err := torchbin.NewFile(bytes.NewReader(arc), int64(len(arc)))
		if err != nil {
			t.Fatal(err)
		}
		ti, _ := f.Tensor("t")
		got, err := f.Bytes(ti)
		if err != nil {
			t.Fatal(err)
		}
		for r := range rows {
			for c := range cols {
				s := (off + r + c*rows) * es
				d := (r*cols + c) * es
				if !bytes.Equal(got[d:d+es], storage[s:s+es]) {
					t.Fatalf("%s: element (%d,%d) is % x, want % x", st, r, c, got[d:d+es], storage[s:s+es])
				}
			}
		}
	}
}

// storageTuple is the persistent id of a float storage "0" of n elements.
func storageTuple(p *tbt.Pickle, n int64) *tbt.Pickle {
	return p.Op('(').Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu").Int(n).Op('t', 'Q')
}

// Malformed and hostile inputs: each is refused with ErrFormat and a message saying
// why, and none runs anything.
var malformed = []struct {
	name string
	data func() []byte
	msg  string
}{
	{"os.system", func() []byte {
		p := tbt.NewPickle().Global("os", "system").Str("touch /tmp/pwned").Op(0x85, 'R')
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()})
	}, `global "os.system" is not allowed`},
	{"builtins.eval", func() []byte {
		p := tbt.NewPickle().Global("builtins", "eval").Str("1+1").Op(0x85, 'R')
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()})
	}, `global "builtins.eval" is not allowed`},
	{"stack global", func() []byte {
		p := tbt.NewPickle().Str("posix").Str("system").Op(0x93)
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()})
	}, `global "posix.system" is not allowed`},
	{"INST", func() []byte {
		p := tbt.NewPickle().Op('(').Op([]byte("ios\nsystem\n")...)
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()})
	}, "opcode 0x69 is not allowed"},
	{"OBJ", func() []byte {
		p := tbt.NewPickle().Op('(').Global("collections", "OrderedDict").Op('o')
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()})
	}, "opcode 0x6f is not allowed"},
	{"reduce storage type", func() []byte {
		p := tbt.NewPickle().Global("torch", "FloatStorage").Op(')', 'R')
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()})
	}, "REDUCE of torch.FloatStorage is not allowed"},
	{"BUILD of a tensor", func() []byte {
		p := tbt.NewPickle().Op('}', '(').Str("x").TensorValue(goodTensors[0]).Op('}', 'b', 'u')
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()}, tbt.Member{Name: "data/0", Data: f32(12)})
	}, "BUILD of tensor"},
	{"protocol 5", func() []byte {
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: []byte{0x80, 5, '}', '.'}})
	}, "protocol 5"},
	{"no STOP", func() []byte {
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: []byte{0x80, 2, '}'}})
	}, "without STOP"},
	{"truncated string", func() []byte {
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: []byte{0x80, 2, 'X', 0xff, 0xff, 0xff, 0x7f, 'a'}})
	}, "exceeds the limit"},
	{"unknown memo", func() []byte {
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: []byte{0x80, 2, 'h', 9, '.'}})
	}, "memo entry 9"},
	{"not a dict", func() []byte {
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: []byte{0x80, 2, 'K', 1, '.'}})
	}, "not a state dict"},
	{"not a tensor", func() []byte {
		p := tbt.NewPickle().Op('}').Str("epoch").Int(3).Op('s')
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()})
	}, "not a tensor"},
	{"huge storage", func() []byte {
		ts := []tbt.Tensor{{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 1 << 40, Shape: []int64{1 << 40}, Stride: []int64{1}}}
		return tbt.StateDictArchive(ts, map[string][]byte{"0": f32(12)})
	}, "is 48 bytes, but the pickle says"},
	{"storage size out of range", func() []byte {
		ts := []tbt.Tensor{{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 1 << 62, Shape: []int64{1}, Stride: []int64{1}}}
		return tbt.StateDictArchive(ts, map[string][]byte{"0": f32(12)})
	}, "out of range"},
	{"offset past the storage", func() []byte {
		ts := []tbt.Tensor{{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 12, Offset: 10, Shape: []int64{4}, Stride: []int64{1}}}
		return tbt.StateDictArchive(ts, map[string][]byte{"0": f32(12)})
	}, "reaches element 13"},
	{"stride past the storage", func() []byte {
		ts := []tbt.Tensor{{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 12, Shape: []int64{3, 4}, Stride: []int64{5, 1}}}
		return tbt.StateDictArchive(ts, map[string][]byte{"0": f32(12)})
	}, "reaches element 13"},
	{"overflowing sizes", func() []byte {
		ts := []tbt.Tensor{{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 12, Shape: []int64{1 << 40, 1 << 40}, Stride: []int64{0, 0}}}
		return tbt.StateDictArchive(ts, map[string][]byte{"0": f32(12)})
	}, "more than"},
	{"overflowing strides", func() []byte {
		ts := []tbt.Tensor{{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 12, Shape: []int64{2, 2}, Stride: []int64{1 << 62, 1 << 62}}}
		return tbt.StateDictArchive(ts, map[string][]byte{"0": f32(12)})
	}, "overflow"},
	{"rank mismatch", func() []byte {
		ts := []tbt.Tensor{{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 12, Shape: []int64{3, 4}, Stride: []int64{1}}}
		return tbt.StateDictArchive(ts, map[string][]byte{"0": f32(12)})
	}, "2 sizes and 1 strides"},
	{"missing storage", func() []byte {
		return tbt.StateDictArchive(goodTensors, nil)
	}, "archive/data/0 is missing"},
	{"compressed storage", func() []byte {
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: tbt.StateDict(goodTensors)}, tbt.Member{Name: "data/0", Data: f32(12), Compress: true})
	}, "is compressed"},
	{"two dtypes for one storage", func() []byte {
		ts := append([]tbt.Tensor{}, goodTensors[0], tbt.Tensor{Name: "h", StorageType: "HalfStorage", Key: "0", Numel: 24, Shape: []int64{2}, Stride: []int64{1}})
		return tbt.StateDictArchive(ts, map[string][]byte{"0": f32(12)})
	}, "referenced as both"},
	{"persistent id not a storage", func() []byte {
		p := tbt.NewPickle().Op('}').Str("x").Str("boom").Op('Q', 's')
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()})
	}, "not a storage reference"},
	{"tensor of a non-storage", func() []byte {
		p := tbt.NewPickle().Op('}').Str("x").Global("torch._utils", "_rebuild_tensor_v2").Op('(').Int(1).Int(0).Ints(nil).Ints(nil).Op(0x89, '}', 't', 'R', 's')
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()})
	}, "not a storage"},
	{"marks without end", func() []byte {
		p := append([]byte{0x80, 2}, bytes.Repeat([]byte{'('}, 1<<20+1)...)
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: append(p, '.')})
	}, "stack deeper than"},
	{"stack underflow", func() []byte {
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: []byte{0x80, 2, 'R', '.'}})
	}, "underflow"},
	{"negative offset", func() []byte {
		p := storageTuple(tbt.NewPickle().Op('}').Str("x").Global("torch._utils", "_rebuild_tensor_v2").Op('('), 12)
		p.Int(-1).Ints(nil).Ints(nil).Op(0x89, '}', 't', 'R', 's')
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p.Stop()}, tbt.Member{Name: "data/0", Data: f32(12)})
	}, "offset is not a non-negative"},
	{"big endian", func() []byte {
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: tbt.StateDict(goodTensors)}, tbt.Member{Name: "data/0", Data: f32(12)}, tbt.Member{Name: "byteorder", Data: []byte("big")})
	}, "only little-endian"},
	{"unknown version", func() []byte {
		return tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: tbt.StateDict(goodTensors)}, tbt.Member{Name: "data/0", Data: f32(12)}, tbt.Member{Name: "version", Data: []byte("99")})
	}, "unknown format version"},
	{"no data.pkl", func() []byte {
		return tbt.Archive("archive", tbt.Member{Name: "data/0", Data: f32(12)})
	}, "no PREFIX/data.pkl"},
	{"legacy", func() []byte {
		return []byte{0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19}
	}, "legacy torch.save format"},
	{"not zip", func() []byte { return []byte("hello, world") }, "not a zip archive"},
	{"short", func() []byte { return []byte("PK") }, "too short"},
	{"truncated zip", func() []byte { return goodArchive()[:100] }, "zip directory"},
}

func TestMalformed(t *testing.T) {
	for _, c := range malformed {
		t.Run(c.name, func(t *testing.T) {
			b := c.data()
			_, err := torchbin.NewFile(bytes.NewReader(b), int64(len(b)))
			if !errors.Is(err, torchbin.ErrFormat) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want ErrFormat saying %q", err, c.msg)
			}
		})
	}
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Fatal("/tmp/pwned exists: something ran")
	}
}

// FuzzOpen parses arbitrary bytes, both as a whole file and as the pickle of an
// otherwise well-formed archive (so that the fuzzer explores the unpickler, not only
// zip framing), and for whatever parses reads every tensor: no panic, every error
// wraps ErrFormat, and every tensor's bytes have its size.
func FuzzOpen(f *testing.F) {
	f.Add(goodArchive())
	f.Add(tbt.StateDict(goodTensors))
	for _, c := range malformed {
		f.Add(c.data())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzFile(t, b)
		fuzzFile(t, tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: b}, tbt.Member{Name: "data/0", Data: f32(12)}))
	})
}

func fuzzFile(t *testing.T, b []byte) {
	tf, err := torchbin.NewFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		if !errors.Is(err, torchbin.ErrFormat) {
			t.Fatalf("error does not wrap ErrFormat: %v", err)
		}
		return
	}
	for i := range tf.Tensors {
		ti := &tf.Tensors[i]
		if got, ok := tf.Tensor(ti.Name); !ok || got != ti {
			t.Fatalf("Tensor(%q) does not find it", ti.Name)
		}
		data, err := tf.Bytes(ti)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != ti.Size() || ti.NumElements() < 0 {
			t.Fatalf("%s: %d bytes, want %d", ti.Name, len(data), ti.Size())
		}
		_ = ti.Contiguous()
	}
	_ = tf.Size()
	_ = tf.Mapped()
	if err := tf.Close(); err != nil {
		t.Fatal(err)
	}
}
