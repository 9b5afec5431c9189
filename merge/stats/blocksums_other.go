//go:build !amd64 || purego

package stats

// addPair adds a block's sums to l.
func addPair(b, x, y []float32, l *pairLanes) { addPairGo(b, x, y, 0, l) }
