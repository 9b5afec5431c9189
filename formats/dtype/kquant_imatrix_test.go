package dtype

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var importanceTypes = []DType{Q2_K, Q3_K, Q4_K, Q5_K, Q6_K}

// importanceInputs returns rows of 512 columns and their importance weights (one per
// column): Gaussian rows over several decades, offset rows, sparse and constant rows,
// under weights spread over four decades with a few zero columns, as real
// importance matrices have for unused inputs.
func importanceInputs() (xs, qw []float32) {
	const row = 512
	rng := rand.New(rand.NewPCG(3, 16))
	qw = make([]float32, row)
	for i := range qw {
		qw[i] = float32(math.Exp(2 * rng.NormFloat64()))
		if i%97 == 5 {
			qw[i] = 0
		}
	}
	for r := range 200 {
		scale := math.Pow(10, rng.Float64()*6-4)
		offset := 0.0
		if r%4 == 1 {
			offset = scale * 2 * (rng.Float64() - 0.5)
		}
		for c := range row {
			v := offset + scale*rng.NormFloat64()
			switch r % 7 {
			case 3:
				if rng.IntN(6) != 0 {
					v = 0
				}
			case 5:
				v = 0.25
			case 6:
				if c < 256 {
					v = 0
				}
			}
			xs = append(xs, float32(v))
		}
	}
	return xs, qw
}

func encodeImportanceAll(t *testing.T, xs, qw []float32) []byte {
	t.Helper()
	var out []byte
	for _, d := range importanceTypes {
		q := make([]byte, d.Bytes(int64(len(xs))))
		if err := EncodeImportance(q, xs, d, qw, 0); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		out = append(out, q...)
	}
	return out
}

// TestImportanceMatchesGGML quantizes importanceInputs with ggml's own quantizer given
// the importance weights (ggml_quantize_chunk, as llama-quantize --imatrix calls it)
// and requires gomerge's bytes to be the same.
func TestImportanceMatchesGGML(t *testing.T) {
	lib, python := ggmlLib(t)
	xs, qw := importanceInputs()
	dir := t.TempDir()
	write := func(name string, v []float32) string {
		raw := make([]byte, 4*len(v))
		for i, f := range v {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	in, w, out := write("in.f32", xs), write("qw.f32", qw), filepath.Join(dir, "out.bin")
	args := []string{"testdata/ggml_quantize.py", lib, in, out, "--imatrix=" + w}
	for _, d := range importanceTypes {
		args = append(args, ggmlName(d))
	}
	if msg, err := exec.Command(python, args...).CombinedOutput(); err != nil {
		t.Fatalf("ggml_quantize.py: %v: %s", err, msg)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := encodeImportanceAll(t, xs, qw)
	if len(got) != len(want) {
		t.Fatalf("%d bytes, ggml gave %d", len(got), len(want))
	}
	nb := len(xs) / qkK
	for _, d := range importanceTypes {
		bb := int(d.Bytes(qkK))
		g, wnt := got[:nb*bb], want[:nb*bb]
		got, want = got[nb*bb:], want[nb*bb:]
		bad := 0
		for b := range nb {
			if !bytes.Equal(g[b*bb:(b+1)*bb], wnt[b*bb:(b+1)*bb]) {
				if bad == 0 {
					t.Errorf("%s block %d differs from ggml:\n  got %x\n want %x", d, b, g[b*bb:(b+1)*bb], wnt[b*bb:(b+1)*bb])
				}
				bad++
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d blocks differ from ggml", d, bad, nb)
		}
	}
}

// TestImportanceFitsMatchGo: the vectorized group fits give the reference loops'
// bytes with importance weights too.
func TestImportanceFitsMatchGo(t *testing.T) {
	xs, qw := importanceInputs()
	for _, d := range []DType{Q4_K, Q5_K, Q6_K} { // the types with a vectorized fit
		bb := int(d.Bytes(qkK))
		got, want := make([]byte, bb), make([]byte, bb)
		bad := 0
		for b := 0; b < len(xs)/qkK; b++ {
			x, w := xs[b*qkK:(b+1)*qkK], qw[b%2*qkK:(b%2+1)*qkK]
			switch d {
			case Q6_K:
				quantizeQ6KBy(got, x, w, false)
				quantizeQ6KBy(want, x, w, true)
			default:
				nmax := int32(15)
				if d == Q5_K {
					nmax = 31
				}
				quantizeKImpl(got, x, w, nmax, false)
				quantizeKImpl(want, x, w, nmax, true)
			}
			if !bytes.Equal(got, want) {
				if bad == 0 {
					t.Errorf("%s block %d: fast %x, reference %x", d, b, got, want)
				}
				bad++
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d blocks differ", d, bad)
		}
		// EncodeImportance quantizes Q4_K and Q5_K two blocks at a time where it can
		// (quantizeKImplPair); starting one block in gives an odd count and pairs that
		// straddle the rows' end, where the columns wrap.
		for _, skip := range []int{0, 1} {
			in := xs[skip*qkK:]
			all := make([]byte, d.Bytes(int64(len(in))))
			if err := EncodeImportance(all, in, d, qw, skip*qkK); err != nil {
				t.Fatal(err)
			}
			bad = 0
			for b := 0; b < len(in)/qkK; b++ {
				x, w := in[b*qkK:(b+1)*qkK], qw[(b+skip)%2*qkK:((b+skip)%2+1)*qkK]
				if d == Q6_K {
					quantizeQ6KBy(want, x, w, true)
				} else {
					quantizeKImpl(want, x, w, int32(map[DType]int{Q4_K: 15, Q5_K: 31}[d]), true)
				}
				if !bytes.Equal(all[b*bb:(b+1)*bb], want) {
					if bad == 0 {
						t.Errorf("%s EncodeImportance from block %d, block %d: %x, reference %x", d, skip, b, all[b*bb:(b+1)*bb], want)
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%s EncodeImportance from block %d: %d blocks differ", d, skip, bad)
			}
		}
	}
}

// TestImportanceLowersWeightedError: on data whose columns matter unequally, the
// importance-weighted quantizers give a smaller importance-weighted squared error than
// the plain ones (what an importance matrix is for).
func TestImportanceLowersWeightedError(t *testing.T) {
	xs, qw := importanceInputs()
	back := make([]float32, len(xs))
	for _, d := range importanceTypes {
		errOf := func(q []byte) float64 {
			if err := Decode(back, q, d); err != nil {
				t.Fatal(err)
			}
			var e float64
			for i, v := range xs {
				diff := float64(back[i] - v)
				e += float64(qw[i%len(qw)]) * diff * diff
			}
			return e
		}
		plain, weighted := make([]byte, d.Bytes(int64(len(xs)))), make([]byte, d.Bytes(int64(len(xs))))
		if err := Encode(plain, xs, d); err != nil {
			t.Fatal(err)
		}
		if err := EncodeImportance(weighted, xs, d, qw, 0); err != nil {
			t.Fatal(err)
		}
		if ep, ew := errOf(plain), errOf(weighted); !(ew < ep) {
			t.Errorf("%s: weighted error %g with the importance, %g without", d, ew, ep)
		}
	}
}

func TestEncodeImportanceArgs(t *testing.T) {
	xs := make([]float32, 512)
	dst := make([]byte, Q4_K.Bytes(512))
	for _, c := range []struct {
		qw  int
		col int
	}{{0, 0}, {100, 0}, {512, 100}, {512, 512}, {512, -256}} {
		if err := EncodeImportance(dst, xs, Q4_K, make([]float32, c.qw), c.col); err == nil {
			t.Errorf("%d weights from column %d: no error", c.qw, c.col)
		}
	}
	// A row of 768 columns starting at column 512: the second block wraps to column 0.
	qw := make([]float32, 768)
	for i := range qw {
		qw[i] = float32(i%256 + 1)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	if err := EncodeImportance(dst, xs, Q4_K, qw, 512); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 144)
	quantizeKImpl(want, xs[256:], qw[:256], 15, true)
	if !bytes.Equal(dst[144:], want) {
		t.Error("the block after a row's end does not use the next row's first weights")
	}
}
