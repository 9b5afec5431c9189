//go:build !purego

package merge

//go:noescape
func dareKeepAVX2(keep *bool, n int, off int64, key, lmix, threshold uint64)

// dareKeepAsm runs dareKeepAVX2 on the first n elements of keep (a multiple of 8, at
// least 8).
func dareKeepAsm(keep []bool, n int, off int64, key, lmix, threshold uint64) {
	_ = keep[n-1]
	dareKeepAVX2(&keep[0], n, off, key, lmix, threshold)
}
