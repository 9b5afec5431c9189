package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/safetensors"
)

// inspectReport is inspect's --json output.
type inspectReport struct {
	Path     string            `json:"path"`
	Format   string            `json:"format"`
	Files    []inspectFile     `json:"files"`
	Metadata map[string]string `json:"metadata"`
	Tensors  []inspectTensor   `json:"tensors"`
	// DTypes counts tensors by dtype.
	DTypes        map[string]int `json:"dtypes"`
	TotalElements int64          `json:"total_elements"`
	TotalBytes    int64          `json:"total_bytes"`
}

type inspectFile struct {
	Path        string `json:"path"`
	Size        int64  `json:"size"`
	HeaderBytes int64  `json:"header_bytes"`
	Tensors     int    `json:"tensors"`
}

type inspectTensor struct {
	Name   string  `json:"name"`
	DType  string  `json:"dtype"`
	Shape  []int64 `json:"shape"`
	File   string  `json:"file"`
	Offset int64   `json:"offset"`
	Bytes  int64   `json:"bytes"`
}

func newInspectCmd(ios *IOStreams) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect PATH [--json]",
		Short: "List a checkpoint's tensors, dtypes, shapes, shards and metadata (validating it)",
		Example: `  gomerge inspect model.safetensors
  gomerge inspect ckpt/step_400 --json
  gomerge inspect anchor.gmz`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("inspect takes one checkpoint; got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var rep inspectReport
			if err := resolveAll(modelResolver(cmd.Context(), cmd, ios), &args[0]); err != nil {
				return err
			}
			var err error
			if strings.HasSuffix(strings.ToLower(args[0]), ".gguf") {
				rep, err = inspectGGUF(args[0])
			} else if checkpoint.IsCompressedInput(args[0]) {
				rep, err = inspectGMZ(args[0]) // inspect_gmz.go
			} else if checkpoint.IsTorchBin(args[0]) {
				rep, err = inspectTorchBin(args[0]) // inspect_torchbin.go
			} else {
				rep, err = inspectSafetensors(args[0])
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(ios.Out, rep)
			}
			w := tabwriter.NewWriter(ios.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "%s: %s, %d file(s), %d tensors, %d parameters, %s\n",
				rep.Path, rep.Format, len(rep.Files), len(rep.Tensors), rep.TotalElements, humanBytes(rep.TotalBytes))
			for _, k := range slices.Sorted(maps.Keys(rep.DTypes)) {
				fmt.Fprintf(w, "  %s\t%d tensors\n", k, rep.DTypes[k])
			}
			for _, k := range slices.Sorted(maps.Keys(rep.Metadata)) {
				fmt.Fprintf(w, "  metadata %s\t%s\n", k, rep.Metadata[k])
			}
			fmt.Fprintln(w, "\ntensor\tdtype\tshape\tbytes\tfile")
			for _, t := range rep.Tensors {
				fmt.Fprintf(w, "%s\t%s\t%v\t%d\t%s\n", t.Name, t.DType, t.Shape, t.Bytes, t.File)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON report on stdout")
	return cmd
}

func inspectSafetensors(path string) (inspectReport, error) {
	c, err := safetensors.OpenCheckpoint(path)
	if err != nil {
		return inspectReport{}, err
	}
	defer c.Close()
	rep := inspectReport{Path: path, Format: "safetensors", Metadata: c.Metadata, DTypes: map[string]int{}}
	for _, s := range c.Shards {
		rep.Files = append(rep.Files, inspectFile{Path: s.Path, Size: s.File.Size(), HeaderBytes: s.File.HeaderSize(), Tensors: len(s.File.Tensors)})
	}
	for _, t := range c.Tensors() {
		rep.add(inspectTensor{Name: t.Name, DType: t.DType.String(), Shape: t.Shape, File: c.FileOf(t), Offset: t.Begin, Bytes: t.Size()}, t.NumElements())
	}
	return rep, nil
}

// inspectGGUF reports a GGUF file: its metadata rendered as text (arrays longer than
// a few elements, such as a vocabulary, as a count and element type) and its tensors
// with their ggml types.
func inspectGGUF(path string) (inspectReport, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return inspectReport{}, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	return ggufReport(path, f), nil
}

// ggufReport is inspect's report of a GGUF file's header (f need not hold the data:
// a compressed GGUF file's is parsed on its own).
func ggufReport(path string, f *gguf.File) inspectReport {
	rep := inspectReport{Path: path, Format: fmt.Sprintf("gguf v%d", f.Version()), Metadata: map[string]string{}, DTypes: map[string]int{}}
	rep.Files = []inspectFile{{Path: path, Size: f.Size(), HeaderBytes: f.DataOffset(), Tensors: len(f.Tensors())}}
	for _, kv := range f.Metadata() {
		v := kv.Value
		switch {
		case v.Type == gguf.ValueArray && v.Len() > 8:
			rep.Metadata[kv.Key] = fmt.Sprintf("[%d × %v]", v.Len(), v.Elem)
		default:
			rep.Metadata[kv.Key] = fmt.Sprint(v.Data)
		}
	}
	for _, t := range f.Tensors() {
		rep.add(inspectTensor{Name: t.Name, DType: t.Type.String(), Shape: t.Shape, File: path, Offset: t.Begin, Bytes: t.Size}, t.NumElements())
	}
	return rep
}

func (r *inspectReport) add(t inspectTensor, elems int64) {
	r.Tensors = append(r.Tensors, t)
	r.DTypes[t.DType]++
	r.TotalElements += elems
	r.TotalBytes += t.Bytes
}
