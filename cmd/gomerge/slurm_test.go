package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomerge/gomerge/merge"
)

// requireSlurmEnv, set (CI sets it), makes TestSlurmArray fail instead of skipping
// where Slurm and munge are not installed or the test is not root.
const requireSlurmEnv = "GOMERGE_REQUIRE_SLURM"

// slurmPrograms are what the one-node cluster needs (Debian's slurm-wlm and munge).
var slurmPrograms = []string{"munged", "slurmctld", "slurmd", "sbatch", "sinfo"}

// TestSlurmArray starts a one-node Slurm cluster (munged, slurmctld, slurmd, all in a
// temporary folder with their own ports and munge socket, as root), runs a merge as a
// 4-task job array with --shard-index auto, finalizes, and compares the folder with
// the single-process merge byte for byte.
func TestSlurmArray(t *testing.T) {
	paths, why := findSlurm()
	if why != "" {
		if os.Getenv(requireSlurmEnv) != "" {
			t.Fatalf("%s is set, but %s", requireSlurmEnv, why)
		}
		t.Skip(why)
	}
	bin := buildGomerge(t)
	f := newShardFixture(t)
	args := f.merges(t)["ties"]
	ref := filepath.Join(f.dir, "ref")
	mustGomerge(t, append(append([]string(nil), args...), "--out", ref)...)

	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	cl := startSlurm(ctx, t, paths)

	out := filepath.Join(f.dir, "out")
	logs := filepath.Join(f.dir, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	// The same command line for every task; Slurm's variables pick the worker.
	line := shellQuote(append([]string{bin}, args...)) + " --out " + shellQuote([]string{out}) + " --shard-index auto --json"
	script := filepath.Join(f.dir, "merge.sbatch")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec "+line+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sb := exec.CommandContext(ctx, paths["sbatch"], "--wait", "--array=0-3", "--cpus-per-task=1",
		"--output="+filepath.Join(logs, "task-%a.out"), "--error="+filepath.Join(logs, "task-%a.err"), script)
	sb.Env = cl.env()
	if b, err := sb.CombinedOutput(); err != nil {
		t.Fatalf("sbatch: %v: %s\n%s", err, b, cl.logs())
	}
	for i := range 4 {
		data, err := os.ReadFile(filepath.Join(logs, fmt.Sprintf("task-%d.out", i)))
		if err != nil {
			t.Fatal(err)
		}
		var rep merge.Report
		if err := json.Unmarshal(data, &rep); err != nil || rep.Shard == nil {
			errs, _ := os.ReadFile(filepath.Join(logs, fmt.Sprintf("task-%d.err", i)))
			t.Fatalf("task %d: no worker report (%v): %s %s", i, err, data, errs)
		}
		if rep.Shard.Index != i || rep.Shard.Count != 4 {
			t.Errorf("task %d ran as worker %d of %d", i, rep.Shard.Index, rep.Shard.Count)
		}
	}
	mustGomerge(t, "finalize", out)
	if d := mustHashTree(t, ref).diff(mustHashTree(t, out)); d != "" {
		t.Errorf("the Slurm array's output differs from the single-process merge: %s", d)
	}
}

// findSlurm looks for the cluster's programs (the daemons live in /usr/sbin, which a
// user's PATH may lack); why says what is missing.
func findSlurm() (map[string]string, string) {
	if os.Geteuid() != 0 {
		return nil, "the one-node Slurm cluster starts its daemons as root"
	}
	paths := map[string]string{}
	for _, p := range slurmPrograms {
		path, err := exec.LookPath(p)
		if err != nil {
			if _, serr := os.Stat("/usr/sbin/" + p); serr == nil {
				path, err = "/usr/sbin/"+p, nil
			}
		}
		if err != nil {
			return nil, fmt.Sprintf("%s is not installed (Debian: apt-get install slurm-wlm munge)", p)
		}
		paths[p] = path
	}
	return paths, ""
}

// slurmCluster is a running one-node cluster.
type slurmCluster struct {
	dir   string
	procs []*exec.Cmd
}

func (c *slurmCluster) env() []string {
	return append(os.Environ(), "SLURM_CONF="+filepath.Join(c.dir, "slurm.conf"))
}

func (c *slurmCluster) logs() string {
	var b strings.Builder
	for _, n := range []string{"munged.log", "slurmctld.log", "slurmd.log"} {
		data, _ := os.ReadFile(filepath.Join(c.dir, n))
		fmt.Fprintf(&b, "--- %s\n%s\n", n, data)
	}
	return b.String()
}

// startSlurm starts munged, slurmctld and slurmd in the foreground, each stopped (and
// waited for) when the test ends, and waits until the node is idle.
func startSlurm(ctx context.Context, t *testing.T, paths map[string]string) *slurmCluster {
	t.Helper()
	// Not t.TempDir: munged wants every folder above its socket searchable by all, and
	// Slurm's paths must be short.
	dir, err := os.MkdirTemp("", "gomerge-slurm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &slurmCluster{dir: dir}
	t.Cleanup(c.stop)
	key := make([]byte, 1024)
	if f, err := os.Open("/dev/urandom"); err != nil {
		t.Fatal(err)
	} else {
		_, err = f.Read(key)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, err := range []error{
		os.WriteFile(filepath.Join(dir, "munge.key"), key, 0o400),
		os.Mkdir(filepath.Join(dir, "state"), 0o755),
		os.Mkdir(filepath.Join(dir, "spool"), 0o755),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ = strings.Cut(host, ".")
	ctlPort, dPort := freePort(t), freePort(t)
	conf := fmt.Sprintf(`ClusterName=gomerge
SlurmctldHost=%[1]s(127.0.0.1)
SlurmctldPort=%[2]d
SlurmdPort=%[3]d
AuthType=auth/munge
AuthInfo=socket=%[4]s/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=%[4]s/state
SlurmdSpoolDir=%[4]s/spool
SlurmctldPidFile=%[4]s/slurmctld.pid
SlurmdPidFile=%[4]s/slurmd.pid
SlurmctldLogFile=%[4]s/slurmctld.log
SlurmdLogFile=%[4]s/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=%[1]s NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=gomerge Nodes=ALL Default=YES MaxTime=INFINITE State=UP
`, host, ctlPort, dPort, dir)
	confPath := filepath.Join(dir, "slurm.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.start(t, paths["munged"], "--foreground", "--force", "--socket="+filepath.Join(dir, "munge.sock"),
		"--key-file="+filepath.Join(dir, "munge.key"), "--pid-file="+filepath.Join(dir, "munged.pid"),
		"--log-file="+filepath.Join(dir, "munged.log"), "--seed-file="+filepath.Join(dir, "munged.seed"))
	waitFor(ctx, t, c, "munge socket", func() bool {
		_, err := os.Stat(filepath.Join(dir, "munge.sock"))
		return err == nil
	})
	c.start(t, paths["slurmctld"], "-D", "-i", "-f", confPath)
	c.start(t, paths["slurmd"], "-D", "-f", confPath)
	waitFor(ctx, t, c, "the node to be idle", func() bool {
		cmd := exec.CommandContext(ctx, paths["sinfo"], "-h", "-o", "%t")
		cmd.Env = c.env()
		b, err := cmd.Output()
		return err == nil && strings.TrimSpace(string(b)) == "idle"
	})
	return c
}

func (c *slurmCluster) start(t *testing.T, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = c.dir
	cmd.Env = c.env()
	out, err := os.Create(filepath.Join(c.dir, filepath.Base(bin)+".out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	c.procs = append(c.procs, cmd)
}

// stop stops the daemons, the last started first, and waits for each.
func (c *slurmCluster) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
	c.procs = nil
}

func waitFor(ctx context.Context, t *testing.T, c *slurmCluster, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v\n%s", what, ctx.Err(), c.logs())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// freePort returns a TCP port that was free a moment ago, so that the test's
// daemons do not collide with a real cluster's on 6817 and 6818.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// shellQuote quotes each word for sh.
func shellQuote(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
