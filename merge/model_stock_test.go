package merge

import (
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// TestModelStockFilterWise: filter_wise on BF16 and F32 against the per-row
// reference (big.weight's rows are longer than a chunk); a vector takes the
// tensor's t.
func TestModelStockFilterWise(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
		base, models := methodFixture(29, dt, 3)
		got := runMethodFiles(t, dt, "model_stock", Params{FilterWise: SwitchOn}, base, models, nil, nil, 2)
		whole := runMethodFiles(t, dt, "model_stock", Params{}, base, models, nil, nil, 2)
		for _, name := range base.names {
			ref, scale := modelStockRowsRef(base.shapes[name], base.vals[name], vals(models, name))
			checkClose(t, dt.String()+" "+name, got[name], ref, scale, dt)
			if len(base.shapes[name]) == 1 && !slicesEqualBits(got[name], whole[name]) {
				t.Errorf("%s: a vector's filter_wise differs from the tensor's", name)
			}
		}
	}
}

// TestModelStockFilterWiseHandWorked: row 0's task vectors are orthogonal (c = 0:
// the base), row 1's equal (c = 1: the models' mean); per tensor both rows would
// share c = 0.5.
func TestModelStockFilterWiseHandWorked(t *testing.T) {
	two := func(vals ...float32) *ckpt {
		return &ckpt{names: []string{"w"}, shapes: map[string][]int64{"w": {2, 2}}, vals: map[string][]float32{"w": vals}}
	}
	got := runMethodFiles(t, dtype.F32, "model_stock", Params{FilterWise: SwitchOn}, two(0, 0, 0, 0),
		[]*ckpt{two(1, 0, 1, 1), two(0, 1, 1, 1)}, nil, nil, 1)["w"]
	want := []float32{0, 0, 1, 1}
	if !slicesEqualBits(got, want) {
		t.Errorf("filter_wise: got %v, want %v", got, want)
	}
}
