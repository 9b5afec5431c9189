package testexec

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Gomerge returns a gomerge binary for tests that run it as a program: $GOMERGE_BIN
// (to test a release build), else cmd/gomerge built into dir. Either way it is
// wrapped for the emulator, if one is set, so that programs the test starts can run it.
// A build from source records the module's sources as the test's inputs (see Inputs).
func Gomerge(ctx context.Context, dir string) (string, error) {
	bin := os.Getenv("GOMERGE_BIN")
	if bin == "" {
		if err := moduleSources(); err != nil {
			return "", err
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		bin = filepath.Join(dir, "gomerge")
		if out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/gomerge/gomerge/cmd/gomerge").CombinedOutput(); err != nil {
			return "", fmt.Errorf("building gomerge: %v\n%s", err, out)
		}
	}
	return Wrap(bin)
}

// Python returns the interpreter for the torch tests, after checking that it imports
// modules (for example "torch, matplotlib"): $GOMERGE_PYTHON, else /usr/bin/python3,
// since Debian's python3-torch installs into the system Python, which may not be the
// python3 first on PATH. Without them the test is skipped, or fails where
// GOMERGE_REQUIRE_TORCH=1 (CI), naming the Debian packages that provide them.
// The package's folder and its testdata, where the scripts live, become the test's
// inputs (see Inputs); scripts kept elsewhere are passed to Inputs by the test.
func Python(ctx context.Context, t testing.TB, modules, packages string) string {
	t.Helper()
	scripts := []string{"."}
	if _, err := os.Stat("testdata"); err == nil {
		scripts = append(scripts, "testdata")
	}
	if err := Inputs(scripts...); err != nil {
		t.Fatal(err)
	}
	py := os.Getenv("GOMERGE_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if out, err := exec.CommandContext(ctx, py, "-c", "import "+modules).CombinedOutput(); err != nil {
		msg := fmt.Sprintf("needs %s with %s (Debian: apt-get install %s; or set GOMERGE_PYTHON): %v: %s", py, modules, packages, err, out)
		if os.Getenv("GOMERGE_REQUIRE_TORCH") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return py
}
