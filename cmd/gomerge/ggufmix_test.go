package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
)

// mix8 is a llama of 8 layers whose weights fill K-quant blocks: use_more_bits picks
// layers 0, 3, 6 and 7 (the first and last eighth, and every third between).
var mix8 = gguftest.Config{Hidden: 256, FF: 512, Layers: 8, Heads: 4, KVHeads: 4, Context: 128}

func writeGGUF(t *testing.T, path string, c gguftest.Config, ts []gguftest.Tensor) {
	t.Helper()
	if err := gguftest.WriteFile(path, gguftest.Metadata(c, "m"), ts); err != nil {
		t.Fatal(err)
	}
}

func metaValue(meta []gguf.KV, key string) (gguf.Value, bool) {
	for _, kv := range meta {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return gguf.Value{}, false
}

// TestGGUFMixDType: --dtype q4_k_m and q3_k_m on F16 inputs give llama.cpp's mix,
// tensor by tensor as worked out by hand, with general.file_type set to the mix's
// number, and --json listing every type change.
func TestGGUFMixDType(t *testing.T) {
	dir := t.TempDir()
	a, c := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "c.gguf")
	writeGGUF(t, a, mix8, gguftest.Random(mix8, dtype.F16, 1))
	writeGGUF(t, c, mix8, gguftest.Random(mix8, dtype.F16, 2))
	more := map[int]bool{0: true, 3: true, 6: true, 7: true}
	for _, tc := range []struct {
		mix  string
		ft   uint32
		want func(role string, layer int) dtype.DType
	}{
		{"q4_k_m", 15, func(role string, l int) dtype.DType {
			switch {
			case role == "output.weight":
				return dtype.Q6_K
			case (role == "attn_v.weight" || role == "ffn_down.weight") && more[l]:
				return dtype.Q6_K
			}
			return dtype.Q4_K
		}},
		{"Q3_K_M", 12, func(role string, l int) dtype.DType {
			switch {
			case role == "output.weight":
				return dtype.Q6_K
			case role == "attn_v.weight" && l < 2, role == "ffn_down.weight" && l < 8/16:
				return dtype.Q5_K
			case role == "attn_v.weight", role == "ffn_down.weight", role == "attn_output.weight":
				return dtype.Q4_K
			}
			return dtype.Q3_K
		}},
	} {
		out := filepath.Join(dir, tc.mix+".gguf")
		code, stdout, stderr := gomerge(t, "sfa", "--anchor", a, "--current", c, "--beta", "0.3", "--dtype", tc.mix, "--out", out, "--json")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", tc.mix, code, stderr)
		}
		var rep struct {
			TypeChanges []struct{ Tensor, From, To string } `json:"type_changes"`
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatal(err)
		}
		meta, got, err := gguftest.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		changes := 0
		for _, x := range got {
			want := dtype.F32
			if len(x.Shape) >= 2 {
				l := -1
				role := x.Name
				if _, err := fmt.Sscanf(x.Name, "blk.%d.", &l); err == nil {
					role = x.Name[strings.Index(x.Name[4:], ".")+5:]
				}
				want = tc.want(role, l)
				changes++
			}
			if x.DType != want {
				t.Errorf("%s: %s is %s, want %s", tc.mix, x.Name, x.DType, want)
			}
		}
		if len(rep.TypeChanges) != changes {
			t.Errorf("%s: %d type changes listed, want %d (every F16 weight)", tc.mix, len(rep.TypeChanges), changes)
		}
		if v, ok := metaValue(meta, "general.file_type"); !ok || v.Data != tc.ft {
			t.Errorf("%s: general.file_type %v, want %d", tc.mix, v.Data, tc.ft)
		}
		if v, ok := metaValue(meta, "general.quantization_version"); !ok || v.Data != uint32(2) {
			t.Errorf("%s: general.quantization_version %v, want 2", tc.mix, v.Data)
		}
	}
	// A merge of the Q4_K_M output with itself, without --dtype, keeps every type and
	// the file type, and lists no change.
	m := filepath.Join(dir, "q4_k_m.gguf")
	code, stdout, stderr := gomerge(t, "linear", m, m, "--out", filepath.Join(dir, "again.gguf"), "--json")
	if code != 0 {
		t.Fatalf("linear: exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout, "type_changes") {
		t.Errorf("a Q4_K_M merge without --dtype changed types: %s", stdout)
	}
	_, ref, _ := gguftest.Read(m)
	meta, got, err := gguftest.Read(filepath.Join(dir, "again.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i].DType != ref[i].DType {
			t.Errorf("again: %s is %s, the reference's %s", got[i].Name, got[i].DType, ref[i].DType)
		}
	}
	if v, _ := metaValue(meta, "general.file_type"); v.Data != uint32(15) {
		t.Errorf("again: general.file_type %v, want the reference's 15", v.Data)
	}
}

// TestGGUFOverrides: --tensor-type rules (first match wins, every tensor, 1-D ones
// too) and --override-kv; and what is refused, with exit 2 and no output.
func TestGGUFOverrides(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.gguf")
	writeGGUF(t, a, mix8, gguftest.Random(mix8, dtype.F16, 1))
	out := filepath.Join(dir, "o.gguf")
	code, _, stderr := gomerge(t, "linear", a, a, "--dtype", "q4_k_m", "--out", out,
		"--tensor-type", `^blk\.[0-3]\.ffn_down=q8_0`, "--tensor-type", `ffn_down=q5_k`, "--tensor-type", `output_norm=f16`,
		"--override-kv", "general.name=str:merged=yes", "--override-kv", "llama.context_length=int:4096",
		"--override-kv", "gomerge.test.flag=bool:true", "--override-kv", "gomerge.test.scale=float:0.5",
		"--override-kv", "gomerge.test.n=int:-3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	meta, got, err := gguftest.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range got {
		var want dtype.DType
		var l int
		switch _, err := fmt.Sscanf(x.Name, "blk.%d.", &l); {
		case strings.HasSuffix(x.Name, "ffn_down.weight") && err == nil && l <= 3:
			want = dtype.Q8_0
		case strings.HasSuffix(x.Name, "ffn_down.weight"):
			want = dtype.Q5_K
		case x.Name == "output_norm.weight":
			want = dtype.F16
		default:
			continue
		}
		if x.DType != want {
			t.Errorf("%s is %s, want %s", x.Name, x.DType, want)
		}
	}
	for key, want := range map[string]gguf.Value{
		"general.name":         {Type: gguf.ValueString, Data: "merged=yes"},
		"llama.context_length": {Type: gguf.ValueUint32, Data: uint32(4096)}, // keeps the key's type
		"gomerge.test.flag":    {Type: gguf.ValueBool, Data: true},
		"gomerge.test.scale":   {Type: gguf.ValueFloat32, Data: float32(0.5)},
		"gomerge.test.n":       {Type: gguf.ValueInt64, Data: int64(-3)},
	} {
		if v, ok := metaValue(meta, key); !ok || v.Type != want.Type || v.Data != want.Data {
			t.Errorf("%s = %s %v, want %s %v", key, v.Type, v.Data, want.Type, want.Data)
		}
	}

	tiny := filepath.Join(dir, "tiny.gguf")
	writeGGUF(t, tiny, gguftest.Tiny, gguftest.Random(gguftest.Tiny, dtype.F16, 1))
	st := filepath.Join(dir, "st.safetensors")
	if err := os.WriteFile(st, []byte{}, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--tensor-type", "attn_q=q4_k"}, "blk.0.attn_q.weight"}, // rows of 64
		{[]string{"--tensor-type", "attn_q"}, "REGEX=TYPE"},
		{[]string{"--tensor-type", "(=q8_0"}, "missing closing"},
		{[]string{"--tensor-type", "x=q9_9"}, "q9_9"},
		{[]string{"--override-kv", "a.b=int:x"}, "a.b"},
		{[]string{"--override-kv", "a.b=long:1"}, "long"},
		{[]string{"--override-kv", "a.b"}, "KEY=TYPE:VALUE"},
		{[]string{"--override-kv", "llama.block_count=int:-1"}, "llama.block_count"}, // UINT32 key
		{[]string{"--override-kv", "split.count=int:2"}, "split.count"},
	} {
		o := filepath.Join(dir, "bad.gguf")
		code, _, stderr := gomerge(t, append([]string{"linear", tiny, tiny, "--out", o}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, %q; want %d naming %q", tc.args, code, stderr, exitUsage, tc.msg)
		}
		if _, err := os.Stat(o); !os.IsNotExist(err) {
			t.Errorf("%v: output written", tc.args)
		}
	}
}
