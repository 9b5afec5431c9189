package main

import (
	"context"
	"fmt"
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
	cmd.AddCommand(newLoraApplyCmd(ios))
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
one at a time. A bad adapter (no config, a wrong rank, a shape that does not fit the
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
