package lora

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// writeParallel is how many tensors WriteApplied works on at once: memory holds that
// many adapted tensors.
const writeParallel = 4

// ApplyReport is what WriteApplied did, as `gomerge lora apply --json` prints it.
type ApplyReport struct {
	Output         string   `json:"output"`
	OutputFiles    []string `json:"output_files"`
	Tensors        int      `json:"tensors"`
	TensorsAdapted int      `json:"tensors_adapted"`
	BytesWritten   int64    `json:"bytes_written"`
	Seconds        float64  `json:"seconds"`
}

// WriteApplied writes ap to out (a .safetensors file, a folder or a .gguf file; see
// checkpoint.OutputFormat), a few tensors at a time (writeParallel), so that memory
// holds those adapted tensors and a float64 row each, never the model. outDType, if
// not dtype.Invalid, is the float type asked for. Nothing replaces out unless every tensor was written.
func WriteApplied(ctx context.Context, ap *Applied, out string, outDType dtype.DType, onWait func()) (*ApplyReport, error) {
	start := time.Now()
	format, folder, err := checkpoint.OutputFormat(out)
	if err != nil {
		return nil, err
	}
	outType, err := format.OutType(outDType, checkpoint.OutOptions{}, ap.Base())
	if err != nil {
		return nil, err
	}
	dest, err := atomicout.Lock(ctx, out, folder, onWait)
	if err != nil {
		return nil, err
	}
	defer dest.Unlock()
	rep := &ApplyReport{Output: dest.Path}
	o := checkpoint.Output{Name: filepath.Base(dest.Path), Folder: folder, Ref: ap.Base(),
		Provenance: [][2]string{{"gomerge.lora", ap.Path()}}}
	for _, m := range ap.Tensors() {
		to := outType(m.Name, m.DType, m.Shape)
		o.Tensors = append(o.Tensors, checkpoint.Tensor{Name: m.Name, Shape: m.Shape, DType: to, From: m.DType})
		if ap.Adapted(m.Name) {
			rep.TensorsAdapted++
		}
	}
	layout, err := format.Plan(o)
	if err != nil {
		return nil, err
	}
	w, err := dest.Create(layout.Layout)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", dest.Path, err)
	}
	// A few tensors at a time, so that one's reading and writing overlap another's
	// product; each goes to its own region, so the bytes do not depend on the order.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(writeParallel)
	var written atomic.Int64
	for i, t := range o.Tensors {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			data, err := ap.DataAs(t.Name, t.DType)
			if err != nil {
				return err
			}
			written.Add(int64(len(data)))
			return w.WriteAt(i, 0, data)
		})
	}
	err = g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		w.Abort()
		return nil, err
	}
	rep.BytesWritten = written.Load()
	if err := w.Commit(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", dest.Path, err)
	}
	rep.OutputFiles, rep.Tensors = w.Paths, len(o.Tensors)
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}
