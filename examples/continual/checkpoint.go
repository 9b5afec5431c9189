package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
)

// Save writes p as an F32 safetensors file, the way a trainer checkpoints: to a
// temporary file in the same folder, fsynced, then renamed over path, so a reader never
// sees half a file. The layout comes from gomerge's own planner.
func Save(path string, p *Params, meta map[string]string) (err error) {
	specs := make([]safetensors.Spec, len(p.views))
	for i, v := range p.views {
		specs[i] = safetensors.Spec{Name: v.Name, DType: dtype.F32, Shape: v.Shape}
	}
	m := map[string]string{"format": "pt"}
	for k, v := range meta {
		m[k] = v
	}
	plan, err := safetensors.PlanFile(filepath.Base(path), specs, m)
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	buf := make([]byte, plan.Size)
	copy(buf, plan.Header)
	for i, v := range p.views {
		t := plan.Tensors[i]
		if err := dtype.Encode(buf[t.Begin:t.End], p.Flat[v.Off:v.Off+v.Len], dtype.F32); err != nil {
			return fmt.Errorf("save %s: tensor %q: %w", path, v.Name, err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(buf); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// Load reads the tensors of a safetensors file into p, which fixes the names and shapes
// expected; any float dtype is accepted and converted to float32.
func Load(path string, p *Params) (err error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	if len(f.Tensors) != len(p.views) {
		return fmt.Errorf("load %s: %d tensors, want %d", path, len(f.Tensors), len(p.views))
	}
	for _, v := range p.views {
		t, ok := f.Tensor(v.Name)
		if !ok {
			return fmt.Errorf("load %s: no tensor %q", path, v.Name)
		}
		if !slices.Equal(t.Shape, v.Shape) {
			return fmt.Errorf("load %s: tensor %q has shape %v, want %v", path, v.Name, t.Shape, v.Shape)
		}
		b, err := f.Bytes(t)
		if err != nil {
			return fmt.Errorf("load %s: %w", path, err)
		}
		if err := dtype.Decode(p.Flat[v.Off:v.Off+v.Len], b, t.DType); err != nil {
			return fmt.Errorf("load %s: tensor %q: %w", path, v.Name, err)
		}
	}
	return nil
}
