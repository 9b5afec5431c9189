package hub_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gomerge/gomerge/hub"
	"github.com/gomerge/gomerge/hub/hubtest"
)

const secret = "hf_SECRETtokenValue123"

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// shardedModel is a repository as the Hub holds a sharded model: what gomerge
// needs, and files it must leave alone.
func shardedModel() map[string][]byte {
	return map[string][]byte{
		"config.json":                       []byte(`{"model_type":"llama"}`),
		"tokenizer.json":                    []byte(`{"model":{}}`),
		"tokenizer_config.json":             []byte(`{}`),
		"model.safetensors.index.json":      []byte(`{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}`),
		"model-00001-of-00002.safetensors":  randBytes(300_000, 1),
		"model-00002-of-00002.safetensors":  randBytes(200_001, 2),
		"pytorch_model.bin":                 randBytes(1000, 3),
		"modeling_custom.py":                []byte("import os"),
		"README.md":                         []byte("# model"),
		"onnx/model.onnx":                   randBytes(100, 4),
		"original/consolidated.safetensors": randBytes(100, 5),
	}
}

func newClient(s *hubtest.Server, cache string) *hub.Client {
	return &hub.Client{Endpoint: s.Endpoint(), CacheDir: cache, Parallel: 3}
}

func TestSnapshotDownloadsWhatIsNeeded(t *testing.T) {
	s := hubtest.New(t)
	files := shardedModel()
	commit := s.AddRepo("org/model", files)
	cache := t.TempDir()
	c := newClient(s, cache)
	c.Token = secret
	s.Token = secret
	var total, added atomic.Int64
	var doneCalls atomic.Int32
	c.Progress = func(_ hub.Ref, n int64) (func(int64), func()) {
		total.Add(n)
		return func(k int64) { added.Add(k) }, func() { doneCalls.Add(1) }
	}
	dir, err := c.Resolve(context.Background(), "org/model")
	if err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(cache, "models--org--model")
	if want := filepath.Join(repoDir, "snapshots", commit); dir != want {
		t.Fatalf("snapshot %s, want %s", dir, want)
	}
	want := []string{"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json",
		"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
	for _, name := range want {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(files[name]) {
			t.Errorf("%s: contents differ", name)
		}
		// A relative symlink to the blob named by its etag, as huggingface_hub makes.
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatalf("%s: not a symlink: %v", name, err)
		}
		etag := hubtest.GitBlobSHA1(files[name])
		if hubtest.IsLFS(name) {
			sum := sha256.Sum256(files[name])
			etag = hex.EncodeToString(sum[:])
		}
		if target != filepath.Join("..", "..", "blobs", etag) {
			t.Errorf("%s links to %s", name, target)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(want) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("snapshot holds %v, want only %v", names, want)
	}
	if ref, _ := os.ReadFile(filepath.Join(repoDir, "refs", "main")); string(ref) != commit {
		t.Errorf("refs/main = %q, want %s", ref, commit)
	}
	blobs, _ := os.ReadDir(filepath.Join(repoDir, "blobs"))
	for _, b := range blobs {
		if strings.HasSuffix(b.Name(), ".incomplete") {
			t.Errorf("left %s", b.Name())
		}
	}
	if len(blobs) != len(want) {
		t.Errorf("%d blobs, want %d", len(blobs), len(want))
	}
	var sum int64
	for _, n := range want {
		sum += int64(len(files[n]))
	}
	if total.Load() != sum || added.Load() != sum || doneCalls.Load() < 1 {
		t.Errorf("progress: total %d, added %d, done %d; want %d bytes", total.Load(), added.Load(), doneCalls.Load(), sum)
	}
	for _, r := range s.Requests() {
		if r.Host == "files" && r.Auth != "" {
			t.Errorf("the token went to the storage host: %s %s", r.Method, r.Path)
		}
		if r.Host == "hub" && r.Auth != "Bearer "+secret {
			t.Errorf("%s %s without the token", r.Method, r.Path)
		}
		for _, skip := range []string{"pytorch_model.bin", ".py", "README", "onnx", "original"} {
			if strings.Contains(r.Path, skip) {
				t.Errorf("fetched %s, which a merge does not need", r.Path)
			}
		}
	}

	// Again, offline: the cache alone answers, and the same folder comes back.
	n := len(s.Requests())
	off := newClient(s, cache)
	off.Offline = true
	dir2, err := off.Resolve(context.Background(), "org/model")
	if err != nil || dir2 != dir {
		t.Fatalf("offline: %s, %v", dir2, err)
	}
	dir3, err := off.Resolve(context.Background(), "org/model@"+commit)
	if err != nil || dir3 != dir {
		t.Fatalf("offline by commit: %s, %v", dir3, err)
	}
	// Online by commit hash with a complete snapshot: no request at all.
	if _, err := c.Resolve(context.Background(), "org/model@"+commit); err != nil {
		t.Fatal(err)
	}
	if len(s.Requests()) != n {
		t.Errorf("%d requests for a cached commit", len(s.Requests())-n)
	}
}

// writePythonCache lays a model out as huggingface_hub does, without gomerge.
func writePythonCache(t *testing.T, cache, repo, rev, commit string, files map[string][]byte) string {
	t.Helper()
	rd := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	snap := filepath.Join(rd, "snapshots", commit)
	for name, data := range files {
		sum := sha256.Sum256(data)
		blob := filepath.Join(rd, "blobs", hex.EncodeToString(sum[:]))
		must(t, os.MkdirAll(filepath.Dir(blob), 0o755))
		must(t, os.WriteFile(blob, data, 0o644))
		p := filepath.Join(snap, filepath.FromSlash(name))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		rel, _ := filepath.Rel(filepath.Dir(p), blob)
		must(t, os.Symlink(rel, p))
	}
	must(t, os.MkdirAll(filepath.Join(rd, "refs"), 0o755))
	must(t, os.WriteFile(filepath.Join(rd, "refs", rev), []byte(commit), 0o644))
	return snap
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCacheWrittenByOtherTools(t *testing.T) {
	home := t.TempDir()
	commit := strings.Repeat("ab", 20)
	snap := writePythonCache(t, filepath.Join(home, "hub"), "org/m", "main", commit, map[string][]byte{
		"config.json": []byte("{}"), "model.safetensors": []byte("weights"),
	})
	for _, env := range []struct{ name, value string }{
		{"HF_HOME", home},
		{"HF_HUB_CACHE", filepath.Join(home, "hub")},
		{"HUGGINGFACE_HUB_CACHE", filepath.Join(home, "hub")},
	} {
		t.Run(env.name, func(t *testing.T) {
			for _, v := range []string{"HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT"} {
				t.Setenv(v, "")
			}
			t.Setenv(env.name, env.value)
			t.Setenv("HF_HUB_OFFLINE", "1")
			c := hub.FromEnv()
			if !c.Offline {
				t.Fatal("HF_HUB_OFFLINE=1 not offline")
			}
			got, err := c.Resolve(context.Background(), "org/m")
			if err != nil || got != snap {
				t.Fatalf("got %s, %v; want %s", got, err, snap)
			}
		})
	}
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HUGGINGFACE_HUB_CACHE", "")
	t.Setenv("HF_HOME", home)
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "")
	must(t, os.WriteFile(filepath.Join(home, "token"), []byte(secret+"\n"), 0o600))
	t.Setenv("HF_ENDPOINT", "http://example.invalid/")
	c := hub.FromEnv()
	if c.Token != secret || c.Endpoint != "http://example.invalid" {
		t.Errorf("token file or endpoint not read: endpoint %q", c.Endpoint)
	}
}

func TestOfflinePartialCacheNamesTheMissingFile(t *testing.T) {
	cache := t.TempDir()
	commit := strings.Repeat("cd", 20)
	files := shardedModel()
	snap := writePythonCache(t, cache, "org/m", "main", commit, map[string][]byte{
		"config.json":                      files["config.json"],
		"model.safetensors.index.json":     files["model.safetensors.index.json"],
		"model-00001-of-00002.safetensors": files["model-00001-of-00002.safetensors"],
	})
	c := &hub.Client{CacheDir: cache, Offline: true, Endpoint: "http://127.0.0.1:1"}
	_, err := c.Resolve(context.Background(), "org/m")
	if !errors.Is(err, hub.ErrNotCached) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error %v, want ErrNotCached", err)
	}
	for _, want := range []string{"model-00002-of-00002.safetensors", snap, "offline"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %q", err, want)
		}
	}
	// A snapshot link whose blob is gone is as missing as no link.
	blob, _ := filepath.EvalSymlinks(filepath.Join(snap, "model-00001-of-00002.safetensors"))
	must(t, os.Remove(blob))
	_, err = c.Resolve(context.Background(), "org/m")
	if err == nil || !strings.Contains(err.Error(), "model-00001-of-00002.safetensors") {
		t.Errorf("dangling link: %v", err)
	}
	for ref, want := range map[string]string{
		"org/other":           "models--org--other",
		"org/m@v2":            filepath.Join("refs", "v2"),
		"org/m@" + commit[:8]: filepath.Join("refs", commit[:8]),
		"org/m/x.gguf":        "x.gguf",
	} {
		_, err := c.Resolve(context.Background(), ref)
		if !errors.Is(err, hub.ErrNotCached) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want ErrNotCached naming %s", ref, err, want)
		}
	}
}

func TestHubErrors(t *testing.T) {
	s := hubtest.New(t)
	s.Token = secret
	s.AddRepo("org/public", map[string][]byte{"model.safetensors": []byte("w")})
	s.AddRepo("org/private", map[string][]byte{"model.safetensors": []byte("w")})
	s.Private("org/private")
	s.AddRepo("org/gated", map[string][]byte{"model.safetensors": []byte("w")})
	s.Gated("org/gated")
	s.AddRepo("org/noweights", map[string][]byte{"config.json": []byte("{}")})
	s.AddRepo("org/badindex", map[string][]byte{"model.safetensors.index.json": []byte(`{"weight_map":{"a":"gone.safetensors"}}`)})
	for _, tc := range []struct {
		ref, token string
		kind       error
		says       []string
	}{
		{"org/missing", "", hub.ErrNotFound, []string{"no such model", "set HF_TOKEN"}},
		{"org/missing", secret, hub.ErrNotFound, []string{"no such model"}},
		{"org/private", "", hub.ErrNotFound, []string{"private", "HF_TOKEN"}},
		{"org/private", "hf_wrong", hub.ErrAccess, []string{"401", "refused the token"}},
		{"org/gated", "", hub.ErrAccess, []string{"gated"}},
		{"org/public@nope", "", hub.ErrNotFound, []string{`no revision "nope"`}},
		{"org/public/x.gguf", "", hub.ErrNotFound, []string{"x.gguf", "no such file"}},
		{"org/noweights", "", hub.ErrNotFound, []string{"no weights", "model.safetensors"}},
		{"org/badindex", "", hub.ErrNotFound, []string{"gone.safetensors"}},
	} {
		t.Run(tc.ref+"/"+tc.token, func(t *testing.T) {
			c := newClient(s, t.TempDir())
			c.Token = tc.token
			_, err := c.Resolve(context.Background(), tc.ref)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("error %v, want %v", err, tc.kind)
			}
			for _, w := range tc.says {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "hf_wrong") {
				t.Errorf("the token is in the message: %q", err)
			}
		})
	}
	// With the token, the private and gated ones are served.
	c := newClient(s, t.TempDir())
	c.Token = secret
	for _, ref := range []string{"org/private", "org/gated"} {
		if _, err := c.Resolve(context.Background(), ref); err != nil {
			t.Errorf("%s with the token: %v", ref, err)
		}
	}
}

func TestResumeAfterDroppedConnection(t *testing.T) {
	s := hubtest.New(t)
	data := randBytes(1<<20, 7)
	s.AddRepo("org/m", map[string][]byte{"model.safetensors": data})
	s.DropOnce("model.safetensors", 300_000)
	c := newClient(s, t.TempDir())
	dir, err := c.Resolve(context.Background(), "org/m")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil || string(got) != string(data) {
		t.Fatalf("resumed file differs (%v)", err)
	}
	var ranges []string
	for _, r := range s.Requests() {
		if r.Host == "files" {
			ranges = append(ranges, r.Range)
		}
	}
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes=300000-" {
		t.Errorf("storage requests' ranges %q, want one whole and one from 300000", ranges)
	}
}

func TestResumeFromAnotherRunsIncompleteFile(t *testing.T) {
	s := hubtest.New(t)
	data := randBytes(100_000, 8)
	s.AddRepo("org/m", map[string][]byte{"model.safetensors": data})
	cache := t.TempDir()
	sum := sha256.Sum256(data)
	blob := filepath.Join(cache, "models--org--m", "blobs", hex.EncodeToString(sum[:]))
	must(t, os.MkdirAll(filepath.Dir(blob), 0o755))
	must(t, os.WriteFile(blob+".incomplete", data[:12345], 0o644))
	if _, err := newClient(s, cache).Resolve(context.Background(), "org/m"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(blob)
	if string(got) != string(data) {
		t.Fatal("blob differs")
	}
	for _, r := range s.Requests() {
		if r.Host == "files" && r.Range != "bytes=12345-" {
			t.Errorf("storage request with range %q", r.Range)
		}
	}
}

func TestChecksumMismatchLeavesNothing(t *testing.T) {
	s := hubtest.New(t)
	s.AddRepo("org/m", map[string][]byte{"config.json": []byte("{}"), "model.safetensors": randBytes(50_000, 9)})
	s.Corrupt("model.safetensors")
	cache := t.TempDir()
	_, err := newClient(s, cache).Resolve(context.Background(), "org/m")
	if !errors.Is(err, hub.ErrChecksum) || !strings.Contains(err.Error(), "model.safetensors") || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("error %v, want a checksum error naming the file", err)
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "models--org--m", "snapshots", "*", "model.safetensors"))
	if len(matches) != 0 {
		t.Errorf("the corrupt file is in the snapshot: %v", matches)
	}
	blobs, _ := filepath.Glob(filepath.Join(cache, "models--org--m", "blobs", "*"))
	for _, b := range blobs {
		data, _ := os.ReadFile(b)
		if string(data) != "{}" {
			t.Errorf("left %s", filepath.Base(b))
		}
	}
}

func TestRevisionsAndSingleFile(t *testing.T) {
	s := hubtest.New(t)
	c1 := s.AddRepo("org/m", map[string][]byte{"model.safetensors": []byte("one"), "m-q4.gguf": []byte("gguf one")})
	c2 := s.AddRevision("org/m", "refs/pr/1", map[string][]byte{"model.safetensors": []byte("two")})
	cache := t.TempDir()
	c := newClient(s, cache)
	for ref, want := range map[string]string{
		"org/m":                filepath.Join("snapshots", c1),
		"org/m@" + c1:          filepath.Join("snapshots", c1),
		"org/m@refs/pr/1":      filepath.Join("snapshots", c2),
		"org/m/m-q4.gguf":      filepath.Join("snapshots", c1, "m-q4.gguf"),
		"org/m/m-q4.gguf@main": filepath.Join("snapshots", c1, "m-q4.gguf"),
	} {
		got, err := c.Resolve(context.Background(), ref)
		if err != nil || !strings.HasSuffix(got, want) {
			t.Errorf("%s: %s, %v; want …%s", ref, got, err, want)
		}
	}
	if ref, _ := os.ReadFile(filepath.Join(cache, "models--org--m", "refs", "refs", "pr", "1")); string(ref) != c2 {
		t.Errorf("refs/refs/pr/1 = %q", ref)
	}
	data, _ := os.ReadFile(filepath.Join(cache, "models--org--m", "snapshots", c1, "m-q4.gguf"))
	if string(data) != "gguf one" {
		t.Errorf("gguf %q", data)
	}
}

func TestUnreachableHubFallsBackToTheCache(t *testing.T) {
	s := hubtest.New(t)
	s.AddRepo("org/m", map[string][]byte{"model.safetensors": []byte("w")})
	cache := t.TempDir()
	c := newClient(s, cache)
	dir, err := c.Resolve(context.Background(), "org/m")
	if err != nil {
		t.Fatal(err)
	}
	s.Hub.Close()
	var notes []string
	c.Log = func(m string) { notes = append(notes, m) }
	got, err := c.Resolve(context.Background(), "org/m")
	if err != nil || got != dir || len(notes) != 1 {
		t.Fatalf("got %s, %v, notes %q", got, err, notes)
	}
	if _, err := c.Resolve(context.Background(), "org/other"); err == nil || errors.Is(err, hub.ErrNotFound) {
		t.Errorf("an unreachable Hub and no cache: %v, want a network error", err)
	}
}

func TestParseRef(t *testing.T) {
	for in, want := range map[string]hub.Ref{
		"org/name":                   {Repo: "org/name"},
		"org/name@v1.0":              {Repo: "org/name", Revision: "v1.0"},
		"org/name@refs/pr/3":         {Repo: "org/name", Revision: "refs/pr/3"},
		"Org-1/Na_me.v2/sub/f.GGUF":  {Repo: "Org-1/Na_me.v2", File: "sub/f.GGUF"},
		"org/name/f.gguf@0123abcdef": {Repo: "org/name", File: "f.gguf", Revision: "0123abcdef"},
	} {
		got, err := hub.ParseRef(in)
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v", in, got, err)
		}
		if got.String() != in {
			t.Errorf("%s prints as %s", in, got)
		}
	}
	for _, in := range []string{"", "name", "/abs/path", "org/", "/name", "org/na--me", "org/.name", "org/name-",
		"org/name@", "org/name@../x", "org/name@a b", "org/name/f.safetensors", "org/name/../x.gguf", "org/name//x.gguf",
		"o rg/name", "org/name@refs//x", strings.Repeat("a", 97) + "/b"} {
		if _, err := hub.ParseRef(in); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
	for in, want := range map[string]bool{"org/name": true, "./org/name": false, "../a/b": false, "/a/b": false, `a\b`: false, "a/b@main": true} {
		if hub.LooksLikeRef(in) != want {
			t.Errorf("LooksLikeRef(%q) = %v", in, !want)
		}
	}
}

// Example resolves a model as the command line does: the cache first, then the Hub.
func Example() {
	c := hub.FromEnv() // HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE
	dir, err := c.Resolve(context.Background(), "mistralai/Mistral-7B-v0.1@main")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(dir) // …/models--mistralai--Mistral-7B-v0.1/snapshots/<commit>
}
