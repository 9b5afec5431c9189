//go:build 386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm

package dtype

// nativeLittleEndian says that the host stores numbers as the checkpoint formats do,
// so that aligned byte slices can be read as []uint16 or []float32 in place.
const nativeLittleEndian = true
