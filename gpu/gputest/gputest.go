// Package gputest builds the fake CUDA driver (gpu/testdata/fakecuda.c: the driver's
// entry points on the host, running the real kernels.cu) for the tests of any package,
// so that the GPU path of the engine and the CLI is tested on machines without a GPU.
// It is imported only by tests.
package gputest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// RequireEnv names the variable that turns a missing C compiler from a skip into a
// failure (CI sets it, as it does for the gpu package's own tests).
const RequireEnv = "GOMERGE_REQUIRE_CLANG"

// build is the one build per test binary: tests of one package share the library.
var build struct {
	once sync.Once
	path string
	err  error
	skip bool // the error is a missing compiler or binding, not a failed build
}

// Library returns the path of a fake libcuda.so.1, building it on first use. Without
// the driver binding (the nogpu build) or a C compiler, it skips the test, unless
// GOMERGE_REQUIRE_CLANG is set, when it fails it.
//
// The library is cached under the user's cache folder, named by a hash of its sources
// and the compiler, and written through a temporary file and a rename, so that the
// test binaries of several packages running at once share it safely and a change to
// the kernels rebuilds it.
func Library(t testing.TB) string {
	t.Helper()
	if !bindingBuilt {
		t.Skip("built without the CUDA driver binding (nogpu)")
	}
	build.once.Do(func() { build.path, build.skip, build.err = buildLibrary() })
	if build.err != nil {
		if build.skip && os.Getenv(RequireEnv) == "" {
			t.Skip(build.err)
		}
		t.Fatal(build.err)
	}
	return build.path
}

func buildLibrary() (path string, skip bool, err error) {
	cc := os.Getenv("CC")
	if cc == "" {
		for _, c := range []string{"cc", "gcc", "clang", "clang-14"} {
			if _, err := exec.LookPath(c); err == nil {
				cc = c
				break
			}
		}
	}
	if cc == "" {
		return "", true, errors.New("no C compiler (cc, gcc, clang) to build the fake CUDA driver")
	}
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", false, errors.New("gputest: cannot locate its own source (built with -trimpath?)")
	}
	gpuDir := filepath.Dir(filepath.Dir(self))
	src := filepath.Join(gpuDir, "testdata", "fakecuda.c")
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", cc, runtime.GOOS, runtime.GOARCH)
	for _, f := range []string{src, filepath.Join(gpuDir, "kernels.cu")} {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", false, fmt.Errorf("gputest: %w", err)
		}
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "gomerge-test", "fakecuda-"+hex.EncodeToString(h.Sum(nil))[:16])
	lib := filepath.Join(dir, "libcuda.so.1")
	if _, err := os.Stat(lib); err == nil {
		return lib, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("gputest: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "build-*.so")
	if err != nil {
		return "", false, fmt.Errorf("gputest: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	cmd := exec.Command(cc, "-shared", "-fPIC", "-O2", "-ffp-contract=off", "-o", tmp.Name(), src)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("building the fake CUDA driver: %v\n%s", err, msg)
	}
	if err := os.Rename(tmp.Name(), lib); err != nil {
		return "", false, fmt.Errorf("gputest: %w", err)
	}
	return lib, false, nil
}
