package main

import (
	"errors"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/torchbin"
)

// inspectTorchBin reports a torch.save checkpoint (a file, or a folder of shards):
// each tensor with its file offset and contiguous size. It opens the checkpoint as a
// merge would (every check included), then each file for its layout.
func inspectTorchBin(path string) (rep inspectReport, err error) {
	src, err := checkpoint.Open(path)
	if err != nil {
		return inspectReport{}, err
	}
	defer func() { err = errors.Join(err, src.Close()) }()
	rep = inspectReport{Path: path, Format: "pytorch (torch.save zip)", Metadata: map[string]string{}, DTypes: map[string]int{}}
	files := map[string]*torchbin.File{}
	defer func() {
		for _, f := range files {
			err = errors.Join(err, f.Close())
		}
	}()
	for _, t := range src.Tensors() {
		f, ok := files[t.File]
		if !ok {
			if f, err = torchbin.Open(t.File); err != nil {
				return inspectReport{}, err
			}
			files[t.File] = f
			rep.Files = append(rep.Files, inspectFile{Path: t.File, Size: f.Size(), Tensors: len(f.Tensors)})
		}
		ti, ok := f.Tensor(t.Name)
		if !ok {
			return inspectReport{}, errors.New(t.File + ": tensor " + t.Name + " vanished") // the file changed between the opens
		}
		rep.add(inspectTensor{Name: t.Name, DType: t.DType.String(), Shape: t.Shape, File: t.File, Offset: ti.Begin(), Bytes: ti.Size()}, t.NumElements())
	}
	return rep, nil
}
