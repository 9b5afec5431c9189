// Package gpu is gomerge's optional CUDA backend: the merge kernels of package merge,
// ported line by line to CUDA, and a driver binding that needs neither cgo nor the
// CUDA toolkit.
//
// # How it is built
//
// The kernels live in kernels.cu, compiled to PTX by clang-14 without the CUDA SDK
// (see the go:generate line in embed.go) and embedded in the binary; the driver JIT-
// compiles the PTX for whatever GPU it finds (sm_80 or newer). The driver itself,
// libcuda.so.1, is loaded at run time with github.com/ebitengine/purego, so the
// package builds with CGO_ENABLED=0 and the binary runs, on the CPU, where no driver
// is installed. Importing purego makes the executable dynamically linked (it needs the
// system's dynamic loader to dlopen the driver); build with the nogpu tag for a fully
// static binary in which Open always fails with ErrUnavailable.
//
// # Numerics
//
// Every elementwise kernel gives the same bits as the pure-Go reference in package
// merge: products and sums are rounded separately, in the reference's order, and
// nothing uses fused multiply-add, flush-to-zero or approximate division (a test
// lints the PTX for them). The one difference allowed is a NaN's payload and sign:
// GPU arithmetic returns its canonical NaN where the CPU propagates an input's payload,
// so a NaN result is a NaN on both, perhaps with other bits. Reductions (the SFA and
// distance statistics, DARE's L1 norms) reproduce the CPU engine's order of addition
// per 65,536-element block too, so their per-block partial sums are also the same
// bits (tests check it); TIES's k-th magnitude is found by the same histogram select
// as the CPU's, with integer counts, so the trimming is identical.
//
// # Use
//
// Open loads the driver and takes the device's primary context; a missing driver, no
// device, or a failing cuInit gives an error wrapping ErrUnavailable, and the caller
// runs on the CPU. A Device's methods take whole tensors as encoded host bytes (a
// memory-mapped file is fine) and stream them through pinned staging buffers on two
// CUDA streams, so that copying one chunk overlaps the kernels of the previous one.
// Every driver call runs on one goroutine locked to its OS thread, where the context
// is current. See README.md in this directory for the design and how to check it on
// a GPU machine.
package gpu
