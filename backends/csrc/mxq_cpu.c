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
#include <stdint.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(MXQ_NO_CLONES)
/* No bare avx512f variant: on a 16-core Xeon (AVX-512) an avx512f target_clones clone was the
 * slowest (2048x4096 bf16, one thread: 10.0-10.9 ms against the avx2 clone's 4.5; avx512f without BW
 * has no 8/16-bit vector ops), and a compiler-vectorised x86-64-v4 clone was no faster than avx2
 * there. The AVX-512 variant below needs BW and VL and codes the common block by hand
 * (docs/performance.md). */
#define MXQ_X86 1
#include <immintrin.h>
#define TARGET_AVX2 __attribute__((target("avx2")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")))
#else
#define MXQ_X86 0
#endif
#define INLINE static inline __attribute__((always_inline))

#define BLOCK 32
#if defined(__GNUC__)
typedef uint32_t __attribute__((may_alias)) u32a; /* fp32 input read as bits */
#else
typedef uint32_t u32a;
#endif
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
            /* fp32 is read in place: copying it into b first cost 2x (a 32-byte reload of data
             * stored as 16-byte halves stalls store-to-load forwarding) */
            const uint32_t *bp = b;
            if (in_dtype == IN_F32) bp = (const u32a *)(row + c * BLOCK * 4);
            else load_block(row + c * BLOCK * esize, in_dtype, b);
            uint8_t *out = j->data + (r * nb + c) * BLOCK;
            uint32_t amax = 0, amin = 0x7fffffffu;
            for (int i = 0; i < BLOCK; i++) {
                uint32_t a = bp[i] & 0x7fffffffu;
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
                    encode_block_normal(bp, out, s, f);
                else
                    encode_block(bp, out, s, f);
                sbyte = (uint8_t)(s + 127);
            }
            j->scale[j->swizzled ? swz(r, c, pcols) : r * nb + c] = sbyte;
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

/* ---- AVX-512 (BW/VL): the common block by hand --------------------------------------
 * Same arithmetic as encode_block_normal, in vector registers: amax by a vector max and one
 * horizontal reduction; the "every |x| * 2^-s is an fp8 normal" test as one unsigned compare
 * against a threshold (no amin pass); bytes narrowed with vpmovdb / vpmovwb. bf16 stays in
 * 16-bit lanes: its low 16 fp32 bits are zero, so every constant and shift of the fp32-bit
 * formula is exact there divided by 2^16 (the rounding add 0x7ffff + bit becomes 7 + bit).
 * fp16 is widened exactly by vcvtph2ps. Blocks with NaN/Inf or needing the general path go
 * to the scalar code above (compiled for this target too). */
#if MXQ_X86
/* Threshold on |x| bits for the fast path: a normal fp32 and |x| * 2^-s >= the smallest fp8 normal. */
INLINE uint32_t fast_threshold(int32_t s, const fmt_t *f) {
    int64_t t = (int64_t)f->min_normal + (int64_t)s * (1 << 23);
    return t < 0x800000 ? 0x800000u : (uint32_t)t;
}

TARGET_AVX512 INLINE uint8_t block_f32_avx512(__m512i x0, __m512i x1, uint8_t *out, const fmt_t *f, int mode) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    __m512i a0 = _mm512_and_si512(x0, abs_mask), a1 = _mm512_and_si512(x1, abs_mask);
    uint32_t amax = _mm512_reduce_max_epu32(_mm512_max_epu32(a0, a1));
    uint32_t b[BLOCK];
    if (amax >= 0x7f800000u) { /* NaN or Inf in the block */
        memset(out, 0x7f, BLOCK);
        return 0xff;
    }
    int32_t s = scale_exp(amax, f, mode);
    __m512i thr = _mm512_set1_epi32((int)fast_threshold(s, f));
    if ((__mmask16)(_mm512_cmpge_epu32_mask(a0, thr) & _mm512_cmpge_epu32_mask(a1, thr)) != 0xffff) {
        _mm512_storeu_si512(b, x0);
        _mm512_storeu_si512(b + 16, x1);
        encode_block(b, out, s, f);
        return (uint8_t)(s + 127);
    }
    const __m512i s23 = _mm512_set1_epi32((int)((uint32_t)s << 23)), maxb = _mm512_set1_epi32((int)f->max_bits);
    const __m512i bias = _mm512_set1_epi32((int)(f->half - f->rebias)), one = _mm512_set1_epi32(1);
    const __m512i sgn = _mm512_set1_epi32(0x80);
    __m512i u0 = _mm512_min_epu32(_mm512_sub_epi32(a0, s23), maxb), u1 = _mm512_min_epu32(_mm512_sub_epi32(a1, s23), maxb);
    __m512i r0 = _mm512_add_epi32(_mm512_add_epi32(u0, bias), _mm512_and_si512(_mm512_srli_epi32(u0, f->shift), one));
    __m512i r1 = _mm512_add_epi32(_mm512_add_epi32(u1, bias), _mm512_and_si512(_mm512_srli_epi32(u1, f->shift), one));
    /* r | (x >> 24 & 0x80): ternary logic A | (B & C) */
    r0 = _mm512_ternarylogic_epi32(_mm512_srli_epi32(r0, f->shift), _mm512_srli_epi32(x0, 24), sgn, 0xF8);
    r1 = _mm512_ternarylogic_epi32(_mm512_srli_epi32(r1, f->shift), _mm512_srli_epi32(x1, 24), sgn, 0xF8);
    _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(r0));
    _mm_storeu_si128((__m128i *)(out + 16), _mm512_cvtepi32_epi8(r1));
    return (uint8_t)(s + 127);
}

TARGET_AVX512 INLINE uint8_t block_bf16_avx512(__m512i x, uint8_t *out, const fmt_t *f, int mode) {
    __m512i a = _mm512_and_si512(x, _mm512_set1_epi16(0x7fff));
    __m256i m = _mm256_max_epu16(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
    __m128i m2 = _mm_max_epu16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    /* max of 8 unsigned 16-bit lanes: phminposuw finds the min of their complements */
    uint32_t amax = (uint32_t)(0xffff - _mm_extract_epi16(_mm_minpos_epu16(_mm_xor_si128(m2, _mm_set1_epi16(-1))), 0)) << 16;
    if (amax >= 0x7f800000u) {
        memset(out, 0x7f, BLOCK);
        return 0xff;
    }
    int32_t s = scale_exp(amax, f, mode);
    __m512i thr = _mm512_set1_epi16((short)(fast_threshold(s, f) >> 16));
    if (_mm512_cmpge_epu16_mask(a, thr) != 0xffffffffu) {
        uint32_t b[BLOCK];
        _mm512_storeu_si512(b, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(x)), 16));
        _mm512_storeu_si512(b + 16, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(x, 1)), 16));
        encode_block(b, out, s, f);
        return (uint8_t)(s + 127);
    }
    int sh = (int)f->shift - 16;
    __m512i u = _mm512_min_epu16(_mm512_sub_epi16(a, _mm512_set1_epi16((short)(s * 128))),
                                 _mm512_set1_epi16((short)(f->max_bits >> 16)));
    __m512i r = _mm512_add_epi16(_mm512_add_epi16(u, _mm512_set1_epi16((short)((f->half >> 16) - (f->rebias >> 16)))),
                                 _mm512_and_si512(_mm512_srli_epi16(u, sh), _mm512_set1_epi16(1)));
    r = _mm512_ternarylogic_epi32(_mm512_srli_epi16(r, sh), _mm512_srli_epi16(x, 8), _mm512_set1_epi16(0x80), 0xF8);
    _mm256_storeu_si256((__m256i *)out, _mm512_cvtepi16_epi8(r));
    return (uint8_t)(s + 127);
}

TARGET_AVX512 INLINE void quantize_rows_avx512_impl(const qjob_t *j, int in_dtype, int elem) {
    const fmt_t *f = &FMT[elem];
    int64_t nb = j->k / BLOCK, pcols = (nb + 3) & ~(int64_t)3;
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const char *row = j->x + r * j->row_stride_bytes;
        for (int64_t c = 0; c < nb; c++) {
            const char *src = row + c * BLOCK * esize;
            uint8_t *out = j->data + (r * nb + c) * BLOCK;
            uint8_t sbyte;
            if (in_dtype == IN_F32)
                sbyte = block_f32_avx512(_mm512_loadu_si512(src), _mm512_loadu_si512(src + 64), out, f, j->mode);
            else if (in_dtype == IN_BF16)
                sbyte = block_bf16_avx512(_mm512_loadu_si512(src), out, f, j->mode);
            else
                sbyte = block_f32_avx512(_mm512_castps_si512(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)src))),
                                         _mm512_castps_si512(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + 32)))),
                                         out, f, j->mode);
            j->scale[j->swizzled ? swz(r, c, pcols) : r * nb + c] = sbyte;
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
TARGET_AVX512 static void error_rows_avx512(const ejob_t *j) { error_rows_any(j); }
TARGET_AVX2 static void error_rows_avx2(const ejob_t *j) { error_rows_any(j); }
TARGET_AVX2 static void quantize_rows_avx2(const qjob_t *j) { quantize_rows_any(j); }
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

int mxq_abi_version(void) { return 3; }
