package main

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas/blas32"
)

// Params holds an MLP's weights in one flat float32 slice, so that SGD, the L2 and
// EWC penalties, the Fisher and the distance to the anchor are all plain element-wise
// loops over one vector. Layer l has a weight of shape [out, in] (PyTorch's nn.Linear
// layout, so the checkpoints load into torch as they are) followed by its bias.
type Params struct {
	Sizes []int // layer widths, input first: 784, 256, 256, 10
	Flat  []float32
	views []tensorView
}

// tensorView names a stretch of Params.Flat.
type tensorView struct {
	Name  string
	Shape []int64
	Off   int
	Len   int
}

// NewParams returns zero parameters for an MLP with the given layer widths.
func NewParams(sizes []int) (*Params, error) {
	if len(sizes) < 2 {
		return nil, fmt.Errorf("mlp: need at least an input and an output width, got %v", sizes)
	}
	p := &Params{Sizes: append([]int(nil), sizes...)}
	off := 0
	for l := 0; l+1 < len(sizes); l++ {
		in, out := sizes[l], sizes[l+1]
		if in < 1 || out < 1 {
			return nil, fmt.Errorf("mlp: layer widths must be positive, got %v", sizes)
		}
		p.views = append(p.views,
			tensorView{Name: fmt.Sprintf("fc%d.weight", l+1), Shape: []int64{int64(out), int64(in)}, Off: off, Len: out * in},
			tensorView{Name: fmt.Sprintf("fc%d.bias", l+1), Shape: []int64{int64(out)}, Off: off + out*in, Len: out})
		off += out*in + out
	}
	p.Flat = make([]float32, off)
	return p, nil
}

// InitParams draws weights and biases from U(−1/√in, 1/√in), PyTorch's default for
// nn.Linear, from a generator seeded with seed. Here and in every float computation of
// this example a product that feeds a sum is rounded explicitly (float64(x*y)), since
// Go may fuse x*y + z into one FMA on arm64 and the results must agree on every
// platform.
func InitParams(sizes []int, seed uint64) (*Params, error) {
	p, err := NewParams(sizes)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0xda3e39cb94b95bdb))
	for l := 0; l+1 < len(sizes); l++ {
		bound := 1 / math.Sqrt(float64(sizes[l]))
		for _, v := range [][]float32{p.W(l), p.B(l)} {
			for i := range v {
				v[i] = float32((float64(2*rng.Float64()) - 1) * bound)
			}
		}
	}
	return p, nil
}

// Layers is the number of linear layers.
func (p *Params) Layers() int { return len(p.Sizes) - 1 }

// W is layer l's weight, [out, in] row-major.
func (p *Params) W(l int) []float32 { v := p.views[2*l]; return p.Flat[v.Off : v.Off+v.Len] }

// B is layer l's bias.
func (p *Params) B(l int) []float32 { v := p.views[2*l+1]; return p.Flat[v.Off : v.Off+v.Len] }

// Clone returns a deep copy.
func (p *Params) Clone() *Params {
	q := *p
	q.Sizes = append([]int(nil), p.Sizes...)
	q.Flat = append([]float32(nil), p.Flat...)
	return &q
}

// Like returns zero parameters of p's shape (for gradients and Fisher diagonals).
func (p *Params) Like() *Params {
	q := p.Clone()
	clear(q.Flat)
	return q
}

// workspace holds the activations and deltas of one batch, reused across steps so that
// a training step does not allocate.
type workspace struct {
	n     int         // batch capacity
	acts  [][]float32 // acts[l] for l ≥ 1: layer l's output (ReLU'd except the last: the logits)
	delta [][]float32 // delta[l]: ∂loss/∂(pre-activation of layer l's output)
	grad  []float32   // scratch for ∂loss/∂acts before the ReLU mask
}

func newWorkspace(sizes []int, n int) *workspace {
	ws := &workspace{n: n, acts: make([][]float32, len(sizes)), delta: make([][]float32, len(sizes))}
	widest := 0
	for l := 1; l < len(sizes); l++ {
		ws.acts[l] = make([]float32, n*sizes[l])
		ws.delta[l] = make([]float32, n*sizes[l])
		widest = max(widest, sizes[l])
	}
	ws.grad = make([]float32, n*widest)
	return ws
}

// The matrix products are loops over gonum's BLAS level-1 kernels (assembly dot and
// axpy on amd64), one row at a time, on the calling goroutine. That fixes the order of
// every sum (it depends on nothing but the sizes), uses one core per training run
// (the experiment runs rows side by side instead), and keeps the race detector cheap:
// gonum's Sgemm would start goroutines per block on every call.
var blas32Impl = blas32.Implementation()

// mulABt sets c (n×m) = a (n×k) · bᵀ, with b m×k, adding c's previous contents when
// accumulate is set.
func mulABt(c, a, b []float32, n, m, k int, accumulate bool) {
	for i := range n {
		ai, ci := a[i*k:(i+1)*k], c[i*m:(i+1)*m]
		for j := range m {
			d := blas32Impl.Sdot(k, ai, 1, b[j*k:(j+1)*k], 1)
			if accumulate {
				ci[j] += d
			} else {
				ci[j] = d
			}
		}
	}
}

// addAtB adds aᵀ · b to c (m×k), with a n×m and b n×k: for each row i, c_o += a[i,o]·b_i.
func addAtB(c, a, b []float32, n, m, k int) {
	for i := range n {
		bi := b[i*k : (i+1)*k]
		for o, v := range a[i*m : (i+1)*m] {
			if v != 0 {
				blas32Impl.Saxpy(k, v, bi, 1, c[o*k:(o+1)*k], 1)
			}
		}
	}
}

// mulAB sets c (n×k) = a (n×m) · b (m×k).
func mulAB(c, a, b []float32, n, m, k int) {
	clear(c[:n*k])
	for i := range n {
		ci := c[i*k : (i+1)*k]
		for o, v := range a[i*m : (i+1)*m] {
			if v != 0 {
				blas32Impl.Saxpy(k, v, b[o*k:(o+1)*k], 1, ci, 1)
			}
		}
	}
}

// forward computes the logits of the n rows of x (n × Sizes[0]) into ws.acts[last].
func (p *Params) forward(ws *workspace, x []float32, n int) []float32 {
	in := x
	for l := 0; l < p.Layers(); l++ {
		k, m := p.Sizes[l], p.Sizes[l+1]
		out := ws.acts[l+1][:n*m]
		b := p.B(l)
		for i := range n {
			copy(out[i*m:(i+1)*m], b)
		}
		mulABt(out, in, p.W(l), n, m, k, true) // out = b + in · Wᵀ
		if l+1 < p.Layers() {
			for i, v := range out {
				if v < 0 {
					out[i] = 0
				}
			}
		}
		in = out
	}
	return in
}

// softmaxDelta turns the logits of n rows into delta = (softmax − onehot(y))·scale and
// returns the summed cross-entropy. exp and the row sums are taken in float64, in
// index order, so the result does not depend on anything but the inputs.
func softmaxDelta(delta, logits []float32, y []uint8, n, classes int, scale float64) float64 {
	var loss float64
	for i := range n {
		z := logits[i*classes : (i+1)*classes]
		d := delta[i*classes : (i+1)*classes]
		zmax := z[0]
		for _, v := range z[1:] {
			zmax = max(zmax, v)
		}
		var sum float64
		for _, v := range z {
			sum += math.Exp(float64(v - zmax))
		}
		logSum := math.Log(sum)
		for c, v := range z {
			pc := math.Exp(float64(v-zmax) - logSum)
			if c == int(y[i]) {
				pc--
			}
			d[c] = float32(pc * scale)
		}
		loss += logSum - float64(z[y[i]]-zmax)
	}
	return loss
}

// backward propagates ws.delta[last] (already set) down the network and writes the
// weight gradient into g. With squared, it writes instead Σ_i (per-example gradient)²:
// the gradient of weight [o, j] for example i is delta_i[o]·act_i[j], so its square
// summed over the batch is (delta²)ᵀ·(act²), one matrix product, and the delta of each
// example is exact per example because back-propagation is linear in each row.
func (p *Params) backward(ws *workspace, x []float32, n int, g *Params, squared bool) {
	for l := p.Layers() - 1; l >= 0; l-- {
		k, m := p.Sizes[l], p.Sizes[l+1]
		d := ws.delta[l+1][:n*m]
		var in []float32
		if l == 0 {
			in = x[:n*k]
		} else {
			in = ws.acts[l][:n*k]
		}
		dw, db := g.W(l), g.B(l)
		if squared {
			d2 := make([]float32, len(d))
			for i, v := range d {
				d2[i] = v * v
			}
			a2 := make([]float32, len(in))
			for i, v := range in {
				a2[i] = v * v
			}
			addAtB(dw, d2, a2, n, m, k)
			addColumnSums(db, d2, n, m)
		} else {
			clear(dw)
			addAtB(dw, d, in, n, m, k) // dW = deltaᵀ · in
			clear(db)
			addColumnSums(db, d, n, m)
		}
		if l == 0 {
			break
		}
		// ∂loss/∂in = delta · W, then the ReLU mask (the output is > 0 exactly where the
		// pre-activation is).
		dIn := ws.grad[:n*k]
		mulAB(dIn, d, p.W(l), n, m, k)
		prev := ws.delta[l][:n*k]
		for i, a := range in {
			if a > 0 {
				prev[i] = dIn[i]
			} else {
				prev[i] = 0
			}
		}
	}
}

// addColumnSums adds the column sums of the n×m matrix d to dst, row by row in order.
func addColumnSums(dst, d []float32, n, m int) {
	for i := range n {
		row := d[i*m : (i+1)*m]
		for o, v := range row {
			dst[o] += v
		}
	}
}

// LossGrad returns the mean softmax cross-entropy of the n examples (x, y) and writes
// its gradient into g (overwritten).
func (p *Params) LossGrad(ws *workspace, x []float32, y []uint8, n int, g *Params) float64 {
	logits := p.forward(ws, x, n)
	classes := p.Sizes[len(p.Sizes)-1]
	loss := softmaxDelta(ws.delta[len(p.Sizes)-1], logits, y, n, classes, 1/float64(n))
	p.backward(ws, x, n, g, false)
	return loss / float64(n)
}

// Loss returns the mean softmax cross-entropy of the n examples without a gradient.
func (p *Params) Loss(ws *workspace, x []float32, y []uint8, n int) float64 {
	logits := p.forward(ws, x, n)
	classes := p.Sizes[len(p.Sizes)-1]
	return softmaxDelta(ws.delta[len(p.Sizes)-1], logits, y, n, classes, 1) / float64(n)
}

// AddSquaredGrads adds Σ_i (∇ log p(y_i|x_i))² over the n examples to f: the empirical
// Fisher's numerator, before dividing by the number of examples.
func (p *Params) AddSquaredGrads(ws *workspace, x []float32, y []uint8, n int, f *Params) {
	logits := p.forward(ws, x, n)
	classes := p.Sizes[len(p.Sizes)-1]
	softmaxDelta(ws.delta[len(p.Sizes)-1], logits, y, n, classes, 1)
	p.backward(ws, x, n, f, true)
}
