package checkpoint

import (
	"errors"
	"fmt"
	"io"
	"maps"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
)

type safetensorsFormat struct{}

func (safetensorsFormat) String() string { return "safetensors" }
func (safetensorsFormat) Writes() string { return "a .safetensors file or a folder" }

// OutType: every float tensor in the asked type, the others as they are.
func (safetensorsFormat) OutType(asked dtype.DType, opts OutOptions, _ Source) (func(string, dtype.DType, []int64) dtype.DType, error) {
	if err := opts.ggufOnly(); err != nil {
		return nil, err
	}
	switch {
	case asked.IsBlock():
		return nil, unsupported("--dtype %s: safetensors cannot hold block-quantized types (write a .gguf, or pick F32, F16 or BF16)", asked)
	case asked != dtype.Invalid && !asked.IsFloat():
		return nil, unsupported("output dtype %s is not a float type", asked)
	}
	return func(_ string, from dtype.DType, _ []int64) dtype.DType {
		if asked != dtype.Invalid && from.IsFloat() {
			return asked
		}
		return from
	}, nil
}

// Plan lays out a safetensors file or folder. A reference that is a safetensors
// checkpoint gives its metadata and, for a folder, its other files and (unless
// ShardSize is set) its shard layout.
func (safetensorsFormat) Plan(out Output) (*Layout, error) {
	var opts safetensors.OutputOptions
	for _, t := range out.Tensors {
		opts.Specs = append(opts.Specs, safetensors.Spec{Name: t.Name, DType: t.DType, Shape: t.Shape})
	}
	ref, isST := out.Ref.(*safetensorsSource) // a recipe's view has neither metadata nor files
	meta := map[string]string{}
	if isST {
		maps.Copy(meta, ref.c.Metadata)
	}
	meta["format"] = "pt" // transformers refuses files without it
	for _, kv := range out.Provenance {
		meta[kv[0]] = kv[1]
	}
	opts.Metadata = meta
	if out.Folder {
		opts.ShardSize = out.ShardSize
		if isST && ref.c.Dir != "" {
			opts.ExtraFrom = ref.c.Dir
			opts.Link = out.InPlace
			opts.NotCopied = isWeightFile
			for _, sh := range ref.c.Shards {
				opts.Replace = append(opts.Replace, sh.Name)
			}
			if out.ShardSize == 0 {
				opts.Layout = layoutOf(ref.c, out.Tensors)
			}
		} else if gf, ok := out.Ref.(*gmzFolder); ok { // gmzfolder.go: its config, tokenizer, index...
			opts.ExtraFrom, opts.Link, opts.NotCopied = gf.dir, out.InPlace, isWeightFile
		} else if tr, ok := out.Ref.(*torchSource); ok && tr.dir != "" { // torchbin.go
			opts.ExtraFrom, opts.Link, opts.NotCopied, opts.Replace = tr.dir, out.InPlace, isWeightFile, tr.weightFiles()
		}
		if opts.ShardSize == 0 {
			opts.ShardSize = DefaultShardSize
		}
	}
	p, err := safetensors.PlanOutput(out.Name, out.Folder, opts)
	if err != nil {
		return nil, err
	}
	return &Layout{Layout: p.Layout}, nil
}

// layoutOf keeps the reference folder's file names and tensor placement; tensors it
// lacks (copied from other inputs) go into its last file.
func layoutOf(c *safetensors.Checkpoint, tensors []Tensor) []safetensors.ShardLayout {
	layout := make([]safetensors.ShardLayout, len(c.Shards))
	for i, s := range c.Shards {
		layout[i].Name = s.Name
	}
	for _, t := range tensors {
		i := len(layout) - 1
		if rt, ok := c.Tensor(t.Name); ok {
			i = rt.Shard
		}
		layout[i].Tensors = append(layout[i].Tensors, t.Name)
	}
	return layout
}

// safetensorsSource is a safetensors file or Hugging Face folder.
type safetensorsSource struct {
	c     *safetensors.Checkpoint
	metas []TensorMeta
}

func openSafetensors(path string) (*safetensorsSource, error) {
	c, err := safetensors.OpenCheckpoint(path)
	if err != nil {
		return nil, err
	}
	s := &safetensorsSource{c: c}
	for _, t := range c.Tensors() {
		s.metas = append(s.metas, TensorMeta{Name: t.Name, DType: t.DType, Shape: t.Shape, File: c.FileOf(t)})
	}
	return s, nil
}

func (s *safetensorsSource) Path() string          { return s.c.Path }
func (s *safetensorsSource) Format() Format        { return Safetensors }
func (s *safetensorsSource) Tensors() []TensorMeta { return s.metas }
func (s *safetensorsSource) Close() error          { return s.c.Close() }

// A safetensors checkpoint on tmpfs (the trainer's staged weights, docs/trainer.md),
// or on a machine where a probe finds the mapping's first touch dearer than a copy,
// is read rather than mapped by the merge engine: as a MappedDecoder whose Decodes is
// true there, it has the engine copy a span of each tensor at a time into buffers
// the engine reuses (mapfile.Mapped.PreferRead). Data still returns a view of the
// mapping, so the other commands and the kernels that need whole tensors are
// unchanged, and the engine may be told to map or copy regardless (ReadsRanges).

// Decodes is true when the checkpoint is better read than mapped (on tmpfs, or where
// the probe says so).
func (s *safetensorsSource) Decodes() bool { return s.c.PreferRead() }

// Mapped: Data is a view of the mapping (MappedDecoder).
func (s *safetensorsSource) Mapped() bool { return true }

// MappingTraps: the probe found this machine's mappings dearer than copies
// (MappedDecoder).
func (s *safetensorsSource) MappingTraps() bool { return s.c.MappingTraps() }

// DecodeUnit: a file is read in any ranges.
func (s *safetensorsSource) DecodeUnit(string) int64 { return 0 }

// DecodeRange reads bytes [off, off+len(dst)) of the named tensor into dst.
func (s *safetensorsSource) DecodeRange(name string, off int64, dst []byte) error {
	t, ok := s.c.Tensor(name)
	if !ok {
		return fmt.Errorf("%s: tensor %q: not found", s.c.Path, name)
	}
	if err := s.c.ReadRange(t, off, dst); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// The header, checked against the file's size when it was opened, put
			// these bytes inside it: the file has been cut short since, as a mapped
			// read would find by its fault.
			return fmt.Errorf("%s: tensor %q: %w", s.c.FileOf(t), name, ErrInputChanged)
		}
		return fmt.Errorf("%s: %w", s.c.FileOf(t), err)
	}
	return nil
}

func (s *safetensorsSource) Data(name string) ([]byte, error) {
	t, ok := s.c.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: not found", s.c.Path, name)
	}
	return s.c.Bytes(t)
}
