package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/merge"
)

// outputFlags are the flags every merge command shares.
type outputFlags struct {
	out          string
	dtype        string
	shardSize    string
	threads      int
	json         bool
	allowMissing bool
	dryRun       bool
	deviceFlags
	readsFlags
	ggufFlags
	shardFlags
}

func (f *outputFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "out", "o", "", "output: a .safetensors file, a folder (Hugging Face layout), or a .gguf file (GGUF inputs)")
	fl.StringVar(&f.dtype, "dtype", "", "dtype of merged float tensors: bf16, f16, f32, f64; for GGUF output also q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k (tensors of 2+ dimensions whose rows fill whole blocks; others F16), or one of llama.cpp's file types q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k (its per-tensor rules) (default: the reference input's)")
	fl.StringVar(&f.shardSize, "shard-size", "", "largest shard of a folder output, e.g. 5GB, 500MB (default: keep the reference's layout, else 5GB)")
	fl.IntVar(&f.threads, "threads", 0, "worker goroutines (default: GOMAXPROCS)")
	fl.BoolVar(&f.json, "json", false, "print a JSON report on stdout")
	fl.BoolVar(&f.allowMissing, "allow-missing", false, "copy tensors that some inputs lack from the reference instead of failing")
	f.deviceFlags.register(fl)
	f.readsFlags.register(fl)
	f.ggufFlags.register(fl)
	f.shardFlags.register(fl)
}

// registerDryRun adds --dry-run, for the commands that handle it (a report with
// DryRun set).
func (f *outputFlags) registerDryRun(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "print what the merge would do (inputs, output tensors and dtypes, bytes to read and write) and the inputs' statistics (as gomerge report); write nothing")
}

// job fills the output side of a merge job from the flags.
func (f *outputFlags) job(ios *IOStreams) (merge.Job, error) {
	var job merge.Job
	if err := f.ggufFlags.apply(&job, f.dtype); err != nil {
		return job, err
	}
	if f.dtype != "" && job.OutOptions.Mix == "" {
		d, err := dtype.ParseFloat(f.dtype)
		if err != nil {
			return job, usagef("--dtype: %v", err)
		}
		job.OutDType = d
	}
	if f.shardSize != "" {
		n, err := parseSize(f.shardSize)
		if err != nil || n <= 0 {
			return job, usagef("--shard-size %q: want a positive size such as 5GB or 500MB", f.shardSize)
		}
		job.ShardSize = n
	}
	if f.threads < 0 {
		return job, usagef("--threads %d: must be positive", f.threads)
	}
	reads, err := f.reads()
	if err != nil {
		return job, err
	}
	job.Reads = reads
	job.Out = f.out
	job.AllowMissing = f.allowMissing
	job.DryRun = f.dryRun
	job.Exec.Threads = f.threads
	job.Version = versionString()
	job.OnLockWait = func() {
		fmt.Fprintln(ios.ErrOut, "gomerge: another gomerge is writing to this folder; waiting for it to finish")
	}
	if ios.ErrTTY {
		bar := newProgress(ios.ErrOut)
		job.OnStart = bar.start
		job.Exec.Progress = bar.add
	}
	return job, f.shardFlags.apply(ios, &job)
}

// parseSize reads 5GB, 500MB, 2GiB, 1e9 or a plain byte count.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"B", 1},
	}
	up := strings.ToUpper(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(up, u.suffix) {
			up, mult = strings.TrimSpace(strings.TrimSuffix(up, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(up, 64)
	if err != nil {
		return 0, err
	}
	if v*mult > 1<<62 {
		return 0, fmt.Errorf("size %s too large", s)
	}
	return int64(v * mult), nil
}

type sfaOptions struct {
	anchor, current, fisher string
	beta, eta               float64
	inPlace                 bool
	keepHistory             string
	outputFlags
}

func newSFACmd(ios *IOStreams) *cobra.Command {
	var o sfaOptions
	cmd := &cobra.Command{
		Use:   "sfa --anchor ANCHOR --current CURRENT [--beta 0.5] (--out PATH | --in-place)",
		Short: "Average the current model toward the anchor: θ = β·θ_anchor + (1−β)·θ_current",
		Long: `Sequential Fine-tuning with Averaging (SFA): replace the weights being trained with
β·θ_anchor + (1−β)·θ_current, where the anchor is the model that finished the previous
task. A trainer calls this every p·T steps ('gomerge sfa schedule' prints them); the
merge at the end of a task becomes the next anchor.

With --fisher (the anchor's diagonal Fisher, same tensor names and shapes) β is per
element, β_j = min(1, η·F_j): the EWC-as-merging form.

--in-place replaces CURRENT's weights atomically: a crash at any point leaves either the
old or the new checkpoint, complete. In a folder, config, tokenizer and trainer state
are kept (hard-linked into the new folder, not copied).`,
		Example: `  # between training segments, in place
  gomerge sfa --anchor math.safetensors --current ckpt/step_400 --beta 0.5 --in-place

  # to a new file, with the distance to the anchor as JSON
  gomerge sfa --anchor base.safetensors --current ft.safetensors --out merged.safetensors --json

  # Fisher-weighted (EWC-like) averaging
  gomerge sfa --anchor a.safetensors --current c.safetensors --fisher a_fisher.safetensors --eta 1e4 --out m.safetensors`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.anchor == "" || o.current == "" {
				return usagef("--anchor and --current are required")
			}
			if (o.out == "") == !o.inPlace {
				return usagef("give exactly one of --out PATH and --in-place")
			}
			if o.fisher != "" && cmd.Flags().Changed("beta") {
				return usagef("--beta and --fisher exclude each other: with --fisher, β_j = min(1, η·F_j)")
			}
			if o.fisher == "" && cmd.Flags().Changed("eta") {
				return usagef("--eta needs --fisher")
			}
			if !(o.beta >= 0 && o.beta <= 1) {
				return usagef("--beta %v: must be in [0, 1]", o.beta)
			}
			if o.fisher != "" && !(o.eta > 0) {
				return usagef("--eta %v: must be positive", o.eta)
			}
			if o.keepHistory != "" {
				if err := checkKeepHistory(&o); err != nil {
					return err
				}
			}
			// --in-place writes CURRENT: never into the Hugging Face cache.
			resolve := modelResolver(cmd.Context(), cmd, ios)
			if err := resolveAll(resolve, &o.anchor); err != nil {
				return err
			}
			if !o.inPlace {
				if err := resolveAll(resolve, &o.current); err != nil {
					return err
				}
			}
			return runSFA(cmd.Context(), ios, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.anchor, "anchor", "", "the anchor checkpoint (the model that finished the previous task)")
	f.StringVar(&o.current, "current", "", "the checkpoint being trained (the reference: its dtypes and layout are kept)")
	f.Float64Var(&o.beta, "beta", 0.5, "weight of the anchor, in [0, 1]")
	f.BoolVar(&o.inPlace, "in-place", false, "replace CURRENT atomically instead of writing --out")
	f.StringVar(&o.fisher, "fisher", "", "the anchor's diagonal Fisher (safetensors, same names and shapes): per-element β")
	f.Float64Var(&o.eta, "eta", 1, "with --fisher: β_j = min(1, eta·F_j)")
	f.StringVar(&o.keepHistory, "keep-history", "", "also store the result in this folder, compressed as a delta against the anchor, numbered in order (NNNNNN.gmz for a file result, NNNNNN for a folder)")
	o.outputFlags.register(cmd)
	o.outputFlags.registerDryRun(cmd)
	cmd.AddCommand(newScheduleCmd(ios))
	return cmd
}

func runSFA(ctx context.Context, ios *IOStreams, o *sfaOptions) error {
	job, err := o.outputFlags.job(ios)
	if err != nil {
		return err
	}
	job.InPlace = o.inPlace
	dev, err := o.deviceFlags.open()
	if err != nil {
		return err
	}
	defer dev.close(ios)
	job.Exec.Device = dev.dev
	if err := pauseForTests(ctx, ios, &job); err != nil {
		return err
	}
	rep, err := merge.RunSFA(ctx, merge.SFAJob{
		Anchor: o.anchor, Current: o.current, Fisher: o.fisher,
		SFA: merge.SFA{Beta: o.beta, Eta: o.eta},
		Job: job,
	})
	if err != nil {
		return err
	}
	if rep.DryRun {
		return printDryRun(ctx, ios, rep, o.anchor, []string{o.current}, &o.outputFlags)
	}
	if o.keepHistory != "" {
		if rep.History, err = keepHistory(ctx, o.keepHistory, rep.Output, o.anchor); err != nil {
			return err
		}
	}
	if o.json {
		return writeJSON(ios.Out, rep)
	}
	fmt.Fprintf(ios.Out, "sfa: wrote %s (%d tensors merged, %d copied, %s in %.2fs)\n",
		rep.Output, rep.TensorsMerged, rep.TensorsCopied, humanBytes(rep.BytesWritten), rep.Seconds)
	if rep.History != "" {
		fmt.Fprintf(ios.Out, "history: %s\n", rep.History)
	}
	fmt.Fprintf(ios.Out, "L2 to anchor: %s before, %s after\n", optional(rep.L2Before), optional(rep.L2After))
	return nil
}

func newScheduleCmd(ios *IOStreams) *cobra.Command {
	var steps int
	var p float64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "schedule --steps T --p P",
		Short: "Print the steps at which a trainer averages: every max(1, floor(P·T)) steps, and at T",
		Example: `  gomerge sfa schedule --steps 1000 --p 0.25
  gomerge sfa schedule --steps 1000 --p 0.1 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("steps") || !cmd.Flags().Changed("p") {
				return usagef("--steps and --p are required")
			}
			s, err := merge.Schedule(steps, p)
			if err != nil {
				return usageError{err}
			}
			if asJSON {
				return writeJSON(ios.Out, s)
			}
			for _, v := range s {
				fmt.Fprintln(ios.Out, v)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&steps, "steps", 0, "steps of training on the task (T)")
	cmd.Flags().Float64Var(&p, "p", 0, "averaging fraction: average every p·T steps, 0 < p ≤ 1")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON array")
	return cmd
}

// historyName matches what --keep-history writes: NNNNNN.gmz for a file result,
// the compressed folder NNNNNN for a folder.
var historyName = regexp.MustCompile(`^([0-9]{6})(\.gmz)?$`)

// checkKeepHistory refuses, before the merge, the results --keep-history cannot store
// as one delta: a compressed output (already coded, not against the anchor), and the
// partial or split outputs of --shard-index and --split-max-*.
func checkKeepHistory(o *sfaOptions) error {
	result := o.out
	if o.inPlace {
		result = o.current
	}
	switch {
	case checkpoint.IsCompressedPath(result) || checkpoint.IsCompressedFolder(result):
		return usagef("--keep-history stores an uncompressed result as a delta against the anchor; %s is compressed", result)
	case o.shardFlags.index != "":
		return usagef("--keep-history stores whole results; with --shard-index this worker writes part of one")
	case o.splitMaxSize != "" || o.splitMaxTensors > 0:
		return usagef("--keep-history stores one file or folder; --split-max-size and --split-max-tensors write several files")
	}
	return nil
}

// keepHistory stores result in dir as the next NNNNNN.gmz (a file result) or NNNNNN
// (a folder, compressed as `compress` does one), a delta against the anchor
// (docs/compression.md#merging-compressed-checkpoints): any point of a run can be
// restored with decompress --against ANCHOR. It returns the path written.
func keepHistory(ctx context.Context, dir, result, anchor string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", &merge.OutputError{Path: dir, Err: err}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", &merge.OutputError{Path: dir, Err: err}
	}
	next := 1
	for _, e := range ents {
		if m := historyName.FindStringSubmatch(e.Name()); m != nil {
			n, _ := strconv.Atoi(m[1])
			next = max(next, n+1)
		}
	}
	out, compress := filepath.Join(dir, fmt.Sprintf("%06d.gmz", next)), checkpoint.Compress
	if st, err := os.Stat(result); err == nil && st.IsDir() {
		out, compress = strings.TrimSuffix(out, ".gmz"), checkpoint.CompressFolder
	}
	if _, err := compress(ctx, result, out, checkpoint.CompressOptions{Against: anchor}); err != nil {
		return "", fmt.Errorf("--keep-history: %w", err)
	}
	return out, nil
}
