package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/spf13/pflag"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
	"github.com/gomerge/gomerge/merge"
)

// notMethods are the root's commands that are not merges.
var notMethods = []string{"distance", "report", "inspect", "version", "run", "compress", "decompress", "download", "lora", "finalize", "help", "completion"}

// TestCommandsFromRegistry: every merge command of the CLI is a registry method's
// command and every registry command exists; each flag of a method command is a
// registry parameter with the registry's default, --base, a method switch or a
// shared output flag, so no command has a hand-made flag or default.
func TestCommandsFromRegistry(t *testing.T) {
	root := newRootCmd(&IOStreams{Out: new(bytes.Buffer), ErrOut: new(bytes.Buffer)}, &runState{})
	byCommand := map[string][]*merge.Method{}
	for _, m := range merge.Registry() {
		if m.Command != "" {
			byCommand[m.Command] = append(byCommand[m.Command], m)
		}
	}
	shared := newMethodCmd(&IOStreams{}, []*merge.Method{{Name: "x", Command: "x"}}).Flags()
	seen := map[string]bool{}
	for _, c := range root.Commands() {
		name := c.Name()
		if slices.Contains(notMethods, name) {
			continue
		}
		ms := byCommand[name]
		if len(ms) == 0 {
			t.Errorf("command %s is not in the registry", name)
			continue
		}
		seen[name] = true
		if ms[0].CustomCommand {
			continue
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if shared.Lookup(f.Name) != nil && f.Name != "base" {
				return
			}
			if f.Name == "base" {
				if ms[0].Base == merge.BaseAbsent {
					t.Errorf("%s: --base on a method without a base", name)
				}
				return
			}
			for _, m := range ms {
				if m.CommandSwitch == f.Name {
					return
				}
				for i := range m.Params {
					p := &m.Params[i]
					if p.Flag != f.Name || p.Field(&merge.Params{}) == nil {
						continue
					}
					want := strconv.FormatFloat(p.Default, 'g', -1, 64)
					switch p.Kind {
					case merge.Seed:
						want = strconv.FormatUint(uint64(p.Default), 10)
					case merge.Choice:
						want = p.DefaultChoice
					case merge.Bool:
						want = strconv.FormatBool(p.Default != 0)
					}
					if f.DefValue != want {
						t.Errorf("%s --%s: default %q, the registry's %q", name, f.Name, f.DefValue, want)
					}
					return
				}
			}
			t.Errorf("%s --%s: not a registry parameter", name, f.Name)
		})
	}
	for name := range byCommand {
		if !seen[name] {
			t.Errorf("registry command %s is not on the command line", name)
		}
	}
}

// nonDefault is a valid value of p other than its command-line default and those
// in avoid.
func nonDefault(t *testing.T, p *merge.Param, avoid ...string) string {
	switch p.Kind {
	case merge.Seed:
		return strconv.FormatUint(uint64(p.Default)+7, 10)
	case merge.Bool:
		return strconv.FormatBool(p.Default == 0)
	case merge.Choice:
		for _, c := range p.Choices {
			if c != p.DefaultChoice {
				return c
			}
		}
	case merge.Number:
		for _, v := range []float64{0.35, 0.7, 0.05} {
			s := strconv.FormatFloat(v, 'g', -1, 64)
			if v != p.Default && p.Check(v) == nil && !slices.Contains(avoid, s) {
				return s
			}
		}
	}
	t.Fatalf("no non-default value for %s", p.Name)
	return ""
}

// flagValues are non-default values, by method/parameter, for parameters whose effect
// the fixture shows only at particular values: a single Karcher step (the mean takes
// more), and a RAM threshold below the perturbations (so entries count, and some only
// for one model).
var flagValues = map[string]string{
	"karcher/max_iter": "1", "karcher/tol": "1e-9",
	"ram/epsilon": "1e-4", "ramplus_tl/epsilon": "1e-4",
}

// insensitiveFlags are parameters no single fixture shows beside the others: karcher's
// tol acts only where the iteration converges, or a model's norm or angle is below it,
// which a step count low enough to show max_iter rules out. The byte comparison with
// the library still covers their routing.
var insensitiveFlags = map[string]bool{"karcher/tol": true}

// TestCommandsMatchLibrary runs every merge command with a non-default value for
// every flag and per-model key it takes and compares the output, byte for byte, with
// merge.RunMethod given the same values through the registry: a flag the command
// ignored or misrouted would differ. Each value is checked to matter: the library's
// output with that one value at its default differs.
func TestCommandsMatchLibrary(t *testing.T) {
	dir := t.TempDir()
	base := stt.Random(stt.TinyLlama, dtype.BF16, 5)
	basePath := filepath.Join(dir, "base.safetensors")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(stt.WriteFile(basePath, base, nil))
	var models, fishers []string
	for i := range 3 {
		m := stt.Perturb(base, 0.5, uint64(50+i))
		models = append(models, filepath.Join(dir, fmt.Sprintf("m%d.safetensors", i)))
		fishers = append(fishers, filepath.Join(dir, fmt.Sprintf("f%d.safetensors", i)))
		must(stt.WriteFile(models[i], m, nil))
		must(stt.WriteFile(fishers[i], stt.Fisher(m, 1e-3, uint64(60+i)), nil))
	}
	ctx := context.Background()
	for _, m := range merge.Registry() {
		if m.Command == "" || m.CustomCommand {
			continue
		}
		t.Run(m.Name, func(t *testing.T) {
			n := 3
			if m.MaxModels > 0 {
				n = m.MaxModels
			}
			args := []string{m.Command}
			if m.CommandSwitch != "" {
				args = append(args, "--"+m.CommandSwitch)
			}
			job := merge.MethodJob{Method: m.Name}
			if m.Base == merge.BaseRequired {
				args = append(args, "--base", basePath)
				job.Base = basePath
			}
			// The library's job: every method-wide parameter at its command-line
			// default, then the non-default values.
			var flagged []*merge.Param
			for i := range m.Params {
				p := &m.Params[i]
				switch f := p.Field(&job.Params).(type) {
				case *string:
					*f = p.DefaultChoice
				case nil:
				default:
					p.SetParams(&job.Params, p.Default)
				}
				if p.Flag != "" && p.Field(&job.Params) != nil {
					flagged = append(flagged, p)
				}
			}
			set := func(j *merge.MethodJob, p *merge.Param, v string) {
				if p.Kind == merge.Choice {
					p.SetChoice(&j.Params, v)
					return
				}
				if p.Kind == merge.Bool {
					b, err := strconv.ParseBool(v)
					must(err)
					f := 0.0
					if b {
						f = 1
					}
					p.SetParams(&j.Params, f)
					return
				}
				f, err := strconv.ParseFloat(v, 64)
				must(err)
				p.SetParams(&j.Params, f)
			}
			var values []string
			for _, p := range flagged {
				v := nonDefault(t, p)
				if p.Name == "epsilon" && p.Kind == merge.Number && p.PerModel {
					// della refuses density ± ε outside (0, 1): beside this test's
					// densities (0.35, 0.7), ε must be small.
					v = "0.05"
				}
				if fv, ok := flagValues[m.Name+"/"+p.Name]; ok {
					v = fv
				}
				values = append(values, v)
				args = append(args, "--"+p.Flag+"="+v) // one word: a bool flag takes no separate value
				set(&job, p, v)
			}
			// Per-model keys: a non-default value on one model each.
			var keys []*merge.Param
			for i := range m.Params {
				if p := &m.Params[i]; p.Flag != "" && p.IsModelKey() {
					keys = append(keys, p)
				}
			}
			for i := range n {
				mm := merge.Model{Path: models[i], Weight: 1, Density: math.NaN()}
				arg := models[i]
				for k, p := range keys {
					if f := p.ModelFile(&mm); f != nil {
						*f = fishers[i]
						arg += ":" + p.Flag + "=" + fishers[i]
						continue
					}
					if k%n == i%n || n == 1 {
						// Other than --density's, which a model without its own takes.
						v := nonDefault(t, p, values...)
						f, _ := strconv.ParseFloat(v, 64)
						*p.ModelField(&mm) = f
						arg += ":" + p.Flag + "=" + v
					}
				}
				args = append(args, arg)
				job.Models = append(job.Models, mm)
			}
			cliOut := filepath.Join(dir, m.Name+".cli.safetensors")
			code, _, stderr := gomerge(t, append(args, "--out", cliOut, "--threads", "2")...)
			if code != 0 {
				t.Fatalf("%v: exit %d: %s", args, code, stderr)
			}
			lib := func(name string, j merge.MethodJob) []byte {
				j.Job = merge.Job{Out: filepath.Join(dir, m.Name+"."+name+".safetensors"), Version: versionString(), Exec: merge.ExecOptions{Threads: 2}}
				if _, err := merge.RunMethod(ctx, j); err != nil {
					t.Fatalf("library (%s): %v", name, err)
				}
				b, err := os.ReadFile(j.Job.Out)
				must(err)
				return b
			}
			want := lib("lib", job)
			got, err := os.ReadFile(cliOut)
			must(err)
			if !bytes.Equal(got, want) {
				t.Fatalf("%v: the command's output differs from the library's on the same job", args)
			}
			// Each value matters: at its default, the library writes other tensors
			// (the provenance alone would differ anyway, so compare the tensors).
			wantTensors := tensorBytes(t, filepath.Join(dir, m.Name+".lib.safetensors"))
			for k, p := range flagged {
				j := job
				j.Models = slices.Clone(job.Models)
				switch p.Kind {
				case merge.Choice:
					p.SetChoice(&j.Params, p.DefaultChoice)
				default:
					p.SetParams(&j.Params, p.Default)
				}
				lib("default-"+p.Name, j)
				if bytes.Equal(tensorBytes(t, filepath.Join(dir, m.Name+".default-"+p.Name+".safetensors")), wantTensors) && !insensitiveFlags[m.Name+"/"+p.Name] {
					t.Errorf("--%s %s changes nothing on this fixture: the test could not see it ignored", p.Flag, values[k])
				}
			}
			for k, p := range keys {
				if p.ModelField(&merge.Model{}) == nil {
					continue
				}
				j := job
				j.Models = slices.Clone(job.Models)
				i := k % n
				if n == 1 {
					i = 0
				}
				*p.ModelField(&j.Models[i]) = map[string]float64{"weight": 1, "density": math.NaN()}[p.Name]
				lib("model-"+p.Name, j)
				if bytes.Equal(tensorBytes(t, filepath.Join(dir, m.Name+".model-"+p.Name+".safetensors")), wantTensors) {
					t.Errorf(":%s= changes nothing on this fixture: the test could not see it ignored", p.Flag)
				}
			}
		})
	}
}

// tensorBytes is a safetensors file's data section (its tensors, without the header).
func tensorBytes(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := int(uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24)
	return b[8+n:]
}
