package lora

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/loratest"
)

var attnMods = []string{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
	"model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"}

func applyTo(t *testing.T, base string, out string, ws []float64, dirs ...string) *ApplyReport {
	t.Helper()
	b, err := checkpoint.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	var as []Weighted
	for i, d := range dirs {
		a, err := Open(d)
		if err != nil {
			t.Fatal(err)
		}
		as = append(as, Weighted{a, ws[i]})
	}
	ap, err := NewApplied(base+"+adapters", b, as)
	if err != nil {
		t.Fatal(err)
	}
	ap.Own()
	defer ap.Close()
	rep, err := WriteApplied(context.Background(), ap, out, dtype.Invalid, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestApplyMatchesReference applies two adapters (one with rank and alpha patterns,
// one rsLoRA) with weights and checks every element against W + Σ w·s·B·A done
// element by element in float64.
func TestApplyMatchesReference(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16, dtype.F16} {
		t.Run(dt.String(), func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "base.safetensors")
			shapes := loratest.LlamaLike(t, base, dt, 1)
			a1 := loratest.AdapterSpec{R: 4, Alpha: 8, Modules: attnMods, DT: dtype.F32, Seed: 3,
				Extra: map[string]any{"rank_pattern": map[string]int{"down_proj": 2}, "alpha_pattern": map[string]float64{"v_proj": 3}}}
			a2 := loratest.AdapterSpec{R: 3, Alpha: 5, RSLoRA: true, Modules: attnMods[:2], DT: dtype.BF16, Seed: 4}
			loratest.WriteAdapter(t, filepath.Join(dir, "a1"), shapes, a1)
			loratest.WriteAdapter(t, filepath.Join(dir, "a2"), shapes, a2)
			out := filepath.Join(dir, "out.safetensors")
			rep := applyTo(t, base, out, []float64{0.7, -1.25}, filepath.Join(dir, "a1"), filepath.Join(dir, "a2"))
			if rep.TensorsAdapted != 4 {
				t.Errorf("adapted %d tensors, want 4", rep.TensorsAdapted)
			}
			W := loratest.ReadFloats(t, base)
			got := loratest.ReadFloats(t, out)
			A1 := loratest.ReadFloats(t, filepath.Join(dir, "a1", WeightsFile))
			A2 := loratest.ReadFloats(t, filepath.Join(dir, "a2", WeightsFile))
			scale := func(s loratest.AdapterSpec, m string) (int, float64) {
				r, alpha := s.R, s.Alpha
				if strings.HasSuffix(m, "down_proj") && s.Seed == 3 {
					r = 2
				}
				if strings.HasSuffix(m, "v_proj") && s.Seed == 3 {
					alpha = 3
				}
				if s.RSLoRA {
					return r, alpha / math.Sqrt(float64(r))
				}
				return r, alpha / float64(r)
			}
			for name, w := range W {
				want := append([]float64(nil), w...)
				m := strings.TrimSuffix(name, ".weight")
				for i, spec := range []loratest.AdapterSpec{a1, a2} {
					fs := []map[string][]float64{A1, A2}[i]
					A, ok := fs[keyPrefix+m+".lora_A.weight"]
					if !ok {
						continue
					}
					r, s := scale(spec, m)
					d := loratest.RefDelta(A, fs[keyPrefix+m+".lora_B.weight"], r, int(shapes[name][0]), int(shapes[name][1]), s*[]float64{0.7, -1.25}[i], false)
					for j := range want {
						want[j] += d[j]
					}
				}
				bad := 0
				for j := range want {
					wf := []float32{float32(want[j])}
					enc := make([]byte, dt.Size())
					dtype.Encode(enc, wf, dt)
					dtype.Decode(wf, enc, dt)
					// The reference sums in another order than Dgemm: one unit in the
					// last place of the output type apart at most.
					g := float32(got[name][j])
					if g != wf[0] {
						nb := make([]byte, dt.Size())
						dtype.Encode(nb, []float32{math.Nextafter32(g, wf[0])}, dt)
						nf := []float32{0}
						dtype.Decode(nf, nb, dt)
						if nf[0] != wf[0] && loratest.ULPDiff(g, wf[0]) > 1 {
							bad++
						}
					}
				}
				if bad > 0 {
					t.Errorf("%s: %d of %d elements differ from the float64 reference", name, bad, len(want))
				}
			}
		})
	}
}

func TestApplyRefSyntax(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.safetensors")
	shapes := loratest.LlamaLike(t, base, dtype.F32, 1)
	loratest.WriteAdapter(t, filepath.Join(dir, "ad"), shapes, loratest.AdapterSpec{R: 2, Alpha: 4, Modules: attnMods, DT: dtype.F32, Seed: 5})
	src, ok, err := OpenRef(base+"+"+filepath.Join(dir, "ad"), nil)
	if !ok || err != nil {
		t.Fatalf("OpenRef: %v %v", ok, err)
	}
	defer src.Close()
	q, err := src.Data("model.layers.0.self_attn.q_proj.weight")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := checkpoint.Open(base)
	defer b.Close()
	orig, _ := b.Data("model.layers.0.self_attn.q_proj.weight")
	if string(q) == string(orig) {
		t.Error("the adapted q_proj equals the base's")
	}
	k1, _ := src.Data("model.layers.0.self_attn.k_proj.weight")
	k0, _ := b.Data("model.layers.0.self_attn.k_proj.weight")
	if string(k1) != string(k0) {
		t.Error("k_proj, which the adapter does not touch, changed")
	}
	if _, ok, _ := OpenRef(base, nil); ok {
		t.Error("a plain path was taken for a LoRA reference")
	}
	if _, _, err := OpenRef(base+"+"+filepath.Join(dir, "nope"), nil); !errors.Is(err, ErrBadInput) {
		t.Errorf("missing adapter: %v, want ErrBadInput", err)
	}
}

// TestApplyRefusesBadAdapters: each bad adapter fails with ErrBadInput naming the
// file or tensor, and leaves no output.
func TestApplyRefusesBadAdapters(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.safetensors")
	shapes := loratest.LlamaLike(t, base, dtype.F32, 1)
	good := loratest.AdapterSpec{R: 2, Alpha: 4, Modules: attnMods, DT: dtype.F32, Seed: 5}
	cases := []struct {
		name string
		mk   func(d string)
		want string
	}{
		{"missing config", func(d string) {
			loratest.WriteAdapter(t, d, shapes, good)
			os.Remove(filepath.Join(d, ConfigFile))
		}, ConfigFile},
		{"wrong rank", func(d string) {
			loratest.WriteAdapter(t, d, shapes, good)
			os.WriteFile(filepath.Join(d, ConfigFile), []byte(`{"peft_type":"LORA","r":3,"lora_alpha":4}`), 0o644)
		}, "lora_A.weight"},
		{"nan alpha", func(d string) {
			loratest.WriteAdapter(t, d, shapes, good)
			os.WriteFile(filepath.Join(d, ConfigFile), []byte(`{"peft_type":"LORA","r":2,"lora_alpha":NaN}`), 0o644)
		}, ConfigFile},
		{"not lora", func(d string) {
			loratest.WriteAdapter(t, d, shapes, good)
			os.WriteFile(filepath.Join(d, ConfigFile), []byte(`{"peft_type":"IA3","r":2,"lora_alpha":4}`), 0o644)
		}, "IA3"},
		{"dora", func(d string) {
			loratest.WriteAdapter(t, d, shapes, good)
			os.WriteFile(filepath.Join(d, ConfigFile), []byte(`{"peft_type":"LORA","r":2,"lora_alpha":4,"use_dora":true}`), 0o644)
		}, "DoRA"},
		{"mismatched base", func(d string) {
			other := map[string][]int64{}
			for k, v := range shapes {
				other[k] = v
			}
			other["model.layers.0.self_attn.q_proj.weight"] = []int64{24, 16}
			loratest.WriteAdapter(t, d, other, good)
		}, "q_proj.lora_A.weight"},
		{"pickle", func(d string) {
			os.MkdirAll(d, 0o755)
			os.WriteFile(filepath.Join(d, ConfigFile), []byte(`{"peft_type":"LORA","r":2,"lora_alpha":4}`), 0o644)
			os.WriteFile(filepath.Join(d, "adapter_model.bin"), []byte("PK"), 0o644)
		}, "pickle"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "ad")
			c.mk(d)
			out := filepath.Join(t.TempDir(), "out.safetensors")
			err := func() error {
				src, _, err := OpenRef(base+"+"+d, nil)
				if err != nil {
					return err
				}
				defer src.Close()
				_, err = WriteApplied(context.Background(), src.(*Applied), out, dtype.Invalid, nil)
				return err
			}()
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v: want ErrBadInput naming %q", err, c.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("an output was written: %v", err)
			}
		})
	}
}
