package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// Gomerge runs the gomerge binary the way a trainer in another language would: one
// process per call, the result read from --json on stdout, the exit status checked.
type Gomerge struct {
	Bin string // path of the gomerge executable
}

// ExitError is a gomerge run that exited non-zero.
type ExitError struct {
	Args   []string
	Status int    // gomerge's exit status: 2 usage, 3 bad input, 4 I/O, 1 other
	Msg    string // the "error" field of the JSON report, or stderr
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("gomerge %s: exit status %d: %s", strings.Join(e.Args, " "), e.Status, e.Msg)
}

// run executes gomerge with args and decodes its JSON stdout into out (if not nil).
func (g *Gomerge) run(ctx context.Context, out any, args ...string) error {
	cmd := exec.CommandContext(ctx, g.Bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		msg := strings.TrimSpace(stderr.String())
		// With --json a failure is also one object on stdout; prefer it, since it is
		// the machine-readable form.
		var fail struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(stdout.Bytes(), &fail) == nil && fail.Error != "" {
			msg = fail.Error
		}
		return &ExitError{Args: args, Status: ee.ExitCode(), Msg: msg}
	}
	if err != nil {
		return fmt.Errorf("running %s: %w", g.Bin, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("gomerge %s: decoding the JSON report %.200q: %w", strings.Join(args, " "), stdout.String(), err)
	}
	return nil
}

// SFAReport holds the fields of `gomerge sfa --json` that the trainer uses.
type SFAReport struct {
	Method   string   `json:"method"`
	Output   string   `json:"output"`
	InPlace  bool     `json:"in_place"`
	Tensors  int      `json:"tensors"`
	Seconds  float64  `json:"seconds"`
	L2Before *float64 `json:"l2_before"`
	L2After  *float64 `json:"l2_after"`
}

// SFAOptions choose between a scalar β and the Fisher-weighted form.
type SFAOptions struct {
	Beta   float64
	Fisher string  // the anchor's diagonal Fisher; when set, Eta is used instead of Beta
	Eta    float64 // β_j = min(1, Eta·F_j)
}

// SFAInPlace averages current toward anchor, replacing current atomically.
func (g *Gomerge) SFAInPlace(ctx context.Context, anchor, current string, o SFAOptions) (*SFAReport, error) {
	args := []string{"sfa", "--anchor", anchor, "--current", current, "--in-place", "--json", "--threads", "1"}
	if o.Fisher != "" {
		args = append(args, "--fisher", o.Fisher, "--eta", strconv.FormatFloat(o.Eta, 'g', -1, 64))
	} else {
		args = append(args, "--beta", strconv.FormatFloat(o.Beta, 'g', -1, 64))
	}
	var rep SFAReport
	if err := g.run(ctx, &rep, args...); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Schedule asks gomerge at which of steps steps to average, given p.
func (g *Gomerge) Schedule(ctx context.Context, steps int, p float64) ([]int, error) {
	var s []int
	err := g.run(ctx, &s, "sfa", "schedule", "--steps", strconv.Itoa(steps), "--p", strconv.FormatFloat(p, 'g', -1, 64), "--json")
	return s, err
}

// Distance returns ‖a − b‖₂ over all tensors.
func (g *Gomerge) Distance(ctx context.Context, a, b string) (float64, error) {
	var rep struct {
		Total struct {
			L2 float64 `json:"l2"`
		} `json:"total"`
	}
	if err := g.run(ctx, &rep, "distance", a, b, "--json", "--threads", "1"); err != nil {
		return 0, err
	}
	return rep.Total.L2, nil
}

// Merge runs a merge command (task-arithmetic, ties, ...) with the given arguments and
// --json, writing out.
func (g *Gomerge) Merge(ctx context.Context, method, out string, args ...string) error {
	full := append([]string{method}, args...)
	full = append(full, "--out", out, "--json", "--threads", "1")
	var rep struct {
		Method string `json:"method"`
	}
	return g.run(ctx, &rep, full...)
}
