// Package safetensors reads and writes checkpoints in the safetensors format: single
// files and Hugging Face folders (model.safetensors, or shards listed by
// model.safetensors.index.json).
//
// A File is memory-mapped when opened with Open; its tensors' bytes are then slices of
// the mapping (zero copy). Concurrent reads from one File are safe.
//
// # Security
//
// Nothing read from a file is trusted. The header length is bounded (maxHeaderSize) and
// checked against the file size before anything is read; the header must be one JSON
// object with unique keys; every dtype must be known; ranks are bounded (maxRank);
// element count × dtype size is computed with overflow checks and must equal the
// tensor's byte range; the ranges must tile the data section exactly, from offset 0 to
// the end of the file, with no overlap and no hole. No allocation is sized by a value
// from the file other than the header, whose size is bounded by the file's own size.
// A malformed file gives an error wrapping ErrFormat, never a panic.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/internal/formaterr"
	"github.com/gomerge/gomerge/formats/internal/mapfile"
)

const (
	maxHeaderSize = 100_000_000 // the limit the reference implementation enforces
	maxRank       = 16
	maxElements   = 1 << 56 // far beyond any real tensor; keeps numel·size from overflowing
)

// ErrFormat is wrapped by every error that reports a malformed file.
var ErrFormat = errors.New("malformed safetensors")

// FormatError says what is wrong with a file and where.
type FormatError struct {
	Off    int64  // byte offset in the file the problem was found at, or -1
	Tensor string // the tensor concerned, if any
	Msg    string
	Err    error // an underlying error, if any
}

func (e *FormatError) Error() string {
	return formaterr.Message("safetensors", e.Tensor, e.Msg, e.Off, e.Err)
}

func (e *FormatError) Is(target error) bool { return target == ErrFormat }
func (e *FormatError) Unwrap() error        { return e.Err }

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name  string
	DType dtype.DType
	Shape []int64
	Begin int64 // offset of the first byte in the file (not the data section)
	End   int64 // offset one past the last byte
}

// NumElements is the product of the shape (1 for a scalar).
func (t *TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Size is the tensor's length in bytes.
func (t *TensorInfo) Size() int64 { return t.End - t.Begin }

// File is an opened safetensors file.
type File struct {
	Tensors  []TensorInfo      // in file order (by offset)
	Metadata map[string]string // the header's __metadata__, nil if absent

	index      map[string]int
	headerSize int64 // the JSON header's length, without the 8-byte prefix
	size       int64
	r          io.ReaderAt
	mapped     []byte // the whole file, when memory-mapped
	closer     *mapfile.Mapped
}

// Open memory-maps the named file and parses its header. The caller must Close it.
func Open(path string) (*File, error) {
	f, m, err := mapfile.Open(path, NewFile, &FormatError{Off: -1, Msg: "not a regular file"})
	if err == nil {
		f.mapped, f.closer = m.Data, m
	}
	return f, err
}

// NewFile parses the header of a safetensors file read through r, which holds size
// bytes. Tensor data is then read with ReadAt (Bytes needs a mapped file).
func NewFile(r io.ReaderAt, size int64) (*File, error) {
	if size < 8 {
		return nil, &FormatError{Off: 0, Msg: fmt.Sprintf("file is %d bytes, shorter than the 8-byte header length", size)}
	}
	var prefix [8]byte
	if _, err := r.ReadAt(prefix[:], 0); err != nil {
		return nil, &FormatError{Off: 0, Msg: "reading header length", Err: err}
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	if n > maxHeaderSize {
		return nil, &FormatError{Off: 0, Msg: fmt.Sprintf("header length %d exceeds the limit of %d bytes", n, maxHeaderSize)}
	}
	if int64(n) > size-8 {
		return nil, &FormatError{Off: 0, Msg: fmt.Sprintf("header length %d runs past the end of the %d-byte file (truncated?)", n, size)}
	}
	if n < 2 {
		return nil, &FormatError{Off: 8, Msg: fmt.Sprintf("header length %d is too short for a JSON object", n)}
	}
	hdr := make([]byte, n) // bounded by maxHeaderSize and by the file size
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, &FormatError{Off: 8, Msg: "reading header", Err: err}
	}
	f := &File{headerSize: int64(n), size: size, r: r}
	if err := f.parseHeader(hdr); err != nil {
		return nil, err
	}
	return f, nil
}

// rawTensor is a tensor entry as the header spells it. Numbers are kept raw so that
// negative, fractional or quoted values get a precise error.
type rawTensor struct {
	DType       string            `json:"dtype"`
	Shape       []json.RawMessage `json:"shape"`
	DataOffsets []json.RawMessage `json:"data_offsets"`
}

func (f *File) parseHeader(hdr []byte) error {
	if hdr[0] != '{' {
		return &FormatError{Off: 8, Msg: "header is not a JSON object"}
	}
	if !utf8.Valid(hdr) { // encoding/json would silently turn bad bytes into U+FFFD
		return &FormatError{Off: 8, Msg: "header is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		return &FormatError{Off: 8, Msg: "header is not valid JSON", Err: err}
	}
	seen := make(map[string]bool)
	dataStart := 8 + f.headerSize
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return &FormatError{Off: 8 + dec.InputOffset(), Msg: "header is not valid JSON", Err: err}
		}
		name, ok := tok.(string)
		if !ok {
			return &FormatError{Off: 8 + dec.InputOffset(), Msg: "header key is not a string"}
		}
		if name == "" {
			return &FormatError{Off: 8 + dec.InputOffset(), Msg: "empty tensor name"}
		}
		if seen[name] {
			return &FormatError{Off: 8 + dec.InputOffset(), Tensor: name, Msg: "name appears twice in the header"}
		}
		seen[name] = true
		if name == "__metadata__" {
			var meta map[string]string
			if err := dec.Decode(&meta); err != nil {
				return &FormatError{Off: 8 + dec.InputOffset(), Msg: "__metadata__ must map strings to strings", Err: err}
			}
			f.Metadata = meta
			continue
		}
		var raw rawTensor
		if err := dec.Decode(&raw); err != nil {
			return &FormatError{Off: 8 + dec.InputOffset(), Tensor: name, Msg: "entry is not {dtype, shape, data_offsets}", Err: err}
		}
		t, err := raw.check(name, dataStart)
		if err != nil {
			return err
		}
		f.Tensors = append(f.Tensors, t)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return &FormatError{Off: 8 + dec.InputOffset(), Msg: "header is not valid JSON", Err: err}
	}
	rest := hdr[dec.InputOffset():]
	if len(bytes.TrimRight(rest, " \t\r\n\x00")) != 0 {
		return &FormatError{Off: 8 + dec.InputOffset(), Msg: "trailing bytes after the header's JSON object"}
	}
	return f.checkLayout(dataStart)
}

func parseNonNegative(n json.RawMessage) (int64, bool) {
	v, err := strconv.ParseInt(string(n), 10, 64)
	return v, err == nil && v >= 0
}

func (raw *rawTensor) check(name string, dataStart int64) (TensorInfo, error) {
	bad := func(format string, args ...any) (TensorInfo, error) {
		return TensorInfo{}, &FormatError{Off: -1, Tensor: name, Msg: fmt.Sprintf(format, args...)}
	}
	if raw.DType == "" {
		return bad("missing dtype")
	}
	dt, err := dtype.Parse(raw.DType)
	if err != nil {
		return TensorInfo{}, &FormatError{Off: -1, Tensor: name, Msg: "bad dtype", Err: err}
	}
	if raw.Shape == nil {
		return bad("missing shape")
	}
	if len(raw.Shape) > maxRank {
		return bad("rank %d exceeds the limit of %d", len(raw.Shape), maxRank)
	}
	shape := make([]int64, len(raw.Shape))
	numel := int64(1)
	for i, s := range raw.Shape {
		d, ok := parseNonNegative(s)
		if !ok {
			return bad("shape dimension %d (%s) is not a non-negative integer", i, s)
		}
		shape[i] = d
		if d != 0 && numel > maxElements/d {
			return bad("shape %v has more than %d elements", shape[:i+1], int64(maxElements))
		}
		numel *= d
	}
	if len(raw.DataOffsets) != 2 {
		return bad("data_offsets must be [begin, end], got %d numbers", len(raw.DataOffsets))
	}
	begin, ok1 := parseNonNegative(raw.DataOffsets[0])
	end, ok2 := parseNonNegative(raw.DataOffsets[1])
	if !ok1 || !ok2 || end < begin {
		return bad("data_offsets [%s, %s] are not 0 ≤ begin ≤ end", raw.DataOffsets[0], raw.DataOffsets[1])
	}
	if want := numel * int64(dt.Size()); end-begin != want {
		return bad("%s %v needs %d bytes but data_offsets [%d, %d] span %d", dt, shape, want, begin, end, end-begin)
	}
	if begin > math.MaxInt64-dataStart || end > math.MaxInt64-dataStart {
		return bad("data_offsets [%d, %d] overflow", begin, end)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Begin: dataStart + begin, End: dataStart + end}, nil
}

// checkLayout sorts the tensors by offset and checks that they tile the data section.
func (f *File) checkLayout(dataStart int64) error {
	sort.SliceStable(f.Tensors, func(i, j int) bool {
		a, b := &f.Tensors[i], &f.Tensors[j]
		return a.Begin < b.Begin || (a.Begin == b.Begin && a.End < b.End)
	})
	at := dataStart
	var prev string
	for i := range f.Tensors {
		t := &f.Tensors[i]
		switch {
		case t.Begin > at && prev == "":
			return &FormatError{Off: at, Tensor: t.Name, Msg: fmt.Sprintf("data starts at offset %d, not 0: %d unused bytes", t.Begin-dataStart, t.Begin-at)}
		case t.Begin > at:
			return &FormatError{Off: at, Tensor: t.Name, Msg: fmt.Sprintf("hole of %d bytes between tensor %q and this one", t.Begin-at, prev)}
		case t.Begin < at:
			return &FormatError{Off: t.Begin, Tensor: t.Name, Msg: fmt.Sprintf("data overlaps tensor %q", prev)}
		}
		at = t.End
		prev = t.Name
	}
	switch {
	case at > f.size:
		name := ""
		if prev != "" {
			name = prev
		}
		return &FormatError{Off: f.size, Tensor: name, Msg: fmt.Sprintf("data ends at byte %d but the file has %d bytes (truncated?)", at, f.size)}
	case at < f.size:
		return &FormatError{Off: at, Msg: fmt.Sprintf("%d unused bytes after the last tensor", f.size-at)}
	}
	f.index = make(map[string]int, len(f.Tensors))
	for i := range f.Tensors {
		f.index[f.Tensors[i].Name] = i
	}
	return nil
}

// Tensor returns the named tensor's description.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// Names returns the tensor names in file order.
func (f *File) Names() []string {
	names := make([]string, len(f.Tensors))
	for i := range f.Tensors {
		names[i] = f.Tensors[i].Name
	}
	return names
}

// Size is the file's length in bytes.
func (f *File) Size() int64 { return f.size }

// HeaderSize is the length of the JSON header, without the 8-byte length prefix.
func (f *File) HeaderSize() int64 { return f.headerSize }

// Mapped reports whether tensor bytes can be had without copying.
func (f *File) Mapped() bool { return f.mapped != nil || f.size == 0 }

// PreferRead reports whether a reader that goes through the tensors once should copy
// them with Section's ReadAt rather than take Bytes from the mapping: the file is on
// tmpfs, whose mappings fault in small pages, or a probe of this machine found the
// mapping's first touch dearer than a copy (mapfile.Mapped.PreferRead). The probe
// runs on the first call.
func (f *File) PreferRead() bool { return f.closer.PreferRead() }

// MappingTraps reports whether the probe behind PreferRead found the mapping's first
// touch dearer than a copy (mapfile.Mapped.MappingTraps): the machine's doing, not the
// file system's.
func (f *File) MappingTraps() bool { return f.closer.MappingTraps() }

// Bytes returns the tensor's bytes. For a mapped file the slice aliases the mapping and
// must not be written or used after Close; otherwise the bytes are read into a new slice.
func (f *File) Bytes(t *TensorInfo) ([]byte, error) {
	if f.mapped != nil {
		return f.mapped[t.Begin:t.End:t.End], nil
	}
	buf := make([]byte, t.Size()) // the size was checked against the file when parsing
	if _, err := f.r.ReadAt(buf, t.Begin); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return buf, nil
}

// Section returns a reader of the tensor's bytes.
func (f *File) Section(t *TensorInfo) *io.SectionReader {
	return io.NewSectionReader(f.r, t.Begin, t.Size())
}

// Close unmaps the file and closes it if Open opened it.
func (f *File) Close() error {
	f.mapped = nil
	return f.closer.Close()
}
