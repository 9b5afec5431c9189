// Package gguftest makes small llama-architecture GGUF files for tests, benchmarks and
// the README's demo: the hyperparameters and a byte-level vocabulary llama.cpp needs to
// load and run them, and random weights in any type gomerge writes (K-quant tensors
// are filled with random blocks whose scales are finite, since gomerge has no K-quant
// quantizer).
package gguftest

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// Config sizes a llama model. The vocabulary is fixed: <unk>, <s>, </s> and the 256
// byte tokens <0x00>..<0xFF>, so any text tokenizes.
type Config struct {
	Hidden, FF, Layers, Heads, KVHeads, Context int
}

// Tiny is a model of about 170k parameters that llama.cpp loads and runs in
// milliseconds; every weight dimension is a multiple of 32 so that Q8_0 and the other
// 32-element block types can hold it.
var Tiny = Config{Hidden: 64, FF: 128, Layers: 2, Heads: 4, KVHeads: 2, Context: 256}

// KTiny is like Tiny with every weight dimension a multiple of 256, for K-quants.
var KTiny = Config{Hidden: 256, FF: 512, Layers: 1, Heads: 4, KVHeads: 4, Context: 128}

// VocabSize is the number of tokens of the byte-level vocabulary.
const VocabSize = 3 + 256

// Tensor is a tensor with its encoded bytes: the safetensors fixtures' type, whose
// DType may also be a GGUF block type, so that fixtures of both formats share their
// helpers.
type Tensor = safetensorstest.Tensor

func encode(name string, dt dtype.DType, shape []int64, v []float32) Tensor {
	return safetensorstest.FromFloat32(name, dt, shape, v)
}

// Metadata returns the key-value pairs llama.cpp needs for a model of config c.
func Metadata(c Config, name string) []gguf.KV {
	u32 := func(k string, v int) gguf.KV {
		return gguf.KV{Key: k, Value: gguf.Value{Type: gguf.ValueUint32, Data: uint32(v)}}
	}
	str := func(k, v string) gguf.KV { return gguf.KV{Key: k, Value: gguf.Value{Type: gguf.ValueString, Data: v}} }
	tokens := []string{"<unk>", "<s>", "</s>"}
	types := []int32{2, 3, 3} // UNKNOWN, CONTROL, CONTROL
	for b := range 256 {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", b)) // "<0x0A>" is the newline llama.cpp looks up
		types = append(types, 6)                            // BYTE
	}
	return []gguf.KV{
		str("general.architecture", "llama"),
		str("general.name", name),
		u32("general.alignment", 32),
		u32("llama.context_length", c.Context),
		u32("llama.embedding_length", c.Hidden),
		u32("llama.block_count", c.Layers),
		u32("llama.feed_forward_length", c.FF),
		u32("llama.attention.head_count", c.Heads),
		u32("llama.attention.head_count_kv", c.KVHeads),
		u32("llama.rope.dimension_count", c.Hidden/c.Heads),
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: gguf.Value{Type: gguf.ValueFloat32, Data: float32(1e-5)}},
		str("tokenizer.ggml.model", "llama"),
		{Key: "tokenizer.ggml.tokens", Value: gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueString, Data: tokens}},
		{Key: "tokenizer.ggml.scores", Value: gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueFloat32, Data: make([]float32, len(tokens))}},
		{Key: "tokenizer.ggml.token_type", Value: gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueInt32, Data: types}},
		u32("tokenizer.ggml.unknown_token_id", 0),
		u32("tokenizer.ggml.bos_token_id", 1),
		u32("tokenizer.ggml.eos_token_id", 2),
	}
}

// Shapes lists the tensors of a llama model in llama.cpp's names, row-major shapes.
func (c Config) Shapes() (names []string, shapes [][]int64) {
	kv := int64(c.Hidden / c.Heads * c.KVHeads)
	h, ff, v := int64(c.Hidden), int64(c.FF), int64(VocabSize)
	add := func(name string, shape ...int64) { names, shapes = append(names, name), append(shapes, shape) }
	add("token_embd.weight", v, h)
	for l := range c.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		add(p+"attn_norm.weight", h)
		add(p+"attn_q.weight", h, h)
		add(p+"attn_k.weight", kv, h)
		add(p+"attn_v.weight", kv, h)
		add(p+"attn_output.weight", h, h)
		add(p+"ffn_norm.weight", h)
		add(p+"ffn_gate.weight", ff, h)
		add(p+"ffn_down.weight", h, ff)
		add(p+"ffn_up.weight", ff, h)
	}
	add("output_norm.weight", h)
	add("output.weight", v, h)
	return names, shapes
}

// Random makes a model of config c: norms F32 around 1, every 2-D weight of type
// weights with N(0, 0.02) values (std 0.3 for the embeddings, so that different seeds
// give clearly different generations), quantized as dtype.Encode does (ggml's
// reference quantizers for the block types).
func Random(c Config, weights dtype.DType, seed uint64) []Tensor {
	rng := rand.New(rand.NewPCG(seed, 0x6a09e667f3bcc909))
	names, shapes := c.Shapes()
	out := make([]Tensor, len(names))
	for i, name := range names {
		n := int64(1)
		for _, d := range shapes[i] {
			n *= d
		}
		if len(shapes[i]) == 1 {
			v := make([]float32, n)
			for j := range v {
				v[j] = float32(1 + float64(0.05*rng.NormFloat64())) // no FMA: the same fixture on every platform
			}
			out[i] = encode(name, dtype.F32, shapes[i], v)
			continue
		}
		if !weights.CanEncode() {
			out[i] = Tensor{Name: name, DType: weights, Shape: shapes[i], Data: RandomBlocks(rng, weights, n)}
			continue
		}
		std := 0.02
		if name == "token_embd.weight" {
			std = 0.3
		}
		v := make([]float32, n)
		for j := range v {
			v[j] = float32(std * rng.NormFloat64())
		}
		out[i] = encode(name, weights, shapes[i], v)
	}
	return out
}

// RandomBlocks returns n elements of block type d as random bytes whose fp16 scale
// fields are small, finite and positive, so the values dequantize to finite numbers.
func RandomBlocks(rng *rand.Rand, d dtype.DType, n int64) []byte {
	b := make([]byte, d.Bytes(n))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	var scales []int // byte offsets of the fp16 fields in one block
	switch d {
	case dtype.Q2_K:
		scales = []int{80, 82}
	case dtype.Q3_K:
		scales = []int{108}
	case dtype.Q4_K, dtype.Q5_K, dtype.Q4_1, dtype.Q5_1:
		scales = []int{0, 2}
	case dtype.Q6_K:
		scales = []int{208}
	default:
		scales = []int{0}
	}
	bb := int(d.Bytes(int64(d.BlockSize())))
	for blk := 0; blk < len(b); blk += bb {
		for _, off := range scales {
			scale := float32(1e-4 * (1 + float64(rng.Float64()))) // rounded: arm64 would fuse Float64's scaling into the sum
			binary.LittleEndian.PutUint16(b[blk+off:], dtype.Float32ToF16(scale))
		}
	}
	return b
}

// Perturb returns a copy of ts with N(0, scale·0.02) noise added to every tensor,
// re-encoded in its own type (a stand-in for a fine-tune). A tensor of a type dtype
// cannot encode gets fresh random blocks.
func Perturb(ts []Tensor, scale float64, seed uint64) []Tensor {
	rng := rand.New(rand.NewPCG(seed, 0xbb67ae8584caa73b))
	out := make([]Tensor, len(ts))
	for i, t := range ts {
		if !t.DType.CanEncode() {
			out[i] = Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, Data: RandomBlocks(rng, t.DType, t.NumElements())}
			continue
		}
		v := t.Float32()
		for j := range v {
			v[j] += float32(scale * 0.02 * rng.NormFloat64())
		}
		out[i] = encode(t.Name, t.DType, t.Shape, v)
	}
	return out
}

// WriteFile writes meta and ts as a GGUF file.
func WriteFile(path string, meta []gguf.KV, ts []Tensor) error {
	specs := make([]gguf.TensorSpec, len(ts))
	for i, t := range ts {
		typ, ok := gguf.TypeOf(t.DType)
		if !ok {
			return fmt.Errorf("tensor %s: GGUF has no type for %s", t.Name, t.DType)
		}
		specs[i] = gguf.TensorSpec{Name: t.Name, Type: typ, Shape: t.Shape}
	}
	l, err := gguf.Plan(meta, specs)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := l.Write(f, func(i int) ([]byte, error) { return ts[i].Data, nil }); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

// Read returns a GGUF file's tensors, dequantizable ones only.
func Read(path string) ([]gguf.KV, []Tensor, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var ts []Tensor
	for _, ti := range f.Tensors() {
		b, err := f.Bytes(&ti)
		if err != nil {
			return nil, nil, err
		}
		ts = append(ts, Tensor{Name: ti.Name, DType: ti.Type.DType(), Shape: ti.Shape, Data: append([]byte(nil), b...)})
	}
	return append([]gguf.KV(nil), f.Metadata()...), ts, nil
}
