package merge

import (
	"fmt"
	"math"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

func init() {
	register(Method{
		Name: "arcee_fusion", Command: "arcee-fusion",
		Short:   "Arcee Fusion: take the model's values whose importance (|Δ| times its row's softmax KL divergence) is an outlier, the base's elsewhere",
		Example: `  gomerge arcee-fusion --base base.safetensors ft.safetensors --out fusion.safetensors`,
		Base:    BaseRequired, MinModels: 1, MaxModels: 1,
		kernel: arceeFusionKernel,
	})
}

// arceeQuantiles are the quantiles arcee_fusion's threshold takes, as fractions
// num/4: q1, the median and q3.
var arceeQuantiles = [3]int64{1, 2, 3}

// arceeRank is the ascending index of quantile num/4 among n values: floor(q·(n−1)),
// as mergekit indexes its sorted sample.
func arceeRank(num, n int64) int64 { return num * (n - 1) / 4 }

// arceeImportance is one element's importance: |x − b| times its row's KL divergence,
// rounded to float32 (the values the quantiles are taken of).
func arceeImportance(x, b float32, kl float64) float32 {
	return float32(math.Abs(float64(x)-float64(b)) * kl)
}

// orderKey maps a float32 to a uint32 that orders like the value (−0 just below +0,
// NaN beyond ±Inf), and orderValue maps it back.
func orderKey(f float32) uint32 {
	b := math.Float32bits(f)
	if b>>31 != 0 {
		return ^b
	}
	return b | 1<<31
}

func orderValue(k uint32) float32 {
	if k>>31 != 0 {
		return math.Float32frombits(k &^ (1 << 31))
	}
	return math.Float32frombits(^k)
}

// arceeFusionKernel (docs/methods.md, arcee_fusion). Per row (the last dimension),
// p = softmax(θ) + 1e-8 and q = softmax(θ_base) + 1e-8 and KL = Σ p log(p/q), in
// float64 over three passes (the rows' maxima, their exponential sums, the
// divergence). Each element's importance is |θ − θ_base|·KL; its exact quartiles over
// the whole tensor come from two histograms of the importances' order keys (the top
// 16 bits, then the low 16 within the bins that hold the three ranks); the threshold
// is median + 1.5·(q3 − q1), and the output takes the model's value where the
// importance reaches it, the base's elsewhere.
//
// A row that lies whole in one chunk gets everything up to its keys' first histogram
// in pass 1, so that a tensor none of whose rows straddle chunks is read three times
// (pass 1, pass 5, the merge); passes 2 to 4 do the straddling rows' share only.
func arceeFusionKernel(m *methodRun, tp *TensorPlan) Kernel {
	seg := newSegments(tp.Shape, false, false) // rows: softmax over the last dimension
	n := tp.NumElements()
	st := newArceeStats(seg.n)
	mx, mb, zx, zb, kl := st.mx, st.mb, st.zx, st.zb, st.kl
	// straddle: some row crosses a chunk boundary, so that passes 2 to 4 do its
	// chunks' parts; rows inside a chunk are done by pass 1 alone.
	straddle := false
	for r := range seg.n {
		if seg.straddles(r) {
			straddle = true
			break
		}
	}
	// rp: where rows straddle chunks but none is longer than a chunk, pass 1 does
	// every row in the chunk where it starts, decoding its part beyond the chunk
	// from the operands, and passes 2 to 4 are skipped. (Rows longer than a chunk,
	// which would be decoded once per chunk they span, keep passes 2 to 4.)
	var rp *rowPool
	if straddle && seg.size <= ChunkElems {
		if p, err := newRowPool(tp, seg.size); err == nil {
			rp, straddle = p, false
		}
	}
	var (
		group     = arceeGroupRows(seg.size)
		expElems  = 2 * int64(group) * min(seg.size, ChunkElems)
		expPool   = sharedPool(m, fmt.Sprintf("arcee/exp/%d", expElems), func() any { return make([]float64, expElems) })
		keyPool   = sharedPool(m, "arcee/keys", func() any { return make([]uint32, 2*ChunkElems) }) // pass 1 with rp: up to a row past the chunk
		histPool  = sharedPool(m, "arcee/hist", func() any { return new(arceeHist) })               // drained (zeroed) before it is put back
		foundPool = sharedPool(m, "arcee/found", func() any { return new([3][]uint32) })            // pass 5: the keys in the bins
		mu        sync.Mutex
		hist      []uint64    // passes 1 and 4: counts of the keys' top 16 bits
		bins      [3]uint32   // the top 16 bits at each quantile's rank
		below     [3]int64    // elements in bins below it
		lo        [3][]uint64 // pass 5: counts of the low 16 bits in each bin
		threshold float64
	)
	// count adds keys' top 16 bits to hist: in a chunk's own table first, then,
	// under the lock, the span of bins it touched (whole numbers: any order).
	count := func(keys []uint32) {
		if len(keys) == 0 {
			return
		}
		local := histPool.Get().(*arceeHist)
		defer histPool.Put(local)
		local.count(keys)
		first, last := arceeRange(keys)
		mu.Lock()
		if hist == nil {
			hist = make([]uint64, 1<<16)
		}
		local.drain((*[1 << 16]uint64)(hist), first>>16, last>>16)
		mu.Unlock()
	}
	// findBins locates each quantile's rank in hist, once every key is counted.
	findBins := func() {
		if hist == nil { // no elements
			hist = make([]uint64, 1<<16)
		}
		for q, num := range arceeQuantiles {
			rank := arceeRank(num, n)
			var cum int64
			for bin, c := range hist {
				if cum+int64(c) > rank {
					bins[q], below[q] = uint32(bin), cum
					break
				}
				cum += int64(c)
			}
			lo[q] = make([]uint64, 1<<16)
		}
		hist = nil
	}
	// getFound gives pass 5 a chunk's lists of the keys in the bins, emptied.
	getFound := func() *[3][]uint32 {
		found := foundPool.Get().(*[3][]uint32)
		for q := range found {
			found[q] = found[q][:0]
		}
		return found
	}
	// countLows adds the low 16 bits of a chunk's keys in each bin to lo, under the
	// lock (whole numbers: any order).
	countLows := func(found *[3][]uint32) {
		mu.Lock()
		defer mu.Unlock()
		for q := range found {
			for _, k := range found[q] {
				lo[q][uint16(k)]++
			}
		}
	}
	return Kernel{
		WholeInputs: rp != nil, // pass 1 decodes rows past its chunk
		Passes: []Pass{
			{ // 1: each row's maxima, with a flag for the slots this chunk touched; rows
				// that lie whole in the chunk get all their statistics and their keys'
				// first histogram here instead
				NumStats: 3 * seg.slots,
				Chunk: func(pos Chunk, in, _ [][]float32, acc []float64) {
					b, x := in[0], in[1]
					keys := keyPool.Get().([]uint32)
					defer keyPool.Put(keys)
					buf := expPool.Get().([]float64)
					defer expPool.Put(buf)
					if rp != nil {
						count(keys[:arceeStartingRows(rp, &st, in, pos, keys, buf)])
						return
					}
					// The rows whole in the chunk lie between its partial runs, if any.
					lo, hi := 0, len(x)
					row := func(start int64) ([]float32, []float32) {
						j := int(start - pos.Offset)
						return x[j : j+int(seg.size)], b[j : j+int(seg.size)]
					}
					seg.runs(pos, len(x), func(l, h, slot int) {
						if int64(h-l) == seg.size {
							return
						}
						if l == 0 {
							lo = h
						} else {
							hi = l
						}
						a := acc[3*slot : 3*slot+3]
						for j := l; j < h; j++ {
							if a[0] == 0 {
								a[0], a[1], a[2] = 1, float64(x[j]), float64(b[j])
							}
							a[1], a[2] = max(a[1], float64(x[j])), max(a[2], float64(b[j]))
						}
					})
					nk := arceeWholeRows(&st, pos.Offset+int64(lo), pos.Offset+int64(hi), seg.size, row, keys, buf)
					count(keys[:nk])
				},
				Done: func(perChunk []float64) error {
					first := make([]bool, seg.n)
					seg.eachSlot(perChunk, 3, func(row int64, a []float64) {
						if a[0] == 0 {
							return
						}
						if !first[row] {
							first[row], mx[row], mb[row] = true, a[1], a[2]
						}
						mx[row], mb[row] = max(mx[row], a[1]), max(mb[row], a[2])
					})
					if !straddle {
						findBins() // pass 4 is skipped
					}
					return nil
				},
			},
			{ // 2: Σ exp(θ − max) and Σ exp(θ_base − max) per row across chunks
				Skip:     func() bool { return !straddle },
				NumStats: 2 * seg.slots,
				Chunk: func(pos Chunk, in, _ [][]float32, acc []float64) {
					b, x := in[0], in[1]
					first := seg.first(pos)
					seg.runs(pos, len(x), func(lo, hi, slot int) {
						if int64(hi-lo) == seg.size {
							return // pass 1's
						}
						r := first + int64(slot)
						for j := lo; j < hi; j++ {
							acc[2*slot] += math.Exp(float64(x[j]) - mx[r])
							acc[2*slot+1] += math.Exp(float64(b[j]) - mb[r])
						}
					})
				},
				Done: func(perChunk []float64) error {
					sums := seg.segmentSums(perChunk, 2)
					for r := range seg.n {
						if seg.straddles(r) {
							zx[r], zb[r] = sums[0][r], sums[1][r]
						}
					}
					return nil
				},
			},
			{ // 3: KL(p ‖ q) per row across chunks
				Skip:     func() bool { return !straddle },
				NumStats: seg.slots,
				Chunk: func(pos Chunk, in, _ [][]float32, acc []float64) {
					b, x := in[0], in[1]
					first := seg.first(pos)
					seg.runs(pos, len(x), func(lo, hi, slot int) {
						if int64(hi-lo) == seg.size {
							return // pass 1's
						}
						r := first + int64(slot)
						for j := lo; j < hi; j++ {
							acc[slot] += arceeKLTerm(math.Exp(float64(x[j])-mx[r]), math.Exp(float64(b[j])-mb[r]), zx[r], zb[r])
						}
					})
				},
				Done: func(perChunk []float64) error {
					sums := seg.segmentSums(perChunk, 1)[0]
					for r := range seg.n {
						if seg.straddles(r) {
							kl[r] = sums[r]
						}
					}
					return nil
				},
			},
			{ // 4: the first histogram of the straddling rows' keys
				Skip: func() bool { return !straddle },
				Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
					b, x := in[0], in[1]
					first := seg.first(pos)
					keys := keyPool.Get().([]uint32)
					defer keyPool.Put(keys)
					nk := 0
					seg.runs(pos, len(x), func(lo, hi, slot int) {
						if int64(hi-lo) == seg.size {
							return // pass 1's
						}
						arceeKeys(keys[nk:nk+hi-lo], x[lo:hi], b[lo:hi], kl[first+int64(slot)])
						nk += hi - lo
					})
					count(keys[:nk])
				},
				Done: func([]float64) error {
					findBins()
					return nil
				},
			},
			{ // 5: within each quantile's bin, the low 16 bits
				Chunk: func(pos Chunk, in, _ [][]float32, _ []float64) {
					b, x := in[0], in[1]
					first := seg.first(pos)
					keys := keyPool.Get().([]uint32)
					defer keyPool.Put(keys)
					found := getFound()
					defer foundPool.Put(found)
					seg.runs(pos, len(x), func(l, h, slot int) {
						arceeKeysInBins(found, keys[l:h], x[l:h], b[l:h], kl[first+int64(slot)], &bins)
					})
					countLows(found)
				},
				// BF16 inputs with AVX-512: the keys from the words, not from a
				// decoded copy of them (the same keys: widening is exact).
				Fused: func(pos Chunk, in []Operand, _ []float64) bool {
					if !haveArceeKeys512 {
						return false
					}
					var room [2][]uint16
					w, ok := bf16Words(room[:0], in, len(in[0].Data)/2)
					if !ok {
						return false
					}
					b, x := w[0], w[1]
					first := seg.first(pos)
					found := getFound()
					defer foundPool.Put(found)
					seg.runs(pos, len(x), func(l, h, slot int) {
						arceeKeysInBinsBF16(found, x[l:h], b[l:h], kl[first+int64(slot)], &bins)
					})
					countLows(found)
					return true
				},
				Done: func([]float64) error {
					var v [3]float64
					for q, num := range arceeQuantiles {
						rank, cum := arceeRank(num, n), below[q]
						for l, c := range lo[q] {
							if cum+int64(c) > rank {
								v[q] = float64(orderValue(bins[q]<<16 | uint32(l)))
								break
							}
							cum += int64(c)
						}
					}
					threshold = v[1] + float64(1.5*(v[2]-v[0]))
					return nil
				},
			},
		},
		Merge: func(dst []float32, in, _ [][]float32, pos Chunk) {
			b, x := in[0], in[1]
			first := seg.first(pos)
			seg.runs(pos, len(x), func(lo, hi, slot int) {
				arceeSelect(dst[lo:hi], x[lo:hi], b[lo:hi], kl[first+int64(slot)], threshold)
			})
		},
		// BF16 in and out with AVX-512: the merge from the inputs' words to the
		// output's (arceeSelectBF16), the same bits as decoding, Merge and encoding.
		Fused: func(out []byte, outDT dtype.DType, in []Operand, _ []float64, pos Chunk) bool {
			if !haveArceeSelectBF16 || outDT != dtype.BF16 {
				return false
			}
			var room [2][]uint16
			w, ok := bf16Words(room[:0], in, len(out)/2)
			dst, okOut := dtype.Uint16s(out)
			if !ok || !okOut || len(in[0].Data) != len(out) || len(in[1].Data) != len(out) {
				return false
			}
			first := seg.first(pos)
			b, x := w[0], w[1]
			seg.runs(pos, len(dst), func(lo, hi, slot int) {
				arceeSelectBF16(dst[lo:hi], x[lo:hi], b[lo:hi], kl[first+int64(slot)], threshold)
			})
			return true
		},
	}
}

// arceeHist is a chunk's counts of its keys' top 16 bits (an array, so that a bin
// needs no bounds check).
type arceeHist [1 << 16]uint32

// count adds keys to h, four at a time (their bins loaded before any is counted,
// which measured 14 % faster than one at a time).
func (h *arceeHist) count(keys []uint32) {
	n := len(keys) &^ 3
	for j := 0; j < n; j += 4 {
		k0, k1, k2, k3 := keys[j]>>16, keys[j+1]>>16, keys[j+2]>>16, keys[j+3]>>16
		h[k0]++
		h[k1]++
		h[k2]++
		h[k3]++
	}
	for _, k := range keys[n:] {
		h[k>>16]++
	}
}

// drain adds bins first to last of h to hist and zeroes them in h.
func (h *arceeHist) drain(hist *[1 << 16]uint64, first, last uint32) {
	for i := first; i <= last; i++ {
		hist[i] += uint64(h[i])
		h[i] = 0
	}
}

// arceeKeysInBins appends to found[q] the keys of arceeKeys(keys, x, b, kl) whose
// top 16 bits are bins[q], in order (keys: scratch of len(x)): with AVX-512 in one
// step where the CPU has it (arceeKeysInBinsAVX512 stores only those keys), the
// blocks it leaves (a NaN difference) by arceeKeys and arceeInBinsGo; elsewhere
// arceeKeys, then arceeInBins.
func arceeKeysInBins(found *[3][]uint32, keys []uint32, x, b []float32, kl float64, bins *[3]uint32) {
	keys, b = keys[:len(x)], b[:len(x)]
	if !haveArceeKeys512 {
		arceeKeys(keys, x, b, kl)
		arceeInBins(found, keys, bins)
		return
	}
	byBlocksOf8(len(x), true,
		func(j int) int { return arceeKeysInBinsAsm(found, x[j:], b[j:], kl, bins) },
		func(lo, hi int) {
			arceeKeys(keys[lo:hi], x[lo:hi], b[lo:hi], kl)
			arceeInBinsGo(found, keys[lo:hi], bins)
		})
}

// arceeKeysInBinsBF16 is arceeKeysInBins on BF16 words, as widening them and
// calling it gives it: with AVX-512 where the CPU has it, and the blocks that leaves
// (a NaN difference), the tail and everything elsewhere widened eight at a time and
// done by arceeKeysGo and arceeInBinsGo (the reference).
func arceeKeysInBinsBF16(found *[3][]uint32, x, b []uint16, kl float64, bins *[3]uint32) {
	b = b[:len(x)]
	byBlocksOf8(len(x), haveArceeKeys512,
		func(j int) int { return arceeKeysInBinsBF16Asm(found, x[j:], b[j:], kl, bins) },
		func(lo, hi int) {
			var fx, fb [8]float32
			var keys [8]uint32
			for ; lo < hi; lo += len(keys) {
				m := min(len(keys), hi-lo)
				for i := range m {
					fx[i], fb[i] = dtype.BF16ToFloat32(x[lo+i]), dtype.BF16ToFloat32(b[lo+i])
				}
				arceeKeysGo(keys[:m], fx[:m], fb[:m], kl)
				arceeInBinsGo(found, keys[:m], bins)
			}
		})
}

// arceeInBins appends to found[q] the keys whose top 16 bits are bins[q], in order:
// the blocks of eight with none are skipped with AVX2 where the CPU has it
// (arceeMatchAVX2), the rest looked at in Go.
func arceeInBins(found *[3][]uint32, keys []uint32, bins *[3]uint32) {
	byBlocksOf8(len(keys), haveLerpBF16Asm,
		func(j int) int { return arceeMatchAsm(keys[j:], bins) },
		func(lo, hi int) { arceeInBinsGo(found, keys[lo:hi], bins) })
}

// arceeInBinsGo is arceeInBins in Go, the reference.
func arceeInBinsGo(found *[3][]uint32, keys []uint32, bins *[3]uint32) {
	b0, b1, b2 := bins[0], bins[1], bins[2]
	for _, k := range keys {
		if t := k >> 16; t != b0 && t != b1 && t != b2 {
			continue
		}
		for q := range bins {
			if k>>16 == bins[q] {
				found[q] = append(found[q], k)
			}
		}
	}
}

// arceeRange is the least and the greatest of keys (not empty): with AVX2 where the
// CPU has it, in Go for the tail.
func arceeRange(keys []uint32) (lo, hi uint32) {
	lo, hi = keys[0], keys[0]
	j := 0
	if haveLerpBF16Asm && len(keys) >= 8 {
		lo, hi, j = arceeRangeAsm(keys)
	}
	for _, k := range keys[j:] {
		lo, hi = min(lo, k), max(hi, k)
	}
	return lo, hi
}

// arceeKeys sets keys[j] to the order key of arceeImportance(x[j], b[j], kl): with
// AVX2 eight at a time where the CPU has it (arceeKeysAVX2 does arceeImportance's
// operations), in Go for the blocks the assembly leaves and the tail.
func arceeKeys(keys []uint32, x, b []float32, kl float64) {
	x, b = x[:len(keys)], b[:len(keys)]
	byBlocksOf8(len(keys), haveLerpBF16Asm,
		func(j int) int { return arceeKeysAsm(keys[j:], x[j:], b[j:], kl) },
		func(lo, hi int) { arceeKeysGo(keys[lo:hi], x[lo:hi], b[lo:hi], kl) })
}

// arceeKeysGo is arceeKeys in Go, the reference.
func arceeKeysGo(keys []uint32, x, b []float32, kl float64) {
	x, b = x[:len(keys)], b[:len(keys)]
	for j := range keys {
		keys[j] = orderKey(arceeImportance(x[j], b[j], kl))
	}
}

// arceeSelect sets dst[j] to x[j] where float64(arceeImportance(x[j], b[j], kl)) ≥ t,
// to b[j] elsewhere: with AVX2 where the CPU has it, in Go for the tail.
func arceeSelect(dst, x, b []float32, kl, t float64) {
	x, b = x[:len(dst)], b[:len(dst)]
	j := 0
	if haveLerpBF16Asm && len(dst) >= 4 {
		j = arceeSelectAsm(dst, x, b, kl, t)
	}
	arceeSelectGo(dst[j:], x[j:], b[j:], kl, t)
}

// arceeSelectGo is arceeSelect in Go, the reference.
func arceeSelectGo(dst, x, b []float32, kl, t float64) {
	x, b = x[:len(dst)], b[:len(dst)]
	for j := range dst {
		if float64(arceeImportance(x[j], b[j], kl)) >= t {
			dst[j] = x[j]
		} else {
			dst[j] = b[j]
		}
	}
}

// arceeSelectBF16 is arceeSelect on BF16 words, as decoding, arceeSelect and encoding
// give it: with AVX-512 sixteen at a time where the CPU has it
// (arceeSelectBF16AVX512), arceeSelectBF16Go for the rest.
func arceeSelectBF16(dst, x, b []uint16, kl, t float64) {
	x, b = x[:len(dst)], b[:len(dst)]
	j := 0
	if haveArceeSelectBF16 {
		j = arceeSelectBF16Asm(dst, x, b, kl, t)
	}
	arceeSelectBF16Go(dst[j:], x[j:], b[j:], kl, t)
}

// arceeSelectBF16Go is arceeSelectBF16 as decoding, arceeSelectGo and encoding do
// it, the reference.
func arceeSelectBF16Go(dst, x, b []uint16, kl, t float64) {
	x, b = x[:len(dst)], b[:len(dst)]
	var fx, fb, fd [1]float32
	for j := range dst {
		fx[0], fb[0] = dtype.BF16ToFloat32(x[j]), dtype.BF16ToFloat32(b[j])
		arceeSelectGo(fd[:], fx[:], fb[:], kl, t)
		dst[j] = dtype.Float32ToBF16(fd[0])
	}
}

// arceeMax is the largest of float64(x[j]) and of float64(b[j]) as Go's max finds
// them in order from x[0], b[0]: with AVX2 over float32 where the CPU has it (the
// widening keeps the order), in Go where a row holds a NaN or its maximum is ±0
// (where VMAXPS and max may differ) and for the tail.
func arceeMax(x, b []float32) (mx, mb float64) {
	b = b[:len(x)]
	j := 0
	mx, mb = float64(x[0]), float64(b[0])
	if haveLerpBF16Asm && len(x) >= 8 {
		if m1, m2, n, ok := arceeMaxAsm(x, b); ok {
			mx, mb, j = float64(m1), float64(m2), n
		}
	}
	for ; j < len(x); j++ {
		mx, mb = max(mx, float64(x[j])), max(mb, float64(b[j]))
	}
	return mx, mb
}

// arceeGroup is the most rows whose statistics arceeStats.rows computes at once, and
// arceeGroupElems the most elements they may hold: enough rows that their in-order
// sums, each a chain of dependent additions, overlap (eight chains keep the adders
// busy where one waits on each addition's latency), few enough that their
// exponentials (16 bytes per element) stay in the core's cache.
const (
	arceeGroup      = 8
	arceeGroupElems = 1 << 15
)

// arceeGroupRows is the number of rows of L elements that arceeStats.rows is given at
// once.
func arceeGroupRows(L int64) int { return int(max(1, min(arceeGroup, arceeGroupElems/max(L, 1)))) }

// arceeStats holds each row's max θ, max θ_base, Σexp θ, Σexp θ_base and KL.
type arceeStats struct{ mx, mb, zx, zb, kl []float64 }

func newArceeStats(rows int64) arceeStats {
	return arceeStats{make([]float64, rows), make([]float64, rows), make([]float64, rows), make([]float64, rows), make([]float64, rows)}
}

// rows sets the statistics of rows r, r+1, …, r+len(xs)−1, whole rows of one length
// (θ in xs, θ_base in bs; at most arceeGroup of them), as passes 1 to 3 compute them
// for a row across chunks: the same operations in the same order, so the same bits.
// Each exponential is taken once and held in buf (2·len(xs)·L elements) for the
// divergence, and each row's sums are added in order, the rows' at once
// (arceeSums).
func (st *arceeStats) rows(r int64, xs, bs [][]float32, buf []float64) {
	g, L := len(xs), len(xs[0])
	var e, t [2 * arceeGroup][]float64
	var z [2 * arceeGroup]float64
	for i := range g {
		ex, eb := buf[2*i*L:(2*i+1)*L], buf[(2*i+1)*L:(2*i+2)*L]
		e[2*i], e[2*i+1] = ex, eb
		mx, mb := arceeMax(xs[i], bs[i])
		st.mx[r+int64(i)], st.mb[r+int64(i)] = mx, mb
		arceeExps(ex, xs[i], mx)
		arceeExps(eb, bs[i], mb)
	}
	arceeSums(z[:2*g], e[:2*g])
	for i := range g {
		zx, zb := z[2*i], z[2*i+1]
		st.zx[r+int64(i)], st.zb[r+int64(i)] = zx, zb
		t[i] = e[2*i] // the terms replace θ's exponentials
		arceeKLTerms(t[i], e[2*i], e[2*i+1], zx, zb)
	}
	arceeSums(st.kl[r:r+int64(g)], t[:g])
	for i := range g {
		if kl := st.kl[r+int64(i)]; kl != kl {
			st.kl[r+int64(i)] = arceeSumTermFirst(t[i])
		}
	}
}

// arceeSumTermFirst is the sum of a in order from 0 where, of two NaNs, an addition
// keeps the term's: the divergence's sum as the single-row loop added it (terms that
// meet math.Log's special cases, the only NaN terms, were added by Go code that kept
// the term's NaN), which arceeSums, keeping the running sum's, does not give where
// NaNs of two payloads meet. Only for rows whose divergence is NaN.
func arceeSumTermFirst(a []float64) float64 {
	var z float64
	for _, v := range a {
		if v != v {
			z = v
		} else {
			z += v
		}
	}
	return z
}

// arceeWholeRows does, for pass 1, the rows of L elements that start at flat index
// start and lie whole in the inputs served by row (base, model), up to end: their
// statistics into st, their keys into keys, arceeGroupRows(L) rows at a time. It
// returns the number of keys.
func arceeWholeRows(st *arceeStats, start, end, L int64, row func(start int64) (x, b []float32), keys []uint32, buf []float64) int {
	group := arceeGroupRows(L)
	var xs, bs [arceeGroup][]float32
	nk := 0
	for start+L <= end {
		r, g := start/L, 0
		for ; g < group && start+L <= end; g, start = g+1, start+L {
			xs[g], bs[g] = row(start)
		}
		st.rows(r, xs[:g], bs[:g], buf)
		for i := range g {
			arceeKeys(keys[nk:nk+int(L)], xs[i], bs[i], st.kl[r+int64(i)])
			nk += int(L)
		}
	}
	return nk
}

// arceeStartingRows does, for pass 1 with a rowPool, every row that starts in the
// chunk at pos (inputs in: base, model; rows of rp.L ≤ ChunkElems elements): the
// last one's part beyond the chunk decoded from the operands into the pool's
// buffers (the only row that can hold such a part), the one that started in the
// chunk before left to that chunk. It returns the number of keys.
func arceeStartingRows(rp *rowPool, st *arceeStats, in [][]float32, pos Chunk, keys []uint32, buf []float64) int {
	rb := rp.get()
	defer rp.put(rb)
	L, off, end := rp.L, pos.Offset, pos.Offset+int64(len(in[0]))
	row := func(start int64) (x, b []float32) {
		if start+L <= end {
			return in[1][start-off : start-off+L], in[0][start-off : start-off+L]
		}
		for k, op := range rp.t.In {
			// newRowPool checked that the data holds the row and that it starts on
			// a whole block, which is all Decode can refuse.
			_ = dtype.Decode(rb.dec[k][:L], op.Data[op.DType.Bytes(start):], op.DType)
		}
		return rb.dec[1][:L], rb.dec[0][:L]
	}
	first := (off + L - 1) / L * L
	return arceeWholeRows(st, first, min(end+L-1, rp.n), L, row, keys, buf)
}

// arceeSums sets z[i] to the sum of rows[i] (all of one length), added in order from
// 0 as a plain loop adds it, up to eight rows at once so that their chains of
// additions overlap.
func arceeSums(z []float64, rows [][]float64) {
	for i := 0; i < len(rows); i += 8 {
		k := min(8, len(rows)-i)
		if k == 1 {
			z[i] = arceeSum(rows[i])
			continue
		}
		var r8 [8][]float64 // short of eight: the last row again, its sum dropped
		for c := range r8 {
			r8[c] = rows[i+min(c, k-1)]
		}
		var s [8]float64
		if k <= 4 {
			arceeSum4(&s, &r8)
		} else {
			arceeSum8(&s, &r8)
		}
		copy(z[i:i+k], s[:k])
	}
}

// arceeSum is the sum of a, added in order from 0: the reference.
func arceeSum(a []float64) float64 {
	var z float64
	for _, v := range a {
		z += v
	}
	return z
}

// arceeSum4 sets s[0:4] to arceeSum of rows[0:4], all of one length, at once.
func arceeSum4(s *[8]float64, rows *[8][]float64) {
	a0 := rows[0]
	n := len(a0)
	a1, a2, a3 := rows[1][:n], rows[2][:n], rows[3][:n]
	var z0, z1, z2, z3 float64
	for j := range n {
		z0 += a0[j]
		z1 += a1[j]
		z2 += a2[j]
		z3 += a3[j]
	}
	s[0], s[1], s[2], s[3] = z0, z1, z2, z3
}

// arceeSum8 sets s to arceeSum of each of rows, all of one length, at once.
func arceeSum8(s *[8]float64, rows *[8][]float64) {
	a0 := rows[0]
	n := len(a0)
	a1, a2, a3, a4, a5, a6, a7 := rows[1][:n], rows[2][:n], rows[3][:n], rows[4][:n], rows[5][:n], rows[6][:n], rows[7][:n]
	var z0, z1, z2, z3, z4, z5, z6, z7 float64
	for j := range n {
		z0 += a0[j]
		z1 += a1[j]
		z2 += a2[j]
		z3 += a3[j]
		z4 += a4[j]
		z5 += a5[j]
		z6 += a6[j]
		z7 += a7[j]
	}
	s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7] = z0, z1, z2, z3, z4, z5, z6, z7
}

// arceeExp sets dst[j] = exp(float64(src[j]) − m) and returns their sum, added in
// order from 0: one row's part of arceeStats.rows.
func arceeExp(dst []float64, src []float32, m float64) float64 {
	arceeExps(dst, src, m)
	return arceeSum(dst)
}

// arceeExps sets dst[j] = exp(float64(src[j]) − m): with AVX2 four at a time (AVX-512
// eight) where math.Exp takes its ordinary path (arceeExpAVX2 does its operations),
// with math.Exp for the rest.
func arceeExps(dst []float64, src []float32, m float64) {
	src = src[:len(dst)]
	j := 0
	if haveArceeExpAsm {
		for len(dst)-j >= 4 {
			j += arceeExpAsm(dst[j:], src[j:], m)
			if len(dst)-j < 4 {
				break
			}
			for range 4 { // the block it stopped at
				dst[j] = math.Exp(float64(src[j]) - m)
				j++
			}
		}
	}
	for ; j < len(dst); j++ {
		dst[j] = math.Exp(float64(src[j]) - m)
	}
}

// arceeKL is Σ_j arceeKLTerm(ex[j], eb[j], zx, zb), added in order from 0: one row's
// part of arceeStats.rows, the terms made a block at a time on the stack.
func arceeKL(ex, eb []float64, zx, zb float64) float64 {
	eb = eb[:len(ex)]
	var terms [256]float64
	var kl float64
	for j := 0; j < len(ex); j += len(terms) {
		t := terms[:min(len(terms), len(ex)-j)]
		arceeKLTerms(t, ex[j:], eb[j:], zx, zb)
		for _, v := range t {
			if v != v { // the term's NaN, as arceeStats.rows keeps it
				kl = v
			} else {
				kl += v
			}
		}
	}
	return kl
}

// arceeKLTerms sets dst[j] = arceeKLTerm(ex[j], eb[j], zx, zb) (dst may be ex or eb):
// with AVX2 four terms at a time (AVX-512 eight) where math.Log has no special case
// (arceeKLAVX2 computes the logarithm with its operations), in Go for the rest.
func arceeKLTerms(dst, ex, eb []float64, zx, zb float64) {
	ex, eb = ex[:len(dst)], eb[:len(dst)]
	j := 0
	if haveLerpBF16Asm {
		for len(dst)-j >= 4 {
			j += arceeKLAsm(dst[j:], ex[j:], eb[j:], zx, zb)
			if len(dst)-j < 4 {
				break
			}
			for range 4 { // the block it stopped at
				dst[j] = arceeKLTerm(ex[j], eb[j], zx, zb)
				j++
			}
		}
	}
	for ; j < len(dst); j++ {
		dst[j] = arceeKLTerm(ex[j], eb[j], zx, zb)
	}
}

// arceeKLTerm is one element's p·log(p/q), p = ex/zx + 1e-8 and q = eb/zb + 1e-8
// (ex, eb: its exponentials; zx, zb: their row's sums).
func arceeKLTerm(ex, eb, zx, zb float64) float64 {
	p := ex/zx + 1e-8
	q := eb/zb + 1e-8
	return float64(p * math.Log(p/q)) // rounded: no platform fuses it
}

// straddles reports whether row segment r crosses a chunk boundary.
func (s segments) straddles(r int64) bool {
	if s.cols {
		return true
	}
	return r*s.size/ChunkElems != (r*s.size+s.size-1)/ChunkElems
}

// eachSlot calls f with each chunk's slots (k statistics each) and their segment, in
// chunk order.
func (s segments) eachSlot(perChunk []float64, k int, f func(seg int64, a []float64)) {
	per := s.slots * k
	for c := 0; c*per < len(perChunk); c++ {
		first := s.first(Chunk{Index: int64(c), Offset: int64(c) * ChunkElems})
		for slot := range s.slots {
			seg := first + int64(slot)
			if s.cols {
				seg %= s.n
			} else if seg >= s.n {
				break
			}
			f(seg, perChunk[c*per+slot*k:c*per+(slot+1)*k])
		}
	}
}
