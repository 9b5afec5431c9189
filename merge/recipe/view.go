package recipe

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/merge"
)

// view is one input of a slice recipe: the layers its slices take from their
// models, renumbered from 0 in slice order, with the embeddings from the first
// slice's model and the final norm and head from the last slice's.
type view struct {
	name  string // what the report and provenance call it
	metas []merge.TensorMeta
	from  map[string]viewSrc // output name → where its data is
	paths []string           // the checkpoints it takes tensors from, once each
}

type viewSrc struct{ path, name string }

// newView builds position k's view and records, in origins, each output tensor's
// slice, gradient position and name in this input.
func newView(p position, slices []nslice, k, npos int, origins map[string]*origin) *view {
	v := &view{from: map[string]viewSrc{}}
	var parts []string
	add := func(out string, info *modelInfo, in string, slice int, t float64) {
		if _, dup := v.from[out]; dup {
			return
		}
		meta := info.metas[info.index[in]]
		meta.Name = out
		if meta.File == "" {
			meta.File = info.path
		}
		v.metas = append(v.metas, meta)
		v.from[out] = viewSrc{path: info.path, name: in}
		v.addPath(info.path)
		o := origins[out]
		if o == nil {
			o = &origin{slice: slice, t: t, in: make([]string, npos)}
			origins[out] = o
		}
		o.in[k] = in
	}
	pre, post := p.srcs[0], p.srcs[len(p.srcs)-1]
	for _, m := range pre.info.metas {
		if _, _, _, layer := checkpoint.SplitLayer(m.Name); !layer && !isPost(m.Name) {
			add(m.Name, pre.info, m.Name, 0, 0)
		}
	}
	off := 0
	for si, s := range p.srcs {
		n := slices[si].n
		for idx := range n {
			for _, i := range s.info.byLayer[s.start+idx] {
				name := s.info.metas[i].Name
				prefix, _, rest, _ := checkpoint.SplitLayer(name)
				add(prefix+strconv.Itoa(off+idx)+rest, s.info, name, si, layerT(idx, n))
			}
		}
		off += n
		parts = append(parts, fmt.Sprintf("%s[%d:%d]", s.ref.Name, s.start, s.end))
	}
	for _, m := range post.info.metas {
		if _, _, _, layer := checkpoint.SplitLayer(m.Name); !layer && isPost(m.Name) {
			add(m.Name, post.info, m.Name, len(p.srcs)-1, 0)
		}
	}
	v.name = strings.Join(parts, " + ")
	return v
}

// addPath adds path to the view's checkpoints if it is not among them.
func (v *view) addPath(path string) {
	for _, p := range v.paths {
		if p == path {
			return
		}
	}
	v.paths = append(v.paths, path)
}

// viewSource is a view over open checkpoints, as the engine reads it.
type viewSource struct {
	v    *view
	srcs map[string]merge.Source // by path
}

func (s *viewSource) Path() string                { return s.v.name }
func (s *viewSource) Tensors() []merge.TensorMeta { return s.v.metas }

// Format is that of the checkpoints under the view: planning refuses views over
// GGUF files, so all the step's checkpoints are of one format.
func (s *viewSource) Format() checkpoint.Format {
	for _, src := range s.srcs {
		return src.Format()
	}
	return checkpoint.Safetensors
}

// Close does nothing: the checkpoints under the view belong to the step, which
// closes them once the merge is done.
func (s *viewSource) Close() error { return nil }

func (s *viewSource) Data(name string) ([]byte, error) {
	f, ok := s.v.from[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: not found", s.v.name, name)
	}
	return s.srcs[f.path].Data(f.name)
}

// Decodes forwards checkpoint.Decoder: a view over a compressed checkpoint decodes
// too, and the engine loads its tensors only when it runs them.
func (s *viewSource) Decodes() bool {
	for _, p := range s.v.paths {
		if checkpoint.Decodes(s.srcs[p]) {
			return true
		}
	}
	return false
}

// Mapped forwards checkpoint.MappedDecoder: a view whose checkpoints are all mapped
// can be read either way, as they can. Only the checkpoints it takes tensors from
// count: a step may open a compressed one for another of its inputs.
func (s *viewSource) Mapped() bool {
	for _, p := range s.v.paths {
		if m, ok := s.srcs[p].(checkpoint.MappedDecoder); !ok || !m.Mapped() {
			return false
		}
	}
	return true
}

// MappingTraps forwards checkpoint.MappedDecoder's: one of the view's checkpoints
// found its mapping dearer than a copy.
func (s *viewSource) MappingTraps() bool {
	for _, p := range s.v.paths {
		if m, ok := s.srcs[p].(checkpoint.MappedDecoder); ok && m.MappingTraps() {
			return true
		}
	}
	return false
}

// DecodeUnit and DecodeRange forward checkpoint.RangeDecoder, so that a view over a
// compressed checkpoint streams too; a tensor whose source cannot decode a range is
// decoded whole and the range copied.
func (s *viewSource) DecodeUnit(name string) int64 {
	f, ok := s.v.from[name]
	if !ok {
		return 0
	}
	if rd, ok := s.srcs[f.path].(checkpoint.RangeDecoder); ok {
		return rd.DecodeUnit(f.name)
	}
	return 0
}

func (s *viewSource) DecodeRange(name string, off int64, dst []byte) error {
	f, ok := s.v.from[name]
	if !ok {
		return fmt.Errorf("%s: tensor %q: not found", s.v.name, name)
	}
	if rd, ok := s.srcs[f.path].(checkpoint.RangeDecoder); ok {
		return rd.DecodeRange(f.name, off, dst)
	}
	b, err := s.srcs[f.path].Data(f.name)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(dst)) > int64(len(b)) {
		return fmt.Errorf("%s: tensor %q: bytes [%d, %d) of %d", s.v.name, name, off, off+int64(len(dst)), len(b))
	}
	copy(dst, b[off:])
	return nil
}
