package recipe

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomerge/gomerge/merge"
	"github.com/gomerge/gomerge/tokenizer"
)

// The output vocabulary of a step with tokenizer_source or a tokenizer: block, as
// mergekit builds it: the base's, a model's, or the union of every model's; each
// model's embedding rows re-indexed to it before the merge, and the rows a model
// lacks filled in.

// embedSuffixes name the tensors whose rows are tokens (mergekit's is_embed
// weights): input embeddings and output heads of the architectures gomerge reads.
var embedSuffixes = []string{"embed_tokens.weight", "lm_head.weight", "wte.weight",
	"embed_in.weight", "embed_out.weight", "word_embeddings.weight", "tok_embeddings.weight"}

// isEmbedding says whether a tensor's rows are indexed by token.
func isEmbedding(m merge.TensorMeta) bool {
	if len(m.Shape) != 2 {
		return false
	}
	for _, s := range embedSuffixes {
		if m.Name == s || strings.HasSuffix(m.Name, "."+s) {
			return true
		}
	}
	return false
}

// embedRows is the number of token rows of a model's embeddings, 0 if it has none.
func embedRows(m *modelInfo) int {
	for _, t := range m.metas {
		if isEmbedding(t) {
			return int(t.Shape[0])
		}
	}
	return 0
}

// vmodel is one model of the step with its vocabulary and where each output token's
// row is in its embeddings.
type vmodel struct {
	info  *modelInfo
	vocab *tokenizer.Vocab // nil: none found; the base's is assumed, as mergekit does
	perm  []int32          // output id → row in this model, -1 where it lacks the token
}

// vocabPlan is a step's output vocabulary and how every model's embeddings map to it.
type vocabPlan struct {
	out     *tokenizer.Vocab
	rows    int    // output embedding rows: out.Size(), padded
	srcDir  string // the folder whose tokenizer files the output takes
	srcJSON string // its tokenizer.json, rewritten when tokens were added
	added   bool   // the output has tokens its source's tokenizer.json lacks
	permute bool   // some model's embeddings are re-indexed
	models  []*vmodel
	base    int // index in models of base_model, -1 without one
	specs   map[int]*tokenFill
}

// tokenFill is a token of the tokenizer block's tokens: with its source resolved.
type tokenFill struct {
	spec  *TokenSpec
	model int // index in models, for kinds model and model_token
	row   int // the source row, for model_token
}

// vocabOf reads a model's tokenizer.json: nil without one (and for a step not yet
// run); a malformed file is bad input, named.
func vocabOf(m *modelInfo, pos Pos) (*tokenizer.Vocab, error) {
	if m.planned || m.dir == "" {
		return nil, nil
	}
	v, err := tokenizer.ReadFile(filepath.Join(m.dir, "tokenizer.json"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		v, err = nil, nil
	case errors.Is(err, tokenizer.ErrFormat):
		return nil, &Error{Pos: pos, Msg: err.Error()}
	case err != nil:
		return nil, fmt.Errorf("%s: %w", pos, err)
	}
	return v, nil
}

// planVocab builds the output vocabulary of a step whose tokenizer source is src
// (the tokenizer block's or tokenizer_source's) and the output's embedding shapes.
func (sp *StepPlan) planVocab(c *catalog, src ModelRef) (*vocabPlan, error) {
	st := sp.step
	vp := &vocabPlan{base: -1, specs: map[int]*tokenFill{}}
	index := map[*modelInfo]int{}
	addModel := func(info *modelInfo) error {
		if _, ok := index[info]; ok {
			return nil
		}
		v, err := vocabOf(info, src.Pos)
		if err != nil {
			return err
		}
		if n := embedRows(info); v != nil && n > 0 {
			v = v.Limit(n) // rows the embeddings lack: mergekit strips those tokens
		}
		index[info] = len(vp.models)
		vp.models = append(vp.models, &vmodel{info: info, vocab: v})
		return nil
	}
	if st.Base != nil {
		info, err := c.resolve(*st.Base)
		if err != nil {
			return nil, err
		}
		if err := addModel(info); err != nil {
			return nil, err
		}
		vp.base = 0
	}
	for _, p := range sp.pos {
		for _, s := range p.srcs {
			if err := addModel(s.info); err != nil {
				return nil, err
			}
		}
	}
	first := vp.models[0] // the base, else the first model: mergekit's tokenizer base
	if first.vocab == nil && !first.info.planned {
		for _, m := range vp.models {
			if m.vocab != nil {
				return nil, errorf(src.Pos, "tokenizer_source: %s has no tokenizer.json, and %s has one: the vocabularies cannot be matched", first.info.path, m.info.path)
			}
		}
	}
	for _, m := range vp.models {
		if m.vocab == nil {
			m.vocab = first.vocab // mergekit: "assuming same as" the base
		}
	}
	var extra []string
	if b := st.Tokenizer; b != nil {
		for _, ts := range b.Tokens {
			extra = append(extra, ts.Token)
		}
	}
	var srcInfo *modelInfo
	var out *tokenizer.Vocab
	switch src.Name {
	case "union":
		srcInfo = first.info
		if first.vocab != nil {
			var others []*tokenizer.Vocab
			for _, m := range vp.models[1:] {
				others = append(others, m.vocab)
			}
			out, _ = tokenizer.Union(first.vocab, others, extra)
		}
	case "base":
		srcInfo, out = first.info, first.vocab
	default:
		info, err := c.resolve(src)
		if err != nil {
			return nil, err
		}
		if i, ok := index[info]; ok {
			out = vp.models[i].vocab
		} else if out, err = vocabOf(info, src.Pos); err != nil {
			return nil, err
		} else if n := embedRows(info); out != nil && n > 0 {
			out = out.Limit(n)
		}
		srcInfo = info
	}
	if srcInfo.dir == "" && !srcInfo.planned {
		return nil, errorf(src.Pos, "tokenizer_source: %s is a single file, with no tokenizer files", srcInfo.path)
	}
	vp.srcDir = srcInfo.dir
	vp.srcJSON = filepath.Join(srcInfo.dir, "tokenizer.json")
	if out == nil {
		if !srcInfo.planned && (src.Name == "union" || st.Tokenizer != nil || hasDifferentRows(vp.models)) {
			return nil, errorf(src.Pos, "tokenizer_source: %s has no tokenizer.json to build the output vocabulary from", srcInfo.path)
		}
		if n, m := embedRows(srcInfo), embedRows(first.info); n != m && n > 0 && !srcInfo.planned {
			return nil, errorf(src.Pos, "tokenizer_source: %s has %d embedding rows, the merge %d, and no tokenizer.json to match their tokens by", srcInfo.path, n, m)
		}
		return vp, nil // the tokenizer files are copied; the embeddings are left as they are
	}
	if len(extra) > 0 && src.Name != "union" {
		out, _ = out.WithExtra(extra)
	}
	vp.out = out
	vp.added = len(out.Added) != addedCount(srcInfo, src.Pos)
	vp.rows = out.Size()
	if b := st.Tokenizer; b != nil && b.PadToMultipleOf > 0 && vp.rows%b.PadToMultipleOf != 0 {
		vp.rows += b.PadToMultipleOf - vp.rows%b.PadToMultipleOf
	}
	for _, m := range vp.models {
		m.perm = make([]int32, out.Size())
		for id := range m.perm {
			m.perm[id] = -1
			if tok, ok := out.Token(id); ok && m.vocab != nil {
				if j, ok := m.vocab.ID(tok); ok {
					m.perm[id] = int32(j)
				}
			}
			if m.perm[id] != int32(id) {
				vp.permute = true
			}
		}
		if embedRows(m.info) != vp.rows {
			vp.permute = true
		}
	}
	if err := vp.resolveSpecs(c, st, index); err != nil {
		return nil, err
	}
	if len(vp.specs) > 0 {
		vp.permute = true
	}
	return vp, nil
}

func hasDifferentRows(ms []*vmodel) bool {
	for _, m := range ms {
		if embedRows(m.info) != embedRows(ms[0].info) {
			return true
		}
	}
	return false
}

// addedCount is the number of added tokens of the source's own tokenizer.json.
func addedCount(info *modelInfo, pos Pos) int {
	v, err := vocabOf(info, pos)
	if err != nil || v == nil {
		return -1
	}
	return len(v.Added)
}

// resolveSpecs checks the tokenizer block's token sources against the models and
// their vocabularies, as mergekit asserts them.
func (vp *vocabPlan) resolveSpecs(c *catalog, st *Step, index map[*modelInfo]int) error {
	if st.Tokenizer == nil {
		return nil
	}
	for _, ts := range st.Tokenizer.Tokens {
		id, _ := vp.out.ID(ts.Token)
		f := &tokenFill{spec: ts, model: -1}
		if ts.Model != nil {
			info, err := c.resolve(*ts.Model)
			if err != nil {
				return err
			}
			i, ok := index[info]
			if !ok {
				return errorf(ts.Model.Pos, "tokenizer: tokens: %q: model %s is not one of the merge's models", ts.Token, ts.Model.Name)
			}
			f.model = i
			m := vp.models[i]
			switch {
			case ts.Kind == "model" && m.perm[id] < 0 && !info.planned:
				return errorf(ts.Pos, "tokenizer: tokens: %q: %s has no such token", ts.Token, ts.Model.Name)
			case ts.SrcToken != nil:
				row, ok := m.vocab.ID(*ts.SrcToken)
				if !ok && !info.planned {
					return errorf(ts.Pos, "tokenizer: tokens: %q: %s has no token %q", ts.Token, ts.Model.Name, *ts.SrcToken)
				}
				f.row = row
			case ts.SrcID != nil:
				if n := embedRows(info); *ts.SrcID >= n {
					return errorf(ts.Pos, "tokenizer: tokens: %q: token_id %d is past %s's %d embedding rows", ts.Token, *ts.SrcID, ts.Model.Name, n)
				}
				f.row = *ts.SrcID
			}
		}
		vp.specs[id] = f
	}
	return nil
}

// reshape returns the output's tensors with the embeddings' rows set to the
// output vocabulary's.
func (vp *vocabPlan) reshape(metas []merge.TensorMeta) []merge.TensorMeta {
	out := slices.Clone(metas)
	for i, m := range out {
		if isEmbedding(m) {
			m.Shape = []int64{int64(vp.rows), m.Shape[1]}
			out[i] = m
		}
	}
	return out
}
