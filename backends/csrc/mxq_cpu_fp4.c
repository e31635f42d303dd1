/* MXFP4 and NVFP4 quantize / dequantize on the CPU (docs/semantics.md, "MXFP4 and NVFP4"),
 * byte-exact with mxquant/reference_fp4.py. Rows go to the threads of mxq_cpu.c; the variant
 * (AVX-512 BW/VL and AVX2 by hand, baseline from the scalar code) is mxq_cpu.c's choice.
 *
 * e2m1 from an fp32 value y as the fp8 encoders of mxq_cpu.h do it, with 1 mantissa bit and
 * bias 1: |y| clamped to 6 (bits 0x40c00000), then for |y| >= 1 the exponent rebiased and the
 * mantissa rounded to nearest even with an integer add, below 1 one fp32 add of 2^22 (whose ulp
 * is e2m1's subnormal step 0.5) rounds onto {0, 0.5, 1}. MXFP4: y = x * 2^-s, exact; the scale
 * exponent from amax's bits. NVFP4, each rounding as compressed-tensors does it: the group
 * scale g * RN_x(amax / 6) in fp32, clamped to 448 and rounded to e4m3 (zero -> 0x20), then
 * y = x / (scale / g), two fp32 divisions. The AVX-512 variant computes 16 groups' scales in
 * one vector (AVX2: 8); the global scale is a first pass (the largest finite |x|, an integer max).
 * Built without -ffast-math: IEEE division, rounding and subnormals are relied on. */
#include "mxq_cpu_fp4.h"
#if MXQ_X86 && defined(__has_include)
#if __has_include(<cpuid.h>)
#include <cpuid.h>
#define MXQ_HAVE_CPUID_H 1
#endif
#endif

/* ---- the scalar code (baseline variant; the AVX2 one for fp16 without F16C) --------------- */
/* GCC unrolls NVFP4's 16-element loops completely, and then does not vectorise them; kept as
 * loops, it does (AVX2: 8 lanes). */
#if defined(__GNUC__) && !defined(__clang__)
#define PRAGMA_NO_UNROLL _Pragma("GCC unroll 1")
#else
#define PRAGMA_NO_UNROLL
#endif

/* n elements at src as fp32 bits into b; returns the largest |x| bits. */
INLINE uint32_t load_amax(const char *src, int in_dtype, uint32_t *b, int n) {
    uint32_t amax = 0;
    for (int i = 0; i < n; i++) {
        b[i] = load_bits(src, i, in_dtype);
        uint32_t a = b[i] & 0x7fffffffu;
        amax = a > amax ? a : amax;
    }
    return amax;
}

INLINE void mx4_rows(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    int64_t nb = j->k / 32, es = in_dtype == IN_F32 ? 4 : 2;
    uint32_t negthr = neg_threshold(j->mode, in_dtype);
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t c = 0; c < nb; c++) {
            const char *src = j->x + r * j->rstride + c * 32 * es;
            uint8_t *out = j->data + r * (j->k / 2) + c * 16, nib[32];
            uint32_t b[32], amax = load_amax(src, in_dtype, b, 32);
            if (amax >= 0x7f800000u) { /* NaN or Inf: scale 0xFF, nibbles 0 */
                memset(out, 0, 16);
                put_scale(j, r, c, nb, 0xffu);
                continue;
            }
            int32_t s = fp4_scale_exp(amax, j->mode);
            float inv = pow2_neg(s);
            for (int i = 0; i < 32; i++) {
                float y = bitsf(b[i]) * inv;
                uint32_t cmp = j->mode == CT ? fbits(y) : b[i];
                nib[i] = (uint8_t)(e2m1_index(y) | (cmp > negthr ? 8u : 0u));
            }
            pack_nibbles(nib, out, 32);
            put_scale(j, r, c, nb, (uint32_t)(s + 127));
        }
    }
}

INLINE void nv4_rows(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    int64_t ng = j->k / 16, es = in_dtype == IN_F32 ? 4 : 2;
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t c = 0; c < ng; c++) {
            const char *src = j->x + r * j->rstride + c * 16 * es;
            uint8_t *out = j->data + r * (j->k / 2) + c * 8, nib[16];
            uint32_t b[16], amax = load_amax(src, in_dtype, b, 16);
            if (amax >= 0x7f800000u) { /* NaN or Inf: scale 0x7F (e4m3 NaN), nibbles 0 */
                memset(out, 0, 8);
                put_scale(j, r, c, ng, 0x7fu);
                continue;
            }
            float q;
            put_scale(j, r, c, ng, nv4_scale(amax, in_dtype, j->g, &q));
            uint32_t yb[16], n32[16];
            PRAGMA_NO_UNROLL
            for (int i = 0; i < 16; i++) yb[i] = fbits(bitsf(b[i]) / q);
            PRAGMA_NO_UNROLL
            for (int i = 0; i < 16; i++) n32[i] = e2m1_index(bitsf(yb[i])) | (yb[i] > 0x80000000u ? 8u : 0u);
            for (int i = 0; i < 16; i++) nib[i] = (uint8_t)n32[i];
            pack_nibbles(nib, out, 16);
        }
    }
}

INLINE void dq_rows(const fjob_t *j, int64_t r0, int64_t r1, int block, int out_dtype) {
    int64_t nb = j->k / block;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *d = (const uint8_t *)j->x + r * j->rstride;
        for (int64_t c = 0; c < nb; c++) {
            uint32_t sb = get_scale(j, r, c, nb);
            float f = dq_factor(j, sb, block);
            if (dq_factor_special(f)) {
                dq_block_special(d + c * block / 2, f, j->out, (r * nb + c) * block, block, out_dtype);
                continue;
            }
            float v[32];
            for (int i = 0; i < block / 2; i++) {
                v[2 * i] = E2M1_VALUE[d[c * block / 2 + i] & 15] * f;
                v[2 * i + 1] = E2M1_VALUE[d[c * block / 2 + i] >> 4] * f;
            }
            store_values(j->out, (r * nb + c) * block, v, block, out_dtype);
        }
    }
}

INLINE void amax_rows(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    uint32_t m = 0;
    for (int64_t r = r0; r < r1; r++) {
        const char *row = j->x + r * j->rstride;
        for (int64_t i = 0; i < j->k; i++) {
            uint32_t a = load_bits(row, i, in_dtype) & 0x7fffffffu;
            a = a < 0x7f800000u ? a : 0u;
            m = a > m ? a : m;
        }
    }
    atomic_max(j->amax, m);
}

static void rows_base(const fjob_t *j, int64_t r0, int64_t r1) { FP4_DISPATCH(, j, r0, r1) }

#if MXQ_X86
/* The AVX2 variant is mxq_cpu_fp4_avx2.c's code; it needs F16C for fp16 (every AVX2 CPU known has it,
 * but mxq_cpu.c asks cpuid for AVX2 only), so without F16C fp16 runs this file's code compiled for AVX2. */
TARGET_AVX2 static void rows_avx2_scalar(const fjob_t *j, int64_t r0, int64_t r1) { FP4_DISPATCH(, j, r0, r1) }

/* F16C from CPUID leaf 1 (ECX bit 29), as the AVX2 gate asks it: only with OSXSAVE and the OS
 * saving the YMM state (XCR0 bits 1, 2), which __builtin_cpu_supports("avx2") also requires.
 * Not __builtin_cpu_supports("f16c"): clang knows that name only from LLVM 18 (older ones
 * refuse to compile it, and the whole library with it). No <cpuid.h>: taken as absent. */
static int cpu_has_f16c(void) {
#ifdef MXQ_HAVE_CPUID_H
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_F16C) || !(c & bit_OSXSAVE)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6u) == 6u; /* XMM and YMM state */
#else
    return 0;
#endif
}

static int f16c_known = -1, f16c_forced_off = 0;

static int have_f16c(void) {
    int v = __atomic_load_n(&f16c_known, __ATOMIC_RELAXED);
    if (v < 0) {
        v = cpu_has_f16c();
        __atomic_store_n(&f16c_known, v, __ATOMIC_RELAXED);
    }
    return v && !__atomic_load_n(&f16c_forced_off, __ATOMIC_RELAXED);
}

/* Test hook: off != 0 makes the AVX2 variant take its no-F16C path (fp16 by this file's scalar
 * code) as on a CPU without F16C; 0 restores the CPU's answer. Returns whether this CPU has F16C.
 * Not while calls are running. */
int mxq_fp4_force_no_f16c(int off) {
    __atomic_store_n(&f16c_forced_off, off != 0, __ATOMIC_RELAXED);
    return cpu_has_f16c();
}

static void rows_avx2(const fjob_t *j, int64_t r0, int64_t r1) {
    if (j->dtype == IN_F16 && !have_f16c()) rows_avx2_scalar(j, r0, r1);
    else mxq_fp4_rows_avx2_(j, r0, r1);
}
static void (*const FP4_ROWS[])(const fjob_t *, int64_t, int64_t) = {mxq_fp4_rows_avx512_, rows_avx2, rows_base};
#else
static void (*const FP4_ROWS[])(const fjob_t *, int64_t, int64_t) = {rows_base};
int mxq_fp4_force_no_f16c(int off) { (void)off; return 0; }
#endif

static void fp4_task(const void *job, int64_t r0, int64_t r1) {
    FP4_ROWS[mxq_isa_index_()]((const fjob_t *)job, r0, r1);
}

static int run(fjob_t *j, int64_t rows, int nthreads) {
    if (rows > 0 && j->k > 0) mxq_run_parallel_(fp4_task, j, rows, j->k, mxq_plan_threads_(rows, j->k, nthreads));
    return 0;
}

INLINE int64_t esize(int dtype) { return dtype == IN_F32 ? 4 : 2; }

/* x: rows of k elements (fp32 / bf16 / fp16 = in_dtype 0 / 1 / 2), row r at x + r * row_stride
 * elements. data: rows * k / 2 bytes. scale: rows * k / 32 bytes (linear) or the padded 128x4
 * layout. mode: 0 rceil, 1 floor, 2 compressed-tensors. Returns 0, or a negative code for bad
 * arguments (nothing written). */
int mxq_mxfp4_quantize(const void *x, int in_dtype, int64_t rows, int64_t k, int64_t row_stride, uint8_t *data,
                       uint8_t *scale, int mode, int swizzled, int nthreads) {
    if (in_dtype < 0 || in_dtype > 2 || mode < 0 || mode > 2) return -2;
    if (rows < 0 || k < 0 || k % 32) return -3;
    mxq_advise_huge_pages_(data, rows * k / 2);
    fjob_t j = {(const char *)x, k, row_stride * esize(in_dtype), data, scale, NULL, in_dtype, mode, swizzled,
                OP_MX_Q, 1.0f, NULL, NULL};
    run(&j, rows, nthreads);
    if (swizzled) mxq_zero_swizzle_padding_(scale, rows, k / 32);
    return 0;
}

/* As mxq_mxfp4_quantize with groups of 16 and e4m3 scales (rows * k / 16 linear); g: the
 * global scale, read (compute_g 0: finite and > 0) or computed from x and written (compute_g 1). */
int mxq_nvfp4_quantize(const void *x, int in_dtype, int64_t rows, int64_t k, int64_t row_stride, uint8_t *data,
                       uint8_t *scale, float *g, int compute_g, int swizzled, int nthreads) {
    if (in_dtype < 0 || in_dtype > 2) return -2;
    if (rows < 0 || k < 0 || k % 16) return -3;
    if (!compute_g && !(*g > 0.0f && *g <= 3.40282347e38f)) return -4;
    fjob_t j = {(const char *)x, k, row_stride * esize(in_dtype), data, scale, NULL, in_dtype, 0, swizzled,
                OP_AMAX, 1.0f, NULL, NULL};
    if (compute_g) { /* RN_x(RN_x(1 / amax) * 2688); 1.0 where not finite */
        uint32_t amax = 0;
        j.amax = &amax;
        run(&j, rows, nthreads);
        float gx = round_dtype(round_dtype(1.0f / bitsf(amax), in_dtype) * 2688.0f, in_dtype);
        *g = (fbits(gx) & 0x7fffffffu) < 0x7f800000u ? gx : 1.0f;
    }
    j.op = OP_NV_Q;
    j.g = *g;
    mxq_advise_huge_pages_(data, rows * k / 2);
    run(&j, rows, nthreads);
    if (swizzled) mxq_zero_swizzle_padding_(scale, rows, k / 16);
    return 0;
}

/* data: rows of k / 2 packed bytes, row r at data + r * row_stride bytes; scale as quantize
 * wrote it; out: rows * k values of out_dtype (0 fp32, 1 bf16, 2 fp16). */
int mxq_mxfp4_dequantize(const uint8_t *data, int64_t rows, int64_t k, int64_t row_stride, const uint8_t *scale,
                         int swizzled, void *out, int out_dtype, int nthreads) {
    if (out_dtype < 0 || out_dtype > 2) return -2;
    if (rows < 0 || k < 0 || k % 32) return -3;
    mxq_advise_huge_pages_(out, rows * k * esize(out_dtype));
    fjob_t j = {(const char *)data, k, row_stride, NULL, (uint8_t *)scale, out, out_dtype, 0, swizzled,
                OP_MX_DQ, 1.0f, NULL, NULL};
    return run(&j, rows, nthreads);
}

/* As mxq_mxfp4_dequantize with groups of 16, e4m3 scales and the global scale *g. */
int mxq_nvfp4_dequantize(const uint8_t *data, int64_t rows, int64_t k, int64_t row_stride, const uint8_t *scale,
                         const float *g, int swizzled, void *out, int out_dtype, int nthreads) {
    if (out_dtype < 0 || out_dtype > 2) return -2;
    if (rows < 0 || k < 0 || k % 16) return -3;
    float factor[256];
    for (int b = 0; b < 256; b++) factor[b] = bitsf(decode_e4m3((uint32_t)b)) / *g;
    mxq_advise_huge_pages_(out, rows * k * esize(out_dtype));
    fjob_t j = {(const char *)data, k, row_stride, NULL, (uint8_t *)scale, out, out_dtype, 0, swizzled,
                OP_NV_DQ, *g, NULL, factor};
    return run(&j, rows, nthreads);
}
