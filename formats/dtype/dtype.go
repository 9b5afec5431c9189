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
)

var info = [...]struct {
	name  string
	size  int
	float bool
}{
	Invalid: {"INVALID", 0, false},
	Bool:    {"BOOL", 1, false},
	U8:      {"U8", 1, false},
	I8:      {"I8", 1, false},
	U16:     {"U16", 2, false},
	I16:     {"I16", 2, false},
	U32:     {"U32", 4, false},
	I32:     {"I32", 4, false},
	U64:     {"U64", 8, false},
	I64:     {"I64", 8, false},
	F16:     {"F16", 2, true},
	BF16:    {"BF16", 2, true},
	F32:     {"F32", 4, true},
	F64:     {"F64", 8, true},
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
// ("bf16", "F32"), for flags such as --dtype.
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

// Size is the number of bytes one element occupies; 0 for Invalid.
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
