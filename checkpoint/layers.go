package checkpoint

import (
	"strconv"
	"strings"
)

// layerPrefixes start the names of a transformer layer's tensors, followed by the
// layer number and a dot: model.layers.7.mlp.up_proj.weight (Llama and most Hugging
// Face models), transformer.h.7. (GPT-2), gpt_neox.layers.7., model.decoder.layers.7.
// (OPT) and blk.7. (GGUF).
var layerPrefixes = []string{"model.layers.", "transformer.h.", "gpt_neox.layers.", "model.decoder.layers.", "blk."}

// SplitLayer splits a layer tensor's name around its layer number: the prefix
// before it, the number, and the rest of the name from its dot. ok is false for
// tensors outside the layers (embeddings, the final norm, the output head) and for
// numbers that are not canonical decimals.
func SplitLayer(name string) (prefix string, layer int, rest string, ok bool) {
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

// LayerOf is the layer number of a tensor, or -1 for tensors outside the layers.
func LayerOf(name string) int {
	if _, l, _, ok := SplitLayer(name); ok {
		return l
	}
	return -1
}
