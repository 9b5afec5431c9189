package gguf

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// llamaTensors lists a llama-shaped model's tensors in a shuffled order (the rules
// must not depend on the file's order), with rows of hidden elements and ff for
// ffn_down. tied leaves out output.weight.
func llamaTensors(layers int, hidden, ff int64, tied bool, seed uint64) []MixTensor {
	ts := []MixTensor{
		{Name: "token_embd.weight", Shape: []int64{1000, hidden}, Type: TypeF16},
		{Name: "output_norm.weight", Shape: []int64{hidden}, Type: TypeF32},
	}
	if !tied {
		ts = append(ts, MixTensor{Name: "output.weight", Shape: []int64{1000, hidden}, Type: TypeF16})
	}
	for i := range layers {
		b := fmt.Sprintf("blk.%d.", i)
		ts = append(ts,
			MixTensor{Name: b + "attn_norm.weight", Shape: []int64{hidden}, Type: TypeF32},
			MixTensor{Name: b + "attn_q.weight", Shape: []int64{hidden, hidden}, Type: TypeF16},
			MixTensor{Name: b + "attn_k.weight", Shape: []int64{hidden, hidden}, Type: TypeF16},
			MixTensor{Name: b + "attn_v.weight", Shape: []int64{hidden, hidden}, Type: TypeF16},
			MixTensor{Name: b + "attn_output.weight", Shape: []int64{hidden, hidden}, Type: TypeF16},
			MixTensor{Name: b + "ffn_norm.weight", Shape: []int64{hidden}, Type: TypeF16},
			MixTensor{Name: b + "ffn_gate.weight", Shape: []int64{ff, hidden}, Type: TypeF16},
			MixTensor{Name: b + "ffn_up.weight", Shape: []int64{ff, hidden}, Type: TypeF16},
			MixTensor{Name: b + "ffn_down.weight", Shape: []int64{hidden, ff}, Type: TypeF16},
		)
	}
	r := rand.New(rand.NewPCG(seed, 1))
	r.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
	return ts
}

// want is a hand-worked expectation: the type of each role (the part of the name
// after "blk.N."), with exceptions by layer.
type want struct {
	def     Type            // attn_q, attn_k, ffn_gate, ffn_up and, unless set, the rest
	embd    Type            // token_embd.weight
	out     Type            // output.weight
	attnV   map[int]Type    // by layer; missing layers: attnVDef
	attnVD  Type            // attn_v elsewhere
	down    map[int]Type    // ffn_down by layer
	downD   Type            // ffn_down elsewhere
	attnOut Type            // attn_output
	extra   map[string]Type // whole names
}

func (w want) of(name string) Type {
	if t, ok := w.extra[name]; ok {
		return t
	}
	switch name {
	case "token_embd.weight":
		return w.embd
	case "output.weight":
		return w.out
	case "output_norm.weight":
		return TypeF32
	}
	l := layerOf(name)
	role := strings.TrimPrefix(name, fmt.Sprintf("blk.%d.", l))
	pick := func(m map[int]Type, d Type) Type {
		if t, ok := m[l]; ok {
			return t
		}
		if d == 0 { // F32 is 0: never a default here
			return w.def
		}
		return d
	}
	switch role {
	case "attn_norm.weight", "ffn_norm.weight":
		return TypeF32
	case "attn_v.weight":
		return pick(w.attnV, w.attnVD)
	case "ffn_down.weight":
		return pick(w.down, w.downD)
	case "attn_output.weight":
		return pick(nil, w.attnOut)
	}
	return w.def
}

func layers(t Type, ls ...int) map[int]Type {
	m := map[int]Type{}
	for _, l := range ls {
		m[l] = t
	}
	return m
}

// TestMixTypesHandWorked checks each mix against types worked out by hand from
// llama.cpp's rules. With 16 layers, use_more_bits picks layers 0, 1 (the first
// eighth), 14, 15 (the last) and 4, 7, 10, 13 (every third between); sorting names
// as strings would put blk.10 third and pick other layers.
func TestMixTypesHandWorked(t *testing.T) {
	more := []int{0, 1, 4, 7, 10, 13, 14, 15}
	dense := MixModel{Arch: "llama", Layers: 16, Heads: 8, KVHeads: 8}
	gqa4 := MixModel{Arch: "llama", Layers: 16, Heads: 32, KVHeads: 8}
	for _, tc := range []struct {
		mix   Mix
		model MixModel
		w     want
	}{
		{MixQ2_K, dense, want{def: TypeQ2_K, embd: TypeQ2_K, out: TypeQ6_K, attnVD: TypeQ3_K, downD: TypeQ3_K, attnOut: TypeQ3_K}},
		{MixQ2_K, gqa4, want{def: TypeQ2_K, embd: TypeQ2_K, out: TypeQ6_K, attnVD: TypeQ4_K, downD: TypeQ3_K, attnOut: TypeQ3_K}},
		{MixQ3_K_S, dense, want{def: TypeQ3_K, embd: TypeQ3_K, out: TypeQ6_K}},
		{MixQ3_K_M, dense, want{def: TypeQ3_K, embd: TypeQ3_K, out: TypeQ6_K,
			attnV: layers(TypeQ5_K, 0, 1), attnVD: TypeQ4_K, down: layers(TypeQ5_K, 0), downD: TypeQ4_K, attnOut: TypeQ4_K}},
		{MixQ3_K_L, dense, want{def: TypeQ3_K, embd: TypeQ3_K, out: TypeQ6_K, attnVD: TypeQ5_K, downD: TypeQ5_K, attnOut: TypeQ5_K}},
		{MixQ4_K_S, dense, want{def: TypeQ4_K, embd: TypeQ4_K, out: TypeQ6_K, attnV: layers(TypeQ5_K, 0, 1, 2, 3), down: layers(TypeQ5_K, 0, 1)}},
		{MixQ4_K_M, dense, want{def: TypeQ4_K, embd: TypeQ4_K, out: TypeQ6_K, attnV: layers(TypeQ6_K, more...), down: layers(TypeQ6_K, more...)}},
		{MixQ5_K_S, dense, want{def: TypeQ5_K, embd: TypeQ5_K, out: TypeQ6_K}},
		{MixQ5_K_M, dense, want{def: TypeQ5_K, embd: TypeQ5_K, out: TypeQ6_K, attnV: layers(TypeQ6_K, more...), down: layers(TypeQ6_K, more...)}},
		{MixQ6_K, dense, want{def: TypeQ6_K, embd: TypeQ6_K, out: TypeQ6_K}},
		// A 70B llama (80 layers, grouped-query attention): attn_v's Q3_K becomes Q5_K.
		{MixQ3_K_S, MixModel{Arch: "llama", Layers: 80, Heads: 64, KVHeads: 8}, want{def: TypeQ3_K, embd: TypeQ3_K, out: TypeQ6_K, attnVD: TypeQ5_K}},
	} {
		n := tc.model.Layers
		ts := llamaTensors(n, 256, 512, false, uint64(n))
		got, err := tc.mix.Types(tc.model, ts, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.mix.Name, err)
		}
		bad := 0
		for i, x := range ts {
			if w := tc.w.of(x.Name); got[i] != w {
				if bad++; bad <= 5 {
					t.Errorf("%s (%+v): %s is %s, want %s", tc.mix.Name, tc.model, x.Name, got[i], w)
				}
			}
		}
	}
}

// TestMixTypesSpecialCases: tied embeddings, rows that K-quant blocks do not fill,
// the tensors a mix never quantizes, eight experts, and the layer count from the
// names when the metadata has none.
func TestMixTypesSpecialCases(t *testing.T) {
	check := func(what string, m Mix, model MixModel, ts []MixTensor, w map[string]Type) {
		t.Helper()
		got, err := m.Types(model, ts, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for i, x := range ts {
			if want, ok := w[x.Name]; ok && got[i] != want {
				t.Errorf("%s: %s is %s, want %s", what, x.Name, got[i], want)
			}
		}
	}
	model := MixModel{Arch: "llama", Layers: 2, Heads: 4, KVHeads: 4}
	// No output.weight: token_embd is the output too, and gets the output's Q6_K.
	check("tied", MixQ4_K_M, model, llamaTensors(2, 256, 512, true, 1), map[string]Type{"token_embd.weight": TypeQ6_K, "blk.0.attn_q.weight": TypeQ4_K})
	// Rows of 96 (hidden) and 192 (ff): Q4_K falls back to Q5_0, Q6_K (layer 1 of 2:
	// the last eighth) to Q8_0, the output to Q8_0; rows of 48 fit no 32-block and
	// become F16.
	ts := llamaTensors(2, 96, 192, false, 2)
	ts = append(ts, MixTensor{Name: "blk.0.odd.weight", Shape: []int64{4, 48}, Type: TypeF32})
	check("rows", MixQ4_K_M, model, ts, map[string]Type{
		"output.weight": TypeQ8_0, "token_embd.weight": TypeQ5_0, "blk.0.attn_q.weight": TypeQ5_0,
		"blk.1.attn_v.weight": TypeQ8_0, "blk.0.ffn_down.weight": TypeQ5_0, "blk.1.ffn_down.weight": TypeQ8_0,
		"blk.0.odd.weight": TypeF16})
	check("rows Q2_K", MixQ2_K, model, llamaTensors(2, 96, 192, false, 3), map[string]Type{
		"blk.0.attn_q.weight": TypeQ4_0, "blk.0.attn_v.weight": TypeQ4_0, "blk.1.ffn_down.weight": TypeQ4_0})
	check("rows Q5_K", MixQ5_K_S, model, llamaTensors(2, 96, 192, false, 4), map[string]Type{"blk.0.attn_q.weight": TypeQ5_1})
	// Tensors a mix leaves as they are; 1-D ones become F32.
	kept := []MixTensor{
		{Name: "blk.0.ffn_gate_inp.weight", Shape: []int64{8, 256}, Type: TypeF32},
		{Name: "position_embd.weight", Shape: []int64{512, 256}, Type: TypeF16},
		{Name: "blk.0.attn_q_norm.weight", Shape: []int64{256, 256}, Type: TypeBF16},
		{Name: "blk.0.attn_q.bias", Shape: []int64{256}, Type: TypeF16},
		{Name: "blk.0.attn_k.bias", Shape: []int64{2, 256}, Type: TypeF16}, // not a weight
		{Name: "blk.0.flat.weight", Shape: []int64{1, 1, 256}, Type: TypeF16},
	}
	check("kept", MixQ4_K_M, model, kept, map[string]Type{
		"blk.0.ffn_gate_inp.weight": TypeF32, "position_embd.weight": TypeF16, "blk.0.attn_q_norm.weight": TypeBF16,
		"blk.0.attn_q.bias": TypeF32, "blk.0.attn_k.bias": TypeF16, "blk.0.flat.weight": TypeF16})
	// Eight experts: attn_v and attn_k Q8_0, attn_output Q5_K, and each expert
	// tensor's layer from its name: layers 0 and 7 of 8 get more bits.
	moe := MixModel{Arch: "llama", Layers: 8, Experts: 8, Heads: 8, KVHeads: 8}
	var mt []MixTensor
	for i := 7; i >= 0; i-- {
		b := fmt.Sprintf("blk.%d.", i)
		mt = append(mt, MixTensor{Name: b + "ffn_down_exps.weight", Shape: []int64{8, 256, 512}, Type: TypeF16},
			MixTensor{Name: b + "attn_v.weight", Shape: []int64{256, 256}, Type: TypeF16},
			MixTensor{Name: b + "attn_k.weight", Shape: []int64{256, 256}, Type: TypeF16},
			MixTensor{Name: b + "attn_output.weight", Shape: []int64{256, 256}, Type: TypeF16})
	}
	check("moe", MixQ4_K_M, moe, mt, map[string]Type{
		"blk.0.ffn_down_exps.weight": TypeQ6_K, "blk.1.ffn_down_exps.weight": TypeQ4_K, "blk.3.ffn_down_exps.weight": TypeQ6_K,
		"blk.7.ffn_down_exps.weight": TypeQ6_K, "blk.2.attn_v.weight": TypeQ8_0, "blk.2.attn_k.weight": TypeQ8_0,
		"blk.2.attn_output.weight": TypeQ5_K})
	// No block_count: the layer count is the highest blk.N plus one (8 here, so
	// layers 0, 3, 6, 7 get more bits).
	check("no block_count", MixQ4_K_M, MixModel{Arch: "llama"}, llamaTensors(8, 256, 512, false, 5), map[string]Type{
		"blk.0.ffn_down.weight": TypeQ6_K, "blk.1.ffn_down.weight": TypeQ4_K, "blk.3.ffn_down.weight": TypeQ6_K,
		"blk.5.ffn_down.weight": TypeQ4_K, "blk.6.ffn_down.weight": TypeQ6_K, "blk.7.ffn_down.weight": TypeQ6_K})
	if _, err := MixQ4_K_M.Types(moe, []MixTensor{{Name: "ffn_down_exps.weight", Shape: []int64{8, 256, 256}, Type: TypeF16}}, nil); err == nil {
		t.Error("an expert tensor without a layer number: no error")
	}
}

// TestMixRules: --tensor-type rules come first (the first match wins) and, as in
// llama.cpp, a tensor a rule decides does not advance the mix's layer count.
func TestMixRules(t *testing.T) {
	model := MixModel{Arch: "llama", Layers: 16, Heads: 8, KVHeads: 8}
	ts := llamaTensors(16, 256, 512, false, 9)
	rules := []TypeRule{
		{regexp.MustCompile(`^blk\.0\.attn_v`), TypeQ8_0},
		{regexp.MustCompile(`attn_v|ffn_up`), TypeF16}, // shadowed for blk.0.attn_v
		{regexp.MustCompile(`_norm`), TypeBF16},        // rules reach tensors the mix keeps
	}
	rules[1].Pattern = regexp.MustCompile(`blk\.3\.ffn_up`)
	got, err := MixQ4_K_M.Types(model, ts, rules)
	if err != nil {
		t.Fatal(err)
	}
	// attn_v of layer k is the (k−1)-th the mix sees: more bits at ordinals 0, 1, 4,
	// 7, 10, 13, 14, 15, that is layers 1, 2, 5, 8, 11, 14, 15.
	w := want{def: TypeQ4_K, embd: TypeQ4_K, out: TypeQ6_K, attnV: layers(TypeQ6_K, 1, 2, 5, 8, 11, 14, 15),
		down:  layers(TypeQ6_K, 0, 1, 4, 7, 10, 13, 14, 15),
		extra: map[string]Type{"blk.0.attn_v.weight": TypeQ8_0, "blk.3.ffn_up.weight": TypeF16, "output_norm.weight": TypeBF16}}
	for i := range 16 {
		w.extra[fmt.Sprintf("blk.%d.attn_norm.weight", i)] = TypeBF16
		w.extra[fmt.Sprintf("blk.%d.ffn_norm.weight", i)] = TypeBF16
	}
	for i, x := range ts {
		if got[i] != w.of(x.Name) {
			t.Errorf("%s is %s, want %s", x.Name, got[i], w.of(x.Name))
		}
	}
	// A type whose block does not divide a tensor's rows is an error naming it.
	_, err = MixQ4_K_M.Types(model, llamaTensors(16, 96, 256, false, 1), []TypeRule{{regexp.MustCompile(`attn_q`), TypeQ4_K}})
	if err == nil || !strings.Contains(err.Error(), "attn_q.weight") {
		t.Errorf("Q4_K for a norm: err %v, want one naming the tensor", err)
	}
}

func TestParseMixAndModelOf(t *testing.T) {
	for _, m := range Mixes {
		if got, ok := ParseMix(strings.ToLower(m.Name)); !ok || got != m {
			t.Errorf("ParseMix(%q) = %v, %v", strings.ToLower(m.Name), got, ok)
		}
	}
	if _, ok := ParseMix("Q4_K"); ok {
		t.Error("Q4_K is a type, not a mix")
	}
	u32 := func(k string, v uint32) KV { return KV{Key: k, Value: Value{Type: ValueUint32, Data: v}} }
	meta := []KV{
		{Key: "general.architecture", Value: Value{Type: ValueString, Data: "qwen2"}},
		u32("qwen2.block_count", 28), u32("qwen2.expert_count", 0),
		{Key: "qwen2.attention.head_count", Value: Value{Type: ValueArray, Elem: ValueUint32, Data: []uint32{28, 28}}},
		u32("qwen2.attention.head_count_kv", 4),
	}
	if got, want := ModelOf(meta), (MixModel{Arch: "qwen2", Layers: 28, Heads: 28, KVHeads: 4}); got != want {
		t.Errorf("ModelOf = %+v, want %+v", got, want)
	}
	if got := ModelOf(meta[:4]); got.KVHeads != 28 || got.gqa() != 1 {
		t.Errorf("no head_count_kv: %+v, want KVHeads = Heads", got)
	}
}
