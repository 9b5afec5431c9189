package recipe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomerge/gomerge/merge"
)

// extras are the non-weight files a step's folder output needs beyond what the
// engine copies from its reference input: the engine copies the reference model's
// config and tokenizer files when that input is a model's folder, which covers
// models: recipes; a slice recipe's reference is a view, and tokenizer_source and
// chat_template change the tokenizer files.
type extras struct {
	copyFrom      string // a folder whose non-weight files the output lacks
	layers        int    // config.json's num_hidden_layers, when slices changed it
	tokenizerFrom string // a folder whose tokenizer files replace the output's
	chatTemplate  string
}

func (e extras) any() bool {
	return e.copyFrom != "" || e.tokenizerFrom != "" || e.chatTemplate != ""
}

// tokenizerFiles are the files that make up a Hugging Face tokenizer.
var tokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json", "tokenizer.model",
	"special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt"}

func (sp *StepPlan) planExtras(c *catalog) error {
	st := sp.step
	folder := !safetensorsOut(sp.Output)
	ref := sp.pos[sp.refPos].srcs[0].info
	if sp.views != nil && folder {
		sp.extras.copyFrom = ref.dir
		sp.extras.layers = sp.layers
	}
	if ts := st.TokenizerSource; ts != nil {
		var tok *modelInfo
		switch ts.Name {
		case "union":
			return errorf(ts.Pos, "tokenizer_source: union (merging vocabularies) is not supported; use base or one model")
		case "base":
			tok = sp.pos[0].srcs[0].info // the base, or the first model without one
		default:
			var err error
			if tok, err = c.resolve(*ts); err != nil {
				return err
			}
		}
		if sp.views != nil || tok.path != ref.path {
			if !folder {
				return errorf(ts.Pos, "tokenizer_source: a single .safetensors output has no tokenizer files; write a folder (--out DIR)")
			}
			if tok.dir == "" {
				return errorf(ts.Pos, "tokenizer_source: %s is a single file, with no tokenizer files", tok.path)
			}
			if err := sameVocabulary(ts.Pos, tok, sp); err != nil {
				return err
			}
			sp.extras.tokenizerFrom = tok.dir
		}
	}
	if ct := st.ChatTemplate; ct != nil {
		if !folder {
			return errorf(ct.Pos, "chat_template: a single .safetensors output has no tokenizer_config.json; write a folder (--out DIR)")
		}
		if !strings.Contains(ct.Value, "{{") && !strings.Contains(ct.Value, "{%") {
			return errorf(ct.Pos, "chat_template %q: named templates are files bundled with mergekit; give the Jinja template text itself", ct.Value)
		}
		sp.extras.chatTemplate = ct.Value
	}
	return nil
}

// sameVocabulary refuses a tokenizer source whose vocabulary is not the merged
// embeddings': mergekit would re-order and extend the embedding rows for it; gomerge
// copies the tokenizer files only.
func sameVocabulary(pos Pos, tok *modelInfo, sp *StepPlan) error {
	for _, m := range sp.outMetas {
		i, ok := tok.index[m.Name]
		if !ok || !strings.Contains(m.Name, "embed") || len(m.Shape) != 2 {
			continue
		}
		if got := tok.metas[i].Shape[0]; got != m.Shape[0] {
			return errorf(pos, "tokenizer_source: %s has %d embedding rows, the merge %d; a different vocabulary (mergekit re-orders the embeddings for it) is not supported", tok.path, got, m.Shape[0])
		}
	}
	ref := sp.pos[sp.refPos].srcs[0].info
	if tok.planned || ref.planned || ref.dir == "" {
		return nil
	}
	a, errA := vocabulary(filepath.Join(tok.dir, "tokenizer.json"))
	b, errB := vocabulary(filepath.Join(ref.dir, "tokenizer.json"))
	if errA != nil || errB != nil {
		if err := errors.Join(errA, errB); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: tokenizer_source: %w", pos, err)
		}
		return nil // one side has no tokenizer.json: only the row count could be checked
	}
	if !bytes.Equal(a, b) {
		return errorf(pos, "tokenizer_source: the vocabulary in %s differs from %s's; mergekit re-orders the embeddings for it, gomerge does not (not supported)", tok.dir, ref.dir)
	}
	return nil
}

// vocabulary is a tokenizer.json's token-to-id map and added tokens, re-encoded so
// that formatting does not matter.
func vocabulary(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var t struct {
		Model struct {
			Vocab json.RawMessage `json:"vocab"`
		} `json:"model"`
		Added json.RawMessage `json:"added_tokens"`
	}
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var v any
	var vocab, added []byte
	if len(t.Model.Vocab) > 0 {
		if err := json.Unmarshal(t.Model.Vocab, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		vocab, _ = json.Marshal(v) // maps marshal with sorted keys
	}
	if len(t.Added) > 0 {
		if err := json.Unmarshal(t.Added, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		added, _ = json.Marshal(v)
	}
	return append(append(vocab, 0), added...), nil
}

// write puts the extras into a folder output before it is committed, so that they
// land in the same atomic swap as the weights: a crash leaves the old folder or the
// new one, never new weights with the reference model's config.
func (e extras) write(out merge.FolderFiles) error {
	if e.copyFrom != "" {
		entries, err := os.ReadDir(e.copyFrom)
		if err != nil {
			return err
		}
		for _, ent := range entries {
			name := ent.Name()
			if !ent.Type().IsRegular() || strings.HasSuffix(name, ".safetensors") || name == "model.safetensors.index.json" || strings.HasPrefix(name, ".") {
				continue
			}
			switch _, err := out.ReadFile(name); {
			case err == nil:
				continue // the engine carried it already
			case !errors.Is(err, fs.ErrNotExist):
				return err
			}
			data, err := os.ReadFile(filepath.Join(e.copyFrom, name))
			if err != nil {
				return err
			}
			if name == "config.json" && e.layers > 0 {
				if data, err = setJSON(data, "num_hidden_layers", e.layers); err != nil {
					return fmt.Errorf("%s: %w", filepath.Join(e.copyFrom, name), err)
				}
			}
			if err := out.WriteFile(name, data); err != nil {
				return err
			}
		}
	}
	if e.tokenizerFrom != "" {
		for _, name := range tokenizerFiles {
			data, err := os.ReadFile(filepath.Join(e.tokenizerFrom, name))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if err := out.WriteFile(name, data); err != nil {
				return err
			}
		}
	}
	if e.chatTemplate != "" {
		const name = "tokenizer_config.json"
		data, err := out.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			data, err = []byte("{}"), nil
		}
		if err != nil {
			return err
		}
		if data, err = setJSON(data, "chat_template", e.chatTemplate); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := out.WriteFile(name, data); err != nil {
			return err
		}
	}
	return nil
}

// setJSON sets one top-level key of a JSON object, keeping the others.
func setJSON(data []byte, key string, value any) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	if obj == nil {
		obj = map[string]json.RawMessage{}
	}
	v, err := json.Marshal(value)
	if err != nil {
		return nil, err
	}
	obj[key] = v
	out, err := json.MarshalIndent(obj, "", "  ")
	return append(out, '\n'), err
}
