package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/gomerge/gomerge/formats/dtype"
)

// Spec describes a tensor to be written.
type Spec struct {
	Name  string
	DType dtype.DType
	Shape []int64
}

// NumElements is the product of the shape.
func (s *Spec) NumElements() int64 {
	n := int64(1)
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// Size is the tensor's length in bytes.
func (s *Spec) Size() int64 { return s.NumElements() * int64(s.DType.Size()) }

// FilePlan is the complete layout of one safetensors file before any byte is written:
// the header and where each tensor's data goes.
type FilePlan struct {
	Name    string       // file name within the output folder, or the output file's base name
	Tensors []TensorInfo // in the order given, with absolute offsets
	Header  []byte       // the 8-byte length and the padded JSON header
	Size    int64        // total file length
}

// PlanFile lays out specs in the given order after a header that carries metadata.
// It does not reorder the caller's slice.
func PlanFile(name string, specs []Spec, metadata map[string]string) (*FilePlan, error) {
	p := &FilePlan{Name: name}
	var hdr bytes.Buffer
	hdr.WriteByte('{')
	if len(metadata) > 0 {
		hdr.WriteString(`"__metadata__":{`)
		for i, k := range slices.Sorted(maps.Keys(metadata)) {
			if i > 0 {
				hdr.WriteByte(',')
			}
			writeJSONString(&hdr, k)
			hdr.WriteByte(':')
			writeJSONString(&hdr, metadata[k])
		}
		hdr.WriteByte('}')
	}
	seen := make(map[string]bool, len(specs))
	var off int64
	for i := range specs {
		s := &specs[i]
		if s.Name == "__metadata__" || s.Name == "" {
			return nil, fmt.Errorf("safetensors: cannot write a tensor named %q", s.Name)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("safetensors: tensor %q planned twice", s.Name)
		}
		seen[s.Name] = true
		if s.DType.Size() == 0 {
			return nil, fmt.Errorf("safetensors: tensor %q: cannot write dtype %s", s.Name, s.DType)
		}
		size := s.Size()
		if hdr.Len() > 1 {
			hdr.WriteByte(',')
		}
		writeJSONString(&hdr, s.Name)
		fmt.Fprintf(&hdr, `:{"dtype":"%s","shape":[`, s.DType)
		for j, d := range s.Shape {
			if j > 0 {
				hdr.WriteByte(',')
			}
			fmt.Fprint(&hdr, d)
		}
		fmt.Fprintf(&hdr, `],"data_offsets":[%d,%d]}`, off, off+size)
		p.Tensors = append(p.Tensors, TensorInfo{Name: s.Name, DType: s.DType, Shape: slices.Clone(s.Shape), Begin: off, End: off + size})
		off += size
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 { // the data section starts 8-byte aligned
		hdr.WriteByte(' ')
	}
	if hdr.Len() > maxHeaderSize {
		return nil, fmt.Errorf("safetensors: header of %d bytes exceeds the format's limit", hdr.Len())
	}
	p.Header = binary.LittleEndian.AppendUint64(make([]byte, 0, 8+hdr.Len()), uint64(hdr.Len()))
	p.Header = append(p.Header, hdr.Bytes()...)
	start := int64(len(p.Header))
	for i := range p.Tensors {
		p.Tensors[i].Begin += start
		p.Tensors[i].End += start
	}
	p.Size = start + off
	return p, nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s) // a string always marshals
	b.Write(enc)
}

// ShardName is Hugging Face's name for shard i (0-based) of n.
func ShardName(i, n int) string {
	return fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
}

// SplitShards groups specs, in order, into shards of at most maxBytes tensor bytes each
// (a tensor larger than maxBytes gets a shard of its own). maxBytes ≤ 0 means one shard.
func SplitShards(specs []Spec, maxBytes int64) [][]Spec {
	var shards [][]Spec
	var cur []Spec
	var curBytes int64
	for _, s := range specs {
		if maxBytes > 0 && len(cur) > 0 && curBytes+s.Size() > maxBytes {
			shards = append(shards, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, s)
		curBytes += s.Size()
	}
	if len(cur) > 0 || len(shards) == 0 {
		shards = append(shards, cur)
	}
	return shards
}
