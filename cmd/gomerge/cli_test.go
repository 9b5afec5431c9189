package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// gomerge runs one command line in-process and returns its exit status, stdout and
// stderr.
func gomerge(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	return code, out.String(), errOut.String()
}

type cliFixture struct {
	dir, anchor, current, folder, fisher string
	anchorTs, currentTs                  []stt.Tensor
}

func newCLIFixture(t testing.TB) *cliFixture {
	t.Helper()
	f := &cliFixture{dir: t.TempDir()}
	f.anchorTs = stt.Random(stt.TinyLlama, dtype.BF16, 11)
	f.currentTs = stt.Perturb(f.anchorTs, 0.5, 12)
	f.anchor = filepath.Join(f.dir, "anchor.safetensors")
	f.current = filepath.Join(f.dir, "current.safetensors")
	f.folder = filepath.Join(f.dir, "current")
	f.fisher = filepath.Join(f.dir, "fisher.safetensors")
	for _, err := range []error{
		stt.WriteFile(f.anchor, f.anchorTs, nil),
		stt.WriteFile(f.current, f.currentTs, nil),
		stt.WriteFolder(f.folder, f.currentTs, 3, nil),
		stt.WriteFile(f.fisher, stt.Fisher(f.anchorTs, 1e-3, 13), nil),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestSFACommandJSON(t *testing.T) {
	f := newCLIFixture(t)
	out := filepath.Join(f.dir, "merged.safetensors")
	code, stdout, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.folder, "--beta", "0.3", "--out", out, "--json", "--threads", "3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr not empty when it is not a terminal: %q", stderr)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	for _, k := range []string{"method", "parameters", "inputs", "output", "tensors", "bytes_read", "bytes_written", "seconds", "device", "l2_before", "l2_after", "peak_heap_bytes"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
	if rep["method"] != "sfa" || rep["parameters"].(map[string]any)["beta"] != 0.3 || rep["threads"] != 3.0 {
		t.Errorf("report %v", rep)
	}
	// β = 0.3 moves the model 30 % of the way to the anchor: the distance after is
	// about 0.7 of the distance before (exactly, up to rounding to BF16).
	ratio := rep["l2_after"].(float64) / rep["l2_before"].(float64)
	if math.Abs(ratio-0.7) > 0.01 {
		t.Errorf("l2_after/l2_before = %v, want about 0.7", ratio)
	}
	// distance agrees with the report.
	code, stdout, stderr = gomerge(t, "distance", out, f.anchor, "--json")
	if code != 0 {
		t.Fatalf("distance: exit %d: %s", code, stderr)
	}
	var d distanceReport
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatal(err)
	}
	if math.Abs(d.Total.L2-rep["l2_after"].(float64)) > 1e-12*d.Total.L2 {
		t.Errorf("distance %v != report's l2_after %v", d.Total.L2, rep["l2_after"])
	}
}

func TestSFACommandInPlaceAndHuman(t *testing.T) {
	f := newCLIFixture(t)
	code, stdout, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.folder, "--in-place")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "L2 to anchor") || !strings.Contains(stdout, "21 tensors merged") {
		t.Errorf("human output: %q", stdout)
	}
	c, err := safetensors.OpenCheckpoint(f.folder)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Metadata["gomerge.method"] != "sfa" || len(c.Shards) != 3 {
		t.Errorf("in-place result: metadata %v, %d shards", c.Metadata, len(c.Shards))
	}
	// β = 1 in place twice makes current the anchor exactly.
	for range 2 {
		if code, _, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.current, "--beta", "1", "--in-place"); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	}
	code, stdout, _ = gomerge(t, "distance", f.current, f.anchor, "--json")
	var d distanceReport
	if err := json.Unmarshal([]byte(stdout), &d); code != 0 || err != nil || d.Total.L2 != 0 {
		t.Errorf("β=1 in place: distance %+v (exit %d, %v)", d.Total, code, err)
	}
}

func TestSFAFisherCommand(t *testing.T) {
	f := newCLIFixture(t)
	out := filepath.Join(f.dir, "m.safetensors")
	code, stdout, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.current, "--fisher", f.fisher, "--eta", "500", "--out", out, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, `"eta": 500`) || !strings.Contains(stdout, `"role": "fisher"`) {
		t.Errorf("report lacks the Fisher parameters: %s", stdout)
	}
}

func TestDistanceCommand(t *testing.T) {
	f := newCLIFixture(t)
	// Against itself with --base itself: l2 0, relative 0, cosine undefined → null.
	code, stdout, stderr := gomerge(t, "distance", f.anchor, f.anchor, "--base", f.anchor, "--per-tensor", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout, "NaN") || !strings.Contains(stdout, `"cosine": null`) {
		t.Errorf("undefined cosine must be null: %s", stdout)
	}
	var d distanceReport
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatal(err)
	}
	if d.Total.L2 != 0 || len(d.Tensors) != len(f.anchorTs) {
		t.Errorf("self distance %+v, %d rows", d.Total, len(d.Tensors))
	}
	// Folder and file of the same tensors are the same checkpoint.
	code, stdout, _ = gomerge(t, "distance", f.current, f.folder)
	if code != 0 || !strings.Contains(stdout, "l2        0\n") {
		t.Errorf("file vs folder: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = gomerge(t, "distance", f.current, f.anchor, "--base", f.anchor, "--per-tensor")
	if code != 0 || !strings.Contains(stdout, "TOTAL") || !strings.Contains(stdout, "lm_head.weight") {
		t.Errorf("per-tensor table: exit %d\n%s", code, stdout)
	}
}

func TestInspectAndVersion(t *testing.T) {
	f := newCLIFixture(t)
	code, stdout, stderr := gomerge(t, "inspect", f.folder, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, x := range f.currentTs {
		want += int64(len(x.Data))
	}
	if len(rep.Files) != 3 || len(rep.Tensors) != len(f.currentTs) || rep.TotalBytes != want || rep.DTypes["BF16"] != len(f.currentTs) {
		t.Errorf("inspect: %d files, %d tensors, %d bytes (want %d)", len(rep.Files), len(rep.Tensors), rep.TotalBytes, want)
	}
	code, stdout, _ = gomerge(t, "inspect", f.anchor)
	if code != 0 || !strings.Contains(stdout, "model.embed_tokens.weight") || !strings.Contains(stdout, "[97 48]") {
		t.Errorf("inspect table: %s", stdout)
	}
	code, stdout, _ = gomerge(t, "version")
	if code != 0 || !strings.HasPrefix(stdout, "gomerge ") {
		t.Errorf("version: %q", stdout)
	}
}

func TestScheduleCommand(t *testing.T) {
	code, stdout, _ := gomerge(t, "sfa", "schedule", "--steps", "10", "--p", "0.3")
	if code != 0 || stdout != "3\n6\n9\n10\n" {
		t.Errorf("exit %d: %q", code, stdout)
	}
	code, stdout, _ = gomerge(t, "sfa", "schedule", "--steps", "4", "--p", "0.5", "--json")
	var steps []int
	if err := json.Unmarshal([]byte(stdout), &steps); code != 0 || err != nil || len(steps) != 2 || steps[1] != 4 {
		t.Errorf("json: exit %d %q", code, stdout)
	}
}

// TestUsageErrors: every way of calling gomerge wrongly exits 2, says what is wrong,
// and writes nothing.
func TestUsageErrors(t *testing.T) {
	f := newCLIFixture(t)
	out := filepath.Join(f.dir, "never.safetensors")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, "unknown command"},
		{[]string{"sfa", "--anchor", f.anchor, "--current", f.current}, "exactly one of --out"},
		{[]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--out", out, "--in-place"}, "exactly one of --out"},
		{[]string{"sfa", "--current", f.current, "--out", out}, "--anchor and --current are required"},
		{[]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--out", out, "--beta", "1.5"}, "must be in [0, 1]"},
		{[]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--out", out, "--beta", "x"}, "invalid argument"},
		{[]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--out", out, "--fisher", f.fisher, "--beta", "0.2"}, "exclude each other"},
		{[]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--out", out, "--eta", "3"}, "--eta needs --fisher"},
		{[]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--out", out, "--dtype", "i32"}, "--dtype"},
		{[]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--out", out, "--shard-size", "lots"}, "--shard-size"},
		{[]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--out", out, "--nope"}, "unknown flag"},
		{[]string{"sfa", "extra-arg", "--anchor", f.anchor}, "unknown command"},
		{[]string{"sfa", "schedule", "--steps", "10"}, "required"},
		{[]string{"sfa", "schedule", "--steps", "10", "--p", "2"}, "(0, 1]"},
		{[]string{"distance", f.anchor}, "two checkpoints"},
		{[]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--out", filepath.Join(f.dir, "m.gguf")}, "GGUF output needs GGUF inputs"},
		{[]string{"inspect"}, "one checkpoint"},
	} {
		code, _, stderr := gomerge(t, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("a usage error wrote output")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"5GB": 5e9, "500MB": 5e8, "2GiB": 2 << 30, "1e9": 1e9, "123": 123, "1.5 kb": 1500} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// TestJSONErrors: with --json a failure is one JSON object on stdout too.
func TestJSONErrors(t *testing.T) {
	f := newCLIFixture(t)
	code, stdout, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", filepath.Join(f.dir, "nope"), "--out", filepath.Join(f.dir, "m.safetensors"), "--json")
	var e struct {
		Error      string `json:"error"`
		ExitStatus int    `json:"exit_status"`
	}
	if err := json.Unmarshal([]byte(stdout), &e); err != nil || code != exitBadInput || e.ExitStatus != code || !strings.Contains(e.Error, "nope") {
		t.Errorf("exit %d, stdout %q (%v), stderr %q", code, stdout, err, stderr)
	}
}
