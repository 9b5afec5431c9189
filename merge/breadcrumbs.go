package merge

import "math"

func init() {
	const example = `  gomerge breadcrumbs --base base.safetensors a.safetensors b.safetensors --density 0.9 --gamma 0.01 --out bc.safetensors`
	register(taskVectorMethod(taskVectorPreset{
		name: "breadcrumbs", command: "breadcrumbs",
		short:    "Model breadcrumbs: drop the largest and smallest task-vector entries, add (--ties: sign election)",
		example:  example,
		sparsify: SparsifyOutliers, density: 0.9,
	}))
	register(taskVectorMethod(taskVectorPreset{
		name: "breadcrumbs_ties", command: "breadcrumbs", commandSwitch: "ties",
		short:    "elect a sign per element as TIES does (mergekit's breadcrumbs_ties)",
		sparsify: SparsifyOutliers, consensus: ConsensusSign, density: 0.9,
	}))
}

// outlierRanks are breadcrumbs' cuts (SparsifyOutliers) for one model of a tensor of
// n elements: of |δ| drop the n_top = ⌊γ·n⌋ largest and the n_bot smallest so that
// ⌊density·n⌋ stay (fewer largest dropped when that is impossible). The kept entries
// rank [n_top, n − n_bot) by descending magnitude: above the second cut, not the
// first.
func outlierRanks(density, gamma float64, n int64) []int64 {
	keep := topK(density, n)
	nTop := int64(math.Floor(gamma * float64(n)))
	nBot := n - keep - nTop
	if nBot < 0 {
		nTop += nBot
		nBot = 0
	}
	return []int64{nTop, n - nBot}
}

// keepBand fills keep with whether each element of a chunk ranks above cut lo and,
// when hi is not nil, not above cut hi: what cut.above gives for lo, and for hi with
// the result inverted and and-ed in (breadcrumbs' band; TIES's top k with hi nil). The
// AVX2 kernel takes the groups of eight with no element at a tie; this loop the rest,
// counting the elements equal to a cut's pattern in flat order as cut.above does.
// TestKeepBandMatchesCuts checks it against cut.above.
func keepBand(keep []bool, mags []uint32, lo, hi *cut, pos Chunk) {
	mags = mags[:len(keep)]
	loGT, loTie := bandForm(lo)
	hiGT, hiTie := int32(math.MaxInt32), ^uint32(0) // no upper cut: nothing is above it
	if hi != nil {
		hiGT, hiTie = bandForm(hi)
	}
	var seenLo, seenHi int64 // elements equal to the cut's pattern before this one
	if lo.ties {
		seenLo = lo.before[pos.Index]
	}
	if hi != nil && hi.ties {
		seenHi = hi.before[pos.Index]
	}
	for j := 0; j < len(keep); {
		if haveTiesAsm && len(keep)-j >= 8 {
			j += keepBandAsm(keep[j:], mags[j:], (len(keep)-j)&^7, loGT, hiGT, loTie, hiTie)
		}
		for end := min(j+8, len(keep)); j < end; j++ {
			m := mags[j]
			k := int32(m) > loGT
			if m == loTie {
				k = seenLo < lo.r
				seenLo++
			}
			above := int32(m) > hiGT
			if m == hiTie {
				above = seenHi < hi.r
				seenHi++
			}
			keep[j] = k && !above
		}
	}
}

// bandForm is cut c as keepBand tests it: an element (its magnitude bits, below 2³¹)
// ranks above c when its bits exceed gt as int32s, except an element equal to tie,
// which ranks above when fewer than c.r such elements precede it. tie is ^0, which no
// magnitude equals, where c has no ties: then every element equal to c.t ranks above
// (c.r counts them all), so gt is c.t − 1.
func bandForm(c *cut) (gt int32, tie uint32) {
	switch {
	case c.all:
		return -1, ^uint32(0)
	case c.none:
		return math.MaxInt32, ^uint32(0)
	case !c.ties:
		return int32(c.t) - 1, ^uint32(0)
	}
	return int32(c.t), c.t
}
