//go:build !purego

package gmz

import "golang.org/x/sys/cpu"

// The assembly loop shifts with BMI2's SHLX/SHRX/RORX (flags untouched, any
// register as the count), counts bits with BMI1's TZCNT and loads big-endian with
// MOVBE (every CPU with BMI2 but a few Intel Haswell-era Pentiums and Celerons,
// which lack both, has it).
var haveBMI2 = cpu.X86.HasBMI1 && cpu.X86.HasBMI2 && cpu.X86.HasMOVBE

// mhDecodeFastBMI2 is mhDecodeFastGo's loop over pointers: o and e are indices
// into dst (e: the last index at which a stream may start a round of
// mhPerRefill*mhMaxSyms symbols), lim the last byte offset of in at which 8 bytes
// can be read. The caller checks that a first round is in bounds.
//
//go:noescape
func mhDecodeFastBMI2(dst, in *byte, lim int, tab *[mhTableLen]uint64, p, o, e *[mhStreams]int)

func mhDecodeFast(dst, in []byte, tab *[mhTableLen]uint64, p, o, oe *[mhStreams]int) {
	if haveBMI2 {
		mhDecodeFastAsm(dst, in, tab, p, o, oe)
		return
	}
	mhDecodeFastGo(dst, in, tab, p, o, oe)
}

// mhDecodeFastAsm runs the assembly loop when the Go loop would run at least one
// round, with the same conditions, so that it stops where the Go loop stops.
func mhDecodeFastAsm(dst, in []byte, tab *[mhTableLen]uint64, p, o, oe *[mhStreams]int) {
	const room = mhPerRefill * mhMaxSyms
	lim := len(in) - 8
	var e [mhStreams]int
	for i := range mhStreams {
		e[i] = oe[i] - room
		// The Go loop's entry condition; o[i] ≤ e[i] with e[i]+room ≤ len(dst) and
		// p[i]>>3 ≤ lim keep every round's stores and loads in bounds.
		if o[i] < 0 || o[i] > e[i] || oe[i] > len(dst) || p[i] < 0 || p[i]>>3 > lim {
			return
		}
	}
	mhDecodeFastBMI2(&dst[0], &in[0], lim, tab, p, o, &e)
}
