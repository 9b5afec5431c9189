package merge

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

func openT(t testing.TB, path string) Source {
	t.Helper()
	s, err := Open(path)
	must(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// TestCompareAgainstReference checks every reported number against float64 sums
// computed here, in total and per tensor, for each dtype and layout.
func TestCompareAgainstReference(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
		for _, shards := range []int{1, 3} {
			f := newFixture(t, bigConfig, dt, shards)
			base := stt.Perturb(f.anchor, 1.1, 99)
			basePath := filepath.Join(f.dir, "base.safetensors")
			must(t, stt.WriteFile(basePath, base, nil))
			total, per, err := Compare(context.Background(), openT(t, f.anchorPath), openT(t, f.currentPath), openT(t, basePath),
				CompareOptions{Exec: ExecOptions{Threads: 2}})
			must(t, err)
			var sd, sa, sb, dot, ta, tb float64
			perName := map[string]TensorDistance{}
			for _, p := range per {
				perName[p.Name] = p
			}
			for i, at := range f.anchor {
				a, b, z := at.Float32(), f.current[i].Float32(), base[i].Float32()
				var d2, a2, b2 float64
				for j := range a {
					x, y, w := float64(a[j]), float64(b[j]), float64(z[j])
					d2 += (x - y) * (x - y)
					a2 += x * x
					b2 += y * y
					dot += (x - w) * (y - w)
					ta += (x - w) * (x - w)
					tb += (y - w) * (y - w)
				}
				p, ok := perName[at.Name]
				if !ok {
					t.Fatalf("no per-tensor row for %s", at.Name)
				}
				closeRel(t, at.Name+" l2", p.L2, math.Sqrt(d2), 1e-12)
				closeRel(t, at.Name+" norm_a", p.NormA, math.Sqrt(a2), 1e-12)
				closeRel(t, at.Name+" relative", *p.Relative, math.Sqrt(d2)/math.Sqrt(b2), 1e-12)
				sd, sa, sb = sd+d2, sa+a2, sb+b2
			}
			closeRel(t, "l2", total.L2, math.Sqrt(sd), 1e-12)
			closeRel(t, "norm_a", total.NormA, math.Sqrt(sa), 1e-12)
			closeRel(t, "norm_b", total.NormB, math.Sqrt(sb), 1e-12)
			closeRel(t, "relative", *total.Relative, math.Sqrt(sd)/math.Sqrt(sb), 1e-12)
			closeRel(t, "cosine", *total.Cosine, dot/(math.Sqrt(ta)*math.Sqrt(tb)), 1e-12)
			if total.Elements != int64(numElemsAll(f.anchor)) {
				t.Errorf("elements %d", total.Elements)
			}
		}
	}
}

func numElemsAll(ts []stt.Tensor) int64 {
	var n int64
	for _, t := range ts {
		n += t.NumElements()
	}
	return n
}

// TestCompareHandWorked: A = (3, 4), B = (0, 0) → l2 5, relative undefined; with
// base A, the task vector A − base is zero and the cosine is undefined.
func TestCompareHandWorked(t *testing.T) {
	dir := t.TempDir()
	a := []stt.Tensor{stt.FromFloat32("w", dtype.F32, []int64{2}, []float32{3, 4})}
	b := []stt.Tensor{stt.FromFloat32("w", dtype.F32, []int64{2}, []float32{0, 0})}
	pa, pb := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors")
	must(t, stt.WriteFile(pa, a, nil))
	must(t, stt.WriteFile(pb, b, nil))
	total, _, err := Compare(context.Background(), openT(t, pa), openT(t, pb), openT(t, pa), CompareOptions{})
	must(t, err)
	if total.L2 != 5 || total.NormA != 5 || total.NormB != 0 || total.Relative != nil || total.Cosine != nil {
		t.Errorf("got %+v", total)
	}
	// Opposite task vectors: cosine −1. A = (1, 2), B = (−1, −2), base 0.
	must(t, stt.WriteFile(pa, []stt.Tensor{stt.FromFloat32("w", dtype.F32, []int64{2}, []float32{1, 2})}, nil))
	must(t, stt.WriteFile(pb, []stt.Tensor{stt.FromFloat32("w", dtype.F32, []int64{2}, []float32{-1, -2})}, nil))
	pz := filepath.Join(dir, "z.safetensors")
	must(t, stt.WriteFile(pz, []stt.Tensor{stt.FromFloat32("w", dtype.F32, []int64{2}, []float32{0, 0})}, nil))
	total, _, err = Compare(context.Background(), openT(t, pa), openT(t, pb), openT(t, pz), CompareOptions{})
	must(t, err)
	if total.Cosine == nil || total.Relative == nil {
		t.Fatalf("got %+v", total)
	}
	closeRel(t, "cosine", *total.Cosine, -1, 1e-15)
	closeRel(t, "relative", *total.Relative, 2, 1e-15)
}

func TestDistanceJSONNaN(t *testing.T) {
	d := Distance{L2: math.NaN(), NormA: 1, NormB: math.Inf(1), Elements: 3}
	b, err := json.Marshal(TensorDistance{Name: "w", Distance: d})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"name":"w","l2":null,"norm_a":1,"norm_b":null,"relative":null,"cosine":null,"elements":3}` {
		t.Errorf("got %s", b)
	}
}
