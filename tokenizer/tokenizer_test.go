package tokenizer

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

const bpe = `{"version":"1.0","added_tokens":[
 {"id":0,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
 {"id":4,"content":"<|im_end|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
 "normalizer":null,"model":{"type":"BPE","vocab":{"<s>":0,"a":1,"b":2,"ab":3},"merges":["a b"]}}`

const wordpiece = `{"added_tokens":[{"id":0,"content":"[PAD]","special":true}],
 "model":{"type":"WordPiece","unk_token":"[UNK]","vocab":{"[PAD]":0,"[UNK]":1,"b":2,"c":3}}}`

const unigram = `{"added_tokens":[],"model":{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0.0],["▁a",-1.5],["c",-2]]}}`

func TestParseForms(t *testing.T) {
	for _, tc := range []struct {
		name, data, typ string
		toks            []string
		size            int
	}{
		{"bpe", bpe, "BPE", []string{"<s>", "a", "b", "ab", "<|im_end|>"}, 5},
		{"wordpiece", wordpiece, "WordPiece", []string{"[PAD]", "[UNK]", "b", "c"}, 4},
		{"unigram", unigram, "Unigram", []string{"<unk>", "▁a", "c"}, 3},
	} {
		v, err := Parse([]byte(tc.data))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if v.Type != tc.typ || v.Size() != tc.size || !slices.Equal(v.Tokens(), tc.toks) {
			t.Errorf("%s: type %s size %d tokens %q", tc.name, v.Type, v.Size(), v.Tokens())
		}
		for i, tok := range tc.toks {
			if id, ok := v.ID(tok); !ok || (tc.name != "bpe" && id != i) {
				t.Errorf("%s: ID(%q) = %d, %v", tc.name, tok, id, ok)
			}
		}
	}
}

func TestParseMalformed(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"empty", ``, "not a JSON object"},
		{"array", `[]`, "not a JSON object"},
		{"no model", `{"added_tokens":[]}`, "no model"},
		{"no vocab", `{"model":{"type":"BPE"}}`, "no vocab"},
		{"vocab string", `{"model":{"type":"BPE","vocab":"x"}}`, "want an object or a list"},
		{"negative id", `{"model":{"type":"BPE","vocab":{"a":-1}}}`, "want an integer"},
		{"float id", `{"model":{"type":"BPE","vocab":{"a":1.5}}}`, "want an integer"},
		{"huge id", `{"model":{"type":"BPE","vocab":{"a":99999999999}}}`, "want an integer"},
		{"id string", `{"model":{"type":"BPE","vocab":{"a":"1"}}}`, "want an integer"},
		{"shared id", `{"model":{"type":"BPE","vocab":{"a":1,"b":1}}}`, "is both"},
		{"unigram pair", `{"model":{"type":"Unigram","vocab":[["a"]]}}`, "want [piece, score]"},
		{"unigram piece", `{"model":{"type":"Unigram","vocab":[[1,2]]}}`, "piece"},
		{"unigram score", `{"model":{"type":"Unigram","vocab":[["a","x"]]}}`, "score"},
		{"added no id", `{"model":{"type":"BPE","vocab":{"a":0}},"added_tokens":[{"content":"b"}]}`, "added_tokens[0]"},
		{"added not object", `{"model":{"type":"BPE","vocab":{"a":0}},"added_tokens":[1]}`, "added_tokens[0]"},
		{"added conflict", `{"model":{"type":"BPE","vocab":{"a":0}},"added_tokens":[{"id":1,"content":"a"}]}`, "has ids 0 and 1"},
		{"added clash", `{"model":{"type":"BPE","vocab":{"a":0}},"added_tokens":[{"id":0,"content":"b"}]}`, "is both"},
	} {
		_, err := Parse([]byte(tc.data))
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrFormat with %q", tc.name, err, tc.want)
		}
	}
}

// TestUnion: base's ids stay, new model tokens come before new added tokens, an
// added token keeps its flags, and the rewritten file parses back to the union.
func TestUnion(t *testing.T) {
	base, _ := Parse([]byte(bpe))
	other, err := Parse([]byte(`{"added_tokens":[{"id":3,"content":"<|im_start|>","special":true,"normalized":false},{"id":4,"content":"<|im_end|>","special":true}],
		"model":{"type":"BPE","vocab":{"c":0,"a":1,"cd":2}}}`))
	if err != nil {
		t.Fatal(err)
	}
	u, news := Union(base, []*Vocab{other}, []string{"<new>", "a"})
	want := []string{"<s>", "a", "b", "ab", "<|im_end|>", "c", "cd", "<|im_start|>", "<new>"}
	if !slices.Equal(u.Tokens(), want) || u.Size() != len(want) || len(news) != 4 {
		t.Fatalf("union %q (size %d), %d new", u.Tokens(), u.Size(), len(news))
	}
	var e map[string]any
	if err := json.Unmarshal(news[2].Raw, &e); err != nil || e["id"] != 7.0 || e["special"] != true || e["normalized"] != false {
		t.Errorf("carried entry %s", news[2].Raw)
	}
	if err := json.Unmarshal(news[0].Raw, &e); err != nil || e["id"] != 5.0 || e["special"] != false || e["content"] != "c" {
		t.Errorf("plain entry %s", news[0].Raw)
	}
	out, err := Rewrite([]byte(bpe), u)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil || !back.Equal(u) || !strings.Contains(string(out), `"merges": [`) {
		t.Errorf("rewritten file: %v\n%s", err, out)
	}
	cfg, err := RewriteConfig([]byte(`{"added_tokens_decoder":{"0":{"content":"<s>"}},"x":1}`), u)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		D map[string]map[string]any `json:"added_tokens_decoder"`
		X int                       `json:"x"`
	}
	if err := json.Unmarshal(cfg, &c); err != nil || len(c.D) != 6 || c.D["8"]["content"] != "<new>" || c.X != 1 {
		t.Errorf("config %s", cfg)
	}
}

func TestLimit(t *testing.T) {
	v, _ := Parse([]byte(bpe))
	w := v.Limit(3)
	if w.Size() != 3 || w.Len() != 3 || len(w.Added) != 1 || v.Size() != 5 {
		t.Errorf("limit: size %d len %d added %d", w.Size(), w.Len(), len(w.Added))
	}
	if _, ok := w.ID("ab"); ok {
		t.Error("ab kept")
	}
}

// FuzzParse: whatever parses answers every accessor consistently, and its union
// with itself is itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{bpe, wordpiece, unigram, `{"model":{"vocab":{}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		toks := v.Tokens()
		if len(toks) != v.Len() || v.Len() > v.Size() {
			t.Fatalf("len %d, %d tokens, size %d", v.Len(), len(toks), v.Size())
		}
		for _, tok := range toks {
			id, ok := v.ID(tok)
			if back, ok2 := v.Token(id); !ok || !ok2 || back != tok {
				t.Fatalf("token %q ↔ id %d", tok, id)
			}
		}
		u, news := Union(v, []*Vocab{v}, nil)
		if len(news) != 0 || !u.Equal(v) {
			t.Fatalf("self-union added %d tokens", len(news))
		}
		_ = v.Limit(v.Size() / 2)
		if _, err := Rewrite(data, u); err != nil {
			t.Fatal(err)
		}
	})
}
