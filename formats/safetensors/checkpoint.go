package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Names of the files of a Hugging Face folder checkpoint.
const (
	SingleFileName = "model.safetensors"
	IndexFileName  = "model.safetensors.index.json"
	maxIndexSize   = 256 << 20 // an index for 10⁶ tensors is ~100 MB
)

// Checkpoint is a set of named tensors held by one safetensors file or by a Hugging
// Face folder (model.safetensors, or shards listed in model.safetensors.index.json).
// Its methods are safe for concurrent use until Close.
type Checkpoint struct {
	Path   string   // what the caller named
	Dir    string   // the folder, or "" for a single file
	Shards []*Shard // in the order their tensors are listed
	// Metadata is the first shard's __metadata__.
	Metadata map[string]string

	tensors []Tensor
	byName  map[string]int
}

// Shard is one file of a checkpoint.
type Shard struct {
	Path string // full path
	Name string // file name within the folder
	File *File
}

// Tensor is one tensor of a checkpoint and the shard that holds it.
type Tensor struct {
	*TensorInfo
	Shard int
}

// OpenCheckpoint opens a .safetensors file or a Hugging Face folder.
func OpenCheckpoint(path string) (*Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Path: path}
	if !st.IsDir() {
		if err := c.addShard(path); err != nil {
			return nil, err
		}
		return c, c.index(nil)
	}
	c.Dir = path
	indexPath := filepath.Join(path, IndexFileName)
	switch _, err := os.Stat(indexPath); {
	case err == nil:
		if err := c.openSharded(indexPath); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	single := filepath.Join(path, SingleFileName)
	if _, err := os.Stat(single); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &os.PathError{Op: "open checkpoint", Path: path,
				Err: fmt.Errorf("%w: folder has neither %s nor %s", ErrFormat, SingleFileName, IndexFileName)}
		}
		return nil, err
	}
	if err := c.addShard(single); err != nil {
		return nil, err
	}
	return c, c.index(nil)
}

func (c *Checkpoint) addShard(path string) error {
	f, err := Open(path)
	if err != nil {
		return err
	}
	c.Shards = append(c.Shards, &Shard{Path: path, Name: filepath.Base(path), File: f})
	if len(c.Shards) == 1 {
		c.Metadata = f.Metadata
	}
	return nil
}

// Index is the JSON of model.safetensors.index.json.
type Index struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

func (c *Checkpoint) openSharded(indexPath string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w", indexPath, &FormatError{Off: -1, Msg: fmt.Sprintf(format, args...)})
	}
	st, err := os.Stat(indexPath)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return bad("index is not a regular file")
	}
	if st.Size() > maxIndexSize {
		return bad("index is %d bytes, over the limit of %d", st.Size(), maxIndexSize)
	}
	data, err := os.ReadFile(indexPath)
	if err != nil {
		return err
	}
	idx, shardNames, err := ParseIndex(data)
	if err != nil {
		return fmt.Errorf("%s: %w", indexPath, err)
	}
	for _, s := range shardNames {
		p := filepath.Join(c.Dir, s)
		if err := c.addShard(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: %w", indexPath, &FormatError{Off: -1, Msg: fmt.Sprintf("index names shard %s, which does not exist", s), Err: err})
			}
			return err
		}
	}
	return c.index(idx.WeightMap)
}

// ParseIndex parses and checks the JSON of model.safetensors.index.json: a non-empty
// weight_map whose shard names are .safetensors files in the same folder (no path
// separators, no "..": an index must not send the reader elsewhere). It returns the
// index and its distinct shard names, sorted. Errors wrap ErrFormat.
func ParseIndex(data []byte) (*Index, []string, error) {
	var idx Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, nil, &FormatError{Off: -1, Msg: "index is not valid JSON", Err: err}
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, &FormatError{Off: -1, Msg: "index has no weight_map entries"}
	}
	seen := make(map[string]bool)
	var shardNames []string
	for name, shard := range idx.WeightMap {
		if seen[shard] {
			continue
		}
		if shard == "" || shard != filepath.Base(shard) || strings.ContainsAny(shard, `/\`) || shard == "." || shard == ".." || !strings.HasSuffix(shard, ".safetensors") {
			return nil, nil, &FormatError{Off: -1, Tensor: name, Msg: fmt.Sprintf("shard %q is not a .safetensors file name in the folder", shard)}
		}
		seen[shard] = true
		shardNames = append(shardNames, shard)
	}
	slices.Sort(shardNames)
	return &idx, shardNames, nil
}

// index builds the name table and, for a sharded checkpoint, checks that the index and
// the shards agree: every tensor in exactly one shard, the one the index names.
func (c *Checkpoint) index(weightMap map[string]string) error {
	c.byName = make(map[string]int)
	for si, s := range c.Shards {
		for ti := range s.File.Tensors {
			t := &s.File.Tensors[ti]
			if prev, dup := c.byName[t.Name]; dup {
				return fmt.Errorf("%s: %w", s.Path, &FormatError{Off: -1, Tensor: t.Name,
					Msg: fmt.Sprintf("tensor is also in shard %s", c.Shards[c.tensors[prev].Shard].Name)})
			}
			if weightMap != nil {
				if want, ok := weightMap[t.Name]; !ok {
					return fmt.Errorf("%s: %w", s.Path, &FormatError{Off: -1, Tensor: t.Name, Msg: "tensor is not listed in " + IndexFileName})
				} else if want != s.Name {
					return fmt.Errorf("%s: %w", s.Path, &FormatError{Off: -1, Tensor: t.Name, Msg: fmt.Sprintf("%s places the tensor in %s", IndexFileName, want)})
				}
			}
			c.byName[t.Name] = len(c.tensors)
			c.tensors = append(c.tensors, Tensor{TensorInfo: t, Shard: si})
		}
	}
	for name, shard := range weightMap {
		if _, ok := c.byName[name]; !ok {
			return fmt.Errorf("%s: %w", filepath.Join(c.Dir, IndexFileName), &FormatError{Off: -1, Tensor: name,
				Msg: fmt.Sprintf("index places the tensor in %s, which does not hold it", shard)})
		}
	}
	return nil
}

// Tensors lists every tensor, shard by shard in file order.
func (c *Checkpoint) Tensors() []Tensor { return c.tensors }

// Tensor looks a tensor up by name.
func (c *Checkpoint) Tensor(name string) (Tensor, bool) {
	i, ok := c.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return c.tensors[i], true
}

// FileOf returns the path of the shard holding t.
func (c *Checkpoint) FileOf(t Tensor) string { return c.Shards[t.Shard].Path }

// Bytes returns t's bytes (zero copy: see File.Bytes).
func (c *Checkpoint) Bytes(t Tensor) ([]byte, error) {
	return c.Shards[t.Shard].File.Bytes(t.TensorInfo)
}

// PreferRead reports whether some shard would rather be read than mapped
// (File.PreferRead).
func (c *Checkpoint) PreferRead() bool { return c.anyShard((*File).PreferRead) }

// MappingTraps reports whether some shard's probe found the mapping's first touch
// dearer than a copy (File.MappingTraps).
func (c *Checkpoint) MappingTraps() bool { return c.anyShard((*File).MappingTraps) }

// anyShard reports whether f holds for some shard's file, asking in shard order and
// stopping at the first (each question may probe its file once).
func (c *Checkpoint) anyShard(f func(*File) bool) bool {
	for _, s := range c.Shards {
		if f(s.File) {
			return true
		}
	}
	return false
}

// ReadRange reads bytes [off, off+len(dst)) of t into dst with ReadAt, not through
// the mapping.
func (c *Checkpoint) ReadRange(t Tensor, off int64, dst []byte) error {
	if off < 0 || off > t.Size()-int64(len(dst)) {
		return fmt.Errorf("tensor %q: bytes [%d, %d) are outside its %d bytes", t.Name, off, off+int64(len(dst)), t.Size())
	}
	if _, err := c.Shards[t.Shard].File.Section(t.TensorInfo).ReadAt(dst, off); err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return nil
}

// Close closes every shard.
func (c *Checkpoint) Close() error {
	var err error
	for _, s := range c.Shards {
		err = errors.Join(err, s.File.Close())
	}
	c.Shards = nil
	return err
}
