package stats

import "math"

// pairLanes holds one block's running sums for a base and two models a and b, with
// τa = a − base and τb = b − base: Σ base², Σ τa², Σ τb², Σ τa·τb, and the sign
// counts. Element j of the block (j counted from the block's start) goes to float64
// lane j mod 4, except the last len mod 4 elements, which go to lane 0 after the
// others: the order of the four-accumulator dot product the report used before its
// passes were fused, so that fusing them changed no bit (docs/report.md#statistics).
// The counts are integers, exact in any lane.
//
// The AVX2 kernel (blocksums_amd64.s) reads and writes this layout: keep them in step.
type pairLanes struct {
	base, sqA, sqB, dot [4]float64
	conflict, both      [8]uint32 // per lane: opposite non-zero signs; both non-zero
}

// lanesSum combines a sum's lanes: (s₀ + s₁) + (s₂ + s₃).
func lanesSum(s *[4]float64) float64 { return (s[0] + s[1]) + (s[2] + s[3]) }

// count adds a count's lanes.
func count(c *[8]uint32) float64 {
	var n uint32
	for _, v := range c {
		n += v
	}
	return float64(n)
}

// addPairGo adds the elements of a block from index from (a multiple of 4) on to l:
// the reference of the AVX2 kernel, which does the same operations on each lane.
// Lane by lane, each with its sums in registers, then the tail. A product of two
// float32s is exact in float64, so where Go fuses the multiply and the add (arm64,
// GOAMD64=v3) the sums do not change.
func addPairGo(b, x, y []float32, from int, l *pairLanes) {
	n := len(b)
	x, y = x[:n], y[:n]
	full := from + (n-from)&^3 // the end of the whole groups of four
	var conflict, both uint32
	for k := range 4 {
		sb, sa, sc, sd := l.base[k], l.sqA[k], l.sqB[k], l.dot[k]
		for j := from + k; j < full; j += 4 {
			v := b[j]
			tx, ty := x[j]-v, y[j]-v
			sb += float64(v) * float64(v)
			sa += float64(tx) * float64(tx)
			sc += float64(ty) * float64(ty)
			sd += float64(tx) * float64(ty)
			c, nz := signs(tx, ty)
			conflict += c
			both += nz
		}
		l.base[k], l.sqA[k], l.sqB[k], l.dot[k] = sb, sa, sc, sd
	}
	for j := full; j < n; j++ {
		v := b[j]
		tx, ty := x[j]-v, y[j]-v
		l.base[0] += float64(v) * float64(v)
		l.sqA[0] += float64(tx) * float64(tx)
		l.sqB[0] += float64(ty) * float64(ty)
		l.dot[0] += float64(tx) * float64(ty)
		c, nz := signs(tx, ty)
		conflict += c
		both += nz
	}
	l.conflict[0] += conflict
	l.both[0] += both
}

// signs says, without a branch (the signs of two task vectors are close to random),
// whether x and y are of opposite signs and both non-zero (conflict), and whether
// they are both non-zero (nz): 1 or 0 each.
func signs(x, y float32) (conflict, nz uint32) {
	bx, by := math.Float32bits(x), math.Float32bits(y)
	nz = nonZero(bx<<1) & nonZero(by<<1)
	return (bx ^ by) >> 31 & nz, nz
}

// nonZero is 1 if v ≠ 0, else 0, without a branch.
func nonZero(v uint32) uint32 { return (v | -v) >> 31 }
