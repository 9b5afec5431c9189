package merge

import (
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

// DELLA (Deep, Bhatia et al., "DELLA-Merging: Reducing Interference in Model Merging
// through Magnitude-Based Sampling"): DARE's random drop with a keep probability per
// entry that grows with the entry's magnitude rank in its row, from density − ε for
// the smallest |δ| to density + ε for the largest (mergekit's della_magprune). della
// adds TIES's sign consensus and normalizes; della_linear sums. Both rescale what is
// kept by default (mergekit: by the L1 norm; --rescale inverse: by 1/p per entry, the
// paper's).

func init() {
	const example = `  gomerge della --base base.safetensors a.safetensors b.safetensors --density 0.5 --epsilon 0.1 --seed 7 --out della.safetensors
  gomerge della --linear --base base.safetensors a.safetensors:weight=0.6 b.safetensors:weight=0.4 --density 0.4 --out della_linear.safetensors`
	for _, p := range []taskVectorPreset{{
		name: "della", command: "della",
		short:    "DELLA: drop task-vector entries with probabilities by magnitude rank per row, rescale, elect signs, average (--linear: sum)",
		example:  example,
		sparsify: SparsifyDella, consensus: ConsensusSign, normalize: true, rescale: true, density: 0.5, rescaleFlag: true,
	}, {
		name: "della_linear", command: "della", commandSwitch: "linear",
		short:    "no sign consensus: add the weighted task vectors (mergekit's della_linear)",
		sparsify: SparsifyDella, rescale: true, density: 0.5, rescaleFlag: true,
	}} {
		m := taskVectorMethod(p)
		m.kernel = dellaKernel
		register(m)
	}
}

// dellaKernel is the family's kernel (sparseTaskVectorKernel) but for the L1
// rescale (the default), where the pass that ranks the rows also sums each model's
// |δ| and kept |δ| while the row is at hand, and keeps the masks for the merge pass.
// The sums are added in the same order as l1Pass adds them, so the same bits.
func dellaKernel(m *methodRun, t *TensorPlan) Kernel {
	if m.tv.rescale != "l1" || m.p.generalKernel {
		return taskVectorKernel(m, t)
	}
	ds, err := newDellaSelector(t, m, dareKey(m.p.Seed, t.Name), false)
	if err != nil {
		return Kernel{Err: err}
	}
	lanes := len(m.weights)
	pool := m.maskPool()
	kc := newKeepCache(lanes, m.keepCacheLimit())
	scale := make([]float32, lanes)
	cpool := m.combinePool(m.tv.consensus == ConsensusSign)
	// With AVX-512, the merge from words is DARE's with its kept masks (bandMerge:
	// TIES' one-sweep kernel in its masks' form, or the bands' kernel without sign
	// election): both are combineTaskVectors with packed masks and a factor per
	// model, so the same bits. Elsewhere, and for a chunk bandMerge declines (words
	// it cannot read in place), della's own blocks (dellaMergeFused).
	bm := newBandMerge(m, nil, kc, scale, cpool)
	blocks := dellaMergeFused(m, kc, scale, pool, cpool, m.shared(fmt.Sprintf("dellaMerge/%d", lanes), func() any { return newDellaMergePool(lanes) }).(*sync.Pool))
	return Kernel{
		Fused: func(out []byte, outDT dtype.DType, in []Operand, acc []float64, pos Chunk) bool {
			return bm.fused(out, outDT, in, pos) || blocks(out, outDT, in, acc, pos)
		},
		Passes: []Pass{{
			NumStats: 2 * lanes,
			Chunk: func(pos Chunk, in, _ [][]float32, acc []float64) {
				sc := pool.get(len(in[0]))
				defer pool.put(sc)
				kc.storing(func(sc *maskScratch, in [][]float32, pos Chunk) [][]bool {
					return ds.keepChunkL1(sc, in, pos, acc)
				})(sc, in, pos)
			},
			Fused: ds.fusedL1(kc, pool),
			Done: func(perChunk []float64) error {
				copy(scale, l1Scales(perChunk, lanes))
				return nil
			},
		}},
		WholeInputs: ds.rows.straddles(), // the rows read their inputs beyond the chunk
		Merge: func(dst []float32, in, _ [][]float32, pos Chunk) {
			sc := pool.get(len(dst))
			defer pool.put(sc)
			cs := cpool.Get().(*combineScratch)
			defer cpool.Put(cs)
			if !kc.combine(m, dst, in, sc, scale, cs, pos) {
				combineTaskVectors(m, dst, in, ds.keepChunk(sc, in, pos), nil, scale, nil, cs, haveTiesAsm)
			}
		},
	}
}

// epsilonParam is DELLA's ε, mergekit's per-model epsilon (default 0.15). gomerge
// takes one value for all the models of a tensor.
func epsilonParam() Param {
	return Param{Name: "epsilon", Flag: "epsilon", Usage: "half-width of the keep probabilities: density−ε for a row's smallest |δ|, density+ε for its largest",
		Kind: Number, PerModel: true, Uniform: true, Default: 0.15, RecipeDefault: 0.15, Report: true,
		check: func(v float64) string {
			if !(v >= 0 && v < 0.5) {
				return "is outside [0, 0.5)"
			}
			return ""
		},
		field: func(p *Params) any { return &p.Epsilon }}
}

// checkDellaEpsilon refuses, as mergekit does, an ε that takes a model's keep
// probabilities outside (0, 1); densities of 0 and 1 drop everything and nothing and
// take any ε.
func checkDellaEpsilon(r *methodRun) error {
	eps := r.p.Epsilon
	for i, d := range r.dens {
		if d <= 0 || d >= 1 {
			continue
		}
		if !(d-eps > 0 && d+eps < 1) {
			return &ParamError{Param: "epsilon", Value: eps,
				Msg: fmt.Sprintf("with %s's density %v: density ± epsilon must lie in (0, 1)", r.models[i].Path, d)}
		}
	}
	return nil
}

// dellaRowLen is the length of the rows DELLA ranks in: the last dimension (a 1-D
// tensor is one row). For 2-D tensors this is mergekit's dim 1; mergekit ranks
// tensors of 3 or more dimensions along dim 1 as well, gomerge along the last.
func dellaRowLen(shape []int64) int64 {
	if len(shape) == 0 {
		return 1
	}
	return max(shape[len(shape)-1], 1)
}

// dellaKeepProb is the keep probability of the entry of ascending magnitude rank q
// (0: the smallest) in a row of L: density − ε + 2ε·q/(L−1). A row of one entry,
// where mergekit divides 0 by 0, keeps it with probability density.
func dellaKeepProb(density, eps float64, q, L int64) float64 {
	if L <= 1 {
		return density
	}
	// The conversion rounds the product before the sum, as amd64 does: arm64 would
	// fuse them, and a threshold one ulp apart can flip a draw.
	return density - eps + float64(2*eps*(float64(q)/float64(L-1)))
}

// dellaSelector makes the keep masks of one tensor: per model, entry e is kept when
// DARE's draw for (seed, tensor, model, e) falls below its keep probability. The
// rank needs the entry's whole row, which may extend past the chunk: such rows are
// decoded from the operands, so every chunk sees the same ranks whatever the
// scheduling.
type dellaSelector struct {
	t       *TensorPlan
	rowLen  int64
	key     uint64
	dens    []float64
	eps     float64
	inverse bool // fill maskScratch.elem with 1/p
	rows    *rowPool
	// thr[i][q]: the draw below which model i keeps the entry of rank q
	// (keepRowBuckets); nil: every row is sorted (keepRowSorted), as --rescale
	// inverse needs every kept entry's own rank, and as the tests' reference.
	thr [][]uint64
	// bounds[i]: the bounds of thr[i]'s top bits, for the bucket decisions
	bounds []*thresholdBounds
}

func newDellaSelector(t *TensorPlan, m *methodRun, key uint64, inverse bool) (*dellaSelector, error) {
	L := dellaRowLen(t.Shape)
	rp, err := newRowPool(t, L)
	if err != nil {
		return nil, err
	}
	s := &dellaSelector{t: t, rowLen: L, key: key, dens: m.dens, eps: m.p.Epsilon, inverse: inverse, rows: rp}
	if !inverse && !m.p.generalKernel {
		s.thr = dellaThresholds(m.dens, m.p.Epsilon, rp.L)
		s.bounds = make([]*thresholdBounds, len(s.thr))
		for i, t := range s.thr {
			if t != nil {
				s.bounds[i] = newThresholdBounds(t)
			}
		}
	}
	return s, nil
}

// dellaThresholds tabulates each model's thresholds by rank in rows of L, or returns
// nil where they would decrease somewhere (keepRowBuckets needs them in order; the
// rounding of the probabilities keeps them so for the ε that checkDellaEpsilon
// admits).
func dellaThresholds(dens []float64, eps float64, L int64) [][]uint64 {
	thr := make([][]uint64, len(dens))
	for i, d := range dens {
		if d <= 0 || d >= 1 {
			continue
		}
		t := make([]uint64, L)
		for q := range t {
			t[q] = densityThreshold(dellaKeepProb(d, eps, int64(q), L))
			if q > 0 && t[q] < t[q-1] {
				return nil
			}
		}
		thr[i] = t
	}
	return thr
}

// keepChunk fills sc.keep with the chunk's masks and returns it.
func (s *dellaSelector) keepChunk(sc *maskScratch, in [][]float32, pos Chunk) [][]bool {
	return s.keepChunkL1(sc, in, pos, nil)
}

// keepChunkL1 is keepChunk that, with l1 (2 per model), also adds each model's Σ|δ|
// and Σ kept |δ| over the chunk to l1[2i] and l1[2i+1], as l1Pass does.
func (s *dellaSelector) keepChunkL1(sc *maskScratch, in [][]float32, pos Chunk, l1 []float64) [][]bool {
	n := len(in[0])
	if s.inverse && sc.elem == nil {
		for range sc.keep {
			sc.elem = append(sc.elem, make([]float32, ChunkElems))
		}
	}
	ranked := false
	for i, keep := range sc.keep {
		d := s.dens[i]
		switch {
		case d >= 1: // mergekit returns the task vector as it is
			for j := range keep {
				keep[j] = true
			}
		case d <= 0:
			clear(keep)
		default:
			ranked = true
			continue
		}
		if s.inverse {
			e := sc.elem[i][:n]
			for j := range e {
				e[j] = 1
			}
		}
	}
	// fused[i]: model i's L1 sums are taken row by row, as its masks are made.
	var fused []bool
	if ranked {
		rb := s.rows.get()
		defer s.rows.put(rb)
		if s.thr != nil && rb.buckets == nil {
			rb.buckets = newBucketScratch(s.rows.L)
		}
		// The ranked models' sums, continued row by row in the chunk's lanes
		// (l1Lanes).
		var (
			lanes []int
			sums  []l1Lanes
		)
		if l1 != nil && s.thr != nil {
			fused = make([]bool, len(sc.keep))
			for i, d := range s.dens {
				if d > 0 && d < 1 {
					lanes, fused[i] = append(lanes, i), true
				}
			}
			sums = make([]l1Lanes, len(lanes))
		}
		s.rows.each(rb, in, pos, func(rowStart, lo, hi int64, rows [][]float32) {
			for i := range sc.keep {
				d := s.dens[i]
				if d <= 0 || d >= 1 {
					continue
				}
				if s.thr == nil {
					s.keepRowSorted(sc, rb, i, rowStart, lo, hi, pos.Offset, rows[0], rows[i+1])
					continue
				}
				s.keepRowBuckets(rb.buckets, sc.keep[i], i, s.thr[i], s.bounds[i], rowStart, lo, hi, pos.Offset, rows[0], rows[i+1], rb.keys, rb.tmp)
			}
			if sums == nil {
				return
			}
			j0, j1 := lo-rowStart, hi-rowStart
			for g, i := range lanes {
				sums[g].add(rows[0][j0:j1], rows[i+1][j0:j1], sc.keep[i][lo-pos.Offset:hi-pos.Offset], int(lo-pos.Offset))
			}
		})
		for g, i := range lanes {
			sums[g].addTo(l1[2*i : 2*i+2])
		}
	}
	if l1 != nil {
		for i, keep := range sc.keep {
			if fused == nil || !fused[i] {
				l1Sums(l1[2*i:2*i+2], in[0][:n], [][]float32{in[i+1][:n]}, [][]bool{keep})
			}
		}
	}
	return sc.keep
}

// keepRowSorted sets model i's keep mask (and with inverse its 1/p) for the entries
// in [lo, hi) of the row at rowStart, from a sort of the whole row.
func (s *dellaSelector) keepRowSorted(sc *maskScratch, rb *rowBuf, i int, rowStart, lo, hi, off int64, base, x []float32) {
	L := int64(len(x))
	keys := rb.keys[:L]
	for j := range keys {
		keys[j] = uint64(absBits(x[j]-base[j]))<<32 | uint64(j)
	}
	sortRowKeys(keys, rb.tmp[:L]) // ascending |δ|, equal magnitudes by index
	keep := sc.keep[i]
	d := s.dens[i]
	for q, k := range keys {
		e := rowStart + int64(uint32(k))
		if e < lo || e >= hi {
			continue
		}
		p := dellaKeepProb(d, s.eps, int64(q), L)
		keep[e-off] = dareDraw(s.key, i, e) < densityThreshold(p)
		if s.inverse {
			sc.elem[i][e-off] = float32(1 / p)
		}
	}
}

// sortRowKeys sorts keys that hold a magnitude's bits in their high 32 bits and a
// distinct index in their low 32, in ascending index order on entry, as slices.Sort
// would: by magnitude, equal magnitudes by index. It is a least-significant-digit
// radix sort of the magnitude bytes, which is stable, so equal magnitudes keep their
// index order; the byte passes every key shares are skipped. A row's sort by
// comparisons (pdqsort) was most of DELLA's time; this does four linear passes at
// most. tmp is scratch of len(keys).
func sortRowKeys(keys, tmp []uint64) {
	if len(keys) < 2 {
		return
	}
	var count [4][256]int
	for _, k := range keys {
		m := uint32(k >> 32)
		count[0][uint8(m)]++
		count[1][uint8(m>>8)]++
		count[2][uint8(m>>16)]++
		count[3][uint8(m>>24)]++
	}
	src, dst := keys, tmp[:len(keys)]
	for d := range count {
		c := &count[d]
		shift := 32 + 8*d
		if c[uint8(src[0]>>shift)] == len(src) {
			continue // every key has this byte: the pass would not move them
		}
		var sum int
		for i, n := range c {
			c[i] = sum
			sum += n
		}
		for _, k := range src {
			b := uint8(k >> shift)
			dst[c[b]] = k
			c[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &keys[0] {
		copy(keys, src)
	}
}

// rowPool serves the rows of a tensor that a chunk touches, whole: slices of the
// chunk's inputs where the row lies inside it, rows decoded from the operands where
// it does not.
type rowPool struct {
	t   *TensorPlan
	L   int64
	n   int64
	buf sync.Pool // *rowBuf
}

type rowBuf struct {
	rows [][]float32 // per input, the row served
	dec  [][]float32 // per input, L elements to decode into
	keys []uint64    // L, for the methods that sort a row
	tmp  []uint64    // L, sortRowKeys' scratch
	// buckets: della's bucketed ranks' scratch, made by the first row that needs it
	buckets *bucketScratch
	// lanes: della's fused pass's per-model magnitudes, made by its first row
	lanes *dellaLaneScratch
}

// newRowPool checks that every input's data holds the tensor and that rows start on
// whole blocks, so that decoding a row cannot fail later.
func newRowPool(t *TensorPlan, L int64) (*rowPool, error) {
	n := t.NumElements()
	for _, op := range t.In {
		bs := int64(op.DType.BlockSize())
		if bs == 0 || L%bs != 0 && L < n {
			return nil, fmt.Errorf("%s: tensor %q: rows of %d elements do not hold whole %s blocks", op.File, t.Name, L, op.DType)
		}
		if op.Len() < op.DType.Bytes((n+bs-1)/bs*bs) {
			return nil, fmt.Errorf("%s: tensor %q: %d bytes of data, short of %d elements", op.File, t.Name, op.Len(), n)
		}
	}
	rp := &rowPool{t: t, L: min(L, max(n, 1)), n: n}
	lanes := len(t.In)
	rp.buf.New = func() any {
		b := &rowBuf{rows: make([][]float32, lanes), keys: make([]uint64, rp.L), tmp: make([]uint64, rp.L)}
		for range lanes {
			b.dec = append(b.dec, make([]float32, rp.L))
		}
		return b
	}
	return rp, nil
}

// straddles reports whether some row crosses a chunk boundary, so that a chunk's
// rows need the inputs beyond it (Kernel.WholeInputs): where rows divide a chunk,
// or the tensor is one chunk, every row lies in the chunk that holds it, and the
// tensor can be streamed like any other.
func (rp *rowPool) straddles() bool { return rp.n > ChunkElems && ChunkElems%rp.L != 0 }

// operands returns where a chunk's rows are read from, given the chunk's operands
// (in, at pos): ops[k] holds input k's data from element from on. That is the
// chunk's own operands where no row straddles chunks, and the whole tensor's
// (Kernel.WholeInputs) where some do.
func (rp *rowPool) operands(in []Operand, pos Chunk) (ops []Operand, from int64) {
	if rp.straddles() {
		return rp.t.In, 0
	}
	return in, pos.Offset
}

func (rp *rowPool) get() *rowBuf  { return rp.buf.Get().(*rowBuf) }
func (rp *rowPool) put(b *rowBuf) { rp.buf.Put(b) }

// each calls f for every row that overlaps the chunk at pos (inputs in), in order,
// with the row's first flat index, the overlap [lo, hi) in flat indices, and every
// input's whole row.
func (rp *rowPool) each(b *rowBuf, in [][]float32, pos Chunk, f func(rowStart, lo, hi int64, rows [][]float32)) {
	off, end := pos.Offset, pos.Offset+int64(len(in[0]))
	L := rp.L
	for r := off / L; r*L < end; r++ {
		start := r * L
		lo, hi := max(start, off), min(start+L, end)
		for k, op := range rp.t.In {
			if start >= off && start+L <= end {
				b.rows[k] = in[k][start-off : start-off+L]
				continue
			}
			// newRowPool checked that the data holds the row and that it starts on a
			// whole block, which is all Decode can refuse.
			_ = dtype.Decode(b.dec[k][:L], op.Data[op.DType.Bytes(start):], op.DType)
			b.rows[k] = b.dec[k][:L]
		}
		f(start, lo, hi, b.rows)
	}
}

// dellaRef is DELLA's plain statement for one tensor, in float64 where that answers
// the same question: ranks by a stable sort of each row's float32 |δ|, the keep
// probability and DARE's draw per entry, the rescale (L1 per model, or 1/p per
// entry), then the family's combine (tvCombineRef).
func dellaRef(o tvOptions, shape []int64, base []float32, models [][]float32, w, dens []float64, eps, lambda float64, key uint64) (ref, scale []float64) {
	n := len(base)
	L := int(dellaRowLen(shape))
	keep := make([][]bool, len(models))
	factor := make([][]float64, len(models))
	for i, x := range models {
		keep[i], factor[i] = make([]bool, n), make([]float64, n)
		for j := range factor[i] {
			factor[i][j] = 1
		}
		d := dens[i]
		if d >= 1 {
			for j := range keep[i] {
				keep[i][j] = true
			}
			continue
		}
		if d <= 0 {
			continue
		}
		for r := 0; r < n; r += L {
			row := min(L, n-r)
			// The bits of the float32 |δ|: ordered as the values, NaN above +Inf; equal
			// magnitudes by position, as a stable sort would leave them, in one sort of
			// distinct keys (a stable sort of the positions took most of the tests' time).
			keys := make([]uint64, row)
			for q := range keys {
				keys[q] = uint64(math.Float32bits(float32(math.Abs(float64(x[r+q]-base[r+q])))))<<32 | uint64(q)
			}
			slices.Sort(keys)
			for q, k := range keys {
				j := int(uint32(k))
				p := d
				if row > 1 {
					p = d - eps + 2*eps*float64(q)/float64(row-1)
				}
				e := r + j
				keep[i][e] = dareDraw(key, i, int64(e)) < densityThreshold(p)
				if o.rescale == "inverse" {
					factor[i][e] = 1 / p
				}
			}
		}
		if o.rescale == "l1" {
			var all, kept float64
			for j := range base {
				a := math.Abs(float64(x[j] - base[j]))
				all += a
				if keep[i][j] {
					kept += a
				}
			}
			if all >= 1e-7 && kept >= 1e-7 {
				for j := range factor[i] {
					factor[i][j] = all / kept
				}
			}
		}
	}
	return tvCombineRef(o, base, models, w, lambda, keep, func(i, j int) float64 { return factor[i][j] })
}
