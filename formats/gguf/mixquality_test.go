package gguf

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// TestMixQuality writes a llama-shaped model (4 layers, hidden 256, FFN 512, 512
// tokens; N(0, 0.02) weights, N(0, 0.3) embeddings) in every mix and in every
// type gomerge writes alone, and measures bits per weight and each weight matrix's relative RMSE
// ‖x − x̂‖/‖x‖, averaged over the matrices weighted by their sizes (so that the
// embedding's larger values do not drown the others). The mixes must order as their names promise (each _M beats
// the type below it), and Q4_K_M must beat Q4_K everywhere at a small size cost.
// docs/kquants.md#quality-of-the-mixes holds the table it logs.
func TestMixQuality(t *testing.T) {
	model := MixModel{Arch: "llama", Layers: 4, Heads: 4, KVHeads: 4}
	if testing.Short() {
		// Two layers under -short (CI's emulated arm64 run, where quantizing every mix
		// of four layers took three minutes): the same orderings hold; the table in
		// docs/kquants.md is the four-layer one.
		model.Layers = 2
	}
	ts := llamaTensors(model.Layers, 256, 512, false, 7)
	for i := range ts {
		if ts[i].Name == "token_embd.weight" || ts[i].Name == "output.weight" {
			ts[i].Shape = []int64{512, 256}
		}
	}
	rng := rand.New(rand.NewPCG(11, 12))
	values := make([][]float32, len(ts))
	for i, x := range ts {
		n := int64(1)
		for _, d := range x.Shape {
			n *= d
		}
		std := 0.02
		if x.Name == "token_embd.weight" {
			std = 0.3
		}
		values[i] = make([]float32, n)
		for j := range values[i] {
			values[i][j] = float32(std * rng.NormFloat64())
		}
	}
	measure := func(types []Type) (bpw, rmse float64) {
		var bits, n, relSum float64
		for i, x := range ts {
			if len(x.Shape) < 2 {
				continue
			}
			d := types[i].DType()
			v := values[i]
			enc := make([]byte, d.Bytes(int64(len(v))))
			if err := dtype.Encode(enc, v, d); err != nil {
				t.Fatal(err)
			}
			back := make([]float32, len(v))
			if err := dtype.Decode(back, enc, d); err != nil {
				t.Fatal(err)
			}
			var errSq, sq float64
			for j := range v {
				e := float64(v[j]) - float64(back[j])
				errSq += e * e
				sq += float64(v[j]) * float64(v[j])
			}
			relSum += math.Sqrt(errSq/sq) * float64(len(v))
			bits += float64(len(enc)) * 8
			n += float64(len(v))
		}
		return bits / n, relSum / n
	}
	type row struct {
		name      string
		bpw, rmse float64
	}
	rows := map[string]row{}
	var order []string
	for _, m := range Mixes {
		types, err := m.Types(model, ts, nil)
		if err != nil {
			t.Fatal(err)
		}
		bpw, rmse := measure(types)
		rows[m.Name] = row{m.Name, bpw, rmse}
		order = append(order, m.Name)
	}
	for _, typ := range []Type{TypeQ2_K, TypeQ3_K, TypeQ4_K, TypeQ5_K, TypeQ6_K, TypeQ4_0, TypeQ4_1, TypeQ5_0, TypeQ5_1, TypeQ8_0, TypeF16, TypeBF16} {
		types := make([]Type, len(ts))
		for i := range types {
			types[i] = typ
		}
		bpw, rmse := measure(types)
		name := typ.String() + " (every weight)"
		rows[name] = row{name, bpw, rmse}
		order = append(order, name)
	}
	for _, name := range order {
		r := rows[name]
		t.Logf("| %s | %.3f | %.4f |", r.name, r.bpw, r.rmse)
	}
	for _, pair := range [][2]string{{"Q2_K", "Q3_K_M"}, {"Q3_K_S", "Q3_K_M"}, {"Q3_K_M", "Q3_K_L"}, {"Q3_K_L", "Q4_K_M"},
		{"Q4_K_S", "Q4_K_M"}, {"Q4_K_M", "Q5_K_M"}, {"Q5_K_S", "Q5_K_M"}, {"Q5_K_M", "Q6_K"}, {"Q4_K (every weight)", "Q4_K_M"}} {
		a, b := rows[pair[0]], rows[pair[1]]
		if !(b.rmse < a.rmse && b.bpw > a.bpw) {
			t.Errorf("%s (%.3f bits, RMSE %.4f) should lose to %s (%.3f bits, RMSE %.4f)", a.name, a.bpw, a.rmse, b.name, b.bpw, b.rmse)
		}
	}
	if q, m := rows["Q4_K (every weight)"], rows["Q4_K_M"]; m.bpw > q.bpw*1.25 {
		t.Errorf("Q4_K_M costs %.3f bits per weight against Q4_K's %.3f", m.bpw, q.bpw)
	}
}
