// Package dtype names the element types that checkpoints store and converts the
// floating-point ones to and from float32.
//
// Conversions to a narrower type round to nearest, ties to even, and keep NaN a NaN
// (its sign and as much of its payload as fits, with the quiet bit set). Conversions to
// float32 are exact except F64, which Go's conversion rounds to nearest even.
//
// The bit twiddling is written by hand because no maintained Go module does BF16 and F16
// conversion with both round-to-nearest-even and NaN preservation over byte slices
// without allocating; every function here is checked against an independent reference
// for all 65,536 16-bit patterns in the tests.
package dtype

import (
	"errors"
	"fmt"
)

// DType is an element type. The zero value is Invalid.
type DType uint8

// The element types gomerge reads and writes. The names are safetensors' spelling.
const (
	Invalid DType = iota
	Bool
	U8
	I8
	U16
	I16
	U32
	I32
	U64
	I64
	F16
	BF16
	F32
	F64

	// Block-quantized types (ggml's, as GGUF stores them): elements come in blocks of
	// BlockSize() that share scales, and a block takes BlockBytes() bytes. Only GGUF
	// holds them; safetensors never does (Parse does not know their names).
	Q4_0
	Q4_1
	Q5_0
	Q5_1
	Q8_0
	Q2_K
	Q3_K
	Q4_K
	Q5_K
	Q6_K
)

var info = [...]struct {
	name  string
	size  int // bytes per element; 0 for block types
	float bool
	block int // elements per block (block types only)
	bytes int // bytes per block (block types only)
}{
	Invalid: {"INVALID", 0, false, 0, 0},
	Bool:    {"BOOL", 1, false, 0, 0},
	U8:      {"U8", 1, false, 0, 0},
	I8:      {"I8", 1, false, 0, 0},
	U16:     {"U16", 2, false, 0, 0},
	I16:     {"I16", 2, false, 0, 0},
	U32:     {"U32", 4, false, 0, 0},
	I32:     {"I32", 4, false, 0, 0},
	U64:     {"U64", 8, false, 0, 0},
	I64:     {"I64", 8, false, 0, 0},
	F16:     {"F16", 2, true, 0, 0},
	BF16:    {"BF16", 2, true, 0, 0},
	F32:     {"F32", 4, true, 0, 0},
	F64:     {"F64", 8, true, 0, 0},

	Q4_0: {"Q4_0", 0, true, 32, 2 + 16},
	Q4_1: {"Q4_1", 0, true, 32, 2 + 2 + 16},
	Q5_0: {"Q5_0", 0, true, 32, 2 + 4 + 16},
	Q5_1: {"Q5_1", 0, true, 32, 2 + 2 + 4 + 16},
	Q8_0: {"Q8_0", 0, true, 32, 2 + 32},
	Q2_K: {"Q2_K", 0, true, 256, 16 + 64 + 2 + 2},
	Q3_K: {"Q3_K", 0, true, 256, 32 + 64 + 12 + 2},
	Q4_K: {"Q4_K", 0, true, 256, 2 + 2 + 12 + 128},
	Q5_K: {"Q5_K", 0, true, 256, 2 + 2 + 12 + 32 + 128},
	Q6_K: {"Q6_K", 0, true, 256, 128 + 64 + 16 + 2},
}

// knownUnsupported are element types that exist in the wild (safetensors 0.4+, PyTorch
// float8 and microscaling types) but that gomerge does not convert. They get a
// clearer error than an unknown name.
var knownUnsupported = map[string]bool{
	"F8_E4M3": true, "F8_E5M2": true, "F8_E4M3FN": true, "F8_E4M3FNUZ": true,
	"F8_E5M2FNUZ": true, "F8_E8M0": true, "F6_E2M3": true, "F6_E3M2": true, "F4": true,
	"C64": true, "C128": true,
}

// ErrUnsupported is wrapped by Parse's error for a type that exists but that gomerge
// cannot convert (F8 and other low-precision floats).
var ErrUnsupported = errors.New("unsupported dtype")

// ErrUnknown is wrapped by Parse's error for a name that is no known element type.
var ErrUnknown = errors.New("unknown dtype")

// Parse returns the DType spelled s (safetensors spelling, upper case).
func Parse(s string) (DType, error) {
	for d := Bool; d <= F64; d++ {
		if info[d].name == s {
			return d, nil
		}
	}
	if knownUnsupported[s] {
		return Invalid, fmt.Errorf("%w %s", ErrUnsupported, s)
	}
	return Invalid, fmt.Errorf("%w %q", ErrUnknown, s)
}

// ParseFloat parses the name of a float type gomerge can write, case-insensitively
// ("bf16", "F32", "q8_0"), for flags such as --dtype. Block types are accepted here
// (a GGUF output can hold them); whether the output format can is checked later.
func ParseFloat(s string) (DType, error) {
	up := make([]byte, len(s))
	for i := range len(s) {
		c := s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		up[i] = c
	}
	switch string(up) {
	case "FLOAT32", "FP32":
		return F32, nil
	case "FLOAT16", "FP16", "HALF":
		return F16, nil
	case "BFLOAT16":
		return BF16, nil
	case "FLOAT64", "FP64", "DOUBLE":
		return F64, nil
	}
	for d := Q4_0; int(d) < len(info); d++ {
		if info[d].name == string(up) {
			if !d.CanEncode() {
				return Invalid, fmt.Errorf("%w %s: gomerge can read it but not write it", ErrUnsupported, d)
			}
			return d, nil
		}
	}
	d, err := Parse(string(up))
	if err != nil {
		return Invalid, err
	}
	if !d.IsFloat() {
		return Invalid, fmt.Errorf("%w %s: not a float type", ErrUnsupported, d)
	}
	return d, nil
}

// String returns the safetensors spelling of d.
func (d DType) String() string {
	if int(d) >= len(info) {
		return fmt.Sprintf("DType(%d)", uint8(d))
	}
	return info[d].name
}

// Size is the number of bytes one element occupies; 0 for Invalid and for block types,
// whose elements take a fraction of a byte each (see BlockSize and Bytes).
func (d DType) Size() int {
	if int(d) >= len(info) {
		return 0
	}
	return info[d].size
}

// IsFloat reports whether d is a floating-point type that gomerge merges.
func (d DType) IsFloat() bool {
	return int(d) < len(info) && info[d].float
}

// IsBlock reports whether d is a block-quantized type.
func (d DType) IsBlock() bool { return int(d) < len(info) && info[d].block > 0 }

// BlockSize is the number of elements that are stored together: 1 for the element
// types, 32 or 256 for the block types, 0 for Invalid. Decode and Encode take whole
// blocks only.
func (d DType) BlockSize() int {
	switch {
	case int(d) >= len(info):
		return 0
	case info[d].block > 0:
		return info[d].block
	case info[d].size > 0:
		return 1
	}
	return 0
}

// Bytes is the storage of n elements of type d, n a multiple of BlockSize.
func (d DType) Bytes(n int64) int64 {
	if d.IsBlock() {
		return n / int64(info[d].block) * int64(info[d].bytes)
	}
	return n * int64(d.Size())
}

// CanEncode reports whether Encode writes type d: every float type, the block types
// included (the K-quants with ggml's reference quantizers, kquant.go).
func (d DType) CanEncode() bool {
	return d.IsFloat()
}
