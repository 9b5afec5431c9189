package atomicout

import (
	"fmt"
	"os"
	"path/filepath"
)

// createSet makes the temporary files of a set of sibling files: each is named
// .BASE.gomerge-tmp-* after the destination, so that Lock's recovery removes what a
// killed run left, and each takes its final name only in commitSet.
func (o *Output) createSet(l Layout) error {
	d := o.dest
	if len(l.Whole) > 0 || l.Carry != nil {
		return fmt.Errorf("output %s: a set of files has no whole or carried files", d.Path)
	}
	seen := map[string]bool{}
	for _, p := range l.Files {
		if p.Name == "" || p.Name != filepath.Base(p.Name) || IsTemporary(p.Name) || seen[p.Name] {
			return fmt.Errorf("output %s: %q is not a plain, distinct file name", d.Path, p.Name)
		}
		seen[p.Name] = true
	}
	for _, p := range l.Files {
		var f *os.File
		tmp, err := makeTemp(d.parent, "."+d.base+tmpInfix, func(path string) (err error) {
			f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
			return err
		})
		if err != nil {
			return err
		}
		o.set = append(o.set, tmp)
		o.files = append(o.files, f)
		o.Paths = append(o.Paths, filepath.Join(d.parent, p.Name))
	}
	return nil
}

// commitSet publishes a set of sibling files once every one is durable: each is
// renamed to its name, the first file last, so that a reader who finds the first
// file (the one a split GGUF model is opened by) finds the others of the same set
// beside it. A crash between the renames leaves new later files beside an older
// first file, or none (a first run); the reader's cross-checks of the set catch a
// mix of sets whose counts differ. Temporary files not yet renamed are removed by
// Abort or by the next Lock.
func (o *Output) commitSet() error {
	for i := len(o.set) - 1; i >= 0; i-- {
		if err := replaceFile(o.set[i], o.Paths[i]); err != nil {
			o.set = o.set[:i+1] // the rest are in place
			o.Abort()
			return err
		}
		if i > 0 {
			syncDir(o.dest.parent) // each later file is in place before the first
		}
	}
	o.set = nil
	o.done = true
	syncDir(o.dest.parent)
	return nil
}
