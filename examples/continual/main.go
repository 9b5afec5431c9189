// Command continual reproduces the central experiment of "Soup to go: mitigating
// forgetting during continual learning with model averaging" (Kleiman et al., 2025) on
// Fashion-MNIST, with gomerge doing every merge.
//
// An MLP (784-256-256, then one head) is trained by hand-written SGD on task A (even
// labels), then on task B (odd labels), in two settings: class-incremental (one 10-way
// head) and domain-incremental (one shared 5-way head, label k as output ⌊k/2⌋); and in
// each, in several ways: plainly (sequential
// fine-tuning), with SFA (the trainer saves a safetensors checkpoint and execs
// `gomerge sfa --in-place` at every step of `gomerge sfa schedule`), with L2 and EWC
// penalties, with Fisher-weighted SFA, on both tasks (multitask), with a rehearsal
// buffer, and by merging the A and B models with `gomerge task-arithmetic` and
// `gomerge ties`. Every row's L2 distance to θ_A comes from `gomerge distance`.
//
//	cd examples/continual && go run . -out .
//
// writes results.csv, results.md, plane.png, plane_task_aware.png and l2.png into -out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "continual:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("continual", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		dataDir = fs.String("data", DefaultDataDir, "folder with Fashion-MNIST's four .gz IDX files")
		outDir  = fs.String("out", ".", "folder for results.csv, results.md and the plots")
		gmBin   = fs.String("gomerge", "", "gomerge binary (default: build it from this module)")
		work    = fs.String("work", "", "folder for checkpoints (default: a temporary folder, removed afterwards)")
		reduced = fs.Bool("reduced", false, "run the reduced configuration the CI test runs")
		workers = fs.Int("workers", 0, "rows trained at once (default: the configuration's)")
		seed    = fs.Uint64("seed", 0, "override the configuration's seed (0: keep it)")
		stepsA  = fs.Int("steps-a", 0, "override the steps on task A")
		stepsB  = fs.Int("steps-b", 0, "override the steps on task B (T)")
		batch   = fs.Int("batch", 0, "override the minibatch size")
		hidden  = fs.Int("hidden", 0, "override the width of both hidden layers")
		replot  = fs.String("replot", "", "redraw the report from this results.csv instead of training")
		setting = fs.String("settings", "class,domain", "the settings to run, comma-separated: class (10-way head), domain (shared 5-way head)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := FullConfig()
	if *reduced {
		cfg = ReducedConfig()
	}
	if *workers > 0 {
		cfg.Workers = *workers
	}
	if *seed != 0 {
		cfg.Seed = *seed
	}
	settings, err := ParseSettings(*setting)
	if err != nil {
		return err
	}
	cfg.Settings = settings
	for _, o := range []struct{ flag, dst *int }{{stepsA, &cfg.StepsA}, {stepsB, &cfg.StepsB}, {batch, &cfg.Batch}} {
		if *o.flag > 0 {
			*o.dst = *o.flag
		}
	}
	if *hidden > 0 {
		cfg.Sizes = []int{cfg.Sizes[0], *hidden, *hidden, cfg.Sizes[len(cfg.Sizes)-1]}
	}
	logger := log.New(stderr, "", log.Ltime)
	if *replot != "" {
		results, err := ReadCSV(*replot)
		if err != nil {
			return err
		}
		return WriteReport(*outDir, cfg, results)
	}
	if *work == "" {
		dir, err := os.MkdirTemp("", "gomerge-continual-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*work = dir
	} else if err := os.MkdirAll(*work, 0o755); err != nil {
		return err
	}
	if *gmBin == "" {
		*gmBin = filepath.Join(*work, "gomerge")
		logger.Printf("building gomerge into %s", *gmBin)
		if err := BuildGomerge(ctx, *gmBin); err != nil {
			return err
		}
	}
	start := time.Now()
	data, err := LoadFashionMNIST(*dataDir, cfg.TrainImages, cfg.TestImages)
	if err != nil {
		return fmt.Errorf("%w (Debian and Ubuntu: apt-get install dataset-fashion-mnist)", err)
	}
	results, err := RunSettings(ctx, cfg, data, &Gomerge{Bin: *gmBin}, *work, logger.Printf)
	if err != nil {
		return err
	}
	wall := time.Since(start)
	if err := WriteReport(*outDir, cfg, results); err != nil {
		return err
	}
	logger.Printf("done in %s; wrote %s", wall.Round(time.Second), *outDir)
	return nil
}

// BuildGomerge builds the gomerge command of the repository this example sits in
// into out. The example is a module of its own (so that the root module does not
// depend on its plotting packages) that reaches the root through a replace directive;
// `go list -m` resolves that directive, and the build runs in the root module, with
// the root's own go.sum.
func BuildGomerge(ctx context.Context, out string) error {
	out, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	list := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/gomerge/gomerge")
	list.Dir = sourceDir()
	dir, err := list.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w\n%s", err, ee.Stderr)
		}
		return fmt.Errorf("finding the gomerge module (run from examples/continual): %w", err)
	}
	root := strings.TrimSpace(string(dir))
	if root == "" {
		return fmt.Errorf("go list found no folder for the gomerge module (is the replace directive in go.mod?)")
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/gomerge")
	cmd.Dir = root
	msg, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build gomerge in %s: %w\n%s", root, err, msg)
	}
	return nil
}

// sourceDir is this example's module folder when the binary was built from source here
// (go run, go test), so that gomerge is found whatever the working folder; otherwise ""
// (the working folder).
func sourceDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	dir := filepath.Dir(file)
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return ""
	}
	return dir
}
