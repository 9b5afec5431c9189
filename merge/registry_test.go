package merge

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// testMethods lists the registry's methods that the engine tests run through
// RunMethod with models and a base (sfa has its own tests through RunSFA; passthrough
// takes one model and no base). A function: the registry fills at init.
func testMethods() []string {
	return slices.DeleteFunc(MethodNames(), func(n string) bool { return n == "sfa" || n == "passthrough" })
}

// testDef is what the engine tests need to know to build a job for a method.
type testDef struct {
	base      bool
	maxModels int
	fisher    bool
}

func methodDefs(name string) (testDef, bool) {
	m, ok := LookupMethod(name)
	if !ok {
		return testDef{}, false
	}
	_, fisher := m.Param("fisher")
	return testDef{base: m.Base == BaseRequired, maxModels: m.MaxModels, fisher: fisher}, true
}

// TestRegistryDeclarations: every method is complete and consistent: a kernel or a run
// function, model counts that make sense, parameters with unique names, defaults that
// pass their own checks, and commands for all but the recipe-only ones.
func TestRegistryDeclarations(t *testing.T) {
	for _, m := range Registry() {
		if (m.kernel == nil) == (m.run == nil) {
			t.Errorf("%s: wants exactly one of kernel and run", m.Name)
		}
		if m.MinModels < 1 || m.MaxModels != 0 && m.MaxModels < m.MinModels {
			t.Errorf("%s: models %d..%d", m.Name, m.MinModels, m.MaxModels)
		}
		if m.Command != "" && m.CommandSwitch == "" && !m.CustomCommand && m.Example == "" {
			t.Errorf("%s: command %s has no example", m.Name, m.Command)
		}
		seen := map[string]bool{}
		for i := range m.Params {
			p := &m.Params[i]
			if seen[p.Name] {
				t.Errorf("%s: parameter %s twice", m.Name, p.Name)
			}
			seen[p.Name] = true
			if p.Flag != "" && p.Usage == "" && !p.IsModelKey() {
				t.Errorf("%s: flag --%s has no help", m.Name, p.Flag)
			}
			switch p.Kind {
			case Number, Seed, Bool:
				for k, v := range []float64{p.Default, p.RecipeDefault} {
					if k == 1 && math.IsNaN(v) { // required in recipes
						continue
					}
					if err := p.Check(v); err != nil {
						t.Errorf("%s: default of %s: %v", m.Name, p.Name, err)
					}
				}
			case Choice:
				if err := p.CheckChoice(p.DefaultChoice); err != nil {
					t.Errorf("%s: default of %s: %v", m.Name, p.Name, err)
				}
			}
		}
	}
}

// TestParamErrorsWrapBadParameter: every refusal of a value is an ErrBadParameter.
func TestParamErrorsWrapBadParameter(t *testing.T) {
	for _, m := range Registry() {
		for i := range m.Params {
			p := &m.Params[i]
			if p.check == nil {
				continue
			}
			for _, v := range []float64{-1, 2, math.Inf(1), 0} {
				if err := p.Check(v); err != nil && !errors.Is(err, ErrBadParameter) {
					t.Errorf("%s %s %v: %v does not wrap ErrBadParameter", m.Name, p.Name, v, err)
				}
			}
		}
	}
}
