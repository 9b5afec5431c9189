package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/merge"
	"github.com/gomerge/gomerge/merge/recipe"
)

type runOptions struct {
	out, intermediate, shardSize string
	threads                      int
	dryRun, json                 bool
	deviceFlags
	readsFlags
	resolve func(string) (string, error) // Hugging Face ids
	shardFlags
}

func newRunCmd(ios *IOStreams) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run RECIPE.yaml [--out PATH] [--intermediate-dir DIR] [--dry-run]",
		Short: "Run a mergekit-style recipe, or a pipeline of several merges, from a YAML file",
		Long: `Run a mergekit configuration (merge_method, base_model, models or slices,
parameters with filters and gradients, dtype, out_dtype, tokenizer_source,
chat_template), or a pipeline: several YAML documents separated by ---, each
with a name that later documents use as a model; the one without a name is the
final merge, written to --out. Named steps write to their out: path, or to
--intermediate-dir/NAME. Steps run in dependency order; everything is checked
before the first step runs, and a failing step leaves the outputs of the steps
before it intact. Models are local paths or Hugging Face ids (org/name[@revision]),
resolved through the Hugging Face cache and downloaded into it unless --offline.

A mistake in the recipe exits 3 (bad input) and names the file and line.`,
		Example: `  gomerge run slerp.yaml --out merged
  gomerge run pipeline.yaml --out final --intermediate-dir steps --dry-run
  gomerge run pipeline.yaml --out final --intermediate-dir steps --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("give one recipe file")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.threads < 0 {
				return usagef("--threads %d: must be positive", o.threads)
			}
			reads, err := o.reads()
			if err != nil {
				return err
			}
			job := merge.Job{Exec: merge.ExecOptions{Threads: o.threads}, Reads: reads, Version: versionString()}
			if o.shardSize != "" {
				n, err := parseSize(o.shardSize)
				if err != nil || n <= 0 {
					return usagef("--shard-size %q: want a positive size such as 5GB or 500MB", o.shardSize)
				}
				job.ShardSize = n
			}
			job.OnLockWait = func() {
				fmt.Fprintln(ios.ErrOut, "gomerge: another gomerge is writing to this output; waiting for it to finish")
			}
			if ios.ErrTTY {
				bar := newProgress(ios.ErrOut)
				job.OnStart = bar.start
				job.Exec.Progress = bar.add
			}
			o.resolve = modelResolver(cmd.Context(), cmd, ios)
			if err := o.shardFlags.apply(ios, &job); err != nil {
				return err
			}
			return runRecipe(cmd.Context(), ios, args[0], o, job)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.out, "out", "o", "", "output of the final step: a .safetensors file or a folder (overrides its out:)")
	f.StringVar(&o.intermediate, "intermediate-dir", "", "folder for the outputs of named steps that have no out:")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the plan (steps, inputs, methods, outputs, bytes) and write nothing")
	f.StringVar(&o.shardSize, "shard-size", "", "largest shard of a folder output, e.g. 5GB (default: the reference's layout, else 5GB)")
	f.IntVar(&o.threads, "threads", 0, "worker goroutines (default: GOMAXPROCS)")
	f.BoolVar(&o.json, "json", false, "print the plan or the steps' reports as JSON on stdout")
	o.deviceFlags.register(f)
	o.readsFlags.register(f)
	o.shardFlags.register(f)
	return cmd
}

// runRecipe parses, plans or runs the recipe, and prints what happened.
func runRecipe(ctx context.Context, ios *IOStreams, path string, o runOptions, job merge.Job) error {
	r, err := recipe.Load(path)
	if err != nil {
		return err
	}
	opts := recipe.Options{Out: o.out, IntermediateDir: o.intermediate, Resolve: o.resolve}
	if err := checkShardedRecipe(r, opts, job); err != nil {
		return err
	}
	if o.dryRun {
		plan, err := recipe.PlanRecipe(r, opts)
		if err != nil {
			return err
		}
		if o.json {
			return writeJSON(ios.Out, plan)
		}
		return plan.WriteText(ios.Out)
	}
	dev, err := o.deviceFlags.open()
	if err != nil {
		return err
	}
	defer dev.close(ios)
	job.Exec.Device = dev.dev // one device, and one calibration, for every step
	reps, err := recipe.Run(ctx, r, opts, job)
	if o.json {
		if err != nil {
			return err // run prints the error object
		}
		return writeJSON(ios.Out, struct {
			Recipe string              `json:"recipe"`
			Steps  []recipe.StepReport `json:"steps"`
		}{path, reps})
	}
	for _, rep := range reps {
		name := rep.Step
		if name == "" {
			name = "(final)"
		}
		fmt.Fprintf(ios.Out, "step %s: %s: wrote %s (%d tensors merged, %d copied, %s in %.2fs)\n",
			name, rep.Method, rep.Output, rep.TensorsMerged, rep.TensorsCopied, humanBytes(rep.BytesWritten), rep.Seconds)
	}
	return err
}
