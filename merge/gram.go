package merge

import (
	"encoding/binary"
	"math"
	"sync"

	"github.com/gomerge/gomerge/formats/dtype"
)

// Gram sums: the inner products ⟨y_i, y_k⟩ over a whole tensor of the vectors
// y_i = θ_i − θ_base (or θ_i) that slerp, nuslerp, multislerp, karcher and
// model_stock take their coefficients from. They have this one home so that every
// method's dot products and squared norms are added the same way
// (docs/numerics.md#reductions): each difference and each product in float64, the
// chunk's element j added into lane j mod 8 of its pair, the lanes combined as
// combineLanes does at the end of the chunk, the chunks' sums in chunk order.
//
// Lanes rather than element order because a float64 sum in element order waits on
// each addition's latency: the chains made these passes cost more than the merges
// they feed (bench/README.md, "Gram sums in lanes"). Eight lanes per pair are
// independent sums the AVX2 kernels keep in registers.

// gramBlock is the elements a chunk's Gram sums take at a time: each vector's block
// of differences (2 KiB) stays in the first-level cache while the pairs read it.
const gramBlock = 256

// gramStride is the distance in float64s between the vectors' rows of differences
// in gramScratch.d: a block and one 64-byte line, so that no two rows start a
// multiple of 2 KiB apart (rows 2 KiB apart contended for the first-level cache's
// banks in the chain kernels these replaced, bench/sections/multislerp_model_stock.md;
// not measured again with the lanes).
const gramStride = gramBlock + 8

// gramPairs is the pairs (i, k), i ≤ k, of n vectors, in the order of gramPass's
// sums: (0,0), (0,1), …, (0,n−1), (1,1), ….
func gramPairs(n int) [][2]int {
	pairs := make([][2]int, 0, n*(n+1)/2)
	for i := range n {
		for k := i; k < n; k++ {
			pairs = append(pairs, [2]int{i, k})
		}
	}
	return pairs
}

// gramPass returns a pass that sums, over the whole tensor, the inner products
// ⟨y_i, y_k⟩ (i ≤ k) of the vectors y_i = in[1+i] − in[0] (withBase) or y_i = in[i],
// and a function that reads the sums as a symmetric matrix once the pass is done.
// It reads BF16 inputs straight from their words (Pass.Fused), others decoded; both
// give the same bits. A sum that is NaN is read as math.NaN(), whatever its payload:
// which NaN survives a product or a sum of two NaNs is the CPU's (and the
// compiler's) choice, and the coefficients must not depend on it.
func gramPass(n int, withBase bool) (Pass, func() [][]float64) {
	pairs := gramPairs(n)
	g := make([][]float64, n)
	for i := range g {
		g[i] = make([]float64, n)
	}
	pool := sync.Pool{New: func() any { return newGramScratch(n, pairs) }}
	pass := Pass{
		NumStats: len(pairs),
		Chunk: func(_ Chunk, in, _ [][]float32, acc []float64) {
			var base []float32
			if withBase {
				base, in = in[0], in[1:]
			}
			s := pool.Get().(*gramScratch)
			defer pool.Put(s)
			s.chunk(in[:n], base, acc)
		},
		Fused: func(_ Chunk, in []Operand, acc []float64) bool {
			y, b, ok := bf16Operands(in, withBase)
			if !ok {
				return false
			}
			s := pool.Get().(*gramScratch)
			defer pool.Put(s)
			s.chunkBF16(y[:n], b, acc)
			return true
		},
		Done: func(perChunk []float64) error {
			sums := make([]float64, len(pairs))
			for c := 0; c < len(perChunk); c += len(pairs) {
				for p := range sums {
					sums[p] += perChunk[c+p]
				}
			}
			for i, row := range gramMatrix(pairs, sums, n) {
				copy(g[i], row)
			}
			return nil
		},
	}
	return pass, func() [][]float64 { return g }
}

// gramMatrix reads the sums of pairs (gramPairs(n)) as the symmetric matrix of n
// vectors' inner products, each through gramSum.
func gramMatrix(pairs [][2]int, sums []float64, n int) [][]float64 {
	g := make([][]float64, n)
	for i := range g {
		g[i] = make([]float64, n)
	}
	for p, q := range pairs {
		g[q[0]][q[1]], g[q[1]][q[0]] = gramSum(sums[p]), gramSum(sums[p])
	}
	return g
}

// gramSum is a Gram sum as the coefficients read it: a NaN as math.NaN() (gramPass
// says why).
func gramSum(v float64) float64 {
	if math.IsNaN(v) {
		return math.NaN()
	}
	return v
}

// gramIndex is the index of the pair (i, k), i ≤ k, in gramPairs(n).
func gramIndex(n, i, k int) int { return i*n - i*(i-1)/2 + k - i }

// gramLayout says which kernel takes a set of pairs: all pairs of two or of three
// vectors in gramPairs' order have kernels of their own (their sums in registers
// side by side); any other set goes a pair at a time.
type gramLayout int

const (
	gramEachPair gramLayout = iota
	gramTwo
	gramThree
)

func layoutOf(pairs [][2]int) gramLayout {
	switch len(pairs) {
	case 3:
		if [3][2]int(pairs) == [3][2]int(gramPairs(2)) {
			return gramTwo
		}
	case 6:
		if [6][2]int(pairs) == [6][2]int(gramPairs(3)) {
			return gramThree
		}
	}
	return gramEachPair
}

// gramScratch is a chunk's: a block's differences per vector (row i at
// d[i*gramStride:]) and each pair's lane sums.
type gramScratch struct {
	pairs  [][2]int
	layout gramLayout
	d      []float64
	lanes  [][lanes]float64
	sums   []float64 // a caller's, for one vector's sums (modelStockFactors)
}

func newGramScratch(vectors int, pairs [][2]int) *gramScratch {
	return &gramScratch{
		pairs:  pairs,
		layout: layoutOf(pairs),
		d:      make([]float64, vectors*gramStride),
		lanes:  make([][lanes]float64, len(pairs)),
		sums:   make([]float64, len(pairs)),
	}
}

// chunk adds to acc[p] the inner product of pair p over the decoded chunk: y[i] − b
// (b nil: y[i]) in float64, a block at a time.
func (s *gramScratch) chunk(y [][]float32, b []float32, acc []float64) {
	clear(s.lanes)
	m := len(y[0])
	for lo := 0; lo < m; lo += gramBlock {
		hi := min(lo+gramBlock, m)
		var bb []float32
		if b != nil {
			bb = b[lo:hi]
		}
		for i, yi := range y {
			gramDiffF32(s.d[i*gramStride:][:hi-lo], yi[lo:hi], bb)
		}
		s.block(hi - lo)
	}
	s.flush(acc)
}

// chunkBF16 is chunk from BF16 words: the same differences (gramDiffBF16), so the
// same bits.
func (s *gramScratch) chunkBF16(y [][]byte, b []byte, acc []float64) {
	clear(s.lanes)
	m := len(y[0]) / 2
	// Two or three vectors with AVX-512 in one pass from the words (no differences
	// stored), the last few a block as below: the same sums.
	for lo := gramWordsAsm(s.lanes, y, b, s.layout, m); lo < m; lo += gramBlock {
		hi := min(lo+gramBlock, m)
		var bb []byte
		if b != nil {
			bb = b[2*lo : 2*hi]
		}
		for i, yi := range y {
			gramDiffBF16(s.d[i*gramStride:][:hi-lo], yi[2*lo:2*hi], bb)
		}
		s.block(hi - lo)
	}
	s.flush(acc)
}

// block adds the products of the first n differences of each pair into its lanes.
// A block starts at a multiple of 8 in the chunk, so element j of a block is in lane
// j mod 8.
func (s *gramScratch) block(n int) {
	j := 0
	if haveLerpBF16Asm && n >= lanes {
		j = gramLanesAsm(s.lanes, s.d, s.pairs, s.layout, n&^(lanes-1))
	}
	gramLanesGo(s.lanes, s.d, s.pairs, j, n)
}

// flush adds each pair's lanes, combined, to acc.
func (s *gramScratch) flush(acc []float64) {
	for p := range s.lanes {
		acc[p] += combineLanes(s.lanes[p][:])
	}
}

// gramDiffBF16 writes d[j] = float64(y_j) − float64(b_j) for the BF16 words y and b
// (b nil: float64(y_j)): with AVX2 eight at a time, gramDiffBF16Go for the rest.
func gramDiffBF16(d []float64, y, b []byte) {
	j := 0
	if haveLerpBF16Asm {
		j = gramDiffBF16Asm(d, y, b)
	}
	if b != nil {
		b = b[2*j:]
	}
	gramDiffBF16Go(d[j:], y[2*j:], b)
}

// gramDiffF32 writes d[j] = float64(y_j) − float64(b_j) (b nil: float64(y_j)): with
// AVX2 eight at a time, gramDiffF32Go for the rest.
func gramDiffF32(d []float64, y, b []float32) {
	j := 0
	if haveLerpBF16Asm {
		j = gramDiffF32Asm(d, y, b)
	}
	if b != nil {
		b = b[j:]
	}
	gramDiffF32Go(d[j:], y[j:], b)
}

// gramDiffF32Go is gramDiffF32 in Go: the reference of the assembly.
func gramDiffF32Go(d []float64, y, b []float32) {
	y = y[:len(d)]
	if b == nil {
		for j, v := range y {
			d[j] = float64(v)
		}
		return
	}
	b = b[:len(d)]
	for j, v := range y {
		d[j] = float64(v) - float64(b[j])
	}
}

// gramDiffBF16Go is gramDiffBF16 in Go: the reference of the assembly, and
// the differences chunk takes on the decoded values.
func gramDiffBF16Go(d []float64, y, b []byte) {
	le := binary.LittleEndian
	y = y[:2*len(d)]
	if b == nil {
		for j := range d {
			d[j] = float64(dtype.BF16ToFloat32(le.Uint16(y[2*j:])))
		}
		return
	}
	b = b[:2*len(d)]
	for j := range d {
		d[j] = float64(dtype.BF16ToFloat32(le.Uint16(y[2*j:]))) - float64(dtype.BF16ToFloat32(le.Uint16(b[2*j:])))
	}
}

// gramLanesGo adds, for each pair p = (i, k), the products d_i[j]·d_k[j] for j in
// [from, n) into lanes[p][j mod 8], d_i the row at d[i*gramStride:]: the reference
// of the assembly.
func gramLanesGo(ls [][lanes]float64, d []float64, pairs [][2]int, from, n int) {
	for p, q := range pairs {
		a, c := d[q[0]*gramStride:][:n], d[q[1]*gramStride:][:n]
		s := &ls[p]
		for j := from; j < n; j++ {
			s[j%lanes] += float64(a[j] * c[j]) // rounded: no platform fuses it
		}
	}
}

// gramRef is the float64 Gram matrix of y_i = models[i] − base (base may be nil),
// each sum in element order: the plain statement the methods' tolerance tests use.
func gramRef(base []float32, models [][]float32) [][]float64 {
	g := make([][]float64, len(models))
	for i := range g {
		g[i] = make([]float64, len(models))
		for k := range g {
			for j := range models[i] {
				a, b := float64(models[i][j]), float64(models[k][j])
				if base != nil {
					a -= float64(base[j])
					b -= float64(base[j])
				}
				g[i][k] += a * b
			}
		}
	}
	return g
}
