package recipe

import (
	"strconv"
	"strings"
)

// Which tensors are transformer layers, and which of the others come after the
// layers, decide how slices renumber layers and which slice's models make the
// embeddings and the head. The tables are what gomerge knows; a model whose names
// they do not cover can still be merged with models:, only not sliced.

// layerPrefixes start the names of a layer's tensors, followed by the layer number
// and a dot: model.layers.7.mlp.up_proj.weight.
var layerPrefixes = []string{"model.layers.", "transformer.h.", "gpt_neox.layers.", "model.decoder.layers.", "blk."}

// postPrefixes start the names of the tensors after the layers (the final norm and
// the output head): a slice recipe takes them from the last slice's models, as
// mergekit does; every other non-layer tensor (the embeddings) from the first slice's.
var postPrefixes = []string{"model.norm.", "lm_head.", "transformer.ln_f.", "gpt_neox.final_layer_norm.", "embed_out.", "model.decoder.final_layer_norm.",
	"output_norm.", "output."} // the last two: GGUF's names

// splitLayer splits a layer tensor's name around its layer number.
func splitLayer(name string) (prefix string, layer int, rest string, ok bool) {
	for _, p := range layerPrefixes {
		tail, found := strings.CutPrefix(name, p)
		if !found {
			continue
		}
		num, rest, found := strings.Cut(tail, ".")
		if !found || num == "" || len(num) > 7 || (len(num) > 1 && num[0] == '0') {
			return "", 0, "", false
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 0 {
			return "", 0, "", false
		}
		return p, n, "." + rest, true
	}
	return "", 0, "", false
}

func isPost(name string) bool {
	for _, p := range postPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// layerT is mergekit's gradient position of layer i of a slice of n layers:
// i/(n−1), and 1 for a one-layer slice.
func layerT(i, n int) float64 {
	if n <= 1 {
		return 1
	}
	return float64(i) / float64(n-1)
}
