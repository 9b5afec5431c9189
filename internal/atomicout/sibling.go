package atomicout

import "path/filepath"

// Sibling returns a destination for another output in d's folder, covered by d's
// lock (on Unix the lock is the folder's), after removing what an interrupted run
// left of it. A process that holds d cannot Lock a second output of the same folder
// (the lock would wait on itself); a sharded merge's worker, which writes several
// files into its own folder under one lock, uses this instead. The sibling does not
// own the lock: Unlock releases nothing, and it must not outlive d.
func (d *Dest) Sibling(name string, folder bool) (*Dest, error) {
	s := &Dest{Path: filepath.Join(d.parent, name), Folder: folder, NoExchange: d.NoExchange,
		parent: d.parent, base: name}
	if err := s.recover(); err != nil {
		return nil, err
	}
	return s, nil
}
