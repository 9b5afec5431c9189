// Package torchbintest builds torch.save archives byte by byte for tests: well-formed
// state dicts like the ones torch writes, and hostile ones (globals that run code,
// opcodes a state dict never uses, sizes and offsets past their storage), without
// needing torch.
package torchbintest

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"slices"
)

// Pickle assembles a protocol-2 pickle opcode by opcode.
type Pickle struct{ b []byte }

// NewPickle starts a pickle with PROTO 2.
func NewPickle() *Pickle { return &Pickle{b: []byte{0x80, 2}} }

// Op appends raw bytes (opcodes and operands).
func (p *Pickle) Op(b ...byte) *Pickle { p.b = append(p.b, b...); return p }

// Global appends GLOBAL 'module name'.
func (p *Pickle) Global(module, name string) *Pickle {
	p.b = append(p.b, 'c')
	p.b = append(p.b, module+"\n"+name+"\n"...)
	return p
}

// Str appends BINUNICODE s.
func (p *Pickle) Str(s string) *Pickle {
	p.b = append(p.b, 'X')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(s)))
	p.b = append(p.b, s...)
	return p
}

// Int appends n the way pickle spells it: BININT1, BININT2, BININT or LONG1.
func (p *Pickle) Int(n int64) *Pickle {
	switch {
	case n >= 0 && n < 1<<8:
		p.b = append(p.b, 'K', byte(n))
	case n >= 0 && n < 1<<16:
		p.b = append(p.b, 'M', byte(n), byte(n>>8))
	case n >= -1<<31 && n < 1<<31:
		p.b = append(p.b, 'J')
		p.b = binary.LittleEndian.AppendUint32(p.b, uint32(n))
	default:
		p.b = append(p.b, 0x8a, 8)
		p.b = binary.LittleEndian.AppendUint64(p.b, uint64(n))
	}
	return p
}

// Ints appends a tuple of ints.
func (p *Pickle) Ints(v []int64) *Pickle {
	p.b = append(p.b, '(')
	for _, n := range v {
		p.Int(n)
	}
	p.b = append(p.b, 't')
	return p
}

// Stop appends STOP and returns the pickle.
func (p *Pickle) Stop() []byte { return append(slices.Clone(p.b), '.') }

// Tensor is a state-dict entry: a view of a storage.
type Tensor struct {
	Name        string
	StorageType string // "FloatStorage", "HalfStorage", ...
	Key         string // the storage's member is PREFIX/data/KEY
	Numel       int64  // the storage's size in elements
	Offset      int64
	Shape       []int64
	Stride      []int64
}

// TensorValue appends the _rebuild_tensor_v2 call torch writes for t.
func (p *Pickle) TensorValue(t Tensor) *Pickle {
	p.Global("torch._utils", "_rebuild_tensor_v2").Op('(')
	p.Op('(').Str("storage").Global("torch", t.StorageType).Str(t.Key).Str("cpu").Int(t.Numel).Op('t', 'Q')
	p.Int(t.Offset).Ints(t.Shape).Ints(t.Stride).Op(0x89)
	p.Global("collections", "OrderedDict").Op(')', 'R')
	return p.Op('t', 'R')
}

// StateDict is the pickle torch.save writes for an OrderedDict of the tensors.
func StateDict(ts []Tensor) []byte {
	p := NewPickle().Global("collections", "OrderedDict").Op(')', 'R', '(')
	for _, t := range ts {
		p.Str(t.Name).TensorValue(t)
	}
	return p.Op('u').Stop()
}

// Member is a file of an archive.
type Member struct {
	Name     string // relative to the prefix ("data.pkl", "data/0", "version")
	Data     []byte
	Compress bool // deflate it (torch never does)
}

// Archive writes a zip like torch.save's: every member under prefix/, stored
// uncompressed unless asked.
func Archive(prefix string, members ...Member) []byte {
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	for _, m := range members {
		h := &zip.FileHeader{Name: prefix + "/" + m.Name, Method: zip.Store}
		if m.Compress {
			h.Method = zip.Deflate
		}
		w, err := z.CreateHeader(h)
		if err != nil {
			panic(err) // only for bad names, which tests do not write
		}
		w.Write(m.Data)
	}
	if err := z.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// StateDictArchive is a whole well-formed archive: the pickle of ts, version 3, and
// each storage's bytes as given by data (key → bytes).
func StateDictArchive(ts []Tensor, data map[string][]byte) []byte {
	ms := []Member{{Name: "data.pkl", Data: StateDict(ts)}}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ms = append(ms, Member{Name: "data/" + k, Data: data[k]})
	}
	ms = append(ms, Member{Name: "version", Data: []byte("3\n")})
	return Archive("archive", ms...)
}
