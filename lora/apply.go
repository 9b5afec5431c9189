package lora

import (
	"errors"
	"fmt"
	"os"
	"slices"
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
	index := checkpoint.TensorIndex(base)
	ap.metas = append(ap.metas, base.Tensors()...)
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
			if s := m.Scale * w.Weight; !finite(s) {
				return nil, fmt.Errorf("%s: tensor %q: scale %v times weight %v is not finite: %w", a.WeightsPath(), m.A.Name, m.Scale, w.Weight, ErrBadInput)
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
			} else if t := index[name]; !slices.Equal(t.Shape, r.Meta.Shape) {
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
// .to(bfloat16) of a float64 tensor does). WriteApplied computes the same bytes a
// block of rows at a time.
func (ap *Applied) DataAs(name string, out dtype.DType) ([]byte, error) {
	j, err := ap.job(name)
	if err != nil {
		return nil, err
	}
	n := j.meta.NumElements()
	if j.k == 0 && j.meta.DType == out {
		return j.data, nil
	}
	buf := make([]byte, out.Bytes(n))
	rows, cols := j.split(out)
	if _, err := j.rows(buf, make([]float32, n), 0, rows, cols, out); err != nil {
		return nil, err
	}
	return buf, nil
}

// tensorJob is what one output tensor is computed from: the bytes of the base's
// tensor (or of the adapter's that replaces it) and, for an adapted one, the stacked
// factors of every term.
type tensorJob struct {
	name string
	meta checkpoint.TensorMeta // the source tensor's: the base's or the replacement's
	data []byte
	L, R []float64 // rows×k and k×cols, nil when no adapter touches the tensor
	k    int
}

func (ap *Applied) job(name string) (*tensorJob, error) {
	if r, ok := ap.replaced[name]; ok {
		data, err := r.a.Data(r.r.Meta)
		if err != nil {
			return nil, err
		}
		return &tensorJob{name: name, meta: r.r.Meta, data: data}, nil
	}
	m, ok := ap.meta(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: not found", ap.path, name)
	}
	data, err := ap.base.Data(name)
	if err != nil {
		return nil, err
	}
	j := &tensorJob{name: name, meta: m, data: data}
	if terms, ok := ap.patches[name]; ok {
		rows, cols := int(m.Shape[0]), int(m.Shape[1])
		if j.L, j.R, err = stack(terms, rows, cols); err != nil {
			return nil, err
		}
		j.k = len(j.R) / cols
	}
	return j, nil
}

// split gives the tensor's shape as rows of whole encoded blocks, in its own type and
// in out: rows×cols for a matrix whose rows are whole blocks in both (every float
// type; a quantized one whose row length is a multiple of its block), else the whole
// tensor as one row.
func (j *tensorJob) split(out dtype.DType) (rows, cols int) {
	n := int(j.meta.NumElements())
	s := j.meta.Shape
	if len(s) < 2 || n == 0 {
		return 1, n
	}
	rows, cols = int(s[0]), n/int(s[0])
	if cols%j.meta.DType.BlockSize() != 0 || cols%out.BlockSize() != 0 {
		return 1, n
	}
	return rows, cols
}

// rows computes rows r0..r1 of the output tensor (cols elements each, as split gives
// them), encoded as out. It returns the base's bytes themselves when nothing is to be
// computed, else dst (out.Bytes of the rows), decoding through f (at least the rows'
// elements). Row blocks may be computed in any order and on any thread: each element
// depends only on its own base element and row of L.
func (j *tensorJob) rows(dst []byte, f []float32, r0, r1, cols int, out dtype.DType) ([]byte, error) {
	in := j.meta.DType
	src := j.data[in.Bytes(int64(r0*cols)):in.Bytes(int64(r1*cols))]
	if j.k == 0 && in == out {
		return src, nil
	}
	n := (r1 - r0) * cols
	f = f[:n]
	if err := dtype.Decode(f, src, in); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", j.meta.File, j.name, err)
	}
	if j.k > 0 {
		addProduct(f, r1-r0, cols, j.L[r0*j.k:r1*j.k], j.R, j.k)
	}
	dst = dst[:out.Bytes(int64(n))]
	if err := dtype.Encode(dst, f, out); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", j.meta.File, j.name, err)
	}
	return dst, nil
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
// rounded once to float32 (kernel.go: an AVX2 kernel where the CPU has one, checked
// bit for bit against the element-by-element reference). The result does not depend on
// how the rows are split or on the thread count.
func AddProduct(w []float32, rows, cols int, L, R []float64, k int) {
	addProduct(w, rows, cols, L, R, k)
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
