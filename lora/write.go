package lora

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/internal/atomicout"
)

// blockElems is about how many elements one unit of WriteApplied's work computes: a
// block of rows whose float32 form (256 KiB) and encoded output stay in a core's
// cache between decoding, the product and encoding. copyBytes is the same for rows
// copied as they are.
const (
	blockElems = 64 << 10
	copyBytes  = 4 << 20
)

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
// checkpoint.OutputFormat) as a stream of row blocks, computed by GOMAXPROCS workers
// and written each to its place, so that memory holds the blocks in flight and the
// factors and source bytes of the few tensors they belong to, never the model.
// outDType, if not dtype.Invalid, is the float type asked for. Nothing replaces out
// unless every tensor was written. The bytes do not depend on the worker count: every
// element is computed from its own inputs only (kernel.go).
func WriteApplied(ctx context.Context, ap *Applied, out string, outDType dtype.DType, onWait func()) (*ApplyReport, error) {
	return writeApplied(ctx, ap, out, outDType, onWait, runtime.GOMAXPROCS(0))
}

func writeApplied(ctx context.Context, ap *Applied, out string, outDType dtype.DType, onWait func(), workers int) (*ApplyReport, error) {
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
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, workers))
	var written atomic.Int64
	scratch := sync.Pool{New: func() any { return new(unitScratch) }}
	for i, t := range o.Tensors {
		if gctx.Err() != nil {
			break
		}
		// The tensor's source bytes and factors are loaded by the first of its blocks
		// to run and dropped by the last to finish.
		st := &tensorState{}
		meta, _ := ap.meta(t.Name)
		probe := &tensorJob{meta: meta}
		if r, ok := ap.replaced[t.Name]; ok {
			probe.meta = r.r.Meta
		}
		rows, cols := probe.split(t.DType)
		// Rows that are copied as they are need no scratch and go in larger blocks.
		compute := ap.Adapted(t.Name) || probe.meta.DType != t.DType
		step := max(1, blockElems/max(1, cols))
		if !compute {
			step = max(1, copyBytes/max(1, int(t.DType.Bytes(int64(cols)))))
		}
		st.left.Store(int64((rows + step - 1) / step))
		for r0 := 0; r0 < rows; r0 += step {
			r1 := min(rows, r0+step)
			if gctx.Err() != nil {
				break
			}
			g.Go(func() error {
				st.once.Do(func() { st.job, st.err = ap.job(t.Name) })
				if st.err != nil {
					return st.err
				}
				var f []float32
				var b []byte
				if compute {
					sc := scratch.Get().(*unitScratch)
					defer scratch.Put(sc)
					n := (r1 - r0) * cols
					sc.f, sc.b = grow(sc.f, n), grow(sc.b, int(t.DType.Bytes(int64(n))))
					f, b = sc.f, sc.b
				}
				data, err := st.job.rows(b, f, r0, r1, cols, t.DType)
				if err != nil {
					return err
				}
				if err := w.WriteAt(i, t.DType.Bytes(int64(r0*cols)), data); err != nil {
					return err
				}
				written.Add(int64(len(data)))
				if st.left.Add(-1) == 0 {
					st.job = nil
				}
				return nil
			})
		}
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

// tensorState is one output tensor's share of WriteApplied's work.
type tensorState struct {
	once sync.Once
	job  *tensorJob
	err  error
	left atomic.Int64 // blocks not yet written
}

// unitScratch is a worker's buffers for one block: the float32 rows and their
// encoding.
type unitScratch struct {
	f []float32
	b []byte
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
