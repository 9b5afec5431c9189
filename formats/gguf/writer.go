package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"reflect"
)

// TensorSpec describes a tensor to be written.
type TensorSpec struct {
	Name  string
	Type  Type
	Shape []int64 // row-major, as TensorInfo.Shape
}

// Layout is a GGUF file planned before any tensor byte is written: its header (with
// the padding up to the data section) and where each tensor's data goes.
type Layout struct {
	Header    []byte
	Tensors   []TensorInfo // in the order given; Begin and Size locate the data
	Size      int64        // total file length, the last tensor's padding included
	Alignment int64
}

// Plan lays out a GGUF v3 file with metadata and tensors in the given order, as
// llama.cpp's loader requires (docs/formats.md#gguf-layout): each tensor's offset is the running sum of
// the padded sizes of the tensors before it, the data section and every tensor start
// on general.alignment (from metadata, a UINT32 power of two, else 32), and the last
// tensor is padded too. It checks what the reader checks, so that whatever it plans
// reads back: unique keys and names, known value types, no nested arrays, names of
// at most 63 bytes, at most four dimensions, ne[0] a multiple of the block size.
func Plan(metadata []KV, tensors []TensorSpec) (*Layout, error) {
	l := &Layout{Alignment: defaultAlignment}
	var hdr bytes.Buffer
	le := binary.LittleEndian
	var b8 [8]byte
	putU32 := func(v uint32) { le.PutUint32(b8[:], v); hdr.Write(b8[:4]) }
	putU64 := func(v uint64) { le.PutUint64(b8[:], v); hdr.Write(b8[:]) }
	putStr := func(s string) { putU64(uint64(len(s))); hdr.WriteString(s) }

	hdr.WriteString(magic)
	putU32(3)
	putU64(uint64(len(tensors)))
	putU64(uint64(len(metadata)))
	keys := make(map[string]bool, len(metadata))
	for _, kv := range metadata {
		if keys[kv.Key] {
			return nil, fmt.Errorf("gguf: metadata key %q given twice", kv.Key)
		}
		keys[kv.Key] = true
		if kv.Key == "general.alignment" {
			a, ok := kv.Value.Data.(uint32)
			if !ok || kv.Value.Type != ValueUint32 || a == 0 || a&(a-1) != 0 {
				return nil, fmt.Errorf("gguf: general.alignment must be a UINT32 power of two, got %s %v", kv.Value.Type, kv.Value.Data)
			}
			l.Alignment = int64(a)
		}
		putStr(kv.Key)
		putU32(uint32(kv.Value.Type))
		if err := encodeValue(&hdr, kv.Value); err != nil {
			return nil, fmt.Errorf("gguf: metadata %q: %w", kv.Key, err)
		}
	}
	names := make(map[string]bool, len(tensors))
	var at int64 // running sum of padded sizes
	for _, t := range tensors {
		bad := func(format string, args ...any) (*Layout, error) {
			return nil, fmt.Errorf("gguf: tensor %q: %s", t.Name, fmt.Sprintf(format, args...))
		}
		if names[t.Name] {
			return bad("given twice")
		}
		names[t.Name] = true
		if len(t.Name) > maxNameLen {
			return bad("name is %d bytes; llama.cpp takes at most %d", len(t.Name), maxNameLen)
		}
		if !t.Type.Supported() {
			return bad("type %s cannot be written", t.Type)
		}
		if len(t.Shape) > maxDims {
			return bad("%d dimensions; GGUF holds at most %d", len(t.Shape), maxDims)
		}
		ne := neFromShape(t.Shape)
		numel := int64(1)
		for _, n := range ne {
			if n > maxElements || (n != 0 && uint64(numel) > maxElements/n) {
				return bad("shape %v is too large", t.Shape)
			}
			numel *= int64(n)
		}
		if len(ne) > 0 && ne[0]%uint64(t.Type.BlockSize()) != 0 {
			return bad("innermost dimension %d is not a multiple of %s's block size %d", ne[0], t.Type, t.Type.BlockSize())
		}
		size := numel / t.Type.BlockSize() * t.Type.TypeSize()
		putStr(t.Name)
		putU32(uint32(len(ne)))
		for _, n := range ne {
			putU64(n)
		}
		putU32(uint32(t.Type))
		putU64(uint64(at))
		l.Tensors = append(l.Tensors, TensorInfo{Name: t.Name, Type: t.Type, Shape: t.Shape, Offset: at, Size: size})
		padded, _ := pad(size, l.Alignment) // size < 2⁵⁸: no overflow
		at += padded
	}
	start, _ := pad(int64(hdr.Len()), l.Alignment)
	hdr.Write(make([]byte, start-int64(hdr.Len())))
	l.Header = hdr.Bytes()
	for i := range l.Tensors {
		l.Tensors[i].Begin = start + l.Tensors[i].Offset
	}
	l.Size = start + at
	return l, nil
}

// neFromShape converts a row-major shape to ggml's ne[] (ne[0] innermost); the inverse
// of shapeFromNE, next to it in spirit: these two are the package's only reversals.
func neFromShape(shape []int64) []uint64 {
	ne := make([]uint64, len(shape))
	for i, d := range shape {
		ne[len(shape)-1-i] = uint64(d)
	}
	return ne
}

// encodeValue appends v's encoding (without its type tag) to w, checking that Data
// holds what Type says.
func encodeValue(w *bytes.Buffer, v Value) error {
	le := binary.LittleEndian
	if v.Type == ValueArray {
		if v.Elem == ValueArray {
			return fmt.Errorf("nested arrays are not allowed (llama.cpp rejects them)")
		}
		rv := reflect.ValueOf(v.Data)
		if rv.Kind() != reflect.Slice {
			return fmt.Errorf("ARRAY value holds %T, not a slice", v.Data)
		}
		w.Write(le.AppendUint32(nil, uint32(v.Elem)))
		w.Write(le.AppendUint64(nil, uint64(rv.Len())))
		for i := range rv.Len() {
			if err := encodeScalar(w, v.Elem, rv.Index(i).Interface()); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
		return nil
	}
	return encodeScalar(w, v.Type, v.Data)
}

func encodeScalar(w *bytes.Buffer, t ValueType, data any) error {
	le := binary.LittleEndian
	ok := true
	switch t {
	case ValueUint8:
		var x uint8
		x, ok = data.(uint8)
		w.WriteByte(x)
	case ValueInt8:
		var x int8
		x, ok = data.(int8)
		w.WriteByte(byte(x))
	case ValueBool:
		var x bool
		x, ok = data.(bool)
		if x {
			w.WriteByte(1)
		} else {
			w.WriteByte(0)
		}
	case ValueUint16:
		var x uint16
		x, ok = data.(uint16)
		w.Write(le.AppendUint16(nil, x))
	case ValueInt16:
		var x int16
		x, ok = data.(int16)
		w.Write(le.AppendUint16(nil, uint16(x)))
	case ValueUint32:
		var x uint32
		x, ok = data.(uint32)
		w.Write(le.AppendUint32(nil, x))
	case ValueInt32:
		var x int32
		x, ok = data.(int32)
		w.Write(le.AppendUint32(nil, uint32(x)))
	case ValueFloat32:
		var x float32
		x, ok = data.(float32)
		w.Write(le.AppendUint32(nil, math.Float32bits(x)))
	case ValueUint64:
		var x uint64
		x, ok = data.(uint64)
		w.Write(le.AppendUint64(nil, x))
	case ValueInt64:
		var x int64
		x, ok = data.(int64)
		w.Write(le.AppendUint64(nil, uint64(x)))
	case ValueFloat64:
		var x float64
		x, ok = data.(float64)
		w.Write(le.AppendUint64(nil, math.Float64bits(x)))
	case ValueString:
		var x string
		x, ok = data.(string)
		w.Write(le.AppendUint64(nil, uint64(len(x))))
		w.WriteString(x)
	default:
		return fmt.Errorf("unknown value type %d", uint32(t))
	}
	if !ok {
		return fmt.Errorf("%s value holds %T", t, data)
	}
	return nil
}

// Write writes a planned file to w in order: the header, then each tensor's data from
// data(i) (exactly Tensors[i].Size bytes) followed by its padding. Merges write
// tensors concurrently with WriteAt at the planned offsets instead; Write is for
// small files and fixtures.
func (l *Layout) Write(w io.Writer, data func(i int) ([]byte, error)) error {
	if _, err := w.Write(l.Header); err != nil {
		return err
	}
	for i, t := range l.Tensors {
		b, err := data(i)
		if err != nil {
			return fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		if int64(len(b)) != t.Size {
			return fmt.Errorf("gguf: tensor %q: %d bytes of data, want %d", t.Name, len(b), t.Size)
		}
		padded, _ := pad(t.Size, l.Alignment)
		if _, err := w.Write(b); err != nil {
			return err
		}
		if _, err := w.Write(make([]byte, padded-t.Size)); err != nil {
			return err
		}
	}
	return nil
}
