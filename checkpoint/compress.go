package checkpoint

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gmz"
	"github.com/gomerge/gomerge/formats/safetensors"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// Writing compressed checkpoints (docs/compression.md): `gomerge compress`, merges
// with `--out x.gmz`, and sfa's `--keep-history` all code a safetensors file into a
// .gmz here, optionally as a delta against a reference checkpoint.

// OutputError wraps a failure to write an output (disk full, permission, I/O), as
// opposed to a problem with the inputs (merge.OutputError is this type).
type OutputError struct {
	Path string
	Err  error
}

func (e *OutputError) Error() string { return fmt.Sprintf("writing %s: %v", e.Path, e.Err) }
func (e *OutputError) Unwrap() error { return e.Err }

// outputWriter is an output file being written: its write errors are the output's
// (OutputError: disk full, I/O), not the input's being coded into it.
type outputWriter struct {
	w    io.Writer
	path string
}

func (o outputWriter) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	if err != nil {
		err = &OutputError{Path: o.path, Err: err}
	}
	return n, err
}

// CompressOptions tune Compress.
type CompressOptions struct {
	// Against is a reference checkpoint (any format Open reads; a .gmz must be a full
	// one): tensors it holds with the same name, dtype and shape are coded as the XOR
	// with it. "" codes every tensor on its own.
	Against   string
	FrameSize int  // gmz.Options.FrameSize
	Workers   int  // gmz.Options.Workers
	Stats     bool // gmz.Options.Stats
}

// CompressResult is what Compress did.
type CompressResult struct {
	InBytes      int64 // the checkpoint's size (every part's, for a split GGUF model)
	DeltaTensors int   // tensors coded against the reference
	Stats        gmz.Stats
	// Outputs are the files written when they are not the output path named: the
	// parts of a split GGUF model (compressSplit).
	Outputs []string
}

// Compress codes the checkpoint file in (safetensors or GGUF) into a .gmz at out,
// through the crash-safe output (lock, temporary file, fsync, rename); a part of a
// split GGUF model, with out named NAME.gmz, codes every part (compressSplit). A delta records the reference's path
// relative to out's folder, where merges that read the delta look for it.
func Compress(ctx context.Context, in, out string, opts CompressOptions) (*CompressResult, error) {
	if isGGUF(in) {
		if res, done, err := compressSplit(ctx, in, out, opts); done || err != nil { // gmzsplit.go
			return res, err
		}
	}
	dest, err := atomicout.Lock(ctx, out, false, nil)
	if err != nil {
		return nil, &OutputError{Path: out, Err: err}
	}
	defer dest.Unlock()
	o, err := dest.Create(atomicout.Layout{Files: []atomicout.File{{Size: atomicout.Streamed}}})
	if err != nil {
		return nil, &OutputError{Path: out, Err: err}
	}
	res, err := WriteCompressed(ctx, o.Stream(0), in, out, opts)
	if err != nil {
		o.Abort()
		return nil, err
	}
	if err := o.Commit(); err != nil {
		return nil, &OutputError{Path: out, Err: err}
	}
	return res, nil
}

// WriteCompressed codes the checkpoint file in (safetensors or GGUF) as a .gmz into
// w. out is the path the .gmz will have: a delta's reference path is relative to its
// folder, and w's write errors are the output's (OutputError naming out), not the
// input's.
func WriteCompressed(ctx context.Context, w io.Writer, in, out string, opts CompressOptions) (*CompressResult, error) {
	w = outputWriter{w, out}
	outDir := filepath.Dir(out)
	open := readSafetensorsForGMZ
	if isGGUF(in) {
		open = readGGUFForGMZ // compressgguf.go
	}
	c, err := open(in)
	if err != nil {
		return nil, err
	}
	defer c.close()
	var ref *Reference
	if opts.Against != "" {
		if ref, err = OpenReference(opts.Against); err != nil {
			return nil, err
		}
		defer ref.Close()
	}
	inputs := c.inputs
	res := &CompressResult{InBytes: c.size}
	if ref != nil {
		for i := range inputs {
			rb, ok, err := ref.Match(inputs[i].Name, inputs[i].DType, inputs[i].Shape)
			if err != nil {
				return nil, err
			}
			if ok {
				inputs[i].Ref = rb
				res.DeltaTensors++
			}
		}
	}
	if ref != nil && res.DeltaTensors == 0 && len(inputs) > 0 {
		return nil, fmt.Errorf("%w: --against %s: no tensor of it matches one of %s in name, dtype and shape", ErrBadInput, opts.Against, in)
	}
	refName := ""
	if opts.Against != "" {
		refName = referencePath(opts.Against, outDir)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	res.Stats, err = gmz.Write(ctx, bw, c.src, c.meta, inputs,
		gmz.Options{FrameSize: opts.FrameSize, Workers: opts.Workers, Reference: refName, Stats: opts.Stats})
	if err != nil {
		return nil, err
	}
	return res, bw.Flush()
}

// gmzInput is a checkpoint file opened for compression: its description for the
// .gmz header and its tensors in file order, viewing its mapping until close.
type gmzInput struct {
	src    gmz.Source
	meta   map[string]string
	inputs []gmz.Input
	size   int64
	close  func() error
}

func readSafetensorsForGMZ(in string) (*gmzInput, error) {
	src, err := safetensors.Open(in)
	if err != nil {
		return nil, err
	}
	// The source header (length prefix and JSON), read through the same descriptor
	// the tensors are mapped from.
	hdr := make([]byte, 8+src.HeaderSize())
	if _, err := src.Section(&safetensors.TensorInfo{Begin: 0, End: int64(len(hdr))}).ReadAt(hdr, 0); err != nil {
		src.Close()
		return nil, fmt.Errorf("%s: reading header: %w", in, err)
	}
	c := &gmzInput{src: gmz.Source{Format: "safetensors", Header: hdr}, meta: src.Metadata, size: src.Size(), close: src.Close}
	for i := range src.Tensors { // file order, so the .gmz rebuilds the file
		t := &src.Tensors[i]
		b, err := src.Bytes(t)
		if err != nil {
			src.Close()
			return nil, fmt.Errorf("%s: %w", in, err)
		}
		c.inputs = append(c.inputs, gmz.Input{Name: t.Name, DType: t.DType, Shape: t.Shape, Data: b})
	}
	return c, nil
}

// referencePath is how a delta in outDir names its reference: relative to outDir
// when it can be (a run's folder moves as a whole), absolute otherwise.
func referencePath(ref, outDir string) string {
	absRef, err1 := filepath.Abs(ref)
	absDir, err2 := filepath.Abs(outDir)
	if err1 != nil || err2 != nil {
		return ref
	}
	if rel, err := filepath.Rel(absDir, absRef); err == nil {
		return rel
	}
	return absRef
}

// Reference is a checkpoint deltas are coded against, matched tensor by tensor by
// name, dtype and shape.
type Reference struct {
	path  string
	src   Source
	index map[string]*TensorMeta
}

// OpenReference opens a reference checkpoint. A compressed one must be a full
// checkpoint, not a delta itself.
func OpenReference(path string) (*Reference, error) {
	src, err := Open(path)
	if err != nil {
		return nil, err
	}
	if isDelta(src) {
		src.Close()
		return nil, &gmzInputError{fmt.Errorf("%s is itself a delta; a reference must be a full checkpoint", path)}
	}
	return &Reference{path: path, src: src, index: TensorIndex(src)}, nil
}

// Close closes the reference.
func (r *Reference) Close() error { return r.src.Close() }

// ReadRange reads bytes [off, off+len(dst)) of the reference's tensor with this name,
// dtype and shape into dst, or reports ok == false when it has none such: with pread
// (or a .gmz reference's frames decoded) where the source reads ranges, so that
// decoding a delta a frame at a time copies its reference into warm buffers rather
// than touching it through the mapping.
func (r *Reference) ReadRange(name string, dt dtype.DType, shape []int64, off int64, dst []byte) (bool, error) {
	t := r.index[name]
	if t == nil || t.DType != dt || !slices.Equal(t.Shape, shape) {
		return false, nil
	}
	if rd, ok := r.src.(RangeDecoder); ok {
		return true, rd.DecodeRange(name, off, dst)
	}
	b, err := r.src.Data(name)
	if err != nil {
		return false, err
	}
	if off < 0 || off+int64(len(dst)) > int64(len(b)) {
		return false, fmt.Errorf("%s: tensor %q: bytes [%d, %d) of %d", r.path, name, off, off+int64(len(dst)), len(b))
	}
	copy(dst, b[off:])
	return true, nil
}

// Checksum returns the CRC-32C of the reference's tensor with this name, dtype and
// shape where the reference knows it without reading the tensor (a compressed
// reference records it: Checksummer), or ok == false.
func (r *Reference) Checksum(name string, dt dtype.DType, shape []int64) (uint32, bool) {
	t := r.index[name]
	cs, isCS := r.src.(Checksummer)
	if t == nil || t.DType != dt || !slices.Equal(t.Shape, shape) || !isCS {
		return 0, false
	}
	return cs.Checksum(name)
}

// Match returns the reference's bytes of the tensor with this name, dtype and
// shape, or ok == false when it has none such.
func (r *Reference) Match(name string, dt dtype.DType, shape []int64) ([]byte, bool, error) {
	t := r.index[name]
	if t == nil || t.DType != dt || !slices.Equal(t.Shape, shape) {
		return nil, false, nil
	}
	b, err := r.src.Data(name)
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}
