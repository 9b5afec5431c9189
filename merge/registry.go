package merge

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// The method registry: every merge method is declared once, in its own file, by a
// Method value passed to register. The command line (cmd/gomerge) builds its commands
// and flags from it, recipes (merge/recipe) check and evaluate their parameters with
// it, and RunMethod validates and runs a job with it. Adding a method is one file in
// this package and its tests.

// BaseUse says whether a method takes a base model.
type BaseUse int

const (
	BaseAbsent   BaseUse = iota // no base: every input is a model
	BaseRequired                // a base (--base, recipes' base_model): the first input and the reference
	// BaseOptional: with a base, it is the first input and the reference, and the
	// method works on the task vectors (nuslerp, multislerp); without, as BaseAbsent.
	BaseOptional
)

// ParamKind is the type of a parameter's value.
type ParamKind int

const (
	Number ParamKind = iota // a float64
	Seed                    // a whole number in [0, 2^53] (recipes write numbers as float64)
	Bool                    // true or false (recipes' booleans); a Switch in Params
	Choice                  // one of Param.Choices (the command line's only)
	File                    // a per-model path (a model's Fisher)
)

// Param is one parameter of a method, as the command line, recipes and the report
// name it.
type Param struct {
	// Name is mergekit's key in recipes and the key in the report.
	Name string
	// Flag is the command-line flag for a method-wide parameter, or the PATH:key= key
	// for a per-model one; "" when the command line does not take it.
	Flag  string
	Usage string // the flag's help
	Kind  ParamKind
	// PerModel parameters are each model's own (mergekit's tensor parameters): a
	// model's parameters in recipes, PATH:key=V on the command line.
	PerModel bool
	// Uniform per-model parameters take one value for all the models of a tensor in
	// gomerge (recipes may still set them per model, if they agree).
	Uniform bool
	// Scalar parameters take one value for every tensor: no gradients or filters.
	Scalar bool
	// Default is the value with no flag (also what the engine applies to an unset
	// Choice or Bool); RecipeDefault is the value recipes get when they do not set it
	// (NaN: required), as mergekit's defaults are not always the command line's (ties'
	// density: 0.2 on the command line, 1 in mergekit). Bools: 0 or 1.
	Default, RecipeDefault float64
	// Choices and DefaultChoice are a Choice's values and its default.
	Choices       []string
	DefaultChoice string
	// ReportAs is the report's key and the name in messages, when not Name.
	ReportAs string
	// NoRecipe parameters are the command line's only (recipes have no strings).
	NoRecipe bool
	// Report says the report (and the output's provenance) always records the
	// parameter; Bools and Choices are also recorded whenever they are not their
	// default.
	Report bool
	// check returns why v is refused ("" when valid).
	check func(v float64) string
	// Where the value goes: method-wide parameters in Params, per-model ones in
	// Model and ModelParams. Nil for parameters gomerge only checks (int8_mask).
	field   func(*Params) any // *float64, *uint64, *Switch or *string
	model   func(*Model) *float64
	tensor  func(*ModelParams) *float64
	fileRef func(*Model) *string
}

// Check validates a value of a Number, Seed or Bool (0 or 1) parameter. The error
// wraps ErrBadParameter and reads "density 1.5 is outside [0, 1]".
func (p *Param) Check(v float64) error {
	if p.Kind == Number && (math.IsNaN(v) || math.IsInf(v, 0)) {
		return &ParamError{Param: p.Name, Value: v, Msg: "is not a finite number"}
	}
	// The kernels compute in float32: a value beyond its range would become ±Inf there
	// and turn every merged element into ±Inf or NaN.
	if p.Kind == Number && math.Abs(v) > math.MaxFloat32 {
		return &ParamError{Param: p.Name, Value: v, Msg: "is outside float32's range"}
	}
	if p.Kind == Seed {
		if msg := wholeNumber(v); msg != "" {
			return &ParamError{Param: p.Name, Value: v, Msg: msg}
		}
	}
	if p.check != nil {
		if msg := p.check(v); msg != "" {
			if p.Kind == Bool {
				return &ParamError{Param: p.Name, Value: v != 0, Msg: msg, Bool: true}
			}
			return &ParamError{Param: p.Name, Value: v, Msg: msg}
		}
	}
	return nil
}

// CheckChoice validates a Choice's value.
func (p *Param) CheckChoice(s string) error {
	if !slices.Contains(p.Choices, s) {
		return &ParamError{Param: p.reportName(), Value: fmt.Sprintf("%q", s), Msg: "is not one of " + strings.Join(p.Choices, ", ")}
	}
	return nil
}

func (p *Param) reportName() string {
	if p.ReportAs != "" {
		return p.ReportAs
	}
	return p.Name
}

// SetParams stores a Number, Seed or Bool value (0 or 1) into ps. Choices: SetChoice.
func (p *Param) SetParams(ps *Params, v float64) {
	if p.field == nil {
		return
	}
	switch f := p.field(ps).(type) {
	case *float64:
		*f = v
	case *uint64:
		*f = uint64(v)
	case *Switch:
		*f = SwitchOff
		if v != 0 {
			*f = SwitchOn
		}
	}
}

// SetChoice stores a Choice's value into ps.
func (p *Param) SetChoice(ps *Params, s string) {
	if f, ok := p.field(ps).(*string); ok {
		*f = s
	}
}

// Field returns where a method-wide parameter's value lives in ps (*float64,
// *uint64, *Switch or *string), for flags to bind to; nil for a per-model one.
func (p *Param) Field(ps *Params) any {
	if p.field == nil {
		return nil
	}
	return p.field(ps)
}

// IsModelKey says whether the parameter is a model's own value (PATH:key=V on the
// command line), rather than one value for all models.
func (p *Param) IsModelKey() bool { return p.model != nil || p.fileRef != nil }

// ModelField returns where a per-model Number lives in m, for PATH:key=V.
func (p *Param) ModelField(m *Model) *float64 {
	if p.model == nil {
		return nil
	}
	return p.model(m)
}

// ModelFile returns where a per-model File lives in m.
func (p *Param) ModelFile(m *Model) *string {
	if p.fileRef == nil {
		return nil
	}
	return p.fileRef(m)
}

// TensorField returns where a per-model Number lives in a tensor's ModelParams.
func (p *Param) TensorField(mp *ModelParams) *float64 {
	if p.tensor == nil {
		return nil
	}
	return p.tensor(mp)
}

// ParamError is a parameter value a method refuses. It wraps ErrBadParameter.
type ParamError struct {
	Param string
	Value any
	Msg   string
	Bool  bool // a switch: the message reads "normalize: why"
}

func (e *ParamError) Error() string {
	if e.Bool {
		return e.Param + ": " + e.Msg
	}
	return fmt.Sprintf("%s %v %s", e.Param, e.Value, e.Msg)
}

func (e *ParamError) Unwrap() error { return ErrBadParameter }

// Switch is a boolean parameter that a method may default either way.
type Switch uint8

const (
	SwitchDefault Switch = iota // the method's default
	SwitchOn
	SwitchOff
)

// Method is everything gomerge knows about a merge method.
type Method struct {
	Name string // mergekit's merge_method (gomerge's own for sfa and fisher); the report's method
	// Command is gomerge's command for it ("" when only recipes have it). Methods that
	// share a command are told apart by CommandSwitch, a boolean flag of that command
	// (dare --ties is dare_ties); the method without one gives the command's texts.
	Command       string
	CommandSwitch string
	// CustomCommand: cmd/gomerge writes this method's command by hand (sfa has
	// --anchor, --current and --in-place rather than a base and models).
	CustomCommand bool
	Short         string // one line: what it computes
	Example       string // real invocations of Command
	// Inputs.
	Base                 BaseUse
	MinModels, MaxModels int // besides the base; MaxModels 0: no limit
	Params               []Param
	// kernel makes a tensor's kernel from a validated job; run replaces RunMethod's
	// plan-and-execute for methods with their own entry point (sfa); check adds the
	// method's own validation; report gives the report's parameters (default: the
	// Report parameters and non-default Bools and Choices).
	kernel func(m *methodRun, t *TensorPlan) Kernel
	run    func(ctx context.Context, j MethodJob, r *methodRun) (*Report, error)
	check  func(r *methodRun) error
	report func(r *methodRun) map[string]any
}

// Param returns the method's parameter called name.
func (m *Method) Param(name string) (*Param, bool) {
	for i := range m.Params {
		if m.Params[i].Name == name {
			return &m.Params[i], true
		}
	}
	return nil, false
}

// ParamNames lists the method's parameter names, comma-separated.
func (m *Method) ParamNames() string {
	names := make([]string, len(m.Params))
	for i, p := range m.Params {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

var registry = map[string]*Method{}

// register adds a method; it runs from each method's file, at init.
func register(m Method) *Method {
	if _, dup := registry[m.Name]; dup || m.Name == "" {
		panic("merge: method " + m.Name + " registered twice")
	}
	p := &m
	registry[m.Name] = p
	return p
}

// LookupMethod returns the method called name (mergekit's spelling).
func LookupMethod(name string) (*Method, bool) {
	m, ok := registry[name]
	return m, ok
}

// Registry returns every method, sorted by name.
func Registry() []*Method {
	ms := make([]*Method, 0, len(registry))
	for _, m := range registry {
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	return ms
}

// MethodNames lists the methods' names, sorted.
func MethodNames() []string {
	var names []string
	for _, m := range Registry() {
		names = append(names, m.Name)
	}
	return names
}

// MergekitOnly are mergekit methods gomerge does not implement, so that recipes can
// say so rather than call them unknown.
var MergekitOnly []string

// Shared parameter declarations: the same parameter reads the same way in every
// method that takes it.

func unitInterval(v float64) string {
	if !(v >= 0 && v <= 1) {
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

func wholeNumber(v float64) string {
	if !(v >= 0 && v <= 1<<53 && v == math.Trunc(v)) {
		return "must be a whole number in [0, 2^53]"
	}
	return ""
}

// refuse makes a switch check that accepts only want, saying why.
func refuse(want bool, why string) func(float64) string {
	return func(v float64) string {
		if (v != 0) != want {
			return why
		}
		return ""
	}
}

func weightParam() Param {
	return Param{Name: "weight", Flag: "weight", Kind: Number, PerModel: true, Default: 1, RecipeDefault: 1,
		model: func(m *Model) *float64 { return &m.Weight }, tensor: func(mp *ModelParams) *float64 { return &mp.Weight }}
}

// densityParam: cliDefault is the command's --density; recipes default to
// mergekit's 1 (keep everything).
func densityParam(cliDefault float64) Param {
	return Param{Name: "density", Flag: "density", Usage: "fraction of each task vector's entries kept, in [0, 1]",
		Kind: Number, PerModel: true, Default: cliDefault, RecipeDefault: 1, check: unitInterval, Report: true,
		field: func(p *Params) any { return &p.Density }, // --density: every model's unless it has its own
		model: func(m *Model) *float64 { return &m.Density }, tensor: func(mp *ModelParams) *float64 { return &mp.Density }}
}

func lambdaParam() Param {
	return Param{Name: "lambda", Flag: "lambda", Usage: "scale of the merged task vector", Kind: Number,
		Default: 1, RecipeDefault: 1, Report: true, field: func(p *Params) any { return &p.Lambda }}
}

// int8Param is mergekit's int8_mask: a memory optimisation there, with no numeric
// effect; recipes may set it.
func int8Param() Param {
	return Param{Name: "int8_mask", Kind: Bool}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
