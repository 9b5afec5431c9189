package dtype

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/internal/testexec"
)

var kTypes = []DType{Q2_K, Q3_K, Q4_K, Q5_K, Q6_K}

// ggmlName is ggml's spelling of a K-quant type (q4_K), as its function names use it.
func ggmlName(d DType) string { return strings.ToLower(d.String()[:2]) + "_K" }

// kquantInputs returns the blocks the K-quant quantizers are checked on: random
// Gaussian blocks over twelve decades of scale (so the F16 super-scales go subnormal
// at one end and overflow to infinity at the other), some with an offset so that
// groups are all positive or all negative, then edge blocks: zeros, −0, constants,
// exact halves, a lone spike, ties for the largest magnitude, values near the float32
// maximum, subnormals, magnitudes under ggml's GROUP_MAX_EPS, groups whose scales
// differ by 10¹⁵ (so some sub-block scales round to zero), and NaN and ±∞ (the
// default quiet NaN, whose payload nearest_int reads as 0).
func kquantInputs() []float32 {
	rng := rand.New(rand.NewPCG(16, 2026))
	var x []float32
	block := func(f func(j int) float32) {
		for j := range qkK {
			x = append(x, f(j))
		}
	}
	gauss := func(scale float64) func(int) float32 {
		return func(int) float32 { return float32(scale * rng.NormFloat64()) }
	}
	for range 600 {
		scale := math.Pow(10, rng.Float64()*15-9)
		offset := 0.0
		if rng.IntN(4) == 0 {
			offset = scale * 4 * (rng.Float64() - 0.5)
		}
		block(func(int) float32 { return float32(offset + scale*rng.NormFloat64()) })
	}
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	block(func(int) float32 { return 0 })
	block(func(int) float32 { return float32(math.Copysign(0, -1)) })
	block(func(int) float32 { return 0.7 })
	block(func(int) float32 { return -0.7 })
	block(func(j int) float32 { return float32(j) - 127.5 })
	block(func(j int) float32 { return float32(j%16) - 8 })
	block(func(j int) float32 {
		if j == 37 {
			return 5
		}
		return 0
	})
	block(func(j int) float32 { return []float32{-3, 3}[j%2] })
	block(func(j int) float32 { return []float32{3, -3}[j%2] })
	block(func(j int) float32 {
		if j%50 == 0 {
			return float32(math.Copysign(math.MaxFloat32, float64(j%100)-1))
		}
		return float32(3e37 * rng.NormFloat64())
	})
	block(gauss(1e-40))
	block(func(int) float32 { return float32(rng.IntN(3)-1) * 1e-45 })
	block(gauss(1e-17))
	block(gauss(1e-12))
	block(func(j int) float32 { return float32(math.Pow(10, float64(j/16-8)) * rng.NormFloat64()) })
	block(func(j int) float32 { return float32(math.Pow(10, float64(j/32-4)) * rng.NormFloat64()) })
	block(func(int) float32 { return float32(1 + math.Abs(rng.NormFloat64())) })
	block(func(int) float32 { return float32(-1 - math.Abs(rng.NormFloat64())) })
	withAt := func(v float32, at ...int) func(int) float32 {
		return func(j int) float32 {
			for _, a := range at {
				if j == a {
					return v
				}
			}
			return float32(rng.NormFloat64())
		}
	}
	block(withAt(nan, 5))
	block(withAt(nan, 0, 100, 255))
	block(func(int) float32 { return nan })
	block(withAt(inf, 7))
	block(withAt(-inf, 200))
	block(func(j int) float32 { return []float32{inf, -inf}[j%2] })
	block(func(j int) float32 {
		if j == 3 {
			return nan
		}
		if j == 9 {
			return inf
		}
		return 0
	})
	return x
}

// kquantGo quantizes xs to each K-quant type in kTypes order, as one byte string.
func kquantGo(t *testing.T, xs []float32) []byte {
	var out []byte
	for _, d := range kTypes {
		q := make([]byte, d.Bytes(int64(len(xs))))
		if err := Encode(q, xs, d); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		out = append(out, q...)
	}
	return out
}

// compareKQuant reports the first differing block of each type between got and want
// (both kTypes in order over xs).
func compareKQuant(t *testing.T, xs []float32, got, want []byte, source string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d bytes, %s gave %d", len(got), source, len(want))
	}
	nb := len(xs) / qkK
	for _, d := range kTypes {
		bb := int(d.Bytes(qkK))
		g, w := got[:nb*bb], want[:nb*bb]
		got, want = got[nb*bb:], want[nb*bb:]
		bad := 0
		for b := range nb {
			if !bytes.Equal(g[b*bb:(b+1)*bb], w[b*bb:(b+1)*bb]) {
				if bad == 0 {
					t.Errorf("%s block %d differs from %s:\n  got %x\n want %x\n   in %v",
						d, b, source, g[b*bb:(b+1)*bb], w[b*bb:(b+1)*bb], xs[b*qkK:(b+1)*qkK])
				}
				bad++
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d blocks differ from %s", d, bad, nb, source)
		}
	}
}

// ggmlLib returns the path of node-llama-cpp's libggml-base.so for this platform and
// of python3, or skips (fails with GOMERGE_REQUIRE_NODE=1, as CI sets) when either is
// missing.
func ggmlLib(t *testing.T) (lib, python string) {
	t.Helper()
	// The library is loaded by Python, so it must match Python's architecture, which
	// is not this test's when the test runs under an emulator (CI's arm64 run).
	python = "/usr/bin/python3"
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	if out, err := exec.Command(python, "-c", "import platform; print(platform.machine())").Output(); err == nil {
		arch = map[string]string{"x86_64": "x64", "aarch64": "arm64"}[strings.TrimSpace(string(out))]
	}
	pkg := runtime.GOOS + "-" + arch
	lib, _ = filepath.Abs("../../testdata/node/node_modules/@node-llama-cpp/" + pkg + "/bins/" + pkg + "/libggml-base.so")
	_, errLib := os.Stat(lib)
	_, errPy := os.Stat(python)
	if errLib != nil || errPy != nil {
		msg := "ggml (" + lib + ", from testdata/node's node-llama-cpp) or /usr/bin/python3 missing (cd testdata/node && npm install --omit=optional)"
		if os.Getenv("GOMERGE_REQUIRE_NODE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if err := testexec.Inputs("testdata"); err != nil {
		t.Fatal(err)
	}
	return lib, python
}

// runGGML quantizes xs with ggml's quantize_row_*_ref through testdata/ggml_quantize.py.
func runGGML(t *testing.T, lib, python string, xs []float32) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.f32"), filepath.Join(dir, "out.bin")
	raw := make([]byte, 4*len(xs))
	for i, v := range xs {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	if err := os.WriteFile(in, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"testdata/ggml_quantize.py", lib, in, out}
	for _, d := range kTypes {
		args = append(args, ggmlName(d))
	}
	if msg, err := exec.Command(python, args...).CombinedOutput(); err != nil {
		t.Fatalf("ggml_quantize.py: %v: %s", err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var updateGGML = flag.Bool("update-ggml", false, "rewrite testdata/kquant_ggml.sha256 from ggml's output")

const ggmlGolden = "testdata/kquant_ggml.sha256"

// TestKQuantMatchesGGML quantizes kquantInputs with ggml's own reference quantizers
// (the library node-llama-cpp ships, through Python's ctypes) and requires gomerge's
// bytes to equal them, block for block, for every K-quant type.
func TestKQuantMatchesGGML(t *testing.T) {
	lib, python := ggmlLib(t)
	xs := kquantInputs()
	want := runGGML(t, lib, python, xs)
	compareKQuant(t, xs, kquantGo(t, xs), want, "ggml")
	if *updateGGML {
		if err := os.WriteFile(ggmlGolden, []byte(goldenText(xs, want)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKQuantGolden checks gomerge's K-quant bytes on kquantInputs against SHA-256
// hashes of ggml's output, recorded by TestKQuantMatchesGGML -update-ggml, so the
// comparison with ggml holds on every platform the tests run on (arm64 included,
// where Go could fuse multiply-adds), with or without the library.
func TestKQuantGolden(t *testing.T) {
	f, err := os.Open(ggmlGolden)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) == 2 {
			want[fs[0]] = fs[1]
		}
	}
	xs := kquantInputs()
	for k, v := range parseGolden(goldenText(xs, kquantGo(t, xs))) {
		if want[k] != v {
			t.Errorf("%s: sha256 %s, ggml's is %s", k, v, want[k])
		}
	}
	if len(want) != len(kTypes)+1 {
		t.Errorf("%s has %d entries, want %d", ggmlGolden, len(want), len(kTypes)+1)
	}
}

// goldenText is the hash file: the input's hash (so a changed generator is told apart
// from a changed quantizer), then one line per type.
func goldenText(xs []float32, q []byte) string {
	var b strings.Builder
	raw := make([]byte, 4*len(xs))
	for i, v := range xs {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	fmt.Fprintf(&b, "input %x\n", sha256.Sum256(raw))
	nb := int64(len(xs) / qkK)
	for _, d := range kTypes {
		n := d.Bytes(nb * qkK)
		fmt.Fprintf(&b, "%s %x\n", d, sha256.Sum256(q[:n]))
		q = q[n:]
	}
	return b.String()
}

func parseGolden(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if fs := strings.Fields(line); len(fs) == 2 {
			if _, err := hex.DecodeString(fs[1]); err == nil {
				m[fs[0]] = fs[1]
			}
		}
	}
	return m
}

func TestNearestInt(t *testing.T) {
	cases := []struct {
		in   float32
		want int32
	}{
		{0, 0}, {0.5, 0}, {1.5, 2}, {2.5, 2}, {-0.5, 0}, {-1.5, -2}, {-2.5, -2},
		{0.49999997, 0}, {-3.7, -4}, {4194303, 4194303}, {-4194303, -4194303},
		{float32(math.NaN()), 0}, // the default quiet NaN's payload bits are 0x400000
	}
	for _, c := range cases {
		if got := nearestInt(c.in); got != c.want {
			t.Errorf("nearestInt(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}

// TestKQuantHandWorked: blocks whose bytes follow from the format's definition.
func TestKQuantHandWorked(t *testing.T) {
	le := binary.LittleEndian
	t.Run("Q6_K zeros", func(t *testing.T) {
		y := bytes.Repeat([]byte{0xAA}, 210)
		if err := Encode(y, make([]float32, 256), Q6_K); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(y, make([]byte, 210)) {
			t.Errorf("an all-zero block gave %x, want 210 zero bytes", y)
		}
	})
	t.Run("Q4_K ramp", func(t *testing.T) {
		// Every group of 32 is 0, 1, …, 15 twice: min 0 and scale 1 fit exactly, so
		// each 6-bit scale is 63 under d = 1/63, every min 0 under dmin = 0, and
		// level = value.
		x := make([]float32, 256)
		for i := range x {
			x[i] = float32(i % 16)
		}
		y := make([]byte, 144)
		if err := Encode(y, x, Q4_K); err != nil {
			t.Fatal(err)
		}
		if d, dmin := le.Uint16(y), le.Uint16(y[2:]); d != Float32ToF16(float32(1)/63) || dmin != 0 {
			t.Errorf("d, dmin = %#04x, %#04x, want %#04x, 0", d, dmin, Float32ToF16(float32(1)/63))
		}
		// Scales 0..3 in bytes 0..3 (63) with the top bits of scales 4..7 (3<<6);
		// mins 0..3 in bytes 4..7 (0); bytes 8..11 hold scale j's low nibble (15)
		// and min j's (0) for j = 4..7.
		want := []byte{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x0F, 0x0F, 0x0F, 0x0F}
		if !bytes.Equal(y[4:16], want) {
			t.Errorf("scales = %x, want %x", y[4:16], want)
		}
		for i, q := range y[16:] {
			if w := byte(i%16) | byte(i%16)<<4; q != w {
				t.Fatalf("qs[%d] = %#02x, want %#02x", i, q, w)
			}
		}
	})
}

// BenchmarkEncodeK measures the K-quant reference quantizers on N(0, 1) data; bytes
// are the float32 input's.
func BenchmarkEncodeK(b *testing.B) {
	const n = 1 << 16
	rng := rand.New(rand.NewPCG(1, 2))
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(rng.NormFloat64())
	}
	for _, d := range kTypes {
		b.Run(d.String(), func(b *testing.B) {
			dst := make([]byte, d.Bytes(n))
			b.SetBytes(4 * n)
			b.ReportAllocs()
			for b.Loop() {
				if err := Encode(dst, src, d); err != nil {
					b.Fatal(err)
				}
			}
			back := make([]float32, n)
			if err := Decode(back, dst, d); err != nil || back[0] == src[0] && back[1] == src[1] && back[2] == src[2] {
				b.Fatalf("round trip of N(0,1) data is exact or fails (%v): not quantized", err)
			}
		})
	}
}

// TestKQuantFitsMatchGo requires the group fits that Encode uses (vectorized on amd64)
// to give the reference loops' bytes, block for block, on kquantInputs and on 4,000
// more random blocks of assorted shapes: Gaussian, uniform, sparse, heavy-tailed,
// with offsets and repeated values, so that ties and min updates are exercised.
func TestKQuantFitsMatchGo(t *testing.T) {
	xs := kquantInputs()
	rng := rand.New(rand.NewPCG(7, 16))
	for b := range 4000 {
		scale := math.Pow(10, rng.Float64()*8-4)
		offset := 0.0
		if b%3 == 0 {
			offset = scale * 3 * (rng.Float64() - 0.5)
		}
		for range qkK {
			var v float64
			switch b % 5 {
			case 0:
				v = rng.NormFloat64()
			case 1:
				v = rng.Float64()*2 - 1
			case 2:
				if rng.IntN(8) == 0 {
					v = rng.NormFloat64()
				}
			case 3:
				v = rng.NormFloat64() * math.Exp(2*rng.NormFloat64())
			case 4:
				v = float64(rng.IntN(7) - 3)
			}
			xs = append(xs, float32(offset+scale*v))
		}
	}
	for _, tc := range []struct {
		d    DType
		fast func(y []byte, x []float32)
		ref  func(y []byte, x []float32)
	}{
		{Q4_K, quantizeQ4K, func(y []byte, x []float32) { quantizeQ4KBy(y, x, true) }},
		{Q5_K, quantizeQ5K, func(y []byte, x []float32) { quantizeQ5KBy(y, x, true) }},
		{Q6_K, quantizeQ6K, func(y []byte, x []float32) { quantizeQ6KBy(y, x, nil, true) }},
	} {
		bb := int(tc.d.Bytes(qkK))
		got, want := make([]byte, bb), make([]byte, bb)
		bad := 0
		for b := 0; b < len(xs)/qkK; b++ {
			x := xs[b*qkK : (b+1)*qkK]
			tc.fast(got, x)
			tc.ref(want, x)
			if !bytes.Equal(got, want) {
				if bad == 0 {
					t.Errorf("%s block %d: fast %x, reference %x\n  in %v", tc.d, b, got, want, x)
				}
				bad++
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d blocks differ", tc.d, bad)
		}
		// Encode quantizes Q4_K and Q5_K two blocks at a time where it can
		// (quantizeQ45KPair); an odd count leaves one block for the single path.
		for _, xs := range [][]float32{xs, xs[qkK:]} {
			all := make([]byte, tc.d.Bytes(int64(len(xs))))
			if err := Encode(all, xs, tc.d); err != nil {
				t.Fatal(err)
			}
			bad = 0
			for b := 0; b < len(xs)/qkK; b++ {
				tc.ref(want, xs[b*qkK:(b+1)*qkK])
				if !bytes.Equal(all[b*bb:(b+1)*bb], want) {
					if bad == 0 {
						t.Errorf("%s block %d of %d, Encode: %x, reference %x", tc.d, b, len(xs)/qkK, all[b*bb:(b+1)*bb], want)
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%s Encode: %d blocks differ", tc.d, bad)
			}
		}
	}
}

// BenchmarkEncodeKRef measures the reference K-quant group fits, for comparison with
// BenchmarkEncodeK (which uses the vectorized fits where the CPU has them).
func BenchmarkEncodeKRef(b *testing.B) {
	const n = 1 << 16
	rng := rand.New(rand.NewPCG(1, 2))
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(rng.NormFloat64())
	}
	for _, tc := range []struct {
		d DType
		q func(y []byte, x []float32)
	}{
		{Q4_K, func(y []byte, x []float32) { quantizeQ4KBy(y, x, true) }},
		{Q5_K, func(y []byte, x []float32) { quantizeQ5KBy(y, x, true) }},
		{Q6_K, func(y []byte, x []float32) { quantizeQ6KBy(y, x, nil, true) }},
	} {
		b.Run(tc.d.String(), func(b *testing.B) {
			bb := int(tc.d.Bytes(qkK))
			dst := make([]byte, tc.d.Bytes(n))
			b.SetBytes(4 * n)
			for b.Loop() {
				for i := 0; i < n/qkK; i++ {
					tc.q(dst[i*bb:], src[i*qkK:])
				}
			}
		})
	}
}

// FuzzKQuantFits is the differential fuzzer of the vectorized K-quant paths: the
// fuzzer's bytes, read as little-endian float32 (any bits: NaN, infinities,
// subnormals) and repeated to fill two blocks, are quantized by Encode (on amd64 the
// AVX-512 two-block Q4_K/Q5_K path and Q6_K path, or AVX2) and block by block by the
// Go reference, for Q4_K, Q5_K and Q6_K; the bytes must be equal.
func FuzzKQuantFits(f *testing.F) {
	rng := rand.New(rand.NewPCG(9, 9))
	seed := func(vals ...float32) {
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		f.Add(b)
	}
	gauss := make([]float32, 2*qkK)
	for i := range gauss {
		gauss[i] = float32(rng.NormFloat64())
	}
	seed(gauss...)
	seed(0, 1, -1, 0.5, 3e38, 1e-40, -2, 7)
	seed(1, 1, 1, 1)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) < 4 {
			return
		}
		n := len(raw) / 4
		x := make([]float32, 2*qkK)
		for i := range x {
			x[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(i%n):]))
		}
		for _, tc := range []struct {
			d   DType
			ref func(y []byte, x []float32)
		}{
			{Q4_K, func(y []byte, x []float32) { quantizeQ4KBy(y, x, true) }},
			{Q5_K, func(y []byte, x []float32) { quantizeQ5KBy(y, x, true) }},
			{Q6_K, func(y []byte, x []float32) { quantizeQ6KBy(y, x, nil, true) }},
		} {
			bb := int(tc.d.Bytes(qkK))
			got := make([]byte, 2*bb)
			if err := Encode(got, x, tc.d); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, bb)
			for b := range 2 {
				tc.ref(want, x[b*qkK:(b+1)*qkK])
				if !bytes.Equal(got[b*bb:(b+1)*bb], want) {
					t.Fatalf("%s block %d: Encode %x, reference %x\n  in %v", tc.d, b, got[b*bb:(b+1)*bb], want, x[b*qkK:(b+1)*qkK])
				}
			}
		}
	})
}
