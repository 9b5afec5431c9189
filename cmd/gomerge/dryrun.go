package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/gomerge/gomerge/merge"
	"github.com/gomerge/gomerge/merge/stats"
	gmreport "github.com/gomerge/gomerge/report"
)

// dryRunReport is a merge command's --dry-run --json output: the merge's report as it
// would be (bytes to read and write, planned tensors) and its inputs' statistics.
type dryRunReport struct {
	*merge.Report
	// Statistics are gomerge report's, for a merge with a base; null otherwise.
	Statistics *stats.Report `json:"statistics"`
}

// printDryRun prints a dry run's plan and the statistics of its inputs (the task
// vectors of models against base, when the method has a base).
func printDryRun(ctx context.Context, ios *IOStreams, rep *merge.Report, base string, models []string, out *outputFlags) error {
	var st *stats.Report
	if base != "" && len(models) > 0 {
		var err error
		if st, err = inputStats(ctx, base, models, nil, out.threads); err != nil {
			return err
		}
		st.Tensors = nil
	}
	if out.json {
		return writeJSON(ios.Out, dryRunReport{rep, st})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "dry run: %s into %s; nothing written\n", rep.Method, rep.Output)
	for _, in := range rep.Inputs {
		fmt.Fprintf(&b, "  %s: %s\n", in.Role, in.Path)
	}
	fmt.Fprintf(&b, "%d tensors (%d merged, %d copied); would read %s and write %s of tensor data\n\n",
		rep.Tensors, rep.TensorsMerged, rep.TensorsCopied, humanBytes(rep.BytesRead), humanBytes(rep.BytesWritten))
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "tensor\tshape\tdtype\t")
	for _, t := range rep.Planned {
		how := "merged"
		if !t.Merged {
			how = "copied"
		}
		fmt.Fprintf(w, "%s\t%v\t%s\t%s\n", t.Name, t.Shape, t.DType, how)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(ios.Out, b.String()); err != nil {
		return err
	}
	if st == nil {
		_, err := fmt.Fprintln(ios.Out, "(no input statistics: they compare task vectors, model − base, and this merge has no base)")
		return err
	}
	return gmreport.Markdown(ios.Out, &gmreport.Report{Report: st})
}
