package recipe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/gomerge/gomerge/merge"
)

// Load reads and parses a recipe file.
func Load(path string) (*Recipe, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("recipe: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecipeBytes+1))
	if err != nil {
		return nil, fmt.Errorf("recipe %s: %w", path, err)
	}
	return Parse(path, data)
}

// StepReport is what one step did: the merge's report and the step's name.
type StepReport struct {
	Step string `json:"step"`
	*merge.Report
}

// Run runs a recipe's steps in dependency order, each into its output. Every step
// is planned first, from the models' headers and the earlier steps' plans, so that
// a mistake anywhere in the recipe stops it before anything is written. A step
// that fails stops the recipe; the outputs of the steps before it stay, complete.
// job carries what the command line sets for every step (threads, version,
// callbacks); its output fields are the steps'.
func Run(ctx context.Context, r *Recipe, opts Options, job merge.Job) ([]StepReport, error) {
	plan, err := PlanRecipe(r, opts)
	if err != nil {
		return nil, err
	}
	c := &catalog{r: r, outs: map[string]string{}, cache: map[string]*modelInfo{}, resolveHub: opts.Resolve}
	for _, sp := range plan.Steps {
		c.outs[sp.Name] = sp.Output
	}
	if opts.IntermediateDir != "" {
		if err := os.MkdirAll(opts.IntermediateDir, 0o755); err != nil {
			return nil, &merge.OutputError{Path: opts.IntermediateDir, Err: err}
		}
	}
	var reports []StepReport
	for _, planned := range plan.Steps {
		if err := ctx.Err(); err != nil {
			return reports, err
		}
		// Plan again from the files as they are now: earlier steps have written
		// theirs.
		sp, err := planStep(planned.step, c, planned.Output)
		if err != nil {
			return reports, err
		}
		rep, err := sp.execute(ctx, job)
		if err != nil {
			return reports, fmt.Errorf("step %s: %w", stepLabel(sp.Name), err)
		}
		reports = append(reports, StepReport{Step: sp.Name, Report: rep})
	}
	return reports, nil
}

// execute runs one planned step.
func (sp *StepPlan) execute(ctx context.Context, job merge.Job) (*merge.Report, error) {
	job.Out = sp.Output
	job.OutDType = sp.outDType
	job.InPlace = false
	if sp.views != nil {
		opened := map[string]merge.Source{}
		defer func() {
			for _, s := range opened {
				s.Close()
			}
		}()
		views := map[string]*view{}
		for k, p := range sp.pos {
			views[sp.views[k].name] = sp.views[k]
			for _, s := range p.srcs {
				if opened[s.info.path] != nil {
					continue
				}
				src, err := merge.Open(s.info.path)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", s.ref.Pos, err)
				}
				opened[s.info.path] = src
			}
		}
		job.Open = func(in merge.Input) (merge.Source, error) {
			if v := views[in.Path]; v != nil {
				return &viewSource{v: v, srcs: opened}, nil
			}
			return merge.Open(in.Path)
		}
	}
	if v := sp.extras.vocab; v != nil && v.permute {
		cleanup, err := sp.permuteInputs(&job)
		if err != nil {
			return nil, err
		}
		defer cleanup()
	}
	if sp.extras.any() {
		job.Extras = sp.extras.write
	}
	rep, err := sp.runMerge(ctx, job)
	if errors.Is(err, merge.ErrBadParameter) {
		// A value the recipe gave (a weight sum of 0 for some tensor): the recipe is
		// the bad input, as for its other mistakes.
		return nil, &Error{Pos: sp.step.Pos, Msg: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// runMerge runs the step's merge by its registry method, with each tensor's
// parameters when they vary.
func (sp *StepPlan) runMerge(ctx context.Context, job merge.Job) (*merge.Report, error) {
	first := sp.first
	mj := merge.MethodJob{Method: sp.Method, Params: first.p, Job: job}
	k0 := 0
	if sp.hasBase() {
		mj.Base = sp.inputPath(0)
		k0 = 1
	}
	for k := k0; k < len(sp.pos); k++ {
		mp := first.mps[k-k0]
		m := merge.Model{Path: sp.inputPath(k), Weight: mp.Weight, Density: mp.Density}
		if f := sp.pos[k].srcs[0].fisher; f != nil {
			m.Fisher = f.Value
		}
		mj.Models = append(mj.Models, m)
	}
	if sp.vary {
		mj.TensorParams = func(name string) (merge.Params, []merge.ModelParams) {
			tv := sp.values[name]
			if tv == nil {
				tv = first
			}
			return tv.p, tv.mps
		}
	}
	return merge.RunMethod(ctx, mj)
}

// WriteText prints the plan for people: per step its method, inputs, output and
// the bytes it will read and write.
func (p *Plan) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, sp := range p.Steps {
		fmt.Fprintf(tw, "step %d %s: %s → %s\n", i+1, stepLabel(sp.Name), sp.Method, sp.Output)
		for _, in := range sp.Inputs {
			what := in.Path
			if in.Step != "" {
				what += fmt.Sprintf(" (output of step %q)", in.Step)
			}
			fmt.Fprintf(tw, "  %s\t%s\n", in.Role, what)
		}
		var notes []string
		if sp.Layers > 0 {
			notes = append(notes, fmt.Sprintf("%d layers", sp.Layers))
		}
		if sp.PerTensor {
			notes = append(notes, "parameters vary by tensor")
		}
		note := ""
		if len(notes) > 0 {
			note = " (" + strings.Join(notes, ", ") + ")"
		}
		fmt.Fprintf(tw, "  %d tensors%s: reads %d bytes, writes %d bytes\n", sp.Tensors, note, sp.BytesRead, sp.BytesWritten)
	}
	fmt.Fprintf(tw, "total: reads %d bytes, writes %d bytes; nothing written (dry run)\n", p.BytesRead, p.BytesWritten)
	return tw.Flush()
}
