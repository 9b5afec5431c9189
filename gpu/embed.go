package gpu

import _ "embed"

// The PTX is generated from kernels.cu by Debian's clang-14, without the CUDA SDK, and
// committed; TestPTXFresh regenerates it and compares the bytes. -ffp-contract=off
// keeps every multiply and add separately rounded (clang then marks them .rn, which
// ptxas may not fuse), so the kernels give the Go reference's bits; never add
// -ffast-math. sm_80 PTX is JIT-compiled by the driver for any newer GPU.
//
//go:generate clang-14 -x cuda --cuda-device-only --cuda-gpu-arch=sm_80 -nocudainc -nocudalib -S -O3 -ffp-contract=off -o kernels.ptx kernels.cu

//go:embed kernels.ptx
var kernelsPTX string
