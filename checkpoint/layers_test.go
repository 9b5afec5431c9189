package checkpoint

import "testing"

func TestSplitLayer(t *testing.T) {
	for _, tc := range []struct {
		name, prefix, rest string
		layer              int
		ok                 bool
	}{
		{"model.layers.12.mlp.up_proj.weight", "model.layers.", ".mlp.up_proj.weight", 12, true},
		{"blk.3.attn_v.weight", "blk.", ".attn_v.weight", 3, true},
		{"transformer.h.3.attn.c_attn.weight", "transformer.h.", ".attn.c_attn.weight", 3, true},
		{"model.layers.012.mlp.up_proj.weight", "", "", 0, false},
		{"model.layers.x.mlp", "", "", 0, false},
		{"model.layers.7", "", "", 0, false},
		{"model.layers.12345678.mlp", "", "", 0, false},
		{"model.embed_tokens.weight", "", "", 0, false},
	} {
		prefix, l, rest, ok := SplitLayer(tc.name)
		if ok != tc.ok || l != tc.layer || prefix != tc.prefix || rest != tc.rest {
			t.Errorf("SplitLayer(%s) = %q %d %q %v", tc.name, prefix, l, rest, ok)
		}
		want := -1
		if tc.ok {
			want = tc.layer
		}
		if got := LayerOf(tc.name); got != want {
			t.Errorf("LayerOf(%s) = %d, want %d", tc.name, got, want)
		}
	}
}
