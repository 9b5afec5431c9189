package gmz

import "encoding/binary"

// Byte planes. A float's bytes differ in statistics: the byte holding the sign and
// the high exponent bits takes a few dozen values, the mantissa bytes look random.
// Splitting elements of k bytes into k planes (plane j holds byte j of every element,
// little-endian) lets each plane get its own entropy code. splitPlanes and
// mergePlanes are inverses; the 2-byte case (BF16, F16), the one that matters most
// for speed, moves four elements per step through 64-bit words.

// splitPlanes writes src's k byte planes one after the other into dst
// (len(dst) == len(src), len(src) a multiple of k).
func splitPlanes(dst, src []byte, k int) {
	n := len(src) / k
	switch k {
	case 1:
		copy(dst, src)
	case 2:
		split2(dst[:n], dst[n:2*n], src)
	default:
		for j := range k {
			p := dst[j*n : (j+1)*n]
			for i := range p {
				p[i] = src[i*k+j]
			}
		}
	}
}

// mergePlanes is splitPlanes' inverse: it interleaves planes (k of them, each of
// len(dst)/k bytes) into dst.
func mergePlanes(dst []byte, planes [][]byte) {
	k := len(planes)
	switch k {
	case 1:
		copy(dst, planes[0])
	case 2:
		merge2(dst, planes[0], planes[1])
	case 4:
		p0, p1, p2, p3 := planes[0], planes[1], planes[2], planes[3]
		n := len(dst) / 4
		p0, p1, p2, p3 = p0[:n], p1[:n], p2[:n], p3[:n]
		for i := range p0 {
			binary.LittleEndian.PutUint32(dst[4*i:], uint32(p0[i])|uint32(p1[i])<<8|uint32(p2[i])<<16|uint32(p3[i])<<24)
		}
	default:
		for j, p := range planes {
			for i, b := range p[:len(dst)/k] {
				dst[i*k+j] = b
			}
		}
	}
}

// pack4 gathers the low bytes of x's four 16-bit lanes into 32 bits.
func pack4(x uint64) uint64 {
	x &= 0x00ff00ff00ff00ff
	x = (x | x>>8) & 0x0000ffff0000ffff
	return (x | x>>16) & 0x00000000ffffffff
}

// spread4 is pack4's inverse: it moves 4 bytes into the low bytes of 16-bit lanes.
func spread4(x uint64) uint64 {
	x = (x | x<<16) & 0x0000ffff0000ffff
	return (x | x<<8) & 0x00ff00ff00ff00ff
}

// split2Go is the reference for split2 (the assembly, where there is one).
func split2Go(lo, hi, src []byte) {
	n := len(lo)
	i := 0
	for ; i+8 <= n; i += 8 {
		a := binary.LittleEndian.Uint64(src[2*i:])
		b := binary.LittleEndian.Uint64(src[2*i+8:])
		binary.LittleEndian.PutUint64(lo[i:], pack4(a)|pack4(b)<<32)
		binary.LittleEndian.PutUint64(hi[i:], pack4(a>>8)|pack4(b>>8)<<32)
	}
	for ; i < n; i++ {
		lo[i], hi[i] = src[2*i], src[2*i+1]
	}
}

// merge2Go is the reference for merge2.
func merge2Go(dst, lo, hi []byte) {
	n := len(lo)
	i := 0
	for ; i+8 <= n; i += 8 {
		l := binary.LittleEndian.Uint64(lo[i:])
		h := binary.LittleEndian.Uint64(hi[i:])
		binary.LittleEndian.PutUint64(dst[2*i:], spread4(l&0xffffffff)|spread4(h&0xffffffff)<<8)
		binary.LittleEndian.PutUint64(dst[2*i+8:], spread4(l>>32)|spread4(h>>32)<<8)
	}
	for ; i < n; i++ {
		dst[2*i], dst[2*i+1] = lo[i], hi[i]
	}
}
