package checkpoint

import (
	"bytes"
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
// Merges do not read compressed GGUF files (docs/compression.md): decompress first.
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
