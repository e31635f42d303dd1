/* The AVX-512 (BW/VL) variant of mxq_cpu_fp4.c: the same arithmetic as its scalar code, 16
 * elements a vector (bf16 widened by a shift, fp16 exactly by vcvtph2ps). MXFP4: the block's
 * amax by a vector max and one reduction, y = x * 2^-s, e2m1 by the integer formula, nibbles
 * paired within 64-bit lanes and narrowed with vpmovqb. NVFP4: the amax of 16 groups, then their
 * 16 scales in one vector (the two fp32 divisions, the rounding to x's dtype, e4m3 RNE) and
 * each group's elements divided by its q. Dequantize: nibbles index a 16-entry table (vpermps). */
#include "mxq_cpu_fp4.h"

#if MXQ_X86
#define V1(c) _mm512_set1_epi32((int)(c))

/* 16 elements of in_dtype at p as fp32 bits (exact). */
TARGET_AVX512 INLINE __m512i ld16(const char *p, int in_dtype) {
    if (in_dtype == IN_BF16) return _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
    return load16_f32bits(p, in_dtype);
}

/* e2m1_index of 16 values y, with the sign nibble where cmp > negthr (unsigned). */
TARGET_AVX512 INLINE __m512i e2m1_v(__m512 y, __m512i cmp, uint32_t negthr) {
    __m512i u = _mm512_castps_si512(_mm512_range_ps(y, _mm512_set1_ps(6.0f), 0x0a)); /* min(|y|, 6), sign cleared */
    __m512i normal = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, V1(E2M1_BIAS)),
                                                        _mm512_and_si512(_mm512_srli_epi32(u, 22), V1(1))), 22);
    __m512i sub = _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(u), _mm512_set1_ps(4194304.0f))),
                                   V1(E2M1_MAGIC));
    __m512i n = _mm512_mask_mov_epi32(sub, _mm512_cmpge_epu32_mask(u, V1(E2M1_ONE)), normal);
    return _mm512_mask_or_epi32(n, _mm512_cmpgt_epu32_mask(cmp, V1(negthr)), n, V1(8));
}

/* 16 nibbles (one per 32-bit lane) -> 8 bytes, element 2j in the low nibble of byte j. */
TARGET_AVX512 INLINE __m128i pack16_v(__m512i n) { return _mm512_cvtepi64_epi8(_mm512_or_si512(n, _mm512_srli_epi64(n, 28))); }

/* One block of 32 bf16 x (a = |x|) in 16-bit lanes, for s >= -124 (0.25 * 2^s is a bf16 normal):
 * |y| >= 1 by the integer formula on the bits of |y| = |x| - s * 2^7 (x and y normal: exact),
 * below 1 the index is the count of 0.25 * 2^s < |x| and 0.75 * 2^s <= |x|. The compressed-
 * tensors sign: RN_bf16(RN_fp32(|x| 2^-s)) != 0 exactly when |x| > 2^(s - 134) (s >= 1; any
 * |x| > 0 for s <= 0), a bf16 threshold with no bf16 value between it and the rounding edge. */
TARGET_AVX512 INLINE void mx4_bf16_v(__m512i x, __m512i a, int32_t s, int mode, uint8_t *out) {
    const __m512i one = _mm512_set1_epi16(1);
    int s7 = s * 128;
    __m512i v = _mm512_min_epu16(_mm512_sub_epi16(a, _mm512_set1_epi16((short)s7)), _mm512_set1_epi16(0x40c0));
    __m512i n = _mm512_srli_epi16(_mm512_add_epi16(_mm512_add_epi16(v, _mm512_set1_epi16((short)(0x1f - 0x3f00))),
                                                   _mm512_and_si512(_mm512_srli_epi16(v, 6), one)), 6);
    __m512i sub = _mm512_maskz_mov_epi16(_mm512_cmpgt_epu16_mask(a, _mm512_set1_epi16((short)(0x3e80 + s7))), one);
    sub = _mm512_mask_add_epi16(sub, _mm512_cmpge_epu16_mask(a, _mm512_set1_epi16((short)(0x3f40 + s7))), sub, one);
    n = _mm512_mask_mov_epi16(sub, _mm512_cmpge_epu16_mask(a, _mm512_set1_epi16((short)(0x3f80 + s7))), n);
    int negthr = mode != CT ? 0x7fff : 0x8000 | (s <= 0 ? 0 : (s < 8 ? 1 << (s - 1) : (s - 7) << 7));
    n = _mm512_mask_add_epi16(n, _mm512_cmpgt_epu16_mask(x, _mm512_set1_epi16((short)negthr)), n, _mm512_set1_epi16(8));
    _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(_mm512_or_si512(n, _mm512_srli_epi32(n, 12))));
}

/* One block from its two halves as fp32 bits: y = x * 2^-s, e2m1_v. */
TARGET_AVX512 INLINE void mx4_f32_v(__m512i x0, __m512i x1, int32_t s, int mode, uint32_t negthr, uint8_t *out) {
    __m512 inv = _mm512_set1_ps(pow2_neg(s));
    __m512 y0 = _mm512_mul_ps(_mm512_castsi512_ps(x0), inv), y1 = _mm512_mul_ps(_mm512_castsi512_ps(x1), inv);
    __m512i n0 = e2m1_v(y0, mode == CT ? _mm512_castps_si512(y0) : x0, negthr);
    __m512i n1 = e2m1_v(y1, mode == CT ? _mm512_castps_si512(y1) : x1, negthr);
    _mm_storeu_si128((__m128i *)out, _mm_unpacklo_epi64(pack16_v(n0), pack16_v(n1)));
}

TARGET_AVX512 INLINE void mx4_rows_mode(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype, int mode) {
    int64_t nb = j->k / 32, es = in_dtype == IN_F32 ? 4 : 2;
    uint32_t negthr = neg_threshold(mode, in_dtype);
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t c = 0; c < nb; c++) {
            const char *src = j->x + r * j->rstride + c * 32 * es;
            uint8_t *out = j->data + r * (j->k / 2) + c * 16;
            __m512i x0, x1, xb = _mm512_setzero_si512(), ab = xb;
            uint32_t amax;
            if (in_dtype == IN_BF16) {
                xb = _mm512_loadu_si512(src);
                ab = _mm512_and_si512(xb, _mm512_set1_epi16(0x7fff));
                amax = hmax_epu16(ab);
            } else {
                x0 = ld16(src, in_dtype);
                x1 = ld16(src + 16 * es, in_dtype);
                amax = _mm512_reduce_max_epu32(_mm512_max_epu32(_mm512_and_si512(x0, V1(0x7fffffff)),
                                                                _mm512_and_si512(x1, V1(0x7fffffff))));
            }
            if (amax >= 0x7f800000u) { /* NaN or Inf: scale 0xFF, nibbles 0 */
                memset(out, 0, 16);
                put_scale(j, r, c, nb, 0xffu);
                continue;
            }
            int32_t s = fp4_scale_exp(amax, mode);
            if (in_dtype == IN_BF16 && s >= -124) {
                mx4_bf16_v(xb, ab, s, mode, out);
            } else {
                if (in_dtype == IN_BF16) {
                    x0 = ld16(src, IN_BF16);
                    x1 = ld16(src + 32, IN_BF16);
                }
                mx4_f32_v(x0, x1, s, mode, negthr, out);
            }
            put_scale(j, r, c, nb, (uint32_t)(s + 127));
        }
    }
}

TARGET_AVX512 INLINE void avx512_mx4_rows(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    if (j->mode == RCEIL) mx4_rows_mode(j, r0, r1, in_dtype, RCEIL);
    else if (j->mode == FLOOR) mx4_rows_mode(j, r0, r1, in_dtype, FLOOR);
    else mx4_rows_mode(j, r0, r1, in_dtype, CT);
}

/* The scale bytes of 16 groups from their amax bits a (nv4_scale per lane; 0x7F for NaN/Inf), and q. */
TARGET_AVX512 INLINE __m512i nv4_scales_v(__m512i a, int in_dtype, float g, __m512 *q) {
    __m512 gv = _mm512_set1_ps(g), a6 = _mm512_div_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(6.0f));
    if (in_dtype == IN_BF16) { /* RNE to bf16 on the bits (finite lanes; the others are replaced below) */
        __m512i u = _mm512_castps_si512(a6);
        u = _mm512_add_epi32(_mm512_add_epi32(u, V1(0x7fff)), _mm512_and_si512(_mm512_srli_epi32(u, 16), V1(1)));
        a6 = _mm512_castsi512_ps(_mm512_and_si512(u, V1(0xffff0000u)));
    } else if (in_dtype == IN_F16) {
        a6 = _mm512_cvtph_ps(_mm512_cvtps_ph(a6, _MM_FROUND_TO_NEAREST_INT));
    }
    __m512 p = _mm512_min_ps(_mm512_mul_ps(gv, a6), _mm512_set1_ps(448.0f));
    __m512i u = _mm512_castps_si512(p);
    __m512i normal = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, V1(0x7ffffu - (120u << 23))),
                                                        _mm512_and_si512(_mm512_srli_epi32(u, 20), V1(1))), 20);
    __m512i sub = _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(p, _mm512_set1_ps(16384.0f))), V1(141u << 23));
    __m512i b = _mm512_mask_mov_epi32(sub, _mm512_cmpge_epu32_mask(u, V1(121u << 23)), normal);
    b = _mm512_mask_mov_epi32(b, _mm512_cmpeq_epi32_mask(b, _mm512_setzero_si512()), V1(NV_ZERO_SCALE));
    /* the scale's value: e4m3 normal from bits, subnormal b * 2^-9 */
    __m512 v = _mm512_mask_mov_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(b), _mm512_set1_ps(1.0f / 512.0f)),
                                  _mm512_cmpge_epu32_mask(b, V1(8)),
                                  _mm512_castsi512_ps(_mm512_add_epi32(_mm512_slli_epi32(b, 20), V1(120u << 23))));
    *q = _mm512_div_ps(v, gv);
    return _mm512_mask_mov_epi32(b, _mm512_cmpge_epu32_mask(a, V1(0x7f800000u)), V1(0x7f));
}

/* Lane 4k + j = the largest lane of v[4j + k] (unsigned): four rounds of pairwise maxima,
 * halving the vectors each round (128-bit blocks, then 64-bit, then 32-bit elements). */
TARGET_AVX512 INLINE __m512i hmax16_v(__m512i *v) {
    for (int i = 0; i < 8; i++)
        v[i] = _mm512_max_epu32(_mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0x44), _mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0xee));
    for (int i = 0; i < 4; i++)
        v[i] = _mm512_max_epu32(_mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0x88), _mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0xdd));
    for (int i = 0; i < 2; i++)
        v[i] = _mm512_max_epu32(_mm512_unpacklo_epi64(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_epi64(v[2 * i], v[2 * i + 1]));
    __m512 a = _mm512_castsi512_ps(v[0]), b = _mm512_castsi512_ps(v[1]);
    return _mm512_max_epu32(_mm512_castps_si512(_mm512_shuffle_ps(a, b, 0x88)), _mm512_castps_si512(_mm512_shuffle_ps(a, b, 0xdd)));
}

TARGET_AVX512 INLINE void avx512_nv4_rows(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    int64_t ng = j->k / 16, es = in_dtype == IN_F32 ? 4 : 2;
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t c0 = 0; c0 < ng; c0 += 16) { /* 16 groups at a time (fewer at the row's end) */
            int n = ng - c0 < 16 ? (int)(ng - c0) : 16;
            const char *src = j->x + r * j->rstride + c0 * 16 * es;
            uint8_t *out = j->data + r * (j->k / 2) + c0 * 8;
            __m512i x[16], a[16];
            for (int i = 0; i < 16; i++) { /* group 4k + j's |x| in slot 4j + k: hmax16_v's order */
                x[i] = i < n ? ld16(src + i * 16 * es, in_dtype) : _mm512_setzero_si512();
                a[(i & 3) * 4 + (i >> 2)] = _mm512_and_si512(x[i], V1(0x7fffffff));
            }
            __m512i amax = hmax16_v(a);
            __m512 qv;
            __m512i b = nv4_scales_v(amax, in_dtype, j->g, &qv);
            __mmask16 finite = _mm512_cmplt_epu32_mask(amax, V1(0x7f800000u));
            float q[16];
            _mm512_storeu_ps(q, qv);
            for (int i = 0; i < n; i++) {
                __m512 y = _mm512_div_ps(_mm512_castsi512_ps(x[i]), _mm512_set1_ps(q[i]));
                __m512i nib = e2m1_v(y, _mm512_castps_si512(y), 0x80000000u);
                _mm_storel_epi64((__m128i *)(out + i * 8), pack16_v(nib));
            }
            if (finite != 0xffff)
                for (int i = 0; i < n; i++)
                    if (!(finite >> i & 1)) memset(out + i * 8, 0, 8); /* NaN / Inf: nibbles 0 */
            if (!j->swizzled && n == 16) {
                _mm_storeu_si128((__m128i *)(j->scale + r * ng + c0), _mm512_cvtepi32_epi8(b));
            } else {
                uint32_t sb[16];
                _mm512_storeu_si512(sb, b);
                for (int i = 0; i < n; i++) put_scale(j, r, c0 + i, ng, sb[i]);
            }
        }
    }
}

/* 8 packed bytes -> their 16 e2m1 values. */
TARGET_AVX512 INLINE __m512 e2m1_values_v(const uint8_t *d, __m512 table) {
    __m512i v = _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)d));
    __m512i n = _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi64(15)), _mm512_slli_epi64(_mm512_srli_epi64(v, 4), 32));
    return _mm512_permutexvar_ps(n, table);
}

/* 16 fp32 values to out_dtype at element o (bf16 as f32_to_bf16, fp16 by vcvtps2ph: both RNE). */
TARGET_AVX512 INLINE void store16_v(void *out, int64_t o, __m512 v, int out_dtype) {
    if (out_dtype == IN_F32) {
        _mm512_storeu_ps((float *)out + o, v);
    } else if (out_dtype == IN_F16) {
        _mm256_storeu_si256((__m256i *)((uint16_t *)out + o), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    } else {
        __m512i u = _mm512_castps_si512(v);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, V1(0x7fff)),
                                                       _mm512_and_si512(_mm512_srli_epi32(u, 16), V1(1))), 16);
        r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), V1(0xffff));
        _mm256_storeu_si256((__m256i *)((uint16_t *)out + o), _mm512_cvtepi32_epi16(r));
    }
}

TARGET_AVX512 INLINE void avx512_dq_rows(const fjob_t *j, int64_t r0, int64_t r1, int block, int out_dtype) {
    int64_t nb = j->k / block;
    __m512 table = _mm512_loadu_ps(E2M1_VALUE);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *d = (const uint8_t *)j->x + r * j->rstride;
        for (int64_t c = 0; c < nb; c++) {
            float fs = dq_factor(j, get_scale(j, r, c, nb), block);
            if (dq_factor_special(fs)) {
                dq_block_special(d + c * block / 2, fs, j->out, (r * nb + c) * block, block, out_dtype);
                continue;
            }
            __m512 f = _mm512_set1_ps(fs);
            for (int h = 0; h < block / 16; h++)
                store16_v(j->out, (r * nb + c) * block + h * 16,
                          _mm512_mul_ps(e2m1_values_v(d + c * block / 2 + h * 8, table), f), out_dtype);
        }
    }
}

/* The largest finite |x| of rows r0..r1 (NaN / Inf left out), by masked maxima of fp32 bits. */
TARGET_AVX512 INLINE uint32_t amax_finite_v(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    int64_t es = in_dtype == IN_F32 ? 4 : 2;
    __m512i m = _mm512_setzero_si512();
    for (int64_t r = r0; r < r1; r++)
        for (int64_t i = 0; i < j->k; i += 16) {
            __m512i a = _mm512_and_si512(ld16(j->x + r * j->rstride + i * es, in_dtype), V1(0x7fffffff));
            m = _mm512_mask_max_epu32(m, _mm512_cmplt_epu32_mask(a, V1(0x7f800000u)), m, a);
        }
    return _mm512_reduce_max_epu32(m);
}

/* The global scale's amax: first the largest |x| bits of the rows in their own width (bf16 / fp16 in
 * 16-bit lanes), one and + max per vector; only where that is NaN / Inf, again leaving those out. */
TARGET_AVX512 INLINE void avx512_amax_rows(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    int wide = in_dtype == IN_F32;
    int64_t bytes = j->k * (wide ? 4 : 2);
    __m512i absm = wide ? V1(0x7fffffff) : _mm512_set1_epi16(0x7fff), m0 = _mm512_setzero_si512(), m1 = m0;
    for (int64_t r = r0; r < r1; r++) {
        const char *p = j->x + r * j->rstride;
        int64_t i = 0;
        for (; i + 128 <= bytes; i += 128) {
            __m512i a = _mm512_and_si512(_mm512_loadu_si512(p + i), absm), b = _mm512_and_si512(_mm512_loadu_si512(p + i + 64), absm);
            m0 = wide ? _mm512_max_epu32(m0, a) : _mm512_max_epu16(m0, a);
            m1 = wide ? _mm512_max_epu32(m1, b) : _mm512_max_epu16(m1, b);
        }
        for (; i < bytes; i += 32) { /* rows are a multiple of 32 bytes */
            __m512i a = _mm512_and_si512(_mm512_maskz_loadu_epi32(0xff, p + i), absm);
            m0 = wide ? _mm512_max_epu32(m0, a) : _mm512_max_epu16(m0, a);
        }
    }
    uint32_t m = wide ? _mm512_reduce_max_epu32(_mm512_max_epu32(m0, m1)) : hmax_epu16(_mm512_max_epu16(m0, m1)) >> 16;
    if (in_dtype == IN_F16) m = f16_to_f32(m);
    else if (in_dtype == IN_BF16) m <<= 16;
    atomic_max(j->amax, m < 0x7f800000u ? m : amax_finite_v(j, r0, r1, in_dtype));
}

TARGET_AVX512 void mxq_fp4_rows_avx512_(const fjob_t *j, int64_t r0, int64_t r1) { FP4_DISPATCH(avx512_, j, r0, r1) }
#endif
