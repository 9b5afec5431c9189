//go:build !purego

package gmz

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestMHDecodeFastAsm runs the assembly loop and mhDecodeFastGo from the same
// positions on every round-trip block, whole and with bits flipped, and checks that
// they stop at the same positions with the same bytes written (those past o
// included), and write nothing past the block.
func TestMHDecodeFastAsm(t *testing.T) {
	if !haveBMI2 {
		t.Skip("no BMI2")
	}
	rng := rand.New(rand.NewPCG(9, 9))
	var tab mhTable
	rounds := 0
	for name, blk := range mhBlocks() {
		good := mhPayload(blk)
		for k := range 4 {
			payload := bytes.Clone(good)
			for range k {
				payload[rng.IntN(len(payload))] ^= 1 << rng.IntN(8)
			}
			rest, err := readMHTable(&tab, payload)
			if err != nil || len(rest) < 2*(mhStreams-1) {
				continue
			}
			in := rest[2*(mhStreams-1):]
			m := len(blk)
			q := (m + mhStreams - 1) / mhStreams
			var p, o, oe [mhStreams]int
			end := 0
			for i := range mhStreams {
				p[i] = 8 * end
				if i < mhStreams-1 {
					end += int(binary.LittleEndian.Uint16(rest[2*i:]))
				}
				o[i], oe[i] = min(i*q, m), min((i+1)*q, m)
			}
			if end > len(in) {
				continue
			}
			d1, d2 := make([]byte, m+64), make([]byte, m+64)
			p1, o1, p2, o2 := p, o, p, o
			mhDecodeFastAsm(d1[:m:m], in, &tab.multi, &p1, &o1, &oe)
			mhDecodeFastGo(d2[:m:m], in, &tab.multi, &p2, &o2, &oe)
			if p1 != p2 || o1 != o2 {
				t.Fatalf("%s, %d bits flipped: assembly stopped at p %v o %v, Go at p %v o %v", name, k, p1, o1, p2, o2)
			}
			if !bytes.Equal(d1, d2) {
				t.Fatalf("%s, %d bits flipped: the loops wrote different bytes", name, k)
			}
			for i, b := range d1[m:] {
				if b != 0 {
					t.Fatalf("%s: a write %d bytes past the block", name, i+1)
				}
			}
			if o1 != o {
				rounds++
			}
		}
	}
	if rounds == 0 {
		t.Fatal("the assembly loop never ran")
	}
}
