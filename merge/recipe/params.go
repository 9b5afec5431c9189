package recipe

import (
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/gomerge/gomerge/merge"
)

// Parameters: settings as mergekit writes them (scalars, gradients, filters), their
// evaluation per tensor, and their check against the method's registry entry.
//
// A recipe's merge_method is a method of merge's registry, and its parameters are
// that method's: their names, levels, types, ranges and defaults (RecipeDefault:
// mergekit's, where they differ from the command line's) come from there.

// Params are parameter settings by name.
type Params map[string]*Setting

// Setting is a parameter's value as mergekit writes it: a scalar, a gradient (a list
// of numbers interpolated over the layers), or a list of filtered values, the first
// whose filter is a substring of the tensor's name applying.
type Setting struct {
	Pos   Pos
	Num   []float64 // one: a scalar; more: a gradient
	Bool  *bool
	Conds []Cond
}

// Cond is one entry of a filtered setting; no filter matches every tensor.
type Cond struct {
	Pos    Pos
	Filter *string
	Value  *Setting // Num or Bool
}

// Value is a setting evaluated for one tensor.
type Value struct {
	Num    float64
	Bool   bool
	IsBool bool
	Pos    Pos // the setting (or filter entry) it came from
	dflt   bool
}

// Eval evaluates s for tensor name at layer position t in [0, 1], as mergekit does:
// a gradient's knots are spread evenly over [0, 1] and interpolated linearly; a
// filter list gives its first entry whose filter is a substring of name (no filter
// or "*" matching all). ok is false when no entry matches.
func (s *Setting) Eval(name string, t float64) (v Value, ok bool) {
	switch {
	case s.Bool != nil:
		return Value{Bool: *s.Bool, IsBool: true, Pos: s.Pos}, true
	case len(s.Num) > 0:
		return Value{Num: interpolate(s.Num, t), Pos: s.Pos}, true
	}
	for _, c := range s.Conds {
		if c.Filter == nil || *c.Filter == "*" || strings.Contains(name, *c.Filter) {
			v, ok := c.Value.Eval(name, t)
			v.Pos = c.Pos
			return v, ok
		}
	}
	return Value{}, false
}

// interpolate is mergekit's gradient: knots at i/(n−1), linear in between. The two
// products are rounded separately so that no platform fuses them.
func interpolate(knots []float64, t float64) float64 {
	if len(knots) == 1 || !(t > 0) {
		return knots[0]
	}
	scaled := float64(min(t, 1) * float64(len(knots)-1)) // rounded, or arm64 fuses it into frac
	i0 := int(scaled)
	i1 := min(len(knots)-1, i0+1)
	frac := scaled - float64(i0)
	return float64((1-frac)*knots[i0]) + float64(frac*knots[i1])
}

// PerTensor says whether the setting can differ between tensors.
func (s *Setting) PerTensor() bool { return len(s.Num) > 1 || len(s.Conds) > 0 }

// lookupMethod returns the registry's method for a recipe's merge_method.
func lookupMethod(name string) (*merge.Method, bool) { return merge.LookupMethod(name) }

// takesBase says whether the method's first input is base_model.
func takesBase(m *merge.Method) bool { return m.Base == merge.BaseRequired }

// hasBase says whether the step's first input is its base_model: always for methods
// that require one, and for those that take one optionally (nuslerp, multislerp)
// when the step names one.
func (sp *StepPlan) hasBase() bool {
	return takesBase(sp.spec) || sp.spec.Base == merge.BaseOptional && sp.step.Base != nil
}

// recipeParam returns the parameter a recipe may set under parameters: (a model's
// Fisher is not one: it sits beside model:).
func recipeParam(m *merge.Method, name string) (*merge.Param, bool) {
	p, ok := m.Param(name)
	if !ok || p.Kind == merge.File || p.NoRecipe {
		return nil, false
	}
	return p, true
}

// takesFisher says whether each model needs its Fisher.
func takesFisher(m *merge.Method) bool {
	return slices.ContainsFunc(m.Params, func(p merge.Param) bool { return p.Kind == merge.File })
}

// isBool says whether recipes write the parameter as true or false.
func isBool(p *merge.Param) bool { return p.Kind == merge.Bool }

func paramNames(m *merge.Method) string {
	var names []string
	for _, p := range m.Params {
		if p.Kind != merge.File && !p.NoRecipe {
			names = append(names, p.Name)
		}
	}
	return strings.Join(names, ", ")
}

// supportedMethodsText is the list for messages and docs.
func supportedMethodsText() string {
	return strings.Join(merge.MethodNames(), ", ")
}

// unsupportedMethod says whether name is a mergekit method gomerge lacks.
func unsupportedMethod(name string) bool { return slices.Contains(merge.MergekitOnly, name) }

// checkParams checks every parameter setting of a step against its method: known
// names, at the right level, of the right type, every value in range. Values that
// vary by tensor are checked at every knot and filter entry, which bounds every
// value they can take.
func (st *Step) checkParams() error {
	spec, _ := lookupMethod(st.Method.Value)
	check := func(ps Params, modelLevel bool) error {
		names := make([]string, 0, len(ps))
		for n := range ps {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			s := ps[name]
			def, ok := recipeParam(spec, name)
			if !ok {
				return errorf(s.Pos, "%s takes no parameter %q (it takes %s)", st.Method.Value, name, paramNames(spec))
			}
			if modelLevel && !def.PerModel {
				return errorf(s.Pos, "%s is a method-wide parameter of %s: set it under the recipe's (or a slice's) parameters, not a model's", name, st.Method.Value)
			}
			if def.Scalar && s.PerTensor() {
				return errorf(s.Pos, "%s: gomerge takes one value for every tensor, not a gradient or filters", name)
			}
			if err := checkSetting(s, def); err != nil {
				return err
			}
		}
		return nil
	}
	if err := check(st.Params, false); err != nil {
		return err
	}
	for _, m := range st.Models {
		if err := check(m.Params, true); err != nil {
			return err
		}
		if m.Fisher != nil && !takesFisher(spec) {
			return errorf(m.Fisher.Pos, "fisher: only method fisher takes a model's Fisher")
		}
	}
	for _, sl := range st.Slices {
		if err := check(sl.Params, false); err != nil {
			return err
		}
		for _, src := range sl.Sources {
			if err := check(src.Params, true); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkSetting(s *Setting, def *merge.Param) error {
	leaves := []*Setting{s}
	if len(s.Conds) > 0 {
		leaves = leaves[:0]
		for _, c := range s.Conds {
			leaves = append(leaves, c.Value)
		}
	}
	for _, l := range leaves {
		if isBool(def) != (l.Bool != nil) {
			want := "a number (or a gradient, or filters)"
			if isBool(def) {
				want = "true or false"
			}
			return errorf(l.Pos, "%s: want %s", def.Name, want)
		}
		if l.Bool != nil {
			if err := def.Check(b2f(*l.Bool)); err != nil {
				return errorf(l.Pos, "%v", err)
			}
			continue
		}
		for _, v := range l.Num {
			if err := def.Check(v); err != nil {
				return errorf(l.Pos, "%v", err)
			}
		}
	}
	return nil
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

// tensorValues turns one tensor's parameter values into the engine's: get gives a
// parameter's value for model k (a per-model parameter) or the method-wide one
// (k = −1).
func (sp *StepPlan) tensorValues(spec *merge.Method, get func(*merge.Param, int) (Value, error)) (*tensorValues, error) {
	tv := &tensorValues{}
	first := b2i(sp.hasBase())
	for k := first; k < len(sp.pos); k++ {
		tv.mps = append(tv.mps, merge.ModelParams{Weight: 1, Density: math.NaN()})
	}
	for i := range spec.Params {
		def := &spec.Params[i]
		if def.Kind == merge.File || def.NoRecipe {
			continue // the norm stays the engine's default, l1 (mergekit's)
		}
		if !def.PerModel {
			v, err := get(def, -1)
			if err != nil {
				return nil, err
			}
			if err := setValue(&tv.p, def, v); err != nil {
				return nil, err
			}
			continue
		}
		var vs []Value
		for k := first; k < len(sp.pos); k++ {
			v, err := get(def, k)
			if err != nil {
				return nil, err
			}
			vs = append(vs, v)
		}
		if def.Uniform {
			for _, v := range vs[1:] {
				if v.Num != vs[0].Num {
					pos := v.Pos
					if v.dflt {
						pos = vs[0].Pos
					}
					return nil, errorf(pos, "%s: gomerge takes one %s for all models of a tensor, got %v and %v", def.Name, def.Name, vs[0].Num, v.Num)
				}
			}
			if err := setValue(&tv.p, def, vs[0]); err != nil {
				return nil, err
			}
			continue
		}
		for k, v := range vs {
			if f := def.TensorField(&tv.mps[k]); f != nil {
				*f = v.Num
			}
		}
		// The method-wide value, which only the report shows: every model has its own.
		if def.Field(&tv.p) != nil {
			def.SetParams(&tv.p, def.RecipeDefault)
		}
	}
	return tv, nil
}

// setValue stores a method-wide value; booleans are checked again here, since a
// filter may give them per tensor (numbers were checked at every knot when parsing).
func setValue(p *merge.Params, def *merge.Param, v Value) error {
	num := v.Num
	if isBool(def) {
		num = b2f(v.Bool)
		if err := def.Check(num); err != nil {
			return errorf(v.Pos, "%v", err)
		}
	}
	def.SetParams(p, num)
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
