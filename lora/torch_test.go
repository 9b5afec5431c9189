package lora

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/loratest"
	"github.com/gomerge/gomerge/internal/testexec"
)

// TestApplyMatchesTorch checks WriteApplied against PEFT's merge computed by torch in
// float64 (testdata/peft_merge_ref.py): llama-style modules with rank and alpha
// patterns and rsLoRA, an embedding's lora_embedding_A/B, and GPT-2's fan_in_fan_out
// Conv1D layout, for float32, bfloat16 and float16 bases.
func TestApplyMatchesTorch(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Python")
	}
	ctx := context.Background()
	py := testexec.Python(ctx, t, "torch, numpy", "python3-torch python3-numpy")
	for _, c := range []struct {
		dt     dtype.DType
		fifo   bool
		weight float64
	}{{dtype.F32, false, 1}, {dtype.BF16, false, 0.6}, {dtype.F16, true, -1.5}, {dtype.BF16, true, 2}} {
		name := c.dt.String() + "/fan_in_fan_out=" + strconv.FormatBool(c.fifo)
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "base.safetensors")
			ad := filepath.Join(dir, "ad")
			os.MkdirAll(ad, 0o755)
			rng := rand.New(rand.NewPCG(7, 7))
			var bt, at []loratest.Tensor
			add := func(name string, rows, cols int) {
				bt = append(bt, loratest.NewTensor(name, c.dt, []int64{int64(rows), int64(cols)}, loratest.RandVals(rng, rows*cols, 0.5)))
			}
			add("model.embed_tokens.weight", 40, 16)
			r := 4
			at = append(at,
				loratest.NewTensor(keyPrefix+"model.embed_tokens.lora_embedding_A", dtype.F32, []int64{int64(r), 40}, loratest.RandVals(rng, r*40, 0.3)),
				loratest.NewTensor(keyPrefix+"model.embed_tokens.lora_embedding_B", dtype.F32, []int64{16, int64(r)}, loratest.RandVals(rng, 16*r, 0.3)))
			for l, m := range []string{"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "model.layers.1.self_attn.v_proj"} {
				// Widths over 32 columns, so that the AVX2 kernel's lanes and the
				// reference's tail both meet torch.
				out, in := 16+40*l, 36+4*l
				rk := r
				if l == 1 {
					rk = 2 // rank_pattern
				}
				if c.fifo {
					add(m+".weight", in, out)
				} else {
					add(m+".weight", out, in)
				}
				at = append(at,
					loratest.NewTensor(keyPrefix+m+".lora_A.weight", dtype.BF16, []int64{int64(rk), int64(in)}, loratest.RandVals(rng, rk*in, 0.3)),
					loratest.NewTensor(keyPrefix+m+".lora_B.weight", dtype.BF16, []int64{int64(out), int64(rk)}, loratest.RandVals(rng, out*rk, 0.3)))
			}
			add("lm_head.weight", 40, 16)
			loratest.WriteST(t, base, bt)
			loratest.WriteST(t, filepath.Join(ad, WeightsFile), at)
			cfg, _ := json.Marshal(map[string]any{"peft_type": "LORA", "r": r, "lora_alpha": 12, "use_rslora": !c.fifo,
				"fan_in_fan_out": c.fifo, "rank_pattern": map[string]int{"down_proj": 2}, "alpha_pattern": map[string]float64{"v_proj": 5}})
			os.WriteFile(filepath.Join(ad, ConfigFile), cfg, 0o644)
			out := filepath.Join(dir, "out.safetensors")
			applyTo(t, base, out, []float64{c.weight}, ad)
			res, err := testexec.CommandContext(ctx, py, "testdata/peft_merge_ref.py", base, ad, strconv.FormatFloat(c.weight, 'g', -1, 64), out).Output()
			if err != nil {
				t.Fatalf("%v: %s", err, res)
			}
			var ulps map[string]int
			if err := json.Unmarshal(res, &ulps); err != nil {
				t.Fatalf("%v: %s", err, res)
			}
			if len(ulps) != len(bt) {
				t.Fatalf("torch compared %d tensors, want %d", len(ulps), len(bt))
			}
			for k, u := range ulps {
				// Dgemm and torch sum the rank in other orders: one unit in the last
				// place at most, after rounding.
				if u > 1 {
					t.Errorf("%s: %d ulps from torch's float64 merge", k, u)
				}
			}
			t.Logf("ulps from torch: %v", ulps)
		})
	}
}
