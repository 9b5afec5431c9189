package merge

import (
	"time"

	"github.com/gomerge/gomerge/checkpoint"
)

// PlannedTensor is one output tensor of a dry run.
type PlannedTensor struct {
	Name  string  `json:"name"`
	Shape []int64 `json:"shape"`
	DType string  `json:"dtype"`
	// Merged: computed by the method from every input; otherwise copied (or
	// converted) from the reference.
	Merged bool `json:"merged"`
}

// dryRun opens the inputs and plans the merge as Run does, and reports what Run would
// read (every operand's bytes) and write (every output tensor's data, headers not
// counted), without locking the output or writing anything.
func dryRun(job Job) (*Report, error) {
	start := time.Now()
	out, format, _, err := outputFormat(job)
	if err != nil {
		return nil, err
	}
	if checkpoint.IsCompressedPath(out) { // a .gmz is written in the reference's format first
		format = checkpoint.FileFormat(job.Inputs[job.Ref].Path)
	}
	plan, err := openPlan(job, format)
	if err != nil {
		return nil, err
	}
	defer func() { closeAll(plan.Inputs); closeAll(plan.Aux) }()
	merged, copied := plan.Counts()
	rep := &Report{
		Version: job.Version, Method: job.Method, Parameters: job.Params,
		Inputs: append(append([]Input(nil), job.Inputs...), job.Aux...), Output: out, InPlace: job.InPlace,
		Tensors: len(plan.Tensors), TensorsMerged: merged, TensorsCopied: copied,
		BytesRead: planInputBytes(plan), Threads: job.Exec.threads(), DryRun: true, Device: "cpu",
	}
	for _, t := range plan.Tensors {
		if t.Merge {
			for _, op := range t.Aux {
				rep.BytesRead += op.Len()
			}
		}
		rep.BytesWritten += t.OutDType.Bytes(t.NumElements())
		rep.Planned = append(rep.Planned, PlannedTensor{Name: t.Name, Shape: t.Shape, DType: t.OutDType.String(), Merged: t.Merge})
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}
