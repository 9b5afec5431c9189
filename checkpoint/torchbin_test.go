package checkpoint

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/formats/torchbin"
	tbt "github.com/gomerge/gomerge/formats/torchbin/torchbintest"
)

// binFile writes a torch.save archive holding one float32 vector per name, of n
// elements each, and returns its path.
func binFile(t *testing.T, path string, n int64, names ...string) string {
	t.Helper()
	var ts []tbt.Tensor
	data := map[string][]byte{}
	for i, name := range names {
		key := string(rune('0' + i))
		ts = append(ts, tbt.Tensor{Name: name, StorageType: "FloatStorage", Key: key, Numel: n, Shape: []int64{n}, Stride: []int64{1}})
		data[key] = make([]byte, 4*n)
	}
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, tbt.StateDictArchive(ts, data), 0o644))
	return path
}

func writeIndex(t *testing.T, dir, json string) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(dir, torchIndexName), []byte(json), 0o644))
}

// TestOpenTorchBin: .bin, .pt and renamed zip files, a folder with pytorch_model.bin,
// and a sharded folder with its index open as torch checkpoints (safetensors-named
// tensors); a folder with safetensors weights beside .bin ones opens its safetensors.
func TestOpenTorchBin(t *testing.T) {
	dir := t.TempDir()
	binFile(t, filepath.Join(dir, "m.bin"), 4, "a", "b")
	binFile(t, filepath.Join(dir, "m.pt"), 4, "a", "b")
	binFile(t, filepath.Join(dir, "renamed"), 4, "a", "b")
	binFile(t, filepath.Join(dir, "single", torchSingleName), 4, "a", "b")
	sh := filepath.Join(dir, "sharded")
	binFile(t, filepath.Join(sh, "pytorch_model-00002-of-00002.bin"), 4, "b")
	binFile(t, filepath.Join(sh, "pytorch_model-00001-of-00002.bin"), 4, "a")
	writeIndex(t, sh, `{"metadata":{},"weight_map":{"a":"pytorch_model-00001-of-00002.bin","b":"pytorch_model-00002-of-00002.bin"}}`)
	both := filepath.Join(dir, "both")
	binFile(t, filepath.Join(both, torchSingleName), 4, "x")
	must(t, stt.WriteFolder(both, stt.Random(stt.TinyLlama, dtype.F32, 1), 1, nil))
	for _, name := range []string{"m.bin", "m.pt", "renamed", "single", "sharded"} {
		s, err := Open(filepath.Join(dir, name))
		must(t, err)
		if _, ok := s.(*torchSource); !ok || s.Format() != Safetensors {
			t.Errorf("%s: opened as %T (%v)", name, s, s.Format())
		}
		ts := s.Tensors()
		if len(ts) != 2 || ts[0].Name != "a" || ts[1].Name != "b" || ts[0].DType != dtype.F32 {
			t.Errorf("%s: tensors %+v", name, ts)
		}
		b, err := s.Data("b")
		if err != nil || len(b) != 16 {
			t.Errorf("%s: Data(b): %d bytes, %v", name, len(b), err)
		}
		if _, err := s.Data("nope"); err == nil {
			t.Errorf("%s: Data of a missing tensor succeeded", name)
		}
		must(t, s.Close())
	}
	s, err := Open(both)
	must(t, err)
	if _, ok := s.(*safetensorsSource); !ok {
		t.Errorf("a folder with safetensors and .bin weights opened as %T", s)
	}
	must(t, s.Close())
}

// TestOpenTorchBinRefused: broken indexes and files are bad input naming the file.
func TestOpenTorchBinRefused(t *testing.T) {
	one := "pytorch_model-00001-of-00001.bin"
	cases := []struct {
		name  string
		setup func(dir string)
		msg   string
	}{
		{"index names a path", func(dir string) {
			binFile(t, filepath.Join(dir, one), 2, "a")
			writeIndex(t, dir, `{"weight_map":{"a":"../x.bin"}}`)
		}, "not a .bin file name in the folder"},
		{"index not JSON", func(dir string) { writeIndex(t, dir, `{`) }, "not valid JSON"},
		{"empty index", func(dir string) { writeIndex(t, dir, `{"weight_map":{}}`) }, "no weight_map entries"},
		{"tensor not in its shard", func(dir string) {
			binFile(t, filepath.Join(dir, one), 2, "a")
			writeIndex(t, dir, `{"weight_map":{"a":"`+one+`","b":"`+one+`"}}`)
		}, "which does not hold it"},
		{"tensor the index places elsewhere", func(dir string) {
			binFile(t, filepath.Join(dir, one), 2, "a", "b")
			binFile(t, filepath.Join(dir, "two.bin"), 2, "c")
			writeIndex(t, dir, `{"weight_map":{"a":"`+one+`","b":"two.bin","c":"two.bin"}}`)
		}, "places the tensor in"},
		{"tensor in two shards", func(dir string) {
			binFile(t, filepath.Join(dir, one), 2, "a")
			binFile(t, filepath.Join(dir, "two.bin"), 2, "a", "c")
			writeIndex(t, dir, `{"weight_map":{"a":"`+one+`","c":"two.bin"}}`)
		}, "tensor is also in"},
		{"hostile pickle", func(dir string) {
			p := tbt.NewPickle().Global("os", "system").Str("true").Op(0x85, 'R').Stop()
			must(t, os.WriteFile(filepath.Join(dir, torchSingleName), tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: p}), 0o644))
		}, `"os.system" is not allowed`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.setup(dir)
			_, err := Open(dir)
			if !errors.Is(err, ErrBadInput) || !errors.Is(err, torchbin.ErrFormat) || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("got %v; want bad input saying %q and naming %s", err, c.msg, dir)
			}
		})
	}
	_, err := Open(filepath.Join(t.TempDir(), "missing.bin"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing .bin: %v", err)
	}
	dir := t.TempDir()
	writeIndex(t, dir, `{"weight_map":{"a":"gone.bin"}}`)
	if _, err := Open(dir); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "gone.bin") {
		t.Errorf("a missing shard: %v", err)
	}
}
