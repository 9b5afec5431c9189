package gmz

import "hash/crc32"

// castagnoli is CRC-32C: the standard library computes it with the CPU's CRC32
// instruction (SSE4.2, ARMv8), at several GB/s per core, so checking every frame on
// every read costs little next to entropy decoding.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// crcPoly is CRC-32C's polynomial, bit-reflected as the table-driven code uses it.
const crcPoly = 0x82f63b78

// x2n[k] is x^(2^k) modulo the polynomial, for crcCombine.
var x2n = func() (t [67]uint32) { // k ≤ 3 + 63 for any int64 length
	p := uint32(1) << 30 // x^1
	for k := range t {
		t[k] = p
		p = mulMod(p, p)
	}
	return t
}()

// mulMod multiplies two polynomials modulo crcPoly (reflected: bit 31 is x^0).
func mulMod(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
		}
		if b&1 != 0 {
			b = b>>1 ^ crcPoly
		} else {
			b >>= 1
		}
	}
	return p
}

// crcCombine returns the CRC-32C of A‖B from crcA = CRC(A), crcB = CRC(B) and len(B).
// A tensor's checksum is built from its frames' checksums this way, so that frames
// can be checked in parallel and the whole tensor still has one standard CRC-32C
// (the one `crc32 -C` or any library computes over its bytes). Appending n bytes
// multiplies CRC(A) by x^(8n); the pre- and post-conditioning of the CRC cancel out.
func crcCombine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA
	}
	p := uint32(1) << 31 // x^0
	n := uint64(lenB)
	for k := 3; n != 0; k++ { // x^(8n) = x^(n·2^3)
		if n&1 != 0 {
			p = mulMod(x2n[k], p)
		}
		n >>= 1
	}
	return mulMod(p, crcA) ^ crcB
}
