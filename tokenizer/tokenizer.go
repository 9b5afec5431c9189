// Package tokenizer reads the vocabulary of a Hugging Face tokenizer.json (the
// token ↔ id map of its model and its added tokens) and builds the union of several
// vocabularies, as a merge with mergekit's `tokenizer_source: union` needs: which
// row of each model's embedding matrix holds each token of the merged vocabulary.
//
// It does not tokenize text: merges, normalizers and pre-tokenizers are carried
// through untouched.
//
// # Security
//
// tokenizer.json is input. Its size is bounded (MaxFileBytes) before it is decoded;
// the vocabulary must be one of the forms the tokenizers library writes (a
// token → id object for BPE, WordPiece and WordLevel; a list of [piece, score]
// pairs for Unigram); every id must be a non-negative integer below maxID, so no
// allocation is sized by a number from the file beyond the file's own size; a token
// with two ids, or an id with two tokens, is refused. Errors wrap ErrFormat and never
// panic.
package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
)

const (
	// MaxFileBytes bounds a tokenizer.json (the largest published ones, Gemma's, are
	// about 35 MB).
	MaxFileBytes = 256 << 20
	// maxID bounds token ids: far above any real vocabulary (Gemma's 262k), and
	// small enough that a table indexed by id is safe to allocate.
	maxID = 1 << 24
)

// ErrFormat is wrapped by every error about a malformed tokenizer.json.
var ErrFormat = errors.New("malformed tokenizer.json")

// FormatError says what is wrong with a tokenizer.json.
type FormatError struct {
	Msg string
	Err error
}

func (e *FormatError) Error() string {
	if e.Err != nil {
		return "tokenizer.json: " + e.Msg + ": " + e.Err.Error()
	}
	return "tokenizer.json: " + e.Msg
}

func (e *FormatError) Is(target error) bool { return target == ErrFormat }
func (e *FormatError) Unwrap() error        { return e.Err }

func formatErr(err error, format string, args ...any) error {
	return &FormatError{Msg: fmt.Sprintf(format, args...), Err: err}
}

// Added is one entry of added_tokens.
type Added struct {
	ID      int
	Content string
	Special bool
	// Raw is the entry as written (its lstrip, rstrip, normalized ... flags), so that
	// a union carries them over.
	Raw json.RawMessage
}

// Vocab is a tokenizer's vocabulary: every token (the model's and the added ones)
// and its id.
type Vocab struct {
	Type  string // the model's type: BPE, WordPiece, WordLevel or Unigram
	Added []Added
	ids   map[string]int
	toks  map[int]string
	size  int // 1 + the highest id
	// modelMax is 1 + the highest id in model.vocab (added tokens excluded).
	modelMax int
}

// ReadFile reads a tokenizer.json's vocabulary; errors name the file.
func ReadFile(path string) (*Vocab, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	v, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

type rawFile struct {
	Model *struct {
		Type  string          `json:"type"`
		Vocab json.RawMessage `json:"vocab"`
	} `json:"model"`
	Added []json.RawMessage `json:"added_tokens"`
}

// Parse decodes a tokenizer.json's vocabulary.
func Parse(data []byte) (*Vocab, error) {
	if len(data) > MaxFileBytes {
		return nil, formatErr(nil, "%d bytes, more than the limit of %d", len(data), MaxFileBytes)
	}
	var f rawFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, formatErr(err, "not a JSON object")
	}
	if f.Model == nil {
		return nil, formatErr(nil, "no model")
	}
	v := &Vocab{Type: f.Model.Type, ids: map[string]int{}, toks: map[int]string{}}
	vocab := bytes.TrimSpace(f.Model.Vocab)
	switch {
	case len(vocab) == 0 || string(vocab) == "null":
		return nil, formatErr(nil, "model %q has no vocab", f.Model.Type)
	case vocab[0] == '{':
		if err := v.parseMap(vocab); err != nil {
			return nil, err
		}
	case vocab[0] == '[':
		if err := v.parseList(vocab); err != nil {
			return nil, err
		}
	default:
		return nil, formatErr(nil, "model.vocab: want an object or a list")
	}
	v.modelMax = v.size
	for i, raw := range f.Added {
		var a struct {
			ID      json.RawMessage `json:"id"`
			Content *string         `json:"content"`
			Special bool            `json:"special"`
		}
		if err := json.Unmarshal(raw, &a); err != nil || a.ID == nil || a.Content == nil {
			return nil, formatErr(err, "added_tokens[%d]: want an object with id and content", i)
		}
		id, err := parseID(json.Number(a.ID))
		if err != nil {
			return nil, formatErr(err, "added_tokens[%d] %q", i, *a.Content)
		}
		if err := v.add(*a.Content, id); err != nil {
			return nil, err
		}
		v.Added = append(v.Added, Added{ID: id, Content: *a.Content, Special: a.Special, Raw: slices.Clone(raw)})
	}
	return v, nil
}

// parseMap reads the token → id object of BPE, WordPiece and WordLevel models.
func (v *Vocab) parseMap(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return formatErr(err, "model.vocab")
	}
	// Go's JSON decoder keeps the last of duplicate keys; a duplicate only matters if
	// the ids disagree, and then the map still holds one id per token.
	for tok, n := range m {
		id, err := parseID(json.Number(n))
		if err != nil {
			return formatErr(err, "model.vocab %q", tok)
		}
		if err := v.add(tok, id); err != nil {
			return err
		}
	}
	return nil
}

// parseList reads a Unigram model's list of [piece, score]: a piece's id is its
// position.
func (v *Vocab) parseList(data []byte) error {
	var l []json.RawMessage
	if err := json.Unmarshal(data, &l); err != nil {
		return formatErr(err, "model.vocab")
	}
	if len(l) > maxID {
		return formatErr(nil, "model.vocab: %d pieces, more than %d", len(l), maxID)
	}
	for i, raw := range l {
		var pair []json.RawMessage
		var tok string
		var score float64
		if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
			return formatErr(err, "model.vocab[%d]: want [piece, score]", i)
		}
		if err := json.Unmarshal(pair[0], &tok); err != nil {
			return formatErr(err, "model.vocab[%d]: piece", i)
		}
		if err := json.Unmarshal(pair[1], &score); err != nil {
			return formatErr(err, "model.vocab[%d]: score", i)
		}
		if err := v.add(tok, i); err != nil {
			return err
		}
	}
	return nil
}

func parseID(n json.Number) (int, error) {
	// The raw JSON text: a quoted id is refused here, as the tokenizers library
	// refuses it.
	id, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil || id < 0 || id >= maxID {
		return 0, fmt.Errorf("id %s: want an integer in [0, %d)", n, maxID)
	}
	return int(id), nil
}

// add records tok at id; the same pair twice (an added token that is also in the
// model's vocab) is fine, a conflict is not.
func (v *Vocab) add(tok string, id int) error {
	if old, ok := v.ids[tok]; ok {
		if old != id {
			return formatErr(nil, "token %q has ids %d and %d", tok, old, id)
		}
		return nil
	}
	if old, ok := v.toks[id]; ok {
		return formatErr(nil, "id %d is both %q and %q", id, old, tok)
	}
	v.ids[tok] = id
	v.toks[id] = tok
	v.size = max(v.size, id+1)
	return nil
}

// ID returns a token's id.
func (v *Vocab) ID(tok string) (int, bool) {
	id, ok := v.ids[tok]
	return id, ok
}

// Token returns the token with an id.
func (v *Vocab) Token(id int) (string, bool) {
	t, ok := v.toks[id]
	return t, ok
}

// Size is 1 + the highest id: the embedding rows the vocabulary needs.
func (v *Vocab) Size() int { return v.size }

// Len is the number of tokens.
func (v *Vocab) Len() int { return len(v.ids) }

// Tokens lists the tokens in id order.
func (v *Vocab) Tokens() []string {
	ids := make([]int, 0, len(v.toks))
	for id := range v.toks {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = v.toks[id]
	}
	return out
}

// Limit returns the vocabulary without the tokens whose id is n or more: those a
// model's embedding matrix, of n rows, has no row for (mergekit strips them the
// same way).
func (v *Vocab) Limit(n int) *Vocab {
	if v.size <= n {
		return v
	}
	w := &Vocab{Type: v.Type, ids: map[string]int{}, toks: map[int]string{}}
	for tok, id := range v.ids {
		if id < n {
			w.ids[tok], w.toks[id] = id, tok
			w.size = max(w.size, id+1)
		}
	}
	w.modelMax = min(v.modelMax, w.size)
	for _, a := range v.Added {
		if a.ID < n {
			w.Added = append(w.Added, a)
		}
	}
	return w
}

// Equal says whether two vocabularies map the same tokens to the same ids.
func (v *Vocab) Equal(w *Vocab) bool {
	if len(v.ids) != len(w.ids) {
		return false
	}
	for tok, id := range v.ids {
		if j, ok := w.ids[tok]; !ok || j != id {
			return false
		}
	}
	return true
}
