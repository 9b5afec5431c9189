package checkpoint

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/gomerge/gomerge/formats/imatrix"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// ErrBadInput is wrapped by errors about an input's content that gomerge cannot use
// (merge.ErrBadInput is this error).
var ErrBadInput = errors.New("bad input")

type ggufFormat struct{}

func (ggufFormat) String() string { return "GGUF" }
func (ggufFormat) Writes() string { return "a .gguf file" }

// OutType is GGUF's type policy (docs: "GGUF"):
//   - by default a tensor keeps the reference's type if gomerge can write it
//     (dtype.CanEncode: every type it reads, the K-quants included, so a Q4_K_M
//     reference gives a Q4_K_M output); a block type it cannot write would become
//     Q8_0, any other F16;
//   - with a type asked, every tensor of two or more dimensions gets it, while 1-D
//     tensors (norms, biases) keep the reference's type, as llama.cpp's own quantize
//     tool does (its kernels expect F32 norms);
//   - a tensor whose innermost dimension is not a multiple of the chosen type's block
//     size gets F16 instead;
//   - a llama.cpp file-type mix (opts.Mix, "Q4_K_M") and per-tensor rules
//     (opts.TensorTypes) are decided over the reference's whole tensor list
//     (ggufout.go: mixTypes), and override the above.
func (ggufFormat) OutType(asked dtype.DType, opts OutOptions, ref Source) (func(string, dtype.DType, []int64) dtype.DType, error) {
	byName, err := mixTypes(asked, opts, ref)
	if err != nil {
		return nil, err
	}
	return func(name string, from dtype.DType, shape []int64) dtype.DType {
		if to, ok := byName[name]; ok {
			return to
		}
		return plainType(asked, from, shape)
	}, nil
}

// plainType is the policy without a mix or rules (OutType's first three points).
func plainType(asked, from dtype.DType, shape []int64) dtype.DType {
	to := from
	if asked != dtype.Invalid && len(shape) >= 2 {
		to = asked
	}
	return writable(to, from, shape)
}

// writable replaces a type gomerge cannot write, or whose block does not fill the
// tensor's rows.
func writable(to, from dtype.DType, shape []int64) dtype.DType {
	if !to.CanEncode() {
		to = dtype.F16
		if from.IsBlock() {
			to = dtype.Q8_0
		}
	}
	if bs := int64(to.BlockSize()); bs > 1 && (len(shape) == 0 || shape[len(shape)-1]%bs != 0) {
		to = dtype.F16
	}
	return to
}

// fileTypes are llama.cpp's llama_ftype numbers ("mostly T, except 1-D tensors") for
// the types gomerge writes; general.file_type holds one, and llama.cpp and Ollama show
// it as the model's quantization. A K-quant maps where llama.cpp's loader maps a file
// without the key: Q3_K, Q4_K and Q5_K to the _M mixes.
var fileTypes = map[dtype.DType]uint32{
	dtype.F32: 0, dtype.F16: 1, dtype.Q4_0: 2, dtype.Q4_1: 3, dtype.Q8_0: 7, dtype.Q5_0: 8, dtype.Q5_1: 9, dtype.BF16: 32,
	dtype.Q2_K: 10, dtype.Q3_K: 12, dtype.Q4_K: 15, dtype.Q5_K: 17, dtype.Q6_K: 18,
}

// fileType returns the llama_ftype of the type holding the most elements among
// tensors of two or more dimensions.
func fileType(tensors []Tensor) (uint32, bool) {
	elems := map[dtype.DType]int64{}
	for _, t := range tensors {
		if len(t.Shape) >= 2 {
			n := int64(1)
			for _, d := range t.Shape {
				n *= d
			}
			elems[t.DType] += n
		}
	}
	best, most := dtype.Invalid, int64(-1)
	for dt, n := range elems {
		if n > most || n == most && dt < best { // ties broken by type, for determinism
			best, most = dt, n
		}
	}
	ft, ok := fileTypes[best]
	return ft, ok
}

// Plan lays out a GGUF file: the reference's metadata (architecture, hyperparameters,
// tokenizer) with the provenance keys, then the tensors. When tensor types changed,
// general.file_type is set to what the output mostly holds.
func (ggufFormat) Plan(out Output) (*Layout, error) {
	ref, ok := asGGUF(out.Ref)
	if !ok || out.Folder {
		return nil, unsupported("output %s: a GGUF output is one file, made from a GGUF reference", out.Name)
	}
	if _, compressed := out.Ref.(*gmzGGUF); compressed && out.InPlace && len(ref.parts) > 1 {
		// Plain parts written over a model with compressed ones would leave each old
		// .gmz part beside its new .gguf, and the set opened by a .gmz part would mix them.
		return nil, unsupported("output %s: --in-place on a split model with compressed parts: merge into --out NAME.gguf, then compress it", out.Name)
	}
	var changes []TypeChange
	for _, t := range out.Tensors {
		if t.DType != t.From {
			changes = append(changes, TypeChange{Tensor: t.Name, From: t.From.String(), To: t.DType.String()})
		}
	}
	ft, setFileType := fileType(out.Tensors)
	setFileType = setFileType && len(changes) > 0
	mix, isMix := gguf.ParseMix(out.Options.Mix)
	if isMix {
		ft, setFileType = mix.FileType, true
	}
	var meta []gguf.KV
	for _, kv := range ref.f.Metadata() {
		if strings.HasPrefix(kv.Key, "gomerge.") { // a merge of a merge says only what it did
			continue
		}
		if kv.Key == "general.file_type" && setFileType {
			continue // added below
		}
		if kv.Key == gguf.KeySplitNo || kv.Key == gguf.KeySplitCount || kv.Key == gguf.KeySplitTensors {
			continue // the output is one file
		}
		if out.Options.Imatrix != nil && strings.HasPrefix(kv.Key, "quantize.imatrix.") {
			continue // the reference's own; the new one is added below
		}
		meta = append(meta, kv)
	}
	if setFileType {
		meta = append(meta, gguf.KV{Key: "general.file_type", Value: gguf.Value{Type: gguf.ValueUint32, Data: ft}})
	}
	if _, ok := ref.f.Lookup(quantVersionKey); isMix && !ok {
		meta = append(meta, gguf.KV{Key: quantVersionKey, Value: gguf.Value{Type: gguf.ValueUint32, Data: uint32(quantVersion)}})
	}
	for _, kv := range out.Provenance {
		meta = append(meta, gguf.KV{Key: kv[0], Value: gguf.Value{Type: gguf.ValueString, Data: kv[1]}})
	}
	meta = append(meta, imatrixKV(out.Options.Imatrix)...)
	meta, err := overrideKV(meta, out.Options.OverrideKV)
	if err != nil {
		return nil, err
	}
	specs := make([]gguf.TensorSpec, len(out.Tensors))
	for i, t := range out.Tensors {
		typ, ok := gguf.TypeOf(t.DType)
		if !ok {
			return nil, unsupported("tensor %q: GGUF cannot hold %s", t.Name, t.DType)
		}
		specs[i] = gguf.TensorSpec{Name: t.Name, Type: typ, Shape: t.Shape}
	}
	if parts := splitParts(out, ref, specs); parts != nil {
		return planSplit(out, meta, specs, parts, changes)
	}
	l, err := gguf.Plan(meta, specs)
	if err != nil {
		return nil, err
	}
	layout := &Layout{TypeChanges: changes}
	layout.Files = []atomicout.File{{Name: out.Name, Header: l.Header, Size: l.Size}}
	for _, t := range l.Tensors {
		layout.Regions = append(layout.Regions, atomicout.Region{File: 0, Begin: t.Begin, Size: t.Size})
	}
	return layout, nil
}

// ggufSource is a GGUF model as the engine sees it: each tensor in the element type
// that dtype decodes (the ggml block types included), with its row-major shape. A
// split model is one source over all its parts; f, the first part, holds the
// model's metadata.
type ggufSource struct {
	path  string
	f     *gguf.File
	parts []*gguf.File
	where map[string]int // tensor name → index in parts
	metas []TensorMeta
}

// openGGUF opens the GGUF model that the GGUF file at path holds, or belongs to as
// a part of a split model (whose other parts may be compressed: gmzsplit.go).
func openGGUF(path string) (Source, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err // it names the path
	}
	return openGGUFModel(path, ggufPart{f: f}, newGMZShared())
}

// newGGUFSource describes the tensors of a model's parts, opened from paths; a
// tensor of a type gomerge cannot read is bad input.
func newGGUFSource(path string, parts []*gguf.File, paths []string) (*ggufSource, error) {
	s := &ggufSource{path: path, f: parts[0], parts: parts, where: map[string]int{}}
	for i, p := range parts {
		for _, t := range p.Tensors() {
			dt := t.Type.DType()
			if dt == dtype.Invalid {
				return nil, fmt.Errorf("%s: tensor %q: %w: type %s: gomerge cannot dequantize it (it reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K..Q6_K)",
					paths[i], t.Name, ErrBadInput, t.Type)
			}
			s.metas = append(s.metas, TensorMeta{Name: t.Name, DType: dt, Shape: t.Shape, File: paths[i]})
			s.where[t.Name] = i
		}
	}
	return s, nil
}

func (s *ggufSource) Path() string          { return s.path }
func (s *ggufSource) Format() Format        { return GGUF }
func (s *ggufSource) Tensors() []TensorMeta { return s.metas }

func (s *ggufSource) Close() error {
	var errs []error
	for _, p := range s.parts {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

func (s *ggufSource) Data(name string) ([]byte, error) {
	i, ok := s.where[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: not found", s.path, name)
	}
	t, _ := s.parts[i].Tensor(name)
	b, err := s.parts[i].Bytes(t)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", s.path, name, err)
	}
	return b, nil
}

// imatrixKV records the importance matrix a GGUF output was quantized with, under
// the keys llama-quantize uses. Without --imatrix, a reference's own keys stay as
// they were.
func imatrixKV(m *imatrix.Matrix) []gguf.KV {
	if m == nil {
		return nil
	}
	kvs := []gguf.KV{
		{Key: "quantize.imatrix.file", Value: gguf.Value{Type: gguf.ValueString, Data: filepath.Base(m.Path)}},
		{Key: "quantize.imatrix.entries_count", Value: gguf.Value{Type: gguf.ValueInt32, Data: int32(len(m.Entries))}},
		{Key: "quantize.imatrix.chunks_count", Value: gguf.Value{Type: gguf.ValueInt32, Data: int32(m.ChunkCount)}},
	}
	if len(m.Datasets) > 0 {
		kvs = append(kvs, gguf.KV{Key: "quantize.imatrix.dataset", Value: gguf.Value{Type: gguf.ValueString, Data: m.Datasets[len(m.Datasets)-1]}})
	}
	return kvs
}
