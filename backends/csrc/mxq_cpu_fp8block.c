/* FP8 e4m3 with one scale per 128x128 block of a [R, K] weight (llm-compressor's FP8_BLOCK), byte-exact
 * with mxquant/checkpoint/fp8block.quantize (the torch statements of compressed-tensors' rules), and in the
 * same pass the error sums of `mxquant convert`'s manifest. Per block (rows past R count as 0):
 *
 *   amax  = max |x| (exact: one of x's values; NaN if the block holds one)
 *   scale = RN_x(fp32(amax) / 448) in x's dtype; +0 -> finfo(x's dtype).eps
 *   q     = e4m3_RNE(clamp(RN_x(fp32(x) / fp32(scale)), -448, 448)), one IEEE fp32 division per element
 *
 * NaN / Inf follow mxquant's fixed rule (fp8block.py's docstring), not a NaN's sign or payload as some
 * hardware or torch path leaves it: every NaN written is the positive quiet one. A block holding a NaN:
 * scale the dtype's 0x7FC0 / 0x7E00 / 0x7FC00000 (bf16 / fp16 / fp32), every element 0x7F. A block whose
 * amax is Inf: scale +Inf, finite x -> +-0 (0x00 / 0x80), +-Inf x -> Inf / Inf = NaN -> 0x7F. Such blocks
 * take the scalar code (its real division, NaN quotients mapped to 0x7F). Error sums: sum(x^2) and
 * sum((x - q * scale)^2) in double (q * scale exact there), one pair per block into the caller's esum,
 * added in block order: the result does not depend on the thread count. Blocks go to mxq_cpu.c's threads
 * two at a time; the variant (AVX-512 BW/VL, AVX2 by hand, baseline) is mxq_cpu.c's choice. A block is read
 * twice (amax, then quantize): 32 KB (bf16), from L1/L2 the second time. Built without -ffast-math: IEEE
 * division, rounding and subnormals are relied on. */
#include "mxq_cpu_fp4.h" /* round_dtype, e4m3_rne */

#define FB 128                     /* the block's side */
#define E4M3_MAXB 0x43e00000u      /* 448.0 */
#define F32_NAN 0x7fc00000u

typedef struct {
    const char *x;        /* rows of k elements of dtype, rstride bytes apart */
    int64_t rows, k, rstride;
    int dtype;
    uint8_t *data;        /* rows * k bytes */
    uint8_t *scale;       /* ceil(rows / 128) * (k / 128) elements of dtype */
    double *esum;         /* 2 per block (NULL: no sums) */
} bjob_t;

INLINE int64_t esz(int dtype) { return dtype == IN_F32 ? 4 : 2; }

/* Element i (row-major, 128 a row) of the block at rows r0.., columns c0..: x's address, data's address. */
INLINE const char *x_at(const bjob_t *j, int64_t r0, int64_t c0, int64_t i, int dtype) {
    return j->x + (r0 + i / FB) * j->rstride + (c0 + i % FB) * esz(dtype);
}
INLINE uint8_t *q_at(const bjob_t *j, int64_t r0, int64_t c0, int64_t i) { return j->data + (r0 + i / FB) * j->k + c0 + i % FB; }

/* The scale of a block whose largest |x| has fp32 bits amax: stored as dtype, *s its fp32 value. */
INLINE void put_block_scale(const bjob_t *j, int64_t b, uint32_t amax, float *s) {
    static const uint32_t eps[3] = {0x34000000u, 0x3c000000u, 0x3a800000u}; /* 2^-23, 2^-7, 2^-10 */
    float v = amax > 0x7f800000u ? bitsf(F32_NAN) : round_dtype(bitsf(amax) / 448.0f, j->dtype);
    v = v == 0.0f ? bitsf(eps[j->dtype]) : v;
    *s = v;
    if (j->dtype == IN_F32) memcpy(j->scale + 4 * b, &v, 4);
    else {
        uint16_t h = (uint16_t)(j->dtype == IN_BF16 ? fbits(v) >> 16 : f32_to_f16(fbits(v)));
        memcpy(j->scale + 2 * b, &h, 2);
    }
}

/* One element, x as fp32 bits, with the block's scale s: its e4m3 byte; *dq its value times s (double). */
INLINE uint8_t fp8_element(uint32_t xb, float s, int dtype, double *dq) {
    uint32_t u = fbits(round_dtype(bitsf(xb) / s, dtype)), sign = (u >> 24) & 0x80u, a = u & 0x7fffffffu;
    uint32_t q = a > 0x7f800000u ? 0x7fu : (e4m3_rne(bitsf(a < E4M3_MAXB ? a : E4M3_MAXB)) | sign); /* NaN: 0x7F */
    *dq = (double)bitsf(decode_e4m3(q)) * (double)s;
    return (uint8_t)q;
}

/* The scalar code: block b (rows r0..r0 + nr, columns c0..c0 + 128), its largest |x| as fp32 bits amax. */
INLINE void block_scalar_amax(const bjob_t *j, int64_t b, uint32_t amax, int64_t r0, int64_t nr, int64_t c0,
                              int dtype) {
    float s;
    put_block_scale(j, b, amax, &s);
    double sx = 0.0, se = 0.0;
    for (int64_t r = r0; r < r0 + nr; r++) {
        const char *row = j->x + r * j->rstride;
        uint8_t *out = j->data + r * j->k;
        for (int64_t i = c0; i < c0 + FB; i++) {
            uint32_t xb = load_bits(row, i, dtype);
            double dq, v = bitsf(xb);
            out[i] = fp8_element(xb, s, dtype, &dq);
            sx += v * v;
            se += (v - dq) * (v - dq);
        }
    }
    if (j->esum) {
        j->esum[2 * b] = sx;
        j->esum[2 * b + 1] = se;
    }
}

INLINE void block_scalar(const bjob_t *j, int64_t b, int64_t r0, int64_t nr, int64_t c0, int dtype) {
    uint32_t amax = 0;
    for (int64_t r = r0; r < r0 + nr; r++) {
        const char *row = j->x + r * j->rstride;
        for (int64_t i = c0; i < c0 + FB; i++) {
            uint32_t a = load_bits(row, i, dtype) & 0x7fffffffu;
            amax = a > amax ? a : amax;
        }
    }
    block_scalar_amax(j, b, amax, r0, nr, c0, dtype);
}

/* Where a variant's vector code cannot take block b (NaN or Inf in it): the scalar code and its real
 * division does, given the variant's amax, and 1 is returned; else its scale is written, *s its value,
 * 0 returned. */
INLINE int special_block(const bjob_t *j, int64_t b, uint32_t amax, int64_t r0, int64_t nr, int64_t c0, int dtype,
                         float *s) {
    if (amax >= 0x7f800000u) {
        block_scalar_amax(j, b, amax, r0, nr, c0, dtype);
        return 1;
    }
    put_block_scale(j, b, amax, s);
    return 0;
}

/* Blocks b0..b1 (row-block-major) by a variant's block function, x's dtype a constant in each loop. */
#define BLOCKS_LOOP(BLOCK_FN, j, b0, b1, dtype)                                                                 \
    do {                                                                                                        \
        int64_t kb_ = (j)->k / FB;                                                                              \
        for (int64_t b = (b0); b < (b1); b++) {                                                                 \
            int64_t r0_ = b / kb_ * FB, nr_ = (j)->rows - r0_ < FB ? (j)->rows - r0_ : FB;                      \
            BLOCK_FN(j, b, r0_, nr_, b % kb_ * FB, dtype);                                                      \
        }                                                                                                       \
    } while (0)
#define BLOCKS_DISPATCH(BLOCK_FN, j, b0, b1)                                                                    \
    switch ((j)->dtype) {                                                                                       \
    case IN_F32: BLOCKS_LOOP(BLOCK_FN, j, b0, b1, IN_F32); break;                                               \
    case IN_BF16: BLOCKS_LOOP(BLOCK_FN, j, b0, b1, IN_BF16); break;                                             \
    default: BLOCKS_LOOP(BLOCK_FN, j, b0, b1, IN_F16); break;                                                   \
    }

static void blocks_base(const bjob_t *j, int64_t b0, int64_t b1) { BLOCKS_DISPATCH(block_scalar, j, b0, b1) }

#if MXQ_X86
/* ---- AVX-512 (BW/VL) ---------------------------------------------------------------------------
 * amax in 16-bit lanes for bf16 / fp16 (|x| bits order as the magnitudes, NaN above Inf), 32-bit for
 * fp32; then 16 elements a vector: vdivps, the rounding to x's dtype (bf16: integer RNE on the bits;
 * fp16: vcvtps2ph / vcvtph2ps), clamp as an unsigned min on |y| bits, e4m3 RNE (normal: integer add
 * at bit 20; subnormal: + 2^14, whose ulp is e4m3's 2^-9), q's value from the same sums, error sums
 * in 8 double lanes. */
TARGET_AVX512 INLINE uint32_t amax_avx512(const bjob_t *j, int64_t r0, int64_t nr, int64_t c0, int dtype) {
    __m512i m = _mm512_setzero_si512(), abs = dtype == IN_F32 ? _mm512_set1_epi32(0x7fffffff) : _mm512_set1_epi16(0x7fff);
    for (int64_t r = r0; r < r0 + nr; r++) {
        const char *p = j->x + r * j->rstride + c0 * esz(dtype);
        for (int v = 0; v < FB * esz(dtype) / 64; v++) {
            __m512i a = _mm512_and_si512(_mm512_loadu_si512(p + 64 * v), abs);
            m = dtype == IN_F32 ? _mm512_max_epu32(m, a) : _mm512_max_epu16(m, a);
        }
    }
    if (dtype == IN_F32) return _mm512_reduce_max_epu32(m);
    __m256i m2 = _mm256_max_epu16(_mm512_castsi512_si256(m), _mm512_extracti64x4_epi64(m, 1));
    __m128i m1 = _mm_max_epu16(_mm256_castsi256_si128(m2), _mm256_extracti128_si256(m2, 1));
    uint32_t h = 0xffffu - (uint32_t)_mm_extract_epi16(_mm_minpos_epu16(_mm_xor_si128(m1, _mm_set1_epi16(-1))), 0);
    return dtype == IN_BF16 ? h << 16 : f16_to_f32(h);
}

/* 16 elements x (fp32) of a finite block with scale s: their bytes to out, the error sums added. */
TARGET_AVX512 INLINE void quant16_avx512(__m512 x, __m512 s, int dtype, uint8_t *out, __m512d sd, __m512d *sx,
                                         __m512d *se, int sums) {
    const __m512i one = _mm512_set1_epi32(1);
    __m512 y = _mm512_div_ps(x, s);
    __m512i u;
    if (dtype == IN_BF16) {
        u = _mm512_castps_si512(y);
        u = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
        u = _mm512_and_si512(u, _mm512_set1_epi32((int)0xffff0000u));
    } else if (dtype == IN_F16) {
        u = _mm512_castps_si512(_mm512_cvtph_ps(_mm512_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    } else {
        u = _mm512_castps_si512(y);
    }
    __m512i a = _mm512_min_epu32(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32((int)E4M3_MAXB));
    __m512i t = _mm512_add_epi32(a, _mm512_add_epi32(_mm512_set1_epi32(0x7ffff), _mm512_and_si512(_mm512_srli_epi32(a, 20), one)));
    __m512 sub = _mm512_add_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(16384.0f));
    __mmask16 normal = _mm512_cmpge_epu32_mask(a, _mm512_set1_epi32((int)(121u << 23)));
    __m512i qb = _mm512_mask_mov_epi32(_mm512_sub_epi32(_mm512_castps_si512(sub), _mm512_set1_epi32((int)(141u << 23))),
                                       normal, _mm512_srli_epi32(_mm512_sub_epi32(t, _mm512_set1_epi32((int)(120u << 23))), 20));
    /* sign | qb: ternary logic A | (B & C) */
    qb = _mm512_ternarylogic_epi32(qb, _mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80), 0xF8);
    _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(qb));
    if (!sums) return;
    __m512i qv = _mm512_mask_mov_epi32(_mm512_castps_si512(_mm512_sub_ps(sub, _mm512_set1_ps(16384.0f))), normal,
                                       _mm512_and_si512(t, _mm512_set1_epi32((int)0xfff00000u)));
    qv = _mm512_ternarylogic_epi32(qv, u, _mm512_set1_epi32((int)0x80000000u), 0xF8);
    __m512 qf = _mm512_castsi512_ps(qv);
    for (int h = 0; h < 2; h++) {
        __m256 xh = h ? _mm512_extractf32x8_ps(x, 1) : _mm512_castps512_ps256(x);
        __m256 qh = h ? _mm512_extractf32x8_ps(qf, 1) : _mm512_castps512_ps256(qf);
        __m512d xd = _mm512_cvtps_pd(xh), e = _mm512_fnmadd_pd(_mm512_cvtps_pd(qh), sd, xd); /* x - q * s, q * s exact */
        *sx = _mm512_fmadd_pd(xd, xd, *sx);
        *se = _mm512_fmadd_pd(e, e, *se);
    }
}

TARGET_AVX512 INLINE void block_avx512_sums(const bjob_t *j, int64_t b, int64_t r0, int64_t nr, int64_t c0, int dtype,
                                            int sums) {
    float s;
    if (special_block(j, b, amax_avx512(j, r0, nr, c0, dtype), r0, nr, c0, dtype, &s)) return;
    __m512 sv = _mm512_set1_ps(s);
    __m512d sd = _mm512_set1_pd((double)s), sx = _mm512_setzero_pd(), se = _mm512_setzero_pd();
    for (int64_t i = 0; i < nr * FB; i += 16) {
        const char *p = x_at(j, r0, c0, i, dtype);
        __m512 x;
        if (dtype == IN_F32) x = _mm512_loadu_ps(p);
        else if (dtype == IN_BF16) x = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
        else x = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        quant16_avx512(x, sv, dtype, q_at(j, r0, c0, i), sd, &sx, &se, sums);
    }
    if (sums) {
        j->esum[2 * b] = _mm512_reduce_add_pd(sx);
        j->esum[2 * b + 1] = _mm512_reduce_add_pd(se);
    }
}

TARGET_AVX512 INLINE void block_avx512(const bjob_t *j, int64_t b, int64_t r0, int64_t nr, int64_t c0, int dtype) {
    if (j->esum) block_avx512_sums(j, b, r0, nr, c0, dtype, 1);
    else block_avx512_sums(j, b, r0, nr, c0, dtype, 0);
}

TARGET_AVX512 static void blocks_avx512(const bjob_t *j, int64_t b0, int64_t b1) { BLOCKS_DISPATCH(block_avx512, j, b0, b1) }

/* ---- AVX2: the same in 8 lanes. fp16 without F16C (AVX2 alone does not promise it): x widened exactly by
 * widen_f16x8_avx2 (mxq_cpu.h), y = x / s rounded to fp16 precision in the integer bits (RNE at bit 13,
 * exact for |y| in fp16's normal range; y never reaches its overflow, |y| <= 672; a |y| below 2^-14 keeps
 * its sign and stays at most 2^-14, so e4m3 gives it +-0 as after an exact rounding). */
TARGET_AVX2 INLINE uint32_t amax_avx2(const bjob_t *j, int64_t r0, int64_t nr, int64_t c0, int dtype) {
    __m256i m = _mm256_setzero_si256(), abs = dtype == IN_F32 ? _mm256_set1_epi32(0x7fffffff) : _mm256_set1_epi16(0x7fff);
    for (int64_t r = r0; r < r0 + nr; r++) {
        const char *p = j->x + r * j->rstride + c0 * esz(dtype);
        for (int v = 0; v < FB * esz(dtype) / 32; v++) {
            __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + 32 * v)), abs);
            m = dtype == IN_F32 ? _mm256_max_epu32(m, a) : _mm256_max_epu16(m, a);
        }
    }
    if (dtype == IN_F32) {
        __m128i m1 = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
        m1 = _mm_max_epu32(m1, _mm_shuffle_epi32(m1, 0x4e));
        m1 = _mm_max_epu32(m1, _mm_shuffle_epi32(m1, 0xb1));
        return (uint32_t)_mm_cvtsi128_si32(m1);
    }
    __m128i m1 = _mm_max_epu16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    uint32_t h = 0xffffu - (uint32_t)_mm_extract_epi16(_mm_minpos_epu16(_mm_xor_si128(m1, _mm_set1_epi16(-1))), 0);
    return dtype == IN_BF16 ? h << 16 : f16_to_f32(h);
}

/* 8 elements x (as fp32) of a finite block: 8 bytes to out, the error sums added. */
TARGET_AVX2 INLINE void quant8_avx2(__m256 x, __m256 s, int dtype, uint8_t *out, __m256d sd, __m256d *sx, __m256d *se,
                                    int sums) {
    const __m256i one = _mm256_set1_epi32(1);
    __m256i u = _mm256_castps_si256(_mm256_div_ps(x, s));
    if (dtype == IN_BF16) {
        u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
        u = _mm256_and_si256(u, _mm256_set1_epi32((int)0xffff0000u));
    } else if (dtype == IN_F16) {
        u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0xfff), _mm256_and_si256(_mm256_srli_epi32(u, 13), one)));
        u = _mm256_and_si256(u, _mm256_set1_epi32((int)0xffffe000u));
    }
    __m256i a = _mm256_min_epu32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32((int)E4M3_MAXB));
    __m256i t = _mm256_add_epi32(a, _mm256_add_epi32(_mm256_set1_epi32(0x7ffff), _mm256_and_si256(_mm256_srli_epi32(a, 20), one)));
    __m256 sub = _mm256_add_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(16384.0f));
    /* a >= 121 << 23 (a <= 448's bits: a signed compare is right) */
    __m256i normal = _mm256_cmpgt_epi32(a, _mm256_set1_epi32((int)(121u << 23) - 1));
    __m256i qb = _mm256_blendv_epi8(_mm256_sub_epi32(_mm256_castps_si256(sub), _mm256_set1_epi32((int)(141u << 23))),
                                    _mm256_srli_epi32(_mm256_sub_epi32(t, _mm256_set1_epi32((int)(120u << 23))), 20), normal);
    qb = _mm256_or_si256(qb, _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80)));
    /* the low byte of each 32-bit lane: bytes 0, 4, 8, 12 of each 128-bit half, then the halves joined */
    __m256i pk = _mm256_shuffle_epi8(qb, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                          0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
    __m128i lo = _mm256_castsi256_si128(pk), hi = _mm256_extracti128_si256(pk, 1);
    _mm_storel_epi64((__m128i *)out, _mm_unpacklo_epi32(lo, hi));
    if (!sums) return;
    __m256i qv = _mm256_blendv_epi8(_mm256_castps_si256(_mm256_sub_ps(sub, _mm256_set1_ps(16384.0f))),
                                    _mm256_and_si256(t, _mm256_set1_epi32((int)0xfff00000u)), normal);
    qv = _mm256_or_si256(qv, _mm256_and_si256(u, _mm256_set1_epi32((int)0x80000000u)));
    __m256 qf = _mm256_castsi256_ps(qv);
    for (int h = 0; h < 2; h++) {
        __m128 xh = h ? _mm256_extractf128_ps(x, 1) : _mm256_castps256_ps128(x);
        __m128 qh = h ? _mm256_extractf128_ps(qf, 1) : _mm256_castps256_ps128(qf);
        __m256d xd = _mm256_cvtps_pd(xh);
        __m256d e = _mm256_sub_pd(xd, _mm256_mul_pd(_mm256_cvtps_pd(qh), sd)); /* q * s exact in double */
        *sx = _mm256_add_pd(*sx, _mm256_mul_pd(xd, xd));
        *se = _mm256_add_pd(*se, _mm256_mul_pd(e, e));
    }
}

TARGET_AVX2 INLINE void block_avx2_sums(const bjob_t *j, int64_t b, int64_t r0, int64_t nr, int64_t c0, int dtype,
                                        int sums) {
    float s;
    if (special_block(j, b, amax_avx2(j, r0, nr, c0, dtype), r0, nr, c0, dtype, &s)) return;
    __m256 sv = _mm256_set1_ps(s);
    __m256d sd = _mm256_set1_pd((double)s), sx = _mm256_setzero_pd(), se = _mm256_setzero_pd();
    for (int64_t i = 0; i < nr * FB; i += 8) {
        const char *p = x_at(j, r0, c0, i, dtype);
        __m256 x;
        if (dtype == IN_F32) x = _mm256_loadu_ps((const float *)p);
        else if (dtype == IN_BF16) x = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
        else x = _mm256_castsi256_ps(widen_f16x8_avx2(_mm_loadu_si128((const __m128i *)p)));
        quant8_avx2(x, sv, dtype, q_at(j, r0, c0, i), sd, &sx, &se, sums);
    }
    if (sums) {
        double a[4], e[4];
        _mm256_storeu_pd(a, sx);
        _mm256_storeu_pd(e, se);
        j->esum[2 * b] = (a[0] + a[1]) + (a[2] + a[3]);
        j->esum[2 * b + 1] = (e[0] + e[1]) + (e[2] + e[3]);
    }
}

TARGET_AVX2 INLINE void block_avx2(const bjob_t *j, int64_t b, int64_t r0, int64_t nr, int64_t c0, int dtype) {
    if (j->esum) block_avx2_sums(j, b, r0, nr, c0, dtype, 1);
    else block_avx2_sums(j, b, r0, nr, c0, dtype, 0);
}

TARGET_AVX2 static void blocks_avx2(const bjob_t *j, int64_t b0, int64_t b1) { BLOCKS_DISPATCH(block_avx2, j, b0, b1) }

static void (*const FP8BLOCK_FNS[])(const bjob_t *, int64_t, int64_t) = {blocks_avx512, blocks_avx2, blocks_base};
#else
static void (*const FP8BLOCK_FNS[])(const bjob_t *, int64_t, int64_t) = {blocks_base};
#endif

static void fp8block_task(const void *job, int64_t b0, int64_t b1) {
    FP8BLOCK_FNS[mxq_isa_index_()]((const bjob_t *)job, b0, b1);
}

/* x: rows of k elements (fp32 / bf16 / fp16 = in_dtype 0 / 1 / 2; k a multiple of 128), row r at
 * x + r * row_stride elements. data: rows * k e4m3 bytes; scale: ceil(rows / 128) * (k / 128) elements of
 * in_dtype (row-major). esum: 2 doubles per block from the caller, or NULL for no sums; sums[0], sums[1]:
 * sum(x^2), sum((x - dequantized)^2) (0 where esum is NULL). Returns 0, or a negative code for bad
 * arguments (nothing written). */
int mxq_fp8block_quantize(const void *x, int in_dtype, int64_t rows, int64_t k, int64_t row_stride, uint8_t *data,
                          void *scale, double *esum, double *sums, int nthreads) {
    if (in_dtype < 0 || in_dtype > 2) return -2;
    if (rows < 0 || k < 0 || k % FB) return -3;
    int64_t nblocks = (rows + FB - 1) / FB * (k / FB);
    sums[0] = sums[1] = 0.0;
    if (nblocks == 0) return 0;
    mxq_advise_huge_pages_(data, rows * k);
    bjob_t j = {(const char *)x, rows, k, row_stride * esz(in_dtype), in_dtype, data, (uint8_t *)scale, esum};
    mxq_run_parallel_(fp8block_task, &j, nblocks, FB * FB, mxq_plan_threads_(nblocks, FB * FB, nthreads));
    if (esum)
        for (int64_t b = 0; b < nblocks; b++) {
            sums[0] += esum[2 * b];
            sums[1] += esum[2 * b + 1];
        }
    return 0;
}
