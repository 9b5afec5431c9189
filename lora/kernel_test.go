package lora

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/loratest"
)

// TestAddProductMatchesReference checks the fast product against the element-by-element
// reference bit for bit, over widths that do and do not fill the kernel's 32 lanes,
// ranks that do and do not fill a panel, and values that cancel to zero, underflow and
// round at float32's edge. On amd64 it also checks both against the arithmetic the
// earlier Daxpy rows did (gonum's SSE2 kernel, no FMA there), so outputs written before
// the kernel are written again byte for byte.
func TestAddProductMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, s := range []struct{ rows, cols, k int }{
		{1, 1, 1}, {3, 31, 2}, {5, 32, 16}, {7, 33, 16}, {4, 100, 3}, {9, 300, 17}, {2, 2080, 16}, {3, 700, 64}, {2, 64, 300}, {3, 40, 0},
	} {
		L, R := make([]float64, s.rows*s.k), make([]float64, s.k*s.cols)
		w := make([]float32, s.rows*s.cols)
		for i := range L {
			L[i] = rng.NormFloat64() * math.Pow(2, float64(rng.IntN(80)-40))
		}
		for i := range R {
			R[i] = float64(float32(rng.NormFloat64()))
			if rng.IntN(10) == 0 {
				R[i] = 0
			}
		}
		for i := range w {
			w[i] = float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(60)-30)))
			switch rng.IntN(20) {
			case 0:
				w[i] = float32(math.Copysign(0, -1))
			case 1:
				w[i] = math.MaxFloat32
			case 2:
				w[i] = 1e-44
			}
		}
		if s.k >= 2 && s.cols >= 2 {
			// Row 0, column 0: terms that cancel exactly, so the sum is +0.
			L[0], L[1] = 1, 1
			R[0], R[s.cols] = 0.5, -0.5
			for j := 2; j < s.k; j++ {
				R[j*s.cols] = 0
			}
		}
		got, want := append([]float32(nil), w...), append([]float32(nil), w...)
		addProduct(got, s.rows, s.cols, L, R, s.k)
		addProductRef(want, s.rows, s.cols, L, R, s.k)
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%dx%d rank %d: element %d: fast %v (%#x), reference %v (%#x)", s.rows, s.cols, s.k, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
			}
		}
		// Split the rows in two calls: the same bytes.
		split := append([]float32(nil), w...)
		h := s.rows / 2
		addProduct(split[:h*s.cols], h, s.cols, L[:h*s.k], R, s.k)
		addProduct(split[h*s.cols:], s.rows-h, s.cols, L[h*s.k:], R, s.k)
		for i := range split {
			if math.Float32bits(split[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%dx%d rank %d: element %d: split rows %v, reference %v", s.rows, s.cols, s.k, i, split[i], want[i])
			}
		}
		if runtime.GOARCH != "amd64" || s.k == 0 {
			continue
		}
		old := append([]float32(nil), w...)
		forRows(s.rows, s.cols, L, R, s.k, make([]float64, s.cols), func(i int, row []float64) {
			seg := old[i*s.cols : (i+1)*s.cols]
			for c, d := range row {
				seg[c] = float32(float64(seg[c]) + d)
			}
		})
		for i := range old {
			if math.Float32bits(old[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%dx%d rank %d: element %d: Daxpy rows %v, reference %v", s.rows, s.cols, s.k, i, old[i], want[i])
			}
		}
	}
}

// TestWriteAppliedBlocksAndWorkers applies an adapter to matrices large enough to be
// split into several row blocks (one with a row length the kernel's lanes do not
// divide), to an untouched matrix copied in blocks, and to a vector, with 1 and with 5
// workers, and checks both outputs byte for byte against each tensor computed whole by
// DataAs, with the element-by-element reference for the product.
func TestWriteAppliedBlocksAndWorkers(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	type mat struct {
		name       string
		rows, cols int
		adapted    bool
	}
	mats := []mat{{"model.layers.0.mlp.up_proj", 700, 200, true}, {"model.layers.0.mlp.down_proj", 150, 700, true},
		{"model.layers.0.self_attn.q_proj", 300, 300, false}, {"model.norm", 0, 900, false}}
	var bt, at []loratest.Tensor
	for _, m := range mats {
		shape := []int64{int64(m.rows), int64(m.cols)}
		n := m.rows * m.cols
		if m.rows == 0 {
			shape, n = []int64{int64(m.cols)}, m.cols
		}
		bt = append(bt, loratest.NewTensor(m.name+".weight", dtype.BF16, shape, loratest.RandVals(rng, n, 0.5)))
		if m.adapted {
			at = append(at, loratest.NewTensor(keyPrefix+m.name+".lora_A.weight", dtype.F32, []int64{16, int64(m.cols)}, loratest.RandVals(rng, 16*m.cols, 0.3)),
				loratest.NewTensor(keyPrefix+m.name+".lora_B.weight", dtype.F32, []int64{int64(m.rows), 16}, loratest.RandVals(rng, 16*m.rows, 0.3)))
		}
	}
	base := filepath.Join(dir, "base.safetensors")
	loratest.WriteST(t, base, bt)
	ad := filepath.Join(dir, "ad")
	os.MkdirAll(ad, 0o755)
	loratest.WriteST(t, filepath.Join(ad, WeightsFile), at)
	os.WriteFile(filepath.Join(ad, ConfigFile), []byte(`{"peft_type":"LORA","r":16,"lora_alpha":24}`), 0o644)
	bs, err := checkpoint.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	a, err := Open(ad)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ap, err := NewApplied("x", bs, []Weighted{{a, 0.75}})
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []dtype.DType{dtype.Invalid, dtype.F32} {
		var outs [][]byte
		for _, workers := range []int{1, 5} {
			path := filepath.Join(dir, "out.safetensors")
			if _, err := writeApplied(context.Background(), ap, path, out, nil, workers); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			outs = append(outs, data)
			o, err := checkpoint.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range mats {
				name := m.name + ".weight"
				got, err := o.Data(name)
				if err != nil {
					t.Fatal(err)
				}
				dt := out
				if dt == dtype.Invalid {
					dt = dtype.BF16
				}
				whole, err := ap.DataAs(name, dt)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, whole) {
					t.Fatalf("out %v, %d workers: %s differs from the whole tensor's DataAs", out, workers, name)
				}
				if !m.adapted {
					continue
				}
				// The whole tensor again, with the reference product.
				j, err := ap.job(name)
				if err != nil {
					t.Fatal(err)
				}
				f := make([]float32, m.rows*m.cols)
				dtype.Decode(f, j.data, dtype.BF16)
				addProductRef(f, m.rows, m.cols, j.L, j.R, j.k)
				ref := make([]byte, dt.Bytes(int64(len(f))))
				dtype.Encode(ref, f, dt)
				if !bytes.Equal(got, ref) {
					t.Fatalf("out %v, %d workers: %s differs from the reference product", out, workers, name)
				}
			}
			o.Close()
		}
		if !bytes.Equal(outs[0], outs[1]) {
			t.Errorf("out %v: 1 and 5 workers wrote different bytes", out)
		}
	}
}
