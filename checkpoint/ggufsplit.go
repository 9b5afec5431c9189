package checkpoint

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/gomerge/gomerge/formats/gguf"
)

// openSplit returns every part of the model that f (opened from path) belongs to:
// f alone for a whole model; for a split model (llama.cpp's gguf-split: split.*
// keys, parts named PREFIX-00001-of-00003.gguf) all its parts, in order, whichever
// part path names, checked against each other (gguf.CheckSplit). On error it closes
// what it opened, f included, and names the file at fault: a missing part, a part
// that disagrees with the others, a part count that the names and the keys disagree
// on. A truncated part fails in gguf.Open, which names it.
func openSplit(path string, f *gguf.File) (parts []*gguf.File, paths []string, err error) {
	s, isSplit, err := gguf.SplitOf(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if !isSplit {
		return []*gguf.File{f}, []string{path}, nil
	}
	prefix, no, count, ok := gguf.ParseSplitName(filepath.Base(path))
	switch {
	case !ok:
		err = fmt.Errorf("%s: %w: part %d of a model split in %d, but not named as llama.cpp names parts (%s)",
			path, ErrBadInput, s.No+1, s.Count, gguf.SplitName("NAME", s.No, s.Count))
	case no != s.No || count != s.Count:
		err = fmt.Errorf("%s: %w: named part %d of %d, but its keys say part %d of %d", path, ErrBadInput, no+1, count, s.No+1, s.Count)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	dir := filepath.Dir(path)
	parts = make([]*gguf.File, count)
	paths = make([]string, count)
	defer func() {
		if err != nil {
			for _, p := range parts {
				if p != nil {
					p.Close()
				}
			}
		}
	}()
	for i := range count {
		paths[i] = filepath.Join(dir, gguf.SplitName(prefix, i, count))
		if i == no {
			parts[i] = f
			continue
		}
		if parts[i], err = gguf.Open(paths[i]); err != nil {
			return nil, nil, fmt.Errorf("part %d of %d of %s: %w", i+1, count, path, err) // Open names paths[i]
		}
	}
	if err = gguf.CheckSplit(parts); err != nil {
		var se *gguf.SplitError
		at := path
		if errors.As(err, &se) {
			at = paths[se.Part]
		}
		return nil, nil, fmt.Errorf("%s: split model: %w", at, err)
	}
	return parts, paths, nil
}
