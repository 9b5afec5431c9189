package merge

import "testing"

// TestRunScratchShared: a run's kernels get one pool per key whichever tensor asks,
// a different one for another key, and a hand-made run (no scratch) a fresh one
// from each call; the pool a run shares makes scratch for its own models.
func TestRunScratchShared(t *testing.T) {
	m := &methodRun{weights: make([]float32, 3), scratch: new(runScratch)}
	if m.maskPool() != m.maskPool() {
		t.Error("two masks' pools for one run")
	}
	if m.combinePool(true) != m.combinePool(true) {
		t.Error("two combine pools for one run")
	}
	if m.combinePool(true) == m.combinePool(false) {
		t.Error("one combine pool with sign election's buffers and without")
	}
	if a, b := newDeltaSelector(m, 10, [][]int64{{1}}), newDeltaSelector(m, 20, [][]int64{{2, 5}}); a.pool != b.pool || a.pool != m.rankPool() {
		t.Error("two tensors' rank selectors in one run use two pools")
	}
	if got := len(m.maskPool().get(8).keep); got != 3 {
		t.Errorf("the shared masks' scratch has %d masks for 3 models", got)
	}
	other := &methodRun{weights: make([]float32, 2), scratch: m.scratch} // the same scratch, fewer models
	if other.maskPool() == m.maskPool() {
		t.Error("runs of 2 and 3 models share a masks' pool")
	}
	mk := func() any { return new(int) }
	if p := sharedPool(m, "k", mk); p != sharedPool(m, "k", mk) {
		t.Error("two pools for one key")
	} else if _, ok := p.Get().(*int); !ok {
		t.Error("the shared pool does not make its scratch")
	}
	if sharedPool(m, "k", mk) == sharedPool(m, "j", mk) {
		t.Error("one pool for two keys")
	}
	bare := &methodRun{weights: make([]float32, 3)}
	if bare.maskPool() == bare.maskPool() {
		t.Error("a run without scratch shared a pool")
	}
}
