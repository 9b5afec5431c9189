package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/merge"
)

// methodCommands groups the registry's methods by command: the method without a
// CommandSwitch first, then those its boolean flags select (dare --ties). Commands
// the registry marks custom (sfa) are written by hand.
func methodCommands() [][]*merge.Method {
	var groups [][]*merge.Method
	index := map[string]int{}
	for _, m := range merge.Registry() {
		if m.Command == "" || m.CustomCommand {
			continue
		}
		i, ok := index[m.Command]
		if !ok {
			i = len(groups)
			index[m.Command] = i
			groups = append(groups, nil)
		}
		if m.CommandSwitch == "" {
			groups[i] = append([]*merge.Method{m}, groups[i]...)
		} else {
			groups[i] = append(groups[i], m)
		}
	}
	return groups
}

const modelSyntax = `Each model is PATH[:weight=W][:density=D][:fisher=F]; a per-model density overrides --density.
The output takes the reference's tensor order, dtypes and layout (the base, or the first model
when there is no base); see 'gomerge sfa --help' for --out, --dtype and --shard-size.`

// newMethodCmd builds one merge command from its registry entries: group[0] gives the
// command's texts and flags, the others add a boolean flag each that selects them.
func newMethodCmd(ios *IOStreams, group []*merge.Method) *cobra.Command {
	mc := group[0]
	var (
		out      outputFlags
		base     string
		p        merge.Params
		switches = make([]bool, len(group))
	)
	var modelKeys []*merge.Param
	for i := range mc.Params {
		if pr := &mc.Params[i]; pr.PerModel && pr.Flag != "" && pr.IsModelKey() {
			modelKeys = append(modelKeys, pr)
		}
	}
	use := mc.Command
	if mc.Base == merge.BaseOptional {
		use += " [--base BASE]"
	}
	if mc.Base == merge.BaseRequired {
		use += " --base BASE"
	}
	cmd := &cobra.Command{
		Use:     use + " MODEL... --out PATH",
		Short:   mc.Short,
		Long:    mc.Short + ".\n\n" + modelSyntax,
		Example: mc.Example,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("give at least one model")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if out.out == "" {
				return usagef("--out is required")
			}
			if mc.Base == merge.BaseRequired && base == "" {
				return usagef("--base is required")
			}
			models := make([]merge.Model, 0, len(args))
			resolve := modelResolver(cmd.Context(), cmd, ios)
			for _, a := range args {
				m, err := parseModel(a, modelKeys)
				if err != nil {
					return usageError{err}
				}
				if err := resolveAll(resolve, &m.Path); err != nil {
					return err
				}
				models = append(models, m)
			}
			if err := resolveAll(resolve, &base); err != nil {
				return err
			}
			method := mc.Name
			for i, on := range switches {
				if on {
					if method != mc.Name {
						return usagef("--%s and --%s exclude each other", group[i].CommandSwitch, methodSwitch(group, method))
					}
					method = group[i].Name
				}
			}
			job, err := out.job(ios)
			if err != nil {
				return err
			}
			return runMethod(cmd.Context(), ios, merge.MethodJob{Method: method, Base: base, Models: models, Params: p, Job: job}, &out)
		},
	}
	f := cmd.Flags()
	if mc.Base != merge.BaseAbsent {
		f.StringVar(&base, "base", "", "the base model the task vectors are taken from (the reference)")
	}
	for i := range mc.Params {
		pr := &mc.Params[i]
		if pr.Flag == "" || pr.Field(&p) == nil {
			continue
		}
		switch v := pr.Field(&p).(type) {
		case *float64:
			f.Float64Var(v, pr.Flag, pr.Default, pr.Usage)
		case *uint64:
			f.Uint64Var(v, pr.Flag, uint64(pr.Default), pr.Usage)
		case *string:
			f.StringVar(v, pr.Flag, pr.DefaultChoice, pr.Usage)
		case *merge.Switch:
			f.Var(&switchFlag{v: v, def: pr.Default != 0}, pr.Flag, pr.Usage)
			f.Lookup(pr.Flag).NoOptDefVal = "true"
		}
	}
	for i, m := range group[1:] {
		f.BoolVar(&switches[i+1], m.CommandSwitch, false, m.Short)
	}
	out.register(cmd)
	out.registerDryRun(cmd)
	return cmd
}

func methodSwitch(group []*merge.Method, name string) string {
	for _, m := range group {
		if m.Name == name {
			return m.CommandSwitch
		}
	}
	return ""
}

// switchFlag is a boolean flag of a Switch parameter: unset leaves the method's
// default.
type switchFlag struct {
	v   *merge.Switch
	def bool
}

func (s *switchFlag) String() string {
	if s.v == nil || *s.v == merge.SwitchDefault {
		return strconv.FormatBool(s.def)
	}
	return strconv.FormatBool(*s.v == merge.SwitchOn)
}

func (s *switchFlag) Set(v string) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return err
	}
	*s.v = merge.SwitchOff
	if b {
		*s.v = merge.SwitchOn
	}
	return nil
}

func (s *switchFlag) Type() string { return "bool" }

// parseModel reads PATH[:key=value]...; only the keys in allowed (the method's
// per-model parameters) are accepted. Keys are taken from the right, so a path may
// itself contain colons.
func parseModel(arg string, allowed []*merge.Param) (merge.Model, error) {
	m := merge.Model{Weight: 1, Density: math.NaN()}
	parts := strings.Split(arg, ":")
	for len(parts) > 1 {
		last := parts[len(parts)-1]
		key, val, ok := strings.Cut(last, "=")
		if !ok || !isModelKey(key) {
			break
		}
		var pr *merge.Param
		for _, a := range allowed {
			if a.Flag == key {
				pr = a
			}
		}
		if pr == nil {
			return m, fmt.Errorf("model %q: this method takes no %s", arg, key)
		}
		if f := pr.ModelFile(&m); f != nil {
			if val == "" {
				return m, fmt.Errorf("model %q: empty %s path", arg, key)
			}
			*f = val
		} else {
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				return m, fmt.Errorf("model %q: %s %q is not a number", arg, key, val)
			}
			*pr.ModelField(&m) = v
		}
		parts = parts[:len(parts)-1]
	}
	m.Path = strings.Join(parts, ":")
	if m.Path == "" {
		return m, fmt.Errorf("model %q: no path", arg)
	}
	return m, nil
}

// isModelKey says whether key is any method's PATH:key= key, so that a path's own
// "name=value" part is not taken for an unknown key.
func isModelKey(key string) bool {
	for _, m := range merge.Registry() {
		for _, p := range m.Params {
			if p.PerModel && p.Flag == key && p.IsModelKey() {
				return true
			}
		}
	}
	return false
}

func runMethod(ctx context.Context, ios *IOStreams, j merge.MethodJob, out *outputFlags) error {
	dev, err := out.deviceFlags.open()
	if err != nil {
		return err
	}
	defer dev.close(ios)
	j.Job.Exec.Device = dev.dev
	rep, err := merge.RunMethod(ctx, j)
	if err != nil {
		return err
	}
	if rep.DryRun {
		var models []string
		for _, m := range j.Models {
			models = append(models, m.Path)
		}
		return printDryRun(ctx, ios, rep, j.Base, models, out)
	}
	if out.json {
		return writeJSON(ios.Out, rep)
	}
	_, err = fmt.Fprintf(ios.Out, "%s: wrote %s (%d tensors merged, %d copied, %s in %.2fs)\n",
		rep.Method, rep.Output, rep.TensorsMerged, rep.TensorsCopied, humanBytes(rep.BytesWritten), rep.Seconds)
	return err
}
