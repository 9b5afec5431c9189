package gpu

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// The operations below each do one method's work on one tensor of n elements, as
// package merge's kernels do it on the CPU, with the same bits. Their reductions
// return one entry per 65,536-element block (BlockElems), laid out as merge's engine
// keeps its per-chunk partial sums (block-major, the kernel's statistics in order),
// so that the engine adds them in block order as it adds its own.

// lock takes the device for one operation.
func (d *Device) lock() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	if d.broken != nil {
		d.mu.Unlock()
		return fmt.Errorf("gpu: device unusable after an earlier failure: %w", d.broken)
	}
	return nil
}

func codes(ops ...Operand) []uint32 {
	c := make([]uint32, len(ops))
	for i, o := range ops {
		c[i], _ = dtCode(o.DType) // checked by Device.check
	}
	return c
}

// combineLanes is merge.combineLanes: the fixed tree in which SFA's eight lane sums
// are added.
func combineLanes(s []float64) float64 {
	return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
}

// oneNaN is v, or math.NaN() for any NaN, as merge.l1Lanes.addTo reads its sums:
// which payload survives two NaNs meeting is not fixed across devices.
func oneNaN(v float64) float64 {
	if math.IsNaN(v) {
		return math.NaN()
	}
	return v
}

// Lerp is SFA's merge (merge.Lerp, and merge's fused BF16 path): out =
// float32(b·anchor) + float32(c·current) per element, rounded to out's dtype. It
// returns SFA's statistics per block: [2i] is Σ (current − anchor)² and [2i+1] is
// Σ (out − anchor)² over block i, out as rounded (merge's sfaSqBefore, sfaSqAfter).
func (d *Device) Lerp(ctx context.Context, n int64, out Output, anchor, current Operand, b, c float32) ([]float64, error) {
	return d.lerp(ctx, n, out, []Operand{anchor, current}, func(ch *chunk, dt []uint32, odt uint32) op {
		return d.launch(kLerp, int64(ch.n), ch.out, odt, ch.in[0], dt[0], ch.in[1], dt[1], b, c, uint64(ch.n))
	})
}

// LerpFisher is SFA with the anchor's Fisher (merge.LerpPerElement): β_j =
// min(1, η·F_j) in float64. Its statistics are Lerp's.
func (d *Device) LerpFisher(ctx context.Context, n int64, out Output, anchor, current, fisher Operand, eta float64) ([]float64, error) {
	return d.lerp(ctx, n, out, []Operand{anchor, current, fisher}, func(ch *chunk, dt []uint32, odt uint32) op {
		return d.launch(kLerpFisher, int64(ch.n), ch.out, odt, ch.in[0], dt[0], ch.in[1], dt[1], ch.in[2], dt[2], eta, uint64(ch.n))
	})
}

func (d *Device) lerp(ctx context.Context, n int64, out Output, in []Operand, merge func(ch *chunk, dt []uint32, odt uint32) op) ([]float64, error) {
	if err := d.lock(); err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	if err := d.check(n, &out, in...); err != nil {
		return nil, err
	}
	dt := codes(in...)
	odt, _ := dtCode(out.DType)
	stats := make([]float64, 2*numBlocks(n))
	laneBytes := func(cn int) int { return int(numBlocks(int64(cn))) * 8 * 8 }
	err := d.stream(ctx, &pass{
		n: n, in: in, out: &out,
		resBytes: func(cn int) int { return 2 * laneBytes(cn) },
		kernels: func(ch *chunk) []op {
			lanes := 8 * numBlocks(int64(ch.n))
			return []op{
				merge(ch, dt, odt),
				d.launch(kSqDiffLanes, lanes, ch.res, ch.in[1], dt[1], ch.in[0], dt[0], uint64(ch.n)),
				d.launch(kSqDiffLanes, lanes, ch.res+devPtr(laneBytes(ch.n)), ch.out, odt, ch.in[0], dt[0], uint64(ch.n)),
			}
		},
		collect: func(ch *chunk, res []byte) error {
			nb := int(numBlocks(int64(ch.n)))
			first := ch.off / BlockElems
			var s [8]float64
			for blk := range nb {
				for which := range 2 {
					for l := range 8 {
						s[l] = float64At(res, (which*nb+blk)*8+l)
					}
					stats[2*(first+int64(blk))+int64(which)] = combineLanes(s[:])
				}
			}
			return nil
		},
	})
	return stats, err
}

// Distance returns, per block, merge's distance statistics: Σ (a−b)², Σ a², Σ b²
// and, when base is non-nil, Σ (a−base)(b−base), Σ (a−base)², Σ (b−base)² (zero
// without a base); six entries per block.
func (d *Device) Distance(ctx context.Context, n int64, a, b Operand, base *Operand) ([]float64, error) {
	if err := d.lock(); err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	in := []Operand{a, b}
	withBase := uint32(0)
	if base != nil {
		in, withBase = append(in, *base), 1
	}
	if err := d.check(n, nil, in...); err != nil {
		return nil, err
	}
	dt := codes(in...)
	stats := make([]float64, 6*numBlocks(n))
	err := d.stream(ctx, &pass{
		n: n, in: in,
		resBytes: func(cn int) int { return 6 * 8 * int(numBlocks(int64(cn))) },
		kernels: func(ch *chunk) []op {
			bp, bdt := ch.in[0], dt[0] // unused without a base, but a valid pointer
			if base != nil {
				bp, bdt = ch.in[2], dt[2]
			}
			return []op{d.launch(kDistance, numBlocks(int64(ch.n)), ch.res, ch.in[0], dt[0], ch.in[1], dt[1], bp, bdt, withBase, uint64(ch.n))}
		},
		collect: func(ch *chunk, res []byte) error {
			first := 6 * ch.off / BlockElems
			for i := range 6 * int(numBlocks(int64(ch.n))) {
				stats[first+int64(i)] = float64At(res, i)
			}
			return nil
		},
	})
	return stats, err
}

// Cuts finds, for each model i and each rank r in ranks[i], the cut with exactly r
// elements of |models[i] − base| above it (merge's rankSelector: equal magnitudes
// rank by flat index, lower first). A rank ≥ n gives CutAll, ≤ 0 CutNone. Like the
// CPU, it reads the inputs in up to three passes: a histogram of the magnitudes' top
// 16 bits, one of the low 16 bits inside the boundary's bin, and, where the boundary
// value is tied, per-block counts of it, which locate the tie's end.
func (d *Device) Cuts(ctx context.Context, n int64, base Operand, models []Operand, ranks [][]int64) ([][]Cut, error) {
	if err := d.lock(); err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	if len(ranks) != len(models) {
		return nil, fmt.Errorf("gpu: %d rank lists for %d models", len(ranks), len(models))
	}
	if err := d.check(n, nil, append([]Operand{base}, models...)...); err != nil {
		return nil, err
	}
	type want struct {
		lane, ci int
		rank     int64
		bin      uint32
		above    int64 // elements in bins above bin
		t        uint32
		r        int64 // elements equal to t that rank above the cut
		block    int64 // the block holding the r-th element equal to t
		before   int64 // elements equal to t in blocks before it
	}
	cuts := make([][]Cut, len(models))
	var work []*want
	laneSet := map[int]bool{}
	var lanes []int
	for i, rs := range ranks {
		cuts[i] = make([]Cut, len(rs))
		for ci, r := range rs {
			switch {
			case r >= n:
				cuts[i][ci] = CutAll
			case r <= 0:
				cuts[i][ci] = CutNone
			default:
				work = append(work, &want{lane: i, ci: ci, rank: r})
				if !laneSet[i] {
					laneSet[i] = true
					lanes = append(lanes, i)
				}
			}
		}
	}
	if len(work) == 0 {
		return cuts, nil
	}
	// The inputs of the passes: the base, then the models that need a cut.
	in := []Operand{base}
	slotOf := map[int]int{}
	for _, l := range lanes {
		slotOf[l] = len(in)
		in = append(in, models[l])
	}
	dt := codes(in...)

	// Pass 1: top 16 bits (|δ| has no sign bit, so 1<<15 bins).
	const hiBins, loBins = 1 << 15, 1 << 16
	hi := make([][]uint64, len(lanes))
	for i := range hi {
		hi[i] = make([]uint64, hiBins)
	}
	err := d.stream(ctx, &pass{
		n: n, in: in,
		resBytes: func(int) int { return len(lanes) * hiBins * 4 },
		kernels: func(ch *chunk) []op {
			var ops []op
			for li, l := range lanes {
				h := ch.res + devPtr(li*hiBins*4)
				s := slotOf[l]
				ops = append(ops, op{kind: opZero, dev: h, words: hiBins},
					d.launch(kHistHi, int64(ch.n), h, ch.in[s], dt[s], ch.in[0], dt[0], uint64(ch.n)))
			}
			return ops
		},
		collect: func(_ *chunk, res []byte) error {
			for li := range lanes {
				for b := range hiBins {
					hi[li][b] += uint64(uint32At(res, li*hiBins+b))
				}
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	for _, w := range work {
		h := hi[indexOf(lanes, w.lane)]
		var cum int64
		for b := hiBins - 1; b >= 0; b-- {
			v := int64(h[b])
			if cum+v >= w.rank {
				w.bin, w.above = uint32(b), cum
				break
			}
			cum += v
		}
	}

	// Pass 2: low 16 bits inside each cut's bin.
	lo := make([][]uint64, len(work))
	for i := range lo {
		lo[i] = make([]uint64, loBins)
	}
	err = d.stream(ctx, &pass{
		n: n, in: in,
		resBytes: func(int) int { return len(work) * loBins * 4 },
		kernels: func(ch *chunk) []op {
			var ops []op
			for wi, w := range work {
				h := ch.res + devPtr(wi*loBins*4)
				s := slotOf[w.lane]
				ops = append(ops, op{kind: opZero, dev: h, words: loBins},
					d.launch(kHistLo, int64(ch.n), h, ch.in[s], dt[s], ch.in[0], dt[0], w.bin, uint64(ch.n)))
			}
			return ops
		},
		collect: func(_ *chunk, res []byte) error {
			for wi := range work {
				for b := range loBins {
					lo[wi][b] += uint64(uint32At(res, wi*loBins+b))
				}
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	var tied []*want
	for wi, w := range work {
		need := w.rank - w.above
		var cum int64
		for b := loBins - 1; b >= 0; b-- {
			v := int64(lo[wi][b])
			if cum+v >= need {
				w.t, w.r = w.bin<<16|uint32(b), need-cum
				if w.r < v {
					tied = append(tied, w)
				}
				break
			}
			cum += v
		}
		cuts[w.lane][w.ci] = Cut{T: w.t, TieEnd: 1<<63 - 1} // every element equal to t ranks above
	}
	if len(tied) == 0 {
		return cuts, nil
	}

	// Pass 3: per-block counts of each tied boundary value, to find the block holding
	// the r-th equal element.
	blocks := numBlocks(n)
	counts := make([][]int64, len(tied))
	for i := range counts {
		counts[i] = make([]int64, blocks)
	}
	perChunk := func(cn int) int { return int(numBlocks(int64(cn))) }
	err = d.stream(ctx, &pass{
		n: n, in: in,
		resBytes: func(cn int) int { return len(tied) * perChunk(cn) * 4 },
		kernels: func(ch *chunk) []op {
			var ops []op
			nb := perChunk(ch.n)
			for ti, w := range tied {
				h := ch.res + devPtr(ti*nb*4)
				s := slotOf[w.lane]
				ops = append(ops, op{kind: opZero, dev: h, words: nb},
					d.launch(kCountEq, int64(ch.n), h, ch.in[s], dt[s], ch.in[0], dt[0], w.t, uint64(ch.n)))
			}
			return ops
		},
		collect: func(ch *chunk, res []byte) error {
			nb := perChunk(ch.n)
			first := ch.off / BlockElems
			for ti := range tied {
				for b := range nb {
					counts[ti][first+int64(b)] = int64(uint32At(res, ti*nb+b))
				}
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	for ti, w := range tied {
		var cum int64
		for b, k := range counts[ti] {
			if cum+k >= w.r {
				w.block, w.before = int64(b), cum
				break
			}
			cum += k
		}
		// The magnitudes of that one block, as the device computes them, and the
		// position of the (r − before)-th equal to t among them.
		end, err := d.tieEnd(ctx, n, base, models[w.lane], w.block, w.t, w.r-w.before)
		if err != nil {
			return nil, err
		}
		cuts[w.lane][w.ci].TieEnd = end
	}
	return cuts, nil
}

func indexOf(s []int, v int) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// tieEnd returns one past the flat index of the k-th element (from 1) of block blk
// whose magnitude bits equal t.
func (d *Device) tieEnd(ctx context.Context, n int64, base, x Operand, blk int64, t uint32, k int64) (int64, error) {
	start := blk * BlockElems
	bn := min(BlockElems, n-start)
	slice := func(o Operand) Operand {
		sz := int64(o.DType.Size())
		return Operand{Data: o.Data[start*sz : (start+bn)*sz], DType: o.DType}
	}
	in := []Operand{slice(base), slice(x)}
	dt := codes(in...)
	end := int64(-1)
	err := d.stream(ctx, &pass{
		n: bn, in: in,
		resBytes: func(cn int) int { return 4 * cn },
		descs: func(ch *chunk) []modelDesc {
			return []modelDesc{{x: uint64(ch.in[1]), dt: dt[1], keep: uint32(KeepAll)}}
		},
		kernels: func(ch *chunk) []op {
			return []op{d.launch(kDareAbs, int64(ch.n), ch.res, ch.in[0], dt[0], ch.desc, uint64(0), uint64(ch.n))}
		},
		collect: func(ch *chunk, res []byte) error {
			var seen int64
			for j := range ch.n {
				if uint32At(res, j) == t {
					seen++
					if seen == k {
						end = start + ch.off + int64(j) + 1
						return nil
					}
				}
			}
			return nil
		},
	})
	if err != nil {
		return 0, err
	}
	if end < 0 {
		return 0, errors.New("gpu: the tied magnitude was not found where the counts put it (inputs changed?)")
	}
	return end, nil
}

// TIES is merge's TIES merge of one tensor: each model's delta trimmed by its cut
// (from Cuts, with ranks floor(density·n)), weighted, the sign elected per element,
// the agreeing deltas averaged, scaled by λ and added to the base.
func (d *Device) TIES(ctx context.Context, n int64, out Output, base Operand, models []Operand, weights []float32, cuts []Cut, lambda float32) error {
	if len(weights) != len(models) || len(cuts) != len(models) || len(models) == 0 {
		return fmt.Errorf("gpu: TIES of %d models with %d weights and %d cuts", len(models), len(weights), len(cuts))
	}
	tm := make([]TaskModel, len(models))
	for i := range models {
		tm[i] = TaskModel{X: models[i], Weight: weights[i], Mode: KeepCut, Cuts: [2]Cut{cuts[i]}}
	}
	return d.taskMerge(ctx, n, out, base, tm, func(ch *chunk, bdt, odt uint32) op {
		return d.launch(kTies, int64(ch.n), ch.out, odt, ch.in[0], bdt, ch.desc, uint32(len(tm)), lambda, uint64(ch.off), uint64(ch.n))
	})
}

// TaskVectors is merge's addTaskVectors: base + λ·Σ_i Δ_i with Δ_i the kept,
// rescaled, weighted delta of model i; with tiesSign only the Δ_i that agree with the
// elected sign are added (dare_ties, breadcrumbs_ties). It does task arithmetic
// (KeepAll, no scale), DARE (KeepDARE) and breadcrumbs (KeepBand).
func (d *Device) TaskVectors(ctx context.Context, n int64, out Output, base Operand, models []TaskModel, lambda float32, tiesSign bool) error {
	ts := uint32(0)
	if tiesSign {
		ts = 1
	}
	return d.taskMerge(ctx, n, out, base, models, func(ch *chunk, bdt, odt uint32) op {
		return d.launch(kTaskVectors, int64(ch.n), ch.out, odt, ch.in[0], bdt, ch.desc, uint32(len(models)), lambda, ts, uint64(ch.off), uint64(ch.n))
	})
}

func descsOf(models []TaskModel, ch *chunk, first int) []modelDesc {
	ds := make([]modelDesc, len(models))
	for i, m := range models {
		dt, _ := dtCode(m.X.DType)
		ds[i] = modelDesc{x: uint64(ch.in[first+i]), dt: dt,
			t0: m.Cuts[0].T, tieEnd0: m.Cuts[0].TieEnd, t1: m.Cuts[1].T, tieEnd1: m.Cuts[1].TieEnd,
			key: m.Key, threshold: m.Threshold, keep: uint32(m.Mode), lane: uint32(i),
			w: m.Weight, scale: m.Scale}
		if m.HasScale {
			ds[i].hasScale = 1
		}
	}
	return ds
}

func (d *Device) taskMerge(ctx context.Context, n int64, out Output, base Operand, models []TaskModel, merge func(ch *chunk, bdt, odt uint32) op) error {
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if len(models) == 0 {
		return errors.New("gpu: a merge needs at least one model")
	}
	in := []Operand{base}
	for _, m := range models {
		if m.Mode > KeepDARE {
			return fmt.Errorf("gpu: unknown keep mode %d", m.Mode)
		}
		in = append(in, m.X)
	}
	if err := d.check(n, &out, in...); err != nil {
		return err
	}
	bdt, _ := dtCode(base.DType)
	odt, _ := dtCode(out.DType)
	return d.stream(ctx, &pass{
		n: n, in: in, out: &out,
		descs:   func(ch *chunk) []modelDesc { return descsOf(models, ch, 1) },
		kernels: func(ch *chunk) []op { return []op{merge(ch, bdt, odt)} },
	})
}

// DAREL1 is the L1 pass of merge's task-vector kernel with DARE's random drop: per block, for each
// model i, Σ |δ_i| at [2i] and Σ |δ_i| over the kept elements at [2i+1], in float64,
// each in merge.l1Lanes's eight lanes, combined (2·len(models) entries per block). The models' Mode must be KeepDARE.
func (d *Device) DAREL1(ctx context.Context, n int64, base Operand, models []TaskModel) ([]float64, error) {
	if err := d.lock(); err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	m := len(models)
	in := []Operand{base}
	for _, mo := range models {
		in = append(in, mo.X)
	}
	if err := d.check(n, nil, in...); err != nil {
		return nil, err
	}
	bdt, _ := dtCode(base.DType)
	stats := make([]float64, 2*m*int(numBlocks(n)))
	per := func(cn int) int { return int(numBlocks(int64(cn))) * 8 * 2 * 8 } // bytes per model: 8 lanes of 2 sums a block
	err := d.stream(ctx, &pass{
		n: n, in: in,
		resBytes:     func(cn int) int { return m * per(cn) },
		scratchBytes: func(cn int) int { return 4 * cn },
		descs:        func(ch *chunk) []modelDesc { return descsOf(models, ch, 1) },
		kernels: func(ch *chunk) []op {
			var ops []op
			for i := range m {
				ops = append(ops,
					d.launch(kDareAbs, int64(ch.n), ch.scratch, ch.in[0], bdt, ch.desc+devPtr(i*modelDescSize), uint64(ch.off), uint64(ch.n)),
					d.launch(kL1Sums, 8*numBlocks(int64(ch.n)), ch.res+devPtr(i*per(ch.n)), ch.scratch, uint64(ch.n)))
			}
			return ops
		},
		collect: func(ch *chunk, res []byte) error {
			nb := int(numBlocks(int64(ch.n)))
			first := int(ch.off / BlockElems)
			var s [2][8]float64
			for i := range m {
				for b := range nb {
					for l := range 8 {
						at := (i*nb+b)*16 + 2*l
						s[0][l], s[1][l] = float64At(res, at), float64At(res, at+1)
					}
					stats[(first+b)*2*m+2*i] = oneNaN(combineLanes(s[0][:]))
					stats[(first+b)*2*m+2*i+1] = oneNaN(combineLanes(s[1][:]))
				}
			}
			return nil
		},
	})
	return stats, err
}

// Linear is merge's linearKernel: Σ float32(w_i·x_i), in model order, divided by den
// (merge rounds Σ w_i, taken in float64, to float32 once).
func (d *Device) Linear(ctx context.Context, n int64, out Output, models []Operand, weights []float32, den float32) error {
	if len(weights) != len(models) {
		return fmt.Errorf("gpu: %d models with %d weights", len(models), len(weights))
	}
	return d.weighted(ctx, n, out, models, nil, weights, func(ch *chunk, odt uint32) op {
		return d.launch(kLinear, int64(ch.n), ch.out, odt, ch.desc, uint32(len(models)), den, uint64(ch.n))
	})
}

// Fisher is merge's fisherKernel: Σ f_i·x_i / Σ f_i with f_i = float32(w_i·max(F_i, ε)).
func (d *Device) Fisher(ctx context.Context, n int64, out Output, models, fishers []Operand, weights []float32, eps float32) error {
	if len(weights) != len(models) || len(fishers) != len(models) {
		return fmt.Errorf("gpu: %d models with %d Fishers and %d weights", len(models), len(fishers), len(weights))
	}
	return d.weighted(ctx, n, out, models, fishers, weights, func(ch *chunk, odt uint32) op {
		return d.launch(kFisher, int64(ch.n), ch.out, odt, ch.desc, uint32(len(models)), eps, uint64(ch.n))
	})
}

func (d *Device) weighted(ctx context.Context, n int64, out Output, models, aux []Operand, weights []float32, merge func(ch *chunk, odt uint32) op) error {
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if len(models) == 0 {
		return errors.New("gpu: a merge needs at least one model")
	}
	in := append(append([]Operand{}, models...), aux...)
	if err := d.check(n, &out, in...); err != nil {
		return err
	}
	dt := codes(in...)
	odt, _ := dtCode(out.DType)
	m := len(models)
	return d.stream(ctx, &pass{
		n: n, in: in, out: &out,
		descs: func(ch *chunk) []modelDesc {
			ds := make([]modelDesc, m)
			for i := range ds {
				ds[i] = modelDesc{x: uint64(ch.in[i]), dt: dt[i], w: weights[i]}
				if aux != nil {
					ds[i].aux, ds[i].auxDT = uint64(ch.in[m+i]), dt[m+i]
				}
			}
			return ds
		},
		kernels: func(ch *chunk) []op { return []op{merge(ch, odt)} },
	})
}
