package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomerge/gomerge/formats/gmz"
	"github.com/gomerge/gomerge/formats/safetensors"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// Compressed Hugging Face folders (docs/compression.md#folders): `compress DIR OUT`
// codes each .safetensors shard of DIR into OUT/NAME.gmz (NAME the shard's name
// without .safetensors) and copies every other file (the index, config, tokenizer)
// and every sub-folder, whatever it holds, unchanged (a weight file in a sub-folder is
// no shard of the model: it is copied, not compressed), so that `decompress OUT DIR2`
// gives the folder back file for file, byte for byte. A merge reads such a folder like the safetensors folder it was made
// from.

// gmzShardName is the name a shard gets in a compressed folder, and shardName its
// inverse.
func gmzShardName(shard string) string {
	return strings.TrimSuffix(shard, ".safetensors") + ".gmz"
}

func shardName(gz string) string {
	return strings.TrimSuffix(gz, filepath.Ext(gz)) + ".safetensors"
}

// CompressedShards lists a compressed folder's .gmz files, sorted, and the names of
// the .safetensors files they decompress to.
func CompressedShards(dir string) (gz, shards []string, err error) {
	if gz, err = listFolder(dir, ".gmz"); err != nil {
		return nil, nil, err
	}
	for _, n := range gz {
		shards = append(shards, shardName(n))
	}
	return gz, shards, nil
}

// listFolder returns the names of a folder's top-level regular files with suffix.
func listFolder(dir, suffix string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(strings.ToLower(e.Name()), suffix) && !atomicout.IsTemporary(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// IsCompressedFolder reports whether path is a folder of compressed shards: it holds
// .gmz files and no .safetensors file.
func IsCompressedFolder(path string) bool {
	if st, err := os.Stat(path); err != nil || !st.IsDir() {
		return false
	}
	gz, err1 := listFolder(path, ".gmz")
	st, err2 := listFolder(path, ".safetensors")
	return err1 == nil && err2 == nil && len(gz) > 0 && len(st) == 0
}

// CompressFolder codes a Hugging Face safetensors folder into a folder (see above),
// through the crash-safe output. With opts.Against (a file or a folder, plain or
// compressed), every shard is a delta against it, tensors matched by name.
func CompressFolder(ctx context.Context, in, out string, opts CompressOptions) (*CompressResult, error) {
	shards, err := listFolder(in, ".safetensors")
	if err != nil {
		return nil, err
	}
	if len(shards) == 0 {
		return nil, fmt.Errorf("%w: %s holds no .safetensors file", ErrBadInput, in)
	}
	dest, err := atomicout.Lock(ctx, out, true, nil)
	if err != nil {
		return nil, &OutputError{Path: out, Err: err}
	}
	defer dest.Unlock()
	l := atomicout.Layout{
		Carry: &atomicout.Carry{From: in, Tree: true, Skip: func(name string) bool { return strings.HasSuffix(strings.ToLower(name), ".safetensors") }},
	}
	for _, s := range shards {
		l.Files = append(l.Files, atomicout.File{Name: gmzShardName(s), Size: atomicout.Streamed})
		l.Marks = append(l.Marks, gmzShardName(s))
	}
	o, err := dest.Create(l)
	if err != nil {
		return nil, &OutputError{Path: out, Err: err}
	}
	total := &CompressResult{}
	for i, s := range shards {
		res, err := WriteCompressed(ctx, o.Stream(i), filepath.Join(in, s), o.Paths[i], opts)
		if err != nil {
			o.Abort()
			return nil, err
		}
		total.add(res)
	}
	if err := o.Commit(); err != nil {
		return nil, &OutputError{Path: out, Err: err}
	}
	return total, nil
}

// gmzFolder is an opened compressed folder: its shards, each a gmzSource, read as
// one checkpoint.
type gmzFolder struct {
	dir    string
	shards []*gmzSource
	by     map[string]*gmzSource
	metas  []TensorMeta
}

// openGMZFolder opens a compressed folder: the shards its index names (as
// .safetensors files, coded as .gmz), or every .gmz file when it has no index.
func openGMZFolder(dir string) (_ *gmzFolder, err error) {
	var names []string
	index := filepath.Join(dir, "model.safetensors.index.json")
	var weightMap map[string]string
	if data, rerr := os.ReadFile(index); rerr == nil {
		idx, shardNames, perr := safetensors.ParseIndex(data)
		if perr != nil {
			return nil, &gmzInputError{fmt.Errorf("%s: %w", index, perr)}
		}
		weightMap = idx.WeightMap
		for _, s := range shardNames {
			names = append(names, gmzShardName(s))
		}
	} else if !errors.Is(rerr, fs.ErrNotExist) {
		return nil, rerr
	} else if names, err = listFolder(dir, ".gmz"); err != nil {
		return nil, err
	}
	g := &gmzFolder{dir: dir, by: map[string]*gmzSource{}}
	sh := newGMZShared() // the shards share their buffers and their reference
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	for _, n := range names {
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err != nil {
			return nil, &gmzInputError{fmt.Errorf("%s: the index names shard %s, and %s is not there", dir, shardName(n), n)}
		}
		src, err := openGMZShared(p, sh)
		if err != nil {
			return nil, err
		}
		s, ok := src.(*gmzSource)
		if !ok {
			src.Close()
			return nil, &gmzInputError{fmt.Errorf("%s: %s is a compressed GGUF file, not a safetensors shard", dir, n)}
		}
		g.shards = append(g.shards, s)
		for _, m := range s.metas {
			if prev, dup := g.by[m.Name]; dup {
				return nil, &gmzInputError{fmt.Errorf("%s: tensor %q is in %s and %s", dir, m.Name, prev.path, p)}
			}
			if weightMap != nil && weightMap[m.Name] != shardName(n) {
				return nil, &gmzInputError{fmt.Errorf("%s: tensor %q is in %s, the index puts it in %s", dir, m.Name, n, weightMap[m.Name])}
			}
			g.by[m.Name] = s
			g.metas = append(g.metas, m)
		}
	}
	if weightMap != nil && len(weightMap) != len(g.metas) {
		for name := range weightMap {
			if g.by[name] == nil {
				return nil, &gmzInputError{fmt.Errorf("%s: the index lists tensor %q, which no shard holds", dir, name)}
			}
		}
	}
	return g, nil
}

func (g *gmzFolder) Path() string          { return g.dir }
func (g *gmzFolder) Format() Format        { return Safetensors }
func (g *gmzFolder) Tensors() []TensorMeta { return g.metas }
func (g *gmzFolder) Decodes() bool         { return true }

func (g *gmzFolder) Close() error {
	var errs []error
	for _, s := range g.shards {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

func (g *gmzFolder) shard(name string) (*gmzSource, error) {
	s := g.by[name]
	if s == nil {
		return nil, fmt.Errorf("%s: tensor %q: not found", g.dir, name)
	}
	return s, nil
}

func (g *gmzFolder) Data(name string) ([]byte, error) {
	s, err := g.shard(name)
	if err != nil {
		return nil, err
	}
	return s.Data(name)
}

func (g *gmzFolder) DecodeUnit(name string) int64 {
	if s := g.by[name]; s != nil {
		return s.DecodeUnit(name)
	}
	return 0
}

func (g *gmzFolder) DecodeRange(name string, off int64, dst []byte) error {
	s, err := g.shard(name)
	if err != nil {
		return err
	}
	return s.DecodeRange(name, off, dst)
}

func (g *gmzFolder) DeltaReference(name string) (string, uint32, bool) {
	if s := g.by[name]; s != nil {
		return s.DeltaReference(name)
	}
	return "", 0, false
}

func (g *gmzFolder) Checksum(name string) (uint32, bool) {
	if s := g.by[name]; s != nil {
		return s.Checksum(name)
	}
	return 0, false
}

func (g *gmzFolder) DecodeRangeAgainst(name string, off int64, dst, ref []byte) error {
	s, err := g.shard(name)
	if err != nil {
		return err
	}
	return s.DecodeRangeAgainst(name, off, dst, ref)
}

// add sums a shard's result into a folder's. A plane's entropy becomes the
// bytes-weighted mean of the shards' (each shard is coded on its own, so that is
// the bound for the folder too).
func (r *CompressResult) add(s *CompressResult) {
	r.InBytes += s.InBytes
	r.DeltaTensors += s.DeltaTensors
	r.Stats.RawBytes += s.Stats.RawBytes
	r.Stats.StoredBytes += s.Stats.StoredBytes
	r.Stats.FileBytes += s.Stats.FileBytes
	for i := range r.Stats.Frames {
		r.Stats.Frames[i] += s.Stats.Frames[i]
	}
	for _, p := range s.Stats.Planes {
		i := slices.IndexFunc(r.Stats.Planes, func(q gmz.PlaneStat) bool { return q.ElemSize == p.ElemSize && q.Plane == p.Plane })
		if i < 0 {
			r.Stats.Planes = append(r.Stats.Planes, p)
			continue
		}
		q := &r.Stats.Planes[i]
		if n := q.Bytes + p.Bytes; n > 0 {
			q.Bits = (q.Bits*float64(q.Bytes) + p.Bits*float64(p.Bytes)) / float64(n)
			q.Bytes = n
		}
	}
}

// IsCompressedInput reports whether path is a compressed checkpoint: a .gmz file (by
// name or magic) or a compressed folder.
func IsCompressedInput(path string) bool { return isGMZ(path) || IsCompressedFolder(path) }
