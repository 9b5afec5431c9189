package gguf

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Mix is one of llama.cpp's K-quant file types (llama_ftype "MOSTLY_Q4_K_M" and its
// kin): a default type for the weight matrices and rules that give some of them more
// bits, by role and by layer position. docs/kquants.md lists the rules.
type Mix struct {
	Name     string // llama-quantize's spelling: "Q4_K_M"
	FileType uint32 // llama_ftype, the value of general.file_type
	Default  Type
}

// The mixes, with llama.cpp's llama_ftype numbers (llama.h).
var (
	MixQ2_K   = Mix{"Q2_K", 10, TypeQ2_K}
	MixQ3_K_S = Mix{"Q3_K_S", 11, TypeQ3_K}
	MixQ3_K_M = Mix{"Q3_K_M", 12, TypeQ3_K}
	MixQ3_K_L = Mix{"Q3_K_L", 13, TypeQ3_K}
	MixQ4_K_S = Mix{"Q4_K_S", 14, TypeQ4_K}
	MixQ4_K_M = Mix{"Q4_K_M", 15, TypeQ4_K}
	MixQ5_K_S = Mix{"Q5_K_S", 16, TypeQ5_K}
	MixQ5_K_M = Mix{"Q5_K_M", 17, TypeQ5_K}
	MixQ6_K   = Mix{"Q6_K", 18, TypeQ6_K}
)

// Mixes lists every mix, smallest first.
var Mixes = []Mix{MixQ2_K, MixQ3_K_S, MixQ3_K_M, MixQ3_K_L, MixQ4_K_S, MixQ4_K_M, MixQ5_K_S, MixQ5_K_M, MixQ6_K}

// ParseMix returns the mix named s, in any case ("q4_k_m").
func ParseMix(s string) (Mix, bool) {
	for _, m := range Mixes {
		if strings.EqualFold(s, m.Name) {
			return m, true
		}
	}
	return Mix{}, false
}

// MixModel is what the rules need to know of a model beyond its tensor names: the
// hyperparameters llama.cpp's quantizer reads (ModelOf reads them from metadata).
type MixModel struct {
	Arch    string // general.architecture
	Layers  int    // ARCH.block_count
	Experts int    // ARCH.expert_count, 0 for a dense model
	Heads   int    // ARCH.attention.head_count (layer 0's where it is per layer)
	KVHeads int    // ARCH.attention.head_count_kv, Heads when absent
}

// gqa is the number of query heads per key/value head (0 when unknown), as llama.cpp
// reckons it for layer 0.
func (m MixModel) gqa() int {
	if m.KVHeads == 0 {
		return 0
	}
	return m.Heads / m.KVHeads
}

// is70B says llama.cpp would call the model a 70B llama (80 layers, grouped-query
// attention), whose small attn_v gets Q5_K in place of Q3_K or Q4_K.
func (m MixModel) is70B() bool {
	return m.Arch == "llama" && m.Layers == 80 && m.Heads != m.KVHeads
}

// ModelOf reads a MixModel from a file's metadata. Missing keys leave zeros: the
// rules then use the tensor list instead (the layer count is the highest blk.N plus
// one).
func ModelOf(meta []KV) MixModel {
	get := func(key string) (Value, bool) {
		for _, kv := range meta {
			if kv.Key == key {
				return kv.Value, true
			}
		}
		return Value{}, false
	}
	first := func(key string) int {
		v, ok := get(key)
		if !ok {
			return 0
		}
		if n, ok := v.AsUint(); ok {
			return int(min(n, 1<<20))
		}
		if v.Type == ValueArray && v.Len() > 0 { // per-layer head counts
			if s, ok := v.Data.([]uint32); ok {
				return int(min(s[0], 1<<20))
			}
			if s, ok := v.Data.([]int32); ok && s[0] > 0 {
				return int(min(s[0], 1<<20))
			}
		}
		return 0
	}
	var m MixModel
	if v, ok := get("general.architecture"); ok {
		m.Arch, _ = v.AsString()
	}
	m.Layers = first(m.Arch + ".block_count")
	m.Experts = first(m.Arch + ".expert_count")
	m.Heads = first(m.Arch + ".attention.head_count")
	m.KVHeads = m.Heads
	if _, ok := get(m.Arch + ".attention.head_count_kv"); ok {
		m.KVHeads = first(m.Arch + ".attention.head_count_kv")
	}
	return m
}

// MixTensor is a tensor as the rules see it.
type MixTensor struct {
	Name  string
	Shape []int64 // row-major: the last dimension is the row
	Type  Type    // its type now; kept by tensors the mix leaves alone
}

// TypeRule is a --tensor-type override: tensors whose name the pattern matches (a
// search, not a whole-name match, as llama.cpp's std::regex_search) get Type.
type TypeRule struct {
	Pattern *regexp.Regexp
	Type    Type
}

// role is a tensor's part in the model, from its name, as llama.cpp's quantizer
// classifies names (tensor_get_category).
type role int

const (
	roleOther role = iota
	roleTokenEmbd
	roleOutput
	roleAttnV // attn_v, and the fused attn_qkv and attn_kv_b that hold it
	roleAttnK
	roleAttnOutput
	roleFFNDown
)

func roleOf(name string) role {
	switch {
	case name == "output.weight":
		return roleOutput
	case name == "token_embd.weight" || name == "per_layer_token_embd.weight":
		return roleTokenEmbd
	case strings.Contains(name, "attn_qkv.weight"), strings.Contains(name, "attn_kv_b.weight"), strings.Contains(name, "attn_v.weight"):
		return roleAttnV
	case strings.Contains(name, "attn_k.weight"):
		return roleAttnK
	case strings.Contains(name, "attn_q.weight"):
		return roleOther
	case strings.Contains(name, "attn_output.weight"):
		return roleAttnOutput
	case strings.Contains(name, "ffn_up"), strings.Contains(name, "ffn_gate"):
		return roleOther
	case strings.Contains(name, "ffn_down"):
		return roleFFNDown
	}
	return roleOther
}

// keptWhole are parts of names that llama.cpp's quantizer never quantizes (small,
// or read by kernels that want floats): routers, positional tables, convolutions,
// RWKV's and multimodal projectors' small matrices.
var keptWhole = []string{
	"_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
	"ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
	"time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
	"time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
	"time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
	"time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
	"attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
	".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
}

// Quantizable says whether a mix quantizes a tensor: a weight of two or more
// dimensions (ggml's count, which ignores outer dimensions of 1) that is not in
// keptWhole nor a positional or token-type table.
func Quantizable(name string, shape []int64) bool {
	dims := len(shape)
	for i := 0; i < len(shape)-1 && shape[i] == 1; i++ {
		dims--
	}
	if dims < 2 || !strings.HasSuffix(name, "weight") || name == "position_embd.weight" || name == "token_types.weight" {
		return false
	}
	for _, s := range keptWhole {
		if strings.Contains(name, s) {
			return false
		}
	}
	return true
}

// layerOf is N in a name "blk.N.…", or -1.
func layerOf(name string) int {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return -1
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		return -1
	}
	return n
}

// moreBits is llama.cpp's use_more_bits: the first and last eighth of the layers and
// every third layer between them get the larger type.
func moreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// Types gives every tensor its type under mix m, in the order given, with rules
// (--tensor-type, first match wins) applied before the mix's own.
//
// A tensor the mix does not quantize (1-D tensors, norms, routers; see Quantizable)
// keeps its type, except that a 1-D tensor is F32. A matched rule decides the type
// of any tensor, and fails if the type's block does not divide the tensor's rows.
// Otherwise the mix's rule decides (ruleType), and a tensor whose rows its type's
// block does not divide falls back as llama.cpp's does: Q2_K and Q3_K to Q4_0, Q4_K
// to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, then F16.
//
// The layer positions are counted as llama.cpp counts them: over the tensors sorted
// by layer number (blk.N, others first) and then by name, the k-th attn_v is at
// position k of all the attn_v tensors, and the k-th ffn_down at position k of the
// model's layer count (the layer in its name for a mixture of experts).
func (m Mix) Types(model MixModel, tensors []MixTensor, rules []TypeRule) ([]Type, error) {
	out := make([]Type, len(tensors))
	order := make([]int, len(tensors))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		la, lb := layerOf(tensors[a].Name), layerOf(tensors[b].Name)
		if la != lb {
			return la - lb
		}
		return strings.Compare(tensors[a].Name, tensors[b].Name)
	})
	s := mixState{mix: m, model: model, tied: true}
	for _, t := range tensors {
		switch roleOf(t.Name) {
		case roleAttnV:
			s.nAttnV++
		case roleOutput:
			s.tied = false
		}
		s.maxLayer = max(s.maxLayer, layerOf(t.Name))
	}
	s.nLayers = model.Layers
	if s.nLayers <= 0 {
		s.nLayers = s.maxLayer + 1
	}
	for _, i := range order {
		t := tensors[i]
		typ, matched, err := MatchRule(rules, t.Name, t.Shape)
		if err != nil {
			return nil, err
		}
		switch {
		case matched:
		case !Quantizable(t.Name, t.Shape):
			typ = t.Type
			if len(t.Shape) < 2 {
				typ = TypeF32
			}
		default:
			if typ, err = s.ruleType(t); err != nil {
				return nil, err
			}
			typ = fallback(typ, rowOf(t.Shape))
		}
		out[i] = typ
	}
	return out, nil
}

// MatchRule returns the type of the first rule whose pattern matches name; it fails
// if that type's block does not divide the tensor's rows.
func MatchRule(rules []TypeRule, name string, shape []int64) (Type, bool, error) {
	for _, r := range rules {
		if !r.Pattern.MatchString(name) {
			continue
		}
		if row := rowOf(shape); row%r.Type.BlockSize() != 0 {
			return 0, false, fmt.Errorf("tensor %q: --tensor-type %s=%s: its rows of %d elements are not a multiple of %s's block of %d",
				name, r.Pattern, r.Type, row, r.Type, r.Type.BlockSize())
		}
		return r.Type, true, nil
	}
	return 0, false, nil
}

// rowOf is the innermost dimension (1 for a scalar).
func rowOf(shape []int64) int64 {
	if len(shape) == 0 {
		return 1
	}
	return shape[len(shape)-1]
}

// fallback replaces a type whose block does not divide the row length.
func fallback(t Type, row int64) Type {
	if row%t.BlockSize() == 0 {
		return t
	}
	switch t {
	case TypeQ2_K, TypeQ3_K:
		t = TypeQ4_0
	case TypeQ4_K:
		t = TypeQ5_0
	case TypeQ5_K:
		t = TypeQ5_1
	case TypeQ6_K:
		t = TypeQ8_0
	}
	if row%t.BlockSize() != 0 {
		t = TypeF16
	}
	return t
}

// mixState carries the counters of one pass over a model's tensors.
type mixState struct {
	mix      Mix
	model    MixModel
	tied     bool // no output.weight: token_embd doubles as the output
	nAttnV   int
	nLayers  int
	maxLayer int
	iAttnV   int
	iFFNDown int
}

// ruleType is the mix's type for a quantizable tensor not matched by a rule
// (llama.cpp's llama_tensor_get_type for the K-quant file types).
func (s *mixState) ruleType(t MixTensor) (Type, error) {
	m, ft := s.model, s.mix.FileType
	falcon := m.Arch == "falcon"
	typ := s.mix.Default
	switch r := roleOf(t.Name); {
	case r == roleOutput || r == roleTokenEmbd && s.tied:
		// The output matrix decides every sampled token: Q6_K, or Q8_0 where the
		// rows do not fill K-quant blocks.
		if falcon || rowOf(t.Shape)%typ.BlockSize() != 0 {
			typ = TypeQ8_0
		} else {
			typ = TypeQ6_K
		}
	case r == roleTokenEmbd:
	case r == roleAttnV:
		i := s.iAttnV
		s.iAttnV++
		switch {
		case ft == MixQ2_K.FileType && m.gqa() >= 4:
			typ = TypeQ4_K
		case ft == MixQ2_K.FileType:
			typ = TypeQ3_K
		case ft == MixQ3_K_M.FileType && i < 2:
			typ = TypeQ5_K
		case ft == MixQ3_K_M.FileType:
			typ = TypeQ4_K
		case ft == MixQ3_K_L.FileType:
			typ = TypeQ5_K
		case (ft == MixQ4_K_M.FileType || ft == MixQ5_K_M.FileType) && moreBits(i, s.nAttnV):
			typ = TypeQ6_K
		case ft == MixQ4_K_S.FileType && i < 4:
			typ = TypeQ5_K
		}
		if m.is70B() && (typ == TypeQ3_K || typ == TypeQ4_K) {
			typ = TypeQ5_K
		}
		if m.Experts == 8 {
			typ = TypeQ8_0
		}
	case r == roleAttnK:
		if m.Experts == 8 {
			typ = TypeQ8_0
		}
	case r == roleFFNDown:
		i, n := s.iFFNDown, s.nLayers
		s.iFFNDown++
		if m.Experts > 1 {
			// Experts' tensors are not in layer order in every file: take the layer
			// from the name.
			if i = layerOf(t.Name); i < 0 || i >= n {
				return 0, fmt.Errorf("tensor %q: no layer number in [0, %d) in its name (a mixture of experts needs one)", t.Name, n)
			}
		}
		switch ft {
		case MixQ2_K.FileType:
			typ = TypeQ3_K
		case MixQ3_K_M.FileType:
			switch {
			case i < n/16:
				typ = TypeQ5_K
			case !falcon || moreBits(i, n):
				typ = TypeQ4_K
			}
		case MixQ3_K_L.FileType:
			typ = TypeQ5_K
			if falcon {
				typ = TypeQ4_K
			}
		case MixQ4_K_M.FileType:
			switch {
			case falcon && i < n/16:
				typ = TypeQ6_K
			case falcon && moreBits(i, n):
				typ = TypeQ5_K
			case !falcon && moreBits(i, n):
				typ = TypeQ6_K
			}
		case MixQ5_K_M.FileType:
			if moreBits(i, n) {
				typ = TypeQ6_K
			}
		case MixQ4_K_S.FileType:
			if !falcon && i < n/8 {
				typ = TypeQ5_K
			}
		}
	case r == roleAttnOutput:
		switch {
		case falcon:
			if ft == MixQ3_K_L.FileType {
				typ = TypeQ4_K
			}
		case m.Experts == 8:
			switch s.mix {
			case MixQ2_K, MixQ3_K_S, MixQ3_K_M, MixQ4_K_S, MixQ4_K_M:
				typ = TypeQ5_K
			}
		case ft == MixQ2_K.FileType:
			typ = TypeQ3_K
		case ft == MixQ3_K_M.FileType:
			typ = TypeQ4_K
		case ft == MixQ3_K_L.FileType:
			typ = TypeQ5_K
		}
	}
	return typ, nil
}
