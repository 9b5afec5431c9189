package recipe

import (
	"math"
	"sort"
	"strings"
)

// paramDef is one parameter a method reads, as mergekit names it.
type paramDef struct {
	name string
	// perModel parameters are looked up for each model (its own parameters first,
	// then the slice's, then the recipe's): mergekit's "tensor parameters". The others
	// are method-wide and read from the slice's and the recipe's parameters only.
	perModel bool
	isBool   bool
	def      float64 // default (bools: 0 or 1); NaN: required
	scalar   bool    // may not vary by tensor
	check    func(v float64) string
}

func unit(v float64) string {
	if v < 0 || v > 1 {
		return "is outside [0, 1]"
	}
	return ""
}

func positive(v float64) string {
	if !(v > 0) {
		return "must be positive"
	}
	return ""
}

func seedValue(v float64) string {
	if v < 0 || v > 1<<53 || v != math.Trunc(v) {
		return "must be a whole number in [0, 2^53]"
	}
	return ""
}

var (
	pWeight  = paramDef{name: "weight", perModel: true, def: 1}
	pDensity = paramDef{name: "density", perModel: true, def: 1, check: unit} // mergekit's default, not the CLI's
	pGamma   = paramDef{name: "gamma", perModel: true, def: 0.01, check: unit}
	pLambda  = paramDef{name: "lambda", def: 1}
	pInt8    = paramDef{name: "int8_mask", isBool: true, def: 0} // a memory optimisation in mergekit: no numeric effect
	pSeed    = paramDef{name: "seed", def: 0, scalar: true, check: seedValue}
)

func pNormalize(def bool) paramDef {
	return paramDef{name: "normalize", isBool: true, def: b2f(def)}
}

func pRescale(def bool) paramDef { return paramDef{name: "rescale", isBool: true, def: b2f(def)} }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// methodSpec is what a recipe method needs: its inputs and its parameters.
type methodSpec struct {
	engine    string // merge.RunMethod's name; "" for passthrough and sfa
	base      bool   // takes base_model (the first input, and the reference)
	minModels int    // besides the base
	maxModels int    // 0: no limit
	params    []paramDef
	// fixed are parameter values gomerge's math implements; any other value is
	// refused with why (mergekit's normalize, rescale and filter_wise switches).
	fixed map[string]fixedValue
}

type fixedValue struct {
	want bool
	why  string
}

// methods are the merge_method values recipes take: mergekit's names, plus
// gomerge's own sfa and fisher.
var methods = map[string]methodSpec{
	"linear": {engine: "linear", minModels: 1, params: []paramDef{pWeight, pNormalize(true)},
		fixed: map[string]fixedValue{"normalize": {true, "linear without normalize (a plain weighted sum) is not supported"}}},
	"task_arithmetic": {engine: "task_arithmetic", base: true, minModels: 1,
		params: []paramDef{pWeight, pDensity, pLambda, pNormalize(false), pRescale(false), pInt8}},
	"ties": {engine: "ties", base: true, minModels: 1,
		params: []paramDef{pWeight, pDensity, pLambda, pNormalize(true), pRescale(false), pInt8},
		fixed: map[string]fixedValue{
			"normalize": {true, "ties without normalize is not supported (gomerge divides by the agreeing weights, SPEC §2)"},
			"rescale":   {false, "ties with rescale is not supported"}}},
	"dare_linear": {engine: "dare_linear", base: true, minModels: 1,
		params: []paramDef{pWeight, pDensity, pLambda, pNormalize(false), pRescale(true), pInt8, pSeed},
		fixed:  map[string]fixedValue{"rescale": {true, "DARE without rescale is not supported"}}},
	"dare_ties": {engine: "dare_ties", base: true, minModels: 1,
		params: []paramDef{pWeight, pDensity, pLambda, pNormalize(false), pRescale(true), pInt8, pSeed},
		fixed: map[string]fixedValue{
			"rescale":   {true, "DARE without rescale is not supported"},
			"normalize": {false, "dare_ties with normalize is not supported (gomerge's dare_ties masks by sign without dividing, SPEC §2)"}}},
	"breadcrumbs": {engine: "breadcrumbs", base: true, minModels: 1,
		params: []paramDef{pWeight, pDensity, pGamma, pLambda, pNormalize(false), pRescale(false), pInt8},
		fixed:  map[string]fixedValue{"rescale": {false, "breadcrumbs with rescale is not supported"}}},
	"breadcrumbs_ties": {engine: "breadcrumbs_ties", base: true, minModels: 1,
		params: []paramDef{pWeight, pDensity, pGamma, pLambda, pNormalize(false), pRescale(false), pInt8},
		fixed: map[string]fixedValue{
			"rescale":   {false, "breadcrumbs with rescale is not supported"},
			"normalize": {false, "breadcrumbs_ties with normalize is not supported (gomerge masks by sign without dividing, SPEC §2)"}}},
	"slerp": {engine: "slerp", base: true, minModels: 1, maxModels: 1,
		params: []paramDef{{name: "t", def: math.NaN(), check: unit}}},
	"model_stock": {engine: "model_stock", base: true, minModels: 2,
		params: []paramDef{{name: "filter_wise", isBool: true, def: 0}},
		fixed:  map[string]fixedValue{"filter_wise": {false, "model_stock with filter_wise (one t per row) is not supported"}}},
	"passthrough": {minModels: 1, maxModels: 1,
		params: []paramDef{{name: "scale", perModel: true, def: 1}}},
	// gomerge's own: base_model is the anchor, the one model the current model.
	"sfa": {base: true, minModels: 1, maxModels: 1,
		params: []paramDef{{name: "beta", def: 0.5, scalar: true, check: unit}}},
	"fisher": {engine: "fisher", minModels: 1,
		params: []paramDef{{name: "weight", perModel: true, def: 1, check: positive}, {name: "epsilon", def: 1e-6, scalar: true, check: positive}}},
}

// refusedMethods are mergekit methods gomerge knows it lacks.
var refusedMethods = []string{"della", "della_linear", "nuslerp", "multislerp", "karcher", "arcee_fusion", "nearswap", "ram", "sce"}

func methodNames() []string {
	var names []string
	for n := range methods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (m methodSpec) param(name string) (paramDef, bool) {
	for _, p := range m.params {
		if p.name == name {
			return p, true
		}
	}
	return paramDef{}, false
}

func (m methodSpec) paramNames() string {
	var names []string
	for _, p := range m.params {
		names = append(names, p.name)
	}
	return strings.Join(names, ", ")
}

// checkParams checks every parameter setting of a step against its method: known
// names, at the right level, of the right type, every value in range. Values that
// vary by tensor are checked at every knot and filter entry, which bounds every
// value they can take.
func (st *Step) checkParams() error {
	spec := methods[st.Method.Value]
	check := func(ps Params, modelLevel bool) error {
		names := make([]string, 0, len(ps))
		for n := range ps {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			s := ps[name]
			def, ok := spec.param(name)
			if !ok {
				return errorf(s.Pos, "%s takes no parameter %q (it takes %s)", st.Method.Value, name, spec.paramNames())
			}
			if modelLevel && !def.perModel {
				return errorf(s.Pos, "%s is a method-wide parameter of %s: set it under the recipe's (or a slice's) parameters, not a model's", name, st.Method.Value)
			}
			if def.scalar && s.PerTensor() {
				return errorf(s.Pos, "%s: gomerge takes one value for every tensor, not a gradient or filters", name)
			}
			if err := checkSetting(s, def, st.Method.Value); err != nil {
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
		if m.Fisher != nil && st.Method.Value != "fisher" {
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

func checkSetting(s *Setting, def paramDef, method string) error {
	leaves := []*Setting{s}
	if len(s.Conds) > 0 {
		leaves = leaves[:0]
		for _, c := range s.Conds {
			leaves = append(leaves, c.Value)
		}
	}
	for _, l := range leaves {
		if def.isBool != (l.Bool != nil) {
			want := "a number (or a gradient, or filters)"
			if def.isBool {
				want = "true or false"
			}
			return errorf(l.Pos, "%s: want %s", def.name, want)
		}
		if l.Bool != nil {
			if f, ok := methods[method].fixed[def.name]; ok && *l.Bool != f.want {
				return errorf(l.Pos, "%s: %s", def.name, f.why)
			}
			continue
		}
		for _, v := range l.Num {
			if def.check != nil {
				if msg := def.check(v); msg != "" {
					return errorf(l.Pos, "%s %v %s", def.name, v, msg)
				}
			}
		}
	}
	return nil
}

// supportedMethodsText is the list for messages and docs.
func supportedMethodsText() string {
	return strings.Join(methodNames(), ", ")
}
