/* Column-wise, row+column and 32x32-tile MXFP8 quantize on the CPU (docs/semantics.md,
 * "Training and MoE calls"), byte-exact with mxquant/reference_training.py. The grouped call is
 * the row-wise kernel with another scale layout (mxq_quantize_grouped in mxq_cpu.c).
 *
 * x is (batches, M, K), K elements of a row contiguous, rows rstride and batches bstride bytes
 * apart. The work is bands of 32 rows (one column block per column), handed to the threads of
 * mxq_cpu.c. A band is walked in tiles of 32 rows x 64 columns that stay in L1:
 *   column-wise: the 64 column blocks of the tile are encoded "vertically" (per lane of a
 *   vector: amax and amin over the 32 rows, the scale exponent, each row's 64 bytes), then the
 *   32x64 bytes are transposed in registers (four rounds of byte unpacks, then 128-bit lane
 *   permutes) and each column's 32 bytes are stored into row c of the (K, M) output: x is read
 *   once, its transpose is never written. A column that is not on the fast path (NaN/Inf,
 *   fp32 subnormals, fp8 subnormal results) is redone by the scalar block code.
 *   row+column: the same, and the tile's row blocks by the row-wise block code while the tile
 *   is in L1 (one read of x from memory).
 *   32x32 tiles: amax over the tile, then each row with the tile's exponent.
 * The AVX-512 variant does this with intrinsics in mxq_cpu_training_avx512.c (bf16 in 16-bit
 * lanes as in mxq_cpu.c, fp16 widened to fp32); the AVX2 variant for column-wise and
 * row+column and tiles (every input dtype) in mxq_cpu_training_avx2.c; everything else (the
 * baseline variant, last tiles narrower than 64 columns) with the scalar code in
 * mxq_cpu_training.h: gather the column into a block, then the row-wise block code. */
#include "mxq_cpu_training.h"

static void bands_base(const bjob_t *j, int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; u++) BAND_DISPATCH(unit_scalar, j, u)
}

/* In the order of mxq_cpu.c's ISAS. */
static void (*const BANDS[])(const bjob_t *, int64_t, int64_t) = {
#if MXQ_X86
    mxq_bands_avx512_, mxq_bands_avx2_,
#endif
    bands_base,
};

static void band_task(const void *job, int64_t u0, int64_t u1) { BANDS[mxq_isa_index_()]((const bjob_t *)job, u0, u1); }

static int run_bands(bjob_t *job, const void *x, int in_dtype, int64_t batches, int64_t m, int64_t k, int64_t bstride,
                     int64_t rstride, int elem, int mode, int nthreads) {
    if (in_dtype < 0 || in_dtype > 2 || elem < 0 || elem > 1 || mode < 0 || mode > 2) return -2;
    if (batches < 0 || m < 0 || k < 0 || m % BLOCK || (job->op != OP_COL && k % BLOCK)) return -3;
    int64_t esize = in_dtype == IN_F32 ? 4 : 2, units = 0;
    job->x = (const char *)x;
    job->m = m;
    job->k = k;
    job->bstride = bstride * esize;
    job->rstride = rstride * esize;
    job->in_dtype = in_dtype;
    job->elem = elem;
    job->mode = mode;
    units = units_of(job, batches);
    if (units == 0 || k == 0) return 0;
    if (job->rdata) mxq_advise_huge_pages_(job->rdata, batches * m * k);
    if (job->cdata) mxq_advise_huge_pages_(job->cdata, batches * m * k);
    int64_t per_unit = UNIT_BANDS * BLOCK * (k < STRIP ? k : STRIP);
    mxq_run_parallel_(band_task, job, units, per_unit, mxq_plan_threads_(units, per_unit, nthreads));
    return 0;
}

/* The column-wise units' walk (bjob_t.col_order): -1 automatic, else as mxq_set_col_order set it.
 * Automatic: column order (each 64-column tile down all of a unit's bands, its 256-byte output runs
 * whole) on AMD, where it took 13% less time on a Zen 4 EPYC (docs/performance.md, fifth session)
 * and as long on a Zen 3 one; bands two at a time elsewhere, as on Intel Xeons, where it took
 * 13-15% less time (twenty-third session). The bytes are the same either way. Only the AVX2 and AVX-512
 * variants have two walks; the baseline code walks band by band. */
static int col_order_set = -1;

int mxq_col_order(void) {
    int o = __atomic_load_n(&col_order_set, __ATOMIC_RELAXED);
    if (o >= 0) return o;
#if MXQ_X86 /* (GCC or Clang: mxq_cpu.h) */
    __builtin_cpu_init();
    return __builtin_cpu_is("amd") ? 1 : 0; /* Hygon's Zen-based CPUs, not measured, take bands */
#else
    return 0; /* moot: the baseline code walks band by band */
#endif
}

/* Test hook: the column-wise walk from now on (1 column order, 0 bands two at a time, -1 the
 * automatic choice again). Returns the setting it replaced (-1, 0 or 1), or -2 for another value
 * (nothing changed). Not while calls are running. */
int mxq_set_col_order(int order) {
    if (order < -1 || order > 1) return -2;
    return __atomic_exchange_n(&col_order_set, order, __ATOMIC_RELAXED);
}

/* x: batches x M x K elements of in_dtype (0 fp32, 1 bf16, 2 fp16), element (b, r, c) at
 * x + b * bstride + r * rstride + c (strides in elements). elem: 0 e4m3, 1 e5m2; mode: 0 rceil,
 * 1 floor, 2 compressed-tensors. M a multiple of 32 (and K for row+column and tiles). Each
 * returns 0, or a negative code for bad arguments (nothing written). */

/* Column-wise: data (batches, K, M) as mxq_quantize writes for x^T; scale linear
 * (batches, K, M/32) or the zero-filled padded swizzled layout of batches * K rows. */
int mxq_quantize_colwise(const void *x, int in_dtype, int64_t batches, int64_t m, int64_t k, int64_t bstride,
                         int64_t rstride, uint8_t *data, uint8_t *scale, int elem, int mode, int swizzled, int nthreads) {
    bjob_t job = {0};
    job.op = OP_COL, job.cdata = data, job.cscale = scale, job.swizzled = swizzled, job.col_order = mxq_col_order();
    int rc = run_bands(&job, x, in_dtype, batches, m, k, bstride, rstride, elem, mode, nthreads);
    if (rc == 0 && swizzled) mxq_zero_swizzle_padding_(scale, batches * k, m / BLOCK);
    return rc;
}

/* Row-wise (as mxq_quantize) and column-wise (as mxq_quantize_colwise) from one read of x. */
int mxq_quantize_rowcol(const void *x, int in_dtype, int64_t batches, int64_t m, int64_t k, int64_t bstride,
                        int64_t rstride, uint8_t *rdata, uint8_t *rscale, uint8_t *cdata, uint8_t *cscale, int elem,
                        int mode, int swizzled, int nthreads) {
    bjob_t job = {0};
    job.op = OP_ROWCOL, job.rdata = rdata, job.rscale = rscale, job.cdata = cdata, job.cscale = cscale;
    job.swizzled = swizzled;
    int rc = run_bands(&job, x, in_dtype, batches, m, k, bstride, rstride, elem, mode, nthreads);
    if (rc == 0 && swizzled) {
        mxq_zero_swizzle_padding_(rscale, batches * m, k / BLOCK);
        mxq_zero_swizzle_padding_(cscale, batches * k, m / BLOCK);
    }
    return rc;
}

/* 32x32 tiles: data (batches, M, K), scale (batches, M/32, K/32). */
int mxq_quantize_2d(const void *x, int in_dtype, int64_t batches, int64_t m, int64_t k, int64_t bstride,
                    int64_t rstride, uint8_t *data, uint8_t *scale, int elem, int mode, int nthreads) {
    bjob_t job = {0};
    job.op = OP_TILES, job.rdata = data, job.rscale = scale;
    return run_bands(&job, x, in_dtype, batches, m, k, bstride, rstride, elem, mode, nthreads);
}
