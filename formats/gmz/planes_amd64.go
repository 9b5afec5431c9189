//go:build !purego

package gmz

// SSE2 is part of every amd64 CPU, so no feature check is needed.

//go:noescape
func split2SSE2(lo, hi, src *byte, n int)

//go:noescape
func merge2SSE2(dst, lo, hi *byte, n int)

// split2 splits 2-byte elements into low and high planes, 16 elements a step with
// SSE2, the rest with split2Go.
func split2(lo, hi, src []byte) {
	n := len(lo)
	hi, src = hi[:n], src[:2*n]
	j := n &^ 15
	if j > 0 {
		split2SSE2(&lo[0], &hi[0], &src[0], j)
	}
	split2Go(lo[j:], hi[j:], src[2*j:])
}

// merge2 interleaves low and high planes into 2-byte elements.
func merge2(dst, lo, hi []byte) {
	n := len(lo)
	hi, dst = hi[:n], dst[:2*n]
	j := n &^ 15
	if j > 0 {
		merge2SSE2(&dst[0], &lo[0], &hi[0], j)
	}
	merge2Go(dst[2*j:], lo[j:], hi[j:])
}
