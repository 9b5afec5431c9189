package gpu

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// forbidden are PTX instructions that would make the device's bits differ from the
// Go reference: fused multiply-adds, flush-to-zero, approximate or reciprocal
// arithmetic and math functions.
var forbidden = regexp.MustCompile(`^(?:@!?%p\d+\s+)?(?:fma\.|mad\.[a-z.]*f(?:16|32|64)|[a-z0-9.]*\.ftz\b|[a-z0-9.]*\.approx\b|div\.full|rcp\.|rsqrt\.|sqrt\.|ex2\.|lg2\.|sin\.|cos\.|tanh\.)`)

// unrounded are float adds, subtracts, multiplies and divides without an explicit
// rounding mode, which ptxas is allowed to contract into fused multiply-adds.
var unrounded = regexp.MustCompile(`^(?:@!?%p\d+\s+)?(?:add|sub|mul|div)\.f(?:32|64)\b`)

// TestPTXLint reads kernels.ptx: no instruction that changes the numerics, and the
// .entry signatures the Go side launches (kernels in gpu.go).
func TestPTXLint(t *testing.T) {
	entries := map[string][]string{}
	var cur string
	sc := bufio.NewScanner(strings.NewReader(kernelsPTX))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if forbidden.MatchString(s) || unrounded.MatchString(s) {
			t.Errorf("kernels.ptx:%d: %q changes the rounding", line, s)
		}
		if strings.HasPrefix(s, ".visible .entry ") {
			cur = strings.TrimSuffix(strings.TrimPrefix(s, ".visible .entry "), "(")
			entries[cur] = []string{}
			continue
		}
		if cur != "" && strings.HasPrefix(s, ".param ") {
			entries[cur] = append(entries[cur], strings.Fields(s)[1])
			continue
		}
		if s == ")" || s == "{" {
			cur = ""
		}
	}
	if len(entries) != len(kernels) {
		t.Errorf("kernels.ptx has %d entries, gpu.go launches %d", len(entries), len(kernels))
	}
	ptxType := map[string]string{"p": ".u64", "u64": ".u64", "u32": ".u32", "f32": ".f32", "f64": ".f64"}
	for _, k := range kernels {
		got, ok := entries[k.name]
		if !ok {
			t.Errorf("kernels.ptx lacks .entry %s", k.name)
			continue
		}
		var want []string
		for _, p := range strings.Fields(k.params) {
			want = append(want, ptxType[p])
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: PTX parameters %v, gpu.go launches %v", k.name, got, want)
		}
	}
}

// TestPTXLintCatches makes sure the lint would see what it looks for.
func TestPTXLintCatches(t *testing.T) {
	for _, s := range []string{"fma.rn.f32 %f1, %f2, %f3, %f4;", "add.f32 %f1, %f2, %f3;", "mul.ftz.f32 %f1, %f2, %f3;",
		"div.approx.f32 %f1, %f2, %f3;", "@%p1 mad.rn.f64 %fd1, %fd2, %fd3, %fd4;", "div.full.f32 %f1, %f2, %f3;", "add.rn.ftz.f32 %f1, %f2, %f3;"} {
		if !forbidden.MatchString(s) && !unrounded.MatchString(s) {
			t.Errorf("the lint misses %q", s)
		}
	}
	for _, s := range []string{"add.rn.f32 %f1, %f2, %f3;", "mad.lo.s32 %r1, %r2, %r3, %r4;", "mul.wide.u32 %rd1, %r1, %r2;", "div.rn.f32 %f1, %f2, %f3;"} {
		if forbidden.MatchString(s) || unrounded.MatchString(s) {
			t.Errorf("the lint flags %q", s)
		}
	}
}

// TestPTXFresh regenerates kernels.ptx with the go:generate command of embed.go and
// compares the bytes. Without clang-14 it is skipped, unless GOMERGE_REQUIRE_CLANG is
// set (CI sets it and installs clang-14), when it fails.
func TestPTXFresh(t *testing.T) {
	if _, err := exec.LookPath("clang-14"); err != nil {
		if os.Getenv("GOMERGE_REQUIRE_CLANG") != "" {
			t.Fatalf("clang-14 is needed to check kernels.ptx (GOMERGE_REQUIRE_CLANG is set): %v", err)
		}
		t.Skip("clang-14 is not installed: kernels.ptx not regenerated (install clang-14, or set GOMERGE_REQUIRE_CLANG=1 to fail instead)")
	}
	src, err := os.ReadFile("embed.go")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, "//go:generate "); ok {
			args = strings.Fields(rest)
		}
	}
	out := filepath.Join(t.TempDir(), "kernels.ptx")
	for i := range args {
		if args[i] == "-o" && i+1 < len(args) {
			args[i+1] = out
		}
	}
	if len(args) == 0 || args[0] != "clang-14" {
		t.Fatalf("embed.go's go:generate line is not a clang-14 command: %q", args)
	}
	cmd := exec.Command(args[0], args[1:]...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, msg)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, []byte(kernelsPTX)) {
		t.Fatalf("kernels.ptx is stale: run go generate ./gpu and commit the result")
	}
}

func TestCheckArgs(t *testing.T) {
	if err := checkArgs(kL1Sums, []any{devPtr(1), devPtr(2), uint64(3)}); err != nil {
		t.Fatal(err)
	}
	if err := checkArgs(kL1Sums, []any{devPtr(1), devPtr(2), uint32(3)}); err == nil {
		t.Fatal("a u32 for a u64 parameter was accepted")
	}
	if err := checkArgs(kL1Sums, []any{devPtr(1)}); err == nil {
		t.Fatal("too few arguments were accepted")
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []Config{{ChunkElems: 100}, {ChunkElems: -BlockElems}, {Ordinal: -1}, {ChunkElems: 1 << 29}} {
		if _, err := OpenWith(c); err == nil {
			t.Errorf("OpenWith(%+v) succeeded", c)
		}
	}
}

// TestNogpuHasNoPurego: the nogpu build links no dynamic-loading code, so that
// CGO_ENABLED=0 -tags nogpu gives a fully static binary.
func TestNogpuHasNoPurego(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the nogpu build's dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-tags", "nogpu", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "purego") {
		t.Fatalf("the nogpu build depends on purego:\n%s", out)
	}
}
