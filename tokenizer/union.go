package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
)

// Union returns the union of vocabularies: base's tokens at their ids, then the
// tokens base lacks, at consecutive new ids from base.Size() on. As in mergekit's
// union (base tokenizer plus transformers' add_tokens), the others' model tokens
// come first and their added tokens after, each group in the order of vocabs and,
// within one vocabulary, of ids; extra lists tokens to add last (the tokenizer
// block's tokens:). It returns the union and the added_tokens entries of the new
// tokens.
//
// A new token that is an added token in its vocabulary keeps that entry's flags
// (special, lstrip, ...); any other becomes a plain added token (not special,
// normalized), as add_tokens makes it.
func Union(base *Vocab, others []*Vocab, extra []string) (*Vocab, []Added) {
	u := &Vocab{Type: base.Type, ids: map[string]int{}, toks: map[int]string{}, size: base.size, modelMax: base.modelMax}
	for tok, id := range base.ids {
		u.ids[tok], u.toks[id] = id, tok
	}
	u.Added = slices.Clone(base.Added)
	var news []Added
	push := func(a Added) {
		if _, ok := u.ids[a.Content]; ok {
			return
		}
		a.ID = u.size
		u.ids[a.Content], u.toks[a.ID] = a.ID, a.Content
		u.size++
		if a.Raw == nil {
			a.Raw = plainEntry(a.Content)
		}
		a.Raw = withID(a.Raw, a.ID)
		news = append(news, a)
	}
	all := append([]*Vocab{base}, others...)
	for _, v := range all {
		added := v.addedSet()
		for _, tok := range v.Tokens() {
			if !added[tok] {
				push(Added{Content: tok})
			}
		}
	}
	for _, v := range all {
		as := slices.Clone(v.Added)
		slices.SortStableFunc(as, func(a, b Added) int { return a.ID - b.ID })
		for _, a := range as {
			push(a)
		}
	}
	for _, tok := range extra {
		push(Added{Content: tok})
	}
	u.Added = append(u.Added, news...)
	return u, news
}

// WithExtra returns v with the extra tokens that it lacks added at new ids (the
// tokenizer block's tokens: with a base or model source), and their entries.
func (v *Vocab) WithExtra(extra []string) (*Vocab, []Added) {
	u, news := Union(v, nil, extra)
	return u, news
}

func (v *Vocab) addedSet() map[string]bool {
	m := make(map[string]bool, len(v.Added))
	for _, a := range v.Added {
		m[a.Content] = true
	}
	return m
}

// plainEntry is the added_tokens entry transformers' add_tokens writes for a
// plain string.
func plainEntry(tok string) json.RawMessage {
	content, _ := json.Marshal(tok) // a string always marshals
	return json.RawMessage(`{"id":0,"content":` + string(content) + `,"single_word":false,"lstrip":false,"rstrip":false,"normalized":true,"special":false}`)
}

// withID returns an added_tokens entry with its id replaced; the other keys keep
// their values.
func withID(raw json.RawMessage, id int) json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return raw // Parse has decoded it as an object already
	}
	m["id"] = json.RawMessage(strconv.Itoa(id))
	out, _ := json.Marshal(m)
	return out
}

// Rewrite returns a tokenizer.json (data, the file the output's vocabulary starts
// from) with its added_tokens replaced by those of v: everything else (the model,
// its merges, the normalizer ...) keeps its values, with keys sorted and
// re-indented. v must have been built from data (Parse, Limit, Union).
func Rewrite(data []byte, v *Vocab) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, formatErr(err, "not a JSON object")
	}
	added := make([]json.RawMessage, len(v.Added))
	for i, a := range v.Added {
		added[i] = a.Raw
	}
	enc, err := json.Marshal(added)
	if err != nil {
		return nil, formatErr(err, "added_tokens")
	}
	obj["added_tokens"] = enc
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	e.SetIndent("", "  ")
	if err := e.Encode(obj); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	return b.Bytes(), nil
}

// RewriteConfig replaces a tokenizer_config.json's added_tokens_decoder with v's
// added tokens (transformers reads them from there as well as from tokenizer.json);
// a config without that key is returned as it is.
func RewriteConfig(data []byte, v *Vocab) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	if _, ok := obj["added_tokens_decoder"]; !ok {
		return data, nil
	}
	dec := map[string]json.RawMessage{}
	for _, a := range v.Added {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(a.Raw, &m); err != nil {
			return nil, err
		}
		delete(m, "id")
		enc, _ := json.Marshal(m)
		dec[strconv.Itoa(a.ID)] = enc
	}
	enc, err := json.Marshal(dec)
	if err != nil {
		return nil, err
	}
	obj["added_tokens_decoder"] = enc
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	e.SetIndent("", "  ")
	if err := e.Encode(obj); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
