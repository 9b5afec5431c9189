package gmz

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/gomerge/gomerge/formats/dtype"
)

// Input is one tensor for Write. Data (and Ref) are only read.
type Input struct {
	Name  string
	DType dtype.DType
	Shape []int64
	Data  []byte
	// Ref, when not nil, is the reference tensor's bytes (same length as Data): the
	// tensor is then stored as Data XOR Ref.
	Ref []byte
	// Gap is the source's bytes between the previous tensor (or the header) and this
	// one; a file with gaps or a tail is written as version 2.
	Gap []byte
}

// Options tune Write. The zero value is valid.
type Options struct {
	// FrameSize is the bytes per frame: a multiple of 8 up to 64 MiB (default
	// DefaultFrameSize).
	FrameSize int
	// Workers bounds the frames compressed at once (default GOMAXPROCS). Memory is
	// about three frames per worker beyond the inputs.
	Workers int
	// Reference is a name for the reference of delta tensors, kept for messages.
	Reference string
	// Stats makes Write count byte values per plane for Stats.Planes (slower).
	Stats bool
}

// Stats reports what Write did.
type Stats struct {
	RawBytes    int64                 // the tensors' bytes
	StoredBytes int64                 // their frames' stored bytes
	FileBytes   int64                 // the whole .gmz file
	Frames      [codingZstd + 1]int64 // by coding: raw, planes (either kind), zstd
	// Planes holds the order-0 entropy of each byte plane (Options.Stats only):
	// the floor for any coder that codes plane bytes independently.
	Planes []PlaneStat
}

// PlaneStat is one byte plane's order-0 entropy over all the tensors written.
type PlaneStat struct {
	ElemSize int     `json:"elem_size"` // element size of the tensors counted (1: non-float data)
	Plane    int     `json:"plane"`     // byte index within the element (little-endian)
	Bytes    int64   `json:"bytes"`     // bytes counted
	Bits     float64 `json:"bits"`      // entropy in bits per byte
}

// BoundBytes is the order-0 entropy bound of all planes, in bytes.
func (s *Stats) BoundBytes() float64 {
	var b float64
	for _, p := range s.Planes {
		b += float64(p.Bytes) * p.Bits / 8
	}
	return b
}

// job is one frame on its way from a compressing worker to the ordered writer.
type job struct {
	t, i   int
	raw    int64
	done   chan struct{}
	coding int
	stored []byte
	buf    []byte // the buffer the coded bytes went to, back to the free list once written
	crc    uint32
	refCRC uint32
	err    error
}

// Write compresses tensors into w as a .gmz file. src describes the source file
// (its Size is computed here); meta is kept as the file's metadata. Frames are
// compressed on up to Options.Workers goroutines and written in order.
func Write(ctx context.Context, w io.Writer, src Source, meta map[string]string, tensors []Input, opts Options) (Stats, error) {
	var st Stats
	fs := int64(opts.FrameSize)
	if fs == 0 {
		fs = DefaultFrameSize
	}
	if fs < 0 || fs > maxFrameSize || fs%8 != 0 {
		return st, fmt.Errorf("gmz: frame size %d is not a multiple of 8 in (0, %d]", fs, maxFrameSize)
	}
	if len(src.Header) > maxHeaderSize {
		return st, fmt.Errorf("gmz: source header of %d bytes exceeds %d", len(src.Header), maxHeaderSize)
	}
	h := header{FrameSize: fs, Source: source{Format: src.Format, Header: src.Header, Tail: src.Tail}, Metadata: meta, Reference: opts.Reference}
	h.Source.Size = int64(len(src.Header)) + int64(len(src.Tail))
	v := uint32(version)
	if len(src.Tail) > 0 {
		v = versionGaps
	}
	h.Tensors = make([]tensorHeader, len(tensors))
	seen := make(map[string]bool, len(tensors))
	for i, in := range tensors {
		if err := checkInput(&in, seen); err != nil {
			return st, err
		}
		h.Tensors[i] = tensorHeader{Name: in.Name, DType: in.DType.String(), Shape: in.Shape, Size: int64(len(in.Data)), CRC: checksum(nil), Frames: [][]int64{}, Gap: in.Gap}
		if len(in.Gap) > 0 {
			v = versionGaps
			h.Source.Size += int64(len(in.Gap))
		}
		if in.Ref != nil {
			h.Tensors[i].RefCRC = new(uint32)
		}
		h.Source.Size += int64(len(in.Data))
	}

	var pre [preambleSize]byte
	copy(pre[:], magic[:])
	binary.LittleEndian.PutUint32(pre[8:], v)
	if _, err := w.Write(pre[:]); err != nil {
		return st, err
	}
	off := int64(preambleSize)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	n := workerCount(opts.Workers)
	queue := make(chan *job, 2*n)
	// Coded frames go to buffers that the writer hands back once they are written:
	// at most 3n+1 jobs are coded or queued at once, so a free list of that size
	// serves them all and nothing is allocated per frame (a fresh buffer is fresh
	// memory, whose first touch costs a page fault a page, dear on a VM).
	free := make(chan []byte, 3*n+1)
	var stats *planeStats
	var statsMu sync.Mutex
	if opts.Stats {
		stats = new(planeStats)
	}

	// The writer drains the queue in order, even after a failure, so that the
	// producer below never blocks on a full queue nobody reads.
	writeDone := make(chan error, 1)
	go func() {
		var werr error
		for j := range queue {
			<-j.done
			if werr == nil && j.err != nil {
				werr = j.err
				cancel(werr)
			}
			if werr != nil {
				continue
			}
			if _, err := w.Write(j.stored); err != nil {
				werr = err
				cancel(err)
				continue
			}
			if j.buf != nil {
				select {
				case free <- j.buf[:0]:
				default:
				}
			}
			th := &h.Tensors[j.t]
			th.Frames = append(th.Frames, []int64{int64(len(j.stored)), j.raw, int64(j.crc), int64(j.coding)})
			if j.i == 0 {
				th.CRC = j.crc
				if th.RefCRC != nil {
					*th.RefCRC = j.refCRC
				}
			} else {
				th.CRC = crcCombine(th.CRC, j.crc, j.raw)
				if th.RefCRC != nil {
					*th.RefCRC = crcCombine(*th.RefCRC, j.refCRC, j.raw)
				}
			}
			off += int64(len(j.stored))
			st.StoredBytes += int64(len(j.stored))
			st.RawBytes += j.raw
			if j.coding == codingPlanesMH {
				st.Frames[codingPlanes]++
			} else {
				st.Frames[j.coding]++
			}
		}
		writeDone <- werr
	}()

	var g errgroup.Group
	g.SetLimit(n)
produce:
	for ti := range tensors {
		in := &tensors[ti]
		if in.Ref != nil && len(in.Data) == 0 {
			*h.Tensors[ti].RefCRC = checksum(nil)
		}
		for i := 0; int64(i)*fs < int64(len(in.Data)); i++ {
			if ctx.Err() != nil {
				break produce
			}
			lo := int64(i) * fs
			hi := min(lo+fs, int64(len(in.Data)))
			j := &job{t: ti, i: i, raw: hi - lo, done: make(chan struct{})}
			queue <- j
			g.Go(func() error {
				defer close(j.done)
				var ref []byte
				if in.Ref != nil {
					ref = in.Ref[lo:hi]
				}
				var ps *planeStats
				if stats != nil {
					ps = new(planeStats)
				}
				var buf []byte
				select {
				case buf = <-free:
				default:
					buf = make([]byte, 0, fs+maxExpansion)
				}
				j.encode(in.Data[lo:hi], ref, in.DType, ps, buf)
				if ps != nil {
					statsMu.Lock()
					stats.add(ps)
					statsMu.Unlock()
				}
				return nil
			})
		}
	}
	g.Wait()
	close(queue)
	if err := <-writeDone; err != nil {
		return st, err
	}
	if err := context.Cause(ctx); err != nil {
		return st, err
	}

	hdr, err := json.Marshal(&h)
	if err != nil {
		return st, err
	}
	if len(hdr) > maxHeaderSize {
		return st, fmt.Errorf("gmz: header of %d bytes exceeds %d (use larger frames)", len(hdr), maxHeaderSize)
	}
	var tr [trailerSize]byte
	binary.LittleEndian.PutUint64(tr[:], uint64(len(hdr)))
	binary.LittleEndian.PutUint32(tr[8:], checksum(hdr))
	copy(tr[12:], magic[:])
	if _, err := w.Write(append(hdr, tr[:]...)); err != nil {
		return st, err
	}
	st.FileBytes = off + int64(len(hdr)) + trailerSize
	if stats != nil {
		st.Planes = stats.planes()
	}
	return st, nil
}

func checkInput(in *Input, seen map[string]bool) error {
	if in.Name == "" || len(in.Name) > maxNameLen {
		return fmt.Errorf("gmz: tensor name %q is empty or longer than %d bytes", in.Name, maxNameLen)
	}
	if seen[in.Name] {
		return fmt.Errorf("gmz: tensor %q given twice", in.Name)
	}
	seen[in.Name] = true
	if _, err := parseDType(in.DType.String()); err != nil {
		return fmt.Errorf("gmz: tensor %q: %w", in.Name, err)
	}
	if len(in.Shape) > maxRank {
		return fmt.Errorf("gmz: tensor %q: rank %d exceeds %d", in.Name, len(in.Shape), maxRank)
	}
	numel := int64(1)
	for _, d := range in.Shape {
		if d < 0 || (d != 0 && numel > maxElements/d) {
			return fmt.Errorf("gmz: tensor %q: bad shape %v", in.Name, in.Shape)
		}
		numel *= d
	}
	if bs := int64(in.DType.BlockSize()); bs > 1 && numel%bs != 0 {
		return fmt.Errorf("gmz: tensor %q: %s %v: %d elements are not whole blocks of %d", in.Name, in.DType, in.Shape, numel, bs)
	}
	if want := in.DType.Bytes(numel); int64(len(in.Data)) != want {
		return fmt.Errorf("gmz: tensor %q: %s %v needs %d bytes, got %d", in.Name, in.DType, in.Shape, want, len(in.Data))
	}
	if in.Ref != nil && len(in.Ref) != len(in.Data) {
		return fmt.Errorf("gmz: tensor %q: reference has %d bytes, the tensor %d", in.Name, len(in.Ref), len(in.Data))
	}
	return nil
}

// encode compresses one frame (data XOR ref when ref is not nil) into j, the coded
// bytes into buf.
func (j *job) encode(data, ref []byte, dt dtype.DType, ps *planeStats, buf []byte) {
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	j.crc = checksum(data)
	src := data
	if ref != nil {
		j.refCRC = checksum(ref)
		s.xor = grow(s.xor, len(data))
		subtle.XORBytes(s.xor, data, ref)
		src = s.xor
	}
	coding, stored, err := encodeFrame(buf[:0], src, dt.Size(), dt.IsFloat(), s, ps)
	if err != nil {
		j.err = err
		return
	}
	j.coding = coding
	switch {
	case coding != codingRaw:
		j.stored, j.buf = stored, stored
	case ref == nil:
		j.stored, j.buf = data, buf // the caller's bytes, stable until Write returns
	default:
		j.stored = append(buf[:0], src...) // src is s.xor, which goes back to the pool
		j.buf = j.stored
	}
}

func (st *planeStats) add(o *planeStats) {
	for k := range st {
		for j := range st[k] {
			for b := range st[k][j] {
				st[k][j][b] += o[k][j][b]
			}
		}
	}
}

func (st *planeStats) planes() []PlaneStat {
	var out []PlaneStat
	for k := range st {
		for j := range 1 << k {
			var total uint64
			for _, c := range st[k][j] {
				total += c
			}
			if total == 0 {
				continue
			}
			var bits float64
			for _, c := range st[k][j] {
				if c > 0 {
					p := float64(c) / float64(total)
					bits -= p * math.Log2(p)
				}
			}
			out = append(out, PlaneStat{ElemSize: 1 << k, Plane: j, Bytes: int64(total), Bits: bits})
		}
	}
	return out
}
