package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/merge"
)

// TestMethodCommands runs every method's command end to end on generated checkpoints,
// with the models as single files and as sharded folders, and checks the report and
// the output checkpoint.
func TestMethodCommands(t *testing.T) {
	dir := t.TempDir()
	base := stt.Random(stt.TinyLlama, dtype.BF16, 21)
	basePath := filepath.Join(dir, "base.safetensors")
	if err := stt.WriteFile(basePath, base, nil); err != nil {
		t.Fatal(err)
	}
	var files, folders, fishers []string
	for i := range 3 {
		m := stt.Perturb(base, 0.5, uint64(30+i))
		f := filepath.Join(dir, "m"+string(rune('0'+i))+".safetensors")
		d := filepath.Join(dir, "m"+string(rune('0'+i)))
		fi := filepath.Join(dir, "f"+string(rune('0'+i))+".safetensors")
		for _, err := range []error{stt.WriteFile(f, m, nil), stt.WriteFolder(d, m, 2, nil), stt.WriteFile(fi, stt.Fisher(m, 1e-3, uint64(40+i)), nil)} {
			if err != nil {
				t.Fatal(err)
			}
		}
		files, folders, fishers = append(files, f), append(folders, d), append(fishers, fi)
	}
	for _, layout := range []struct {
		name   string
		models []string
	}{{"files", files}, {"folders", folders}} {
		m := layout.models
		cases := []struct {
			method string
			args   []string
		}{
			{"linear", []string{"linear", m[0] + ":weight=0.3", m[1] + ":weight=0.7"}},
			{"task_arithmetic", []string{"task-arithmetic", "--base", basePath, m[0], m[1] + ":weight=0.5", "--lambda", "0.8"}},
			{"ties", []string{"ties", "--base", basePath, m[0] + ":weight=0.7", m[1] + ":weight=0.3", m[2] + ":density=0.5", "--density", "0.2"}},
			{"dare_linear", []string{"dare", "--base", basePath, m[0], m[1], "--density", "0.3", "--seed", "7"}},
			{"dare_ties", []string{"dare", "--ties", "--base", basePath, m[0], m[1], "--rescale", "inverse"}},
			{"breadcrumbs", []string{"breadcrumbs", "--base", basePath, m[0], m[1], "--gamma", "0.02"}},
			{"breadcrumbs_ties", []string{"breadcrumbs", "--ties", "--base", basePath, m[0], m[1]}},
			{"slerp", []string{"slerp", "--base", basePath, m[0], "--t", "0.3"}},
			{"model_stock", []string{"model-stock", "--base", basePath, m[0], m[1], m[2]}},
			{"fisher", []string{"fisher", m[0] + ":fisher=" + fishers[0], m[1] + ":fisher=" + fishers[1] + ":weight=2", "--epsilon", "1e-5"}},
		}
		for _, tc := range cases {
			t.Run(layout.name+"/"+tc.method, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out.safetensors")
				args := append(tc.args, "--out", out, "--json", "--threads", "2")
				code, stdout, stderr := gomerge(t, args...)
				if code != 0 {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				var rep map[string]any
				if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
					t.Fatalf("report: %v\n%s", err, stdout)
				}
				if rep["method"] != tc.method || rep["tensors_merged"] != float64(len(base)) {
					t.Errorf("report: method %v, merged %v", rep["method"], rep["tensors_merged"])
				}
				c, err := safetensors.OpenCheckpoint(out)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if c.Metadata["gomerge.method"] != tc.method || len(c.Tensors()) != len(base) {
					t.Errorf("output: metadata %v, %d tensors", c.Metadata, len(c.Tensors()))
				}
				// Every method moves away from the base, by less than the base's own
				// norm (the models are the base plus noise of about 12 % of its norm).
				code, stdout, _ = gomerge(t, "distance", out, basePath, "--json")
				var d distanceReport
				if err := json.Unmarshal([]byte(stdout), &d); code != 0 || err != nil {
					t.Fatalf("distance: %d %v", code, err)
				}
				if !(d.Total.L2 > 0) || d.Total.Relative == nil || *d.Total.Relative > 1 || math.IsNaN(*d.Total.Relative) {
					t.Errorf("distance to base %+v", d.Total)
				}
			})
		}
	}
}

func TestMethodCommandErrors(t *testing.T) {
	f := newCLIFixture(t)
	out := filepath.Join(f.dir, "never.safetensors")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ties", f.current, "--out", out}, exitUsage, "--base is required"},
		{[]string{"ties", "--base", f.anchor, "--out", out}, exitUsage, "at least one model"},
		{[]string{"ties", "--base", f.anchor, f.current, "--out", out, "--density", "2"}, exitUsage, "density"},
		{[]string{"ties", "--base", f.anchor, f.current + ":density=x", "--out", out}, exitUsage, "not a number"},
		{[]string{"linear", f.current + ":fisher=" + f.fisher, "--out", out}, exitUsage, "takes no fisher"},
		{[]string{"linear", f.current + ":weight=1", f.anchor + ":weight=-1", "--out", out}, exitUsage, "sum to 0"},
		{[]string{"slerp", "--base", f.anchor, f.current, f.current, "--out", out}, exitUsage, "exactly 1"},
		{[]string{"fisher", f.current, "--out", out}, exitUsage, "needs its Fisher"},
		{[]string{"linear", f.current, "--out", out, "--density", "0.5"}, exitUsage, "unknown flag"},
		{[]string{"ties", "--base", f.anchor, f.current, "--out", out}, exitOK, ""},
		{[]string{"ties", "--base", f.anchor, filepath.Join(f.dir, "missing.safetensors"), "--out", out}, exitBadInput, "missing.safetensors"},
	} {
		code, _, stderr := gomerge(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
		os.Remove(out)
	}
}

func TestParseModel(t *testing.T) {
	var all []*merge.Param
	for _, name := range []string{"weight", "density", "fisher"} {
		p, _ := mustMethod(t, "fisher").Param(name)
		if name == "density" {
			p, _ = mustMethod(t, "ties").Param(name)
		}
		all = append(all, p)
	}
	m, err := parseModel("/data/a:b/model.safetensors:weight=0.7:density=0.2", all)
	if err != nil || m.Path != "/data/a:b/model.safetensors" || m.Weight != 0.7 || m.Density != 0.2 {
		t.Errorf("got %+v, %v", m, err)
	}
	m, err = parseModel("m.safetensors", all)
	if err != nil || m.Weight != 1 || !math.IsNaN(m.Density) {
		t.Errorf("defaults: %+v, %v", m, err)
	}
	if _, err := parseModel(":weight=2", all); err == nil {
		t.Error("accepted an empty path")
	}
}

func mustMethod(t testing.TB, name string) *merge.Method {
	t.Helper()
	m, ok := merge.LookupMethod(name)
	if !ok {
		t.Fatalf("no method %s in the registry", name)
	}
	return m
}
