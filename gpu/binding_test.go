//go:build !nogpu && linux && (amd64 || arm64)

package gpu_test

// bindingBuilt says whether this build has the purego driver binding (cuda.go).
const bindingBuilt = true
