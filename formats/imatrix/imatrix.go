// Package imatrix reads llama.cpp's importance matrices (llama-imatrix's output, which
// llama-quantize --imatrix takes): per weight tensor, the mean square of the
// activations each of its input columns met on calibration text. Two forms exist:
// the GGUF form (llama.cpp since mid-2025: tensors NAME.in_sum2 and NAME.counts, and
// metadata imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size) and the legacy
// .dat form (a count of entries, then per entry its name, the number of calls and its
// values, then optionally the chunk count and the dataset's name). Both are read into
// the same means, the way llama-quantize reads them; docs/kquants.md says how the
// quantizers use them.
package imatrix

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/internal/formaterr"
)

// ErrFormat is wrapped by every error about a malformed importance matrix.
var ErrFormat = errors.New("malformed importance matrix")

// FormatError says what is wrong with an importance matrix and where.
type FormatError struct {
	Off   int64  // byte offset the problem was found at, or -1
	Entry string // the entry (weight tensor) concerned, if any
	Msg   string
	Err   error
}

func (e *FormatError) Error() string {
	return formaterr.Message("imatrix", e.Entry, e.Msg, e.Off, e.Err)
}

func (e *FormatError) Is(target error) bool { return target == ErrFormat }
func (e *FormatError) Unwrap() error        { return e.Err }

// Matrix is an importance matrix: for each weight tensor, one mean squared activation
// per input column (per expert, for the stacked experts of a mixture-of-experts
// tensor: Rows of them, one after another).
type Matrix struct {
	Path       string // the file read, for messages and the output's metadata
	Entries    map[string]Entry
	Datasets   []string // the calibration files, as llama-imatrix recorded them
	ChunkCount int      // chunks of calibration text seen, 0 if not recorded
}

// Entry is one weight tensor's importance: Values holds Rows runs of len/Rows.
type Entry struct {
	Values []float32
	Rows   int
}

// Limits against hostile files: llama.cpp's names are short, and no weight tensor has
// more columns than this.
const (
	maxName   = 1 << 10
	maxValues = 1 << 30
)

// Read reads the importance matrix in the named file, in either form. Errors name
// the file and wrap ErrFormat for malformed content.
func Read(path string) (*Matrix, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Path = path
	return m, nil
}

// Parse reads an importance matrix from its bytes: the GGUF form if they start with
// GGUF's magic, else the legacy form.
func Parse(data []byte) (*Matrix, error) {
	if bytes.HasPrefix(data, []byte("GGUF")) {
		return parseGGUF(data)
	}
	return parseLegacy(data)
}

// For returns the importance of the tensor name, whose rows have row elements, or nil
// if the matrix has no entry for it (it is then quantized without one, as
// llama-quantize does for the K-quants). An entry of another length is an error:
// the matrix was made for another model.
func (m *Matrix) For(name string, row int64) ([]float32, error) {
	e, ok := m.Entries[name]
	if !ok {
		return nil, nil
	}
	if e.Rows != 1 || int64(len(e.Values)) != row {
		return nil, fmt.Errorf("%s: %w", m.Path, &FormatError{Off: -1, Entry: name,
			Msg: fmt.Sprintf("%d values in %d rows, but the tensor's rows have %d elements (an importance matrix for another model?)", len(e.Values), e.Rows, row)})
	}
	return e.Values, nil
}

// Names returns the entries' names, sorted.
func (m *Matrix) Names() []string {
	names := make([]string, 0, len(m.Entries))
	for n := range m.Entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// checkValues refuses NaN, infinite and negative importances: they are means of
// squares, and the quantizers' searches would go astray on them.
func checkValues(name string, v []float32, off int64) error {
	for i, x := range v {
		if !(x >= 0) || math.IsInf(float64(x), 0) {
			return &FormatError{Off: off, Entry: name, Msg: fmt.Sprintf("value %d is %v, not a finite mean square", i, x)}
		}
	}
	return nil
}

// parseGGUF reads the GGUF form. Each entry is a pair of F32 tensors: NAME.in_sum2,
// the sums of squared activations (ne = columns × rows), and NAME.counts, the number
// of activations each row's sums cover (ne = 1 × rows); the importance is their
// quotient, 1 where a row saw nothing (llama-quantize's rule). NAME.in_sum (the
// plain sums, for statistics) is checked and not used.
func parseGGUF(data []byte) (*Matrix, error) {
	f, err := gguf.NewFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, err
	}
	m := &Matrix{Entries: map[string]Entry{}}
	if v, ok := f.Lookup("imatrix.datasets"); ok {
		ds, ok := v.AsStrings()
		if !ok {
			return nil, &FormatError{Off: -1, Msg: "imatrix.datasets is not an array of strings"}
		}
		m.Datasets = ds
	}
	if v, ok := f.Lookup("imatrix.chunk_count"); ok {
		n, ok := v.AsUint()
		if !ok || n > math.MaxInt32 {
			return nil, &FormatError{Off: -1, Msg: "imatrix.chunk_count is not a count"}
		}
		m.ChunkCount = int(n)
	}
	type pair struct{ sums, counts, plain *gguf.TensorInfo }
	pairs := map[string]*pair{}
	ts := f.Tensors()
	for i := range ts {
		t := &ts[i]
		var p **gguf.TensorInfo
		name := t.Name
		switch {
		case strings.HasSuffix(name, ".in_sum2"):
			name = strings.TrimSuffix(name, ".in_sum2")
			if pairs[name] == nil {
				pairs[name] = &pair{}
			}
			p = &pairs[name].sums
		case strings.HasSuffix(name, ".counts"):
			name = strings.TrimSuffix(name, ".counts")
			if pairs[name] == nil {
				pairs[name] = &pair{}
			}
			p = &pairs[name].counts
		case strings.HasSuffix(name, ".in_sum"):
			name = strings.TrimSuffix(name, ".in_sum")
			if pairs[name] == nil {
				pairs[name] = &pair{}
			}
			p = &pairs[name].plain
		default:
			continue // llama.cpp ignores other tensors too
		}
		if t.Type != gguf.TypeF32 {
			return nil, &FormatError{Off: -1, Entry: t.Name, Msg: fmt.Sprintf("type %s, want F32", t.Type)}
		}
		*p = t
	}
	if len(pairs) == 0 {
		return nil, &FormatError{Off: -1, Msg: "no NAME.in_sum2 and NAME.counts tensors: not an importance matrix"}
	}
	for name, p := range pairs {
		if p.sums == nil || p.counts == nil {
			return nil, &FormatError{Off: -1, Entry: name, Msg: "needs both NAME.in_sum2 and NAME.counts"}
		}
		rows := p.counts.NumElements()
		n := p.sums.NumElements()
		if rows < 1 || n < rows || n%rows != 0 || n > maxValues || len(p.sums.Shape) > 2 || len(p.counts.Shape) > 2 {
			return nil, &FormatError{Off: -1, Entry: name, Msg: fmt.Sprintf("%d sums for %d counts: not whole rows", n, rows)}
		}
		if p.plain != nil && p.plain.NumElements() != n {
			return nil, &FormatError{Off: -1, Entry: name, Msg: fmt.Sprintf("%d in_sum values for %d in_sum2", p.plain.NumElements(), n)}
		}
		sums, err := f32s(f, p.sums)
		if err != nil {
			return nil, err
		}
		counts, err := f32s(f, p.counts)
		if err != nil {
			return nil, err
		}
		if err := checkValues(name, sums, p.sums.Begin); err != nil {
			return nil, err
		}
		if err := checkValues(name, counts, p.counts.Begin); err != nil {
			return nil, err
		}
		cols := n / rows
		v := make([]float32, n)
		for j := range rows {
			for i := range cols {
				if c := counts[j]; c > 0 {
					v[j*cols+i] = sums[j*cols+i] / c
				} else {
					v[j*cols+i] = 1
				}
			}
		}
		// Finite sums over a tiny positive count (a subnormal, say) overflow.
		if err := checkValues(name, v, p.sums.Begin); err != nil {
			return nil, err
		}
		m.Entries[name] = Entry{Values: v, Rows: int(rows)}
	}
	return m, nil
}

// f32s returns the values of an F32 tensor.
func f32s(f *gguf.File, t *gguf.TensorInfo) ([]float32, error) {
	v := make([]float32, t.NumElements())
	if err := f.Dequantize(v, t, 0); err != nil {
		return nil, err
	}
	return v, nil
}

// parseLegacy reads the .dat form, all little-endian: int32 entry count (≥ 1); per
// entry int32 name length, the name, int32 ncall, int32 value count (≥ 1), the
// float32 values; then, optionally, int32 chunk count and int32 length plus the
// dataset's name. The stored values are the means times ncall, so the importance is
// value/ncall (the value itself when ncall is 0), as llama-quantize reads it.
func parseLegacy(data []byte) (*Matrix, error) {
	off := 0
	i32 := func(what string) (int32, error) {
		if len(data)-off < 4 {
			return 0, &FormatError{Off: int64(off), Msg: fmt.Sprintf("truncated: %s needs 4 bytes, %d left", what, len(data)-off)}
		}
		v := int32(binary.LittleEndian.Uint32(data[off:]))
		off += 4
		return v, nil
	}
	n, err := i32("the entry count")
	if err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, &FormatError{Off: 0, Msg: fmt.Sprintf("entry count %d: no data", n)}
	}
	m := &Matrix{Entries: map[string]Entry{}}
	for e := range n {
		start := off
		l, err := i32(fmt.Sprintf("entry %d's name length", e))
		if err != nil {
			return nil, err
		}
		if l < 1 || l > maxName || int(l) > len(data)-off {
			return nil, &FormatError{Off: int64(start), Msg: fmt.Sprintf("entry %d: name length %d (%d bytes left)", e, l, len(data)-off)}
		}
		name := string(data[off : off+int(l)])
		off += int(l)
		if _, dup := m.Entries[name]; dup {
			return nil, &FormatError{Off: int64(start), Entry: name, Msg: "entry appears twice"}
		}
		ncall, err := i32("the call count")
		if err != nil {
			return nil, &FormatError{Off: int64(off), Entry: name, Msg: "truncated call count"}
		}
		nval, err := i32("the value count")
		if err != nil {
			return nil, &FormatError{Off: int64(off), Entry: name, Msg: "truncated value count"}
		}
		if ncall < 0 || nval < 1 || int64(nval) > maxValues || int64(nval)*4 > int64(len(data)-off) {
			return nil, &FormatError{Off: int64(off - 8), Entry: name, Msg: fmt.Sprintf("%d calls, %d values (%d bytes left)", ncall, nval, len(data)-off)}
		}
		v := make([]float32, nval)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[off+4*i:]))
		}
		if err := checkValues(name, v, int64(off)); err != nil {
			return nil, err
		}
		off += 4 * int(nval)
		if ncall > 0 {
			for i := range v {
				v[i] /= float32(ncall)
			}
		}
		m.Entries[name] = Entry{Values: v, Rows: 1}
	}
	if off == len(data) {
		return m, nil
	}
	chunks, err := i32("the chunk count")
	if err != nil {
		return nil, err
	}
	if chunks < 0 {
		return nil, &FormatError{Off: int64(off - 4), Msg: fmt.Sprintf("chunk count %d", chunks)}
	}
	m.ChunkCount = int(chunks)
	if off == len(data) {
		return m, nil
	}
	l, err := i32("the dataset name's length")
	if err != nil {
		return nil, err
	}
	if l < 0 || int(l) != len(data)-off {
		return nil, &FormatError{Off: int64(off - 4), Msg: fmt.Sprintf("dataset name of %d bytes, %d left", l, len(data)-off)}
	}
	if l > 0 {
		m.Datasets = []string{string(data[off:])}
	}
	return m, nil
}
