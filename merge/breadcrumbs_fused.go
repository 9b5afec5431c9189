package merge

import (
	"math"
	"sync"
	"unsafe"

	"github.com/gomerge/gomerge/formats/dtype"
)

// bandMerge is breadcrumbs' merge from BF16 words to BF16 words (Kernel.Fused),
// without sign election with the AVX-512 kernel bandMergeBF16AVX512: each model's
// band between its two cuts, weighted and added, widened and rounded in registers,
// sixteen elements at a time. The groups the kernel leaves (one where a tied cut's
// rank falls among the elements at its pattern, the last few) go eight at a time
// through keepMasks' band test and combineTaskVectors, as the decoding path does
// them, so the same bits (TestRankMethodsFusedMatchDecoded, TestBandMergeWords).
//
// With sign election (breadcrumbs --ties) the kernel is TIES' (tiesMergeBF16AVX512)
// in its bands' form. DARE's merge runs the same way where its L1 pass kept the
// chunk's masks (kc): each model's elements are those its mask keeps, not a band;
// with sign election through TIES' kernel in its masks' form. della's merge is the
// same with the masks its ranking pass kept (dellaKernel).
type bandMerge struct {
	m     *methodRun
	cuts  [][]*cut   // per model, the rank selector's: the upper cut first (nil with kc)
	kc    *keepCache // DARE's masks, kept by its L1 pass (nil: breadcrumbs' bands)
	scale []float32  // the rescale factors (nil: none)
	pool  sync.Pool  // *bandScratch
	cpool *sync.Pool
}

type bandScratch struct {
	lanes []tiesLane // two per model: the lower cut (w: the weight), the upper (w: the scale)
	xs    []*uint16
	masks []*uint64 // with kc: each model's row of packed bits
	// With sign election: TIES' kernel's lane records (one per model: w the
	// weight), and the factors s (1 without rescale).
	tlanes []tiesLane
	s      []float32
	words  [][]uint16 // the chunk's, base first
	// A group's, for group: the widened inputs (base first), their views, the masks,
	// the output.
	wide, in [][]float32
	mags     []uint32
	keep     [][]bool
	out      []float32
}

func newBandMerge(m *methodRun, cuts [][]*cut, kc *keepCache, scale []float32, cpool *sync.Pool) *bandMerge {
	b := &bandMerge{m: m, cuts: cuts, kc: kc, scale: scale, cpool: cpool}
	lanes := len(m.weights)
	b.pool.New = func() any {
		s := &bandScratch{lanes: make([]tiesLane, 2*lanes), xs: make([]*uint16, lanes), masks: make([]*uint64, lanes),
			words: make([][]uint16, lanes+1), tlanes: make([]tiesLane, lanes),
			s:  make([]float32, lanes),
			in: make([][]float32, lanes+1), mags: make([]uint32, 8), out: make([]float32, 8)}
		for range lanes + 1 {
			s.wide = append(s.wide, make([]float32, 8))
		}
		for range lanes {
			s.keep = append(s.keep, make([]bool, 8))
		}
		return s
	}
	return b
}

// fused is the merge's Kernel.Fused where the CPU has the AVX-512 kernels and the
// inputs and the output are BF16 (words); false otherwise, for the caller's other
// path.
func (b *bandMerge) fused(out []byte, outDT dtype.DType, in []Operand, pos Chunk) bool {
	return haveTiesBF16AVX512 && outDT == dtype.BF16 && allBF16(in) && b.words(out, in, pos)
}

// words merges chunk pos from the operands' BF16 words into out's; false, having
// written nothing that counts, for operands that are not the chunk's words.
func (b *bandMerge) words(out []byte, in []Operand, pos Chunk) bool {
	n := len(out) / 2
	s := b.pool.Get().(*bandScratch)
	defer b.pool.Put(s)
	dst, ok := dtype.Uint16s(out)
	if !ok {
		return false
	}
	if s.words, ok = bf16Words(s.words, in, n); !ok {
		return false
	}
	cs := b.cpool.Get().(*combineScratch)
	defer b.cpool.Put(cs)
	var masks []*uint64
	var bits [][]uint64
	if b.kc != nil {
		// The chunk's masks, if the L1 pass kept them (else the decoding path draws
		// them again); nothing declines after this.
		if bits, ok = b.kc.take(pos.Index, cs.bits[:0]); !ok {
			return false
		}
		defer func() { b.kc.release(bits); cs.bits = bits[:0] }()
		for i, row := range bits {
			s.masks[i] = unsafe.SliceData(row)
		}
		masks = s.masks
	}
	for i := range s.xs {
		if b.kc != nil {
			s.lanes[2*i], s.lanes[2*i+1] = tiesLane{}, tiesLane{}
		} else {
			s.lanes[2*i], s.lanes[2*i+1] = bandLanes(b.cuts[i], pos)
		}
		s.lanes[2*i].w = b.m.weights[i]
		s.lanes[2*i+1].w = 1
		if b.scale != nil {
			s.lanes[2*i+1].w = b.scale[i]
		}
		s.xs[i] = unsafe.SliceData(s.words[i+1])
		s.tlanes[i] = tiesLane{w: b.m.weights[i]}
		s.s[i] = s.lanes[2*i+1].w
	}
	sign := b.m.tv.consensus == ConsensusSign
	for j := 0; j < n; {
		if n-j >= 16 {
			switch {
			case sign && masks != nil:
				j = tiesMergeWordsAsm(dst, s.words[0], s.xs, s.tlanes, b.m.lambda, j, n, masks, s.s, b.m.tv.normalize, false)
			case sign:
				j = tiesMergeWordsAsm(dst, s.words[0], s.xs, s.lanes, b.m.lambda, j, n, nil, s.s, b.m.tv.normalize, true)
			default:
				j = bandMergeWordsAsm(dst, s.words[0], s.xs, s.lanes, b.m.lambda, j, n, masks)
			}
			if j == n {
				break
			}
		}
		end := min(j+8, n)
		b.group(dst[j:end], s, j, bits, cs)
		j = end
	}
	return true
}

// group merges the up to eight elements from j as the decoding path does: keepBand
// with the cuts' running counts (or the masks' bits, with kc), then
// combineTaskVectors.
func (b *bandMerge) group(dst []uint16, s *bandScratch, j int, bits [][]uint64, cs *combineScratch) {
	k := len(dst)
	in := s.in
	for i := range in {
		in[i] = s.wide[i][:k]
		for e := range k {
			in[i][e] = math.Float32frombits(uint32(s.words[i][j+e]) << 16)
		}
	}
	mags := s.mags[:k]
	for i := range s.keep {
		s.keep[i] = s.keep[i][:k]
		if bits != nil {
			for e := range k {
				s.keep[i][e] = maskBit(bits[i], j+e)
			}
			continue
		}
		deltaMagnitudes(mags, i, in)
		keepBand(s.keep[i], mags, &s.lanes[2*i], &s.lanes[2*i+1]) // the cuts' counts carry on
	}
	out := s.out[:k]
	combineTaskVectors(b.m, out, in, s.keep, nil, b.scale, nil, cs, haveTiesAsm)
	for e, v := range out {
		dst[e] = dtype.Float32ToBF16(v)
	}
}
