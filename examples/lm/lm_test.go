//go:build unix

package lm_test

import (
	"context"
	"encoding/csv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomerge/gomerge/internal/testexec"
)

// row is one line of results.csv: a method and parameter after one stage.
type row struct {
	method, param, stage string
	val                  map[string]float64
}

func readResults(t *testing.T, path string) []row {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(recs) < 2 {
		t.Fatalf("%s: no rows", path)
	}
	head := recs[0]
	var rows []row
	for _, rec := range recs[1:] {
		r := row{val: map[string]float64{}}
		for i, h := range head {
			switch h {
			case "method":
				r.method = rec[i]
			case "param":
				r.param = rec[i]
			case "stage":
				r.stage = rec[i]
			default:
				if rec[i] == "" {
					continue
				}
				v, err := strconv.ParseFloat(rec[i], 64)
				if err != nil {
					t.Fatalf("%s: %s of %s %s: %v", path, h, r.method, r.param, err)
				}
				r.val[h] = v
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// TestReducedExperiment runs experiment.py --reduced (about a minute of CPU) against a
// gomerge built from this module and asserts the qualitative findings that held on
// every seed tried (README.md, "The CI check"). Without torch and matplotlib it skips,
// unless GOMERGE_REQUIRE_TORCH=1, where their absence is a failure.
func TestReducedExperiment(t *testing.T) {
	if testing.Short() {
		t.Skip("trains seven small language models; skipped with -short")
	}
	// Stop the run before go test's own deadline, so that its output is still logged.
	deadline := time.Now().Add(9 * time.Minute)
	if d, ok := t.Deadline(); ok {
		deadline = d.Add(-20 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	py := testexec.Python(ctx, t, "torch, matplotlib", "python3-torch python3-matplotlib")
	dir := t.TempDir()
	bin, err := testexec.Gomerge(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cmd := exec.CommandContext(ctx, py, "experiment.py", "--reduced", "--seed", "1", "--out", out, "--gomerge", bin)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	// The rows train in worker processes: on timeout kill the whole process group, and
	// stop waiting for their end of the output pipe soon after.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	log, err := cmd.CombinedOutput()
	t.Logf("%s", log)
	if err != nil {
		t.Fatalf("experiment.py --reduced: %v", err)
	}
	for _, f := range []string{"results.md", "cost.json", "sfa_p.png", "front.png"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s missing or empty: %v", f, err)
		}
	}
	checkFindings(t, readResults(t, filepath.Join(out, "results.csv")))
}

func checkFindings(t *testing.T, rows []row) {
	get := func(method, param, stage string) row {
		t.Helper()
		for _, r := range rows {
			if r.method == method && r.stage == stage && strings.HasPrefix(r.param, param) {
				return r
			}
		}
		t.Fatalf("results.csv has no row %s %q after %s", method, param, stage)
		return row{}
	}
	theta := get("math", "", "math")
	seq := get("sequential", "", "code")
	multi := get("multitask", "", "code")
	sfa1 := get("sfa", "p=1 ", "code")
	sfaQ := get("sfa", "p=0.25 ", "code")
	l2 := get("l2", "", "code")
	ta := get("task_arithmetic", "", "code")

	// Sequential fine-tuning forgets Math: its held-out loss rises by over a bit per
	// character (seeds 1-3: +3.3 to +4.7).
	if d := seq.val["bpc_math"] - theta.val["bpc_math"]; d < 1 {
		t.Errorf("sequential: Math bpc rose by %.3f after Law and Code, want > 1", d)
	}
	// Averaging toward the anchor forgets less than sequential on both old tasks.
	for _, dom := range []string{"bpc_math", "bpc_law"} {
		for _, r := range []row{sfa1, sfaQ, ta} {
			if r.val[dom] >= seq.val[dom] {
				t.Errorf("%s %s: %s %.3f, not below sequential's %.3f", r.method, r.param, dom, r.val[dom], seq.val[dom])
			}
		}
	}
	if l2.val["bpc_math"] >= seq.val["bpc_math"] {
		t.Errorf("l2: Math bpc %.3f, not below sequential's %.3f", l2.val["bpc_math"], seq.val["bpc_math"])
	}
	// Averaging during training (p < 1) keeps more of Math than once at the end, and
	// stays closer to theta_Math.
	if sfaQ.val["bpc_math"] >= sfa1.val["bpc_math"] {
		t.Errorf("SFA: Math bpc %.3f at p=0.25, not below %.3f at p=1", sfaQ.val["bpc_math"], sfa1.val["bpc_math"])
	}
	if sfaQ.val["l2_to_math"] >= sfa1.val["l2_to_math"] {
		t.Errorf("SFA: distance to θ_Math %.3f at p=0.25, not below %.3f at p=1", sfaQ.val["l2_to_math"], sfa1.val["l2_to_math"])
	}
	// Every merge ran: p=1 merges once per task, p=0.25 four times.
	if sfa1.val["merges"] != 1 || sfaQ.val["merges"] != 4 {
		t.Errorf("SFA merges per task: %v at p=1, %v at p=0.25; want 1 and 4", sfa1.val["merges"], sfaQ.val["merges"])
	}
	// Multitask, which still sees the old data, is best on the old tasks; sequential,
	// which spends every step on Code, is best on Code.
	for _, r := range rows {
		if r.stage != "code" || r.method == "multitask" {
			continue
		}
		for _, dom := range []string{"bpc_math", "bpc_law"} {
			if r.val[dom] <= multi.val[dom] {
				t.Errorf("%s %s: %s %.3f, not above multitask's %.3f", r.method, r.param, dom, r.val[dom], multi.val[dom])
			}
		}
		if r.method != "sequential" && r.val["bpc_code"] <= seq.val["bpc_code"] {
			t.Errorf("%s %s: Code bpc %.3f, not above sequential's %.3f", r.method, r.param, r.val["bpc_code"], seq.val["bpc_code"])
		}
	}
}

// TestSeedsSummary regenerates seeds.md from the committed full runs (results.csv and
// seeds/results_seed*.csv) and requires the committed page to be exactly that: the
// write-up's seed table cannot drift from the data it cites.
func TestSeedsSummary(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	py := testexec.Python(ctx, t, "csv, statistics", "python3")
	runs, err := filepath.Glob(filepath.Join("seeds", "results_seed*.csv"))
	if err != nil || len(runs) < 2 {
		t.Fatalf("seeds/: want at least two runs besides seed 1, got %v (%v)", runs, err)
	}
	out := filepath.Join(t.TempDir(), "seeds.md")
	args := append([]string{"seeds.py", "--out", out, "results.csv"}, runs...)
	if b, err := exec.CommandContext(ctx, py, args...).CombinedOutput(); err != nil {
		t.Fatalf("seeds.py: %v: %s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("seeds.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("seeds.md is not what seeds.py writes from the committed runs; rerun:\n  python3 examples/lm/seeds.py --out examples/lm/seeds.md examples/lm/results.csv examples/lm/seeds/results_seed*.csv")
	}
}
