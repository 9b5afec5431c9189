// gomerge's CUDA kernels. Each one is a line-by-line port of the pure-Go reference
// in merge/ (named beside it) and must give the same bits: every float operation is
// written out in the reference's order, products and sums are rounded separately
// (this file is compiled with -ffp-contract=off, and clang then marks every add and mul
// ".rn", which ptxas may not fuse), and nothing calls a math library.
//
// The file is plain C inside a few macros, so that gpu/testdata/fakecuda.c can compile
// the very same kernels for the host: the fake driver runs every thread of a launch in
// turn. That is only exact because no kernel uses shared memory or barriers; the one
// cross-thread operation is an atomic increment of an integer histogram, which any
// order adds exactly. Keep it that way.
//
// Data layout: every kernel works on one staged chunk of a tensor, n elements long,
// whose first element has flat index off in the tensor. Reductions write one partial
// result per 65,536-element block of the chunk (merge.ChunkElems), which is what
// gomerge's CPU engine adds in block order; staged chunks start on a block boundary.

#if defined(__CUDA__)
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
typedef long long i64;
#define GM_KERNEL extern "C" __attribute__((global)) void
#define GM_FN static __attribute__((device)) inline
// The global thread index and count of a one-dimensional launch.
#define GM_THREAD \
	((u64)__nvvm_read_ptx_sreg_ctaid_x() * (u64)__nvvm_read_ptx_sreg_ntid_x() + (u64)__nvvm_read_ptx_sreg_tid_x())
#define GM_NTHREADS ((u64)__nvvm_read_ptx_sreg_nctaid_x() * (u64)__nvvm_read_ptx_sreg_ntid_x())
#define GM_INC32(p) __nvvm_atom_add_gen_i((int *)(p), 1)
#define GM_MEMCPY __builtin_memcpy
#else
// The includer (the fake driver) defines u16..i64, GM_KERNEL, GM_FN, GM_THREAD,
// GM_NTHREADS, GM_INC32 and GM_MEMCPY for its host emulation.
#endif

// Element types, as gpu/gpu.go numbers them.
#define GM_F16 1
#define GM_BF16 2
#define GM_F32 3
#define GM_F64 4

#define GM_BLOCK 65536 // merge.ChunkElems: the unit of every partial sum
#define GM_LANES 8     // merge's lanes: SFA's statistics keep 8 partial sums per block

// How a model's task vector is trimmed (gm_model.keep).
#define GM_KEEP_NONE 0
#define GM_KEEP_ALL 1
#define GM_KEEP_CUT 2  // ranks above cut 0 (TIES)
#define GM_KEEP_BAND 3 // ranks above cut 1 and not above cut 0 (breadcrumbs)
#define GM_KEEP_DARE 4 // the element's random draw is below threshold (DARE)

// gm_model describes one model of a multi-model kernel; gpu/gpu.go's modelDesc
// mirrors it field for field (88 bytes, natural alignment on both sides).
typedef struct {
	u64 x;        // device pointer to the model's staged chunk
	u64 aux;      // device pointer to its Fisher's staged chunk (gm_fisher)
	i64 tie_end0; // cut 0: elements with magnitude bits t0 rank above it when their
	i64 tie_end1; //   flat index is below tie_end0; likewise cut 1
	u64 key;      // DARE: the tensor's key (merge.dareKey)
	u64 threshold;
	u32 t0, t1; // cut 0 and 1: the magnitude bit pattern at the boundary
	u32 dt, aux_dt;
	u32 keep; // GM_KEEP_*
	u32 lane; // DARE: the model's index i
	float w;
	float scale; // DARE's rescale factor, used when has_scale
	u32 has_scale;
	u32 pad;
} gm_model;

typedef char gm_model_is_88_bytes[sizeof(gm_model) == 88 ? 1 : -1];

GM_FN float gm_f32(u32 b) {
	float f;
	GM_MEMCPY(&f, &b, 4);
	return f;
}

GM_FN u32 gm_bits(float f) {
	u32 b;
	GM_MEMCPY(&b, &f, 4);
	return b;
}

// dtype.F16ToFloat32.
GM_FN float gm_f16_to_f32(u32 h) {
	u32 sign = (h & 0x8000) << 16;
	u32 exp = (h >> 10) & 0x1f;
	u32 man = h & 0x3ff;
	if (exp == 0x1f)
		return gm_f32(sign | 0x7f800000 | man << 13);
	if (exp == 0) {
		float v = (float)man * (1.0f / 16777216.0f); // exact
		if (sign != 0)
			v = -v;
		return v;
	}
	return gm_f32(sign | (exp + 127 - 15) << 23 | man << 13);
}

// dtype.Float32ToBF16: round to nearest even, a NaN stays a quiet NaN.
GM_FN u16 gm_f32_to_bf16(float f) {
	u32 b = gm_bits(f);
	if ((b & 0x7fffffff) > 0x7f800000)
		return (u16)((b >> 16) | 0x0040);
	b += 0x7fff + ((b >> 16) & 1);
	return (u16)(b >> 16);
}

// dtype.Float32ToF16: round to nearest even with gradual underflow.
GM_FN u16 gm_f32_to_f16(float f) {
	u32 b = gm_bits(f);
	u32 sign = (b >> 16) & 0x8000;
	i32 exp = (i32)((b >> 23) & 0xff);
	u32 man = b & 0x7fffff;
	if (exp == 0xff) {
		if (man == 0)
			return (u16)(sign | 0x7c00);
		return (u16)(sign | 0x7c00 | 0x0200 | (man >> 13));
	}
	i32 e = exp - 127 + 15;
	if (e >= 0x1f)
		return (u16)(sign | 0x7c00);
	if (e <= 0) {
		if (e < -10)
			return (u16)sign;
		u32 m = man | 0x800000;
		u32 shift = (u32)(14 - e);
		u32 r = m >> shift;
		u32 rem = m & ((1u << shift) - 1);
		u32 half = 1u << (shift - 1);
		if (rem > half || (rem == half && (r & 1) == 1))
			r++;
		return (u16)(sign | r);
	}
	u32 r = (u32)e << 10 | man >> 13;
	u32 rem = man & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (r & 1) == 1))
		r++;
	return (u16)(sign | r);
}

// dtype.Decode of element i.
GM_FN float gm_load(const void *p, u32 dt, u64 i) {
	switch (dt) {
	case GM_BF16:
		return gm_f32((u32)((const u16 *)p)[i] << 16);
	case GM_F16:
		return gm_f16_to_f32(((const u16 *)p)[i]);
	case GM_F32:
		return ((const float *)p)[i];
	default:
		return (float)((const double *)p)[i]; // round to nearest even
	}
}

// dtype.Encode of element i.
GM_FN void gm_store(void *p, u32 dt, u64 i, float v) {
	switch (dt) {
	case GM_BF16:
		((u16 *)p)[i] = gm_f32_to_bf16(v);
		break;
	case GM_F16:
		((u16 *)p)[i] = gm_f32_to_f16(v);
		break;
	case GM_F32:
		((float *)p)[i] = v;
		break;
	default:
		((double *)p)[i] = (double)v;
	}
}

// merge.absBits: the bits of |v|, which order like |v| (NaN above +Inf).
GM_FN u32 gm_abs_bits(float v) { return gm_bits(v) & 0x7fffffffu; }

// merge.splitmix64.
GM_FN u64 gm_splitmix64(u64 x) {
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

// merge.dareDraw: element e's uniform draw for model lane.
GM_FN u64 gm_dare_draw(u64 key, u32 lane, u64 e) {
	return gm_splitmix64(key ^ gm_splitmix64(((u64)lane + 1) * 0xd1b54a32d192ed03ull ^ e * 0x9e3779b97f4a7c15ull));
}

// merge.cut.above, with the tie rule resolved to a flat index: of the elements equal
// to the boundary pattern t, those before tie_end rank above.
GM_FN int gm_above(u32 mag, u64 e, u32 t, i64 tie_end) { return mag > t || (mag == t && (i64)e < tie_end); }

// Whether model m keeps element e (flat index), whose |δ| has bits mag.
GM_FN int gm_keep(const gm_model *m, u32 mag, u64 e) {
	switch (m->keep) {
	case GM_KEEP_ALL:
		return 1;
	case GM_KEEP_CUT:
		return gm_above(mag, e, m->t0, m->tie_end0);
	case GM_KEEP_BAND:
		return gm_above(mag, e, m->t1, m->tie_end1) && !gm_above(mag, e, m->t0, m->tie_end0);
	case GM_KEEP_DARE:
		return gm_dare_draw(m->key, m->lane, e) < m->threshold;
	default:
		return 0;
	}
}

// The weighted, trimmed delta of model m at chunk element j over base value b:
// merge.trimWeighted (TIES) and the per-model term of merge.addTaskVectors.
GM_FN float gm_term(const gm_model *m, float b, u64 j, u64 off) {
	float delta = gm_load((const void *)m->x, m->dt, j) - b;
	if (!gm_keep(m, gm_abs_bits(delta), off + j))
		return 0.0f;
	if (m->has_scale)
		delta = m->scale * delta;
	return m->w * delta;
}

// merge.Lerp (SFA): out = float32(b·a) + float32(c·x).
GM_KERNEL gm_lerp(void *out, u32 odt, const void *a, u32 adt, const void *x, u32 xdt, float b, float c, u64 n) {
	for (u64 j = GM_THREAD; j < n; j += GM_NTHREADS) {
		float p = b * gm_load(a, adt, j);
		float q = c * gm_load(x, xdt, j);
		gm_store(out, odt, j, p + q);
	}
}

// merge.LerpPerElement (SFA with a Fisher): β_j = min(1, max(0, η·F_j)) in float64 as
// Go's min and max define them (NaN wins; max(0, −0) = +0).
GM_KERNEL gm_lerp_fisher(void *out, u32 odt, const void *a, u32 adt, const void *x, u32 xdt, const void *f, u32 fdt,
                         double eta, u64 n) {
	for (u64 j = GM_THREAD; j < n; j += GM_NTHREADS) {
		double beta = eta * (double)gm_load(f, fdt, j);
		if (beta == beta) { // not NaN
			if (!(beta > 0.0))
				beta = 0.0;
			else if (!(beta < 1.0))
				beta = 1.0;
		}
		float b = (float)beta;
		float c = (float)(1.0 - beta);
		float p = b * gm_load(a, adt, j);
		float q = c * gm_load(x, xdt, j);
		gm_store(out, odt, j, p + q);
	}
}

// merge.sumSqDiff per block: thread t sums lane t%8 of block t/8, Σ (x−y)² in float64
// over the block's elements j ≡ lane (mod 8), in order. The host combines the eight
// lanes as merge.combineLanes does.
GM_KERNEL gm_sq_diff_lanes(double *part, const void *x, u32 xdt, const void *y, u32 ydt, u64 n) {
	u64 blocks = (n + GM_BLOCK - 1) / GM_BLOCK;
	for (u64 t = GM_THREAD; t < blocks * GM_LANES; t += GM_NTHREADS) {
		u64 start = (t / GM_LANES) * GM_BLOCK, end = start + GM_BLOCK;
		if (end > n)
			end = n;
		double s = 0.0;
		for (u64 j = start + t % GM_LANES; j < end; j += GM_LANES) {
			double d = (double)gm_load(x, xdt, j) - (double)gm_load(y, ydt, j);
			double sq = d * d;
			s = s + sq;
		}
		part[t] = s;
	}
}

// merge.distanceKernel's Observe per block (one thread per block, in order): Σ (a−b)²,
// Σ a², Σ b² and, with a base, Σ (a−base)(b−base), Σ (a−base)², Σ (b−base)².
GM_KERNEL gm_distance(double *part, const void *a, u32 adt, const void *b, u32 bdt, const void *base, u32 basedt,
                      u32 with_base, u64 n) {
	u64 blocks = (n + GM_BLOCK - 1) / GM_BLOCK;
	for (u64 t = GM_THREAD; t < blocks; t += GM_NTHREADS) {
		u64 start = t * GM_BLOCK, end = start + GM_BLOCK;
		if (end > n)
			end = n;
		double d2 = 0.0, a2 = 0.0, b2 = 0.0, dot = 0.0, ta2 = 0.0, tb2 = 0.0;
		for (u64 j = start; j < end; j++) {
			double x = (double)gm_load(a, adt, j), y = (double)gm_load(b, bdt, j);
			double p = (x - y) * (x - y);
			d2 = d2 + p;
			p = x * x;
			a2 = a2 + p;
			p = y * y;
			b2 = b2 + p;
			if (with_base) {
				double z = (double)gm_load(base, basedt, j);
				double u = x - z, v = y - z;
				p = u * v;
				dot = dot + p;
				p = u * u;
				ta2 = ta2 + p;
				p = v * v;
				tb2 = tb2 + p;
			}
		}
		double *o = part + 6 * t;
		o[0] = d2, o[1] = a2, o[2] = b2, o[3] = dot, o[4] = ta2, o[5] = tb2;
	}
}

// Pass 1 of merge's rank selection: a histogram of the top 16 bits of |x − base|.
GM_KERNEL gm_hist_hi(u32 *hist, const void *x, u32 xdt, const void *base, u32 bdt, u64 n) {
	for (u64 j = GM_THREAD; j < n; j += GM_NTHREADS) {
		u32 mag = gm_abs_bits(gm_load(x, xdt, j) - gm_load(base, bdt, j));
		GM_INC32(&hist[mag >> 16]);
	}
}

// Pass 2: a histogram of the low 16 bits of the magnitudes whose top bits are bin.
GM_KERNEL gm_hist_lo(u32 *hist, const void *x, u32 xdt, const void *base, u32 bdt, u32 bin, u64 n) {
	for (u64 j = GM_THREAD; j < n; j += GM_NTHREADS) {
		u32 mag = gm_abs_bits(gm_load(x, xdt, j) - gm_load(base, bdt, j));
		if (mag >> 16 == bin)
			GM_INC32(&hist[mag & 0xffff]);
	}
}

// Pass 3: how many magnitudes in each block equal t.
GM_KERNEL gm_count_eq(u32 *counts, const void *x, u32 xdt, const void *base, u32 bdt, u32 t, u64 n) {
	for (u64 j = GM_THREAD; j < n; j += GM_NTHREADS) {
		u32 mag = gm_abs_bits(gm_load(x, xdt, j) - gm_load(base, bdt, j));
		if (mag == t)
			GM_INC32(&counts[j / GM_BLOCK]);
	}
}

// DARE's L1 pass, step 1: |x − base| as float32 bits with the sign bit set where the
// element is dropped, so that step 2 can add in order without redoing the draws.
GM_KERNEL gm_dare_abs(u32 *v, const void *base, u32 bdt, const gm_model *m, u64 off, u64 n) {
	for (u64 j = GM_THREAD; j < n; j += GM_NTHREADS) {
		u32 mag = gm_abs_bits(gm_load((const void *)m->x, m->dt, j) - gm_load(base, bdt, j));
		u32 drop = gm_keep(m, mag, off + j) ? 0 : 0x80000000u;
		v[j] = mag | drop;
	}
}

// DARE's L1 pass, step 2 (merge.l1Pass with DARE's drop, merge.l1Lanes): thread t
// sums lane t%8 of block t/8, Σ |δ| into part[2t] and Σ |δ| over the kept elements
// into part[2t+1], in float64 over the block's elements j ≡ lane (mod 8), in order.
// The host combines the eight lanes as merge.combineLanes does.
GM_KERNEL gm_l1_sums(double *part, const u32 *v, u64 n) {
	u64 blocks = (n + GM_BLOCK - 1) / GM_BLOCK;
	for (u64 t = GM_THREAD; t < blocks * GM_LANES; t += GM_NTHREADS) {
		u64 start = (t / GM_LANES) * GM_BLOCK, end = start + GM_BLOCK;
		if (end > n)
			end = n;
		double all = 0.0, kept = 0.0;
		for (u64 j = start + t % GM_LANES; j < end; j += GM_LANES) {
			double a = (double)gm_f32(v[j] & 0x7fffffffu);
			all = all + a;
			if ((v[j] >> 31) == 0)
				kept = kept + a;
		}
		part[2 * t] = all;
		part[2 * t + 1] = kept;
	}
}

// merge.tiesKernel's merge (trimWeighted, the sum in model order, tiesCombine): elect
// the sign of Σ Δ_i (0 and NaN → +), add the agreeing Δ_i and their weights, divide
// (a divisor of ±0 becomes 1), scale by λ and add to the base. The terms are computed
// twice rather than kept in a per-thread array of unbounded size; they are the same
// bits both times.
GM_KERNEL gm_ties(void *out, u32 odt, const void *base, u32 bdt, const gm_model *models, u32 m, float lambda, u64 off,
                  u64 n) {
	for (u64 j = GM_THREAD; j < n; j += GM_NTHREADS) {
		float b = gm_load(base, bdt, j);
		float sum = gm_term(&models[0], b, j, off);
		for (u32 i = 1; i < m; i++)
			sum = sum + gm_term(&models[i], b, j, off);
		u32 sb = gm_bits(sum), smag = sb & 0x7fffffffu;
		u32 sign = ((sb >> 31) != 0 && smag != 0 && smag <= 0x7f800000u) ? 0x80000000u : 0;
		float num = 0.0f, den = 0.0f;
		for (u32 i = 0; i < m; i++) {
			u32 db = gm_bits(gm_term(&models[i], b, j, off));
			u32 mask = ((db << 1) != 0 && ((db ^ sign) >> 31) == 0) ? 0xffffffffu : 0;
			num = num + gm_f32(db & mask);
			den = den + gm_f32(gm_bits(models[i].w) & mask);
		}
		if ((gm_bits(den) << 1) == 0)
			den = 1.0f;
		float q = num / den;
		float r = lambda * q;
		gm_store(out, odt, j, b + r);
	}
}

// merge.addTaskVectors (task arithmetic, DARE, breadcrumbs): base + λ·Σ Δ_i, where
// with ties_sign only the Δ_i whose sign matches the elected one are added.
GM_KERNEL gm_task_vectors(void *out, u32 odt, const void *base, u32 bdt, const gm_model *models, u32 m, float lambda,
                          u32 ties_sign, u64 off, u64 n) {
	for (u64 j = GM_THREAD; j < n; j += GM_NTHREADS) {
		float b = gm_load(base, bdt, j);
		float sum = 0.0f;
		for (u32 i = 0; i < m; i++)
			sum = sum + gm_term(&models[i], b, j, off);
		if (ties_sign) {
			// merge.electedSign and merge.agreeMask, as gm_ties has them.
			u32 sb = gm_bits(sum), smag = sb & 0x7fffffffu;
			u32 sign = ((sb >> 31) != 0 && smag != 0 && smag <= 0x7f800000u) ? 0x80000000u : 0;
			sum = 0.0f;
			for (u32 i = 0; i < m; i++) {
				u32 db = gm_bits(gm_term(&models[i], b, j, off));
				u32 mask = ((db << 1) != 0 && ((db ^ sign) >> 31) == 0) ? 0xffffffffu : 0;
				sum = sum + gm_f32(db & mask);
			}
		}
		float r = lambda * sum;
		gm_store(out, odt, j, b + r);
	}
}

// merge.linearKernel: Σ float32(w_i·x_i) in model order, divided by den.
GM_KERNEL gm_linear(void *out, u32 odt, const gm_model *models, u32 m, float den, u64 n) {
	for (u64 j = GM_THREAD; j < n; j += GM_NTHREADS) {
		float sum = 0.0f;
		for (u32 i = 0; i < m; i++) {
			float p = models[i].w * gm_load((const void *)models[i].x, models[i].dt, j);
			sum = sum + p;
		}
		gm_store(out, odt, j, sum / den);
	}
}

// merge.fisherKernel: Σ f_i·x_i / Σ f_i with f_i = float32(w_i·max(F_i, ε)), Go's max
// (a NaN Fisher gives NaN).
GM_KERNEL gm_fisher(void *out, u32 odt, const gm_model *models, u32 m, float eps, u64 n) {
	for (u64 j = GM_THREAD; j < n; j += GM_NTHREADS) {
		float num = 0.0f, den = 0.0f;
		for (u32 i = 0; i < m; i++) {
			float fi = gm_load((const void *)models[i].aux, models[i].aux_dt, j);
			if (fi == fi && !(fi > eps))
				fi = eps;
			float f = models[i].w * fi;
			float p = f * gm_load((const void *)models[i].x, models[i].dt, j);
			num = num + p;
			den = den + f;
		}
		gm_store(out, odt, j, num / den);
	}
}
