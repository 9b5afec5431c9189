// Package testexec lets tests run programs built for the target architecture (the
// gomerge binary, the test binary itself) when the tests themselves run under an
// emulator: `go test -exec qemu-aarch64-static` runs the test binary through qemu,
// but a program the test starts would be run directly, which fails ("exec format
// error") where the kernel has no binfmt_misc entry for it, as in containers.
// GOMERGE_TEST_EXEC names the emulator (CI's arm64 run sets it to
// qemu-aarch64-static); unset, everything runs directly.
package testexec

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Env is the variable that names the emulator, with its arguments if any.
const Env = "GOMERGE_TEST_EXEC"

func emulator() []string { return strings.Fields(os.Getenv(Env)) }

// CommandContext is exec.CommandContext, through the emulator if one is set.
func CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	if e := emulator(); len(e) > 0 {
		return exec.CommandContext(ctx, e[0], append(append(e[1:], name), args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// Command is exec.Command, through the emulator if one is set.
func Command(name string, args ...string) *exec.Cmd {
	if e := emulator(); len(e) > 0 {
		return exec.Command(e[0], append(append(e[1:], name), args...)...)
	}
	return exec.Command(name, args...)
}

// Wrap returns a path that runs bin, for programs that other programs start (the
// Python tests run GOMERGE_BIN): bin itself, or, with an emulator set, a shell
// script beside it that execs the emulator on it (exec, so that signals sent to
// the script's process reach the emulator, which passes them on).
func Wrap(bin string) (string, error) {
	e := emulator()
	if len(e) == 0 {
		return bin, nil
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\nexec")
	for _, w := range append(e, bin) {
		fmt.Fprintf(&b, " '%s'", strings.ReplaceAll(w, "'", `'\''`))
	}
	b.WriteString(` "$@"` + "\n")
	script := filepath.Join(filepath.Dir(bin), "."+filepath.Base(bin)+"-emulated")
	if err := os.WriteFile(script, []byte(b.String()), 0o755); err != nil {
		return "", err
	}
	return script, nil
}
