//go:build !amd64 || purego

package gmz

func split2(lo, hi, src []byte) { split2Go(lo, hi, src) }
func merge2(dst, lo, hi []byte) { merge2Go(dst, lo, hi) }
