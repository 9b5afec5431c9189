// Package merge holds gomerge's merge methods and the engine that runs them: it plans a
// merge (which tensors, from which inputs, in which dtype, where they go), then runs the
// method's kernel over each tensor in fixed-size chunks, straight from the memory-mapped
// inputs into the output, on a bounded number of goroutines.
package merge

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
)

// Source is a checkpoint the engine reads: safetensors (a file or a folder) or GGUF.
type Source interface {
	// Path is what the user named.
	Path() string
	// Tensors lists the tensors in the checkpoint's own order.
	Tensors() []TensorMeta
	// Data returns a tensor's bytes; for memory-mapped sources they alias the mapping.
	Data(name string) ([]byte, error)
	Close() error
}

// TensorMeta describes a tensor of a Source.
type TensorMeta struct {
	Name  string
	DType dtype.DType
	Shape []int64
	File  string // the file that holds it, for messages
}

// NumElements is the product of the shape.
func (t *TensorMeta) NumElements() int64 { return numElements(t.Shape) }

func numElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// Open opens a checkpoint for reading: a .safetensors file, a Hugging Face folder or
// a .gguf file.
func Open(path string) (Source, error) {
	if isGGUFPath(path) {
		return openGGUF(path)
	}
	c, err := safetensors.OpenCheckpoint(path)
	if err != nil {
		return nil, err
	}
	return newSafetensorsSource(c), nil
}

type safetensorsSource struct {
	c     *safetensors.Checkpoint
	metas []TensorMeta
}

func newSafetensorsSource(c *safetensors.Checkpoint) *safetensorsSource {
	s := &safetensorsSource{c: c}
	for _, t := range c.Tensors() {
		s.metas = append(s.metas, TensorMeta{Name: t.Name, DType: t.DType, Shape: t.Shape, File: c.FileOf(t)})
	}
	return s
}

func (s *safetensorsSource) Path() string          { return s.c.Path }
func (s *safetensorsSource) Tensors() []TensorMeta { return s.metas }
func (s *safetensorsSource) Close() error          { return s.c.Close() }

func (s *safetensorsSource) Data(name string) ([]byte, error) {
	t, ok := s.c.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: not found", s.c.Path, name)
	}
	return s.c.Bytes(t)
}

// checkpoint returns the safetensors checkpoint behind a source, if it is one.
func checkpointOf(s Source) (*safetensors.Checkpoint, bool) {
	st, ok := s.(*safetensorsSource)
	if !ok {
		return nil, false
	}
	return st.c, true
}

// ErrBadInput is wrapped by errors about the inputs themselves (as opposed to I/O).
var ErrBadInput = errors.New("bad input")

// MismatchError reports inputs that disagree about a tensor.
type MismatchError struct {
	Tensor string
	Files  []string
	Msg    string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("tensor %q: %s (%s)", e.Tensor, e.Msg, strings.Join(e.Files, ", "))
}

func (e *MismatchError) Is(target error) bool { return target == ErrBadInput }

// OutputError wraps a failure to write the output (disk full, permission, I/O), as
// opposed to a problem with the inputs.
type OutputError struct {
	Path string
	Err  error
}

func (e *OutputError) Error() string { return fmt.Sprintf("writing %s: %v", e.Path, e.Err) }
func (e *OutputError) Unwrap() error { return e.Err }
