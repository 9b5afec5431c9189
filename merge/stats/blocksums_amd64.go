//go:build !purego

package stats

import "golang.org/x/sys/cpu"

// haveAVX2 says whether addPairAVX2 can run here.
var haveAVX2 = cpu.X86.HasAVX2

//go:noescape
func addPairAVX2(b, x, y *float32, n int, l *pairLanes)

// addPair adds a block's sums to l: the AVX2 kernel over its whole groups of eight,
// addPairGo over the rest, the same operations on the same lanes.
func addPair(b, x, y []float32, l *pairLanes) {
	x, y = x[:len(b)], y[:len(b)]
	j := 0
	if haveAVX2 && len(b) >= 8 {
		j = len(b) &^ 7
		addPairAVX2(&b[0], &x[0], &y[0], j, l)
	}
	addPairGo(b, x, y, j, l)
}
