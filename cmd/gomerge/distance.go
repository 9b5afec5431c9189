package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/merge"
)

type distanceOptions struct {
	a, b, base   string
	perTensor    bool
	json         bool
	allowMissing bool
	threads      int
	deviceFlags
	readsFlags
}

// distanceReport is distance's --json output.
type distanceReport struct {
	A     string         `json:"a"`
	B     string         `json:"b"`
	Base  string         `json:"base,omitempty"`
	Total merge.Distance `json:"total"`
	// Device and GPU are as in the merge commands' reports.
	Device string           `json:"device"`
	GPU    *merge.GPUReport `json:"gpu,omitempty"`
	// Tensors is present with --per-tensor.
	Tensors []merge.TensorDistance `json:"tensors,omitempty"`
}

func newDistanceCmd(ios *IOStreams) *cobra.Command {
	var o distanceOptions
	cmd := &cobra.Command{
		Use:   "distance A B [--base BASE] [--per-tensor] [--json]",
		Short: "L2 distance between two checkpoints (the forgetting proxy), with norms and task-vector cosine",
		Long: `Compare two checkpoints over their float tensors: ‖A − B‖₂ (summed in float64), ‖A‖, ‖B‖
and the relative distance ‖A − B‖/‖B‖, in total and, with --per-tensor, per tensor.
With --base, also the cosine between the task vectors A − base and B − base.
Undefined values (a zero norm) are null in JSON.`,
		Example: `  gomerge distance merged.safetensors anchor.safetensors
  gomerge distance ft_math/ ft_law/ --base base/ --per-tensor --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("distance takes two checkpoints, A and B; got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.a, o.b = args[0], args[1]
			if err := resolveAll(modelResolver(cmd.Context(), cmd, ios), &o.a, &o.b, &o.base); err != nil {
				return err
			}
			return runDistance(cmd.Context(), ios, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.base, "base", "", "base checkpoint: also report the cosine between A−base and B−base")
	f.BoolVar(&o.perTensor, "per-tensor", false, "report every tensor too")
	f.BoolVar(&o.json, "json", false, "print a JSON report on stdout")
	f.BoolVar(&o.allowMissing, "allow-missing", false, "skip tensors that not every checkpoint holds instead of failing")
	f.IntVar(&o.threads, "threads", 0, "worker goroutines (default: GOMAXPROCS)")
	o.deviceFlags.register(f)
	o.readsFlags.register(f)
	return cmd
}

func runDistance(ctx context.Context, ios *IOStreams, o *distanceOptions) error {
	if o.threads < 0 {
		return usagef("--threads %d: must be positive", o.threads)
	}
	reads, err := o.reads()
	if err != nil {
		return err
	}
	var sources []merge.Source
	defer func() {
		for _, s := range sources {
			s.Close()
		}
	}()
	for _, p := range []string{o.a, o.b, o.base} {
		if p == "" {
			continue
		}
		s, err := merge.Open(p)
		if err != nil {
			return err
		}
		sources = append(sources, s)
	}
	var base merge.Source
	if o.base != "" {
		base = sources[2]
	}
	dev, err := o.deviceFlags.open()
	if err != nil {
		return err
	}
	defer dev.close(ios)
	c, err := merge.CompareDevices(ctx, sources[0], sources[1], base, merge.CompareOptions{
		AllowMissing: o.allowMissing, Reads: reads, Exec: merge.ExecOptions{Threads: o.threads, Device: dev.dev},
	})
	if err != nil {
		return err
	}
	total, per := c.Total, c.Tensors
	rep := distanceReport{A: o.a, B: o.b, Base: o.base, Total: total, Device: c.Device, GPU: c.GPU}
	if o.perTensor {
		rep.Tensors = per
	}
	if o.json {
		return writeJSON(ios.Out, rep)
	}
	w := tabwriter.NewWriter(ios.Out, 0, 4, 2, ' ', 0)
	if o.perTensor {
		fmt.Fprintln(w, "tensor\tl2\tnorm_a\tnorm_b\trelative\tcosine")
		for _, t := range per {
			fmt.Fprintf(w, "%s\t%.6g\t%.6g\t%.6g\t%s\t%s\n", t.Name, t.L2, t.NormA, t.NormB, optional(t.Relative), optional(t.Cosine))
		}
		fmt.Fprintf(w, "TOTAL\t%.6g\t%.6g\t%.6g\t%s\t%s\n", total.L2, total.NormA, total.NormB, optional(total.Relative), optional(total.Cosine))
		return w.Flush()
	}
	fmt.Fprintf(w, "l2\t%.9g\n", total.L2)
	fmt.Fprintf(w, "norm_a\t%.9g\n", total.NormA)
	fmt.Fprintf(w, "norm_b\t%.9g\n", total.NormB)
	fmt.Fprintf(w, "relative\t%s\n", optional(total.Relative))
	if o.base != "" {
		fmt.Fprintf(w, "cosine\t%s\n", optional(total.Cosine))
	}
	fmt.Fprintf(w, "elements\t%d\n", total.Elements)
	return w.Flush()
}

func optional(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.6g", *v)
}
