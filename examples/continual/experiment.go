package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// Setting is how the two tasks share the network's output: the two readings of the
// paper's Fig. 1 split of Fashion-MNIST into even and odd labels.
type Setting int

const (
	// ClassIncremental has one 10-way head: task B's five classes are five new outputs,
	// and accuracy is the argmax over all ten.
	ClassIncremental Setting = iota
	// DomainIncremental has one shared 5-way head: label k is output ⌊k/2⌋ in both
	// tasks (T-shirt and trouser are output 0, pullover and dress 1, and so on), so task B
	// reuses task A's outputs for new kinds of images.
	DomainIncremental
)

// Settings lists every setting, in report order.
var Settings = []Setting{ClassIncremental, DomainIncremental}

func (s Setting) String() string {
	if s == DomainIncremental {
		return "domain"
	}
	return "class"
}

// Title names the setting in tables and plots.
func (s Setting) Title() string {
	if s == DomainIncremental {
		return "domain-incremental (one shared 5-way head)"
	}
	return "class-incremental (one 10-way head)"
}

// Classes is the width of the head.
func (s Setting) Classes() int {
	if s == DomainIncremental {
		return 5
	}
	return 10
}

// ParseSetting reads what String writes.
func ParseSetting(name string) (Setting, error) {
	for _, s := range Settings {
		if s.String() == name {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown setting %q (want class or domain)", name)
}

// ParseSettings reads a comma-separated list of settings.
func ParseSettings(list string) ([]Setting, error) {
	var out []Setting
	for _, name := range strings.Split(list, ",") {
		s, err := ParseSetting(strings.TrimSpace(name))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// Config sizes the experiment. FullConfig is the README's run; ReducedConfig is what
// the test runs in CI.
type Config struct {
	Settings []Setting // run each, in order
	Sizes    []int     // MLP widths; the last is replaced by the setting's head width
	StepsA   int       // SGD steps on task A (from the random initialisation)
	StepsB   int       // SGD steps on task B (T): every B-stage row gets the same budget
	Batch    int       // minibatch size
	LR       float64   // SGD learning rate
	Seed     uint64

	TrainImages  int // read only the first TrainImages training images (0: all 60,000)
	TestImages   int // and the first TestImages test images (0: all 10,000)
	TrainPerTask int // training examples kept per task (0: all 30,000)
	TestPerTask  int // test examples kept per task (0: all 5,000)
	FisherN      int // examples of A used to estimate the Fisher

	SFAPs         []float64 // SFA with β = 0.5 at each p
	SFABetas      []float64 // SFA with p = 1 at each β
	L2Lambdas     []float64
	EWCLambdas    []float64
	FisherP       float64   // p for Fisher-weighted SFA
	FisherScales  []float64 // η = scale / mean(F), so that the sweep does not depend on the Fisher's units
	TALambdas     []float64 // task arithmetic of A and sequential B over the initialisation
	TIESDensities []float64
	RehearsalFrac float64 // fraction of A's training set kept as a rehearsal buffer

	Workers int // rows trained at once
}

// FullConfig is the experiment the README reports.
func FullConfig() Config {
	return Config{
		Settings: Settings,
		Sizes:    []int{784, 256, 256, 10}, StepsA: 2000, StepsB: 2000, Batch: 64, LR: 0.05, Seed: 1,
		FisherN:       5000,
		SFAPs:         []float64{1, 0.5, 0.25, 0.1, 0.05, 0.01},
		SFABetas:      []float64{0.25, 0.5, 0.75},
		L2Lambdas:     []float64{0.01, 0.1, 1, 10},
		EWCLambdas:    []float64{10, 1e3, 1e5, 1e7},
		FisherP:       0.1,
		FisherScales:  []float64{1, 100, 1e4},
		TALambdas:     []float64{0.5, 1},
		TIESDensities: []float64{0.2, 0.5},
		RehearsalFrac: 0.1,
		Workers:       2,
	}
}

// ReducedConfig is small enough for `go test -race` in CI and still shows the claims
// the test asserts.
func ReducedConfig() Config {
	c := FullConfig()
	c.StepsA, c.StepsB, c.Batch = 300, 300, 32
	c.TrainImages, c.TestImages = 15000, 4000
	c.TrainPerTask, c.TestPerTask, c.FisherN = 6000, 1000, 1000
	c.SFAPs = []float64{1, 0.5, 0.2}
	c.SFABetas = nil // the same code path as SFAPs
	c.L2Lambdas, c.EWCLambdas = []float64{1}, []float64{1e3}
	c.FisherScales = []float64{100}
	c.TALambdas, c.TIESDensities = []float64{1}, []float64{0.2}
	return c
}

// Result is one row of results.csv: a point on the (accuracy on A, accuracy on B) plane.
type Result struct {
	Setting  Setting
	Method   string  // initial, sequential, sfa, sfa_beta, l2, ewc, sfa_fisher, task_arithmetic, ties, multitask, rehearsal
	Param    string  // the swept parameter's name, or ""
	Value    float64 // its value
	AccA     float64 // test accuracy on task A (even labels), argmax over all the head's outputs
	AccB     float64 // the same on task B (odd labels)
	TaskA    float64 // task-aware accuracy on A: argmax over A's five classes only (= AccA for a 5-way head)
	TaskB    float64 // the same on B
	L2       float64 // ‖θ − θ_A‖₂ from `gomerge distance`
	SFACalls int     // `gomerge sfa` runs during training
	Path     string  // the final checkpoint (not in the CSV)
}

// Label names the row for tables and legends.
func (r *Result) Label() string {
	if r.Param == "" {
		return r.Method
	}
	return r.Method + " " + r.Param + "=" + strconv.FormatFloat(r.Value, 'g', -1, 64)
}

// Experiment holds what every row of one setting shares.
type Experiment struct {
	Cfg     Config
	Setting Setting
	GM      *Gomerge
	Work    string // folder for checkpoints
	Logf    func(format string, args ...any)
	trainA  *Dataset
	trainB  *Dataset
	testA   *Dataset
	testB   *Dataset
	theta0  *Params // the random initialisation θ₀
	anchor  *Params // θ_A
	fisher  *Params // F at θ_A
	paths   struct{ init, anchor, fisher string }
	meanF   float64
	// allowedA and allowedB pick the head's outputs of each task, for the task-aware
	// accuracy.
	allowedA, allowedB func(class uint8) bool
}

// isA tells task A (even labels) from task B (odd labels).
func isA(y uint8) bool { return y%2 == 0 }

// RunSettings runs the experiment once for each of cfg.Settings, in folders named
// after them under work, and returns all the rows.
func RunSettings(ctx context.Context, cfg Config, data *FashionMNIST, gm *Gomerge, work string, logf func(string, ...any)) ([]Result, error) {
	var out []Result
	for _, s := range cfg.Settings {
		dir := filepath.Join(work, s.String())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		prefixed := func(format string, args ...any) { logf(s.String()+": "+format, args...) }
		results, err := NewExperiment(cfg, s, data, gm, dir, prefixed).Run(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s-incremental: %w", s, err)
		}
		out = append(out, results...)
	}
	return out, nil
}

// NewExperiment splits the data into the two tasks and, for the domain-incremental
// setting, maps label k to output ⌊k/2⌋.
func NewExperiment(cfg Config, setting Setting, data *FashionMNIST, gm *Gomerge, work string, logf func(string, ...any)) *Experiment {
	cfg.Sizes = append(slices.Clone(cfg.Sizes[:len(cfg.Sizes)-1]), setting.Classes())
	e := &Experiment{Cfg: cfg, Setting: setting, GM: gm, Work: work, Logf: logf}
	split := func(d *Dataset, keep func(uint8) bool, n int, seed uint64) *Dataset {
		s := d.Filter(keep)
		if n > 0 {
			s = s.Subset(n, seed)
		}
		return s
	}
	notA := func(y uint8) bool { return !isA(y) }
	e.trainA = split(data.Train, isA, cfg.TrainPerTask, cfg.Seed+100)
	e.trainB = split(data.Train, notA, cfg.TrainPerTask, cfg.Seed+101)
	e.testA = split(data.Test, isA, cfg.TestPerTask, cfg.Seed+102)
	e.testB = split(data.Test, notA, cfg.TestPerTask, cfg.Seed+103)
	e.allowedA, e.allowedB = isA, notA
	if setting == DomainIncremental {
		half := func(y uint8) uint8 { return y / 2 }
		for _, d := range []**Dataset{&e.trainA, &e.trainB, &e.testA, &e.testB} {
			*d = (*d).Relabel(half)
		}
		all := func(uint8) bool { return true }
		e.allowedA, e.allowedB = all, all
	}
	return e
}

// Run trains task A, then every row, and returns the results in a fixed order.
func (e *Experiment) Run(ctx context.Context) ([]Result, error) {
	if err := e.trainTaskA(ctx); err != nil {
		return nil, err
	}
	rows := e.trainingRows()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, e.Cfg.Workers))
	out := make([]Result, len(rows))
	for i, row := range rows {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			r, err := e.runRow(gctx, row)
			if err != nil {
				return fmt.Errorf("%s: %w", row.res.Label(), err)
			}
			out[i] = r
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	seq := slices.IndexFunc(out, func(r Result) bool { return r.Method == "sequential" })
	merged, err := e.mergeRows(ctx, out[seq].Path)
	if err != nil {
		return nil, err
	}
	initial := Result{Method: "initial", Path: e.paths.anchor}
	if err := e.finish(ctx, &initial, e.anchor); err != nil {
		return nil, err
	}
	all := append(append([]Result{initial}, out...), merged...)
	for i := range all {
		all[i].Setting = e.Setting
	}
	return all, nil
}

// trainTaskA trains θ_A from the initialisation and estimates its Fisher on A.
func (e *Experiment) trainTaskA(ctx context.Context) error {
	var err error
	if e.theta0, err = InitParams(e.Cfg.Sizes, e.Cfg.Seed); err != nil {
		return err
	}
	e.paths.init = filepath.Join(e.Work, "init.safetensors")
	e.paths.anchor = filepath.Join(e.Work, "A.safetensors")
	e.paths.fisher = filepath.Join(e.Work, "A_fisher.safetensors")
	if err := Save(e.paths.init, e.theta0, map[string]string{"stage": "init"}); err != nil {
		return err
	}
	start := time.Now()
	e.anchor = e.theta0.Clone()
	if _, err := Train(ctx, e.anchor, e.trainA, TrainConfig{Steps: e.Cfg.StepsA, Batch: e.Cfg.Batch, LR: e.Cfg.LR, Seed: e.Cfg.Seed + 1}); err != nil {
		return fmt.Errorf("task A: %w", err)
	}
	if err := Save(e.paths.anchor, e.anchor, map[string]string{"stage": "after task A"}); err != nil {
		return err
	}
	e.fisher = EstimateFisher(e.anchor, e.trainA.Subset(e.Cfg.FisherN, e.Cfg.Seed+2))
	var sum float64
	for _, v := range e.fisher.Flat {
		sum += float64(v)
	}
	e.meanF = sum / float64(len(e.fisher.Flat))
	if err := Save(e.paths.fisher, e.fisher, map[string]string{"stage": "Fisher of A"}); err != nil {
		return err
	}
	e.Logf("task A: %d steps in %.1fs; mean Fisher %.3g", e.Cfg.StepsA, time.Since(start).Seconds(), e.meanF)
	return nil
}

// row is one B-stage training run.
type row struct {
	res     Result
	data    *Dataset
	penalty Penalty
	sfa     *SFAOptions
	p       float64
}

func (e *Experiment) trainingRows() []row {
	c := e.Cfg
	var rows []row
	add := func(r row) {
		if r.data == nil {
			r.data = e.trainB
		}
		rows = append(rows, r)
	}
	add(row{res: Result{Method: "sequential"}})
	for _, p := range c.SFAPs {
		add(row{res: Result{Method: "sfa", Param: "p", Value: p}, sfa: &SFAOptions{Beta: 0.5}, p: p})
	}
	for _, b := range c.SFABetas {
		add(row{res: Result{Method: "sfa_beta", Param: "beta", Value: b}, sfa: &SFAOptions{Beta: b}, p: 1})
	}
	for _, l := range c.L2Lambdas {
		add(row{res: Result{Method: "l2", Param: "lambda", Value: l}, penalty: Penalty{Kind: L2Penalty, Lambda: l, Anchor: e.anchor.Flat}})
	}
	for _, l := range c.EWCLambdas {
		add(row{res: Result{Method: "ewc", Param: "lambda", Value: l},
			penalty: Penalty{Kind: EWCPenalty, Lambda: l, Anchor: e.anchor.Flat, Fisher: e.fisher.Flat}})
	}
	for _, s := range c.FisherScales {
		add(row{res: Result{Method: "sfa_fisher", Param: "eta·mean(F)", Value: s},
			sfa: &SFAOptions{Fisher: e.paths.fisher, Eta: s / e.meanF}, p: c.FisherP})
	}
	add(row{res: Result{Method: "multitask"}, data: Concat(e.trainA, e.trainB)})
	buffer := e.trainA.Subset(int(c.RehearsalFrac*float64(e.trainA.Len())), c.Seed+3)
	add(row{res: Result{Method: "rehearsal", Param: "buffer", Value: c.RehearsalFrac}, data: Concat(e.trainB, buffer)})
	return rows
}

// runRow trains one row from θ_A on task B. SFA rows checkpoint at every step of the
// schedule and exec `gomerge sfa --in-place`, exactly as an external trainer would.
func (e *Experiment) runRow(ctx context.Context, r row) (Result, error) {
	res := r.res
	dir := filepath.Join(e.Work, fmt.Sprintf("%s_%s_%g", res.Method, res.Param, res.Value))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	res.Path = filepath.Join(dir, "model.safetensors")
	p := e.anchor.Clone()
	cfg := TrainConfig{Steps: e.Cfg.StepsB, Batch: e.Cfg.Batch, LR: e.Cfg.LR, Seed: e.Cfg.Seed + 4, Penalty: r.penalty}
	var sched []int // the steps after which to average, from `gomerge sfa schedule`
	next := 0       // sched[next] is the next one
	if r.sfa != nil {
		var err error
		if sched, err = e.GM.Schedule(ctx, e.Cfg.StepsB, r.p); err != nil {
			return res, err
		}
		var merging time.Duration
		defer func() {
			if res.SFACalls > 0 {
				e.Logf("%-28s %d gomerge sfa calls, %.0f ms each (save, exec, load)", res.Label(), res.SFACalls,
					merging.Seconds()*1000/float64(res.SFACalls))
			}
		}()
		cfg.OnStep = func(ctx context.Context, step int, p *Params) error {
			if next == len(sched) || sched[next] != step {
				return nil
			}
			next++
			t0 := time.Now()
			defer func() { merging += time.Since(t0) }()
			if err := Save(res.Path, p, map[string]string{"step": strconv.Itoa(step)}); err != nil {
				return err
			}
			if _, err := e.GM.SFAInPlace(ctx, e.paths.anchor, res.Path, *r.sfa); err != nil {
				return err
			}
			res.SFACalls++
			return Load(res.Path, p)
		}
	}
	start := time.Now()
	if _, err := Train(ctx, p, r.data, cfg); err != nil {
		return res, err
	}
	if next != len(sched) {
		return res, fmt.Errorf("averaged at %d of the %d scheduled steps", next, len(sched))
	}
	if r.sfa == nil {
		if err := Save(res.Path, p, nil); err != nil {
			return res, err
		}
	}
	if err := e.finish(ctx, &res, p); err != nil {
		return res, err
	}
	e.Logf("%-28s acc A %.3f  acc B %.3f  L2 %.3f  (%d gomerge sfa calls, %.1fs)",
		res.Label(), res.AccA, res.AccB, res.L2, res.SFACalls, time.Since(start).Seconds())
	return res, nil
}

// finish evaluates a row's model and measures its distance to θ_A with gomerge.
func (e *Experiment) finish(ctx context.Context, res *Result, p *Params) error {
	res.AccA, res.TaskA = Accuracy(p, e.testA, e.allowedA)
	res.AccB, res.TaskB = Accuracy(p, e.testB, e.allowedB)
	l2, err := e.GM.Distance(ctx, res.Path, e.paths.anchor)
	if err != nil {
		return err
	}
	res.L2 = l2
	return nil
}

// mergeRows merges θ_A and the sequentially fine-tuned θ_B over the initialisation,
// with gomerge's task arithmetic and TIES, after training.
func (e *Experiment) mergeRows(ctx context.Context, seqPath string) ([]Result, error) {
	var out []Result
	merge := func(res Result, args ...string) error {
		res.Path = filepath.Join(e.Work, fmt.Sprintf("%s_%g.safetensors", res.Method, res.Value))
		base := []string{"--base", e.paths.init, e.paths.anchor, seqPath}
		method := map[string]string{"task_arithmetic": "task-arithmetic", "ties": "ties"}[res.Method]
		if err := e.GM.Merge(ctx, method, res.Path, append(base, args...)...); err != nil {
			return err
		}
		p := e.anchor.Like()
		if err := Load(res.Path, p); err != nil {
			return err
		}
		if err := e.finish(ctx, &res, p); err != nil {
			return err
		}
		e.Logf("%-28s acc A %.3f  acc B %.3f  L2 %.3f", res.Label(), res.AccA, res.AccB, res.L2)
		out = append(out, res)
		return nil
	}
	for _, l := range e.Cfg.TALambdas {
		if err := merge(Result{Method: "task_arithmetic", Param: "lambda", Value: l}, "--lambda", strconv.FormatFloat(l, 'g', -1, 64)); err != nil {
			return nil, err
		}
	}
	for _, d := range e.Cfg.TIESDensities {
		if err := merge(Result{Method: "ties", Param: "density", Value: d}, "--density", strconv.FormatFloat(d, 'g', -1, 64)); err != nil {
			return nil, err
		}
	}
	return out, nil
}
