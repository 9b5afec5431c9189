package merge

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/gpu"
)

// SFA is Sequential Fine-tuning with Averaging's merge: θ = β·θ_anchor + (1−β)·θ_current.
type SFA struct {
	// Beta is the anchor's weight, 0 ≤ β ≤ 1 (default 0.5, docs/methods.md#sfa).
	Beta float64
	// Eta, when the plan has a Fisher operand (the anchor's diagonal Fisher), makes β
	// per element: β_j = min(1, η·F_j), the EWC-as-merging form.
	Eta float64
}

// sfaMethod is sfa's registry entry: recipes run it as merge_method sfa (base_model
// the anchor, the one model the current), and `gomerge sfa` has a command of its own
// (--anchor, --current, --in-place, --fisher).
var sfaMethod *Method

func init() {
	sfaMethod = register(Method{
		Name: "sfa", Command: "sfa", CustomCommand: true,
		Short: "Average the current model toward the anchor: θ = β·θ_anchor + (1−β)·θ_current",
		Base:  BaseRequired, MinModels: 1, MaxModels: 1,
		Params: []Param{{Name: "beta", Flag: "beta", Usage: "weight of the anchor, in [0, 1]", Kind: Number, Scalar: true,
			Default: 0.5, RecipeDefault: 0.5, check: unitInterval, Report: true, field: func(p *Params) any { return &p.Beta }}},
		run: func(ctx context.Context, j MethodJob, r *methodRun) (*Report, error) {
			return RunSFA(ctx, SFAJob{Anchor: j.Base, Current: j.Models[0].Path, SFA: SFA{Beta: r.p.Beta}, Job: j.Job})
		},
	})
}

// Validate checks the parameters.
func (s SFA) Validate(withFisher bool) error {
	beta, _ := sfaMethod.Param("beta")
	if err := beta.Check(s.Beta); err != nil {
		return fmt.Errorf("sfa: %w", err)
	}
	if withFisher && !(s.Eta > 0) || math.IsInf(s.Eta, 0) {
		return fmt.Errorf("sfa: eta %v must be a positive number with --fisher", s.Eta)
	}
	return nil
}

// SFA statistics, in Kernel.Observe's acc.
const (
	sfaSqBefore = iota // Σ (current − anchor)²
	sfaSqAfter         // Σ (merged − anchor)², merged as written
	sfaStats
)

// Kernel returns the per-chunk work. Inputs are [anchor, current]; an auxiliary
// operand, if any, is the Fisher.
func (s SFA) Kernel() Kernel {
	b := float32(s.Beta)
	c := float32(1 - s.Beta) // 1−β in float64, then rounded: docs/methods.md#sfa
	eta := s.Eta
	return Kernel{
		Merge: func(dst []float32, in, aux [][]float32, _ Chunk) {
			if len(aux) == 0 {
				Lerp(dst, in[0], in[1], b, c)
				return
			}
			LerpPerElement(dst, in[0], in[1], aux[0], eta)
		},
		Observe:  observeSFA,
		NumStats: sfaStats,
		Fused: func(out []byte, outDT dtype.DType, in []Operand, acc []float64, _ Chunk) bool {
			var before, after float64
			if outDT == dtype.BF16 && in[0].DType == dtype.BF16 && in[1].DType == dtype.BF16 {
				before, after = lerpBF16(out, in[0].Data, in[1].Data, b, c)
			} else if outDT.CanEncode() {
				var err error
				if before, after, err = lerpTiled(out, outDT, in[0], in[1], b, c); err != nil {
					return false // the generic path reports it, naming the file
				}
			} else {
				return false
			}
			acc[sfaSqBefore] += before
			acc[sfaSqAfter] += after
			return true
		},
		// The device returns the statistics per block as [before, after], which is
		// this kernel's NumStats layout.
		GPU: func(ctx context.Context, dev *gpu.Device, t *TensorPlan, out gpu.Output) ([]float64, error) {
			in := gpuOperands(t.In)
			if len(t.Aux) == 0 {
				return dev.Lerp(ctx, t.NumElements(), out, in[0], in[1], b, c)
			}
			return dev.LerpFisher(ctx, t.NumElements(), out, in[0], in[1], gpuOperands(t.Aux)[0], eta)
		},
	}
}

// sfaTile is the number of elements lerpTiled handles at a time: its four float32
// tiles (16 KiB) stay in the L1 cache, and it is a multiple of 256, the largest
// quantization block, so that every tile but a chunk's last is whole blocks.
const sfaTile = 1024

// lerpTiled is SFA's chunk for any input and output dtypes (F32, F16, the GGUF block
// types, ...) in tiles of sfaTile elements: decode both inputs, Lerp, encode to the
// output, decode what was written, and add the squared distances into lanes j mod 8
// that run across the whole chunk. The same operations in the same order as the
// engine's decode / Merge / encode / Observe path, which passes whole 65,536-element
// chunks through scratch buffers; here the data stays in L1. One difference: a tile
// whose lerp equals an input of the output's type takes that input's bytes.
func lerpTiled(out []byte, outDT dtype.DType, a, x Operand, b, c float32) (before, after float64, err error) {
	n := int64(0)
	if bs := outDT.Bytes(int64(outDT.BlockSize())); bs > 0 {
		n = int64(len(out)) / bs * int64(outDT.BlockSize())
	}
	var at, xt, mt, yt [sfaTile]float32
	var sb, sa [lanes]float64
	for off := int64(0); off < n; off += sfaTile {
		k := min(sfaTile, n-off)
		av, xv, mv, yv := at[:k], xt[:k], mt[:k], yt[:k]
		if err := dtype.Decode(av, a.Data[a.DType.Bytes(off):], a.DType); err != nil {
			return 0, 0, err
		}
		if err := dtype.Decode(xv, x.Data[x.DType.Bytes(off):], x.DType); err != nil {
			return 0, 0, err
		}
		Lerp(mv, av, xv, b, c)
		o := out[outDT.Bytes(off):outDT.Bytes(off+k)]
		// A tile whose lerp equals one input's values (β = 0 or 1, or inputs equal
		// there) is that input's bytes when it has the output's type: ggml's
		// Q3_K and Q5_K quantizers do not always give a block back from its own
		// values (docs/kquants.md), and this keeps the values exact.
		switch {
		case x.DType == outDT && sameValues(mv, xv):
			copy(o, x.Data[x.DType.Bytes(off):])
			copy(yv, xv)
		case a.DType == outDT && sameValues(mv, av):
			copy(o, a.Data[a.DType.Bytes(off):])
			copy(yv, av)
		default:
			if err := dtype.Encode(o, mv, outDT); err != nil {
				return 0, 0, err
			}
			if err := dtype.Decode(yv, o, outDT); err != nil {
				return 0, 0, err
			}
		}
		addSqDiff(xv, av, &sb)
		addSqDiff(yv, av, &sa)
	}
	return combineLanes(sb[:]), combineLanes(sa[:]), nil
}

// sameValues reports whether a and b hold equal values (−0 equals 0: the lerp of a
// −0 is +0; a NaN equals nothing).
func sameValues(a, b []float32) bool {
	b = b[:len(a)]
	for i, v := range a {
		if v != b[i] {
			return false
		}
	}
	return true
}

// lerpBF16 is Lerp from BF16 anchor a and current x to BF16 out in one pass, with the
// SFA statistics (Σ (x−a)², Σ (out−a)², out as rounded): the same bits as decoding,
// Lerp, encoding and observeSFA, at a third of the memory traffic. It exists because
// BF16 is what LLM checkpoints are stored in, and this loop is the whole CPU cost of
// an SFA step.
func lerpBF16(out, a, x []byte, b, c float32) (before, after float64) {
	n := len(out) / 2
	a, x = a[:2*n], x[:2*n]
	ow, ok1 := dtype.Uint16s(out)
	aw, ok2 := dtype.Uint16s(a)
	xw, ok3 := dtype.Uint16s(x)
	if ok1 && ok2 && ok3 {
		return lerpBF16Words(ow, aw, xw, b, c)
	}
	// Misaligned data (after an odd-sized tensor) or a big-endian host: copy to words.
	aw, xw, ow = make([]uint16, n), make([]uint16, n), make([]uint16, n)
	for j := range n {
		aw[j] = binary.LittleEndian.Uint16(a[2*j:])
		xw[j] = binary.LittleEndian.Uint16(x[2*j:])
	}
	before, after = lerpBF16Words(ow, aw, xw, b, c)
	for j, h := range ow {
		binary.LittleEndian.PutUint16(out[2*j:], h)
	}
	return before, after
}

func lerpBF16Words(out, a, x []uint16, b, c float32) (before, after float64) {
	return lerpBF16Lanes(out, a, x, b, c, haveLerpBF16Asm)
}

// lerpBF16Lanes does lerpBF16Words with the AVX2 kernel (asm) or in Go; both add the
// squared distances into lanes j mod 8 and combine them as combineLanes does, so they
// give the same bits.
func lerpBF16Lanes(out, a, x []uint16, b, c float32, asm bool) (before, after float64) {
	a, x = a[:len(out)], x[:len(out)]
	var sums [2 * lanes]float64 // before by lane, then after by lane
	j := 0
	if asm && len(out) >= lanes {
		j = len(out) &^ (lanes - 1)
		lerpBF16Asm(out, a, x, j, b, c, &sums)
	}
	for ; j < len(out); j++ {
		av := math.Float32frombits(uint32(a[j]) << 16)
		xv := math.Float32frombits(uint32(x[j]) << 16)
		h := dtype.Float32ToBF16(float32(b*av) + float32(c*xv))
		out[j] = h
		yv := math.Float32frombits(uint32(h) << 16)
		d0 := float64(xv) - float64(av)
		d1 := float64(yv) - float64(av)
		sums[j%lanes] += float64(d0 * d0)
		sums[lanes+j%lanes] += float64(d1 * d1)
	}
	return combineLanes(sums[:lanes]), combineLanes(sums[lanes:])
}

func observeSFA(out []float32, in [][]float32, acc []float64) {
	anchor, current := in[0], in[1]
	acc[sfaSqBefore] += sumSqDiff(current, anchor)
	if out != nil {
		acc[sfaSqAfter] += sumSqDiff(out, anchor)
	}
}

// lanes is how many partial sums the SFA statistics keep: element j goes to sum
// j mod 8, and combineLanes adds the sums in a fixed tree. Eight independent sums let
// the AVX2 kernel keep them in two vector registers; every path that reports these
// statistics adds in this same order, so all give the same bits.
const lanes = 8

func combineLanes(s []float64) float64 {
	return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
}

// addSqDiffGo is addSqDiff's reference: the same per-lane operations as
// sumSqDiffLanes.
func addSqDiffGo(x, y []float32, s *[lanes]float64) {
	y = y[:len(x)]
	for j := range x {
		d := float64(x[j]) - float64(y[j])
		s[j%lanes] += float64(d * d)
	}
}

// sumSqDiffLanes adds (x_j − y_j)² in float64 for j ≥ from into s[j mod 8], unrolled
// by hand so that the sums stay in registers, and returns the lanes combined: the
// reference for sumSqDiff.
func sumSqDiffLanes(x, y []float32, from int, s *[lanes]float64) float64 {
	y = y[:len(x)]
	sq := func(i int) float64 {
		d := float64(x[i]) - float64(y[i])
		return float64(d * d)
	}
	s0, s1, s2, s3, s4, s5, s6, s7 := s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
	j := from
	for ; j+lanes <= len(x) && j%lanes == 0; j += lanes {
		s0, s1, s2, s3 = s0+sq(j), s1+sq(j+1), s2+sq(j+2), s3+sq(j+3)
		s4, s5, s6, s7 = s4+sq(j+4), s5+sq(j+5), s6+sq(j+6), s7+sq(j+7)
	}
	*s = [lanes]float64{s0, s1, s2, s3, s4, s5, s6, s7}
	for ; j < len(x); j++ {
		s[j%lanes] += sq(j)
	}
	return combineLanes(s[:])
}

// lerpGo is Lerp's reference loop.
func lerpGo(dst, a, x []float32, b, c float32) {
	a, x = a[:len(dst)], x[:len(dst)]
	for j := range dst {
		dst[j] = float32(b*a[j]) + float32(c*x[j])
	}
}

// LerpPerElement is Lerp with β_j = min(1, η·F_j) (clamped at 0 too) computed in
// float64, b_j = float32(β_j), c_j = float32(1 − β_j).
func LerpPerElement(dst, a, x, fisher []float32, eta float64) {
	a, x, fisher = a[:len(dst)], x[:len(dst)], fisher[:len(dst)]
	for j := range dst {
		beta := min(1, max(0, eta*float64(fisher[j])))
		if fisher[j] != fisher[j] {
			beta = math.NaN() // a NaN Fisher poisons the element rather than passing unseen
		}
		b, c := float32(beta), float32(1-beta)
		dst[j] = float32(b*a[j]) + float32(c*x[j])
	}
}

// Schedule returns the steps at which a trainer doing SFA averages over a task of
// steps steps with averaging fraction p: every max(1, floor(p·steps)) steps, and at the
// last step. The merge at the last step is the next task's anchor.
func Schedule(steps int, p float64) ([]int, error) {
	if steps < 1 {
		return nil, fmt.Errorf("schedule: steps %d must be at least 1", steps)
	}
	if !(p > 0 && p <= 1) {
		return nil, fmt.Errorf("schedule: p %v must be in (0, 1]", p)
	}
	every := max(1, int(math.Floor(p*float64(steps))))
	var out []int
	for s := every; s <= steps; s += every {
		out = append(out, s)
	}
	if out[len(out)-1] != steps {
		out = append(out, steps)
	}
	return out, nil
}
