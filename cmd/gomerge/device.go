package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/gomerge/gomerge/gpu"
	"github.com/gomerge/gomerge/merge"
)

// deviceFlags are --device and --gpu-min-elems, shared by every merge command, run
// and distance. Which tensors go to the GPU is merge.Device's policy; the flags only
// open the device and set its threshold.
type deviceFlags struct {
	device   string // auto, cpu or cuda
	minElems int64
	// library is the driver library (hidden --gpu-library, default
	// $GOMERGE_GPU_LIBRARY, else libcuda.so.1): tests point it at a fake driver.
	library string
	// light overrides the start-up calibration for 2-operand elementwise merges
	// (hidden --gpu-light auto|gpu|cpu), for tests and for users who measured.
	light string
}

func (f *deviceFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.device, "device", "auto", "where to merge: auto (a CUDA GPU when one is usable, else the CPU), cpu, or cuda (fail without a usable GPU)")
	fl.Int64Var(&f.minElems, "gpu-min-elems", merge.DefaultGPUMinElems,
		"tensors of at least this many elements go to the GPU: TIES, DARE, breadcrumbs, Fisher and merges of 3+ inputs always, 2-input lerp and task arithmetic when a start-up calibration finds the GPU faster")
	fl.StringVar(&f.library, "gpu-library", os.Getenv("GOMERGE_GPU_LIBRARY"), "CUDA driver library to load (default libcuda.so.1)")
	fl.StringVar(&f.light, "gpu-light", "auto", "2-input elementwise merges on the GPU: auto (calibrate), gpu, cpu")
	_ = fl.MarkHidden("gpu-library") // errors only for an unknown flag
	_ = fl.MarkHidden("gpu-light")
}

// deviceSession is the device one command runs with.
type deviceSession struct {
	dev *merge.Device // nil: the CPU only
	// unavailable is why --device auto runs on the CPU: gpu.Open's error.
	unavailable string
}

// open opens the device the flags ask for. --device cuda without a usable GPU is an
// error wrapping gpu.ErrUnavailable, which exits 1 (not 2: the command line is
// right, the machine lacks what it asks for; not 3 or 4: no input or output is at
// fault); --device auto then runs on the CPU and its --json report says why.
func (f *deviceFlags) open() (*deviceSession, error) {
	light := map[string]merge.LightPolicy{"auto": merge.LightAuto, "gpu": merge.LightGPU, "cpu": merge.LightCPU}
	policy, ok := light[f.light]
	if !ok {
		return nil, usagef("--gpu-light %q: want auto, gpu or cpu", f.light)
	}
	if f.minElems < 0 {
		return nil, usagef("--gpu-min-elems %d: must not be negative", f.minElems)
	}
	switch f.device {
	case "cpu":
		return &deviceSession{}, nil
	case "auto", "cuda":
	default:
		return nil, usagef("--device %q: want auto, cpu or cuda", f.device)
	}
	g, err := gpu.OpenWith(gpu.Config{Library: f.library})
	if err != nil {
		if f.device == "cuda" {
			return nil, fmt.Errorf("--device cuda: %w", err)
		}
		return &deviceSession{unavailable: err.Error()}, nil
	}
	return &deviceSession{dev: &merge.Device{GPU: g, MinElems: f.minElems, Light: policy}}, nil
}

// close releases the device. The merge is done and committed by then, so a failure
// here is a warning, not the command's error: the output is complete.
func (s *deviceSession) close(ios *IOStreams) {
	if s == nil || s.dev == nil {
		return
	}
	if err := s.dev.GPU.Close(); err != nil {
		fmt.Fprintf(ios.ErrOut, "gomerge: warning: closing the GPU: %v\n", err)
	}
}

// annotate adds to a report why no GPU ran, when --device auto found none.
func (s *deviceSession) annotate(g **merge.GPUReport) {
	if *g == nil && s.unavailable != "" {
		*g = &merge.GPUReport{Methods: []string{}, Unavailable: s.unavailable}
	}
}
