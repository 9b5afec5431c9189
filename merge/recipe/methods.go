package recipe

import (
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/gomerge/gomerge/merge"
)

// A recipe's merge_method is a method of merge's registry, and its parameters are
// that method's: their names, levels, types, ranges and defaults (RecipeDefault:
// mergekit's, where they differ from the command line's) come from there.

// lookupMethod returns the registry's method for a recipe's merge_method.
func lookupMethod(name string) (*merge.Method, bool) { return merge.LookupMethod(name) }

// takesBase says whether the method's first input is base_model.
func takesBase(m *merge.Method) bool { return m.Base == merge.BaseRequired }

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

// tensorValues turns one tensor's parameter values into the engine's: get gives a
// parameter's value for model k (a per-model parameter) or the method-wide one
// (k = −1).
func (sp *StepPlan) tensorValues(spec *merge.Method, get func(*merge.Param, int) (Value, error)) (*tensorValues, error) {
	tv := &tensorValues{}
	first := b2i(takesBase(spec))
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

// supportedMethodsText is the list for messages and docs.
func supportedMethodsText() string {
	return strings.Join(merge.MethodNames(), ", ")
}

// unsupportedMethod says whether name is a mergekit method gomerge lacks.
func unsupportedMethod(name string) bool { return slices.Contains(merge.MergekitOnly, name) }
