// Package imatrixtest writes importance matrices in llama.cpp's two forms for tests.
package imatrixtest

import (
	"encoding/binary"
	"math"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
)

// Entry is one weight tensor's entry: the mean squared activation of each column.
type Entry struct {
	Name  string
	Ncall int32 // the legacy form's call count: the values are stored times it
	Means []float32
}

// Legacy is the .dat form as llama-imatrix writes it, with tail appended after the
// entries (Tail's chunk count and dataset name, or anything else).
func Legacy(entries []Entry, tail []byte) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(len(entries)))
	for _, e := range entries {
		b = le.AppendUint32(b, uint32(len(e.Name)))
		b = append(b, e.Name...)
		b = le.AppendUint32(b, uint32(e.Ncall))
		b = le.AppendUint32(b, uint32(len(e.Means)))
		for _, v := range e.Means {
			if e.Ncall > 0 {
				v *= float32(e.Ncall)
			}
			b = le.AppendUint32(b, math.Float32bits(v))
		}
	}
	return append(b, tail...)
}

// Tail is the legacy form's optional end: the chunk count and the dataset's name.
func Tail(chunks int32, dataset string) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(chunks))
	b = le.AppendUint32(b, uint32(len(dataset)))
	return append(b, dataset...)
}

// F32 is an F32 tensor of the given shape (row-major) and values.
func F32(name string, shape []int64, v []float32) gguftest.Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return gguftest.Tensor{Name: name, DType: dtype.F32, Shape: shape, Data: b}
}

// Meta is the GGUF form's metadata as llama-imatrix writes it.
func Meta(dataset string, chunks uint32) []gguf.KV {
	return []gguf.KV{
		{Key: "general.type", Value: gguf.Value{Type: gguf.ValueString, Data: "imatrix"}},
		{Key: "imatrix.datasets", Value: gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueString, Data: []string{dataset}}},
		{Key: "imatrix.chunk_count", Value: gguf.Value{Type: gguf.ValueUint32, Data: chunks}},
		{Key: "imatrix.chunk_size", Value: gguf.Value{Type: gguf.ValueUint32, Data: uint32(512)}},
	}
}

// GGUFTensors are the GGUF form's tensors for entries: NAME.in_sum2 (the means times
// count) and NAME.counts, one row each.
func GGUFTensors(entries []Entry, count float32) []gguftest.Tensor {
	var ts []gguftest.Tensor
	for _, e := range entries {
		sums := make([]float32, len(e.Means))
		for i, v := range e.Means {
			sums[i] = v * count
		}
		ts = append(ts, F32(e.Name+".in_sum2", []int64{1, int64(len(sums))}, sums), F32(e.Name+".counts", []int64{1, 1}, []float32{count}))
	}
	return ts
}
