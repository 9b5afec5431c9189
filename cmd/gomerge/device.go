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
	// fixedCost is merge.Device.FixedCost (hidden --gpu-fixed-cost): tests on small
	// fixtures set it negative so that --device auto opens and calibrates.
	fixedCost float64
}

func (f *deviceFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.device, "device", "auto", "where to merge: auto (a usable CUDA GPU if the method's kernel, timed on a slice of the largest tensor on both, runs at least 3x faster there than on the CPU, else the CPU), cpu, or cuda (the GPU for every tensor it can take; fail without a usable GPU)")
	fl.Int64Var(&f.minElems, "gpu-min-elems", merge.DefaultGPUMinElems,
		"tensors of fewer elements stay on the CPU")
	fl.StringVar(&f.library, "gpu-library", os.Getenv("GOMERGE_GPU_LIBRARY"), "CUDA driver library to load (default libcuda.so.1)")
	_ = fl.MarkHidden("gpu-library") // errors only for an unknown flag
	fl.Float64Var(&f.fixedCost, "gpu-fixed-cost", 0, "seconds --device auto takes opening and calibrating the GPU to cost (0: the default; negative: none)")
	_ = fl.MarkHidden("gpu-fixed-cost")
}

// deviceSession is the device one command runs with.
type deviceSession struct {
	dev *merge.Device // nil: the CPU only
}

// open opens the device the flags ask for. --device cuda without a usable GPU is an
// error wrapping gpu.ErrUnavailable, which exits 1 (not 2: the command line is
// right, the machine lacks what it asks for; not 3 or 4: no input or output is at
// fault). --device auto opens nothing here: the engine opens the device when a merge
// first has a tensor it could take, and on failure runs on the CPU, its --json report
// saying why (gpu.unavailable).
func (f *deviceFlags) open() (*deviceSession, error) {
	if f.minElems < 0 {
		return nil, usagef("--gpu-min-elems %d: must not be negative", f.minElems)
	}
	open := func() (*gpu.Device, error) { return gpu.OpenWith(gpu.Config{Library: f.library}) }
	switch f.device {
	case "cpu":
		return &deviceSession{}, nil
	case "auto":
		// Opened by the engine when a merge first has a tensor the device could
		// take; a failure then leaves it on the CPU, and its report says why.
		present := func() error { return gpu.DriverLoads(gpu.Config{Library: f.library}) }
		return &deviceSession{dev: &merge.Device{Open: open, Present: present, MinElems: f.minElems, Placement: merge.PlaceMeasured, FixedCost: f.fixedCost}}, nil
	case "cuda":
		g, err := open()
		if err != nil {
			return nil, fmt.Errorf("--device cuda: %w", err)
		}
		return &deviceSession{dev: &merge.Device{GPU: g, MinElems: f.minElems, Placement: merge.PlaceGPU}}, nil
	}
	return nil, usagef("--device %q: want auto, cpu or cuda", f.device)
}

// close releases the device. The merge is done and committed by then, so a failure
// here is a warning, not the command's error: the output is complete.
func (s *deviceSession) close(ios *IOStreams) {
	if s == nil || s.dev == nil || s.dev.GPU == nil {
		return // no device, or --device auto never opened one
	}
	if err := s.dev.GPU.Close(); err != nil {
		fmt.Fprintf(ios.ErrOut, "gomerge: warning: closing the GPU: %v\n", err)
	}
}
