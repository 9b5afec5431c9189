// Package stats computes what `gomerge report` shows about a merge's inputs: for a
// base and the models to be merged with it, per tensor and per layer × kind, the task
// vectors' norms, the cosines and sign conflicts between them, how much of each task
// vector's L2 mass its top-k elements hold at a few densities, and how much the
// models' top-k masks overlap (docs/report.md).
//
// Everything is computed in one streaming pass over the inputs by the merge engine
// (merge.Execute with no output), in float64 sums added in chunk order, so the
// numbers are the same whatever the thread count. The top-k statistics come from a
// histogram of each task vector's magnitudes, not a sort; see docs/report.md for
// what that approximates and by how much.
package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/merge"
)

// DefaultDensities are the densities the top-k statistics are computed at.
var DefaultDensities = []float64{0.1, 0.2, 0.5}

// Options configure Compute.
type Options struct {
	// Densities at which the kept mass and the mask overlap are computed (default
	// DefaultDensities); each in (0, 1].
	Densities []float64
	Exec      merge.ExecOptions
}

// Tensor kinds, from the tensor's name (Classify).
const (
	KindEmbedding = "embedding"
	KindAttention = "attention"
	KindMLP       = "mlp"
	KindNorm      = "norm"
	KindOther     = "other"
)

// Kinds lists the kinds in the order reports show them.
var Kinds = []string{KindEmbedding, KindAttention, KindMLP, KindNorm, KindOther}

// kindPatterns decide a tensor's kind from substrings of its name (Hugging Face
// llama/mistral/qwen/GPT-2/NeoX names and llama.cpp's GGUF names), first match wins:
// norms before attention, since "post_attention_layernorm" is a norm.
var kindPatterns = []struct {
	kind string
	subs []string
}{
	{KindNorm, []string{"norm", "ln_", ".ln"}},
	{KindEmbedding, []string{"embed", "lm_head", "wte.", "wpe.", "token_embd", "embed_out"}},
	{KindAttention, []string{"attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "query_key_value"}},
	{KindMLP, []string{"mlp", "ffn", "feed_forward", "up_proj", "down_proj", "gate_proj", "dense_h_to_4h", "dense_4h_to_h"}},
}

// Classify returns the layer a tensor belongs to (-1 when none: embeddings, the final
// norm, the output head) and its kind, from its name.
func Classify(name string) (layer int, kind string) {
	layer = -1
	if _, l, _, ok := checkpoint.SplitLayer(name); ok {
		layer = l
	}
	if name == "output.weight" { // GGUF's output head
		return layer, KindEmbedding
	}
	for _, p := range kindPatterns {
		for _, s := range p.subs {
			if strings.Contains(name, s) {
				return layer, p.kind
			}
		}
	}
	return layer, KindOther
}

// Report is Compute's result.
type Report struct {
	Base      string    `json:"base"`
	Models    []string  `json:"models"`
	Densities []float64 `json:"densities"`
	// Total covers every float tensor; Groups one layer × kind each, by layer (the
	// tensors outside layers, -1, first) then kind in Kinds order.
	Total     Group    `json:"total"`
	Layers    []Group  `json:"layers"` // one per layer, every kind (Kind "all"), -1 first
	Groups    []Group  `json:"groups"`
	Tensors   []Tensor `json:"tensors,omitempty"`
	BytesRead int64    `json:"bytes_read"`
}

// Group holds the statistics of a set of tensors. Values that are undefined (a zero
// norm, no elements) or not finite are null in JSON.
type Group struct {
	Layer    int      `json:"layer"` // -1: outside the layers (or the total)
	Kind     string   `json:"kind"`  // "" for the total
	Tensors  int      `json:"tensors"`
	Elements int64    `json:"elements"`
	BaseNorm *float64 `json:"base_norm"`
	// Models: one per model, in input order. Pairs: one per pair of models (a < b).
	Models []ModelStats `json:"models"`
	Pairs  []PairStats  `json:"pairs"`
	// OverlapSampled says some tensor's overlap was estimated from a sample of its
	// elements (docs/report.md#top-k).
	OverlapSampled bool `json:"overlap_sampled,omitempty"`
}

// ModelStats describe one model's task vector τ = model − base.
type ModelStats struct {
	Norm     *float64 `json:"norm"`     // ‖τ‖₂
	Relative *float64 `json:"relative"` // ‖τ‖₂ / ‖base‖₂
	// Kept[d]: the fraction of ‖τ‖₂² held by each tensor's topK(Densities[d]) largest
	// |τ| (what TIES keeps at that density), over the group's tensors.
	Kept []*float64 `json:"kept"`
}

// PairStats compare two models' task vectors.
type PairStats struct {
	A, B   int      `json:"-"`
	Cosine *float64 `json:"cosine"`
	// SignConflict: the fraction of the elements where both task vectors are non-zero
	// on which their signs differ (what TIES's sign election settles).
	SignConflict *float64 `json:"sign_conflict"`
	// Overlap[d]: |top-k(τa) ∩ top-k(τb)| / k at Densities[d], summed over the group's
	// tensors (Σ intersections / Σ k).
	Overlap []*float64 `json:"overlap"`
}

// MarshalJSON names the pair's models by index.
func (p PairStats) MarshalJSON() ([]byte, error) {
	type plain PairStats
	return json.Marshal(struct {
		A int `json:"a"`
		B int `json:"b"`
		plain
	}{p.A, p.B, plain(p)})
}

// Tensor is one tensor's statistics.
type Tensor struct {
	Name string `json:"name"`
	Group
}

// sums are the additive statistics of a tensor or a group.
type sums struct {
	tensors  int
	elements int64
	baseSq   float64
	sq       []float64   // per model: Σ τ²
	kept     [][]float64 // per model, density: Σ τ² over the top k (estimated)
	dot      []float64   // per pair: Σ τa·τb
	conflict []float64   // per pair: elements of opposite non-zero signs
	both     []float64   // per pair: elements where both are non-zero
	inter    [][]float64 // per pair, density: |top-k(τa) ∩ top-k(τb)| (estimated)
	k        []float64   // per density: Σ k
	sampled  bool
}

func newSums(models, densities int) *sums {
	pairs := models * (models - 1) / 2
	s := &sums{sq: make([]float64, models), dot: make([]float64, pairs), conflict: make([]float64, pairs),
		both: make([]float64, pairs), k: make([]float64, densities)}
	s.kept = make([][]float64, models)
	for i := range s.kept {
		s.kept[i] = make([]float64, densities)
	}
	s.inter = make([][]float64, pairs)
	for i := range s.inter {
		s.inter[i] = make([]float64, densities)
	}
	return s
}

func (s *sums) add(o *sums) {
	s.tensors += o.tensors
	s.elements += o.elements
	s.baseSq += o.baseSq
	addTo(s.sq, o.sq)
	addTo(s.dot, o.dot)
	addTo(s.conflict, o.conflict)
	addTo(s.both, o.both)
	addTo(s.k, o.k)
	for i := range s.kept {
		addTo(s.kept[i], o.kept[i])
	}
	for i := range s.inter {
		addTo(s.inter[i], o.inter[i])
	}
	s.sampled = s.sampled || o.sampled
}

func addTo(dst, src []float64) {
	for i, v := range src {
		dst[i] += v
	}
}

// ratio is a/b, nil when b is 0 or the result is not finite.
func ratio(a, b float64) *float64 {
	if b == 0 {
		return nil
	}
	return merge.Finite(a / b)
}

// group turns sums into the reported statistics.
func (s *sums) group(layer int, kind string) Group {
	baseNorm := math.Sqrt(s.baseSq)
	g := Group{Layer: layer, Kind: kind, Tensors: s.tensors, Elements: s.elements, BaseNorm: merge.Finite(baseNorm), OverlapSampled: s.sampled}
	for i, sq := range s.sq {
		norm := math.Sqrt(sq)
		m := ModelStats{Norm: merge.Finite(norm), Relative: ratio(norm, baseNorm)}
		for d := range s.k {
			m.Kept = append(m.Kept, ratio(s.kept[i][d], sq))
		}
		g.Models = append(g.Models, m)
	}
	p := 0
	for a := range s.sq {
		for b := a + 1; b < len(s.sq); b++ {
			ps := PairStats{A: a, B: b, Cosine: ratio(s.dot[p], math.Sqrt(s.sq[a])*math.Sqrt(s.sq[b])), SignConflict: ratio(s.conflict[p], s.both[p])}
			for d := range s.k {
				ps.Overlap = append(ps.Overlap, ratio(s.inter[p][d], s.k[d]))
			}
			g.Pairs = append(g.Pairs, ps)
			p++
		}
	}
	return g
}

// CheckDensities says whether every density is in (0, 1].
func CheckDensities(dens []float64) error {
	for _, d := range dens {
		if !(d > 0 && d <= 1) {
			return fmt.Errorf("density %v: must be in (0, 1]", d)
		}
	}
	return nil
}

// Compute reads base and models once and returns their statistics. The models must
// hold the base's float tensors with the same shapes (tensors that are not floats are
// left out).
func Compute(ctx context.Context, base merge.Source, models []merge.Source, opts Options) (*Report, error) {
	if len(models) == 0 {
		return nil, fmt.Errorf("report: no models to compare with the base")
	}
	dens := opts.Densities
	if len(dens) == 0 {
		dens = DefaultDensities
	}
	if err := CheckDensities(dens); err != nil {
		return nil, err
	}
	plan, err := merge.BuildPlan(append([]merge.Source{base}, models...), nil, merge.PlanOptions{Ref: 0, FloatOnly: true})
	if err != nil {
		return nil, err
	}
	states := make(map[*merge.TensorPlan]*tensorState, len(plan.Tensors))
	pool := newScratchPool(len(models))
	for i := range plan.Tensors {
		states[&plan.Tensors[i]] = newTensorState(plan.Tensors[i].NumElements(), len(models), dens, pool)
	}
	res, err := merge.Execute(ctx, plan, nil, func(t *merge.TensorPlan) merge.Kernel {
		st := states[t]
		return merge.Kernel{Merge: func(_ []float32, in, _ [][]float32, pos merge.Chunk) { st.chunk(in, pos) }}
	}, opts.Exec)
	if err != nil {
		return nil, err
	}
	rep := &Report{Densities: slices.Clone(dens), BytesRead: res.BytesRead}
	total := newSums(len(models), len(dens))
	type key struct {
		layer int
		kind  string
	}
	groups, layers := map[key]*sums{}, map[int]*sums{}
	for i := range plan.Tensors {
		t := &plan.Tensors[i]
		if !t.Merge {
			continue
		}
		st := states[t]
		if st.result == nil { // no chunks: an empty tensor
			st.finish()
		}
		layer, kind := Classify(t.Name)
		g := groups[key{layer, kind}]
		if g == nil {
			g = newSums(len(models), len(dens))
			groups[key{layer, kind}] = g
		}
		g.add(st.result)
		if layers[layer] == nil {
			layers[layer] = newSums(len(models), len(dens))
		}
		layers[layer].add(st.result)
		total.add(st.result)
		rep.Tensors = append(rep.Tensors, Tensor{Name: t.Name, Group: st.result.group(layer, kind)})
	}
	rep.Total = total.group(-1, "")
	for k, g := range groups {
		rep.Groups = append(rep.Groups, g.group(k.layer, k.kind))
	}
	for l, g := range layers {
		rep.Layers = append(rep.Layers, g.group(l, "all"))
	}
	slices.SortFunc(rep.Layers, func(a, b Group) int { return a.Layer - b.Layer })
	slices.SortFunc(rep.Groups, func(a, b Group) int {
		if a.Layer != b.Layer {
			return a.Layer - b.Layer
		}
		return slices.Index(Kinds, a.Kind) - slices.Index(Kinds, b.Kind)
	})
	return rep, nil
}

// Magnitude histograms and samples (docs/report.md#top-k).
const (
	// histBins: |τ| is binned by the top 16 bits of its float32 pattern (the sign bit
	// is 0, so 15 bits count): bf16 precision, 8 exponent and 7 mantissa bits.
	histBins = 1 << 15
	// exactKeys: tensors up to this many elements keep every element's bin for the
	// mask overlap; larger ones keep a sample of sampleEvery'th of them.
	exactKeys   = 1 << 20
	sampleEvery = 16
	samplesPer  = merge.ChunkElems / sampleEvery
	block       = 1024 // elements per inner block: its inputs stay in L1
)

// tensorState accumulates one tensor's statistics while its chunks run.
type tensorState struct {
	n, nChunks int64
	models     int
	dens       []float64
	nStats     int
	partial    []float64 // per chunk: the chunk's sums (statsLayout), added in chunk order
	mu         sync.Mutex
	hist       [][]uint64 // per model: the magnitude histogram (integers: any order)
	mags       [][]uint32 // per model, not sampled: every element's |τ| bits
	keys       [][]uint16 // per model, sampled: the sample's |τ| bins (magKey)
	sampled    bool
	remaining  atomic.Int64
	result     *sums
	pool       *sync.Pool
}

// Per-chunk sums: base², then τ² per model, then dot, conflicts, both per pair.
func statsLayout(models int) (n, pairs int) {
	pairs = models * (models - 1) / 2
	return 1 + models + 3*pairs, pairs
}

type chunkScratch struct {
	hist [][]uint32 // per model, histBins, zero between uses
	lo   []int      // per model, the lowest bin the chunk touched
	hi   []int      // and the highest
}

// newScratchPool makes a run's pool of chunk scratch for this many models.
func newScratchPool(models int) *sync.Pool {
	return &sync.Pool{New: func() any {
		s := &chunkScratch{}
		for range models {
			s.hist = append(s.hist, make([]uint32, histBins))
		}
		s.lo, s.hi = make([]int, models), make([]int, models)
		return s
	}}
}

func newTensorState(n int64, models int, dens []float64, pool *sync.Pool) *tensorState {
	nStats, _ := statsLayout(models)
	st := &tensorState{n: n, nChunks: (n + merge.ChunkElems - 1) / merge.ChunkElems, models: models, dens: dens, nStats: nStats, pool: pool}
	st.remaining.Store(st.nChunks)
	st.sampled = n > exactKeys
	return st
}

// alloc makes the tensor's buffers when its first chunk runs, so that memory holds
// the tensors in flight only.
func (st *tensorState) alloc() {
	st.partial = make([]float64, st.nChunks*int64(st.nStats))
	for range st.models {
		st.hist = append(st.hist, make([]uint64, histBins))
		if st.sampled {
			st.keys = append(st.keys, make([]uint16, st.nChunks*samplesPer))
		} else {
			st.mags = append(st.mags, make([]uint32, st.n))
		}
	}
}

// sampleOffset is the offset, within its stride of sampleEvery elements, of sample s
// of chunk c: a hash, so that the sample does not follow the rows of a matrix whose
// row length is a multiple of the stride.
func sampleOffset(c int64, s int) int {
	x := uint32(s)*0x9E3779B1 ^ uint32(c)*0x85EBCA77
	x ^= x >> 15
	x *= 0x2C1B3C6D
	x ^= x >> 12
	return int(x >> 28)
}

// magBits is |t|'s float32 bit pattern: non-negative floats order like their bits.
func magBits(t float32) uint32 { return math.Float32bits(t) &^ (1 << 31) }

func magKey(t float32) uint16 { return uint16(magBits(t) >> 16) }

// chunk adds one chunk's statistics: in[0] is the base, in[1:] the models. A block
// at a time: its sums, then its |τ| for the top k, while its inputs are in L1.
func (st *tensorState) chunk(in [][]float32, pos merge.Chunk) {
	st.mu.Lock()
	if st.partial == nil {
		st.alloc()
	}
	st.mu.Unlock()
	sc := st.pool.Get().(*chunkScratch)
	defer st.pool.Put(sc)
	acc := st.partial[pos.Index*int64(st.nStats) : (pos.Index+1)*int64(st.nStats)]
	for i := range st.models {
		sc.lo[i], sc.hi[i] = histBins-1, 0
	}
	n := len(in[0])
	for off := 0; off < n; off += block {
		end := min(off+block, n)
		blockSums(acc, in, off, end, st.models)
		st.keep(in, pos, sc, off, end)
	}
	st.mu.Lock()
	for i, h := range sc.hist {
		if sc.lo[i] <= sc.hi[i] { // else no sample in this chunk
			flushHist(st.hist[i], h[sc.lo[i]:sc.hi[i]+1], sc.lo[i])
		}
	}
	st.mu.Unlock()
	if st.remaining.Add(-1) == 0 {
		st.finish()
	}
}

// blockSums adds the sums of the chunk's elements [off, end) to acc (statsLayout):
// one pass over each pair of models (for a single model, over it and itself), which
// makes the base's, both models' and the pair's sums on lanes of a fixed order
// (pairLanes), so that the bits do not depend on scheduling. Each of acc's sums gets
// one addition per block, in block order. With two models, the usual report, every
// element is read once.
func blockSums(acc []float64, in [][]float32, off, end, models int) {
	b := in[0][off:end]
	if models == 1 {
		var l pairLanes
		m := in[1][off:end]
		addPair(b, m, m, &l)
		acc[0] += lanesSum(&l.base)
		acc[1] += lanesSum(&l.sqA)
		return
	}
	p := 0
	for i := range models {
		for k := i + 1; k < models; k++ {
			var l pairLanes
			addPair(b, in[1+i][off:end], in[1+k][off:end], &l)
			if p == 0 {
				acc[0] += lanesSum(&l.base)
			}
			if k == i+1 { // each model's Σ τ² from its pair with the next one
				acc[1+i] += lanesSum(&l.sqA)
				if k == models-1 {
					acc[1+k] += lanesSum(&l.sqB)
				}
			}
			s := 1 + models + 3*p
			acc[s] += lanesSum(&l.dot)
			acc[s+1] += count(&l.conflict)
			acc[s+2] += count(&l.both)
			p++
		}
	}
}

// flushHist adds a chunk's histogram, the bins from lo on, to the tensor's and zeroes
// it.
func flushHist(dst []uint64, h []uint32, lo int) {
	dst = dst[lo:]
	for b, v := range h {
		if v != 0 {
			dst[b] += uint64(v)
			h[b] = 0
		}
	}
}

// keep records the |τ| of the chunk's elements [off, end) for the top-k selection
// and adds them to the chunk's histograms (sc.lo and sc.hi widened to the bins it
// touched): all of them, or the samples whose strides start there (the chunk's last
// block also marks the samples past its end). Each chunk writes its own range.
func (st *tensorState) keep(in [][]float32, pos merge.Chunk, sc *chunkScratch, off, end int) {
	base := in[0]
	for i := range st.models {
		m, h := in[1+i], sc.hist[i]
		if !st.sampled {
			dst := st.mags[i][pos.Offset+int64(off) : pos.Offset+int64(end)]
			for j, v := range m[off:end] {
				mag := magBits(v - base[off+j])
				dst[j] = mag
				h[mag>>16]++
			}
			sc.lo[i], sc.hi[i] = 0, histBins-1
			continue
		}
		dst := st.keys[i][pos.Index*samplesPer : (pos.Index+1)*samplesPer]
		last := (end + sampleEvery - 1) / sampleEvery
		if end == len(base) {
			last = samplesPer
		}
		lo, hi := sc.lo[i], sc.hi[i]
		for s := off / sampleEvery; s < last; s++ {
			j := s*sampleEvery + sampleOffset(pos.Index, s)
			if j >= len(base) {
				dst[s] = pastEnd
				continue
			}
			key := magKey(m[j] - base[j])
			dst[s] = key
			k := int(key)
			h[k]++
			lo, hi = min(lo, k), max(hi, k)
		}
		sc.lo[i], sc.hi[i] = lo, hi
	}
}

// pastEnd marks a sample slot past the tensor's end (only the last chunk has any):
// no |τ|'s bin has the top bit set.
const pastEnd = 1 << 15

// cut is where a model's top k ends in its histogram: the bins above bin are kept
// whole, frac of bin is kept.
type cut struct {
	bin  int
	frac float64
}

// binValue is the smallest |τ| of bin b: the mass estimate counts each element as it.
func binValue(b int) float64 { return float64(math.Float32frombits(uint32(b) << 16)) }

// findCut returns the cut for the top k of histogram h and the fraction of the
// histogram's estimated mass the top k holds (NaN when the estimated mass is 0).
func findCut(h []uint64, k, n int64) (cut, float64) {
	if k <= 0 {
		return cut{bin: histBins}, 0
	}
	if k >= n {
		return cut{bin: 0, frac: 1}, 1
	}
	var total, kept float64
	var cum int64
	c := cut{bin: -1}
	for b := histBins - 1; b >= 0; b-- {
		v := int64(h[b])
		if v == 0 {
			continue
		}
		w := binValue(b)
		w *= w
		total += float64(v) * w
		switch {
		case c.bin >= 0:
		case cum+v >= k:
			need := k - cum
			c = cut{bin: b, frac: float64(need) / float64(v)}
			kept = total - float64(v-need)*w
		default:
			cum += v
		}
	}
	return c, kept / total
}

// finish turns the tensor's partial sums, histograms and bins into its sums, and
// drops its buffers.
func (st *tensorState) finish() {
	s := newSums(st.models, len(st.dens))
	s.tensors, s.elements, s.sampled = 1, st.n, st.sampled
	tot := make([]float64, st.nStats)
	for c := int64(0); c < st.nChunks; c++ {
		addTo(tot, st.partial[c*int64(st.nStats):(c+1)*int64(st.nStats)])
	}
	s.baseSq = tot[0]
	copy(s.sq, tot[1:1+st.models])
	_, pairs := statsLayout(st.models)
	for p := range pairs {
		s.dot[p], s.conflict[p], s.both[p] = tot[1+st.models+3*p], tot[2+st.models+3*p], tot[3+st.models+3*p]
	}
	switch {
	case st.n == 0:
	case st.sampled:
		st.finishSampled(s)
	default:
		st.finishExact(s)
	}
	st.result = s
	st.partial, st.hist, st.mags, st.keys = nil, nil, nil, nil
}

// overlap estimates |top-k(a) ∩ top-k(b)| / k from the elements' bins: an element in
// a cut's bin counts as kept with the fraction of the bin the cut keeps. With every
// element's bin, Σ wa = Σ wb = k and this is Σ wa·wb / k; with a sample it is the
// same ratio over the sample. The elements are counted by where they fall against
// each cut (below, in, above the bin: integers), then weighted.
func overlap(a, b []uint16, ca, cb cut) float64 {
	var n [9]int64
	for j, ma := range a {
		n[ca.class(ma)*3+cb.class(b[j])]++
	}
	wa, wb := [3]float64{0, ca.frac, 1}, [3]float64{0, cb.frac, 1}
	var both, sa, sb float64
	for i := range 3 {
		for k := range 3 {
			c := float64(n[i*3+k])
			both += c * wa[i] * wb[k]
			sa += c * wa[i]
			sb += c * wb[k]
		}
	}
	if sa+sb == 0 {
		return 0
	}
	return both / ((sa + sb) / 2)
}

// class is 0 below the cut's bin, 1 in it, 2 above it, for an element in bin key.
func (c cut) class(key uint16) int {
	return b2i(int(key) >= c.bin) + b2i(int(key) > c.bin)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// finishExact selects each model's top k exactly as TIES does (docs/methods.md#magnitude-ranks:
// by |τ| descending, equal magnitudes by flat index ascending) from every element's
// |τ|, and sums the kept mass and the masks' intersection exactly.
func (st *tensorState) finishExact(s *sums) {
	masks := make([][]bool, st.models)
	lows := make([]uint32, 1<<16)
	for d, dens := range st.dens {
		k := merge.TopK(dens, st.n)
		s.k[d] = float64(k)
		for i := range st.models {
			masks[i], s.kept[i][d] = topMask(masks[i], st.hist[i], st.mags[i], k, lows)
		}
		p := 0
		for a := range st.models {
			for b := a + 1; b < st.models; b++ {
				var both int64
				for j, in := range masks[a] {
					if in && masks[b][j] {
						both++
					}
				}
				s.inter[p][d] = float64(both)
				p++
			}
		}
	}
}

// topMask sets mask[j] for the k largest of mags (ties to the lower index), using
// their top-16-bit histogram h to find the boundary's bin, and returns the mask and
// the kept Σ |τ|², added in index order. lows is scratch of 2¹⁶ zeros, left zero.
func topMask(mask []bool, h []uint64, mags []uint32, k int64, lows []uint32) ([]bool, float64) {
	mask = slices.Grow(mask[:0], len(mags))[:len(mags)]
	var kept float64
	if k <= 0 || k >= int64(len(mags)) {
		for j, m := range mags {
			mask[j] = k > 0
			if k > 0 {
				v := float64(math.Float32frombits(m))
				kept += v * v
			}
		}
		return mask, kept
	}
	var above int64
	bin := histBins - 1
	for ; bin > 0 && above+int64(h[bin]) < k; bin-- {
		above += int64(h[bin])
	}
	// Within the bin, the low 16 bits settle the boundary's pattern t and how many of
	// the elements equal to t rank above (r).
	for _, m := range mags {
		if int(m>>16) == bin {
			lows[m&0xFFFF]++
		}
	}
	need := k - above
	lo := 1<<16 - 1
	for ; lo > 0 && need > int64(lows[lo]); lo-- {
		need -= int64(lows[lo])
	}
	clear(lows)
	t, r := uint32(bin)<<16|uint32(lo), need
	for j, m := range mags {
		in := m > t
		if m == t && r > 0 {
			in = true
			r--
		}
		mask[j] = in
		if in {
			v := float64(math.Float32frombits(m))
			kept += v * v
		}
	}
	return mask, kept
}

// finishSampled estimates the cuts and the kept mass from the sample's histograms
// (each |τ| counted as its bin's smallest value) and the overlap from the sample
// (docs/report.md#top-k).
func (st *tensorState) finishSampled(s *sums) {
	mags := make([][]uint16, st.models)
	for i, ks := range st.keys {
		mags[i] = slices.DeleteFunc(ks, func(k uint16) bool { return k == pastEnd })
	}
	cuts := make([]cut, st.models)
	m := int64(len(mags[0]))
	for d, dens := range st.dens {
		k := merge.TopK(dens, st.n)
		s.k[d] = float64(k)
		// The histogram is the sample's: its cut is at the same fraction of it.
		ks := int64(math.Round(float64(k) * float64(m) / float64(st.n)))
		for i := range st.models {
			var frac float64
			cuts[i], frac = findCut(st.hist[i], ks, m)
			if s.sq[i] != 0 {
				s.kept[i][d] = frac * s.sq[i]
			}
		}
		p := 0
		for a := range st.models {
			for b := a + 1; b < st.models; b++ {
				s.inter[p][d] = overlap(mags[a], mags[b], cuts[a], cuts[b]) * float64(k)
				p++
			}
		}
	}
}
