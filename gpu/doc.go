// Package gpu will hold gomerge's optional CUDA backend (issue 5). It is empty for now:
// every method runs on the CPU, and the build needs no GPU and no CUDA toolkit.
package gpu
