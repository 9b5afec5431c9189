package gmz

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/klauspost/compress/huff0"
)

// expPlane is a sign/exponent plane to measure on: the high bytes of the BF16
// safetensors file $GMZ_PLANE_FILE (every tensor BF16), or of 32 Mi normal
// weights when it is not set.
func expPlane(tb testing.TB) []byte {
	path := os.Getenv("GMZ_PLANE_FILE")
	if path == "" {
		rng := rand.New(rand.NewPCG(7, 7))
		out := make([]byte, 32<<20)
		for i := range out {
			out[i] = byte(math.Float32bits(float32(0.02*rng.NormFloat64())) >> 24)
		}
		return out
	}
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if len(b) < 8 {
		tb.Fatalf("%s: not safetensors", path)
	}
	n := binary.LittleEndian.Uint64(b)
	var h map[string]json.RawMessage
	if n > uint64(len(b)-8) || json.Unmarshal(b[8:8+n], &h) != nil {
		tb.Fatalf("%s: not safetensors", path)
	}
	data := b[8+n:]
	out := make([]byte, len(data)/2)
	for i := range out {
		out[i] = data[2*i+1]
	}
	return out
}

// TestMHPlane codes a plane block by block with both coders and reports the
// sizes (GMZ_PLANE_FILE=/path/to/bf16.safetensors go test -run MHPlane -v).
func TestMHPlane(t *testing.T) {
	plane := expPlane(t)
	var e mhEncoder
	var tab mhTable
	var hs huff0.Scratch
	hs.Reuse = huff0.ReusePolicyNone
	dst := make([]byte, blockSize)
	mhSize, hSize := 0, 0
	for off := 0; off < len(plane); off += blockSize {
		blk := plane[off:min(off+blockSize, len(plane))]
		e.plan(blk)
		out := e.appendCoded(nil, blk)
		mhSize += len(out)
		c, _, err := huff0.Compress4X(blk, &hs)
		if err != nil {
			t.Fatal(err)
		}
		hSize += len(c)
		rest, err := readMHTable(&tab, out)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeMH(dst[:len(blk)], rest, &tab); err != nil {
			t.Fatalf("block %d: %v", off/blockSize, err)
		}
		if !bytes.Equal(dst[:len(blk)], blk) {
			t.Fatalf("block %d differs", off/blockSize)
		}
	}
	if r := float64(mhSize) / float64(hSize); r > 1.01 {
		t.Errorf("the multi-symbol blocks are %.4f times huff0's size", r)
	}
	t.Logf("%d symbols: mh %d bytes (%.4f bits/sym), huff0 %d (%.4f), mh/huff0 %.5f", len(plane), mhSize, 8*float64(mhSize)/float64(len(plane)), hSize, 8*float64(hSize)/float64(len(plane)), float64(mhSize)/float64(hSize))
}

// BenchmarkMHBlocks decodes a plane's blocks (table and streams) with huff0 and
// with the multi-symbol code; MB/cpu-s is per CPU-second of the process.
func BenchmarkMHBlocks(b *testing.B) {
	plane := expPlane(b)
	if len(plane) > 64<<20 {
		plane = plane[:64<<20]
	}
	var e mhEncoder
	var hs huff0.Scratch
	hs.Reuse = huff0.ReusePolicyNone
	var mhBlocks, hBlocks [][]byte
	for off := 0; off < len(plane); off += blockSize {
		blk := plane[off:min(off+blockSize, len(plane))]
		e.plan(blk)
		out := e.appendCoded(nil, blk)
		mhBlocks = append(mhBlocks, out)
		c, _, err := huff0.Compress4X(blk, &hs)
		if err != nil {
			b.Fatal(err)
		}
		hBlocks = append(hBlocks, bytes.Clone(c))
	}
	dst := make([]byte, blockSize)
	report := func(b *testing.B, cpu0 time.Duration) {
		if cpu := cpuTime() - cpu0; cpu > 0 {
			b.ReportMetric(float64(b.N)*float64(len(plane))/1e6/cpu.Seconds(), "MB/cpu-s")
		}
	}
	b.Run("huff0", func(b *testing.B) {
		b.SetBytes(int64(len(plane)))
		cpu0 := cpuTime()
		for b.Loop() {
			for i, c := range hBlocks {
				m := min(blockSize, len(plane)-i*blockSize)
				s, rest, err := huff0.ReadTable(c, &hs)
				if err != nil {
					b.Fatal(err)
				}
				out, err := s.Decoder().Decompress4X(dst[:0:m], rest)
				if err != nil || len(out) != m {
					b.Fatal(err)
				}
			}
		}
		report(b, cpu0)
	})
	// mh: decodeMH, with the assembly loop where there is one; mh-go: with the Go
	// loop, its reference.
	for _, c := range []struct {
		name string
		fast mhFastFunc
	}{{"mh", mhDecodeFast}, {"mh-go", mhDecodeFastGo}} {
		b.Run(c.name, func(b *testing.B) {
			var tab mhTable
			b.SetBytes(int64(len(plane)))
			cpu0 := cpuTime()
			for b.Loop() {
				for i, blk := range mhBlocks {
					m := min(blockSize, len(plane)-i*blockSize)
					rest, err := readMHTable(&tab, blk)
					if err != nil {
						b.Fatal(err)
					}
					if err := decodeMHWith(dst[:m], rest, &tab, c.fast); err != nil {
						b.Fatal(err)
					}
				}
			}
			last := plane[(len(mhBlocks)-1)*blockSize:]
			if !bytes.Equal(dst[:len(last)], last) {
				b.Fatal("the last block decoded wrong")
			}
			report(b, cpu0)
		})
	}
	b.Run("mh-table", func(b *testing.B) {
		var tab mhTable
		b.SetBytes(int64(len(plane)))
		cpu0 := cpuTime()
		for b.Loop() {
			for _, c := range mhBlocks {
				if _, err := readMHTable(&tab, c); err != nil {
					b.Fatal(err)
				}
			}
		}
		report(b, cpu0)
	})
}

// BenchmarkMHEncode codes a plane's blocks with huff0 and with the multi-symbol code.
func BenchmarkMHEncode(b *testing.B) {
	plane := expPlane(b)
	plane = plane[:32<<20]
	b.Run("huff0", func(b *testing.B) {
		var hs huff0.Scratch
		hs.Reuse = huff0.ReusePolicyNone
		b.SetBytes(int64(len(plane)))
		for b.Loop() {
			for off := 0; off < len(plane); off += blockSize {
				if _, _, err := huff0.Compress4X(plane[off:off+blockSize], &hs); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("mh", func(b *testing.B) {
		var e mhEncoder
		out := make([]byte, 0, 2*blockSize)
		b.SetBytes(int64(len(plane)))
		for b.Loop() {
			for off := 0; off < len(plane); off += blockSize {
				e.plan(plane[off : off+blockSize])
				e.appendCoded(out[:0], plane[off:off+blockSize])
			}
		}
	})
}
