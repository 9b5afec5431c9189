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

// keepBand fills keep with whether each element of a chunk ranks above cut lo and
// not above cut hi (breadcrumbs' band; TIES's top k with hi above nothing), each cut
// as cutLane gives it, with its count of tied elements so far, which it carries on.
// The AVX2 kernel takes the groups of eight with no element at a tied pattern; this
// loop the rest, counting those in flat order as cut.above does.
// TestKeepBandMatchesCuts checks it against cut.above.
func keepBand(keep []bool, mags []uint32, lo, hi *tiesLane) {
	mags = mags[:len(keep)]
	loTie, hiTie := lo.tieBits(), hi.tieBits()
	for j := 0; j < len(keep); {
		if haveTiesAsm && len(keep)-j >= 8 {
			j += keepBandAsm(keep[j:], mags[j:], (len(keep)-j)&^7, lo.gt, hi.gt, loTie, hiTie)
		}
		for end := min(j+8, len(keep)); j < end; j++ {
			a, h := lo.above(mags[j]), hi.above(mags[j]) // both cuts count their tied elements
			keep[j] = a && !h
		}
	}
}

// bandLanes is a model's band for chunk pos from its cuts (the rank selector's, the
// upper first when there are two): its lower cut and its upper one, or with one cut,
// that cut and an upper one that nothing ranks above.
func bandLanes(cuts []*cut, pos Chunk) (lo, hi tiesLane) {
	lo, hi = cutLane(cuts[len(cuts)-1], pos), tiesLane{gt: math.MaxInt32}
	if len(cuts) > 1 {
		hi = cutLane(cuts[0], pos)
	}
	return lo, hi
}
