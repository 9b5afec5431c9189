package merge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

func writeGGUF(t testing.TB, path string, c gguftest.Config, ts []gguftest.Tensor) {
	t.Helper()
	must(t, gguftest.WriteFile(path, gguftest.Metadata(c, filepath.Base(path)), ts))
}

// asF32Safetensors writes the dequantized values of ts as an F32 safetensors file
// under the same names: the same merge on it, quantized afterwards, must give the
// GGUF merge's bytes.
func asF32Safetensors(t testing.TB, path string, ts []gguftest.Tensor) {
	t.Helper()
	var out []stt.Tensor
	for _, g := range ts {
		out = append(out, stt.FromFloat32(g.Name, dtype.F32, g.Shape, g.Float32()))
	}
	must(t, stt.WriteFile(path, out, nil))
}

// TestGGUFMethodsMatchDequantizedMerge runs every method on Q8_0 GGUF inputs and the
// same method on F32 safetensors holding the inputs' dequantized values; quantizing
// the latter's result tensor by tensor must give exactly the GGUF output's data, and
// the GGUF output must keep the reference's metadata and add provenance.
func TestGGUFMethodsMatchDequantizedMerge(t *testing.T) {
	dir := t.TempDir()
	c := gguftest.Tiny
	base := gguftest.Random(c, dtype.Q8_0, 1)
	models := [][]gguftest.Tensor{gguftest.Perturb(base, 0.5, 2), gguftest.Perturb(base, 0.5, 3), gguftest.Perturb(base, 0.5, 4)}
	path := func(name, ext string) string { return filepath.Join(dir, name+ext) }
	writeGGUF(t, path("base", ".gguf"), c, base)
	asF32Safetensors(t, path("base", ".safetensors"), base)
	for i, m := range models {
		writeGGUF(t, path(fmt.Sprint("m", i), ".gguf"), c, m)
		asF32Safetensors(t, path(fmt.Sprint("m", i), ".safetensors"), m)
	}
	ctx := context.Background()
	for _, method := range testMethods() {
		t.Run(method, func(t *testing.T) {
			def, _ := methodDefs(method)
			n := 3
			if def.maxModels > 0 {
				n = def.maxModels
			}
			mk := func(ext string) MethodJob {
				j := MethodJob{Method: method, Params: Params{Density: 0.5, Lambda: 1, T: 0.3, Gamma: 0.01, Seed: 5, Epsilon: 1e-6, Rescale: "l1"},
					Job: Job{Out: path("out-"+method, ext), Version: "test"}}
				if def.base {
					j.Base = path("base", ext)
				}
				for i := range n {
					m := Model{Path: path(fmt.Sprint("m", i), ext), Weight: 1 + float64(i)/2, Density: math.NaN()}
					if def.fisher {
						m.Fisher = path("fisher", ext)
					}
					j.Models = append(j.Models, m)
				}
				return j
			}
			if def.fisher {
				f := gguftest.Random(c, dtype.F32, 9) // norms ≈ 1, weights ±: take |x| below
				for i := range f {
					v := f[i].Float32()
					for j := range v {
						v[j] = float32(math.Abs(float64(v[j])))
					}
					f[i] = gguftest.Tensor{Name: f[i].Name, DType: dtype.F32, Shape: f[i].Shape, Data: encodeF32(v)}
				}
				writeGGUF(t, path("fisher", ".gguf"), c, f)
				asF32Safetensors(t, path("fisher", ".safetensors"), f)
			}
			gj := mk(".gguf")
			rep, err := RunMethod(ctx, gj)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.TypeChanges) != 0 {
				t.Errorf("type changes %v, want none (Q8_0 and F32 are written as they are)", rep.TypeChanges)
			}
			sj := mk(".safetensors")
			sj.Job.OutDType = dtype.F32
			if _, err := RunMethod(ctx, sj); err != nil {
				t.Fatal(err)
			}
			_, ref, err := readSafetensorsF32(sj.Job.Out)
			must(t, err)
			meta, got, err := gguftest.Read(gj.Job.Out)
			must(t, err)
			for _, g := range got {
				want := make([]byte, g.DType.Bytes(g.NumElements()))
				must(t, dtype.Encode(want, ref[g.Name], g.DType))
				if !bytes.Equal(g.Data, want) {
					t.Errorf("tensor %s (%s): GGUF merge differs from the quantized F32 merge", g.Name, g.DType)
				}
			}
			keys := map[string]gguf.Value{}
			for _, kv := range meta {
				keys[kv.Key] = kv.Value
			}
			if keys["gomerge.method"].Data != method || keys["general.architecture"].Data != "llama" {
				t.Errorf("metadata: method %v, architecture %v", keys["gomerge.method"].Data, keys["general.architecture"].Data)
			}
			if toks, _ := keys["tokenizer.ggml.tokens"].AsStrings(); len(toks) != gguftest.VocabSize {
				t.Errorf("vocabulary of %d tokens not carried over", len(toks))
			}
		})
	}
}

func newRng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

func encodeF32(v []float32) []byte {
	b := make([]byte, 4*len(v))
	if err := dtype.Encode(b, v, dtype.F32); err != nil {
		panic(err)
	}
	return b
}

func readSafetensorsF32(path string) ([]string, map[string][]float32, error) {
	s, err := Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	out := map[string][]float32{}
	var names []string
	for _, m := range s.Tensors() {
		b, err := s.Data(m.Name)
		if err != nil {
			return nil, nil, err
		}
		v := make([]float32, m.NumElements())
		if err := dtype.Decode(v, b, m.DType); err != nil {
			return nil, nil, err
		}
		names = append(names, m.Name)
		out[m.Name] = v
	}
	return names, out, nil
}

// TestGGUFSFAKQuantsAndDType covers the output type policy: without --dtype every
// tensor keeps the reference's type (Q4_K, Q6_K and F32, as in a Q4_K_M file) and
// general.file_type is left as the reference has it; --dtype applies to 2-D tensors
// only, is listed in type_changes and sets general.file_type; values are SFA's lerp of
// the dequantized inputs, quantized.
func TestGGUFSFAKQuantsAndDType(t *testing.T) {
	dir := t.TempDir()
	c := gguftest.KTiny
	anchor := gguftest.Random(c, dtype.Q4_K, 1)
	current := gguftest.Perturb(anchor, 0.5, 2)
	for i := range current { // one Q6_K tensor, as a real Q4_K_M file has
		if current[i].Name == "output.weight" {
			anchor[i] = gguftest.Tensor{Name: anchor[i].Name, DType: dtype.Q6_K, Shape: anchor[i].Shape, Data: gguftest.RandomBlocks(newRng(3), dtype.Q6_K, anchor[i].NumElements())}
			current[i] = gguftest.Tensor{Name: current[i].Name, DType: dtype.Q6_K, Shape: current[i].Shape, Data: gguftest.RandomBlocks(newRng(4), dtype.Q6_K, current[i].NumElements())}
		}
	}
	a, cur := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "c.gguf")
	writeGGUF(t, a, c, anchor)
	writeGGUF(t, cur, c, current)
	for _, tc := range []struct {
		dt       dtype.DType
		want2D   dtype.DType // Invalid: the reference's type
		changes  int
		fileType uint32 // llama_ftype gomerge sets; 0: none set
	}{
		{dtype.Invalid, dtype.Invalid, 0, 0},
		{dtype.Q4_K, dtype.Q4_K, 1, 15}, // only output.weight (Q6_K) changes; Q4_K_M's number
		{dtype.Q6_K, dtype.Q6_K, 8, 18},
		{dtype.F16, dtype.F16, 9, 1},
		{dtype.Q5_1, dtype.Q5_1, 9, 9},
	} {
		out := filepath.Join(dir, fmt.Sprintf("out-%s.gguf", tc.dt))
		rep, err := RunSFA(context.Background(), SFAJob{Anchor: a, Current: cur, SFA: SFA{Beta: 0.25}, Job: Job{Out: out, OutDType: tc.dt}})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.TypeChanges) != tc.changes {
			t.Errorf("--dtype %s: %d type changes, want %d: %v", tc.dt, len(rep.TypeChanges), tc.changes, rep.TypeChanges)
		}
		meta, got, err := gguftest.Read(out)
		must(t, err)
		var ft []any
		for _, kv := range meta {
			if kv.Key == "general.file_type" {
				ft = append(ft, kv.Value.Data)
			}
		}
		switch {
		case tc.fileType == 0 && len(ft) != 0:
			t.Errorf("--dtype %s: general.file_type %v set, want none (the reference has none)", tc.dt, ft)
		case tc.fileType != 0 && (len(ft) != 1 || ft[0] != tc.fileType):
			t.Errorf("--dtype %s: general.file_type %v, want [%d]", tc.dt, ft, tc.fileType)
		}
		for i, g := range got {
			want := tc.want2D
			if len(g.Shape) == 1 || want == dtype.Invalid {
				want = anchor[i].DType
			}
			if g.DType != want {
				t.Errorf("--dtype %s: tensor %s is %s, want %s", tc.dt, g.Name, g.DType, want)
			}
			av, cv := anchor[i].Float32(), current[i].Float32()
			m := make([]float32, len(av))
			Lerp(m, av, cv, float32(0.25), float32(0.75))
			wb := make([]byte, g.DType.Bytes(int64(len(m))))
			must(t, dtype.Encode(wb, m, g.DType))
			if !bytes.Equal(wb, g.Data) {
				t.Errorf("--dtype %s: tensor %s differs from the quantized lerp of the dequantized inputs", tc.dt, g.Name)
			}
		}
	}
}

func TestGGUFFormatErrors(t *testing.T) {
	dir := t.TempDir()
	g := filepath.Join(dir, "m.gguf")
	writeGGUF(t, g, gguftest.Tiny, gguftest.Random(gguftest.Tiny, dtype.Q8_0, 1))
	st := filepath.Join(dir, "m.safetensors")
	must(t, stt.WriteFile(st, stt.Random(stt.TinyLlama, dtype.BF16, 1), nil))
	sfa := func(anchor, current, out string, dt dtype.DType) error {
		_, err := RunSFA(context.Background(), SFAJob{Anchor: anchor, Current: current, SFA: SFA{Beta: 0.5}, Job: Job{Out: out, OutDType: dt}})
		return err
	}
	tests := []struct {
		name                 string
		anchor, current, out string
		dt                   dtype.DType
		want                 error
	}{
		{"mixed formats", st, g, filepath.Join(dir, "o1.gguf"), 0, ErrBadInput},
		{"gguf to safetensors", g, g, filepath.Join(dir, "o2.safetensors"), 0, ErrBadParameter},
		{"safetensors to gguf", st, st, filepath.Join(dir, "o3.gguf"), 0, ErrBadParameter},
		{"block dtype to safetensors", st, st, filepath.Join(dir, "o4.safetensors"), dtype.Q8_0, ErrBadParameter},
	}
	for _, tc := range tests {
		if err := sfa(tc.anchor, tc.current, tc.out, tc.dt); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "o*")); len(matches) != 0 {
		t.Errorf("failed merges left %v", matches)
	}
}

// TestGGUFDistanceAndInPlace: distance reads GGUF like safetensors (the dequantized
// values), and --in-place replaces a GGUF file atomically with the merge.
func TestGGUFDistanceAndInPlace(t *testing.T) {
	dir := t.TempDir()
	a := gguftest.Random(gguftest.Tiny, dtype.Q4_0, 1)
	b := gguftest.Perturb(a, 1, 2)
	pa, pb := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	writeGGUF(t, pa, gguftest.Tiny, a)
	writeGGUF(t, pb, gguftest.Tiny, b)
	sa, err := Open(pa)
	must(t, err)
	defer sa.Close()
	sb, err := Open(pb)
	must(t, err)
	defer sb.Close()
	total, _, err := Compare(context.Background(), sa, sb, nil, CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var want float64
	for i := range a {
		av, bv := a[i].Float32(), b[i].Float32()
		for j := range av {
			e := float64(av[j]) - float64(bv[j])
			want += e * e
		}
	}
	if got := total.L2; math.Abs(got-math.Sqrt(want)) > 1e-9*math.Sqrt(want) {
		t.Errorf("L2 = %v, want %v", got, math.Sqrt(want))
	}
	if _, err := RunSFA(context.Background(), SFAJob{Anchor: pa, Current: pb, SFA: SFA{Beta: 1}, Job: Job{InPlace: true}}); err != nil {
		t.Fatal(err)
	}
	_, got, err := gguftest.Read(pb)
	must(t, err)
	for i := range got {
		if !slices.Equal(got[i].Data, a[i].Data) { // β = 1 gives the anchor; Q4_0 re-quantizes exactly? see below
			av := a[i].Float32()
			back := make([]byte, a[i].DType.Bytes(int64(len(av))))
			must(t, dtype.Encode(back, av, a[i].DType))
			if !slices.Equal(got[i].Data, back) {
				t.Errorf("tensor %s: in-place β=1 is not the anchor re-quantized", got[i].Name)
			}
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*")); len(m) != 0 {
		t.Errorf("in-place left %v", m)
	}
}

// TestGGUFSFAEndpointsExact: β = 0 and β = 1 give the current and the anchor model's
// bytes for every K-quant type, including Q3_K and Q5_K, whose quantizers (ggml's)
// do not always give a block back from its own dequantized values; at β = 0.5 the
// tensors are re-quantized.
func TestGGUFSFAEndpointsExact(t *testing.T) {
	dir := t.TempDir()
	c := gguftest.KTiny
	for _, d := range []dtype.DType{dtype.Q2_K, dtype.Q3_K, dtype.Q4_K, dtype.Q5_K, dtype.Q6_K} {
		anchor := gguftest.Random(c, d, 1)
		current := gguftest.Random(c, d, 2)
		a, cur := filepath.Join(dir, "a-"+d.String()+".gguf"), filepath.Join(dir, "c-"+d.String()+".gguf")
		writeGGUF(t, a, c, anchor)
		writeGGUF(t, cur, c, current)
		for _, beta := range []float64{0, 1, 0.5} {
			out := filepath.Join(dir, fmt.Sprintf("out-%s-%g.gguf", d, beta))
			if _, err := RunSFA(context.Background(), SFAJob{Anchor: a, Current: cur, SFA: SFA{Beta: beta}, Job: Job{Out: out}}); err != nil {
				t.Fatal(err)
			}
			_, got, err := gguftest.Read(out)
			must(t, err)
			want := current
			if beta == 1 {
				want = anchor
			}
			same := 0
			for i, g := range got {
				if bytes.Equal(g.Data, want[i].Data) {
					same++
				}
			}
			switch {
			case beta != 0.5 && same != len(got):
				t.Errorf("%s β = %g: %d of %d tensors are the input's bytes, want all", d, beta, same, len(got))
			case beta == 0.5 && same == len(got):
				t.Errorf("%s β = 0.5: every tensor is the current model's", d)
			}
		}
	}
}
