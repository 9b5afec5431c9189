// Package gguf reads and writes GGUF files, the checkpoint format of llama.cpp and
// ggml: typed metadata, tensor descriptions, and tensor data, which Dequantize converts
// to float32 for the types it supports (the block kernels live in package dtype, which
// the merge engine shares). It reads versions 2 and 3 and writes version 3: Plan lays
// a file out the way llama.cpp's loader requires, Layout.Write streams it.
//
// A File is memory-mapped when opened with Open; its tensors' bytes are then slices of
// the mapping (zero copy). Concurrent reads from one File are safe.
//
// GGUF stores a tensor's dimensions ne[0..n) with ne[0] innermost; this package reports
// row-major shapes (outermost first), converted by shapeFromNE on reading and by its
// inverse neFromShape on writing, the only two places dimensions are reversed.
//
// # Security
//
// Nothing read from a file is trusted. The magic and version must be known (2 or 3).
// Every string and array length is checked against the bytes left in the file, and
// against named limits, before anything is allocated; counts of tensors and metadata
// pairs are bounded by the smallest size their entries could have. Metadata keys and
// tensor names must be unique, value types known, and arrays not nested.
// general.alignment, if present, must be a UINT32 power of two. Ranks are at most
// maxDims; every ggml type must be known and supported; ne[0] must be a multiple of the
// type's block size; element counts and byte sizes are computed with overflow checks.
// Each tensor's offset must equal the running sum of the padded sizes of the tensors
// before it (what llama.cpp requires, which implies aligned, in order and
// non-overlapping), and the padded data must lie inside the file. No allocation is
// sized by a value from the file beyond what the file's own size bounds. A malformed
// file gives an error wrapping ErrFormat, never a panic.
package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"

	"github.com/gomerge/gomerge/formats/internal/formaterr"
	"github.com/gomerge/gomerge/formats/internal/mapfile"
)

const (
	magic            = "GGUF"
	defaultAlignment = 32
	maxDims          = 4       // GGML_MAX_DIMS
	maxNameLen       = 63      // GGML_MAX_NAME - 1: llama.cpp rejects longer tensor names
	maxStringLen     = 1 << 30 // any one metadata string or key
	maxArrayLen      = 1 << 32 // elements of one metadata array
	maxElements      = 1 << 56 // far beyond any real tensor; keeps sizes from overflowing
	window           = 64 << 10
)

// ErrFormat is wrapped by every error that reports a malformed file.
var ErrFormat = errors.New("malformed gguf")

// ErrUnsupported is wrapped by errors for well-formed data this package cannot handle:
// tensor types it knows only by name, and types Dequantize does not convert.
var ErrUnsupported = errors.New("unsupported gguf type")

// FormatError says what is wrong with a file and where.
type FormatError struct {
	Off    int64  // byte offset in the file the problem was found at, or -1
	Tensor string // the tensor concerned, if any
	Msg    string
	Err    error // an underlying error, if any
}

func (e *FormatError) Error() string {
	return formaterr.Message("gguf", e.Tensor, e.Msg, e.Off, e.Err)
}

func (e *FormatError) Is(target error) bool { return target == ErrFormat }
func (e *FormatError) Unwrap() error        { return e.Err }

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name   string
	Type   Type
	Shape  []int64 // row-major: Shape[len-1] is ggml's ne[0], the innermost dimension
	Offset int64   // as stored: relative to the start of the data section
	Begin  int64   // offset of the first byte in the file
	Size   int64   // length in bytes, without padding
}

// NumElements is the product of the shape (1 for a scalar).
func (t *TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// End is the offset one past the tensor's last byte.
func (t *TensorInfo) End() int64 { return t.Begin + t.Size }

// File is an opened GGUF file.
type File struct {
	version   uint32
	metadata  []KV
	meta      map[string]int
	tensors   []TensorInfo
	index     map[string]int
	alignment int64
	dataStart int64
	size      int64
	r         io.ReaderAt
	mapped    []byte
	closer    *mapfile.Mapped
	// headerOnly marks a File from ParseHeader: Bytes refuses before allocating.
	headerOnly bool
}

// Open memory-maps the named file and parses its header. The caller must Close it.
func Open(path string) (*File, error) {
	f, m, err := mapfile.Open(path, NewFile, &FormatError{Off: -1, Msg: "not a regular file"})
	if err == nil {
		f.mapped, f.closer = m.Data, m
	}
	return f, err
}

// NewFile parses the header of a GGUF file read through r, which holds size bytes.
// Tensor data is then read with ReadAt (Bytes copies unless the file is mapped).
func NewFile(r io.ReaderAt, size int64) (*File, error) {
	if size < 0 {
		return nil, &FormatError{Off: -1, Msg: fmt.Sprintf("negative size %d", size)}
	}
	d := &decoder{r: r, size: size}
	f := &File{r: r, size: size, alignment: defaultAlignment}
	if err := f.parse(d); err != nil {
		return nil, err
	}
	return f, nil
}

// ParseHeader parses a GGUF header held apart from its file's data: hdr is the file's
// bytes before its first tensor's (gomerge's compressed container keeps them
// verbatim, its tensors coded elsewhere), size the whole file's length. The header
// must lie within hdr, so that no allocation is sized beyond len(hdr), and tensor
// offsets are checked against size as Open checks them. The File describes the
// tensors but holds no data: Bytes and Dequantize fail.
func ParseHeader(hdr []byte, size int64) (*File, error) {
	if size < int64(len(hdr)) {
		return nil, &FormatError{Off: -1, Msg: fmt.Sprintf("a %d-byte header for a %d-byte file", len(hdr), size)}
	}
	d := &decoder{r: bytes.NewReader(hdr), size: int64(len(hdr))}
	f := &File{r: noData{}, size: size, alignment: defaultAlignment, headerOnly: true}
	if err := f.parse(d); err != nil {
		return nil, err
	}
	return f, nil
}

// noData is the reader of a File from ParseHeader, which holds no tensor bytes.
type noData struct{}

func (noData) ReadAt([]byte, int64) (int, error) {
	return 0, errors.New("gguf: the file's header only was parsed; its data is not held")
}

// decoder reads the header sequentially through a bounded window of the file.
type decoder struct {
	r       io.ReaderAt
	size    int64
	off     int64  // the next byte to decode
	buf     []byte // file bytes [bufOff, bufOff+len(buf))
	bufOff  int64
	scratch []byte
}

func (d *decoder) errf(off int64, format string, args ...any) error {
	return &FormatError{Off: off, Msg: fmt.Sprintf(format, args...)}
}

func (d *decoder) remaining() int64 { return d.size - d.off }

// next returns the next n bytes and advances past them. The slice is valid until the
// next call. n must have been checked against remaining by the caller or is small.
func (d *decoder) next(n int64, what string) ([]byte, error) {
	if n < 0 || n > d.remaining() {
		return nil, d.errf(d.off, "%s: %d bytes run past the end of the %d-byte file (truncated?)", what, n, d.size)
	}
	if d.off >= d.bufOff && d.off+n <= d.bufOff+int64(len(d.buf)) {
		b := d.buf[d.off-d.bufOff : d.off-d.bufOff+n]
		d.off += n
		return b, nil
	}
	var b []byte
	if n > window {
		b = make([]byte, n) // bounded by the bytes left in the file
		if _, err := d.r.ReadAt(b, d.off); err != nil {
			return nil, &FormatError{Off: d.off, Msg: "reading " + what, Err: err}
		}
	} else {
		m := min(int64(window), d.remaining())
		if d.scratch == nil {
			d.scratch = make([]byte, window)
		}
		d.buf = d.scratch[:m]
		d.bufOff = d.off
		if k, err := d.r.ReadAt(d.buf, d.off); k < int(m) {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			d.buf = nil
			return nil, &FormatError{Off: d.off, Msg: "reading " + what, Err: err}
		}
		b = d.buf[:n]
	}
	d.off += n
	return b, nil
}

func (d *decoder) u32(what string) (uint32, error) {
	b, err := d.next(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	b, err := d.next(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (d *decoder) str(what string, limit int64) (string, error) {
	at := d.off
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(limit) {
		return "", d.errf(at, "%s length %d exceeds the limit of %d", what, n, limit)
	}
	if int64(n) > d.remaining() {
		return "", d.errf(at, "%s length %d runs past the end of the %d-byte file", what, n, d.size)
	}
	b, err := d.next(int64(n), what)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func (f *File) parse(d *decoder) error {
	b, err := d.next(4, "magic")
	if err != nil {
		return err
	}
	if string(b) != magic {
		return d.errf(0, "bad magic %q, want %q", b, magic)
	}
	v, err := d.u32("version")
	if err != nil {
		return err
	}
	if v != 2 && v != 3 {
		return d.errf(4, "unsupported version %d (want 2 or 3)", v)
	}
	f.version = v
	nt, err := d.u64("tensor count")
	if err != nil {
		return err
	}
	nkv, err := d.u64("metadata count")
	if err != nil {
		return err
	}
	// The smallest metadata pair is an empty key, a type and a one-byte value (13
	// bytes); the smallest tensor info is an empty name, n_dims, type and offset (24).
	if nkv > uint64(d.remaining()/13) {
		return d.errf(16, "metadata count %d is more than the file could hold", nkv)
	}
	if nt > uint64(d.remaining()/24) {
		return d.errf(8, "tensor count %d is more than the file could hold", nt)
	}
	f.metadata = make([]KV, 0, nkv)
	f.meta = make(map[string]int, nkv)
	for range nkv {
		at := d.off
		key, err := d.str("metadata key", maxStringLen)
		if err != nil {
			return err
		}
		if _, dup := f.meta[key]; dup {
			return d.errf(at, "metadata key %q appears twice", key)
		}
		val, err := d.value(key)
		if err != nil {
			return err
		}
		if key == "general.alignment" {
			a, ok := val.Data.(uint32)
			if !ok {
				return d.errf(at, "general.alignment is %s, want UINT32", val.Type)
			}
			if a == 0 || a&(a-1) != 0 {
				return d.errf(at, "general.alignment %d is not a power of two", a)
			}
			f.alignment = int64(a)
		}
		f.meta[key] = len(f.metadata)
		f.metadata = append(f.metadata, KV{Key: key, Value: val})
	}
	f.tensors = make([]TensorInfo, 0, nt)
	f.index = make(map[string]int, nt)
	for range nt {
		t, err := d.tensorInfo()
		if err != nil {
			return err
		}
		if _, dup := f.index[t.Name]; dup {
			return &FormatError{Off: d.off, Tensor: t.Name, Msg: "name appears twice"}
		}
		f.index[t.Name] = len(f.tensors)
		f.tensors = append(f.tensors, t)
	}
	return f.layout(d.off)
}

func (d *decoder) value(key string) (Value, error) {
	at := d.off
	t, err := d.u32("value type")
	if err != nil {
		return Value{}, err
	}
	vt := ValueType(t)
	if vt != ValueArray {
		if vt.size() == 0 {
			return Value{}, d.errf(at, "metadata %q: unknown value type %d", key, t)
		}
		return d.scalar(vt, key)
	}
	et, err := d.u32("array type")
	if err != nil {
		return Value{}, err
	}
	elem := ValueType(et)
	if elem == ValueArray {
		return Value{}, d.errf(at, "metadata %q: nested arrays are not allowed", key)
	}
	if elem.size() == 0 {
		return Value{}, d.errf(at, "metadata %q: unknown array element type %d", key, et)
	}
	n, err := d.u64("array length")
	if err != nil {
		return Value{}, err
	}
	if n > maxArrayLen || n > uint64(d.remaining()/elem.size()) {
		return Value{}, d.errf(at, "metadata %q: array of %d %s runs past the end of the file", key, n, elem)
	}
	v := Value{Type: ValueArray, Elem: elem}
	if elem == ValueString {
		s := make([]string, n) // n·8 ≤ the bytes left
		for i := range s {
			if s[i], err = d.str("string", maxStringLen); err != nil {
				return Value{}, err
			}
		}
		v.Data = s
		return v, nil
	}
	raw, err := d.next(int64(n)*elem.size(), "array")
	if err != nil {
		return Value{}, err
	}
	le := binary.LittleEndian
	switch elem {
	case ValueUint8:
		v.Data = append([]uint8(nil), raw...)
	case ValueInt8:
		v.Data = decodeSlice(raw, 1, func(b []byte) int8 { return int8(b[0]) })
	case ValueBool:
		bs := make([]bool, n)
		for i, c := range raw {
			if c > 1 {
				return Value{}, d.errf(at, "metadata %q: bool %d is not 0 or 1", key, c)
			}
			bs[i] = c == 1
		}
		v.Data = bs
	case ValueUint16:
		v.Data = decodeSlice(raw, 2, le.Uint16)
	case ValueInt16:
		v.Data = decodeSlice(raw, 2, func(b []byte) int16 { return int16(le.Uint16(b)) })
	case ValueUint32:
		v.Data = decodeSlice(raw, 4, le.Uint32)
	case ValueInt32:
		v.Data = decodeSlice(raw, 4, func(b []byte) int32 { return int32(le.Uint32(b)) })
	case ValueFloat32:
		v.Data = decodeSlice(raw, 4, func(b []byte) float32 { return math.Float32frombits(le.Uint32(b)) })
	case ValueUint64:
		v.Data = decodeSlice(raw, 8, le.Uint64)
	case ValueInt64:
		v.Data = decodeSlice(raw, 8, func(b []byte) int64 { return int64(le.Uint64(b)) })
	case ValueFloat64:
		v.Data = decodeSlice(raw, 8, func(b []byte) float64 { return math.Float64frombits(le.Uint64(b)) })
	}
	return v, nil
}

func decodeSlice[T any](raw []byte, size int, get func([]byte) T) []T {
	s := make([]T, len(raw)/size)
	for i := range s {
		s[i] = get(raw[i*size:])
	}
	return s
}

func (d *decoder) scalar(vt ValueType, key string) (Value, error) {
	v := Value{Type: vt}
	if vt == ValueString {
		s, err := d.str("string", maxStringLen)
		if err != nil {
			return Value{}, err
		}
		v.Data = s
		return v, nil
	}
	at := d.off
	b, err := d.next(vt.size(), "value")
	if err != nil {
		return Value{}, err
	}
	le := binary.LittleEndian
	switch vt {
	case ValueUint8:
		v.Data = b[0]
	case ValueInt8:
		v.Data = int8(b[0])
	case ValueBool:
		if b[0] > 1 {
			return Value{}, d.errf(at, "metadata %q: bool %d is not 0 or 1", key, b[0])
		}
		v.Data = b[0] == 1
	case ValueUint16:
		v.Data = le.Uint16(b)
	case ValueInt16:
		v.Data = int16(le.Uint16(b))
	case ValueUint32:
		v.Data = le.Uint32(b)
	case ValueInt32:
		v.Data = int32(le.Uint32(b))
	case ValueFloat32:
		v.Data = math.Float32frombits(le.Uint32(b))
	case ValueUint64:
		v.Data = le.Uint64(b)
	case ValueInt64:
		v.Data = int64(le.Uint64(b))
	case ValueFloat64:
		v.Data = math.Float64frombits(le.Uint64(b))
	}
	return v, nil
}

func (d *decoder) tensorInfo() (TensorInfo, error) {
	at := d.off
	name, err := d.str("tensor name", maxNameLen)
	if err != nil {
		return TensorInfo{}, err
	}
	bad := func(format string, args ...any) (TensorInfo, error) {
		return TensorInfo{}, &FormatError{Off: at, Tensor: name, Msg: fmt.Sprintf(format, args...)}
	}
	nd, err := d.u32("n_dims")
	if err != nil {
		return TensorInfo{}, err
	}
	if nd > maxDims {
		return bad("n_dims %d exceeds GGML_MAX_DIMS (%d)", nd, maxDims)
	}
	var ne [maxDims]uint64
	for i := range nd {
		if ne[i], err = d.u64("ne"); err != nil {
			return TensorInfo{}, err
		}
	}
	typ, err := d.u32("tensor type")
	if err != nil {
		return TensorInfo{}, err
	}
	off, err := d.u64("tensor offset")
	if err != nil {
		return TensorInfo{}, err
	}
	t := Type(typ)
	ti, known := types[t]
	switch {
	case !known:
		return bad("unknown ggml type id %d", typ)
	case !ti.supported:
		return TensorInfo{}, &FormatError{Off: at, Tensor: name, Msg: fmt.Sprintf("unsupported type %s for tensor %s", ti.name, name), Err: ErrUnsupported}
	}
	numel := uint64(1)
	for i, n := range ne[:nd] {
		if n > maxElements || (n != 0 && numel > maxElements/n) {
			return bad("ne %v has more than %d elements", ne[:i+1], uint64(maxElements))
		}
		numel *= n
	}
	if nd > 0 && ne[0]%uint64(ti.blockSize) != 0 {
		return bad("ne[0] = %d is not a multiple of %s's block size %d", ne[0], ti.name, ti.blockSize)
	}
	if nd == 0 && ti.blockSize != 1 {
		return bad("a scalar cannot be of block type %s", ti.name)
	}
	// numel ≤ 2⁵⁶ and typeSize/blockSize ≤ 4, so this does not overflow.
	size := numel / uint64(ti.blockSize) * uint64(ti.typeSize)
	if off > math.MaxInt64 {
		return bad("offset %d overflows", off)
	}
	return TensorInfo{Name: name, Type: t, Shape: shapeFromNE(ne[:nd]), Offset: int64(off), Size: int64(size)}, nil
}

// shapeFromNE converts ggml's ne[] (ne[0] innermost) to a row-major shape (outermost
// first): ne = [4096, 32000] is the shape [32000, 4096]. It is the only place the
// package reverses dimensions. The values must have been checked to fit in int64.
func shapeFromNE(ne []uint64) []int64 {
	s := make([]int64, len(ne))
	for i, n := range ne {
		s[len(ne)-1-i] = int64(n)
	}
	return s
}

// pad rounds n up to a multiple of align, a power of two; ok is false on overflow.
func pad(n, align int64) (int64, bool) {
	s, carry := bits.Add64(uint64(n), uint64(align-1), 0)
	if carry != 0 || s > math.MaxInt64 {
		return 0, false
	}
	return int64(s &^ uint64(align-1)), true
}

// layout places the data section after the header and checks every tensor's offset.
func (f *File) layout(headerEnd int64) error {
	start, ok := pad(headerEnd, f.alignment)
	if !ok || start > f.size && len(f.tensors) > 0 {
		return &FormatError{Off: headerEnd, Msg: fmt.Sprintf("data section at %d starts past the end of the %d-byte file", start, f.size)}
	}
	f.dataStart = start
	var at int64 // the running sum of padded sizes
	for i := range f.tensors {
		t := &f.tensors[i]
		switch {
		case t.Offset%f.alignment != 0:
			return &FormatError{Off: -1, Tensor: t.Name, Msg: fmt.Sprintf("offset %d is not a multiple of the alignment %d", t.Offset, f.alignment)}
		case t.Offset > f.size-start:
			return &FormatError{Off: -1, Tensor: t.Name, Msg: fmt.Sprintf("offset %d is past the end of the %d-byte file", t.Offset, f.size)}
		case t.Offset < at:
			return &FormatError{Off: -1, Tensor: t.Name, Msg: fmt.Sprintf("offset %d overlaps the tensor before it, which ends at %d", t.Offset, at)}
		case t.Offset > at:
			return &FormatError{Off: -1, Tensor: t.Name, Msg: fmt.Sprintf("offset %d leaves a hole after the tensor before it (want %d, the running sum of padded sizes)", t.Offset, at)}
		}
		padded, ok := pad(t.Size, f.alignment)
		if !ok || padded > f.size-start-at {
			return &FormatError{Off: -1, Tensor: t.Name, Msg: fmt.Sprintf("data [%d, +%d) (padded to %d) runs past the end of the %d-byte file (truncated?)", start+at, t.Size, f.alignment, f.size)}
		}
		t.Begin = start + at
		at += padded
	}
	return nil
}

// Version is the file's GGUF version, 2 or 3.
func (f *File) Version() uint32 { return f.version }

// Metadata returns the metadata pairs in file order. The slice is the File's own.
func (f *File) Metadata() []KV { return f.metadata }

// Lookup returns the value of the metadata key.
func (f *File) Lookup(key string) (Value, bool) {
	i, ok := f.meta[key]
	if !ok {
		return Value{}, false
	}
	return f.metadata[i].Value, true
}

// Tensors returns the tensor descriptions in file order. The slice is the File's own.
func (f *File) Tensors() []TensorInfo { return f.tensors }

// Tensor returns the named tensor's description.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return nil, false
	}
	return &f.tensors[i], true
}

// Alignment is the data alignment: general.alignment, or 32 when absent.
func (f *File) Alignment() int64 { return f.alignment }

// DataOffset is where the data section starts in the file.
func (f *File) DataOffset() int64 { return f.dataStart }

// Size is the file's length in bytes.
func (f *File) Size() int64 { return f.size }

// Mapped reports whether tensor bytes can be had without copying.
func (f *File) Mapped() bool { return f.mapped != nil }

// Bytes returns the tensor's bytes (without padding). For a mapped file the slice
// aliases the mapping and must not be written or used after Close; otherwise the bytes
// are read into a new slice.
func (f *File) Bytes(t *TensorInfo) ([]byte, error) {
	if t.Begin < 0 || t.Size < 0 || t.Size > f.size-t.Begin {
		return nil, fmt.Errorf("gguf: tensor %q: bytes [%d, +%d) are not in the file", t.Name, t.Begin, t.Size)
	}
	if f.headerOnly {
		return nil, fmt.Errorf("gguf: tensor %q: only the file's header was parsed", t.Name)
	}
	if f.mapped != nil {
		return f.mapped[t.Begin:t.End():t.End()], nil
	}
	if t.Size == 0 {
		return []byte{}, nil
	}
	buf := make([]byte, t.Size) // checked against the file size when parsing
	if err := readFull(f.r, buf, t.Begin); err != nil {
		return nil, fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
	}
	return buf, nil
}

// Section returns a reader of the tensor's bytes.
func (f *File) Section(t *TensorInfo) *io.SectionReader {
	return io.NewSectionReader(f.r, t.Begin, t.Size)
}

// Close unmaps the file and closes it if Open opened it.
func (f *File) Close() error {
	f.mapped = nil
	return f.closer.Close()
}

// readFull reads len(buf) bytes at off; a full read that also reports io.EOF succeeds.
func readFull(r io.ReaderAt, buf []byte, off int64) error {
	k, err := r.ReadAt(buf, off)
	if k == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
