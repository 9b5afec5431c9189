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
