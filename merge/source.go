// Package merge holds gomerge's merge methods and the engine that runs them: it plans a
// merge (which tensors, from which inputs, in which dtype, where they go), then runs the
// method's kernel over each tensor in fixed-size chunks, straight from the memory-mapped
// inputs into the output, on a bounded number of goroutines.
package merge

import (
	"fmt"
	"strings"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/lora"
)

// Source is a checkpoint the engine reads (package checkpoint opens them).
type Source = checkpoint.Source

// TensorMeta describes a tensor of a Source.
type TensorMeta = checkpoint.TensorMeta

// TypeChange is a tensor written in another type than the reference input's.
type TypeChange = checkpoint.TypeChange

func numElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// Open opens a checkpoint for reading, its format detected: a .safetensors file, a
// Hugging Face folder or a GGUF file; or mergekit's BASE+ADAPTER, a base with a PEFT
// LoRA adapter applied as it is read (docs/lora.md).
func Open(path string) (Source, error) {
	if src, ok, err := lora.OpenRef(path, nil); ok {
		return src, err
	}
	return checkpoint.Open(path)
}

// ErrBadInput is wrapped by errors about the inputs themselves (as opposed to I/O).
var ErrBadInput = checkpoint.ErrBadInput

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
type OutputError = checkpoint.OutputError
