package checkpoint

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gmz"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// Split GGUF models with compressed parts (docs/compression.md#split-gguf-models).
// Each part of a split model compresses on its own, PREFIX-00002-of-00003.gguf into
// PREFIX-00002-of-00003.gmz, and a merge opens a model whose parts are all or partly
// compressed as the model: the parts are found by name (findPart), each compressed
// one's GGUF header parsed from its container and checked against it
// (gmzGGUFHeader), and the set checked as a plain set is (gguf.CheckSplit).

// ggufPart is one file of a GGUF model: a GGUF file, or a compressed one.
type ggufPart struct {
	f *gguf.File // the part's GGUF header, and a plain part's data
	z *gmzSource // a compressed part's container (which f was parsed from); nil for a plain part
}

func (p ggufPart) close() error {
	switch {
	case p.z != nil:
		return p.z.Close() // f holds the header only, with nothing to close
	case p.f != nil:
		return p.f.Close()
	}
	return nil
}

func closeParts(parts []ggufPart) {
	for _, p := range parts {
		p.close()
	}
}

// openGGUFPart opens one file of a GGUF model: a GGUF file by its name or magic
// (isGGUF), a compressed GGUF file otherwise.
func openGGUFPart(path string, sh *gmzShared) (ggufPart, error) {
	if isGGUF(path) {
		f, err := gguf.Open(path)
		return ggufPart{f: f}, err
	}
	z, err := openGMZContainer(path, sh)
	if err != nil {
		return ggufPart{}, err
	}
	f, err := gmzGGUFHeader(z)
	if err != nil {
		z.Close()
		return ggufPart{}, err
	}
	return ggufPart{f: f, z: z}, nil
}

// openGGUFModel opens the model that first (opened from path) holds or belongs to,
// as a ggufSource when every part is plain and as a gmzGGUF when some part is
// compressed. Its compressed parts share sh. It closes first on error.
func openGGUFModel(path string, first ggufPart, sh *gmzShared) (Source, error) {
	parts, paths, err := openSplit(path, first, sh) // ggufsplit.go
	if err != nil {
		return nil, err
	}
	files := make([]*gguf.File, len(parts))
	zs := make([]*gmzSource, len(parts))
	compressed := false
	for i, p := range parts {
		files[i], zs[i] = p.f, p.z
		compressed = compressed || p.z != nil
	}
	g, err := newGGUFSource(path, files, paths)
	if err != nil {
		closeParts(parts)
		return nil, err
	}
	if !compressed {
		return g, nil
	}
	return &gmzGGUF{ggufSource: g, z: zs}, nil
}

// splitPartName reads the file name of a part of a split GGUF model, plain
// (NAME-00001-of-00003.gguf, gguf.ParseSplitName) or compressed
// (NAME-00001-of-00003.gmz, or .gguf.gmz): its prefix, 0-based index and part count,
// and suffix, what follows the numbers (".gguf", ".gmz", ".gguf.gmz").
func splitPartName(name string) (prefix string, no, count int, suffix string, ok bool) {
	suffix = ".gguf"
	plain := name
	if ext := filepath.Ext(name); strings.EqualFold(ext, ".gmz") {
		plain, suffix = strings.TrimSuffix(name, ext), ext
		if strings.HasSuffix(plain, ".gguf") {
			suffix = ".gguf" + ext
		} else {
			plain += ".gguf"
		}
	}
	prefix, no, count, ok = gguf.ParseSplitName(plain)
	if !ok {
		return "", 0, 0, "", false
	}
	return prefix, no, count, suffix, true
}

// partName is the name of part no (0-based) of count parts named with suffix.
func partName(prefix string, no, count int, suffix string) string {
	return strings.TrimSuffix(gguf.SplitName(prefix, no, count), ".gguf") + suffix
}

// findPart returns the file that serves part no of a split model in dir: the one
// named like the part the user named (suffix), else the plain part, else the
// compressed one, so that a model whose parts were compressed one by one, or only
// some of them, opens by any of its parts. A part none of those names holds is bad
// input naming them.
func findPart(dir, prefix string, no, count int, suffix string) (string, error) {
	var tried []string
	for _, s := range []string{suffix, ".gguf", ".gmz"} {
		p := filepath.Join(dir, partName(prefix, no, count, s))
		if slices.Contains(tried, p) {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", &gmzInputError{fmt.Errorf("%s: %w (nor %s)", tried[0], fs.ErrNotExist, strings.Join(tried[1:], ", "))}
}

// compressSplit is Compress for a part of a split GGUF model (docs/compression.md#
// split-gguf-models): with an output named as that same part (NAME-00002-of-00003.gmz)
// it returns done == false and Compress codes the part alone; with an output NAME.gmz
// it codes every part of the model, PREFIX-0000k-of-0000N.gguf into
// NAME-0000k-of-0000N.gmz, published together as a set through the crash-safe output,
// after checking the parts against each other as a merge does. An output named as
// another part, a whole model's output named as a part, or an output that is one of
// the reference's files, is refused.
func compressSplit(ctx context.Context, in, out string, opts CompressOptions) (res *CompressResult, done bool, err error) {
	f, err := gguf.Open(in)
	if err != nil {
		return nil, false, nil // Compress reports it
	}
	outName := filepath.Base(out)
	s, isSplit, err := gguf.SplitOf(f)
	if err != nil || !isSplit {
		f.Close()
		if _, no, count, _, ok := splitPartName(outName); ok && err == nil {
			// A whole model under a part's name would leave the other parts beside
			// it, which no longer make a model with it (an in-place merge of a
			// compressed part comes here).
			return nil, true, unsupported("output %s: named part %d of %d of a split model, but %s is a whole model: name the output NAME.gmz", out, no+1, count, in)
		}
		return nil, false, nil
	}
	if _, no, count, _, ok := splitPartName(outName); ok {
		f.Close()
		if no != s.No || count != s.Count {
			return nil, true, unsupported("output %s: named part %d of %d, but %s is part %d of %d: name the output as the same part, or NAME.gmz for every part", out, no+1, count, in, s.No+1, s.Count)
		}
		return nil, false, checkNotReference(opts.Against, []string{out})
	}
	parts, paths, err := openSplit(in, ggufPart{f: f}, newGMZShared())
	if err != nil {
		return nil, true, err
	}
	closeParts(parts) // WriteCompressed opens each again
	for i, p := range parts {
		if p.z != nil {
			return nil, true, fmt.Errorf("%w: %s: part %d of %d is compressed already; compress the plain parts, or each plain part on its own (NAME-0000k-of-0000N.gmz)", ErrBadInput, paths[i], i+1, len(parts))
		}
	}
	ext := filepath.Ext(outName)
	if !strings.EqualFold(ext, ".gmz") {
		return nil, true, unsupported("output %s: a split GGUF model compresses into one .gmz per part: name the output NAME.gmz", out)
	}
	dir, prefix := filepath.Dir(out), strings.TrimSuffix(outName, ext)
	var l atomicout.Layout
	var outs []string
	for i := range parts {
		n := partName(prefix, i, len(parts), ext)
		l.Files = append(l.Files, atomicout.File{Name: n, Size: atomicout.Streamed})
		outs = append(outs, filepath.Join(dir, n))
	}
	if err := checkNotReference(opts.Against, outs); err != nil {
		return nil, true, err
	}
	lock := out
	if len(outs) == 1 {
		lock = outs[0] // a set of one is one file, written at the lock's path
	}
	dest, err := atomicout.Lock(ctx, lock, false, nil)
	if err != nil {
		return nil, true, &OutputError{Path: out, Err: err}
	}
	defer dest.Unlock()
	o, err := dest.Create(l)
	if err != nil {
		return nil, true, &OutputError{Path: out, Err: err}
	}
	total := &CompressResult{}
	for i, p := range paths {
		r, err := WriteCompressed(ctx, o.Stream(i), p, o.Paths[i], opts)
		if err != nil {
			o.Abort()
			return nil, true, err
		}
		total.add(r)
	}
	if err := o.Commit(); err != nil {
		return nil, true, &OutputError{Path: out, Err: err}
	}
	total.Outputs = o.Paths
	return total, true, nil
}

// SplitDecompressPlan plans `gomerge decompress` of a compressed part of a split GGUF
// model (docs/compression.md#split-gguf-models), the inverse of compressSplit: with an
// output NAME.gguf, every part of the model, PREFIX-0000k-of-0000N.gmz, goes back to
// NAME-0000k-of-0000N.gguf, after the parts are checked against each other as a merge
// checks them (a part found only plain is copied as it is). ins are the parts' files
// in order, outs their outputs. It returns no ins when in is not a compressed part of
// a split model, or out names that same part: the one file is decompressed. An output
// named as another part, or not .gguf, is refused, as is one that would replace a
// part being read or a file of the reference against. Deltas are opened without their
// references: the caller checks them against the reference it is given.
func SplitDecompressPlan(in, out, against string) (ins, outs []string, err error) {
	if isGGUF(in) || !isGMZ(in) {
		return nil, nil, nil
	}
	z, err := gmz.Open(in)
	if err != nil {
		return nil, nil, nil // the caller's own open reports it
	}
	format := z.Source.Format
	z.Close()
	if format != "gguf" {
		return nil, nil, nil
	}
	sh := newGMZShared()
	sh.headersOnly = true
	first, err := openGGUFPart(in, sh)
	if err != nil {
		return nil, nil, err
	}
	s, isSplit, err := gguf.SplitOf(first.f)
	if err != nil || !isSplit {
		first.close()
		return nil, nil, nil // a whole model, or keys the caller's open reports on
	}
	outName := filepath.Base(out)
	if _, no, count, _, ok := splitPartName(outName); ok {
		first.close()
		if no != s.No || count != s.Count {
			return nil, nil, unsupported("output %s: named part %d of %d, but %s is part %d of %d: name the output as the same part, or NAME.gguf for every part", out, no+1, count, in, s.No+1, s.Count)
		}
		return nil, nil, nil // this part alone, without looking for the others
	}
	parts, paths, err := openSplit(in, first, sh)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (to decompress this part alone, name the output as the part, %s)", err, gguf.SplitName("NAME", s.No, s.Count))
	}
	closeParts(parts)
	if len(parts) == 1 {
		return nil, nil, nil // a model "split" in one part is one file
	}
	ext := filepath.Ext(outName)
	if !strings.EqualFold(ext, ".gguf") {
		return nil, nil, unsupported("output %s: a split GGUF model decompresses into one .gguf per part: name the output NAME.gguf", out)
	}
	dir, prefix := filepath.Dir(out), strings.TrimSuffix(outName, ext)
	for i := range paths {
		o := filepath.Join(dir, partName(prefix, i, len(paths), ext))
		if ost, err := os.Stat(o); err == nil {
			for _, p := range paths {
				if st, err := os.Stat(p); err == nil && os.SameFile(st, ost) {
					return nil, nil, unsupported("output %s: it is %s, a part being decompressed: name the output elsewhere", o, p)
				}
			}
		}
		outs = append(outs, o)
	}
	if err := checkNotReference(against, outs); err != nil {
		return nil, nil, err
	}
	return paths, outs, nil
}

// checkNotReference refuses outputs that would replace a file of the reference
// checkpoint against (any part of a split one): the deltas would name a reference
// that no longer holds what they were coded against.
func checkNotReference(against string, outs []string) error {
	if against == "" {
		return nil
	}
	ref, err := Open(against)
	if err != nil {
		return err
	}
	defer ref.Close()
	files := map[string]bool{against: true}
	for _, t := range ref.Tensors() {
		files[t.File] = true
	}
	for _, o := range outs {
		ost, err := os.Stat(o)
		if err != nil {
			continue // a new file
		}
		for p := range files {
			if st, err := os.Stat(p); err == nil && os.SameFile(st, ost) {
				return unsupported("output %s is %s, a file of the reference --against %s", o, p, against)
			}
		}
	}
	return nil
}
