package gguf

import "fmt"

// ValueType is the type of a metadata value (gguf_type).
type ValueType uint32

// The metadata value types of GGUF v2 and v3.
const (
	ValueUint8   ValueType = 0
	ValueInt8    ValueType = 1
	ValueUint16  ValueType = 2
	ValueInt16   ValueType = 3
	ValueUint32  ValueType = 4
	ValueInt32   ValueType = 5
	ValueFloat32 ValueType = 6
	ValueBool    ValueType = 7
	ValueString  ValueType = 8
	ValueArray   ValueType = 9
	ValueUint64  ValueType = 10
	ValueInt64   ValueType = 11
	ValueFloat64 ValueType = 12
)

var valueTypeNames = [...]string{
	"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING",
	"ARRAY", "UINT64", "INT64", "FLOAT64",
}

// String returns the GGUF spelling of t (UINT32, STRING, ...).
func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("ValueType(%d)", uint32(t))
}

// size is the encoded size of a scalar of type t; for STRING, the minimum (its length
// prefix); 0 for ARRAY and unknown types.
func (t ValueType) size() int64 {
	switch t {
	case ValueUint8, ValueInt8, ValueBool:
		return 1
	case ValueUint16, ValueInt16:
		return 2
	case ValueUint32, ValueInt32, ValueFloat32:
		return 4
	case ValueUint64, ValueInt64, ValueFloat64, ValueString:
		return 8
	}
	return 0
}

// Value is a typed metadata value. Data holds the Go value: uint8, int8, uint16, int16,
// uint32, int32, float32, bool, string, uint64, int64 or float64 for a scalar, and a
// slice of one of those ([]uint8, []string, ...) for an array, whose element type is
// Elem.
type Value struct {
	Type ValueType // the value's type; ValueArray for arrays
	Elem ValueType // the element type of an array; unset for scalars
	Data any
}

// KV is one metadata key and its value.
type KV struct {
	Key   string
	Value Value
}

// AsUint returns an unsigned integer value (UINT8..UINT64) widened to uint64.
func (v Value) AsUint() (uint64, bool) {
	switch x := v.Data.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	}
	return 0, false
}

// AsInt returns a signed integer value (INT8..INT64) widened to int64.
func (v Value) AsInt() (int64, bool) {
	switch x := v.Data.(type) {
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

// AsFloat returns a FLOAT32 or FLOAT64 value as float64.
func (v Value) AsFloat() (float64, bool) {
	switch x := v.Data.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// AsString returns a STRING value.
func (v Value) AsString() (string, bool) {
	s, ok := v.Data.(string)
	return s, ok
}

// AsBool returns a BOOL value.
func (v Value) AsBool() (bool, bool) {
	b, ok := v.Data.(bool)
	return b, ok
}

// AsStrings returns an array of STRING.
func (v Value) AsStrings() ([]string, bool) {
	s, ok := v.Data.([]string)
	return s, ok
}

// Len is the number of elements of an array, 1 for a scalar.
func (v Value) Len() int {
	switch x := v.Data.(type) {
	case []uint8:
		return len(x)
	case []int8:
		return len(x)
	case []uint16:
		return len(x)
	case []int16:
		return len(x)
	case []uint32:
		return len(x)
	case []int32:
		return len(x)
	case []float32:
		return len(x)
	case []bool:
		return len(x)
	case []string:
		return len(x)
	case []uint64:
		return len(x)
	case []int64:
		return len(x)
	case []float64:
		return len(x)
	}
	return 1
}
