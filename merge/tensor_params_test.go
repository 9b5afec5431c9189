package merge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// perTensorJob writes base and models and returns a job over them.
func perTensorJob(t *testing.T, method string, base *ckpt, models []*ckpt) MethodJob {
	t.Helper()
	dir := t.TempDir()
	job := MethodJob{Method: method, Params: Params{Density: 1, Lambda: 1, T: 0.5, Rescale: "l1"},
		Job: Job{Out: filepath.Join(dir, "out.safetensors"), Exec: ExecOptions{Threads: 2}}}
	if base != nil {
		job.Base = filepath.Join(dir, "base.safetensors")
		base.write(t, job.Base, dtype.F32)
	}
	for i, m := range models {
		path := filepath.Join(dir, fmt.Sprintf("m%d.safetensors", i))
		m.write(t, path, dtype.F32)
		job.Models = append(job.Models, Model{Path: path, Weight: 1, Density: math.NaN()})
	}
	return job
}

// TestTensorParamsAgainstReference gives every tensor its own method-wide and
// per-model parameters and compares each tensor with the float64 reference at that
// tensor's values: the kernels must see the per-tensor values, not the job's.
func TestTensorParamsAgainstReference(t *testing.T) {
	base, models := methodFixture(17, dtype.F32, 2)
	// A distinct value set per tensor (weights, densities, λ, t), by name.
	type set struct {
		lambda, t float64
		w, d      []float64
	}
	sets := map[string]set{
		"norm.weight": {lambda: 0.5, t: 0.1, w: []float64{0.3, 0.7}, d: []float64{1, 0.5}},
		"odd.weight":  {lambda: 1.2, t: 0.9, w: []float64{-0.4, 1.5}, d: []float64{0.3, 0.8}},
		"big.weight":  {lambda: 0.8, t: 0.35, w: []float64{1, 0.2}, d: []float64{0.2, 0.6}},
		"one.weight":  {lambda: 2, t: 0.5, w: []float64{0.6, 0.6}, d: []float64{1, 1}},
	}
	hook := func(name string) (Params, []ModelParams) {
		s := sets[name]
		p := Params{Density: 1, Lambda: s.lambda, T: s.t, Rescale: "l1"}
		return p, []ModelParams{{Weight: s.w[0], Density: s.d[0]}, {Weight: s.w[1], Density: s.d[1]}}
	}
	run := func(t *testing.T, job MethodJob) map[string][]float32 {
		t.Helper()
		job.TensorParams = func(name string) (Params, []ModelParams) {
			p, mps := hook(name)
			return p, mps[:len(job.Models)]
		}
		rep, err := RunMethod(context.Background(), job)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Parameters["per_tensor"] != true {
			t.Errorf("report parameters %v lack per_tensor", rep.Parameters)
		}
		return readAll(t, job.Job.Out)
	}
	t.Run("linear", func(t *testing.T) {
		got := run(t, perTensorJob(t, "linear", nil, models))
		for _, name := range base.names {
			s := sets[name]
			n := len(base.vals[name])
			ref, scale := make([]float64, n), make([]float64, n)
			for j := range n {
				for i, m := range models {
					v := s.w[i] * float64(m.vals[name][j]) / (s.w[0] + s.w[1])
					ref[j] += v
					scale[j] += math.Abs(v)
				}
			}
			checkClose(t, name, got[name], ref, scale, dtype.F32)
		}
	})
	t.Run("task_arithmetic", func(t *testing.T) {
		got := run(t, perTensorJob(t, "task_arithmetic", base, models))
		for _, name := range base.names {
			s := sets[name]
			b := base.vals[name]
			ref, scale := make([]float64, len(b)), make([]float64, len(b))
			for j := range b {
				ref[j], scale[j] = float64(b[j]), math.Abs(float64(b[j]))
				for i, m := range models {
					d := s.lambda * s.w[i] * float64(m.vals[name][j]-b[j])
					ref[j] += d
					scale[j] += math.Abs(d)
				}
			}
			checkClose(t, name, got[name], ref, scale, dtype.F32)
		}
	})
	for _, method := range []string{"ties", "breadcrumbs_ties"} {
		t.Run(method, func(t *testing.T) {
			got := run(t, perTensorJob(t, method, base, models))
			for _, name := range base.names {
				s := sets[name]
				o := tvOptions{sparsify: SparsifyMagnitude, consensus: ConsensusSign, normalize: true, rescale: "none"}
				if method != "ties" {
					o = tvOptions{sparsify: SparsifyOutliers, consensus: ConsensusSign, rescale: "none"} // gamma 0 in the hook's Params
				}
				ref, scale := taskVectorsRef(o, base.vals[name], vals(models, name), s.w, s.d, 0, s.lambda, nil)
				checkClose(t, name, got[name], ref, scale, dtype.F32)
			}
		})
	}
	t.Run("slerp", func(t *testing.T) {
		got := run(t, perTensorJob(t, "slerp", base, models[:1]))
		for _, name := range base.names {
			tt := sets[name].t
			v0, v1 := base.vals[name], models[0].vals[name]
			var dot, n0, n1 float64
			for j := range v0 {
				dot += float64(v0[j]) * float64(v1[j])
				n0 += float64(v0[j]) * float64(v0[j])
				n1 += float64(v1[j]) * float64(v1[j])
			}
			cos := dot / math.Sqrt(n0*n1)
			c0, c1 := 1-tt, tt
			if math.Abs(cos) <= 0.9995 {
				om := math.Acos(cos)
				c0, c1 = math.Sin((1-tt)*om)/math.Sin(om), math.Sin(tt*om)/math.Sin(om)
			}
			ref, scale := make([]float64, len(v0)), make([]float64, len(v0))
			for j := range v0 {
				ref[j] = c0*float64(v0[j]) + c1*float64(v1[j])
				scale[j] = math.Abs(c0*float64(v0[j])) + math.Abs(c1*float64(v1[j]))
			}
			checkClose(t, name, got[name], ref, scale, dtype.F32)
		}
	})
}

// TestTensorParamsSameAsScalar: a hook that gives every tensor the job's own values
// writes the same bytes as the job without a hook.
func TestTensorParamsSameAsScalar(t *testing.T) {
	base, models := methodFixture(23, dtype.F32, 3)
	for _, method := range []string{"ties", "dare_ties", "breadcrumbs", "model_stock"} {
		job := perTensorJob(t, method, base, models)
		job.Params.Density = 0.4
		job.Params.Gamma = 0.02
		job.Models[1].Weight = 0.5
		plain := job
		if _, err := RunMethod(context.Background(), plain); err != nil {
			t.Fatal(err)
		}
		want := readAll(t, plain.Job.Out)
		job.Job.Out = filepath.Join(t.TempDir(), "hook.safetensors")
		job.TensorParams = func(string) (Params, []ModelParams) {
			var mps []ModelParams
			for _, m := range job.Models {
				mps = append(mps, ModelParams{Weight: m.Weight, Density: m.Density})
			}
			return job.Params, mps
		}
		got := readAll(t, func() string {
			if _, err := RunMethod(context.Background(), job); err != nil {
				t.Fatal(err)
			}
			return job.Job.Out
		}())
		for _, name := range base.names {
			if !slicesEqualBits(got[name], want[name]) {
				t.Errorf("%s: %s differs with an identity hook", method, name)
			}
		}
	}
}

// TestTensorParamsValidated: a per-tensor value out of range fails the merge with
// ErrBadParameter, naming the tensor, and writes nothing.
func TestTensorParamsValidated(t *testing.T) {
	base, models := methodFixture(29, dtype.F32, 2)
	job := perTensorJob(t, "ties", base, models)
	job.TensorParams = func(name string) (Params, []ModelParams) {
		d := 0.5
		if name == "odd.weight" {
			d = 1.5
		}
		return job.Params, []ModelParams{{Weight: 1, Density: d}, {Weight: 1, Density: math.NaN()}}
	}
	_, err := RunMethod(context.Background(), job)
	if !errors.Is(err, ErrBadParameter) || !strings.Contains(err.Error(), `"odd.weight"`) || !strings.Contains(err.Error(), "1.5") {
		t.Fatalf("got %v, want a bad-parameter error naming odd.weight and 1.5", err)
	}
	if _, err := os.Stat(job.Job.Out); err == nil {
		t.Errorf("%s was written", job.Job.Out)
	}
}
