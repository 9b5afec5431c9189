// A fake libcuda.so.1 for gomerge's tests: the driver entry points package gpu calls,
// implemented on the host, so that the whole purego path runs in CI without a GPU.
//
// - "Device" memory is host memory; every copy and launch is checked against the
//   allocations it names (a copy out of bounds is CUDA_ERROR_INVALID_VALUE, a launch
//   or copy on a thread with no current context CUDA_ERROR_INVALID_CONTEXT, an async
//   copy from memory not allocated by cuMemHostAlloc CUDA_ERROR_INVALID_VALUE).
// - Streams are queues, run at cuStreamSynchronize, as a real device runs them later:
//   reading results before synchronising gives stale bytes, and a kernel's
//   parameters are copied at launch.
// - Kernels are the real ones: kernels.cu is compiled here for the host, and a launch
//   runs every thread of its grid in turn (exact, since no kernel uses shared memory
//   or barriers). cuModuleGetFunction finds only kernels whose .entry the loaded PTX
//   declares.
// - Errors are injected per call: FAKECUDA_FAIL=NAME[:N] makes the Nth call (default
//   the first) of entry point NAME return FAKECUDA_FAIL_CODE (default 999,
//   CUDA_ERROR_UNKNOWN). FAKECUDA_DEVICES=0 makes cuInit report no device;
//   FAKECUDA_SMS sets the multiprocessor count (default 2).
//
// Build: cc -shared -fPIC -O2 -ffp-contract=off -o libcuda.so.1 fakecuda.c

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint16_t u16;
typedef uint32_t u32;
typedef int32_t i32;
typedef uint64_t u64;
typedef int64_t i64;

static __thread u64 emu_thread, emu_nthreads;
#define GM_KERNEL static void
#define GM_FN static inline
#define GM_THREAD emu_thread
#define GM_NTHREADS emu_nthreads
#define GM_INC32(p) (*(p) += 1)
#define GM_MEMCPY memcpy
#include "../kernels.cu"

typedef int CUresult;
#define EXPORT __attribute__((visibility("default")))

enum {
	OK = 0,
	INVALID_VALUE = 1,
	NOT_INITIALIZED = 3,
	NO_DEVICE = 100,
	INVALID_DEVICE = 101,
	INVALID_CONTEXT = 201,
	INVALID_PTX = 218,
	INVALID_HANDLE = 400,
	NOT_FOUND = 500,
};

// Error injection.
static long fail_calls;
static int fail_here(const char *name) {
	const char *spec = getenv("FAKECUDA_FAIL");
	if (spec == NULL)
		return 0;
	size_t len = strcspn(spec, ":");
	if (strlen(name) != len || strncmp(spec, name, len) != 0)
		return 0;
	long nth = spec[len] == ':' ? atol(spec + len + 1) : 1;
	return ++fail_calls == nth;
}
static int fail_code(void) {
	const char *c = getenv("FAKECUDA_FAIL_CODE");
	return c ? atoi(c) : 999;
}
#define INJECT(name)                       \
	do {                                   \
		if (fail_here(name))               \
			return fail_code();            \
	} while (0)

static int initialized;
static int primary_ctx; // its address is the context handle
static int ctx_refs;
static __thread void *current_ctx;
#define NEED_INIT                        \
	do {                                 \
		if (!initialized)                \
			return NOT_INITIALIZED;      \
	} while (0)
#define NEED_CTX                          \
	do {                                  \
		NEED_INIT;                        \
		if (current_ctx != &primary_ctx)  \
			return INVALID_CONTEXT;       \
	} while (0)

static int env_int(const char *name, int def) {
	const char *v = getenv(name);
	return v ? atoi(v) : def;
}

// Allocations, device and pinned host, to check copies against.
typedef struct {
	char *p;
	size_t n;
	int pinned;
} alloc_t;
static alloc_t allocs[1024];

static int track(void *p, size_t n, int pinned) {
	for (int i = 0; i < 1024; i++)
		if (allocs[i].p == NULL) {
			allocs[i] = (alloc_t){p, n, pinned};
			return 1;
		}
	return 0;
}
static int untrack(void *p, int pinned) {
	for (int i = 0; i < 1024; i++)
		if (allocs[i].p == p && allocs[i].pinned == pinned) {
			allocs[i].p = NULL;
			return 1;
		}
	return 0;
}
static int inside(const void *p, size_t n, int pinned) {
	for (int i = 0; i < 1024; i++)
		if (allocs[i].p != NULL && allocs[i].pinned == pinned && (const char *)p >= allocs[i].p &&
		    (const char *)p + n <= allocs[i].p + allocs[i].n)
			return 1;
	return 0;
}

// Kernels, by name, with their parameters as the PTX declares them.
typedef struct {
	const char *name;
	const char *sig; // one letter per parameter: p pointer, u u32, U u64, f f32, d f64
	void (*run)(void **p);
} kernel_t;

#define P(i) ((void *)(uintptr_t) * (u64 *)p[i])
#define U32(i) (*(u32 *)p[i])
#define U64(i) (*(u64 *)p[i])
#define F32(i) (*(float *)p[i])
#define F64(i) (*(double *)p[i])
static void run_lerp(void **p) { gm_lerp(P(0), U32(1), P(2), U32(3), P(4), U32(5), F32(6), F32(7), U64(8)); }
static void run_lerp_fisher(void **p) {
	gm_lerp_fisher(P(0), U32(1), P(2), U32(3), P(4), U32(5), P(6), U32(7), F64(8), U64(9));
}
static void run_sq_diff_lanes(void **p) { gm_sq_diff_lanes(P(0), P(1), U32(2), P(3), U32(4), U64(5)); }
static void run_distance(void **p) { gm_distance(P(0), P(1), U32(2), P(3), U32(4), P(5), U32(6), U32(7), U64(8)); }
static void run_hist_hi(void **p) { gm_hist_hi(P(0), P(1), U32(2), P(3), U32(4), U64(5)); }
static void run_hist_lo(void **p) { gm_hist_lo(P(0), P(1), U32(2), P(3), U32(4), U32(5), U64(6)); }
static void run_count_eq(void **p) { gm_count_eq(P(0), P(1), U32(2), P(3), U32(4), U32(5), U64(6)); }
static void run_dare_abs(void **p) { gm_dare_abs(P(0), P(1), U32(2), P(3), U64(4), U64(5)); }
static void run_l1_sums(void **p) { gm_l1_sums(P(0), P(1), U64(2)); }
static void run_ties(void **p) { gm_ties(P(0), U32(1), P(2), U32(3), P(4), U32(5), F32(6), U64(7), U64(8)); }
static void run_task_vectors(void **p) {
	gm_task_vectors(P(0), U32(1), P(2), U32(3), P(4), U32(5), F32(6), U32(7), U64(8), U64(9));
}
static void run_linear(void **p) { gm_linear(P(0), U32(1), P(2), U32(3), F32(4), U64(5)); }
static void run_fisher(void **p) { gm_fisher(P(0), U32(1), P(2), U32(3), F32(4), U64(5)); }

static const kernel_t kernel_table[] = {
    {"gm_lerp", "pupupuffU", run_lerp},
    {"gm_lerp_fisher", "pupupupudU", run_lerp_fisher},
    {"gm_sq_diff_lanes", "ppupuU", run_sq_diff_lanes},
    {"gm_distance", "ppupupuuU", run_distance},
    {"gm_hist_hi", "ppupuU", run_hist_hi},
    {"gm_hist_lo", "ppupuuU", run_hist_lo},
    {"gm_count_eq", "ppupuuU", run_count_eq},
    {"gm_dare_abs", "ppupUU", run_dare_abs},
    {"gm_l1_sums", "ppU", run_l1_sums},
    {"gm_ties", "pupupufUU", run_ties},
    {"gm_task_vectors", "pupupufuUU", run_task_vectors},
    {"gm_linear", "pupufU", run_linear},
    {"gm_fisher", "pupufU", run_fisher},
};

// Streams: queues of operations, run at synchronisation.
enum { OP_COPY, OP_SET32, OP_LAUNCH };
typedef struct {
	int kind;
	void *dst;
	const void *src;
	size_t n;
	const kernel_t *k;
	u64 threads;
	unsigned char params[16][8];
} op_t;
typedef struct {
	int magic;
	op_t *ops;
	size_t n, cap;
} stream_t;
#define STREAM_MAGIC 0x5a5a

static CUresult push(stream_t *s, op_t o) {
	if (s == NULL || s->magic != STREAM_MAGIC)
		return INVALID_HANDLE;
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		op_t *ops = realloc(s->ops, cap * sizeof(op_t));
		if (ops == NULL)
			return 2;
		s->ops = ops;
		s->cap = cap;
	}
	s->ops[s->n++] = o;
	return OK;
}

static void run_ops(stream_t *s) {
	for (size_t i = 0; i < s->n; i++) {
		op_t *o = &s->ops[i];
		switch (o->kind) {
		case OP_COPY:
			memcpy(o->dst, o->src, o->n);
			break;
		case OP_SET32:
			for (size_t j = 0; j < o->n; j++)
				((u32 *)o->dst)[j] = 0;
			break;
		case OP_LAUNCH: {
			void *p[16];
			for (int j = 0; j < 16; j++)
				p[j] = o->params[j];
			emu_nthreads = o->threads;
			for (u64 t = 0; t < o->threads; t++) {
				emu_thread = t;
				o->k->run(p);
			}
			break;
		}
		}
	}
	s->n = 0;
}

typedef struct {
	char *image;
} module_t;

EXPORT CUresult cuGetErrorName(CUresult code, const char **name) {
	INJECT("cuGetErrorName");
	static const struct {
		int code;
		const char *name;
	} names[] = {{0, "CUDA_SUCCESS"},
	             {1, "CUDA_ERROR_INVALID_VALUE"},
	             {2, "CUDA_ERROR_OUT_OF_MEMORY"},
	             {3, "CUDA_ERROR_NOT_INITIALIZED"},
	             {100, "CUDA_ERROR_NO_DEVICE"},
	             {101, "CUDA_ERROR_INVALID_DEVICE"},
	             {201, "CUDA_ERROR_INVALID_CONTEXT"},
	             {218, "CUDA_ERROR_INVALID_PTX"},
	             {400, "CUDA_ERROR_INVALID_HANDLE"},
	             {500, "CUDA_ERROR_NOT_FOUND"},
	             {999, "CUDA_ERROR_UNKNOWN"}};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (names[i].code == code) {
			*name = names[i].name;
			return OK;
		}
	*name = NULL;
	return INVALID_VALUE;
}

EXPORT CUresult cuInit(unsigned flags) {
	INJECT("cuInit");
	if (flags != 0)
		return INVALID_VALUE;
	if (env_int("FAKECUDA_DEVICES", 1) == 0)
		return NO_DEVICE;
	initialized = 1;
	return OK;
}

EXPORT CUresult cuDriverGetVersion(int *v) {
	INJECT("cuDriverGetVersion");
	*v = 12040;
	return OK;
}

EXPORT CUresult cuDeviceGetCount(int *n) {
	INJECT("cuDeviceGetCount");
	NEED_INIT;
	*n = env_int("FAKECUDA_DEVICES", 1);
	return OK;
}

EXPORT CUresult cuDeviceGet(int *dev, int ordinal) {
	INJECT("cuDeviceGet");
	NEED_INIT;
	if (ordinal < 0 || ordinal >= env_int("FAKECUDA_DEVICES", 1))
		return INVALID_DEVICE;
	*dev = ordinal;
	return OK;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, int dev) {
	INJECT("cuDeviceGetName");
	NEED_INIT;
	snprintf(name, len, "gomerge fake CUDA device %d", dev);
	return OK;
}

EXPORT CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
	INJECT("cuDeviceGetAttribute");
	NEED_INIT;
	(void)dev;
	switch (attr) {
	case 16:
		*v = env_int("FAKECUDA_SMS", 2);
		return OK;
	case 75:
		*v = 8;
		return OK;
	case 76:
		*v = 0;
		return OK;
	}
	return INVALID_VALUE;
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) {
	INJECT("cuDeviceTotalMem_v2");
	NEED_INIT;
	(void)dev;
	*bytes = (size_t)1 << 30;
	return OK;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) {
	INJECT("cuDevicePrimaryCtxRetain");
	NEED_INIT;
	(void)dev;
	ctx_refs++;
	*ctx = &primary_ctx;
	return OK;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(int dev) {
	INJECT("cuDevicePrimaryCtxRelease_v2");
	NEED_INIT;
	(void)dev;
	if (ctx_refs == 0)
		return INVALID_CONTEXT;
	ctx_refs--;
	return OK;
}

EXPORT CUresult cuCtxSetCurrent(void *ctx) {
	INJECT("cuCtxSetCurrent");
	NEED_INIT;
	if (ctx != NULL && ctx != &primary_ctx)
		return INVALID_CONTEXT;
	current_ctx = ctx;
	return OK;
}

EXPORT CUresult cuModuleLoadDataEx(void **mod, const void *image, unsigned nopts, int *opts, void **vals) {
	if (fail_here("cuModuleLoadDataEx")) {
		for (unsigned i = 0; i < nopts; i++)
			if (opts[i] == 5) // CU_JIT_ERROR_LOG_BUFFER
				for (unsigned j = 0; j < nopts; j++)
					if (opts[j] == 6) // its size
						snprintf(vals[i], (size_t)(uintptr_t)vals[j], "fake ptxas: injected failure");
		return fail_code();
	}
	NEED_CTX;
	if (strstr(image, ".version") == NULL || strstr(image, ".target") == NULL)
		return INVALID_PTX;
	module_t *m = malloc(sizeof *m);
	m->image = strdup(image);
	*mod = m;
	return OK;
}

EXPORT CUresult cuModuleGetFunction(const kernel_t **fn, module_t *mod, const char *name) {
	INJECT("cuModuleGetFunction");
	NEED_CTX;
	char entry[256];
	snprintf(entry, sizeof entry, ".entry %s(", name);
	if (mod == NULL || strstr(mod->image, entry) == NULL)
		return NOT_FOUND;
	for (size_t i = 0; i < sizeof kernel_table / sizeof kernel_table[0]; i++)
		if (strcmp(kernel_table[i].name, name) == 0) {
			*fn = &kernel_table[i];
			return OK;
		}
	return NOT_FOUND;
}

EXPORT CUresult cuModuleUnload(module_t *mod) {
	INJECT("cuModuleUnload");
	NEED_CTX;
	free(mod->image);
	free(mod);
	return OK;
}

EXPORT CUresult cuMemAlloc_v2(u64 *p, size_t n) {
	INJECT("cuMemAlloc_v2");
	NEED_CTX;
	void *q = aligned_alloc(256, (n + 255) & ~(size_t)255);
	if (q == NULL || !track(q, n, 0))
		return 2;
	memset(q, 0xa5, n); // device memory starts as garbage, not zeros
	*p = (u64)(uintptr_t)q;
	return OK;
}

EXPORT CUresult cuMemFree_v2(u64 p) {
	INJECT("cuMemFree_v2");
	NEED_CTX;
	if (!untrack((void *)(uintptr_t)p, 0))
		return INVALID_VALUE;
	free((void *)(uintptr_t)p);
	return OK;
}

EXPORT CUresult cuMemHostAlloc(void **p, size_t n, unsigned flags) {
	INJECT("cuMemHostAlloc");
	NEED_CTX;
	(void)flags;
	void *q = aligned_alloc(4096, (n + 4095) & ~(size_t)4095);
	if (q == NULL || !track(q, n, 1))
		return 2;
	*p = q;
	return OK;
}

EXPORT CUresult cuMemFreeHost(void *p) {
	INJECT("cuMemFreeHost");
	NEED_CTX;
	if (!untrack(p, 1))
		return INVALID_VALUE;
	free(p);
	return OK;
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(u64 dst, const void *src, size_t n, stream_t *s) {
	INJECT("cuMemcpyHtoDAsync_v2");
	NEED_CTX;
	if (!inside((void *)(uintptr_t)dst, n, 0) || !inside(src, n, 1))
		return INVALID_VALUE;
	return push(s, (op_t){.kind = OP_COPY, .dst = (void *)(uintptr_t)dst, .src = src, .n = n});
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, u64 src, size_t n, stream_t *s) {
	INJECT("cuMemcpyDtoHAsync_v2");
	NEED_CTX;
	if (!inside(dst, n, 1) || !inside((void *)(uintptr_t)src, n, 0))
		return INVALID_VALUE;
	return push(s, (op_t){.kind = OP_COPY, .dst = dst, .src = (void *)(uintptr_t)src, .n = n});
}

EXPORT CUresult cuMemsetD32Async(u64 dst, unsigned v, size_t n, stream_t *s) {
	INJECT("cuMemsetD32Async");
	NEED_CTX;
	if (v != 0 || !inside((void *)(uintptr_t)dst, 4 * n, 0))
		return INVALID_VALUE;
	return push(s, (op_t){.kind = OP_SET32, .dst = (void *)(uintptr_t)dst, .n = n});
}

EXPORT CUresult cuStreamCreate(stream_t **s, unsigned flags) {
	INJECT("cuStreamCreate");
	NEED_CTX;
	(void)flags;
	*s = calloc(1, sizeof **s);
	(*s)->magic = STREAM_MAGIC;
	return OK;
}

EXPORT CUresult cuStreamDestroy_v2(stream_t *s) {
	INJECT("cuStreamDestroy_v2");
	NEED_CTX;
	if (s == NULL || s->magic != STREAM_MAGIC)
		return INVALID_HANDLE;
	run_ops(s); // queued work completes, as on a device
	s->magic = 0;
	free(s->ops);
	free(s);
	return OK;
}

EXPORT CUresult cuStreamSynchronize(stream_t *s) {
	if (fail_here("cuStreamSynchronize")) {
		s->n = 0; // the queued work is abandoned, as after a device error
		return fail_code();
	}
	NEED_CTX;
	if (s == NULL || s->magic != STREAM_MAGIC)
		return INVALID_HANDLE;
	run_ops(s);
	return OK;
}

EXPORT CUresult cuLaunchKernel(const kernel_t *k, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                               unsigned bz, unsigned shmem, stream_t *s, void **params, void **extra) {
	INJECT("cuLaunchKernel");
	NEED_CTX;
	if (k == NULL || gx == 0 || bx == 0 || gy != 1 || gz != 1 || by != 1 || bz != 1 || bx > 1024 || shmem != 0 ||
	    extra != NULL || params == NULL)
		return INVALID_VALUE;
	op_t o = {.kind = OP_LAUNCH, .k = k, .threads = (u64)gx * bx};
	for (int i = 0; k->sig[i]; i++) {
		char c = k->sig[i];
		memcpy(o.params[i], params[i], c == 'u' || c == 'f' ? 4 : 8);
	}
	return push(s, o);
}
