package merge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
)

// Model is one model of a multi-model merge with its own parameters (docs/methods.md:
// PATH[:weight=W][:density=D][:fisher=F]).
type Model struct {
	Path    string
	Weight  float64 // default 1; passthrough's scale
	Density float64 // NaN: the method-wide density
	Fisher  string  // the model's diagonal Fisher (method fisher)
}

// Params are the method-wide parameters. Which ones a method reads, their defaults and
// their ranges are in its registry entry (LookupMethod); per-model values override
// Density.
type Params struct {
	Density float64 // fraction of each task vector kept (ties, dare, breadcrumbs)
	Lambda  float64 // scale of the merged task vector
	T       float64 // slerp's interpolation factor
	Gamma   float64 // breadcrumbs: fraction of largest magnitudes dropped
	Seed    uint64  // dare's random stream
	// Rescaling turns on or off the rescale of the kept task-vector entries
	// (mergekit's rescale); SwitchDefault: the method's (on for dare_linear and
	// dare_ties, off for the others).
	Rescaling Switch
	// Rescale is the rescale's norm: "l1" (‖δ‖₁/‖δ̂‖₁, the default, as "") or
	// "inverse" (1/density, the DARE paper's).
	Rescale string
	// Normalize divides the task-vector family's merged delta by the weights' sum
	// (with a sign consensus: of the models that agree); SwitchDefault: the method's.
	Normalize Switch
	Epsilon   float64 // fisher: floor of the Fisher values; della: half-width ε of the keep probabilities; ram's epsilon; multislerp's eps
	// SelectTopK is sce's fraction of element positions kept, by the variance of the
	// task vectors across models.
	SelectTopK float64
	// FilterWise gives model_stock one interpolation factor per row (the last
	// dimension) instead of one per tensor.
	FilterWise Switch
	Beta       float64 // sfa: the anchor's weight

	// Geo holds nuslerp's, karcher's and ramplus_tl's own parameters (geometry.go).
	Geo GeoParams

	// generalKernel makes the task-vector family skip its fast paths, for the tests
	// that compare them with the general kernel; callers outside the package cannot
	// set it.
	generalKernel bool
	// keepCacheBytes, when not 0, replaces maxKeepCacheBytes (tests lower it so that
	// some chunks' masks are computed again).
	keepCacheBytes int64
}

// MethodJob is a merge by one of the registry's methods.
type MethodJob struct {
	Method string // a name from the registry (MethodNames)
	Base   string // the base model, for methods that take one
	Models []Model
	Params Params
	// TensorParams, if set, gives each tensor its own Params and per-model weight and
	// density (a recipe's filters and gradients); Params and the Models' values are
	// then what the report records. Nil: the same values for every tensor.
	TensorParams TensorParamsFunc
	Job          Job // output, dtype, execution and callbacks; the rest is filled in
}

// methodRun is a validated job: what kernels read.
type methodRun struct {
	method  *Method
	name    string
	base    bool      // inputs[0] is the base
	models  []Model   // as given, validated
	weights []float32 // per model
	dens    []float64 // per model, the method-wide density where a model has none
	p       Params    // Rescale and Normalize resolved to the method's defaults
	tv      tvOptions // the task-vector family's options (zero for other methods)
	lambda  float32   // the task-vector family's final scale (λ, or λ/Σw with normalize and no consensus)
	// perTensor: the parameters vary by tensor (MethodJob.TensorParams), for the report.
	perTensor bool
	// scratch: what the run's kernels share from tensor to tensor (shared); nil in
	// runs the tests make by hand.
	scratch *runScratch
}

// runScratch holds a run's shared scratch pools by key.
type runScratch struct {
	mu sync.Mutex
	by map[string]any
}

// shared returns the run's value for key, made by mk the first time: the scratch
// pools that its kernels share across tensors. A kernel is made per tensor, and a
// pool made with it starts empty at every tensor, so that every tensor's first
// chunks allocated their scratch again (and the runtime zeroed it, in fresh pages):
// 9 % of DARE-TIES's CPU on 1 GB models, whose sign election holds 1.25 MB of
// scratch per chunk in flight (bench/README.md). key names the kind of scratch and
// everything its size depends on. A run made without scratch (the tests' hand-made
// runs) gets a value of its own from each call.
func (m *methodRun) shared(key string, mk func() any) any {
	if m.scratch == nil {
		return mk()
	}
	m.scratch.mu.Lock()
	defer m.scratch.mu.Unlock()
	if v, ok := m.scratch.by[key]; ok {
		return v
	}
	if m.scratch.by == nil {
		m.scratch.by = make(map[string]any)
	}
	v := mk()
	m.scratch.by[key] = v
	return v
}

// sharedPool is the run's sync.Pool for key, whose New is newFn (methodRun.shared).
func sharedPool(m *methodRun, key string, newFn func() any) *sync.Pool {
	return m.shared(key, func() any { return &sync.Pool{New: newFn} }).(*sync.Pool)
}

// maskPool is the run's maskPool for its models (newMaskPool).
func (m *methodRun) maskPool() *maskPool {
	lanes := len(m.weights)
	return m.shared(fmt.Sprintf("mask/%d", lanes), func() any { return newMaskPool(lanes) }).(*maskPool)
}

// rankPool is the run's pool of rank selectors' scratch (newRankScratch).
func (m *methodRun) rankPool() *sync.Pool {
	return sharedPool(m, "rank", newRankScratch)
}

// combinePool is the run's pool of combineScratch for its models, with sign
// election's buffers or without (newCombinePool).
func (m *methodRun) combinePool(sign bool) *sync.Pool {
	lanes := len(m.weights)
	return m.shared(fmt.Sprintf("combine/%d/%v", lanes, sign), func() any { return newCombinePool(lanes, sign) }).(*sync.Pool)
}

// ErrBadParameter is wrapped by errors about method parameters.
var ErrBadParameter = errors.New("bad parameter")

func (j *MethodJob) validate(def *Method) (*methodRun, error) {
	bad := func(format string, args ...any) (*methodRun, error) {
		return nil, fmt.Errorf("%s: %w: %s", j.Method, ErrBadParameter, fmt.Sprintf(format, args...))
	}
	wrap := func(prefix string, err error) (*methodRun, error) {
		return nil, fmt.Errorf("%s: %s%w", j.Method, prefix, err)
	}
	switch {
	case def.Base == BaseRequired && j.Base == "":
		return bad("needs a base model (--base)")
	case def.Base == BaseAbsent && j.Base != "":
		return bad("takes no base model")
	}
	if len(j.Models) < def.MinModels || (def.MaxModels > 0 && len(j.Models) > def.MaxModels) {
		if def.MaxModels == def.MinModels {
			return bad("takes exactly %d model(s) besides the base, got %d", def.MinModels, len(j.Models))
		}
		return bad("needs at least %d model(s), got %d", def.MinModels, len(j.Models))
	}
	r := &methodRun{method: def, name: def.Name, base: j.Base != "", p: j.Params, scratch: new(runScratch)}
	var fisher *Param
	for i := range def.Params {
		p := &def.Params[i]
		if p.Kind == File {
			fisher = p
		}
		if p.IsModelKey() || p.field == nil {
			continue // per-model values are checked below, per model
		}
		switch f := p.field(&r.p).(type) {
		case *float64:
			if err := p.Check(*f); err != nil {
				return wrap("", err)
			}
		case *Switch:
			if *f == SwitchDefault {
				*f = SwitchOff
				if p.Default != 0 {
					*f = SwitchOn
				}
			}
			if err := p.Check(float64(b2i(*f == SwitchOn))); err != nil {
				return wrap("", err)
			}
		case *string:
			if *f == "" {
				*f = p.DefaultChoice
			}
			if err := p.CheckChoice(*f); err != nil {
				return wrap("", err)
			}
		}
	}
	weight, _ := def.Param("weight")
	density, hasDensity := def.Param("density")
	for _, m := range j.Models {
		w := m.Weight
		if math.IsNaN(w) || math.IsInf(w, 0) {
			return bad("%s: weight %v is not a finite number", m.Path, w)
		}
		if weight != nil {
			if err := weight.Check(w); err != nil {
				return wrap(m.Path+": ", err)
			}
		}
		d := m.Density
		if math.IsNaN(d) {
			d = r.p.Density
		}
		if hasDensity {
			if err := density.Check(d); err != nil {
				if math.IsNaN(m.Density) { // the method-wide value
					return wrap("", err)
				}
				return wrap(m.Path+": ", err)
			}
		}
		if fisher != nil && m.Fisher == "" {
			return bad("%s: needs its Fisher (PATH:fisher=FISHER)", m.Path)
		}
		if fisher == nil && m.Fisher != "" {
			return bad("%s: a Fisher is only used by the fisher method", m.Path)
		}
		r.models = append(r.models, m)
		r.weights = append(r.weights, float32(m.Weight))
		r.dens = append(r.dens, d)
	}
	if def.check != nil {
		if err := def.check(r); err != nil {
			return wrap("", err)
		}
	}
	return r, nil
}

// reportParams are the parameters a report records: the method's Report parameters,
// and its switches and choices wherever they are not the default.
func (r *methodRun) reportParams() map[string]any {
	if r.method.report != nil {
		return r.method.report(r)
	}
	out := map[string]any{}
	for i := range r.method.Params {
		p := &r.method.Params[i]
		if p.field == nil || p.IsModelKey() {
			continue
		}
		switch f := p.field(&r.p).(type) {
		case *float64:
			if p.Report {
				out[p.reportName()] = *f
			}
		case *uint64:
			if p.Report {
				out[p.reportName()] = *f
			}
		case *Switch:
			if p.Report || (*f == SwitchOn) != (p.Default != 0) {
				out[p.reportName()] = *f == SwitchOn
			}
		case *string:
			if p.Report || *f != p.DefaultChoice {
				out[p.reportName()] = *f
			}
		}
	}
	// density is per model but its method-wide value is what the command line set.
	if d, ok := r.method.Param("density"); ok && d.Report {
		out["density"] = r.p.Density
	}
	return out
}

// RunMethod merges the models by the named method.
func RunMethod(ctx context.Context, j MethodJob) (*Report, error) {
	def, ok := LookupMethod(j.Method)
	if !ok {
		return nil, fmt.Errorf("%w: unknown method %q", ErrBadParameter, j.Method)
	}
	run, err := j.validate(def)
	if err != nil {
		return nil, err
	}
	run.perTensor = j.TensorParams != nil
	if def.run != nil {
		return def.run(ctx, j, run)
	}
	job := j.Job
	job.Method = j.Method
	job.Inputs = nil
	if run.base {
		job.Inputs = append(job.Inputs, Input{Role: "base", Path: j.Base})
	}
	var models []map[string]any
	for _, m := range j.Models {
		job.Inputs = append(job.Inputs, Input{Role: "model", Path: m.Path})
		mp := map[string]any{"path": m.Path, "weight": m.Weight}
		if !math.IsNaN(m.Density) {
			mp["density"] = m.Density
		}
		if m.Fisher != "" {
			job.Aux = append(job.Aux, Input{Role: "fisher", Path: m.Fisher})
			mp["fisher"] = m.Fisher
		}
		models = append(models, mp)
	}
	job.Ref = 0
	job.Params = run.reportParams()
	if def.report == nil {
		job.Params["models"] = models
	}
	job.Kernel = func(t *TensorPlan) Kernel { return def.kernel(run, t) }
	if j.TensorParams != nil {
		if def.report == nil {
			job.Params["per_tensor"] = true
		}
		job.Kernel = func(t *TensorPlan) Kernel {
			r, err := j.forTensor(def, t.Name)
			if err != nil {
				return Kernel{Err: err} // the engine names the tensor
			}
			r.scratch = run.scratch // the same models: the same scratch
			return def.kernel(r, t)
		}
	}
	return Run(ctx, job)
}

// maskScratch is per-chunk scratch of the methods that drop entries: a keep mask per
// model, the chunk's magnitudes, and per-element deltas. maskPools recycle it so that
// those methods do not allocate per chunk.
type maskScratch struct {
	keep   [][]bool
	top    []bool
	mags   []uint32
	deltas []float32
	// elem: per model and element, a rescale factor (della's inverse rescale, 1/p of
	// the element's keep probability); allocated by the methods that use it.
	elem [][]float32
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
