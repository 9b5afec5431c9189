package lora

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
)

// keyPrefix starts every tensor name PEFT saves: the PeftModel's base_model (the
// LoraModel) and its model (the wrapped transformers model).
const keyPrefix = "base_model.model."

// Adapter is an open PEFT LoRA adapter. Its methods are safe for concurrent use until
// Close.
type Adapter struct {
	Dir     string
	Config  *Config
	Modules []*Module // sorted by module name
	// Replace are tensors the adapter holds whole (modules_to_save, trained biases):
	// they replace the base's tensor of that name.
	Replace []Replacement

	// Arch is a GGUF adapter's general.architecture.
	Arch string

	weights checkpoint.Source
}

// Module is one adapted matrix: ΔW = Scale·B·A (transposed when Transposed).
type Module struct {
	Name       string // the module's name in the model, e.g. model.layers.0.self_attn.q_proj
	A, B       checkpoint.TensorMeta
	Rank       int
	Alpha      float64
	Scale      float64
	Transposed bool // fan_in_fan_out or an embedding: ΔW = Scale·(B·A)ᵀ
	Embedding  bool
}

// Replacement is a tensor the adapter holds whole.
type Replacement struct {
	Name string // the module-relative name, e.g. score.weight
	Meta checkpoint.TensorMeta
}

// Rows and Cols are the shape of ΔW as the base stores it.
func (m *Module) Rows() int64 {
	if m.Transposed {
		return m.A.Shape[1]
	}
	return m.B.Shape[0]
}

// Cols: see Rows.
func (m *Module) Cols() int64 {
	if m.Transposed {
		return m.B.Shape[0]
	}
	return m.A.Shape[1]
}

// Open opens the PEFT adapter in folder dir and checks that its tensors agree with
// its config.
func Open(dir string) (*Adapter, error) {
	if isGGUFPath(dir) {
		return openGGUFAdapter(dir)
	}
	cfgPath := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if st, serr := os.Stat(dir); serr == nil && !st.IsDir() {
				return nil, fmt.Errorf("%s: a LoRA adapter is a folder with %s and %s: %w", dir, ConfigFile, WeightsFile, ErrBadInput)
			}
			return nil, fmt.Errorf("%s: %w (a LoRA adapter is a PEFT folder with %s and %s): %w", dir, errNoConfig, ConfigFile, WeightsFile, ErrBadInput)
		}
		return nil, err
	}
	cfg, err := ParseConfig(cfgPath, data)
	if err != nil {
		return nil, err
	}
	wPath := filepath.Join(dir, WeightsFile)
	if _, err := os.Stat(wPath); errors.Is(err, fs.ErrNotExist) {
		if _, berr := os.Stat(filepath.Join(dir, "adapter_model.bin")); berr == nil {
			return nil, fmt.Errorf("%s: adapter_model.bin is a pickle, which gomerge never loads (it can run code); save the adapter with safe_serialization=True: %w", dir, ErrBadInput)
		}
		return nil, fmt.Errorf("%s: no %s: %w", dir, WeightsFile, ErrBadInput)
	}
	src, err := checkpoint.Open(wPath)
	if err != nil {
		return nil, err
	}
	a, err := newAdapter(dir, cfg, src)
	if err != nil {
		src.Close()
		return nil, err
	}
	return a, nil
}

// factorSuffixes are PEFT's names for the two factors: linear layers save A and B as
// sub-modules' weights, embeddings as parameters.
type factorSuffix struct {
	suffix    string
	isB       bool
	embedding bool
}

var factorSuffixes = []factorSuffix{
	{".lora_A.weight", false, false},
	{".lora_B.weight", true, false},
	{".lora_embedding_A", false, true},
	{".lora_embedding_B", true, true},
}

func newAdapter(dir string, cfg *Config, src checkpoint.Source) (*Adapter, error) {
	return newAdapterWith(dir, cfg, src, factorSuffixes)
}

func newAdapterWith(dir string, cfg *Config, src checkpoint.Source, factorSuffixes []factorSuffix) (*Adapter, error) {
	a := &Adapter{Dir: dir, Config: cfg, weights: src}
	file := src.Path()
	bad := func(tensor, format string, args ...any) error {
		return fmt.Errorf("%s: tensor %q: %s: %w", file, tensor, fmt.Sprintf(format, args...), ErrBadInput)
	}
	mods := map[string]*Module{}
	for _, t := range src.Tensors() {
		name := strings.TrimPrefix(t.Name, keyPrefix)
		if strings.HasSuffix(name, ".lora_magnitude_vector") || strings.Contains(name, ".lora_magnitude_vector.") {
			return nil, bad(t.Name, "a DoRA magnitude vector: DoRA adapters are not supported (merge them with PEFT's merge_and_unload first)")
		}
		matched := false
		for _, f := range factorSuffixes {
			if !strings.HasSuffix(name, f.suffix) {
				continue
			}
			matched = true
			mod := strings.TrimSuffix(name, f.suffix)
			m := mods[mod]
			if m == nil {
				m = &Module{Name: mod, Embedding: f.embedding}
				mods[mod] = m
			}
			if m.Embedding != f.embedding {
				return nil, bad(t.Name, "mixes embedding and linear LoRA factors for module %s", mod)
			}
			if len(t.Shape) != 2 {
				return nil, bad(t.Name, "shape %v: a LoRA factor is a matrix", t.Shape)
			}
			if !t.DType.IsFloat() {
				return nil, bad(t.Name, "type %s: LoRA factors are float", t.DType)
			}
			if f.isB {
				m.B = t
			} else {
				m.A = t
			}
		}
		if !matched {
			if strings.Contains(name, "lora_") {
				return nil, bad(t.Name, "not a LoRA tensor gomerge knows (lora_A/lora_B.weight, lora_embedding_A/B)")
			}
			a.Replace = append(a.Replace, Replacement{Name: name, Meta: t})
		}
	}
	for _, name := range sortedKeys(mods) {
		m := mods[name]
		if m.A.Name == "" || m.B.Name == "" {
			have := m.A.Name + m.B.Name
			return nil, bad(have, "module %s has only one of its two LoRA factors", name)
		}
		m.Rank, m.Alpha, m.Scale = cfg.Rank(name), cfg.Alpha(name), cfg.Scale(name)
		m.Transposed = m.Embedding || cfg.FanInFanOut
		// A is r×in, B is out×r, for embeddings too (A r×vocab, B dim×r).
		if m.A.Shape[0] != int64(m.Rank) {
			return nil, bad(m.A.Name, "shape %v: rank %d, but %s gives module %s rank %d", m.A.Shape, m.A.Shape[0], ConfigFile, name, m.Rank)
		}
		if m.B.Shape[1] != int64(m.Rank) {
			return nil, bad(m.B.Name, "shape %v: rank %d, but %s gives module %s rank %d", m.B.Shape, m.B.Shape[1], ConfigFile, name, m.Rank)
		}
		if !finite(m.Scale) {
			return nil, bad(m.A.Name, "scale %v is not finite", m.Scale)
		}
		a.Modules = append(a.Modules, m)
	}
	if len(a.Modules) == 0 && len(a.Replace) == 0 {
		return nil, fmt.Errorf("%s: no LoRA tensors: %w", file, ErrBadInput)
	}
	return a, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Close releases the adapter's weights.
func (a *Adapter) Close() error { return a.weights.Close() }

// WeightsPath is the adapter's safetensors file.
func (a *Adapter) WeightsPath() string { return a.weights.Path() }

// Factors returns module m's factors in float64 as delta = L·R with the scale folded
// into L: L is Rows×r and R is r×Cols, both row-major, in the base's layout.
func (a *Adapter) Factors(m *Module, weight float64) (L, R []float64, err error) {
	A, err := a.decode(m.A)
	if err != nil {
		return nil, nil, err
	}
	B, err := a.decode(m.B)
	if err != nil {
		return nil, nil, err
	}
	r := m.Rank
	rows, cols := int(m.Rows()), int(m.Cols())
	s := m.Scale * weight
	L, R = make([]float64, rows*r), make([]float64, r*cols)
	if !m.Transposed {
		// L = s·B (out×r), R = A (r×in).
		for i, v := range B {
			L[i] = s * v
		}
		copy(R, A)
		return L, R, nil
	}
	// (B·A)ᵀ = Aᵀ·Bᵀ: L = s·Aᵀ (in×r), R = Bᵀ (r×out).
	in, out := rows, cols
	for j := 0; j < r; j++ {
		for i := 0; i < in; i++ {
			L[i*r+j] = s * A[j*in+i]
		}
		for o := 0; o < out; o++ {
			R[j*out+o] = B[o*r+j]
		}
	}
	return L, R, nil
}

// Data returns the bytes of an adapter tensor.
func (a *Adapter) Data(t checkpoint.TensorMeta) ([]byte, error) { return a.weights.Data(t.Name) }

func (a *Adapter) decode(t checkpoint.TensorMeta) ([]float64, error) {
	data, err := a.weights.Data(t.Name)
	if err != nil {
		return nil, err
	}
	f := make([]float32, t.NumElements())
	if err := dtype.Decode(f, data, t.DType); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", t.File, t.Name, err)
	}
	out := make([]float64, len(f))
	for i, v := range f {
		if !finite(float64(v)) {
			return nil, fmt.Errorf("%s: tensor %q: element %d is %v: %w", t.File, t.Name, i, v, ErrBadInput)
		}
		out[i] = float64(v)
	}
	return out, nil
}
