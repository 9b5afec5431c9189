package main

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/gpu/gputest"
)

// reliabilityFiles writes an anchor and a current file of crashConfig's size (a merge
// takes ~100 ms, long enough to act on a running process).
func reliabilityFiles(t *testing.T, dir string) (anchor, current string) {
	t.Helper()
	a := safetensorstest.Random(crashConfig, dtype.F32, 21)
	anchor, current = filepath.Join(dir, "anchor.safetensors"), filepath.Join(dir, "current.safetensors")
	if err := safetensorstest.WriteFile(anchor, a, nil); err != nil {
		t.Fatal(err)
	}
	if err := safetensorstest.WriteFile(current, safetensorstest.Perturb(a, 0.5, 22), nil); err != nil {
		t.Fatal(err)
	}
	return anchor, current
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// waitForTemp polls until the output's temporary file exists (the merge has mapped
// its inputs and is writing) or the process has exited; it reports which.
func waitForTemp(out string, done <-chan struct{}) bool {
	pattern := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".gomerge-tmp-*")
	for {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return true
		}
		select {
		case <-done:
			return false
		case <-time.After(200 * time.Microsecond):
		}
	}
}

func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	if m, _ := filepath.Glob(filepath.Join(dir, ".*gomerge*")); len(m) != 0 {
		t.Errorf("left behind: %v", m)
	}
}

// TestTwoProcessesSameOutput starts two gomerge processes writing the same output with
// different β at the same moment, several times. Both must succeed (the second waits
// for the first's lock) and the output must be exactly one of the two merges, never a
// mixture; at least once the second must have said it was waiting.
func TestTwoProcessesSameOutput(t *testing.T) {
	bin := buildGomerge(t)
	dir := t.TempDir()
	anchor, current := reliabilityFiles(t, dir)
	want := map[[32]byte]string{}
	for _, beta := range []string{"0.25", "0.75"} {
		ref := filepath.Join(dir, "ref-"+beta+".safetensors")
		if out, err := exec.Command(bin, "sfa", "--anchor", anchor, "--current", current, "--beta", beta, "--out", ref).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		want[fileHash(t, ref)] = beta
	}
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(outDir, "merged.safetensors")
	waited := 0
	for round := range 6 {
		var wg sync.WaitGroup
		stderr := make([]bytes.Buffer, 2)
		errs := make([]error, 2)
		for i, beta := range []string{"0.25", "0.75"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(bin, "sfa", "--anchor", anchor, "--current", current, "--beta", beta, "--out", out)
				cmd.Stderr = &stderr[i]
				errs[i] = cmd.Run()
			}()
		}
		wg.Wait()
		for i := range 2 {
			if errs[i] != nil {
				t.Fatalf("round %d: process %d: %v: %s", round, i, errs[i], stderr[i].String())
			}
			if strings.Contains(stderr[i].String(), "waiting for it to finish") {
				waited++
			}
		}
		if _, ok := want[fileHash(t, out)]; !ok {
			t.Fatalf("round %d: the output is neither merge: two writers interleaved", round)
		}
		noLeftovers(t, outDir)
	}
	if waited == 0 {
		t.Error("in 6 rounds no process waited for the other's lock: the test did not exercise the lock")
	}
}

// TestInputTruncatedWhileMapped truncates the current checkpoint while gomerge has it
// mapped. Reading a page past the new end raises SIGBUS; gomerge must turn that into
// exit status 3 naming the problem, write nothing, and leave no temporary file. A run
// may finish before the truncation lands; the test repeats until one is caught. It
// runs on the CPU and on the (fake) GPU, whose staging copies read the mapped input
// on the engine's GPU goroutine.
func TestInputTruncatedWhileMapped(t *testing.T) {
	bin := buildGomerge(t)
	for _, device := range []string{"cpu", "cuda"} {
		t.Run(device, func(t *testing.T) {
			args := []string{"--device", "cpu"}
			if device == "cuda" {
				args = []string{"--device", "cuda", "--gpu-library", gputest.Library(t), "--gpu-min-elems", "1", "--gpu-light", "gpu"}
			}
			truncateWhileMapped(t, bin, args)
		})
	}
}

func truncateWhileMapped(t *testing.T, bin string, deviceArgs []string) {
	dir := t.TempDir()
	anchor, pristine := reliabilityFiles(t, dir)
	data, err := os.ReadFile(pristine)
	if err != nil {
		t.Fatal(err)
	}
	current := filepath.Join(dir, "victim.safetensors")
	out := filepath.Join(dir, "merged.safetensors")
	caught := 0
	for attempt := 0; attempt < 20 && caught < 3; attempt++ {
		if err := os.WriteFile(current, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, append([]string{"sfa", "--anchor", anchor, "--current", current, "--out", out, "--threads", "1"}, deviceArgs...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		var runErr error
		go func() { runErr = cmd.Wait(); close(done) }()
		if waitForTemp(out, done) {
			if err := os.Truncate(current, 4096); err != nil {
				t.Fatal(err)
			}
		}
		<-done
		code := cmd.ProcessState.ExitCode()
		switch {
		case code == exitBadInput && strings.Contains(stderr.String(), "input changed while being read"):
			caught++
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("attempt %d: output exists after the input was truncated", attempt)
			}
		case code == 0: // finished before the truncation
			os.Remove(out)
		default:
			t.Fatalf("attempt %d: %v, exit %d: %s", attempt, runErr, code, stderr.String())
		}
		noLeftovers(t, dir)
	}
	if caught == 0 {
		t.Fatal("no run was caught mid-merge in 20 attempts")
	}
}

// TestInputDeletedWhileMapped removes the current checkpoint while gomerge reads it:
// the mapping keeps the data, so the merge completes with exactly the intact result.
func TestInputDeletedWhileMapped(t *testing.T) {
	bin := buildGomerge(t)
	dir := t.TempDir()
	anchor, current := reliabilityFiles(t, dir)
	out := filepath.Join(dir, "merged.safetensors")
	// The reference merge names the same paths (they are in the output's provenance).
	if b, err := exec.Command(bin, "sfa", "--anchor", anchor, "--current", current, "--out", out).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	want := fileHash(t, out)
	data, err := os.ReadFile(current)
	if err != nil {
		t.Fatal(err)
	}
	for attempt := range 3 {
		if err := os.WriteFile(current, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "sfa", "--anchor", anchor, "--current", current, "--out", out, "--threads", "1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		if waitForTemp(out, done) {
			if err := os.Remove(current); err != nil {
				t.Fatal(err)
			}
		}
		<-done
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("attempt %d: exit %d: %s", attempt, code, stderr.String())
		}
		if fileHash(t, out) != want {
			t.Fatalf("attempt %d: output differs from the merge of the intact input", attempt)
		}
		os.Remove(out)
		noLeftovers(t, dir)
	}
}
