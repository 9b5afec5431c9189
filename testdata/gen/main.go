// Command gen writes the checkpoints the README's demo and the benchmarks use:
//
//	go run ./testdata/gen -out /tmp/gomerge-demo               # tiny, in milliseconds
//	go run ./testdata/gen -out /tmp/gm-bench -config 1gb        # ~1 GB BF16 llama shapes
//
// It writes DIR/anchor.safetensors (the model after task A), DIR/current.safetensors
// (the same model after some training on task B: the anchor plus noise), with -shards
// N > 1 also DIR/current/ as a Hugging Face folder of N shards with config files, and
// with -fisher DIR/fisher.safetensors (a positive diagonal Fisher for the anchor), and
// with -models N DIR/model1..N.safetensors (more fine-tunes of the anchor, which then
// serves as their base).
//
// With -format gguf it writes DIR/anchor.gguf and DIR/current.gguf instead (and
// model1..N.gguf): llama-architecture GGUF files with a byte-level vocabulary that
// llama.cpp loads, weights in -dtype (default q8_0), norms in F32:
//
//	go run ./testdata/gen -format gguf -out /tmp/gomerge-gguf             # tiny
//	go run ./testdata/gen -format gguf -config 1gb -out /tmp/gm-gguf       # ~1 GB Q8_0
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	"github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

var configs = map[string]safetensorstest.LlamaConfig{
	"tiny": safetensorstest.TinyLlama,
	// TinyLlama-1.1B's shapes with 9 and 42 layers: 1.05 GB and 3.96 GB in BF16; with 2
	// layers and an 8000-token vocabulary, 0.24 GB (bench/methods.sh's smallest size).
	"256mb": {Vocab: 8000, Hidden: 2048, Intermediate: 5632, Layers: 2, KVHidden: 256},
	"1gb":   {Vocab: 32000, Hidden: 2048, Intermediate: 5632, Layers: 9, KVHidden: 256},
	"4gb":   {Vocab: 32000, Hidden: 2048, Intermediate: 5632, Layers: 42, KVHidden: 256},
}

func main() {
	out := flag.String("out", "", "folder to write into (created)")
	config := flag.String("config", "tiny", "model size: tiny, 256mb, 1gb or 4gb")
	dt := flag.String("dtype", "", "dtype: bf16 (default), f16 or f32; for gguf q8_0 (default), q4_0, q4_1, q5_0, q5_1, f16, bf16 or f32")
	format := flag.String("format", "safetensors", "safetensors or gguf")
	shards := flag.Int("shards", 3, "also write current/ as a folder of this many shards (0: don't)")
	fisher := flag.Bool("fisher", true, "also write fisher.safetensors")
	seed := flag.Uint64("seed", 1, "random seed")
	models := flag.Int("models", 0, "also write model1..N.safetensors: other fine-tunes of the anchor (for TIES and friends)")
	flag.Parse()
	if *format == "gguf" {
		if err := runGGUF(*out, *config, *dt, *models, *seed); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		return
	}
	if *dt == "" {
		*dt = "bf16"
	}
	if err := run(*out, *config, *dt, *shards, *fisher, *models, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out, config, dtName string, shards int, withFisher bool, models int, seed uint64) error {
	cfg, ok := configs[config]
	if out == "" || !ok {
		return fmt.Errorf("need -out DIR and -config tiny|256mb|1gb|4gb")
	}
	d, err := dtype.ParseFloat(dtName)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	anchor := safetensorstest.Random(cfg, d, seed)
	if err := safetensorstest.WriteFile(filepath.Join(out, "anchor.safetensors"), anchor, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	if withFisher {
		f := safetensorstest.Fisher(anchor, 1e-3, seed+2)
		if err := safetensorstest.WriteFile(filepath.Join(out, "fisher.safetensors"), f, map[string]string{"format": "pt"}); err != nil {
			return err
		}
	}
	for i := 1; i <= models; i++ {
		m := safetensorstest.Perturb(anchor, 0.5, seed+10+uint64(i))
		if err := safetensorstest.WriteFile(filepath.Join(out, fmt.Sprintf("model%d.safetensors", i)), m, map[string]string{"format": "pt"}); err != nil {
			return err
		}
	}
	current := safetensorstest.Perturb(anchor, 0.5, seed+1)
	anchor = nil
	if err := safetensorstest.WriteFile(filepath.Join(out, "current.safetensors"), current, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	if shards > 1 {
		if err := safetensorstest.WriteFolder(filepath.Join(out, "current"), current, shards, map[string]string{"format": "pt"}); err != nil {
			return err
		}
	}
	fmt.Printf("wrote %s checkpoints (%s) to %s\n", config, d, out)
	return nil
}

var ggufConfigs = map[string]gguftest.Config{
	"tiny": gguftest.Tiny,
	// 1.06 GB and 4.0 GB in Q8_0 (TinyLlama-like widths).
	"1gb": {Hidden: 2048, FF: 5632, Layers: 22, Heads: 32, KVHeads: 4, Context: 2048},
	"4gb": {Hidden: 4096, FF: 11008, Layers: 21, Heads: 32, KVHeads: 32, Context: 2048},
	// The same widths with 35 layers: 1.8 GB in Q8_0, ~1 GB once requantized to
	// Q4_K_M (bench/gguf_kquant.sh does that with gomerge itself).
	"1gbk": {Hidden: 2048, FF: 5632, Layers: 35, Heads: 32, KVHeads: 4, Context: 2048},
}

func runGGUF(out, config, dtName string, models int, seed uint64) error {
	cfg, ok := ggufConfigs[config]
	if out == "" || !ok {
		return fmt.Errorf("need -out DIR and -config tiny|1gb|1gbk|4gb")
	}
	if dtName == "" {
		dtName = "q8_0"
	}
	d, err := dtype.ParseFloat(dtName)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	write := func(name string, ts []gguftest.Tensor) error {
		return gguftest.WriteFile(filepath.Join(out, name+".gguf"), gguftest.Metadata(cfg, name), ts)
	}
	anchor := gguftest.Random(cfg, d, seed)
	if err := write("anchor", anchor); err != nil {
		return err
	}
	for i := 1; i <= models; i++ {
		if err := write(fmt.Sprintf("model%d", i), gguftest.Perturb(anchor, 0.5, seed+10+uint64(i))); err != nil {
			return err
		}
	}
	if err := write("current", gguftest.Random(cfg, d, seed+1)); err != nil {
		return err
	}
	fmt.Printf("wrote %s GGUF checkpoints (%s) to %s\n", config, d, out)
	return nil
}
