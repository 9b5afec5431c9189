package recipe

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/hub"
	"github.com/gomerge/gomerge/hub/hubtest"
	"github.com/gomerge/gomerge/merge"
)

// upload puts a fixture model's folder on the fake Hub as org/<name>.
func upload(t *testing.T, s *hubtest.Server, f *fixture, name string) string {
	t.Helper()
	files := map[string][]byte{}
	entries, err := os.ReadDir(f.path(name))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(f.path(name), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return s.AddRepo("org/"+name, files)
}

// TestRecipeHubIDs runs the pipeline with every model named by Hub id (a branch, the
// default, a commit hash) and checks that it writes what the same pipeline writes
// from local folders.
func TestRecipeHubIDs(t *testing.T) {
	f := newFixture(t, dtype.BF16)
	t.Chdir(f.dir)
	s := hubtest.New(t)
	for _, n := range []string{"base", "a", "b"} {
		upload(t, s, f, n)
	}
	commitC := upload(t, s, f, "c")
	ids := strings.NewReplacer("base_model: base", "base_model: org/base@main", "model: a", "model: org/a",
		"model: b", "model: org/b", "model: c", "model: org/c@"+commitC)
	hubPipeline := ids.Replace(pipeline)
	if hubPipeline == pipeline || strings.Contains(hubPipeline, "model: a\n") {
		t.Fatal("the replacements did not apply")
	}

	local := f.recipe(t, "local.yaml", pipeline)
	f.run(t, local, Options{Out: f.path("local-final"), IntermediateDir: f.path("local-steps")})

	// Without a resolver, only the (empty) cache is looked at: nothing downloads.
	cache := t.TempDir()
	t.Setenv("HF_HUB_CACHE", cache)
	r := f.recipe(t, "hub.yaml", hubPipeline)
	_, err := PlanRecipe(r, Options{Out: f.path("hub-final"), IntermediateDir: f.path("hub-steps")})
	if !errors.Is(err, hub.ErrNotCached) || !errors.Is(err, merge.ErrBadInput) || !strings.HasPrefix(err.Error(), f.path("hub.yaml")+":") {
		t.Fatalf("plan without a resolver: %v", err)
	}

	c := &hub.Client{Endpoint: s.Endpoint(), CacheDir: cache}
	ctx := context.Background()
	opts := Options{Out: f.path("hub-final"), IntermediateDir: f.path("hub-steps"),
		Resolve: func(name string) (string, error) { return c.Resolve(ctx, name) }}
	f.run(t, r, opts)
	compareFolders(t, f.path("local-final"), f.path("hub-final"))

	// Now the cache has them: the default resolution (cache only) finds them too.
	opts.Resolve = nil
	if _, err := PlanRecipe(r, opts); err != nil {
		t.Fatalf("plan from the filled cache: %v", err)
	}
}

// compareFolders: the same files, and the same tensors (the metadata names the
// inputs, which differ).
func compareFolders(t *testing.T, a, b string) {
	t.Helper()
	ea, err := os.ReadDir(a)
	if err != nil {
		t.Fatal(err)
	}
	eb, _ := os.ReadDir(b)
	if len(ea) != len(eb) || len(ea) < 2 {
		t.Fatalf("%s has %d files, %s %d", a, len(ea), b, len(eb))
	}
	for _, e := range ea {
		if strings.HasSuffix(e.Name(), ".safetensors") {
			continue
		}
		x, _ := os.ReadFile(filepath.Join(a, e.Name()))
		y, err := os.ReadFile(filepath.Join(b, e.Name()))
		if err != nil || string(x) != string(y) {
			t.Errorf("%s differs (%v)", e.Name(), err)
		}
	}
	ta, order := readCkpt(t, a)
	tb, _ := readCkpt(t, b)
	if len(ta) != len(tb) || len(order) == 0 {
		t.Fatalf("%d tensors, %d", len(ta), len(tb))
	}
	for _, name := range order {
		if string(ta[name].data) != string(tb[name].data) {
			t.Errorf("tensor %s differs", name)
		}
	}
}

// TestLocateLoRAHalves: model+adapter references are located side by side, each a
// local path or a Hub id.
func TestLocateLoRAHalves(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.Mkdir("local-lora", 0o755); err != nil {
		t.Fatal(err)
	}
	resolved := map[string]int{}
	c := &catalog{resolveHub: func(name string) (string, error) {
		resolved[name]++
		return "/cache/" + name, nil
	}}
	for in, want := range map[string]string{
		"org/m+local-lora":  "/cache/org/m+local-lora",
		"org/m+org/lora@v1": "/cache/org/m+/cache/org/lora@v1",
		"local-lora":        "local-lora",
		"not/a/hub/id":      "not/a/hub/id",
	} {
		got, err := c.locate(ModelRef{Name: in})
		if err != nil || got != want {
			t.Errorf("%s: %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := c.locate(ModelRef{Name: "org/m"}); err != nil || resolved["org/m"] != 1 {
		t.Errorf("org/m resolved %d times, want once (%v)", resolved["org/m"], err)
	}
}
