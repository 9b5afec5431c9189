package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gomerge/gomerge/merge"
)

// testPauseEnv names a hook for the crash and reliability tests, which must act on a
// running merge at a known point (kill it, interrupt it, truncate or delete its input)
// and prove that they did, rather than act after a guessed delay that a loaded machine
// can make land before the merge starts or after it ends.
//
// GOMERGE_TEST_PAUSE_AT=N (a byte count) or "end" stops the merge once the engine has
// reported N input bytes (or all of them) read and written to the output's temporary
// file. By then the output is locked, the inputs are open and mapped, and nothing is
// committed. gomerge prints
//
//	gomerge: test pause after DONE of TOTAL input bytes
//
// on stderr and waits until a byte arrives on stdin or stdin is closed (then it goes
// on), or the command is cancelled (SIGINT, SIGTERM). Every worker that finishes a
// chunk meanwhile waits too, so the output does not move while paused. Unset, the
// hook does nothing.
const testPauseEnv = "GOMERGE_TEST_PAUSE_AT"

// pauseForTests installs the GOMERGE_TEST_PAUSE_AT hook on job, keeping its OnStart
// and Progress.
func pauseForTests(ctx context.Context, ios *IOStreams, job *merge.Job) error {
	at := os.Getenv(testPauseEnv)
	if at == "" {
		return nil
	}
	var threshold, total, done atomic.Int64
	if at != "end" {
		n, err := strconv.ParseInt(at, 10, 64)
		if err != nil || n < 1 {
			return usagef("%s=%q: want a positive byte count or \"end\"", testPauseEnv, at)
		}
		threshold.Store(n)
	}
	prevStart, prevProgress := job.OnStart, job.Exec.Progress
	job.OnStart = func(n int64) {
		total.Store(n)
		if at == "end" {
			threshold.Store(n)
		}
		if prevStart != nil {
			prevStart(n)
		}
	}
	var once sync.Once
	resumed := make(chan struct{})
	job.Exec.Progress = func(n int64) {
		if prevProgress != nil {
			prevProgress(n)
		}
		sum := done.Add(n)
		if th := threshold.Load(); th == 0 || sum < th {
			return
		}
		once.Do(func() {
			fmt.Fprintf(ios.ErrOut, "gomerge: test pause after %d of %d input bytes\n", sum, total.Load())
			go func() {
				io.ReadFull(ios.In, make([]byte, 1)) // a byte, EOF or an error: go on
				close(resumed)
			}()
		})
		select {
		case <-resumed:
		case <-ctx.Done():
		}
	}
	return nil
}
