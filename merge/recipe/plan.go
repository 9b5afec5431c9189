package recipe

import (
	"path/filepath"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/merge"
)

// Planning: every step laid out, its parameters and dtypes computed, and its bytes
// counted, before anything is written.

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
	c := &catalog{r: r, outs: map[string]string{}, planned: map[string]*modelInfo{}, cache: map[string]*modelInfo{}, resolveHub: opts.Resolve}
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
func safetensorsOut(path string) bool { return !checkpoint.IsFolderPath(path) }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
