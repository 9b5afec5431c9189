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
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

var configs = map[string]safetensorstest.LlamaConfig{
	"tiny": safetensorstest.TinyLlama,
	// TinyLlama-1.1B's shapes with 9 and 42 layers: 1.05 GB and 3.96 GB in BF16.
	"1gb": {Vocab: 32000, Hidden: 2048, Intermediate: 5632, Layers: 9, KVHidden: 256},
	"4gb": {Vocab: 32000, Hidden: 2048, Intermediate: 5632, Layers: 42, KVHidden: 256},
}

func main() {
	out := flag.String("out", "", "folder to write into (created)")
	config := flag.String("config", "tiny", "model size: tiny, 1gb or 4gb")
	dt := flag.String("dtype", "bf16", "dtype: bf16, f16 or f32")
	shards := flag.Int("shards", 3, "also write current/ as a folder of this many shards (0: don't)")
	fisher := flag.Bool("fisher", true, "also write fisher.safetensors")
	seed := flag.Uint64("seed", 1, "random seed")
	models := flag.Int("models", 0, "also write model1..N.safetensors: other fine-tunes of the anchor (for TIES and friends)")
	flag.Parse()
	if err := run(*out, *config, *dt, *shards, *fisher, *models, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out, config, dtName string, shards int, withFisher bool, models int, seed uint64) error {
	cfg, ok := configs[config]
	if out == "" || !ok {
		return fmt.Errorf("need -out DIR and -config tiny|1gb|4gb")
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
