package gmz

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
)

// Multi-symbol Huffman blocks.
//
// huff0 (klauspost/compress) decodes one symbol per table lookup. The sign/exponent
// plane of BF16 weights carries about 2.7 bits a symbol, so an 11-bit window holds
// three or four whole codes most of the time; a table whose entries hold every
// symbol that ends inside the window decodes them with one lookup. No Go library
// offers such a decoder (huff0's "X2" table holds at most two symbols and its tables
// are its own), so this file codes canonical, length-limited Huffman by hand.
//
// A block of m symbols is cut into mhStreams segments of ceil(m/4) symbols (the last
// ones shorter, possibly empty), each coded into its own bit stream so that the
// decoder follows four independent dependency chains at once. Codes are canonical
// (shorter codes first, then by symbol value) and at most mhTableLog bits long,
// written most significant bit first; a stream ends with a one bit and zero bits
// up to a byte boundary, so that a stream holding more or fewer codes than its
// segment's symbols is an error, never a block decoded short. A block's payload is:
//
//	table     lo byte, n-1 byte, then n 4-bit code lengths for symbols lo..lo+n-1
//	          (low nibble first; 0: absent); at least two present, and the lengths
//	          must make a complete code (Kraft sum exactly 1)
//	sizes     the byte sizes of streams 0..2, uint16 LE each
//	streams   stream 0..3 back to back (stream 3 takes the rest)
const (
	mhTableLog = 11 // longest code, and the decoder's window
	mhTableLen = 1 << mhTableLog
	mhStreams  = 4
	// mhPerRefill is the lookups per stream between refills: a refill leaves at
	// least 56 valid bits, each lookup takes at most mhTableLog.
	mhPerRefill = 56 / mhTableLog
	// mhMaxSyms is the symbols one entry holds: an entry is stored with one
	// 4-byte write.
	mhMaxSyms = 4
	// mhMaxBits: the writer uses the code only where codes average at most this
	// many bits: an entry holds fewer symbols as codes grow, and huff0's assembly
	// then decodes faster. Measured per plane against huff0 (MB per CPU-second,
	// 128 Ki blocks, two runs): 1.4 bits a symbol (the high byte of a BF16 delta)
	// 1.8-2.1x, 2.7 (BF16 or F32 weights' high byte) 1.6-2.2x, 3.3 (F16 delta)
	// 1.2-1.5x, 5.5 (F16 weights) 0.94-1.08x, 7.5 (a delta's mantissas) 0.45-0.65x.
	mhMaxBits = 4
)

// A stream's size must fit its uint16: ceil(blockSize/4) symbols of mhTableLog bits.
const _ = uint16((blockSize/mhStreams*mhTableLog + 7) / 8)

// mhEntry layout: the bits the symbols take in bits 0..5 (the decoder shifts its
// bit buffer by the entry itself, which the CPU masks to 6 bits: the next lookup
// waits on nothing else), the symbols in bytes 1..4 (in stream order; the decoder
// stores all four and moves on by the count), and their count in bits 61..63.
const (
	mhBitsShift  = 0
	mhSymShift   = 8
	mhCountShift = 61
)

// mhTable is a block's decoding table.
type mhTable struct {
	single [mhTableLen]uint16 // symbol | length<<8, for one symbol per lookup
	multi  [mhTableLen]uint64 // mhEntry

	// Building multi: the present symbols in canonical order (by length, then
	// value) as symbol | length<<8, and tables of partial entries (see buildMulti).
	order  [256]uint16
	nsyms  int
	minLen uint
	part   [mhMaxSyms - 1][mhTableLen]uint64
}

// mhEncoder holds one worker's scratch for coding blocks.
type mhEncoder struct {
	hist   [256]uint32
	lo, hi int // the least and greatest symbol present
	lens   [256]uint8
	codes  [256]uint16 // code | length<<12
	syms   []uint16    // present symbols, by count
	pm     [mhTableLog][]pmItem
}

type pmItem struct {
	w    uint64
	leaf bool
}

// mhLengths sets lens to an optimal code limited to mhTableLog bits for hist
// (package-merge), for the n ≥ 2 symbols present.
func (e *mhEncoder) mhLengths() {
	e.syms = e.syms[:0]
	for s, c := range e.hist {
		e.lens[s] = 0
		if c > 0 {
			e.syms = append(e.syms, uint16(s))
		}
	}
	slices.SortFunc(e.syms, func(a, b uint16) int {
		if c := int(e.hist[a]) - int(e.hist[b]); c != 0 {
			return c
		}
		return int(a) - int(b)
	})
	n := len(e.syms)
	// Level 0 holds the leaves only; level d the leaves merged with the packages
	// (pairs) of level d-1's list, both by weight, leaves first on ties.
	leaves := func(i int) uint64 { return uint64(e.hist[e.syms[i]]) }
	for d := range mhTableLog {
		cur := e.pm[d][:0]
		if d == 0 {
			for i := range n {
				cur = append(cur, pmItem{leaves(i), true})
			}
		} else {
			prev := e.pm[d-1]
			i, j := 0, 0
			for i < n || j+1 < len(prev) {
				if j+1 < len(prev) {
					pw := prev[j].w + prev[j+1].w
					if i >= n || pw < leaves(i) {
						cur = append(cur, pmItem{pw, false})
						j += 2
						continue
					}
				}
				cur = append(cur, pmItem{leaves(i), true})
				i++
			}
		}
		e.pm[d] = cur
	}
	// The first 2n-2 items of the last level are the solution: each leaf among the
	// first m items of a level adds one to its symbol's length, and the p packages
	// among them take the first 2p items of the level below.
	m := 2*n - 2
	for d := mhTableLog - 1; d >= 0 && m > 0; d-- {
		nl := 0
		for _, it := range e.pm[d][:m] {
			if it.leaf {
				nl++
			}
		}
		for _, s := range e.syms[:nl] {
			e.lens[s]++
		}
		m = 2 * (m - nl)
	}
}

// mhCanonical sets codes from lens (canonical: by length, then symbol value), each
// as code | length<<12.
func mhCanonical(codes *[256]uint16, lens *[256]uint8) {
	var count [mhTableLog + 1]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	var next [mhTableLog + 1]int
	code := 0
	for l := 1; l <= mhTableLog; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}
	for s, l := range lens {
		if l > 0 {
			codes[s] = uint16(next[l]) | uint16(l)<<12
			next[l]++
		}
	}
}

// histogram counts blk's bytes into e.hist, in four tables so that a run of one
// byte value (the exponent plane is full of them) does not wait on one counter.
func (e *mhEncoder) histogram(blk []byte) {
	var h [4][256]uint32
	i := 0
	for ; i+4 <= len(blk); i += 4 {
		h[0][blk[i]]++
		h[1][blk[i+1]]++
		h[2][blk[i+2]]++
		h[3][blk[i+3]]++
	}
	for _, b := range blk[i:] {
		h[0][b]++
	}
	for s := range e.hist {
		e.hist[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s]
	}
}

// plan counts blk's symbols and, when there are at least two, chooses their code.
// It returns the number of distinct symbols, the payload's size with the code (at
// most that: each stream's padding is counted as a whole byte), its table's size,
// and the bits of all codes.
func (e *mhEncoder) plan(blk []byte) (distinct, size, table, bits int) {
	e.histogram(blk)
	e.lo, e.hi = 256, -1
	for s, c := range e.hist {
		if c > 0 {
			e.lo, e.hi = min(e.lo, s), s
			distinct++
		}
	}
	if distinct < 2 {
		return distinct, 0, 0, 0
	}
	e.mhLengths()
	mhCanonical(&e.codes, &e.lens)
	for s, c := range e.hist {
		bits += int(c) * int(e.lens[s])
	}
	table = 2 + (e.hi-e.lo+2)/2
	return distinct, table + 2*(mhStreams-1) + bits/8 + mhStreams, table, bits
}

// appendCoded appends blk's payload (table, sizes, streams) with the code plan
// chose for it.
func (e *mhEncoder) appendCoded(out, blk []byte) []byte {
	out = append(out, byte(e.lo), byte(e.hi-e.lo))
	for s := e.lo; s <= e.hi; s += 2 {
		b := e.lens[s]
		if s+1 <= e.hi {
			b |= e.lens[s+1] << 4
		}
		out = append(out, b)
	}
	sizes := len(out)
	out = append(out, make([]byte, 2*(mhStreams-1))...)
	q := (len(blk) + mhStreams - 1) / mhStreams
	for i := range mhStreams {
		start := len(out)
		out = e.appendStream(out, blk[min(i*q, len(blk)):min((i+1)*q, len(blk))])
		if i < mhStreams-1 {
			binary.LittleEndian.PutUint16(out[sizes+2*i:], uint16(len(out)-start))
		}
	}
	return out
}

// appendStream appends seg's codes, most significant bit first, and the end
// marker. It writes 8 bytes after every four codes (at most 44 bits) and
// moves on by the whole bytes among them, without a branch per code.
func (e *mhEncoder) appendStream(out, seg []byte) []byte {
	n := len(out)
	out = slices.Grow(out, (len(seg)*mhTableLog+7)/8+16)
	out = out[:cap(out)]
	var acc uint64 // the pending bits, in the low nb bits (nb < 8 between steps)
	nb := uint(0)
	put := func() {
		binary.BigEndian.PutUint64(out[n:], acc<<(64-nb))
		n += int(nb >> 3)
		nb &= 7
	}
	i := 0
	for ; i+4 <= len(seg); i += 4 {
		c0, c1, c2, c3 := e.codes[seg[i]], e.codes[seg[i+1]], e.codes[seg[i+2]], e.codes[seg[i+3]]
		acc = acc<<(c0>>12) | uint64(c0&0xfff)
		acc = acc<<(c1>>12) | uint64(c1&0xfff)
		acc = acc<<(c2>>12) | uint64(c2&0xfff)
		acc = acc<<(c3>>12) | uint64(c3&0xfff)
		nb += uint(c0>>12 + c1>>12 + c2>>12 + c3>>12)
		put()
	}
	for ; i < len(seg); i++ {
		c := e.codes[seg[i]]
		acc = acc<<(c>>12) | uint64(c&0xfff)
		nb += uint(c >> 12)
		put()
	}
	// The end marker: a one bit, then zeros to the byte boundary.
	acc = acc<<1 | 1
	nb++
	put()
	if nb > 0 {
		n++
	}
	return out[:n]
}

var errMHTable = errors.New("bad Huffman table")

// readMHTable reads a payload's code lengths, checks that they make a complete
// code, builds t from them and returns the rest of the payload.
func readMHTable(t *mhTable, in []byte) ([]byte, error) {
	if len(in) < 2 {
		return nil, fmt.Errorf("%w: truncated", errMHTable)
	}
	lo, n := int(in[0]), int(in[1])+1
	if lo+n > 256 {
		return nil, fmt.Errorf("%w: symbols %d..%d", errMHTable, lo, lo+n-1)
	}
	nbytes := (n + 1) / 2
	if len(in) < 2+nbytes {
		return nil, fmt.Errorf("%w: truncated", errMHTable)
	}
	lens := in[2 : 2+nbytes]
	// Symbols by length (canonical order), counted first.
	var count [16]int
	for i := range n {
		count[lens[i/2]>>(4*(i&1))&15]++
	}
	kraft, present := 0, 0
	for l := 1; l < 16; l++ {
		if count[l] > 0 && l > mhTableLog {
			return nil, fmt.Errorf("%w: code length %d over %d", errMHTable, l, mhTableLog)
		}
		if l <= mhTableLog {
			kraft += count[l] << (mhTableLog - l)
		}
		present += count[l]
	}
	if present < 2 {
		return nil, fmt.Errorf("%w: %d symbols", errMHTable, present)
	}
	if kraft != mhTableLen {
		return nil, fmt.Errorf("%w: Kraft sum %d/%d (over-subscribed or incomplete)", errMHTable, kraft, mhTableLen)
	}
	// Left-aligned in mhTableLog bits, canonical codes of length l, in symbol order,
	// take consecutive ranges of 1<<(mhTableLog-l) entries, shortest first.
	var idx [mhTableLog + 2]int
	for l := 1; l <= mhTableLog; l++ {
		idx[l+1] = idx[l] + count[l]
	}
	t.nsyms = present
	for i := range n {
		l := lens[i/2] >> (4 * (i & 1)) & 15
		if l > 0 {
			t.order[idx[l]] = uint16(lo+i) | uint16(l)<<8
			idx[l]++
		}
	}
	t.minLen = uint(t.order[0] >> 8)
	pos := 0
	for _, v := range t.order[:present] {
		r := t.single[pos : pos+1<<(mhTableLog-v>>8)]
		for k := range r {
			r[k] = v
		}
		pos += len(r)
	}
	t.buildMulti()
	return in[2+nbytes:], nil
}

// buildMulti fills t.multi: entry x holds the symbols whose codes follow one
// another and end within x's mhTableLog bits, up to mhMaxSyms.
//
// It is built a symbol deep at a time, from contiguous copies rather than a decode
// per entry (the table is rebuilt for every block, and a decode per entry cost a
// sixth of decoding the block): part[k-1] holds, for every window of r bits (at
// offset 1<<r), the entry of at most k symbols that window decodes to, with the
// symbols placed at bytes 5-k.. so that prefixing a symbol is an addition. Within
// an r-bit window, the codes of length l ≤ r tile its first values in canonical
// order, code i's 1<<(r-l) windows continuing with the (r-l)-bit windows of one
// symbol less; the windows after them decode to nothing.
func (t *mhTable) buildMulti() {
	syms := t.order[:t.nsyms]
	var prev []uint64 // part[k-2]; nil for k == 1 (no symbols after the last)
	for k := 1; k <= mhMaxSyms; k++ {
		// Windows longer than rmax never occur: k-1 more symbols take at least
		// (mhMaxSyms-k)*minLen of the mhTableLog bits.
		rmax := mhTableLog - uint(mhMaxSyms-k)*t.minLen
		rmin := uint(0)
		var cur []uint64
		if k == mhMaxSyms {
			rmin, cur = mhTableLog, t.multi[:]
		} else {
			cur = t.part[k-1][:]
			rmax = min(rmax, mhTableLog-1)
		}
		shift := 8 * uint(mhMaxSyms-k)
		for r := rmin; r <= rmax; r++ {
			var w []uint64 // the windows of r bits
			if k == mhMaxSyms {
				w = cur
			} else {
				w = cur[1<<r : 2<<r]
			}
			pos := 0
			for _, v := range syms {
				l := uint(v >> 8)
				if l > r {
					break
				}
				add := uint64(v&0xff)<<(shift+mhSymShift) | uint64(l)<<mhBitsShift | 1<<mhCountShift
				n := 1 << (r - l)
				dst := w[pos : pos+n]
				if prev == nil {
					for i := range dst {
						dst[i] = add
					}
				} else {
					src := prev[n : 2*n]
					for i := range dst {
						dst[i] = src[i] + add
					}
				}
				pos += n
			}
			clear(w[pos:])
		}
		prev = cur
	}
}

// decodeMH decodes a payload (after its table) into dst, whose length is the
// block's symbol count.
func decodeMH(dst, in []byte, t *mhTable) error {
	return decodeMHWith(dst, in, t, mhDecodeFast)
}

// mhFastFunc is a fast loop of decodeMH: mhDecodeFastGo, or a faster version of it
// that must leave the same bytes in dst and the same positions in p and o.
type mhFastFunc func(dst, in []byte, tab *[mhTableLen]uint64, p, o, oe *[mhStreams]int)

// decodeMHWith is decodeMH with the given fast loop (the tests compare them).
func decodeMHWith(dst, in []byte, t *mhTable, fast mhFastFunc) error {
	if len(in) < 2*(mhStreams-1) {
		return fmt.Errorf("%w: truncated stream sizes", errMHTable)
	}
	var end [mhStreams]int // each stream's end, in bytes from the first
	for i := range mhStreams - 1 {
		end[i] = int(binary.LittleEndian.Uint16(in[2*i:]))
		if i > 0 {
			end[i] += end[i-1]
		}
	}
	in = in[2*(mhStreams-1):]
	end[mhStreams-1] = len(in)
	if end[mhStreams-2] > len(in) {
		return fmt.Errorf("Huffman streams: sizes add up to %d bytes, %d there", end[mhStreams-2], len(in))
	}
	m := len(dst)
	q := (m + mhStreams - 1) / mhStreams
	// p: bit positions; o, oe: output positions and segment ends.
	var p, o, oe [mhStreams]int
	for i := range mhStreams {
		if i > 0 {
			p[i] = 8 * end[i-1]
		}
		o[i], oe[i] = min(i*q, m), min((i+1)*q, m)
	}
	fast(dst, in, &t.multi, &p, &o, &oe)
	// The tail: one symbol per lookup, reading zeros past each stream's end.
	for i := range mhStreams {
		pi, first, lim := p[i], 8*startOf(end, i), 8*end[i]
		for oi := o[i]; oi < oe[i]; oi++ {
			if pi >= lim {
				return fmt.Errorf("Huffman stream %d runs past its end", i)
			}
			var w [8]byte
			copy(w[:], in[pi>>3:end[i]])
			v := binary.BigEndian.Uint64(w[:]) << (pi & 7)
			s := t.single[v>>(64-mhTableLog)]
			dst[oi] = byte(s)
			pi += int(s >> 8)
		}
		// What is left must be the end marker: a one bit, then zeros.
		if rem := lim - pi; rem < 1 || rem > 8 || in[end[i]-1]&(1<<rem-1) != 1<<(rem-1) {
			return fmt.Errorf("Huffman stream %d: %d symbols take %d bits, and its %d bytes do not end there", i, oe[i]-min(i*q, m), pi-first, (lim-first)/8)
		}
	}
	return nil
}

// startOf is where stream i starts, in bytes from the first, given the ends.
func startOf(end [mhStreams]int, i int) int {
	if i == 0 {
		return 0
	}
	return end[i-1]
}

// mhDecodeFastGo decodes while every stream has at least mhPerRefill*mhMaxSyms
// symbols left to write and 8 bytes left to read in in (which the streams share:
// a stream that runs into the next is caught when the tail checks its end), and
// leaves the positions where it stopped in p and o. It is the reference for the
// assembly loop (mhuff_amd64.s), which stops where it stops.
func mhDecodeFastGo(dst, in []byte, tab *[mhTableLen]uint64, p, o, oe *[mhStreams]int) {
	const room = mhPerRefill * mhMaxSyms
	p0, p1, p2, p3 := p[0], p[1], p[2], p[3]
	o0, o1, o2, o3 := o[0], o[1], o[2], o[3]
	e0, e1, e2, e3 := oe[0]-room, oe[1]-room, oe[2]-room, oe[3]-room
	lim := len(in) - 8
	for o0 <= e0 && o1 <= e1 && o2 <= e2 && o3 <= e3 && p0>>3 <= lim && p1>>3 <= lim && p2>>3 <= lim && p3>>3 <= lim {
		// A sentinel bit below the 56 valid bits counts the bits used: it moves up
		// with every shift.
		v0 := binary.BigEndian.Uint64(in[p0>>3:])<<(p0&7)&^0xff | 0x80
		v1 := binary.BigEndian.Uint64(in[p1>>3:])<<(p1&7)&^0xff | 0x80
		v2 := binary.BigEndian.Uint64(in[p2>>3:])<<(p2&7)&^0xff | 0x80
		v3 := binary.BigEndian.Uint64(in[p3>>3:])<<(p3&7)&^0xff | 0x80
		x0 := tab[v0>>(64-mhTableLog)]
		x1 := tab[v1>>(64-mhTableLog)]
		x2 := tab[v2>>(64-mhTableLog)]
		x3 := tab[v3>>(64-mhTableLog)]
		binary.LittleEndian.PutUint32(dst[o0:o0+4:o0+4], uint32(x0>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o1:o1+4:o1+4], uint32(x1>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o2:o2+4:o2+4], uint32(x2>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o3:o3+4:o3+4], uint32(x3>>mhSymShift))
		v0 <<= (x0 >> mhBitsShift) & 63
		v1 <<= (x1 >> mhBitsShift) & 63
		v2 <<= (x2 >> mhBitsShift) & 63
		v3 <<= (x3 >> mhBitsShift) & 63
		o0 += int(x0 >> mhCountShift)
		o1 += int(x1 >> mhCountShift)
		o2 += int(x2 >> mhCountShift)
		o3 += int(x3 >> mhCountShift)
		x0 = tab[v0>>(64-mhTableLog)]
		x1 = tab[v1>>(64-mhTableLog)]
		x2 = tab[v2>>(64-mhTableLog)]
		x3 = tab[v3>>(64-mhTableLog)]
		binary.LittleEndian.PutUint32(dst[o0:o0+4:o0+4], uint32(x0>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o1:o1+4:o1+4], uint32(x1>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o2:o2+4:o2+4], uint32(x2>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o3:o3+4:o3+4], uint32(x3>>mhSymShift))
		v0 <<= (x0 >> mhBitsShift) & 63
		v1 <<= (x1 >> mhBitsShift) & 63
		v2 <<= (x2 >> mhBitsShift) & 63
		v3 <<= (x3 >> mhBitsShift) & 63
		o0 += int(x0 >> mhCountShift)
		o1 += int(x1 >> mhCountShift)
		o2 += int(x2 >> mhCountShift)
		o3 += int(x3 >> mhCountShift)
		x0 = tab[v0>>(64-mhTableLog)]
		x1 = tab[v1>>(64-mhTableLog)]
		x2 = tab[v2>>(64-mhTableLog)]
		x3 = tab[v3>>(64-mhTableLog)]
		binary.LittleEndian.PutUint32(dst[o0:o0+4:o0+4], uint32(x0>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o1:o1+4:o1+4], uint32(x1>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o2:o2+4:o2+4], uint32(x2>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o3:o3+4:o3+4], uint32(x3>>mhSymShift))
		v0 <<= (x0 >> mhBitsShift) & 63
		v1 <<= (x1 >> mhBitsShift) & 63
		v2 <<= (x2 >> mhBitsShift) & 63
		v3 <<= (x3 >> mhBitsShift) & 63
		o0 += int(x0 >> mhCountShift)
		o1 += int(x1 >> mhCountShift)
		o2 += int(x2 >> mhCountShift)
		o3 += int(x3 >> mhCountShift)
		x0 = tab[v0>>(64-mhTableLog)]
		x1 = tab[v1>>(64-mhTableLog)]
		x2 = tab[v2>>(64-mhTableLog)]
		x3 = tab[v3>>(64-mhTableLog)]
		binary.LittleEndian.PutUint32(dst[o0:o0+4:o0+4], uint32(x0>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o1:o1+4:o1+4], uint32(x1>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o2:o2+4:o2+4], uint32(x2>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o3:o3+4:o3+4], uint32(x3>>mhSymShift))
		v0 <<= (x0 >> mhBitsShift) & 63
		v1 <<= (x1 >> mhBitsShift) & 63
		v2 <<= (x2 >> mhBitsShift) & 63
		v3 <<= (x3 >> mhBitsShift) & 63
		o0 += int(x0 >> mhCountShift)
		o1 += int(x1 >> mhCountShift)
		o2 += int(x2 >> mhCountShift)
		o3 += int(x3 >> mhCountShift)
		x0 = tab[v0>>(64-mhTableLog)]
		x1 = tab[v1>>(64-mhTableLog)]
		x2 = tab[v2>>(64-mhTableLog)]
		x3 = tab[v3>>(64-mhTableLog)]
		binary.LittleEndian.PutUint32(dst[o0:o0+4:o0+4], uint32(x0>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o1:o1+4:o1+4], uint32(x1>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o2:o2+4:o2+4], uint32(x2>>mhSymShift))
		binary.LittleEndian.PutUint32(dst[o3:o3+4:o3+4], uint32(x3>>mhSymShift))
		v0 <<= (x0 >> mhBitsShift) & 63
		v1 <<= (x1 >> mhBitsShift) & 63
		v2 <<= (x2 >> mhBitsShift) & 63
		v3 <<= (x3 >> mhBitsShift) & 63
		o0 += int(x0 >> mhCountShift)
		o1 += int(x1 >> mhCountShift)
		o2 += int(x2 >> mhCountShift)
		o3 += int(x3 >> mhCountShift)
		p0 += bits.TrailingZeros64(v0) - 7
		p1 += bits.TrailingZeros64(v1) - 7
		p2 += bits.TrailingZeros64(v2) - 7
		p3 += bits.TrailingZeros64(v3) - 7
	}
	p[0], p[1], p[2], p[3] = p0, p1, p2, p3
	o[0], o[1], o[2], o[3] = o0, o1, o2, o3
}
