package merge

import "fmt"

// ModelParams are one model's parameters for one tensor.
type ModelParams struct {
	Weight  float64
	Density float64 // NaN: the method-wide density
}

// TensorParamsFunc gives the parameters of one tensor, for merges whose parameters
// vary by tensor (mergekit recipes' per-name filters and per-layer gradients): the
// method-wide parameters and one ModelParams per model, in MethodJob.Models order.
// It is called once per merged tensor and must be safe for concurrent use.
type TensorParamsFunc func(tensor string) (Params, []ModelParams)

// forTensor validates the parameters TensorParams gives tensor name exactly as the
// job's own are validated, and returns what the kernels read for that tensor. The
// kernels take all their parameters from a methodRun when they are built, one per
// tensor, so they need no change to see per-tensor values.
func (j *MethodJob) forTensor(def *Method, name string) (*methodRun, error) {
	p, mps := j.TensorParams(name)
	if len(mps) != len(j.Models) {
		return nil, fmt.Errorf("%s: %w: %d per-model parameter sets for %d models", j.Method, ErrBadParameter, len(mps), len(j.Models))
	}
	t := *j
	t.Params = p
	t.Models = make([]Model, len(j.Models))
	for i, m := range j.Models {
		m.Weight, m.Density = mps[i].Weight, mps[i].Density
		t.Models[i] = m
	}
	return t.validate(def)
}
