package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomerge/gomerge/formats/torchbin"
)

// Names of the files of a Hugging Face folder of PyTorch weights.
const (
	torchSingleName = "pytorch_model.bin"
	torchIndexName  = "pytorch_model.bin.index.json"
	maxTorchIndex   = 256 << 20
)

// isTorchBin says whether path is a torch.save checkpoint: a .bin, .pt or .pth file,
// a file starting with a zip's or the legacy format's magic (safetensors files start
// with a header length, never with those), or a folder holding pytorch_model.bin or its
// index and no safetensors weights (which win where both exist, as they do in
// transformers).
func isTorchBin(path string) bool {
	st, err := os.Stat(path)
	if err != nil {
		return false // the format's own open reports it
	}
	if st.IsDir() {
		if exists(filepath.Join(path, "model.safetensors")) || exists(filepath.Join(path, "model.safetensors.index.json")) {
			return false
		}
		return exists(filepath.Join(path, torchSingleName)) || exists(filepath.Join(path, torchIndexName))
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".bin", ".pt", ".pth":
		return true
	case ".safetensors":
		return false
	}
	return startsWith(path, []byte("PK\x03\x04"), []byte{0x80, 0x02, 0x8a, 0x0a})
}

// IsTorchBin says whether Open reads path as a torch.save checkpoint (file or folder).
func IsTorchBin(path string) bool { return isTorchBin(path) }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// torchSource is a torch.save file or a Hugging Face folder of them. Its tensors
// carry Hugging Face names, like a safetensors checkpoint's, so it reports the
// safetensors format: it merges with safetensors inputs and writes safetensors
// outputs (gomerge writes no .bin).
type torchSource struct {
	path   string
	dir    string // the folder, or "" for a single file
	files  []*torchbin.File
	paths  []string
	metas  []TensorMeta
	byName map[string][2]int // file, tensor
}

// badTorchInput makes the reader's errors (which wrap torchbin.ErrFormat) bad input,
// exit status 3, without changing their text.
type badTorchInput struct{ error }

func (e badTorchInput) Is(target error) bool { return target == ErrBadInput }
func (e badTorchInput) Unwrap() error        { return e.error }

func openTorchBin(path string) (Source, error) {
	s := &torchSource{path: path, byName: map[string][2]int{}}
	if err := s.open(); err != nil {
		s.Close()
		if errors.Is(err, torchbin.ErrFormat) {
			return nil, badTorchInput{err}
		}
		return nil, err
	}
	return s, nil
}

func (s *torchSource) open() error {
	st, err := os.Stat(s.path)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return s.add(s.path, nil)
	}
	s.dir = s.path
	index := filepath.Join(s.path, torchIndexName)
	if !exists(index) {
		return s.add(filepath.Join(s.path, torchSingleName), nil)
	}
	weightMap, shards, err := readTorchIndex(index)
	if err != nil {
		return err
	}
	for _, sh := range shards {
		if err := s.add(filepath.Join(s.path, sh), weightMap); err != nil {
			return err
		}
	}
	for name, shard := range weightMap {
		if _, ok := s.byName[name]; !ok {
			return fmt.Errorf("%s: %w", index, &torchbin.FormatError{Off: -1, Tensor: name,
				Msg: fmt.Sprintf("index places the tensor in %s, which does not hold it", shard)})
		}
	}
	return nil
}

// readTorchIndex reads pytorch_model.bin.index.json: a weight_map whose shards are
// .bin files in the folder (no path separators: the index must not send the reader
// elsewhere). It returns the map and the distinct shard names, sorted.
func readTorchIndex(path string) (map[string]string, []string, error) {
	bad := func(tensor, format string, args ...any) error {
		return fmt.Errorf("%s: %w", path, &torchbin.FormatError{Off: -1, Tensor: tensor, Msg: fmt.Sprintf(format, args...)})
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > maxTorchIndex {
		return nil, nil, bad("", "index is not a regular file of at most %d bytes", maxTorchIndex)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, nil, bad("", "index is not valid JSON: %v", err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, bad("", "index has no weight_map entries")
	}
	var shards []string
	for name, sh := range idx.WeightMap {
		if sh != filepath.Base(sh) || strings.ContainsAny(sh, `/\`) || !strings.HasSuffix(sh, ".bin") || sh == ".bin" {
			return nil, nil, bad(name, "shard %q is not a .bin file name in the folder", sh)
		}
		if !slices.Contains(shards, sh) {
			shards = append(shards, sh)
		}
	}
	slices.Sort(shards)
	return idx.WeightMap, shards, nil
}

// add opens one file; with an index, each of its tensors must be placed in it.
func (s *torchSource) add(path string, weightMap map[string]string) error {
	f, err := torchbin.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && weightMap != nil {
			return fmt.Errorf("%s: index names shard %s, which does not exist: %w", s.path, filepath.Base(path), err)
		}
		return err // it names the path
	}
	fi := len(s.files)
	s.files, s.paths = append(s.files, f), append(s.paths, path)
	for ti := range f.Tensors {
		t := &f.Tensors[ti]
		bad := func(msg string) error {
			return fmt.Errorf("%s: %w", path, &torchbin.FormatError{Off: -1, Tensor: t.Name, Msg: msg})
		}
		if prev, dup := s.byName[t.Name]; dup {
			return bad("tensor is also in " + s.paths[prev[0]])
		}
		if weightMap != nil && weightMap[t.Name] != filepath.Base(path) {
			return bad(fmt.Sprintf("%s places the tensor in %q", torchIndexName, weightMap[t.Name]))
		}
		s.byName[t.Name] = [2]int{fi, ti}
		s.metas = append(s.metas, TensorMeta{Name: t.Name, DType: t.DType, Shape: t.Shape, File: path})
	}
	return nil
}

// weightFiles names the folder's weight files, which a folder output made from it
// replaces rather than carries over (its config and tokenizer files are carried).
func (s *torchSource) weightFiles() []string {
	names := []string{torchIndexName}
	for _, p := range s.paths {
		names = append(names, filepath.Base(p))
	}
	return names
}

func (s *torchSource) Path() string          { return s.path }
func (s *torchSource) Format() Format        { return Safetensors }
func (s *torchSource) Tensors() []TensorMeta { return s.metas }

func (s *torchSource) Data(name string) ([]byte, error) {
	at, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: not found", s.path, name)
	}
	f := s.files[at[0]]
	b, err := f.Bytes(&f.Tensors[at[1]])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.paths[at[0]], err)
	}
	return b, nil
}

func (s *torchSource) Close() error {
	var err error
	for _, f := range s.files {
		err = errors.Join(err, f.Close())
	}
	s.files = nil
	return err
}
