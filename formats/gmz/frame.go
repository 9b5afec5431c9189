package gmz

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"runtime"
	"sync"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

// scratch holds one worker's buffers; frames are at most maxFrameSize, so a scratch
// grows to a bounded size and is reused through scratchPool.
type scratch struct {
	huff   huff0.Scratch
	mh     mhEncoder
	mhBuf  []byte   // a block's multi-symbol payload, before its length is known
	mhTab  *mhTable // allocated by the first frame that needs it
	planes []byte
	xor    []byte
	raw    []byte
	// decoding a planes frame: its blocks, and a column of decoded planes
	blocks  []block
	cols    [][]byte
	colBufs [][]byte
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
// returns the coding and the stored bytes: appended to out when coded, src itself
// when raw.
func encodeFrame(out, src []byte, k int, float bool, s *scratch, st *planeStats) (int, []byte, error) {
	if float && k > 1 {
		s.planes = grow(s.planes, len(src))
		splitPlanes(s.planes, src, k)
		if st != nil {
			st.count(s.planes, k)
		}
		var mh bool
		out, mh = encodePlanes(out, s.planes, k, s)
		if len(out) < len(src) {
			if mh {
				return codingPlanesMH, out, nil
			}
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
	out = enc.EncodeAll(src, out)
	if len(out) < len(src) {
		return codingZstd, out, nil
	}
	return codingRaw, src, nil
}

// encodePlanes appends the block-coded planes (k of them, back to back in planes),
// and reports whether a block is multi-symbol Huffman (the frame is then
// codingPlanesMH).
func encodePlanes(out, planes []byte, k int, s *scratch) ([]byte, bool) {
	n := len(planes) / k
	s.huff.Reuse = huff0.ReusePolicyNone // blocks decode on their own
	anyMH := false
	for j := range k {
		p := planes[j*n : (j+1)*n]
		for off := 0; off < len(p); off += blockSize {
			blk := p[off:min(off+blockSize, len(p))]
			var mh bool
			out, mh = appendBlock(out, blk, s)
			anyMH = anyMH || mh
		}
	}
	return out, anyMH
}

// minHuffGain: a block is stored Huffman-coded only when that saves more than
// 1/minHuffGain of it. A mantissa plane is nearly uniform (7.97 bits a byte), and
// coding it would save a fraction of a percent for the cost of decoding it at
// Huffman speed instead of copying it.
const minHuffGain = 32

// appendBlock appends blk's mode and payload, and reports whether it is blockMH.
//
// The multi-symbol code is preferred where it is within 1 % of huff0's size: it
// decodes about 1.6 times as fast (bench/sections/gmz-decode.md). Its code is an
// optimal one of codes up to huff0's longest (11 bits), so its streams are never
// longer than huff0's; only its table and its streams' padding can make it larger,
// by at most over bytes. Where 101×over fits in the payload that bound already
// keeps it within 1 % of huff0 (for the exponent plane's blocks of 128 Ki
// symbols: under 0.2 %), and huff0 is not run; on smaller blocks the two are
// compared. It is used only where codes average at most mhMaxBits: where they are
// longer, an entry holds fewer symbols, and huff0's assembly decodes faster.
func appendBlock(out, blk []byte, s *scratch) ([]byte, bool) {
	if len(blk) < 32 {
		return append(append(out, blockRaw), blk...), false
	}
	limit := len(blk) - len(blk)/minHuffGain // a payload must be under this
	distinct, size, table, bits := s.mh.plan(blk)
	if distinct == 1 {
		return append(out, blockRLE, blk[0]), false
	}
	var mh []byte
	if size+binary.MaxVarintLen32 < limit && bits <= mhMaxBits*len(blk) {
		mh = s.mh.appendCoded(s.mhBuf[:0], blk)
		s.mhBuf = mh
		if over := table + 2*(mhStreams-1) + mhStreams; 101*over <= len(mh) {
			return appendPayload(out, blockMH, mh), true
		}
	}
	if bits/8+binary.MaxVarintLen32 >= limit {
		// huff0's streams take at least these bits: it cannot pass either (a
		// mantissa plane), and trying would count the block's bytes again.
		return append(append(out, blockRaw), blk...), false
	}
	comp, _, err := huff0.Compress4X(blk, &s.huff)
	switch {
	case err == nil && mh != nil && 100*len(mh) <= 101*len(comp):
		return appendPayload(out, blockMH, mh), true
	case err == nil && len(comp)+binary.MaxVarintLen32 < limit:
		return appendPayload(out, blockHuff, comp), false
	case mh != nil:
		return appendPayload(out, blockMH, mh), true
	}
	return append(append(out, blockRaw), blk...), false
}

// appendPayload appends a block's mode, payload length and payload.
func appendPayload(out []byte, mode byte, payload []byte) []byte {
	out = append(out, mode)
	out = binary.AppendUvarint(out, uint64(len(payload)))
	return append(out, payload...)
}

// decodeFrame decodes a frame's stored bytes into dst, whose length is the frame's
// raw size (checked against the header before any allocation), XORs them with ref
// when it is not nil (a delta), and returns the CRC-32C of the result. A planes frame
// is checked a column of blocks at a time, while the column is in the cache.
func decodeFrame(dst, stored, ref []byte, coding, k int, s *scratch) (uint32, error) {
	switch coding {
	case codingRaw:
		if len(stored) != len(dst) {
			return 0, fmt.Errorf("raw frame stores %d bytes for %d", len(stored), len(dst))
		}
		copy(dst, stored)
	case codingZstd:
		_, dec, err := zstdCodecs()
		if err != nil {
			return 0, err
		}
		out, err := dec.DecodeAll(stored, dst[:0:len(dst)])
		if err != nil {
			return 0, fmt.Errorf("zstd: %w", err)
		}
		if len(out) != len(dst) || (len(out) > 0 && &out[0] != &dst[0]) {
			return 0, fmt.Errorf("zstd frame decodes to %d bytes, want %d", len(out), len(dst))
		}
	case codingPlanes, codingPlanesMH:
		return decodePlanes(dst, stored, ref, k, coding == codingPlanesMH, s)
	default:
		return 0, fmt.Errorf("unknown coding %d", coding)
	}
	if ref != nil {
		subtle.XORBytes(dst, dst, ref)
	}
	return checksum(dst), nil
}

// block is one coded block of a planes frame, as found in its stored bytes.
type block struct {
	mode byte
	data []byte // raw: the bytes; RLE: the byte; Huffman: table and streams
}

// decodePlanes decodes a planes frame into dst. The frame stores plane after plane,
// but block b of every plane covers the same elements, so after one pass over the
// block headers it decodes the frame a column of blocks at a time and interleaves
// each column straight into dst: the decoded planes stay in the cache (a column is
// k×128 KiB at most), and a raw block is read from the stored bytes without a copy.
// Each column of dst is XORed with ref (a delta) and added to the CRC-32C it returns
// while it is still in the cache, rather than in passes over the whole frame.
//
// Blocks of mode blockMH are allowed only when mh is set (a codingPlanesMH frame).
func decodePlanes(dst, in, ref []byte, k int, mh bool, s *scratch) (uint32, error) {
	n := len(dst) / k
	nb := (n + blockSize - 1) / blockSize
	s.blocks = s.blocks[:0]
	for j := range k {
		for b := range nb {
			off := b * blockSize
			m := min(blockSize, n-off)
			if len(in) < 1 {
				return 0, fmt.Errorf("plane %d: block at %d: truncated", j, off)
			}
			mode := in[0]
			in = in[1:]
			var l int
			switch mode {
			case blockRaw:
				if len(in) < m {
					return 0, fmt.Errorf("plane %d: raw block at %d: %d bytes left, want %d", j, off, len(in), m)
				}
				l = m
			case blockRLE:
				if len(in) < 1 {
					return 0, fmt.Errorf("plane %d: RLE block at %d: truncated", j, off)
				}
				l = 1
			case blockHuff, blockMH:
				if mode == blockMH && !mh {
					return 0, fmt.Errorf("plane %d: multi-symbol Huffman block at %d in a frame of coding %d", j, off, codingPlanes)
				}
				v, w := binary.Uvarint(in)
				if w <= 0 || v > uint64(len(in)-w) {
					return 0, fmt.Errorf("plane %d: Huffman block at %d: bad length", j, off)
				}
				in, l = in[w:], int(v)
			default:
				return 0, fmt.Errorf("plane %d: unknown block mode %d at %d", j, mode, off)
			}
			s.blocks = append(s.blocks, block{mode, in[:l]})
			in = in[l:]
		}
	}
	if len(in) != 0 {
		return 0, fmt.Errorf("%d bytes left over after the planes", len(in))
	}
	if cap(s.cols) < k {
		s.cols = make([][]byte, k)
		s.colBufs = make([][]byte, k)
	}
	cols, bufs := s.cols[:k], s.colBufs[:k]
	crc := uint32(0) // the CRC-32C of no bytes, continued column by column
	for b := range nb {
		off := b * blockSize
		m := min(blockSize, n-off)
		for j := range k {
			blk := s.blocks[j*nb+b]
			switch blk.mode {
			case blockRaw:
				cols[j] = blk.data
				continue
			case blockRLE:
				bufs[j] = grow(bufs[j], blockSize)
				col := bufs[j][:m]
				for i := range col {
					col[i] = blk.data[0]
				}
				cols[j] = col
				continue
			}
			bufs[j] = grow(bufs[j], blockSize)
			if blk.mode == blockMH {
				if s.mhTab == nil {
					s.mhTab = new(mhTable)
				}
				rest, err := readMHTable(s.mhTab, blk.data)
				if err == nil {
					err = decodeMH(bufs[j][:m], rest, s.mhTab)
				}
				if err != nil {
					return 0, fmt.Errorf("plane %d: multi-symbol Huffman block at %d: %w", j, off, err)
				}
				cols[j] = bufs[j][:m]
				continue
			}
			hs, rest, err := huff0.ReadTable(blk.data, &s.huff)
			if err != nil {
				return 0, fmt.Errorf("plane %d: Huffman table at %d: %w", j, off, err)
			}
			out, err := hs.Decoder().Decompress4X(bufs[j][:0:m], rest)
			if err != nil {
				return 0, fmt.Errorf("plane %d: Huffman block at %d: %w", j, off, err)
			}
			if len(out) != m {
				return 0, fmt.Errorf("plane %d: Huffman block at %d decodes to %d bytes, want %d", j, off, len(out), m)
			}
			cols[j] = out
		}
		col := dst[off*k : (off+m)*k]
		mergePlanes(col, cols)
		if ref != nil {
			subtle.XORBytes(col, col, ref[off*k:(off+m)*k])
		}
		crc = crc32.Update(crc, castagnoli, col)
	}
	return crc, nil
}
