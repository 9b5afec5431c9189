package recipe

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/merge"
)

// BenchmarkRecipeVocabulary measures a three-model linear merge whose embedding and
// head are 16384 × 256 BF16 (8 MiB each): with one vocabulary (nothing re-indexed)
// and with a union of three differing ones (every model re-indexed through the
// scratch file). peak-heap-B is the merge report's peak heap.
func BenchmarkRecipeVocabulary(b *testing.B) {
	const vocab, hidden = 16384, 256
	cfg := stt.LlamaConfig{Vocab: vocab, Hidden: hidden, Intermediate: 64, Layers: 1, KVHidden: 64}
	for _, union := range []bool{false, true} {
		dir := b.TempDir()
		base := stt.Random(cfg, dtype.BF16, 1)
		models := map[string][]stt.Tensor{"base": base, "a": stt.Perturb(base, 0.5, 2), "b": stt.Perturb(base, 0.5, 3)}
		for i, name := range []string{"base", "a", "b"} {
			v := map[string]int{}
			for id := range vocab {
				tok := fmt.Sprintf("t%d", id)
				if union && i == 1 {
					id = vocab - 1 - id // a: the same tokens in reverse order
				}
				if union && i == 2 && id >= vocab-100 {
					tok = fmt.Sprintf("b%d", id) // b: 100 tokens of its own
				}
				v[tok] = id
			}
			if err := stt.WriteFolder(filepath.Join(dir, name), models[name], 1, nil); err != nil {
				b.Fatal(err)
			}
			writeTokenizer(b, filepath.Join(dir, name), v, nil, "")
		}
		source := "base"
		if union {
			source = "union"
		}
		f := &fixture{dir: dir}
		r := f.recipe(b, "v.yaml", fmt.Sprintf("merge_method: linear\nbase_model: %[1]s/base\nmodels: [{model: %[1]s/base}, {model: %[1]s/a}, {model: %[1]s/b}]\ntokenizer_source: %[2]s\n", dir, source))
		b.Run(source, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(3 * 2 * vocab * hidden * 2)
			var peak uint64
			for i := range b.N {
				reps, err := Run(context.Background(), r, Options{Out: filepath.Join(dir, fmt.Sprintf("out%d", i))}, merge.Job{Exec: merge.ExecOptions{Threads: 2}})
				if err != nil {
					b.Fatal(err)
				}
				if rows := reps[0].Tensors; rows == 0 {
					b.Fatal("no tensors")
				}
				peak = max(peak, reps[0].PeakHeapBytes)
			}
			b.ReportMetric(float64(peak), "peak-heap-B")
		})
	}
}
