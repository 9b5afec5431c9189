package lora

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"

	"gonum.org/v1/gonum/mat"

	"github.com/gomerge/gomerge/formats/dtype"
)

// CombinationTypes are PEFT's add_weighted_adapter combinations that Combine offers.
var CombinationTypes = []string{"linear", "cat", "svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd"}

// CombineOptions are add_weighted_adapter's parameters.
type CombineOptions struct {
	Type    string
	Weights []float64 // one per adapter (nil: all 1)
	// Density is the share of each ΔW's elements kept by the ties, dare and
	// magnitude_prune types, in (0, 1].
	Density float64
	// MajoritySignMethod is "total" (the sign of the sum) or "frequency" (the sign
	// most elements have), for ties_svd and dare_ties_svd.
	MajoritySignMethod string
	SVDRank            int    // the *_svd types' output rank (0: the largest input rank)
	Seed               uint64 // dare's random draws
	ExactBelow         int    // see ExtractOptions
	DType              dtype.DType
}

// Validate checks o against n adapters.
func (o *CombineOptions) Validate(n int) error {
	if !slices.Contains(CombinationTypes, o.Type) {
		return fmt.Errorf("combination type %q: want one of %s", o.Type, strings.Join(CombinationTypes, ", "))
	}
	if o.Weights != nil && len(o.Weights) != n {
		return fmt.Errorf("%d weights for %d adapters", len(o.Weights), n)
	}
	for _, w := range o.Weights {
		if !finite(w) {
			return fmt.Errorf("weight %v is not finite", w)
		}
	}
	pruned := strings.HasPrefix(o.Type, "ties") || strings.HasPrefix(o.Type, "dare") || strings.HasPrefix(o.Type, "magnitude")
	if pruned && !(o.Density > 0 && o.Density <= 1) {
		return fmt.Errorf("%s: density %v: want a share in (0, 1]", o.Type, o.Density)
	}
	if strings.Contains(o.Type, "ties") && o.MajoritySignMethod != "total" && o.MajoritySignMethod != "frequency" {
		return fmt.Errorf("majority_sign_method %q: want total or frequency", o.MajoritySignMethod)
	}
	if o.SVDRank < 0 || o.SVDRank > maxRank {
		return fmt.Errorf("svd_rank %d: want 0 to %d", o.SVDRank, maxRank)
	}
	return nil
}

// CombineReport is what Combine did.
type CombineReport struct {
	Output  string         `json:"output"`
	Files   []string       `json:"output_files"`
	Type    string         `json:"combination_type"`
	Modules []ModuleReport `json:"modules"`
}

type combineTerm struct {
	a      *Adapter
	m      *Module
	weight float64
	index  int
}

// Combine merges adapters into a new one as PEFT's add_weighted_adapter does, and
// writes it as a PEFT folder at out:
//
//   - cat: A = [w₁s₁A₁; w₂s₂A₂; …], B = [B₁ B₂ …] (rank Σrᵢ): exactly Σ wᵢsᵢBᵢAᵢ.
//   - linear: A = Σ √(wᵢsᵢ)·Aᵢ, B = Σ √(wᵢsᵢ)·Bᵢ (equal ranks; not Σ wᵢsᵢBᵢAᵢ, whose
//     cross terms it adds, as PEFT's does).
//   - svd and the others: each ΔWᵢ = sᵢBᵢAᵢ is combined elementwise with weights wᵢ
//     (a weighted sum; TIES: magnitude pruning to density, a majority sign and a
//     disjoint mean; DARE: random pruning to density, rescaled by 1/density;
//     magnitude_prune: pruning then a weighted sum), then truncated to svd_rank by an
//     SVD: B = U·S, A = Vᵀ.
//
// The output's lora_alpha equals its rank, so its scale is 1.
func Combine(ctx context.Context, adapters []*Adapter, out string, o CombineOptions) (*CombineReport, error) {
	if len(adapters) == 0 {
		return nil, fmt.Errorf("no adapters to combine")
	}
	if o.Weights == nil {
		o.Weights = make([]float64, len(adapters))
		for i := range o.Weights {
			o.Weights[i] = 1
		}
	}
	if err := o.Validate(len(adapters)); err != nil {
		return nil, err
	}
	if o.ExactBelow == 0 {
		o.ExactBelow = exactSVDBelow
	}
	first := adapters[0]
	byModule := map[string][]combineTerm{}
	for i, a := range adapters {
		if len(a.Replace) > 0 {
			return nil, fmt.Errorf("%s: tensor %q: whole tensors (modules_to_save) cannot be combined: %w", a.WeightsPath(), a.Replace[0].Meta.Name, ErrBadInput)
		}
		if a.Config.FanInFanOut != first.Config.FanInFanOut {
			return nil, fmt.Errorf("%s: fan_in_fan_out differs from %s's: %w", a.Dir, first.Dir, ErrBadInput)
		}
		for _, m := range a.Modules {
			byModule[m.Name] = append(byModule[m.Name], combineTerm{a, m, o.Weights[i], i})
		}
	}
	rep := &CombineReport{Output: out, Type: o.Type}
	ad := &AdapterOut{DType: o.DType, FanInFanOut: first.Config.FanInFanOut, Base: first.Config.BaseModelNameOrPath, Config: map[string]any{}, Arch: first.Arch}
	if tt, ok := first.Config.Raw["task_type"]; ok {
		ad.Config["task_type"] = tt
	}
	for _, name := range sortedKeys(byModule) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		terms := byModule[name]
		t0 := terms[0].m
		in, outDim := t0.A.Shape[1], t0.B.Shape[0]
		for _, t := range terms[1:] {
			if t.m.A.Shape[1] != in || t.m.B.Shape[0] != outDim || t.m.Embedding != t0.Embedding {
				return nil, fmt.Errorf("%s: tensor %q: B·A is %dx%d, but %dx%d in %s: %w", t.a.WeightsPath(), t.m.A.Name,
					t.m.B.Shape[0], t.m.A.Shape[1], outDim, in, terms[0].a.WeightsPath(), ErrBadInput)
			}
		}
		m, mr, err := combineModule(name, terms, int(in), int(outDim), o)
		if err != nil {
			return nil, err
		}
		m.Embedding = t0.Embedding
		ad.Modules = append(ad.Modules, *m)
		rep.Modules = append(rep.Modules, mr)
	}
	files, err := WriteAdapter(ctx, out, ad)
	if err != nil {
		return nil, err
	}
	rep.Files = files
	return rep, nil
}

func factors(t combineTerm) (A, B []float64, err error) {
	if A, err = t.a.decode(t.m.A); err != nil {
		return nil, nil, err
	}
	B, err = t.a.decode(t.m.B)
	return A, B, err
}

func combineModule(name string, terms []combineTerm, in, out int, o CombineOptions) (*OutModule, ModuleReport, error) {
	mr := ModuleReport{Tensor: name}
	switch o.Type {
	case "cat":
		r := 0
		for _, t := range terms {
			r += t.m.Rank
		}
		A, B := make([]float64, 0, r*in), make([]float64, out*r)
		off := 0
		for _, t := range terms {
			a, b, err := factors(t)
			if err != nil {
				return nil, mr, err
			}
			s := t.weight * t.m.Scale
			for _, v := range a {
				A = append(A, s*v)
			}
			rk := t.m.Rank
			for i := range out {
				copy(B[i*r+off:i*r+off+rk], b[i*rk:(i+1)*rk])
			}
			off += rk
		}
		mr.Rank = r
		return &OutModule{Name: name, A: to32(A), B: to32(B), Rank: r, Alpha: float64(r), In: int64(in), Out: int64(out)}, mr, nil
	case "linear":
		r := terms[0].m.Rank
		A, B := make([]float64, r*in), make([]float64, out*r)
		for _, t := range terms {
			if t.m.Rank != r {
				return nil, mr, fmt.Errorf("%s: tensor %q: rank %d, but %d in %s: linear needs equal ranks (use cat or svd): %w",
					t.a.WeightsPath(), t.m.A.Name, t.m.Rank, r, terms[0].a.WeightsPath(), ErrBadInput)
			}
			ws := t.weight * t.m.Scale
			if ws < 0 {
				return nil, mr, fmt.Errorf("%s: weight·scale %v is negative: linear takes √(weight·scale) (use cat or svd): %w", t.a.Dir, ws, ErrBadInput)
			}
			a, b, err := factors(t)
			if err != nil {
				return nil, mr, err
			}
			sq := math.Sqrt(ws)
			for i, v := range a {
				A[i] += float64(sq * v) // rounded before the sum, as amd64 does (arm64 would fuse)
			}
			for i, v := range b {
				B[i] += float64(sq * v)
			}
		}
		mr.Rank = r
		return &OutModule{Name: name, A: to32(A), B: to32(B), Rank: r, Alpha: float64(r), In: int64(in), Out: int64(out)}, mr, nil
	}
	// The *_svd types: the full ΔWᵢ (in B·A's orientation), combined, then factored.
	deltas := make([][]float64, len(terms))
	weights := make([]float64, len(terms))
	rank := o.SVDRank
	for k, t := range terms {
		a, b, err := factors(t)
		if err != nil {
			return nil, mr, err
		}
		d := make([]float64, out*in)
		for i := range b {
			b[i] *= t.m.Scale
		}
		mulAdd(d, out, in, b, a, t.m.Rank)
		deltas[k], weights[k] = d, t.weight
		if o.SVDRank == 0 {
			rank = max(rank, t.m.Rank)
		}
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	key := h.Sum64()
	var D []float64
	switch o.Type {
	case "svd":
		D = weightedSum(deltas, weights)
	case "magnitude_prune_svd":
		for _, d := range deltas {
			magnitudePrune(d, o.Density)
		}
		D = weightedSum(deltas, weights)
	case "ties_svd":
		for _, d := range deltas {
			magnitudePrune(d, o.Density)
		}
		D = tiesMerge(deltas, weights, o.MajoritySignMethod)
	case "dare_linear_svd":
		for k, d := range deltas {
			dareDrop(d, o.Density, o.Seed, key, terms[k].index)
		}
		D = weightedSum(deltas, weights)
	case "dare_ties_svd":
		for k, d := range deltas {
			dareDrop(d, o.Density, o.Seed, key, terms[k].index)
		}
		D = tiesMerge(deltas, weights, o.MajoritySignMethod)
	}
	rank = min(rank, in, out)
	tr, err := truncatedSVD(mat.NewDense(out, in, D), rank, o.ExactBelow, key^o.Seed)
	if err != nil {
		return nil, mr, fmt.Errorf("module %s: %w", name, err)
	}
	B, A := make([]float64, out*rank), make([]float64, rank*in)
	for j := range rank {
		for i := range out {
			B[i*rank+j] = tr.U.At(i, j) * tr.S[j]
		}
		for i := range in {
			A[j*in+i] = tr.V.At(i, j)
		}
	}
	kept, total := sumSquares(tr.S[:rank]), sumSquares(D)
	m := &OutModule{Name: name, A: to32(A), B: to32(B), Rank: rank, Alpha: float64(rank), In: int64(in), Out: int64(out)}
	acc := make([]float64, len(D))
	mulAdd(acc, out, in, B, A, rank)
	res := sqDist(D, acc)
	mr.Rank = rank
	if total > 0 {
		mr.RelError, mr.EnergyKept = math.Sqrt(res/total), kept/total
	}
	return m, mr, nil
}

// weightedSum is Σ wₖ·dₖ (PEFT's task_arithmetic).
func weightedSum(ds [][]float64, ws []float64) []float64 {
	out := make([]float64, len(ds[0]))
	for k, d := range ds {
		for i, v := range d {
			out[i] += float64(ws[k] * v) // rounded before the sum, as amd64 does (arm64 would fuse)
		}
	}
	return out
}

// magnitudePrune keeps the int(density·n) elements of largest magnitude, ties broken
// by position, and zeroes the rest (PEFT's magnitude_based_pruning).
func magnitudePrune(d []float64, density float64) {
	k := int(density * float64(len(d)))
	if k >= len(d) {
		return
	}
	idx := make([]int, len(d))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return math.Abs(d[idx[a]]) > math.Abs(d[idx[b]]) })
	for _, i := range idx[k:] {
		d[i] = 0
	}
}

// tiesMerge is PEFT's TIES step after pruning: the majority sign per element (of the
// sum of the unweighted deltas, or of their signs), then the mean of the weighted
// deltas that agree with it, over how many agree.
func tiesMerge(ds [][]float64, ws []float64, method string) []float64 {
	out := make([]float64, len(ds[0]))
	for i := range out {
		var m float64
		for _, d := range ds {
			if method == "frequency" {
				m += sign(d[i])
			} else {
				m += d[i]
			}
		}
		major := 1.0
		if m < 0 {
			major = -1
		}
		var sum, n float64
		for k, d := range ds {
			if sign(d[i]) == major {
				sum += float64(ws[k] * d[i]) // as in weightedSum
				n++
			}
		}
		out[i] = sum / max(n, 1)
	}
	return out
}

func sign(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

// dareDrop keeps each element with probability density and rescales the kept ones by
// 1/density (DARE). The draws depend on the seed, the module and the adapter's
// position only, so a run is reproducible.
func dareDrop(d []float64, density float64, seed, module uint64, adapter int) {
	rng := rand.New(rand.NewPCG(seed^module, uint64(adapter)))
	for i := range d {
		if rng.Float64() < density {
			d[i] /= density
		} else {
			d[i] = 0
		}
	}
}
