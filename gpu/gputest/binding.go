//go:build !nogpu && linux && (amd64 || arm64)

package gputest

// bindingBuilt says whether this build has gpu's purego driver binding (gpu/cuda.go),
// without which no driver, fake or real, can be loaded.
const bindingBuilt = true
