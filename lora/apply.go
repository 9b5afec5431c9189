package lora

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"gonum.org/v1/gonum/blas/blas64"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
)

// Weighted is an adapter with the weight its ΔW is multiplied by.
type Weighted struct {
	Adapter *Adapter
	Weight  float64
}

// Applied is a base checkpoint with adapters applied: a checkpoint.Source whose
// adapted tensors are computed when read, W + Σ weight·scale·B·A, so that nothing is
// computed that is not read and a writer can stream it tensor by tensor.
type Applied struct {
	path     string
	base     checkpoint.Source
	adapters []Weighted
	metas    []checkpoint.TensorMeta
	metaIdx  map[string]int
	patches  map[string][]term
	replaced map[string]replacement
	closers  []func() error
}

type term struct {
	a      *Adapter
	m      *Module
	weight float64
}

type replacement struct {
	a *Adapter
	r Replacement
}

// NewApplied applies adapters to base. Every adapted tensor's shape is checked against
// the base now, so that a mismatched adapter fails before anything is written. The
// Applied does not own base or the adapters unless Own is called.
func NewApplied(path string, base checkpoint.Source, adapters []Weighted) (*Applied, error) {
	ap := &Applied{path: path, base: base, adapters: adapters, patches: map[string][]term{}, replaced: map[string]replacement{}}
	index := map[string]*checkpoint.TensorMeta{}
	metas := base.Tensors()
	for i := range metas {
		index[metas[i].Name] = &metas[i]
	}
	ap.metas = append(ap.metas, metas...)
	for _, w := range adapters {
		a := w.Adapter
		if !finite(w.Weight) {
			return nil, fmt.Errorf("%s: weight %v is not finite: %w", a.Dir, w.Weight, ErrBadInput)
		}
		for _, m := range a.Modules {
			name, ok := resolve(index, m.Name+".weight")
			if !ok {
				return nil, fmt.Errorf("%s: tensor %q: the base %s has no tensor %s.weight for it: %w", a.WeightsPath(), m.A.Name, base.Path(), m.Name, ErrBadInput)
			}
			t := index[name]
			if len(t.Shape) != 2 || t.Shape[0] != m.Rows() || t.Shape[1] != m.Cols() {
				return nil, fmt.Errorf("%s: tensor %q: ΔW is %dx%d but the base's %s in %s is %v: %w",
					a.WeightsPath(), m.A.Name, m.Rows(), m.Cols(), name, t.File, t.Shape, ErrBadInput)
			}
			if !t.DType.IsFloat() && !t.DType.IsBlock() {
				return nil, fmt.Errorf("%s: tensor %q: type %s cannot take a LoRA delta: %w", t.File, name, t.DType, ErrBadInput)
			}
			ap.patches[name] = append(ap.patches[name], term{a, m, w.Weight})
		}
		for _, r := range a.Replace {
			name, ok := resolve(index, r.Name)
			if !ok {
				// A new module (a classification head) joins the output as it is.
				name = r.Name
				meta := r.Meta
				meta.Name = name
				index[name] = &meta
				ap.metas = append(ap.metas, meta)
			} else if t := index[name]; !equalShape(t.Shape, r.Meta.Shape) {
				return nil, fmt.Errorf("%s: tensor %q: shape %v, but the base's %s in %s is %v: %w",
					a.WeightsPath(), r.Meta.Name, r.Meta.Shape, name, t.File, t.Shape, ErrBadInput)
			}
			ap.replaced[name] = replacement{a, r}
		}
	}
	ap.metaIdx = make(map[string]int, len(ap.metas))
	for i, m := range ap.metas {
		ap.metaIdx[m.Name] = i
	}
	for name := range ap.patches {
		if _, ok := ap.replaced[name]; ok {
			return nil, fmt.Errorf("tensor %q: both adapted by LoRA and replaced whole by an adapter: %w", name, ErrBadInput)
		}
	}
	return ap, nil
}

// Own makes Close close the base and the adapters too.
func (ap *Applied) Own() {
	ap.closers = append(ap.closers, ap.base.Close)
	for _, w := range ap.adapters {
		ap.closers = append(ap.closers, w.Adapter.Close)
	}
}

// resolve finds the base's name for a module-relative tensor name: as it is, or with
// the model's "model." prefix added or removed (a bare LlamaModel checkpoint against
// an adapter trained on LlamaForCausalLM, or the reverse).
func resolve(index map[string]*checkpoint.TensorMeta, name string) (string, bool) {
	cands := []string{name, "model." + name}
	if rest, ok := strings.CutPrefix(name, "model."); ok {
		cands = append(cands, rest)
	}
	for _, c := range cands {
		if _, ok := index[c]; ok {
			return c, true
		}
	}
	return "", false
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (ap *Applied) Path() string                     { return ap.path }
func (ap *Applied) Format() checkpoint.Format        { return ap.base.Format() }
func (ap *Applied) Tensors() []checkpoint.TensorMeta { return ap.metas }
func (ap *Applied) Base() checkpoint.Source          { return ap.base }
func (ap *Applied) Adapted(name string) bool         { _, ok := ap.patches[name]; return ok }

// Close closes what Own handed over.
func (ap *Applied) Close() error {
	var errs []error
	for _, c := range ap.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

func (ap *Applied) meta(name string) (checkpoint.TensorMeta, bool) {
	i, ok := ap.metaIdx[name]
	if !ok {
		return checkpoint.TensorMeta{}, false
	}
	return ap.metas[i], true
}

// Decodes says Data computes into new memory (checkpoint.Decoder): the merge engine
// then asks for an adapted tensor only when it runs it, and drops it after, so a
// BASE+ADAPTER input holds the tensors in flight, not the model.
func (ap *Applied) Decodes() bool { return true }

// Data returns a tensor in its base type: adapted tensors are computed, replaced ones
// converted to the base's type.
func (ap *Applied) Data(name string) ([]byte, error) {
	m, ok := ap.meta(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: not found", ap.path, name)
	}
	return ap.DataAs(name, m.DType)
}

// DataAs returns a tensor encoded as out: each adapted element is computed as
// float64(W) + Σ ΔW in float64 and rounded once to float32, then encoded to out
// (which rounds again only when out is narrower than float32, as torch's
// .to(bfloat16) of a float64 tensor does).
func (ap *Applied) DataAs(name string, out dtype.DType) ([]byte, error) {
	if r, ok := ap.replaced[name]; ok {
		data, err := r.a.Data(r.r.Meta)
		if err != nil {
			return nil, err
		}
		return convert(data, r.r.Meta, out)
	}
	terms, ok := ap.patches[name]
	if !ok {
		data, err := ap.base.Data(name)
		if err != nil {
			return nil, err
		}
		m, _ := ap.meta(name)
		return convert(data, m, out)
	}
	m, _ := ap.meta(name)
	data, err := ap.base.Data(name)
	if err != nil {
		return nil, err
	}
	w := make([]float32, m.NumElements())
	if err := dtype.Decode(w, data, m.DType); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", m.File, name, err)
	}
	rows, cols := int(m.Shape[0]), int(m.Shape[1])
	L, R, err := stack(terms, rows, cols)
	if err != nil {
		return nil, err
	}
	AddProduct(w, rows, cols, L, R, len(R)/cols)
	buf := make([]byte, out.Bytes(int64(len(w))))
	if err := dtype.Encode(buf, w, out); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", ap.path, name, err)
	}
	return buf, nil
}

// stack concatenates the terms' factors along the rank, so that Σ Lₖ·Rₖ is one
// product [L₁ L₂ …]·[R₁; R₂; …].
func stack(terms []term, rows, cols int) (L, R []float64, err error) {
	k := 0
	for _, t := range terms {
		k += t.m.Rank
	}
	L, R = make([]float64, rows*k), make([]float64, 0, k*cols)
	off := 0
	for _, t := range terms {
		l, r, err := t.a.Factors(t.m, t.weight)
		if err != nil {
			return nil, nil, err
		}
		rk := t.m.Rank
		for i := 0; i < rows; i++ {
			copy(L[i*k+off:i*k+off+rk], l[i*rk:(i+1)*rk])
		}
		R = append(R, r...)
		off += rk
	}
	return L, R, nil
}

// AddProduct adds L·R (L rows×k, R k×cols, row-major float64) to w (rows×cols): each
// element is float64(w) + Σⱼ L[i,j]·R[j,c], the sum in float64 in the order of j,
// rounded once to float32. One row at a time through BLAS's Daxpy (gonum's assembly):
// a rank-16 product is 16 passes over a row that stays in cache, which a general
// Dgemm (it zeroes and blocks C, then spreads blocks over goroutines) did at a
// third of the speed. The order of operations does not depend on the thread count.
func AddProduct(w []float32, rows, cols int, L, R []float64, k int) {
	if k == 0 {
		return
	}
	buf := make([]float64, cols)
	forRows(rows, cols, L, R, k, buf, func(i int, row []float64) {
		seg := w[i*cols : (i+1)*cols]
		for c, d := range row {
			seg[c] = float32(float64(seg[c]) + d)
		}
	})
}

// mulAdd adds L·R to acc (rows×cols float64).
func mulAdd(acc []float64, rows, cols int, L, R []float64, k int) {
	buf := make([]float64, cols)
	forRows(rows, cols, L, R, k, buf, func(i int, row []float64) {
		seg := acc[i*cols : (i+1)*cols]
		for c, d := range row {
			seg[c] += d
		}
	})
}

// forRows computes row i of L·R into buf and hands it to use, for each i in order.
func forRows(rows, cols int, L, R []float64, k int, buf []float64, use func(i int, row []float64)) {
	y := blas64.Vector{N: cols, Inc: 1, Data: buf}
	for i := range rows {
		clear(buf)
		for j := range k {
			if a := L[i*k+j]; a != 0 {
				blas64.Axpy(a, blas64.Vector{N: cols, Inc: 1, Data: R[j*cols : (j+1)*cols]}, y)
			}
		}
		use(i, buf)
	}
}

func convert(data []byte, m checkpoint.TensorMeta, out dtype.DType) ([]byte, error) {
	if m.DType == out {
		return data, nil
	}
	f := make([]float32, m.NumElements())
	if err := dtype.Decode(f, data, m.DType); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", m.File, m.Name, err)
	}
	buf := make([]byte, out.Bytes(int64(len(f))))
	if err := dtype.Encode(buf, f, out); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", m.File, m.Name, err)
	}
	return buf, nil
}

// SplitRef splits mergekit's "base+adapter" reference. A path that exists as it is
// (a folder whose name holds a '+') is never split.
func SplitRef(ref string) (base, adapter string, ok bool) {
	if !strings.Contains(ref, "+") {
		return "", "", false
	}
	if _, err := os.Stat(ref); err == nil {
		return "", "", false
	}
	base, adapter, _ = strings.Cut(ref, "+")
	return base, adapter, true
}

// OpenRef opens a "base+adapter" reference as an Applied that owns both; ok is false
// when ref is not one. resolve, if set, turns each side into a local path (a Hub id's
// snapshot folder) before it is opened.
func OpenRef(ref string, resolve func(string) (string, error)) (src checkpoint.Source, ok bool, err error) {
	baseRef, adRef, ok := SplitRef(ref)
	if !ok {
		return nil, false, nil
	}
	if baseRef == "" || adRef == "" || strings.Contains(adRef, "+") {
		return nil, true, fmt.Errorf("%q: a LoRA reference is BASE+ADAPTER, one of each: %w", ref, ErrBadInput)
	}
	if resolve != nil {
		if baseRef, err = resolve(baseRef); err != nil {
			return nil, true, err
		}
		if adRef, err = resolve(adRef); err != nil {
			return nil, true, err
		}
	}
	base, err := checkpoint.Open(baseRef)
	if err != nil {
		return nil, true, err
	}
	a, err := Open(adRef)
	if err != nil {
		base.Close()
		return nil, true, err
	}
	ap, err := NewApplied(ref, base, []Weighted{{a, 1}})
	if err != nil {
		a.Close()
		base.Close()
		return nil, true, err
	}
	ap.Own()
	return ap, true, nil
}
