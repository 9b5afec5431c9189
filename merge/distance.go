package merge

import (
	"context"
	"encoding/json"
	"math"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/gpu"
)

// Distance statistics, in Kernel.Observe's acc.
const (
	distSqDiff = iota // Σ (a − b)²
	distSqA           // Σ a²
	distSqB           // Σ b²
	distDot           // Σ (a − base)(b − base)
	distSqTA          // Σ (a − base)²
	distSqTB          // Σ (b − base)²
	distStats
)

// Distance compares two checkpoints (docs/methods.md#distance).
type Distance struct {
	L2       float64  `json:"l2"`
	NormA    float64  `json:"norm_a"`
	NormB    float64  `json:"norm_b"`
	Relative *float64 `json:"relative"` // ‖A−B‖/‖B‖; null when ‖B‖ = 0
	Cosine   *float64 `json:"cosine"`   // of the task vectors A−base, B−base; null without --base or when undefined
	Elements int64    `json:"elements"`
}

// distanceJSON is Distance as JSON, with values that are not finite (NaN weights in
// an input) as null: JSON has no NaN.
type distanceJSON struct {
	Name     string   `json:"name,omitempty"`
	L2       *float64 `json:"l2"`
	NormA    *float64 `json:"norm_a"`
	NormB    *float64 `json:"norm_b"`
	Relative *float64 `json:"relative"`
	Cosine   *float64 `json:"cosine"`
	Elements int64    `json:"elements"`
}

func (d Distance) toJSON(name string) distanceJSON {
	opt := func(p *float64) *float64 {
		if p == nil {
			return nil
		}
		return finite(*p)
	}
	return distanceJSON{name, finite(d.L2), finite(d.NormA), finite(d.NormB), opt(d.Relative), opt(d.Cosine), d.Elements}
}

// MarshalJSON writes non-finite values as null.
func (d Distance) MarshalJSON() ([]byte, error) { return json.Marshal(d.toJSON("")) }

// TensorDistance is Distance for one tensor.
type TensorDistance struct {
	Name string `json:"name"`
	Distance
}

// MarshalJSON writes the name and the distance's fields, non-finite values as null.
func (t TensorDistance) MarshalJSON() ([]byte, error) { return json.Marshal(t.Distance.toJSON(t.Name)) }

func distanceKernel(withBase bool) Kernel {
	return Kernel{
		Observe: func(_ []float32, in [][]float32, acc []float64) {
			a, b := in[0], in[1]
			var d2, a2, b2 float64
			for j := range a {
				x, y := float64(a[j]), float64(b[j])
				d2 += float64((x - y) * (x - y))
				a2 += float64(x * x)
				b2 += float64(y * y)
			}
			acc[distSqDiff] += d2
			acc[distSqA] += a2
			acc[distSqB] += b2
			if !withBase {
				return
			}
			base := in[2]
			var dot, ta2, tb2 float64
			for j := range a {
				x, y := float64(a[j])-float64(base[j]), float64(b[j])-float64(base[j])
				dot += float64(x * y)
				ta2 += float64(x * x)
				tb2 += float64(y * y)
			}
			acc[distDot] += dot
			acc[distSqTA] += ta2
			acc[distSqTB] += tb2
		},
		NumStats: distStats,
		// The device's six sums per block are this kernel's NumStats layout.
		GPU: func(ctx context.Context, dev *gpu.Device, t *TensorPlan, _ gpu.Output) ([]float64, error) {
			in := gpuOperands(t.In)
			var base *gpu.Operand
			if withBase {
				base = &in[2]
			}
			return dev.Distance(ctx, t.NumElements(), in[0], in[1], base)
		},
	}
}

func finishDistance(s []float64, withBase bool, elems int64) Distance {
	d := Distance{L2: math.Sqrt(s[distSqDiff]), NormA: math.Sqrt(s[distSqA]), NormB: math.Sqrt(s[distSqB]), Elements: elems}
	if d.NormB > 0 {
		r := d.L2 / d.NormB
		d.Relative = &r
	}
	if withBase {
		den := math.Sqrt(s[distSqTA]) * math.Sqrt(s[distSqTB])
		if den > 0 {
			c := s[distDot] / den
			d.Cosine = &c
		}
	}
	return d
}

// CompareOptions configure Compare.
type CompareOptions struct {
	AllowMissing bool             // skip tensors that not every checkpoint holds
	Reads        checkpoint.Reads // how mapped inputs are read (Job.Reads)
	Exec         ExecOptions
}

// Compare computes the distance between a and b over their float tensors, in total and
// per tensor; with base, also the cosine between the task vectors a−base and b−base.
func Compare(ctx context.Context, a, b, base Source, opts CompareOptions) (total Distance, per []TensorDistance, err error) {
	c, err := CompareDevices(ctx, a, b, base, opts)
	if err != nil {
		return Distance{}, nil, err
	}
	return c.Total, c.Tensors, nil
}

// Comparison is Compare's result with where it ran, for reports.
type Comparison struct {
	Total   Distance
	Tensors []TensorDistance
	Device  string     // "cpu", "cuda" or "cuda+cpu", as in Report
	GPU     *GPUReport // nil without opts.Exec.Device
}

// CompareDevices is Compare, also saying which device ran it.
func CompareDevices(ctx context.Context, a, b, base Source, opts CompareOptions) (*Comparison, error) {
	inputs := []Source{a, b}
	if base != nil {
		inputs = append(inputs, base)
	}
	plan, err := BuildPlan(inputs, nil, PlanOptions{Ref: 0, AllowMissing: opts.AllowMissing, FloatOnly: true, Reads: opts.Reads})
	if err != nil {
		return nil, err
	}
	withBase := base != nil
	res, err := Execute(ctx, plan, nil, func(*TensorPlan) Kernel { return distanceKernel(withBase) }, opts.Exec)
	if err != nil {
		return nil, err
	}
	c := &Comparison{}
	sum := make([]float64, distStats)
	var elems int64
	merged := 0
	for i, t := range plan.Tensors {
		if !t.Merge {
			continue // held by only some inputs (--allow-missing)
		}
		merged++
		s := res.Stats[i]
		if s == nil { // an empty tensor
			s = make([]float64, distStats)
		}
		for j := range sum {
			sum[j] += s[j]
		}
		n := t.NumElements()
		elems += n
		c.Tensors = append(c.Tensors, TensorDistance{Name: t.Name, Distance: finishDistance(s, withBase, n)})
	}
	c.Total = finishDistance(sum, withBase, elems)
	c.Device, c.GPU = deviceReport(opts.Exec.Device, res.GPU, "distance", merged)
	return c, nil
}
