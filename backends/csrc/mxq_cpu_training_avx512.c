/* The AVX-512 (BW/VL) variant of the training kernels (mxq_cpu_training.c says what they
 * compute). A work unit (8 bands of 32 rows x 2048 columns) is walked band pair by band pair,
 * each pair in tiles of 64 columns:
 *   column-wise: per band, the tile (32 rows) is read twice (amax/amin, then the encode: x's rows
 *   are often 2^n bytes apart, one L1 set, so the second read comes from L2, still cheaper than
 *   copying the tile), the 64 column blocks encoded per vector lane, the two bands' 64x64 bytes
 *   transposed in registers and each column's 64 bytes stored (non-temporally, a whole line where
 *   M % 64 == 0). Column scales are gathered for the unit and written once per column.
 *   row+column, bf16 (rowcol_tile_bf16_avx512): one pass over the tile for the column amax/amin
 *   and every row's amax (a max tree fed row by row), the tile copied; then each vector's |x|
 *   rounded once to the element's mantissa width and encoded twice, with the column scales and
 *   with its row's scale (power-of-two scales: for normal results the rounding is the same),
 *   results below the smallest normal from x in vectors too (encode_small_lanes); each
 *   row's 64 bytes one (non-temporal) store; row scales gathered per band pair. fp32 / fp16
 *   (tile_f32_avx512): the tile copied as fp32 bits, the same shared rounding in 32-bit lanes,
 *   each row block's max / min by two reductions, row blocks off the fast path by the scalar code.
 *   Prefetch, into L2: each row 512 bytes ahead (row+column: 256; 32x32 tiles: none), and the
 *   next band pair's rows, row by row, for 32x32 tiles. Column-wise in column order
 *   (unit_col_avx512) prefetches the next tile column; column-wise in the band walk (non-AMD CPUs)
 *   no longer prefetches the next band pair (a Zen 4 gain when every CPU's column-wise walked
 *   bands; 8-10% of the column-wise time on one of the GPU machine's Intel Xeon hosts,
 *   twenty-fourth session).
 * Measured on the 2-core EPYC (docs/performance.md): 4096x8192 bf16, one thread, reused
 * outputs, thread CPU time: column-wise 13.4 -> 10.0 ms, row+column 22.8 -> 16.1 -> 10.0 (row-wise
 * 5.8); tried and dropped: units of 16 or 32 bands (no change), regular stores instead of
 * non-temporal ones (column-wise 14.8 ms), prefetching into L1 (slower than L2), the next pair's
 * prefetch in row+column (10% slower), the second pass of row+column fully unrolled (20% slower). */
#include "mxq_cpu_training_avx512.h"

#if MXQ_X86
#define NT_STORES 1 /* column (and row+column row) bytes stored past the caches where whole lines */
#define PF_BYTES 512  /* prefetch distance along a row */
#define RC_PF_BYTES 256 /* the same in row+column (its tiles take less time: 2% faster than 512) */
#define RSW (STRIP / BLOCK) /* row scales of a strip */

/* Per 16-bit lane (bf16 bits; the row code's arithmetic divided by 2^16): from a block's amax and
 * amin, s << 7 (returned), the scale byte (sb[lane]) and the lanes off the fast path (*slow). */
TARGET_AVX512 INLINE __m512i scales_bf16(__m512i mx, __m512i mn, const fmt_t *f, int mode, uint8_t *sb, uint32_t *slow) {
    const __m512i one = _mm512_set1_epi16(1);
    __m512i s = _mm512_sub_epi16(_mm512_srli_epi16(mx, 7), _mm512_set1_epi16((short)(127 + f->emax)));
    __m512i mant = _mm512_and_si512(mx, _mm512_set1_epi16(0x7f));
    if (mode == RCEIL) s = _mm512_mask_add_epi16(s, _mm512_cmpgt_epu16_mask(mant, _mm512_set1_epi16(0x60)), s, one);
    else if (mode == CT) s = _mm512_mask_add_epi16(s, _mm512_cmpge_epu16_mask(mant, _mm512_set1_epi16(0x60)), s, one);
    s = _mm512_max_epi16(_mm512_min_epi16(s, _mm512_set1_epi16(127)), _mm512_set1_epi16(-127));
    __mmask32 special = _mm512_cmpge_epu16_mask(mx, _mm512_set1_epi16(0x7f80));
    __m512i thr = _mm512_max_epi16(_mm512_add_epi16(_mm512_slli_epi16(s, 7), _mm512_set1_epi16((short)(f->min_normal >> 16))),
                                   _mm512_set1_epi16(0x80));
    *slow = ~(uint32_t)(_mm512_cmpge_epu16_mask(mn, thr) & ~special);
    __m512i sbv = _mm512_mask_blend_epi16(special, _mm512_add_epi16(s, _mm512_set1_epi16(127)), _mm512_set1_epi16(0xff));
    _mm256_storeu_si256((__m256i *)sb, _mm512_cvtepi16_epi8(sbv));
    return _mm512_slli_epi16(s, 7);
}

/* bf16 elements v with s << 7 per lane -> fp8 bytes in 16-bit lanes (fast path only). */
TARGET_AVX512 INLINE __m512i encode_bf16_lanes(__m512i v, __m512i s128, const fmt_t *f) {
    const __m512i one = _mm512_set1_epi16(1);
    int sh = (int)f->shift - 16;
    __m512i u = _mm512_min_epu16(_mm512_sub_epi16(_mm512_and_si512(v, _mm512_set1_epi16(0x7fff)), s128),
                                 _mm512_set1_epi16((short)(f->max_bits >> 16)));
    __m512i q = _mm512_add_epi16(_mm512_add_epi16(u, _mm512_set1_epi16((short)((f->half >> 16) - (f->rebias >> 16)))),
                                 _mm512_and_si512(_mm512_srli_epi16(u, sh), one));
    return _mm512_ternarylogic_epi32(_mm512_srli_epi16(q, sh), _mm512_srli_epi16(v, 8), _mm512_set1_epi16(0x80), 0xF8);
}

/* |x| of bf16 lanes rounded to the element format's mantissa width (nearest, ties to even), left in
 * place: with every power-of-two scale whose result is an fp8 normal, the rounding of x * 2^-s is
 * this one (the scale only shifts the exponent field, a carry into it included), so the row and
 * the column result share it. Lanes whose result is not normal are on the slow path. */
TARGET_AVX512 INLINE __m512i round_bf16_lanes(__m512i a, const fmt_t *f) {
    int sh = (int)f->shift - 16;
    return _mm512_add_epi16(_mm512_add_epi16(a, _mm512_set1_epi16((short)(f->half >> 16))),
                            _mm512_and_si512(_mm512_srli_epi16(a, sh), _mm512_set1_epi16(1)));
}

/* From rounded |x| (rnd) and sbias = (s << 7) + rebias: |fp8| codes in 16-bit lanes (fast path:
 * rnd - (s << 7) an fp8 normal or past the max, which clamps). */
TARGET_AVX512 INLINE __m512i encode_rounded(__m512i rnd, __m512i sbias, const fmt_t *f) {
    const __m512i maxq = _mm512_set1_epi16((short)((f->max_bits >> 16) - (f->rebias >> 16)));
    return _mm512_srli_epi16(_mm512_min_epu16(_mm512_sub_epi16(rnd, sbias), maxq), (int)f->shift - 16);
}

/* The element format's constant C: a result below the smallest normal is RNE(sig >> k), sig the
 * 8-bit significand of |x| (implicit bit set for a normal x), k = C + s - max(exponent field, 1). */
#define SMALL_C(f) ((int)((f)->min_normal >> 23) + (int)(f)->shift - 16)

/* Lanes with |x| (a) below thr (the result not an fp8 normal) re-encoded from a; kc = C + s per
 * lane, >= 6 (else the block goes to the scalar code: a bf16 subnormal x could round past 2^emin).
 * There k >= 5: a zero or an fp8 subnormal, k capped at 9 (any sig then rounds to 0). The other
 * lanes keep q. */
TARGET_AVX512 INLINE __m512i encode_small_lanes(__m512i a, __m512i q, __m512i kc, __m512i thr) {
    const __m512i one = _mm512_set1_epi16(1);
    __m512i sig = _mm512_ternarylogic_epi32(a, _mm512_min_epu16(a, _mm512_set1_epi16(0x80)), _mm512_set1_epi16(0x7f), 0xE4);
    __m512i k = _mm512_min_epi16(_mm512_sub_epi16(kc, _mm512_max_epu16(_mm512_srli_epi16(a, 7), one)), _mm512_set1_epi16(9));
    __m512i half = _mm512_srlv_epi16(_mm512_set1_epi16(-1), _mm512_sub_epi16(_mm512_set1_epi16(17), k));
    __m512i sub = _mm512_add_epi16(_mm512_add_epi16(sig, half), _mm512_and_si512(_mm512_srlv_epi16(sig, k), one));
    return _mm512_mask_blend_epi16(_mm512_cmplt_epu16_mask(a, thr), q, _mm512_srlv_epi16(sub, k));
}

/* Row+column, 64 bf16 columns of a band in one read: pass 1 loads the tile (copied to `in`),
 * the column amax / amin per lane and the row amax by max_tree_push; pass 2 rounds each vector
 * once and encodes it with the column scales (bytes to e, packed order) and with its row's scale
 * (bytes to rout + r * K, scales to rs[r * RSW + h]). A row block is checked against the tile's
 * smallest |x| first, exactly only when that fails. Lanes whose result is not an fp8 normal are
 * re-encoded from x by encode_small_lanes (a column half-tile with any, a row block with any);
 * blocks with NaN/Inf or C + s < 6 are redone by the scalar block code. */
TARGET_AVX512 INLINE void rowcol_tile_bf16_avx512(const bjob_t *j, const char *x, int64_t c0, const fmt_t *f,
                                                  uint8_t (*e)[CW], uint8_t *cs, uint8_t *rout, uint8_t *rs, int nt) {
    _Alignas(64) __m512i in[BLOCK][2];
    _Alignas(64) int16_t rbias[2][BLOCK];
    const char *p = x + c0 * 2;
    const __m512i absm = _mm512_set1_epi16(0x7fff), rebias = _mm512_set1_epi16((short)(f->rebias >> 16));
    __m512i mx[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()}, mn[2] = {absm, absm}, n[2][5], cb[2];
#pragma GCC unroll 32
    for (int r = 0; r < BLOCK; r++)
        for (int h = 0; h < 2; h++) {
            __m512i v = _mm512_loadu_si512(p + r * j->rstride + 64 * h), a = _mm512_and_si512(v, absm);
            _mm_prefetch(p + r * j->rstride + 64 * h + RC_PF_BYTES, _MM_HINT_T2);
            in[r][h] = v;
            mx[h] = _mm512_max_epu16(mx[h], a);
            mn[h] = _mm512_min_epu16(mn[h], a);
            max_tree_push(n[h], a, r);
        }
    uint8_t sb[CW], rsb[2][BLOCK];
    uint32_t slow[2], cand[2], small[2];
    const int kc0 = SMALL_C(f), mn16 = (int)(f->min_normal >> 16), rb16 = (int)(f->rebias >> 16);
    __m512i ckc[2], cthr[2];
    for (int h = 0; h < 2; h++) {
        __m512i s128 = scales_bf16(mx[h], mn[h], f, j->mode, sb + 32 * h, &slow[h]);
        cb[h] = _mm512_add_epi16(s128, rebias);
        ckc[h] = _mm512_add_epi16(_mm512_srai_epi16(s128, 7), _mm512_set1_epi16((short)kc0));
        cthr[h] = _mm512_max_epi16(_mm512_add_epi16(s128, _mm512_set1_epi16((short)mn16)), _mm512_set1_epi16(0x80));
        uint32_t scalar = _mm512_cmpge_epu16_mask(mx[h], _mm512_set1_epi16(0x7f80)) | _mm512_cmplt_epi16_mask(ckc[h], _mm512_set1_epi16(6));
        small[h] = slow[h] & ~scalar; /* encoded in vectors by encode_small_lanes */
        slow[h] &= scalar;
        __m512i rs128 = scales_bf16(n[h][4], hmin_bcast_epu16(mn[h]), f, j->mode, rsb[h], &cand[h]);
        _mm512_store_si512(rbias[h], _mm512_add_epi16(rs128, rebias));
    }
    const __m512i sgnm = _mm512_set1_epi8((char)0x80), perm = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
    const int64_t k = j->k;
    for (int r = 0; r < BLOCK; r++) {
        __m512i cq[2], rq[2], sg[2];
        int fix = 0;
        for (int h = 0; h < 2; h++) {
            __m512i v = in[r][h], a = _mm512_and_si512(v, absm), rnd = round_bf16_lanes(a, f);
            sg[h] = _mm512_srli_epi16(v, 8);
            cq[h] = encode_rounded(rnd, cb[h], f);
            if (small[h]) cq[h] = encode_small_lanes(a, cq[h], ckc[h], cthr[h]);
            int rbh = rbias[h][LANE_OF(r)];
            rq[h] = encode_rounded(rnd, _mm512_set1_epi16((short)rbh), f);
            rs[r * RSW + h] = rsb[h][LANE_OF(r)];
            if (cand[h] >> LANE_OF(r) & 1) { /* the exact test: every |x| >= the threshold, no NaN / Inf */
                int t = rbh - rb16 + mn16, kc = ((rbh - rb16) >> 7) + kc0;
                __m512i thr = _mm512_set1_epi16((short)(t < 0x80 ? 0x80 : t));
                if (rsb[h][LANE_OF(r)] == 0xff || kc < 6) fix |= 1 << h;
                else if (_mm512_cmpge_epu16_mask(a, thr) != 0xffffffffu)
                    rq[h] = encode_small_lanes(a, rq[h], _mm512_set1_epi16((short)kc), thr);
            }
        }
        __m512i sgn = _mm512_packus_epi16(sg[0], sg[1]); /* x's high bytes, packed as the codes */
        _mm512_store_si512(e[r], _mm512_ternarylogic_epi32(_mm512_packus_epi16(cq[0], cq[1]), sgn, sgnm, 0xF8));
        __m512i q = _mm512_permutexvar_epi64(perm, _mm512_ternarylogic_epi32(_mm512_packus_epi16(rq[0], rq[1]), sgn, sgnm, 0xF8));
        uint8_t *out = rout + r * k;
        if (nt && !fix) _mm512_stream_si512((__m512i *)out, q);
        else _mm512_storeu_si512(out, q);
        for (int h = 0; fix && h < 2; h++)
            if (fix >> h & 1) {
                uint32_t blk[BLOCK];
                load_block(x + r * j->rstride + (c0 + BLOCK * h) * 2, IN_BF16, blk);
                rs[r * RSW + h] = quantize_block(blk, out + BLOCK * h, f, j->mode);
            }
    }
    col_tile_finish(j, x, c0, slow[0] | (uint64_t)slow[1] << 32, sb, IN_BF16, f, e, cs, 1);
}

/* Column-wise, 64 bf16 columns, in 16-bit lanes; the tile is read twice (x's rows are often 2^n
 * bytes apart, one L1 set: the second read comes from L2, cheaper than a copy). */
TARGET_AVX512 INLINE void col_tile_bf16_avx512(const bjob_t *j, const char *x, int64_t c0, const fmt_t *f,
                                               uint8_t (*e)[CW], uint8_t *cs) {
    const char *p = x + c0 * 2;
    const __m512i absm = _mm512_set1_epi16(0x7fff);
    __m512i mx[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()}, mn[2] = {absm, absm}, s128[2];
    for (int r = 0; r < BLOCK; r++)
        for (int h = 0; h < 2; h++) {
            __m512i a = _mm512_and_si512(_mm512_loadu_si512(p + r * j->rstride + 64 * h), absm);
            _mm_prefetch(p + r * j->rstride + 64 * h + PF_BYTES, _MM_HINT_T2);
            mx[h] = _mm512_max_epu16(mx[h], a);
            mn[h] = _mm512_min_epu16(mn[h], a);
        }
    uint8_t sb[CW];
    uint32_t slow[2];
    for (int h = 0; h < 2; h++) s128[h] = scales_bf16(mx[h], mn[h], f, j->mode, sb + 32 * h, &slow[h]);
    for (int r = 0; r < BLOCK; r++) {
        __m512i v0 = _mm512_loadu_si512(p + r * j->rstride), v1 = _mm512_loadu_si512(p + r * j->rstride + 64);
        _mm512_store_si512(e[r], _mm512_packus_epi16(encode_bf16_lanes(v0, s128[0], f), encode_bf16_lanes(v1, s128[1], f)));
    }
    col_tile_finish(j, x, c0, slow[0] | (uint64_t)slow[1] << 32, sb, IN_BF16, f, e, cs, 1);
}

/* 64 fp32 or fp16 columns, in 32-bit lanes (fp16 widened exactly), the tile copied: column-wise
 * (rout NULL) or row+column. Each vector's |x| is rounded once to the element's mantissa width
 * (a + half + lsb, as round_bf16_lanes in 16-bit lanes) and encoded with the column scales (bytes
 * to e) and, for row+column, with its row block's scale (each row block's max and min by two
 * reductions; bytes to rout + r * K, scales to rs[r * RSW + b]); row blocks off the fast path
 * (NaN / Inf, or a smallest |x| whose result is not an fp8 normal) by the scalar block code. */
TARGET_AVX512 INLINE void tile_f32_avx512(const bjob_t *j, const char *x, int64_t c0, int in_dtype, const fmt_t *f,
                                          uint8_t (*e)[CW], uint8_t *cs, uint8_t *rout, uint8_t *rs, int nt) {
    __m512i in[BLOCK][4]; /* the tile as fp32 bits, copied */
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    const char *p = x + c0 * esize;
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), one = _mm512_set1_epi32(1), sgnm = _mm512_set1_epi32(0x80);
    const __m512i half = _mm512_set1_epi32((int)f->half), maxq = _mm512_set1_epi32((int)(f->max_bits - f->rebias));
    const int sh = (int)f->shift;
    __m512i mx[4], mn[4], cb[4];
    for (int h = 0; h < 4; h++) mx[h] = _mm512_setzero_si512(), mn[h] = absm;
    for (int r = 0; r < BLOCK; r++)
        for (int h = 0; h < 4; h++) {
            __m512i a = _mm512_and_si512(in[r][h] = load16_f32bits(p + r * j->rstride + 16 * esize * h, in_dtype), absm);
            _mm_prefetch(p + r * j->rstride + 16 * esize * h + PF_BYTES, _MM_HINT_T2);
            mx[h] = _mm512_max_epu32(mx[h], a);
            mn[h] = _mm512_min_epu32(mn[h], a);
        }
    uint8_t sb[CW];
    uint64_t slow = 0;
    for (int h = 0; h < 4; h++) {
        __m512i s = _mm512_sub_epi32(_mm512_srli_epi32(mx[h], 23), _mm512_set1_epi32(127 + (int)f->emax));
        __m512i mant = _mm512_and_si512(mx[h], _mm512_set1_epi32(0x7fffff));
        if (j->mode == RCEIL) s = _mm512_mask_add_epi32(s, _mm512_cmpgt_epu32_mask(mant, _mm512_set1_epi32(0x600000)), s, one);
        else if (j->mode == CT) s = _mm512_mask_add_epi32(s, _mm512_cmpge_epu32_mask(mant, _mm512_set1_epi32(0x600000)), s, one);
        s = _mm512_max_epi32(_mm512_min_epi32(s, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
        __mmask16 special = _mm512_cmpge_epu32_mask(mx[h], _mm512_set1_epi32(0x7f800000));
        __m512i thr = _mm512_max_epi32(_mm512_add_epi32(_mm512_slli_epi32(s, 23), _mm512_set1_epi32((int)f->min_normal)),
                                       _mm512_set1_epi32(0x800000));
        __mmask16 fast = _mm512_cmpge_epu32_mask(mn[h], thr) & ~special;
        slow |= (uint64_t)(uint16_t)~fast << (16 * h);
        __m512i sbv = _mm512_mask_blend_epi32(special, _mm512_add_epi32(s, _mm512_set1_epi32(127)), _mm512_set1_epi32(0xff));
        _mm_storeu_si128((__m128i *)(sb + 16 * h), _mm512_cvtepi32_epi8(sbv));
        cb[h] = _mm512_add_epi32(_mm512_slli_epi32(s, 23), _mm512_set1_epi32((int)f->rebias));
    }
    for (int r = 0; r < BLOCK; r++) {
        __m512i a[4], rnd[4], sg[4];
        for (int h = 0; h < 4; h++) {
            a[h] = _mm512_and_si512(in[r][h], absm);
            rnd[h] = _mm512_add_epi32(_mm512_add_epi32(a[h], half), _mm512_and_si512(_mm512_srli_epi32(a[h], sh), one));
            sg[h] = _mm512_and_si512(_mm512_srli_epi32(in[r][h], 24), sgnm);
            __m512i q = _mm512_or_si512(_mm512_srli_epi32(_mm512_min_epu32(_mm512_sub_epi32(rnd[h], cb[h]), maxq), sh), sg[h]);
            _mm_store_si128((__m128i *)(e[r] + 16 * h), _mm512_cvtepi32_epi8(q));
        }
        if (!rout) continue;
        __m512i rq[4];
        int fix = 0;
        for (int b = 0; b < 2; b++) {
            uint32_t amax = _mm512_reduce_max_epu32(_mm512_max_epu32(a[2 * b], a[2 * b + 1]));
            uint32_t amin = _mm512_reduce_min_epu32(_mm512_min_epu32(a[2 * b], a[2 * b + 1]));
            int32_t s = scale_exp(amax, f, j->mode);
            rs[r * RSW + b] = (uint8_t)(s + 127);
            if (amax >= 0x7f800000u || amin < fast_threshold(s, f)) fix |= 1 << b;
            __m512i sbias = _mm512_set1_epi32((int)(((uint32_t)s << 23) + f->rebias));
            for (int h = 2 * b; h < 2 * b + 2; h++)
                rq[h] = _mm512_or_si512(_mm512_srli_epi32(_mm512_min_epu32(_mm512_sub_epi32(rnd[h], sbias), maxq), sh), sg[h]);
        }
        __m512i q = _mm512_castsi128_si512(_mm512_cvtepi32_epi8(rq[0]));
        q = _mm512_inserti32x4(q, _mm512_cvtepi32_epi8(rq[1]), 1);
        q = _mm512_inserti32x4(q, _mm512_cvtepi32_epi8(rq[2]), 2);
        q = _mm512_inserti32x4(q, _mm512_cvtepi32_epi8(rq[3]), 3);
        uint8_t *out = rout + r * j->k;
        if (nt && !fix) {
            _mm512_stream_si512((__m512i *)out, q);
            continue;
        }
        _mm512_storeu_si512(out, q);
        for (int b = 0; b < 2; b++)
            if (fix >> b & 1) {
                uint32_t blk[BLOCK];
                load_block(p + r * j->rstride + BLOCK * b * esize, in_dtype, blk);
                rs[r * RSW + b] = quantize_block(blk, out + BLOCK * b, f, j->mode);
            }
    }
    col_tile_finish(j, x, c0, slow, sb, in_dtype, f, e, cs, 0);
}

/* The 32x32 tile at columns c0..c0+32: amax in vectors, then each row with the tile's exponent. */
TARGET_AVX512 INLINE void tile_avx512(const bjob_t *j, const char *x, int64_t l, int64_t i, int64_t c0, int in_dtype,
                                      const fmt_t *f) {
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    const char *p = x + c0 * esize;
    uint8_t *out = j->rdata + (l * j->m + i * BLOCK) * j->k + c0;
    uint32_t amax;
    if (in_dtype == IN_BF16) {
        __m512i m = _mm512_setzero_si512();
        for (int r = 0; r < BLOCK; r++) m = _mm512_max_epu16(m, _mm512_and_si512(_mm512_loadu_si512(p + r * j->rstride), _mm512_set1_epi16(0x7fff)));
        amax = hmax_epu16(m);
    } else {
        __m512i m = _mm512_setzero_si512();
        for (int r = 0; r < BLOCK; r++) {
            __m512i a0 = _mm512_and_si512(load16_f32bits(p + r * j->rstride, in_dtype), _mm512_set1_epi32(0x7fffffff));
            __m512i a1 = _mm512_and_si512(load16_f32bits(p + r * j->rstride + 16 * esize, in_dtype), _mm512_set1_epi32(0x7fffffff));
            m = _mm512_max_epu32(m, _mm512_max_epu32(a0, a1));
        }
        amax = _mm512_reduce_max_epu32(m);
    }
    int64_t si = (l * (j->m / BLOCK) + i) * (j->k / BLOCK) + c0 / BLOCK;
    if (amax >= 0x7f800000u) { /* NaN or Inf in the tile */
        for (int r = 0; r < BLOCK; r++) memset(out + r * j->k, 0x7f, BLOCK);
        j->rscale[si] = 0xff;
        return;
    }
    int32_t s = scale_exp(amax, f, j->mode);
    for (int r = 0; r < BLOCK; r++) {
        const char *src = p + r * j->rstride;
        if (in_dtype == IN_BF16) {
            __m512i v = _mm512_loadu_si512(src);
            encode_bf16_avx512(v, _mm512_and_si512(v, _mm512_set1_epi16(0x7fff)), out + r * j->k, s, f);
        } else {
            __m512i v0 = load16_f32bits(src, in_dtype), v1 = load16_f32bits(src + 16 * esize, in_dtype);
            encode_f32_avx512(v0, v1, _mm512_and_si512(v0, _mm512_set1_epi32(0x7fffffff)),
                              _mm512_and_si512(v1, _mm512_set1_epi32(0x7fffffff)), out + r * j->k, s, f);
        }
    }
    j->rscale[si] = (uint8_t)(s + 127);
}

/* The next band pair's rows of the strip, row by row into L2, spread over this pair's tiles
 * (tile t of ntiles): the hardware sees each row read front to back. The 32x32 tiles' only
 * prefetch (column-wise in the band walk dropped it: see the header). */
TARGET_AVX512 INLINE void prefetch_next_pair(const bjob_t *j, int64_t l, int64_t nb, int64_t bands, int64_t cb,
                                             int64_t ce, int64_t t, int64_t ntiles, int64_t esize) {
    if (nb >= bands) return;
    int64_t rows = (bands - nb >= 2 ? 2 : 1) * BLOCK, per_row = ((ce - cb) * esize + 63) / 64;
    int64_t r0 = rows * t / ntiles, r1 = rows * (t + 1) / ntiles; /* whole rows per tile */
    const char *base = band_x(j, l, nb) + cb * esize;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t q = 0; q < per_row; q++) _mm_prefetch(base + r * j->rstride + q * 64, _MM_HINT_T2);
}

/* Column-wise alone: a unit's 64-column tiles one after another, each down all the unit's bands, so
 * that every output row (a column of x) is written in one run of the unit's 256 bytes (4 lines) rather
 * than a line now and the next after the rest of the strip; the next tile column's input is
 * prefetched into L2 meanwhile. */
TARGET_AVX512 static __attribute__((noinline)) void unit_col_avx512(const bjob_t *j, const fmt_t *f, int64_t l, int64_t i0, int64_t bands,
                                            int64_t cb, int64_t ce, int in_dtype) {
    int64_t esize = in_dtype == IN_F32 ? 4 : 2, full = cb + (ce - cb) / CW * CW;
    int nt = NT_STORES && j->m % 64 == 0 && (uintptr_t)j->cdata % 64 == 0;
    _Alignas(64) uint8_t e[2 * BLOCK][CW];
    uint8_t csb[STRIP][UNIT_BANDS];
    for (int64_t c0 = cb; c0 < full; c0 += CW) {
        if (c0 + CW < full) col_unit_prefetch(j, l, i0, bands, c0 + CW, esize);
        for (int64_t i = i0; i < bands; i += 2) {
            int pair = i + 1 < bands;
            for (int64_t b = i; b <= i + pair; b++) {
                const char *x = band_x(j, l, b);
                uint8_t *cs = &csb[c0 - cb][b - i0];
                if (in_dtype != IN_BF16) tile_f32_avx512(j, x, c0, in_dtype, f, e + (b - i) * BLOCK, cs, NULL, NULL, 0);
                else col_tile_bf16_avx512(j, x, c0, f, e + (b - i) * BLOCK, cs);
            }
            if (pair) transpose_64x64(&e[0][0], col_out(j, l, i, c0), j->m, nt, in_dtype == IN_BF16);
            else transpose_32x64(&e[0][0], col_out(j, l, i, c0), j->m, in_dtype == IN_BF16);
        }
    }
    col_unit_finish(j, f, l, i0, bands, cb, ce, in_dtype, csb, nt);
}

/* Bands two at a time: a column's 64 bytes of both are one store (transpose_64x64). Column-wise
 * units take this band walk where j->col_order is 0 (the default on non-AMD CPUs), else go to
 * unit_col_avx512. */
TARGET_AVX512 INLINE void unit_avx512(const bjob_t *j, int64_t u, int in_dtype, int elem) {
    const fmt_t *f = &FMT[elem];
    int64_t l, i0, bands, cb, ce = unit_range(j, u, &l, &i0, &bands, &cb);
    int64_t esize = in_dtype == IN_F32 ? 4 : 2, full = cb + (ce - cb) / CW * CW, ntiles = (ce - cb + CW - 1) / CW;
    int nt = NT_STORES && j->m % 64 == 0 && (uintptr_t)j->cdata % 64 == 0;
    int rnt = NT_STORES && j->k % 64 == 0 && (uintptr_t)j->rdata % 64 == 0;
    int rowcol = j->op == OP_ROWCOL;
    _Alignas(64) uint8_t e[2 * BLOCK][CW];
    uint8_t csb[STRIP][UNIT_BANDS], rsb[2 * BLOCK][RSW]; /* column scales of the unit, row scales of a pair */
    if (j->op == OP_COL && j->col_order) {
        unit_col_avx512(j, f, l, i0, bands, cb, ce, in_dtype);
        return;
    }
    for (int64_t i = i0; i < bands; i += 2) {
        int pair = i + 1 < bands;
        for (int64_t c0 = cb; c0 < ce; c0 += CW) {
            int w = ce - c0 < CW ? (int)(ce - c0) : CW;
            if (j->op == OP_TILES) prefetch_next_pair(j, l, i + 2, bands, cb, ce, (c0 - cb) / CW, ntiles, esize);
            for (int64_t b = i; b <= i + pair; b++) {
                const char *x = band_x(j, l, b);
                if (j->op == OP_TILES) {
                    for (int c = 0; c < w; c += BLOCK) tile_avx512(j, x, l, b, c0 + c, in_dtype, f);
                    continue;
                }
                if (w < CW) {
                    col_tile_scalar(j, x, l, b, c0, w, in_dtype, f);
                    if (j->op == OP_ROWCOL) row_tile_scalar(j, x, l, b, c0, w, in_dtype, f);
                    continue;
                }
                uint8_t *cs = &csb[c0 - cb][b - i0];
                uint8_t *rs = rsb[(b - i) * BLOCK] + (c0 - cb) / BLOCK;
                uint8_t *rout = rowcol ? j->rdata + (l * j->m + b * BLOCK) * j->k + c0 : NULL;
                if (in_dtype != IN_BF16) tile_f32_avx512(j, x, c0, in_dtype, f, e + (b - i) * BLOCK, cs, rout, rs, rnt);
                else if (rowcol) rowcol_tile_bf16_avx512(j, x, c0, f, e + (b - i) * BLOCK, cs, rout, rs, rnt);
                else col_tile_bf16_avx512(j, x, c0, f, e + (b - i) * BLOCK, cs);
            }
            if (j->op == OP_TILES || w < CW) continue;
            if (pair) transpose_64x64(&e[0][0], col_out(j, l, i, c0), j->m, nt, in_dtype == IN_BF16);
            else transpose_32x64(&e[0][0], col_out(j, l, i, c0), j->m, in_dtype == IN_BF16);
        }
        for (int r = 0; rowcol && r < (1 + pair) * BLOCK; r++)
            put_scales(j->rscale, j->swizzled, l * j->m + i * BLOCK + r, cb / BLOCK, j->k / BLOCK, rsb[r], (full - cb) / BLOCK);
    }
    for (int64_t c = cb; j->op != OP_TILES && c < full; c++)
        put_scales(j->cscale, j->swizzled, l * j->k + c, i0, j->m / BLOCK, csb[c - cb], bands - i0);
    if (nt || rnt) _mm_sfence(); /* the streamed stores are ordered before the unit's end */
}

TARGET_AVX512 void mxq_bands_avx512_(const bjob_t *j, int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; u++) BAND_DISPATCH(unit_avx512, j, u)
}
#else
typedef int mxq_no_avx512_; /* ISO C: a translation unit declares something */
#endif
