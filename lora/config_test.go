package lora

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	data, err := os.ReadFile("testdata/adapter_config.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig("testdata/adapter_config.json", data)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		module string
		rank   int
		alpha  float64
	}{
		{"model.layers.0.self_attn.q_proj", 4, 16},
		{"model.layers.10.self_attn.q_proj", 8, 16}, // layers.10 is not layers.0
		{"model.layers.1.self_attn.v_proj", 8, 32},
		{"model.layers.1.self_attn.k_proj", 8, 16},
	} {
		if r, a := c.Rank(x.module), c.Alpha(x.module); r != x.rank || a != x.alpha {
			t.Errorf("%s: rank %d alpha %v, want %d %v", x.module, r, a, x.rank, x.alpha)
		}
	}
	if s := c.Scale("model.layers.0.self_attn.q_proj"); s != 4 {
		t.Errorf("scale %v, want 16/4", s)
	}
	c.UseRSLoRA = true
	if s := c.Scale("model.layers.0.self_attn.q_proj"); s != 8 {
		t.Errorf("rsLoRA scale %v, want 16/√4", s)
	}
}

// TestParseConfigMalformed: every malformed config is refused with a ConfigError
// (ErrBadInput) that names the file and what is wrong.
func TestParseConfigMalformed(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{``, "not a JSON object"},
		{`[]`, "not a JSON object"},
		{`null`, "not a JSON object"},
		{`{}`, "no peft_type"},
		{`{"peft_type":"IA3","r":8,"lora_alpha":16}`, "LoRA adapters only"},
		{`{"peft_type":"LORA","r":0,"lora_alpha":16}`, "r = 0"},
		{`{"peft_type":"LORA","r":-2,"lora_alpha":16}`, "r = -2"},
		{`{"peft_type":"LORA","r":9999999,"lora_alpha":16}`, "r = 9999999"},
		{`{"peft_type":"LORA","r":8}`, "no lora_alpha"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":NaN}`, "invalid character"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":Infinity}`, "invalid character"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":1e400}`, "lora_alpha"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":"16"}`, "lora_alpha"},
		{`{"peft_type":"LORA","r":8.5,"lora_alpha":16}`, "r"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":16,"use_dora":true}`, "DoRA"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":16,"rank_pattern":{"q(":4}}`, "rank_pattern key"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":16,"rank_pattern":{"q":0}}`, "rank_pattern[\"q\"]"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":16,"alpha_pattern":{"(?P<x":4}}`, "alpha_pattern key"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":7}`, "target_modules"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":[1]}`, "target_modules"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":"a(("}`, "target_modules"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":16,"modules_to_save":"score"}`, "modules_to_save"},
		{`{"peft_type":"LORA","r":8,"lora_alpha":16`, "not a JSON object"},
		{strings.Repeat(" ", maxConfigSize+1), "bytes"},
	} {
		_, err := ParseConfig("cfg.json", []byte(c.json))
		var ce *ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "cfg.json") {
			t.Errorf("%.60s: error %v, want a ConfigError naming cfg.json and %q", c.json, err, c.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	if data, err := os.ReadFile("testdata/adapter_config.json"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`{"peft_type":"LORA","r":8,"lora_alpha":16,"use_rslora":true,"rank_pattern":{"q":2},"alpha_pattern":{"v":3},"target_modules":".*proj"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz.json", data)
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("error %v is not ErrBadInput", err)
			}
			return
		}
		for _, m := range []string{"model.layers.0.self_attn.q_proj", "q", "v", ""} {
			if r := c.Rank(m); r <= 0 || r > maxRank {
				t.Fatalf("rank %d of %q", r, m)
			}
			if s := c.Scale(m); math.IsNaN(s) || math.IsInf(s, 0) {
				t.Fatalf("scale %v of %q", s, m)
			}
		}
	})
}
