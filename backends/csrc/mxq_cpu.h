/* What the files of the CPU kernel share (mxq_cpu.c: row-wise quantize, dequantize, the
 * error sums, the instruction-set choice and the threads; mxq_cpu_training.c: column-wise,
 * row+column and 32x32 tiles; mxq_cpu_fp4*.c: MXFP4 / NVFP4): the block arithmetic as inline
 * functions, compiled into each variant where it is used, and the few internal functions one
 * file calls in another. */
#ifndef MXQ_CPU_H
#define MXQ_CPU_H
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(MXQ_NO_CLONES)
/* No bare avx512f variant: on a 16-core Xeon (AVX-512) an avx512f target_clones clone was the
 * slowest (2048x4096 bf16, one thread: 10.0-10.9 ms against the avx2 clone's 4.5; avx512f without BW
 * has no 8/16-bit vector ops), and a compiler-vectorised x86-64-v4 clone was no faster than avx2
 * there. The AVX-512 variant needs BW and VL and codes the common block by hand
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

/* fp8 byte -> fp32 bits, exact; NaN as the quiet 0x7fc00000 (payloads are not contractual). */
INLINE uint32_t decode_e4m3(uint32_t d) {
    uint32_t sign = (d & 0x80u) << 24, em = d & 0x7fu;
    uint32_t normal = (em << 20) + (120u << 23);
    uint32_t sub = fbits((float)(int32_t)em) - (9u << 23);
    uint32_t r = em == 0x7fu ? 0x7fc00000u : (em >= 8u ? normal : (em ? sub : 0u));
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

/* Fast path or general path for one block whose scale exponent is s (amin: the smallest |x| bits). */
INLINE void encode_with(const uint32_t *b, uint8_t *out, int32_t s, uint32_t amin, const fmt_t *f) {
    if (amin >= 0x800000u && (int64_t)amin - (int64_t)s * (1 << 23) >= (int64_t)f->min_normal)
        encode_block_normal(b, out, s, f);
    else
        encode_block(b, out, s, f);
}

/* One block of fp32 bits: its 32 element bytes to out; returns its scale byte. */
INLINE uint8_t quantize_block(const uint32_t *b, uint8_t *out, const fmt_t *f, int mode) {
    uint32_t amax = 0, amin = 0x7fffffffu;
    for (int i = 0; i < BLOCK; i++) {
        uint32_t a = b[i] & 0x7fffffffu;
        amax = a > amax ? a : amax;
        amin = a < amin ? a : amin;
    }
    if (amax >= 0x7f800000u) { /* NaN or Inf in the block */
        memset(out, 0x7f, BLOCK);
        return 0xff;
    }
    int32_t s = scale_exp(amax, f, mode);
    encode_with(b, out, s, amin, f);
    return (uint8_t)(s + 127);
}

/* Element i of a row of in_dtype as fp32 bits. */
INLINE uint32_t load_bits(const char *row, int64_t i, int in_dtype) {
    if (in_dtype == IN_F32) return ((const u32a *)row)[i];
    uint32_t h = ((const uint16_t *)row)[i];
    return in_dtype == IN_BF16 ? h << 16 : f16_to_f32(h);
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

/* Elements of a half-block pair x0, x1 (fp32 bits; a0, a1 their |x|) with scale exponent s. */
TARGET_AVX512 INLINE void encode_f32_avx512(__m512i x0, __m512i x1, __m512i a0, __m512i a1, uint8_t *out, int32_t s,
                                            const fmt_t *f) {
    __m512i thr = _mm512_set1_epi32((int)fast_threshold(s, f));
    if ((__mmask16)(_mm512_cmpge_epu32_mask(a0, thr) & _mm512_cmpge_epu32_mask(a1, thr)) != 0xffff) {
        uint32_t b[BLOCK];
        _mm512_storeu_si512(b, x0);
        _mm512_storeu_si512(b + 16, x1);
        encode_block(b, out, s, f);
        return;
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
}

TARGET_AVX512 INLINE uint8_t block_f32_avx512(__m512i x0, __m512i x1, uint8_t *out, const fmt_t *f, int mode) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    __m512i a0 = _mm512_and_si512(x0, abs_mask), a1 = _mm512_and_si512(x1, abs_mask);
    uint32_t amax = _mm512_reduce_max_epu32(_mm512_max_epu32(a0, a1));
    if (amax >= 0x7f800000u) { /* NaN or Inf in the block */
        memset(out, 0x7f, BLOCK);
        return 0xff;
    }
    int32_t s = scale_exp(amax, f, mode);
    encode_f32_avx512(x0, x1, a0, a1, out, s, f);
    return (uint8_t)(s + 127);
}

/* max of 32 unsigned 16-bit lanes, as fp32 bits (<< 16): phminposuw finds the min of their complements */
TARGET_AVX512 INLINE uint32_t hmax_epu16(__m512i a) {
    __m256i m = _mm256_max_epu16(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
    __m128i m2 = _mm_max_epu16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    return (uint32_t)(0xffff - _mm_extract_epi16(_mm_minpos_epu16(_mm_xor_si128(m2, _mm_set1_epi16(-1))), 0)) << 16;
}

/* The 32 bf16 elements x (a: their |x|) of one block with scale exponent s. */
TARGET_AVX512 INLINE void encode_bf16_avx512(__m512i x, __m512i a, uint8_t *out, int32_t s, const fmt_t *f) {
    __m512i thr = _mm512_set1_epi16((short)(fast_threshold(s, f) >> 16));
    if (_mm512_cmpge_epu16_mask(a, thr) != 0xffffffffu) {
        uint32_t b[BLOCK];
        _mm512_storeu_si512(b, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(x)), 16));
        _mm512_storeu_si512(b + 16, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(x, 1)), 16));
        encode_block(b, out, s, f);
        return;
    }
    int sh = (int)f->shift - 16;
    __m512i u = _mm512_min_epu16(_mm512_sub_epi16(a, _mm512_set1_epi16((short)(s * 128))),
                                 _mm512_set1_epi16((short)(f->max_bits >> 16)));
    __m512i r = _mm512_add_epi16(_mm512_add_epi16(u, _mm512_set1_epi16((short)((f->half >> 16) - (f->rebias >> 16)))),
                                 _mm512_and_si512(_mm512_srli_epi16(u, sh), _mm512_set1_epi16(1)));
    r = _mm512_ternarylogic_epi32(_mm512_srli_epi16(r, sh), _mm512_srli_epi16(x, 8), _mm512_set1_epi16(0x80), 0xF8);
    _mm256_storeu_si256((__m256i *)out, _mm512_cvtepi16_epi8(r));
}

TARGET_AVX512 INLINE uint8_t block_bf16_avx512(__m512i x, uint8_t *out, const fmt_t *f, int mode) {
    __m512i a = _mm512_and_si512(x, _mm512_set1_epi16(0x7fff));
    uint32_t amax = hmax_epu16(a);
    if (amax >= 0x7f800000u) {
        memset(out, 0x7f, BLOCK);
        return 0xff;
    }
    int32_t s = scale_exp(amax, f, mode);
    encode_bf16_avx512(x, a, out, s, f);
    return (uint8_t)(s + 127);
}

/* 32 elements of in_dtype (fp32 or fp16) at p as two vectors of fp32 bits. */
TARGET_AVX512 INLINE __m512i load16_f32bits(const char *p, int in_dtype) {
    if (in_dtype == IN_F32) return _mm512_loadu_si512(p);
    return _mm512_castps_si512(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)));
}
#endif

#if MXQ_X86
/* ---- AVX2: bf16 in 16-bit lanes, 16 per vector (the row-wise kernel and the training calls); fp16 widened by hand ---- */

/* Two vectors of 16-bit lanes (values <= 0xff) -> 32 bytes in lane order. */
TARGET_AVX2 INLINE __m256i pack16_avx2(__m256i a, __m256i b) {
    return _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xD8);
}

/* max and min of the 32 16-bit lanes of a and b (|x| bits, <= 0x7fff), by phminposuw. */
TARGET_AVX2 INLINE void hmaxmin16_avx2(__m256i a, __m256i b, uint32_t *mx, uint32_t *mn) {
    __m256i x = _mm256_max_epu16(a, b), n = _mm256_min_epu16(a, b);
    __m128i x2 = _mm_max_epu16(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    __m128i n2 = _mm_min_epu16(_mm256_castsi256_si128(n), _mm256_extracti128_si256(n, 1));
    *mx = 0xffffu - (uint32_t)_mm_extract_epi16(_mm_minpos_epu16(_mm_xor_si128(x2, _mm_set1_epi16(-1))), 0);
    *mn = (uint32_t)_mm_extract_epi16(_mm_minpos_epu16(n2), 0);
}

/* 8 fp16 (bits in h) -> 8 fp32 bits, exactly f16_to_f32 (NaN payloads and signalling NaNs included)
 * without F16C, which AVX2 alone does not promise: normals rebiased in the integer bits, zeros and
 * subnormals as (h & 0x3ff) * 2^-24 (an exact int -> float conversion and an exact multiply by a
 * power of two), exponent 31 as (em << 13) | 0x7f800000; the sign OR'd on. */
TARGET_AVX2 INLINE __m256i widen_f16x8_avx2(__m128i h) {
    __m256i x = _mm256_cvtepu16_epi32(h), em = _mm256_and_si256(x, _mm256_set1_epi32(0x7fff));
    __m256i sign = _mm256_slli_epi32(_mm256_xor_si256(x, em), 16), e13 = _mm256_slli_epi32(em, 13);
    __m256i normal = _mm256_add_epi32(e13, _mm256_set1_epi32(112 << 23));
    __m256i special = _mm256_or_si256(e13, _mm256_set1_epi32(0x7f800000));
    __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(em), _mm256_set1_ps(1.0f / 16777216.0f)); /* em < 0x400: exact */
    __m256i r = _mm256_blendv_epi8(normal, _mm256_castps_si256(sub), _mm256_cmpgt_epi32(_mm256_set1_epi32(0x400), em));
    r = _mm256_blendv_epi8(r, special, _mm256_cmpgt_epi32(em, _mm256_set1_epi32(0x7bff)));
    return _mm256_or_si256(r, sign);
}

/* Four vectors of 32-bit lanes (values 0..255, or 0 / -1 with sat) -> 32 bytes in lane order. */
TARGET_AVX2 INLINE __m256i pack32_avx2(__m256i a, __m256i b, __m256i c, __m256i d, int sat) {
    __m256i x = sat ? _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d))
                    : _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
    return _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* max and min of the 32 lanes of four vectors (|x| bits). */
TARGET_AVX2 INLINE void hmaxmin32_avx2(const __m256i *a, uint32_t *mx, uint32_t *mn) {
    __m256i x = _mm256_max_epu32(_mm256_max_epu32(a[0], a[1]), _mm256_max_epu32(a[2], a[3]));
    __m256i n = _mm256_min_epu32(_mm256_min_epu32(a[0], a[1]), _mm256_min_epu32(a[2], a[3]));
    __m128i x2 = _mm_max_epu32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    __m128i n2 = _mm_min_epu32(_mm256_castsi256_si128(n), _mm256_extracti128_si256(n, 1));
    x2 = _mm_max_epu32(x2, _mm_shuffle_epi32(x2, 0x4E));
    n2 = _mm_min_epu32(n2, _mm_shuffle_epi32(n2, 0x4E));
    *mx = (uint32_t)_mm_cvtsi128_si32(_mm_max_epu32(x2, _mm_shuffle_epi32(x2, 0xB1)));
    *mn = (uint32_t)_mm_cvtsi128_si32(_mm_min_epu32(n2, _mm_shuffle_epi32(n2, 0xB1)));
}

/* bf16 elements v (a = |v|) with s << 7 per lane -> fp8 codes in 16-bit lanes (fast path only:
 * every |x| * 2^-s an fp8 normal or past the max), encode_block_normal's arithmetic / 2^16. */
TARGET_AVX2 INLINE __m256i encode16_avx2(__m256i v, __m256i a, __m256i s128, const fmt_t *f) {
    int sh = (int)f->shift - 16;
    __m256i u = _mm256_min_epu16(_mm256_sub_epi16(a, s128), _mm256_set1_epi16((short)(f->max_bits >> 16)));
    __m256i q = _mm256_add_epi16(_mm256_add_epi16(u, _mm256_set1_epi16((short)((f->half >> 16) - (f->rebias >> 16)))),
                                 _mm256_and_si256(_mm256_srli_epi16(u, sh), _mm256_set1_epi16(1)));
    return _mm256_or_si256(_mm256_srli_epi16(q, sh), _mm256_and_si256(_mm256_srli_epi16(v, 8), _mm256_set1_epi16(0x80)));
}
#endif

/* ---- internal functions of mxq_cpu.c used by mxq_cpu_training.c ---------------------------- */
typedef void (*rows_fn)(const void *job, int64_t r0, int64_t r1);
int mxq_isa_index_(void); /* the variant in use: index into mxq_cpu.c's ISAS (0 = best) */
int mxq_plan_threads_(int64_t rows, int64_t k, int nthreads);
void mxq_run_parallel_(rows_fn fn, const void *job, int64_t rows, int64_t k, int n);
void mxq_advise_huge_pages_(void *p, int64_t nbytes);
void mxq_zero_swizzle_padding_(uint8_t *scale, int64_t rows, int64_t nb);

/* ---- the MXFP4 / NVFP4 entry points (mxq_cpu_fp4.c; called through ctypes, backends/_native_lib.py) ---- */
int mxq_mxfp4_quantize(const void *x, int in_dtype, int64_t rows, int64_t k, int64_t row_stride, uint8_t *data,
                       uint8_t *scale, int mode, int swizzled, int nthreads);
int mxq_nvfp4_quantize(const void *x, int in_dtype, int64_t rows, int64_t k, int64_t row_stride, uint8_t *data,
                       uint8_t *scale, float *g, int compute_g, int swizzled, int nthreads);
int mxq_mxfp4_dequantize(const uint8_t *data, int64_t rows, int64_t k, int64_t row_stride, const uint8_t *scale,
                         int swizzled, void *out, int out_dtype, int nthreads);
int mxq_nvfp4_dequantize(const uint8_t *data, int64_t rows, int64_t k, int64_t row_stride, const uint8_t *scale,
                         const float *g, int swizzled, void *out, int out_dtype, int nthreads);

#endif
