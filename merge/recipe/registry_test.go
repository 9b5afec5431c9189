package recipe

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/merge"
)

// TestMethodsFromRegistry: every registry method is a merge_method recipes take,
// and a recipe that sets no parameter gets each parameter's RecipeDefault
// (mergekit's defaults, which are not always the command line's); mergekit methods
// gomerge lacks are named as such, and other names are unknown.
func TestMethodsFromRegistry(t *testing.T) {
	f := newFixture(t, dtype.F32)
	t.Chdir(f.dir)
	for _, m := range merge.Registry() {
		t.Run(m.Name, func(t *testing.T) {
			var b strings.Builder
			fmt.Fprintf(&b, "merge_method: %s\n", m.Name)
			if takesBase(m) {
				b.WriteString("base_model: base\n")
			}
			n := max(m.MinModels, 2)
			if m.MaxModels > 0 {
				n = m.MaxModels
			}
			b.WriteString("models:\n")
			for i, name := range []string{"a", "b", "c"}[:n] {
				fmt.Fprintf(&b, "  - model: %s\n", name)
				if takesFisher(m) {
					fmt.Fprintf(&b, "    fisher: fisher_%s.safetensors\n", []string{"a", "b", "a"}[i])
				}
			}
			var required []string
			for _, p := range m.Params {
				if math.IsNaN(p.RecipeDefault) {
					required = append(required, p.Name)
					fmt.Fprintf(&b, "parameters: {%s: 0.25}\n", p.Name)
				}
			}
			r := f.recipe(t, m.Name+".yaml", b.String())
			plan, err := PlanRecipe(r, Options{Out: f.path(m.Name + ".out")})
			if err != nil {
				t.Fatal(err)
			}
			tv := plan.Steps[0].first
			var want merge.Params
			for i := range m.Params {
				p := &m.Params[i]
				if p.Kind == merge.File || p.NoRecipe {
					continue
				}
				v := p.RecipeDefault
				if math.IsNaN(v) {
					v = 0.25
				}
				if !p.PerModel || p.Uniform {
					p.SetParams(&want, v)
					continue
				}
				for k := range tv.mps {
					if got := p.TensorField(&tv.mps[k]); got != nil && *got != v {
						t.Errorf("%s of model %d: %v, want the registry's %v", p.Name, k, *got, v)
					}
				}
				p.SetParams(&want, v)
			}
			if tv.p != want {
				t.Errorf("parameters %+v, want the registry's defaults %+v", tv.p, want)
			}
		})
	}
	for _, name := range merge.MergekitOnly {
		if _, err := Parse("x.yaml", []byte("merge_method: "+name+"\nmodels: [{model: a}]\n")); err == nil || !strings.Contains(err.Error(), "mergekit's") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Parse("x.yaml", []byte("merge_method: nosuch\nmodels: [{model: a}]\n")); err == nil || !strings.Contains(err.Error(), "unknown merge_method") {
		t.Errorf("nosuch: %v", err)
	}
}
