package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	"github.com/gomerge/gomerge/internal/testexec"
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
	if err := testexec.Inputs(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// llamaGenerate runs testdata/node/generate.mjs in node (see nodeDir): llama.cpp
// loads each model, with its adapter for a "MODEL.gguf,lora=ADAPTER.gguf[,scale=S]"
// argument, and generates n greedy tokens. It returns the tokens per argument, in
// order; a model whose run printed nothing fails the test.
func llamaGenerate(t *testing.T, node string, n int, models ...string) [][]int {
	t.Helper()
	gen := exec.Command("node", append([]string{"generate.mjs", strconv.Itoa(n)}, models...)...)
	gen.Dir = node
	gen.Stderr = os.Stderr
	out, err := gen.Output()
	if err != nil {
		t.Fatalf("node-llama-cpp %v: %v\n%s", models, err, out)
	}
	var tokens [][]int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var r struct {
			Generated []int `json:"generated"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("node-llama-cpp output %q: %v", sc.Text(), err)
		}
		tokens = append(tokens, r.Generated)
	}
	if len(tokens) != len(models) {
		t.Fatalf("node-llama-cpp printed %d runs for %d models: %s", len(tokens), len(models), out)
	}
	return tokens
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
	// llama.cpp's Q4_K_M mix on a model whose rows (64) fill no K-quant block: every
	// weight falls back (Q4_K to Q5_0, Q6_K and the output to Q8_0).
	merges = append(merges, []string{"sfa", "--anchor", p("anchor"), "--current", p("other"), "--dtype", "q4_k_m", "--out", p("sfa-q4_k_m")})
	// K-quant inputs mixed as llama.cpp's Q4_K_M mixes them (Q6_K for the output and
	// ffn_down, Q4_K elsewhere): merged without --dtype they stay that mix; with
	// --dtype every K-quant type is written.
	kAnchor := q4KM(t, gguftest.Random(gguftest.KTiny, dtype.Q4_K, 4))
	if err := gguftest.WriteFile(p("k-anchor"), gguftest.Metadata(gguftest.KTiny, "k"), kAnchor); err != nil {
		t.Fatal(err)
	}
	kCurrent := q4KM(t, gguftest.Random(gguftest.KTiny, dtype.Q4_K, 5))
	if err := gguftest.WriteFile(p("k-current"), gguftest.Metadata(gguftest.KTiny, "k"), kCurrent); err != nil {
		t.Fatal(err)
	}
	merges = append(merges,
		[]string{"linear", p("k-anchor"), p("k-current"), "--out", p("k-linear")},
		[]string{"sfa", "--anchor", p("k-anchor"), "--current", p("k-current"), "--beta", "0", "--out", p("k-beta0")},
		// F16 inputs written as llama.cpp's Q4_K_M and Q3_K_M mixes.
		[]string{"sfa", "--anchor", p("k-f16a"), "--current", p("k-f16c"), "--beta", "0.5", "--dtype", "q4_k_m", "--out", p("k-sfa-q4_k_m")},
		[]string{"sfa", "--anchor", p("k-f16a"), "--current", p("k-f16c"), "--beta", "0.5", "--dtype", "q3_k_m", "--out", p("k-sfa-q3_k_m")})
	for i, name := range []string{"k-f16a", "k-f16c"} {
		if err := gguftest.WriteFile(p(name), gguftest.Metadata(gguftest.KTiny, "k"), gguftest.Random(gguftest.KTiny, dtype.F16, uint64(20+i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, dt := range kTypes {
		merges = append(merges, []string{"sfa", "--anchor", p("k-anchor"), "--current", p("k-current"), "--beta", "0.5", "--dtype", dt, "--out", p("k-sfa-" + dt)})
		// A current model all in one K-quant type, and β = 0 into it (the output takes
		// the current model's types).
		d, err := dtype.ParseFloat(dt)
		if err != nil {
			t.Fatal(err)
		}
		if err := gguftest.WriteFile(p("k-current-"+dt), gguftest.Metadata(gguftest.KTiny, "k"), gguftest.Random(gguftest.KTiny, d, uint64(10+i))); err != nil {
			t.Fatal(err)
		}
		merges = append(merges, []string{"sfa", "--anchor", p("k-anchor"), "--current", p("k-current-" + dt), "--beta", "0", "--out", p("k-beta0-" + dt)})
	}
	for _, args := range merges {
		if code, _, stderr := gomerge(t, append(args, "--json")...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
	}
	// llama.cpp loads and runs every type gomerge writes (the sfa-* files), not only
	// Q8_0.
	files := []string{p("anchor"), p("current"), p("beta0"), p("beta05"), p("beta05q4"), p("ties"),
		p("k-anchor"), p("k-current"), p("k-linear"), p("k-beta0")}
	for _, dt := range []string{"q5_1", "q5_0", "q4_1", "f16", "bf16", "f32", "q4_k_m"} {
		files = append(files, p("sfa-"+dt))
	}
	files = append(files, p("k-sfa-q4_k_m"), p("k-sfa-q3_k_m"))
	for _, dt := range kTypes {
		files = append(files, p("k-sfa-"+dt), p("k-current-"+dt), p("k-beta0-"+dt))
	}
	checkKTypes(t, p)

	all, err := filepath.Glob(filepath.Join(dir, "*.gguf"))
	if err != nil || len(all) != 37 {
		t.Fatalf("%d GGUF files written (%v), want 37", len(all), err)
	}
	check := exec.Command("node", append([]string{"check.mjs"}, all...)...)
	check.Dir = node
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("@huggingface/gguf check: %v\n%s", err, out)
	}

	tokens := map[string][]int{}
	for i, toks := range llamaGenerate(t, node, 12, files...) {
		tokens[strings.TrimSuffix(filepath.Base(files[i]), ".gguf")] = toks
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
	// The same for the K-quants (the Q4_K_M mix, then each type alone). β = 0 gives
	// the current model's bytes: where the lerp equals an input of the output's type,
	// sfa copies its bytes, so even Q3_K, whose quantizer (ggml's) does not give a
	// block back from its own dequantized values, is exact (docs/kquants.md).
	for _, s := range append([]string{""}, kTypes...) {
		cur, b0 := "k-current", "k-beta0"
		if s != "" {
			cur, b0 = cur+"-"+s, b0+"-"+s
		}
		if !slices.Equal(tokens[b0], tokens[cur]) {
			t.Errorf("%s: β = 0 generated %v, the current model %v", b0, tokens[b0], tokens[cur])
		}
		if slices.Equal(tokens["k-anchor"], tokens[cur]) {
			t.Errorf("%s and k-anchor generate the same tokens %v: the β = 0 check proves nothing", cur, tokens[cur])
		}
	}
	t.Logf("tokens: %v", tokens)
}

// kTypes are the K-quant --dtype values the llama.cpp test writes.
var kTypes = []string{"q2_k", "q3_k", "q4_k", "q5_k", "q6_k"}

// q4KM re-encodes ts the way llama.cpp's Q4_K_M mix stores a model this small: Q6_K
// for output.weight and every ffn_down and attn_v, Q4_K for the other weights, F32
// norms.
func q4KM(t *testing.T, ts []gguftest.Tensor) []gguftest.Tensor {
	t.Helper()
	for i, x := range ts {
		if len(x.Shape) < 2 || !(x.Name == "output.weight" || strings.HasSuffix(x.Name, ".ffn_down.weight") || strings.HasSuffix(x.Name, ".attn_v.weight")) {
			continue
		}
		b := make([]byte, dtype.Q6_K.Bytes(x.NumElements()))
		if err := dtype.Encode(b, x.Float32(), dtype.Q6_K); err != nil {
			t.Fatal(err)
		}
		ts[i] = gguftest.Tensor{Name: x.Name, DType: dtype.Q6_K, Shape: x.Shape, Data: b}
	}
	return ts
}

// checkKTypes reads back the K-quant merges: without --dtype each tensor has the
// reference's type (the Q4_K_M mix) and general.file_type is not added; with --dtype T
// every 2-D tensor is T, norms stay F32, and general.file_type is llama.cpp's number
// for a file mostly of T. Q2_K and Q6_K name llama.cpp's file types too, whose rules
// give this one-layer model (worked by hand) Q6_K for the output, and for Q2_K Q3_K
// for attn_v, attn_output and ffn_down.
func checkKTypes(t *testing.T, p func(string) string) {
	t.Helper()
	_, ref, err := gguftest.Read(p("k-anchor"))
	if err != nil {
		t.Fatal(err)
	}
	ftypes := map[string]uint32{"q2_k": 10, "q3_k": 12, "q4_k": 15, "q5_k": 17, "q6_k": 18}
	for _, name := range append([]string{"k-linear", "k-beta0"}, kTypes...) {
		file := name
		var want dtype.DType
		if _, ok := ftypes[name]; ok {
			file = "k-sfa-" + name
			if want, err = dtype.ParseFloat(name); err != nil {
				t.Fatal(err)
			}
		}
		meta, got, err := gguftest.Read(p(file))
		if err != nil {
			t.Fatal(err)
		}
		for i, g := range got {
			w := want
			if w == dtype.Invalid || len(g.Shape) < 2 {
				w = ref[i].DType
			} else if name == "q2_k" && g.Name == "output.weight" {
				w = dtype.Q6_K
			} else if name == "q2_k" && (strings.HasSuffix(g.Name, "attn_v.weight") || strings.HasSuffix(g.Name, "attn_output.weight") || strings.HasSuffix(g.Name, "ffn_down.weight")) {
				w = dtype.Q3_K
			}
			if g.DType != w {
				t.Errorf("%s: tensor %s is %s, want %s", file, g.Name, g.DType, w)
			}
		}
		var ft []any
		for _, kv := range meta {
			if kv.Key == "general.file_type" {
				ft = append(ft, kv.Value.Data)
			}
		}
		if wantFT, ok := ftypes[name]; ok && (len(ft) != 1 || ft[0] != wantFT) {
			t.Errorf("%s: general.file_type %v, want [%d]", file, ft, wantFT)
		} else if !ok && len(ft) != 0 {
			t.Errorf("%s: general.file_type %v added, the inputs have none", file, ft)
		}
	}
	for _, dt := range kTypes {
		_, cur, err := gguftest.Read(p("k-current-" + dt))
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := gguftest.Read(p("k-beta0-" + dt))
		if err != nil {
			t.Fatal(err)
		}
		for i, g := range got {
			if g.DType != cur[i].DType {
				t.Errorf("k-beta0-%s: tensor %s is %s, the current model's is %s", dt, g.Name, g.DType, cur[i].DType)
			}
		}
	}
}
