package merge

import (
	"bytes"
	"fmt"
	"os"
	"slices"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
)

// PlanOptions are the policy a plan applies to tensors that are not plain float
// tensors present everywhere.
type PlanOptions struct {
	// Ref is the index of the reference input: its tensor order and dtypes are the
	// output's, and tensors are copied from it.
	Ref int
	// OutDType, if set, is the dtype of every float tensor written (default: the
	// reference's dtype for each tensor).
	OutDType dtype.DType
	// OutType, if set, decides every tensor's output type from its type in the
	// reference and its shape (an output format's policy: checkpoint.Format.OutType);
	// it is applied before OutDType.
	OutType func(name string, from dtype.DType, shape []int64) dtype.DType
	// AllowMissing copies a tensor that some inputs lack from the reference (or the
	// first input that has it) instead of failing.
	AllowMissing bool
	// FloatOnly leaves non-float tensors out of the plan entirely (reductions such as
	// distance, which have no output).
	FloatOnly bool
	// Reads is how operands of sources that can be read either way are read
	// (checkpoint.ReadsRanges): the zero value lets each source decide.
	Reads checkpoint.Reads
	// Importance, if set, gives a tensor's importance weights for the K-quants that
	// take them (dtype.EncodeImportance): one per element of a row, whose length is
	// row; nil for none. An error (weights for another shape) stops the plan.
	Importance func(name string, row int64) ([]float32, error)
}

// Operand is one input's view of a tensor.
type Operand struct {
	DType dtype.DType
	Data  []byte
	File  string
	// load, when set, fetches Data when the tensor runs, and size is its length
	// until then: a source that decodes (a compressed checkpoint) would otherwise
	// hold the whole model in memory from planning on (checkpoint.Decoder).
	load func() ([]byte, error)
	size int64
	// read, when set beside load, decodes bytes [off, off+len(dst)) of the tensor,
	// so that the engine can hold a span of it at a time (runStreamed); unit is the
	// size of the pieces the source decodes in. base is the element Data starts at:
	// 0, but a span's first element in a span's view of the tensor.
	read func(off int64, dst []byte) error
	unit int64
	base int64
	// deltaRef, for an operand that decodes as a delta (checkpoint.DeltaDecoder), is
	// the file of the tensor it decodes against and deltaCRC that tensor's checksum
	// as the delta recorded it; readAgainst reads a range given that tensor's bytes
	// of it. refOp is 1 + the index, among the tensor's used operands, of one that
	// holds those bytes (linkDeltas): a span hands them in, so they are read, or
	// decoded, once. 0: none. crc is the checksum of the operand's bytes where its
	// source knows it without reading them (checkpoint.Checksummer: hasCRC).
	deltaRef    string
	deltaCRC    uint32
	readAgainst func(off int64, dst, ref []byte) error
	refOp       int
	crc         uint32
	hasCRC      bool
}

// at returns the operand's bytes from element i on.
func (o *Operand) at(i int64) []byte { return o.Data[o.DType.Bytes(i-o.base):] }

// Len is the operand's length in bytes, whether or not its data is loaded yet.
func (o *Operand) Len() int64 {
	if o.load != nil {
		return o.size
	}
	return int64(len(o.Data))
}

// operand is meta's tensor of s as an operand: its mapped bytes, or, for a source
// that decodes or is read in ranges (reads), a deferred load.
func operand(s Source, meta *TensorMeta, reads checkpoint.Reads) (Operand, error) {
	op := Operand{DType: meta.DType, File: meta.File}
	if checkpoint.ReadsRanges(s, reads) {
		name := meta.Name
		op.size = meta.DType.Bytes(meta.NumElements())
		op.load = func() ([]byte, error) { return s.Data(name) }
		if rd, ok := s.(checkpoint.RangeDecoder); ok {
			op.read = func(off int64, dst []byte) error { return rd.DecodeRange(name, off, dst) }
			op.unit = rd.DecodeUnit(name)
		}
		if cs, ok := s.(checkpoint.Checksummer); ok {
			op.crc, op.hasCRC = cs.Checksum(name)
		}
		if dd, ok := s.(checkpoint.DeltaDecoder); ok {
			if f, crc, ok := dd.DeltaReference(name); ok {
				op.deltaRef, op.deltaCRC = f, crc
				op.readAgainst = func(off int64, dst, ref []byte) error { return dd.DecodeRangeAgainst(name, off, dst, ref) }
			}
		}
		return op, nil
	}
	var err error
	op.Data, err = s.Data(meta.Name)
	return op, err
}

// deferred reports whether some operand of t loads when t runs.
func (t *TensorPlan) deferred() bool {
	if t.Copy.load != nil {
		return true
	}
	for i := range t.In {
		if t.In[i].load != nil {
			return true
		}
	}
	for i := range t.Aux {
		if t.Aux[i].load != nil {
			return true
		}
	}
	return false
}

// materialize loads t's deferred operands, once the engine starts t.
func (t *TensorPlan) materialize() error {
	load := func(op *Operand) error {
		if op.load == nil || op.Data != nil {
			return nil
		}
		b, err := op.load()
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if int64(len(b)) != op.size {
			return fmt.Errorf("%s: tensor %q: %d bytes decoded, %d expected", op.File, t.Name, len(b), op.size)
		}
		op.Data = b
		return nil
	}
	// A merged tensor reads only In and Aux; Copy is read when the tensor is not
	// merged.
	for _, ops := range [][]Operand{t.In, t.Aux} {
		for i := range ops {
			if err := load(&ops[i]); err != nil {
				return err
			}
		}
	}
	if t.Merge {
		return nil
	}
	return load(&t.Copy)
}

// forget drops the loaded data of t's deferred operands, once t is written.
func (t *TensorPlan) forget() {
	for _, ops := range [][]Operand{t.In, t.Aux} {
		for i := range ops {
			if ops[i].load != nil {
				ops[i].Data = nil
			}
		}
	}
	if t.Copy.load != nil {
		t.Copy.Data = nil
	}
}

// TensorPlan says how one output tensor is made.
type TensorPlan struct {
	Name     string
	Shape    []int64
	OutDType dtype.DType
	// Merge is set when the method's kernel computes the tensor from In (one operand
	// per input) and Aux (one per auxiliary source, e.g. a Fisher matrix). Otherwise
	// the tensor is Copy's data, converted to OutDType if that differs.
	Merge bool
	In    []Operand
	Aux   []Operand
	Copy  Operand
	// Importance, if set, is the weight of each column of a row (of Shape's last
	// dimension) that the output's quantizer uses (dtype.EncodeImportance).
	Importance []float32
}

// NumElements is the product of the shape.
func (t *TensorPlan) NumElements() int64 { return numElements(t.Shape) }

// Plan is every output tensor of a merge, in output order.
type Plan struct {
	Inputs  []Source
	Aux     []Source
	Tensors []TensorPlan
	// Reads is how the mapped inputs are read: PlanOptions.Reads, ReadsAuto resolved
	// by resolveReads.
	Reads checkpoint.Reads
}

// resolveReads is the plan's Reads: r, unless it is ReadsAuto and some mapped source
// found its mapping traps (the probe: docs/reliability.md#how-inputs-are-read), which
// copies every mapped source; otherwise each source decides for itself (ReadsAuto:
// a file on tmpfs is copied, the others mapped). One choice for all because the
// probe's finding is the machine's (a hypervisor trapping every small page), while
// the folio sizes it met vary from file to file and from one run to the next: on the
// 1 GB bench fixtures a merge with two inputs mapped and two copied ran slower than
// with all four copied (bench/README.md, "Inputs copied where the mapping traps").
// A file on tmpfs does not count: that is the file's doing, and the staged trainer
// round trip (docs/trainer.md) keeps its anchor mapped where mapping it is cheap.
func resolveReads(r checkpoint.Reads, sources ...[]Source) checkpoint.Reads {
	if r != checkpoint.ReadsAuto {
		return r
	}
	for _, ss := range sources {
		for _, s := range ss {
			if m, ok := s.(checkpoint.MappedDecoder); ok && m.Mapped() && m.MappingTraps() {
				return checkpoint.ReadsCopied
			}
		}
	}
	return checkpoint.ReadsAuto
}

// Counts returns how many tensors are merged and how many copied.
func (p *Plan) Counts() (merged, copied int) {
	for i := range p.Tensors {
		if p.Tensors[i].Merge {
			merged++
		} else {
			copied++
		}
	}
	return merged, copied
}

// BuildPlan matches the inputs' tensors by name and applies docs/methods.md#which-tensors-are-merged: float tensors
// present in every input with one shape are merged; integer and bool tensors must be
// byte-equal wherever present and are copied; anything missing or mismatched is an
// error naming the tensor and the files, unless opts allow it. Every auxiliary source
// must hold every merged tensor with the same shape.
func BuildPlan(inputs, aux []Source, opts PlanOptions) (*Plan, error) {
	if len(inputs) == 0 || opts.Ref < 0 || opts.Ref >= len(inputs) {
		return nil, fmt.Errorf("merge: reference input %d of %d", opts.Ref, len(inputs))
	}
	if opts.OutDType != dtype.Invalid && !opts.OutDType.IsFloat() {
		return nil, fmt.Errorf("merge: output dtype %s is not a float type", opts.OutDType)
	}
	// Name → per-input meta; output order is the reference's, then what only other
	// inputs hold, in input order.
	lookup := make([]map[string]*TensorMeta, len(inputs))
	var order []string
	seen := make(map[string]bool)
	addNames := func(s Source) {
		for _, t := range s.Tensors() {
			if !seen[t.Name] {
				seen[t.Name] = true
				order = append(order, t.Name)
			}
		}
	}
	addNames(inputs[opts.Ref])
	for i, s := range inputs {
		lookup[i] = checkpoint.TensorIndex(s)
		addNames(s)
	}
	same := sameFiles()
	auxLookup := make([]map[string]*TensorMeta, len(aux))
	for i, s := range aux {
		auxLookup[i] = checkpoint.TensorIndex(s)
	}

	p := &Plan{Inputs: inputs, Aux: aux, Reads: resolveReads(opts.Reads, inputs, aux)}
	opts.Reads = p.Reads
	for _, name := range order {
		metas := make([]*TensorMeta, len(inputs))
		var present, missing []string
		first := -1
		for i := range inputs {
			metas[i] = lookup[i][name]
			if metas[i] == nil {
				missing = append(missing, inputs[i].Path())
				continue
			}
			present = append(present, metas[i].File)
			if first < 0 {
				first = i
			}
		}
		from := opts.Ref
		if metas[from] == nil {
			from = first
		}
		ref := metas[from]
		if opts.FloatOnly && !ref.DType.IsFloat() {
			continue
		}
		for _, m := range metas {
			if m == nil {
				continue
			}
			if !slices.Equal(m.Shape, ref.Shape) {
				return nil, &MismatchError{Tensor: name, Files: []string{ref.File, m.File},
					Msg: fmt.Sprintf("shape %v differs from %v", m.Shape, ref.Shape)}
			}
			if m.DType.IsFloat() != ref.DType.IsFloat() || (!m.DType.IsFloat() && m.DType != ref.DType) {
				return nil, &MismatchError{Tensor: name, Files: []string{ref.File, m.File},
					Msg: fmt.Sprintf("dtype %s cannot be merged with %s", m.DType, ref.DType)}
			}
		}
		if len(missing) > 0 && !opts.AllowMissing {
			return nil, &MismatchError{Tensor: name, Files: append(missing, present...),
				Msg: fmt.Sprintf("missing from %d of %d inputs (use --allow-missing to copy it from %s)", len(missing), len(inputs), ref.File)}
		}
		tp := TensorPlan{Name: name, Shape: ref.Shape, OutDType: ref.DType}
		if opts.OutType != nil {
			tp.OutDType = opts.OutType(name, ref.DType, ref.Shape)
		}
		if opts.Importance != nil && dtype.ImportanceTypes(tp.OutDType) && len(ref.Shape) > 0 {
			qw, err := opts.Importance(name, ref.Shape[len(ref.Shape)-1])
			if err != nil {
				return nil, err
			}
			tp.Importance = qw
		}
		copyOp, err := operand(inputs[from], ref, opts.Reads)
		if err != nil {
			return nil, err
		}
		tp.Copy = copyOp
		others := false
		for i, m := range metas {
			others = others || m != nil && i != from
		}
		if !ref.DType.IsFloat() && others {
			// Integer and bool tensors are compared now, decoded if need be: they are
			// small (ids, masks), and a mismatch must stop the merge before it starts.
			refData := copyOp.Data
			if copyOp.load != nil {
				if refData, err = copyOp.load(); err != nil {
					return nil, err
				}
			}
			compare := func() error { return checkEqualBytes(name, inputs, metas, from, refData) }
			if err := guarded(&TensorPlan{Name: name, Copy: tp.Copy}, compare)(); err != nil {
				return nil, err
			}
		}
		if !ref.DType.IsFloat() {
			p.Tensors = append(p.Tensors, tp)
			continue
		}
		if opts.OutDType != dtype.Invalid {
			tp.OutDType = opts.OutDType
		}
		if len(missing) == 0 {
			tp.Merge = true
			for i := range inputs {
				op, err := operand(inputs[i], metas[i], opts.Reads)
				if err != nil {
					return nil, err
				}
				tp.In = append(tp.In, op)
			}
			for i, s := range aux {
				m := auxLookup[i][name]
				if m == nil {
					return nil, &MismatchError{Tensor: name, Files: []string{s.Path()}, Msg: "missing from " + s.Path()}
				}
				if !slices.Equal(m.Shape, ref.Shape) || !m.DType.IsFloat() {
					return nil, &MismatchError{Tensor: name, Files: []string{ref.File, m.File},
						Msg: fmt.Sprintf("%s %v in %s does not match %s %v", m.DType, m.Shape, s.Path(), ref.DType, ref.Shape)}
				}
				op, err := operand(s, m, opts.Reads)
				if err != nil {
					return nil, err
				}
				tp.Aux = append(tp.Aux, op)
			}
			linkDeltas(&tp, same)
		}
		p.Tensors = append(p.Tensors, tp)
	}
	return p, nil
}

// linkDeltas points each operand of t that decodes as a delta at another operand of
// the same type and size that holds its reference's bytes: one that reads the file
// its reference tensor is in, or a compressed one whose bytes have the checksum the
// delta recorded of its reference (the compressed anchor, where the delta was made
// against the plain one). Merging a compressed current with its anchor then decodes
// or reads the anchor once, not once as an input and again as the current's
// reference. The bytes handed in are checked as the reference file's would be: the
// delta's frame checksums fail on any other bytes, and the checksummed operand's
// own frames are checked as they decode.
func linkDeltas(t *TensorPlan, same func(a, b string) bool) {
	var ops []*Operand
	t.usedOperands(func(op *Operand) { ops = append(ops, op) })
	for _, op := range ops {
		if op.readAgainst == nil {
			continue
		}
		for j, r := range ops {
			if r.readAgainst == nil && r.DType == op.DType && r.Len() == op.Len() &&
				(same(r.File, op.deltaRef) || r.hasCRC && r.crc == op.deltaCRC) {
				op.refOp = j + 1
				break
			}
		}
	}
}

// sameFiles returns a test of whether two paths name the same file (os.SameFile),
// which remembers its answers: a plan asks it for every tensor.
func sameFiles() func(a, b string) bool {
	known := map[[2]string]bool{}
	return func(a, b string) bool {
		if a == b {
			return true
		}
		k := [2]string{a, b}
		if v, ok := known[k]; ok {
			return v
		}
		sa, err1 := os.Stat(a)
		sb, err2 := os.Stat(b)
		v := err1 == nil && err2 == nil && os.SameFile(sa, sb)
		known[k] = v
		return v
	}
}

// checkEqualBytes enforces that a non-float tensor is the same in every input that has
// it: an integer tensor (position ids, a mask) cannot be averaged.
func checkEqualBytes(name string, inputs []Source, metas []*TensorMeta, from int, want []byte) error {
	for i, m := range metas {
		if m == nil || i == from {
			continue
		}
		got, err := inputs[i].Data(name)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return &MismatchError{Tensor: name, Files: []string{metas[from].File, m.File},
				Msg: fmt.Sprintf("%s tensor differs between inputs; integer and bool tensors are copied and must be equal", m.DType)}
		}
	}
	return nil
}
