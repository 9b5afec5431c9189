package gguf

import (
	"fmt"

	"github.com/gomerge/gomerge/formats/dtype"
)

// Type is a ggml tensor type, as stored in a tensor info.
type Type uint32

// The ggml types this package knows. Ids 4 and 5 (Q4_2, Q4_3) and 31–33, 36–38 (the
// repacked Q4_0_4_4 family) were removed from ggml and are unknown here.
const (
	TypeF32     Type = 0
	TypeF16     Type = 1
	TypeQ4_0    Type = 2
	TypeQ4_1    Type = 3
	TypeQ5_0    Type = 6
	TypeQ5_1    Type = 7
	TypeQ8_0    Type = 8
	TypeQ8_1    Type = 9
	TypeQ2_K    Type = 10
	TypeQ3_K    Type = 11
	TypeQ4_K    Type = 12
	TypeQ5_K    Type = 13
	TypeQ6_K    Type = 14
	TypeQ8_K    Type = 15
	TypeIQ2_XXS Type = 16
	TypeIQ2_XS  Type = 17
	TypeIQ3_XXS Type = 18
	TypeIQ1_S   Type = 19
	TypeIQ4_NL  Type = 20
	TypeIQ3_S   Type = 21
	TypeIQ2_S   Type = 22
	TypeIQ4_XS  Type = 23
	TypeI8      Type = 24
	TypeI16     Type = 25
	TypeI32     Type = 26
	TypeI64     Type = 27
	TypeF64     Type = 28
	TypeIQ1_M   Type = 29
	TypeBF16    Type = 30
	TypeTQ1_0   Type = 34
	TypeTQ2_0   Type = 35
	TypeMXFP4   Type = 39
)

// typeInfo describes the storage of one ggml type: blocks of blockSize elements take
// typeSize bytes each. A type with supported == false is known by name only; a file
// holding one is rejected with a clear error.
type typeInfo struct {
	name      string
	blockSize int64
	typeSize  int64
	supported bool
}

// types is ggml's type table (ggml.c type_traits) for the ids above.
var types = map[Type]typeInfo{
	TypeF32:  {"F32", 1, 4, true},
	TypeF16:  {"F16", 1, 2, true},
	TypeQ4_0: {"Q4_0", 32, 2 + 16, true},
	TypeQ4_1: {"Q4_1", 32, 2 + 2 + 16, true},
	TypeQ5_0: {"Q5_0", 32, 2 + 4 + 16, true},
	TypeQ5_1: {"Q5_1", 32, 2 + 2 + 4 + 16, true},
	TypeQ8_0: {"Q8_0", 32, 2 + 32, true},
	TypeQ8_1: {"Q8_1", 32, 2 + 2 + 32, true},
	TypeQ2_K: {"Q2_K", 256, 16 + 64 + 2 + 2, true},
	TypeQ3_K: {"Q3_K", 256, 32 + 64 + 12 + 2, true},
	TypeQ4_K: {"Q4_K", 256, 2 + 2 + 12 + 128, true},
	TypeQ5_K: {"Q5_K", 256, 2 + 2 + 12 + 32 + 128, true},
	TypeQ6_K: {"Q6_K", 256, 128 + 64 + 16 + 2, true},
	TypeQ8_K: {"Q8_K", 256, 4 + 256 + 32, true},
	TypeBF16: {"BF16", 1, 2, true},

	TypeIQ2_XXS: {name: "IQ2_XXS"},
	TypeIQ2_XS:  {name: "IQ2_XS"},
	TypeIQ3_XXS: {name: "IQ3_XXS"},
	TypeIQ1_S:   {name: "IQ1_S"},
	TypeIQ4_NL:  {name: "IQ4_NL"},
	TypeIQ3_S:   {name: "IQ3_S"},
	TypeIQ2_S:   {name: "IQ2_S"},
	TypeIQ4_XS:  {name: "IQ4_XS"},
	TypeI8:      {name: "I8"},
	TypeI16:     {name: "I16"},
	TypeI32:     {name: "I32"},
	TypeI64:     {name: "I64"},
	TypeF64:     {name: "F64"},
	TypeIQ1_M:   {name: "IQ1_M"},
	TypeTQ1_0:   {name: "TQ1_0"},
	TypeTQ2_0:   {name: "TQ2_0"},
	TypeMXFP4:   {name: "MXFP4"},
}

// String returns ggml's name for t, or "Type(n)" for an unknown id.
func (t Type) String() string {
	if ti, ok := types[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("Type(%d)", uint32(t))
}

// BlockSize is the number of elements in one block of t; 0 if t is not supported.
func (t Type) BlockSize() int64 {
	if ti := types[t]; ti.supported {
		return ti.blockSize
	}
	return 0
}

// TypeSize is the number of bytes one block of t takes; 0 if t is not supported.
func (t Type) TypeSize() int64 {
	if ti := types[t]; ti.supported {
		return ti.typeSize
	}
	return 0
}

// Supported reports whether files holding t can be read (its layout is known).
// Dequantize supports fewer types; see CanDequantize.
func (t Type) Supported() bool { return types[t].supported }

// dtypes pairs the ggml types gomerge converts with the element types that name them
// in the rest of gomerge; the table is the only place that knows the correspondence.
var dtypes = map[Type]dtype.DType{
	TypeF32: dtype.F32, TypeF16: dtype.F16, TypeBF16: dtype.BF16,
	TypeQ8_0: dtype.Q8_0, TypeQ4_0: dtype.Q4_0, TypeQ4_1: dtype.Q4_1, TypeQ5_0: dtype.Q5_0, TypeQ5_1: dtype.Q5_1,
	TypeQ2_K: dtype.Q2_K, TypeQ3_K: dtype.Q3_K, TypeQ4_K: dtype.Q4_K, TypeQ5_K: dtype.Q5_K, TypeQ6_K: dtype.Q6_K,
}

// DType returns the element type gomerge converts t's data as, or dtype.Invalid if it
// cannot convert t (Q8_1, Q8_K, the IQ and TQ types, integers, F64).
func (t Type) DType() dtype.DType { return dtypes[t] }

// TypeOf returns the ggml type that stores elements of type d; ok is false if GGUF
// has none (integer and bool types) or gomerge does not convert it.
func TypeOf(d dtype.DType) (t Type, ok bool) {
	for t, dt := range dtypes {
		if dt == d {
			return t, true
		}
	}
	return 0, false
}

// CanDequantize reports whether Dequantize converts t to float32.
func (t Type) CanDequantize() bool { return t.DType() != dtype.Invalid }
