package lora

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// GGUF adapters are what llama.cpp's convert_lora_to_gguf writes and llama.cpp loads
// with --lora: general.type = "adapter", adapter.type = "lora", adapter.lora.alpha,
// and for each adapted tensor NAME (the model's GGUF name) NAME.lora_a (r×in) and
// NAME.lora_b (out×r). llama.cpp scales each by alpha/r, r being that tensor's rank
// (by 1 when alpha is 0).

var ggufSuffixes = []factorSuffix{{".weight.lora_a", false, false}, {".weight.lora_b", true, false}}

func isGGUFPath(p string) bool { return strings.EqualFold(filepath.Ext(p), ".gguf") }

func openGGUFAdapter(path string) (*Adapter, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	str := func(k string) string {
		v, _ := f.Lookup(k)
		s, _ := v.AsString()
		return s
	}
	typ, atype, arch := str("general.type"), str("adapter.type"), str("general.architecture")
	alphaV, hasAlpha := f.Lookup("adapter.lora.alpha")
	alpha, _ := alphaV.AsFloat()
	f.Close()
	if typ != "adapter" || atype != "lora" {
		return nil, fmt.Errorf("%s: general.type %q, adapter.type %q: not a GGUF LoRA adapter: %w", path, typ, atype, ErrBadInput)
	}
	if hasAlpha && !finite(alpha) {
		return nil, fmt.Errorf("%s: adapter.lora.alpha %v is not finite: %w", path, alpha, ErrBadInput)
	}
	src, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	// A config that says what llama.cpp does: each module's rank is its lora_a's, its
	// alpha the file's (or the rank when alpha is 0, a scale of 1).
	ranks, alphas := map[string]int{}, map[string]float64{}
	r := 0
	for _, t := range src.Tensors() {
		mod, ok := strings.CutSuffix(t.Name, ".weight.lora_a")
		if !ok || len(t.Shape) != 2 || t.Shape[0] < 1 || t.Shape[0] > maxRank {
			continue
		}
		key := regexp.QuoteMeta(mod)
		ranks[key] = int(t.Shape[0])
		r = int(t.Shape[0])
		if alpha == 0 {
			alphas[key] = float64(t.Shape[0])
		}
	}
	if r == 0 {
		r = 1
	}
	cfgJSON, _ := json.Marshal(map[string]any{"peft_type": "LORA", "r": r, "lora_alpha": alpha, "rank_pattern": ranks, "alpha_pattern": alphas})
	cfg, err := ParseConfig(path, cfgJSON)
	if err != nil {
		src.Close()
		return nil, err
	}
	a, err := newAdapterWith(path, cfg, src, ggufSuffixes)
	if err != nil {
		src.Close()
		return nil, err
	}
	a.Arch = arch
	return a, nil
}

// ggufArch is a GGUF model's general.architecture, which an adapter for it records.
func ggufArch(path string) (string, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	v, _ := f.Lookup("general.architecture")
	s, ok := v.AsString()
	if !ok || s == "" {
		return "", fmt.Errorf("%s: no general.architecture: %w", path, ErrBadInput)
	}
	return s, nil
}

// writeGGUFAdapter writes a as a GGUF LoRA adapter at path. alpha is the largest
// rank; a module of lower rank or another scale has the difference folded into its
// lora_b, so that llama.cpp's alpha/r gives each module its own scale.
func writeGGUFAdapter(ctx context.Context, path string, a *AdapterOut) ([]string, error) {
	if a.Arch == "" {
		return nil, fmt.Errorf("%s: a GGUF adapter needs the model's architecture (a GGUF base)", path)
	}
	if len(a.Replace) > 0 {
		return nil, fmt.Errorf("%s: tensor %q: a GGUF adapter holds LoRA factors only: %w", path, a.Replace[0].Name, ErrBadInput)
	}
	dt := a.DType
	if dt == dtype.Invalid {
		dt = dtype.F32
	}
	typ, ok := gguf.TypeOf(dt)
	if !ok || dt.IsBlock() {
		return nil, fmt.Errorf("%s: GGUF adapter factors in %s are not supported", path, dt)
	}
	alpha := 0
	for _, m := range a.Modules {
		if m.Embedding {
			return nil, fmt.Errorf("%s: module %s: GGUF adapters of embeddings are not supported: %w", path, m.Name, ErrBadInput)
		}
		alpha = max(alpha, m.Rank)
	}
	meta := []gguf.KV{
		{Key: "general.architecture", Value: gguf.Value{Type: gguf.ValueString, Data: a.Arch}},
		{Key: "general.type", Value: gguf.Value{Type: gguf.ValueString, Data: "adapter"}},
		{Key: "adapter.type", Value: gguf.Value{Type: gguf.ValueString, Data: "lora"}},
		{Key: "adapter.lora.alpha", Value: gguf.Value{Type: gguf.ValueFloat32, Data: float32(alpha)}},
	}
	var specs []gguf.TensorSpec
	var data [][]float32
	for _, m := range a.Modules {
		fold := float32((m.Alpha / float64(m.Rank)) / (float64(alpha) / float64(m.Rank)))
		B := m.B
		if fold != 1 {
			B = make([]float32, len(m.B))
			for i, v := range m.B {
				B[i] = v * fold
			}
		}
		specs = append(specs,
			gguf.TensorSpec{Name: m.Name + ".weight.lora_a", Type: typ, Shape: []int64{int64(m.Rank), m.In}},
			gguf.TensorSpec{Name: m.Name + ".weight.lora_b", Type: typ, Shape: []int64{m.Out, int64(m.Rank)}})
		data = append(data, m.A, B)
	}
	l, err := gguf.Plan(meta, specs)
	if err != nil {
		return nil, err
	}
	layout := atomicout.Layout{Files: []atomicout.File{{Name: filepath.Base(path), Header: l.Header, Size: l.Size}}}
	for _, t := range l.Tensors {
		layout.Regions = append(layout.Regions, atomicout.Region{File: 0, Begin: t.Begin, Size: t.Size})
	}
	dest, err := atomicout.Lock(ctx, path, false, nil)
	if err != nil {
		return nil, err
	}
	defer dest.Unlock()
	o, err := dest.Create(layout)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	for i := range specs {
		buf := make([]byte, dt.Bytes(int64(len(data[i]))))
		if err := dtype.Encode(buf, data[i], dt); err == nil {
			err = o.WriteAt(i, 0, buf)
		}
		if err != nil {
			o.Abort()
			return nil, fmt.Errorf("writing %s: tensor %q: %w", path, specs[i].Name, err)
		}
	}
	if err := o.Commit(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return o.Paths, nil
}
