package safetensors

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/gomerge/gomerge/internal/atomicout"
)

// Writing: PlanOutput lays out every byte of a safetensors output (one file, or a
// Hugging Face folder of shards with their index), and the atomicout package writes
// it without ever exposing a partial checkpoint (temporary file or folder, fsync,
// rename or exchange, a lock, recovery of interrupted runs).

// FileExt is the extension of a safetensors file; IndexFileSuffix ends the name of a
// sharded checkpoint's index.
const (
	FileExt         = ".safetensors"
	IndexFileSuffix = ".safetensors.index.json"
)

// ShardLayout names one output file and the tensors it holds, in order.
type ShardLayout struct {
	Name    string
	Tensors []string
}

// OutputOptions describe a safetensors output.
type OutputOptions struct {
	Specs    []Spec            // every tensor, in output order
	Metadata map[string]string // __metadata__ of every file
	// Layout, for a folder, fixes the file names and which tensors each holds (an
	// in-place merge keeps the checkpoint's own layout). Otherwise the tensors are
	// split into shards of at most ShardSize bytes (0: one file).
	Layout    []ShardLayout
	ShardSize int64
	// ExtraFrom, for a folder, is a folder whose other files (config, tokenizer,
	// trainer state) go beside the weights: hard-linked, whole trees included, when
	// Link is set (in place), else its top-level non-weight files are copied.
	ExtraFrom string
	Link      bool
	// Replace names ExtraFrom's own weight files (the reference's shards): they are
	// never carried over, whatever the new layout is called.
	Replace []string
	// NotCopied, if set, names other files that are not copied (without Link): the
	// weights of other formats, which the caller knows.
	NotCopied func(name string) bool
}

// Output is a planned safetensors output: the files and, for each of
// OutputOptions.Specs in order, the region of the Layout that holds its data.
type Output struct {
	Layout atomicout.Layout
	Files  []*FilePlan
}

// PlanOutput lays out opts as one file named name (folder false) or as a folder.
func PlanOutput(name string, folder bool, opts OutputOptions) (*Output, error) {
	specIndex := make(map[string]int, len(opts.Specs))
	for i, s := range opts.Specs {
		specIndex[s.Name] = i
	}
	var groups [][]Spec
	var names []string
	switch {
	case !folder:
		groups, names = [][]Spec{opts.Specs}, []string{name}
	case len(opts.Layout) > 0:
		placed := 0
		for _, l := range opts.Layout {
			var g []Spec
			for _, n := range l.Tensors {
				i, ok := specIndex[n]
				if !ok {
					return nil, fmt.Errorf("output layout: shard %s names tensor %q, which is not planned", l.Name, n)
				}
				g = append(g, opts.Specs[i])
			}
			placed += len(g)
			groups, names = append(groups, g), append(names, l.Name)
		}
		if placed != len(opts.Specs) {
			return nil, fmt.Errorf("output layout places %d of %d tensors", placed, len(opts.Specs))
		}
	default:
		groups = SplitShards(opts.Specs, opts.ShardSize)
		if len(groups) == 1 {
			names = []string{SingleFileName}
		} else {
			for i := range groups {
				names = append(names, ShardName(i, len(groups)))
			}
		}
	}
	out := &Output{Layout: atomicout.Layout{Regions: make([]atomicout.Region, len(opts.Specs))}}
	for fi, g := range groups {
		p, err := PlanFile(names[fi], g, opts.Metadata)
		if err != nil {
			return nil, err
		}
		for _, t := range p.Tensors {
			out.Layout.Regions[specIndex[t.Name]] = atomicout.Region{File: fi, Begin: t.Begin, Size: t.Size()}
		}
		out.Files = append(out.Files, p)
		out.Layout.Files = append(out.Layout.Files, atomicout.File{Name: p.Name, Header: p.Header, Size: p.Size})
	}
	if !folder {
		return out, nil
	}
	out.Layout.Marks = []string{SingleFileName, IndexFileName}
	if idx, err := out.index(); err != nil {
		return nil, err
	} else if idx != nil {
		out.Layout.Whole = []atomicout.WholeFile{{Name: IndexFileName, Data: idx}}
	}
	if opts.ExtraFrom != "" {
		out.Layout.Carry = carry(opts)
	}
	return out, nil
}

// Create plans opts at d and creates the output's temporary files.
func Create(d *atomicout.Dest, opts OutputOptions) (*atomicout.Output, error) {
	p, err := PlanOutput(filepath.Base(d.Path), d.Folder, opts)
	if err != nil {
		return nil, err
	}
	return d.Create(p.Layout)
}

// index is model.safetensors.index.json for a folder of several files (nil for one
// model.safetensors).
func (o *Output) index() ([]byte, error) {
	if len(o.Files) == 1 && o.Files[0].Name == SingleFileName {
		return nil, nil
	}
	var total int64
	wm := make(map[string]string)
	for _, p := range o.Files {
		for _, t := range p.Tensors {
			total += t.Size()
			wm[t.Name] = p.Name
		}
	}
	data, err := json.MarshalIndent(Index{Metadata: map[string]any{"total_size": total}, WeightMap: wm}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// carry says which of ExtraFrom's files go beside the new weights: in place
// (linked) everything but the reference's own weight files; copied, its top-level
// files that are neither safetensors weights nor what opts.NotCopied names.
func carry(opts OutputOptions) *atomicout.Carry {
	replaced := map[string]bool{IndexFileName: true}
	for _, n := range opts.Replace {
		replaced[n] = true
	}
	skip := func(name string) bool { return replaced[name] }
	if !opts.Link {
		skip = func(name string) bool {
			return replaced[name] || strings.HasSuffix(name, FileExt) || strings.HasSuffix(name, IndexFileSuffix) ||
				(opts.NotCopied != nil && opts.NotCopied(name))
		}
	}
	return &atomicout.Carry{From: opts.ExtraFrom, Link: opts.Link, Skip: skip}
}
