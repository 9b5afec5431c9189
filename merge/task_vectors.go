package merge

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"
	"unsafe"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/gpu"
)

// The task-vector family (docs/task-vectors.md), as mergekit's generalized task
// arithmetic has it: each model's task vector δ_i = θ_i − θ_base is sparsified (and
// optionally rescaled), weighted, combined under an optional sign consensus,
// optionally normalized, scaled by λ and added to the base. task_arithmetic, ties,
// dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, della and della_linear are presets of it (their
// files register them); every combination of the options runs.

// Sparsification is how each task vector is trimmed before the merge.
type Sparsification int

const (
	SparsifyNone      Sparsification = iota // keep every entry
	SparsifyMagnitude                       // keep the ⌊density·n⌋ largest |δ| (TIES; mergekit's magnitude)
	SparsifyRandom                          // keep each entry with probability density (DARE; mergekit's random)
	SparsifyOutliers                        // drop the ⌊γ·n⌋ largest |δ| and the smallest, keeping ⌊density·n⌋ (breadcrumbs; magnitude_outliers)
	SparsifyDella                           // keep each entry with a probability from density−ε to density+ε by its |δ| rank in its row (DELLA; della_magprune)
)

// Consensus decides which models' entries are added at each element.
type Consensus int

const (
	ConsensusNone Consensus = iota // every kept entry
	ConsensusSign                  // those whose sign is the elected sign of Σ_i w_i·δ_i (TIES; mergekit's "sum")
)

// tvOptions are one run's options, resolved from the preset and the parameters.
type tvOptions struct {
	sparsify  Sparsification
	consensus Consensus
	normalize bool
	rescale   string // "none", "l1" or "inverse"
}

// taskVectorPreset declares one method of the family: its options as mergekit
// defaults them, and its command.
type taskVectorPreset struct {
	name, command, commandSwitch, short, example string
	sparsify                                     Sparsification
	consensus                                    Consensus
	normalize, rescale                           bool    // mergekit's defaults
	density                                      float64 // the command's --density default; 0: no --density
	rescaleFlag                                  bool    // the command has --rescale
}

// taskVectorMethod makes a preset's registry entry.
func taskVectorMethod(p taskVectorPreset) Method {
	density := densityParam(p.density)
	if p.density == 0 { // mergekit takes a density even where nothing is sparsified
		density.Flag, density.Usage, density.Report = "", "", false
	}
	params := []Param{weightParam(), density}
	switch p.sparsify {
	case SparsifyOutliers:
		params = append(params, Param{Name: "gamma", Flag: "gamma", Usage: "fraction of the largest entries dropped",
			Kind: Number, PerModel: true, Uniform: true, Default: 0.01, RecipeDefault: 0.01, check: unitInterval, Report: true,
			field: func(p *Params) any { return &p.Gamma }})
	case SparsifyDella:
		params = append(params, epsilonParam())
	}
	if p.sparsify == SparsifyRandom || p.sparsify == SparsifyDella {
		params = append(params, Param{Name: "seed", Flag: "seed", Usage: "seed of the random drop (same seed, same output)",
			Kind: Seed, Scalar: true, Report: true, field: func(p *Params) any { return &p.Seed }})
	}
	// mergekit's rescale is a switch; gomerge adds the norm (the command line's
	// --rescale), reported under the switch's name as it always has been.
	norm := Param{Name: "rescale_norm", ReportAs: "rescale", Kind: Choice, Choices: []string{"l1", "inverse"},
		DefaultChoice: "l1", NoRecipe: true, field: func(p *Params) any { return &p.Rescale }}
	if p.rescaleFlag {
		norm.Flag, norm.Report = "rescale", true
		norm.Usage = "rescale kept entries by l1 (‖δ‖₁/‖δ̂‖₁) or inverse (1/density)"
	}
	rescale := Param{Name: "rescale", Kind: Bool, Default: float64(b2i(p.rescale)), RecipeDefault: float64(b2i(p.rescale)),
		field: func(p *Params) any { return &p.Rescaling }}
	normalize := Param{Name: "normalize", Kind: Bool, Default: float64(b2i(p.normalize)), RecipeDefault: float64(b2i(p.normalize)),
		field: func(p *Params) any { return &p.Normalize }}
	params = append(params, lambdaParam(), normalize, norm, rescale, int8Param())
	return Method{
		Name: p.name, Command: p.command, CommandSwitch: p.commandSwitch, Short: p.short, Example: p.example,
		Base: BaseRequired, MinModels: 1, Params: params,
		check: func(r *methodRun) error {
			r.tv = tvOptions{sparsify: p.sparsify, consensus: p.consensus, normalize: r.p.Normalize == SwitchOn, rescale: r.p.Rescale}
			if r.p.Rescaling != SwitchOn || p.sparsify == SparsifyNone {
				r.tv.rescale = "none" // nothing is dropped, so nothing is rescaled
			}
			r.lambda = float32(r.p.Lambda)
			if p.sparsify == SparsifyDella {
				if err := checkDellaEpsilon(r); err != nil {
					return err
				}
			}
			if r.tv.normalize && r.tv.consensus == ConsensusNone {
				// Dividing by Σw every element alike is λ/Σw (mergekit: a sum below
				// 1e-8 in magnitude divides by 1).
				var wsum float64
				for _, m := range r.models {
					wsum += m.Weight
				}
				if math.Abs(wsum) >= 1e-8 {
					r.lambda = float32(r.p.Lambda / wsum)
				}
			}
			return nil
		},
		kernel: taskVectorKernel,
	}
}

// taskVectorKernel picks the fast path for the options where there is one.
func taskVectorKernel(m *methodRun, t *TensorPlan) Kernel {
	o := m.tv
	switch {
	case m.p.generalKernel:
	case o.sparsify == SparsifyNone && o.consensus == ConsensusNone:
		return taskArithmeticKernel(m, t)
	case o.sparsify == SparsifyMagnitude && o.consensus == ConsensusSign && o.normalize && o.rescale == "none":
		return tiesKernel(m, t)
	}
	return sparseTaskVectorKernel(m, t)
}

// sparseTaskVectorKernel runs any combination of the options: a keep mask per model
// and chunk (ranks from passes over the tensor, or DARE's draws), the rescale factors
// (a pass of L1 sums over the tensor, or 1/density), then addTaskVectors.
func sparseTaskVectorKernel(m *methodRun, t *TensorPlan) Kernel {
	o := m.tv
	n := t.NumElements()
	lanes := len(m.weights)
	pool := m.maskPool()
	var (
		passes      []Pass
		ranks       [][]int64 // magnitude and outliers: the rank cuts per model
		key         uint64    // random: the tensor's key and each model's threshold
		threshold   []uint64
		cuts        [][]*cut // magnitude and outliers: the rank selector's, per model
		keepChunk   func(sc *maskScratch, in [][]float32, pos Chunk) [][]bool
		drawKeep    func(sc *maskScratch, n int, pos Chunk) [][]bool // random: the masks from the position alone
		wholeInputs bool
	)
	switch o.sparsify {
	case SparsifyMagnitude, SparsifyOutliers:
		ranks = make([][]int64, lanes)
		for i, d := range m.dens {
			if o.sparsify == SparsifyMagnitude {
				ranks[i] = []int64{topK(d, n)}
			} else {
				ranks[i] = outlierRanks(d, m.p.Gamma, n)
			}
		}
		sel := newDeltaSelector(m, n, ranks)
		passes = sel.passes()
		cuts = sel.cuts
		keepChunk = func(sc *maskScratch, in [][]float32, pos Chunk) [][]bool {
			keepMasks(sel, sc, in, pos)
			return sc.keep
		}
	case SparsifyRandom:
		key = dareKey(m.p.Seed, t.Name)
		threshold = make([]uint64, lanes)
		for i, d := range m.dens {
			threshold[i] = densityThreshold(d)
		}
		drawKeep = func(sc *maskScratch, _ int, pos Chunk) [][]bool {
			dareKeep(sc.keep, key, threshold, pos.Offset)
			return sc.keep
		}
		keepChunk = func(sc *maskScratch, _ [][]float32, pos Chunk) [][]bool { return drawKeep(sc, 0, pos) }
	case SparsifyDella:
		ds, err := newDellaSelector(t, m, dareKey(m.p.Seed, t.Name), o.rescale == "inverse")
		if err != nil {
			return Kernel{Err: err}
		}
		keepChunk = ds.keepChunk
		wholeInputs = ds.rows.straddles()
	default:
		keepChunk = func(sc *maskScratch, _ [][]float32, _ Chunk) [][]bool {
			for _, keep := range sc.keep {
				for j := range keep {
					keep[j] = true
				}
			}
			return sc.keep
		}
	}
	var scale []float32 // nil: no rescale
	var kc *keepCache   // the masks the L1 pass kept, if it keeps them
	elem := o.sparsify == SparsifyDella && o.rescale == "inverse"
	switch {
	case elem: // per element (the keep probabilities differ), in the masks' scratch
	case o.rescale == "inverse":
		scale = make([]float32, lanes)
		for i, d := range m.dens {
			scale[i] = inverseScale(d)
		}
	case o.rescale == "l1":
		scale = make([]float32, lanes)
		if o.sparsify == SparsifyDella || o.sparsify == SparsifyRandom {
			// DELLA's masks cost a rank in every row, DARE's two hashes an entry:
			// the L1 pass keeps them, packed, for the merge pass, up to a bound.
			kc = newKeepCache(lanes, m.keepCacheLimit())
			var drawn func(*maskScratch, int, Chunk) [][]bool
			if drawKeep != nil {
				drawn = kc.storingDrawn(drawKeep)
			}
			passes = append(passes, l1Pass(pool, kc.storing(keepChunk), drawn, scale, lanes))
		} else {
			passes = append(passes, l1Pass(pool, keepChunk, nil, scale, lanes))
		}
	}
	cpool := m.combinePool(o.consensus == ConsensusSign)
	k := Kernel{
		Passes: passes,
		// della's rows read their inputs beyond the chunk where they straddle chunks
		WholeInputs: wholeInputs,
		Merge: func(dst []float32, in, _ [][]float32, pos Chunk) {
			sc := pool.get(len(dst))
			defer pool.put(sc)
			cs := cpool.Get().(*combineScratch)
			defer cpool.Put(cs)
			if kc != nil && kc.combine(m, dst, in, sc, scale, cs, pos) { // an L1 rescale: no per-element scales
				return
			}
			keep := keepChunk(sc, in, pos)
			var es [][]float32
			if elem {
				es = sc.elem
			}
			combineTaskVectors(m, dst, in, keep, nil, scale, es, cs, haveTiesAsm)
		},
	}
	if !elem && (o.sparsify == SparsifyOutliers && kc == nil || o.sparsify == SparsifyRandom && kc != nil) {
		// BF16 in and out with AVX-512: breadcrumbs' bands, or the masks DARE's L1
		// pass kept, with sign election or without, from the inputs' words to the
		// output's (bandMerge), the same bits as Merge.
		bm := newBandMerge(m, cuts, kc, scale, cpool)
		k.Fused = func(out []byte, outDT dtype.DType, in []Operand, _ []float64, pos Chunk) bool {
			return bm.fused(out, outDT, in, pos)
		}
	}
	// The device's task-vector kernel has no per-element divisor: sign consensus
	// with normalize runs on the CPU (TIES proper has its own device kernel), as
	// does an L1 rescale of ranked entries (the device's L1 pass is DARE's).
	// DELLA's per-row ranks have no device kernel either.
	if o.consensus == ConsensusSign && o.normalize || o.rescale == "l1" && o.sparsify != SparsifyRandom || o.sparsify == SparsifyDella {
		return k
	}
	k.GPUClass = fmt.Sprintf("%+v", o)
	k.GPU = func(ctx context.Context, dev *gpu.Device, t *TensorPlan, out gpu.Output) ([]float64, error) {
		in := gpuOperands(t.In)
		var cuts [][]gpu.Cut
		if ranks != nil {
			var err error
			if cuts, err = dev.Cuts(ctx, n, in[0], in[1:], ranks); err != nil {
				return nil, err
			}
		}
		tm := make([]gpu.TaskModel, lanes)
		for i := range tm {
			tm[i] = gpu.TaskModel{X: in[i+1], Weight: m.weights[i], Mode: gpu.KeepAll}
			switch o.sparsify {
			case SparsifyMagnitude:
				tm[i].Mode, tm[i].Cuts = gpu.KeepCut, [2]gpu.Cut{cuts[i][0]}
			case SparsifyOutliers:
				tm[i].Mode, tm[i].Cuts = gpu.KeepBand, [2]gpu.Cut{cuts[i][0], cuts[i][1]}
			case SparsifyRandom:
				tm[i].Mode, tm[i].Key, tm[i].Threshold = gpu.KeepDARE, key, threshold[i]
			}
			if scale != nil {
				tm[i].Scale, tm[i].HasScale = inverseScale(m.dens[i]), true
			}
		}
		if o.rescale == "l1" {
			// The same draws and L1 sums per block, added in chunk order as the
			// pass adds them.
			perChunk, err := dev.DAREL1(ctx, n, in[0], tm)
			if err != nil {
				return nil, err
			}
			for i, s := range l1Scales(perChunk, lanes) {
				tm[i].Scale = s
			}
		}
		return nil, dev.TaskVectors(ctx, n, out, in[0], tm, m.lambda, o.consensus == ConsensusSign)
	}
	return k
}

// maxKeepCacheBytes bounds the packed masks a keepCache holds per tensor (one bit per
// element and model): 3 models' masks of 89M elements.
const maxKeepCacheBytes = 32 << 20

// keepCache carries the keep masks of a tensor's chunks from one pass to the next, one
// bit per element and model, while they total at most limit bytes; chunks beyond it
// are computed again. Each entry is dropped when taken, as each chunk is merged once.
type keepCache struct {
	lanes int
	limit int64
	mu    sync.Mutex
	used  int64
	bits  map[int64][]uint64 // chunk index → lanes rows of ⌈n/64⌉ words
}

// keepBufs holds the buffers of whole chunks' packed masks that were taken and
// released (*[]uint64), for store to fill again, across tensors: a buffer made for
// every chunk (24 KiB for three models) was zeroed by the allocator and again by
// packBools, 4 % of dare's CPU (2026-12-05, bench/README.md).
var keepBufs sync.Pool

// keepCacheLimit is maxKeepCacheBytes, or what a test set instead.
func (m *methodRun) keepCacheLimit() int64 {
	if m.p.keepCacheBytes != 0 {
		return m.p.keepCacheBytes
	}
	return maxKeepCacheBytes
}

func newKeepCache(lanes int, limit int64) *keepCache {
	return &keepCache{lanes: lanes, limit: limit, bits: map[int64][]uint64{}}
}

// storing wraps f to keep what it returns.
func (kc *keepCache) storing(f func(*maskScratch, [][]float32, Chunk) [][]bool) func(*maskScratch, [][]float32, Chunk) [][]bool {
	return func(sc *maskScratch, in [][]float32, pos Chunk) [][]bool {
		keep := f(sc, in, pos)
		kc.store(keep, len(in[0]), pos)
		return keep
	}
}

// storingDrawn is storing for masks drawn from a chunk's position and length.
func (kc *keepCache) storingDrawn(f func(*maskScratch, int, Chunk) [][]bool) func(*maskScratch, int, Chunk) [][]bool {
	return func(sc *maskScratch, n int, pos Chunk) [][]bool {
		keep := f(sc, n, pos)
		kc.store(keep, n, pos)
		return keep
	}
}

// store keeps the masks of the chunk of n elements at pos where there is room.
func (kc *keepCache) store(keep [][]bool, n int, pos Chunk) {
	words := (n + 63) / 64
	size := int64(8 * words * kc.lanes)
	kc.mu.Lock()
	room := kc.used+size <= kc.limit
	if room {
		kc.used += size
	}
	kc.mu.Unlock()
	if !room {
		return
	}
	var b []uint64
	if p, ok := keepBufs.Get().(*[]uint64); ok && len(*p) == words*kc.lanes {
		b = *p
	} else {
		b = make([]uint64, words*kc.lanes)
	}
	for i, k := range keep { // packBools sets every word
		packBools(b[i*words:(i+1)*words], k)
	}
	kc.mu.Lock()
	kc.bits[pos.Index] = b
	kc.mu.Unlock()
}

// combine merges the chunk at pos with the masks kc kept for it, if it kept them
// (false otherwise): combineTaskVectors with the masks packed, as its kernels read
// them, and only the elements past their last multiple of 8 unpacked into sc.keep.
func (kc *keepCache) combine(m *methodRun, dst []float32, in [][]float32, sc *maskScratch, scale []float32, cs *combineScratch, pos Chunk) bool {
	bits, ok := kc.takeForKernels(pos, len(dst), sc.keep, cs)
	if !ok {
		return false
	}
	combineTaskVectors(m, dst, in, sc.keep, bits, scale, nil, cs, haveTiesAsm)
	kc.release(bits)
	cs.bits = bits[:0]
	return true
}

// takeForKernels takes the packed masks of the chunk of n elements at pos (into
// cs.bits' room) and unpacks into keep what the packed kernels leave to Go: the
// elements past their last multiple of 8, or all of them without the kernels.
func (kc *keepCache) takeForKernels(pos Chunk, n int, keep [][]bool, cs *combineScratch) ([][]uint64, bool) {
	bits, ok := kc.take(pos.Index, cs.bits[:0])
	if !ok {
		return nil, false
	}
	from := 0
	if haveTiesAsm {
		from = n &^ 7
	}
	for i, k := range keep {
		unpackTail(k[:n], bits[i], from)
	}
	return bits, true
}

// take removes chunk index's packed masks from the cache and returns them, one row
// of words per model (appended to rows), if it holds them; release frees their room
// once used.
func (kc *keepCache) take(index int64, rows [][]uint64) ([][]uint64, bool) {
	kc.mu.Lock()
	b, ok := kc.bits[index]
	delete(kc.bits, index)
	kc.mu.Unlock()
	if !ok {
		return nil, false
	}
	words := len(b) / kc.lanes
	for i := range kc.lanes {
		rows = append(rows, b[i*words:(i+1)*words:(i+1)*words])
	}
	return rows, true
}

// release frees the room of rows (from take) once used, and keeps their buffer
// for store to reuse if it holds a whole chunk's masks (poisoned first under the
// gomerge_poison tag).
func (kc *keepCache) release(rows [][]uint64) {
	if poisonReleased {
		for _, r := range rows {
			poison(r)
		}
	}
	words := len(rows[0])
	kc.mu.Lock()
	kc.used -= int64(8 * words * len(rows))
	kc.mu.Unlock()
	if words == ChunkElems/64 {
		b := unsafe.Slice(&rows[0][0], words*len(rows)) // take cut the rows from one buffer, in order
		keepBufs.Put(&b)
	}
}

// packBools sets bit j%64 of dst[j/64] to src[j]. Eight bools at a time: read as
// one little-endian word of 0/1 bytes, a multiply gathers byte k's bit into bit
// 56+k (the partial products land on distinct bits, so nothing carries), and the
// top byte is the eight bits (TestPackBools compares it with the plain loop). With
// AVX-512 (BW), 64 at a time: a byte test into a mask (tested the same way).
func packBools(dst []uint64, src []bool) {
	clear(dst)
	b := boolBytes(src)
	j := 0
	if haveDellaAVX512 && len(src) >= 64 {
		j = len(src) &^ 63
		packBoolsAsm(dst, src, j)
	}
	for ; j+8 <= len(b); j += 8 {
		v := binary.LittleEndian.Uint64(b[j:]) * 0x0102040810204080 >> 56
		dst[j>>6] |= v << (j & 63)
	}
	for ; j < len(src); j++ {
		dst[j>>6] |= uint64(b2i(src[j])) << (j & 63)
	}
}

// unpackBools is packBools' inverse for len(dst) elements. Eight at a time: the
// byte of bits copied to every byte of a word, byte k masked to bit k, and each
// non-zero byte turned into 1 by adding 0x7f (no byte carries: at most 0x80+0x7f).
func unpackBools(dst []bool, src []uint64) {
	b := boolBytes(dst)
	j := 0
	for ; j+8 <= len(b); j += 8 {
		v := src[j>>6] >> (j & 63) & 0xff
		v = v * 0x0101010101010101 & 0x8040201008040201
		binary.LittleEndian.PutUint64(b[j:], (v+0x7f7f7f7f7f7f7f7f)>>7&0x0101010101010101)
	}
	for ; j < len(dst); j++ {
		dst[j] = maskBit(src, j)
	}
}

// maskBit is bit j of packed masks src (packBools' layout).
func maskBit(src []uint64, j int) bool { return src[j>>6]>>(j&63)&1 != 0 }

// unpackTail is unpackBools for dst[from:] alone.
func unpackTail(dst []bool, src []uint64, from int) {
	if from == 0 {
		unpackBools(dst, src)
		return
	}
	for j := from; j < len(dst); j++ {
		dst[j] = maskBit(src, j)
	}
}

// boolBytes views bools as their bytes, 0 or 1 each (the Go spec's bool), so that
// packBools and unpackBools can move eight at a time.
func boolBytes(b []bool) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(b))), len(b))
}

// l1Pass sums |δ_i| and the kept |δ_i| over the tensor (float64, per chunk, added in
// chunk order) into each model's rescale factor ‖δ_i‖₁/‖δ̂_i‖₁. drawKeep, if set,
// makes the chunk's masks from its position and length alone (DARE's draws), so that
// the pass can take the sums of BF16 inputs from their words (Pass.Fused,
// l1Lanes.addBF16) without decoding them.
func l1Pass(pool *maskPool, keepChunk func(*maskScratch, [][]float32, Chunk) [][]bool, drawKeep func(*maskScratch, int, Chunk) [][]bool,
	scale []float32, lanes int) Pass {
	p := Pass{
		NumStats: 2 * lanes,
		Chunk: func(pos Chunk, in, _ [][]float32, acc []float64) {
			sc := pool.get(len(in[0]))
			defer pool.put(sc)
			keep := keepChunk(sc, in, pos)
			l1Sums(acc, in[0], in[1:], keep)
		},
		Done: func(perChunk []float64) error {
			copy(scale, l1Scales(perChunk, lanes))
			return nil
		},
	}
	if drawKeep != nil {
		p.Fused = func(pos Chunk, in []Operand, acc []float64) bool {
			if !allBF16(in) {
				return false
			}
			n := len(in[0].Data) / 2
			sc := pool.get(n)
			defer pool.put(sc)
			keep := drawKeep(sc, n, pos)
			// Two to four models at once with AVX-512 (their sums' latencies
			// overlap), the rest of the chunk and other counts a model at a time.
			var ls [4]l1Lanes
			var xs [4][]byte
			j := 0
			if models := in[1:]; len(models) <= len(xs) {
				for i, x := range models {
					xs[i] = x.Data
				}
				j = l1LanesWordsAsm(ls[:len(models)], in[0].Data, xs[:len(models)], keep)
			}
			for i, x := range in[1:] {
				var l l1Lanes
				if i < len(ls) {
					l = ls[i]
				}
				l.addBF16(in[0].Data[2*j:], x.Data[2*j:], keep[i][j:], j)
				l.addTo(acc[2*i : 2*i+2])
			}
			return true
		}
	}
	return p
}

// l1Sums adds each model's Σ|δ_i| and Σ kept |δ_i| over a chunk to acc[2i] and
// acc[2i+1]: each sum in eight lanes (l1Lanes), combined at the chunk's end.
func l1Sums(acc []float64, base []float32, models [][]float32, keep [][]bool) {
	for i := range models {
		var l l1Lanes
		l.add(base, models[i], keep[i], 0)
		l.addTo(acc[2*i : 2*i+2])
	}
}

// l1Lanes is one model's L1 sums within a chunk, Σ|δ| in [0] and Σ kept |δ| in [1],
// the chunk's element c added into lane c mod 8 and the lanes combined as
// combineLanes does (docs/numerics.md#reductions). Lanes rather than one sum in
// element order because such a sum waits on each addition's latency: DARE's L1 pass
// cost more than its draws (bench/README.md, "DARE's L1 sums in lanes").
type l1Lanes [2][lanes]float64

// add adds |x_j − b_j| for the elements of a chunk from its element from on (della
// continues a chunk's sums row by row), and the kept ones' too: the head to a lane
// boundary and the tail in Go (l1LanesGo), the rest in AVX2 where there is.
func (l *l1Lanes) add(base, x []float32, keep []bool, from int) {
	n := len(base)
	x, keep = x[:n], keep[:n]
	j := 0
	if haveTiesAsm {
		j = min(-from&(lanes-1), n)
		l1LanesGo(l, base[:j], x[:j], keep[:j], from)
		if m := (n - j) &^ (lanes - 1); m > 0 {
			l1LanesAsm(l, base[j:j+m], x[j:j+m], keep[j:j+m])
			j += m
		}
	}
	l1LanesGo(l, base[j:], x[j:], keep[j:], from+j)
}

// addTo adds the combined lanes to acc[0] (Σ|δ|) and acc[1] (Σ kept |δ|), a NaN
// sum as gramSum reads one: which NaN's payload survives two meeting is the
// compiler's choice of operand order, and the rescale is 1 for any NaN.
func (l *l1Lanes) addTo(acc []float64) {
	acc[0] += gramSum(combineLanes(l[0][:]))
	acc[1] += gramSum(combineLanes(l[1][:]))
}

// addBF16 is add on BF16 words (little-endian, two bytes an element): the same
// float32 differences, so the same bits, without decoding the inputs first.
func (l *l1Lanes) addBF16(base, x []byte, keep []bool, from int) {
	n := len(base) / 2
	x, keep = x[:2*n], keep[:n]
	j := 0
	if haveTiesAsm {
		j = min(-from&(lanes-1), n)
		l1LanesBF16Go(l, base[:2*j], x[:2*j], keep[:j], from)
		if m := (n - j) &^ (lanes - 1); m > 0 {
			l1LanesBF16Asm(l, base[2*j:2*(j+m)], x[2*j:2*(j+m)], keep[j:j+m])
			j += m
		}
	}
	l1LanesBF16Go(l, base[2*j:], x[2*j:], keep[j:], from+j)
}

// l1LanesBF16Go is l1LanesGo on BF16 words, each widened to the float32 it is.
func l1LanesBF16Go(l *l1Lanes, base, x []byte, keep []bool, from int) {
	x = x[:len(base)]
	for j := range len(base) / 2 {
		b := math.Float32frombits(uint32(binary.LittleEndian.Uint16(base[2*j:])) << 16)
		v := math.Float32frombits(uint32(binary.LittleEndian.Uint16(x[2*j:])) << 16)
		d := math.Abs(float64(v - b))
		k := (from + j) & (lanes - 1)
		l[0][k] += d
		l[1][k] += keptMagnitude(d, keep[j])
	}
}

// l1LanesGo is l1Lanes.add's reference, element by element: element j (the chunk's
// from+j) into lane (from+j) mod 8. A dropped entry adds +0, which leaves a sum of
// magnitudes (+0 or more, or NaN) as skipping it would, without a branch on a
// random mask.
func l1LanesGo(l *l1Lanes, base, x []float32, keep []bool, from int) {
	x, keep = x[:len(base)], keep[:len(base)]
	for j, b := range base {
		d := math.Abs(float64(x[j] - b))
		k := (from + j) & (lanes - 1)
		l[0][k] += d
		l[1][k] += keptMagnitude(d, keep[j])
	}
}

// keptMagnitude is a where keep, +0 otherwise, without a branch.
func keptMagnitude(a float64, keep bool) float64 {
	return math.Float64frombits(math.Float64bits(a) & -uint64(b2i(keep)))
}

// addTaskVectors sets dst = base + λ·combine_i(Δ_i) with Δ_i = w_i·(scale_i·δ_i)
// where keep says so (scale nil: 1; elem, if set, is a per-element scale instead) and
// 0 elsewhere; combine is the sum, or with a
// sign consensus the sum of the Δ_i with the elected sign, divided with normalize by
// the sum of their weights (0: by 1). d is scratch of one element per model.
func addTaskVectors(m *methodRun, dst []float32, in [][]float32, keep [][]bool, scale []float32, elem [][]float32, d []float32) {
	base, models := in[0][:len(dst)], in[1:]
	lambda := m.lambda
	sign, normalize := m.tv.consensus == ConsensusSign, m.tv.normalize
	for j := range dst {
		b := base[j]
		var sum float32 // Σ_i Δ_i, in model order: the sign election's
		for i, x := range models {
			d[i] = 0
			if keep[i][j] {
				delta := x[j] - b
				switch {
				case elem != nil:
					delta = float32(elem[i][j] * delta)
				case scale != nil:
					delta = float32(scale[i] * delta)
				}
				d[i] = float32(m.weights[i] * delta)
			}
			sum += d[i]
		}
		if sign {
			s := electedSign(sum)
			var num, den float32
			for i, di := range d {
				mask := agreeMask(di, s)
				num += math.Float32frombits(math.Float32bits(di) & mask)
				den += math.Float32frombits(math.Float32bits(m.weights[i]) & mask)
			}
			sum = num
			if normalize {
				if den == 0 {
					den = 1
				}
				sum = num / den
			}
		}
		dst[j] = b + float32(lambda*sum)
	}
}

// combineScratch is combineTaskVectors' per-chunk scratch: with a sign consensus,
// each model's weighted deltas, the weights' sums and the elected signs.
type combineScratch struct {
	d    [][]float32
	den  []float32
	sign []uint32
	tail []float32 // addTaskVectors' one element per model
	in   [][]float32
	bits [][]uint64 // della's merge: the rows of a chunk's packed masks
}

func newCombinePool(lanes int, sign bool) *sync.Pool {
	return &sync.Pool{New: func() any {
		s := &combineScratch{tail: make([]float32, lanes), in: make([][]float32, lanes+1)}
		if sign {
			s.den, s.sign = make([]float32, ChunkElems), make([]uint32, ChunkElems)
			for range lanes {
				s.d = append(s.d, make([]float32, ChunkElems))
			}
		}
		return s
	}}
}

// combineTaskVectors is addTaskVectors, with (asm) the AVX2 kernels doing the first
// multiple of 8 elements column by column: each model's Δ_i added into the sum in
// model order, then the sign election, the agreeing sums and the division as TIES's
// kernels do them. The same operations in the same order per element, so the same
// bits (TestCombineTaskVectorsAsmMatchesGo); addTaskVectors does the rest. bits, when
// not nil, are the masks packed as keepCache holds them, which the kernels read
// directly: then keep need only hold the elements past the last multiple of 8.
func combineTaskVectors(m *methodRun, dst []float32, in [][]float32, keep [][]bool, bits [][]uint64, scale []float32, elem [][]float32, sc *combineScratch, asm bool) {
	n := len(dst)
	j0 := 0
	if asm && n >= 8 {
		j0 = n &^ 7
		base := in[0]
		sign := m.tv.consensus == ConsensusSign
		clear(dst[:j0])
		for i, x := range in[1:] {
			s := float32(1) // s·δ = δ, bit for bit
			if scale != nil {
				s = scale[i]
			}
			var d, e []float32
			if sign {
				d = sc.d[i]
			}
			if elem != nil {
				e = elem[i]
			}
			if bits != nil {
				tvDeltaBitsAsm(dst, d, x, base, bits[i], e, s, m.weights[i], j0)
			} else {
				tvDeltaAsm(dst, d, x, base, keep[i], e, s, m.weights[i], j0)
			}
		}
		switch {
		case !sign:
			tvFinishAsm(dst, base, m.lambda, j0)
		default:
			tiesSignAsm(sc.sign, dst, j0)
			clear(dst[:j0])
			clear(sc.den[:j0])
			for i, w := range m.weights {
				tiesAccumAsm(dst, sc.den, sc.d[i], sc.sign, w, j0)
			}
			if m.tv.normalize {
				tiesFinishAsm(dst, base, sc.den, m.lambda, j0)
			} else {
				tvFinishAsm(dst, base, m.lambda, j0)
			}
		}
	}
	if j0 == n {
		return
	}
	tin := sc.in
	for k, x := range in {
		tin[k] = x[j0:n]
	}
	tkeep := make([][]bool, len(keep))
	for i, k := range keep {
		tkeep[i] = k[j0:n]
	}
	var telem [][]float32
	if elem != nil {
		telem = make([][]float32, len(elem))
		for i, e := range elem {
			telem[i] = e[j0:n]
		}
	}
	addTaskVectors(m, dst[j0:], tin, tkeep, scale, telem, sc.tail)
}

// electedSign is the TIES sign election of one element from the float32 sum of its
// weighted deltas in model order, as a sign bit: 1<<31 when the sum is negative, 0
// for positive sums, ±0 and NaN (mergekit: sum ≥ 0 elects +). Branch-free: the sign
// of a sum is as good as random. The AVX2 kernel (tiesSignAsm) is tested against it.
func electedSign(sum float32) uint32 {
	b := math.Float32bits(sum)
	mag := b &^ (1 << 31)
	nonzero := (mag | -mag) >> 31
	notNaN := ((0x7f800000 - mag) >> 31) ^ 1
	return (b >> 31 & nonzero & notNaN) << 31
}

// agreeMask is all ones when a weighted delta takes part in the consensus: non-zero
// and of the elected sign s (a NaN by its sign bit), and 0 otherwise. Adding a masked
// term gives +0, which leaves a sum as skipping it would. The AVX2 kernel
// (tiesAccumAsm) is tested against it.
func agreeMask(d float32, s uint32) uint32 {
	b := math.Float32bits(d)
	nonzero := (b<<1 | -(b << 1)) >> 31
	agree := ((b ^ s) >> 31) ^ 1
	return -(nonzero & agree)
}

// taskVectorsRef is the plain statement of the family for one tensor, per element
// in float64: the documentation of the math and the tests' oracle for every fast
// path. keepRandom says whether SparsifyRandom keeps element j of model i (the
// draw is part of DARE's definition; the tests check it independently). It returns
// the merged values and, per element, the magnitude of the terms (for tolerances).
//
// The two places where float64 would answer a different question are kept in
// float32, as the method defines them: the ranking is of |x − b| rounded to float32
// (equal magnitudes: lower index first), and the sign election of the float32 sum
// of the float32 terms in model order.
func taskVectorsRef(o tvOptions, base []float32, models [][]float32, w, dens []float64, gamma, lambda float64,
	keepRandom func(i, j int) bool) (ref, scale []float64) {
	n := len(base)
	keep := make([][]bool, len(models))
	resc := make([]float64, len(models))
	for i, x := range models {
		mag := make([]float32, n)
		for j := range mag {
			mag[j] = float32(math.Abs(float64(x[j] - base[j])))
		}
		keep[i] = make([]bool, n)
		switch o.sparsify {
		case SparsifyNone:
			refKeepRanks(keep[i], mag, 0, int64(n))
		case SparsifyMagnitude:
			refKeepRanks(keep[i], mag, 0, topK(dens[i], int64(n)))
		case SparsifyOutliers:
			r := outlierRanks(dens[i], gamma, int64(n))
			refKeepRanks(keep[i], mag, r[0], r[1])
		case SparsifyRandom:
			for j := range keep[i] {
				keep[i][j] = keepRandom(i, j)
			}
		}
		resc[i] = 1
		switch {
		case o.sparsify == SparsifyNone:
		case o.rescale == "inverse" && dens[i] > 0:
			resc[i] = 1 / dens[i]
		case o.rescale == "inverse":
			resc[i] = 0
		case o.rescale == "l1":
			var all, kept float64
			for j := range mag {
				all += float64(mag[j])
				if keep[i][j] {
					kept += float64(mag[j])
				}
			}
			if all >= 1e-7 && kept >= 1e-7 {
				resc[i] = all / kept
			}
		}
	}
	return tvCombineRef(o, base, models, w, lambda, keep, func(i, _ int) float64 { return resc[i] })
}

// tvCombineRef is the family's combine step in float64, given which entries each
// model keeps and each kept entry's rescale factor: weight, elect signs (from the
// float32 sum of the float32 terms in model order, as the method defines it),
// normalize, scale by λ, add to the base. It returns the merged values and, per
// element, the magnitude of the terms (for tolerances).
func tvCombineRef(o tvOptions, base []float32, models [][]float32, w []float64, lambda float64,
	keep [][]bool, factor func(i, j int) float64) (ref, scale []float64) {
	n := len(base)
	var wsum float64
	for _, wi := range w {
		wsum += wi
	}
	ref, scale = make([]float64, n), make([]float64, n)
	d := make([]float64, len(models))
	for j := range base {
		var sum32 float32
		for i, x := range models {
			d[i] = 0
			if keep[i][j] {
				delta := x[j] - base[j]
				f := factor(i, j)
				d[i] = w[i] * f * float64(delta)
				sum32 += float32(float32(w[i]) * float32(float32(f)*delta))
			}
			scale[j] += math.Abs(lambda * d[i])
		}
		var num, den float64
		for i, di := range d {
			if o.consensus == ConsensusNone || di != 0 && (di < 0) == (sum32 < 0) {
				num += di
				den += w[i]
			}
		}
		switch {
		case !o.normalize:
			den = 1
		case o.consensus == ConsensusNone && math.Abs(wsum) < 1e-8, den == 0:
			den = 1
		case o.consensus == ConsensusNone:
			den = wsum
		}
		ref[j] = float64(base[j]) + lambda*num/den
		scale[j] = scale[j]/math.Abs(den) + math.Abs(float64(base[j]))
	}
	return ref, scale
}

// refKeepRanks marks the entries ranked [lo, hi) by magnitude, descending, equal
// magnitudes by index: a sort, independent of the histogram selection.
func refKeepRanks(keep []bool, mag []float32, lo, hi int64) {
	idx := make([]int, len(mag))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Or(cmp.Compare(mag[b], mag[a]), cmp.Compare(a, b)) })
	for r := max(lo, 0); r < min(hi, int64(len(mag))); r++ {
		keep[idx[r]] = true
	}
}
