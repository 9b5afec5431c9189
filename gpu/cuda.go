//go:build !nogpu && linux && (amd64 || arm64)

package gpu

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// api holds the driver entry points gomerge uses, bound with purego. The _v2 names
// are what cuda.h's macros make of the plain ones since CUDA 3.2 / 11; the plain
// symbols keep their old 32-bit ABI and must not be called.
type api struct {
	cuGetErrorName               func(code int32, name **byte) int32
	cuInit                       func(flags uint32) int32
	cuDriverGetVersion           func(v *int32) int32
	cuDeviceGetCount             func(n *int32) int32
	cuDeviceGet                  func(dev *int32, ordinal int32) int32
	cuDeviceGetName              func(name *byte, n int32, dev int32) int32
	cuDeviceGetAttribute         func(v *int32, attr int32, dev int32) int32
	cuDeviceTotalMem_v2          func(bytes *uint64, dev int32) int32
	cuDevicePrimaryCtxRetain     func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease_v2 func(dev int32) int32
	cuCtxSetCurrent              func(ctx uintptr) int32
	cuModuleLoadDataEx           func(mod *uintptr, image *byte, nopts uint32, opts *int32, vals *uintptr) int32
	cuModuleGetFunction          func(fn *uintptr, mod uintptr, name string) int32
	cuModuleUnload               func(mod uintptr) int32
	cuMemAlloc_v2                func(p *uint64, size uint64) int32
	cuMemFree_v2                 func(p uint64) int32
	cuMemHostAlloc               func(p *unsafe.Pointer, size uint64, flags uint32) int32
	cuMemFreeHost                func(p unsafe.Pointer) int32
	cuMemcpyHtoDAsync_v2         func(dst uint64, src unsafe.Pointer, size uint64, stream uintptr) int32
	cuMemcpyDtoHAsync_v2         func(dst unsafe.Pointer, src uint64, size uint64, stream uintptr) int32
	cuMemsetD32Async             func(dst uint64, v uint32, n uint64, stream uintptr) int32
	cuStreamCreate               func(s *uintptr, flags uint32) int32
	cuStreamDestroy_v2           func(s uintptr) int32
	cuStreamSynchronize          func(s uintptr) int32
	cuLaunchKernel               func(f uintptr, gx, gy, gz, bx, by, bz, shmem uint32, stream uintptr, params *unsafe.Pointer, extra *unsafe.Pointer) int32
}

// symbols lists api's fields with their symbol names, for binding.
func (a *api) symbols() []struct {
	name string
	fn   any
} {
	return []struct {
		name string
		fn   any
	}{
		{"cuGetErrorName", &a.cuGetErrorName},
		{"cuInit", &a.cuInit},
		{"cuDriverGetVersion", &a.cuDriverGetVersion},
		{"cuDeviceGetCount", &a.cuDeviceGetCount},
		{"cuDeviceGet", &a.cuDeviceGet},
		{"cuDeviceGetName", &a.cuDeviceGetName},
		{"cuDeviceGetAttribute", &a.cuDeviceGetAttribute},
		{"cuDeviceTotalMem_v2", &a.cuDeviceTotalMem_v2},
		{"cuDevicePrimaryCtxRetain", &a.cuDevicePrimaryCtxRetain},
		{"cuDevicePrimaryCtxRelease_v2", &a.cuDevicePrimaryCtxRelease_v2},
		{"cuCtxSetCurrent", &a.cuCtxSetCurrent},
		{"cuModuleLoadDataEx", &a.cuModuleLoadDataEx},
		{"cuModuleGetFunction", &a.cuModuleGetFunction},
		{"cuModuleUnload", &a.cuModuleUnload},
		{"cuMemAlloc_v2", &a.cuMemAlloc_v2},
		{"cuMemFree_v2", &a.cuMemFree_v2},
		{"cuMemHostAlloc", &a.cuMemHostAlloc},
		{"cuMemFreeHost", &a.cuMemFreeHost},
		{"cuMemcpyHtoDAsync_v2", &a.cuMemcpyHtoDAsync_v2},
		{"cuMemcpyDtoHAsync_v2", &a.cuMemcpyDtoHAsync_v2},
		{"cuMemsetD32Async", &a.cuMemsetD32Async},
		{"cuStreamCreate", &a.cuStreamCreate},
		{"cuStreamDestroy_v2", &a.cuStreamDestroy_v2},
		{"cuStreamSynchronize", &a.cuStreamSynchronize},
		{"cuLaunchKernel", &a.cuLaunchKernel},
	}
}

// The driver's constants that gomerge uses (cuda.h).
const (
	attrMultiprocessorCount = 16 // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
	attrCCMajor             = 75 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	attrCCMinor             = 76 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
	jitErrorLogBuffer       = 5  // CU_JIT_ERROR_LOG_BUFFER
	jitErrorLogBufferSize   = 6  // CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
	streamNonBlocking       = 1  // CU_STREAM_NON_BLOCKING
	errNoDevice             = 100
)

// libraries caches the bound driver per library name. This is the package's only
// global state, and the binding needs it: dlopen'd code stays in the process (the
// CUDA driver cannot be unloaded safely), so a library is bound once and shared by
// every Device opened from it.
var libraries struct {
	sync.Mutex
	m map[string]*api
}

func loadLibrary(name string) (*api, error) {
	libraries.Lock()
	defer libraries.Unlock()
	if a := libraries.m[name]; a != nil {
		return a, nil
	}
	h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("gpu: loading the CUDA driver %s: %w", name, err)
	}
	a := new(api)
	for _, s := range a.symbols() {
		sym, err := purego.Dlsym(h, s.name)
		if err != nil {
			return nil, fmt.Errorf("gpu: the CUDA driver %s lacks %s: %w", name, s.name, err)
		}
		purego.RegisterFunc(s.fn, sym)
	}
	if libraries.m == nil {
		libraries.m = make(map[string]*api)
	}
	libraries.m[name] = a
	return a, nil
}

// maxParams bounds a kernel's parameter count (kernels.cu's longest has 10).
const maxParams = 16

// launchParams is cuLaunchKernel's kernelParams: ptrs[i] points to vals[i], which
// holds argument i. It lives pinned (runtime.Pinner) for the backend's lifetime, so
// that the driver may read Go memory that holds pointers.
type launchParams struct {
	vals [maxParams]uint64
	ptrs [maxParams]unsafe.Pointer
}

// backend is an opened device: the primary context, the loaded module and two
// streams, served by one goroutine locked to its OS thread. The driver keeps the
// current context per thread, so a single thread that made it current once is the
// simplest way to be sure every call sees it.
type backend struct {
	a       *api
	dev     int32
	ctx     uintptr
	module  uintptr
	funcs   [numKernels]uintptr
	streams [2]uintptr
	params  *launchParams
	pinner  runtime.Pinner

	mu     sync.Mutex // guards closed and sends on reqs
	closed bool
	reqs   chan func()
	done   chan struct{}
}

// loadBackend loads the driver library cfg names, as openBackend does first.
func loadBackend(cfg Config) error {
	_, err := loadLibrary(cfg.Library)
	return err
}

func openBackend(cfg Config) (*backend, Info, error) {
	a, err := loadLibrary(cfg.Library)
	if err != nil {
		return nil, Info{}, err
	}
	b := &backend{a: a, reqs: make(chan func()), done: make(chan struct{}), params: new(launchParams)}
	go b.serve()
	var info Info
	if err := b.do(func() error { return b.init(cfg, &info) }); err != nil {
		b.do(b.release) // undo what init did; its own errors add nothing
		b.stop()
		return nil, Info{}, err
	}
	return b, info, nil
}

// serve runs the requests on this goroutine's OS thread until reqs is closed. The
// thread stays locked, so it exits with the goroutine, taking its current context
// with it.
func (b *backend) serve() {
	runtime.LockOSThread()
	defer close(b.done)
	for f := range b.reqs {
		f()
	}
}

// do runs f on the driver thread and returns its error. A panic in f (a purego or
// driver misuse) becomes an error rather than killing the process from a goroutine
// nobody can recover.
func (b *backend) do(f func() error) error {
	res := make(chan error, 1)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.reqs <- func() {
		defer func() {
			if r := recover(); r != nil {
				res <- fmt.Errorf("gpu: driver call panicked: %v", r)
			}
		}()
		res <- f()
	}
	b.mu.Unlock()
	return <-res
}

func (b *backend) stop() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.reqs)
	}
	b.mu.Unlock()
	<-b.done
}

// check turns a CUresult into nil or a *DriverError naming the call. It runs on the
// driver thread.
func (b *backend) check(call string, r int32) error {
	if r == 0 {
		return nil
	}
	e := &DriverError{Call: call, Code: int(r)}
	var name *byte
	if b.a.cuGetErrorName(r, &name) == 0 && name != nil {
		e.Name = cString(name, 128)
	}
	return e
}

// cString copies a NUL-terminated C string of at most max bytes.
func cString(p *byte, max int) string {
	s := unsafe.Slice(p, max)
	for i, c := range s {
		if c == 0 {
			return string(s[:i])
		}
	}
	return string(s)
}

func (b *backend) init(cfg Config, info *Info) error {
	a := b.a
	if err := b.check("cuInit", a.cuInit(0)); err != nil {
		return err
	}
	var v, count int32
	if err := b.check("cuDriverGetVersion", a.cuDriverGetVersion(&v)); err != nil {
		return err
	}
	if err := b.check("cuDeviceGetCount", a.cuDeviceGetCount(&count)); err != nil {
		return err
	}
	if int(count) <= cfg.Ordinal {
		return &DriverError{Call: "cuDeviceGet", Code: errNoDevice, Name: "CUDA_ERROR_NO_DEVICE",
			Log: fmt.Sprintf("device %d requested, the driver has %d", cfg.Ordinal, count)}
	}
	if err := b.check("cuDeviceGet", a.cuDeviceGet(&b.dev, int32(cfg.Ordinal))); err != nil {
		return err
	}
	name := make([]byte, 256)
	if err := b.check("cuDeviceGetName", a.cuDeviceGetName(&name[0], int32(len(name)), b.dev)); err != nil {
		return err
	}
	*info = Info{Name: cString(&name[0], len(name)), Ordinal: cfg.Ordinal, DriverVersion: int(v)}
	for _, at := range []struct {
		attr int32
		dst  *int
	}{{attrCCMajor, &info.Major}, {attrCCMinor, &info.Minor}, {attrMultiprocessorCount, &info.Multiprocessors}} {
		var x int32
		if err := b.check("cuDeviceGetAttribute", a.cuDeviceGetAttribute(&x, at.attr, b.dev)); err != nil {
			return err
		}
		*at.dst = int(x)
	}
	var mem uint64
	if err := b.check("cuDeviceTotalMem_v2", a.cuDeviceTotalMem_v2(&mem, b.dev)); err != nil {
		return err
	}
	info.TotalMem = int64(mem)
	var ctx uintptr
	if err := b.check("cuDevicePrimaryCtxRetain", a.cuDevicePrimaryCtxRetain(&ctx, b.dev)); err != nil {
		return err
	}
	b.ctx = ctx
	if err := b.check("cuCtxSetCurrent", a.cuCtxSetCurrent(ctx)); err != nil {
		return err
	}
	if err := b.loadModule(); err != nil {
		return err
	}
	for i, k := range kernels {
		if err := b.check("cuModuleGetFunction", a.cuModuleGetFunction(&b.funcs[i], b.module, k.name)); err != nil {
			return fmt.Errorf("%w (kernel %s)", err, k.name)
		}
	}
	for i := range b.streams {
		if err := b.check("cuStreamCreate", a.cuStreamCreate(&b.streams[i], streamNonBlocking)); err != nil {
			return err
		}
	}
	b.pinner.Pin(b.params)
	for i := range b.params.ptrs {
		b.params.ptrs[i] = unsafe.Pointer(&b.params.vals[i])
	}
	return nil
}

// loadModule JIT-compiles the embedded PTX, asking for the compiler's error log so
// that a failure says why.
func (b *backend) loadModule() error {
	image := append([]byte(kernelsPTX), 0)
	log := make([]byte, 8192)
	var pin runtime.Pinner
	pin.Pin(&log[0])
	defer pin.Unpin()
	opts := []int32{jitErrorLogBuffer, jitErrorLogBufferSize}
	vals := []uintptr{uintptr(unsafe.Pointer(&log[0])), uintptr(len(log))}
	var mod uintptr
	err := b.check("cuModuleLoadDataEx", b.a.cuModuleLoadDataEx(&mod, &image[0], uint32(len(opts)), &opts[0], &vals[0]))
	if err != nil {
		var de *DriverError
		if errors.As(err, &de) {
			de.Log = cString(&log[0], len(log))
		}
		return err
	}
	b.module = mod
	return nil
}

// release undoes init as far as it got, reporting the first failure.
func (b *backend) release() error {
	var errs []error
	for i, s := range b.streams {
		if s != 0 {
			errs = append(errs, b.check("cuStreamDestroy_v2", b.a.cuStreamDestroy_v2(s)))
			b.streams[i] = 0
		}
	}
	if b.module != 0 {
		errs = append(errs, b.check("cuModuleUnload", b.a.cuModuleUnload(b.module)))
		b.module = 0
	}
	if b.ctx != 0 {
		errs = append(errs, b.check("cuDevicePrimaryCtxRelease_v2", b.a.cuDevicePrimaryCtxRelease_v2(b.dev)))
		b.ctx = 0
	}
	b.pinner.Unpin()
	return errors.Join(errs...)
}

func (b *backend) close() error {
	err := b.do(b.release)
	b.stop()
	return err
}

func (b *backend) memAlloc(n int) (devPtr, error) {
	var p uint64
	err := b.do(func() error { return b.check("cuMemAlloc_v2", b.a.cuMemAlloc_v2(&p, uint64(n))) })
	return devPtr(p), err
}

func (b *backend) memFree(p devPtr) error {
	return b.do(func() error { return b.check("cuMemFree_v2", b.a.cuMemFree_v2(uint64(p))) })
}

// hostAlloc allocates page-locked host memory, which the DMA engines copy from while
// kernels run (pageable memory would make the async copies synchronous).
func (b *backend) hostAlloc(n int) ([]byte, error) {
	var p unsafe.Pointer
	err := b.do(func() error { return b.check("cuMemHostAlloc", b.a.cuMemHostAlloc(&p, uint64(n), 0)) })
	if err != nil {
		return nil, err
	}
	return unsafe.Slice((*byte)(p), n), nil
}

func (b *backend) hostFree(p []byte) error {
	return b.do(func() error { return b.check("cuMemFreeHost", b.a.cuMemFreeHost(unsafe.Pointer(unsafe.SliceData(p)))) })
}

// run queues ops on stream s, in order, in one trip to the driver thread.
func (b *backend) run(s int, ops []op) error {
	return b.do(func() error {
		st := b.streams[s]
		for _, o := range ops {
			if err := b.queue(st, o); err != nil {
				return err
			}
		}
		return nil
	})
}

func (b *backend) queue(st uintptr, o op) error {
	a := b.a
	switch o.kind {
	case opHtoD:
		return b.check("cuMemcpyHtoDAsync_v2", a.cuMemcpyHtoDAsync_v2(uint64(o.dev), unsafe.Pointer(unsafe.SliceData(o.host)), uint64(len(o.host)), st))
	case opDtoH:
		return b.check("cuMemcpyDtoHAsync_v2", a.cuMemcpyDtoHAsync_v2(unsafe.Pointer(unsafe.SliceData(o.host)), uint64(o.dev), uint64(len(o.host)), st))
	case opZero:
		return b.check("cuMemsetD32Async", a.cuMemsetD32Async(uint64(o.dev), 0, uint64(o.words), st))
	case opLaunch:
		if err := checkArgs(o.kernel, o.args); err != nil {
			return err
		}
		p := b.params
		for i, arg := range o.args {
			slot := unsafe.Pointer(&p.vals[i])
			switch v := arg.(type) {
			case devPtr:
				*(*uint64)(slot) = uint64(v)
			case uint64:
				*(*uint64)(slot) = v
			case uint32:
				*(*uint32)(slot) = v
			case float32:
				*(*float32)(slot) = v
			case float64:
				*(*float64)(slot) = v
			}
		}
		err := b.check("cuLaunchKernel", a.cuLaunchKernel(b.funcs[o.kernel], o.grid, 1, 1, o.block, 1, 1, 0, st, &p.ptrs[0], nil))
		if err != nil {
			return fmt.Errorf("%w (kernel %s)", err, kernels[o.kernel].name)
		}
		return nil
	}
	return fmt.Errorf("gpu: unknown stream operation %d", o.kind)
}

func (b *backend) sync(s int) error {
	return b.do(func() error { return b.check("cuStreamSynchronize", b.a.cuStreamSynchronize(b.streams[s])) })
}
