package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gmz"
)

// inspectGMZ reports a compressed checkpoint (docs/compression.md): a .gmz file or a
// compressed folder, with the tensors of the checkpoint it was made from (offsets
// are in that source file) and each file's compressed size. Opening checks each
// file's header and the layout of its frames; frames are not decoded.
func inspectGMZ(path string) (inspectReport, error) {
	paths := []string{path}
	if checkpoint.IsCompressedFolder(path) {
		gz, _, err := checkpoint.CompressedShards(path)
		if err != nil {
			return inspectReport{}, err
		}
		paths = paths[:0]
		for _, n := range gz {
			paths = append(paths, filepath.Join(path, n))
		}
	}
	rep := inspectReport{Path: path, Metadata: map[string]string{}, DTypes: map[string]int{}}
	var formats []string
	for _, p := range paths {
		f, err := gmz.Open(p)
		if err != nil {
			return inspectReport{}, gmzError(p, err)
		}
		desc := "gmz of " + f.Source.Format
		if f.Reference != "" {
			desc += ", delta against " + f.Reference
		}
		if f.Source.Format == "gguf" && len(paths) == 1 {
			// The GGUF file's own header, metadata and tensor infos, as inspect
			// shows a GGUF file's.
			g, err := gguf.ParseHeader(f.Source.Header, f.Source.Size)
			f.Close()
			if err != nil {
				return inspectReport{}, gmzError(p, fmt.Errorf("%w: the GGUF header it holds: %w", gmz.ErrFormat, err))
			}
			rep := ggufReport(p, g)
			rep.Format = "gmz of " + rep.Format + strings.TrimPrefix(desc, "gmz of gguf")
			rep.Files[0].Size = f.Size()
			return rep, nil
		}
		if !strings.Contains(strings.Join(formats, "; "), desc) {
			formats = append(formats, desc)
		}
		for k, v := range f.Metadata {
			rep.Metadata[k] = v
		}
		rep.Files = append(rep.Files, inspectFile{Path: p, Size: f.Size(), HeaderBytes: int64(len(f.Source.Header)), Tensors: len(f.Tensors)})
		for i := range f.Tensors {
			t := &f.Tensors[i]
			n := int64(1)
			for _, d := range t.Shape {
				n *= d
			}
			rep.add(inspectTensor{Name: t.Name, DType: t.DType.String(), Shape: t.Shape, File: p, Offset: t.Offset, Bytes: t.Size}, n)
		}
		if err := f.Close(); err != nil {
			return inspectReport{}, fmt.Errorf("%s: %w", p, err)
		}
	}
	rep.Format = strings.Join(formats, "; ")
	return rep, nil
}
