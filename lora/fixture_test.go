package lora

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// tensor is a fixture tensor: values are rounded to dt when written.
type tensor struct {
	name  string
	dt    dtype.DType
	shape []int64
	vals  []float32
}

// writeST writes a safetensors file by hand: an 8-byte header length, the JSON
// header, then the data in order.
func writeST(t testing.TB, path string, ts []tensor) {
	t.Helper()
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data []byte
	for _, x := range ts {
		b := make([]byte, x.dt.Bytes(int64(len(x.vals))))
		if err := dtype.Encode(b, x.vals, x.dt); err != nil {
			t.Fatal(err)
		}
		hdr[x.name] = map[string]any{"dtype": x.dt.String(), "shape": x.shape, "data_offsets": []int{len(data), len(data) + len(b)}}
		data = append(data, b...)
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	out = append(append(out, h...), data...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randVals(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64()) * scale
	}
	return v
}

// llamaLike is a two-layer llama-shaped base: attention and MLP projections, norms
// and an embedding.
func llamaLike(t testing.TB, path string, dt dtype.DType, seed uint64) map[string][]int64 {
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
	var ts []tensor
	for _, n := range names {
		s := shapes[n]
		ne := 1
		for _, d := range s {
			ne *= int(d)
		}
		ts = append(ts, tensor{n, dt, s, randVals(rng, ne, 0.5)})
	}
	writeST(t, path, ts)
	return shapes
}

// adapterSpec makes a PEFT adapter for llamaLike.
type adapterSpec struct {
	r       int
	alpha   float64
	rslora  bool
	modules []string // module-relative, e.g. model.layers.0.self_attn.q_proj
	dt      dtype.DType
	extra   map[string]any // more config keys
	seed    uint64
}

func writeAdapter(t testing.TB, dir string, shapes map[string][]int64, s adapterSpec) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(s.seed, 2))
	cfg := map[string]any{"peft_type": "LORA", "r": s.r, "lora_alpha": s.alpha, "use_rslora": s.rslora,
		"target_modules": []string{"q_proj", "v_proj"}, "fan_in_fan_out": false, "task_type": "CAUSAL_LM"}
	for k, v := range s.extra {
		cfg[k] = v
	}
	var ts []tensor
	for _, m := range s.modules {
		shape := shapes[m+".weight"]
		r := s.r
		if rp, ok := s.extra["rank_pattern"].(map[string]int); ok {
			for k, v := range rp {
				if filepath.Ext("."+m) == "."+k || m == k || len(m) > len(k) && m[len(m)-len(k)-1:] == "."+k {
					r = v
				}
			}
		}
		ts = append(ts,
			tensor{keyPrefix + m + ".lora_A.weight", s.dt, []int64{int64(r), shape[1]}, randVals(rng, r*int(shape[1]), 0.3)},
			tensor{keyPrefix + m + ".lora_B.weight", s.dt, []int64{shape[0], int64(r)}, randVals(rng, r*int(shape[0]), 0.3)})
	}
	writeST(t, filepath.Join(dir, WeightsFile), ts)
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readFloats reads every tensor of a safetensors file as float64.
func readFloats(t testing.TB, path string) map[string][]float64 {
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
func refDelta(A, B []float64, r, rows, cols int, scale float64, transposed bool) []float64 {
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

func ulpDiff(a, b float32) int64 {
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
