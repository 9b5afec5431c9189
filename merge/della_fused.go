package merge

import (
	"encoding/binary"
	"sync"
	"unsafe"

	"github.com/gomerge/gomerge/formats/dtype"
)

// DELLA's ranking pass straight from BF16 bytes (Pass.Fused): the pass needs of its
// inputs only each row's magnitudes |x − base|, which it takes from the words (a
// BF16 word widened is its top 16 bits), and the L1 sums, which it adds from those
// magnitudes (|δ| − 0 is |δ|, NaNs included, so the same float64 additions in the
// same order). No input is decoded; the masks and sums are keepChunkL1's, bit for
// bit (TestDellaFusedMatchesDecoded).
//
// Its merge (Kernel.Fused) takes the masks the pass cached. With AVX-512 it is
// DARE's merge with kept masks (bandMerge, dellaKernel). Without it, della's own
// blocks: the base decoded (the finishing kernels read it), the models' words read
// as they are by dellaDeltaBF16Asm, the sums encoded
// (TestDellaKernelFusedMatchesDecoded, and TestDellaBF16AVX2 for the blocks). The
// blocks' saving was small: the engine's decoding, which the profiles charged 10 %,
// was mostly the first touch of the mapped inputs, which the fused kernels now pay.

// dellaLaneScratch is the fused pass's per-row state: each ranked model's
// magnitudes' bits, kept until the row's L1 sums are taken, and a row of zeros.
type dellaLaneScratch struct {
	mags  [][]float32 // per model, L: the bits of |δ| (read as uint32 by the ranks)
	zeros []float32   // L
}

// fusedL1 is the Fused function of dellaKernel's pass: the masks into kc, the sums
// into acc, as keepChunkL1 and the cache's storing do, where every input is BF16 and
// every model ranked by buckets; it declines other tensors.
func (s *dellaSelector) fusedL1(kc *keepCache, pool *maskPool) func(Chunk, []Operand, []float64) bool {
	return func(pos Chunk, in []Operand, acc []float64) bool {
		if s.thr == nil {
			return false
		}
		for _, d := range s.dens {
			if d <= 0 || d >= 1 {
				return false
			}
		}
		if !allBF16(in) {
			return false
		}
		n := len(in[0].Data) / 2
		sc := pool.get(n)
		defer pool.put(sc)
		s.keepChunkL1BF16(sc, in, pos, n, acc)
		kc.store(sc.keep, n, pos)
		return true
	}
}

// keepChunkL1BF16 is keepChunkL1 on the tensor's BF16 words for the chunk of n
// elements at pos (operands in), every model ranked by buckets. The rows are read
// from the chunk's operands where no row straddles chunks, from the whole tensor's
// (Kernel.WholeInputs) where some do.
func (s *dellaSelector) keepChunkL1BF16(sc *maskScratch, in []Operand, pos Chunk, n int, l1 []float64) {
	rb := s.rows.get()
	defer s.rows.put(rb)
	L := s.rows.L
	if rb.buckets == nil {
		rb.buckets = newBucketScratch(L)
	}
	models := len(sc.keep)
	if rb.lanes == nil {
		rb.lanes = &dellaLaneScratch{zeros: make([]float32, L)}
		for range models {
			rb.lanes.mags = append(rb.lanes.mags, make([]float32, L))
		}
	}
	ls := rb.lanes
	sums := make([]l1Lanes, models)
	var xs [4][]byte
	var keeps [4][]bool
	off, end := pos.Offset, pos.Offset+int64(n)
	data, from := s.rows.operands(in, pos)
	for r := off / L; r*L < end; r++ {
		start := r * L
		lo, hi := max(start, off), min(start+L, end)
		w0, w1 := 2*(start-from), 2*(start+L-from)
		b := data[0].Data[w0:w1]
		for i := range models {
			mags := float32Bits(ls.mags[i][:L])
			top := rowMagnitudesBF16(mags, b, data[i+1].Data[w0:w1])
			s.keepRowRanked(rb.buckets, mags, top, sc.keep[i], i, s.thr[i], s.bounds[i], start, lo, hi, off, rb.keys, rb.tmp)
		}
		j0, j1 := lo-start, hi-start
		// Two to four models' sums at once from their words with AVX-512 where the
		// row's part starts a lane group (the same differences, so the same bits as
		// from the magnitudes: TestL1LanesWordsMatchAddBF16 tests the kernel against
		// addBF16), the rest from the magnitudes a model at a time.
		var k int64
		if (lo-off)%lanes == 0 && models <= len(xs) {
			for i := range models {
				xs[i], keeps[i] = data[i+1].Data[2*(lo-from):2*(hi-from)], sc.keep[i][lo-off:hi-off]
			}
			k = int64(l1LanesWordsAsm(sums, data[0].Data[2*(lo-from):2*(hi-from)], xs[:models], keeps[:models]))
		}
		for i := range models {
			sums[i].add(ls.zeros[j0+k:j1], ls.mags[i][j0+k:j1], sc.keep[i][lo-off+k:hi-off], int(lo-off+k))
		}
	}
	for i := range sums {
		sums[i].addTo(l1[2*i : 2*i+2])
	}
}

// float32Bits is f's memory as uint32s: the magnitudes' bits, which the L1 sums
// read as the float32 |δ| they are.
func float32Bits(f []float32) []uint32 {
	return unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(f))), len(f))
}

// rowMagnitudesBF16 is rowMagnitudes on BF16 words (little-endian): the bits of
// |x − base| of the widened values into mags, and the largest top 16 bits (the first
// multiple of 8 in assembly where there is, sixteen lanes at a time with AVX-512,
// tested bit for bit against the loop).
//
//go:noinline
func rowMagnitudesBF16(mags []uint32, base, x []byte) uint32 {
	var top uint32
	n := len(x) / 2
	mags, base = mags[:n], base[:2*n]
	j := 0
	if haveTiesAsm && n >= 8 {
		j = n &^ 7
		top = dellaMagsBF16Asm(mags, base, x, j)
	}
	le := binary.LittleEndian
	for ; j < n; j++ {
		m := absBits(dtype.BF16ToFloat32(le.Uint16(x[2*j:])) - dtype.BF16ToFloat32(le.Uint16(base[2*j:])))
		mags[j] = m
		top = max(top, m>>16)
	}
	return top
}

// dellaMergeBlock is the elements of a chunk that della's fused merge decodes,
// combines and encodes at a time: a multiple of 64 (a word of the packed masks),
// small enough that the block's inputs and sums stay in the first-level cache.
const dellaMergeBlock = 2048

// dellaMergeScratch holds a block of each input and of the sums.
type dellaMergeScratch struct {
	in   [][]float32
	dst  []float32
	keep [][]bool
	bits [][]uint64
	x    [][]byte // the models' words of the block
}

// dellaMergeFused is the Fused function of dellaKernel's merge (BF16 inputs and
// output, the chunk's masks cached by the pass; it declines a chunk whose masks were
// not cached): the merge of the decoding path a block at a time, the models read
// from their words where the AVX2 kernels take the block whole, decoded for a last
// block of a few elements and without AVX2. Every step is elementwise
// (combineTaskVectors per element, the same decoding and encoding), so the same bits
// (TestDellaKernelFusedMatchesDecoded).
func dellaMergeFused(m *methodRun, kc *keepCache, scale []float32, pool *maskPool, cpool, bpool *sync.Pool) func([]byte, dtype.DType, []Operand, []float64, Chunk) bool {
	return func(out []byte, outDT dtype.DType, in []Operand, _ []float64, pos Chunk) bool {
		if outDT != dtype.BF16 || !allBF16(in) || len(in[0].Data) != len(out) {
			return false
		}
		cs := cpool.Get().(*combineScratch)
		defer cpool.Put(cs)
		n := len(out) / 2
		sc := pool.get(n)
		defer pool.put(sc)
		bits, ok := kc.takeForKernels(pos, n, sc.keep, cs)
		if !ok {
			return false // made again from the decoded inputs
		}
		defer func() { kc.release(bits); cs.bits = bits[:0] }()
		bs := bpool.Get().(*dellaMergeScratch)
		defer bpool.Put(bs)
		for j := 0; j < n; j += dellaMergeBlock {
			e := min(j+dellaMergeBlock, n)
			for i := range bs.keep {
				bs.keep[i], bs.bits[i] = sc.keep[i][j:e], bits[i][j/64:]
				bs.x[i] = in[i+1].Data[2*j : 2*e]
			}
			// The operands hold the chunk's whole words, all that Decode checks.
			_ = dtype.Decode(bs.in[0][:e-j], in[0].Data[2*j:2*e], dtype.BF16)
			if haveTiesAsm && (e-j)%8 == 0 {
				dellaCombineBF16(m, bs.dst[:e-j], bs.in[0][:e-j], bs.x, bs.bits, scale, cs)
			} else {
				for k := 1; k < len(in); k++ {
					_ = dtype.Decode(bs.in[k][:e-j], in[k].Data[2*j:2*e], dtype.BF16)
				}
				combineTaskVectors(m, bs.dst[:e-j], bs.in, bs.keep, bs.bits, scale, nil, cs, haveTiesAsm)
			}
			_ = dtype.Encode(out[2*j:2*e], bs.dst[:e-j], dtype.BF16)
		}
		return true
	}
}

func newDellaMergePool(lanes int) *sync.Pool {
	return &sync.Pool{New: func() any {
		s := &dellaMergeScratch{dst: make([]float32, dellaMergeBlock), keep: make([][]bool, lanes), bits: make([][]uint64, lanes), x: make([][]byte, lanes)}
		for range lanes + 1 {
			s.in = append(s.in, make([]float32, dellaMergeBlock))
		}
		return s
	}}
}

// dellaCombineBF16 is combineTaskVectors' assembly part (n a multiple of 8) with the
// models' values read from their BF16 words by dellaDeltaBF16Asm, the rest as there:
// per element the same operations in the same order (the widened word is the
// decoded value), so the same bits.
func dellaCombineBF16(m *methodRun, dst, base []float32, models [][]byte, bits [][]uint64, scale []float32, sc *combineScratch) {
	n := len(dst)
	sign := m.tv.consensus == ConsensusSign
	clear(dst)
	for i, x := range models {
		var d []float32
		if sign {
			d = sc.d[i]
		}
		dellaDeltaBF16Asm(dst, d, x, base, bits[i], scale[i], m.weights[i], n)
	}
	if !sign {
		tvFinishAsm(dst, base, m.lambda, n)
		return
	}
	tiesSignAsm(sc.sign, dst, n)
	clear(dst)
	clear(sc.den[:n])
	for i, w := range m.weights {
		tiesAccumAsm(dst, sc.den, sc.d[i], sc.sign, w, n)
	}
	if m.tv.normalize {
		tiesFinishAsm(dst, base, sc.den, m.lambda, n)
	} else {
		tvFinishAsm(dst, base, m.lambda, n)
	}
}
