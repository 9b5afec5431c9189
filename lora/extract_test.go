package lora

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/loratest"
)

// fineTune writes model = base + a rank-3 delta + small full-rank noise on every
// matrix but the norms, the embedding included.
func fineTune(t *testing.T, base, model string) {
	t.Helper()
	W := loratest.ReadFloats(t, base)
	b, _ := checkpoint.Open(base)
	defer b.Close()
	rng := rand.New(rand.NewPCG(9, 9))
	var ts []loratest.Tensor
	for _, m := range b.Tensors() {
		w := W[m.Name]
		v := make([]float32, len(w))
		for i, x := range w {
			v[i] = float32(x)
		}
		if len(m.Shape) == 2 {
			rows, cols := int(m.Shape[0]), int(m.Shape[1])
			U, V := loratest.RandVals(rng, rows*3, 0.4), loratest.RandVals(rng, 3*cols, 0.4)
			for i := range rows {
				for j := range cols {
					var s float32
					for k := range 3 {
						s += U[i*3+k] * V[k*cols+j] * float32(3-k)
					}
					v[i*cols+j] += s + 0.01*float32(rng.NormFloat64())
				}
			}
		}
		ts = append(ts, loratest.NewTensor(m.Name, m.DType, m.Shape, v))
	}
	loratest.WriteST(t, model, ts)
}

// TestExtractApplyRoundTrip: extract at rank k, apply, and the model comes back with
// ‖M' − M‖_F within the discarded singular values' bound √(Σ_{i>k} σᵢ²) of each
// delta, computed here with gonum's full SVD; for the exact SVD and the randomized
// one.
func TestExtractApplyRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name       string
		rank       int
		exactBelow int
		slack      float64
	}{{"exact/rank2", 2, 0, 1e-4}, {"exact/rank3", 3, 0, 1e-4}, {"randomized/rank3", 3, 8, 0.02}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			base, model := filepath.Join(dir, "base.safetensors"), filepath.Join(dir, "model.safetensors")
			loratest.LlamaLike(t, base, dtype.F32, 1)
			fineTune(t, base, model)
			bs, _ := checkpoint.Open(base)
			ms, _ := checkpoint.Open(model)
			defer bs.Close()
			defer ms.Close()
			ad := filepath.Join(dir, "ad")
			rep, err := Extract(context.Background(), bs, ms, ad, ExtractOptions{Rank: c.rank, Embeddings: true, ExactBelow: c.exactBelow})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Modules) != 16 {
				t.Errorf("%d modules extracted, want 16 (14 projections, embedding, lm_head)", len(rep.Modules))
			}
			out := filepath.Join(dir, "out.safetensors")
			applyTo(t, base, out, []float64{1}, ad)
			B, M, G := loratest.ReadFloats(t, base), loratest.ReadFloats(t, model), loratest.ReadFloats(t, out)
			for _, mt := range ms.Tensors() {
				if len(mt.Shape) != 2 {
					if !slices.Equal(G[mt.Name], B[mt.Name]) {
						t.Errorf("%s: a 1-D tensor changed", mt.Name)
					}
					continue
				}
				rows, cols := int(mt.Shape[0]), int(mt.Shape[1])
				D := make([]float64, rows*cols)
				var errSq, norm float64
				for i := range D {
					D[i] = M[mt.Name][i] - B[mt.Name][i]
					e := G[mt.Name][i] - M[mt.Name][i]
					errSq += e * e
					norm += D[i] * D[i]
				}
				var svd mat.SVD
				if !svd.Factorize(mat.NewDense(rows, cols, D), mat.SVDNone) {
					t.Fatal("svd")
				}
				var discarded float64
				for _, s := range svd.Values(nil)[c.rank:] {
					discarded += s * s
				}
				bound := math.Sqrt(discarded)
				if got := math.Sqrt(errSq); got > bound*(1+c.slack)+1e-5*math.Sqrt(norm) {
					t.Errorf("%s: ‖M'−M‖ = %.6g, over the bound %.6g", mt.Name, got, bound)
				}
			}
			for _, m := range rep.Modules {
				if m.Rank != c.rank || !(m.EnergyKept > 0.5 && m.EnergyKept <= 1) || !(m.RelError >= 0 && m.RelError < 0.6) {
					t.Errorf("report %+v", m)
				}
			}
		})
	}
}

func TestExtractOptions(t *testing.T) {
	dir := t.TempDir()
	base, model := filepath.Join(dir, "base.safetensors"), filepath.Join(dir, "model.safetensors")
	loratest.LlamaLike(t, base, dtype.BF16, 1)
	fineTune(t, base, model)
	bs, _ := checkpoint.Open(base)
	ms, _ := checkpoint.Open(model)
	defer bs.Close()
	defer ms.Close()
	ad := filepath.Join(dir, "ad")
	rep, err := Extract(context.Background(), bs, ms, ad, ExtractOptions{Rank: 8, SVEpsilon: 0.5,
		Include: regexp.MustCompile(`layers\.0\.`), Exclude: regexp.MustCompile(`mlp`)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Modules) != 4 {
		t.Fatalf("%d modules, want layer 0's four attention projections: %+v", len(rep.Modules), rep.Modules)
	}
	for _, m := range rep.Modules {
		// Three strong directions and noise under 0.5: --sv-epsilon keeps three.
		if m.Rank != 3 {
			t.Errorf("%s: rank %d, want 3 above --sv-epsilon", m.Tensor, m.Rank)
		}
	}
	a, err := Open(ad)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Config.R != 3 || a.Config.LoraAlpha != 3 || len(a.Modules) != 4 || a.Modules[0].Scale != 1 {
		t.Errorf("written config r=%d alpha=%v, %d modules", a.Config.R, a.Config.LoraAlpha, len(a.Modules))
	}
	raw, _ := os.ReadFile(filepath.Join(ad, ConfigFile))
	var cfg map[string]any
	json.Unmarshal(raw, &cfg)
	for _, k := range []string{"peft_type", "r", "lora_alpha", "target_modules", "task_type", "base_model_name_or_path", "rank_pattern", "alpha_pattern", "use_rslora", "fan_in_fan_out", "bias"} {
		if _, ok := cfg[k]; !ok {
			t.Errorf("adapter_config.json lacks %s", k)
		}
	}
	// Without --embeddings the embedding is reported as skipped.
	rep, err = Extract(context.Background(), bs, ms, filepath.Join(dir, "ad2"), ExtractOptions{Rank: 2})
	if err != nil {
		t.Fatal(err)
	}
	skipped := false
	for _, s := range rep.Skipped {
		if strings.Contains(s.Tensor, "embed_tokens") {
			skipped = true
		}
	}
	if !skipped {
		t.Errorf("embedding not reported as skipped: %+v", rep.Skipped)
	}
}
