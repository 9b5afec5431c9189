package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/merge"
)

// shardFixture is a base and two fine-tunes as 5-shard folders (config and tokenizer
// beside them), and the command lines of a few merges of them.
type shardFixture struct {
	dir, base, a, b string
}

func newShardFixture(t testing.TB) *shardFixture {
	t.Helper()
	f := &shardFixture{dir: t.TempDir()}
	base := stt.Random(stt.TinyLlama, dtype.BF16, 21)
	f.base, f.a, f.b = filepath.Join(f.dir, "base"), filepath.Join(f.dir, "a"), filepath.Join(f.dir, "b")
	for _, err := range []error{
		stt.WriteFolder(f.base, base, 5, nil),
		stt.WriteFolder(f.a, stt.Perturb(base, 0.5, 22), 5, nil),
		stt.WriteFolder(f.b, stt.Perturb(base, 0.5, 23), 5, nil),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// merges are command lines (without --out) whose sharded runs must equal their
// single-process run byte for byte.
func (f *shardFixture) merges(t testing.TB) map[string][]string {
	recipe := filepath.Join(f.dir, "ties.yaml")
	y := fmt.Sprintf("merge_method: ties\nbase_model: %s\nmodels:\n  - model: %s\n    parameters: {weight: 0.6, density: 0.5}\n  - model: %s\n    parameters: {weight: 0.4, density: 0.7}\ndtype: bfloat16\n", f.base, f.a, f.b)
	if err := os.WriteFile(recipe, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return map[string][]string{
		"sfa":        {"sfa", "--anchor", f.base, "--current", f.a, "--beta", "0.3"},
		"ties":       {"ties", "--base", f.base, f.a, f.b, "--density", "0.4", "--threads", "3"},
		"dare-split": {"dare", "--ties", "--base", f.base, f.a, f.b, "--seed", "9", "--shard-size", "20KB"},
		"run":        {"run", recipe},
	}
}

func mustGomerge(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := gomerge(t, args...)
	if code != 0 {
		t.Fatalf("gomerge %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

func worker(args []string, out string, i, n int) []string {
	return append(append([]string(nil), args...), "--out", out, "--shard-index", fmt.Sprint(i), "--shard-count", fmt.Sprint(n), "--json")
}

// workerReport reads a worker's --json report: a merge command's, or the one step of
// gomerge run's.
func workerReport(t *testing.T, stdout string) *merge.Report {
	t.Helper()
	var v struct {
		merge.Report
		Steps []merge.Report `json:"steps"`
	}
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if len(v.Steps) == 1 {
		return &v.Steps[0]
	}
	return &v.Report
}

// TestShardedByteIdentical: N workers and finalize make the single-process merge's
// folder exactly, for N = 1…4, and nothing looks complete before finalize.
func TestShardedByteIdentical(t *testing.T) {
	f := newShardFixture(t)
	for name, args := range f.merges(t) {
		ref := filepath.Join(f.dir, name+"-ref")
		mustGomerge(t, append(append([]string(nil), args...), "--out", ref)...)
		want := mustHashTree(t, ref)
		if len(want) < 4 {
			t.Fatalf("%s: the reference output has only %v", name, want)
		}
		for n := 1; n <= 4; n++ {
			out := filepath.Join(f.dir, fmt.Sprintf("%s-%d", name, n))
			written := map[string]bool{}
			for i := range n {
				rep := workerReport(t, mustGomerge(t, worker(args, out, i, n)...))
				if rep.Shard == nil || rep.Shard.Index != i || len(rep.Shard.Kept) != 0 {
					t.Fatalf("%s N=%d worker %d: report %+v", name, n, i, rep.Shard)
				}
				for _, s := range rep.Shard.Written {
					if written[s] {
						t.Errorf("%s N=%d: %s written by two workers", name, n, s)
					}
					written[s] = true
				}
			}
			entries, err := os.ReadDir(out)
			if err != nil || len(entries) != 1 || entries[0].Name() != merge.StagingDir {
				t.Fatalf("%s N=%d: before finalize the output holds %v (%v), want only %s", name, n, entries, err, merge.StagingDir)
			}
			mustGomerge(t, "finalize", out)
			if d := want.diff(mustHashTree(t, out)); d != "" {
				t.Errorf("%s N=%d: sharded output differs from the single-process one: %s", name, n, d)
			}
		}
	}
}

// TestShardIndexAuto: --shard-index auto reads Slurm's and Kubernetes' variables.
func TestShardIndexAuto(t *testing.T) {
	for _, c := range []struct {
		name  string
		env   map[string]string
		count int
		want  *merge.Shard
		err   bool
	}{
		{"slurm count", map[string]string{"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, 0, &merge.Shard{Index: 2, Count: 4}, false},
		{"slurm min max", map[string]string{"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "6"}, 0, &merge.Shard{Index: 2, Count: 4}, false},
		{"slurm step", map[string]string{"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6", "SLURM_ARRAY_TASK_STEP": "2"}, 0, &merge.Shard{Index: 2, Count: 4}, false},
		{"slurm agrees", map[string]string{"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}, 4, &merge.Shard{Index: 0, Count: 4}, false},
		{"slurm disagrees", map[string]string{"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}, 3, nil, true},
		{"slurm no size", map[string]string{"SLURM_ARRAY_TASK_ID": "1"}, 0, nil, true},
		{"slurm size from flag", map[string]string{"SLURM_ARRAY_TASK_ID": "1"}, 2, &merge.Shard{Index: 1, Count: 2}, false},
		{"slurm off grid", map[string]string{"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, 0, nil, true},
		{"slurm bad", map[string]string{"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, 0, nil, true},
		{"kubernetes", map[string]string{"JOB_COMPLETION_INDEX": "3"}, 4, &merge.Shard{Index: 3, Count: 4}, false},
		{"kubernetes no count", map[string]string{"JOB_COMPLETION_INDEX": "3"}, 0, nil, true},
		{"kubernetes out of range", map[string]string{"JOB_COMPLETION_INDEX": "4"}, 4, nil, true},
		{"nothing", map[string]string{}, 4, nil, true},
	} {
		s := shardFlags{index: "auto", count: c.count}
		got, err := s.shard(func(k string) string { return c.env[k] })
		if (err != nil) != c.err || (c.want != nil && (got == nil || *got != *c.want)) {
			t.Errorf("%s: got %+v, %v; want %+v (error %v)", c.name, got, err, c.want, c.err)
		}
	}
	for _, c := range []struct {
		index string
		count int
		err   bool
	}{{"", 0, false}, {"", 2, true}, {"1", 0, true}, {"2", 2, true}, {"-1", 2, true}, {"one", 2, true}, {"1", 2, false}} {
		s := shardFlags{index: c.index, count: c.count}
		if _, err := s.shard(func(string) string { return "" }); (err != nil) != c.err {
			t.Errorf("--shard-index %q --shard-count %d: error %v, want error %v", c.index, c.count, err, c.err)
		}
	}
}

// TestShardRefusals: outputs that cannot be split are refused before any work.
func TestShardRefusals(t *testing.T) {
	f := newShardFixture(t)
	full := filepath.Join(f.dir, "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(full, "config.json"), []byte("{}"), 0o644)
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"sfa", "--anchor", f.base, "--current", f.a, "--out", filepath.Join(f.dir, "one.safetensors"), "--shard-index", "0", "--shard-count", "2"}, 2, "one file cannot be split"},
		{[]string{"sfa", "--anchor", f.base, "--current", f.a, "--in-place", "--shard-index", "0", "--shard-count", "2"}, 2, "--in-place cannot be split"},
		{[]string{"sfa", "--anchor", f.base, "--current", f.a, "--out", full, "--shard-index", "0", "--shard-count", "2"}, 4, "new or empty folder"},
		{[]string{"finalize", filepath.Join(f.dir, "nothing")}, 3, "no sharded merge"},
	} {
		code, _, stderr := gomerge(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, %q; want exit %d and %q", c.args, code, stderr, c.code, c.msg)
		}
	}
}

// TestShardFaultCorrupted: a shard truncated or altered after its worker finished is
// refused by finalize, which names it and moves nothing; the worker's rerun rewrites
// only that shard.
func TestShardFaultCorrupted(t *testing.T) {
	f := newShardFixture(t)
	args := f.merges(t)["ties"]
	ref := filepath.Join(f.dir, "ref")
	mustGomerge(t, append(append([]string(nil), args...), "--out", ref)...)
	out := filepath.Join(f.dir, "out")
	for i := range 2 {
		mustGomerge(t, worker(args, out, i, 2)...)
	}
	victim := "model-00004-of-00005.safetensors" // worker 1's (4th file, k=3)
	path := filepath.Join(merge.WorkerDir(out, 1), victim)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data []byte
		msg  string
	}{
		{"truncated", data[:len(data)-10], "truncated"},
		{"corrupted", func() []byte { d := append([]byte(nil), data...); d[len(d)-3] ^= 0x40; return d }(), "corrupted"},
	} {
		if err := os.WriteFile(path, c.data, 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := gomerge(t, "finalize", out)
		if code != 3 || !strings.Contains(stderr, victim) || !strings.Contains(stderr, c.msg) || !strings.Contains(stderr, "worker 1") {
			t.Errorf("%s: finalize exit %d, %q; want exit 3 naming %s and worker 1", c.name, code, stderr, victim)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 1 {
			t.Errorf("%s: finalize moved files before refusing: %v", c.name, entries)
		}
	}
	rep := workerReport(t, mustGomerge(t, worker(args, out, 1, 2)...))
	if strings.Join(rep.Shard.Written, ",") != victim || len(rep.Shard.Kept) != 1 {
		t.Errorf("rerun of worker 1 wrote %v and kept %v; want only %s rewritten", rep.Shard.Written, rep.Shard.Kept, victim)
	}
	mustGomerge(t, "finalize", out)
	if d := mustHashTree(t, ref).diff(mustHashTree(t, out)); d != "" {
		t.Errorf("after the rerun: %s", d)
	}
}

// TestShardFaultSameIndex: two workers given the same index at once wait for each
// other and write the same bytes; the index nobody ran is named by finalize.
func TestShardFaultSameIndex(t *testing.T) {
	f := newShardFixture(t)
	args := f.merges(t)["ties"]
	ref := filepath.Join(f.dir, "ref")
	mustGomerge(t, append(append([]string(nil), args...), "--out", ref)...)
	out := filepath.Join(f.dir, "out")
	var wg sync.WaitGroup
	codes := make([]int, 3)
	stderrs := make([]string, 3)
	for j, i := range []int{0, 0, 1} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[j], _, stderrs[j] = gomerge(t, worker(args, out, i, 3)...)
		}()
	}
	wg.Wait()
	for j := range codes {
		if codes[j] != 0 {
			t.Fatalf("worker run %d: exit %d: %s", j, codes[j], stderrs[j])
		}
	}
	code, _, stderr := gomerge(t, "finalize", out)
	if code != 3 || !strings.Contains(stderr, "worker 2 of 3 has not run") {
		t.Fatalf("finalize with worker 2 missing: exit %d, %q", code, stderr)
	}
	mustGomerge(t, worker(args, out, 2, 3)...)
	mustGomerge(t, "finalize", out)
	if d := mustHashTree(t, ref).diff(mustHashTree(t, out)); d != "" {
		t.Errorf("%s", d)
	}
}

// TestShardFaultOtherPlan: a worker run with other parameters or other inputs than
// the rest is named by finalize, which moves nothing.
func TestShardFaultOtherPlan(t *testing.T) {
	f := newShardFixture(t)
	sfa := func(current, beta string) []string {
		return []string{"sfa", "--anchor", f.base, "--current", current, "--beta", beta}
	}
	for _, c := range []struct {
		name string
		odd  []string
		at   int
	}{
		{"parameters", sfa(f.a, "0.4"), 2},
		{"inputs", sfa(f.b, "0.3"), 1},
	} {
		out := filepath.Join(f.dir, c.name)
		for i := range 3 {
			args := sfa(f.a, "0.3")
			if i == c.at {
				args = c.odd
			}
			mustGomerge(t, worker(args, out, i, 3)...)
		}
		code, _, stderr := gomerge(t, "finalize", out)
		want := fmt.Sprintf("worker %d ran another plan", c.at)
		if code != 3 || !strings.Contains(stderr, want) {
			t.Errorf("%s: finalize exit %d, %q; want exit 3 and %q", c.name, code, stderr, want)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 1 {
			t.Errorf("%s: finalize moved files before refusing: %v", c.name, entries)
		}
	}
}

// TestShardFaultKilled: a worker killed while writing its last shard leaves the
// shards it finished recorded; finalize names it as unfinished, and its rerun writes
// only the shard it lost.
func TestShardFaultKilled(t *testing.T) {
	bin := buildGomerge(t)
	f := newShardFixture(t)
	args := []string{"sfa", "--anchor", f.base, "--current", f.a, "--beta", "0.3"}
	ref := filepath.Join(f.dir, "ref")
	mustGomerge(t, append(append([]string(nil), args...), "--out", ref)...)
	out := filepath.Join(f.dir, "out")
	// Worker 0 of 2 owns files 1, 3 and 5; "end" stops it once file 5's last tensor
	// is in its temporary file, before the commit.
	c := startChild(t, bin, "end", worker(args, out, 0, 2)...)
	c.waitPaused(t)
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c.done
	last := "model-00005-of-00005.safetensors"
	if _, err := os.Stat(filepath.Join(merge.WorkerDir(out, 0), last)); err == nil {
		t.Fatalf("%s was committed before the kill", last)
	}
	mustGomerge(t, worker(args, out, 1, 2)...)
	code, _, stderr := gomerge(t, "finalize", out)
	if code != 3 || !strings.Contains(stderr, "worker 0 of 2 has not finished") {
		t.Fatalf("finalize after the kill: exit %d, %q", code, stderr)
	}
	rep := workerReport(t, mustGomerge(t, worker(args, out, 0, 2)...))
	if got := strings.Join(rep.Shard.Written, ","); got != last {
		t.Errorf("the rerun wrote %s, want only %s", got, last)
	}
	if got := strings.Join(rep.Shard.Kept, ","); got != "model-00001-of-00005.safetensors,model-00003-of-00005.safetensors" {
		t.Errorf("the rerun kept %s", got)
	}
	mustGomerge(t, "finalize", out)
	if d := mustHashTree(t, ref).diff(mustHashTree(t, out)); d != "" {
		t.Errorf("%s", d)
	}
}
