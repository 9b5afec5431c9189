package checkpoint

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gmz"
)

// readGGUFForGMZ opens a GGUF file for compression. Its tensors are taken in the
// order of their data, and everything else is kept verbatim so that decompression
// rebuilds the file byte for byte: the bytes before the first tensor's (the header,
// metadata, tensor infos and padding) as the source header, the alignment padding
// before each tensor as its gap, and whatever follows the last as the tail (a .gmz
// of version 2). A tensor of a type gomerge does not know is stored as bytes (U8).
// Merges read the result as the GGUF model it holds (openGMZGGUF).
func readGGUFForGMZ(in string) (*gmzInput, error) {
	f, err := gguf.Open(in)
	if err != nil {
		return nil, err
	}
	ts := slices.Clone(f.Tensors())
	slices.SortStableFunc(ts, func(a, b gguf.TensorInfo) int {
		switch {
		case a.Begin < b.Begin:
			return -1
		case a.Begin > b.Begin:
			return 1
		}
		return 0
	})
	span := func(from, to int64) ([]byte, error) {
		b, err := f.Bytes(&gguf.TensorInfo{Name: "(between tensors)", Begin: from, Size: to - from})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in, err)
		}
		return bytes.Clone(b), nil
	}
	c := &gmzInput{size: f.Size(), close: f.Close}
	fail := func(err error) (*gmzInput, error) {
		f.Close()
		return nil, err
	}
	at := f.Size()
	if len(ts) > 0 {
		at = ts[0].Begin
	}
	hdr, err := span(0, at)
	if err != nil {
		return fail(err)
	}
	c.src = gmz.Source{Format: "gguf", Header: hdr}
	for i := range ts {
		t := &ts[i]
		if t.Begin < at {
			return fail(fmt.Errorf("%w: %s: tensor %q overlaps the previous tensor's data", ErrBadInput, in, t.Name))
		}
		gap, err := span(at, t.Begin)
		if err != nil {
			return fail(err)
		}
		b, err := f.Bytes(t)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", in, err))
		}
		dt, shape := t.Type.DType(), t.Shape
		if dt == dtype.Invalid || dt.Bytes(t.NumElements()) != t.Size ||
			dt.BlockSize() > 1 && t.NumElements()%int64(dt.BlockSize()) != 0 {
			dt, shape = dtype.U8, []int64{t.Size}
		}
		c.inputs = append(c.inputs, gmz.Input{Name: t.Name, DType: dt, Shape: shape, Data: b, Gap: gap})
		at = t.End()
	}
	if c.src.Tail, err = span(at, f.Size()); err != nil {
		return fail(err)
	}
	return c, nil
}

// gmzGGUF is a GGUF model with compressed parts as merges read it
// (docs/compression.md): a compressed GGUF file, or a split model whose parts are
// all or partly compressed. Each compressed part's metadata and tensor infos are
// parsed from the header bytes its container keeps verbatim, its tensors decoded
// from the frames like those of a compressed safetensors file (a span of frames at a
// time, which for a block type is a range of whole blocks: the engine's spans are
// whole chunks); a plain part's tensors are read from its mapping.
type gmzGGUF struct {
	*ggufSource              // the model; a compressed part's File holds the header only
	z           []*gmzSource // per part: its container, nil for a plain part
}

// gmzGGUFHeader parses the GGUF header of a compressed GGUF file. The container's
// tensors must be the header's, each where the header places it in the source file,
// with its size and type: a header that disagrees with the frames is bad input
// naming the file and the tensor.
func gmzGGUFHeader(z *gmzSource) (*gguf.File, error) {
	bad := func(tensor, format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		if tensor != "" {
			msg = fmt.Sprintf("tensor %q: %s", tensor, msg)
		}
		return &gmzInputError{fmt.Errorf("%s: %w: the compressed GGUF file's %s", z.path, gmz.ErrFormat, msg)}
	}
	if z.f.Source.Format != "gguf" {
		return nil, &gmzInputError{fmt.Errorf("%s: %w: compressed from a %s file, not a GGUF file", z.path, ErrBadInput, z.f.Source.Format)}
	}
	f, err := gguf.ParseHeader(z.f.Source.Header, z.f.Source.Size)
	if err != nil {
		return nil, bad("", "header: %v", err)
	}
	if len(f.Tensors()) != len(z.f.Tensors) {
		return nil, bad("", "header lists %d tensors, the container %d", len(f.Tensors()), len(z.f.Tensors))
	}
	for _, t := range f.Tensors() {
		zt, ok := z.f.Tensor(t.Name)
		switch {
		case !ok:
			return nil, bad(t.Name, "header lists it, the container does not hold it")
		case zt.Offset != t.Begin || zt.Size != t.Size:
			return nil, bad(t.Name, "header places it at [%d, +%d), the container at [%d, +%d)", t.Begin, t.Size, zt.Offset, zt.Size)
		case zt.DType != t.Type.DType() && t.Type.DType() != dtype.Invalid:
			return nil, bad(t.Name, "header says %s, the container %s", t.Type, zt.DType)
		}
	}
	return f, nil
}

// openGMZGGUF reads the GGUF model of a compressed GGUF file: the file's own, or,
// for a part of a split model, the whole model's (gmzsplit.go). It closes z on error.
func openGMZGGUF(z *gmzSource, sh *gmzShared) (Source, error) {
	f, err := gmzGGUFHeader(z)
	if err != nil {
		z.Close()
		return nil, err
	}
	return openGGUFModel(z.path, ggufPart{f: f, z: z}, sh)
}

// asGGUF returns the GGUF model of a source read from a GGUF file, compressed or not.
func asGGUF(s Source) (*ggufSource, bool) {
	switch g := s.(type) {
	case *ggufSource:
		return g, true
	case *gmzGGUF:
		return g.ggufSource, true
	}
	return nil, false
}

func (g *gmzGGUF) Decodes() bool { return true }

func (g *gmzGGUF) Close() error {
	var errs []error
	for i, z := range g.z {
		if z != nil {
			errs = append(errs, z.Close())
		} else {
			errs = append(errs, g.parts[i].Close())
		}
	}
	return errors.Join(errs...)
}

// part returns the index of the part that holds the named tensor.
func (g *gmzGGUF) part(name string) (int, error) {
	i, ok := g.where[name]
	if !ok {
		return 0, fmt.Errorf("%s: tensor %q: not found", g.path, name)
	}
	return i, nil
}

func (g *gmzGGUF) Data(name string) ([]byte, error) {
	i, err := g.part(name)
	if err != nil {
		return nil, err
	}
	if z := g.z[i]; z != nil {
		return z.Data(name)
	}
	return g.ggufSource.Data(name) // a view of the plain part's mapping
}

// DecodeUnit is a compressed part's frame size; a plain part's tensors are read in
// any range.
func (g *gmzGGUF) DecodeUnit(name string) int64 {
	if i, err := g.part(name); err == nil && g.z[i] != nil {
		return g.z[i].DecodeUnit(name)
	}
	return 0
}

// DecodeRange decodes a range of a compressed part's tensor, or copies it from a
// plain part's mapping.
func (g *gmzGGUF) DecodeRange(name string, off int64, dst []byte) error {
	i, err := g.part(name)
	if err != nil {
		return err
	}
	if z := g.z[i]; z != nil {
		return z.DecodeRange(name, off, dst)
	}
	b, err := g.ggufSource.Data(name)
	if err != nil {
		return err
	}
	if off < 0 || off > int64(len(b)) || int64(len(dst)) > int64(len(b))-off {
		return fmt.Errorf("%s: tensor %q: bytes [%d, +%d) of %d", g.path, name, off, len(dst), len(b))
	}
	copy(dst, b[off:])
	return nil
}
