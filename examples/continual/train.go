package main

import (
	"context"
	"fmt"
	"math/rand/v2"
)

// PenaltyKind selects a regulariser that pulls the weights toward the anchor at every
// step: the baselines SFA is compared with.
type PenaltyKind int

const (
	NoPenalty  PenaltyKind = iota
	L2Penalty              // λ/2 · ‖θ − θ_A‖²
	EWCPenalty             // λ/2 · Σ_j F_j (θ_j − θ_A,j)²
)

// Penalty is a regulariser toward Anchor.
type Penalty struct {
	Kind   PenaltyKind
	Lambda float64
	Anchor []float32 // θ_A, flat
	Fisher []float32 // F, flat (EWC only)
}

// value returns the penalty at p, summed in float64 in index order.
func (pen *Penalty) value(p []float32) float64 {
	if pen.Kind == NoPenalty {
		return 0
	}
	var s float64
	for i, v := range p {
		d := float64(v - pen.Anchor[i])
		w := 1.0
		if pen.Kind == EWCPenalty {
			w = float64(pen.Fisher[i])
		}
		s += float64(w * d * d)
	}
	return pen.Lambda / 2 * s
}

// prox applies the penalty's proximal step after the gradient step on the data loss:
// θ ← argmin_u ½‖u − θ‖² + lr·penalty(u), which for λ/2·Σ w_j (u_j − a_j)² is
// u_j = (θ_j + lr·λ·w_j·a_j) / (1 + lr·λ·w_j) (w = 1 for L2, F for EWC). It equals
// the plain gradient step to first order in lr·λ·w, but stays stable when lr·λ·w ≥ 2,
// where SGD on the penalty would diverge: EWC needs λ·F large for the few weights
// (the head's) whose Fisher is far above the mean.
func (pen *Penalty) prox(p []float32, lr float64) {
	if pen.Kind == NoPenalty {
		return
	}
	for i, v := range p {
		w := 1.0
		if pen.Kind == EWCPenalty {
			w = float64(pen.Fisher[i])
		}
		k := float64(lr * pen.Lambda * w) // rounded: it feeds 1 + k below
		p[i] = float32((float64(v) + float64(k*float64(pen.Anchor[i]))) / (1 + k))
	}
}

// trainStep is one step on a batch: a gradient step on the mean cross-entropy, then
// the penalty's proximal step. It returns the objective (loss plus penalty) before it.
func trainStep(p *Params, ws *workspace, x []float32, y []uint8, n int, pen *Penalty, g *Params, lr float64) float64 {
	loss := p.LossGrad(ws, x, y, n, g) + pen.value(p.Flat)
	sgdStep(p.Flat, g.Flat, lr)
	pen.prox(p.Flat, lr)
	return loss
}

// sgdStep applies θ ← θ − lr·g. The product is rounded to float32 before the
// subtraction, so no platform fuses the two into one FMA and results agree everywhere.
func sgdStep(p, g []float32, lr float64) {
	for i := range p {
		p[i] -= float32(lr * float64(g[i]))
	}
}

// TrainConfig is one training segment.
type TrainConfig struct {
	Steps   int
	Batch   int
	LR      float64
	Seed    uint64 // seeds the order in which examples are drawn
	Penalty Penalty
	// OnStep, if set, runs after step s (1-based) is applied. SFA uses it to checkpoint,
	// call gomerge and load the averaged weights back.
	OnStep func(ctx context.Context, step int, p *Params) error
}

// sampler yields minibatches: each epoch is a fresh permutation of the data, drawn from
// a generator seeded once, so a run is reproducible.
type sampler struct {
	data *Dataset
	rng  *rand.Rand
	perm []int
	next int
}

func newSampler(d *Dataset, seed uint64) *sampler {
	return &sampler{data: d, rng: rand.New(rand.NewPCG(seed, 0x14057b7ef767814f))}
}

// fill copies the next n examples into x and y.
func (s *sampler) fill(x []float32, y []uint8, n int) {
	dim := s.data.Dim
	for i := range n {
		if s.next == len(s.perm) {
			s.perm, s.next = s.rng.Perm(s.data.Len()), 0
		}
		j := s.perm[s.next]
		s.next++
		copy(x[i*dim:(i+1)*dim], s.data.Row(j))
		y[i] = s.data.Y[j]
	}
}

// Train runs cfg.Steps steps of minibatch SGD on data, updating p in place, and
// returns the objective of the last batch.
func Train(ctx context.Context, p *Params, data *Dataset, cfg TrainConfig) (float64, error) {
	if data.Len() == 0 || cfg.Batch < 1 || cfg.Steps < 1 {
		return 0, fmt.Errorf("train: %d examples, batch %d, %d steps", data.Len(), cfg.Batch, cfg.Steps)
	}
	if data.Dim != p.Sizes[0] {
		return 0, fmt.Errorf("train: examples have %d features, the model takes %d", data.Dim, p.Sizes[0])
	}
	ws := newWorkspace(p.Sizes, cfg.Batch)
	g := p.Like()
	x := make([]float32, cfg.Batch*data.Dim)
	y := make([]uint8, cfg.Batch)
	s := newSampler(data, cfg.Seed)
	var loss float64
	for step := 1; step <= cfg.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		s.fill(x, y, cfg.Batch)
		loss = trainStep(p, ws, x, y, cfg.Batch, &cfg.Penalty, g, cfg.LR)
		if cfg.OnStep != nil {
			if err := cfg.OnStep(ctx, step, p); err != nil {
				return 0, fmt.Errorf("step %d: %w", step, err)
			}
		}
	}
	return loss, nil
}

// evalBatch is how many examples are pushed through the network at once when
// evaluating or estimating the Fisher.
const evalBatch = 500

// EstimateFisher returns the empirical diagonal Fisher of p on data: the mean over the
// examples of the squared gradient of log p(y|x) at the true label.
func EstimateFisher(p *Params, data *Dataset) *Params {
	f := p.Like()
	ws := newWorkspace(p.Sizes, evalBatch)
	for lo := 0; lo < data.Len(); lo += evalBatch {
		n := min(evalBatch, data.Len()-lo)
		p.AddSquaredGrads(ws, data.X[lo*data.Dim:(lo+n)*data.Dim], data.Y[lo:lo+n], n, f)
	}
	inv := 1 / float64(data.Len())
	for i, v := range f.Flat {
		f.Flat[i] = float32(float64(v) * inv)
	}
	return f
}

// Accuracy returns the fraction of data whose argmax over all the head's classes is
// the label (class-incremental: the model must also tell the tasks apart), and the
// fraction whose argmax over only the classes that allowed accepts is the label
// (task-aware: the task is given at test time).
func Accuracy(p *Params, data *Dataset, allowed func(class uint8) bool) (all, taskAware float64) {
	ws := newWorkspace(p.Sizes, evalBatch)
	classes := p.Sizes[len(p.Sizes)-1]
	correct, correctTask := 0, 0
	for lo := 0; lo < data.Len(); lo += evalBatch {
		n := min(evalBatch, data.Len()-lo)
		logits := p.forward(ws, data.X[lo*data.Dim:(lo+n)*data.Dim], n)
		for i, y := range data.Y[lo : lo+n] {
			z := logits[i*classes : (i+1)*classes]
			best, bestTask := 0, -1
			for c := range classes {
				if z[c] > z[best] {
					best = c
				}
				if allowed(uint8(c)) && (bestTask < 0 || z[c] > z[bestTask]) {
					bestTask = c
				}
			}
			if best == int(y) {
				correct++
			}
			if bestTask == int(y) {
				correctTask++
			}
		}
	}
	return float64(correct) / float64(data.Len()), float64(correctTask) / float64(data.Len())
}
