package gguf

import (
	"encoding/binary"
	"math"
)

// builder writes tiny GGUF files for tests. Offsets are the running sum of padded
// sizes unless a tensor sets off; magic, version and alignment can be overridden.
type builder struct {
	magic      string
	version    uint32
	alignment  int64 // data alignment used for layout; general.alignment is separate
	kv         []byte
	nkv        uint64
	tensors    []bTensor
	ntOverride *uint64
}

type bTensor struct {
	name string
	ne   []uint64
	typ  Type
	data []byte
	off  *uint64
}

func newBuilder() *builder { return &builder{magic: "GGUF", version: 3, alignment: 32} }

func putStr(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// scalar appends a metadata pair whose value is given pre-encoded.
func (b *builder) raw(key string, vt ValueType, val []byte) *builder {
	b.kv = putStr(b.kv, key)
	b.kv = binary.LittleEndian.AppendUint32(b.kv, uint32(vt))
	b.kv = append(b.kv, val...)
	b.nkv++
	return b
}

func (b *builder) u32(key string, v uint32) *builder {
	return b.raw(key, ValueUint32, binary.LittleEndian.AppendUint32(nil, v))
}

func (b *builder) str(key, v string) *builder { return b.raw(key, ValueString, putStr(nil, v)) }

func (b *builder) strs(key string, vs ...string) *builder {
	val := binary.LittleEndian.AppendUint32(nil, uint32(ValueString))
	val = binary.LittleEndian.AppendUint64(val, uint64(len(vs)))
	for _, s := range vs {
		val = putStr(val, s)
	}
	return b.raw(key, ValueArray, val)
}

func (b *builder) f32s(key string, vs ...float32) *builder {
	val := binary.LittleEndian.AppendUint32(nil, uint32(ValueFloat32))
	val = binary.LittleEndian.AppendUint64(val, uint64(len(vs)))
	for _, v := range vs {
		val = binary.LittleEndian.AppendUint32(val, math.Float32bits(v))
	}
	return b.raw(key, ValueArray, val)
}

func (b *builder) tensor(name string, typ Type, data []byte, ne ...uint64) *builder {
	b.tensors = append(b.tensors, bTensor{name: name, ne: ne, typ: typ, data: data})
	return b
}

func padTo(n, a int64) int64 { return (n + a - 1) / a * a }

func (b *builder) bytes() []byte {
	le := binary.LittleEndian
	out := []byte(b.magic)
	out = le.AppendUint32(out, b.version)
	nt := uint64(len(b.tensors))
	if b.ntOverride != nil {
		nt = *b.ntOverride
	}
	out = le.AppendUint64(out, nt)
	out = le.AppendUint64(out, b.nkv)
	out = append(out, b.kv...)
	var at uint64
	offs := make([]uint64, len(b.tensors)) // where the data goes: always the running sum
	for i, t := range b.tensors {
		out = putStr(out, t.name)
		out = le.AppendUint32(out, uint32(len(t.ne)))
		for _, n := range t.ne {
			out = le.AppendUint64(out, n)
		}
		out = le.AppendUint32(out, uint32(t.typ))
		off := at
		if t.off != nil {
			off = *t.off // only the header lies
		}
		offs[i] = at
		out = le.AppendUint64(out, off)
		at += uint64(padTo(int64(len(t.data)), b.alignment))
	}
	start := padTo(int64(len(out)), b.alignment)
	out = append(out, make([]byte, start-int64(len(out)))...)
	for i, t := range b.tensors {
		end := start + int64(offs[i]) + int64(len(t.data))
		if end > int64(len(out)) {
			out = append(out, make([]byte, end-int64(len(out)))...)
		}
		copy(out[start+int64(offs[i]):], t.data)
	}
	if len(b.tensors) > 0 {
		out = append(out, make([]byte, padTo(int64(len(out))-start, b.alignment)-(int64(len(out))-start))...)
	}
	return out
}
