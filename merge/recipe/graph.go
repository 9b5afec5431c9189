package recipe

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// The step graph: a recipe's steps, what each uses of the others, the order they
// run in and where each writes.

// checkSteps checks the names across documents: unique, at most one unnamed (final)
// step, and a dependency order without cycles.
func (r *Recipe) checkSteps() error {
	byName := map[string]*Step{}
	r.byName = byName
	var unnamed *Step
	for _, st := range r.Steps {
		if st.Name == "" {
			if len(r.Steps) > 1 && unnamed != nil {
				return errorf(st.Pos, "two steps without a name (lines %d and %d): every step but the final one needs a name", unnamed.Pos.Line, st.Pos.Line)
			}
			unnamed = st
			continue
		}
		if o, dup := byName[st.Name]; dup {
			return errorf(st.Pos, "step name %q used twice (first at line %d)", st.Name, o.Pos.Line)
		}
		byName[st.Name] = st
	}
	_, err := r.Order()
	return err
}

// Step returns the step called name.
func (r *Recipe) Step(name string) (*Step, bool) {
	st, ok := r.byName[name]
	return st, ok
}

// Refs lists every model reference of a step: base, models, sources, slice bases,
// tokenizer source.
func (st *Step) Refs() []ModelRef {
	var refs []ModelRef
	if st.Base != nil {
		refs = append(refs, *st.Base)
	}
	for _, m := range st.Models {
		refs = append(refs, m.Model)
	}
	for _, s := range st.Slices {
		if s.Base != nil {
			refs = append(refs, *s.Base)
		}
		for _, src := range s.Sources {
			refs = append(refs, src.Model)
		}
	}
	if st.TokenizerSource != nil {
		refs = append(refs, *st.TokenizerSource)
	}
	return refs
}

// Deps lists the steps st uses the output of, by name, in first-use order.
func (r *Recipe) Deps(st *Step) []string {
	var deps []string
	for _, ref := range st.Refs() {
		if _, ok := r.Step(ref.Name); ok && !slices.Contains(deps, ref.Name) {
			deps = append(deps, ref.Name)
		}
	}
	return deps
}

// Order returns the steps in an order where each comes after the steps it uses,
// otherwise in file order; a cycle is an error that names its steps.
func (r *Recipe) Order() ([]*Step, error) {
	const (
		unseen = iota
		active
		done
	)
	state := map[*Step]int{}
	var order []*Step
	var stack []*Step
	var visit func(st *Step) error
	visit = func(st *Step) error {
		switch state[st] {
		case done:
			return nil
		case active:
			i := slices.Index(stack, st)
			var names []string
			for _, s := range stack[i:] {
				names = append(names, s.Name)
			}
			names = append(names, st.Name)
			return errorf(st.Pos, "steps form a cycle: %s", strings.Join(names, " → "))
		}
		state[st] = active
		stack = append(stack, st)
		for _, d := range r.Deps(st) {
			dep, _ := r.Step(d)
			if err := visit(dep); err != nil {
				return err
			}
		}
		stack = stack[:len(stack)-1]
		state[st] = done
		order = append(order, st)
		return nil
	}
	for _, st := range r.Steps {
		if err := visit(st); err != nil {
			return nil, err
		}
	}
	return order, nil
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
