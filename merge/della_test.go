package merge

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// TestDellaAgainstReference runs della and della_linear, every rescale, on BF16 and
// F32, with per-model densities including 1 and 0, and compares with dellaRef.
// big.weight's rows are longer than a chunk, odd.weight's rows straddle chunk ends
// nowhere but start mid-chunk: both take the row paths.
func TestDellaAgainstReference(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		base, models := methodFixture(17, dt, 3)
		weights := []float64{0.7, -0.2, 1.3}
		for _, method := range []string{"della", "della_linear"} {
			for _, dens := range [][]float64{{0.5, 0.3, 0.8}, {1, 0.4, 0}} {
				for _, rescale := range []string{"off", "l1", "inverse"} {
					for _, normalize := range []Switch{SwitchOn, SwitchOff} {
						if dt == dtype.BF16 && (rescale != "l1" || normalize == SwitchOff) {
							continue // the defaults; F32 runs every combination
						}
						p := Params{Lambda: 0.9, Epsilon: 0.1, Seed: 3, Normalize: normalize, Rescaling: SwitchOn, Rescale: rescale}
						o := tvOptions{sparsify: SparsifyDella, consensus: Consensus(b2i(method == "della")), normalize: normalize == SwitchOn, rescale: rescale}
						if rescale == "off" {
							p.Rescaling, p.Rescale, o.rescale = SwitchOff, "l1", "none"
						}
						what := fmt.Sprintf("%s/%s/dens=%v/rescale=%s/normalize=%v", dt, method, dens, rescale, o.normalize)
						got := runMethodFiles(t, dt, method, p, base, models, weights, dens, 2)
						for _, name := range referenceNames(base) {
							ref, scale := dellaRef(o, base.shapes[name], base.vals[name], vals(models, name), weights, dens, 0.1, 0.9, dareKey(3, name))
							checkClose(t, what+" "+name, got[name], ref, scale, dt)
						}
					}
				}
			}
		}
	}
}

// TestDellaKeepRates: the kept fraction of each magnitude decile of a row is the
// decile's probability (density − ε … density + ε), within 4 standard deviations, and
// the overall rate is the density; with ε = 0 DELLA keeps what DARE keeps.
func TestDellaKeepRates(t *testing.T) {
	const rows, L = 131, 1000
	base := make([]float32, rows*L)
	x := make([]float32, rows*L)
	for j := range x {
		x[j] = float32(j%L+1) * 1e-3 // rank in row = j % L
	}
	tp := &TensorPlan{Name: "w", Shape: []int64{rows, L}, In: []Operand{f32Operand(base), f32Operand(x)}}
	m := &methodRun{dens: []float64{0.5}, p: Params{Epsilon: 0.3}}
	ds, err := newDellaSelector(tp, m, dareKey(1, "w"), false)
	if err != nil {
		t.Fatal(err)
	}
	pool := newMaskPool(1)
	var decile [10]float64
	for off := int64(0); off < rows*L; off += ChunkElems {
		end := min(off+ChunkElems, rows*L)
		sc := pool.get(int(end - off))
		keep := ds.keepChunk(sc, [][]float32{base[off:end], x[off:end]}, Chunk{Index: off / ChunkElems, Offset: off})
		for j, k := range keep[0] {
			if k {
				decile[(off+int64(j))%L/100]++
			}
		}
		pool.put(sc)
	}
	var total float64
	for d, c := range decile {
		total += c
		nd := float64(rows * 100)
		p := 0.2 + 0.6*(float64(d)*100+49.5)/(L-1)
		if sd := math.Sqrt(nd * p * (1 - p)); math.Abs(c-nd*p) > 4*sd {
			t.Errorf("decile %d: kept %v of %v, want about %v", d, c, nd, nd*p)
		}
	}
	if n := float64(rows * L); math.Abs(total-0.5*n) > 4*math.Sqrt(n*0.25) {
		t.Errorf("kept %v of %v, want about half", total, n)
	}
	// ε = 0: the keep probability is the density everywhere, DARE's draw.
	m.p.Epsilon = 0
	ds, _ = newDellaSelector(tp, m, dareKey(1, "w"), false)
	sc := pool.get(ChunkElems)
	keep := ds.keepChunk(sc, [][]float32{base[:ChunkElems], x[:ChunkElems]}, Chunk{})
	for j, k := range keep[0] {
		if want := dareDraw(dareKey(1, "w"), 0, int64(j)) < densityThreshold(0.5); k != want {
			t.Fatalf("ε = 0: element %d kept %v, DARE %v", j, k, want)
		}
	}
}

func f32Operand(v []float32) Operand {
	b := make([]byte, 4*len(v))
	for j, x := range v {
		bits := math.Float32bits(x)
		b[4*j], b[4*j+1], b[4*j+2], b[4*j+3] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
	}
	return Operand{DType: dtype.F32, Data: b, File: "test"}
}

// TestDellaHandWorked pins della_linear on a row whose draws are worked out: with
// density 0.5 and ε = 0.4 the keep probabilities of a row of 3 are 0.1, 0.5 and 0.9
// for the smallest, middle and largest |δ|, and the inverse rescale divides each kept
// entry by its own probability.
func TestDellaHandWorked(t *testing.T) {
	one := func(vals ...float32) *ckpt {
		return &ckpt{names: []string{"w"}, shapes: map[string][]int64{"w": {int64(len(vals))}}, vals: map[string][]float32{"w": vals}}
	}
	// Model deltas (0.2, −3, 1): ranks 0 (0.2), 2 (−3), 1 (1): p = 0.1, 0.9, 0.5.
	probs := []float64{0.1, 0.9, 0.5}
	for seed := uint64(0); seed < 8; seed++ {
		key := dareKey(seed, "w")
		want := make([]float32, 3)
		for j, d := range []float32{0.2, -3, 1} {
			if dareDraw(key, 0, int64(j)) < densityThreshold(probs[j]) {
				want[j] = float32(float64(d) / probs[j]) // the entry over its probability
			}
		}
		got := runMethodFiles(t, dtype.F32, "della_linear", Params{Density: 0.5, Epsilon: 0.4, Lambda: 1, Seed: seed, Rescale: "inverse"},
			one(0, 0, 0), []*ckpt{one(0.2, -3, 1)}, nil, nil, 1)["w"]
		for j := range want {
			if math.Abs(float64(got[j]-want[j])) > 1e-6 {
				t.Errorf("seed %d: got %v, want %v", seed, got, want)
				break
			}
		}
	}
	// Every entry kept (density 1): della is TIES without trimming: signs of
	// 1·(1, −2) + 1·(−3, −1) = (−2, −3) elect −, −; normalize by the agreeing weights.
	got := runMethodFiles(t, dtype.F32, "della", Params{Density: 1, Epsilon: 0.3, Lambda: 1},
		one(0, 0), []*ckpt{one(1, -2), one(-3, -1)}, nil, nil, 1)["w"]
	if got[0] != -3 || got[1] != -1.5 {
		t.Errorf("della density 1: got %v, want [-3 -1.5]", got)
	}
}

// TestDellaEpsilonRefused: density ± ε outside (0, 1) is refused, naming the model,
// as mergekit raises; densities 0 and 1 take any ε.
func TestDellaEpsilonRefused(t *testing.T) {
	base, models := methodFixture(2, dtype.F32, 1)
	for _, tc := range []struct {
		density, eps float64
		ok           bool
	}{{0.5, 0.15, true}, {0.1, 0.15, false}, {0.9, 0.1, false}, {1, 0.4, true}, {0, 0.4, true}, {0.5, 0.5, false}} {
		dir := t.TempDir()
		base.write(t, dir+"/b.safetensors", dtype.F32)
		models[0].write(t, dir+"/m.safetensors", dtype.F32)
		j := MethodJob{Method: "della", Base: dir + "/b.safetensors", Models: []Model{{Path: dir + "/m.safetensors", Weight: 1, Density: math.NaN()}},
			Params: Params{Density: tc.density, Epsilon: tc.eps, Lambda: 1}, Job: Job{Out: dir + "/out.safetensors"}}
		_, err := RunMethod(t.Context(), j)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrBadParameter) {
			t.Errorf("density %v ε %v: %v", tc.density, tc.eps, err)
		}
	}
}

// TestSortRowKeys checks the radix sort against slices.Sort on rows with many equal
// magnitudes, magnitudes that differ in one byte only (skipped passes), the extremes
// of the bit patterns (+Inf, NaN) and lengths 0 to a few thousand.
func TestSortRowKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, 2, 3, 17, 256, 2048, 5632} {
		for kind := range 4 {
			keys := make([]uint64, n)
			for j := range keys {
				var m uint32
				switch kind {
				case 0: // any magnitude
					m = absBits(float32(rng.NormFloat64()))
				case 1: // few distinct values: long runs of ties
					m = absBits(float32(rng.IntN(4)))
				case 2: // one byte varies
					m = 0x3f800000 | uint32(rng.IntN(256))<<8
				case 3: // the ends of the order
					m = []uint32{0, 1, 0x7f800000, 0x7fc00000, 0x7fffffff}[rng.IntN(5)]
				}
				keys[j] = uint64(m)<<32 | uint64(j)
			}
			want := slices.Clone(keys)
			slices.Sort(want)
			sortRowKeys(keys, make([]uint64, n))
			if !slices.Equal(keys, want) {
				t.Fatalf("n %d kind %d: radix order differs from slices.Sort", n, kind)
			}
		}
	}
}

// TestDellaBucketsMatchSort: the bucketed ranks (keepRowBuckets) give the masks of
// a sort of every row (keepRowSorted), bit for bit, and the L1 sums taken with them
// are l1Pass's, on rows of one entry, rows that
// straddle chunk ends and rows longer than a chunk; magnitudes of BF16 task vectors
// (long runs of equal ones), of F32 ones, of a few distinct values, spread over far
// more octaves than the buckets cover, all zero, and with ±Inf and NaN; ε from 0 to
// 0.45 and densities 0 and 1 beside ranked ones.
func TestDellaBucketsMatchSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	gen := func(kind int, n int) (base, x []float32) {
		base, x = make([]float32, n), make([]float32, n)
		bf16 := func(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ 0xffff) }
		for j := range x {
			b := float32(0.02 * rng.NormFloat64())
			switch kind {
			case 0: // BF16 weights, perturbed
				base[j] = bf16(b)
				x[j] = bf16(b + float32(0.01*rng.NormFloat64()))
			case 1: // F32
				base[j], x[j] = b, b+float32(0.01*rng.NormFloat64())
			case 2: // few distinct magnitudes
				x[j] = float32(rng.IntN(5)-2) * 0.25
			case 3: // 2^-100 to 2^20
				x[j] = float32(math.Ldexp(rng.Float64()+0.5, rng.IntN(120)-100))
			case 4: // no change
				base[j], x[j] = b, b
			case 5: // the ends of the order
				x[j] = []float32{0, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1e-45, 3}[rng.IntN(6)]
			}
		}
		return base, x
	}
	for _, shape := range [][]int64{{300, 1}, {17}, {40, 2048}, {30, 5632}, {2, 70000}, {7, 333}} {
		n := shape[0]
		if len(shape) > 1 {
			n *= shape[1]
		}
		for kind := range 6 {
			for _, eps := range []float64{0, 0.15, 0.45} {
				base, x1 := gen(kind, int(n))
				_, x2 := gen(kind, int(n))
				for j := range x2 { // a second model of the same base
					x2[j] += base[j]
				}
				tp := &TensorPlan{Name: "w", Shape: shape, In: []Operand{f32Operand(base), f32Operand(x1), f32Operand(x2)}}
				dens := []float64{0.5, 0.5 + eps/2 + 0.01}
				if eps == 0 {
					dens = []float64{0.3, 1}
				}
				m := &methodRun{dens: dens, p: Params{Epsilon: eps}}
				fast, err := newDellaSelector(tp, m, dareKey(9, "w"), false)
				if err != nil {
					t.Fatal(err)
				}
				if fast.thr == nil {
					t.Fatalf("eps %v: no thresholds", eps)
				}
				sorted, _ := newDellaSelector(tp, m, dareKey(9, "w"), false)
				sorted.thr = nil
				pool := newMaskPool(2)
				// The sums l1Pass takes over the sorted masks, against those
				// taken with the bucketed ones.
				pass := l1Pass(pool, sorted.keepChunk, nil, make([]float32, 2), 2)
				for off := int64(0); off < n; off += ChunkElems {
					end := min(off+ChunkElems, n)
					in := [][]float32{base[off:end], x1[off:end], x2[off:end]}
					pos := Chunk{Index: off / ChunkElems, Offset: off}
					a, b := pool.get(int(end-off)), pool.get(int(end-off))
					sa, sb := make([]float64, 4), make([]float64, 4)
					ka, kb := fast.keepChunkL1(a, in, pos, sa), sorted.keepChunk(b, in, pos)
					for i := range ka {
						if !slices.Equal(ka[i], kb[i]) {
							t.Fatalf("shape %v kind %d ε %v model %d chunk at %d: bucketed masks differ from the sorted ones", shape, kind, eps, i, off)
						}
					}
					pool.put(a)
					pool.put(b)
					pass.Chunk(pos, in, nil, sb)
					for k := range sa {
						if math.Float64bits(sa[k]) != math.Float64bits(sb[k]) {
							t.Fatalf("shape %v kind %d ε %v chunk at %d: L1 sum %d is %v, l1Pass's %v", shape, kind, eps, off, k, sa[k], sb[k])
						}
					}
				}
			}
		}
	}
}

// TestDellaMatchesGeneralKernel: della's own kernel (bucketed ranks, the L1 sums
// taken with the masks) writes the bits of the family's general kernel (every row
// sorted, l1Pass), on BF16 and F32 task vectors with NaN, ±Inf, zero and opposite
// deltas, densities 0 and 1 beside ranked ones, whether the merge pass takes the
// masks from the cache or ranks again.
func TestDellaMatchesGeneralKernel(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		base, models := methodFixture(43, dt, 3)
		for _, name := range base.names {
			b := base.vals[name]
			for j := 0; j < len(b); j += 89 {
				switch j / 89 % 4 {
				case 0:
					models[0].vals[name][j] = float32(math.NaN())
				case 1:
					models[1].vals[name][j] = float32(math.Inf(-1))
				case 2:
					models[2].vals[name][j] = b[j] // a zero delta
				case 3:
					models[1].vals[name][j] = 2*b[j] - models[0].vals[name][j] // opposite deltas
				}
			}
		}
		weights := []float64{0.6, 1.2, -0.4}
		for _, method := range []string{"della", "della_linear"} {
			for _, dens := range [][]float64{{0.5, 0.3, 0.8}, {1, 0.4, 0}} {
				for _, limit := range []int64{0, 1} {
					p := Params{Lambda: 0.9, Epsilon: 0.15, Seed: 5, Normalize: SwitchOn, Rescaling: SwitchOn, Rescale: "l1", keepCacheBytes: limit}
					fast := runMethodFiles(t, dt, method, p, base, models, weights, dens, 2)
					p.generalKernel = true
					general := runMethodFiles(t, dt, method, p, base, models, weights, dens, 2)
					for _, name := range base.names {
						for j, v := range fast[name] {
							if g := general[name][j]; math.Float32bits(v) != math.Float32bits(g) && !(v != v && g != g) {
								t.Fatalf("%s %s dens %v cache %d %s[%d]: della's kernel %v, general %v", dt, method, dens, limit, name, j, v, g)
							}
						}
					}
				}
			}
		}
	}
}

// TestPackBools compares packBools and unpackBools, eight at a time, with the plain
// loops one bit at a time, on every length to 200 and a dirty destination.
func TestPackBools(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := range 201 {
		src := make([]bool, n)
		for j := range src {
			src[j] = rng.IntN(2) == 1
		}
		words := (n + 63) / 64
		got, want := make([]uint64, words), make([]uint64, words)
		for j := range got {
			got[j] = rng.Uint64() // packBools clears
		}
		packBools(got, src)
		for j, v := range src {
			if v {
				want[j>>6] |= 1 << (j & 63)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d: packed %x, want %x", n, got, want)
		}
		back := make([]bool, n)
		for j := range back {
			back[j] = rng.IntN(2) == 1
		}
		unpackBools(back, got)
		if !slices.Equal(back, src) {
			t.Fatalf("n=%d: unpacked %v, want %v", n, back, src)
		}
	}
}

// TestDellaDecisionsExact: the bucket decisions (the top 32 bits of the draws
// against bounds of the thresholds') with the exact ranks of the entries they leave
// undecided, counted (rankCounted) or sorted (rankMarked), keep what a sort of the
// row keeps, with draws on DELLA's thresholds, one off them, sharing their top 32
// bits and next to those, for part of a row as for the whole; and the bounds of
// DELLA's thresholds are the tight ones.
func TestDellaDecisionsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 8))
	for _, n := range []int{1, 7, 64, 2048, 2051, 5632} {
		for round := range 4 {
			mags := make([]uint32, n)
			for j := range mags {
				switch round {
				case 0: // few magnitudes: large buckets
					mags[j] = uint32(rng.IntN(6)) << 16
				case 1: // a bucket's worth of distinct ones
					mags[j] = 0x3c000000 | uint32(rng.IntN(1<<16))
				default: // BF16 task vectors
					mags[j] = math.Float32bits(float32(math.Abs(0.01*rng.NormFloat64()))) &^ 0x7fff
				}
			}
			thr := dellaThresholds([]float64{0.4}, []float64{0.15, 0.35}[round%2], int64(n))[0]
			j0 := n / 3
			draws := make([]uint64, n-j0)
			for j := range draws {
				u := thr[rng.IntN(n)]
				switch rng.IntN(6) {
				case 0:
					u = rng.Uint64()
				case 1:
					u--
				case 2:
					u++
				case 3:
					u ^= uint64(rng.Uint32()) // the same top 32 bits
				case 4:
					u += uint64(rng.IntN(5)-2) << 32 // next to them
				}
				draws[j] = u
			}
			// The reference: ranks from a sort of the whole row.
			keys := make([]uint64, n)
			for j := range keys {
				keys[j] = uint64(mags[j])<<32 | uint64(j)
			}
			slices.Sort(keys)
			rank := make([]int, n)
			for q, k := range keys {
				rank[uint32(k)] = q
			}
			want := make([]bool, len(draws))
			for j := range want {
				want[j] = draws[j] < thr[rank[j0+j]]
			}
			bs := newBucketScratch(int64(n))
			copy(bs.mags, mags)
			var top uint32
			for _, m := range mags {
				top = max(top, m>>16)
			}
			low := bucketCounts(bs.bk[:n], bs.start, bs.mags[:n], int64(top)-(dellaBuckets-1))
			prefixCounts(bs.start[low:])
			tb := newThresholdBounds(thr)
			if tb.hi-tb.lo > 4 {
				t.Fatalf("n=%d: bounds %v apart, want 4", n, tb.hi-tb.lo)
			}
			var s dellaSelector
			for _, counted := range []bool{true, false} {
				keep := make([]bool, len(draws))
				bs.undec = decideBuckets(keep, bs.undec[:0], draws, bs.bk[j0:n], bs.start, tb)
				if counted {
					s.rankCounted(bs, bs.mags[:n], keep, draws, thr, j0)
				} else if len(bs.undec) > 0 {
					s.rankMarked(bs, bs.mags[:n], keep, draws, thr, j0, make([]uint64, n), make([]uint64, n))
				}
				if !slices.Equal(keep, want) {
					t.Fatalf("n=%d round %d, counted %v: the decisions differ from the sort's (%d undecided)", n, round, counted, len(bs.undec))
				}
			}
		}
	}
}
