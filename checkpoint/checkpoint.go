// Package checkpoint opens checkpoints by path whatever their format (a safetensors
// file, a Hugging Face folder of safetensors shards, a GGUF file) as a Source of named
// tensors, and lays out outputs in a Format. It is the one place that knows which
// formats exist; the merge engine sees tensors, and the format packages
// (formats/safetensors, formats/gguf) know only themselves.
package checkpoint

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// Source is an open checkpoint: its tensors in its own order, each readable by name.
// Its methods are safe for concurrent use until Close.
type Source interface {
	// Path is what the user named.
	Path() string
	// Format is the format the tensors were read from.
	Format() Format
	// Tensors lists the tensors in the checkpoint's own order.
	Tensors() []TensorMeta
	// Data returns a tensor's bytes; for memory-mapped sources they alias the mapping.
	Data(name string) ([]byte, error)
	Close() error
}

// TensorIndex indexes s's tensors by name, pointing into s.Tensors().
func TensorIndex(s Source) map[string]*TensorMeta {
	ts := s.Tensors()
	m := make(map[string]*TensorMeta, len(ts))
	for i := range ts {
		m[ts[i].Name] = &ts[i]
	}
	return m
}

// TensorMeta describes a tensor of a Source.
type TensorMeta struct {
	Name  string
	DType dtype.DType
	Shape []int64
	File  string // the file that holds it, for messages
}

// NumElements is the product of the shape.
func (t *TensorMeta) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Format is a checkpoint format as outputs see it: which type each tensor is written
// in, and how the output's bytes are laid out.
type Format interface {
	// String names the format in messages.
	String() string
	// Writes says what an output of this format is, for messages ("a .gguf file").
	Writes() string
	// OutType returns the rule that gives each output tensor's type from its name,
	// its type in the reference input ref and its shape, when the user asked for the
	// type asked (dtype.Invalid: none) and the options opts. It fails, wrapping
	// ErrUnsupported, if the format cannot hold what was asked.
	OutType(asked dtype.DType, opts OutOptions, ref Source) (func(name string, from dtype.DType, shape []int64) dtype.DType, error)
	// Plan lays out every byte of an output.
	Plan(out Output) (*Layout, error)
}

// The formats gomerge reads and writes.
var (
	Safetensors Format = safetensorsFormat{}
	GGUF        Format = ggufFormat{}
)

// ErrInputChanged reports an input that shrank while being read: a mapped page past
// its new end (which the merge engine's fault guard catches), or a range the header
// promised that a read found missing.
var ErrInputChanged = errors.New("input changed while being read (truncated or replaced by another program?)")

// ErrUnsupported is wrapped by errors about what gomerge cannot write: a type a format
// cannot hold, an output path of a format gomerge does not write.
var ErrUnsupported = errors.New("not supported")

type unsupportedError struct{ msg string }

func (e *unsupportedError) Error() string        { return e.msg }
func (e *unsupportedError) Is(target error) bool { return target == ErrUnsupported }

func unsupported(format string, args ...any) error {
	return &unsupportedError{fmt.Sprintf(format, args...)}
}

// ggufMagic starts every GGUF file.
var ggufMagic = []byte("GGUF")

// Open opens a checkpoint for reading, its format detected: a folder is a Hugging
// Face safetensors checkpoint (or of pytorch_model*.bin, see isTorchBin); a file is
// GGUF if it is named .gguf or starts with GGUF's magic, a compressed checkpoint
// (gomerge compress) if it is named .gmz or starts with that magic, a torch.save
// checkpoint if isTorchBin says so, safetensors otherwise.
func Open(path string) (Source, error) {
	if isGGUF(path) {
		return openGGUF(path)
	}
	if isGMZ(path) {
		return openGMZ(path)
	}
	if IsCompressedFolder(path) { // gmzfolder.go
		return openGMZFolder(path)
	}
	if isTorchBin(path) { // torchbin.go
		return openTorchBin(path)
	}
	return openSafetensors(path)
}

func isGGUF(path string) bool {
	return strings.EqualFold(filepath.Ext(path), ".gguf") || startsWith(path, ggufMagic)
}

// startsWith reports whether path is a regular file whose first bytes are one of
// magics. Only a regular file is read: opening a FIFO would wait for a writer. A file
// that cannot be read is not sniffed: the format's own Open reports it.
func startsWith(path string, magics ...[]byte) bool {
	if st, err := os.Stat(path); err != nil || !st.Mode().IsRegular() {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	longest := 0
	for _, m := range magics {
		longest = max(longest, len(m))
	}
	head := make([]byte, longest)
	n, _ := io.ReadFull(f, head)
	return slices.ContainsFunc(magics, func(m []byte) bool { return bytes.HasPrefix(head[:n], m) })
}

// notFolderExt are extensions that name a file that gomerge cannot write: refused
// rather than silently making a folder of that name.
var notFolderExt = map[string]bool{".bin": true, ".pt": true, ".pth": true, ".ckpt": true,
	".h5": true, ".npz": true, ".json": true, ".onnx": true, ".msgpack": true}

// OutputFormat is the format and the shape (one file, or a folder) of an output at
// path: NAME.gguf is a GGUF file, NAME.safetensors a safetensors file, and a name
// without an extension a Hugging Face folder.
func OutputFormat(path string) (f Format, folder bool, err error) {
	ext := strings.ToLower(filepath.Ext(path))
	switch {
	case ext == ".gguf":
		return GGUF, false, nil
	case ext == ".safetensors", ext == ".gmz":
		return Safetensors, false, nil
	case notFolderExt[ext]:
		return nil, false, unsupported("output %s: gomerge writes a .safetensors file, a folder or a .gguf file (%s output is not supported)", path, ext)
	}
	return Safetensors, true, nil
}

// IsCompressedPath reports whether an output path names a compressed checkpoint
// (NAME.gmz), which a merge writes as safetensors coded by Compress.
func IsCompressedPath(path string) bool { return strings.EqualFold(filepath.Ext(path), ".gmz") }

// IsFolderPath reports whether an output path names a folder (see OutputFormat).
func IsFolderPath(path string) bool {
	_, folder, err := OutputFormat(path)
	return folder && err == nil
}

// Output describes an output for Format.Plan.
type Output struct {
	Name    string // the destination's base name
	Folder  bool
	Tensors []Tensor // in output order
	// Provenance are keys and values the output records about how it was made, in
	// the order a GGUF file lists them.
	Provenance [][2]string
	// Ref is the reference input: the output keeps its metadata and, for a folder, its
	// file layout and its other files (config, tokenizer).
	Ref Source
	// InPlace says that Ref is being replaced: its other files are linked, sub-folders
	// included, rather than copied.
	InPlace bool
	// ShardSize bounds a folder's shards; 0 keeps the reference folder's own layout,
	// or DefaultShardSize.
	ShardSize int64
	// Options are the format-specific requests (GGUF's mixes and overrides).
	Options OutOptions
}

// DefaultShardSize is the largest shard a folder output gets unless told otherwise
// (Hugging Face's default).
const DefaultShardSize = 5_000_000_000

// Tensor is one tensor of an output.
type Tensor struct {
	Name  string
	Shape []int64
	DType dtype.DType // the type written
	From  dtype.DType // its type in the reference input
}

// Layout is a planned output: its bytes, for atomicout, and the tensors whose type
// changed in a way the user should hear of.
type Layout struct {
	atomicout.Layout
	TypeChanges []TypeChange
}

// TypeChange is a tensor written in another type than the reference input's, because
// the format cannot write that type or the user asked for another.
type TypeChange struct {
	Tensor string `json:"tensor"`
	From   string `json:"from"`
	To     string `json:"to"`
}

// isWeightFile says which files of a reference folder are weights, of any format,
// that an output replaces rather than carries over.
func isWeightFile(name string) bool {
	for _, suf := range []string{".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".gmz"} {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}
