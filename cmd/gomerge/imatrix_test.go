package main

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	"github.com/gomerge/gomerge/formats/imatrix/imatrixtest"
)

// imatrixFor makes an importance matrix for every 2-D weight of config c but
// output.weight: per column, a mean square spread over four decades, as calibration
// text gives.
func imatrixFor(c gguftest.Config, seed uint64) []imatrixtest.Entry {
	rng := rand.New(rand.NewPCG(seed, 4))
	names, shapes := c.Shapes()
	var es []imatrixtest.Entry
	for i, name := range names {
		if len(shapes[i]) != 2 || name == "output.weight" || name == "token_embd.weight" {
			continue
		}
		m := make([]float32, shapes[i][1])
		for j := range m {
			m[j] = float32(math.Exp(2 * rng.NormFloat64()))
		}
		es = append(es, imatrixtest.Entry{Name: name, Ncall: 7, Means: m})
	}
	return es
}

func readTensors(t *testing.T, path string) ([]gguf.KV, map[string]gguftest.Tensor) {
	t.Helper()
	meta, ts, err := gguftest.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]gguftest.Tensor{}
	for _, x := range ts {
		m[x.Name] = x
	}
	return meta, m
}

func decodeTensor(t *testing.T, x gguftest.Tensor) []float32 {
	t.Helper()
	v := make([]float32, x.NumElements())
	if err := dtype.Decode(v, x.Data, x.DType); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestImatrixMerge: a Q4_K_M merge with --imatrix quantizes the tensors the matrix
// covers with their importance (the legacy and GGUF forms give the same bytes), leaves
// the others as without it, records the matrix in the metadata, and lowers the
// importance-weighted error against the F32 merge.
func TestImatrixMerge(t *testing.T) {
	// Two layers, not mix8's eight: every quantizer of the four mixes still meets the
	// matrix (the same K-quant types come out), and which layers a mix gives more bits
	// is TestGGUFMix's concern, on the full model. The eight-layer model's 13 merges
	// took five minutes of CI's emulated arm64 run and a minute and a half under -race.
	model := mix8
	model.Layers = 2
	dir := t.TempDir()
	a, c := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "c.gguf")
	writeGGUF(t, a, model, gguftest.Random(model, dtype.F16, 1))
	writeGGUF(t, c, model, gguftest.Random(model, dtype.F16, 2))
	es := imatrixFor(model, 9)
	dat, ggufIM := filepath.Join(dir, "im.dat"), filepath.Join(dir, "im.gguf")
	if err := os.WriteFile(dat, imatrixtest.Legacy(es, imatrixtest.Tail(7, "calib.txt")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := gguftest.WriteFile(ggufIM, imatrixtest.Meta("calib.txt", 7), imatrixtest.GGUFTensors(es, 7*512)); err != nil {
		t.Fatal(err)
	}
	merge := func(name string, extra ...string) string {
		out := filepath.Join(dir, name+".gguf")
		args := append([]string{"sfa", "--anchor", a, "--current", c, "--beta", "0.3", "--out", out}, extra...)
		if code, _, stderr := gomerge(t, args...); code != 0 {
			t.Fatalf("%s: exit %d: %s", name, code, stderr)
		}
		return out
	}
	_, f32 := readTensors(t, merge("f32", "--dtype", "f32"))
	means := map[string][]float32{}
	for _, e := range es {
		means[e.Name] = e.Means
	}
	var metaDat []gguf.KV
	for _, mix := range []string{"q2_k", "q3_k_m", "q4_k_m", "q5_k_m"} {
		_, plain := readTensors(t, merge(mix+"-plain", "--dtype", mix))
		var withDat map[string]gguftest.Tensor
		metaDat, withDat = readTensors(t, merge(mix+"-dat", "--dtype", mix, "--imatrix", dat))
		_, withGGUF := readTensors(t, merge(mix+"-ggufim", "--dtype", mix, "--imatrix", ggufIM))
		// Sums over the covered tensors: squared error without and with the matrix,
		// plain and importance-weighted, and the F32 merge's own squares.
		var e, ew [2]float64
		var ref2, ref2w float64
		for name, p := range plain {
			d, g := withDat[name], withGGUF[name]
			if string(d.Data) != string(g.Data) {
				t.Errorf("%s %s: the legacy and GGUF forms of one matrix give different bytes", mix, name)
			}
			qw, covered := means[name]
			if !covered || !dtype.ImportanceTypes(p.DType) {
				if string(p.Data) != string(d.Data) {
					t.Errorf("%s %s (%s, no entry): changed by --imatrix", mix, name, p.DType)
				}
				continue
			}
			if string(p.Data) == string(d.Data) {
				t.Errorf("%s %s (%s): --imatrix changed nothing", mix, name, p.DType)
			}
			ref := decodeTensor(t, f32[name])
			for k, v := range [][]float32{decodeTensor(t, p), decodeTensor(t, d)} {
				for i := range ref {
					w := float64(qw[i%len(qw)])
					e[k] += sq(float64(v[i] - ref[i]))
					ew[k] += w * sq(float64(v[i]-ref[i]))
					if k == 0 {
						ref2 += sq(float64(ref[i]))
						ref2w += w * sq(float64(ref[i]))
					}
				}
			}
		}
		if !(ew[1] < 0.9*ew[0]) {
			t.Errorf("%s: importance-weighted squared error %g with --imatrix, %g without: want at least 10%% less", mix, ew[1], ew[0])
		}
		t.Logf("%s, the %d covered matrices against the F32 merge: relative RMSE %.4f without --imatrix, %.4f with; importance-weighted %.4f without, %.4f with",
			mix, len(es), math.Sqrt(e[0]/ref2), math.Sqrt(e[1]/ref2), math.Sqrt(ew[0]/ref2w), math.Sqrt(ew[1]/ref2w))
	}
	want := map[string]any{"quantize.imatrix.file": "im.dat", "quantize.imatrix.dataset": "calib.txt",
		"quantize.imatrix.entries_count": int32(len(es)), "quantize.imatrix.chunks_count": int32(7)}
	for k, w := range want {
		if v, ok := metaValue(metaDat, k); !ok || v.Data != w {
			t.Errorf("%s = %v, want %v", k, v.Data, w)
		}
	}
}

func sq(x float64) float64 { return x * x }

// TestImatrixBadInput: a malformed importance matrix, or one made for another model,
// exits 3 naming the file (and the tensor), and writes nothing.
func TestImatrixBadInput(t *testing.T) {
	dir := t.TempDir()
	a, c := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "c.gguf")
	writeGGUF(t, a, mix8, gguftest.Random(mix8, dtype.F16, 1))
	writeGGUF(t, c, mix8, gguftest.Random(mix8, dtype.F16, 2))
	good := imatrixtest.Legacy(imatrixFor(mix8, 1), nil)
	short := imatrixtest.Legacy([]imatrixtest.Entry{{Name: "blk.0.attn_q.weight", Ncall: 1, Means: []float32{1, 2, 3}}}, nil)
	for _, tc := range []struct {
		name, data, msg string
	}{
		{"truncated", string(good[:len(good)-3]), "truncated"},
		{"empty", "", "truncated"},
		{"NaN", string(imatrixtest.Legacy([]imatrixtest.Entry{{Name: "x", Ncall: 1, Means: []float32{float32(math.NaN())}}}, nil)), "not a finite"},
		{"another model", string(short), `"blk.0.attn_q.weight"`},
		{"missing", "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := filepath.Join(dir, tc.name+".dat")
			if tc.name != "missing" {
				if err := os.WriteFile(im, []byte(tc.data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out := filepath.Join(dir, tc.name+".gguf")
			code, _, stderr := gomerge(t, "sfa", "--anchor", a, "--current", c, "--beta", "0.3", "--dtype", "q4_k_m", "--imatrix", im, "--out", out)
			if code != 3 || !strings.Contains(stderr, im) || !strings.Contains(stderr, tc.msg) {
				t.Errorf("exit %d, %q: want 3, naming %s and saying %q", code, stderr, im, tc.msg)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("%s exists after a failed merge", out)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".*gomerge-tmp*")); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}
