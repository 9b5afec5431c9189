package recipe

import (
	"strings"

	"github.com/gomerge/gomerge/checkpoint"
)

// Slices: a step's models in mergekit's normal form (positions, one source per
// slice), the output's tensors and which input tensor each comes from, and which
// tensors are transformer layers.
//
// Which tensors are transformer layers, and which of the others come after the
// layers, decide how slices renumber layers and which slice's models make the
// embeddings and the head. The tables are what gomerge knows; a model whose names
// they do not cover can still be merged with models:, only not sliced.

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
				if sp.hasBase() { // the base's own parameters are not used, as in mergekit
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
		case sp.hasBase() && st.Base == nil:
			return nil, errorf(st.Method.Pos, "%s needs a base_model", st.Method.Value)
		case sp.hasBase():
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
			if sp.hasBase() && baseRef != nil && src.Model.Name == baseRef.Name && base == nil {
				base = s
				continue
			}
			models = append(models, s)
		}
		if sp.hasBase() && base == nil {
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

func (sp *StepPlan) checkCount(n int, pos Pos) error {
	spec := sp.spec
	if n < spec.MinModels || (spec.MaxModels > 0 && n > spec.MaxModels) {
		what := "besides the base"
		if !sp.hasBase() {
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
		sp.refPos = 1 // sfa writes the current model's layout (docs/methods.md#which-tensors-are-merged)
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
			if _, l, _, ok := checkpoint.SplitLayer(m.Name); ok {
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

// postPrefixes start the names of the tensors after the layers (the final norm and
// the output head): a slice recipe takes them from the last slice's models, as
// mergekit does; every other non-layer tensor (the embeddings) from the first slice's.
var postPrefixes = []string{"model.norm.", "lm_head.", "transformer.ln_f.", "gpt_neox.final_layer_norm.", "embed_out.", "model.decoder.final_layer_norm.",
	"output_norm.", "output."} // the last two: GGUF's names

func isPost(name string) bool {
	for _, p := range postPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// layerT is mergekit's gradient position of layer i of a slice of n layers:
// i/(n−1), and 1 for a one-layer slice.
func layerT(i, n int) float64 {
	if n <= 1 {
		return 1
	}
	return float64(i) / float64(n-1)
}
