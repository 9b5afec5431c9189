package recipe

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomerge/gomerge/merge"
	"github.com/gomerge/gomerge/tokenizer"
)

// extras are the non-weight files a step's folder output needs beyond what the
// engine copies from its reference input: the engine copies the reference model's
// config and tokenizer files when that input is a model's folder, which covers
// models: recipes; a slice recipe's reference is a view, and tokenizer_source, the
// tokenizer: block and chat_template change the tokenizer files and config.json.
type extras struct {
	copyFrom      string // a folder whose non-weight files the output lacks
	layers        int    // config.json's num_hidden_layers, when slices changed it
	tokenizerFrom string // a folder whose tokenizer files replace the output's
	chatTemplate  string
	vocab         *vocabPlan // the output vocabulary, with tokenizer_source or tokenizer:
	vocabSize     int        // config.json's vocab_size, when the embeddings were re-indexed
}

func (e extras) any() bool {
	return e.copyFrom != "" || e.tokenizerFrom != "" || e.chatTemplate != "" || e.vocabSize > 0
}

// tokenizerFiles are the files that make up a Hugging Face tokenizer.
var tokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json", "tokenizer.model",
	"special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja"}

func (sp *StepPlan) planExtras(c *catalog) error {
	st := sp.step
	folder := !safetensorsOut(sp.Output)
	ref := sp.pos[sp.refPos].srcs[0].info
	if sp.views != nil && folder {
		sp.extras.copyFrom = ref.dir
		sp.extras.layers = sp.layers
	}
	if ts := st.TokenizerSource; ts != nil {
		vp, err := sp.planVocab(c, *ts)
		if err != nil {
			return err
		}
		sp.extras.vocab = vp
		files := sp.views != nil || vp.srcDir != ref.dir || vp.added
		if (files || vp.permute) && !folder {
			return errorf(ts.Pos, "tokenizer_source: a single .safetensors output has no tokenizer files; write a folder (--out DIR)")
		}
		if files {
			sp.extras.tokenizerFrom = vp.srcDir
		}
		if vp.permute && takesFisher(sp.spec) {
			return errorf(ts.Pos, "tokenizer_source: the models' vocabularies differ, and re-indexing their Fisher files' embedding rows with them is not supported")
		}
		if vp.permute {
			sp.outMetas = vp.reshape(sp.outMetas)
			sp.extras.vocabSize = vp.rows
			// The engine carries the reference folder's files only from a plain
			// checkpoint, and the re-indexed inputs are not.
			sp.extras.copyFrom = ref.dir
		}
	}
	if ct := st.ChatTemplate; ct != nil {
		if !folder {
			return errorf(ct.Pos, "chat_template: a single .safetensors output has no tokenizer_config.json; write a folder (--out DIR)")
		}
		t, err := chatTemplate(ct, sp.models(c))
		if err != nil {
			return err
		}
		sp.extras.chatTemplate = t
	}
	return nil
}

// models lists the step's models once each: the base, then the others in order
// (mergekit's referenced models).
func (sp *StepPlan) models(c *catalog) []*modelInfo {
	var out []*modelInfo
	if b := sp.step.Base; b != nil {
		if info, err := c.resolve(*b); err == nil {
			out = append(out, info)
		}
	}
	for _, p := range sp.pos {
		for _, s := range p.srcs {
			if !slices.Contains(out, s.info) {
				out = append(out, s.info)
			}
		}
	}
	return out
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
	if v := e.vocab; v != nil && v.added {
		if err := v.writeTokenizer(out); err != nil {
			return err
		}
	}
	if e.vocabSize > 0 {
		if err := patchConfig(out, "vocab_size", e.vocabSize); err != nil {
			return err
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

// writeTokenizer writes the output vocabulary's tokenizer.json and the added tokens
// of tokenizer_config.json, over the copies of the source's.
func (vp *vocabPlan) writeTokenizer(out merge.FolderFiles) error {
	data, err := os.ReadFile(vp.srcJSON)
	if err != nil {
		return err
	}
	if data, err = tokenizer.Rewrite(data, vp.out); err != nil {
		return fmt.Errorf("%s: %w", vp.srcJSON, err)
	}
	if err := out.WriteFile("tokenizer.json", data); err != nil {
		return err
	}
	const name = "tokenizer_config.json"
	cfg, err := out.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if cfg, err = tokenizer.RewriteConfig(cfg, vp.out); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(vp.srcDir, name), err)
	}
	return out.WriteFile(name, cfg)
}

// patchConfig sets one key of the output's config.json, if it has one.
func patchConfig(out merge.FolderFiles, key string, value any) error {
	data, err := out.ReadFile("config.json")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if data, err = setJSON(data, key, value); err != nil {
		return fmt.Errorf("config.json: %w", err)
	}
	return out.WriteFile("config.json", data)
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
