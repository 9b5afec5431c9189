package checkpoint

import (
	"fmt"
	"github.com/gomerge/gomerge/formats/imatrix"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
)

// OutOptions are requests about an output beyond its one type (--dtype): GGUF's
// file-type mixes, per-tensor types and metadata overrides. The zero value asks for
// nothing.
type OutOptions struct {
	// Mix is a llama.cpp file type ("Q4_K_M"; gguf.ParseMix), GGUF only.
	Mix string
	// TensorTypes are --tensor-type rules: the first whose pattern matches a
	// tensor's name gives its type.
	TensorTypes []TensorType
	// OverrideKV sets metadata keys (--override-kv), after everything else.
	OverrideKV []KVOverride
	// SplitMaxSize and SplitMaxTensors, if set, split a GGUF output into files of at
	// most that many bytes of tensor data or that many tensors (--split-max-size,
	// --split-max-tensors), named as llama.cpp's gguf-split names them.
	SplitMaxSize    int64
	SplitMaxTensors int
	// Imatrix, if set, is llama.cpp's importance matrix (--imatrix): the K-quant
	// tensors it has entries for are quantized with it, and the output's metadata
	// records it under llama-quantize's quantize.imatrix.* keys.
	Imatrix *imatrix.Matrix
}

// ggufOnly refuses GGUF's options for another format.
func (o OutOptions) ggufOnly() error {
	switch {
	case o.Mix != "":
		return unsupported("--dtype %s: llama.cpp's file-type mixes are for GGUF outputs (write a .gguf)", o.Mix)
	case len(o.TensorTypes) > 0:
		return unsupported("--tensor-type: per-tensor types are for GGUF outputs (write a .gguf)")
	case len(o.OverrideKV) > 0:
		return unsupported("--override-kv: metadata overrides are for GGUF outputs (write a .gguf)")
	case o.Imatrix != nil:
		return unsupported("--imatrix: importance matrices are for GGUF outputs' K-quants (write a .gguf)")
	case o.SplitMaxSize > 0 || o.SplitMaxTensors > 0:
		return unsupported("--split-max-size, --split-max-tensors: split files are for GGUF outputs (a folder output takes --shard-size)")
	}
	return nil
}

// TensorType is one --tensor-type rule.
type TensorType struct {
	Pattern *regexp.Regexp
	DType   dtype.DType
}

// ParseTensorType reads REGEX=TYPE (TYPE as --dtype spells a type: q6_k, f16, …).
// The pattern is searched for in the name (RE2 syntax; anchor it with ^ and $ to
// match whole names). The last '=' separates, so a pattern may hold '='.
func ParseTensorType(s string) (TensorType, error) {
	i := strings.LastIndexByte(s, '=')
	if i <= 0 || i == len(s)-1 {
		return TensorType{}, fmt.Errorf("%q: want REGEX=TYPE, e.g. 'attn_v\\.weight$=q6_k'", s)
	}
	re, err := regexp.Compile(s[:i])
	if err != nil {
		return TensorType{}, fmt.Errorf("%q: %w", s, err)
	}
	d, err := dtype.ParseFloat(s[i+1:])
	if err != nil {
		return TensorType{}, fmt.Errorf("%q: %w", s, err)
	}
	if _, ok := gguf.TypeOf(d); !ok {
		return TensorType{}, fmt.Errorf("%q: %w: GGUF cannot hold %s", s, dtype.ErrUnsupported, d)
	}
	return TensorType{Pattern: re, DType: d}, nil
}

// KVOverride is one --override-kv: a metadata key and a value of one of llama.cpp's
// four override kinds.
type KVOverride struct {
	Key   string
	Kind  string // "int", "float", "bool" or "str"
	Int   int64
	Float float64
	Bool  bool
	Str   string
}

// ParseKVOverride reads llama.cpp's KEY=TYPE:VALUE, TYPE one of int, float, bool
// (true or false) and str.
func ParseKVOverride(s string) (KVOverride, error) {
	key, rest, ok := strings.Cut(s, "=")
	kind, val, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || key == "" {
		return KVOverride{}, fmt.Errorf("%q: want KEY=TYPE:VALUE, TYPE one of int, float, bool, str", s)
	}
	o := KVOverride{Key: key, Kind: kind}
	var err error
	switch kind {
	case "int":
		o.Int, err = strconv.ParseInt(val, 10, 64)
	case "float":
		o.Float, err = strconv.ParseFloat(val, 64)
		if err == nil && (math.IsInf(o.Float, 0) || math.IsNaN(o.Float)) {
			err = fmt.Errorf("not a finite number")
		}
	case "bool":
		switch val {
		case "true":
			o.Bool = true
		case "false":
		default:
			err = fmt.Errorf("want true or false")
		}
	case "str":
		o.Str = val
	default:
		return KVOverride{}, fmt.Errorf("%q: type %q: want int, float, bool or str", s, kind)
	}
	if err != nil {
		return KVOverride{}, fmt.Errorf("%q: %s value %q: %v", s, kind, val, err)
	}
	return o, nil
}

// value encodes an override as a GGUF value. A key the output already holds keeps
// its value type where the override fits it (llama.cpp's loader checks the types of
// the keys it reads: block_count must stay UINT32); a new int key is UINT32 when it
// fits, as llama.cpp's quantize writes it, else INT64, and a new float is FLOAT32.
func (o KVOverride) value(old gguf.Value, exists bool) (gguf.Value, error) {
	bad := func() (gguf.Value, error) {
		return gguf.Value{}, fmt.Errorf("--override-kv %s: %s %v does not fit the key's type %s", o.Key, o.Kind, o.show(), old.Type)
	}
	switch o.Kind {
	case "bool":
		return gguf.Value{Type: gguf.ValueBool, Data: o.Bool}, nil
	case "str":
		return gguf.Value{Type: gguf.ValueString, Data: o.Str}, nil
	case "float":
		if exists && old.Type == gguf.ValueFloat64 {
			return gguf.Value{Type: gguf.ValueFloat64, Data: o.Float}, nil
		}
		if math.Abs(o.Float) > math.MaxFloat32 {
			return bad()
		}
		return gguf.Value{Type: gguf.ValueFloat32, Data: float32(o.Float)}, nil
	}
	n := o.Int
	fits := func(lo, hi int64) bool { return lo <= n && n <= hi }
	t := old.Type
	if !exists || t == gguf.ValueArray || t == gguf.ValueString || t == gguf.ValueBool || t == gguf.ValueFloat32 || t == gguf.ValueFloat64 {
		t = gguf.ValueInt64
		if fits(0, math.MaxUint32) {
			t = gguf.ValueUint32
		}
	}
	switch {
	case t == gguf.ValueUint8 && fits(0, math.MaxUint8):
		return gguf.Value{Type: t, Data: uint8(n)}, nil
	case t == gguf.ValueInt8 && fits(math.MinInt8, math.MaxInt8):
		return gguf.Value{Type: t, Data: int8(n)}, nil
	case t == gguf.ValueUint16 && fits(0, math.MaxUint16):
		return gguf.Value{Type: t, Data: uint16(n)}, nil
	case t == gguf.ValueInt16 && fits(math.MinInt16, math.MaxInt16):
		return gguf.Value{Type: t, Data: int16(n)}, nil
	case t == gguf.ValueUint32 && fits(0, math.MaxUint32):
		return gguf.Value{Type: t, Data: uint32(n)}, nil
	case t == gguf.ValueInt32 && fits(math.MinInt32, math.MaxInt32):
		return gguf.Value{Type: t, Data: int32(n)}, nil
	case t == gguf.ValueUint64 && n >= 0:
		return gguf.Value{Type: t, Data: uint64(n)}, nil
	case t == gguf.ValueInt64:
		return gguf.Value{Type: t, Data: n}, nil
	}
	return bad()
}

func (o KVOverride) show() any {
	switch o.Kind {
	case "int":
		return o.Int
	case "float":
		return o.Float
	case "bool":
		return o.Bool
	}
	return o.Str
}

// overrideKV applies the overrides to meta: a key present is replaced where it is,
// a new one is appended. The split keys are refused: the writer owns them.
func overrideKV(meta []gguf.KV, overrides []KVOverride) ([]gguf.KV, error) {
	for _, o := range overrides {
		if strings.HasPrefix(o.Key, "split.") {
			return nil, unsupported("--override-kv %s: the split keys are written by gomerge", o.Key)
		}
		i := 0
		for i < len(meta) && meta[i].Key != o.Key {
			i++
		}
		var old gguf.Value
		if i < len(meta) {
			old = meta[i].Value
		}
		v, err := o.value(old, i < len(meta))
		if err != nil {
			return nil, unsupported("%v", err)
		}
		if i < len(meta) {
			meta[i].Value = v
		} else {
			meta = append(meta, gguf.KV{Key: o.Key, Value: v})
		}
	}
	return meta, nil
}

// quantVersionKey is the key llama.cpp's quantize sets to the version of ggml's
// quantization formats (2 since the K-quants' current layout).
const (
	quantVersionKey = "general.quantization_version"
	quantVersion    = 2
)

// mixTypes decides the type of every reference tensor when a mix or rules are
// asked: the mix's rule table (gguf.Mix.Types) with the rules first, or without a
// mix the rules first and the plain policy for the others. It returns nil when
// neither is asked.
func mixTypes(asked dtype.DType, opts OutOptions, ref Source) (map[string]dtype.DType, error) {
	if opts.Mix == "" && len(opts.TensorTypes) == 0 {
		return nil, nil
	}
	var rules []gguf.TypeRule
	for _, r := range opts.TensorTypes {
		t, ok := gguf.TypeOf(r.DType)
		if !ok {
			return nil, unsupported("--tensor-type %s=%s: GGUF cannot hold %s", r.Pattern, r.DType, r.DType)
		}
		rules = append(rules, gguf.TypeRule{Pattern: r.Pattern, Type: t})
	}
	metas := ref.Tensors()
	out := make(map[string]dtype.DType, len(metas))
	if opts.Mix == "" {
		for _, m := range metas {
			t, ok, err := gguf.MatchRule(rules, m.Name, m.Shape)
			if err != nil {
				return nil, unsupported("%s: %v", ref.Path(), err)
			}
			if ok {
				out[m.Name] = t.DType()
			} else {
				out[m.Name] = plainType(asked, m.DType, m.Shape)
			}
		}
		return out, nil
	}
	mix, ok := gguf.ParseMix(opts.Mix)
	if !ok {
		return nil, unsupported("--dtype %s: not one of llama.cpp's file types", opts.Mix)
	}
	var model gguf.MixModel
	if g, ok := asGGUF(ref); ok {
		model = gguf.ModelOf(g.f.Metadata())
	}
	ts := make([]gguf.MixTensor, len(metas))
	for i, m := range metas {
		t, ok := gguf.TypeOf(m.DType)
		if !ok {
			t = gguf.TypeF32 // a type GGUF cannot hold is refused by Plan, whatever the mix says
		}
		ts[i] = gguf.MixTensor{Name: m.Name, Shape: m.Shape, Type: t}
	}
	types, err := mix.Types(model, ts, rules)
	if err != nil {
		return nil, unsupported("%s: --dtype %s: %v", ref.Path(), mix.Name, err)
	}
	for i, m := range metas {
		switch to := types[i].DType(); {
		case !m.DType.IsFloat():
			out[m.Name] = m.DType
		case to == m.DType:
			out[m.Name] = writable(to, m.DType, m.Shape)
		default:
			out[m.Name] = to
		}
	}
	return out, nil
}
