package gmz

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"runtime"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/internal/mapfile"
)

// Source describes the file a .gmz was made from.
type Source struct {
	Format string // "safetensors"
	Size   int64  // the file's length in bytes
	// Header is the file's bytes before the first tensor's, verbatim (for
	// safetensors: the 8-byte length and the JSON header).
	Header []byte
	// Tail is the file's bytes after the last tensor's (version 2; none in
	// safetensors).
	Tail []byte
}

// Tensor describes one tensor of a file.
type Tensor struct {
	Name     string
	DType    dtype.DType
	Shape    []int64
	Size     int64  // bytes
	Checksum uint32 // CRC-32C of the original bytes
	// Delta says the frames hold the XOR with a reference tensor whose bytes have
	// CRC-32C RefChecksum.
	Delta       bool
	RefChecksum uint32
	Frames      []Frame
	// Offset is where the tensor's bytes start in the source file.
	Offset int64
	// Gap is the source's bytes just before the tensor's (version 2: a GGUF file's
	// alignment padding).
	Gap []byte
}

// Frame is one independently coded piece of a tensor.
type Frame struct {
	RawOff   int64 // offset of the frame's first byte within the tensor
	Raw      int64 // decoded length
	Off      int64 // offset of the stored bytes in the .gmz file
	Stored   int64 // stored length
	Checksum uint32
	Coding   int
}

// File is an opened .gmz file. Its methods are safe for concurrent use. Frames are
// read with ReadAt into a worker's scratch, not through a memory mapping: every byte
// read is decoded into other memory anyway, and `gomerge decompress` of a 1 GB BF16
// checkpoint took a third less CPU reading than faulting a mapping's pages in (its
// first touch of each 64 KiB, docs/compression.md).
type File struct {
	FrameSize int64
	Source    Source
	Metadata  map[string]string
	Reference string // the name of the reference a delta file was made against, if any
	Tensors   []Tensor

	index  map[string]int
	r      io.ReaderAt
	size   int64
	closer io.Closer // the descriptor Open opened, nil from NewFile
	// refsChecked: CheckReferences found every delta tensor's reference right, so
	// WriteSource need not checksum them again.
	refsChecked bool
}

// Open opens the named file and parses its header. The caller must Close it.
func Open(path string) (*File, error) {
	f, fd, err := mapfile.OpenUnmapped(path, NewFile, &FormatError{Off: -1, Msg: "not a regular file"})
	if err == nil {
		f.closer = fd
	}
	return f, err
}

// Close closes the file if Open opened it.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	return f.closer.Close()
}

// NewFile parses a .gmz file read through r, which holds size bytes.
func NewFile(r io.ReaderAt, size int64) (*File, error) {
	if size < preambleSize+trailerSize {
		return nil, &FormatError{Off: 0, Msg: fmt.Sprintf("file is %d bytes, shorter than the %d-byte preamble and trailer", size, preambleSize+trailerSize)}
	}
	var pre [preambleSize]byte
	if _, err := r.ReadAt(pre[:], 0); err != nil {
		return nil, &FormatError{Off: 0, Msg: "reading preamble", Err: err}
	}
	if !bytes.Equal(pre[:8], magic[:]) {
		return nil, &FormatError{Off: 0, Msg: "not a gmz file (bad magic)"}
	}
	v := binary.LittleEndian.Uint32(pre[8:])
	if v != version && v != versionGaps {
		return nil, &FormatError{Off: 8, Msg: fmt.Sprintf("version %d is not supported (this reader knows versions %d and %d)", v, version, versionGaps)}
	}
	if binary.LittleEndian.Uint32(pre[12:]) != 0 {
		return nil, &FormatError{Off: 12, Msg: "reserved preamble bytes are not zero"}
	}
	var tr [trailerSize]byte
	trOff := size - trailerSize
	if _, err := r.ReadAt(tr[:], trOff); err != nil {
		return nil, &FormatError{Off: trOff, Msg: "reading trailer", Err: err}
	}
	if !bytes.Equal(tr[12:], magic[:]) {
		return nil, &FormatError{Off: trOff + 12, Msg: "bad trailing magic (truncated file?)"}
	}
	n := binary.LittleEndian.Uint64(tr[:])
	if n > maxHeaderSize {
		return nil, &FormatError{Off: trOff, Msg: fmt.Sprintf("header length %d exceeds the limit of %d bytes", n, maxHeaderSize)}
	}
	if int64(n) > trOff-preambleSize {
		return nil, &FormatError{Off: trOff, Msg: fmt.Sprintf("header length %d does not fit in the %d-byte file", n, size)}
	}
	hOff := trOff - int64(n)
	hdr := make([]byte, n) // bounded by maxHeaderSize and the file size
	if _, err := r.ReadAt(hdr, hOff); err != nil {
		return nil, &FormatError{Off: hOff, Msg: "reading header", Err: err}
	}
	if got, want := checksum(hdr), binary.LittleEndian.Uint32(tr[8:]); got != want {
		return nil, &FormatError{Off: hOff, Msg: fmt.Sprintf("header checksum %08x, trailer says %08x", got, want)}
	}
	var h header
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, &FormatError{Off: hOff, Msg: "header is not the expected JSON", Err: err}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &FormatError{Off: hOff + dec.InputOffset(), Msg: "trailing bytes after the header's JSON"}
	}
	f := &File{r: r, size: size}
	if v == version && (len(h.Source.Tail) > 0 || slices.ContainsFunc(h.Tensors, func(t tensorHeader) bool { return len(t.Gap) > 0 })) {
		return nil, &FormatError{Off: hOff, Msg: "a version 1 file with gaps between tensors"}
	}
	if err := f.load(&h, hOff); err != nil {
		return nil, err
	}
	return f, nil
}

// load checks the parsed header and builds the File's tables; dataEnd is where the
// frames must end.
func (f *File) load(h *header, dataEnd int64) error {
	bad := func(tensor, format string, args ...any) error {
		return &FormatError{Off: -1, Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
	}
	if h.FrameSize <= 0 || h.FrameSize > maxFrameSize || h.FrameSize%8 != 0 {
		return bad("", "frame size %d is not a multiple of 8 in (0, %d]", h.FrameSize, maxFrameSize)
	}
	if h.Source.Format == "" {
		return bad("", "missing source format")
	}
	f.FrameSize = h.FrameSize
	f.Source = Source{Format: h.Source.Format, Size: h.Source.Size, Header: h.Source.Header, Tail: h.Source.Tail}
	f.Metadata = h.Metadata
	f.Reference = h.Reference
	f.Tensors = make([]Tensor, len(h.Tensors)) // bounded by the header's size
	f.index = make(map[string]int, len(h.Tensors))
	at := int64(preambleSize)
	srcAt := int64(len(h.Source.Header))
	for i := range h.Tensors {
		th := &h.Tensors[i]
		t := &f.Tensors[i]
		if th.Name == "" || len(th.Name) > maxNameLen {
			return bad(th.Name, "tensor name is empty or longer than %d bytes", maxNameLen)
		}
		if _, dup := f.index[th.Name]; dup {
			return bad(th.Name, "name appears twice")
		}
		f.index[th.Name] = i
		dt, err := parseDType(th.DType)
		if err != nil {
			return &FormatError{Off: -1, Tensor: th.Name, Msg: "bad dtype", Err: err}
		}
		if len(th.Shape) > maxRank {
			return bad(th.Name, "rank %d exceeds the limit of %d", len(th.Shape), maxRank)
		}
		numel := int64(1)
		for _, d := range th.Shape {
			if d < 0 {
				return bad(th.Name, "negative dimension in shape %v", th.Shape)
			}
			if d != 0 && numel > maxElements/d {
				return bad(th.Name, "shape %v has more than %d elements", th.Shape, int64(maxElements))
			}
			numel *= d
		}
		if bs := int64(dt.BlockSize()); bs > 1 && numel%bs != 0 {
			return bad(th.Name, "%s %v: %d elements are not whole blocks of %d", dt, th.Shape, numel, bs)
		}
		if want := dt.Bytes(numel); th.Size != want {
			return bad(th.Name, "%s %v needs %d bytes, the header says %d", dt, th.Shape, want, th.Size)
		}
		srcAt += int64(len(th.Gap)) // bounded by the header's size
		*t = Tensor{Name: th.Name, DType: dt, Shape: th.Shape, Size: th.Size, Checksum: th.CRC, Offset: srcAt, Gap: th.Gap}
		if th.RefCRC != nil {
			t.Delta, t.RefChecksum = true, *th.RefCRC
		}
		if srcAt > math.MaxInt64-th.Size {
			return bad(th.Name, "source size overflows")
		}
		srcAt += th.Size
		if want := (th.Size + h.FrameSize - 1) / h.FrameSize; int64(len(th.Frames)) != want {
			return bad(th.Name, "%d frames for %d bytes in frames of %d (want %d)", len(th.Frames), th.Size, h.FrameSize, want)
		}
		t.Frames = make([]Frame, len(th.Frames))
		crc := uint32(0)
		for j, fr := range th.Frames {
			if len(fr) != 4 {
				return bad(th.Name, "frame %d has %d fields, want 4", j, len(fr))
			}
			stored, raw, sum, coding := fr[0], fr[1], fr[2], fr[3]
			rawOff := int64(j) * h.FrameSize
			if want := min(h.FrameSize, th.Size-rawOff); raw != want {
				return bad(th.Name, "frame %d: raw size %d, want %d", j, raw, want)
			}
			if stored < 0 || stored > raw+maxExpansion {
				return bad(th.Name, "frame %d: stored size %d out of range for %d raw bytes", j, stored, raw)
			}
			if sum < 0 || sum > math.MaxUint32 {
				return bad(th.Name, "frame %d: checksum %d out of range", j, sum)
			}
			switch {
			case coding < 0 || coding >= numCodings:
				return bad(th.Name, "frame %d: unknown coding %d", j, coding)
			case coding == codingRaw && stored != raw:
				return bad(th.Name, "frame %d: raw frame stores %d bytes for %d", j, stored, raw)
			case (coding == codingPlanes || coding == codingPlanesMH) && (!dt.IsFloat() || dt.Size() < 2):
				return bad(th.Name, "frame %d: byte planes for %s", j, dt)
			}
			if at > dataEnd-stored {
				return &FormatError{Off: at, Tensor: th.Name, Msg: fmt.Sprintf("frame %d (%d bytes) runs past the data section, which ends at %d", j, stored, dataEnd)}
			}
			t.Frames[j] = Frame{RawOff: rawOff, Raw: raw, Off: at, Stored: stored, Checksum: uint32(sum), Coding: int(coding)}
			at += stored
			if j == 0 {
				crc = uint32(sum)
			} else {
				crc = crcCombine(crc, uint32(sum), raw)
			}
		}
		if th.Size == 0 {
			crc = checksum(nil)
		}
		if crc != th.CRC {
			return bad(th.Name, "tensor checksum %08x is not that of its frames (%08x)", th.CRC, crc)
		}
	}
	if at != dataEnd {
		return &FormatError{Off: at, Msg: fmt.Sprintf("frames end at byte %d, the header starts at %d", at, dataEnd)}
	}
	srcAt += int64(len(h.Source.Tail))
	if srcAt != h.Source.Size {
		return bad("", "source size %d is not the header's %d bytes plus the tensors', gaps and tail (%d)", h.Source.Size, len(h.Source.Header), srcAt)
	}
	return nil
}

// Tensor returns the named tensor's description.
func (f *File) Tensor(name string) (*Tensor, bool) {
	i, ok := f.index[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// Size is the .gmz file's length in bytes.
func (f *File) Size() int64 { return f.size }

// ReadFrame decodes frame i of t into dst (len(dst) == the frame's Raw) and checks its
// checksum. For a delta tensor ref holds the reference tensor's bytes of the same
// range; its checksum cannot be checked frame by frame, so a wrong reference shows
// as a frame checksum error here (ReadTensor checks the whole reference first).
func (f *File) ReadFrame(t *Tensor, i int, dst, ref []byte) error {
	if i < 0 || i >= len(t.Frames) {
		return fmt.Errorf("gmz: tensor %q has no frame %d", t.Name, i)
	}
	fr := &t.Frames[i]
	if int64(len(dst)) != fr.Raw {
		return fmt.Errorf("gmz: tensor %q frame %d: buffer of %d bytes for %d", t.Name, i, len(dst), fr.Raw)
	}
	if t.Delta && int64(len(ref)) != fr.Raw {
		return &ReferenceError{Tensor: t.Name, Missing: ref == nil, Want: t.RefChecksum}
	}
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	return f.readFrame(t, i, dst, ref, s)
}

// readFrame is ReadFrame with the worker's scratch, its arguments checked.
func (f *File) readFrame(t *Tensor, i int, dst, ref []byte, s *scratch) error {
	fr := &t.Frames[i]
	var stored []byte
	if fr.Coding == codingRaw && fr.Stored == fr.Raw {
		// A raw frame is read where it goes (decodeFrame's copy is then to itself).
		if _, err := f.r.ReadAt(dst, fr.Off); err != nil {
			return &FormatError{Off: fr.Off, Tensor: t.Name, Msg: fmt.Sprintf("reading frame %d", i), Err: err}
		}
		stored = dst
	} else {
		s.raw = grow(s.raw, int(fr.Stored))
		if _, err := f.r.ReadAt(s.raw, fr.Off); err != nil {
			return &FormatError{Off: fr.Off, Tensor: t.Name, Msg: fmt.Sprintf("reading frame %d", i), Err: err}
		}
		stored = s.raw
	}
	if !t.Delta {
		ref = nil
	}
	got, err := decodeFrame(dst, stored, ref, fr.Coding, t.DType.Size(), s)
	if err != nil {
		return &FormatError{Off: fr.Off, Tensor: t.Name, Msg: fmt.Sprintf("frame %d", i), Err: err}
	}
	if got != fr.Checksum {
		msg := fmt.Sprintf("frame %d: checksum %08x, want %08x", i, got, fr.Checksum)
		if t.Delta {
			msg += " (corrupt, or decoded against the wrong reference)"
		}
		return &FormatError{Off: fr.Off, Tensor: t.Name, Msg: msg}
	}
	return nil
}

// CheckReference reports whether ref is the reference tensor t was coded against.
func CheckReference(t *Tensor, ref []byte) error {
	if !t.Delta {
		return nil
	}
	if ref == nil {
		return &ReferenceError{Tensor: t.Name, Missing: true, Want: t.RefChecksum}
	}
	if int64(len(ref)) != t.Size {
		return &ReferenceError{Tensor: t.Name, Want: t.RefChecksum, Got: checksum(ref)}
	}
	return t.matchReference(checksum(ref))
}

// matchReference checks a reference's checksum against the one t recorded.
func (t *Tensor) matchReference(crc uint32) error {
	if crc != t.RefChecksum {
		return &ReferenceError{Tensor: t.Name, Want: t.RefChecksum, Got: crc}
	}
	return nil
}

// ReadTensor decodes all of t into dst (len(dst) == t.Size), its frames in parallel
// on up to workers goroutines (0: GOMAXPROCS). ref is the reference tensor's bytes
// for a delta, ignored otherwise.
func (f *File) ReadTensor(ctx context.Context, t *Tensor, dst, ref []byte, workers int) error {
	if int64(len(dst)) != t.Size {
		return fmt.Errorf("gmz: tensor %q: buffer of %d bytes for %d", t.Name, len(dst), t.Size)
	}
	if err := CheckReference(t, ref); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workerCount(workers))
	for i := range t.Frames {
		if gctx.Err() != nil {
			break
		}
		fr := &t.Frames[i]
		g.Go(func() error {
			var r []byte
			if t.Delta {
				r = ref[fr.RawOff : fr.RawOff+fr.Raw]
			}
			return f.ReadFrame(t, i, dst[fr.RawOff:fr.RawOff+fr.Raw], r)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// CheckReferences checks every delta tensor's reference against the checksum the
// delta recorded, on up to workers goroutines (0: GOMAXPROCS), and returns the error
// of the first tensor in file order whose reference is missing or differs, or ref's
// own. known, if set, gives a reference tensor's checksum where the reference knows
// it without reading the tensor (a compressed reference records it, and its frames'
// own checksums then check the bytes it decodes); the tensor is not read then. Once
// it has returned nil, WriteSource, which must then be given the same ref, does not
// check them again. Checking them all first fails a wrong reference before anything
// is decoded; in parallel, since checksumming a reference is a pass over as many
// bytes as the delta decodes to.
func (f *File) CheckReferences(ctx context.Context, ref RefFunc, known RefChecksum, workers int) error {
	errs := make([]error, len(f.Tensors))
	n := workerCount(workers)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(n)
	// One buffer per goroutine at a time, reused: the reference is read into it a
	// piece at a time.
	bufs := make(chan []byte, n)
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if !t.Delta {
			continue
		}
		if gctx.Err() != nil {
			break // the tensors before this one were all started
		}
		g.Go(func() error {
			var buf []byte
			select {
			case buf = <-bufs:
			default:
				buf = make([]byte, refPiece)
			}
			defer func() { bufs <- buf }()
			errs[i] = checkReference(t, ref, known, buf)
			return errs[i]
		})
	}
	g.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f.refsChecked = true
	return nil
}

// refPiece is how much of a reference tensor CheckReferences reads at a time.
const refPiece = 4 << 20

// RefChecksum gives the CRC-32C of the named reference tensor's bytes, where the
// reference knows it without reading them; ok is false otherwise.
type RefChecksum func(name string) (crc uint32, ok bool)

// checkReference checks t's reference against the checksum t recorded: the one known
// gives, or the bytes read through buf a piece at a time.
func checkReference(t *Tensor, ref RefFunc, known RefChecksum, buf []byte) error {
	missing := &ReferenceError{Tensor: t.Name, Missing: true, Want: t.RefChecksum}
	if ref == nil {
		return missing
	}
	if known != nil {
		if crc, ok := known(t.Name); ok {
			return t.matchReference(crc)
		}
	}
	// At least one read, so that an empty tensor the reference lacks is missing.
	var crc uint32
	for off := int64(0); ; {
		piece := buf[:min(int64(len(buf)), t.Size-off)]
		ok, err := ref(t.Name, off, piece)
		if err != nil {
			return err
		}
		if !ok {
			return missing
		}
		crc = crc32.Update(crc, castagnoli, piece)
		if off += int64(len(piece)); off >= t.Size {
			return t.matchReference(crc)
		}
	}
}

// RefFunc reads bytes [off, off+len(dst)) of the named reference tensor into dst;
// ok is false when the reference has no such tensor. A delta is decoded a frame at a
// time against it, so that a reference file can be copied into warm buffers with
// pread rather than touched through a mapping, which on this project's VMs traps on
// every page (docs/reliability.md#how-inputs-are-read).
type RefFunc func(name string, off int64, dst []byte) (ok bool, err error)

// WholeRef is a RefFunc over reference tensors held whole: tensor returns one's
// bytes, nil when there is none.
func WholeRef(tensor func(name string) ([]byte, error)) RefFunc {
	return func(name string, off int64, dst []byte) (bool, error) {
		b, err := tensor(name)
		if err != nil || b == nil {
			return false, err
		}
		if off < 0 || off+int64(len(dst)) > int64(len(b)) {
			return true, fmt.Errorf("%w: tensor %q: the reference holds %d bytes, not %d", ErrReference, name, len(b), off+int64(len(dst)))
		}
		copy(dst, b[off:])
		return true, nil
	}
}

// WriteSource writes the original source file to w: its leading bytes, then every
// tensor decoded, frames in parallel on up to workers goroutines (0: twice
// GOMAXPROCS, writeWorkers), each frame's buffer reused, so memory stays a few frames
// per worker. ref supplies reference tensors for delta files (it may be nil
// otherwise), read a frame at a time; they are checked first (CheckReferences) unless
// they were already, so that a wrong one fails before anything is written.
func (f *File) WriteSource(ctx context.Context, w io.WriterAt, ref RefFunc, workers int) error {
	if !f.refsChecked {
		if err := f.CheckReferences(ctx, ref, nil, workers); err != nil {
			return err
		}
	}
	if _, err := w.WriteAt(f.Source.Header, 0); err != nil {
		return err
	}
	for i := range f.Tensors {
		if t := &f.Tensors[i]; len(t.Gap) > 0 {
			if _, err := w.WriteAt(t.Gap, t.Offset-int64(len(t.Gap))); err != nil {
				return err
			}
		}
	}
	if len(f.Source.Tail) > 0 {
		if _, err := w.WriteAt(f.Source.Tail, f.Source.Size-int64(len(f.Source.Tail))); err != nil {
			return err
		}
	}
	// n long-lived workers take frames in file order, each with its own scratch and
	// output buffer sized once for the largest frame: nothing is allocated per frame,
	// so the garbage collector has nothing to do and no fresh memory is touched. On a
	// VM, the first touch of a fresh page costs several microseconds (a fault, and the
	// hypervisor's own), and per-frame goroutines with pooled buffers, which a GC
	// cycle drops, touched thousands (docs/compression.md).
	n := workers
	if n <= 0 {
		n = writeWorkers()
	}
	var maxRaw, maxStored int64
	for i := range f.Tensors {
		for _, fr := range f.Tensors[i].Frames {
			maxRaw, maxStored = max(maxRaw, fr.Raw), max(maxStored, fr.Stored)
		}
	}
	type work struct {
		t *Tensor
		i int
	}
	jobs := make(chan work, n)
	g, gctx := errgroup.WithContext(ctx)
	for range n {
		g.Go(func() error {
			s := &scratch{raw: make([]byte, 0, maxStored)}
			buf := make([]byte, maxRaw)
			var refBuf []byte
			for j := range jobs {
				if gctx.Err() != nil {
					continue // drain: the producer stops at the cancellation
				}
				fr := &j.t.Frames[j.i]
				dst := buf[:fr.Raw]
				var r []byte
				if j.t.Delta {
					refBuf = grow(refBuf, int(maxRaw))
					r = refBuf[:fr.Raw]
					if ok, err := ref(j.t.Name, fr.RawOff, r); err != nil {
						return err
					} else if !ok {
						return &ReferenceError{Tensor: j.t.Name, Missing: true, Want: j.t.RefChecksum}
					}
				}
				if err := f.readFrame(j.t, j.i, dst, r, s); err != nil {
					return err
				}
				if _, err := w.WriteAt(dst, j.t.Offset+fr.RawOff); err != nil {
					return err
				}
			}
			return nil
		})
	}
tensors:
	for ti := range f.Tensors {
		t := &f.Tensors[ti]
		for i := range t.Frames {
			select {
			case jobs <- work{t, i}:
			case <-gctx.Done():
				break tensors
			}
		}
	}
	close(jobs)
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// writeWorkers is WriteSource's default worker count: twice the cores. Each worker
// alternates decoding a frame (CPU) with writing it (WriteAt), and a write into a fresh
// page of the output waits on the page's allocation (on a VM, the hypervisor's as
// well); with one worker per core a core idles through every such wait. Measured on
// 2 cores, decompressing a 1.05 GB BF16 model to tmpfs: 1.85, 2.01 and 2.03 GB/s with
// 2, 3 and 4 workers at the same CPU time (bench/README-compress.md). The extra
// workers cost a frame's buffers each (about 2 MiB at the default frame size).
func writeWorkers() int { return 2 * runtime.GOMAXPROCS(0) }

func workerCount(n int) int {
	if n <= 0 {
		return runtime.GOMAXPROCS(0)
	}
	return n
}
