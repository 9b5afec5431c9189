//go:build nogpu || !linux || !(amd64 || arm64)

package gpu

import "errors"

// This file replaces cuda.go where gomerge is built without the driver binding: with
// the nogpu tag (a fully static binary, no purego), or on a platform where the CUDA
// driver cannot be loaded this way. Open always fails with ErrUnavailable, so no
// method below is ever reached.

var errNoBinding = errors.New("gpu: built without the CUDA driver binding (nogpu build tag or unsupported platform)")

type backend struct{}

func loadBackend(Config) error                   { return errNoBinding }
func openBackend(Config) (*backend, Info, error) { return nil, Info{}, errNoBinding }

func (*backend) close() error                 { return errNoBinding }
func (*backend) memAlloc(int) (devPtr, error) { return 0, errNoBinding }
func (*backend) memFree(devPtr) error         { return errNoBinding }
func (*backend) hostAlloc(int) ([]byte, error) {
	return nil, errNoBinding
}
func (*backend) hostFree([]byte) error { return errNoBinding }
func (*backend) run(int, []op) error   { return errNoBinding }
func (*backend) sync(int) error        { return errNoBinding }
