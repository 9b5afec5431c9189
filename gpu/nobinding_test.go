//go:build nogpu || !linux || !(amd64 || arm64)

package gpu_test

import (
	"errors"
	"testing"

	"github.com/gomerge/gomerge/gpu"
)

const bindingBuilt = false

// TestNoBinding: without the binding, Open fails with ErrUnavailable and the caller
// runs on the CPU.
func TestNoBinding(t *testing.T) {
	if _, err := gpu.Open(); !errors.Is(err, gpu.ErrUnavailable) {
		t.Fatalf("Open: %v, want ErrUnavailable", err)
	}
	if gpu.Available() {
		t.Fatal("Available without the binding")
	}
}
