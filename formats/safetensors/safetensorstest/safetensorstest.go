// Package safetensorstest makes checkpoints for tests, benchmarks and the README's
// demo: llama-shaped tensor lists, random weights, related "fine-tuned" copies, written
// as single files or Hugging Face folders.
//
// Files are written with github.com/nlpodyssey/safetensors, not with gomerge's own
// writer, so that the reader is tested against an independent implementation.
package safetensorstest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	st "github.com/nlpodyssey/safetensors"

	"github.com/gomerge/gomerge/formats/dtype"
)

// Tensor is a tensor with its encoded bytes. gguftest uses it too, with GGUF block
// types as DType.
type Tensor struct {
	Name  string
	DType dtype.DType
	Shape []int64
	Data  []byte
}

// NumElements is the product of the shape.
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Float32 decodes a float tensor.
func (t *Tensor) Float32() []float32 {
	v := make([]float32, t.NumElements())
	if err := dtype.Decode(v, t.Data, t.DType); err != nil {
		panic(err)
	}
	return v
}

// FromFloat32 encodes values (rounded to nearest even) as a tensor of type dt.
func FromFloat32(name string, dt dtype.DType, shape []int64, v []float32) Tensor {
	t := Tensor{Name: name, DType: dt, Shape: shape, Data: make([]byte, dt.Bytes(int64(len(v))))}
	if err := dtype.Encode(t.Data, v, dt); err != nil {
		panic(err)
	}
	if t.NumElements() != int64(len(v)) {
		panic(fmt.Sprintf("tensor %s: %d values for shape %v", name, len(v), shape))
	}
	return t
}

// LlamaConfig sizes a llama-architecture checkpoint.
type LlamaConfig struct {
	Vocab, Hidden, Intermediate, Layers int
	KVHidden                            int // k/v projection width (grouped-query attention); 0 means Hidden
}

// TinyLlama is small enough for unit tests (about 60k parameters) yet has every kind of
// tensor a real llama checkpoint has, including 1-D norms and odd sizes.
var TinyLlama = LlamaConfig{Vocab: 97, Hidden: 48, Intermediate: 130, Layers: 2, KVHidden: 16}

// Shapes lists a llama checkpoint's tensor names and shapes in Hugging Face's order.
func (c LlamaConfig) Shapes() (names []string, shapes [][]int64) {
	kv := c.KVHidden
	if kv == 0 {
		kv = c.Hidden
	}
	add := func(name string, shape ...int) {
		s := make([]int64, len(shape))
		for i, d := range shape {
			s[i] = int64(d)
		}
		names, shapes = append(names, name), append(shapes, s)
	}
	add("model.embed_tokens.weight", c.Vocab, c.Hidden)
	for l := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"self_attn.q_proj.weight", c.Hidden, c.Hidden)
		add(p+"self_attn.k_proj.weight", kv, c.Hidden)
		add(p+"self_attn.v_proj.weight", kv, c.Hidden)
		add(p+"self_attn.o_proj.weight", c.Hidden, c.Hidden)
		add(p+"mlp.gate_proj.weight", c.Intermediate, c.Hidden)
		add(p+"mlp.up_proj.weight", c.Intermediate, c.Hidden)
		add(p+"mlp.down_proj.weight", c.Hidden, c.Intermediate)
		add(p+"input_layernorm.weight", c.Hidden)
		add(p+"post_attention_layernorm.weight", c.Hidden)
	}
	add("model.norm.weight", c.Hidden)
	add("lm_head.weight", c.Vocab, c.Hidden)
	return names, shapes
}

// Random makes a checkpoint of config c with normally distributed weights (std 0.02,
// norms around 1), deterministic in seed.
func Random(c LlamaConfig, dt dtype.DType, seed uint64) []Tensor {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	names, shapes := c.Shapes()
	out := make([]Tensor, len(names))
	for i, name := range names {
		n := int64(1)
		for _, d := range shapes[i] {
			n *= d
		}
		v := make([]float32, n)
		isNorm := len(shapes[i]) == 1
		for j := range v {
			if isNorm {
				v[j] = float32(1 + float64(0.05*rng.NormFloat64())) // no FMA: the same fixture on every platform
			} else {
				v[j] = float32(0.02 * rng.NormFloat64())
			}
		}
		out[i] = FromFloat32(name, dt, shapes[i], v)
	}
	return out
}

// Perturb returns a copy of ts with noise of standard deviation scale·(value scale)
// added to every float tensor: a stand-in for a fine-tuned model.
func Perturb(ts []Tensor, scale float64, seed uint64) []Tensor {
	rng := rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d))
	out := make([]Tensor, len(ts))
	for i, t := range ts {
		if !t.DType.IsFloat() {
			out[i] = t
			continue
		}
		v := t.Float32()
		for j := range v {
			v[j] += float32(scale * 0.02 * rng.NormFloat64())
		}
		out[i] = FromFloat32(t.Name, t.DType, t.Shape, v)
	}
	return out
}

// Fisher returns a positive diagonal "Fisher" for ts: |N(0, scale)|, as F32.
func Fisher(ts []Tensor, scale float64, seed uint64) []Tensor {
	rng := rand.New(rand.NewPCG(seed, 0x632be59bd9b4e019))
	out := make([]Tensor, 0, len(ts))
	for _, t := range ts {
		if !t.DType.IsFloat() {
			continue
		}
		v := make([]float32, t.NumElements())
		for j := range v {
			v[j] = float32(math.Abs(scale * rng.NormFloat64()))
		}
		out = append(out, FromFloat32(t.Name, dtype.F32, t.Shape, v))
	}
	return out
}

var toLib = map[dtype.DType]st.DType{
	dtype.Bool: st.BOOL, dtype.U8: st.U8, dtype.I8: st.I8, dtype.U16: st.U16, dtype.I16: st.I16,
	dtype.U32: st.U32, dtype.I32: st.I32, dtype.U64: st.U64, dtype.I64: st.I64,
	dtype.F16: st.F16, dtype.BF16: st.BF16, dtype.F32: st.F32, dtype.F64: st.F64,
}

// Encode serialises ts as one safetensors file (the library orders tensors by dtype,
// then name).
func Encode(ts []Tensor, meta map[string]string) ([]byte, error) {
	views := make(map[string]st.TensorView, len(ts))
	for _, t := range ts {
		shape := make([]uint64, len(t.Shape))
		for i, d := range t.Shape {
			shape[i] = uint64(d)
		}
		v, err := st.NewTensorView(toLib[t.DType], shape, t.Data)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		views[t.Name] = v
	}
	return st.Serialize(views, meta)
}

// WriteFile writes ts as one safetensors file.
func WriteFile(path string, ts []Tensor, meta map[string]string) error {
	b, err := Encode(ts, meta)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// WriteFolder writes ts as a Hugging Face folder: model.safetensors when shards is 1,
// else that many shards (tensors split in order) and an index, plus a config.json and
// a tokenizer_config.json.
func WriteFolder(dir string, ts []Tensor, shards int, meta map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if shards <= 1 {
		if err := WriteFile(filepath.Join(dir, "model.safetensors"), ts, meta); err != nil {
			return err
		}
	} else {
		weightMap := map[string]string{}
		var total int64
		per := (len(ts) + shards - 1) / shards
		for s := range shards {
			lo, hi := min(s*per, len(ts)), min((s+1)*per, len(ts))
			name := fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, shards)
			for _, t := range ts[lo:hi] {
				weightMap[t.Name] = name
				total += int64(len(t.Data))
			}
			if err := WriteFile(filepath.Join(dir, name), ts[lo:hi], meta); err != nil {
				return err
			}
		}
		idx, _ := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}, "", "  ")
		if err := os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644); err != nil {
			return err
		}
	}
	cfg := `{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"model_max_length": 2048}`+"\n"), 0o644)
}

// Raw assembles a safetensors file from a header string and data bytes, for building
// malformed files: the header is used exactly as given (no padding, no checks).
func Raw(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}
