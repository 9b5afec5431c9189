package gmz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// mhDecodeRef decodes a multi-symbol Huffman payload bit by bit from its code
// lengths alone (canonical decoding by the first code of each length), with none of
// the decoder's tables or fast paths: the reference decodeMH is compared with. It
// accepts exactly what the format allows.
func mhDecodeRef(dst, in []byte) error {
	if len(in) < 2 {
		return errors.New("truncated table")
	}
	lo, n := int(in[0]), int(in[1])+1
	if lo+n > 256 || len(in) < 2+(n+1)/2 {
		return errors.New("bad table header")
	}
	var lens [256]int
	var count [16]int
	for i := range n {
		l := int(in[2+i/2]>>(4*(i&1))) & 15
		if l > mhTableLog {
			return errors.New("code too long")
		}
		lens[lo+i] = l
		if l > 0 {
			count[l]++
		}
	}
	in = in[2+(n+1)/2:]
	kraft, present := 0, 0
	for l := 1; l <= mhTableLog; l++ {
		kraft += count[l] << (mhTableLog - l)
		present += count[l]
	}
	if present < 2 || kraft != mhTableLen {
		return errors.New("not a complete code of two or more symbols")
	}
	// Canonical: codes of length l are first[l], first[l]+1, ... for the symbols of
	// that length in increasing order (bySym[l]).
	var first [mhTableLog + 2]int
	var bySym [mhTableLog + 1][]byte
	code := 0
	for l := 1; l <= mhTableLog; l++ {
		code = (code + count[l-1]*boolInt(l > 1)) << 1
		if l == 1 {
			code = 0
		}
		first[l] = code
		for s := range 256 {
			if lens[s] == l {
				bySym[l] = append(bySym[l], byte(s))
			}
		}
	}
	if len(in) < 6 {
		return errors.New("truncated sizes")
	}
	sizes := []int{int(binary.LittleEndian.Uint16(in)), int(binary.LittleEndian.Uint16(in[2:])), int(binary.LittleEndian.Uint16(in[4:]))}
	in = in[6:]
	if sizes[0]+sizes[1]+sizes[2] > len(in) {
		return errors.New("sizes past the end")
	}
	sizes = append(sizes, len(in)-sizes[0]-sizes[1]-sizes[2])
	m := len(dst)
	q := (m + 3) / 4
	for i, size := range sizes {
		st := in[:size]
		in = in[size:]
		pos := 0
		bit := func() (int, bool) {
			if pos >= 8*len(st) {
				return 0, false
			}
			b := int(st[pos/8]>>(7-pos%8)) & 1
			pos++
			return b, true
		}
		for k := min(i*q, m); k < min((i+1)*q, m); k++ {
			c, found := 0, false
			for l := 1; l <= mhTableLog && !found; l++ {
				b, ok := bit()
				if !ok {
					return fmt.Errorf("stream %d runs past its end", i)
				}
				c = c<<1 | b
				if d := c - first[l]; d >= 0 && d < len(bySym[l]) {
					dst[k], found = bySym[l][d], true
				}
			}
		}
		// The end marker: a one bit, then zeros to the end, all in the last byte.
		if b, ok := bit(); !ok || b != 1 {
			return fmt.Errorf("stream %d: no end marker", i)
		}
		if pos > 8*len(st) || 8*len(st)-pos >= 8 {
			return fmt.Errorf("stream %d: bytes after the end marker", i)
		}
		for pos < 8*len(st) {
			if b, _ := bit(); b != 0 {
				return fmt.Errorf("stream %d: a one bit after the end marker", i)
			}
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// decodeMHPayload is how a frame decodes a block: the table, then the streams.
func decodeMHPayload(dst, payload []byte, t *mhTable) error {
	rest, err := readMHTable(t, payload)
	if err != nil {
		return err
	}
	return decodeMH(dst, rest, t)
}

// mhBlocks are blocks of many shapes: two symbols, every symbol, skewed counts that
// need the 11-bit limit, the exponent bytes of normal weights, at sizes that leave
// streams empty, short, or longer than the fast loop's reach.
func mhBlocks() map[string][]byte {
	rng := rand.New(rand.NewPCG(3, 4))
	out := map[string][]byte{}
	for _, m := range []int{2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 100, 257, 1000, 4097, blockSize - 1, blockSize} {
		gen := map[string]func(i int) byte{
			"two":     func(i int) byte { return byte(rng.IntN(2)) * 0xff },
			"uniform": func(i int) byte { return byte(rng.Uint32()) },
			"skewed": func(i int) byte { // geometric: lengths past 11 without the limit
				s := 0
				for s < 40 && rng.IntN(3) > 0 {
					s++
				}
				return byte(100 + s)
			},
			"bf16-exp": func(i int) byte {
				return byte(math.Float32bits(float32(0.02*rng.NormFloat64())) >> 24)
			},
			"one-rare": func(i int) byte { // one symbol, and another once
				if i == m/2 {
					return 7
				}
				return 200
			},
		}
		for name, g := range gen {
			b := make([]byte, m)
			for i := range b {
				b[i] = g(i)
			}
			b[0], b[m-1] = 1, 2 // at least two distinct symbols
			out[fmt.Sprintf("%s/%d", name, m)] = b
		}
	}
	return out
}

// huffmanCost is the cost (Σ count × length) of an unlimited Huffman code.
func huffmanCost(hist *[256]uint32) uint64 {
	var w []uint64
	for _, c := range hist {
		if c > 0 {
			w = append(w, uint64(c))
		}
	}
	cost := uint64(0)
	for len(w) > 1 {
		slices.Sort(w)
		s := w[0] + w[1]
		cost += s
		w = append(w[2:], s)
	}
	return cost
}

func TestMHRoundTrip(t *testing.T) {
	var e mhEncoder
	var tab mhTable
	for name, blk := range mhBlocks() {
		distinct, size, _, _ := e.plan(blk)
		if distinct < 2 {
			t.Fatalf("%s: %d symbols", name, distinct)
		}
		// The lengths: limited, complete, and optimal (package-merge: the Huffman
		// cost when Huffman's code fits, at least that when it does not).
		kraft, cost, maxLen := 0, uint64(0), 0
		for s, l := range e.lens {
			if (l > 0) != (e.hist[s] > 0) {
				t.Fatalf("%s: symbol %d: length %d for count %d", name, s, l, e.hist[s])
			}
			if l > 0 {
				kraft += 1 << (mhTableLog - l)
				cost += uint64(e.hist[s]) * uint64(l)
				maxLen = max(maxLen, int(l))
			}
		}
		if kraft != mhTableLen || maxLen > mhTableLog {
			t.Fatalf("%s: Kraft sum %d/%d, longest code %d", name, kraft, mhTableLen, maxLen)
		}
		if h := huffmanCost(&e.hist); cost < h || maxLen < mhTableLog && cost != h {
			t.Fatalf("%s: cost %d, Huffman %d (longest %d)", name, cost, h, maxLen)
		}
		payload := e.appendCoded([]byte{0xee}, blk)[1:] // appends
		if len(payload) > size {
			t.Fatalf("%s: payload %d bytes, planned at most %d", name, len(payload), size)
		}
		got := make([]byte, len(blk))
		if err := decodeMHPayload(got, payload, &tab); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, blk) {
			t.Fatalf("%s: decoded bytes differ", name)
		}
		ref := make([]byte, len(blk))
		if err := mhDecodeRef(ref, payload); err != nil || !bytes.Equal(ref, blk) {
			t.Fatalf("%s: the reference decoder: %v", name, err)
		}
		if err := mhCompareFast(payload, len(blk)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// Any other symbol count is an error (the end markers).
		for _, m := range []int{len(blk) - 1, len(blk) + 1, len(blk) + 4} {
			if err := decodeMHPayload(make([]byte, m), payload, &tab); err == nil {
				t.Fatalf("%s: decodes as %d symbols", name, m)
			}
			if err := mhCompareFast(payload, m); err != nil {
				t.Fatalf("%s as %d symbols: %v", name, m, err)
			}
		}
	}
}

// mhPayload codes blk, for tests.
func mhPayload(blk []byte) []byte {
	var e mhEncoder
	e.plan(blk)
	return e.appendCoded(nil, blk)
}

func TestMHMalformed(t *testing.T) {
	blk := mhBlocks()["bf16-exp/1000"]
	good := mhPayload(blk)
	tableLen := 2 + (int(good[1])+2)/2
	edit := func(f func(p []byte) []byte) []byte { return f(bytes.Clone(good)) }
	table := func(lo int, lens ...byte) []byte { // a table, sizes and a stream of zero bytes
		p := []byte{byte(lo), byte(len(lens) - 1)}
		for i := 0; i < len(lens); i += 2 {
			b := lens[i]
			if i+1 < len(lens) {
				b |= lens[i+1] << 4
			}
			p = append(p, b)
		}
		return append(p, 1, 0, 1, 0, 1, 0, 0x80, 0x80, 0x80, 0x80)
	}
	for _, c := range []struct {
		name    string
		payload []byte
		m       int
	}{
		{"empty", nil, 4},
		{"table header only", []byte{0}, 4},
		{"symbols past 255", []byte{200, 60, 0x11, 0x11}, 4},
		{"lengths truncated", good[:tableLen-1], len(blk)},
		{"length 12", table(0, 1, 12), 4},
		{"length 15", table(0, 1, 15), 4},
		{"no symbol", table(0, 0, 0), 4},
		{"one symbol", table(5, 1), 4},
		{"over-subscribed", table(0, 1, 1, 1), 4},
		{"incomplete", table(0, 1, 2), 4},
		{"incomplete, long codes", table(0, 11, 11), 4},
		{"sizes truncated", good[:tableLen+5], len(blk)},
		{"sizes past the end", edit(func(p []byte) []byte { p[tableLen+4] = 0xff; return p }), len(blk)},
		{"stream 0 longer", edit(func(p []byte) []byte { p[tableLen]++; return p }), len(blk)},
		{"stream 1 shorter", edit(func(p []byte) []byte { p[tableLen+2]--; return p }), len(blk)},
		{"last stream truncated", good[:len(good)-1], len(blk)},
		{"last stream with a byte more", append(bytes.Clone(good), 0), len(blk)},
		{"a marker byte more", append(bytes.Clone(good), 0x80), len(blk)},
		{"end marker cleared", edit(func(p []byte) []byte { p[len(p)-1] = 0; return p }), len(blk)},
		{"one symbol more", good, len(blk) + 1},
		{"one symbol less", good, len(blk) - 1},
		{"no symbols", good, 0},
		{"empty streams for symbols", table(0, 1, 1)[:9], 8},
	} {
		t.Run(c.name, func(t *testing.T) {
			var tab mhTable
			dst := make([]byte, c.m)
			err := decodeMHPayload(dst, c.payload, &tab)
			if err == nil {
				t.Fatalf("decoded without error")
			}
			if rerr := mhDecodeRef(dst, c.payload); rerr == nil {
				t.Fatalf("the reference decodes it (decodeMH: %v)", err)
			}
			if err := mhCompareFast(c.payload, c.m); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The frame refuses a multi-symbol block in a frame of coding 1.
	var s scratch
	frame := appendPayload(nil, blockMH, good)
	frame = append(frame, blockRaw)
	frame = append(frame, make([]byte, len(blk))...)
	if _, err := decodePlanes(make([]byte, 2*len(blk)), frame, nil, 2, false, &s); err == nil {
		t.Fatal("coding 1 frame with a multi-symbol block decoded")
	}
	if _, err := decodePlanes(make([]byte, 2*len(blk)), frame, nil, 2, true, &s); err != nil {
		t.Fatalf("coding 3 frame: %v", err)
	}
}

// FuzzMHBlock decodes arbitrary payloads as blocks of arbitrary sizes with decodeMH
// and the bit-by-bit reference: neither may panic, they must agree on whether the
// payload is valid, and on the bytes when it is.
func FuzzMHBlock(f *testing.F) {
	for name, blk := range mhBlocks() {
		if len(blk) <= 4097 && !strings.HasPrefix(name, "uniform") {
			f.Add(mhPayload(blk), uint32(len(blk)))
		}
	}
	f.Add([]byte{0, 1, 0x11, 1, 0, 1, 0, 1, 0, 0x80, 0x80, 0x80, 0x80}, uint32(4))
	f.Fuzz(func(t *testing.T, payload []byte, m uint32) {
		m %= blockSize + 1
		var tab mhTable
		got := make([]byte, m)
		err := decodeMHPayload(got, payload, &tab)
		ref := make([]byte, m)
		rerr := mhDecodeRef(ref, payload)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("decodeMH: %v; reference: %v", err, rerr)
		}
		if err == nil && !bytes.Equal(got, ref) {
			t.Fatal("decodeMH and the reference differ")
		}
		// decodeMH's fast loop (assembly where there is one) against the Go loop:
		// the same bytes and the same error, valid or not.
		if err := mhCompareFast(payload, int(m)); err != nil {
			t.Fatal(err)
		}
	})
}

// mhCompareFast decodes payload as a block of m symbols with decodeMH and with
// decodeMHWith's Go loop, into buffers with guard bytes after m, and says how they
// differ: in their errors, their bytes, or a write past the block.
func mhCompareFast(payload []byte, m int) error {
	const guard = 64
	var t1, t2 mhTable
	d1, d2 := bytes.Repeat([]byte{0xa5}, m+guard), bytes.Repeat([]byte{0xa5}, m+guard)
	r1, e1 := readMHTable(&t1, payload)
	r2, e2 := readMHTable(&t2, payload)
	if (e1 == nil) != (e2 == nil) {
		return fmt.Errorf("readMHTable: %v, then %v", e1, e2)
	}
	if e1 != nil {
		return nil
	}
	err1 := decodeMH(d1[:m:m], r1, &t1)
	err2 := decodeMHWith(d2[:m:m], r2, &t2, mhDecodeFastGo)
	if fmt.Sprint(err1) != fmt.Sprint(err2) {
		return fmt.Errorf("decodeMH: %v; with the Go loop: %v", err1, err2)
	}
	if err1 == nil && !bytes.Equal(d1[:m], d2[:m]) {
		return errors.New("decodeMH and the Go loop decode different bytes")
	}
	for i, b := range d1[m:] {
		if b != 0xa5 {
			return fmt.Errorf("decodeMH wrote %d bytes past the block", i+1)
		}
	}
	return nil
}

// TestMHFrames round-trips tensors of every float dtype through Write and
// ReadTensor at sizes that cut planes into whole and partial blocks, with all-same
// and two-value data, and checks that the multi-symbol blocks are used where they
// should be (the sign/exponent plane of normal weights).
func TestMHFrames(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var ins []Input
	for _, dt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32, dtype.F64} {
		for _, n := range []int{0, 1, 31, 1000, blockSize + 13, 3*blockSize - 1} {
			ins = append(ins, Input{Name: fmt.Sprintf("%s/normal/%d", dt, n), DType: dt, Shape: []int64{int64(n)}, Data: fill(rng, dt, n, "normal")})
		}
		n := blockSize + 5
		same := fill(rng, dt, n, "zeros")
		two := fill(rng, dt, n, "zeros")
		for i := range n {
			for j := range dt.Size() {
				same[i*dt.Size()+j] = 0x3c
				two[i*dt.Size()+j] = byte(i%3) * 0x40
			}
		}
		ins = append(ins, Input{Name: dt.String() + "/same", DType: dt, Shape: []int64{int64(n)}, Data: same},
			Input{Name: dt.String() + "/two", DType: dt, Shape: []int64{int64(n)}, Data: two})
	}
	for _, frame := range []int{DefaultFrameSize, 3 * blockSize / 2 * 8} {
		b, st := writeGMZ(t, ins, Options{FrameSize: frame})
		f, err := NewFile(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		for i, tn := range f.Tensors {
			dst := make([]byte, tn.Size)
			if err := f.ReadTensor(t.Context(), &f.Tensors[i], dst, nil, 2); err != nil {
				t.Fatalf("%s: %v", tn.Name, err)
			}
			if !bytes.Equal(dst, ins[i].Data) {
				t.Fatalf("%s: decoded bytes differ", tn.Name)
			}
			mh := slices.ContainsFunc(tn.Frames, func(fr Frame) bool { return fr.Coding == codingPlanesMH })
			// Small blocks may go either way (huff0's table is smaller); all-same
			// blocks are one repeated byte.
			n := tn.Size / int64(tn.DType.Size())
			want, check := false, true
			switch {
			case strings.HasSuffix(tn.Name, "/same"):
			case strings.HasSuffix(tn.Name, "/two"):
				want = true
			default: // F16 weights' high byte takes 5.5 bits a symbol: huff0's
				want, check = tn.DType != dtype.F16, n >= blockSize
			}
			if check && mh != want {
				t.Errorf("frame %d: %s: multi-symbol frames %v, want %v", frame, tn.Name, mh, want)
			}
		}
		if st.Frames[codingPlanes] == 0 {
			t.Errorf("stats count no planes frames: %+v", st.Frames)
		}
	}
}

// TestMHGolden checks that testdata/mh.gmz (a FuzzOpen seed) holds coding 3 frames
// and decodes.
func TestMHGolden(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "mh.gmz"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, tn := range f.Tensors {
		for _, fr := range tn.Frames {
			n += boolInt(fr.Coding == codingPlanesMH)
		}
		if err := f.ReadTensor(t.Context(), &f.Tensors[i], make([]byte, tn.Size), nil, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n == 0 {
		t.Fatal("no coding 3 frame")
	}
}
