package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/merge"
)

// methodCmd describes one merge command: which of the shared flags and per-model keys
// it takes. The math lives in merge/.
type methodCmd struct {
	use, method, short, long, example string
	base                              bool
	density                           float64 // default --density; 0: no --density flag
	lambda, t, gamma, seed, epsilon   bool    // which flags apply
	tiesFlag                          string  // method name with --ties (dare, breadcrumbs)
	modelKeys                         []string
}

var methodCmds = []methodCmd{
	{use: "linear", method: "linear", short: "Weighted average of the models: θ = Σ w_i θ_i / Σ w_i (model soup, Wise-FT)",
		example:   `  gomerge linear a.safetensors:weight=0.3 b.safetensors:weight=0.7 --out soup.safetensors`,
		modelKeys: []string{"weight"}},
	{use: "task-arithmetic", method: "task_arithmetic", short: "Add weighted task vectors to the base: θ = θ_base + λ Σ w_i (θ_i − θ_base)",
		example: `  gomerge task-arithmetic --base base.safetensors math.safetensors law.safetensors:weight=0.5 --lambda 0.8 --out ta.safetensors`,
		base:    true, lambda: true, modelKeys: []string{"weight"}},
	{use: "ties", method: "ties", short: "TIES: trim task vectors to their largest entries, elect signs, average what agrees",
		example: `  gomerge ties --base base.safetensors math.safetensors:weight=0.7 law.safetensors:weight=0.3 --density 0.2 --out merged.safetensors`,
		base:    true, density: 0.2, lambda: true, modelKeys: []string{"weight", "density"}},
	{use: "dare", method: "dare_linear", tiesFlag: "dare_ties", short: "DARE: randomly drop task-vector entries, rescale, add (--ties: with TIES sign election)",
		example: `  gomerge dare --base base.safetensors a.safetensors b.safetensors --density 0.3 --seed 7 --out dare.safetensors
  gomerge dare --ties --base base.safetensors a.safetensors b.safetensors:density=0.5 --out dare_ties.safetensors`,
		base: true, density: 0.2, lambda: true, seed: true, modelKeys: []string{"weight", "density"}},
	{use: "breadcrumbs", method: "breadcrumbs", tiesFlag: "breadcrumbs_ties", short: "Model breadcrumbs: drop the largest and smallest task-vector entries, add (--ties: sign election)",
		example: `  gomerge breadcrumbs --base base.safetensors a.safetensors b.safetensors --density 0.9 --gamma 0.01 --out bc.safetensors`,
		base:    true, density: 0.9, lambda: true, gamma: true, modelKeys: []string{"weight", "density"}},
	{use: "slerp", method: "slerp", short: "Spherical interpolation from the base to one model by t",
		example: `  gomerge slerp --base a.safetensors b.safetensors --t 0.3 --out slerp.safetensors`,
		base:    true, t: true},
	{use: "model-stock", method: "model_stock", short: "Model Stock: move from the base toward the models' mean by their task vectors' agreement",
		example: `  gomerge model-stock --base base.safetensors ft1.safetensors ft2.safetensors ft3.safetensors --out stock.safetensors`,
		base:    true},
	{use: "fisher", method: "fisher", short: "Fisher merging: θ = Σ λ_i F_i θ_i / Σ λ_i F_i with each model's diagonal Fisher",
		example: `  gomerge fisher math.safetensors:fisher=math_fisher.safetensors law.safetensors:fisher=law_fisher.safetensors --out merged.safetensors`,
		epsilon: true, modelKeys: []string{"weight", "fisher"}},
}

const modelSyntax = `Each model is PATH[:weight=W][:density=D][:fisher=F]; a per-model density overrides --density.
The output takes the reference's tensor order, dtypes and layout (the base, or the first model
when there is no base); see 'gomerge sfa --help' for --out, --dtype and --shard-size.`

func newMethodCmd(ios *IOStreams, mc methodCmd) *cobra.Command {
	var (
		out     outputFlags
		base    string
		p       = merge.Params{Lambda: 1, T: 0.5, Gamma: 0.01, Epsilon: 1e-6, Rescale: "l1", Density: mc.density}
		useTies bool
	)
	use := mc.use
	if mc.base {
		use += " --base BASE"
	}
	cmd := &cobra.Command{
		Use:     use + " MODEL... --out PATH",
		Short:   mc.short,
		Long:    mc.short + ".\n\n" + modelSyntax,
		Example: mc.example,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("give at least one model")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if out.out == "" {
				return usagef("--out is required")
			}
			if mc.base && base == "" {
				return usagef("--base is required")
			}
			models := make([]merge.Model, 0, len(args))
			for _, a := range args {
				m, err := parseModel(a, mc.modelKeys)
				if err != nil {
					return usageError{err}
				}
				models = append(models, m)
			}
			method := mc.method
			if useTies {
				method = mc.tiesFlag
			}
			job, err := out.job(ios)
			if err != nil {
				return err
			}
			return runMethod(cmd.Context(), ios, merge.MethodJob{Method: method, Base: base, Models: models, Params: p, Job: job}, &out)
		},
	}
	f := cmd.Flags()
	if mc.base {
		f.StringVar(&base, "base", "", "the base model the task vectors are taken from (the reference)")
	}
	if mc.density > 0 {
		f.Float64Var(&p.Density, "density", mc.density, "fraction of each task vector's entries kept, in [0, 1]")
	}
	if mc.lambda {
		f.Float64Var(&p.Lambda, "lambda", 1, "scale of the merged task vector")
	}
	if mc.t {
		f.Float64Var(&p.T, "t", 0.5, "interpolation factor in [0, 1]: 0 gives the base")
	}
	if mc.gamma {
		f.Float64Var(&p.Gamma, "gamma", 0.01, "fraction of the largest entries dropped")
	}
	if mc.seed {
		f.Uint64Var(&p.Seed, "seed", 0, "seed of the random drop (same seed, same output)")
		f.StringVar(&p.Rescale, "rescale", "l1", "rescale kept entries by l1 (‖δ‖₁/‖δ̂‖₁) or inverse (1/density)")
	}
	if mc.epsilon {
		f.Float64Var(&p.Epsilon, "epsilon", 1e-6, "floor of the Fisher values")
	}
	if mc.tiesFlag != "" {
		f.BoolVar(&useTies, "ties", false, "elect a sign per element as TIES does (mergekit's "+mc.tiesFlag+")")
	}
	out.register(cmd)
	return cmd
}

// parseModel reads PATH[:key=value]...; only the keys in allowed are accepted. Keys are
// taken from the right, so a path may itself contain colons.
func parseModel(arg string, allowed []string) (merge.Model, error) {
	m := merge.Model{Weight: 1, Density: math.NaN()}
	parts := strings.Split(arg, ":")
	for len(parts) > 1 {
		last := parts[len(parts)-1]
		key, val, ok := strings.Cut(last, "=")
		if !ok || !isModelKey(key) {
			break
		}
		known := false
		for _, a := range allowed {
			known = known || a == key
		}
		if !known {
			return m, fmt.Errorf("model %q: this method takes no %s", arg, key)
		}
		switch key {
		case "weight", "density":
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				return m, fmt.Errorf("model %q: %s %q is not a number", arg, key, val)
			}
			if key == "weight" {
				m.Weight = v
			} else {
				m.Density = v
			}
		case "fisher":
			if val == "" {
				return m, fmt.Errorf("model %q: empty fisher path", arg)
			}
			m.Fisher = val
		}
		parts = parts[:len(parts)-1]
	}
	m.Path = strings.Join(parts, ":")
	if m.Path == "" {
		return m, fmt.Errorf("model %q: no path", arg)
	}
	return m, nil
}

func isModelKey(k string) bool { return k == "weight" || k == "density" || k == "fisher" }

func runMethod(ctx context.Context, ios *IOStreams, j merge.MethodJob, out *outputFlags) error {
	dev, err := out.deviceFlags.open()
	if err != nil {
		return err
	}
	defer dev.close(ios)
	j.Job.Exec.Device = dev.dev
	rep, err := merge.RunMethod(ctx, j)
	if err != nil {
		return err
	}
	dev.annotate(&rep.GPU)
	if out.json {
		return writeJSON(ios.Out, rep)
	}
	_, err = fmt.Fprintf(ios.Out, "%s: wrote %s (%d tensors merged, %d copied, %s in %.2fs)\n",
		rep.Method, rep.Output, rep.TensorsMerged, rep.TensorsCopied, humanBytes(rep.BytesWritten), rep.Seconds)
	return err
}
