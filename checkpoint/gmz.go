package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomerge/gomerge/formats/gmz"
)

// Compressed checkpoints (.gmz, docs/compression.md) as inputs: every command reads
// them like the safetensors file they were made from. Their tensors are not in the
// file as bytes, so a Source cannot hand out a slice of a mapping: Data decodes the
// tensor (its frames in parallel) into memory. The engine asks for that only when it
// starts the tensor and drops it when the tensor is done (Decoder), so a merge holds
// the tensors in flight, not the model.

// Decoder is implemented by sources whose Data decodes into new memory rather than
// returning a view of a mapping. Consumers that plan a whole model before reading it
// (the merge engine) call Data only when they need the bytes, and let them go after.
type Decoder interface {
	Source
	// Decodes reports whether Data allocates and decodes.
	Decodes() bool
}

// Decodes reports whether s's Data decodes into new memory (see Decoder).
func Decodes(s Source) bool {
	d, ok := s.(Decoder)
	return ok && d.Decodes()
}

var gmzMagic = []byte(gmz.Magic)

// isGMZ reports whether path names a compressed checkpoint: a .gmz name, or a regular
// file starting with the container's magic.
func isGMZ(path string) bool {
	return strings.EqualFold(filepath.Ext(path), ".gmz") || startsWith(path, gmzMagic)
}

// gmzSource is an opened .gmz file. A delta file (compress --against) decodes against
// its reference checkpoint, found where the file's header says, relative to the .gmz's
// folder, and checked tensor by tensor against the checksums the delta recorded.
type gmzSource struct {
	path  string
	f     *gmz.File
	ref   Source // the reference of a delta file, nil for a full one
	metas []TensorMeta
}

// gmzInputError marks a .gmz problem as bad input (exit 3), naming the file.
type gmzInputError struct{ err error }

func (e *gmzInputError) Error() string        { return e.err.Error() }
func (e *gmzInputError) Unwrap() error        { return e.err }
func (e *gmzInputError) Is(target error) bool { return target == ErrBadInput }

func gmzErr(path string, err error) error {
	if err == nil {
		return nil
	}
	if !strings.Contains(err.Error(), path) {
		err = fmt.Errorf("%s: %w", path, err)
	}
	if errors.Is(err, gmz.ErrFormat) || errors.Is(err, gmz.ErrReference) {
		return &gmzInputError{err}
	}
	return err
}

func openGMZ(path string) (Source, error) {
	f, err := gmz.Open(path)
	if err != nil {
		return nil, gmzErr(path, err)
	}
	s := &gmzSource{path: path, f: f}
	if f.Source.Format != "safetensors" {
		f.Close()
		return nil, &gmzInputError{fmt.Errorf("%s: compressed from a %q file; gomerge merges compressed safetensors", path, f.Source.Format)}
	}
	delta := false
	for i := range f.Tensors {
		t := &f.Tensors[i]
		s.metas = append(s.metas, TensorMeta{Name: t.Name, DType: t.DType, Shape: t.Shape, File: path})
		delta = delta || t.Delta
	}
	if delta {
		if err := s.openReference(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return s, nil
}

// openReference opens the checkpoint a delta file was coded against. compress
// records it relative to the .gmz's folder (or absolute).
func (s *gmzSource) openReference() error {
	name := s.f.Reference
	if name == "" {
		return &gmzInputError{fmt.Errorf("%s: a delta file that does not name its reference", s.path)}
	}
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(s.path), p)
	}
	if _, err := os.Stat(p); err != nil {
		return &gmzInputError{fmt.Errorf("%s: a delta against %s, which is not there (%s): keep the reference beside the delta, where compress --against found it", s.path, name, p)}
	}
	if isGMZ(p) {
		// A reference must be a full checkpoint (compress refuses a delta as one); a
		// compressed full one decodes like any input.
		ref, err := openGMZ(p)
		if err != nil {
			return err
		}
		if ref.(*gmzSource).ref != nil {
			ref.Close()
			return &gmzInputError{fmt.Errorf("%s: its reference %s is itself a delta", s.path, p)}
		}
		s.ref = ref
		return nil
	}
	ref, err := Open(p)
	if err != nil {
		return fmt.Errorf("%s: opening its reference: %w", s.path, err)
	}
	s.ref = ref
	return nil
}

func (s *gmzSource) Path() string          { return s.path }
func (s *gmzSource) Format() Format        { return Safetensors }
func (s *gmzSource) Tensors() []TensorMeta { return s.metas }
func (s *gmzSource) Decodes() bool         { return true }

func (s *gmzSource) Close() error {
	err := s.f.Close()
	if s.ref != nil {
		err = errors.Join(err, s.ref.Close())
	}
	return err
}

// Data decodes a tensor into new memory, its frames in parallel, each frame's and
// the whole tensor's checksums checked; a delta is checked against its reference's
// bytes first.
func (s *gmzSource) Data(name string) ([]byte, error) {
	t, ok := s.f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: not found", s.path, name)
	}
	var ref []byte
	if t.Delta {
		var err error
		if ref, err = s.ref.Data(name); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: reading its reference: %w", s.path, name, err)
		}
	}
	b := make([]byte, t.Size) // checked against the frames when the header was read
	if err := s.f.ReadTensor(context.Background(), t, b, ref, 0); err != nil {
		return nil, gmzErr(s.path, err)
	}
	return b, nil
}
