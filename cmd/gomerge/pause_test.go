package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hangGuard bounds every wait on a child gomerge. It only turns a hang into a failure:
// no outcome depends on it, so it is far longer than any merge here takes, loaded
// machine and -race included.
const hangGuard = 5 * time.Minute

// child is a gomerge process whose stderr the test reads line by line, so that it can
// wait for a line (the GOMERGE_TEST_PAUSE_AT hook's, the lock's "waiting") instead of
// guessing how long the process needs to get there.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu    sync.Mutex
	lines []string
	seen  chan struct{} // receives (without blocking) after each new line

	paused           chan struct{} // closed when the pause line has appeared
	pausedAt, totalB int64         // the pause line's byte counts
	done             chan struct{} // closed once the process has exited
	err              error         // cmd.Wait's result, once done is closed
}

// startChild starts bin with args. pauseAt, unless empty, sets GOMERGE_TEST_PAUSE_AT:
// a byte count or "end" (see testpause.go).
func startChild(t *testing.T, bin, pauseAt string, args ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(bin, args...), seen: make(chan struct{}, 1), paused: make(chan struct{}), done: make(chan struct{})}
	c.cmd.Env = os.Environ()
	if pauseAt != "" {
		c.cmd.Env = append(c.cmd.Env, testPauseEnv+"="+pauseAt)
	}
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			<-c.done
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.lines = append(c.lines, line)
			var done, total int64
			if n, _ := fmt.Sscanf(line, "gomerge: test pause after %d of %d input bytes", &done, &total); n == 2 {
				c.pausedAt, c.totalB = done, total
				close(c.paused)
			}
			c.mu.Unlock()
			select {
			case c.seen <- struct{}{}:
			default:
			}
		}
		io.Copy(io.Discard, stderr)
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c
}

func (c *child) stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n")
}

// waitPaused waits until the child has paused and returns the input bytes it had
// merged and its total. A child that exits first, or hangs, fails the test.
func (c *child) waitPaused(t *testing.T) (done, total int64) {
	t.Helper()
	select {
	case <-c.paused:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.pausedAt, c.totalB
	case <-c.done:
		t.Fatalf("gomerge %s exited (%v) without reaching its pause:\n%s", strings.Join(c.cmd.Args[1:], " "), c.err, c.stderr())
	case <-time.After(hangGuard):
		t.Fatalf("gomerge %s neither paused nor exited in %v:\n%s", strings.Join(c.cmd.Args[1:], " "), hangGuard, c.stderr())
	}
	return 0, 0
}

// waitLine waits until a stderr line contains s. A child that exits first, or hangs,
// fails the test.
func (c *child) waitLine(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(hangGuard)
	for {
		if strings.Contains(c.stderr(), s) {
			return
		}
		select {
		case <-c.seen:
		case <-c.done:
			if strings.Contains(c.stderr(), s) {
				return
			}
			t.Fatalf("gomerge %s exited (%v) without saying %q:\n%s", strings.Join(c.cmd.Args[1:], " "), c.err, s, c.stderr())
		case <-deadline:
			t.Fatalf("gomerge %s did not say %q in %v:\n%s", strings.Join(c.cmd.Args[1:], " "), s, hangGuard, c.stderr())
		}
	}
}

// resume lets a paused child go on.
func (c *child) resume() { c.stdin.Close() }

// wait waits for the child to exit and returns its exit status (-1 if a signal ended
// it).
func (c *child) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(hangGuard):
		t.Fatalf("gomerge %s did not exit in %v:\n%s", strings.Join(c.cmd.Args[1:], " "), hangGuard, c.stderr())
	}
	var ee *exec.ExitError
	if c.err != nil && !errors.As(c.err, &ee) {
		t.Fatal(c.err)
	}
	return c.cmd.ProcessState.ExitCode()
}

// kill SIGKILLs the child and reports whether the signal ended it (false: it had
// exited on its own, successfully, first). Exiting on its own with a failure fails
// the test.
func (c *child) kill(t *testing.T) (killed bool) {
	t.Helper()
	c.cmd.Process.Kill()
	code := c.wait(t)
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return true
	}
	if code != 0 {
		t.Fatalf("gomerge %s failed on its own (exit %d):\n%s", strings.Join(c.cmd.Args[1:], " "), code, c.stderr())
	}
	return false
}

// mapping says how the child has path memory-mapped, from /proc/PID/maps: whether
// any mapping is of path, and whether the kernel marks it deleted. ok is false where
// there is no /proc to ask.
func (c *child) mapping(t *testing.T, path string) (mapped, deleted, ok bool) {
	t.Helper()
	if runtime.GOOS != "linux" {
		return false, false, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", c.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("reading the child's mappings: %v", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasSuffix(line, " "+abs):
			mapped = true
		case strings.HasSuffix(line, " "+abs+" (deleted)"):
			mapped, deleted = true, true
		}
	}
	return mapped, deleted, true
}

// tempOf lists the temporary files or folders of output out in its folder.
func tempOf(t *testing.T, out string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(filepath.Dir(out), "."+globEscape(filepath.Base(out))+".gomerge-tmp-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestPauseHookValues: the hook takes a positive byte count or "end", and refuses
// anything else as a usage error naming the variable, before touching any file.
func TestPauseHookValues(t *testing.T) {
	dir := t.TempDir()
	args := []string{"sfa", "--anchor", filepath.Join(dir, "a.safetensors"), "--current", filepath.Join(dir, "c.safetensors"), "--out", filepath.Join(dir, "m.safetensors")}
	for _, v := range []string{"0", "-4096", "half", "1e6"} {
		t.Setenv(testPauseEnv, v)
		var stdout, stderr strings.Builder
		code := run(t.Context(), &IOStreams{In: strings.NewReader(""), Out: &stdout, ErrOut: &stderr}, args)
		if code != exitUsage || !strings.Contains(stderr.String(), testPauseEnv) {
			t.Errorf("%s=%s: exit %d, stderr %q; want %d naming the variable", testPauseEnv, v, code, stderr.String(), exitUsage)
		}
	}
	// A valid value gets past the hook: the missing input is what fails.
	t.Setenv(testPauseEnv, "end")
	var stderr strings.Builder
	if code := run(t.Context(), &IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: &stderr}, args); code != exitBadInput {
		t.Errorf("%s=end: exit %d (%s), want %d for the missing input", testPauseEnv, code, stderr.String(), exitBadInput)
	}
}
