package recipe

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// TestREADMEExamples runs the README's example recipes, which must appear there
// verbatim, on generated models at the paths they name.
func TestREADMEExamples(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	examples, err := filepath.Glob(filepath.Join("testdata", "examples", "*.yaml"))
	if err != nil || len(examples) != 3 {
		t.Fatalf("examples: %v %v", examples, err)
	}
	texts := map[string]string{}
	for _, path := range examples {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), "```yaml\n"+string(data)+"```\n") {
			t.Errorf("README.md does not show %s as it is", path)
		}
		texts[filepath.Base(path)] = string(data)
	}

	dir := t.TempDir()
	base := stt.Random(tiny4, dtype.BF16, 5)
	models := map[string][]stt.Tensor{"base": base}
	for i, name := range []string{"chat", "math", "code"} {
		models[name] = stt.Perturb(base, 0.5, uint64(50+i))
	}
	for name, ts := range models {
		if err := stt.WriteFolder(filepath.Join(dir, "models", name), ts, 2, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	f := &fixture{dir: dir}
	for _, tc := range []struct {
		file           string
		steps, tensors int
	}{
		{"slerp.yaml", 1, len(base)},
		{"ties.yaml", 1, len(base)},
		{"pipeline.yaml", 2, 2 + 6*9 + 1},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r := f.recipe(t, tc.file, texts[tc.file])
			out := filepath.Join(dir, strings.TrimSuffix(tc.file, ".yaml")+"-merged")
			reps := f.run(t, r, Options{Out: out, IntermediateDir: filepath.Join(dir, "steps")})
			if len(reps) != tc.steps {
				t.Fatalf("%d steps", len(reps))
			}
			got, _ := readCkpt(t, out)
			if len(got) != tc.tensors {
				t.Errorf("%d tensors, want %d", len(got), tc.tensors)
			}
			for name, x := range got {
				if x.dtype != dtype.BF16 {
					t.Errorf("%s: %s", name, x.dtype)
				}
			}
		})
	}
}
