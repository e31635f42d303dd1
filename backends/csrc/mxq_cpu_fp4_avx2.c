/* The AVX2 variant of mxq_cpu_fp4.c: the same arithmetic as its scalar code, 8 fp32 lanes a
 * vector (bf16 widened by a shift, fp16 exactly by vcvtph2ps: F16C, which mxq_cpu_fp4.c checks
 * for before it sends fp16 here). No FMA in the target: no product is fused with a sum.
 * MXFP4: the block's amax by a vector max and one reduction; bf16 blocks stay in 16-bit lanes
 * (as the AVX-512 variant does), fp32 / fp16 take y = x * 2^-s and e2m1 by one fp32 add (e2m1_v);
 * 32 nibbles are narrowed with vpackus, put in order with one vpermd and paired by vpmaddubsw.
 * NVFP4: the amax of 8 groups, their 8 scales in one vector, each group's elements divided by
 * its q, y's bits rounded to odd at bit 16 and e2m1 taken in 16-bit lanes (the bf16 code with
 * s = 0: rounding to odd keeps every comparison with a value whose low 16 bits are zero, and
 * every e2m1 edge is one; both e2m1 paths checked against e2m1_index on all 2^32 fp32 bit
 * patterns when written). Dequantize: each nibble by a variable shift, its magnitude from an
 * 8-entry vpermps table, its sign from bit 3; a block whose factor is NaN or Inf by the scalar
 * dq_block_special (mxq_cpu_fp4.h: every NaN the contract's one). */
#include "mxq_cpu_fp4.h"

#if MXQ_X86
#define TARGET_AVX2F __attribute__((target("avx2,f16c")))
#define W1(c) _mm256_set1_epi32((int)(c))
#define H1(c) _mm256_set1_epi16((short)(c))

/* 8 elements of in_dtype at p as fp32 bits (exact). */
TARGET_AVX2F INLINE __m256i ld8(const char *p, int in_dtype) {
    if (in_dtype == IN_F32) return _mm256_loadu_si256((const __m256i *)p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (in_dtype == IN_BF16) return _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    return _mm256_castps_si256(_mm256_cvtph_ps(h));
}

/* Lanes where a > t as unsigned 32-bit numbers. */
TARGET_AVX2F INLINE __m256i gt_u32(__m256i a, uint32_t t) {
    if (t == 0x7fffffffu) return _mm256_srai_epi32(a, 31);
    return _mm256_cmpgt_epi32(_mm256_xor_si256(a, W1(0x80000000u)), W1(t ^ 0x80000000u));
}

/* The largest of 8 lanes (unsigned). */
TARGET_AVX2F INLINE uint32_t hmax8(__m256i v) {
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4e));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xb1));
    return (uint32_t)_mm_cvtsi128_si32(m);
}

/* The largest of 16 unsigned 16-bit lanes (phminposuw on their complements). */
TARGET_AVX2F INLINE uint32_t hmax16_epu16(__m256i v) {
    __m128i m = _mm_max_epu16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return 0xffffu - (uint32_t)_mm_extract_epi16(_mm_minpos_epu16(_mm_xor_si128(m, _mm_set1_epi16(-1))), 0);
}

/* e2m1_index of 8 values y, with the sign nibble where cmp > negthr (unsigned). y is finite
 * (lanes of a NaN / Inf group are overwritten by the caller). One fp32 add rounds t = min(|y|, 6)
 * onto e2m1's grid: M = 2^22 max(1, 2^floor(log2 t)) has an ulp of e2m1's step at t (0.5 below 2,
 * 1 below 4, then 2), so RN(t + M) - M is t rounded to nearest even in steps; M's own bits raised
 * by 2j (j = log2(M) - 22: the steps below the range's first value, 1.0, 2.0 or 4.0, are 2j) make
 * the difference of the bits the index. */
TARGET_AVX2F INLINE __m256i e2m1_v(__m256 y, __m256i cmp, uint32_t negthr) {
    __m256i u = _mm256_min_epi32(_mm256_and_si256(_mm256_castps_si256(y), W1(0x7fffffff)), W1(E2M1_MAXB));
    __m256i e = _mm256_and_si256(_mm256_max_epi32(u, W1(E2M1_ONE)), W1(0x7f800000)); /* 2^floor(log2 max(t, 1)) */
    __m256i m2j = _mm256_add_epi32(_mm256_add_epi32(e, W1((22u << 23) - 254u)), _mm256_srli_epi32(e, 22));
    __m256i r = _mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(u), _mm256_castsi256_ps(m2j)));
    __m256i n = _mm256_sub_epi32(r, _mm256_add_epi32(e, W1(22u << 23)));
    return _mm256_or_si256(n, _mm256_and_si256(gt_u32(cmp, negthr), W1(8)));
}

/* 32 bytes, each a nibble, in element order -> 16 bytes (8 with half: elements 0-15),
 * element 2i in the low nibble of byte i. */
TARGET_AVX2F INLINE void pair_store(__m256i b, uint8_t *out, int half) {
    __m256i p = _mm256_maddubs_epi16(b, H1(0x1001)); /* n[2i] + 16 n[2i+1] */
    __m128i r = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    if (half) _mm_storel_epi64((__m128i *)out, r);
    else _mm_storeu_si128((__m128i *)out, r);
}

/* As pair_store, the bytes in the order two rounds of vpackus leave them in: 4-byte groups of
 * elements 0-3, 8-11, 16-19, 24-27 | 4-7, 12-15, 20-23, 28-31. */
TARGET_AVX2F INLINE void packed_pair_store(__m256i b, uint8_t *out, int half) {
    pair_store(_mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)), out, half);
}

/* 32 nibbles, one per 32-bit lane of n0..n3 (elements 0-7, 8-15, 16-23, 24-31) -> 16 bytes. */
TARGET_AVX2F INLINE void pack32_v(__m256i n0, __m256i n1, __m256i n2, __m256i n3, uint8_t *out) {
    packed_pair_store(_mm256_packus_epi16(_mm256_packus_epi32(n0, n1), _mm256_packus_epi32(n2, n3)), out, 0);
}

/* One block of 32 bf16 x0, x1 (a0, a1 = |x|) in 16-bit lanes, for s >= -124: the AVX-512
 * variant's mx4_bf16_v (its comment says why it is exact) with signed compares, every compared
 * value and threshold being below 0x8000 (the sign test flips bit 15 of both sides). */
TARGET_AVX2F INLINE __m256i mx4_bf16_half(__m256i x, __m256i a, int32_t s, int negthr) {
    const __m256i one = H1(1);
    int s7 = s * 128;
    __m256i v = _mm256_min_epu16(_mm256_sub_epi16(a, H1(s7)), H1(0x40c0));
    __m256i n = _mm256_srli_epi16(_mm256_add_epi16(_mm256_add_epi16(v, H1(0x1f - 0x3f00)),
                                                   _mm256_and_si256(_mm256_srli_epi16(v, 6), one)), 6);
    __m256i sub = _mm256_sub_epi16(_mm256_sub_epi16(_mm256_setzero_si256(), _mm256_cmpgt_epi16(a, H1(0x3e80 + s7))),
                                   _mm256_cmpgt_epi16(a, H1(0x3f40 + s7 - 1)));
    n = _mm256_blendv_epi8(sub, n, _mm256_cmpgt_epi16(a, H1(0x3f80 + s7 - 1)));
    __m256i neg = _mm256_cmpgt_epi16(_mm256_xor_si256(x, H1(0x8000)), H1(negthr ^ 0x8000));
    return _mm256_or_si256(n, _mm256_and_si256(neg, H1(8)));
}

TARGET_AVX2F INLINE void mx4_bf16_v(__m256i x0, __m256i x1, __m256i a0, __m256i a1, int32_t s, int mode, uint8_t *out) {
    int negthr = mode != CT ? 0x7fff : 0x8000 | (s <= 0 ? 0 : (s < 8 ? 1 << (s - 1) : (s - 7) << 7));
    __m256i b = _mm256_packus_epi16(mx4_bf16_half(x0, a0, s, negthr), mx4_bf16_half(x1, a1, s, negthr));
    pair_store(_mm256_permute4x64_epi64(b, 0xd8), out, 0); /* 8-byte groups 0-7, 16-23, 8-15, 24-31 -> in order */
}

/* One block from its four quarters as fp32 bits: y = x * 2^-s, e2m1_v. */
TARGET_AVX2F INLINE void mx4_f32_v(const __m256i *x, int32_t s, int mode, uint32_t negthr, uint8_t *out) {
    __m256 inv = _mm256_set1_ps(pow2_neg(s));
    __m256i n[4];
    for (int i = 0; i < 4; i++) {
        __m256 y = _mm256_mul_ps(_mm256_castsi256_ps(x[i]), inv);
        n[i] = e2m1_v(y, mode == CT ? _mm256_castps_si256(y) : x[i], negthr);
    }
    pack32_v(n[0], n[1], n[2], n[3], out);
}

TARGET_AVX2F INLINE void mx4_rows_mode(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype, int mode) {
    int64_t nb = j->k / 32, es = in_dtype == IN_F32 ? 4 : 2;
    uint32_t negthr = neg_threshold(mode, in_dtype);
    const __m256i abs32 = W1(0x7fffffff), abs16 = H1(0x7fff);
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t c = 0; c < nb; c++) {
            const char *src = j->x + r * j->rstride + c * 32 * es;
            uint8_t *out = j->data + r * (j->k / 2) + c * 16;
            __m256i x[4], xb0 = _mm256_setzero_si256(), xb1 = xb0, ab0 = xb0, ab1 = xb0;
            uint32_t amax;
            if (in_dtype == IN_BF16) {
                xb0 = _mm256_loadu_si256((const __m256i *)src);
                xb1 = _mm256_loadu_si256((const __m256i *)(src + 32));
                ab0 = _mm256_and_si256(xb0, abs16);
                ab1 = _mm256_and_si256(xb1, abs16);
                amax = hmax16_epu16(_mm256_max_epu16(ab0, ab1)) << 16;
            } else {
                for (int i = 0; i < 4; i++) x[i] = ld8(src + i * 8 * es, in_dtype);
                __m256i m01 = _mm256_max_epi32(_mm256_and_si256(x[0], abs32), _mm256_and_si256(x[1], abs32));
                __m256i m23 = _mm256_max_epi32(_mm256_and_si256(x[2], abs32), _mm256_and_si256(x[3], abs32));
                amax = hmax8(_mm256_max_epi32(m01, m23));
            }
            if (amax >= 0x7f800000u) { /* NaN or Inf: scale 0xFF, nibbles 0 */
                memset(out, 0, 16);
                put_scale(j, r, c, nb, 0xffu);
                continue;
            }
            int32_t s = fp4_scale_exp(amax, mode);
            if (in_dtype == IN_BF16 && s >= -124) {
                mx4_bf16_v(xb0, xb1, ab0, ab1, s, mode, out);
            } else {
                if (in_dtype == IN_BF16)
                    for (int i = 0; i < 4; i++) x[i] = ld8(src + i * 16, IN_BF16);
                mx4_f32_v(x, s, mode, negthr, out);
            }
            put_scale(j, r, c, nb, (uint32_t)(s + 127));
        }
    }
}

TARGET_AVX2F INLINE void avx2_mx4_rows(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    if (j->mode == RCEIL) mx4_rows_mode(j, r0, r1, in_dtype, RCEIL);
    else if (j->mode == FLOOR) mx4_rows_mode(j, r0, r1, in_dtype, FLOOR);
    else mx4_rows_mode(j, r0, r1, in_dtype, CT);
}

/* The scale bytes of 8 groups from their amax bits a (nv4_scale per lane; 0x7F for NaN/Inf), and q. */
TARGET_AVX2F INLINE __m256i nv4_scales_v(__m256i a, int in_dtype, float g, __m256 *q) {
    __m256 gv = _mm256_set1_ps(g), a6 = _mm256_div_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(6.0f));
    if (in_dtype == IN_BF16) { /* RNE to bf16 on the bits (finite lanes; the others are replaced below) */
        __m256i u = _mm256_castps_si256(a6);
        u = _mm256_add_epi32(_mm256_add_epi32(u, W1(0x7fff)), _mm256_and_si256(_mm256_srli_epi32(u, 16), W1(1)));
        a6 = _mm256_castsi256_ps(_mm256_and_si256(u, W1(0xffff0000u)));
    } else if (in_dtype == IN_F16) {
        a6 = _mm256_cvtph_ps(_mm256_cvtps_ph(a6, _MM_FROUND_TO_NEAREST_INT));
    }
    __m256 p = _mm256_min_ps(_mm256_mul_ps(gv, a6), _mm256_set1_ps(448.0f));
    __m256i u = _mm256_castps_si256(p);
    __m256i normal = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, W1(0x7ffffu - (120u << 23))),
                                                        _mm256_and_si256(_mm256_srli_epi32(u, 20), W1(1))), 20);
    __m256i sub = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(p, _mm256_set1_ps(16384.0f))), W1(141u << 23));
    __m256i b = _mm256_blendv_epi8(sub, normal, _mm256_cmpgt_epi32(u, W1((121u << 23) - 1)));
    b = _mm256_blendv_epi8(b, W1(NV_ZERO_SCALE), _mm256_cmpeq_epi32(b, _mm256_setzero_si256()));
    /* the scale's value: e4m3 normal from bits, subnormal b * 2^-9 */
    __m256 v = _mm256_blendv_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(b), _mm256_set1_ps(1.0f / 512.0f)),
                                _mm256_castsi256_ps(_mm256_add_epi32(_mm256_slli_epi32(b, 20), W1(120u << 23))),
                                _mm256_castsi256_ps(_mm256_cmpgt_epi32(b, W1(7))));
    *q = _mm256_div_ps(v, gv);
    return _mm256_blendv_epi8(b, W1(0x7f), _mm256_cmpgt_epi32(a, W1(0x7f7fffff)));
}

/* Lane i = the largest lane of v[slot i] (unsigned 32-bit, or with w16 16-bit lanes: then the
 * largest 16-bit lane, zero-extended), slot i = 2i for i < 4, 2(i - 4) + 1 above: three rounds of
 * pairwise maxima, halving the vectors each round (128-bit halves, then 64-bit, then 32-bit). */
TARGET_AVX2F INLINE __m256i vmax(__m256i a, __m256i b, int w16) {
    return w16 ? _mm256_max_epu16(a, b) : _mm256_max_epu32(a, b);
}

TARGET_AVX2F INLINE __m256i hmax8_v(__m256i *v, int w16) {
    for (int i = 0; i < 4; i++)
        v[i] = vmax(_mm256_permute2x128_si256(v[2 * i], v[2 * i + 1], 0x20),
                    _mm256_permute2x128_si256(v[2 * i], v[2 * i + 1], 0x31), w16);
    for (int i = 0; i < 2; i++)
        v[i] = vmax(_mm256_unpacklo_epi64(v[2 * i], v[2 * i + 1]), _mm256_unpackhi_epi64(v[2 * i], v[2 * i + 1]), w16);
    __m256 a = _mm256_castsi256_ps(v[0]), b = _mm256_castsi256_ps(v[1]);
    __m256i m = vmax(_mm256_castps_si256(_mm256_shuffle_ps(a, b, 0x88)),
                     _mm256_castps_si256(_mm256_shuffle_ps(a, b, 0xdd)), w16);
    return w16 ? _mm256_and_si256(_mm256_max_epu16(m, _mm256_srli_epi32(m, 16)), W1(0xffff)) : m;
}

/* Half h of group i (8 elements) at src as fp32 bits; zero past the row's n groups. */
TARGET_AVX2F INLINE __m256i ld_half(const char *src, int i, int h, int n, int in_dtype) {
    int64_t es = in_dtype == IN_F32 ? 4 : 2;
    return i < n ? ld8(src + (i * 16 + h * 8) * es, in_dtype) : _mm256_setzero_si256();
}

/* Groups c0 .. c0 + n - 1 (n <= 8) of row r: their scales and nibbles. */
TARGET_AVX2F INLINE void nv4_chunk(const fjob_t *j, int64_t r, int64_t c0, int n, int in_dtype) {
    int64_t ng = j->k / 16, es = in_dtype == IN_F32 ? 4 : 2;
    int w16 = in_dtype != IN_F32;
    const char *src = j->x + r * j->rstride + c0 * 16 * es;
    uint8_t *out = j->data + r * (j->k / 2) + c0 * 8;
    __m256i a[8];
    for (int i = 0; i < 8; i++) { /* group i's |x| (bf16 / fp16: its bits) maxima in hmax8_v's slot */
        __m256i m;
        if (w16) {
            m = i < n ? _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(src + i * 32)), H1(0x7fff))
                      : _mm256_setzero_si256();
        } else {
            m = _mm256_max_epu32(_mm256_and_si256(ld_half(src, i, 0, n, IN_F32), W1(0x7fffffff)),
                                 _mm256_and_si256(ld_half(src, i, 1, n, IN_F32), W1(0x7fffffff)));
        }
        a[i < 4 ? 2 * i : 2 * i - 7] = m;
    }
    __m256i amax = hmax8_v(a, w16);
    if (in_dtype == IN_BF16) amax = _mm256_slli_epi32(amax, 16);
    else if (in_dtype == IN_F16) amax = _mm256_castps_si256(_mm256_cvtph_ps(_mm256_castsi256_si128(
                                        _mm256_permute4x64_epi64(_mm256_packus_epi32(amax, amax), 0x08))));
    __m256 qv;
    __m256i b = nv4_scales_v(amax, in_dtype, j->g, &qv);
    int finite = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(W1(0x7f800000u), amax)));
    float q[8];
    _mm256_storeu_ps(q, qv);
    for (int i = 0; i < n; i += 2) { /* two groups: 16 bytes (n is even or the row's last group) */
        __m256i w[2];
        for (int g = 0; g < 2; g++) {
            __m256i y16[2];
            for (int h = 0; h < 2; h++) {
                __m256 x = _mm256_castsi256_ps(ld_half(src, i + g, h, n, in_dtype));
                __m256i y = _mm256_castps_si256(_mm256_div_ps(x, _mm256_set1_ps(q[i + g])));
                /* the top 16 bits, bit 0 set where any bit below was (round to odd) */
                y16[h] = _mm256_or_si256(_mm256_srli_epi32(y, 16),
                                         _mm256_min_epu32(_mm256_and_si256(y, W1(0xffff)), W1(1)));
            }
            __m256i yw = _mm256_packus_epi32(y16[0], y16[1]);
            w[g] = mx4_bf16_half(yw, _mm256_and_si256(yw, H1(0x7fff)), 0, 0x8000); /* sign: y < -0 */
        }
        /* i + 1 == n: the row's odd last group, 8 bytes */
        packed_pair_store(_mm256_packus_epi16(w[0], w[1]), out + i * 8, i + 1 == n);
    }
    if ((finite & 0xff) != 0xff)
        for (int i = 0; i < n; i++)
            if (!(finite >> i & 1)) memset(out + i * 8, 0, 8); /* NaN / Inf: nibbles 0 */
    if (!j->swizzled && n == 8) {
        __m256i lo = _mm256_shuffle_epi8(b, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                             -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                                             -1, -1, -1, -1));
        _mm_storel_epi64((__m128i *)(j->scale + r * ng + c0),
                         _mm_unpacklo_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1)));
    } else {
        uint32_t sb[8];
        _mm256_storeu_si256((__m256i *)sb, b);
        for (int i = 0; i < n; i++) put_scale(j, r, c0 + i, ng, sb[i]);
    }
}

TARGET_AVX2F INLINE void avx2_nv4_rows(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    int64_t ng = j->k / 16;
    for (int64_t r = r0; r < r1; r++) {
        int64_t c0 = 0;
        for (; c0 + 8 <= ng; c0 += 8) nv4_chunk(j, r, c0, 8, in_dtype); /* 8 groups at a time */
        if (c0 < ng) nv4_chunk(j, r, c0, (int)(ng - c0), in_dtype);  /* the row's last 1 .. 7 */
    }
}

/* 16 fp32 values to out_dtype at element o (bf16 as f32_to_bf16, fp16 by vcvtps2ph: both RNE). */
TARGET_AVX2F INLINE void store16_v(void *out, int64_t o, __m256 v0, __m256 v1, int out_dtype) {
    if (out_dtype == IN_F32) {
        _mm256_storeu_ps((float *)out + o, v0);
        _mm256_storeu_ps((float *)out + o + 8, v1);
    } else if (out_dtype == IN_F16) {
        _mm256_storeu_si256((__m256i *)((uint16_t *)out + o),
                            _mm256_set_m128i(_mm256_cvtps_ph(v1, _MM_FROUND_TO_NEAREST_INT),
                                             _mm256_cvtps_ph(v0, _MM_FROUND_TO_NEAREST_INT)));
    } else {
        __m256i r[2];
        for (int h = 0; h < 2; h++) {
            __m256 v = h ? v1 : v0;
            __m256i u = _mm256_castps_si256(v);
            r[h] = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, W1(0x7fff)),
                                                      _mm256_and_si256(_mm256_srli_epi32(u, 16), W1(1))), 16);
            r[h] = _mm256_blendv_epi8(r[h], W1(0xffff), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
        }
        _mm256_storeu_si256((__m256i *)((uint16_t *)out + o),
                            _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xd8));
    }
}

/* 4 packed bytes -> their 8 e2m1 values: nibble i by a shift of 4i, magnitude from mag, sign from bit 3. */
TARGET_AVX2F INLINE __m256 e2m1_values_v(const uint8_t *d, __m256 mag) {
    uint32_t w;
    memcpy(&w, d, 4);
    __m256i n = _mm256_srlv_epi32(_mm256_set1_epi32((int)w), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    __m256i sign = _mm256_and_si256(_mm256_slli_epi32(n, 28), W1(0x80000000u));
    return _mm256_or_ps(_mm256_permutevar8x32_ps(mag, n), _mm256_castsi256_ps(sign));
}

TARGET_AVX2F INLINE void avx2_dq_rows(const fjob_t *j, int64_t r0, int64_t r1, int block, int out_dtype) {
    int64_t nb = j->k / block;
    __m256 mag = _mm256_loadu_ps(E2M1_VALUE);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *d = (const uint8_t *)j->x + r * j->rstride;
        for (int64_t c = 0; c < nb; c++) {
            float fs = dq_factor(j, get_scale(j, r, c, nb), block);
            if (dq_factor_special(fs)) {
                dq_block_special(d + c * block / 2, fs, j->out, (r * nb + c) * block, block, out_dtype);
                continue;
            }
            __m256 f = _mm256_set1_ps(fs);
            for (int h = 0; h < block / 16; h++) {
                const uint8_t *p = d + c * block / 2 + h * 8;
                store16_v(j->out, (r * nb + c) * block + h * 16, _mm256_mul_ps(e2m1_values_v(p, mag), f),
                          _mm256_mul_ps(e2m1_values_v(p + 4, mag), f), out_dtype);
            }
        }
    }
}

/* The largest finite |x| of rows r0..r1 (NaN / Inf left out), by maxima of fp32 bits. */
TARGET_AVX2F INLINE uint32_t amax_finite_v(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    int64_t es = in_dtype == IN_F32 ? 4 : 2;
    __m256i m = _mm256_setzero_si256();
    for (int64_t r = r0; r < r1; r++)
        for (int64_t i = 0; i < j->k; i += 8) {
            __m256i a = _mm256_and_si256(ld8(j->x + r * j->rstride + i * es, in_dtype), W1(0x7fffffff));
            m = _mm256_max_epi32(m, _mm256_and_si256(a, _mm256_cmpgt_epi32(W1(0x7f800000u), a)));
        }
    return hmax8(m);
}

/* The global scale's amax: first the largest |x| bits of the rows in their own width (bf16 / fp16 in
 * 16-bit lanes), one and + max per vector; only where that is NaN / Inf, again leaving those out. */
TARGET_AVX2F INLINE void avx2_amax_rows(const fjob_t *j, int64_t r0, int64_t r1, int in_dtype) {
    int wide = in_dtype == IN_F32;
    int64_t bytes = j->k * (wide ? 4 : 2);
    __m256i absm = wide ? W1(0x7fffffff) : H1(0x7fff), m0 = _mm256_setzero_si256(), m1 = m0;
    for (int64_t r = r0; r < r1; r++) {
        const char *p = j->x + r * j->rstride;
        int64_t i = 0;
        for (; i + 64 <= bytes; i += 64) {
            __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + i)), absm);
            __m256i b = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + i + 32)), absm);
            m0 = wide ? _mm256_max_epu32(m0, a) : _mm256_max_epu16(m0, a);
            m1 = wide ? _mm256_max_epu32(m1, b) : _mm256_max_epu16(m1, b);
        }
        if (i < bytes) { /* rows are a multiple of 32 bytes */
            __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + i)), absm);
            m0 = wide ? _mm256_max_epu32(m0, a) : _mm256_max_epu16(m0, a);
        }
    }
    uint32_t m = wide ? hmax8(_mm256_max_epu32(m0, m1)) : hmax16_epu16(_mm256_max_epu16(m0, m1));
    if (in_dtype == IN_F16) m = f16_to_f32(m);
    else if (in_dtype == IN_BF16) m <<= 16;
    atomic_max(j->amax, m < 0x7f800000u ? m : amax_finite_v(j, r0, r1, in_dtype));
}

TARGET_AVX2F void mxq_fp4_rows_avx2_(const fjob_t *j, int64_t r0, int64_t r1) { FP4_DISPATCH(avx2_, j, r0, r1) }
#endif
