package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/imatrix"
	"github.com/gomerge/gomerge/merge"
)

// ggufFlags are the GGUF output's per-tensor types and metadata overrides, shared by
// every merge command (docs/kquants.md).
type ggufFlags struct {
	tensorTypes     []string
	overrideKV      []string
	splitMaxSize    string
	splitMaxTensors int
	imatrix         string
}

func (f *ggufFlags) register(fl *pflag.FlagSet) {
	fl.StringArrayVar(&f.tensorTypes, "tensor-type", nil, "GGUF output: REGEX=TYPE gives the tensors whose names REGEX matches (searched, RE2) the type TYPE; repeatable, the first match wins, before --dtype's rules")
	fl.StringArrayVar(&f.overrideKV, "override-kv", nil, "GGUF output: KEY=TYPE:VALUE sets a metadata key, TYPE one of int, float, bool, str (llama.cpp's syntax); repeatable")
	fl.StringVar(&f.splitMaxSize, "split-max-size", "", "GGUF output: split it into files of at most this much tensor data, e.g. 2GB, named NAME-00001-of-0000N.gguf as llama.cpp's gguf-split names them")
	fl.IntVar(&f.splitMaxTensors, "split-max-tensors", 0, "GGUF output: split it into files of at most this many tensors")
	fl.StringVar(&f.imatrix, "imatrix", "", "GGUF output: llama.cpp's importance matrix (llama-imatrix's .gguf or legacy .dat) to quantize the K-quant tensors it covers with, as llama-quantize --imatrix does")
}

// apply fills the job's GGUF options. A --dtype that names one of llama.cpp's file
// types (Q4_K_M, …; Q2_K and Q6_K included) asks for that mix rather than one type.
func (f *ggufFlags) apply(job *merge.Job, dtypeFlag string) error {
	if m, ok := gguf.ParseMix(dtypeFlag); ok {
		job.OutOptions.Mix = m.Name
	}
	if f.splitMaxSize != "" {
		n, err := parseSize(f.splitMaxSize)
		if err != nil || n <= 0 {
			return usagef("--split-max-size %q: want a positive size such as 2GB or 500MB", f.splitMaxSize)
		}
		job.OutOptions.SplitMaxSize = n
	}
	if f.splitMaxTensors < 0 {
		return usagef("--split-max-tensors %d: must be positive", f.splitMaxTensors)
	}
	job.OutOptions.SplitMaxTensors = f.splitMaxTensors
	for _, s := range f.tensorTypes {
		r, err := checkpoint.ParseTensorType(s)
		if err != nil {
			return usagef("--tensor-type %v", err)
		}
		job.OutOptions.TensorTypes = append(job.OutOptions.TensorTypes, r)
	}
	if f.imatrix != "" {
		m, err := imatrix.Read(f.imatrix)
		if err != nil {
			return fmt.Errorf("--imatrix: %w", err)
		}
		job.OutOptions.Imatrix = m
	}
	for _, s := range f.overrideKV {
		o, err := checkpoint.ParseKVOverride(s)
		if err != nil {
			return usagef("--override-kv %v", err)
		}
		job.OutOptions.OverrideKV = append(job.OutOptions.OverrideKV, o)
	}
	return nil
}
