package main

import (
	"github.com/spf13/pflag"

	"github.com/gomerge/gomerge/checkpoint"
)

// readsFlags is --input-reads, shared by every merge command, run and distance: how
// the engine reads the safetensors inputs it maps (checkpoint.Reads).
type readsFlags struct {
	inputReads string
}

func (f *readsFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.inputReads, "input-reads", "auto", "how safetensors inputs are read: map (through their memory mapping), copy (pread into reused buffers), or auto (copy files on tmpfs, and all of them when timing a few pages of one finds the mapping's first touch over twice a copy's cost, as on VMs that trap every page; else map)")
}

// reads is the flag's policy; a name it does not know is a usage error.
func (f *readsFlags) reads() (checkpoint.Reads, error) {
	r, err := checkpoint.ParseReads(f.inputReads)
	if err != nil {
		return r, usagef("--input-reads %v", err)
	}
	return r, nil
}
