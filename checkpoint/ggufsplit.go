package checkpoint

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// openSplit returns every part of the model that first (opened from path) belongs
// to: first alone for a whole model; for a split model (llama.cpp's gguf-split:
// split.* keys, parts named PREFIX-00001-of-00003.gguf) all its parts, in order,
// whichever part path names, checked against each other (gguf.CheckSplit). A part
// may be compressed (PREFIX-00002-of-00003.gmz, gmzsplit.go: findPart says which
// file serves each part). On error it closes what it opened, first included, and
// names the file at fault: a missing part, a part that disagrees with the others, a
// part count that the names and the keys disagree on. A truncated part fails in
// openGGUFPart, which names it. Compressed parts share sh.
func openSplit(path string, first ggufPart, sh *gmzShared) (parts []ggufPart, paths []string, err error) {
	s, isSplit, err := gguf.SplitOf(first.f)
	if err != nil {
		first.close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if !isSplit {
		return []ggufPart{first}, []string{path}, nil
	}
	prefix, no, count, suffix, ok := splitPartName(filepath.Base(path))
	switch {
	case !ok:
		err = fmt.Errorf("%s: %w: part %d of a model split in %d, but not named as llama.cpp names parts (%s)",
			path, ErrBadInput, s.No+1, s.Count, gguf.SplitName("NAME", s.No, s.Count))
	case no != s.No || count != s.Count:
		err = fmt.Errorf("%s: %w: named part %d of %d, but its keys say part %d of %d", path, ErrBadInput, no+1, count, s.No+1, s.Count)
	}
	if err != nil {
		first.close()
		return nil, nil, err
	}
	dir := filepath.Dir(path)
	parts = make([]ggufPart, count)
	paths = make([]string, count)
	defer func() {
		if err != nil {
			closeParts(parts)
		}
	}()
	for i := range count {
		if i == no {
			parts[i], paths[i] = first, path
			continue
		}
		if paths[i], err = findPart(dir, prefix, i, count, suffix); err != nil {
			return nil, nil, fmt.Errorf("part %d of %d of %s: %w", i+1, count, path, err)
		}
		if parts[i], err = openGGUFPart(paths[i], sh); err != nil {
			return nil, nil, fmt.Errorf("part %d of %d of %s: %w", i+1, count, path, err) // it names paths[i]
		}
	}
	files := make([]*gguf.File, count)
	for i := range parts {
		files[i] = parts[i].f
	}
	if err = gguf.CheckSplit(files); err != nil {
		var se *gguf.SplitError
		at := path
		if errors.As(err, &se) {
			at = paths[se.Part]
		}
		return nil, nil, fmt.Errorf("%s: split model: %w", at, err)
	}
	return parts, paths, nil
}

// splitParts assigns each output tensor to a part, or returns nil for a single file.
// With --split-max-tensors or --split-max-size a part is closed before the tensor
// that would take it past either bound (a part holds at least one tensor; sizes count
// tensor data with its padding, not the header), as llama.cpp's gguf-split does. An
// in-place merge of a split model without them keeps the reference's parts.
func splitParts(out Output, ref *ggufSource, specs []gguf.TensorSpec) []int {
	o := out.Options
	parts := make([]int, len(specs))
	switch {
	case o.SplitMaxSize > 0 || o.SplitMaxTensors > 0:
		part, n, size := 0, 0, int64(0)
		for i, s := range specs {
			b := paddedSize(s)
			if n > 0 && (o.SplitMaxTensors > 0 && n >= o.SplitMaxTensors || o.SplitMaxSize > 0 && size+b > o.SplitMaxSize) {
				part, n, size = part+1, 0, 0
			}
			parts[i] = part
			n++
			size += b
		}
	case out.InPlace && len(ref.parts) > 1:
		last := 0 // parts stay in order: a tensor only the other inputs hold joins the part before it
		for i, s := range specs {
			if p, ok := ref.where[s.Name]; ok {
				last = max(last, p)
			}
			parts[i] = last
		}
	default:
		return nil
	}
	return parts
}

// paddedSize is a tensor's data size in a file of GGUF's default alignment.
func paddedSize(s gguf.TensorSpec) int64 {
	n := s.Type.TypeSize()
	for _, d := range s.Shape {
		n *= d
	}
	n /= max(s.Type.BlockSize(), 1)
	return (n + 31) &^ 31
}

// planSplit lays out a split output: part 1 holds the metadata, every part the split
// keys (split.no and split.count as UINT16, split.tensors.count as INT32, as
// gguf-split writes them) and its tensors, in order. The parts are named after the
// output: NAME.gguf gives NAME-00001-of-0000N.gguf …, and an output already named as
// a part (an in-place merge) keeps its prefix.
func planSplit(out Output, meta []gguf.KV, specs []gguf.TensorSpec, parts []int, changes []TypeChange) (*Layout, error) {
	count := 0
	if len(parts) > 0 {
		count = parts[len(parts)-1] + 1
	}
	if count > 65535 {
		return nil, unsupported("output %s: %d parts; a split GGUF model has at most 65535", out.Name, count)
	}
	prefix, _, _, ok := gguf.ParseSplitName(out.Name)
	if !ok {
		prefix = strings.TrimSuffix(out.Name, filepath.Ext(out.Name))
	}
	layout := &Layout{TypeChanges: changes}
	begin := 0
	for p := range max(count, 1) {
		end := begin
		for end < len(specs) && parts[end] == p {
			end++
		}
		var m []gguf.KV
		if p == 0 {
			m = append(m, meta...)
		}
		m = append(m,
			gguf.KV{Key: gguf.KeySplitNo, Value: gguf.Value{Type: gguf.ValueUint16, Data: uint16(p)}},
			gguf.KV{Key: gguf.KeySplitCount, Value: gguf.Value{Type: gguf.ValueUint16, Data: uint16(max(count, 1))}},
			gguf.KV{Key: gguf.KeySplitTensors, Value: gguf.Value{Type: gguf.ValueInt32, Data: int32(len(specs))}})
		l, err := gguf.Plan(m, specs[begin:end])
		if err != nil {
			return nil, err
		}
		layout.Files = append(layout.Files, atomicout.File{Name: gguf.SplitName(prefix, p, max(count, 1)), Header: l.Header, Size: l.Size})
		for _, t := range l.Tensors {
			layout.Regions = append(layout.Regions, atomicout.Region{File: p, Begin: t.Begin, Size: t.Size})
		}
		begin = end
	}
	return layout, nil
}
