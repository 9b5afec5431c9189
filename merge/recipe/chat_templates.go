package recipe

import (
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// namedTemplates are the chat templates mergekit ships under a name (its README's
// list: alpaca, chatml, llama3, mistral, exaone), written here for gomerge: each
// formats a conversation as mergekit's template of that name does under
// transformers' Jinja settings (trim_blocks, lstrip_blocks), except exaone, whose
// mergekit file leaks its own indentation into the prompt; this one writes the
// format without it. TestChatTemplatesRender holds the prompts.
var namedTemplates = map[string]string{
	"chatml": `{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}` +
		`{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`,

	"llama3": `{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}` +
		`{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>\n' }}{% endfor %}` +
		`{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`,

	"mistral": `{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}` +
		`{%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}` +
		`{%- for message in loop_messages %}` +
		`{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{- raise_exception('After the optional system message, roles must alternate user, assistant, user, ...') }}{%- endif %}` +
		`{%- if message['role'] == 'user' %}` +
		`{%- if loop.first and system_message is defined %}{{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}` +
		`{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}` +
		`{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}` +
		`{%- else %}{{- raise_exception('Only user and assistant roles, after an optional system message, are supported') }}{%- endif %}` +
		`{%- endfor %}`,

	"alpaca": `{% set system = messages | selectattr('role', 'equalto', 'system') | list %}` +
		`{{ (system | last).content | trim if system else '' }}` + "\n\n" +
		`{% for message in messages %}` +
		`{% if message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] | trim }}` +
		`{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] | trim }}` +
		`{% elif message['role'] == 'user_context' %}{{ '### Input:\n' + message['content'] | trim }}{% endif %}` +
		`{% if message['role'] in ['user', 'assistant', 'user_context'] and not loop.last %}{{ '\n\n' }}{% endif %}` +
		`{% endfor %}` +
		`{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '### Response:\n' }}{% endif %}`,

	"exaone": `{% for message in messages %}` +
		`{% if loop.first and message['role'] != 'system' %}{{ '[|system|][|endofturn|]\n' }}{% endif %}` +
		`{{ '[|' + message['role'] + '|]' + message['content'] }}` +
		`{% if message['role'] == 'user' %}{{ '\n' }}{% else %}{{ '[|endofturn|]\n' }}{% endif %}` +
		`{% endfor %}` +
		`{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}`,
}

// chatTemplate resolves a recipe's chat_template as mergekit does: "auto" is the
// template most of the models have (nothing when none has one), a name is one of
// namedTemplates, and anything else must look like a Jinja template.
func chatTemplate(ct *Str, models []*modelInfo) (string, error) {
	switch v := ct.Value; {
	case v == "auto":
		return autoTemplate(models)
	case namedTemplates[v] != "":
		return namedTemplates[v], nil
	case len(v) < 20 || !strings.Contains(v, "{"):
		names := slices.Sorted(maps.Keys(namedTemplates))
		return "", errorf(ct.Pos, "chat_template %q: not a template name (%s, auto) nor a Jinja template", v, strings.Join(names, ", "))
	default:
		return v, nil
	}
}

// autoTemplate is the most common chat template among the models (trimmed; ties go
// to the one seen first, as Python's Counter.most_common orders them); a model
// that is not yet written, or has no template, does not count.
func autoTemplate(models []*modelInfo) (string, error) {
	count := map[string]int{}
	var order []string
	for _, m := range models {
		t, err := modelTemplate(m)
		if err != nil {
			return "", err
		}
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if count[t] == 0 {
			order = append(order, t)
		}
		count[t]++
	}
	if len(order) == 0 {
		return "", nil
	}
	best := order[0]
	for _, t := range order[1:] {
		if count[t] > count[best] {
			best = t
		}
	}
	return best, nil
}

// modelTemplate is a model folder's chat template: chat_template.jinja, else
// tokenizer_config.json's chat_template (a string, or a list of named templates
// whose "default" counts).
func modelTemplate(m *modelInfo) (string, error) {
	if m.planned || m.dir == "" {
		return "", nil
	}
	if data, err := os.ReadFile(filepath.Join(m.dir, "chat_template.jinja")); err == nil {
		return string(data), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	path := filepath.Join(m.dir, "tokenizer_config.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var cfg struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return "", &Error{Pos: Pos{File: path}, Msg: "not a JSON object: " + err.Error()}
	}
	var s string
	if json.Unmarshal(cfg.ChatTemplate, &s) == nil {
		return s, nil
	}
	var named []struct{ Name, Template string }
	if json.Unmarshal(cfg.ChatTemplate, &named) == nil {
		for _, n := range named {
			if n.Name == "default" {
				return n.Template, nil
			}
		}
	}
	return "", nil
}
