package recipe

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	"github.com/gomerge/gomerge/merge"
)

// Re-indexed embeddings reach the engine as any tensor does: each input is wrapped
// in a source whose embedding tensors are read from a scratch safetensors file
// beside the output, written row by row before the merge and memory-mapped. The
// engine's plan holds every input tensor's bytes at once, which costs nothing for
// mapped files; building the re-indexed tensors in memory instead would hold one
// per model and embedding tensor for the whole merge. Writing them takes one row's
// worth of heap.

// spillEntry is one re-indexed tensor: model's tensor name.
type spillEntry struct {
	model int
	name  string
	meta  merge.TensorMeta
}

func spillName(model int, name string) string { return strconv.Itoa(model) + "/" + name }

// permuteInputs writes the re-indexed embeddings of every input and makes job open
// its inputs through them. The returned function closes and removes what it made.
func (sp *StepPlan) permuteInputs(job *merge.Job) (func(), error) {
	vp := sp.extras.vocab
	byPath := map[string]int{}
	for i, m := range vp.models {
		if _, dup := byPath[m.info.path]; !dup {
			byPath[m.info.path] = i
		}
	}
	// Which model's tensor each input's embedding is, by the input's path.
	inputs := map[string]map[string]int{}
	var entries []spillEntry
	seen := map[string]bool{}
	for k, p := range sp.pos {
		names := map[string]int{}
		var metas []merge.TensorMeta
		if sp.views != nil {
			metas = sp.views[k].metas
		} else {
			metas = p.srcs[0].info.metas
		}
		for _, m := range metas {
			if !isEmbedding(m) {
				continue
			}
			path, name := p.srcs[0].info.path, m.Name
			if sp.views != nil {
				f := sp.views[k].from[m.Name]
				path, name = f.path, f.name
			}
			i := byPath[path]
			names[m.Name] = i
			key := spillName(i, name)
			if !seen[key] {
				seen[key] = true
				entries = append(entries, spillEntry{model: i, name: name, meta: m})
			}
		}
		inputs[sp.inputPath(k)] = names
	}
	srcs := make([]merge.Source, len(vp.models))
	var spill merge.Source
	var spillPath string
	cleanup := func() {
		for _, s := range srcs {
			if s != nil {
				s.Close()
			}
		}
		if spill != nil {
			spill.Close()
		}
		if spillPath != "" {
			os.Remove(spillPath)
		}
	}
	for i, m := range vp.models {
		s, err := merge.Open(m.info.path)
		if err != nil {
			cleanup()
			return nil, err
		}
		srcs[i] = s
	}
	var err error
	spillPath, err = vp.writeSpill(sp.Output, srcs, entries)
	if err == nil {
		spill, err = merge.Open(spillPath)
	}
	if err != nil {
		cleanup()
		return nil, err
	}
	// Where the system allows it (not Windows), the mapped file is unlinked now, so
	// that a killed process leaves no scratch file behind.
	if os.Remove(spillPath) == nil {
		spillPath = ""
	}
	open := job.Open
	if open == nil {
		open = func(in merge.Input) (merge.Source, error) { return merge.Open(in.Path) }
	}
	job.Open = func(in merge.Input) (merge.Source, error) {
		s, err := open(in)
		names, ok := inputs[in.Path]
		if err != nil || !ok {
			return s, err
		}
		ps := &permSource{Source: s, spill: spill, names: map[string]string{}}
		for _, m := range s.Tensors() {
			if i, ok := names[m.Name]; ok {
				name := m.Name
				if sp.views != nil {
					name = sp.views[sp.posOf(in.Path)].from[m.Name].name
				}
				ps.names[m.Name] = spillName(i, name)
				m.Shape = []int64{int64(vp.rows), m.Shape[1]}
			}
			ps.metas = append(ps.metas, m)
		}
		return ps, nil
	}
	return cleanup, nil
}

// posOf is the position whose input path is path.
func (sp *StepPlan) posOf(path string) int {
	for k := range sp.pos {
		if sp.inputPath(k) == path {
			return k
		}
	}
	return 0
}

// permSource is an input whose embeddings are read re-indexed from the scratch file.
type permSource struct {
	merge.Source
	metas []merge.TensorMeta
	spill merge.Source
	names map[string]string // tensor → its name in spill
}

func (s *permSource) Tensors() []merge.TensorMeta { return s.metas }

func (s *permSource) Data(name string) ([]byte, error) {
	if n, ok := s.names[name]; ok {
		return s.spill.Data(n)
	}
	return s.Source.Data(name)
}

// writeSpill writes the re-indexed tensors into a scratch safetensors file beside
// out and returns its path.
func (vp *vocabPlan) writeSpill(out string, srcs []merge.Source, entries []spillEntry) (path string, err error) {
	specs := make([]safetensors.Spec, len(entries))
	for i, e := range entries {
		if !e.meta.DType.IsFloat() || e.meta.DType.IsBlock() {
			return "", fmt.Errorf("%s: tensor %q: re-indexing embeddings of dtype %s is not supported", e.meta.File, e.name, e.meta.DType)
		}
		specs[i] = safetensors.Spec{Name: spillName(e.model, e.name), DType: e.meta.DType, Shape: []int64{int64(vp.rows), e.meta.Shape[1]}}
	}
	plan, err := safetensors.PlanFile("vocab", specs, nil)
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(abs), ".gomerge-vocab-*.safetensors")
	if err != nil {
		return "", &merge.OutputError{Path: out, Err: err}
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = &merge.OutputError{Path: f.Name(), Err: cerr}
		}
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := w.Write(plan.Header); err != nil {
		return "", &merge.OutputError{Path: f.Name(), Err: err}
	}
	for _, e := range entries {
		if err := vp.writeTensor(w, srcs, e); err != nil {
			return "", err
		}
	}
	if err := w.Flush(); err != nil {
		return "", &merge.OutputError{Path: f.Name(), Err: err}
	}
	return f.Name(), nil
}

// rowSource is one model's rows of the tensor being re-indexed.
type rowSource struct {
	data []byte
	dt   dtype.DType
	rows int
}

func (r rowSource) row(dst []float32, i int) error {
	n := len(dst) * r.dt.Size()
	return dtype.Decode(dst, r.data[i*n:(i+1)*n], r.dt)
}

// writeTensor writes model e.model's tensor e.name re-indexed to the output
// vocabulary: its own row for each token it has (bytes copied), a filled row for
// each it lacks or whose embedding the tokenizer block forces, then the padding
// rows, each the mean of the token rows (as the vocabulary-expansion note mergekit
// cites suggests).
func (vp *vocabPlan) writeTensor(w *bufio.Writer, srcs []merge.Source, e spillEntry) error {
	hidden := int(e.meta.Shape[1])
	have := make([]*rowSource, len(vp.models))
	for i, s := range srcs {
		for _, m := range s.Tensors() {
			if m.Name != e.name || len(m.Shape) != 2 || int(m.Shape[1]) != hidden || !m.DType.IsFloat() || m.DType.IsBlock() {
				continue
			}
			data, err := s.Data(m.Name)
			if err != nil {
				return err
			}
			have[i] = &rowSource{data: data, dt: m.DType, rows: int(m.Shape[0])}
		}
	}
	own := have[e.model]
	if own == nil {
		return fmt.Errorf("%s: tensor %q: not found", vp.models[e.model].info.path, e.name)
	}
	row := make([]float32, hidden)
	acc := make([]float64, hidden)
	mean := make([]float64, hidden)
	enc := make([]byte, hidden*e.meta.DType.Size())
	size := vp.out.Size()
	for id := range vp.rows {
		if id >= size {
			for j := range row {
				row[j] = float32(mean[j] / float64(size))
			}
		} else if err := vp.fillRow(row, acc, have, e.model, id); err != nil {
			return fmt.Errorf("%s: tensor %q: %w", vp.models[e.model].info.path, e.name, err)
		}
		if err := dtype.Encode(enc, row, e.meta.DType); err != nil {
			return err
		}
		if id < size {
			// The mean is of the rows as written, in the output's dtype.
			if err := dtype.Decode(row, enc, e.meta.DType); err != nil {
				return err
			}
			for j, x := range row {
				mean[j] += float64(x)
			}
		}
		if _, err := w.Write(enc); err != nil {
			return &merge.OutputError{Path: "scratch file", Err: err}
		}
	}
	return nil
}

// fillRow sets row to model's embedding of output token id: its own row, unless it
// lacks the token or the tokenizer block forces another; then the block's source
// for the token, or mergekit's defaults: the row of the one model that has it, else
// the base's, else the mean of the models' rows that have it; zero for a token no
// model has.
func (vp *vocabPlan) fillRow(row []float32, acc []float64, have []*rowSource, model, id int) error {
	rowOf := func(i int) int {
		if have[i] == nil {
			return -1
		}
		if r := int(vp.models[i].perm[id]); r >= 0 && r < have[i].rows {
			return r
		}
		return -1
	}
	f := vp.specs[id]
	force := f != nil && f.spec.Force
	if r := rowOf(model); r >= 0 && !force {
		return have[model].row(row, r)
	}
	clear(row)
	if f != nil && f.spec.Kind != "" {
		switch f.spec.Kind {
		case "zero":
			return nil
		case "model":
			if r := rowOf(f.model); r >= 0 {
				return have[f.model].row(row, r)
			}
			return fmt.Errorf("token %q: %s has no row for it", f.spec.Token, vp.models[f.model].info.path)
		case "model_token":
			if have[f.model] == nil || f.row >= have[f.model].rows {
				return fmt.Errorf("token %q: %s has no row %d", f.spec.Token, vp.models[f.model].info.path, f.row)
			}
			return have[f.model].row(row, f.row)
		}
	}
	var present []int
	for i := range vp.models {
		if rowOf(i) >= 0 {
			present = append(present, i)
		}
	}
	switch {
	case len(present) == 0:
		return nil
	case len(present) == 1:
		return have[present[0]].row(row, rowOf(present[0]))
	case vp.base >= 0 && rowOf(vp.base) >= 0:
		return have[vp.base].row(row, rowOf(vp.base))
	}
	clear(acc)
	for _, i := range present {
		if err := have[i].row(row, rowOf(i)); err != nil {
			return err
		}
		for j, x := range row {
			acc[j] += float64(x)
		}
	}
	for j := range row {
		row[j] = float32(acc[j] / float64(len(present)))
	}
	return nil
}
