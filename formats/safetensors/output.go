package safetensors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// How an output reaches its destination without ever exposing a partial checkpoint:
//
//   - A file is written as a temporary file in the destination's folder, fsynced, and
//     renamed over the destination.
//   - A folder is built complete as a temporary sibling folder (.NAME.gomerge-tmp-*),
//     fsynced, then swapped with the destination by renameat2(RENAME_EXCHANGE), so a
//     reader sees the old or the new folder at every instant; the old one, now under the
//     temporary name, is then removed. Where the filesystem refuses the exchange, the
//     old folder is renamed to .NAME.gomerge-old and the new one into place; a crash
//     between those two renames leaves no NAME, and the next run (Lock) renames the old
//     folder back.
//   - A lock (flock on the destination's parent folder) keeps two gomerge processes
//     from writing the same destination at once, and every run removes what a killed
//     run left behind, under that lock, before it writes.

const (
	tmpInfix = ".gomerge-tmp-"
	oldInfix = ".gomerge-old"
)

// IsFolderPath reports whether an output path names a folder: anything that does not
// end in .safetensors or .gguf.
func IsFolderPath(path string) bool {
	p := strings.ToLower(path)
	return !strings.HasSuffix(p, ".safetensors") && !strings.HasSuffix(p, ".gguf")
}

// Dest is a locked output destination. Lock it before opening inputs that live at the
// destination (an in-place merge), so that an interrupted earlier run is repaired first.
type Dest struct {
	Path   string
	Folder bool
	// NoExchange makes folder commits take the rename fallback even where the
	// filesystem can exchange; tests use it to exercise that path.
	NoExchange bool

	parent, base string
	lock         *os.File
}

// Lock takes the destination's lock, waiting for another gomerge process that holds
// it (onWait, if not nil, is called once before waiting) until ctx is done, then
// removes what an interrupted run left behind.
func Lock(ctx context.Context, path string, onWait func()) (*Dest, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	d := &Dest{Path: abs, Folder: IsFolderPath(abs), parent: filepath.Dir(abs), base: filepath.Base(abs)}
	lk, err := os.Open(d.parent)
	if err != nil {
		return nil, fmt.Errorf("output folder: %w", err)
	}
	// Poll rather than block in flock, so that Ctrl-C (ctx) ends the wait.
	for waited := false; ; {
		err := unix.Flock(int(lk.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			lk.Close()
			return nil, &os.PathError{Op: "lock", Path: d.parent, Err: err}
		}
		if !waited && onWait != nil {
			onWait()
		}
		waited = true
		select {
		case <-ctx.Done():
			lk.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	d.lock = lk
	if err := d.recover(); err != nil {
		d.Unlock()
		return nil, err
	}
	return d, nil
}

// Unlock releases the lock.
func (d *Dest) Unlock() {
	if d.lock != nil {
		d.lock.Close() // closing the last descriptor releases the flock
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
			if err := os.Rename(old, d.Path); err != nil {
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

// ShardLayout names one output file and the tensors it holds, in order.
type ShardLayout struct {
	Name    string
	Tensors []string
}

// OutputOptions describe what to write at a Dest.
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
	// Prepared, if set, is a single file laid out by another format's writer (GGUF):
	// it replaces the safetensors layout, and Specs only name its tensors. The
	// temporary file, fsync, rename and locking are the same; they live in this
	// package because safetensors came first.
	Prepared *PreparedFile
}

// PreparedFile is a complete file layout made elsewhere: its header (written first),
// its total size, and where the data of each of OutputOptions.Specs goes.
type PreparedFile struct {
	Header  []byte
	Size    int64
	Tensors []PreparedTensor // parallel to OutputOptions.Specs
}

// PreparedTensor locates one tensor's data in a PreparedFile.
type PreparedTensor struct {
	Begin, Size int64
}

// Output is a checkpoint being written. Its tensors' data are written with WriteAt,
// concurrently if need be; Commit makes it visible at the destination, Abort drops it.
type Output struct {
	dest   *Dest
	tmp    string // the temporary file or folder
	plans  []*FilePlan
	files  []*os.File
	where  []tensorLoc // by index into OutputOptions.Specs
	done   bool
	Shards []string // final paths of the files written

	stopWriteback func()
}

type tensorLoc struct {
	file  int
	begin int64
	size  int64
}

// Create plans the output and creates its temporary file(s), pre-sized, with headers
// written.
func (d *Dest) Create(opts OutputOptions) (*Output, error) {
	o := &Output{dest: d, where: make([]tensorLoc, len(opts.Specs))}
	if err := o.create(opts); err != nil {
		o.Abort()
		return nil, err
	}
	o.startWriteback()
	return o, nil
}

// writebackEvery is how often the kernel is asked to start writing dirty output pages.
const writebackEvery = 100 * time.Millisecond

// startWriteback asks the kernel, every writebackEvery, to start writing the output's
// dirty pages to disk (sync_file_range(SYNC_FILE_RANGE_WRITE): it waits for nothing to
// complete). The disk then writes while the merge computes, and the fsync in Commit has
// little left to do; without it a checkpoint smaller than the kernel's dirty threshold
// is written only by that final, serial fsync.
func (o *Output) startWriteback() {
	files := slices.Clone(o.files)
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
					unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE) // advice only
				}
			}
		}
	}()
	o.stopWriteback = func() {
		close(stop)
		<-done
	}
}

func (o *Output) create(opts OutputOptions) error {
	d := o.dest
	if err := o.plan(opts); err != nil {
		return err
	}
	if !d.Folder {
		if st, err := os.Stat(d.Path); err == nil && st.IsDir() {
			return &os.PathError{Op: "write checkpoint", Path: d.Path, Err: errors.New("is a folder (name the output without .safetensors to write a folder)")}
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
		o.Shards = []string{d.Path}
	} else {
		if err := d.checkReplaceable(); err != nil {
			return err
		}
		dir, err := makeTemp(d.parent, "."+d.base+tmpInfix, func(p string) error { return os.Mkdir(p, 0o777) })
		if err != nil {
			return err
		}
		o.tmp = dir // its final mode is set in Commit, once it is filled
		for _, p := range o.plans {
			f, err := os.OpenFile(filepath.Join(dir, p.Name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
			if err != nil {
				return err
			}
			o.files = append(o.files, f)
			o.Shards = append(o.Shards, filepath.Join(d.Path, p.Name))
		}
		if err := o.writeIndex(opts); err != nil {
			return err
		}
		if err := o.placeExtras(opts); err != nil {
			return err
		}
	}
	for i, p := range o.plans {
		f := o.files[i]
		if err := f.Truncate(p.Size); err != nil {
			return err
		}
		if err := fallocate(f, p.Size); err != nil {
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

// fallocate reserves the file's blocks so that a full disk fails now, before any
// work, rather than halfway. Filesystems that cannot (tmpfs on old kernels) are let be.
func fallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
	}
	return nil
}

func (o *Output) plan(opts OutputOptions) error {
	d := o.dest
	if p := opts.Prepared; p != nil {
		if d.Folder || len(p.Tensors) != len(opts.Specs) {
			return fmt.Errorf("output %s: a prepared layout is one file holding every tensor", d.Path)
		}
		for i, t := range p.Tensors {
			o.where[i] = tensorLoc{file: 0, begin: t.Begin, size: t.Size}
		}
		o.plans = []*FilePlan{{Name: d.base, Header: p.Header, Size: p.Size}}
		return nil
	}
	specIndex := make(map[string]int, len(opts.Specs))
	for i, s := range opts.Specs {
		specIndex[s.Name] = i
	}
	var groups [][]Spec
	var names []string
	switch {
	case !d.Folder:
		groups, names = [][]Spec{opts.Specs}, []string{d.base}
	case len(opts.Layout) > 0:
		placed := 0
		for _, l := range opts.Layout {
			var g []Spec
			for _, n := range l.Tensors {
				i, ok := specIndex[n]
				if !ok {
					return fmt.Errorf("output layout: shard %s names tensor %q, which is not planned", l.Name, n)
				}
				g = append(g, opts.Specs[i])
			}
			placed += len(g)
			groups, names = append(groups, g), append(names, l.Name)
		}
		if placed != len(opts.Specs) {
			return fmt.Errorf("output layout places %d of %d tensors", placed, len(opts.Specs))
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
	for fi, g := range groups {
		p, err := PlanFile(names[fi], g, opts.Metadata)
		if err != nil {
			return err
		}
		for _, t := range p.Tensors {
			o.where[specIndex[t.Name]] = tensorLoc{file: fi, begin: t.Begin, size: t.Size()}
		}
		o.plans = append(o.plans, p)
	}
	return nil
}

// Plans returns the planned files.
func (o *Output) Plans() []*FilePlan { return o.plans }

func (o *Output) writeIndex(opts OutputOptions) error {
	if len(o.plans) == 1 && o.plans[0].Name == SingleFileName {
		return nil
	}
	var total int64
	wm := make(map[string]string)
	for _, p := range o.plans {
		for _, t := range p.Tensors {
			total += t.Size()
			wm[t.Name] = p.Name
		}
	}
	data, err := json.MarshalIndent(Index{Metadata: map[string]any{"total_size": total}, WeightMap: wm}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSync(filepath.Join(o.tmp, IndexFileName), append(data, '\n'))
}

// isWeightFile says which files of a folder are weights that a merge replaces rather
// than carries over.
func isWeightFile(name string) bool {
	for _, suf := range []string{".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack"} {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}

func (o *Output) placeExtras(opts OutputOptions) error {
	if opts.ExtraFrom == "" {
		return nil
	}
	entries, err := os.ReadDir(opts.ExtraFrom)
	if err != nil {
		return err
	}
	replaced := map[string]bool{IndexFileName: true}
	for _, p := range o.plans {
		replaced[p.Name] = true
	}
	for _, n := range opts.Replace {
		replaced[n] = true
	}
	for _, e := range entries {
		name := e.Name()
		src, dst := filepath.Join(opts.ExtraFrom, name), filepath.Join(o.tmp, name)
		if replaced[name] || strings.Contains(name, tmpInfix) || strings.HasSuffix(name, oldInfix) {
			continue
		}
		if opts.Link {
			// In place everything but the weights stays, including optimizer and
			// trainer state in sub-folders, as links to the same inodes: nothing is
			// copied and the old folder stays complete until the swap.
			if err := linkTree(src, dst); err != nil {
				return err
			}
			continue
		}
		if !e.Type().IsRegular() || isWeightFile(name) {
			continue
		}
		if err := copyFile(src, dst); err != nil {
			return err
		}
	}
	return nil
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
	if err := out.Sync(); err != nil {
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
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkReplaceable refuses to replace a folder that holds something other than a
// checkpoint, so that a mistyped --out cannot swap away a home directory.
func (d *Dest) checkReplaceable() error {
	st, err := os.Stat(d.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return &os.PathError{Op: "write checkpoint", Path: d.Path, Err: errors.New("exists and is not a folder (name a .safetensors file to write one file)")}
	}
	entries, err := os.ReadDir(d.Path)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	for _, e := range entries {
		if n := e.Name(); n == SingleFileName || n == IndexFileName {
			return nil
		}
	}
	return &os.PathError{Op: "write checkpoint", Path: d.Path, Err: syscall.ENOTEMPTY}
}

// Size returns the planned size in bytes of tensor i.
func (o *Output) Size(i int) int64 { return o.where[i].size }

// WriteAt writes p at offset off of tensor i's data (i indexes OutputOptions.Specs).
// It is safe for concurrent use on disjoint ranges.
func (o *Output) WriteAt(i int, off int64, p []byte) error {
	l := o.where[i]
	if off < 0 || off+int64(len(p)) > l.size {
		return fmt.Errorf("safetensors: write of %d bytes at %d outside tensor of %d bytes", len(p), off, l.size)
	}
	_, err := o.files[l.file].WriteAt(p, l.begin+off)
	return err
}

// Commit makes the output durable and visible at the destination.
func (o *Output) Commit() error {
	if o.done {
		return errors.New("safetensors: output already committed or aborted")
	}
	o.halt()
	for _, f := range o.files {
		if err := f.Sync(); err != nil {
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
	if !d.Folder {
		if err := os.Rename(o.tmp, d.Path); err != nil {
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
		if err := os.Rename(o.tmp, d.Path); err != nil {
			return err
		}
		o.done = true
		syncDir(d.parent)
		return nil
	}
	if !d.NoExchange {
		err := unix.Renameat2(unix.AT_FDCWD, o.tmp, unix.AT_FDCWD, d.Path, unix.RENAME_EXCHANGE)
		if err == nil {
			// o.tmp now holds the old folder.
			o.done = true
			syncDir(d.parent)
			os.RemoveAll(o.tmp)
			return nil
		}
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
			return &os.PathError{Op: "exchange", Path: d.Path, Err: err}
		}
	}
	old := d.oldPath()
	if err := os.Rename(d.Path, old); err != nil {
		return err
	}
	if err := os.Rename(o.tmp, d.Path); err != nil {
		os.Rename(old, d.Path) // put the old folder back; Lock's recovery does it otherwise
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
	if o.tmp == "" {
		return nil
	}
	return os.RemoveAll(o.tmp)
}

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return &os.PathError{Op: "fsync", Path: path, Err: err}
	}
	return nil
}
