/* MXFP8 quantize / dequantize on the CPU, byte-exact with mxquant/reference.py.
 *
 * Plain C99 with no Python or libtorch dependency: mxquant/backends/cpu_native.py loads the
 * shared library with ctypes and passes raw data pointers (ctypes releases the GIL for the
 * call). Rows are split over `nthreads` POSIX threads (a pool kept between calls). On x86-64 with GCC or Clang the row
 * workers are compiled three times (AVX-512 BW/VL with hand-written block code, AVX2 and
 * baseline, each by a target attribute) and the best one for the CPU is chosen at the first
 * call (cpuid), so one build runs on any x86-64.
 *
 * Exactness: every step is integer arithmetic on fp32 bit patterns, or an IEEE operation
 * whose result is exact or rounds to nearest-even exactly as the reference's does (one fp32
 * add that rounds a value onto the fp8 subnormal grid; one fp32 multiply by a power of two in
 * dequantize). Build without -ffast-math: it must keep IEEE semantics and subnormals.
 */
#define _DEFAULT_SOURCE /* madvise */
#include <pthread.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "mxq_cpu.h"

typedef struct {
    const char *x;
    int64_t r0, r1, k, row_stride_bytes;
    uint8_t *data, *scale;
    int in_dtype, elem, mode, swizzled;
    /* grouped scales (mxq_quantize_grouped), ngroups > 0: row r of group g (rows gend[g-1] ..
     * gend[g]) has its swizzled scale at row r + goff[g] (goff: the group's padded start minus
     * its first row); ngroups = 0: row r at row r */
    const int64_t *gend, *goff;
    int64_t ngroups;
} qjob_t;

/* The swizzled-layout row of row r: r + the offset of its group. *g is the group of the row
 * before (or 0), rows come in increasing order. */
INLINE int64_t scale_row(const qjob_t *j, int64_t r, int64_t *g) {
    if (!j->ngroups) return r;
    while (j->gend[*g] <= r) ++*g; /* empty groups too; every row is in a group */
    return r + j->goff[*g];
}

/* Rows r0..r1 of one job; in_dtype and elem are constants at each call site below, so
 * every (input, element) pair gets its own specialised loop. */
INLINE void quantize_rows_impl(const qjob_t *j, int in_dtype, int elem) {
    const fmt_t *f = &FMT[elem];
    int64_t nb = j->k / BLOCK, pcols = (nb + 3) & ~(int64_t)3;
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    uint32_t b[BLOCK];
    int64_t g = 0;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const char *row = j->x + r * j->row_stride_bytes;
        int64_t srow = scale_row(j, r, &g);
        for (int64_t c = 0; c < nb; c++) {
            /* fp32 is read in place: copying it into b first cost 2x (a 32-byte reload of data
             * stored as 16-byte halves stalls store-to-load forwarding) */
            const uint32_t *bp = b;
            if (in_dtype == IN_F32) bp = (const u32a *)(row + c * BLOCK * 4);
            else load_block(row + c * BLOCK * esize, in_dtype, b);
            uint8_t sbyte = quantize_block(bp, j->data + (r * nb + c) * BLOCK, f, j->mode);
            j->scale[j->swizzled ? swz(srow, c, pcols) : r * nb + c] = sbyte;
        }
    }
}

INLINE void quantize_rows_any(const qjob_t *j) {
    switch (j->in_dtype * 2 + j->elem) {
    case 0: quantize_rows_impl(j, IN_F32, E4M3); break;
    case 1: quantize_rows_impl(j, IN_F32, E5M2); break;
    case 2: quantize_rows_impl(j, IN_BF16, E4M3); break;
    case 3: quantize_rows_impl(j, IN_BF16, E5M2); break;
    case 4: quantize_rows_impl(j, IN_F16, E4M3); break;
    default: quantize_rows_impl(j, IN_F16, E5M2); break;
    }
}

/* e5m2 byte -> fp32 bits, exact, as decode_e4m3 (mxq_cpu.h), but every NaN (0x7D-0x7F, 0xFD-0xFF)
 * the one quiet 0x7fc00000, sign dropped, as dq_e4m3 below. */
INLINE uint32_t decode_e5m2(uint32_t d) {
    uint32_t sign = (d & 0x80u) << 24, em = d & 0x7fu;
    uint32_t normal = (em << 21) + (112u << 23);
    uint32_t sub = fbits((float)(int32_t)em) - (16u << 23);
    uint32_t r = em >= 0x7cu ? 0x7f800000u : (em >= 4u ? normal : (em ? sub : 0u));
    return em > 0x7cu ? 0x7fc00000u : r | sign;
}

/* Dequantize's NaN (docs/semantics.md, "Dequantize"): one bit pattern per out_dtype, fp32
 * 0x7FC00000, bf16 0xFFFF, fp16 0x7E00, whatever the signs. Every NaN operand of the product
 * element * factor is the same quiet 0x7fc00000 (a NaN element decoded without its sign, the
 * factor of a 0xFF scale), and the product of a NaN operand is that operand's NaN (x86, Arm
 * without default-NaN mode; with it, or on RISC-V, the default NaN, also 0x7fc00000), whichever
 * operand order the compiler chose: so every NaN of a block is 0x7fc00000, which f32_to_bf16 /
 * f32_to_f16 write as 0xFFFF / 0x7E00. Checked on every ISA variant by test_cpu_backends.py. */
INLINE uint32_t dq_e4m3(uint32_t d) { return (d & 0x7fu) == 0x7fu ? 0x7fc00000u : decode_e4m3(d); }

typedef struct {
    const uint8_t *data, *scale;
    int64_t r0, r1, k, row_stride;
    void *out;
    int elem, swizzled, out_dtype;
} djob_t;

INLINE void dequantize_rows_any(const djob_t *j) {
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
                v[i] = bitsf(j->elem == E4M3 ? dq_e4m3(d[i]) : decode_e5m2(d[i])) * factor;
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

/* ---- error sums (mxquant convert's manifest): sum(x^2) and sum((x - dq)^2) --------------
 * x: the quantizer's input rows; data / scale (linear): its output; dq the exact dequantization,
 * as mxq_dequantize to fp32 gives it. In double (exact differences and squares of fp32 values,
 * no overflow), per row (the row's two sums go to esum[2 r], esum[2 r + 1]); NaN and Inf
 * propagate, as in the sums they stand for. */
typedef struct {
    const char *x;
    const uint8_t *data, *scale;
    int64_t r0, r1, k, x_row_bytes;
    int in_dtype, elem;
    double *esum;
} ejob_t;

INLINE void error_rows_any(const ejob_t *j) {
    int64_t nb = j->k / BLOCK;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const char *xr = j->x + r * j->x_row_bytes;
        const uint8_t *dr = j->data + r * j->k;
        double sx = 0.0, se = 0.0;
        for (int64_t c = 0; c < nb; c++) {
            uint32_t sb = j->scale[r * nb + c], b[BLOCK];
            float factor = bitsf(sb == 0xffu ? 0x7fc00000u : (sb ? sb << 23 : 0x00400000u));
            load_block(xr + c * BLOCK * (j->in_dtype == IN_F32 ? 4 : 2), j->in_dtype, b);
            const uint8_t *d = dr + c * BLOCK;
            double bx = 0.0, be = 0.0;
            for (int i = 0; i < BLOCK; i++) {
                double v = bitsf(b[i]);
                double e = v - (double)(bitsf(j->elem == E4M3 ? decode_e4m3(d[i]) : decode_e5m2(d[i])) * factor);
                bx += v * v;
                be += e * e;
            }
            sx += bx;
            se += be;
        }
        j->esum[2 * r] = sx;
        j->esum[2 * r + 1] = se;
    }
}

#if MXQ_X86

TARGET_AVX512 INLINE void quantize_rows_avx512_impl(const qjob_t *j, int in_dtype, int elem) {
    const fmt_t *f = &FMT[elem];
    int64_t nb = j->k / BLOCK, pcols = (nb + 3) & ~(int64_t)3;
    int64_t esize = in_dtype == IN_F32 ? 4 : 2, g = 0;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const char *row = j->x + r * j->row_stride_bytes;
        int64_t srow = scale_row(j, r, &g);
        for (int64_t c = 0; c < nb; c++) {
            const char *src = row + c * BLOCK * esize;
            uint8_t *out = j->data + (r * nb + c) * BLOCK;
            uint8_t sbyte;
            if (in_dtype == IN_F32)
                sbyte = block_f32_avx512(_mm512_loadu_si512(src), _mm512_loadu_si512(src + 64), out, f, j->mode);
            else if (in_dtype == IN_BF16)
                sbyte = block_bf16_avx512(_mm512_loadu_si512(src), out, f, j->mode);
            else
                sbyte = block_f32_avx512(load16_f32bits(src, IN_F16), load16_f32bits(src + 32, IN_F16), out, f, j->mode);
            j->scale[j->swizzled ? swz(srow, c, pcols) : r * nb + c] = sbyte;
        }
    }
}

TARGET_AVX512 static void quantize_rows_avx512(const qjob_t *j) {
    switch (j->in_dtype * 2 + j->elem) {
    case 0: quantize_rows_avx512_impl(j, IN_F32, E4M3); break;
    case 1: quantize_rows_avx512_impl(j, IN_F32, E5M2); break;
    case 2: quantize_rows_avx512_impl(j, IN_BF16, E4M3); break;
    case 3: quantize_rows_avx512_impl(j, IN_BF16, E5M2); break;
    case 4: quantize_rows_avx512_impl(j, IN_F16, E4M3); break;
    default: quantize_rows_avx512_impl(j, IN_F16, E5M2); break;
    }
}
TARGET_AVX512 static void dequantize_rows_avx512(const djob_t *j) { dequantize_rows_any(j); }
/* 16 x values as fp32 from in_dtype at p (bf16: the high halves of fp32 bits). */
TARGET_AVX512 INLINE __m512 load16_ps(const char *p, int in_dtype) {
    if (in_dtype == IN_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
    return _mm512_castsi512_ps(load16_f32bits(p, in_dtype));
}

/* 16 fp8 bytes at p decoded to fp32, exactly as decode_e4m3 / decode_e5m2 (NaN bits aside). */
TARGET_AVX512 INLINE __m512 decode16(const uint8_t *p, int elem) {
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    if (elem == E5M2)  /* an e5m2 byte is the high byte of an fp16 */
        return _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(b), 8));
    __m512i d = _mm512_cvtepu8_epi32(b), em = _mm512_and_si512(d, _mm512_set1_epi32(0x7f));
    __m512i sign = _mm512_slli_epi32(_mm512_and_si512(d, _mm512_set1_epi32(0x80)), 24);
    __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(em, 20), _mm512_set1_epi32(120 << 23));
    __m512 sub = _mm512_mul_ps(_mm512_cvtepi32_ps(em), _mm512_set1_ps(1.0f / 512.0f));  /* em < 8: em * 2^-9 */
    __m512i r = _mm512_mask_blend_epi32(_mm512_cmplt_epu32_mask(em, _mm512_set1_epi32(8)), normal, _mm512_castps_si512(sub));
    r = _mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(em, _mm512_set1_epi32(0x7f)), r, _mm512_set1_epi32(0x7fc00000));
    return _mm512_castsi512_ps(_mm512_or_si512(r, sign));
}

/* sx += x^2, se += (x - dq)^2 for 8 fp32 pairs, in double (exact squares and differences). */
TARGET_AVX512 INLINE void error8(__m256 x, __m256 dq, __m512d *sx, __m512d *se) {
    __m512d xd = _mm512_cvtps_pd(x), e = _mm512_sub_pd(xd, _mm512_cvtps_pd(dq));
    *sx = _mm512_add_pd(*sx, _mm512_mul_pd(xd, xd));
    *se = _mm512_add_pd(*se, _mm512_mul_pd(e, e));
}

/* error_rows_any in vectors: the same sums per row (as dq: the element's value times the scale,
 * in fp32; then double), added in another order (8 lanes, then across them). */
TARGET_AVX512 static void error_rows_avx512(const ejob_t *j) {
    int64_t nb = j->k / BLOCK, esize = j->in_dtype == IN_F32 ? 4 : 2;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const char *xr = j->x + r * j->x_row_bytes;
        const uint8_t *dr = j->data + r * j->k;
        __m512d sx = _mm512_setzero_pd(), se = _mm512_setzero_pd();
        for (int64_t c = 0; c < nb; c++) {
            uint32_t sb = j->scale[r * nb + c];
            __m512 factor = _mm512_set1_ps(bitsf(sb == 0xffu ? 0x7fc00000u : (sb ? sb << 23 : 0x00400000u)));
            for (int h = 0; h < 2; h++) {
                __m512 x = load16_ps(xr + (c * BLOCK + 16 * h) * esize, j->in_dtype);
                __m512 dq = _mm512_mul_ps(decode16(dr + c * BLOCK + 16 * h, j->elem), factor);
                error8(_mm512_castps512_ps256(x), _mm512_castps512_ps256(dq), &sx, &se);
                error8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)),
                       _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(dq), 1)), &sx, &se);
            }
        }
        j->esum[2 * r] = _mm512_reduce_add_pd(sx);
        j->esum[2 * r + 1] = _mm512_reduce_add_pd(se);
    }
}
/* 8 fp8 bytes at p decoded to fp32 as decode_e4m3 / decode_e5m2 do (NaN bits aside). */
TARGET_AVX2 INLINE __m256 decode8_avx2(const uint8_t *p, int elem) {
    __m256i d = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    __m256i em = _mm256_and_si256(d, _mm256_set1_epi32(0x7f));
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(d, _mm256_set1_epi32(0x80)), 24);
    int e4 = elem == E4M3;
    __m256i normal = _mm256_add_epi32(_mm256_slli_epi32(em, e4 ? 20 : 21), _mm256_set1_epi32((e4 ? 120 : 112) << 23));
    __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(em), _mm256_set1_ps(e4 ? 1.0f / 512.0f : 1.0f / 65536.0f));
    __m256i r = _mm256_blendv_epi8(normal, _mm256_castps_si256(sub), _mm256_cmpgt_epi32(_mm256_set1_epi32(e4 ? 8 : 4), em));
    __m256i nan = _mm256_set1_epi32(0x7fc00000);
    if (e4) {
        r = _mm256_blendv_epi8(r, nan, _mm256_cmpeq_epi32(em, _mm256_set1_epi32(0x7f)));
    } else {
        __m256i special = _mm256_blendv_epi8(nan, _mm256_set1_epi32(0x7f800000), _mm256_cmpeq_epi32(em, _mm256_set1_epi32(0x7c)));
        r = _mm256_blendv_epi8(r, special, _mm256_cmpgt_epi32(em, _mm256_set1_epi32(0x7b)));
    }
    return _mm256_castsi256_ps(_mm256_or_si256(r, sign));
}

/* sx += x^2, se += (x - dq)^2 for 4 fp32 pairs, in double. */
TARGET_AVX2 INLINE void error4_avx2(__m128 x, __m128 dq, __m256d *sx, __m256d *se) {
    __m256d xd = _mm256_cvtps_pd(x), e = _mm256_sub_pd(xd, _mm256_cvtps_pd(dq));
    *sx = _mm256_add_pd(*sx, _mm256_mul_pd(xd, xd));
    *se = _mm256_add_pd(*se, _mm256_mul_pd(e, e));
}

/* error_rows_avx512 in 8-lane vectors (fp16 input widened by widen_f16x8_avx2: AVX2 alone has no
 * F16C). */
TARGET_AVX2 static void error_rows_avx2(const ejob_t *j) {
    int64_t nb = j->k / BLOCK, esize = j->in_dtype == IN_F32 ? 4 : 2;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const char *xr = j->x + r * j->x_row_bytes;
        const uint8_t *dr = j->data + r * j->k;
        __m256d sx = _mm256_setzero_pd(), se = _mm256_setzero_pd();
        for (int64_t c = 0; c < nb; c++) {
            uint32_t sb = j->scale[r * nb + c];
            __m256 factor = _mm256_set1_ps(bitsf(sb == 0xffu ? 0x7fc00000u : (sb ? sb << 23 : 0x00400000u)));
            const char *src = xr + c * BLOCK * esize;
            for (int q = 0; q < BLOCK / 8; q++) {
                __m256 x;
                if (j->in_dtype == IN_F32)
                    x = _mm256_loadu_ps((const float *)src + 8 * q);
                else if (j->in_dtype == IN_BF16)
                    x = _mm256_castsi256_ps(_mm256_slli_epi32(
                        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + 16 * q))), 16));
                else
                    x = _mm256_castsi256_ps(widen_f16x8_avx2(_mm_loadu_si128((const __m128i *)(src + 16 * q))));
                __m256 dq = _mm256_mul_ps(decode8_avx2(dr + c * BLOCK + 8 * q, j->elem), factor);
                error4_avx2(_mm256_castps256_ps128(x), _mm256_castps256_ps128(dq), &sx, &se);
                error4_avx2(_mm256_extractf128_ps(x, 1), _mm256_extractf128_ps(dq, 1), &sx, &se);
            }
        }
        double a[4], e[4];
        _mm256_storeu_pd(a, sx);
        _mm256_storeu_pd(e, se);
        j->esum[2 * r] = (a[0] + a[1]) + (a[2] + a[3]);
        j->esum[2 * r + 1] = (e[0] + e[1]) + (e[2] + e[3]);
    }
}
/* bf16 rows in 16-bit lanes, by hand (the compiler's vectorisation of the generic code widens every
 * element to 32 bits): per block its max and min of |x| by phminposuw, the scale, and the 32 codes
 * of the fast path in two vectors; NaN / Inf blocks and blocks off the fast path as the scalar code
 * does them. fp32 / fp16 rows: quantize_f32_rows_avx2 below. */
TARGET_AVX2 INLINE void quantize_bf16_rows_avx2(const qjob_t *j, int elem) {
    const fmt_t *f = &FMT[elem];
    const __m256i absm = _mm256_set1_epi16(0x7fff);
    int64_t nb = j->k / BLOCK, pcols = (nb + 3) & ~(int64_t)3, g = 0;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const char *row = j->x + r * j->row_stride_bytes;
        int64_t srow = scale_row(j, r, &g);
        for (int64_t c = 0; c < nb; c++) {
            const char *src = row + c * BLOCK * 2;
            uint8_t *out = j->data + (r * nb + c) * BLOCK, sbyte = 0xff;
            __m256i v0 = _mm256_loadu_si256((const __m256i *)src), v1 = _mm256_loadu_si256((const __m256i *)(src + 32));
            __m256i a0 = _mm256_and_si256(v0, absm), a1 = _mm256_and_si256(v1, absm);
            uint32_t amax, amin;
            hmaxmin16_avx2(a0, a1, &amax, &amin);
            if (amax >= 0x7f80u) { /* NaN or Inf in the block */
                memset(out, 0x7f, BLOCK);
            } else {
                int32_t s = scale_exp(amax << 16, f, j->mode);
                if (amin < fast_threshold(s, f) >> 16) {
                    uint32_t b[BLOCK];
                    load_block(src, IN_BF16, b);
                    encode_block(b, out, s, f);
                } else {
                    __m256i s128 = _mm256_set1_epi16((short)(s * 128));
                    _mm256_storeu_si256((__m256i *)out, pack16_avx2(encode16_avx2(v0, a0, s128, f), encode16_avx2(v1, a1, s128, f)));
                }
                sbyte = (uint8_t)(s + 127);
            }
            j->scale[j->swizzled ? swz(srow, c, pcols) : r * nb + c] = sbyte;
        }
    }
}

/* fp32 / fp16 rows by hand in 8 fp32-bit lanes (fp16 widened exactly without F16C,
 * widen_f16x8_avx2): per block its max and min of |x| by two reductions, the scale, and on the
 * fast path each |x| rounded to the element's mantissa width and rebiased by the scale in integer
 * adds (encode_block_normal's arithmetic); NaN / Inf blocks and blocks off the fast path as the
 * scalar code does them. */
TARGET_AVX2 INLINE void quantize_f32_rows_avx2(const qjob_t *j, int in_dtype, int elem) {
    const fmt_t *f = &FMT[elem];
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), one = _mm256_set1_epi32(1), sgnm = _mm256_set1_epi32(0x80);
    const __m256i half = _mm256_set1_epi32((int)f->half), maxq = _mm256_set1_epi32((int)(f->max_bits - f->rebias));
    const int sh = (int)f->shift;
    int64_t nb = j->k / BLOCK, pcols = (nb + 3) & ~(int64_t)3, g = 0, esize = in_dtype == IN_F32 ? 4 : 2;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const char *row = j->x + r * j->row_stride_bytes;
        int64_t srow = scale_row(j, r, &g);
        for (int64_t c = 0; c < nb; c++) {
            const char *src = row + c * BLOCK * esize;
            uint8_t *out = j->data + (r * nb + c) * BLOCK, sbyte = 0xff;
            __m256i v[4], a[4];
            for (int q = 0; q < 4; q++) {
                v[q] = in_dtype == IN_F32 ? _mm256_loadu_si256((const __m256i *)(src + 32 * q))
                                          : widen_f16x8_avx2(_mm_loadu_si128((const __m128i *)(src + 16 * q)));
                a[q] = _mm256_and_si256(v[q], absm);
            }
            uint32_t amax, amin;
            hmaxmin32_avx2(a, &amax, &amin);
            if (amax >= 0x7f800000u) { /* NaN or Inf in the block */
                memset(out, 0x7f, BLOCK);
            } else {
                int32_t s = scale_exp(amax, f, j->mode);
                if (amin < fast_threshold(s, f)) {
                    uint32_t b[BLOCK];
                    for (int q = 0; q < 4; q++) _mm256_storeu_si256((__m256i *)(b + 8 * q), v[q]);
                    encode_block(b, out, s, f);
                } else {
                    __m256i sbias = _mm256_set1_epi32((int)(((uint32_t)s << 23) + f->rebias)), e[4];
                    for (int q = 0; q < 4; q++) {
                        __m256i rnd = _mm256_add_epi32(_mm256_add_epi32(a[q], half), _mm256_and_si256(_mm256_srli_epi32(a[q], sh), one));
                        e[q] = _mm256_or_si256(_mm256_srli_epi32(_mm256_min_epu32(_mm256_sub_epi32(rnd, sbias), maxq), sh),
                                               _mm256_and_si256(_mm256_srli_epi32(v[q], 24), sgnm));
                    }
                    _mm256_storeu_si256((__m256i *)out, pack32_avx2(e[0], e[1], e[2], e[3], 0));
                }
                sbyte = (uint8_t)(s + 127);
            }
            j->scale[j->swizzled ? swz(srow, c, pcols) : r * nb + c] = sbyte;
        }
    }
}

TARGET_AVX2 static void quantize_rows_avx2(const qjob_t *j) {
    switch (j->in_dtype * 2 + j->elem) {
    case 0: quantize_f32_rows_avx2(j, IN_F32, E4M3); break;
    case 1: quantize_f32_rows_avx2(j, IN_F32, E5M2); break;
    case 2: quantize_bf16_rows_avx2(j, E4M3); break;
    case 3: quantize_bf16_rows_avx2(j, E5M2); break;
    case 4: quantize_f32_rows_avx2(j, IN_F16, E4M3); break;
    default: quantize_f32_rows_avx2(j, IN_F16, E5M2); break;
    }
}
TARGET_AVX2 static void dequantize_rows_avx2(const djob_t *j) { dequantize_rows_any(j); }
#endif
static void quantize_rows_base(const qjob_t *j) { quantize_rows_any(j); }
static void dequantize_rows_base(const djob_t *j) { dequantize_rows_any(j); }
static void error_rows_base(const ejob_t *j) { error_rows_any(j); }

/* ---- which variant runs: the first the CPU supports, or the one a test selected ---------- */
typedef struct {
    const char *name; /* what mxq_isa() returns (`mxquant info`) */
    void (*quantize)(const qjob_t *);
    void (*dequantize)(const djob_t *);
    void (*errors)(const ejob_t *);
} isa_t;

static const isa_t ISAS[] = {
#if MXQ_X86
    {"x86-64 avx512bw", quantize_rows_avx512, dequantize_rows_avx512, error_rows_avx512},
    {"x86-64 avx2", quantize_rows_avx2, dequantize_rows_avx2, error_rows_avx2},
    {"x86-64 baseline", quantize_rows_base, dequantize_rows_base, error_rows_base},
#elif defined(__aarch64__)
    {"aarch64", quantize_rows_base, dequantize_rows_base, error_rows_base},
#else
    {"generic", quantize_rows_base, dequantize_rows_base, error_rows_base},
#endif
};
#define N_ISAS ((int)(sizeof ISAS / sizeof ISAS[0]))

static int isa_supported(int i) {
#if MXQ_X86
    __builtin_cpu_init();
    if (i == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
    if (i == 1) return __builtin_cpu_supports("avx2");
#endif
    return i >= 0 && i < N_ISAS;
}

static int isa_now = -1; /* index into ISAS; -1 until the first call */

static const isa_t *isa(void) {
    int i = __atomic_load_n(&isa_now, __ATOMIC_RELAXED);
    if (i < 0) {
        for (i = 0; !isa_supported(i); i++) {}
        __atomic_store_n(&isa_now, i, __ATOMIC_RELAXED);
    }
    return &ISAS[i];
}

#define quantize_rows(j) isa()->quantize(j)
#define dequantize_rows(j) isa()->dequantize(j)
#define error_rows(j) isa()->errors(j)

int mxq_isa_index_(void) { return (int)(isa() - ISAS); }

/* The instruction set in use (for `mxquant info`). */
const char *mxq_isa(void) { return isa()->name; }

/* Test hook: the name of variant i (NULL past the last), and whether this CPU can run it. */
const char *mxq_isa_name(int i, int *supported) {
    if (i < 0 || i >= N_ISAS) return NULL;
    if (supported) *supported = isa_supported(i);
    return ISAS[i].name;
}

/* Test hook: run variant i from now on (-1: the automatic choice again). Returns 0, or -1 if
 * this CPU cannot run it (nothing changed). Not for use while calls are running. */
int mxq_select_isa(int i) {
    if (i == -1) {
        __atomic_store_n(&isa_now, -1, __ATOMIC_RELAXED);
        return 0;
    }
    if (i < 0 || i >= N_ISAS || !isa_supported(i)) return -1;
    __atomic_store_n(&isa_now, i, __ATOMIC_RELAXED);
    return 0;
}

/* ---- threading: rows handed out in small slices from a shared counter ------------------
 * Dynamic, not a static split: on a busy machine a thread that is not scheduled simply takes
 * fewer slices and the others (the caller included) do the rest, so a call is never much
 * slower than on one thread. */

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

static void error_task(const void *job, int64_t r0, int64_t r1) {
    ejob_t j = *(const ejob_t *)job;
    j.r0 = r0;
    j.r1 = r1;
    error_rows(&j);
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
                  data, scale, in_dtype, elem, mode, swizzled, NULL, NULL, 0};
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

/* sum(x^2) and sum((x - dq)^2) over rows of k elements: x as mxq_quantize takes it (rows
 * x_row_stride elements apart), data its rows * k output bytes, scale its linear scales;
 * esum: 2 * rows doubles the caller provides (each row's two sums), added in row order into
 * sums[0], sums[1], so the result does not depend on the thread count. Returns 0, or a
 * negative code for bad arguments. */
int mxq_error_sums(const void *x, int in_dtype, int64_t rows, int64_t k, int64_t x_row_stride, const uint8_t *data,
                   const uint8_t *scale, int elem, double *esum, double *sums, int nthreads) {
    if (in_dtype < 0 || in_dtype > 2 || elem < 0 || elem > 1) return -2;
    if (rows < 0 || k < 0 || k % BLOCK) return -3;
    sums[0] = sums[1] = 0.0;
    if (rows == 0 || k == 0) return 0;
    ejob_t job = {(const char *)x, data, scale, 0, rows, k, x_row_stride * (in_dtype == IN_F32 ? 4 : 2),
                  in_dtype, elem, esum};
    run_parallel(error_task, &job, rows, k, plan_threads(rows, k, nthreads));
    for (int64_t r = 0; r < rows; r++) {
        sums[0] += esum[2 * r];
        sums[1] += esum[2 * r + 1];
    }
    return 0;
}

/* mxfp8_quantize_grouped: the row-wise data of mxq_quantize, the scales of each group of rows
 * swizzled on their own (docs/semantics.md, "Grouped scales for MoE"). ends: ngroups int32
 * cumulative row ends (non-decreasing, the last = rows; 3-D expert weights (E, N, K) pass E
 * groups of N rows). Group g's swizzled scales start at row P_g = the sum of the earlier groups'
 * rows rounded up to 128 each; scale: scale_len bytes, every byte not a scale zero. gbuf: 2 *
 * ngroups int64 of scratch from the caller. Returns 0, or a negative code for bad arguments
 * (nothing written). */
int mxq_quantize_grouped(const void *x, int in_dtype, int64_t rows, int64_t k, int64_t row_stride, uint8_t *data,
                         uint8_t *scale, int64_t scale_len, const int32_t *ends, int64_t ngroups, int64_t *gbuf,
                         int elem, int mode, int nthreads) {
    if (in_dtype < 0 || in_dtype > 2 || elem < 0 || elem > 1 || mode < 0 || mode > 2) return -2;
    if (rows < 0 || k < 0 || k % BLOCK || ngroups < 1) return -3;
    int64_t *gend = gbuf, *goff = gbuf + ngroups, start = 0, padded = 0, pcols = (k / BLOCK + 3) & ~(int64_t)3;
    for (int64_t g = 0; g < ngroups; g++) {
        if (ends[g] < start) return -4;
        gend[g] = ends[g];
        goff[g] = padded - start;
        padded += (ends[g] - start + 127) & ~(int64_t)127;
        start = ends[g];
    }
    if (start != rows || padded * pcols > scale_len) return -4;
    memset(scale, 0, (size_t)scale_len); /* 1/32 of the data's bytes: the padding is zero */
    if (rows == 0 || k == 0) return 0;
    int n = plan_threads(rows, k, nthreads);
    advise_huge_pages(data, rows * k);
    qjob_t job = {(const char *)x, 0, rows, k, row_stride * (in_dtype == IN_F32 ? 4 : 2),
                  data, scale, in_dtype, elem, mode, 1, gend, goff, ngroups};
    run_parallel(quantize_task, &job, rows, k, n);
    return 0;
}

/* for mxq_cpu_training.c */
int mxq_plan_threads_(int64_t rows, int64_t k, int nthreads) { return plan_threads(rows, k, nthreads); }
void mxq_run_parallel_(rows_fn fn, const void *job, int64_t rows, int64_t k, int n) { run_parallel(fn, job, rows, k, n); }
void mxq_advise_huge_pages_(void *p, int64_t nbytes) { advise_huge_pages(p, nbytes); }
void mxq_zero_swizzle_padding_(uint8_t *scale, int64_t rows, int64_t nb) { zero_swizzle_padding(scale, rows, nb); }

int mxq_abi_version(void) { return 10; } /* backends/_native_lib.py ABI_VERSION */
