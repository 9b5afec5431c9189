package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/gomerge/gomerge/formats/gmz"
)

// Compressed checkpoints (.gmz, docs/compression.md) as inputs: every command reads
// them like the safetensors file they were made from. Their tensors are not in the
// file as bytes, so a Source cannot hand out a slice of a mapping: Data decodes the
// tensor (its frames in parallel) into memory. The engine asks for that only when it
// starts the tensor and drops it when the tensor is done (Decoder), so a merge holds
// the tensors in flight, not the model.

// Decoder is implemented by sources whose Data decodes into new memory rather than
// returning a view of a mapping, and by those better read in ranges than through
// their mapping (a safetensors file on tmpfs, or where the mapping traps: safetensors.go,
// MappedDecoder). Consumers that plan a
// whole model before reading it (the merge engine) call Data only when they need the
// bytes, and let them go after.
type Decoder interface {
	Source
	// Decodes reports whether Data allocates and decodes, or the source would rather
	// be read with DecodeRange (RangeDecoder).
	Decodes() bool
}

// RangeDecoder is a Decoder that also decodes part of a tensor, so that a consumer
// that reads a tensor piece by piece (the merge engine) holds a few pieces of it at a
// time rather than the whole.
type RangeDecoder interface {
	Decoder
	// DecodeUnit is the size in bytes of the pieces the named tensor is coded in
	// (0 if unknown): a range that starts and ends on multiples of it decodes no
	// byte it does not return.
	DecodeUnit(name string) int64
	// DecodeRange decodes bytes [off, off+len(dst)) of the named tensor into dst.
	DecodeRange(name string, off int64, dst []byte) error
}

// DeltaDecoder is a RangeDecoder whose tensors may be stored as deltas against another
// checkpoint (compress --against). A consumer that holds the reference's bytes of the
// same range already, because it reads that checkpoint as another input, hands them
// in: the reference is then not read, or decoded, a second time.
type DeltaDecoder interface {
	RangeDecoder
	// DeltaReference is the file holding the reference tensor the named tensor
	// decodes against, and the CRC-32C the delta recorded of that tensor's bytes;
	// false when the tensor is stored whole.
	DeltaReference(name string) (file string, crc uint32, ok bool)
	// DecodeRangeAgainst is DecodeRange with ref, the bytes [off, off+len(dst)) of
	// the reference tensor, as the file DeltaReference names holds them.
	DecodeRangeAgainst(name string, off int64, dst, ref []byte) error
}

// Checksummer is a source that knows the CRC-32C of each tensor's bytes without
// reading them: a compressed checkpoint records it, and checks every frame it
// decodes against it. A delta whose reference has that checksum may decode against
// this source's bytes in place of its reference file's (merge's linkDeltas): the
// delta's own frame checksums then check the bytes it decodes, as they do with the
// reference file's.
type Checksummer interface {
	Checksum(name string) (crc uint32, ok bool)
}

// Decodes reports whether s's Data decodes into new memory (see Decoder).
func Decodes(s Source) bool {
	d, ok := s.(Decoder)
	return ok && d.Decodes()
}

// Reads says how a consumer that goes through a model's tensors once (the merge
// engine) reads a source that can be read either way: through its mapping, or in
// ranges copied into buffers it reuses (a safetensors checkpoint, MappedDecoder).
// Sources that must decode (compressed checkpoints) decode whatever it says.
type Reads int

const (
	// ReadsAuto leaves it to the sources (MappedDecoder's Decodes: copied on tmpfs,
	// and wherever a probe of the file finds the mapping's first touch more than twice
	// as dear as a copy, as on a virtual machine that traps every page,
	// docs/reliability.md); the merge engine copies every mapped input of a run once
	// one of them finds its mapping traps (MappingTraps; merge's resolveReads).
	ReadsAuto Reads = iota
	// ReadsMapped takes the bytes from the mapping.
	ReadsMapped
	// ReadsCopied reads ranges with pread.
	ReadsCopied
)

// ParseReads reads a Reads from its name: auto, map or copy.
func ParseReads(s string) (Reads, error) {
	switch s {
	case "auto":
		return ReadsAuto, nil
	case "map":
		return ReadsMapped, nil
	case "copy":
		return ReadsCopied, nil
	}
	return ReadsAuto, fmt.Errorf("%q: want auto, map or copy", s)
}

// MappedDecoder is a RangeDecoder whose Data is a view of a mapping (a safetensors
// checkpoint): a consumer may take the bytes from there or read ranges, and Decodes
// says which the source prefers.
type MappedDecoder interface {
	RangeDecoder
	// Mapped is true: Data returns a view of the file's mapping, without a copy.
	Mapped() bool
	// MappingTraps reports whether Decodes prefers copies because a probe found the
	// mapping's first touch dearer than a copy on this machine (rather than because
	// the file is on tmpfs).
	MappingTraps() bool
}

// ReadsRanges reports whether a consumer that goes through s's tensors once should
// read them in ranges (DecodeRange) rather than take Data whole, given the policy r
// for a source that can do either (MappedDecoder); other sources decide alone
// (Decodes).
func ReadsRanges(s Source, r Reads) bool {
	if m, ok := s.(MappedDecoder); ok && m.Mapped() && r != ReadsAuto {
		return r == ReadsCopied
	}
	return Decodes(s)
}

var gmzMagic = []byte(gmz.Magic)

// isGMZ reports whether path names a compressed checkpoint: a .gmz name, or a regular
// file starting with the container's magic.
func isGMZ(path string) bool {
	return strings.EqualFold(filepath.Ext(path), ".gmz") || startsWith(path, gmzMagic)
}

// FileFormat is the format of the checkpoint file at path as a merge reads it: GGUF
// for a GGUF file or a compressed one, Safetensors otherwise (a folder, a file it
// cannot read: opening it reports why). Merges into a .gmz write the reference's
// format and compress that.
func FileFormat(path string) Format {
	if isGGUF(path) {
		return GGUF
	}
	if isGMZ(path) {
		if f, err := gmz.Open(path); err == nil {
			defer f.Close()
			if f.Source.Format == "gguf" {
				return GGUF
			}
		}
	}
	return Safetensors
}

// gmzSource is an opened .gmz file. A delta file (compress --against) decodes against
// its reference checkpoint, found where the file's header says, relative to the .gmz's
// folder, and checked tensor by tensor against the checksums the delta recorded.
type gmzSource struct {
	path string
	f    *gmz.File
	ref  Source // the reference of a delta file, nil for a full one
	// refMetas indexes ref's tensors by name: every span of a delta tensor looks
	// its reference up (checkReferenceMeta).
	refMetas map[string]*TensorMeta
	metas    []TensorMeta
	// bufs holds *[]byte: whole frames around a range that does not cover them, and
	// reference ranges; shared by the files of one checkpoint (gmzShared).
	bufs     *sync.Pool
	closeRef func() error // lets go of ref
}

// gmzShared is what the compressed files of one checkpoint (the parts of a split
// GGUF model, the shards of a folder) share: one pool of buffers, since the engine
// decodes a few spans at a time whichever files hold them, rather than a pool per
// file; and each reference, opened once however many of the files are deltas
// against it, rather than once per file.
type gmzShared struct {
	bufs sync.Pool
	mu   sync.Mutex
	refs map[string]*sharedRef // by the reference's absolute path
	// headersOnly opens deltas without their references: for reading what the files
	// hold (SplitDecompressPlan), where the reference, if any, comes from elsewhere.
	headersOnly bool
}

type sharedRef struct {
	src   Source
	users int
}

func newGMZShared() *gmzShared { return &gmzShared{refs: map[string]*sharedRef{}} }

// reference returns the reference at path p, opened by open the first time, and
// what to call when a file is done with it (the last one closes it).
func (sh *gmzShared) reference(p string, open func() (Source, error)) (Source, func() error, error) {
	key, err := filepath.Abs(p)
	if err != nil {
		key = p
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := sh.refs[key]
	if r == nil {
		src, err := open()
		if err != nil {
			return nil, nil, err
		}
		r = &sharedRef{src: src}
		sh.refs[key] = r
	}
	r.users++
	return r.src, func() error {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if r.users--; r.users > 0 {
			return nil
		}
		delete(sh.refs, key)
		return r.src.Close()
	}, nil
}

// gmzInputError marks a .gmz problem as bad input (exit 3), naming the file.
type gmzInputError struct{ err error }

func (e *gmzInputError) Error() string        { return e.err.Error() }
func (e *gmzInputError) Unwrap() error        { return e.err }
func (e *gmzInputError) Is(target error) bool { return target == ErrBadInput }

func gmzErr(path string, err error) error {
	if err == nil {
		return nil
	}
	if !strings.Contains(err.Error(), path) {
		err = fmt.Errorf("%s: %w", path, err)
	}
	if errors.Is(err, gmz.ErrFormat) || errors.Is(err, gmz.ErrReference) {
		return &gmzInputError{err}
	}
	return err
}

// openGMZ opens a compressed checkpoint: a compressed safetensors file as itself, a
// compressed GGUF file as the GGUF model it holds (compressgguf.go).
func openGMZ(path string) (Source, error) { return openGMZShared(path, newGMZShared()) }

// openGMZShared is openGMZ for one of the files of a checkpoint, which share sh.
func openGMZShared(path string, sh *gmzShared) (Source, error) {
	s, err := openGMZContainer(path, sh)
	if err != nil {
		return nil, err
	}
	if s.f.Source.Format == "gguf" {
		return openGMZGGUF(s, sh)
	}
	return s, nil
}

// openGMZContainer opens a .gmz file of a format merges read, and its reference if it
// is a delta.
func openGMZContainer(path string, sh *gmzShared) (*gmzSource, error) {
	f, err := gmz.Open(path)
	if err != nil {
		return nil, gmzErr(path, err)
	}
	s := &gmzSource{path: path, f: f, bufs: &sh.bufs}
	if f.Source.Format != "safetensors" && f.Source.Format != "gguf" {
		f.Close()
		return nil, &gmzInputError{fmt.Errorf("%s: compressed from a %q file; merges read compressed safetensors and GGUF files (gomerge decompress it first)", path, f.Source.Format)}
	}
	delta := false
	for i := range f.Tensors {
		t := &f.Tensors[i]
		s.metas = append(s.metas, TensorMeta{Name: t.Name, DType: t.DType, Shape: t.Shape, File: path})
		delta = delta || t.Delta
	}
	if delta && !sh.headersOnly {
		if err := s.openReference(sh); err != nil {
			f.Close()
			return nil, err
		}
	}
	return s, nil
}

// openReference opens the checkpoint a delta file was coded against. compress
// records it relative to the .gmz's folder (or absolute).
func (s *gmzSource) openReference(sh *gmzShared) error {
	name := s.f.Reference
	if name == "" {
		return &gmzInputError{fmt.Errorf("%s: a delta file that does not name its reference", s.path)}
	}
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(s.path), p)
	}
	if _, err := os.Stat(p); err != nil {
		return &gmzInputError{fmt.Errorf("%s: a delta against %s, which is not there (%s): keep the reference beside the delta, where compress --against found it", s.path, name, p)}
	}
	ref, release, err := sh.reference(p, func() (Source, error) {
		if !isGMZ(p) {
			ref, err := Open(p)
			if err != nil {
				return nil, fmt.Errorf("%s: opening its reference: %w", s.path, err)
			}
			return ref, nil
		}
		// A reference must be a full checkpoint (compress refuses a delta as one); a
		// compressed full one decodes like any input.
		ref, err := openGMZ(p)
		if err != nil {
			return nil, err
		}
		if isDelta(ref) {
			ref.Close()
			return nil, &gmzInputError{fmt.Errorf("%s: its reference %s is itself a delta", s.path, p)}
		}
		return ref, nil
	})
	if err != nil {
		return err
	}
	s.ref, s.closeRef = ref, release
	s.refMetas = TensorIndex(ref)
	return nil
}

// isDelta reports whether src is a compressed checkpoint stored as a delta.
func isDelta(src Source) bool {
	switch g := src.(type) {
	case *gmzSource:
		return g.ref != nil
	case *gmzGGUF:
		return slices.ContainsFunc(g.z, func(z *gmzSource) bool { return z != nil && z.ref != nil })
	}
	return false
}

func (s *gmzSource) Path() string          { return s.path }
func (s *gmzSource) Format() Format        { return Safetensors }
func (s *gmzSource) Tensors() []TensorMeta { return s.metas }
func (s *gmzSource) Decodes() bool         { return true }

func (s *gmzSource) Close() error {
	err := s.f.Close()
	if s.ref != nil {
		err = errors.Join(err, s.closeRef())
	}
	return err
}

// Data decodes a tensor into new memory, its frames in parallel, each frame's and
// the whole tensor's checksums checked; a delta is checked against its reference's
// bytes first.
func (s *gmzSource) Data(name string) ([]byte, error) {
	t, ok := s.f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: not found", s.path, name)
	}
	var ref []byte
	if t.Delta {
		var err error
		if ref, err = s.ref.Data(name); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: reading its reference: %w", s.path, name, err)
		}
	}
	b := make([]byte, t.Size) // checked against the frames when the header was read
	if err := s.f.ReadTensor(context.Background(), t, b, ref, 0); err != nil {
		return nil, gmzErr(s.path, err)
	}
	return b, nil
}

// DecodeUnit is the file's frame size: ranges on frame boundaries decode exactly
// their frames.
func (s *gmzSource) DecodeUnit(string) int64 { return s.f.FrameSize }

// DecodeRange decodes bytes [off, off+len(dst)) of a tensor: the frames it covers,
// one after another on the caller's goroutine (the engine calls it from each of its
// workers), each frame's checksum checked. A frame only partly in the range is
// decoded whole into a buffer and the part copied. A delta's reference is read for
// the same frames; a frame that does not check out is blamed on the reference when
// the reference's whole tensor does not match the checksum the delta recorded.
func (s *gmzSource) DecodeRange(name string, off int64, dst []byte) error {
	return s.decodeRange(name, off, dst, nil)
}

// DeltaReference is the file of the reference tensor name is a delta against, and
// that tensor's checksum as the delta recorded it.
func (s *gmzSource) DeltaReference(name string) (string, uint32, bool) {
	t, ok := s.f.Tensor(name)
	if !ok || !t.Delta || s.ref == nil {
		return "", 0, false
	}
	if m := s.refMetas[name]; m != nil {
		return m.File, t.RefChecksum, true
	}
	return "", 0, false
}

// Checksum is the CRC-32C of the named tensor's original bytes.
func (s *gmzSource) Checksum(name string) (uint32, bool) {
	t, ok := s.f.Tensor(name)
	if !ok {
		return 0, false
	}
	return t.Checksum, true
}

// DecodeRangeAgainst is DecodeRange with the reference's bytes of the range given.
// A range that does not start and end on frames needs the reference around it, and
// reads it as DecodeRange does.
func (s *gmzSource) DecodeRangeAgainst(name string, off int64, dst, ref []byte) error {
	if len(ref) != len(dst) {
		return fmt.Errorf("%s: tensor %q: %d reference bytes for %d", s.path, name, len(ref), len(dst))
	}
	return s.decodeRange(name, off, dst, ref)
}

// decodeRange is DecodeRange, with given, when not nil, the reference's bytes of the
// range (DecodeRangeAgainst).
func (s *gmzSource) decodeRange(name string, off int64, dst, given []byte) error {
	t, ok := s.f.Tensor(name)
	if !ok {
		return fmt.Errorf("%s: tensor %q: not found", s.path, name)
	}
	end := off + int64(len(dst))
	if off < 0 || end > t.Size || end < off {
		return fmt.Errorf("%s: tensor %q: bytes [%d, %d) of %d", s.path, name, off, end, t.Size)
	}
	if len(dst) == 0 {
		return nil
	}
	fs := s.f.FrameSize
	first, last := off/fs, (end+fs-1)/fs // frames [first, last)
	lo, hi := first*fs, min(last*fs, t.Size)
	buf := dst
	if lo != off || hi != end {
		b := s.buf(hi - lo)
		defer s.bufs.Put(b)
		buf = (*b)[:hi-lo]
	}
	var ref []byte
	if t.Delta && given != nil && lo == off && hi == end {
		ref = given
	} else if t.Delta {
		r, put, err := s.refRange(t, lo, hi)
		if err != nil {
			return err
		}
		defer put()
		ref = r
	}
	for i := first; i < last; i++ {
		fr := &t.Frames[i]
		a, b := fr.RawOff-lo, fr.RawOff-lo+fr.Raw
		var r []byte
		if t.Delta {
			r = ref[a:b]
		}
		if err := s.f.ReadFrame(t, int(i), buf[a:b], r); err != nil {
			if t.Delta {
				if rerr := s.checkWholeReference(t); rerr != nil {
					return rerr
				}
			}
			return gmzErr(s.path, err)
		}
	}
	if lo != off || hi != end {
		copy(dst, buf[off-lo:])
	}
	return nil
}

// buf returns a pooled buffer of at least n bytes.
func (s *gmzSource) buf(n int64) *[]byte {
	b, _ := s.bufs.Get().(*[]byte)
	if b == nil {
		b = new([]byte)
	}
	if int64(cap(*b)) < n {
		*b = make([]byte, n)
	}
	return b
}

// refRange returns bytes [lo, hi) of t's reference tensor, and what to call once
// they are no longer used: a view of a mapped reference, or a range of a
// compressed one decoded into a pooled buffer.
func (s *gmzSource) refRange(t *gmz.Tensor, lo, hi int64) ([]byte, func(), error) {
	if rd, ok := s.ref.(RangeDecoder); ok {
		if err := s.checkReferenceMeta(t); err != nil {
			return nil, nil, err
		}
		b := s.buf(hi - lo)
		if err := rd.DecodeRange(t.Name, lo, (*b)[:hi-lo]); err != nil {
			s.bufs.Put(b)
			return nil, nil, fmt.Errorf("%s: tensor %q: reading its reference: %w", s.path, t.Name, err)
		}
		return (*b)[:hi-lo], func() { s.bufs.Put(b) }, nil
	}
	all, err := s.ref.Data(t.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: tensor %q: reading its reference: %w", s.path, t.Name, err)
	}
	if int64(len(all)) != t.Size {
		return nil, nil, gmzErr(s.path, gmz.CheckReference(t, all))
	}
	return all[lo:hi], func() {}, nil
}

// checkReferenceMeta checks that the reference holds t with t's size.
func (s *gmzSource) checkReferenceMeta(t *gmz.Tensor) error {
	m := s.refMetas[t.Name]
	if m == nil {
		return gmzErr(s.path, &gmz.ReferenceError{Tensor: t.Name, Missing: true, Want: t.RefChecksum})
	}
	if m.DType.Bytes(m.NumElements()) != t.Size {
		return gmzErr(s.path, &gmz.ReferenceError{Tensor: t.Name, Want: t.RefChecksum})
	}
	return nil
}

// checkWholeReference checks t's whole reference tensor against the checksum the
// delta recorded (after a frame failed its check: a wrong reference, or a corrupt
// frame).
func (s *gmzSource) checkWholeReference(t *gmz.Tensor) error {
	all, err := s.ref.Data(t.Name)
	if err != nil {
		return fmt.Errorf("%s: tensor %q: reading its reference: %w", s.path, t.Name, err)
	}
	return gmzErr(s.path, gmz.CheckReference(t, all))
}
