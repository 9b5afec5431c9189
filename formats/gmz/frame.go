package gmz

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

// scratch holds one worker's buffers; frames are at most maxFrameSize, so a scratch
// grows to a bounded size and is reused through scratchPool.
type scratch struct {
	huff   huff0.Scratch
	planes []byte
	xor    []byte
	out    []byte
	raw    []byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// zstd's encoder and decoder are safe for concurrent EncodeAll/DecodeAll calls and
// keep per-call state of their own, so one of each serves every worker.
var (
	zstdOnce sync.Once
	zstdEnc  *zstd.Encoder
	zstdDec  *zstd.Decoder
	zstdErr  error
)

func zstdCodecs() (*zstd.Encoder, *zstd.Decoder, error) {
	zstdOnce.Do(func() {
		n := runtime.GOMAXPROCS(0)
		zstdEnc, zstdErr = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(n), zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true))
		if zstdErr != nil {
			return
		}
		// The cap limit makes DecodeAll stop at the frame's raw size, whatever the
		// zstd frame header claims.
		zstdDec, zstdErr = zstd.NewReader(nil, zstd.WithDecoderConcurrency(n),
			zstd.WithDecoderMaxMemory(maxFrameSize), zstd.WithDecodeAllCapLimit(true))
	})
	return zstdEnc, zstdDec, zstdErr
}

// planeStats, when not nil, counts byte values per plane for the entropy bound:
// index [k][j][b] for elements of 1<<k bytes, plane j, byte value b.
type planeStats [4][8][256]uint64

func log2Size(k int) int {
	switch k {
	case 1:
		return 0
	case 2:
		return 1
	case 4:
		return 2
	}
	return 3
}

func (st *planeStats) count(planes []byte, k int) {
	n := len(planes) / k
	for j := range k {
		h := &st[log2Size(k)][j]
		for _, b := range planes[j*n : (j+1)*n] {
			h[b]++
		}
	}
}

// encodeFrame compresses src, whose elements are k bytes (floats when float), and
// returns the coding and the stored bytes (which may alias src or s).
func encodeFrame(src []byte, k int, float bool, s *scratch, st *planeStats) (int, []byte, error) {
	if float && k > 1 {
		s.planes = grow(s.planes, len(src))
		splitPlanes(s.planes, src, k)
		if st != nil {
			st.count(s.planes, k)
		}
		out := encodePlanes(s.out[:0], s.planes, k, &s.huff)
		s.out = out[:0]
		if len(out) < len(src) {
			return codingPlanes, out, nil
		}
		return codingRaw, src, nil
	}
	if st != nil {
		st.count(src, 1)
	}
	enc, _, err := zstdCodecs()
	if err != nil {
		return 0, nil, err
	}
	out := enc.EncodeAll(src, s.out[:0])
	s.out = out[:0]
	if len(out) < len(src) {
		return codingZstd, out, nil
	}
	return codingRaw, src, nil
}

// encodePlanes appends the block-coded planes (k of them, back to back in planes).
func encodePlanes(out, planes []byte, k int, hs *huff0.Scratch) []byte {
	n := len(planes) / k
	hs.Reuse = huff0.ReusePolicyNone // blocks decode on their own
	for j := range k {
		p := planes[j*n : (j+1)*n]
		for off := 0; off < len(p); off += blockSize {
			blk := p[off:min(off+blockSize, len(p))]
			out = appendBlock(out, blk, hs)
		}
	}
	return out
}

func appendBlock(out, blk []byte, hs *huff0.Scratch) []byte {
	if len(blk) >= 32 {
		comp, _, err := huff0.Compress4X(blk, hs)
		switch {
		case err == nil && len(comp)+binary.MaxVarintLen32 < len(blk):
			out = append(out, blockHuff)
			out = binary.AppendUvarint(out, uint64(len(comp)))
			return append(out, comp...)
		case errors.Is(err, huff0.ErrUseRLE):
			return append(out, blockRLE, blk[0])
		}
	}
	out = append(out, blockRaw)
	return append(out, blk...)
}

// decodeFrame decodes a frame's stored bytes into dst, whose length is the frame's
// raw size (checked against the header before any allocation).
func decodeFrame(dst, stored []byte, coding, k int, s *scratch) error {
	switch coding {
	case codingRaw:
		if len(stored) != len(dst) {
			return fmt.Errorf("raw frame stores %d bytes for %d", len(stored), len(dst))
		}
		copy(dst, stored)
		return nil
	case codingZstd:
		_, dec, err := zstdCodecs()
		if err != nil {
			return err
		}
		out, err := dec.DecodeAll(stored, dst[:0:len(dst)])
		if err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		if len(out) != len(dst) || (len(out) > 0 && &out[0] != &dst[0]) {
			return fmt.Errorf("zstd frame decodes to %d bytes, want %d", len(out), len(dst))
		}
		return nil
	case codingPlanes:
		s.planes = grow(s.planes, len(dst))
		if err := decodePlanes(s.planes, stored, k, &s.huff); err != nil {
			return err
		}
		mergePlanes(dst, s.planes, k)
		return nil
	}
	return fmt.Errorf("unknown coding %d", coding)
}

func decodePlanes(planes, in []byte, k int, hs *huff0.Scratch) error {
	n := len(planes) / k
	for j := range k {
		p := planes[j*n : (j+1)*n]
		for off := 0; off < len(p); off += blockSize {
			m := min(blockSize, len(p)-off)
			if len(in) < 1 {
				return fmt.Errorf("plane %d: block at %d: truncated", j, off)
			}
			mode := in[0]
			in = in[1:]
			switch mode {
			case blockRaw:
				if len(in) < m {
					return fmt.Errorf("plane %d: raw block at %d: %d bytes left, want %d", j, off, len(in), m)
				}
				copy(p[off:off+m], in)
				in = in[m:]
			case blockRLE:
				if len(in) < 1 {
					return fmt.Errorf("plane %d: RLE block at %d: truncated", j, off)
				}
				b := in[0]
				in = in[1:]
				dst := p[off : off+m]
				for i := range dst {
					dst[i] = b
				}
			case blockHuff:
				l, w := binary.Uvarint(in)
				if w <= 0 || l > uint64(len(in)-w) {
					return fmt.Errorf("plane %d: Huffman block at %d: bad length", j, off)
				}
				blk := in[w : w+int(l)]
				in = in[w+int(l):]
				s, rest, err := huff0.ReadTable(blk, hs)
				if err != nil {
					return fmt.Errorf("plane %d: Huffman table at %d: %w", j, off, err)
				}
				out, err := s.Decoder().Decompress4X(p[off:off:off+m], rest)
				if err != nil {
					return fmt.Errorf("plane %d: Huffman block at %d: %w", j, off, err)
				}
				if len(out) != m {
					return fmt.Errorf("plane %d: Huffman block at %d decodes to %d bytes, want %d", j, off, len(out), m)
				}
			default:
				return fmt.Errorf("plane %d: unknown block mode %d at %d", j, mode, off)
			}
		}
	}
	if len(in) != 0 {
		return fmt.Errorf("%d bytes left over after the planes", len(in))
	}
	return nil
}
