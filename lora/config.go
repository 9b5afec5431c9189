// Package lora reads, applies, extracts and combines LoRA adapters in PEFT's layout
// (a folder with adapter_config.json and adapter_model.safetensors).
//
// An adapter changes a base weight W by ΔW = scale·B·A, where A is r×in, B is out×r and
// scale is lora_alpha/r (lora_alpha/√r with use_rslora), r and lora_alpha taken per
// module from rank_pattern and alpha_pattern where they match. fan_in_fan_out (GPT-2's
// Conv1D, whose weight is stored in×out) and embeddings (lora_embedding_A is r×vocab,
// lora_embedding_B dim×r) store the transposed product.
//
// # Security
//
// adapter_config.json is parsed as JSON with size and count limits; r, lora_alpha and
// every pattern value must be finite and r positive; pattern keys must compile as RE2
// regular expressions. Tensor shapes are checked against the config's rank and the base
// tensor before any arithmetic. Pickled adapters (adapter_model.bin) are refused: no
// file ever runs code.
package lora

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"

	"github.com/gomerge/gomerge/checkpoint"
)

// ConfigFile and WeightsFile are the names PEFT gives an adapter's files.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
)

// maxConfigSize bounds adapter_config.json: real ones are a few kilobytes, and the
// patterns tables of the largest models a few hundred.
const maxConfigSize = 16 << 20

// maxRank bounds r: no adapter is wider than the matrices it adapts, and the largest
// of those are well under this.
const maxRank = 1 << 16

// ErrBadInput is checkpoint.ErrBadInput: errors about an adapter's content wrap it
// (exit status 3).
var ErrBadInput = checkpoint.ErrBadInput

// Config is what gomerge uses of adapter_config.json. Raw keeps every key, so that a
// written adapter carries the fields gomerge does not interpret.
type Config struct {
	PeftType            string             `json:"peft_type"`
	R                   int                `json:"r"`
	LoraAlpha           float64            `json:"lora_alpha"`
	UseRSLoRA           bool               `json:"use_rslora"`
	UseDoRA             bool               `json:"use_dora"`
	FanInFanOut         bool               `json:"fan_in_fan_out"`
	RankPattern         map[string]int     `json:"rank_pattern"`
	AlphaPattern        map[string]float64 `json:"alpha_pattern"`
	TargetModules       any                `json:"target_modules"` // a list of names or a regular expression
	ModulesToSave       []string           `json:"modules_to_save"`
	BaseModelNameOrPath string             `json:"base_model_name_or_path"`

	Raw map[string]json.RawMessage `json:"-"`

	rankKeys, alphaKeys []patternKey
}

type patternKey struct {
	key string
	re  *regexp.Regexp
}

// ConfigError is a malformed or unsupported adapter_config.json.
type ConfigError struct {
	File string
	Msg  string
}

func (e *ConfigError) Error() string        { return e.File + ": " + e.Msg }
func (e *ConfigError) Is(target error) bool { return target == ErrBadInput }

// ParseConfig parses and validates adapter_config.json's bytes; file names it in errors.
func ParseConfig(file string, data []byte) (*Config, error) {
	bad := func(format string, args ...any) error {
		return &ConfigError{File: file, Msg: fmt.Sprintf(format, args...)}
	}
	if len(data) > maxConfigSize {
		return nil, bad("%d bytes, more than the %d an adapter config may have", len(data), maxConfigSize)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, bad("not a JSON object: %v", err)
	}
	if raw == nil {
		return nil, bad("not a JSON object")
	}
	// PEFT writes NaN and Infinity as bare words, which encoding/json refuses; those
	// are refused here too, with that message, since a non-finite scale is an error.
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return nil, bad("%v", err)
	}
	c.Raw = raw
	if _, ok := raw["peft_type"]; !ok {
		return nil, bad("no peft_type: not a PEFT adapter config")
	}
	if c.PeftType != "LORA" {
		return nil, bad("peft_type %q: gomerge reads LoRA adapters only", c.PeftType)
	}
	if c.UseDoRA {
		return nil, bad("use_dora: DoRA adapters (lora_magnitude_vector) are not supported; merge them with PEFT's merge_and_unload first")
	}
	if c.R <= 0 || c.R > maxRank {
		return nil, bad("r = %d: want 1 to %d", c.R, maxRank)
	}
	if _, ok := raw["lora_alpha"]; !ok {
		return nil, bad("no lora_alpha")
	}
	if !finite(c.LoraAlpha) {
		return nil, bad("lora_alpha %v is not finite", c.LoraAlpha)
	}
	var err error
	if c.rankKeys, err = compilePatterns(file, "rank_pattern", keysOf(c.RankPattern)); err != nil {
		return nil, err
	}
	if c.alphaKeys, err = compilePatterns(file, "alpha_pattern", keysOf(c.AlphaPattern)); err != nil {
		return nil, err
	}
	for k, r := range c.RankPattern {
		if r <= 0 || r > maxRank {
			return nil, bad("rank_pattern[%q] = %d: want 1 to %d", k, r, maxRank)
		}
	}
	for k, a := range c.AlphaPattern {
		if !finite(a) {
			return nil, bad("alpha_pattern[%q] = %v is not finite", k, a)
		}
	}
	switch t := c.TargetModules.(type) {
	case nil, string:
		if s, ok := t.(string); ok {
			if _, err := regexp.Compile(s); err != nil {
				return nil, bad("target_modules %q: %v", s, err)
			}
		}
	case []any:
		for _, v := range t {
			if _, ok := v.(string); !ok {
				return nil, bad("target_modules: %v is not a module name", v)
			}
		}
	default:
		return nil, bad("target_modules: want a list of names or a regular expression")
	}
	return &c, nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func keysOf[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // a fixed order, so that two matching keys always resolve alike
	return keys
}

// compilePatterns compiles PEFT's pattern keys: a key matches a module whose name is
// the key or ends in "."+key, the key read as a regular expression.
func compilePatterns(file, field string, keys []string) ([]patternKey, error) {
	out := make([]patternKey, 0, len(keys))
	for _, k := range keys {
		re, err := regexp.Compile(`^(?:.*\.)?(?:` + k + `)$`)
		if err != nil {
			return nil, &ConfigError{File: file, Msg: fmt.Sprintf("%s key %q: %v", field, k, err)}
		}
		out = append(out, patternKey{k, re})
	}
	return out, nil
}

func match(keys []patternKey, module string) (string, bool) {
	for _, k := range keys {
		if k.re.MatchString(module) {
			return k.key, true
		}
	}
	return "", false
}

// Rank is module's rank: its rank_pattern entry, else r.
func (c *Config) Rank(module string) int {
	if k, ok := match(c.rankKeys, module); ok {
		return c.RankPattern[k]
	}
	return c.R
}

// Alpha is module's lora_alpha: its alpha_pattern entry, else lora_alpha.
func (c *Config) Alpha(module string) float64 {
	if k, ok := match(c.alphaKeys, module); ok {
		return c.AlphaPattern[k]
	}
	return c.LoraAlpha
}

// Scale is module's scaling: α/r, or α/√r with use_rslora.
func (c *Config) Scale(module string) float64 {
	r := float64(c.Rank(module))
	if c.UseRSLoRA {
		return c.Alpha(module) / math.Sqrt(r)
	}
	return c.Alpha(module) / r
}

var errNoConfig = errors.New("no " + ConfigFile)
