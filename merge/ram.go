package merge

import (
	"math"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

func init() {
	eps := Param{Name: "epsilon", Flag: "epsilon", Usage: "a task-vector entry counts when its magnitude exceeds this", Kind: Number,
		Default: 1e-5, RecipeDefault: 1e-5, Report: true, check: notNegative, field: func(p *Params) any { return &p.Epsilon }}
	register(Method{
		Name: "ram", Command: "ram",
		Short:   "Reinforced Agent Merging: add each task-vector entry a single model changes, average those several change",
		Example: `  gomerge ram --base base.safetensors agent1.safetensors agent2.safetensors --out ram.safetensors`,
		Base:    BaseRequired, MinModels: 1,
		Params: []Param{eps},
		kernel: func(m *methodRun, t *TensorPlan) Kernel { return ramKernel(m, false) },
	})
	register(Method{
		Name: "ramplus_tl", Command: "ramplus-tl",
		Short:   "RAM+ (tensor-local): RAM with each model's unique entries scaled up by its share of overlapping ones",
		Example: `  gomerge ramplus-tl --base base.safetensors agent1.safetensors agent2.safetensors --r 0.1 --alpha 0.2 --out ramplus.safetensors`,
		Base:    BaseRequired, MinModels: 1,
		Params: []Param{eps,
			{Name: "r", Flag: "r", Usage: "scale of the overlap ratio in each model's boost 1 + r·min(ρ, alpha)", Kind: Number,
				Default: 0.1, RecipeDefault: 0.1, Report: true, field: func(p *Params) any { return &p.Geo.R }},
			{Name: "alpha", Flag: "alpha", Usage: "cap of the overlap ratio ρ", Kind: Number,
				Default: 0.2, RecipeDefault: 0.2, Report: true, field: func(p *Params) any { return &p.Geo.Alpha }},
		},
		kernel: func(m *methodRun, t *TensorPlan) Kernel { return ramKernel(m, true) },
	})
}

// ramKernel (docs/methods.md, ram): with δ_i = θ_i − θ_base and an entry of δ_i
// counting when |δ_i| > epsilon, each element adds to the base its counting entries:
// whole where one model counts, divided by the count where several do. ramplus_tl
// first counts, per model over the whole tensor, its counting entries that are shared
// (S_i) and unique (U_i), and scales its unique entries by
// λ_i = 1 + r·clamp(S_i/max(U_i, epsilon), 0, alpha).
func ramKernel(m *methodRun, plus bool) Kernel {
	n := len(m.weights)
	eps := m.p.Epsilon
	lambda := make([]float32, n)
	for i := range lambda {
		lambda[i] = 1
	}
	pool := sync.Pool{New: func() any { return newRAMScratch(n) }}
	var passes []Pass
	if plus {
		passes = []Pass{{
			NumStats: 2 * n, // per model: shared, unique (whole numbers: exact in any order)
			Chunk: func(_ Chunk, in, _ [][]float32, acc []float64) {
				s := pool.Get().(*ramScratch)
				defer pool.Put(s)
				ramCountChunk(in[0], in[1:], eps, s, acc)
			},
			// BF16 inputs with AVX-512 or AVX2: the counts straight from the words.
			Fused: func(_ Chunk, in []Operand, acc []float64) bool {
				if !haveLerpBF16Asm || !allBF16(in) {
					return false
				}
				s := pool.Get().(*ramScratch)
				defer pool.Put(s)
				return ramCountBF16(in, eps, s, acc)
			},
			Done: func(perChunk []float64) error {
				for i, l := range ramLambdas(perChunk, n, eps, m.p.Geo.R, m.p.Geo.Alpha) {
					lambda[i] = float32(l)
				}
				return nil
			},
		}}
	}
	return Kernel{
		Passes: passes,
		Merge: func(dst []float32, in, _ [][]float32, _ Chunk) {
			s := pool.Get().(*ramScratch)
			defer pool.Put(s)
			ramMergeChunk(dst, in[0], in[1:], eps, lambda, s)
		},
		// BF16 in and out (what checkpoints are stored in) with AVX-512 or AVX2: one
		// loop from the inputs' bytes to the output's, the same bits as decoding,
		// Merge and encoding (ramMergeBF16).
		Fused: func(out []byte, outDT dtype.DType, in []Operand, _ []float64, _ Chunk) bool {
			if !haveLerpBF16Asm || outDT != dtype.BF16 || !allBF16(in) {
				return false
			}
			s := pool.Get().(*ramScratch)
			defer pool.Put(s)
			return ramMergeBF16(out, in, eps, lambda, s)
		},
	}
}

// ramBlock is the elements ram's chunk loops take at a time: each model's masks of a
// block stay in the cache between the loops that make and use them.
const ramBlock = 512

// ramScratch is one chunk's masks: keep[i][j] is 1 where model i's entry j counts,
// count[j] how many models' do, sum[j] the merge's running sum.
type ramScratch struct {
	keep  [][]uint32
	count []uint32
	sum   []float32
	xs    [][]float32 // the models' entries of the block

	// The assembly's: ramCountAVX2's keep masks (8 per model) and per-lane counts
	// (16 per model), the BF16 loops' differences and masks (32 per model, as
	// RAM_KEEPS512 lays them out; ramBF16AVX2 uses half), the room for the base's
	// and the models' BF16 words (bf16Words),
	// and a chunk's last elements (fewer than ramLanes) widened.
	tmp32 []uint32
	sums  []uint32
	tmpF  []float32
	words [][]uint16
	tail  [][]float32
}

func newRAMScratch(n int) *ramScratch {
	s := &ramScratch{keep: make([][]uint32, n), count: make([]uint32, ramBlock), sum: make([]float32, ramBlock),
		tmp32: make([]uint32, 8*n), sums: make([]uint32, 16*n), tmpF: make([]float32, 32*n),
		words: make([][]uint16, 0, n+1), tail: make([][]float32, n+2)}
	for i := range s.keep {
		s.keep[i] = make([]uint32, ramBlock)
	}
	for i := range s.tail {
		s.tail[i] = make([]float32, 16)
	}
	return s
}

// ramMasks fills s's masks for the elements of base (at most ramBlock) and the
// models' entries at the same positions. The loops run a model at a time over the
// block, with no branch on the data: which entries count is random-looking, and
// branching on it costs more than the arithmetic.
func ramMasks(base []float32, x [][]float32, eps float64, s *ramScratch) {
	count := s.count[:len(base)]
	clear(count)
	for i := range x {
		xi, keep := x[i][:len(base)], s.keep[i][:len(base)]
		j := 0
		if haveLerpBF16Asm {
			j = ramMaskAsm(keep, count, xi, base, eps) // the same compares, eight at a time
		}
		for ; j < len(base); j++ {
			k := uint32(b2i(ramCounts(xi[j], base[j], eps)))
			keep[j] = k
			count[j] += k
		}
	}
}

// ramCountChunk adds, per model i, its counting entries that other models' share to
// acc[2i] and those it alone has to acc[2i+1] (whole numbers: exact in any order).
func ramCountChunk(base []float32, x [][]float32, eps float64, s *ramScratch, acc []float64) {
	from := 0
	if haveLerpBF16Asm {
		clear(s.sums)
		from = ramCountAsm(base, x, eps, s) // the same masks, all models per 8 elements
		s.addCounts(acc, len(x))
	}
	for lo := from; lo < len(base); lo += ramBlock {
		hi := min(lo+ramBlock, len(base))
		xs := s.block(x, lo, hi)
		ramMasks(base[lo:hi], xs, eps, s)
		count := s.count[:hi-lo]
		for i := range xs {
			keep := s.keep[i][:len(count)]
			var shared, unique uint32
			for j, c := range count {
				one := uint32(b2i(c == 1))
				unique += keep[j] & one
				shared += keep[j] &^ one
			}
			acc[2*i] += float64(shared)
			acc[2*i+1] += float64(unique)
		}
	}
}

// ramMergeChunk is ram's merge of one chunk: dst = base + Σ_i term_i, the terms
// added in model order in float32, term_i = λ_i·δ_i where model i alone counts,
// δ_i/count where several do. A model whose entry does not count adds +0, which
// leaves the sum as it is: the sum starts at +0 and so is never −0.
func ramMergeChunk(dst, base []float32, x [][]float32, eps float64, lambda []float32, s *ramScratch) {
	for lo := 0; lo < len(dst); lo += ramBlock {
		hi := min(lo+ramBlock, len(dst))
		b := base[lo:hi]
		xs := s.block(x, lo, hi)
		ramMasks(b, xs, eps, s)
		count, sum := s.count[:len(b)], s.sum[:len(b)]
		clear(sum)
		for i := range xs {
			xi, keep, l := xs[i][:len(b)], s.keep[i][:len(b)], lambda[i]
			for j, bj := range b {
				d := float32(float64(xi[j]) - float64(bj))
				one := -uint32(b2i(count[j] == 1))
				t := math.Float32bits(l*d)&one | math.Float32bits(d/float32(count[j]))&^one
				sum[j] += math.Float32frombits(t & -keep[j])
			}
		}
		out := dst[lo:hi]
		for j, bj := range b {
			out[j] = bj + sum[j]
		}
	}
}

// ramMergeBF16 is ramMergeChunk from BF16 inputs (in[0] the base) to BF16 out in
// one AVX-512 or AVX2 loop, the last elements (fewer than ramLanes) through
// ramMergeChunk: the same bits as decoding, merging and encoding, without the
// float32 chunks in between. It
// returns false where the bytes are not aligned words (the engine's path then does
// the chunk).
func ramMergeBF16(out []byte, in []Operand, eps float64, lambda []float32, s *ramScratch) bool {
	n := len(out) / 2
	ow, ok := dtype.Uint16s(out)
	if !ok {
		return false
	}
	words, ok := bf16Words(s.words, in, n)
	if !ok {
		return false
	}
	bw, xw := words[0], words[1:]
	j := ramBF16Asm(ow, bw, xw, eps, lambda, s)
	if j == n {
		return true
	}
	b, xs := s.widenTail(bw, xw, j)
	dst := s.tail[1][:n-j]
	ramMergeChunk(dst, b, xs, eps, lambda, s)
	for e, v := range dst {
		ow[j+e] = dtype.Float32ToBF16(v)
	}
	return true
}

// ramCountBF16 is ramCountChunk on BF16 words (ramplus_tl's Pass.Fused), the same
// counts; false where the words cannot be read in place (misaligned data, a
// big-endian host), for the engine's path to decode.
func ramCountBF16(in []Operand, eps float64, s *ramScratch, acc []float64) bool {
	words, ok := bf16Words(s.words, in, len(in[0].Data)/2)
	if !ok {
		return false
	}
	bw, xw := words[0], words[1:]
	n := len(bw)
	clear(s.sums)
	j := ramCountBF16Asm(bw, xw, eps, s)
	s.addCounts(acc, len(xw))
	if j < n {
		b, xs := s.widenTail(bw, xw, j)
		ramCountChunk(b, xs, eps, s, acc)
	}
	return true
}

// addCounts adds the assembly's per-lane counts in s.sums (16 per model: shared,
// then unique, by lane) to acc, two per model.
func (s *ramScratch) addCounts(acc []float64, models int) {
	for i := range models {
		var shared, unique uint64
		for l := range 8 {
			shared += uint64(s.sums[16*i+l])
			unique += uint64(s.sums[16*i+8+l])
		}
		acc[2*i] += float64(shared)
		acc[2*i+1] += float64(unique)
	}
}

// widenTail decodes the words from j on (fewer than 16) of the base and of each model
// into s.tail: the base's in s.tail[0], the models' from s.tail[2].
func (s *ramScratch) widenTail(bw []uint16, xw [][]uint16, j int) (b []float32, xs [][]float32) {
	widen := func(dst []float32, w []uint16) []float32 {
		dst = dst[:len(w)] // within the 16 of its capacity
		for e, h := range w {
			dst[e] = math.Float32frombits(uint32(h) << 16)
		}
		return dst
	}
	xs = s.tail[2 : len(xw)+2]
	for i := range xs {
		xs[i] = widen(xs[i], xw[i][j:])
	}
	return widen(s.tail[0], bw[j:]), xs
}

// block is x's entries [lo, hi), in a slice s keeps.
func (s *ramScratch) block(x [][]float32, lo, hi int) [][]float32 {
	s.xs = s.xs[:0]
	for i := range x {
		s.xs = append(s.xs, x[i][lo:hi])
	}
	return s.xs
}

// ramCounts says whether the model's entry counts: |x − b| > epsilon, the difference
// taken exactly (in float64).
func ramCounts(x, b float32, eps float64) bool {
	return math.Abs(float64(x)-float64(b)) > eps
}

// ramThresholds returns the float32 thresholds with which the assembly decides
// ramCounts from d, the difference x − b rounded to float32 (one compare instead of
// widening both to float64): lo is the largest float32 ≤ eps and hi the next one up.
// Rounding is monotone, so |x − b| > eps gives |d| ≥ lo, and |x − b| ≤ eps < hi gives
// |d| ≤ hi: |d| > hi means the entry counts, |d| < lo that it does not, and only
// lo ≤ |d| ≤ hi needs the exact float64 compare. A NaN eps (no entry counts) makes
// every non-NaN |d| undecided. An eps of zero needs no exact compare: a difference
// of two float32 values rounds to zero only when it is zero (underflow is gradual),
// so |d| > 0 decides, and lo = +Inf leaves no lane undecided.
func ramThresholds(eps float64) (lo, hi float32) {
	switch {
	case eps != eps:
		return -1, float32(math.Inf(1))
	case eps == 0:
		return float32(math.Inf(1)), 0
	}
	lo = float32(eps)
	if float64(lo) > eps {
		lo = math.Nextafter32(lo, float32(math.Inf(-1)))
	}
	return lo, math.Nextafter32(lo, float32(math.Inf(1)))
}

// ramLambdas turns the per-chunk shared and unique counts into each model's λ.
func ramLambdas(perChunk []float64, n int, eps, r, alpha float64) []float64 {
	out := make([]float64, n)
	for i := range n {
		var shared, unique float64
		for c := 0; c < len(perChunk); c += 2 * n {
			shared += perChunk[c+2*i]
			unique += perChunk[c+2*i+1]
		}
		rho := shared / max(unique, eps)
		out[i] = 1 + float64(r*max(0, min(alpha, rho))) // rounded: no platform fuses it
	}
	return out
}

// ramRef is ram's (plus: ramplus_tl's) plain statement in float64.
func ramRef(base []float32, models [][]float32, eps, r, alpha float64, plus bool) (ref, scale []float64) {
	n := len(models)
	counts := make([]int, len(base))
	for j := range base {
		for _, x := range models {
			if math.Abs(float64(x[j])-float64(base[j])) > eps {
				counts[j]++
			}
		}
	}
	lambda := make([]float64, n)
	for i, x := range models {
		lambda[i] = 1
		if !plus {
			continue
		}
		var shared, unique float64
		for j := range base {
			if math.Abs(float64(x[j])-float64(base[j])) > eps {
				if counts[j] > 1 {
					shared++
				} else {
					unique++
				}
			}
		}
		lambda[i] = 1 + r*max(0, min(alpha, shared/max(unique, eps)))
	}
	ref, scale = make([]float64, len(base)), make([]float64, len(base))
	for j := range base {
		b := float64(base[j])
		ref[j], scale[j] = b, math.Abs(b)
		for i, x := range models {
			d := float64(x[j]) - b
			if !(math.Abs(d) > eps) {
				continue
			}
			term := d / float64(counts[j])
			if counts[j] == 1 {
				term = lambda[i] * d
			}
			ref[j] += term
			scale[j] += math.Abs(term)
		}
	}
	return ref, scale
}
