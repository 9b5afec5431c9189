package gpu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"sync"
)

// Streaming: a tensor goes through the device in staged chunks of cfg.ChunkElems
// elements, alternating between two streams. Before chunk k is staged on stream
// k mod 2, the stream's previous chunk (k−2) is waited for and its output handed to
// the caller; meanwhile chunk k−1 runs on the other stream. So the host's copy of one
// chunk into pinned memory, the bus transfers and the kernels of the next overlap.

// stage is one stream's staging memory, grown on demand and kept until Close.
type stage struct {
	index   int
	slots   []slot
	pending *chunk
}

// slot is a device buffer and, for those that cross the bus, a pinned host buffer of
// the same size.
type slot struct {
	host []byte
	dev  devPtr
	size int
}

// Slot numbers within a pass: the inputs come first, then these.
const (
	slotOut = iota
	slotRes
	slotDesc
	slotScratch
	numFixedSlots
)

func (s *stage) ensure(be *backend, i, size int, host bool) (*slot, error) {
	for len(s.slots) <= i {
		s.slots = append(s.slots, slot{})
	}
	sl := &s.slots[i]
	if sl.size >= size && (sl.host != nil || !host) {
		return sl, nil
	}
	if err := sl.release(be); err != nil {
		return nil, err
	}
	size = (size + 1<<16 - 1) &^ (1<<16 - 1) // whole 64 KiB, so small growths reuse
	dev, err := be.memAlloc(size)
	if err != nil {
		return nil, err
	}
	sl.dev, sl.size = dev, size
	if host {
		h, err := be.hostAlloc(size)
		if err != nil {
			return nil, errors.Join(err, sl.release(be))
		}
		sl.host = h
	}
	return sl, nil
}

func (sl *slot) release(be *backend) error {
	var errs []error
	if sl.host != nil {
		errs = append(errs, be.hostFree(sl.host))
	}
	if sl.size != 0 {
		errs = append(errs, be.memFree(sl.dev))
	}
	*sl = slot{}
	return errors.Join(errs...)
}

func (s *stage) free(be *backend) error {
	var errs []error
	for i := range s.slots {
		errs = append(errs, s.slots[i].release(be))
	}
	s.slots, s.pending = nil, nil
	return errors.Join(errs...)
}

// chunk is one staged chunk in flight.
type chunk struct {
	index   int64 // chunk number
	off     int64 // flat index of its first element
	n       int   // elements
	in      []devPtr
	out     devPtr
	res     devPtr
	desc    devPtr
	scratch devPtr
	st      *stage
}

// pass is one streaming pass over a tensor of n elements.
type pass struct {
	n   int64
	in  []Operand
	out *Output // nil: the pass writes no tensor
	// resBytes is the size of the chunk's results (partial sums, histograms), copied
	// back after its kernels; nil: none.
	resBytes func(cn int) int
	// scratchBytes is device-only scratch per chunk; nil: none.
	scratchBytes func(cn int) int
	// descs returns the chunk's model descriptors (uploaded before the kernels).
	descs func(c *chunk) []modelDesc
	// kernels returns the chunk's memsets and launches.
	kernels func(c *chunk) []op
	// collect reads the chunk's results once the stream is done with it.
	collect func(c *chunk, res []byte) error

	// writing is the output write in flight (finish starts it), nil when none.
	writing chan error
}

// writeAsync writes a finished chunk's output on a goroutine of its own, so that the
// write (one goroutine's pwrite into the page cache, on the H200 of docs/gpu.md a
// large part of the device path's host time) overlaps the next chunk's staging copy.
// The write before it is waited for first, so the writes stay in chunk order, one at
// a time.
func (p *pass) writeAsync(b []byte, off int64) error {
	if err := p.waitWrite(); err != nil {
		return err
	}
	done := make(chan error, 1)
	p.writing = done
	go func() {
		_, err := p.out.W.WriteAt(b, off)
		done <- err
	}()
	return nil
}

// waitWrite waits for the write in flight, if any, and returns its error.
func (p *pass) waitWrite() error {
	if p.writing == nil {
		return nil
	}
	err := <-p.writing
	p.writing = nil
	if err != nil {
		return fmt.Errorf("gpu: writing the output: %w", err)
	}
	return nil
}

func numBlocks(n int64) int64 { return (n + BlockElems - 1) / BlockElems }

func (d *Device) check(n int64, out *Output, ops ...Operand) error {
	if n < 0 {
		return fmt.Errorf("gpu: negative element count %d", n)
	}
	for i, o := range ops {
		if _, err := dtCode(o.DType); err != nil {
			return fmt.Errorf("operand %d: %w", i, err)
		}
		if int64(len(o.Data))/int64(o.DType.Size()) < n {
			return fmt.Errorf("gpu: operand %d holds %d bytes, fewer than %d elements of %v", i, len(o.Data), n, o.DType)
		}
	}
	if out != nil {
		if _, err := dtCode(out.DType); err != nil {
			return fmt.Errorf("output: %w", err)
		}
		if out.W == nil {
			return errors.New("gpu: output has no writer")
		}
	}
	return nil
}

// stream runs pass p over its tensor. It always waits for both streams before it
// returns, so that no transfer still targets the staging memory, whatever failed.
func (d *Device) stream(ctx context.Context, p *pass) (err error) {
	if d.closed {
		return ErrClosed
	}
	ce := int64(d.cfg.ChunkElems)
	nChunks := (p.n + ce - 1) / ce
	defer func() {
		// A fault while staging a chunk (SIGBUS on a truncated mapped input, which
		// the caller's debug.SetPanicOnFault turns into a panic) unwinds through here:
		// drain as after a failure, without finishing the half-staged chunk, then
		// re-panic the original fault for the caller's guard to report.
		r := recover()
		if r != nil && err == nil {
			err = errors.New("gpu: panic while staging a chunk")
		}
		defer func() {
			if r != nil {
				panic(r)
			}
		}()
		// The last chunk's write, or one in flight when something failed: nothing
		// may still read the staging memory when stream returns.
		defer func() {
			if e := p.waitWrite(); err == nil {
				err = e
			}
		}()
		// Drain what is in flight, in chunk order: finish it, or after a failure just
		// wait for it.
		a, b := d.streams[0], d.streams[1]
		if a.pending != nil && b.pending != nil && b.pending.index < a.pending.index {
			a, b = b, a
		}
		for _, s := range []*stage{a, b} {
			if s.pending == nil {
				continue
			}
			if err == nil {
				err = d.finish(p, s)
				continue
			}
			s.pending = nil
			if e := d.be.sync(s.index); e != nil {
				d.broken = e
			}
		}
	}()
	for k := int64(0); k < nChunks; k++ {
		s := d.streams[k%2]
		if s.pending != nil {
			if err := d.finish(p, s); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.enqueue(p, s, k); err != nil {
			return err
		}
	}
	return nil
}

func (d *Device) enqueue(p *pass, s *stage, k int64) error {
	ce := int64(d.cfg.ChunkElems)
	c := &chunk{index: k, off: k * ce, n: int(min(ce, p.n-k*ce)), st: s}
	s.pending = c // from here on, the drain must wait for this stream
	var ops []op
	nIn := len(p.in)
	var copies [][2][]byte
	for i, o := range p.in {
		sz := o.DType.Size()
		sl, err := s.ensure(d.be, i, int(ce)*sz, true)
		if err != nil {
			return err
		}
		nb := c.n * sz
		copies = append(copies, [2][]byte{sl.host[:nb], o.Data[c.off*int64(sz):][:nb]})
		c.in = append(c.in, sl.dev)
		ops = append(ops, op{kind: opHtoD, dev: sl.dev, host: sl.host[:nb]})
	}
	stageCopy(copies)
	var outSlot, resSlot *slot
	if p.out != nil {
		// The output slot is the one whose last chunk's write (started by finish)
		// may still be reading it: that write overlapped the copies above.
		if err := p.waitWrite(); err != nil {
			return err
		}
		var err error
		if outSlot, err = s.ensure(d.be, nIn+slotOut, int(ce)*p.out.DType.Size(), true); err != nil {
			return err
		}
		c.out = outSlot.dev
	}
	if p.resBytes != nil {
		var err error
		if resSlot, err = s.ensure(d.be, nIn+slotRes, p.resBytes(int(ce)), true); err != nil {
			return err
		}
		c.res = resSlot.dev
	}
	if p.scratchBytes != nil {
		sl, err := s.ensure(d.be, nIn+slotScratch, p.scratchBytes(int(ce)), false)
		if err != nil {
			return err
		}
		c.scratch = sl.dev
	}
	if p.descs != nil {
		descs := p.descs(c)
		sl, err := s.ensure(d.be, nIn+slotDesc, len(descs)*modelDescSize, true)
		if err != nil {
			return err
		}
		for i := range descs {
			descs[i].put(sl.host[i*modelDescSize:])
		}
		c.desc = sl.dev
		ops = append(ops, op{kind: opHtoD, dev: sl.dev, host: sl.host[:len(descs)*modelDescSize]})
	}
	ops = append(ops, p.kernels(c)...)
	if outSlot != nil {
		ops = append(ops, op{kind: opDtoH, dev: outSlot.dev, host: outSlot.host[:c.n*p.out.DType.Size()]})
	}
	if resSlot != nil {
		ops = append(ops, op{kind: opDtoH, dev: resSlot.dev, host: resSlot.host[:p.resBytes(c.n)]})
	}
	for _, o := range ops {
		switch o.kind {
		case opHtoD:
			d.stats.BytesToDevice += int64(len(o.host))
		case opDtoH:
			d.stats.BytesFromDevice += int64(len(o.host))
		case opLaunch:
			d.stats.Launches++
		}
	}
	return d.be.run(s.index, ops)
}

// stageCopyPiece is the least a goroutine of stageCopy copies.
const stageCopyPiece = 1 << 20

// stageCopy copies each pair's source into its destination (of the same length) on up
// to GOMAXPROCS goroutines. The host's copies into pinned staging memory bound the
// device's throughput, and one core copies at a fraction of the memory bus's speed
// (docs/gpu.md). A fault reading a source (a truncated mapped input) is re-raised
// here, on the caller's goroutine, whose recover and debug.SetPanicOnFault guard
// report it as the single-threaded copy's would.
func stageCopy(pairs [][2][]byte) {
	total := 0
	for _, p := range pairs {
		total += len(p[0])
	}
	workers := min(runtime.GOMAXPROCS(0), total/stageCopyPiece)
	if workers < 2 {
		for _, p := range pairs {
			copy(p[0], p[1])
		}
		return
	}
	// Cut the pairs into pieces of about total/workers bytes, in order.
	step := (total + workers - 1) / workers
	type piece struct{ dst, src []byte }
	jobs := make([][]piece, 0, workers)
	var cur []piece
	left := step
	for _, p := range pairs {
		dst, src := p[0], p[1]
		for len(dst) > 0 {
			k := min(left, len(dst))
			cur = append(cur, piece{dst[:k], src[:k]})
			dst, src, left = dst[k:], src[k:], left-k
			if left == 0 {
				jobs, cur, left = append(jobs, cur), nil, step
			}
		}
	}
	if len(cur) > 0 {
		jobs = append(jobs, cur)
	}
	faults := make([]any, len(jobs))
	var wg sync.WaitGroup
	for j, job := range jobs {
		wg.Go(func() {
			defer func() { faults[j] = recover() }()
			debug.SetPanicOnFault(true)
			for _, pc := range job {
				copy(pc.dst, pc.src)
			}
		})
	}
	wg.Wait()
	for _, f := range faults {
		if f != nil {
			panic(f)
		}
	}
}

// finish waits for stream s's chunk and hands over its output and results.
func (d *Device) finish(p *pass, s *stage) error {
	c := s.pending
	s.pending = nil
	if err := d.be.sync(s.index); err != nil {
		// Whether the stream's work ran is unknown: the device is not used again.
		d.broken = err
		return err
	}
	nIn := len(p.in)
	if p.out != nil {
		sz := p.out.DType.Size()
		if err := p.writeAsync(s.slots[nIn+slotOut].host[:c.n*sz], c.off*int64(sz)); err != nil {
			return err
		}
	}
	if p.collect != nil {
		var res []byte
		if p.resBytes != nil {
			res = s.slots[nIn+slotRes].host[:p.resBytes(c.n)]
		}
		return p.collect(c, res)
	}
	return nil
}

// Launch shapes. Elementwise kernels loop over their elements with a grid stride, so
// a grid of a few blocks per multiprocessor keeps the device busy without one thread
// per element.
const threadsPerBlock = 256

func (d *Device) grid(threads int64) uint32 {
	g := (threads + threadsPerBlock - 1) / threadsPerBlock
	limit := int64(max(1, d.info.Multiprocessors) * 16)
	return uint32(max(1, min(g, limit)))
}

// launch is a launch over threads threads (elements, or blocks for the per-block
// reductions).
func (d *Device) launch(k kernelID, threads int64, args ...any) op {
	return op{kind: opLaunch, kernel: k, grid: d.grid(threads), block: threadsPerBlock, args: args}
}

// put encodes m as kernels.cu's gm_model (little-endian, natural alignment).
func (m *modelDesc) put(b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], m.x)
	le.PutUint64(b[8:], m.aux)
	le.PutUint64(b[16:], uint64(m.tieEnd0))
	le.PutUint64(b[24:], uint64(m.tieEnd1))
	le.PutUint64(b[32:], m.key)
	le.PutUint64(b[40:], m.threshold)
	le.PutUint32(b[48:], m.t0)
	le.PutUint32(b[52:], m.t1)
	le.PutUint32(b[56:], m.dt)
	le.PutUint32(b[60:], m.auxDT)
	le.PutUint32(b[64:], m.keep)
	le.PutUint32(b[68:], m.lane)
	le.PutUint32(b[72:], math.Float32bits(m.w))
	le.PutUint32(b[76:], math.Float32bits(m.scale))
	le.PutUint32(b[80:], m.hasScale)
	le.PutUint32(b[84:], 0)
}

func float64At(b []byte, i int) float64 {
	return math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
}

func uint32At(b []byte, i int) uint32 { return binary.LittleEndian.Uint32(b[4*i:]) }
