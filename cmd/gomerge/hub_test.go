package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gomerge/gomerge/hub/hubtest"
)

const hubSecret = "hf_TOKENthatMustNeverBePrinted"

// hubEnv points the Hugging Face variables at a fake Hub and an empty cache.
func hubEnv(t *testing.T, s *hubtest.Server) string {
	cache := t.TempDir()
	t.Setenv("HF_ENDPOINT", s.Endpoint())
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_HOME", t.TempDir())
	t.Setenv("HF_TOKEN", hubSecret)
	t.Setenv("HF_HUB_OFFLINE", "")
	t.Setenv("TRANSFORMERS_OFFLINE", "")
	return cache
}

func folderFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

func noSecret(t *testing.T, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, hubSecret) {
			t.Errorf("the token was printed: %q", s)
		}
	}
}

// TestHubIDsOnTheCommandLine: merge commands, distance and inspect take Hub ids, and
// download what they need once.
func TestHubIDsOnTheCommandLine(t *testing.T) {
	f := newCLIFixture(t)
	s := hubtest.New(t)
	s.Token = hubSecret
	s.AddRepo("org/current", folderFiles(t, f.folder)) // three shards and an index
	s.AddRepo("org/anchor", map[string][]byte{"model.safetensors": mustRead(t, f.anchor), "config.json": []byte("{}")})
	s.Private("org/anchor")
	cache := hubEnv(t, s)

	out := filepath.Join(f.dir, "hub.safetensors")
	code, stdout, stderr := gomerge(t, "sfa", "--anchor", "org/anchor@main", "--current", "org/current", "--out", out)
	if code != 0 {
		t.Fatalf("sfa: %d %s", code, stderr)
	}
	noSecret(t, stdout, stderr)
	local := filepath.Join(f.dir, "local.safetensors")
	if code, _, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.folder, "--out", local); code != 0 {
		t.Fatal(stderr)
	}
	code, stdout, stderr = gomerge(t, "distance", out, local, "--json")
	if code != 0 || !strings.Contains(stdout, `"l2": 0,`) {
		t.Errorf("the merge from Hub ids differs from the local one: %d %s %s", code, stdout, stderr)
	}
	n := len(s.Requests())
	// Offline, from the cache now filled: no request.
	code, stdout, stderr = gomerge(t, "--offline", "distance", "org/current", "org/anchor", "--json")
	if code != 0 || len(s.Requests()) != n {
		t.Errorf("offline distance: %d %s, %d requests", code, stderr, len(s.Requests())-n)
	}
	code, stdout, _ = gomerge(t, "inspect", "org/current", "--offline")
	if code != 0 || !strings.Contains(stdout, filepath.Join(cache, "models--org--current", "snapshots")) {
		t.Errorf("inspect: %d %s", code, stdout)
	}
	code, _, stderr = gomerge(t, "linear", "org/current", "org/anchor:weight=2", "--out", filepath.Join(f.dir, "lin.safetensors"))
	if code != 0 {
		t.Errorf("linear: %d %s", code, stderr)
	}
	recipePath := filepath.Join(f.dir, "hub.yaml")
	if err := os.WriteFile(recipePath, []byte("merge_method: linear\nmodels:\n  - model: org/current\n  - model: org/anchor@main\n    parameters: {weight: 2}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = gomerge(t, "--offline", "run", recipePath, "--out", filepath.Join(f.dir, "recipe.safetensors"))
	if code != 0 {
		t.Errorf("run: %d %s", code, stderr)
	}
	code, stdout, stderr = gomerge(t, "distance", filepath.Join(f.dir, "recipe.safetensors"), filepath.Join(f.dir, "lin.safetensors"), "--json")
	if code != 0 || !strings.Contains(stdout, `"l2": 0,`) {
		t.Errorf("the recipe and the command differ: %d %s %s", code, stdout, stderr)
	}
	for _, r := range s.Requests() {
		if r.Host == "files" && r.Auth != "" {
			t.Errorf("the token went to the storage host")
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHubErrorsExitStatus: a model the Hub does not have or refuses, and an offline
// miss, are bad input (3), with a message that says what to do and no token; an
// unreachable Hub is a failure of another kind (1).
func TestHubErrorsExitStatus(t *testing.T) {
	s := hubtest.New(t)
	s.Token = hubSecret
	s.AddRepo("org/private", map[string][]byte{"model.safetensors": []byte("w")})
	s.Private("org/private")
	s.AddRepo("org/sharded", map[string][]byte{
		"model.safetensors.index.json":     []byte(`{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`),
		"model-00001-of-00002.safetensors": []byte("one"),
		"model-00002-of-00002.safetensors": []byte("two"),
	})
	cache := hubEnv(t, s)
	for _, tc := range []struct {
		args []string
		code int
		says []string
	}{
		{[]string{"download", "org/missing"}, exitBadInput, []string{"org/missing", "no such model"}},
		{[]string{"download", "org/sharded@v9"}, exitBadInput, []string{`no revision "v9"`}},
		{[]string{"download", "not-an-id"}, exitUsage, []string{"org/name"}},
		{[]string{"--offline", "download", "org/sharded"}, exitBadInput, []string{"not in the Hugging Face cache", "offline"}},
		{[]string{"--offline", "sfa", "--anchor", "org/sharded", "--current", "org/sharded", "--out", filepath.Join(cache, "x.safetensors")}, exitBadInput, []string{"org/sharded"}},
	} {
		code, stdout, stderr := gomerge(t, tc.args...)
		if code != tc.code {
			t.Errorf("%q: exit %d, want %d (%s)", tc.args, code, tc.code, stderr)
		}
		for _, w := range tc.says {
			if !strings.Contains(stderr, w) {
				t.Errorf("%q: %q does not say %q", tc.args, stderr, w)
			}
		}
		noSecret(t, stdout, stderr)
	}

	// A wrong token: refused, and not printed.
	const wrong = "hf_wrongTokenAlsoSecret"
	t.Setenv("HF_TOKEN", wrong)
	code, stdout, stderr := gomerge(t, "download", "org/private")
	if code != exitBadInput || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "token") || strings.Contains(stdout+stderr, wrong) {
		t.Errorf("wrong token: exit %d, %q", code, stderr)
	}
	t.Setenv("HF_TOKEN", "")
	code, _, stderr = gomerge(t, "download", "org/private")
	if code != exitBadInput || !strings.Contains(stderr, "set HF_TOKEN") {
		t.Errorf("no token: exit %d, %q", code, stderr)
	}
	t.Setenv("HF_TOKEN", hubSecret)

	// A partial cache offline names the file that is missing.
	if code, _, stderr := gomerge(t, "download", "org/sharded"); code != 0 {
		t.Fatal(stderr)
	}
	shard := filepath.Join(cache, "models--org--sharded", "snapshots")
	snaps, _ := os.ReadDir(shard)
	if len(snaps) != 1 {
		t.Fatalf("%d snapshots", len(snaps))
	}
	if err := os.Remove(filepath.Join(shard, snaps[0].Name(), "model-00002-of-00002.safetensors")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HF_HUB_OFFLINE", "1")
	code, _, stderr = gomerge(t, "download", "org/sharded")
	if code != exitBadInput || !strings.Contains(stderr, "model-00002-of-00002.safetensors") {
		t.Errorf("offline partial cache: exit %d, %q", code, stderr)
	}
	t.Setenv("HF_HUB_OFFLINE", "")

	s.Hub.Close()
	code, _, stderr = gomerge(t, "download", "org/other")
	if code != exitOther || !strings.Contains(stderr, "org/other") && !strings.Contains(stderr, "127.0.0.1") {
		t.Errorf("unreachable Hub: exit %d, %q", code, stderr)
	}
	noSecret(t, stderr)
}

// TestTwoProcessesFetchOneCopy runs two gomerge processes that download the same
// model into one cache at the same time: the storage host is asked for each blob
// once, and both see the same complete snapshot.
func TestTwoProcessesFetchOneCopy(t *testing.T) {
	bin := buildGomerge(t)
	s := hubtest.New(t)
	s.Token = hubSecret
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	shard2 := bytes.Repeat([]byte("fedcba9876543210"), 1<<15)
	s.AddRepo("org/m", map[string][]byte{
		"config.json":                      []byte(`{"model_type":"llama"}`),
		"model.safetensors.index.json":     []byte(`{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`),
		"model-00001-of-00002.safetensors": big,
		"model-00002-of-00002.safetensors": shard2,
	})
	// Neither process gets the big shard before both have asked for it: they are then
	// known to be at it at once.
	s.HoldUntilHeads("model-00001-of-00002.safetensors", 2)
	cache := hubEnv(t, s)

	var wg sync.WaitGroup
	outs := make([]string, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(context.Background(), bin, "download", "org/m") // bin runs itself (an emulator wrapper under emulation)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			outs[i] = string(out)
			if err != nil {
				errs[i] = err
				outs[i] += stderr.String()
			}
			noSecret(t, string(out), stderr.String())
		}()
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("process %d: %v: %s", i, errs[i], outs[i])
		}
	}
	if outs[0] != outs[1] || !strings.HasPrefix(outs[0], cache) {
		t.Fatalf("the processes printed %q and %q", outs[0], outs[1])
	}
	gets, heads := map[string]int{}, 0
	for _, r := range s.Requests() {
		if r.Host == "files" {
			gets[filepath.Base(r.Path)]++
		}
		if r.Method == "HEAD" && strings.HasSuffix(r.Path, "model-00001-of-00002.safetensors") {
			heads++
		}
	}
	if heads != 2 {
		t.Errorf("%d HEAD requests for the big shard, want one per process", heads)
	}
	blobs, err := os.ReadDir(filepath.Join(cache, "models--org--m", "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 4 {
		t.Errorf("%d blobs, want 4", len(blobs))
	}
	for _, data := range [][]byte{big, shard2} {
		sum := sha256.Sum256(data)
		etag := hex.EncodeToString(sum[:])
		if gets[etag] != 1 {
			t.Errorf("blob %s fetched %d times, want once", etag[:8], gets[etag])
		}
		got, err := os.ReadFile(filepath.Join(cache, "models--org--m", "blobs", etag))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("blob %s corrupt (%v)", etag[:8], err)
		}
	}
	snap := strings.TrimSpace(outs[0])
	for _, name := range []string{"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
		if _, err := os.Stat(filepath.Join(snap, name)); err != nil {
			t.Error(err)
		}
	}
}

// TestDownloadProgressOnlyOnATerminal: the bar goes to stderr on a terminal, and
// nowhere otherwise.
func TestDownloadProgressOnlyOnATerminal(t *testing.T) {
	s := hubtest.New(t)
	s.Token = hubSecret
	s.AddRepo("org/m", map[string][]byte{"model.safetensors": bytes.Repeat([]byte{1}, 1<<20)})
	s.AddRepo("org/n", map[string][]byte{"model.safetensors": bytes.Repeat([]byte{2}, 1<<20)})
	hubEnv(t, s)
	for _, tc := range []struct {
		repo string
		tty  bool
	}{{"org/m", true}, {"org/n", false}} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut, ErrTTY: tc.tty}, []string{"download", tc.repo})
		if code != 0 {
			t.Fatalf("%s: %d %s", tc.repo, code, errOut.String())
		}
		if got := strings.Contains(errOut.String(), "downloading "+tc.repo); got != tc.tty {
			t.Errorf("tty %v: bar drawn %v: %q", tc.tty, got, errOut.String())
		}
		noSecret(t, out.String(), errOut.String())
	}
}
