package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
)

// nodeDir returns testdata/node with its npm packages installed (CI runs `npm install`
// there). Without them the test is skipped, unless GOMERGE_REQUIRE_NODE=1 (CI sets
// it), where their absence is a failure.
func nodeDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../testdata/node")
	if err != nil {
		t.Fatal(err)
	}
	_, errNode := exec.LookPath("node")
	_, errMods := os.Stat(filepath.Join(dir, "node_modules", "node-llama-cpp"))
	if errNode != nil || errMods != nil {
		msg := "node or testdata/node/node_modules missing (cd testdata/node && npm install --omit=optional)"
		if os.Getenv("GOMERGE_REQUIRE_NODE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

// TestGGUFExternalClients writes tiny llama GGUF models, merges them with gomerge,
// and hands everything to two independent clients: @huggingface/gguf parses each file
// and checks offsets, alignment and size; llama.cpp (node-llama-cpp's prebuilt CPU
// binary) loads each model and generates greedily. β = 0 must give exactly the
// current model's tokens, and the anchor's tokens must differ (else the comparison
// would prove nothing).
func TestGGUFExternalClients(t *testing.T) {
	node := nodeDir(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name+".gguf") }
	write := func(name string, ts []gguftest.Tensor) {
		if err := gguftest.WriteFile(p(name), gguftest.Metadata(gguftest.Tiny, name), ts); err != nil {
			t.Fatal(err)
		}
	}
	anchor := gguftest.Random(gguftest.Tiny, dtype.Q8_0, 1)
	write("anchor", anchor)
	write("current", gguftest.Random(gguftest.Tiny, dtype.Q8_0, 2))
	write("other", gguftest.Perturb(anchor, 0.5, 3))
	merges := [][]string{
		{"sfa", "--anchor", p("anchor"), "--current", p("current"), "--beta", "0", "--out", p("beta0")},
		{"sfa", "--anchor", p("anchor"), "--current", p("current"), "--beta", "0.5", "--out", p("beta05")},
		{"sfa", "--anchor", p("anchor"), "--current", p("current"), "--beta", "0.5", "--dtype", "q4_0", "--out", p("beta05q4")},
		{"ties", "--base", p("anchor"), p("current"), p("other"), "--out", p("ties")},
	}
	for _, dt := range []string{"q5_1", "q5_0", "q4_1", "f16", "bf16", "f32"} {
		merges = append(merges, []string{"sfa", "--anchor", p("anchor"), "--current", p("other"), "--dtype", dt, "--out", p("sfa-" + dt)})
	}
	// K-quant inputs (written by gguftest as random blocks), merged into Q8_0.
	kAnchor := gguftest.Random(gguftest.KTiny, dtype.Q4_K, 4)
	if err := gguftest.WriteFile(p("k-anchor"), gguftest.Metadata(gguftest.KTiny, "k"), kAnchor); err != nil {
		t.Fatal(err)
	}
	if err := gguftest.WriteFile(p("k-current"), gguftest.Metadata(gguftest.KTiny, "k"), gguftest.Perturb(kAnchor, 1, 5)); err != nil {
		t.Fatal(err)
	}
	merges = append(merges, []string{"linear", p("k-anchor"), p("k-current"), "--out", p("k-linear")})
	for _, args := range merges {
		if code, _, stderr := gomerge(t, append(args, "--json")...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
	}
	// llama.cpp loads and runs every type gomerge writes (the sfa-* files), not only
	// Q8_0.
	files := []string{p("anchor"), p("current"), p("beta0"), p("beta05"), p("beta05q4"), p("ties")}
	for _, dt := range []string{"q5_1", "q5_0", "q4_1", "f16", "bf16", "f32"} {
		files = append(files, p("sfa-"+dt))
	}

	all, err := filepath.Glob(filepath.Join(dir, "*.gguf"))
	if err != nil || len(all) != 16 {
		t.Fatalf("%d GGUF files written (%v), want 16", len(all), err)
	}
	check := exec.Command("node", append([]string{"check.mjs"}, all...)...)
	check.Dir = node
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("@huggingface/gguf check: %v\n%s", err, out)
	}

	gen := exec.Command("node", append([]string{"generate.mjs", "12"}, files...)...)
	gen.Dir = node
	gen.Stderr = os.Stderr
	out, err := gen.Output()
	if err != nil {
		t.Fatalf("node-llama-cpp: %v\n%s", err, out)
	}
	tokens := map[string][]int{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var r struct {
			Model     string `json:"model"`
			Generated []int  `json:"generated"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("node-llama-cpp output %q: %v", sc.Text(), err)
		}
		tokens[strings.TrimSuffix(filepath.Base(r.Model), ".gguf")] = r.Generated
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".gguf")
		if len(tokens[name]) != 12 {
			t.Errorf("%s: generated %v, want 12 tokens", name, tokens[name])
		}
	}
	if !slices.Equal(tokens["beta0"], tokens["current"]) {
		t.Errorf("β = 0 generated %v, the current model %v", tokens["beta0"], tokens["current"])
	}
	if slices.Equal(tokens["anchor"], tokens["current"]) {
		t.Errorf("anchor and current generate the same tokens %v: the β = 0 check proves nothing", tokens["anchor"])
	}
	t.Logf("tokens: %v", tokens)
}
