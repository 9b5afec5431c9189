package recipe

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	"github.com/gomerge/gomerge/merge"
)

// Options are what the command line adds to a recipe.
type Options struct {
	// Out is where the final (unnamed) step writes, or the only step of a one-step
	// recipe; it overrides that step's out:.
	Out string
	// IntermediateDir holds the outputs of named steps that have no out:, each in a
	// folder named after its step.
	IntermediateDir string
}

// Plan is what a recipe will do, step by step, in execution order.
type Plan struct {
	Recipe       string      `json:"recipe"`
	Steps        []*StepPlan `json:"steps"`
	BytesRead    int64       `json:"bytes_read"`
	BytesWritten int64       `json:"bytes_written"`
}

// StepPlan is what one step will do.
type StepPlan struct {
	Name         string  `json:"name"` // "" for the final step
	Method       string  `json:"method"`
	Inputs       []Input `json:"inputs"`
	Output       string  `json:"output"`
	Tensors      int     `json:"tensors"`
	Layers       int     `json:"layers,omitempty"`
	PerTensor    bool    `json:"per_tensor"` // parameters vary by tensor (filters, gradients)
	BytesRead    int64   `json:"bytes_read"`
	BytesWritten int64   `json:"bytes_written"`

	step     *Step
	spec     *merge.Method
	pos      []position // the merge's inputs: the base (if any) first
	views    []*view    // per position, when slices rename layers; nil otherwise
	outMetas []merge.TensorMeta
	outDType dtype.DType
	values   map[string]*tensorValues
	first    *tensorValues // the first tensor's values, for the report
	vary     bool
	extras   extras
	refDir   string // the folder the engine copies non-weight files from
	refPos   int
	layers   int
	origins  map[string]*origin
}

// Input is one checkpoint a step reads.
type Input struct {
	Role string `json:"role"`
	Path string `json:"path"`
	Step string `json:"step,omitempty"` // the step whose output it is
	// Layers, for a slice recipe, says which layers of which models the input
	// stacks, e.g. "a.safetensors[0:8] + b[4:12]".
	Layers string `json:"layers,omitempty"`
}

// position is one input of the merge: per slice, the source that plays that role.
type position struct {
	role string
	srcs []*nsource // one per slice
}

// nsource is a slice source with its model resolved (mergekit's normal form: a
// models: recipe is one slice over every layer of each model).
type nsource struct {
	ref        ModelRef
	info       *modelInfo
	start, end int
	params     Params
	fisher     *Str
}

type nslice struct {
	params Params
	pos    Pos
	n      int
}

// tensorValues are the parameters of one output tensor.
type tensorValues struct {
	p   merge.Params
	mps []merge.ModelParams
}

func (a *tensorValues) equal(b *tensorValues) bool {
	if a.p != b.p || len(a.mps) != len(b.mps) {
		return false
	}
	for i, m := range a.mps {
		// Bits, not ==: a NaN density (none) equals itself here.
		if math.Float64bits(m.Weight) != math.Float64bits(b.mps[i].Weight) || math.Float64bits(m.Density) != math.Float64bits(b.mps[i].Density) {
			return false
		}
	}
	return true
}

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
		if _, l, _, ok := splitLayer(t.Name); ok {
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
	return c.open(ref.Name, "", ref)
}

func (c *catalog) open(path, step string, ref ModelRef) (*modelInfo, error) {
	if m := c.cache[path]; m != nil {
		return m, nil
	}
	fi, err := os.Stat(path)
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
	if fi.IsDir() {
		dir = path
	}
	m := newModelInfo(path, step, metas, dir)
	c.cache[path] = m
	return m, nil
}

// notLocal explains a model reference that is no local path: gomerge does not
// download (a hub name, a LoRA, a revision).
func notLocal(ref ModelRef) error {
	name := ref.Name
	switch {
	case strings.Contains(name, "+"):
		return errorf(ref.Pos, "model %q: no such file or folder (a model+LoRA reference is not supported; merge the adapter first)", name)
	case strings.Contains(name, "@"):
		return errorf(ref.Pos, "model %q: no such file or folder (model@revision is a Hugging Face Hub reference; download that revision first)", name)
	case strings.Count(name, "/") == 1 && !strings.HasPrefix(name, ".") && !filepath.IsAbs(name):
		return errorf(ref.Pos, "model %q: no such file or folder; gomerge reads local checkpoints and does not download from the Hugging Face Hub: download it first (huggingface-cli download %s --local-dir DIR) and give DIR", name, name)
	}
	return errorf(ref.Pos, "model %q: no such file or folder", name)
}

// outputPath says where a step writes.
func (r *Recipe) outputPath(st *Step, opts Options) (string, error) {
	if st.Name == "" || len(r.Steps) == 1 {
		switch {
		case opts.Out != "":
			return opts.Out, nil
		case st.Out != nil:
			return st.Out.Value, nil
		}
		return "", errorf(st.Pos, "no output for the final step: give --out (or out: in the recipe)")
	}
	switch {
	case st.Out != nil:
		return st.Out.Value, nil
	case opts.IntermediateDir != "":
		return filepath.Join(opts.IntermediateDir, st.Name), nil
	}
	return "", errorf(st.Pos, "step %q has no out: and no --intermediate-dir was given", st.Name)
}

// PlanRecipe plans every step from the models' headers and the plans of earlier
// steps, without writing anything: a recipe that plans runs unless a file changes
// or a merge finds mismatched tensors.
func PlanRecipe(r *Recipe, opts Options) (*Plan, error) {
	order, err := r.Order()
	if err != nil {
		return nil, err
	}
	if opts.Out != "" && len(r.Steps) > 1 && !hasUnnamed(r) {
		return nil, errorf(Pos{File: r.File}, "--out is for the step without a name, and every step has one: they write to their out: or --intermediate-dir")
	}
	c := &catalog{r: r, outs: map[string]string{}, planned: map[string]*modelInfo{}, cache: map[string]*modelInfo{}}
	used := map[string]string{}
	for _, st := range order {
		out, err := r.outputPath(st, opts)
		if err != nil {
			return nil, err
		}
		abs, _ := filepath.Abs(out)
		if other, dup := used[abs]; dup {
			return nil, errorf(st.Pos, "step %s writes %s, as step %s does", stepLabel(st.Name), out, stepLabel(other))
		}
		used[abs] = st.Name
		c.outs[st.Name] = out
	}
	plan := &Plan{Recipe: r.File}
	for _, st := range order {
		sp, err := planStep(st, c, c.outs[st.Name])
		if err != nil {
			return nil, err
		}
		if st.Name != "" {
			dir := ""
			if !safetensorsOut(sp.Output) {
				dir = sp.Output
			}
			m := newModelInfo(sp.Output, st.Name, sp.outMetas, dir)
			m.planned = true
			c.planned[st.Name] = m
		}
		plan.Steps = append(plan.Steps, sp)
		plan.BytesRead += sp.BytesRead
		plan.BytesWritten += sp.BytesWritten
	}
	return plan, nil
}

func hasUnnamed(r *Recipe) bool {
	for _, st := range r.Steps {
		if st.Name == "" {
			return true
		}
	}
	return false
}

func stepLabel(name string) string {
	if name == "" {
		return "(final)"
	}
	return fmt.Sprintf("%q", name)
}

// planStep resolves a step's models, lays out its inputs and computes every
// tensor's parameters.
func planStep(st *Step, c *catalog, out string) (*StepPlan, error) {
	spec, _ := lookupMethod(st.Method.Value)
	sp := &StepPlan{Name: st.Name, Method: st.Method.Value, Output: out, step: st, spec: spec}
	slices, err := sp.layOut(c)
	if err != nil {
		return nil, err
	}
	for _, s := range slices {
		sp.layers += s.n
	}
	sp.Layers = sp.layers
	if err := sp.buildTensors(slices); err != nil {
		return nil, err
	}
	if err := sp.computeValues(slices); err != nil {
		return nil, err
	}
	if err := sp.dtypes(); err != nil {
		return nil, err
	}
	if err := sp.planExtras(c); err != nil {
		return nil, err
	}
	sp.count()
	return sp, nil
}

// layOut puts the step's models into mergekit's normal form: positions (the base,
// then the other models), each with one source per slice.
func (sp *StepPlan) layOut(c *catalog) ([]nslice, error) {
	st, spec := sp.step, sp.spec
	resolve := func(ref ModelRef, start, end int, params Params, fisher *Str) (*nsource, error) {
		info, err := c.resolve(ref)
		if err != nil {
			return nil, err
		}
		if end < 0 {
			end = info.layers
		}
		return &nsource{ref: ref, info: info, start: start, end: end, params: params, fisher: fisher}, nil
	}
	baseRole, modelRole := "base", "model"
	if st.Method.Value == "sfa" {
		baseRole, modelRole = "anchor", "current"
	}
	var slices []nslice
	if st.Models != nil {
		var base *nsource
		var models []*nsource
		baseListed := false
		for _, m := range st.Models {
			if st.Base != nil && m.Model.Name == st.Base.Name {
				baseListed = true
				if takesBase(spec) { // the base's own parameters are not used, as in mergekit
					continue
				}
			}
			s, err := resolve(m.Model, 0, -1, m.Params, m.Fisher)
			if err != nil {
				return nil, err
			}
			if takesFisher(spec) && m.Fisher == nil {
				return nil, errorf(m.Pos, "method fisher needs each model's Fisher (fisher: PATH beside model:)")
			}
			models = append(models, s)
		}
		switch {
		case takesBase(spec) && st.Base == nil:
			return nil, errorf(st.Method.Pos, "%s needs a base_model", st.Method.Value)
		case takesBase(spec):
			var err error
			if base, err = resolve(*st.Base, 0, -1, nil, nil); err != nil {
				return nil, err
			}
		case st.Base != nil && !baseListed:
			return nil, errorf(st.Base.Pos, "%s takes no base_model (mergekit would add it as a model without a weight); list it under models instead", st.Method.Value)
		}
		if err := sp.checkCount(len(models), st.Method.Pos); err != nil {
			return nil, err
		}
		if base != nil {
			sp.pos = append(sp.pos, position{role: baseRole, srcs: []*nsource{base}})
		}
		for _, m := range models {
			sp.pos = append(sp.pos, position{role: modelRole, srcs: []*nsource{m}})
		}
		n := sp.pos[0].srcs[0].info.layers
		for _, p := range sp.pos {
			// A models: recipe merges whole models: they must have the same layers.
			if p.srcs[0].info.layers != n {
				return nil, errorf(p.srcs[0].ref.Pos, "%s has %d layers, %s has %d", p.srcs[0].ref.Name, p.srcs[0].info.layers, sp.pos[0].srcs[0].ref.Name, n)
			}
		}
		return []nslice{{n: n}}, nil
	}

	if st.Method.Value == "fisher" {
		return nil, errorf(st.Method.Pos, "method fisher takes models:, not slices:")
	}
	for si, sl := range st.Slices {
		baseRef := st.Base
		if sl.Base != nil {
			baseRef = sl.Base
		}
		var base *nsource
		var models []*nsource
		n := sl.Sources[0].End - sl.Sources[0].Start
		for _, src := range sl.Sources {
			if src.End-src.Start != n {
				return nil, errorf(src.Pos, "layer_range [%d, %d] has %d layers, the slice's first source %d: every source of a slice covers as many layers", src.Start, src.End, src.End-src.Start, n)
			}
			s, err := resolve(src.Model, src.Start, src.End, src.Params, nil)
			if err != nil {
				return nil, err
			}
			if s.info.layers == 0 {
				return nil, errorf(src.Pos, "%s has no layers gomerge can slice (llama-style names such as model.layers.0.)", src.Model.Name)
			}
			if src.End > s.info.layers {
				return nil, errorf(src.Pos, "layer_range [%d, %d]: %s has %d layers", src.Start, src.End, src.Model.Name, s.info.layers)
			}
			if takesBase(spec) && baseRef != nil && src.Model.Name == baseRef.Name && base == nil {
				base = s
				continue
			}
			models = append(models, s)
		}
		if takesBase(spec) && base == nil {
			if baseRef == nil {
				return nil, errorf(st.Method.Pos, "%s needs a base_model", st.Method.Value)
			}
			return nil, errorf(sl.Pos, "slice %d has no source from base_model %s", si, baseRef.Name)
		}
		if err := sp.checkCount(len(models), sl.Pos); err != nil {
			return nil, err
		}
		if si == 0 {
			if base != nil {
				sp.pos = append(sp.pos, position{role: baseRole})
			}
			for range models {
				sp.pos = append(sp.pos, position{role: modelRole})
			}
		} else if want := len(sp.pos) - b2i(base != nil); len(models) != want {
			return nil, errorf(sl.Pos, "slice %d has %d models besides the base, slice 0 has %d: gomerge merges the same number in every slice", si, len(models), want)
		}
		k := 0
		if base != nil {
			sp.pos[0].srcs = append(sp.pos[0].srcs, base)
			k = 1
		}
		for i, m := range models {
			sp.pos[k+i].srcs = append(sp.pos[k+i].srcs, m)
		}
		slices = append(slices, nslice{params: sl.Params, pos: sl.Pos, n: n})
	}
	return slices, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (sp *StepPlan) checkCount(n int, pos Pos) error {
	spec := sp.spec
	if n < spec.MinModels || (spec.MaxModels > 0 && n > spec.MaxModels) {
		what := "besides the base"
		if !takesBase(spec) {
			what = "in all"
		}
		if spec.MinModels == spec.MaxModels {
			return errorf(pos, "%s takes exactly %d model(s) %s, got %d", sp.Method, spec.MinModels, what, n)
		}
		return errorf(pos, "%s needs at least %d model(s) %s, got %d", sp.Method, spec.MinModels, what, n)
	}
	return nil
}

// origin says where an output tensor comes from: the slice whose parameters apply,
// its gradient position, and its name in each input.
type origin struct {
	slice int
	t     float64
	in    []string
}

// buildTensors lists the output tensors. When every input is one whole model
// (models:, or one slice over all layers), the inputs are the models themselves;
// otherwise each input is a view that stacks its slices' layers, renumbered.
func (sp *StepPlan) buildTensors(slices []nslice) error {
	sp.refPos = 0
	if sp.Method == "sfa" {
		sp.refPos = 1 // SPEC: sfa writes the current model's layout
	}
	whole := len(slices) == 1
	for _, p := range sp.pos {
		s := p.srcs[0]
		whole = whole && s.start == 0 && s.end == s.info.layers
	}
	origins := map[string]*origin{}
	if whole {
		ref := sp.pos[sp.refPos].srcs[0].info
		sp.outMetas = ref.metas
		for _, m := range ref.metas {
			o := &origin{}
			if _, l, _, ok := splitLayer(m.Name); ok {
				o.t = layerT(l, slices[0].n)
			}
			for range sp.pos {
				o.in = append(o.in, m.Name)
			}
			origins[m.Name] = o
		}
		sp.origins = origins
		return nil
	}
	for _, p := range sp.pos {
		for _, s := range p.srcs {
			if strings.HasSuffix(strings.ToLower(s.info.path), ".gguf") {
				// llama.cpp takes the layer count and the other hyperparameters from
				// the metadata, which a renumbered stack would have to rewrite.
				return errorf(s.ref.Pos, "%s: slices that renumber layers work on safetensors models only, not GGUF (merge whole GGUF models, or slice the safetensors originals)", s.ref.Name)
			}
		}
	}
	for k, p := range sp.pos {
		v := newView(p, slices, k, len(sp.pos), origins)
		sp.views = append(sp.views, v)
	}
	sp.outMetas = sp.views[sp.refPos].metas
	sp.origins = origins
	return nil
}

// computeValues evaluates every parameter for every output tensor, as mergekit's
// ConfigReader does: a model's parameter from its own parameters, then the slice's,
// then the recipe's, then the method's default; a method-wide one from the slice's
// and the recipe's. A per-model parameter is matched against the tensor's name in
// that model, a method-wide one against the output name.
func (sp *StepPlan) computeValues(slices []nslice) error {
	st, spec := sp.step, sp.spec
	sp.values = map[string]*tensorValues{}
	for _, m := range sp.outMetas {
		o := sp.origins[m.Name]
		sl := slices[o.slice]
		get := func(def *merge.Param, k int) (Value, error) {
			levels := []Params{sl.params, st.Params}
			name := m.Name
			if def.PerModel {
				levels = append([]Params{sp.pos[k].srcs[o.slice].params}, levels...)
				name = o.in[k]
			}
			for _, ps := range levels {
				if s := ps[def.Name]; s != nil {
					if v, ok := s.Eval(name, o.t); ok {
						return v, nil
					}
				}
			}
			if math.IsNaN(def.RecipeDefault) {
				return Value{}, errorf(st.Method.Pos, "%s: parameter %s has no value for tensor %q (give a default: a filter list's last entry without filter, or a plain value)", sp.Method, def.Name, m.Name)
			}
			return Value{Num: def.RecipeDefault, Bool: def.RecipeDefault != 0, IsBool: isBool(def), Pos: st.Method.Pos, dflt: true}, nil
		}
		tv, err := sp.tensorValues(spec, get)
		if err != nil {
			return err
		}
		if sp.first == nil {
			sp.first = tv
		} else if !tv.equal(sp.first) {
			sp.vary = true
		}
		sp.values[m.Name] = tv
	}
	if sp.first == nil {
		return errorf(st.Pos, "no tensors to merge")
	}
	sp.PerTensor = sp.vary
	return nil
}

// dtypes sets the output dtype: out_dtype, else dtype (mergekit writes in its
// compute dtype), else each tensor's reference dtype. gomerge always computes in
// float32.
func (sp *StepPlan) dtypes() error {
	st := sp.step
	s := st.OutDType
	if s == nil {
		s = st.DType
	}
	if s == nil {
		return nil
	}
	d, err := dtype.ParseFloat(s.Value)
	if err != nil || d.IsBlock() {
		return errorf(s.Pos, "dtype %q: want bfloat16, float16, float32 or float64", s.Value)
	}
	sp.outDType = d
	return nil
}

// count fills in the inputs and the bytes read and written.
func (sp *StepPlan) count() {
	sp.Inputs = nil
	for k, p := range sp.pos {
		in := Input{Role: p.role, Path: sp.inputPath(k)}
		if sp.views != nil {
			in.Layers = sp.views[k].name
		} else {
			in.Step = p.srcs[0].info.step
		}
		sp.Inputs = append(sp.Inputs, in)
		if f := p.srcs[0].fisher; f != nil {
			sp.Inputs = append(sp.Inputs, Input{Role: "fisher", Path: f.Value})
		}
	}
	sp.Tensors = len(sp.outMetas)
	sp.BytesRead, sp.BytesWritten = 0, 0
	for _, m := range sp.outMetas {
		o := sp.origins[m.Name]
		for k, p := range sp.pos {
			info := p.srcs[o.slice].info
			if i, ok := info.index[o.in[k]]; ok {
				sp.BytesRead += tensorBytes(info.metas[i].DType, info.metas[i].Shape)
			}
		}
		d := m.DType
		if sp.outDType != dtype.Invalid && d.IsFloat() {
			d = sp.outDType
		}
		sp.BytesWritten += tensorBytes(d, m.Shape)
	}
	if sp.outDType != dtype.Invalid {
		metas := make([]merge.TensorMeta, len(sp.outMetas))
		for i, m := range sp.outMetas {
			if m.DType.IsFloat() {
				m.DType = sp.outDType
			}
			metas[i] = m
		}
		sp.outMetas = metas
	}
}

func tensorBytes(d dtype.DType, shape []int64) int64 {
	n := int64(1)
	for _, s := range shape {
		n *= s
	}
	return d.Bytes(n)
}

// inputPath is the path the engine is given for position k: the model itself, or
// the name of the view that stacks its slices.
func (sp *StepPlan) inputPath(k int) string {
	if sp.views != nil {
		return sp.views[k].name
	}
	return sp.pos[k].srcs[0].info.path
}

// safetensorsOut says whether path is a single-file output.
func safetensorsOut(path string) bool { return !safetensors.IsFolderPath(path) }
