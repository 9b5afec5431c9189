package recipe

import "testing"

// mergekit's long form {model: M, lora: L} is the reference M+L (docs/lora.md), and
// a slice's residual_weight, which mergekit never reads, is accepted.
func TestModelMappingAndResidualWeight(t *testing.T) {
	r, err := Parse("r.yaml", []byte(`merge_method: linear
models:
  - model:
      model: org/base
      lora: org/adapter
  - model: {model: plain}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{r.Steps[0].Models[0].Model.Name, r.Steps[0].Models[1].Model.Name}
	if got[0] != "org/base+org/adapter" || got[1] != "plain" {
		t.Errorf("model names %q, want [org/base+org/adapter plain]", got)
	}
	if _, err := Parse("r.yaml", []byte(`merge_method: passthrough
slices:
  - sources: [{model: a, layer_range: [0, 1]}]
    residual_weight: 0.5
`)); err != nil {
		t.Errorf("residual_weight: %v", err)
	}
}
