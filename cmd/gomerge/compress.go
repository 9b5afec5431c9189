package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/gmz"
	"github.com/gomerge/gomerge/internal/atomicout"
	"github.com/gomerge/gomerge/merge"
)

type compressOptions struct {
	in, out   string
	against   string
	frameSize int
	threads   int
	json      bool
	stats     bool
}

// compressReport is compress's and decompress's --json output.
type compressReport struct {
	Input  string `json:"input"`
	Output string `json:"output"`
	// Outputs lists the files written when they are not Output alone: the parts of a
	// split GGUF model (Output is then the first).
	Outputs  []string `json:"outputs,omitempty"`
	Against  string   `json:"against,omitempty"`
	InBytes  int64    `json:"in_bytes"`
	OutBytes int64    `json:"out_bytes"`
	Ratio    float64  `json:"ratio"` // the uncompressed size over the compressed size
	Seconds  float64  `json:"seconds"`
	// DeltaTensors counts the tensors coded against --against.
	DeltaTensors int `json:"delta_tensors,omitempty"`
	// Frames counts frames by coding: raw, planes, zstd (compress only).
	Frames *[3]int64 `json:"frames,omitempty"`
	// Planes and BoundBytes (--stats): the order-0 entropy of each byte plane and
	// the size it allows for the tensor data, the floor of a plane coder.
	Planes     []gmz.PlaneStat `json:"planes,omitempty"`
	BoundBytes float64         `json:"bound_bytes,omitempty"`
	// TensorBytes is the tensors' raw size, and StoredBytes their frames' size.
	TensorBytes int64 `json:"tensor_bytes,omitempty"`
	StoredBytes int64 `json:"stored_bytes,omitempty"`
}

func newCompressCmd(ios *IOStreams) *cobra.Command {
	var o compressOptions
	cmd := &cobra.Command{
		Use:   "compress IN.safetensors|DIR OUT.gmz|OUTDIR [--against REF]",
		Short: "Compress a checkpoint losslessly (.gmz); with --against, as a delta from a reference",
		Long: `Compress a safetensors checkpoint into a .gmz file, losslessly: 'gomerge decompress'
gives back the original file byte for byte.

Float tensors are split into byte planes (sign and exponent apart from the mantissa),
each Huffman-coded; other tensors are zstd-coded; any frame that does not shrink is
stored as is. Tensors are cut into independent frames of 1 MiB, each with a CRC-32C,
so decoding is parallel, random-access and checked.

With --against REF, every tensor that REF holds with the same name, dtype and shape
is stored as its bitwise XOR with REF's (a checkpoint against its anchor or base:
the bits that did not change cost almost nothing). Decompressing then needs the same
REF, which is checked against a checksum recorded per tensor.

A Hugging Face folder compresses into a folder: each .safetensors shard becomes
NAME.gmz, and the other files (index, config, tokenizer) are copied as they are.`,
		Example: `  gomerge compress model.safetensors model.gmz
  gomerge compress llama-3-8b/ llama-3-8b-gmz/
  gomerge compress step_400.safetensors step_400.gmz --against anchor.safetensors
  gomerge compress model.safetensors model.gmz --stats --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("compress takes an input and an output; got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.in, o.out = args[0], args[1]
			return runCompress(cmd.Context(), ios, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.against, "against", "", "reference checkpoint (.safetensors or .gmz): store tensors as their XOR with it")
	f.IntVar(&o.frameSize, "frame-size", gmz.DefaultFrameSize, "bytes per frame (a multiple of 8, at most 64 MiB)")
	f.IntVar(&o.threads, "threads", 0, "worker goroutines (default: GOMAXPROCS)")
	f.BoolVar(&o.stats, "stats", false, "also measure each byte plane's order-0 entropy (the compression bound)")
	f.BoolVar(&o.json, "json", false, "print a JSON report on stdout")
	return cmd
}

func newDecompressCmd(ios *IOStreams) *cobra.Command {
	var o compressOptions
	cmd := &cobra.Command{
		Use:   "decompress IN.gmz|DIR OUT.safetensors|OUTDIR [--against REF]",
		Short: "Give back the original checkpoint of a .gmz file, byte for byte",
		Long: `Decompress a .gmz file made by 'gomerge compress' into the original file, checking
every frame's CRC-32C. A delta needs --against with the same reference it was made
against; a different one is refused (exit status 3) before anything is written.
A compressed folder decompresses into the folder it was made from. A part of a split
GGUF model with an output NAME.gguf decompresses every part, NAME-0000k-of-0000N.gguf;
with an output named as the same part, that part alone.`,
		Example: `  gomerge decompress model.gmz model.safetensors
  gomerge decompress step_400.gmz step_400.safetensors --against anchor.safetensors
  gomerge decompress model-00001-of-00003.gmz model.gguf`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("decompress takes an input and an output; got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.in, o.out = args[0], args[1]
			return runDecompress(cmd.Context(), ios, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.against, "against", "", "the reference checkpoint a delta was made against (.safetensors or .gmz)")
	f.IntVar(&o.threads, "threads", 0, "worker goroutines (default: twice GOMAXPROCS, so that writes overlap decoding)")
	f.BoolVar(&o.json, "json", false, "print a JSON report on stdout")
	return cmd
}

// badInputError marks a malformed or mismatched .gmz input, which exits 3 like the
// other formats' errors.
type badInputError struct{ err error }

func (e badInputError) Error() string        { return e.err.Error() }
func (e badInputError) Unwrap() error        { return e.err }
func (e badInputError) Is(target error) bool { return target == merge.ErrBadInput }

func gmzError(path string, err error) error {
	var oe *merge.OutputError
	if err == nil || errors.As(err, &oe) {
		return err
	}
	if !strings.Contains(err.Error(), path) {
		err = fmt.Errorf("%s: %w", path, err)
	}
	if errors.Is(err, gmz.ErrFormat) || errors.Is(err, gmz.ErrReference) {
		return badInputError{err}
	}
	if errors.Is(err, checkpoint.ErrUnsupported) { // an output compress refuses to name
		return usageError{err}
	}
	return err
}

func runCompress(ctx context.Context, ios *IOStreams, o *compressOptions) error {
	if o.threads < 0 {
		return usagef("--threads %d: must be positive", o.threads)
	}
	if o.frameSize <= 0 || o.frameSize%8 != 0 || o.frameSize > 64<<20 {
		return usagef("--frame-size %d: must be a multiple of 8 up to 64 MiB", o.frameSize)
	}
	if err := checkOutputPath(o); err != nil {
		return err
	}
	compress := checkpoint.Compress
	if st, err := os.Stat(o.in); err == nil && st.IsDir() {
		if checkpoint.IsCompressedPath(o.out) {
			return usagef("%s is a folder, and compresses into a folder: name the output without .gmz", o.in)
		}
		compress = checkpoint.CompressFolder
	}
	start := time.Now()
	res, err := compress(ctx, o.in, o.out, checkpoint.CompressOptions{
		Against: o.against, FrameSize: o.frameSize, Workers: o.threads, Stats: o.stats})
	if err != nil {
		return gmzError(o.in, err)
	}
	st := res.Stats
	rep := compressReport{Input: o.in, Output: o.out, Against: o.against, InBytes: res.InBytes, OutBytes: st.FileBytes,
		Seconds: time.Since(start).Seconds(), DeltaTensors: res.DeltaTensors, Frames: &st.Frames,
		Planes: st.Planes, TensorBytes: st.RawBytes, StoredBytes: st.StoredBytes}
	if len(res.Outputs) > 0 {
		rep.Output, rep.Outputs = res.Outputs[0], res.Outputs
	}
	if st.FileBytes > 0 {
		rep.Ratio = float64(res.InBytes) / float64(st.FileBytes)
	}
	if o.stats {
		rep.BoundBytes = st.BoundBytes()
	}
	return report(ios, o, &rep)
}

func report(ios *IOStreams, o *compressOptions, rep *compressReport) error {
	if o.json {
		return writeJSON(ios.Out, rep)
	}
	fmt.Fprintf(ios.Out, "%s (%s) -> %s (%s): %.3fx in %.2f s\n", rep.Input, humanBytes(rep.InBytes),
		rep.Output, humanBytes(rep.OutBytes), rep.Ratio, rep.Seconds)
	if len(rep.Outputs) > 1 {
		fmt.Fprintf(ios.Out, "  %d parts: %s\n", len(rep.Outputs), strings.Join(rep.Outputs, ", "))
	}
	if rep.DeltaTensors > 0 {
		fmt.Fprintf(ios.Out, "  %d tensors coded against %s\n", rep.DeltaTensors, rep.Against)
	}
	if rep.BoundBytes > 0 {
		fmt.Fprintf(ios.Out, "  tensor data %s -> %s; order-0 bound of the byte planes %s (%.3fx)\n",
			humanBytes(rep.TensorBytes), humanBytes(rep.StoredBytes), humanBytes(int64(rep.BoundBytes)),
			float64(rep.TensorBytes)/rep.BoundBytes)
	}
	return nil
}

func runDecompress(ctx context.Context, ios *IOStreams, o *compressOptions) error {
	if o.threads < 0 {
		return usagef("--threads %d: must be positive", o.threads)
	}
	if err := checkOutputPath(o); err != nil {
		return err
	}
	start := time.Now()
	var names, shards []string // a folder's .gmz files, and what they decompress to
	folder := checkpoint.IsCompressedFolder(o.in)
	if folder {
		var err error
		if names, shards, err = checkpoint.CompressedShards(o.in); err != nil {
			return err
		}
	}
	paths := []string{o.in}
	if folder {
		paths = paths[:0]
		for _, n := range names {
			paths = append(paths, filepath.Join(o.in, n))
		}
	}
	// A part of a split GGUF model named with an output NAME.gguf: every part.
	splitIns, splitOuts, err := checkpoint.SplitDecompressPlan(o.in, o.out, o.against)
	if err != nil {
		return gmzError(o.in, err)
	}
	if splitIns != nil {
		paths = splitIns
	}
	var files []*gmz.File // nil for a plain part of a split model, copied as it is
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	delta := false
	for _, p := range paths {
		if splitIns != nil && strings.EqualFold(filepath.Ext(p), ".gguf") {
			files = append(files, nil)
			continue
		}
		in, err := gmz.Open(p)
		if err != nil {
			return gmzError(p, err)
		}
		files = append(files, in)
		if slices.ContainsFunc(in.Tensors, func(t gmz.Tensor) bool { return t.Delta }) {
			delta = true
			if o.against == "" {
				return usagef("%s is a delta against %q: give that checkpoint with --against", p, in.Reference)
			}
		}
	}
	var ref *checkpoint.Reference
	if delta {
		var err error
		if ref, err = checkpoint.OpenReference(o.against); err != nil {
			return err
		}
		defer ref.Close()
		for i, in := range files {
			if in == nil {
				continue
			}
			if err := checkReference(ctx, in, ref, paths[i], o.against, o.threads); err != nil {
				return err
			}
		}
	}
	var inBytes, outBytes int64
	sizes := make([]int64, len(files))
	for i, in := range files {
		if in == nil {
			st, err := os.Stat(paths[i])
			if err != nil {
				return err
			}
			inBytes += st.Size()
			sizes[i] = st.Size()
		} else {
			inBytes += in.Size()
			sizes[i] = in.Source.Size
		}
		outBytes += sizes[i]
	}
	switch {
	case folder:
		err = decompressFolder(ctx, o, shards, files, ref)
	case splitIns != nil:
		err = decompressSplit(ctx, o, paths, splitOuts, sizes, files, ref)
	default:
		// Sized, as a folder's shards and a split model's parts are, so that the
		// space is reserved before any decoding (docs/reliability-os.md).
		l := atomicout.Layout{Files: []atomicout.File{{Size: files[0].Source.Size}}}
		err = writeOutput(ctx, o.out, false, l, func(_ int, f *os.File) error {
			return files[0].WriteSource(ctx, f, refFunc(files[0], ref), o.threads)
		})
	}
	if err != nil {
		return gmzError(o.in, err)
	}
	rep := compressReport{Input: o.in, Output: o.out, Against: o.against, InBytes: inBytes, OutBytes: outBytes,
		Seconds: time.Since(start).Seconds()}
	if splitIns != nil {
		rep.Output, rep.Outputs = splitOuts[0], splitOuts
	}
	if inBytes > 0 {
		rep.Ratio = float64(outBytes) / float64(inBytes)
	}
	return report(ios, o, &rep)
}

// checkReference checks every reference tensor of a delta before anything is
// written, so that a wrong reference fails fast and never leaves work behind; its
// tensors in parallel (gmz.File.CheckReferences), by the checksums a compressed
// reference records rather than decoding it, and WriteSource then does not check
// them again.
func checkReference(ctx context.Context, in *gmz.File, ref *checkpoint.Reference, path, against string, threads int) error {
	known := func(name string) (uint32, bool) {
		t, _ := in.Tensor(name)
		return ref.Checksum(name, t.DType, t.Shape)
	}
	err := in.CheckReferences(ctx, refFunc(in, ref), known, threads)
	if refErr := (*gmz.ReferenceError)(nil); errors.As(err, &refErr) {
		return badInputError{fmt.Errorf("%s: --against %s: %w", path, against, err)}
	}
	return err
}

// refFunc serves in's reference tensors from ref, a range at a time (nil when in is
// no delta).
func refFunc(in *gmz.File, ref *checkpoint.Reference) gmz.RefFunc {
	if ref == nil {
		return nil
	}
	return func(name string, off int64, dst []byte) (bool, error) {
		t, _ := in.Tensor(name)
		return ref.ReadRange(name, t.DType, t.Shape, off, dst)
	}
}

// decompressFolder writes a compressed folder's shards back as .safetensors files,
// beside its other files and sub-folders, through the crash-safe output.
func decompressFolder(ctx context.Context, o *compressOptions, shards []string, files []*gmz.File, ref *checkpoint.Reference) error {
	l := atomicout.Layout{Carry: &atomicout.Carry{From: o.in, Tree: true, Skip: func(name string) bool { return strings.EqualFold(filepath.Ext(name), ".gmz") }}}
	for i, st := range shards {
		l.Files = append(l.Files, atomicout.File{Name: st, Size: files[i].Source.Size})
		l.Marks = append(l.Marks, st)
	}
	return writeOutput(ctx, o.out, true, l, func(i int, f *os.File) error {
		return files[i].WriteSource(ctx, f, refFunc(files[i], ref), o.threads)
	})
}

// decompressSplit writes every part of a split GGUF model back as NAME-0000k-of-
// 0000N.gguf (checkpoint.SplitDecompressPlan), published together as a set through the
// crash-safe output, like a split merge output: a compressed part decoded, a plain
// one copied.
func decompressSplit(ctx context.Context, o *compressOptions, ins, outs []string, sizes []int64, files []*gmz.File, ref *checkpoint.Reference) error {
	var l atomicout.Layout
	for i, p := range outs {
		l.Files = append(l.Files, atomicout.File{Name: filepath.Base(p), Size: sizes[i]})
	}
	return writeOutput(ctx, o.out, false, l, func(i int, f *os.File) error {
		if files[i] == nil {
			return copyFile(f, ins[i])
		}
		return files[i].WriteSource(ctx, f, refFunc(files[i], ref), o.threads)
	})
}

// copyFile copies the file at path to the start of w.
func copyFile(w *os.File, path string) error {
	r, err := os.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := w.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		return fmt.Errorf("%s: copying it: %w", path, err)
	}
	return nil
}

// checkOutputPath refuses an output that is the input or the reference: the rename
// would replace a file still being read.
func checkOutputPath(o *compressOptions) error {
	out, err := os.Stat(o.out)
	if err != nil {
		return nil // a new file
	}
	for _, p := range []string{o.in, o.against} {
		if st, err := os.Stat(p); p != "" && err == nil && os.SameFile(st, out) {
			return usagef("the output %s is the same file as the input %s", o.out, p)
		}
	}
	return nil
}

// writeAtomic writes path through the crash-safe output (lock, temporary file,
// fsync, rename), its length not known in advance, so that an interrupted run leaves
// no partial output and a concurrent one waits.
func writeAtomic(ctx context.Context, path string, write func(*os.File) error) error {
	l := atomicout.Layout{Files: []atomicout.File{{Size: atomicout.Streamed}}}
	return writeOutput(ctx, path, false, l, func(_ int, f *os.File) error { return write(f) })
}

// writeOutput is the one path of the outputs written outside the merge engine
// (compress, decompress, report's pages, through writeAtomic): the
// destination path (a folder, a file, or a set of sibling files) locked, l's files
// created beside it, file i written by write, and all of them published together, or
// none where a write fails.
func writeOutput(ctx context.Context, path string, folder bool, l atomicout.Layout, write func(i int, f *os.File) error) error {
	dest, err := atomicout.Lock(ctx, path, folder, nil)
	if err != nil {
		return &merge.OutputError{Path: path, Err: err}
	}
	defer dest.Unlock()
	out, err := dest.Create(l)
	if err != nil {
		return &merge.OutputError{Path: path, Err: err}
	}
	for i := range l.Files {
		if err := write(i, out.Stream(i)); err != nil {
			out.Abort()
			return err
		}
	}
	if err := out.Commit(); err != nil {
		return &merge.OutputError{Path: path, Err: err}
	}
	return nil
}
