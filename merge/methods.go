package merge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
)

// Model is one model of a multi-model merge with its own parameters (SPEC §3:
// PATH[:weight=W][:density=D][:fisher=F]).
type Model struct {
	Path    string
	Weight  float64 // default 1
	Density float64 // NaN: the method-wide density
	Fisher  string  // the model's diagonal Fisher (method fisher)
}

// Params are the method-wide parameters of SPEC §2. Per-model values override
// Density.
type Params struct {
	Density float64 // fraction of each task vector kept (ties, dare, breadcrumbs)
	Lambda  float64 // scale of the merged task vector
	T       float64 // slerp's interpolation factor
	Gamma   float64 // breadcrumbs: fraction of largest magnitudes dropped
	Seed    uint64  // dare's random stream
	Rescale string  // dare: "l1" (default) or "inverse"
	Epsilon float64 // fisher: floor of the Fisher values
}

// MethodJob is a merge by one of the methods of SPEC §2 other than sfa.
type MethodJob struct {
	Method string // a name from Methods
	Base   string // the base model, for methods that take one
	Models []Model
	Params Params
	// TensorParams, if set, gives each tensor its own Params and per-model weight and
	// density (a recipe's filters and gradients); Params and the Models' values are
	// then what the report records. Nil: the same values for every tensor.
	TensorParams TensorParamsFunc
	Job          Job // output, dtype, execution and callbacks; the rest is filled in
}

// methodDef is what the engine needs to know about a method: its inputs and its
// per-tensor kernel. The table below is the only place that says which method needs
// what.
type methodDef struct {
	base      bool // takes --base (index 0 of the inputs, and the reference)
	minModels int
	maxModels int // 0: no limit
	fisher    bool
	kernel    func(m *methodRun, t *TensorPlan) Kernel
	params    func(p Params) map[string]any
}

// Methods lists the method names RunMethod knows, as mergekit spells them.
var Methods = []string{"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties",
	"breadcrumbs", "breadcrumbs_ties", "slerp", "model_stock", "fisher"}

func methodDefs(name string) (methodDef, bool) {
	withDensity := func(p Params) map[string]any { return map[string]any{"density": p.Density, "lambda": p.Lambda} }
	switch name {
	case "linear":
		return methodDef{minModels: 1, kernel: linearKernel, params: func(Params) map[string]any { return map[string]any{} }}, true
	case "task_arithmetic":
		return methodDef{base: true, minModels: 1, kernel: taskArithmeticKernel,
			params: func(p Params) map[string]any { return map[string]any{"lambda": p.Lambda} }}, true
	case "ties":
		return methodDef{base: true, minModels: 1, kernel: tiesKernel, params: withDensity}, true
	case "dare_linear", "dare_ties":
		return methodDef{base: true, minModels: 1, kernel: dareKernel, params: func(p Params) map[string]any {
			return map[string]any{"density": p.Density, "lambda": p.Lambda, "seed": p.Seed, "rescale": p.Rescale}
		}}, true
	case "breadcrumbs", "breadcrumbs_ties":
		return methodDef{base: true, minModels: 1, kernel: breadcrumbsKernel, params: func(p Params) map[string]any {
			return map[string]any{"density": p.Density, "lambda": p.Lambda, "gamma": p.Gamma}
		}}, true
	case "slerp":
		return methodDef{base: true, minModels: 1, maxModels: 1, kernel: slerpKernel,
			params: func(p Params) map[string]any { return map[string]any{"t": p.T} }}, true
	case "model_stock":
		return methodDef{base: true, minModels: 2, kernel: modelStockKernel, params: func(Params) map[string]any { return map[string]any{} }}, true
	case "fisher":
		return methodDef{minModels: 1, fisher: true, kernel: fisherKernel,
			params: func(p Params) map[string]any { return map[string]any{"epsilon": p.Epsilon} }}, true
	}
	return methodDef{}, false
}

// methodRun is a validated job: what kernels read.
type methodRun struct {
	name     string
	base     bool      // inputs[0] is the base
	weights  []float32 // per model
	dens     []float64 // per model
	p        Params
	tiesSign bool // dare_ties, breadcrumbs_ties
}

// ErrBadParameter is wrapped by errors about method parameters.
var ErrBadParameter = errors.New("bad parameter")

func (j *MethodJob) validate(def methodDef) (*methodRun, error) {
	bad := func(format string, args ...any) (*methodRun, error) {
		return nil, fmt.Errorf("%s: %w: %s", j.Method, ErrBadParameter, fmt.Sprintf(format, args...))
	}
	if def.base && j.Base == "" {
		return bad("needs a base model (--base)")
	}
	if !def.base && j.Base != "" {
		return bad("takes no base model")
	}
	if len(j.Models) < def.minModels || (def.maxModels > 0 && len(j.Models) > def.maxModels) {
		if def.maxModels == def.minModels {
			return bad("takes exactly %d model(s) besides the base, got %d", def.minModels, len(j.Models))
		}
		return bad("needs at least %d model(s), got %d", def.minModels, len(j.Models))
	}
	p := j.Params
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if !finite(p.Lambda) {
		return bad("lambda %v is not a finite number", p.Lambda)
	}
	if !(p.Density >= 0 && p.Density <= 1) {
		return bad("density %v is outside [0, 1]", p.Density)
	}
	if !(p.T >= 0 && p.T <= 1) {
		return bad("t %v is outside [0, 1]", p.T)
	}
	if !(p.Gamma >= 0 && p.Gamma <= 1) {
		return bad("gamma %v is outside [0, 1]", p.Gamma)
	}
	if j.Method == "fisher" && !(p.Epsilon > 0) {
		return bad("epsilon %v must be positive", p.Epsilon)
	}
	if p.Rescale == "" {
		p.Rescale = "l1"
	}
	if p.Rescale != "l1" && p.Rescale != "inverse" {
		return bad("rescale %q: want l1 or inverse", p.Rescale)
	}
	r := &methodRun{name: j.Method, base: def.base, p: p,
		tiesSign: j.Method == "dare_ties" || j.Method == "breadcrumbs_ties"}
	var wsum float64
	for _, m := range j.Models {
		if !finite(m.Weight) {
			return bad("%s: weight %v is not a finite number", m.Path, m.Weight)
		}
		if j.Method == "fisher" && !(m.Weight > 0) {
			return bad("%s: weight %v must be positive for Fisher merging", m.Path, m.Weight)
		}
		d := m.Density
		if math.IsNaN(d) {
			d = p.Density
		}
		if !(d >= 0 && d <= 1) {
			return bad("%s: density %v is outside [0, 1]", m.Path, d)
		}
		if def.fisher && m.Fisher == "" {
			return bad("%s: needs its Fisher (PATH:fisher=FISHER)", m.Path)
		}
		if !def.fisher && m.Fisher != "" {
			return bad("%s: a Fisher is only used by the fisher method", m.Path)
		}
		r.weights = append(r.weights, float32(m.Weight))
		r.dens = append(r.dens, d)
		wsum += float64(float32(m.Weight))
	}
	if j.Method == "linear" && float32(wsum) == 0 { // the divisor the kernel uses
		return bad("the weights sum to 0")
	}
	return r, nil
}

// RunMethod merges the models by the named method (SPEC §2).
func RunMethod(ctx context.Context, j MethodJob) (*Report, error) {
	def, ok := methodDefs(j.Method)
	if !ok {
		return nil, fmt.Errorf("%w: unknown method %q", ErrBadParameter, j.Method)
	}
	run, err := j.validate(def)
	if err != nil {
		return nil, err
	}
	job := j.Job
	job.Method = j.Method
	job.Inputs = nil
	if def.base {
		job.Inputs = append(job.Inputs, Input{Role: "base", Path: j.Base})
	}
	var models []map[string]any
	for i, m := range j.Models {
		job.Inputs = append(job.Inputs, Input{Role: "model", Path: m.Path})
		mp := map[string]any{"path": m.Path, "weight": m.Weight}
		if !math.IsNaN(m.Density) {
			mp["density"] = m.Density
		}
		if m.Fisher != "" {
			job.Aux = append(job.Aux, Input{Role: "fisher", Path: m.Fisher})
			mp["fisher"] = m.Fisher
		}
		_ = i
		models = append(models, mp)
	}
	job.Ref = 0
	job.Params = def.params(run.p)
	job.Params["models"] = models
	job.Kernel = func(t *TensorPlan) Kernel { return def.kernel(run, t) }
	if j.TensorParams != nil {
		job.Params["per_tensor"] = true
		job.Kernel = func(t *TensorPlan) Kernel {
			r, err := j.forTensor(def, t.Name)
			if err != nil {
				return failKernel(err) // the engine names the tensor
			}
			return def.kernel(r, t)
		}
	}
	return Run(ctx, job)
}

// models returns the per-model inputs of a chunk (without the base).
func (m *methodRun) models(in [][]float32) [][]float32 {
	if m.base {
		return in[1:]
	}
	return in
}

// signElect fills mask with SPEC's TIES rule over the weighted deltas of one element:
// s = sign(Σ Δ_i) with 0 → +1; m_i = Δ_i ≠ 0 and sign(Δ_i) = s.
func signMatches(d, s float32) bool {
	return d != 0 && (d > 0) == (s > 0)
}

func electSign(deltas []float32) float32 {
	var sum float32
	for _, d := range deltas {
		sum += d
	}
	if sum < 0 {
		return -1
	}
	return 1
}

// maskScratch is per-chunk scratch of the methods that drop entries: a keep mask per
// model, the chunk's magnitudes, and per-element deltas. maskPools recycle it so that
// those methods do not allocate per chunk.
type maskScratch struct {
	keep   [][]bool
	top    []bool
	mags   []uint32
	deltas []float32
}

type maskPool struct{ p sync.Pool }

func newMaskPool(lanes int) *maskPool {
	mp := &maskPool{}
	mp.p.New = func() any {
		s := &maskScratch{top: make([]bool, ChunkElems), mags: make([]uint32, ChunkElems), deltas: make([]float32, lanes)}
		for range lanes {
			s.keep = append(s.keep, make([]bool, ChunkElems))
		}
		return s
	}
	return mp
}

// get returns scratch whose masks have n elements.
func (mp *maskPool) get(n int) *maskScratch {
	s := mp.p.Get().(*maskScratch)
	for i := range s.keep {
		s.keep[i] = s.keep[i][:n]
	}
	s.top, s.mags = s.top[:n], s.mags[:n]
	return s
}

func (mp *maskPool) put(s *maskScratch) { mp.p.Put(s) }
