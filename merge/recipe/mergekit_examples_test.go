package recipe

// TestMergekitExamples runs one recipe for each recipe in mergekit's examples/
// folder (github.com/arcee-ai/mergekit), each written here with the same structure:
// the same merge_method, keys, parameter shapes (scalars, gradients, filter lists),
// base_model, dtype and Hub-style org/name model ids, with the layer ranges scaled
// from the examples' 40-layer 13B models to the fixture's 10 layers (divided by 4).
// The ids are resolved through a fake Hugging Face cache (HF_HUB_CACHE, offline),
// laid out as Python's huggingface_hub lays it out.
//
//	arcee_fusion   mirrors examples/arcee_fusion.yml (model_a/model_b become Hub ids)
//	bio-merge      mirrors examples/bio-merge.yml (ties, normalize false, int8_mask)
//	gradient-slerp mirrors examples/gradient-slerp.yml (slices, [0, 40] -> [0, 10])
//	linear         mirrors examples/linear.yml
//	orcamini-platy mirrors examples/orcamini-platy-44layer.yml (passthrough,
//	               [0, 24] + [20, 40] -> [0, 6] + [5, 10]: 11 layers)
//	ties           mirrors examples/ties.yml (density/weight gradients, a filtered weight)
//
// Every case also runs with the ids replaced by the models' local folders and must
// write the same tensors, byte for byte.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/hub"
)

// mkLayers is the fixture's layer count (mergekit's 13B examples have 40).
const mkLayers = 10

var mkConfig = stt.LlamaConfig{Vocab: 32, Hidden: 16, Intermediate: 24, Layers: mkLayers, KVHidden: 8}

var mergekitExamples = []struct {
	name   string
	recipe string
	dt     dtype.DType
	layers int
}{
	{"arcee_fusion", `models:
  - model: acme/model-a
  - model: acme/model-b
merge_method: arcee_fusion
base_model: acme/model-a
dtype: bfloat16
`, dtype.BF16, mkLayers},
	{"bio-merge", `models:
  - model: mistralai/Mistral-7B-Instruct-v0.2
    parameters:
      density: 0.5
      weight: 0.5
  - model: BioMistral/BioMistral-7B
    parameters:
      density: 0.5
      weight: 0.5
merge_method: ties
base_model: mistralai/Mistral-7B-v0.1
parameters:
  normalize: false
  int8_mask: true
dtype: float16
`, dtype.F16, mkLayers},
	{"gradient-slerp", `slices:
  - sources:
      - model: psmathur/orca_mini_v3_13b
        layer_range: [0, 10]
      - model: garage-bAInd/Platypus2-13B
        layer_range: [0, 10]
merge_method: slerp
base_model: psmathur/orca_mini_v3_13b
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float16
`, dtype.F16, mkLayers},
	{"linear", `models:
  - model: psmathur/orca_mini_v3_13b
    parameters:
      weight: 1.0
  - model: WizardLM/WizardLM-13B-V1.2
    parameters:
      weight: 0.3
  - model: garage-bAInd/Platypus2-13B
    parameters:
      weight: 0.5
merge_method: linear
dtype: float16
`, dtype.F16, mkLayers},
	{"orcamini-platy", `slices:
  - sources:
    - model: psmathur/orca_mini_v3_13b
      layer_range: [0, 6]
  - sources:
    - model: garage-bAInd/Platypus2-13B
      layer_range: [5, 10]
merge_method: passthrough
dtype: float16
`, dtype.F16, 11},
	{"ties", `models:
  - model: psmathur/orca_mini_v3_13b
    parameters:
      density: [1, 0.7, 0.1]
      weight: 1.0
  - model: garage-bAInd/Platypus2-13B
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1]
  - model: WizardLM/WizardMath-13B-V1.0
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: TheBloke/Llama-2-13B-fp16
parameters:
  normalize: true
  int8_mask: true
dtype: float16
`, dtype.F16, mkLayers},
}

// mkModels are the Hub ids the examples name, each with its shard count (some
// sharded, so the cache's index is followed too). The first two of each family are
// fine-tunes of a shared base.
var mkModels = []struct {
	id     string
	shards int
}{
	{"acme/model-a", 1},
	{"acme/model-b", 2},
	{"mistralai/Mistral-7B-v0.1", 1},
	{"mistralai/Mistral-7B-Instruct-v0.2", 2},
	{"BioMistral/BioMistral-7B", 1},
	{"TheBloke/Llama-2-13B-fp16", 2},
	{"psmathur/orca_mini_v3_13b", 1},
	{"garage-bAInd/Platypus2-13B", 2},
	{"WizardLM/WizardLM-13B-V1.2", 1},
	{"WizardLM/WizardMath-13B-V1.0", 3},
}

// addToHFCache puts the files of folder src into the cache as repo id at a fresh
// commit on main: blobs named by their SHA-256, the snapshot's files relative
// symlinks to them, refs/main holding the commit.
func addToHFCache(t *testing.T, cache, id, src string, seed int) {
	t.Helper()
	repo := filepath.Join(cache, "models--"+strings.ReplaceAll(id, "/", "--"))
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s %d", id, seed)))
	commit := hex.EncodeToString(sum[:20])
	snap := filepath.Join(repo, "snapshots", commit)
	for _, d := range []string{filepath.Join(repo, "blobs"), filepath.Join(repo, "refs"), snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(data)
		blob := hex.EncodeToString(h[:])
		if err := os.WriteFile(filepath.Join(repo, "blobs", blob), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "blobs", blob), filepath.Join(snap, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(commit), 0o644); err != nil {
		t.Fatal(err)
	}
}

var mkLayerRE = regexp.MustCompile(`^model\.layers\.(\d+)\.`)

func TestMergekitExamples(t *testing.T) {
	dir := t.TempDir()
	local := filepath.Join(dir, "local")
	cache := filepath.Join(dir, "hf-cache")
	bases := map[string][]stt.Tensor{}
	for i, m := range mkModels {
		org := strings.Split(m.id, "/")[0]
		base, ok := bases[org]
		if !ok {
			base = stt.Random(mkConfig, dtype.F32, uint64(100+i))
			bases[org] = base
		}
		ts := stt.Perturb(base, 0.5, uint64(200+i))
		src := filepath.Join(local, strings.ReplaceAll(m.id, "/", "--"))
		if err := stt.WriteFolder(src, ts, m.shards, nil); err != nil {
			t.Fatal(err)
		}
		addToHFCache(t, cache, m.id, src, i)
	}
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_HUB_OFFLINE", "1")
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work) // so that no id is also a local path
	f := &fixture{dir: work}
	client := hub.FromEnv()
	if !client.Offline {
		t.Fatal("HF_HUB_OFFLINE=1 did not make the client offline")
	}

	var toLocal []string
	for _, m := range mkModels {
		toLocal = append(toLocal, "model: "+m.id+"\n", "model: "+filepath.Join(local, strings.ReplaceAll(m.id, "/", "--"))+"\n",
			"base_model: "+m.id+"\n", "base_model: "+filepath.Join(local, strings.ReplaceAll(m.id, "/", "--"))+"\n")
	}
	localize := strings.NewReplacer(toLocal...)

	for _, tc := range mergekitExamples {
		t.Run(tc.name, func(t *testing.T) {
			// The Hub ids, resolved from the cache: first with no resolver (the
			// cache only), then with the offline client's, as the command line does.
			r := f.recipe(t, tc.name+".yaml", tc.recipe)
			if _, err := PlanRecipe(r, Options{Out: f.path(tc.name + "-plan")}); err != nil {
				t.Fatalf("plan from the cache: %v", err)
			}
			hubOut := f.path(tc.name + "-hub")
			f.run(t, r, Options{Out: hubOut, IntermediateDir: f.path(tc.name + "-steps")})
			viaClient := f.path(tc.name + "-client")
			f.run(t, r, Options{Out: viaClient, IntermediateDir: f.path(tc.name + "-steps2"),
				Resolve: func(name string) (string, error) { return client.Resolve(context.Background(), name) }})
			sameTensors(t, viaClient, hubOut)

			// Every tensor there, with its shape and the recipe's dtype.
			want := mkConfig
			want.Layers = tc.layers
			names, shapes := want.Shapes()
			got, order := readCkpt(t, hubOut)
			if len(got) != len(names) {
				t.Errorf("%d tensors, want %d", len(got), len(names))
			}
			for i, n := range names {
				x, ok := got[n]
				if !ok {
					t.Errorf("no tensor %s", n)
					continue
				}
				if !slices.Equal(x.shape, shapes[i]) {
					t.Errorf("%s: shape %v, want %v", n, x.shape, shapes[i])
				}
				if x.dtype != tc.dt {
					t.Errorf("%s: %s, want %s", n, x.dtype, tc.dt)
				}
			}
			layers := map[string]bool{}
			for _, n := range order {
				if m := mkLayerRE.FindStringSubmatch(n); m != nil {
					layers[m[1]] = true
				}
			}
			if len(layers) != tc.layers {
				t.Errorf("%d layers, want %d", len(layers), tc.layers)
			}

			// The same recipe on the local folders writes the same tensors.
			text := localize.Replace(tc.recipe)
			if text == tc.recipe {
				t.Fatal("no id replaced by its local path")
			}
			for _, m := range mkModels {
				if strings.Contains(text, " "+m.id+"\n") {
					t.Fatalf("%s left in the local recipe", m.id)
				}
			}
			lr := f.recipe(t, tc.name+"-local.yaml", text)
			localOut := f.path(tc.name + "-local")
			f.run(t, lr, Options{Out: localOut, IntermediateDir: f.path(tc.name + "-local-steps")})
			sameTensors(t, hubOut, localOut)
		})
	}
}
