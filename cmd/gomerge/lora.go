package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/lora"
)

// newLoraCmd groups the LoRA adapter commands (docs/lora.md).
func newLoraCmd(ios *IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lora",
		Short: "Apply, extract and merge LoRA adapters (PEFT folders)",
		Long: `Work with LoRA adapters in PEFT's layout: a folder with adapter_config.json and
adapter_model.safetensors. Recipes and other commands also take BASE+ADAPTER
(mergekit's syntax) wherever they take a model. See docs/lora.md.`,
	}
	cmd.AddCommand(newLoraApplyCmd(ios), newLoraExtractCmd(ios), newLoraMergeCmd(ios))
	return cmd
}

type loraApplyOptions struct {
	base, out, dtype string
	json             bool
}

func newLoraApplyCmd(ios *IOStreams) *cobra.Command {
	var o loraApplyOptions
	cmd := &cobra.Command{
		Use:   "apply --base BASE ADAPTER[:weight=W]... --out OUT",
		Short: "Merge adapters into a model: W + Σ weight·scale·B·A",
		Long: `Apply one or more LoRA adapters to a base model and write the result, as PEFT's
merge_and_unload does: each adapted matrix is W + Σ weight·scale·B·A, with
scale = lora_alpha/r (lora_alpha/√r with use_rslora), the product in float64 and
rounded once to float32, then to the output type. Tensors are computed and written
a few at a time, never the whole model in memory. A bad adapter (no config, a wrong rank, a shape that does not fit the
base, a non-finite scale, DoRA) exits 3 and writes nothing.`,
		Example: `  gomerge lora apply --base Llama-3.2-1B ./my-adapter --out merged
  gomerge lora apply --base base.safetensors a1:weight=0.7 a2:weight=0.3 --out merged.safetensors`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLoraApply(cmd.Context(), ios, &o, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.base, "base", "", "the base model (a .safetensors file or a Hugging Face folder)")
	f.StringVar(&o.out, "out", "", "output: a .safetensors file or a folder")
	f.StringVar(&o.dtype, "dtype", "", "output float type (F32, F16, BF16; default: the base's)")
	f.BoolVar(&o.json, "json", false, "print a JSON report on stdout")
	return cmd
}

// parseAdapterArg splits ADAPTER[:weight=W].
func parseAdapterArg(arg string) (string, float64, error) {
	path, w, ok := strings.Cut(arg, ":weight=")
	if !ok {
		return arg, 1, nil
	}
	v, err := strconv.ParseFloat(w, 64)
	if err != nil || !isFinite(v) {
		return "", 0, usagef("%s: weight %q is not a finite number", arg, w)
	}
	return path, v, nil
}

func isFinite(v float64) bool { return v-v == 0 }

func parseOutDType(s string) (dtype.DType, error) {
	if s == "" {
		return dtype.Invalid, nil
	}
	d, err := dtype.ParseFloat(s)
	if err != nil {
		return dtype.Invalid, usagef("--dtype %s: %v", s, err)
	}
	return d, nil
}

func runLoraApply(ctx context.Context, ios *IOStreams, o *loraApplyOptions, args []string) error {
	if o.base == "" || o.out == "" || len(args) == 0 {
		return usagef("lora apply needs --base, --out and at least one adapter")
	}
	outDType, err := parseOutDType(o.dtype)
	if err != nil {
		return err
	}
	base, err := checkpoint.Open(o.base)
	if err != nil {
		return err
	}
	defer base.Close()
	var ws []lora.Weighted
	defer func() {
		for _, w := range ws {
			w.Adapter.Close()
		}
	}()
	for _, arg := range args {
		path, weight, err := parseAdapterArg(arg)
		if err != nil {
			return err
		}
		a, err := lora.Open(path)
		if err != nil {
			return err
		}
		ws = append(ws, lora.Weighted{Adapter: a, Weight: weight})
	}
	ap, err := lora.NewApplied(o.base+"+"+strings.Join(args, "+"), base, ws)
	if err != nil {
		return err
	}
	rep, err := lora.WriteApplied(ctx, ap, o.out, outDType, func() {
		fmt.Fprintf(ios.ErrOut, "waiting for another gomerge writing %s\n", o.out)
	})
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(ios.Out, rep)
	}
	fmt.Fprintf(ios.Out, "wrote %s: %d tensors, %d adapted, in %.2fs\n", rep.Output, rep.Tensors, rep.TensorsAdapted, rep.Seconds)
	return nil
}

type loraExtractOptions struct {
	base, model, out, dtype string
	include, exclude        string
	rank                    int
	svEpsilon               float64
	embeddings, json        bool
}

func newLoraExtractCmd(ios *IOStreams) *cobra.Command {
	var o loraExtractOptions
	cmd := &cobra.Command{
		Use:   "extract --base BASE --model MODEL --rank R --out ADAPTER",
		Short: "Extract a LoRA adapter from a fine-tune: a truncated SVD of each matrix's delta",
		Long: `Extract a PEFT LoRA adapter that approximates MODEL − BASE, like mergekit-extract-lora:
each changed matrix's delta is factored by a truncated SVD (exact below 512 rows or
columns, randomized above), B = U·√S and A = √S·Vᵀ, with lora_alpha = r so the scale
is 1. --sv-epsilon drops singular values at or under it, lowering that module's rank
(written to rank_pattern). Embeddings are left out unless --embeddings. The report
gives each matrix's relative error ‖ΔW − B·A‖/‖ΔW‖ and the share of ‖ΔW‖² kept.`,
		Example: `  gomerge lora extract --base Llama-3.2-1B --model my-finetune --rank 16 --out my-adapter
  gomerge lora extract --base B --model M --rank 32 --exclude 'mlp' --sv-epsilon 1e-3 --out A --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usagef("lora extract takes flags only; got %q", args)
			}
			return runLoraExtract(cmd.Context(), ios, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.base, "base", "", "the base model")
	f.StringVar(&o.model, "model", "", "the fine-tuned model")
	f.StringVar(&o.out, "out", "", "the adapter folder to write")
	f.IntVar(&o.rank, "rank", 0, "the largest rank of a module (required)")
	f.Float64Var(&o.svEpsilon, "sv-epsilon", 0, "drop singular values at or under this")
	f.BoolVar(&o.embeddings, "embeddings", false, "also extract the token embeddings (lora_embedding_A/B)")
	f.StringVar(&o.include, "include", "", "extract only tensors whose names match this regular expression")
	f.StringVar(&o.exclude, "exclude", "", "leave out tensors whose names match this regular expression")
	f.StringVar(&o.dtype, "dtype", "F32", "type of the factors (F32, F16, BF16)")
	f.BoolVar(&o.json, "json", false, "print a JSON report on stdout")
	return cmd
}

func runLoraExtract(ctx context.Context, ios *IOStreams, o *loraExtractOptions) error {
	if o.base == "" || o.model == "" || o.out == "" {
		return usagef("lora extract needs --base, --model and --out")
	}
	if o.rank < 1 {
		return usagef("--rank %d: must be at least 1", o.rank)
	}
	if !isFinite(o.svEpsilon) || o.svEpsilon < 0 {
		return usagef("--sv-epsilon %v: must be a finite number ≥ 0", o.svEpsilon)
	}
	opts := lora.ExtractOptions{Rank: o.rank, SVEpsilon: o.svEpsilon, Embeddings: o.embeddings}
	var err error
	if opts.DType, err = parseOutDType(o.dtype); err != nil {
		return err
	}
	for _, p := range []struct {
		flag, re string
		dst      **regexp.Regexp
	}{{"--include", o.include, &opts.Include}, {"--exclude", o.exclude, &opts.Exclude}} {
		if p.re == "" {
			continue
		}
		if *p.dst, err = regexp.Compile(p.re); err != nil {
			return usagef("%s %q: %v", p.flag, p.re, err)
		}
	}
	base, err := checkpoint.Open(o.base)
	if err != nil {
		return err
	}
	defer base.Close()
	model, err := checkpoint.Open(o.model)
	if err != nil {
		return err
	}
	defer model.Close()
	rep, err := lora.Extract(ctx, base, model, o.out, opts)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(ios.Out, rep)
	}
	for _, m := range rep.Modules {
		fmt.Fprintf(ios.Out, "%-60s rank %3d  relative error %.4f  energy kept %.4f\n", m.Tensor, m.Rank, m.RelError, m.EnergyKept)
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(ios.Out, "%-60s skipped: %s\n", s.Tensor, s.Reason)
	}
	fmt.Fprintf(ios.Out, "wrote %s: %d modules\n", rep.Output, len(rep.Modules))
	return nil
}

type loraMergeOptions struct {
	out, typ, majority, dtype string
	density                   float64
	svdRank                   int
	seed                      uint64
	json                      bool
}

func newLoraMergeCmd(ios *IOStreams) *cobra.Command {
	var o loraMergeOptions
	cmd := &cobra.Command{
		Use:   "merge ADAPTER[:weight=W]... --type TYPE --out ADAPTER",
		Short: "Merge LoRA adapters into a new adapter (PEFT's add_weighted_adapter)",
		Long: `Merge LoRA adapters into one, with PEFT's add_weighted_adapter combination types:
  cat                  concatenate the ranks: exactly Σ w·scale·B·A (rank Σ r)
  linear               A = Σ √(w·scale)·A, B = Σ √(w·scale)·B (equal ranks, w·scale ≥ 0)
  svd                  Σ w·ΔW, truncated to --svd-rank by an SVD
  ties_svd             TIES (prune to --density, majority sign, disjoint mean), then SVD
  dare_linear_svd      DARE (drop at random, rescale by 1/density), weighted sum, SVD
  dare_ties_svd        DARE, then TIES's sign election, then SVD
  magnitude_prune_svd  prune each ΔW to --density by magnitude, weighted sum, SVD
The output is a PEFT folder with lora_alpha = r (scale 1). Two adapters of the same
shape can also be averaged elementwise by 'gomerge sfa' or a recipe like any checkpoint.`,
		Example: `  gomerge lora merge math:weight=0.6 code:weight=0.4 --type cat --out mixed
  gomerge lora merge a b c --type ties_svd --density 0.5 --svd-rank 16 --out mixed --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLoraMerge(cmd.Context(), ios, &o, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.out, "out", "", "the adapter folder to write")
	f.StringVar(&o.typ, "type", "svd", "combination type: "+strings.Join(lora.CombinationTypes, ", "))
	f.Float64Var(&o.density, "density", 0, "share of each delta kept by the ties, dare and magnitude_prune types, in (0, 1]")
	f.StringVar(&o.majority, "majority-sign-method", "total", "ties: total (the sign of the sum) or frequency (the commoner sign)")
	f.IntVar(&o.svdRank, "svd-rank", 0, "the *_svd types' output rank (default: the largest input rank)")
	f.Uint64Var(&o.seed, "seed", 0, "seed of DARE's random draws")
	f.StringVar(&o.dtype, "dtype", "F32", "type of the factors (F32, F16, BF16)")
	f.BoolVar(&o.json, "json", false, "print a JSON report on stdout")
	return cmd
}

func runLoraMerge(ctx context.Context, ios *IOStreams, o *loraMergeOptions, args []string) error {
	if o.out == "" || len(args) == 0 {
		return usagef("lora merge needs --out and at least one adapter")
	}
	opts := lora.CombineOptions{Type: o.typ, Density: o.density, MajoritySignMethod: o.majority, SVDRank: o.svdRank, Seed: o.seed}
	var err error
	if opts.DType, err = parseOutDType(o.dtype); err != nil {
		return err
	}
	var paths []string
	for _, arg := range args {
		path, w, err := parseAdapterArg(arg)
		if err != nil {
			return err
		}
		paths = append(paths, path)
		opts.Weights = append(opts.Weights, w)
	}
	if err := opts.Validate(len(args)); err != nil {
		return usageError{err}
	}
	var ads []*lora.Adapter
	defer func() {
		for _, a := range ads {
			a.Close()
		}
	}()
	for _, p := range paths {
		a, err := lora.Open(p)
		if err != nil {
			return err
		}
		ads = append(ads, a)
	}
	rep, err := lora.Combine(ctx, ads, o.out, opts)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(ios.Out, rep)
	}
	for _, m := range rep.Modules {
		fmt.Fprintf(ios.Out, "%-60s rank %3d  relative error %.4f\n", m.Tensor, m.Rank, m.RelError)
	}
	fmt.Fprintf(ios.Out, "wrote %s (%s): %d modules\n", rep.Output, rep.Type, len(rep.Modules))
	return nil
}
