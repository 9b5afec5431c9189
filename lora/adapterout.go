package lora

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// OutTensor is one tensor of a written adapter.
type OutTensor struct {
	Name  string
	DType dtype.DType
	Shape []int64
	Data  []float32
}

// OutModule is one module of a written adapter: B·A scaled by Alpha/Rank, A being
// Rank×In and B Out×Rank (row-major); the base's ΔW is that product, transposed for
// embeddings and fan_in_fan_out.
type OutModule struct {
	Name      string // module name, e.g. model.layers.0.self_attn.q_proj
	A, B      []float32
	Rank      int
	Alpha     float64
	In, Out   int64
	Embedding bool // saved as lora_embedding_A/B
}

// AdapterOut is an adapter to write.
type AdapterOut struct {
	Modules []OutModule
	Replace []OutTensor // modules_to_save and other whole tensors, module-relative names
	DType   dtype.DType // of the factors
	// FanInFanOut: the base stores these matrices in×out (GPT-2's Conv1D).
	FanInFanOut bool
	// Config holds keys copied into adapter_config.json before gomerge's own.
	Config map[string]any
	Base   string // base_model_name_or_path
	Arch   string // a GGUF adapter's general.architecture
}

// WriteAdapter writes a PEFT adapter folder: adapter_model.safetensors and a complete
// adapter_config.json (r and lora_alpha the most common rank and alpha, the others in
// rank_pattern and alpha_pattern under each module's full name), crash-safely.
//
// A path ending in .gguf gets a GGUF adapter instead, as llama.cpp loads them.
func WriteAdapter(ctx context.Context, dir string, a *AdapterOut) ([]string, error) {
	if len(a.Modules) == 0 && len(a.Replace) == 0 {
		return nil, fmt.Errorf("%s: the adapter would be empty: %w", dir, ErrBadInput)
	}
	if isGGUFPath(dir) {
		return writeGGUFAdapter(ctx, dir, a)
	}
	dt := a.DType
	if dt == dtype.Invalid {
		dt = dtype.F32
	}
	var specs []safetensors.Spec
	var data [][]float32
	var dts []dtype.DType
	add := func(name string, d dtype.DType, shape []int64, v []float32) {
		specs = append(specs, safetensors.Spec{Name: name, DType: d, Shape: shape})
		data, dts = append(data, v), append(dts, d)
	}
	rankCount, alphaCount := map[int]int{}, map[float64]int{}
	targets := map[string]bool{}
	for _, m := range a.Modules {
		sa, sb := ".lora_A.weight", ".lora_B.weight"
		if m.Embedding {
			sa, sb = ".lora_embedding_A", ".lora_embedding_B"
		}
		aShape, bShape := []int64{int64(m.Rank), m.In}, []int64{m.Out, int64(m.Rank)}
		add(keyPrefix+m.Name+sa, dt, aShape, m.A)
		add(keyPrefix+m.Name+sb, dt, bShape, m.B)
		rankCount[m.Rank]++
		alphaCount[m.Alpha]++
		targets[m.Name[strings.LastIndex(m.Name, ".")+1:]] = true
	}
	var toSave []string
	for _, r := range a.Replace {
		add(keyPrefix+r.Name, r.DType, r.Shape, r.Data)
		mod := strings.TrimSuffix(strings.TrimSuffix(r.Name, ".weight"), ".bias")
		toSave = append(toSave, mod[strings.LastIndex(mod, ".")+1:])
	}
	r, alpha := mostCommon(rankCount, 8), mostCommon(alphaCount, 8.0)
	rankPat, alphaPat := map[string]int{}, map[string]float64{}
	for _, m := range a.Modules {
		if m.Rank != r {
			rankPat[m.Name] = m.Rank
		}
		if m.Alpha != alpha {
			alphaPat[m.Name] = m.Alpha
		}
	}
	cfg := map[string]any{
		"peft_type": "LORA", "r": r, "lora_alpha": alpha, "rank_pattern": rankPat, "alpha_pattern": alphaPat,
		"target_modules": sortedKeys(targets), "modules_to_save": nil, "fan_in_fan_out": a.FanInFanOut, "bias": "none",
		"use_rslora": false, "use_dora": false, "lora_dropout": 0.0, "inference_mode": true, "init_lora_weights": true,
		"layers_to_transform": nil, "layers_pattern": nil, "revision": nil, "task_type": "CAUSAL_LM",
		"base_model_name_or_path": a.Base,
	}
	for k, v := range a.Config {
		if _, ours := cfg[k]; !ours {
			cfg[k] = v
		}
	}
	if len(toSave) > 0 {
		sort.Strings(toSave)
		cfg["modules_to_save"] = toSave
	}
	cfgJSON, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	// The config is checked as any adapter's would be, so that nothing is written
	// that gomerge itself would refuse to read.
	if _, err := ParseConfig(filepath.Join(dir, ConfigFile), cfgJSON); err != nil {
		return nil, err
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	plan, err := safetensors.PlanOutput(filepath.Base(dir), true, safetensors.OutputOptions{
		Specs: specs, Metadata: map[string]string{"format": "pt"},
		Layout: []safetensors.ShardLayout{{Name: WeightsFile, Tensors: names}},
	})
	if err != nil {
		return nil, err
	}
	layout := plan.Layout
	layout.Whole = append(layout.Whole, atomicout.WholeFile{Name: ConfigFile, Data: append(cfgJSON, '\n')})
	layout.Marks = append(layout.Marks, ConfigFile, WeightsFile)
	dest, err := atomicout.Lock(ctx, dir, true, nil)
	if err != nil {
		return nil, err
	}
	defer dest.Unlock()
	o, err := dest.Create(layout)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", dir, err)
	}
	for i := range specs {
		buf := make([]byte, dts[i].Bytes(int64(len(data[i]))))
		if err := dtype.Encode(buf, data[i], dts[i]); err != nil {
			o.Abort()
			return nil, fmt.Errorf("%s: tensor %q: %w", dir, specs[i].Name, err)
		}
		if err := o.WriteAt(i, 0, buf); err != nil {
			o.Abort()
			return nil, fmt.Errorf("writing %s: %w", dir, err)
		}
	}
	if err := o.Commit(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", dir, err)
	}
	return o.Paths, nil
}

// mostCommon is the value counted most often, the smallest on a tie.
func mostCommon[K int | float64](counts map[K]int, empty K) K {
	best, n := empty, -1
	for k, c := range counts {
		if c > n || c == n && k < best {
			best, n = k, c
		}
	}
	return best
}
