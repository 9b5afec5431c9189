//go:build !amd64 || purego

package gmz

func mhDecodeFast(dst, in []byte, tab *[mhTableLen]uint64, p, o, oe *[mhStreams]int) {
	mhDecodeFastGo(dst, in, tab, p, o, oe)
}
