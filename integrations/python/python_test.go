package python

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/gomerge/gomerge/internal/testexec"
)

// TestPythonIntegration runs test_gomerge.py (unittest, torch, a tiny model) against a
// gomerge built from this module: the round trip bit for bit (staged in RAM and not),
// Hugging Face folders, tied weights, the binary reading every dtype Python writes, two DDP ranks on gloo,
// and a continual run killed at random points. Without torch it skips, unless
// GOMERGE_REQUIRE_TORCH=1 (CI sets it), where a missing torch is a failure.
func TestPythonIntegration(t *testing.T) {
	py, bin, ctx := setup(t, 15*time.Minute)
	cmd := exec.CommandContext(ctx, py, "-m", "unittest", "-v", "test_gomerge")
	cmd.Env = append(os.Environ(), "GOMERGE_BIN="+bin, "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("python tests failed: %v", err)
	}
}

// TestRoundtripBenchTiny runs bench/roundtrip/roundtrip.py's correctness-only mode: the
// benchmark's own code path on a few hundred KB, its weights compared bit for bit with
// torch's formula. No timing is asserted.
func TestRoundtripBenchTiny(t *testing.T) {
	py, bin, ctx := setup(t, 5*time.Minute)
	cmd := exec.CommandContext(ctx, py, filepath.Join("..", "..", "bench", "roundtrip", "roundtrip.py"), "check", t.TempDir())
	cmd.Env = append(os.Environ(), "GOMERGE_BIN="+bin, "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("roundtrip.py check: %v", err)
	}
}

// setup finds the Python with torch (skipping or failing as GOMERGE_REQUIRE_TORCH says)
// and builds gomerge, or takes $GOMERGE_BIN (to test a release build).
func setup(t *testing.T, limit time.Duration) (string, string, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	py := testexec.Python(ctx, t, "torch", "python3-torch")
	bin, err := testexec.Gomerge(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := testexec.Inputs(filepath.Join("..", "..", "bench", "roundtrip")); err != nil {
		t.Fatal(err)
	}
	return py, bin, ctx
}
