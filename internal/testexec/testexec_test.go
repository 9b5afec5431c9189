package testexec

import (
	"context"
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
