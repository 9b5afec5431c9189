package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/merge"
	"github.com/gomerge/gomerge/merge/stats"
	gmreport "github.com/gomerge/gomerge/report"
)

type reportOptions struct {
	base      string
	models    []string
	sfa       string
	densities []float64
	json      bool
	markdown  bool
	perTensor bool
	html      string
	svgDir    string
	threads   int
}

func newReportCmd(ios *IOStreams) *cobra.Command {
	var o reportOptions
	cmd := &cobra.Command{
		Use:   "report --base BASE MODEL... [--html FILE] [--svg DIR] [--json] [--sfa REPORTS]",
		Short: "Per-layer statistics of the models to merge: task-vector norms, cosines, sign conflicts, top-k mass and overlap",
		Long: `Read a base and the models to be merged with it once, and report per layer and kind
of tensor (embedding, attention, mlp, norm): each task vector τ = model − base's norm and
norm relative to the base, the fraction of ‖τ‖² its top-k holds at each density, and
for each pair of models the cosine, the sign-conflict rate and the top-k mask overlap
(docs/report.md). With --sfa, also l2_before and l2_after of an SFA run's merges
against the step, from the gomerge sfa --json reports a trainer collected.

Prints a markdown table (or --json); --html writes a self-contained page with charts,
--svg a folder of the charts.`,
		Example: `  gomerge report --base base/ ft_math/ ft_code/ --html report.html
  gomerge report --base base.safetensors a.safetensors b.safetensors --json
  gomerge report --sfa run_reports.json --html drift.html`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.models = args
			if o.base == "" && len(args) > 0 {
				return usagef("--base is required with models: task vectors are model − base")
			}
			if o.base != "" && len(args) == 0 {
				return usagef("give at least one model to compare with --base")
			}
			if o.base == "" && o.sfa == "" {
				return usagef("give --base and models, or --sfa reports")
			}
			if o.json && o.markdown {
				return usagef("--json and --markdown both print on stdout: choose one")
			}
			if err := stats.CheckDensities(o.densities); err != nil {
				return usagef("--density: %w", err)
			}
			if o.threads < 0 {
				return usagef("--threads %d: must be positive", o.threads)
			}
			paths := []*string{&o.base}
			for i := range o.models {
				paths = append(paths, &o.models[i])
			}
			if err := resolveAll(modelResolver(cmd.Context(), cmd, ios), paths...); err != nil {
				return err
			}
			return runReport(cmd.Context(), ios, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.base, "base", "", "the base checkpoint the task vectors are taken from")
	f.StringVar(&o.sfa, "sfa", "", "a file of gomerge sfa --json reports (a JSON array, or one per line)")
	f.Float64SliceVar(&o.densities, "density", stats.DefaultDensities, "densities for the top-k statistics")
	f.BoolVar(&o.json, "json", false, "print the statistics as JSON on stdout")
	f.BoolVar(&o.markdown, "markdown", false, "print the markdown table on stdout (the default without --json, --html or --svg)")
	f.BoolVar(&o.perTensor, "per-tensor", false, "with --json, every tensor's statistics too")
	f.StringVar(&o.html, "html", "", "write a self-contained HTML page with charts to this file")
	f.StringVar(&o.svgDir, "svg", "", "write each chart as an SVG file into this folder")
	f.IntVar(&o.threads, "threads", 0, "worker goroutines (default: GOMAXPROCS)")
	return cmd
}

// inputStats reads base and models once (merge/stats) and returns their statistics.
func inputStats(ctx context.Context, base string, models []string, densities []float64, threads int) (*stats.Report, error) {
	var sources []merge.Source
	defer func() {
		for _, s := range sources {
			s.Close()
		}
	}()
	for _, p := range append([]string{base}, models...) {
		s, err := merge.Open(p)
		if err != nil {
			return nil, err
		}
		sources = append(sources, s)
	}
	rep, err := stats.Compute(ctx, sources[0], sources[1:], stats.Options{Densities: densities, Exec: merge.ExecOptions{Threads: threads}})
	if err != nil {
		return nil, err
	}
	rep.Base, rep.Models = base, models
	return rep, nil
}

func runReport(ctx context.Context, ios *IOStreams, o *reportOptions) error {
	rep := &gmreport.Report{Report: &stats.Report{Densities: o.densities}}
	if o.sfa != "" {
		f, err := os.Open(o.sfa)
		if err != nil {
			return err
		}
		rep.SFA, err = stats.ReadSFA(f, o.sfa)
		f.Close()
		if err != nil {
			return badInputError{err}
		}
	}
	if o.base != "" {
		s, err := inputStats(ctx, o.base, o.models, o.densities, o.threads)
		if err != nil {
			return err
		}
		rep.Report = s
	}
	if !o.perTensor {
		rep.Tensors = nil
	}
	if o.html != "" {
		if err := writeAtomic(ctx, o.html, func(f *os.File) error { return gmreport.HTML(f, rep) }); err != nil {
			return err
		}
	}
	if o.svgDir != "" {
		charts, err := gmreport.Charts(rep)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(o.svgDir, 0o755); err != nil {
			return &merge.OutputError{Path: o.svgDir, Err: err}
		}
		for _, c := range charts {
			if err := writeAtomic(ctx, filepath.Join(o.svgDir, c.Name+".svg"), func(f *os.File) error {
				_, err := io.Copy(f, strings.NewReader(string(c.SVG)))
				return err
			}); err != nil {
				return err
			}
		}
	}
	switch {
	case o.json:
		return writeJSON(ios.Out, rep)
	case o.markdown || o.html == "" && o.svgDir == "":
		return gmreport.Markdown(ios.Out, rep)
	}
	return nil
}
