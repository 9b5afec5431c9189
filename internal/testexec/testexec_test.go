package testexec

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
)

func TestCommands(t *testing.T) {
	t.Setenv(Env, "")
	if c := Command("prog", "a"); !slices.Equal(c.Args, []string{"prog", "a"}) {
		t.Errorf("without an emulator: %q", c.Args)
	}
	t.Setenv(Env, "qemu-x -L /p")
	if c := CommandContext(context.Background(), "prog", "a"); !slices.Equal(c.Args, []string{"qemu-x", "-L", "/p", "prog", "a"}) {
		t.Errorf("with an emulator: %q", c.Args)
	}
}

func TestWrap(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the wrapper is a shell script")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "it's")
	t.Setenv(Env, "")
	if p, err := Wrap(bin); err != nil || p != bin {
		t.Errorf("without an emulator: %q %v", p, err)
	}
	// "echo" as the emulator: the script prints the path it would run.
	t.Setenv(Env, "echo")
	p, err := Wrap(bin)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, "x y").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := bin + " x y\n"; string(out) != want {
		t.Errorf("the wrapper printed %q, want %q", out, want)
	}
}

func TestInputs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "script.py")
	if err := os.WriteFile(file, []byte("print(1)"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Inputs(dir, file); err != nil {
		t.Errorf("a folder and a file: %v", err)
	}
	if err := Inputs(filepath.Join(dir, "missing.py")); err == nil {
		t.Error("a missing script: no error")
	}
}

func TestModuleSources(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "gomerge")); err != nil {
		t.Errorf("module root %s: %v", root, err)
	}
	if err := moduleSources(); err != nil {
		t.Error(err)
	}
}
