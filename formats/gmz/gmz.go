// Package gmz reads and writes gomerge's compressed checkpoint container (.gmz): a
// lossless, self-describing, random-access copy of a checkpoint file whose tensors are
// compressed in independent frames.
//
// # Layout
//
// A .gmz file is a 16-byte preamble, the frames, then the header and a 20-byte
// trailer, so that a writer can stream frames out as they are compressed and write the
// header once their sizes are known (as zip does with its central directory):
//
//	preamble  magic "\x89GMZ\r\n\x1a\n", version uint32 LE (1), 4 zero bytes
//	frames    each tensor's frames, tensor after tensor, back to back
//	header    JSON (see below)
//	trailer   header length uint64 LE, header CRC-32C uint32 LE, magic again
//
// The header names the source file's format ("safetensors", "gguf"), holds its exact
// leading bytes (for safetensors, the length prefix and the JSON header; for GGUF,
// everything before the first tensor's data), so that decoding gives the original
// file back byte for byte, its metadata (for reading, not needed to rebuild the file)
// and, for each tensor in source order: name, dtype, shape, byte size, the CRC-32C of
// its original bytes, and its frames. The source file is the leading bytes followed
// by the tensors' bytes in order; in version 2, a tensor may be preceded by a gap of
// bytes held in the header (alignment padding) and the file may end with a tail.
//
// A tensor is cut into frames of FrameSize bytes (the last one shorter), each
// compressed on its own, so frames decode in parallel and any byte range of a tensor
// can be read without decoding the rest. A frame is [stored size, raw size, CRC-32C
// of its original bytes, coding]. Codings:
//
//	0 raw     the bytes as they are
//	1 planes  float elements split into byte planes (plane j holds byte j of every
//	          element); each plane in blocks of up to 128 KiB, each block raw, one
//	          repeated byte, or Huffman-coded (huff0, with its own table)
//	2 zstd    one zstd frame (integer and other non-float data)
//	3 planes  as 1, and a block may also be coded with this package's own
//	          canonical Huffman code, which decodes several symbols per table
//	          lookup (see mhuff.go); the writer uses coding 1 for a planes frame
//	          that has no such block
//
// The writer keeps whichever coding is smallest, raw included, so a frame never takes
// more than its raw size.
//
// # Deltas
//
// A tensor may be stored as the bitwise XOR of its bytes with those of the same-named,
// same-shaped tensor of a reference checkpoint (a fine-tune against its base, a
// checkpoint against the previous one): the header then records the reference
// tensor's CRC-32C, and decoding needs the same reference bytes, which are checked
// against it (ErrReference when they differ).
//
// # Security
//
// Nothing read from a file is trusted. The header length is bounded (maxHeaderSize)
// and by the file size, and its checksum is verified before it is parsed; unknown
// fields, versions, dtypes and codings are errors; ranks and names are bounded; each
// tensor's size must equal its element count × dtype size (with overflow checks); its
// frames' raw sizes must tile it, each at most the file's frame size, which is
// bounded (maxFrameSize); stored sizes may not exceed raw sizes plus a small bound,
// and the frames must tile the data section exactly. Each tensor's checksum must be
// the combination of its frames' checksums. Decoding checks every frame's decoded
// length and checksum, so a corrupt or truncated frame is an error naming the tensor
// and the frame, never wrong bytes. A multi-symbol Huffman block's code lengths
// must form a complete code of at most 11 bits and its streams must each decode to
// exactly their symbols and end where their sizes say. No allocation is sized by a value from the file
// beyond these bounds, and malformed input gives an error wrapping ErrFormat, never a
// panic.
//
// A File is safe for concurrent use: frames are read with ReadAt.
package gmz

import (
	"errors"
	"fmt"

	"github.com/gomerge/gomerge/formats/dtype"

	"github.com/gomerge/gomerge/formats/internal/formaterr"
)

const (
	// version is what the writer writes when it can: version 1 files hold the
	// tensors back to back after the source's header; versionGaps adds bytes between
	// tensors and after the last (a GGUF file's alignment padding), which a version 1
	// reader would refuse as unknown fields. The reader reads both.
	version     = 1
	versionGaps = 2

	preambleSize = 16
	trailerSize  = 20

	// DefaultFrameSize is the frame size Write uses unless told otherwise: large
	// enough that per-frame tables cost under 0.1 %, small enough that a merge can
	// decode a tensor frame by frame into its chunks.
	DefaultFrameSize = 1 << 20

	maxHeaderSize = 1 << 28 // 256 MiB: millions of frames
	maxFrameSize  = 64 << 20
	maxRank       = 16
	maxNameLen    = 1 << 16
	maxElements   = 1 << 56
	blockSize     = 128 << 10 // symbols per huff0 block (huff0 takes at most 256 KiB - 1)

	// maxExpansion bounds a frame's stored size over its raw size: the writer never
	// stores more than raw, and a fixed margin keeps the check independent of that.
	maxExpansion = 1024
)

// Magic starts (and ends) every .gmz file.
const Magic = "\x89GMZ\r\n\x1a\n"

var magic = [8]byte([]byte(Magic))

// Frame codings (see the package documentation).
const (
	codingRaw    = 0
	codingPlanes = 1
	codingZstd   = 2
	// codingPlanesMH is a planes frame whose blocks may also be blockMH: a kind of
	// its own, so that a reader that predates it refuses the file when it opens it
	// (unknown coding) rather than when it reaches such a block.
	codingPlanesMH = 3
	numCodings     = 4
)

// Block modes inside a planes frame.
const (
	blockRaw  = 0
	blockRLE  = 1
	blockHuff = 2
	blockMH   = 3 // multi-symbol Huffman (mhuff.go), in codingPlanesMH frames only
)

// ErrFormat is wrapped by every error that reports a malformed file.
var ErrFormat = errors.New("malformed gmz")

// ErrReference is wrapped by the error for a delta decoded against reference bytes
// that are not those it was made against (a wrong or missing reference checkpoint).
var ErrReference = errors.New("wrong reference for delta")

// FormatError says what is wrong with a file and where.
type FormatError struct {
	Off    int64  // byte offset in the file the problem was found at, or -1
	Tensor string // the tensor concerned, if any
	Msg    string
	Err    error // an underlying error, if any
}

func (e *FormatError) Error() string {
	return formaterr.Message("gmz", e.Tensor, e.Msg, e.Off, e.Err)
}

func (e *FormatError) Is(target error) bool { return target == ErrFormat }
func (e *FormatError) Unwrap() error        { return e.Err }

// ReferenceError reports reference bytes that do not match those a delta was made
// against.
type ReferenceError struct {
	Tensor    string
	Want, Got uint32 // CRC-32C recorded in the file, and of the bytes given
	Missing   bool   // no reference tensor was given at all
}

func (e *ReferenceError) Error() string {
	if e.Missing {
		return fmt.Sprintf("gmz: tensor %q is a delta and needs its reference tensor, which was not given", e.Tensor)
	}
	return fmt.Sprintf("gmz: tensor %q: the reference's bytes have CRC-32C %08x, the delta was made against %08x (a different reference checkpoint?)", e.Tensor, e.Got, e.Want)
}

func (e *ReferenceError) Is(target error) bool { return target == ErrReference }

// header is the JSON header.
type header struct {
	FrameSize int64             `json:"frame_size"`
	Source    source            `json:"source"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	Reference string            `json:"reference,omitempty"` // the reference's name, for messages
	Tensors   []tensorHeader    `json:"tensors"`
}

type source struct {
	Format string `json:"format"`
	Size   int64  `json:"size"`
	Header []byte `json:"header"`         // base64 in JSON
	Tail   []byte `json:"tail,omitempty"` // version 2: the bytes after the last tensor
}

type tensorHeader struct {
	Name   string    `json:"name"`
	DType  string    `json:"dtype"`
	Shape  []int64   `json:"shape"`
	Size   int64     `json:"size"`
	CRC    uint32    `json:"crc32c"`
	RefCRC *uint32   `json:"ref_crc32c,omitempty"` // set for a delta
	Gap    []byte    `json:"gap,omitempty"`        // version 2: the source's bytes before the tensor
	Frames [][]int64 `json:"frames"`               // [stored, raw, crc32c, coding]
}

// parseDType parses a tensor's dtype name: safetensors' element types, and the GGUF
// block types by their exact names (a compressed GGUF file's quantized tensors).
func parseDType(s string) (dtype.DType, error) {
	d, err := dtype.Parse(s)
	if err == nil {
		return d, nil
	}
	if b, berr := dtype.ParseFloat(s); berr == nil && b.IsBlock() && b.String() == s {
		return b, nil
	}
	return dtype.Invalid, err
}
