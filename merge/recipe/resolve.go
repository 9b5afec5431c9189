package recipe

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/hub"
	"github.com/gomerge/gomerge/lora"
	"github.com/gomerge/gomerge/merge"
)

// Model resolution: a model reference to a checkpoint on disk or an earlier step's
// output, and its tensors.

// modelInfo is a model's tensors, from its file or, for a step not yet run, from
// that step's plan.
type modelInfo struct {
	path    string
	step    string
	metas   []merge.TensorMeta
	index   map[string]int
	byLayer map[int][]int
	layers  int    // 1 + the highest layer number; 0 without layers
	dir     string // its folder (config, tokenizer), "" for a single file
	planned bool   // a step's output, known from its plan: no files to look at yet
}

func newModelInfo(path, step string, metas []merge.TensorMeta, dir string) *modelInfo {
	m := &modelInfo{path: path, step: step, metas: metas, dir: dir, index: map[string]int{}, byLayer: map[int][]int{}}
	for i, t := range metas {
		m.index[t.Name] = i
		if _, l, _, ok := checkpoint.SplitLayer(t.Name); ok {
			m.byLayer[l] = append(m.byLayer[l], i)
			m.layers = max(m.layers, l+1)
		}
	}
	return m
}

// catalog resolves model references to their tensors. With planned set, the
// outputs of steps come from their plans (a dry run, or the check before a run);
// otherwise from the files the steps wrote.
type catalog struct {
	r       *Recipe
	outs    map[string]string // step name → output path
	planned map[string]*modelInfo
	cache   map[string]*modelInfo

	resolveHub func(name string) (string, error) // Options.Resolve
	located    map[string]string                 // Hub id → its local path
}

func (c *catalog) resolve(ref ModelRef) (*modelInfo, error) {
	if st, ok := c.r.Step(ref.Name); ok {
		if c.planned != nil {
			if m := c.planned[st.Name]; m != nil {
				return m, nil
			}
			return nil, errorf(ref.Pos, "step %q is used before it runs", st.Name)
		}
		return c.open(c.outs[st.Name], st.Name, ref)
	}
	path, err := c.locate(ref)
	if err != nil {
		return nil, err
	}
	return c.open(path, "", ref)
}

func (c *catalog) open(path, step string, ref ModelRef) (*modelInfo, error) {
	if m := c.cache[path]; m != nil {
		return m, nil
	}
	fi, err := os.Stat(path)
	if _, _, isLoRA := lora.SplitRef(path); isLoRA && step == "" {
		fi, err = nil, nil // BASE+ADAPTER: merge.Open applies the adapter (docs/lora.md)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && step == "" {
			return nil, notLocal(ref)
		}
		return nil, fmt.Errorf("%s: %w", ref.Pos, err)
	}
	src, err := merge.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref.Pos, err)
	}
	metas := append([]merge.TensorMeta(nil), src.Tensors()...)
	src.Close()
	dir := ""
	if fi != nil && fi.IsDir() {
		dir = path
	}
	m := newModelInfo(path, step, metas, dir)
	c.cache[path] = m
	return m, nil
}

// notLocal explains a model reference that is no local path and no Hugging Face id
// (those are resolved by locate).
func notLocal(ref ModelRef) error {
	name := ref.Name
	switch {
	case strings.Contains(name, "@") || strings.Count(name, "/") >= 1 && !strings.HasPrefix(name, ".") && !filepath.IsAbs(name):
		if _, err := hub.ParseRef(name); err != nil {
			return errorf(ref.Pos, "model %q: no such file or folder, and not a Hugging Face id (%v)", name, err)
		}
	}
	return errorf(ref.Pos, "model %q: no such file or folder", name)
}
