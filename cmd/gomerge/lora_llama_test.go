package main

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
)

// TestLoraGGUFLlama extracts a GGUF LoRA adapter from two tiny llama GGUF models,
// applies it with gomerge, and checks with llama.cpp (node-llama-cpp) that the model
// loaded with the adapter generates exactly the greedy tokens of gomerge's applied
// model, at scale 1 and through `lora merge` at another weight; the base's tokens
// must differ, or the comparison would prove nothing.
func TestLoraGGUFLlama(t *testing.T) {
	node := nodeDir(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name+".gguf") }
	base := gguftest.Random(gguftest.Tiny, dtype.F32, 21)
	if err := gguftest.WriteFile(p("base"), gguftest.Metadata(gguftest.Tiny, "base"), base); err != nil {
		t.Fatal(err)
	}
	if err := gguftest.WriteFile(p("tuned"), gguftest.Metadata(gguftest.Tiny, "tuned"), gguftest.Perturb(base, 0.8, 22)); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"lora", "extract", "--base", p("base"), "--model", p("tuned"), "--rank", "8", "--out", p("adapter")},
		{"lora", "apply", "--base", p("base"), p("adapter"), "--out", p("applied")},
		{"lora", "merge", p("adapter") + ":weight=0.5", "--type", "cat", "--out", p("half")},
		{"lora", "apply", "--base", p("base"), p("half"), "--out", p("applied-half")},
	} {
		if code, _, stderr := gomerge(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
	}
	// One llama.cpp process: the base with each adapter, the applied models, the base.
	toks := llamaGenerate(t, node, 12, p("base")+",lora="+p("adapter"), p("base")+",lora="+p("half"),
		p("applied"), p("applied-half"), p("base"))
	withLora, withHalf, applied, appliedHalf, plain := toks[0], toks[1], toks[2], toks[3], toks[4]
	if len(applied) != 12 || !slices.Equal(withLora, applied) {
		t.Errorf("llama.cpp with the adapter generated %v, gomerge's applied model %v", withLora, applied)
	}
	if !slices.Equal(withHalf, appliedHalf) {
		t.Errorf("weight 0.5: llama.cpp with the adapter generated %v, gomerge's applied model %v", withHalf, appliedHalf)
	}
	if slices.Equal(plain, applied) {
		t.Errorf("the base generates the adapted model's tokens %v: the comparison proves nothing", plain)
	}
	t.Logf("base %v, adapted %v, half %v", plain, applied, appliedHalf)
}
