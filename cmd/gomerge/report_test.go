package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	gmreport "github.com/gomerge/gomerge/report"
)

type reportFixture struct {
	dir, base, a, b, sfa string
}

func newReportFixture(t *testing.T) *reportFixture {
	t.Helper()
	f := &reportFixture{dir: t.TempDir()}
	base := stt.Random(stt.TinyLlama, dtype.BF16, 21)
	f.base, f.a, f.b = filepath.Join(f.dir, "base.safetensors"), filepath.Join(f.dir, "a.safetensors"), filepath.Join(f.dir, "b.safetensors")
	f.sfa = filepath.Join(f.dir, "reports.json")
	for _, err := range []error{
		stt.WriteFile(f.base, base, nil),
		stt.WriteFile(f.a, stt.Perturb(base, 0.05, 22), nil),
		stt.WriteFile(f.b, stt.Perturb(base, 0.05, 23), nil),
		os.WriteFile(f.sfa, []byte(`[{"l2_before":3,"l2_after":1.5,"l2_layers":[{"layer":-1,"l2_before":1,"l2_after":0.5},{"layer":0,"l2_before":2,"l2_after":1},{"layer":1,"l2_before":2,"l2_after":1}]},`+
			`{"l2_before":2.5,"l2_after":1.25,"l2_layers":[{"layer":-1,"l2_before":1.5,"l2_after":null},{"layer":0,"l2_before":1,"l2_after":0.5},{"layer":1,"l2_before":1.75,"l2_after":0.875}]},`+
			`{"step":30,"l2_before":2,"l2_after":null}]`), 0o644),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// reportJSON runs gomerge report --json and decodes it generically (the browser
// test looks numbers up by path).
func reportJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	code, stdout, stderr := gomerge(t, append([]string{"report", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	return m
}

// lookup follows a dotted path (object keys and array indices) through decoded JSON.
func lookup(v any, path string) (any, bool) {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[k]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func TestReportCommand(t *testing.T) {
	f := newReportFixture(t)
	rep := reportJSON(t, "--base", f.base, f.a, f.b, "--per-tensor", "--sfa", f.sfa)
	// The task vectors' relative norm and cosine are what gomerge distance computes
	// (‖a − base‖/‖base‖; the cosine of a − base and b − base), summed in another
	// order: equal to rounding.
	code, stdout, stderr := gomerge(t, "distance", f.a, f.b, "--base", f.base, "--json")
	if code != 0 {
		t.Fatal(stderr)
	}
	var d distanceReport
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatal(err)
	}
	cos, _ := lookup(rep, "total.pairs.0.cosine")
	if c, ok := cos.(float64); !ok || math.Abs(c-*d.Total.Cosine) > 1e-12 {
		t.Errorf("report cosine %v, distance %v", cos, *d.Total.Cosine)
	}
	code, stdout, stderr = gomerge(t, "distance", f.a, f.base, "--json")
	if code != 0 {
		t.Fatal(stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatal(err)
	}
	rel, _ := lookup(rep, "total.models.0.relative")
	if r, ok := rel.(float64); !ok || math.Abs(r-*d.Total.Relative) > 1e-12 {
		t.Errorf("report relative norm %v, distance %v", rel, *d.Total.Relative)
	}
	tensors, _ := lookup(rep, "tensors")
	if ts, _ := tensors.([]any); len(ts) != len(stt.Random(stt.TinyLlama, dtype.BF16, 1)) {
		t.Errorf("--per-tensor: %d tensors", len(ts))
	}
	if v, _ := lookup(rep, "sfa.2.step"); v != 30.0 {
		t.Errorf("sfa step %v, want 30", v)
	}
	// A trainer's reports as gomerge sfa --json writes them: the report carries each
	// layer's distances as the merge computed them.
	code, stdout, stderr = gomerge(t, "sfa", "--anchor", f.base, "--current", f.a, "--out", filepath.Join(f.dir, "m.safetensors"), "--json")
	if code != 0 {
		t.Fatal(stderr)
	}
	var sfaRep struct {
		L2Layers []struct {
			Layer    int     `json:"layer"`
			L2Before float64 `json:"l2_before"`
			L2After  float64 `json:"l2_after"`
		} `json:"l2_layers"`
	}
	runFile := filepath.Join(f.dir, "run.jsonl")
	if err := json.Unmarshal([]byte(stdout), &sfaRep); err != nil || len(sfaRep.L2Layers) != 3 {
		t.Fatalf("sfa --json l2_layers: %v %s", err, stdout)
	}
	if err := os.WriteFile(runFile, []byte(stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	run := reportJSON(t, "--base", f.base, f.a, "--sfa", runFile)
	for i, l := range sfaRep.L2Layers {
		layer, _ := lookup(run, fmt.Sprintf("sfa.0.layers.%d.layer", i))
		before, _ := lookup(run, fmt.Sprintf("sfa.0.layers.%d.l2_before", i))
		after, _ := lookup(run, fmt.Sprintf("sfa.0.layers.%d.l2_after", i))
		if layer != float64(l.Layer) || before != l.L2Before || after != l.L2After {
			t.Errorf("report's sfa layer %d: %v %v %v, want %+v", i, layer, before, after, l)
		}
	}
	// The default output is the markdown table.
	code, stdout, stderr = gomerge(t, "report", "--base", f.base, f.a)
	if code != 0 || !strings.Contains(stdout, "| layer | kind |") || !strings.Contains(stdout, "| 1 | mlp |") {
		t.Errorf("markdown: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestReportErrors(t *testing.T) {
	f := newReportFixture(t)
	bad := filepath.Join(f.dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`[{"l2_before":1}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"report", f.a}, exitUsage, "--base"},
		{[]string{"report", "--base", f.base}, exitUsage, "at least one model"},
		{[]string{"report"}, exitUsage, "--sfa"},
		{[]string{"report", "--base", f.base, f.a, "--density", "1.5"}, exitUsage, "density"},
		{[]string{"report", "--sfa", bad}, exitBadInput, "bad.json: report 1"},
		{[]string{"report", "--base", f.base, filepath.Join(f.dir, "missing.safetensors")}, exitBadInput, "missing"},
	} {
		code, _, stderr := gomerge(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want %q)", c.args, code, c.code, stderr, c.want)
		}
	}
}

// chromium finds Debian's chromium. Without it the browser test is skipped, unless
// GOMERGE_REQUIRE_CHROMIUM=1 (CI sets it), where its absence is a failure.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("GOMERGE_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("GOMERGE_REQUIRE_CHROMIUM=1 but no chromium on PATH")
	}
	t.Skip("no chromium on PATH (GOMERGE_REQUIRE_CHROMIUM=1 turns this skip into a failure)")
	return ""
}

var (
	cellRe    = regexp.MustCompile(`<td data-key="([^"]*)" data-value="([^"]*)">([^<]*)</td>`)
	checkedRe = regexp.MustCompile(`<body[^>]*data-checked="([^"]*)"`)
)

// TestReportHTMLInChromium renders the page in headless chromium and checks that it
// ran (the page's own script compared every shown number with the embedded JSON),
// drew its charts, and that every number in the rendered DOM is the --json output's.
func TestReportHTMLInChromium(t *testing.T) {
	bin := chromium(t)
	f := newReportFixture(t)
	page := filepath.Join(f.dir, "report.html")
	args := []string{"--base", f.base, f.a, f.b, "--sfa", f.sfa}
	if code, _, stderr := gomerge(t, append([]string{"report", "--html", page}, args...)...); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	rep := reportJSON(t, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--disable-gpu", "--no-sandbox", "--user-data-dir="+filepath.Join(f.dir, "profile"),
		"--dump-dom", "file://"+page)
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	cells := cellRe.FindAllStringSubmatch(string(dom), -1)
	// 2 models × (1 + 3 densities) + 1 pair × (2 + 3 densities), per row: the total,
	// 3 layer rows (other, 0, 1) and 8 layer × kind rows; then 3 SFA rows of 2 and
	// 2 × 3 SFA layer rows of 2.
	if want := 12*(2*4+5) + 3*2 + 6*2; len(cells) != want {
		t.Fatalf("%d numbers in the rendered page, want %d", len(cells), want)
	}
	m := checkedRe.FindStringSubmatch(string(dom))
	if m == nil || m[1] != fmt.Sprintf("ok %d", len(cells)) {
		t.Errorf("the page's own check: %v, want ok %d (did its script run?)", m, len(cells))
	}
	for _, c := range cells {
		key, value, text := c[1], c[2], html.UnescapeString(c[3])
		got, ok := lookup(rep, key)
		if !ok {
			t.Errorf("%s: not in the JSON", key)
			continue
		}
		if got == nil {
			if value != "null" || text != gmreport.Num(nil) {
				t.Errorf("%s: page shows %q (%s), JSON has null", key, text, value)
			}
			continue
		}
		v, _ := got.(float64)
		pv, err := strconv.ParseFloat(value, 64)
		if err != nil || pv != v || text != gmreport.Num(&v) {
			t.Errorf("%s: page shows %q (%s), JSON has %v", key, text, value, v)
		}
	}
	// 2 relative-norm heatmaps, 3 for the pair, 2 line charts, the SFA chart and its
	// 2 per-layer heatmaps.
	if n := strings.Count(string(dom), "<svg"); n != 10 {
		t.Errorf("%d charts in the rendered page, want 10", n)
	}
	shot := filepath.Join(f.dir, "shot.png")
	cmd = exec.CommandContext(ctx, bin, "--headless", "--disable-gpu", "--no-sandbox", "--user-data-dir="+filepath.Join(f.dir, "profile"),
		"--window-size=1200,1600", "--screenshot="+shot, "file://"+page)
	cmd.Dir = f.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	if st, err := os.Stat(shot); err != nil || st.Size() < 10000 {
		t.Errorf("screenshot: %v, %v", st, err)
	}
}

// TestDryRun: a merge command with --dry-run prints its plan and its inputs'
// statistics (gomerge report's numbers), and writes nothing: no output, no lock, no
// temporary file.
func TestDryRun(t *testing.T) {
	f := newReportFixture(t)
	before, err := os.ReadDir(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	current, err := os.ReadFile(f.a)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(f.dir, "merged.safetensors")
	code, stdout, stderr := gomerge(t, "ties", "--base", f.base, f.a, f.b, "--density", "0.2", "--out", out, "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		DryRun       bool  `json:"dry_run"`
		BytesRead    int64 `json:"bytes_read"`
		BytesWritten int64 `json:"bytes_written"`
		Planned      []struct {
			Name, DType string
			Merged      bool
		} `json:"planned"`
		Statistics json.RawMessage `json:"statistics"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	// Tiny llama, BF16: every tensor merged from three inputs, one written.
	var elems int64
	for _, ts := range stt.Random(stt.TinyLlama, dtype.BF16, 1) {
		elems += ts.NumElements()
	}
	if !rep.DryRun || rep.BytesRead != 3*2*elems || rep.BytesWritten != 2*elems || len(rep.Planned) != 21 || rep.Planned[0].DType != "BF16" {
		t.Errorf("dry run: %+v, want %d bytes read and %d written", rep, 6*elems, 2*elems)
	}
	code, want, _ := gomerge(t, "report", "--json", "--base", f.base, f.a, f.b)
	var a, b any
	if code != 0 || json.Unmarshal(rep.Statistics, &a) != nil || json.Unmarshal([]byte(want), &b) != nil {
		t.Fatalf("statistics: %s", rep.Statistics)
	}
	aj, _ := json.Marshal(a)
	bj, _ := json.Marshal(b)
	if string(aj) != string(bj) {
		t.Errorf("dry run statistics differ from gomerge report's:\n%s\n%s", aj, bj)
	}
	// Human output, a method without a base, and sfa.
	for _, args := range [][]string{
		{"ties", "--base", f.base, f.a, f.b, "--out", out, "--dry-run"},
		{"linear", f.a, f.b, "--out", out, "--dry-run"},
		{"sfa", "--anchor", f.base, "--current", f.a, "--out", out, "--dry-run"},
		{"sfa", "--anchor", f.base, "--current", f.a, "--in-place", "--dry-run"},
	} {
		code, stdout, stderr := gomerge(t, args...)
		if code != 0 || !strings.Contains(stdout, "nothing written") || !strings.Contains(stdout, "model.layers.1.mlp.up_proj.weight") {
			t.Errorf("%v: exit %d\n%s%s", args, code, stdout, stderr)
		}
		if args[0] == "ties" && !strings.Contains(stdout, "| 1 | mlp |") {
			t.Errorf("%v: no statistics table\n%s", args, stdout)
		}
	}
	after, err := os.ReadDir(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("a dry run left files: %v, before %v", after, before)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a dry run wrote %s", out)
	}
	if now, err := os.ReadFile(f.a); err != nil || !bytes.Equal(now, current) {
		t.Errorf("sfa --in-place --dry-run changed %s (%v)", f.a, err)
	}
}
