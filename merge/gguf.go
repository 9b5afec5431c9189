package merge

import (
	"fmt"
	"strings"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/safetensors"
)

// isGGUFPath reports whether a path names a GGUF file.
func isGGUFPath(path string) bool { return strings.HasSuffix(strings.ToLower(path), ".gguf") }

// ggufSource is a GGUF file as the engine sees it: each tensor in the element type
// that dtype decodes (the ggml block types included), with its row-major shape.
type ggufSource struct {
	path  string
	f     *gguf.File
	metas []TensorMeta
}

func openGGUF(path string) (*ggufSource, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err // it names the path
	}
	s := &ggufSource{path: path, f: f}
	for _, t := range f.Tensors() {
		dt := t.Type.DType()
		if dt == dtype.Invalid {
			f.Close()
			return nil, fmt.Errorf("%s: tensor %q: %w: type %s: gomerge cannot dequantize it (it reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K..Q6_K)",
				path, t.Name, ErrBadInput, t.Type)
		}
		s.metas = append(s.metas, TensorMeta{Name: t.Name, DType: dt, Shape: t.Shape, File: path})
	}
	return s, nil
}

func (s *ggufSource) Path() string          { return s.path }
func (s *ggufSource) Tensors() []TensorMeta { return s.metas }
func (s *ggufSource) Close() error          { return s.f.Close() }

func (s *ggufSource) Data(name string) ([]byte, error) {
	t, ok := s.f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: not found", s.path, name)
	}
	b, err := s.f.Bytes(t)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", s.path, name, err)
	}
	return b, nil
}

// TypeChange is a tensor written in another type than the reference input's, because
// gomerge cannot write that type or --dtype asked for another.
type TypeChange struct {
	Tensor string `json:"tensor"`
	From   string `json:"from"`
	To     string `json:"to"`
}

// ggufOutTypes decides each tensor's type in a GGUF output and returns the tensors
// whose type changes. The policy (README, "GGUF"):
//   - by default a tensor keeps the reference's type if gomerge can write it
//     (dtype.CanEncode: every type it reads, the K-quants included, so a Q4_K_M
//     reference gives a Q4_K_M output); a block type it cannot write would become
//     Q8_0, any other F16;
//   - with --dtype T, every tensor of two or more dimensions becomes T, while 1-D
//     tensors (norms, biases) keep the reference's type, as llama.cpp's own quantize
//     tool does (its kernels expect F32 norms);
//   - a tensor whose innermost dimension is not a multiple of the chosen type's block
//     size gets F16 instead.
func ggufOutTypes(plan *Plan, outDType dtype.DType) []TypeChange {
	var changes []TypeChange
	for i := range plan.Tensors {
		t := &plan.Tensors[i]
		from := t.OutDType
		to := from
		if outDType != dtype.Invalid && len(t.Shape) >= 2 {
			to = outDType
		}
		if !to.CanEncode() {
			to = dtype.F16
			if from.IsBlock() {
				to = dtype.Q8_0
			}
		}
		if bs := int64(to.BlockSize()); bs > 1 && (len(t.Shape) == 0 || t.Shape[len(t.Shape)-1]%bs != 0) {
			to = dtype.F16
		}
		t.OutDType = to
		if to != from {
			changes = append(changes, TypeChange{Tensor: t.Name, From: from.String(), To: to.String()})
		}
	}
	return changes
}

// fileTypes are llama.cpp's llama_ftype numbers ("mostly T, except 1-D tensors") for
// the types gomerge writes; general.file_type holds one, and llama.cpp and Ollama show
// it as the model's quantization. A K-quant maps where llama.cpp's loader maps a file
// without the key: Q3_K, Q4_K and Q5_K to the _M mixes.
var fileTypes = map[dtype.DType]uint32{
	dtype.F32: 0, dtype.F16: 1, dtype.Q4_0: 2, dtype.Q4_1: 3, dtype.Q8_0: 7, dtype.Q5_0: 8, dtype.Q5_1: 9, dtype.BF16: 32,
	dtype.Q2_K: 10, dtype.Q3_K: 12, dtype.Q4_K: 15, dtype.Q5_K: 17, dtype.Q6_K: 18,
}

// fileType returns the llama_ftype for a plan whose tensor types changed: that of the
// type holding the most elements among tensors of two or more dimensions.
func fileType(plan *Plan) (uint32, bool) {
	elems := map[dtype.DType]int64{}
	for i := range plan.Tensors {
		if t := &plan.Tensors[i]; len(t.Shape) >= 2 {
			elems[t.OutDType] += t.NumElements()
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

// ggufOutputOptions lays out a GGUF output: the reference's metadata (architecture,
// hyperparameters, tokenizer) with gomerge's provenance keys, then the plan's tensors.
// When tensor types changed, general.file_type is set to what the output mostly holds.
func ggufOutputOptions(job Job, plan *Plan, ref *ggufSource, typesChanged bool) (safetensors.OutputOptions, error) {
	var opts safetensors.OutputOptions
	prov, err := provenance(job)
	if err != nil {
		return opts, err
	}
	ft, setFileType := fileType(plan)
	setFileType = setFileType && typesChanged
	var meta []gguf.KV
	for _, kv := range ref.f.Metadata() {
		if strings.HasPrefix(kv.Key, "gomerge.") { // a merge of a merge says only what it did
			continue
		}
		if kv.Key == "general.file_type" && setFileType {
			continue // added below
		}
		meta = append(meta, kv)
	}
	if setFileType {
		meta = append(meta, gguf.KV{Key: "general.file_type", Value: gguf.Value{Type: gguf.ValueUint32, Data: ft}})
	}
	for _, kv := range prov {
		meta = append(meta, gguf.KV{Key: kv[0], Value: gguf.Value{Type: gguf.ValueString, Data: kv[1]}})
	}

	specs := make([]gguf.TensorSpec, len(plan.Tensors))
	for i, t := range plan.Tensors {
		typ, ok := gguf.TypeOf(t.OutDType)
		if !ok {
			return opts, fmt.Errorf("tensor %q: %w: GGUF cannot hold %s", t.Name, ErrBadParameter, t.OutDType)
		}
		specs[i] = gguf.TensorSpec{Name: t.Name, Type: typ, Shape: t.Shape}
		opts.Specs = append(opts.Specs, safetensors.Spec{Name: t.Name, DType: t.OutDType, Shape: t.Shape})
	}
	l, err := gguf.Plan(meta, specs)
	if err != nil {
		return opts, err
	}
	p := &safetensors.PreparedFile{Header: l.Header, Size: l.Size}
	for _, t := range l.Tensors {
		p.Tensors = append(p.Tensors, safetensors.PreparedTensor{Begin: t.Begin, Size: t.Size})
	}
	opts.Prepared = p
	return opts, nil
}
