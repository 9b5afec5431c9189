// Package loratest makes tiny llama-shaped checkpoints and PEFT adapters for the
// tests of lora and of the lora commands.
package loratest

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// Tensor is a fixture tensor: its values are rounded to DT when written.
type Tensor struct {
	Name  string
	DT    dtype.DType
	Shape []int64
	Vals  []float32
}

// WriteST writes a safetensors file (through safetensorstest), each tensor's values
// rounded to its type.
func WriteST(t testing.TB, path string, ts []Tensor) {
	t.Helper()
	var out []stt.Tensor
	for _, x := range ts {
		out = append(out, stt.FromFloat32(x.Name, x.DT, x.Shape, x.Vals))
	}
	if err := stt.WriteFile(path, out, nil); err != nil {
		t.Fatal(err)
	}
}

func RandVals(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64()) * scale
	}
	return v
}

// llamaLike is a two-layer llama-shaped base: attention and MLP projections, norms
// and an embedding.
func LlamaLike(t testing.TB, path string, dt dtype.DType, seed uint64) map[string][]int64 {
	rng := rand.New(rand.NewPCG(seed, 1))
	shapes := map[string][]int64{"model.embed_tokens.weight": {32, 24}}
	names := []string{"model.embed_tokens.weight"}
	for l := range 2 {
		p := "model.layers." + string(rune('0'+l)) + "."
		for _, m := range []struct {
			n    string
			o, i int64
		}{{"self_attn.q_proj", 24, 24}, {"self_attn.k_proj", 8, 24}, {"self_attn.v_proj", 8, 24}, {"self_attn.o_proj", 24, 24},
			{"mlp.gate_proj", 40, 24}, {"mlp.up_proj", 40, 24}, {"mlp.down_proj", 24, 40}} {
			shapes[p+m.n+".weight"] = []int64{m.o, m.i}
			names = append(names, p+m.n+".weight")
		}
		shapes[p+"input_layernorm.weight"] = []int64{24}
		names = append(names, p+"input_layernorm.weight")
	}
	shapes["lm_head.weight"] = []int64{32, 24}
	names = append(names, "lm_head.weight")
	var ts []Tensor
	for _, n := range names {
		s := shapes[n]
		ne := 1
		for _, d := range s {
			ne *= int(d)
		}
		ts = append(ts, NewTensor(n, dt, s, RandVals(rng, ne, 0.5)))
	}
	WriteST(t, path, ts)
	return shapes
}

// adapterSpec makes a PEFT adapter for llamaLike.
type AdapterSpec struct {
	R       int
	Alpha   float64
	RSLoRA  bool
	Modules []string // module-relative, e.g. model.layers.0.self_attn.q_proj
	DT      dtype.DType
	Extra   map[string]any // more config keys
	Seed    uint64
}

func WriteAdapter(t testing.TB, dir string, shapes map[string][]int64, s AdapterSpec) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(s.Seed, 2))
	cfg := map[string]any{"peft_type": "LORA", "r": s.R, "lora_alpha": s.Alpha, "use_rslora": s.RSLoRA,
		"target_modules": []string{"q_proj", "v_proj"}, "fan_in_fan_out": false, "task_type": "CAUSAL_LM"}
	for k, v := range s.Extra {
		cfg[k] = v
	}
	var ts []Tensor
	for _, m := range s.Modules {
		shape := shapes[m+".weight"]
		r := s.R
		if rp, ok := s.Extra["rank_pattern"].(map[string]int); ok {
			for k, v := range rp {
				if filepath.Ext("."+m) == "."+k || m == k || len(m) > len(k) && m[len(m)-len(k)-1:] == "."+k {
					r = v
				}
			}
		}
		ts = append(ts,
			Tensor{"base_model.model." + m + ".lora_A.weight", s.DT, []int64{int64(r), shape[1]}, RandVals(rng, r*int(shape[1]), 0.3)},
			Tensor{"base_model.model." + m + ".lora_B.weight", s.DT, []int64{shape[0], int64(r)}, RandVals(rng, r*int(shape[0]), 0.3)})
	}
	WriteST(t, filepath.Join(dir, "adapter_model.safetensors"), ts)
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "adapter_config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readFloats reads every tensor of a safetensors file as float64.
func ReadFloats(t testing.TB, path string) map[string][]float64 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(raw)
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	out := map[string][]float64{}
	for name, v := range hdr {
		if name == "__metadata__" {
			continue
		}
		var info struct {
			DType   string  `json:"dtype"`
			Offsets []int64 `json:"data_offsets"`
		}
		json.Unmarshal(v, &info)
		dt, err := dtype.Parse(info.DType)
		if err != nil {
			t.Fatal(err)
		}
		b := raw[8+int64(n)+info.Offsets[0] : 8+int64(n)+info.Offsets[1]]
		f := make([]float32, (info.Offsets[1]-info.Offsets[0])/int64(dt.Size()))
		if err := dtype.Decode(f, b, dt); err != nil {
			t.Fatal(err)
		}
		d := make([]float64, len(f))
		for i, x := range f {
			d[i] = float64(x)
		}
		out[name] = d
	}
	return out
}

// refDelta is the plain float64 reference: scale·B·A, (B·A)ᵀ when transposed.
func RefDelta(A, B []float64, r, rows, cols int, scale float64, transposed bool) []float64 {
	d := make([]float64, rows*cols)
	for i := range rows {
		for j := range cols {
			var s float64
			for k := range r {
				if transposed {
					s += B[j*r+k] * A[k*rows+i]
				} else {
					s += B[i*r+k] * A[k*cols+j]
				}
			}
			d[i*cols+j] = scale * s
		}
	}
	return d
}

func ULPDiff(a, b float32) int64 {
	ia, ib := int64(int32(math.Float32bits(a))), int64(int32(math.Float32bits(b)))
	if ia < 0 {
		ia = math.MinInt32 - ia
	}
	if ib < 0 {
		ib = math.MinInt32 - ib
	}
	if ia > ib {
		return ia - ib
	}
	return ib - ia
}

// NewTensor is a Tensor.
func NewTensor(name string, dt dtype.DType, shape []int64, vals []float32) Tensor {
	return Tensor{Name: name, DT: dt, Shape: shape, Vals: vals}
}
