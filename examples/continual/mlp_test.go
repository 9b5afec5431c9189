package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
)

// tinyProblem is a small network and batch, big enough to exercise every layer, the
// ReLU masks and several classes.
func tinyProblem(t *testing.T, seed uint64) (*Params, []float32, []uint8, int) {
	t.Helper()
	sizes := []int{7, 6, 5, 4}
	p, err := InitParams(sizes, seed)
	if err != nil {
		t.Fatal(err)
	}
	const n = 9
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n*sizes[0])
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	y := make([]uint8, n)
	for i := range y {
		y[i] = uint8(rng.IntN(sizes[len(sizes)-1]))
	}
	return p, x, y, n
}

// refLoss is an independent float64 forward pass over the flat parameters: the mean
// cross-entropy plus the penalty, written out loop by loop.
func refLoss(p *Params, x []float32, y []uint8, n int, pen *Penalty) float64 {
	var total float64
	for i := range n {
		act := make([]float64, p.Sizes[0])
		for j := range act {
			act[j] = float64(x[i*p.Sizes[0]+j])
		}
		for l := 0; l < p.Layers(); l++ {
			w, b := p.W(l), p.B(l)
			in, out := p.Sizes[l], p.Sizes[l+1]
			next := make([]float64, out)
			for o := range out {
				s := float64(b[o])
				for j := range in {
					s += float64(float64(w[o*in+j]) * act[j])
				}
				if l+1 < p.Layers() && s < 0 {
					s = 0
				}
				next[o] = s
			}
			act = next
		}
		zmax := slices.Max(act)
		var sum float64
		for _, v := range act {
			sum += math.Exp(v - zmax)
		}
		total += math.Log(sum) + zmax - act[y[i]]
	}
	loss := total / float64(n)
	if pen != nil {
		loss += pen.value(p.Flat)
	}
	return loss
}

func TestLossMatchesReference(t *testing.T) {
	p, x, y, n := tinyProblem(t, 3)
	ws := newWorkspace(p.Sizes, n)
	got := p.Loss(ws, x, y, n)
	want := refLoss(p, x, y, n, nil)
	if math.Abs(got-want) > 1e-5*math.Abs(want) {
		t.Fatalf("loss %v, reference %v", got, want)
	}
}

func TestSoftmaxCrossEntropy(t *testing.T) {
	// Equal logits: the loss is ln(classes) and the gradient is 1/classes − onehot.
	logits := make([]float32, 2*4)
	delta := make([]float32, len(logits))
	loss := softmaxDelta(delta, logits, []uint8{1, 3}, 2, 4, 1)
	if math.Abs(loss-2*math.Log(4)) > 1e-12 {
		t.Fatalf("loss %v, want 2·ln 4", loss)
	}
	want := []float32{0.25, -0.75, 0.25, 0.25, 0.25, 0.25, 0.25, -0.75}
	if !slices.Equal(delta, want) {
		t.Fatalf("delta %v, want %v", delta, want)
	}
	// A huge logit does not overflow: the max is subtracted first.
	logits = []float32{1000, 0}
	delta = make([]float32, 2)
	if loss := softmaxDelta(delta, logits, []uint8{1}, 1, 2, 1); math.Abs(loss-1000) > 1e-9 {
		t.Fatalf("loss %v, want 1000", loss)
	}
}

// TestGradientFiniteDifference compares the back-propagated gradient of the mean
// cross-entropy with central differences of the float64 reference loss, for every
// parameter.
func TestGradientFiniteDifference(t *testing.T) {
	for seed := uint64(11); seed < 14; seed++ {
		p, x, y, n := tinyProblem(t, seed)
		g := p.Like()
		p.LossGrad(newWorkspace(p.Sizes, n), x, y, n, g)
		const h = 1e-3
		worst := 0.0
		for i := range p.Flat {
			q := p.Clone()
			q.Flat[i] = p.Flat[i] + h
			up := refLoss(q, x, y, n, nil)
			q.Flat[i] = p.Flat[i] - h
			down := refLoss(q, x, y, n, nil)
			// The step actually taken is the float32 one.
			fd := (up - down) / float64(float32(p.Flat[i]+h)-float32(p.Flat[i]-h))
			err := math.Abs(fd - float64(g.Flat[i]))
			if err > 1e-4+1e-3*math.Abs(fd) {
				t.Errorf("seed %d: parameter %d: gradient %v, finite difference %v", seed, i, g.Flat[i], fd)
			}
			worst = max(worst, err)
		}
		t.Logf("seed %d: largest |gradient − finite difference| %.2g over %d parameters", seed, worst, len(p.Flat))
	}
}

// TestPenaltyProx checks the proximal step of each penalty against its definition,
// u = argmin ½‖u − θ‖² + lr·penalty(u), through the optimality condition
// (u − θ) + lr·∇penalty(u) = 0 with the gradient taken by finite differences of the
// penalty's value; and that for small lr·λ it is close to a gradient step.
func TestPenaltyProx(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	const n = 50
	theta, anchor, fisher := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range n {
		theta[i], anchor[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
		fisher[i] = float32(math.Exp(4 * rng.NormFloat64())) // spans many decades, like a real Fisher
	}
	for _, pen := range []Penalty{
		{Kind: L2Penalty, Lambda: 3, Anchor: anchor},
		{Kind: EWCPenalty, Lambda: 50, Anchor: anchor, Fisher: fisher},
	} {
		const lr = 0.05
		u := append([]float32(nil), theta...)
		pen.prox(u, lr)
		for i := range n {
			grad := penaltyGradFD(&pen, u, i)
			resid := float64(u[i]-theta[i]) + float64(lr*grad)
			scale := 1 + math.Abs(float64(theta[i]-anchor[i]))
			if math.Abs(resid) > 1e-5*scale*(1+lr*pen.Lambda*float64(max(fisher[i], 1))) {
				t.Errorf("penalty %d: element %d: optimality residual %g", pen.Kind, i, resid)
			}
			// The anchor pulls: u lies between θ and the anchor.
			lo, hi := min(theta[i], anchor[i]), max(theta[i], anchor[i])
			if u[i] < lo || u[i] > hi {
				t.Errorf("penalty %d: element %d: %v not between θ %v and anchor %v", pen.Kind, i, u[i], theta[i], anchor[i])
			}
		}
	}
	// For small lr·λ·w the prox step is the gradient step to first order.
	pen := Penalty{Kind: L2Penalty, Lambda: 1e-3, Anchor: anchor}
	u := append([]float32(nil), theta...)
	pen.prox(u, 0.01)
	for i := range n {
		grad := float64(theta[i] - anchor[i])
		if want := float64(theta[i]) - float64(0.01*1e-3*grad); math.Abs(float64(u[i])-want) > 1e-6 {
			t.Fatalf("element %d: prox %v, gradient step %v", i, u[i], want)
		}
	}
	none := append([]float32(nil), theta...)
	(&Penalty{}).prox(none, 0.1)
	if !slices.Equal(none, theta) || (&Penalty{}).value(theta) != 0 {
		t.Fatal("no penalty changed something")
	}
}

// penaltyGradFD is ∂penalty/∂p_i by central differences on a float64 copy of the
// penalty, so that float32 rounding of p does not swamp the difference.
func penaltyGradFD(pen *Penalty, p []float32, i int) float64 {
	f := func(v float64) float64 {
		d := v - float64(pen.Anchor[i])
		w := 1.0
		if pen.Kind == EWCPenalty {
			w = float64(pen.Fisher[i])
		}
		return float64(pen.Lambda / 2 * w * d * d)
	}
	const h = 1e-4
	return (f(float64(p[i])+h) - f(float64(p[i])-h)) / (2 * h)
}

// TestFisherMatchesPerExample checks the one-matrix-product Fisher against squaring
// the gradient of each example on its own.
func TestFisherMatchesPerExample(t *testing.T) {
	p, x, y, n := tinyProblem(t, 21)
	data := &Dataset{Dim: p.Sizes[0], X: x, Y: y}
	got := EstimateFisher(p, data)
	want := make([]float64, len(p.Flat))
	g := p.Like()
	ws := newWorkspace(p.Sizes, 1)
	for i := range n {
		p.LossGrad(ws, data.Row(i), y[i:i+1], 1, g)
		for j, v := range g.Flat {
			want[j] += float64(v) * float64(v) / float64(n)
		}
	}
	for j := range want {
		if math.Abs(float64(got.Flat[j])-want[j]) > 1e-6+1e-5*want[j] {
			t.Fatalf("Fisher[%d] = %v, per-example %v", j, got.Flat[j], want[j])
		}
	}
}

func TestAccuracy(t *testing.T) {
	// One layer, identity weights: the prediction is the argmax of the input.
	p, _ := NewParams([]int{3, 3})
	w := p.W(0)
	for i := range 3 {
		w[i*3+i] = 1
	}
	data := &Dataset{Dim: 3, X: []float32{
		1, 0, 0, // predicts 0, label 0: right, also among classes {0, 1}
		0, 0.5, 1, // predicts 2, label 1: wrong; among {0, 1} it predicts 1: right
		0, 2, 1, // predicts 1, label 0: wrong, also among {0, 1}
	}, Y: []uint8{0, 1, 0}}
	all, task := Accuracy(p, data, func(c uint8) bool { return c != 2 })
	if all != 1.0/3 || task != 2.0/3 {
		t.Fatalf("accuracy %v, task-aware %v; want 1/3 and 2/3", all, task)
	}
}

func TestSGDStep(t *testing.T) {
	p := []float32{1, -2, 0.5}
	g := []float32{0.5, 0.25, -4}
	sgdStep(p, g, 0.1)
	want := []float32{1 - 0.05, -2 - 0.025, 0.5 + 0.4}
	if !slices.Equal(p, want) {
		t.Fatalf("after one step %v, want %v", p, want)
	}
}

func TestPenaltyValue(t *testing.T) {
	p := []float32{1, 2, 3}
	a := []float32{0, 2, 5}
	f := []float32{4, 9, 0.5}
	l2 := Penalty{Kind: L2Penalty, Lambda: 2, Anchor: a}
	if v := l2.value(p); v != 1*(1+0+4) {
		t.Fatalf("L2 penalty %v, want 5", v)
	}
	ewc := Penalty{Kind: EWCPenalty, Lambda: 2, Anchor: a, Fisher: f}
	if v := ewc.value(p); v != 1*(4*1+0+0.5*4) {
		t.Fatalf("EWC penalty %v, want 6", v)
	}
}

// TestTrainLearnsAndIsDeterministic trains twice on a separable toy problem: the loss
// falls, and the two runs agree bit for bit.
func TestTrainLearnsAndIsDeterministic(t *testing.T) {
	data := &Dataset{Dim: 4}
	rng := rand.New(rand.NewPCG(5, 5))
	for range 200 {
		c := rng.IntN(3)
		for j := range 4 {
			v := float32(rng.NormFloat64() * 0.3)
			if j == c {
				v += 2
			}
			data.X = append(data.X, v)
		}
		data.Y = append(data.Y, uint8(c))
	}
	run := func() (*Params, float64) {
		p, err := InitParams([]int{4, 8, 3}, 1)
		if err != nil {
			t.Fatal(err)
		}
		calls := 0
		_, err = Train(context.Background(), p, data, TrainConfig{Steps: 100, Batch: 10, LR: 0.2, Seed: 9,
			OnStep: func(context.Context, int, *Params) error { calls++; return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if calls != 100 {
			t.Fatalf("OnStep ran %d times, want 100", calls)
		}
		acc, _ := Accuracy(p, data, func(uint8) bool { return true })
		return p, acc
	}
	p1, acc := run()
	p2, _ := run()
	if !slices.Equal(p1.Flat, p2.Flat) {
		t.Fatal("two runs with the same seeds differ")
	}
	if acc < 0.95 {
		t.Fatalf("training accuracy %v on a separable problem", acc)
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	p, err := InitParams([]int{5, 3, 2}, 4)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := Save(path, p, map[string]string{"task": "A"}); err != nil {
		t.Fatal(err)
	}
	q := p.Like()
	if err := Load(path, q); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Flat, q.Flat) {
		t.Fatal("weights changed in a save/load round trip")
	}
	wrong, _ := NewParams([]int{5, 4, 2})
	if err := Load(path, wrong); err == nil {
		t.Fatal("loading into another shape succeeded")
	}
}

func BenchmarkTrainStep(b *testing.B) {
	for _, c := range []struct{ hidden, batch int }{{256, 64}, {256, 32}, {128, 32}} {
		b.Run(fmt.Sprintf("hidden%d/batch%d", c.hidden, c.batch), func(b *testing.B) {
			p, err := InitParams([]int{784, c.hidden, c.hidden, 10}, 1)
			if err != nil {
				b.Fatal(err)
			}
			ws := newWorkspace(p.Sizes, c.batch)
			g := p.Like()
			x := make([]float32, c.batch*784)
			y := make([]uint8, c.batch)
			for i := range x {
				x[i] = float32(i%255) / 255
			}
			pen := Penalty{}
			for b.Loop() {
				trainStep(p, ws, x, y, c.batch, &pen, g, 0.01)
			}
		})
	}
}
