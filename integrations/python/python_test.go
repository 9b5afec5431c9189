package python

import (
	"context"
	"github.com/gomerge/gomerge/internal/testexec"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// python is the interpreter with torch: Debian's python3-torch installs into the
// system Python, which may not be the python3 first on PATH.
func python() string {
	if p := os.Getenv("GOMERGE_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

// TestPythonIntegration runs test_gomerge.py (unittest, torch, a tiny model) against a
// gomerge built from this module. Without torch it skips, unless GOMERGE_REQUIRE_TORCH=1
// (CI sets it), where a missing torch is a failure.
func TestPythonIntegration(t *testing.T) {
	py := python()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, py, "-c", "import torch").CombinedOutput(); err != nil {
		msg := "needs " + py + " with torch (Debian: apt-get install python3-torch; or set GOMERGE_PYTHON): " + err.Error() + ": " + string(out)
		if os.Getenv("GOMERGE_REQUIRE_TORCH") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	// A prebuilt binary can be given instead (to test a release build).
	bin := os.Getenv("GOMERGE_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "gomerge")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/gomerge/gomerge/cmd/gomerge").CombinedOutput(); err != nil {
			t.Fatalf("building gomerge: %v\n%s", err, out)
		}
		var err error
		if bin, err = testexec.Wrap(bin); err != nil { // under an emulator, through it
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctx, py, "-m", "unittest", "-v", "test_gomerge")
	cmd.Env = append(os.Environ(), "GOMERGE_BIN="+bin, "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("python tests failed: %v", err)
	}
}
