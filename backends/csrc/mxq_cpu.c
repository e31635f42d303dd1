/* MXFP8 quantize / dequantize on the CPU, byte-exact with mxquant/reference.py.
 *
 * Plain C99 with no Python or libtorch dependency: mxquant/backends/cpu_native.py loads the
 * shared library with ctypes and passes raw data pointers (ctypes releases the GIL for the
 * call). Rows are split over `nthreads` POSIX threads (a pool kept between calls). On x86-64 with GCC or Clang the row
 * workers are compiled several times (target_clones) and the best one for the CPU is chosen
 * at load time, so one build runs on any x86-64.
 *
 * Exactness: every step is integer arithmetic on fp32 bit patterns, or an IEEE operation
 * whose result is exact or rounds to nearest-even exactly as the reference's does (one fp32
 * add that rounds a value onto the fp8 subnormal grid; one fp32 multiply by a power of two in
 * dequantize). Build without -ffast-math: it must keep IEEE semantics and subnormals.
 */
#define _DEFAULT_SOURCE /* madvise */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(MXQ_NO_CLONES)
/* No avx512f clone: on a 16-core Xeon (AVX-512) it was the slowest (2048x4096 bf16, one thread:
 * 10.0-10.9 ms against the avx2 clone's 4.5; fp32 and 16 threads: 1.0-1.2x; avx512f without BW
 * has no 8/16-bit vector ops), and an x86-64-v4 clone was no faster than avx2 there (bf16 5.2
 * ms). docs/performance.md. */
#define MXQ_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MXQ_CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

#define BLOCK 32
enum { IN_F32 = 0, IN_BF16 = 1, IN_F16 = 2 };
enum { E4M3 = 0, E5M2 = 1 };
enum { RCEIL = 0, FLOOR = 1, CT = 2 };

INLINE uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
INLINE float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* Byte offset of scale (row, col) in the 128x4 swizzled layout (docs/semantics.md). */
INLINE int64_t swz(int64_t row, int64_t col, int64_t padded_cols) {
    return ((row >> 7) * (padded_cols >> 2) + (col >> 2)) * 512 + (row & 31) * 16 + ((row >> 5) & 3) * 4 + (col & 3);
}

/* fp16 bits -> fp32 bits, exact (a subnormal goes through an exact int -> float conversion). */
INLINE uint32_t f16_to_f32(uint32_t h) {
    uint32_t sign = (h & 0x8000u) << 16, em = h & 0x7fffu;
    uint32_t normal = (em << 13) + (112u << 23);
    uint32_t special = (em << 13) | 0x7f800000u;
    uint32_t sub = fbits((float)(int32_t)em) - (24u << 23);
    uint32_t r = em >= 0x7c00u ? special : (em >= 0x400u ? normal : (em ? sub : 0u));
    return r | sign;
}

/* One block of 32 input elements as fp32 bits. */
INLINE void load_block(const char *src, int in_dtype, uint32_t *b) {
    if (in_dtype == IN_F32) {
        memcpy(b, src, BLOCK * 4);
    } else if (in_dtype == IN_BF16) {
        const uint16_t *p = (const uint16_t *)src;
        for (int i = 0; i < BLOCK; i++) b[i] = (uint32_t)p[i] << 16;
    } else {
        const uint16_t *p = (const uint16_t *)src;
        for (int i = 0; i < BLOCK; i++) b[i] = f16_to_f32(p[i]);
    }
}

typedef struct {
    uint32_t emax, rebias, shift, half, min_normal, max_bits, magic;
} fmt_t;

static const fmt_t FMT[2] = {
    /* e4m3: bias 7, 3 mantissa bits, 2^-6 smallest normal, 448 largest, subnormal step 2^-9 */
    {8, 120u << 23, 20, 0x7ffffu, 121u << 23, 0x43e00000u, 141u << 23},
    /* e5m2: bias 15, 2 mantissa bits, 2^-14 smallest normal, 57344 largest, step 2^-16 */
    {15, 112u << 23, 21, 0xfffffu, 113u << 23, 0x47600000u, 134u << 23},
};

/* Shared exponent s from the amax bits (reference.scale_exponents), clamped to [-127, 127]. */
INLINE int32_t scale_exp(uint32_t amax, const fmt_t *f, int mode) {
    int32_t s = (int32_t)(amax >> 23) - 127 - (int32_t)f->emax;
    uint32_t m = amax & 0x7fffffu;
    if (mode == RCEIL) s += m > 0x600000u;
    else if (mode == CT) s += m >= 0x600000u;
    return s < -127 ? -127 : (s > 127 ? 127 : s);
}

/* Fast path of encode_block, for a block whose every |x| * 2^-s is an fp8 normal (or
 * clamps to M): shift the exponent, clamp, round the mantissa to nearest even. */
INLINE void encode_block_normal(const uint32_t *b, uint8_t *out, int32_t s, const fmt_t *f) {
    uint32_t s23 = (uint32_t)s << 23;
    for (int i = 0; i < BLOCK; i++) {
        uint32_t u = (b[i] & 0x7fffffffu) - s23, sign = (b[i] >> 24) & 0x80u;
        u = u < f->max_bits ? u : f->max_bits;
        out[i] = (uint8_t)(((u - f->rebias + f->half + ((u >> f->shift) & 1u)) >> f->shift) | sign);
    }
}

/* Elements of one finite block: q = RNE(clamp(x * 2^-s, -M, M)), sign kept. */
INLINE void encode_block(const uint32_t *b, uint8_t *out, int32_t s, const fmt_t *f) {
    uint32_t s23 = (uint32_t)s << 23, sub_shift = (uint32_t)(-149 - s) << 23;
    float magic = bitsf(f->magic);
    for (int i = 0; i < BLOCK; i++) {
        uint32_t a = b[i] & 0x7fffffffu, sign = (b[i] >> 24) & 0x80u;
        /* |x| * 2^-s as fp32 bits: shift the exponent (normal x), or renormalise a subnormal x
         * through an exact int -> float conversion of its mantissa. Below 2^-126 it is 0.
         * No int32 overflow: the exponent field stays within [-149, 135]. */
        int32_t yn = (int32_t)(a - s23);
        int32_t ys = (int32_t)(fbits((float)(int32_t)a) + sub_shift);
        int32_t y = (a >> 23) ? yn : (a ? ys : 0); /* (ys would wrap for a = 0 and s > 106) */
        uint32_t u = y < 0x800000 ? 0u : (uint32_t)y;
        u = u < f->max_bits ? u : f->max_bits;
        uint32_t normal = (u - f->rebias + f->half + ((u >> f->shift) & 1u)) >> f->shift;
        uint32_t sub = fbits(bitsf(u) + magic) - f->magic; /* RNE onto the subnormal grid */
        out[i] = (uint8_t)((u >= f->min_normal ? normal : sub) | sign);
    }
}

typedef struct {
    const char *x;
    int64_t r0, r1, k, row_stride_bytes;
    uint8_t *data, *scale;
    int in_dtype, elem, mode, swizzled;
} qjob_t;

/* Rows r0..r1 of one job; in_dtype and elem are constants at each call site below, so
 * every (input, element) pair gets its own specialised loop. */
INLINE void quantize_rows_impl(const qjob_t *j, int in_dtype, int elem) {
    const fmt_t *f = &FMT[elem];
    int64_t nb = j->k / BLOCK, pcols = (nb + 3) & ~(int64_t)3;
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    uint32_t b[BLOCK];
    for (int64_t r = j->r0; r < j->r1; r++) {
        const char *row = j->x + r * j->row_stride_bytes;
        for (int64_t c = 0; c < nb; c++) {
            load_block(row + c * BLOCK * esize, in_dtype, b);
            uint8_t *out = j->data + (r * nb + c) * BLOCK;
            uint32_t amax = 0, amin = 0x7fffffffu;
            for (int i = 0; i < BLOCK; i++) {
                uint32_t a = b[i] & 0x7fffffffu;
                amax = a > amax ? a : amax;
                amin = a < amin ? a : amin;
            }
            uint8_t sbyte;
            if (amax >= 0x7f800000u) { /* NaN or Inf in the block */
                memset(out, 0x7f, BLOCK);
                sbyte = 0xff;
            } else {
                int32_t s = scale_exp(amax, f, j->mode);
                /* every x a normal fp32 and every |x| * 2^-s an fp8 normal? */
                if (amin >= 0x800000u && (int64_t)amin - (int64_t)s * (1 << 23) >= (int64_t)f->min_normal)
                    encode_block_normal(b, out, s, f);
                else
                    encode_block(b, out, s, f);
                sbyte = (uint8_t)(s + 127);
            }
            j->scale[j->swizzled ? swz(r, c, pcols) : r * nb + c] = sbyte;
        }
    }
}

MXQ_CLONES
static void quantize_rows(const qjob_t *j) {
    switch (j->in_dtype * 2 + j->elem) {
    case 0: quantize_rows_impl(j, IN_F32, E4M3); break;
    case 1: quantize_rows_impl(j, IN_F32, E5M2); break;
    case 2: quantize_rows_impl(j, IN_BF16, E4M3); break;
    case 3: quantize_rows_impl(j, IN_BF16, E5M2); break;
    case 4: quantize_rows_impl(j, IN_F16, E4M3); break;
    default: quantize_rows_impl(j, IN_F16, E5M2); break;
    }
}

/* fp8 byte -> fp32 bits, exact; NaN as the quiet 0x7fc00000 (payloads are not contractual). */
INLINE uint32_t decode_e4m3(uint32_t d) {
    uint32_t sign = (d & 0x80u) << 24, em = d & 0x7fu;
    uint32_t normal = (em << 20) + (120u << 23);
    uint32_t sub = fbits((float)(int32_t)em) - (9u << 23);
    uint32_t r = em == 0x7fu ? 0x7fc00000u : (em >= 8u ? normal : (em ? sub : 0u));
    return r | sign;
}

INLINE uint32_t decode_e5m2(uint32_t d) {
    uint32_t sign = (d & 0x80u) << 24, em = d & 0x7fu;
    uint32_t normal = (em << 21) + (112u << 23);
    uint32_t sub = fbits((float)(int32_t)em) - (16u << 23);
    uint32_t special = em == 0x7cu ? 0x7f800000u : 0x7fc00000u;
    uint32_t r = em >= 0x7cu ? special : (em >= 4u ? normal : (em ? sub : 0u));
    return r | sign;
}

/* fp32 bits -> bf16 / fp16 bits, round to nearest even. NaN payloads are not contractual,
 * but these are the bytes torch's own vectorised CPU casts write (bf16 0xFFFF, fp16 0x7E00
 * with the sign), so whole-tensor byte comparisons with the reference hold as well. */
INLINE uint16_t f32_to_bf16(uint32_t u) {
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? 0xffffu : r);
}

INLINE uint16_t f32_to_f16(uint32_t u) {
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    uint32_t normal = (a - (112u << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
    uint32_t sub = fbits(bitsf(a) + 0.5f) - 0x3f000000u; /* RNE onto the 2^-24 grid */
    uint32_t r = a > 0x7f800000u ? 0x7e00u : (a >= 0x477ff000u ? 0x7c00u : (a >= (113u << 23) ? normal : sub));
    return (uint16_t)(r | sign);
}

typedef struct {
    const uint8_t *data, *scale;
    int64_t r0, r1, k, row_stride;
    void *out;
    int elem, swizzled, out_dtype;
} djob_t;

MXQ_CLONES
static void dequantize_rows(const djob_t *j) {
    int64_t nb = j->k / BLOCK, pcols = (nb + 3) & ~(int64_t)3;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const uint8_t *row = j->data + r * j->row_stride;
        for (int64_t c = 0; c < nb; c++) {
            uint32_t sb = j->scale[j->swizzled ? swz(r, c, pcols) : r * nb + c];
            /* 2^(sb - 127) from bits (2^-127 is the subnormal 0x00400000); NaN for 0xFF */
            float factor = bitsf(sb == 0xffu ? 0x7fc00000u : (sb ? sb << 23 : 0x00400000u));
            const uint8_t *d = row + c * BLOCK;
            int64_t o = (r * nb + c) * BLOCK;
            float v[BLOCK];
            for (int i = 0; i < BLOCK; i++)
                v[i] = bitsf(j->elem == E4M3 ? decode_e4m3(d[i]) : decode_e5m2(d[i])) * factor;
            if (j->out_dtype == IN_F32) {
                memcpy((float *)j->out + o, v, sizeof v);
            } else if (j->out_dtype == IN_BF16) {
                uint16_t *p = (uint16_t *)j->out + o;
                for (int i = 0; i < BLOCK; i++) p[i] = f32_to_bf16(fbits(v[i]));
            } else {
                uint16_t *p = (uint16_t *)j->out + o;
                for (int i = 0; i < BLOCK; i++) p[i] = f32_to_f16(fbits(v[i]));
            }
        }
    }
}

/* ---- threading: rows handed out in small slices from a shared counter ------------------
 * Dynamic, not a static split: on a busy machine a thread that is not scheduled simply takes
 * fewer slices and the others (the caller included) do the rest, so a call is never much
 * slower than on one thread. */

typedef void (*rows_fn)(const void *job, int64_t r0, int64_t r1);
typedef struct {
    rows_fn fn;
    const void *job;
    int64_t next, rows, slice; /* next: the first row not yet handed out (atomic) */
} sched_t;

static void *drain(void *arg) {
    sched_t *t = (sched_t *)arg;
    for (;;) {
        int64_t r0 = __atomic_fetch_add(&t->next, t->slice, __ATOMIC_RELAXED);
        if (r0 >= t->rows) break;
        t->fn(t->job, r0, r0 + t->slice < t->rows ? r0 + t->slice : t->rows);
    }
    return NULL;
}

#define MAX_THREADS 256
#define MIN_ELEMS_PER_THREAD (1 << 16) /* below this a thread costs more than it saves */
#define SLICE_ELEMS (1 << 15)          /* rows handed out at a time: about this many elements */

static int plan_threads(int64_t rows, int64_t k, int nthreads) {
    int64_t by_size = rows * k / MIN_ELEMS_PER_THREAD;
    int64_t n = nthreads < 1 ? 1 : nthreads;
    if (n > MAX_THREADS) n = MAX_THREADS;
    if (n > by_size) n = by_size;
    if (n > rows) n = rows;
    return n < 1 ? 1 : (int)n;
}

/* fn over rows 0..rows on n threads, the caller one of them, each started for this call. A
 * thread that fails to start leaves its share to the others, so the result is complete. */
static void run_spawned(sched_t *t, int n) {
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 1; i < n; i++) started[i] = pthread_create(&tid[i], NULL, drain, t) == 0;
    drain(t);
    for (int i = 1; i < n; i++)
        if (started[i]) pthread_join(tid[i], NULL);
}

/* ---- a pool of workers kept between calls ---------------------------------------------
 * Starting threads per call cost more than the work on a 16-core host (2048x4096: 15 threads
 * for ~0.35 ms of work each). Workers sleep on a condition variable between calls. One caller
 * at a time uses the pool (pool_user); a concurrent caller spawns threads as before. A worker
 * joins the current job only while the caller has not finished its own share: the caller then
 * closes the job (want = joined) and waits only for the workers that joined, so a worker that
 * wakes late (a busy machine) never delays a call. After fork the child has no workers: the pool is reset
 * (its locks re-created) in the child. */
static pthread_mutex_t pool_user = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER, pool_idle = PTHREAD_COND_INITIALIZER;
static int pool_size, pool_want, pool_joined, pool_active; /* under pool_mu */
static unsigned long pool_gen;                              /* under pool_mu: one per job */
static sched_t *pool_job;                                   /* under pool_mu */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_after_fork_in_child(void) {
    pthread_mutex_init(&pool_user, NULL);
    pthread_mutex_init(&pool_mu, NULL);
    pthread_cond_init(&pool_wake, NULL);
    pthread_cond_init(&pool_idle, NULL);
    pool_size = pool_want = pool_joined = pool_active = 0;
    pool_job = NULL;
}

static void pool_register_fork(void) { pthread_atfork(NULL, NULL, pool_after_fork_in_child); }

static void *pool_worker(void *arg) {
    unsigned long seen = (unsigned long)(uintptr_t)arg; /* the job before the one it was started for */
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        while (pool_gen == seen) pthread_cond_wait(&pool_wake, &pool_mu);
        seen = pool_gen;
        if (pool_joined >= pool_want) continue; /* closed, or enough workers: sleep again */
        pool_joined++;
        pool_active++;
        sched_t *t = pool_job;
        pthread_mutex_unlock(&pool_mu);
        drain(t);
        pthread_mutex_lock(&pool_mu);
        if (--pool_active == 0) pthread_cond_signal(&pool_idle);
    }
    return NULL;
}

static void run_parallel(rows_fn fn, const void *job, int64_t rows, int64_t k, int n) {
    int64_t slice = SLICE_ELEMS / (k > 0 ? k : 1);
    sched_t t = {fn, job, 0, rows, slice < 1 ? 1 : slice};
    if (n <= 1) {
        drain(&t);
        return;
    }
    pthread_once(&pool_once, pool_register_fork); /* before the pool is first taken */
    if (pthread_mutex_trylock(&pool_user) != 0) { /* another caller has the pool */
        run_spawned(&t, n);
        return;
    }
    pthread_mutex_lock(&pool_mu);
    if (pool_size < n - 1) {
        pthread_attr_t attr;
        pthread_t tid;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        while (pool_size < n - 1 && pthread_create(&tid, &attr, pool_worker, (void *)(uintptr_t)pool_gen) == 0)
            pool_size++;
        pthread_attr_destroy(&attr);
    }
    pool_job = &t;
    pool_want = n - 1;
    pool_joined = 0;
    pool_gen++;
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_mu);
    drain(&t);
    pthread_mutex_lock(&pool_mu);
    pool_want = pool_joined; /* closed: no worker joins after this */
    while (pool_active > 0) pthread_cond_wait(&pool_idle, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
    pthread_mutex_unlock(&pool_user);
}

/* Workers in the pool (for tests: it grows with the thread count, and is empty in a forked
 * child until its first call). */
int mxq_pool_workers(void) {
    pthread_mutex_lock(&pool_mu);
    int n = pool_size;
    pthread_mutex_unlock(&pool_mu);
    return n;
}

static void quantize_task(const void *job, int64_t r0, int64_t r1) {
    qjob_t j = *(const qjob_t *)job;
    j.r0 = r0;
    j.r1 = r1;
    quantize_rows(&j);
}

static void dequantize_task(const void *job, int64_t r0, int64_t r1) {
    djob_t j = *(const djob_t *)job;
    j.r0 = r0;
    j.r1 = r1;
    dequantize_rows(&j);
}

/* Ask for transparent huge pages on an output of 4 MiB or more before its first write: a fresh 64 MiB
 * tensor otherwise costs 16384 page faults, as much time as the kernel itself. No effect on
 * memory already in use (a reused buffer) or where THP is off; failures are harmless. */
static void advise_huge_pages(void *p, int64_t nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (nbytes < 2 * (int64_t)huge) return;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + (uintptr_t)nbytes) & ~(huge - 1);
    if (e > a) madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)nbytes;
#endif
}

/* The padding bytes of the swizzled layout are zero (so a reused output buffer is right). */
static void zero_swizzle_padding(uint8_t *scale, int64_t rows, int64_t nb) {
    int64_t prows = (rows + 127) & ~(int64_t)127, pcols = (nb + 3) & ~(int64_t)3;
    for (int64_t r = 0; r < prows; r++)
        for (int64_t c = r < rows ? nb : 0; c < pcols; c++) scale[swz(r, c, pcols)] = 0;
}

/* x: rows of k elements (fp32/bf16/fp16 = in_dtype 0/1/2), row r at x + r * row_stride
 * elements. data: rows * k bytes. scale: rows * k/32 bytes (linear) or the zero-filled
 * padded swizzled tensor. elem: 0 e4m3, 1 e5m2. mode: 0 rceil, 1 floor, 2 compressed-tensors.
 * Returns 0, or a negative code for bad arguments (nothing written). */
int mxq_quantize(const void *x, int in_dtype, int64_t rows, int64_t k, int64_t row_stride, uint8_t *data,
                 uint8_t *scale, int elem, int mode, int swizzled, int nthreads) {
    if (in_dtype < 0 || in_dtype > 2 || elem < 0 || elem > 1 || mode < 0 || mode > 2) return -2;
    if (rows < 0 || k < 0 || k % BLOCK) return -3;
    if (rows == 0 || k == 0) {
        if (swizzled) zero_swizzle_padding(scale, rows, k / BLOCK);
        return 0;
    }
    int n = plan_threads(rows, k, nthreads);
    advise_huge_pages(data, rows * k);
    qjob_t job = {(const char *)x, 0, rows, k, row_stride * (in_dtype == IN_F32 ? 4 : 2),
                  data, scale, in_dtype, elem, mode, swizzled};
    run_parallel(quantize_task, &job, rows, k, n);
    if (swizzled) zero_swizzle_padding(scale, rows, k / BLOCK);
    return 0;
}

/* data: rows of k fp8 bytes, row r at data + r * row_stride. out: rows * k elements of
 * out_dtype (0 fp32, 1 bf16, 2 fp16). Returns 0, or a negative code for bad arguments. */
int mxq_dequantize(const uint8_t *data, int64_t rows, int64_t k, int64_t row_stride, const uint8_t *scale,
                   int elem, int swizzled, void *out, int out_dtype, int nthreads) {
    if (out_dtype < 0 || out_dtype > 2 || elem < 0 || elem > 1) return -2;
    if (rows < 0 || k < 0 || k % BLOCK) return -3;
    if (rows == 0 || k == 0) return 0;
    int n = plan_threads(rows, k, nthreads);
    advise_huge_pages(out, rows * k * (out_dtype == IN_F32 ? 4 : 2));
    djob_t job = {data, scale, 0, rows, k, row_stride, out, elem, swizzled, out_dtype};
    run_parallel(dequantize_task, &job, rows, k, n);
    return 0;
}

/* The instruction set the target_clones dispatch picks on this CPU (for `mxquant info`). */
const char *mxq_isa(void) {
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(MXQ_NO_CLONES)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) return "x86-64 avx2";
    return "x86-64 baseline";
#elif defined(__aarch64__)
    return "aarch64";
#else
    return "generic";
#endif
}

int mxq_abi_version(void) { return 1; }
