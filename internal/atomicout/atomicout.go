// Package atomicout writes an output (one file, or a folder of files) so that no
// reader ever sees it half written, whatever the format of its bytes. Format packages
// plan their bytes (a Layout: files, headers, sizes and where each tensor goes) and
// commit through it; it knows no format.
//
// How an output reaches its destination:
//
//   - A file is written as a temporary file in the destination's folder, fsynced, and
//     renamed over the destination.
//   - A folder is built complete as a temporary sibling folder (.NAME.gomerge-tmp-*),
//     fsynced, then swapped with the destination by the operating system's atomic
//     exchange where it has one (Linux renameat2(RENAME_EXCHANGE), macOS
//     renamex_np(RENAME_SWAP)), so that a reader sees the old or the new folder at
//     every instant; the old one, now under the temporary name, is then removed.
//     Where there is no exchange (Windows, or a filesystem that refuses it), the old
//     folder is renamed to .NAME.gomerge-old and the new one into place; a crash
//     between those two renames leaves no NAME, and the next run (Lock) renames the
//     old folder back.
//   - A lock keeps two gomerge processes from writing the same destination at once,
//     and every run removes what a killed run left behind, under that lock, before it
//     writes.
//
// docs/reliability-os.md says what each operating system guarantees.
package atomicout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	tmpInfix = ".gomerge-tmp-"
	oldInfix = ".gomerge-old"
)

// IsTemporary reports whether a file name is one of this package's temporary or
// rolled-back names, which are never carried into an output.
func IsTemporary(name string) bool {
	return strings.Contains(name, tmpInfix) || strings.HasSuffix(name, oldInfix) || strings.HasSuffix(name, lockSuffix)
}

// Dest is a locked output destination. Lock it before opening inputs that live at the
// destination (an in-place merge), so that an interrupted earlier run is repaired first.
type Dest struct {
	Path   string
	Folder bool
	// NoExchange makes folder commits take the two-rename fallback even where the
	// filesystem can exchange; tests use it to exercise that path.
	NoExchange bool

	parent, base string
	lock         *os.File
}

// lockPoll is how often Lock tries again while another process holds the lock:
// polling rather than blocking lets ctx (Ctrl-C) end the wait.
const lockPoll = 50 * time.Millisecond

// Lock takes the destination's lock, waiting for another gomerge process that holds
// it (onWait, if not nil, is called once before waiting) until ctx is done, then
// removes what an interrupted run left behind. folder says whether the destination
// is a folder or a single file.
func Lock(ctx context.Context, path string, folder bool, onWait func()) (*Dest, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	d := &Dest{Path: abs, Folder: folder, parent: filepath.Dir(abs), base: filepath.Base(abs)}
	for waited := false; ; {
		lk, err := tryLock(d.parent, d.base)
		if err == nil {
			d.lock = lk
			break
		}
		if !errors.Is(err, errLocked) {
			return nil, fmt.Errorf("output folder: %w", err)
		}
		if !waited && onWait != nil {
			onWait()
		}
		waited = true
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(lockPoll):
		}
	}
	if err := d.recover(); err != nil {
		d.Unlock()
		return nil, err
	}
	return d, nil
}

// Unlock releases the lock.
func (d *Dest) Unlock() {
	if d.lock != nil {
		d.lock.Close() // closing the last descriptor releases the lock
		d.lock = nil
	}
}

func (d *Dest) oldPath() string { return filepath.Join(d.parent, "."+d.base+oldInfix) }

// recover repairs what a killed run may have left: a folder switch cut between its two
// renames (roll back to the old folder, which is complete), and temporary files.
func (d *Dest) recover() error {
	old := d.oldPath()
	if _, err := os.Lstat(old); err == nil {
		if _, err := os.Lstat(d.Path); errors.Is(err, fs.ErrNotExist) {
			if err := renameDir(old, d.Path); err != nil {
				return fmt.Errorf("restoring %s from an interrupted run: %w", d.Path, err)
			}
		} else if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("removing %s left by an interrupted run: %w", old, err)
		}
	}
	stale, err := filepath.Glob(filepath.Join(d.parent, "."+globEscape(d.base)+tmpInfix+"*"))
	if err != nil {
		return err
	}
	for _, s := range stale {
		if err := os.RemoveAll(s); err != nil {
			return fmt.Errorf("removing %s left by an interrupted run: %w", s, err)
		}
	}
	return syncDir(d.parent)
}

func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(s)
}

// Layout is every byte of an output planned before any is written.
type Layout struct {
	// Files are the output's files, each with its header (written first) and its total
	// length. A file destination has one, whose Name is ignored, or several: a set of
	// sibling files (a split GGUF model) named by Name in the destination's folder,
	// published together by Commit (see Output.commitSet).
	Files []File
	// Regions are the writable ranges (one per tensor) that Output.WriteAt addresses
	// by index.
	Regions []Region
	// Whole are small files of a folder output written complete at Create (an index).
	Whole []WholeFile
	// Carry, for a folder, brings the other files of an existing folder along.
	Carry *Carry
	// Marks name files whose presence makes an existing folder at the destination
	// replaceable (it holds a checkpoint). An empty folder is always replaceable, a
	// folder of anything else never, so that a mistyped destination cannot swap away
	// a home directory.
	Marks []string
}

// File is one file of a Layout.
type File struct {
	Name   string
	Header []byte
	Size   int64 // Streamed: not known in advance
}

// Streamed is a File's Size when its length is only known once it is written (a
// compressed checkpoint): the file is not pre-sized and has no regions; the caller
// writes it through Output.Stream.
const Streamed = -1

// Region is a range of one of a Layout's files.
type Region struct {
	File        int
	Begin, Size int64
}

// WholeFile is a file written complete.
type WholeFile struct {
	Name string
	Data []byte
}

// Carry says which files of a folder (config, tokenizer, trainer state) go beside the
// new ones. Names the Layout writes itself and this package's temporary names are
// never carried.
type Carry struct {
	From string
	// Link hard-links every entry, sub-folders included (an in-place merge: nothing is
	// copied and the old folder stays complete until the swap); otherwise the
	// top-level regular files are copied.
	Link bool
	// Tree copies sub-folders too, whole (a compressed folder keeps its source's
	// sub-folders byte for byte). Symbolic links to files are copied as the files
	// they point to, as at the top level; links to folders are not followed.
	Tree bool
	// Skip names top-level entries that are not carried (the weights the output
	// replaces).
	Skip func(name string) bool
}

// Output is an output being written. Its regions are written with WriteAt,
// concurrently if need be; Commit makes it visible at the destination, Abort drops it.
type Output struct {
	dest    *Dest
	tmp     string   // the temporary file or folder
	set     []string // a sibling set's temporary files, in Layout order
	files   []*os.File
	regions []Region
	done    bool
	// Paths are the final paths of the Layout's files.
	Paths []string

	stopWriteback func()
}

// Create makes the output's temporary file or folder with its files pre-sized and
// their headers written.
func (d *Dest) Create(l Layout) (*Output, error) {
	o := &Output{dest: d, regions: l.Regions}
	if err := o.create(l); err != nil {
		o.Abort()
		return nil, err
	}
	o.stopWriteback = startWriteback(o.files)
	return o, nil
}

func (o *Output) create(l Layout) error {
	d := o.dest
	for i, r := range l.Regions {
		if r.File < 0 || r.File >= len(l.Files) || r.Begin < 0 || r.Size < 0 || r.Begin+r.Size > l.Files[r.File].Size {
			return fmt.Errorf("output %s: region %d lies outside its file", d.Path, i)
		}
	}
	if !d.Folder && len(l.Files) > 1 {
		if err := o.createSet(l); err != nil {
			return err
		}
	} else if !d.Folder {
		if len(l.Files) != 1 || len(l.Whole) > 0 || l.Carry != nil {
			return fmt.Errorf("output %s: a file output is one file", d.Path)
		}
		if st, err := os.Stat(d.Path); err == nil && st.IsDir() {
			return &os.PathError{Op: "write checkpoint", Path: d.Path, Err: errors.New("is a folder (name a file, with its format's extension, to write one file)")}
		}
		var f *os.File
		tmp, err := makeTemp(d.parent, "."+d.base+tmpInfix, func(p string) (err error) {
			f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
			return err
		})
		if err != nil {
			return err
		}
		o.tmp = tmp
		o.files = append(o.files, f)
		if err := d.keepMode(tmp); err != nil {
			return err
		}
		o.Paths = []string{d.Path}
	} else {
		if err := d.checkReplaceable(l.Marks); err != nil {
			return err
		}
		dir, err := makeTemp(d.parent, "."+d.base+tmpInfix, func(p string) error { return os.Mkdir(p, 0o777) })
		if err != nil {
			return err
		}
		o.tmp = dir // its final mode is set in Commit, once it is filled
		for _, p := range l.Files {
			f, err := os.OpenFile(filepath.Join(dir, p.Name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
			if err != nil {
				return err
			}
			o.files = append(o.files, f)
			o.Paths = append(o.Paths, filepath.Join(d.Path, p.Name))
		}
		for _, w := range l.Whole {
			if err := writeFileSync(filepath.Join(dir, w.Name), w.Data); err != nil {
				return err
			}
		}
		if err := o.carry(l); err != nil {
			return err
		}
	}
	for i, p := range l.Files {
		f := o.files[i]
		if p.Size == Streamed {
			if len(p.Header) > 0 || len(l.Regions) > 0 {
				return fmt.Errorf("output %s: a streamed file has no header or regions", d.Path)
			}
			continue
		}
		if err := f.Truncate(p.Size); err != nil {
			return err
		}
		if err := preallocate(f, p.Size); err != nil {
			return err
		}
		if _, err := f.WriteAt(p.Header, 0); err != nil {
			return err
		}
	}
	return nil
}

// makeTemp creates a temporary output named prefix plus a random suffix with mk,
// which must fail if the name exists. Unlike os.CreateTemp (0600) and os.MkdirTemp
// (0700) it lets mk pick the mode (0666 or 0777 less the umask), so that a new output
// is as readable as any file the user creates.
func makeTemp(dir, prefix string, mk func(path string) error) (string, error) {
	for range 100 {
		p := filepath.Join(dir, prefix+strconv.FormatUint(rand.Uint64(), 36))
		err := mk(p)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return p, err
	}
	return "", &os.PathError{Op: "create temporary", Path: filepath.Join(dir, prefix+"*"), Err: fs.ErrExist}
}

// keepMode gives the temporary output the permissions of the destination it will
// replace, if there is one, so that an in-place merge does not lock out the other
// users or the server that read it.
func (d *Dest) keepMode(tmp string) error {
	st, err := os.Stat(d.Path)
	if err != nil {
		return nil // nothing to replace: the umask decided
	}
	return os.Chmod(tmp, st.Mode().Perm())
}

func (o *Output) carry(l Layout) error {
	c := l.Carry
	if c == nil || c.From == "" {
		return nil
	}
	entries, err := os.ReadDir(c.From)
	if err != nil {
		return err
	}
	written := map[string]bool{}
	for _, f := range l.Files {
		written[f.Name] = true
	}
	for _, w := range l.Whole {
		written[w.Name] = true
	}
	for _, e := range entries {
		name := e.Name()
		src, dst := filepath.Join(c.From, name), filepath.Join(o.tmp, name)
		if written[name] || IsTemporary(name) || (c.Skip != nil && c.Skip(name)) {
			continue
		}
		if c.Link {
			if err := linkTree(src, dst); err != nil {
				return err
			}
			continue
		}
		if c.Tree && e.IsDir() {
			if err := copyTree(src, dst); err != nil {
				return err
			}
			continue
		}
		if !e.Type().IsRegular() && !symlinkToFile(src, e) {
			continue
		}
		if err := copyFile(src, dst); err != nil {
			return err
		}
	}
	return nil
}

// copyTree copies a folder's regular files (and the files its links to files point
// to) and its sub-folders, each with its own permissions once filled.
func copyTree(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		switch {
		case e.IsDir():
			err = copyTree(s, d)
		case e.Type().IsRegular() || symlinkToFile(s, e):
			err = copyFile(s, d)
		}
		if err != nil {
			return err
		}
	}
	if err := syncDir(dst); err != nil {
		return err
	}
	return os.Chmod(dst, st.Mode().Perm())
}

// symlinkToFile says whether a folder entry is a symbolic link to a regular file: a
// Hugging Face cache snapshot is made of them, and its config and tokenizer are
// carried as copies of the files they point to.
func symlinkToFile(path string, e fs.DirEntry) bool {
	if e.Type()&fs.ModeSymlink == 0 {
		return false
	}
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

func linkTree(src, dst string) error {
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	case st.IsDir():
		// Writable while it is filled, its own mode after (a 0555 folder of trainer
		// state must not stop the links going in).
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := linkTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
		return os.Chmod(dst, st.Mode().Perm())
	case st.Mode().IsRegular():
		return os.Link(src, dst)
	}
	return nil // sockets, devices: not part of a checkpoint
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := syncFile(out); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := syncFile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkReplaceable refuses to replace a folder that holds something other than a
// checkpoint, so that a mistyped destination cannot swap away a home directory.
func (d *Dest) checkReplaceable(marks []string) error {
	st, err := os.Stat(d.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return &os.PathError{Op: "write checkpoint", Path: d.Path, Err: errors.New("exists and is not a folder (name a file, with its format's extension, to write one file)")}
	}
	entries, err := os.ReadDir(d.Path)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	for _, e := range entries {
		for _, m := range marks {
			if e.Name() == m {
				return nil
			}
		}
	}
	return &os.PathError{Op: "write checkpoint", Path: d.Path, Err: syscall.ENOTEMPTY}
}

// Stream returns file i of the output, for a Streamed file written sequentially (or
// sized by the caller); Commit syncs and closes it.
func (o *Output) Stream(i int) *os.File { return o.files[i] }

// Size returns the size in bytes of region i.
func (o *Output) Size(i int) int64 { return o.regions[i].Size }

// WriteAt writes p at offset off of region i. It is safe for concurrent use on
// disjoint ranges.
func (o *Output) WriteAt(i int, off int64, p []byte) error {
	r := o.regions[i]
	if off < 0 || off+int64(len(p)) > r.Size {
		return fmt.Errorf("output %s: write of %d bytes at %d outside region %d of %d bytes", o.dest.Path, len(p), off, i, r.Size)
	}
	_, err := o.files[r.File].WriteAt(p, r.Begin+off)
	return err
}

// ReadFile reads a file of a folder output before it is committed: one the Layout
// wrote whole, or one carried over.
func (o *Output) ReadFile(name string) ([]byte, error) {
	if err := o.checkName(name); err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(o.tmp, name))
}

// WriteFile puts a small file (a config, a tokenizer file) into a folder output before
// it is committed, replacing any of that name that was carried over: a carried link is
// removed, never written through, so that the folder it came from stays as it was.
func (o *Output) WriteFile(name string, data []byte) error {
	if err := o.checkName(name); err != nil {
		return err
	}
	p := filepath.Join(o.tmp, name)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return writeFileSync(p, data)
}

func (o *Output) checkName(name string) error {
	if !o.dest.Folder || o.done {
		return fmt.Errorf("output %s: no open folder to hold %s", o.dest.Path, name)
	}
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." || IsTemporary(name) {
		return fmt.Errorf("output %s: %q is not a plain file name", o.dest.Path, name)
	}
	for _, p := range o.Paths {
		if filepath.Base(p) == name {
			return fmt.Errorf("output %s: %s is one of the planned files", o.dest.Path, name)
		}
	}
	return nil
}

// Commit makes the output durable and visible at the destination.
func (o *Output) Commit() error {
	if o.done {
		return errors.New("output already committed or aborted")
	}
	o.halt()
	for _, f := range o.files {
		if err := syncFile(f); err != nil {
			o.Abort()
			return err
		}
	}
	for _, f := range o.files {
		if err := f.Close(); err != nil {
			o.files = nil
			o.Abort()
			return err
		}
	}
	o.files = nil
	d := o.dest
	if o.set != nil {
		return o.commitSet()
	}
	if !d.Folder {
		if err := replaceFile(o.tmp, d.Path); err != nil {
			o.Abort()
			return err
		}
		o.done = true
		syncDir(d.parent) // best effort: the new file is in place whatever this says
		return nil
	}
	if err := d.keepMode(o.tmp); err != nil {
		o.Abort()
		return err
	}
	if err := syncDir(o.tmp); err != nil {
		o.Abort()
		return err
	}
	if err := o.switchFolder(); err != nil {
		o.Abort()
		return err
	}
	return nil
}

// switchFolder puts the temporary folder at the destination. Once it is there the
// output is committed (o.done); clean-up failures after that point are not errors,
// since Lock removes the leftovers on the next run.
func (o *Output) switchFolder() error {
	d := o.dest
	if _, err := os.Lstat(d.Path); errors.Is(err, fs.ErrNotExist) {
		if err := renameDir(o.tmp, d.Path); err != nil {
			return err
		}
		o.done = true
		syncDir(d.parent)
		return nil
	}
	if !d.NoExchange {
		err := exchange(o.tmp, d.Path)
		if err == nil {
			// o.tmp now holds the old folder.
			o.done = true
			syncDir(d.parent)
			os.RemoveAll(o.tmp)
			return nil
		}
		if !errors.Is(err, errNoExchange) {
			return &os.PathError{Op: "exchange", Path: d.Path, Err: err}
		}
	}
	old := d.oldPath()
	if err := renameDir(d.Path, old); err != nil {
		return err
	}
	if err := renameDir(o.tmp, d.Path); err != nil {
		renameDir(old, d.Path) // put the old folder back; Lock's recovery does it otherwise
		return err
	}
	o.done = true
	syncDir(d.parent)
	os.RemoveAll(old)
	return nil
}

// halt stops the background writeback, before the files are closed.
func (o *Output) halt() {
	if o.stopWriteback != nil {
		o.stopWriteback()
		o.stopWriteback = nil
	}
}

// Abort removes the temporary output; the destination is untouched.
func (o *Output) Abort() error {
	if o.done {
		return nil
	}
	o.done = true
	o.halt()
	for _, f := range o.files {
		f.Close()
	}
	o.files = nil
	for _, t := range o.set {
		os.Remove(t)
	}
	if o.tmp == "" {
		return nil
	}
	return os.RemoveAll(o.tmp)
}

// errNoExchange is what exchange returns where the system or the filesystem cannot
// swap two folders atomically; the commit then takes the two-rename path.
var errNoExchange = errors.New("atomic exchange not supported")

// writebackEvery is how often the kernel is asked to start writing dirty output
// pages, where it can be asked (Linux).
const writebackEvery = 100 * time.Millisecond

// startWriteback runs kick on the files every writebackEvery until the returned
// function is called.
func startWritebackWith(files []*os.File, kick func(*os.File)) func() {
	files = append([]*os.File(nil), files...)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(writebackEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				for _, f := range files {
					kick(f)
				}
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}
