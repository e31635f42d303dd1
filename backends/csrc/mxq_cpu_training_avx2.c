/* The AVX2 variant of the column-wise, row+column and 32x32-tile kernels (mxq_cpu_training.c says
 * what they compute; tiles: tile_avx2, the tile's amax and amin, one scale, each row encoded, a tile
 * with NaN / Inf or off the fast path by the scalar tile code). Column-wise and row+column walk as
 * the AVX-512 variant does (mxq_cpu_training_avx512.c), at half the vector width: a work unit band pair by band pair, each
 * band in tiles of 32 rows x 64 columns, four vectors of 16 bf16 lanes per tile row (bf16), or
 * eight of 8 fp32-bit lanes (fp32, and fp16 widened exactly: tile32_avx2).
 *   column-wise: per tile, the column amax / amin over the 32 rows (lane by lane), the scales,
 *   then each row encoded with its columns' scales (the tile read a second time, from L1 / L2;
 *   bf16 rows packed without the 64-bit permute: byte p is column COL_OF2(p)),
 *   the two bands' 64x64 bytes transposed in registers (byte unpacks within 128-bit lanes,
 *   then lane permutes) and each column's 64 bytes stored (two adjacent 32-byte non-temporal
 *   stores, a whole line, where M % 64 == 0).
 *   row+column: one read of the tile, copied, with the column statistics and each row block's
 *   max / min lanes; the 64 row blocks' max and min by four reduction trees each (tree16_avx2:
 *   16 rows to one vector) and their scales in vectors; then per row |x| rounded once to the element's
 *   mantissa width (its lsb added here, the half folded into both biases: lsb_added16) and
 *   encoded twice, with the column scales and with the row's scale (the
 *   rounding is the same for both when the result is an fp8 normal or clamps:
 *   mxq_cpu_training_avx512.c, round_bf16_lanes).
 * Off the fast path (a block with NaN / Inf, or whose smallest |x| does not give an fp8 normal):
 * columns redone by col_tile_finish, row blocks by the scalar block code. */
#include "mxq_cpu_training.h"

#if MXQ_X86
#define PF_BYTES 512 /* prefetch distance along a row, into L2 */

/* Per 16-bit lane (bf16 |x| bits), from a block's amax mx and amin mn: s << 7 (returned), the
 * scale bytes (*sbv, 16-bit lanes) and the lanes off the fast path (*slow, all ones). |x| <= 0x7fff,
 * so the signed 16-bit compares of AVX2 order them as unsigned. */
TARGET_AVX2 INLINE __m256i scales16(__m256i mx, __m256i mn, const fmt_t *f, int mode, __m256i *sbv, __m256i *slow) {
    __m256i s = _mm256_sub_epi16(_mm256_srli_epi16(mx, 7), _mm256_set1_epi16((short)(127 + f->emax)));
    __m256i mant = _mm256_and_si256(mx, _mm256_set1_epi16(0x7f));
    if (mode == RCEIL) s = _mm256_sub_epi16(s, _mm256_cmpgt_epi16(mant, _mm256_set1_epi16(0x60)));
    else if (mode == CT) s = _mm256_sub_epi16(s, _mm256_cmpgt_epi16(mant, _mm256_set1_epi16(0x5f)));
    s = _mm256_max_epi16(_mm256_min_epi16(s, _mm256_set1_epi16(127)), _mm256_set1_epi16(-127));
    __m256i special = _mm256_cmpgt_epi16(mx, _mm256_set1_epi16(0x7f7f));
    __m256i thr = _mm256_max_epi16(_mm256_add_epi16(_mm256_slli_epi16(s, 7), _mm256_set1_epi16((short)(f->min_normal >> 16))),
                                   _mm256_set1_epi16(0x80));
    *slow = _mm256_or_si256(_mm256_cmpgt_epi16(thr, mn), special);
    *sbv = _mm256_blendv_epi8(_mm256_add_epi16(s, _mm256_set1_epi16(127)), _mm256_set1_epi16(0xff), special);
    return _mm256_slli_epi16(s, 7);
}

/* The 64 columns' scale bytes to sb and their slow-path bits (bit c: column c). */
TARGET_AVX2 INLINE uint64_t col_scales(const __m256i *mx, const __m256i *mn, const fmt_t *f, int mode, uint8_t *sb,
                                       __m256i *s128) {
    __m256i sbv[4], slow[4];
    for (int h = 0; h < 4; h++) s128[h] = scales16(mx[h], mn[h], f, mode, &sbv[h], &slow[h]);
    _mm256_storeu_si256((__m256i *)sb, pack16_avx2(sbv[0], sbv[1]));
    _mm256_storeu_si256((__m256i *)(sb + 32), pack16_avx2(sbv[2], sbv[3]));
    uint32_t lo = (uint32_t)_mm256_movemask_epi8(_mm256_permute4x64_epi64(_mm256_packs_epi16(slow[0], slow[1]), 0xD8));
    uint32_t hi = (uint32_t)_mm256_movemask_epi8(_mm256_permute4x64_epi64(_mm256_packs_epi16(slow[2], slow[3]), 0xD8));
    return lo | (uint64_t)hi << 32;
}

/* |x| + its lsb at the element's mantissa width: |x| rounded to that width (mxq_cpu_training_avx512.c,
 * round_bf16_lanes) but for the half, which the callers fold into their biases (sbias - half: the same
 * difference in 16-bit arithmetic). */
TARGET_AVX2 INLINE __m256i lsb_added16(__m256i a, const fmt_t *f) {
    return _mm256_add_epi16(a, _mm256_and_si256(_mm256_srli_epi16(a, (int)f->shift - 16), _mm256_set1_epi16(1)));
}

/* From rounded |x| and sbias = (s << 7) + rebias (or |x| + lsb and sbias - half: lsb_added16):
 * |fp8| codes (fast path). */
TARGET_AVX2 INLINE __m256i encode_rounded16(__m256i rnd, __m256i sbias, const fmt_t *f) {
    const __m256i maxq = _mm256_set1_epi16((short)((f->max_bits >> 16) - (f->rebias >> 16)));
    return _mm256_srli_epi16(_mm256_min_epu16(_mm256_sub_epi16(rnd, sbias), maxq), (int)f->shift - 16);
}

/* Column-wise, 64 bf16 columns of a band: statistics, then each row encoded into e (lane order). */
TARGET_AVX2 INLINE void col_tile_bf16_avx2(const bjob_t *j, const char *x, int64_t c0, const fmt_t *f, uint8_t (*e)[CW],
                                           uint8_t *cs) {
    const char *p = x + c0 * 2;
    const __m256i absm = _mm256_set1_epi16(0x7fff);
    __m256i mx[4], mn[4], s128[4];
    for (int h = 0; h < 4; h++) mx[h] = _mm256_setzero_si256(), mn[h] = absm;
    for (int r = 0; r < BLOCK; r++) {
        _mm_prefetch(p + r * j->rstride + PF_BYTES, _MM_HINT_T2);
        _mm_prefetch(p + r * j->rstride + PF_BYTES + 64, _MM_HINT_T2);
        for (int h = 0; h < 4; h++) {
            __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + r * j->rstride + 32 * h)), absm);
            mx[h] = _mm256_max_epu16(mx[h], a);
            mn[h] = _mm256_min_epu16(mn[h], a);
        }
    }
    uint8_t sb[CW];
    uint64_t slow = col_scales(mx, mn, f, j->mode, sb, s128);
    for (int r = 0; r < BLOCK; r++) {
        __m256i q[4];
        for (int h = 0; h < 4; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(p + r * j->rstride + 32 * h));
            q[h] = encode16_avx2(v, _mm256_and_si256(v, absm), s128[h], f);
        }
        _mm256_store_si256((__m256i *)e[r], _mm256_packus_epi16(q[0], q[1])); /* POS_OF2 order */
        _mm256_store_si256((__m256i *)(e[r] + 32), _mm256_packus_epi16(q[2], q[3]));
    }
    col_tile_finish(j, x, c0, slow, sb, IN_BF16, f, e, cs, 2);
}

/* A tile row's 64 row-wise bytes (r0, r1) to out, streamed with nt where no block is off the fast
 * path; the blocks in `fix` redone from x's row (src: its first element of the tile) by the scalar
 * block code, their scale bytes to rs[0..1]. */
TARGET_AVX2 INLINE void store_row(uint8_t *out, __m256i r0, __m256i r1, int nt, int fix, const char *src,
                                  int in_dtype, const fmt_t *f, int mode, uint8_t *rs) {
    if (nt && !fix) {
        _mm256_stream_si256((__m256i *)out, r0);
        _mm256_stream_si256((__m256i *)(out + 32), r1);
        return;
    }
    _mm256_storeu_si256((__m256i *)out, r0);
    _mm256_storeu_si256((__m256i *)(out + 32), r1);
    for (int b = 0; b < 2; b++)
        if (fix >> b & 1) {
            uint32_t blk[BLOCK];
            load_block(src + BLOCK * b * (in_dtype == IN_F32 ? 4 : 2), in_dtype, blk);
            rs[b] = quantize_block(blk, out + BLOCK * b, f, mode);
        }
}

/* Sixteen vectors of 16 |x| lanes -> one vector whose lane ROW_LANE(i) is the max (is_max) or min of
 * vector i's lanes: a tree of four rounds, each joining pairs (128-bit halves, then 64-bit, 32-bit
 * and 16-bit pieces) so that every round halves the vectors and the candidates per vector. */
#define ROW_LANE(i) (((i) & 1) ? 8 + ((i) >> 1) : ((i) >> 1))
TARGET_AVX2 INLINE __m256i mm16(__m256i a, __m256i b, int is_max) {
    return is_max ? _mm256_max_epu16(a, b) : _mm256_min_epu16(a, b);
}
TARGET_AVX2 INLINE __m256i tree16_avx2(const __m256i *v, int is_max) {
    __m256i x[8], y[4], z[2];
    for (int q = 0; q < 8; q++) /* lanes: row 2q's 8 candidates, row 2q + 1's */
        x[q] = mm16(_mm256_permute2x128_si256(v[2 * q], v[2 * q + 1], 0x20), _mm256_permute2x128_si256(v[2 * q], v[2 * q + 1], 0x31), is_max);
    for (int q = 0; q < 4; q++) /* 4 candidates each: lane 0 rows 4q, 4q + 2; lane 1 rows 4q + 1, 4q + 3 */
        y[q] = mm16(_mm256_unpacklo_epi64(x[2 * q], x[2 * q + 1]), _mm256_unpackhi_epi64(x[2 * q], x[2 * q + 1]), is_max);
    for (int q = 0; q < 2; q++) { /* 2 each: lane 0 rows 8q, 8q + 2, 8q + 4, 8q + 6; lane 1 the odd ones */
        __m256i a = _mm256_shuffle_epi32(y[2 * q], 0xD8), b = _mm256_shuffle_epi32(y[2 * q + 1], 0xD8);
        z[q] = mm16(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b), is_max);
    }
    const __m256i lo = _mm256_set1_epi32(0xffff); /* 1 each: lane 0 the even rows, lane 1 the odd */
    __m256i m0 = _mm256_and_si256(mm16(z[0], _mm256_srli_epi32(z[0], 16), is_max), lo);
    __m256i m1 = _mm256_and_si256(mm16(z[1], _mm256_srli_epi32(z[1], 16), is_max), lo);
    return _mm256_packus_epi32(m0, m1);
}

/* Row+column, 64 bf16 columns of a band in one read: the column bytes to e (lane order), the
 * row bytes to rout + r * K, the row scales to rs[r * RSW + h]. */
#define RSW (STRIP / BLOCK) /* row scales of a strip */
TARGET_AVX2 INLINE void rowcol_tile_bf16_avx2(const bjob_t *j, const char *x, int64_t c0, const fmt_t *f,
                                              uint8_t (*e)[CW], uint8_t *cs, uint8_t *rout, uint8_t *rs, int nt) {
    _Alignas(32) __m256i in[BLOCK][4], rmx[2][BLOCK], rmn[2][BLOCK];
    _Alignas(32) int16_t rbias[2][2][16], rslow[2][2][16];
    _Alignas(32) uint8_t rsb[2][2][32];
    const char *p = x + c0 * 2;
    const __m256i absm = _mm256_set1_epi16(0x7fff), rebias = _mm256_set1_epi16((short)((f->rebias >> 16) - (f->half >> 16)));
    __m256i mx[4], mn[4], s128[4], cb[4];
    for (int h = 0; h < 4; h++) mx[h] = _mm256_setzero_si256(), mn[h] = absm;
    for (int r = 0; r < BLOCK; r++) {
        _mm_prefetch(p + r * j->rstride + PF_BYTES, _MM_HINT_T2);
        _mm_prefetch(p + r * j->rstride + PF_BYTES + 64, _MM_HINT_T2);
        __m256i a[4];
        for (int h = 0; h < 4; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(p + r * j->rstride + 32 * h));
            a[h] = _mm256_and_si256(v, absm);
            in[r][h] = v;
            mx[h] = _mm256_max_epu16(mx[h], a[h]);
            mn[h] = _mm256_min_epu16(mn[h], a[h]);
        }
        for (int b = 0; b < 2; b++) {
            rmx[b][r] = _mm256_max_epu16(a[2 * b], a[2 * b + 1]);
            rmn[b][r] = _mm256_min_epu16(a[2 * b], a[2 * b + 1]);
        }
    }
    uint8_t sb[CW];
    uint64_t slow = col_scales(mx, mn, f, j->mode, sb, s128);
    for (int h = 0; h < 4; h++) cb[h] = _mm256_add_epi16(s128[h], rebias);
    for (int b = 0; b < 2; b++) /* the row blocks' scales: lane ROW_LANE(i) of group g is row 16 g + i */
        for (int g = 0; g < 2; g++) {
            __m256i sbv, slv, r128 = scales16(tree16_avx2(rmx[b] + 16 * g, 1), tree16_avx2(rmn[b] + 16 * g, 0), f, j->mode, &sbv, &slv);
            _mm256_store_si256((__m256i *)rbias[b][g], _mm256_add_epi16(r128, rebias));
            _mm256_store_si256((__m256i *)rslow[b][g], slv);
            _mm256_store_si256((__m256i *)rsb[b][g], _mm256_packus_epi16(sbv, sbv)); /* byte L of lane L < 8; 16 + L - 8 */
        }
    const int64_t k = j->k;
    for (int r = 0; r < BLOCK; r++) {
        __m256i a[4], rnd[4], cq[4], rq[4];
        int fix = 0, g = r >> 4, L = ROW_LANE(r & 15);
        for (int h = 0; h < 4; h++) {
            a[h] = _mm256_and_si256(in[r][h], absm);
            rnd[h] = lsb_added16(a[h], f); /* the half is in cb and rbias */
            cq[h] = _mm256_or_si256(encode_rounded16(rnd[h], cb[h], f),
                                    _mm256_and_si256(_mm256_srli_epi16(in[r][h], 8), _mm256_set1_epi16(0x80)));
        }
        for (int b = 0; b < 2; b++) {
            rs[r * RSW + b] = rsb[b][g][L < 8 ? L : L + 8];
            fix |= (rslow[b][g][L] != 0) << b;
            __m256i sbias = _mm256_set1_epi16(rbias[b][g][L]);
            for (int h = 2 * b; h < 2 * b + 2; h++)
                rq[h] = _mm256_or_si256(encode_rounded16(rnd[h], sbias, f),
                                        _mm256_and_si256(_mm256_srli_epi16(in[r][h], 8), _mm256_set1_epi16(0x80)));
        }
        _mm256_store_si256((__m256i *)e[r], _mm256_packus_epi16(cq[0], cq[1])); /* POS_OF2 order */
        _mm256_store_si256((__m256i *)(e[r] + 32), _mm256_packus_epi16(cq[2], cq[3]));
        store_row(rout + r * k, pack16_avx2(rq[0], rq[1]), pack16_avx2(rq[2], rq[3]), nt, fix, p + r * j->rstride, IN_BF16, f, j->mode,
                  rs + r * RSW);
    }
    col_tile_finish(j, x, c0, slow, sb, IN_BF16, f, e, cs, 2);
}

/* ---- fp32 / fp16 input: 32-bit lanes, eight vectors per tile row ---- */

/* 8 elements as fp32 bits: fp32 as they are, fp16 widened exactly (widen_f16x8_avx2: AVX2 alone
 * has no F16C). */
TARGET_AVX2 INLINE __m256i load8(const char *p, int in_dtype) {
    if (in_dtype == IN_F32) return _mm256_loadu_si256((const __m256i *)p);
    return widen_f16x8_avx2(_mm_loadu_si128((const __m128i *)p));
}

/* Per 32-bit lane (|x| bits): s << 23 (returned), scale bytes (*sbv) and slow lanes (*slow). */
TARGET_AVX2 INLINE __m256i scales32(__m256i mx, __m256i mn, const fmt_t *f, int mode, __m256i *sbv, __m256i *slow) {
    __m256i s = _mm256_sub_epi32(_mm256_srli_epi32(mx, 23), _mm256_set1_epi32(127 + (int)f->emax));
    __m256i mant = _mm256_and_si256(mx, _mm256_set1_epi32(0x7fffff));
    if (mode == RCEIL) s = _mm256_sub_epi32(s, _mm256_cmpgt_epi32(mant, _mm256_set1_epi32(0x600000)));
    else if (mode == CT) s = _mm256_sub_epi32(s, _mm256_cmpgt_epi32(mant, _mm256_set1_epi32(0x5fffff)));
    s = _mm256_max_epi32(_mm256_min_epi32(s, _mm256_set1_epi32(127)), _mm256_set1_epi32(-127));
    __m256i special = _mm256_cmpgt_epi32(mx, _mm256_set1_epi32(0x7f7fffff));
    __m256i thr = _mm256_max_epi32(_mm256_add_epi32(_mm256_slli_epi32(s, 23), _mm256_set1_epi32((int)f->min_normal)),
                                   _mm256_set1_epi32(0x800000));
    *slow = _mm256_or_si256(_mm256_cmpgt_epi32(thr, mn), special);
    *sbv = _mm256_blendv_epi8(_mm256_add_epi32(s, _mm256_set1_epi32(127)), _mm256_set1_epi32(0xff), special);
    return _mm256_slli_epi32(s, 23);
}

/* From |x| bits rounded to the element's mantissa width (rnd = a + half + lsb) and
 * sbias = (s << 23) + rebias: |fp8| codes (fast path). (The bf16 row+column tile does the same in
 * 16-bit lanes with the half moved from rnd into sbias: encode_rounded16 of lsb_added16.) */
TARGET_AVX2 INLINE __m256i encode_rounded32(__m256i rnd, __m256i sbias, const fmt_t *f) {
    return _mm256_srli_epi32(_mm256_min_epu32(_mm256_sub_epi32(rnd, sbias), _mm256_set1_epi32((int)(f->max_bits - f->rebias))),
                             (int)f->shift);
}

/* Column-wise (rout NULL) or row+column, 64 fp32 / fp16 columns of a band: the tile widened and
 * copied with the column statistics; then per row each vector's |x| rounded once and encoded
 * with the column scales (bytes to e, lane order) and, for row+column, with its row block's
 * scale (bytes to rout + r * K, scales to rs[r * RSW + b]). */
TARGET_AVX2 INLINE void tile32_avx2(const bjob_t *j, const char *x, int64_t c0, int in_dtype, const fmt_t *f,
                                    uint8_t (*e)[CW], uint8_t *cs, uint8_t *rout, uint8_t *rs, int nt) {
    _Alignas(32) __m256i in[BLOCK][8];
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    const char *p = x + c0 * esize;
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), one = _mm256_set1_epi32(1), sgnm = _mm256_set1_epi32(0x80);
    const __m256i half = _mm256_set1_epi32((int)f->half), rebias = _mm256_set1_epi32((int)f->rebias);
    const int sh = (int)f->shift;
    __m256i mx[8], mn[8], cb[8];
    for (int h = 0; h < 8; h++) mx[h] = _mm256_setzero_si256(), mn[h] = absm;
    for (int r = 0; r < BLOCK; r++) {
        for (int q = 0; q < 2 * (int)esize; q++) _mm_prefetch(p + r * j->rstride + PF_BYTES + 64 * q, _MM_HINT_T2);
        for (int h = 0; h < 8; h++) {
            __m256i v = load8(p + r * j->rstride + 8 * esize * h, in_dtype), a = _mm256_and_si256(v, absm);
            in[r][h] = v;
            mx[h] = _mm256_max_epu32(mx[h], a);
            mn[h] = _mm256_min_epu32(mn[h], a);
        }
    }
    uint8_t sb[CW];
    __m256i sbv[8], slowv[8];
    for (int h = 0; h < 8; h++) cb[h] = _mm256_add_epi32(scales32(mx[h], mn[h], f, j->mode, &sbv[h], &slowv[h]), rebias);
    _mm256_storeu_si256((__m256i *)sb, pack32_avx2(sbv[0], sbv[1], sbv[2], sbv[3], 0));
    _mm256_storeu_si256((__m256i *)(sb + 32), pack32_avx2(sbv[4], sbv[5], sbv[6], sbv[7], 0));
    uint64_t slow = (uint32_t)_mm256_movemask_epi8(pack32_avx2(slowv[0], slowv[1], slowv[2], slowv[3], 1)) |
                    (uint64_t)(uint32_t)_mm256_movemask_epi8(pack32_avx2(slowv[4], slowv[5], slowv[6], slowv[7], 1)) << 32;
    for (int r = 0; r < BLOCK; r++) {
        __m256i a[8], rnd[8], sg[8], q[8];
        for (int h = 0; h < 8; h++) {
            a[h] = _mm256_and_si256(in[r][h], absm);
            rnd[h] = _mm256_add_epi32(_mm256_add_epi32(a[h], half), _mm256_and_si256(_mm256_srli_epi32(a[h], sh), one));
            sg[h] = _mm256_and_si256(_mm256_srli_epi32(in[r][h], 24), sgnm);
            q[h] = _mm256_or_si256(encode_rounded32(rnd[h], cb[h], f), sg[h]);
        }
        _mm256_store_si256((__m256i *)e[r], pack32_avx2(q[0], q[1], q[2], q[3], 0));
        _mm256_store_si256((__m256i *)(e[r] + 32), pack32_avx2(q[4], q[5], q[6], q[7], 0));
        if (!rout) continue;
        int fix = 0;
        for (int b = 0; b < 2; b++) {
            uint32_t amax, amin;
            hmaxmin32_avx2(a + 4 * b, &amax, &amin);
            int32_t s = scale_exp(amax, f, j->mode);
            rs[r * RSW + b] = (uint8_t)(s + 127);
            if (amax >= 0x7f800000u || amin < fast_threshold(s, f)) fix |= 1 << b;
            __m256i sbias = _mm256_set1_epi32((int)(((uint32_t)s << 23) + f->rebias));
            for (int h = 4 * b; h < 4 * b + 4; h++) q[h] = _mm256_or_si256(encode_rounded32(rnd[h], sbias, f), sg[h]);
        }
        store_row(rout + r * j->k, pack32_avx2(q[0], q[1], q[2], q[3], 0), pack32_avx2(q[4], q[5], q[6], q[7], 0), nt, fix,
                  p + r * j->rstride, in_dtype, f, j->mode, rs + r * RSW);
    }
    col_tile_finish(j, x, c0, slow, sb, in_dtype, f, e, cs, 0);
}

/* The 32x32 tile at columns c0..c0+32 of band i: one scale from the tile's amax, every row encoded
 * with it. The fast-path test is the tile's smallest |x| against the threshold (one scale for all
 * rows); a tile that fails it, or holds NaN / Inf, goes to the scalar tile code. */
TARGET_AVX2 INLINE void tile_avx2(const bjob_t *j, const char *x, int64_t l, int64_t i, int64_t c0, int in_dtype,
                                  const fmt_t *f) {
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    const char *p = x + c0 * esize;
    uint8_t *out = j->rdata + (l * j->m + i * BLOCK) * j->k + c0;
    int64_t si = (l * (j->m / BLOCK) + i) * (j->k / BLOCK) + c0 / BLOCK;
    if (in_dtype == IN_BF16) {
        const __m256i absm = _mm256_set1_epi16(0x7fff);
        __m256i mx = _mm256_setzero_si256(), mn = absm;
        for (int r = 0; r < BLOCK; r++)
            for (int h = 0; h < 2; h++) {
                _mm_prefetch(p + r * j->rstride + 32 * h + PF_BYTES, _MM_HINT_T2);
                __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + r * j->rstride + 32 * h)), absm);
                mx = _mm256_max_epu16(mx, a);
                mn = _mm256_min_epu16(mn, a);
            }
        uint32_t amax, amin;
        hmaxmin16_avx2(mx, mn, &amax, &amin); /* mn <= mx lane by lane: the max is mx's, the min mn's */
        int32_t s = scale_exp(amax << 16, f, j->mode);
        if (amax >= 0x7f80u || amin < fast_threshold(s, f) >> 16) {
            tile_scalar(j, x, l, i, c0, IN_BF16, f);
            return;
        }
        __m256i s128 = _mm256_set1_epi16((short)(s * 128));
        for (int r = 0; r < BLOCK; r++) {
            __m256i v0 = _mm256_loadu_si256((const __m256i *)(p + r * j->rstride));
            __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + r * j->rstride + 32));
            _mm256_storeu_si256((__m256i *)(out + r * j->k), pack16_avx2(encode16_avx2(v0, _mm256_and_si256(v0, absm), s128, f),
                                                                         encode16_avx2(v1, _mm256_and_si256(v1, absm), s128, f)));
        }
        j->rscale[si] = (uint8_t)(s + 127);
        return;
    }
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), one = _mm256_set1_epi32(1), sgnm = _mm256_set1_epi32(0x80);
    __m256i mx = _mm256_setzero_si256(), mn = absm;
    for (int r = 0; r < BLOCK; r++)
        for (int h = 0; h < 4; h++) {
            if (h % 2 == 0 || esize == 4) _mm_prefetch(p + r * j->rstride + 8 * esize * h + PF_BYTES, _MM_HINT_T2);
            __m256i a = _mm256_and_si256(load8(p + r * j->rstride + 8 * esize * h, in_dtype), absm);
            mx = _mm256_max_epu32(mx, a);
            mn = _mm256_min_epu32(mn, a);
        }
    uint32_t amax, amin;
    __m256i ext[4] = {mx, mx, mn, mn};
    hmaxmin32_avx2(ext, &amax, &amin); /* mn <= mx lane by lane: the max is mx's, the min mn's */
    int32_t s = scale_exp(amax, f, j->mode);
    if (amax >= 0x7f800000u || amin < fast_threshold(s, f)) {
        tile_scalar(j, x, l, i, c0, in_dtype, f);
        return;
    }
    const __m256i half = _mm256_set1_epi32((int)f->half), sbias = _mm256_set1_epi32((int)(((uint32_t)s << 23) + f->rebias));
    for (int r = 0; r < BLOCK; r++) {
        __m256i q[4];
        for (int h = 0; h < 4; h++) {
            __m256i v = load8(p + r * j->rstride + 8 * esize * h, in_dtype), a = _mm256_and_si256(v, absm);
            __m256i rnd = _mm256_add_epi32(_mm256_add_epi32(a, half), _mm256_and_si256(_mm256_srli_epi32(a, (int)f->shift), one));
            q[h] = _mm256_or_si256(encode_rounded32(rnd, sbias, f), _mm256_and_si256(_mm256_srli_epi32(v, 24), sgnm));
        }
        _mm256_storeu_si256((__m256i *)(out + r * j->k), pack32_avx2(q[0], q[1], q[2], q[3], 0));
    }
    j->rscale[si] = (uint8_t)(s + 127);
}

/* A unit of 32x32 tiles, band by band. */
TARGET_AVX2 INLINE void unit_tiles_avx2(const bjob_t *j, int64_t u, int in_dtype, int elem) {
    const fmt_t *f = &FMT[elem];
    int64_t l, i0, i1, cb, ce = unit_range(j, u, &l, &i0, &i1, &cb);
    for (int64_t i = i0; i < i1; i++)
        for (int64_t c0 = cb; c0 < ce; c0 += BLOCK) tile_avx2(j, band_x(j, l, i), l, i, c0, in_dtype, f);
}

/* 16 rows of 32 bytes (CW apart) -> t[q], whose 128-bit lane L holds column 16 L + q of the 16
 * rows: four rounds of byte interleaves of registers q and q + 8 within 128-bit lanes. */
TARGET_AVX2 INLINE void transpose_16x32(const uint8_t *e, __m256i *t) {
    __m256i b[16];
    for (int q = 0; q < 16; q++) t[q] = _mm256_load_si256((const __m256i *)(e + q * CW));
    for (int round = 0; round < 4; round++) {
        for (int q = 0; q < 8; q++) {
            b[2 * q] = _mm256_unpacklo_epi8(t[q], t[q + 8]);
            b[2 * q + 1] = _mm256_unpackhi_epi8(t[q], t[q + 8]);
        }
        for (int q = 0; q < 16; q++) t[q] = b[q];
    }
}

/* e[rows][64] bytes (rows 32 or 64: one band or a pair) -> column c's `rows` bytes at dst + c * ds;
 * a pair's 64 bytes as two adjacent 32-byte stores, non-temporal with nt (a whole line). */
TARGET_AVX2 INLINE void transpose_tile_avx2(const uint8_t *e, uint8_t *dst, int64_t ds, int rows, int nt, int packed) {
    for (int ch = 0; ch < 2; ch++) {
        __m256i t[4][16];
        for (int g = 0; g < rows / 16; g++) transpose_16x32(e + 16 * g * CW + 32 * ch, t[g]);
        for (int q = 0; q < 16; q++)
            for (int L = 0; L < 2; L++) {
                uint8_t *d = dst + COL_OF(32 * ch + 16 * L + q, packed) * ds;
                int sel = L ? 0x31 : 0x20;
                __m256i lo = _mm256_permute2x128_si256(t[0][q], t[1][q], sel);
                if (rows == BLOCK) {
                    _mm256_storeu_si256((__m256i *)d, lo);
                    continue;
                }
                __m256i hi = _mm256_permute2x128_si256(t[2][q], t[3][q], sel);
                if (nt) {
                    _mm256_stream_si256((__m256i *)d, lo);
                    _mm256_stream_si256((__m256i *)(d + 32), hi);
                } else {
                    _mm256_storeu_si256((__m256i *)d, lo);
                    _mm256_storeu_si256((__m256i *)(d + 32), hi);
                }
            }
    }
}

/* Column-wise alone: a unit's 64-column tiles one after another, each down all the unit's bands, so
 * that every output row (a column of x) is written in one run of the unit's 256 bytes rather than a
 * line now and the next after the rest of the strip (as unit_col_avx512; 4096x8192 bf16, 2 threads,
 * reused outputs: 1.45x -> see docs/performance.md); the next tile column's input is prefetched into L2. */
TARGET_AVX2 static __attribute__((noinline)) void unit_col_avx2(const bjob_t *j, const fmt_t *f, int64_t l, int64_t i0,
                                                               int64_t bands, int64_t cb, int64_t ce, int in_dtype) {
    int64_t esize = in_dtype == IN_F32 ? 4 : 2, full = cb + (ce - cb) / CW * CW;
    int nt = j->m % 64 == 0 && (uintptr_t)j->cdata % 64 == 0;
    _Alignas(64) uint8_t e[2 * BLOCK][CW];
    uint8_t csb[STRIP][UNIT_BANDS];
    for (int64_t c0 = cb; c0 < full; c0 += CW) {
        if (c0 + CW < full) col_unit_prefetch(j, l, i0, bands, c0 + CW, esize);
        for (int64_t i = i0; i < bands; i += 2) {
            int pair = i + 1 < bands;
            for (int64_t b = i; b <= i + pair; b++) {
                const char *x = band_x(j, l, b);
                uint8_t *cs = &csb[c0 - cb][b - i0];
                if (in_dtype != IN_BF16) tile32_avx2(j, x, c0, in_dtype, f, e + (b - i) * BLOCK, cs, NULL, NULL, 0);
                else col_tile_bf16_avx2(j, x, c0, f, e + (b - i) * BLOCK, cs);
            }
            transpose_tile_avx2(&e[0][0], col_out(j, l, i, c0), j->m, (1 + pair) * BLOCK, nt, in_dtype == IN_BF16 ? 2 : 0);
        }
    }
    col_unit_finish(j, f, l, i0, bands, cb, ce, in_dtype, csb, nt);
}

/* A unit of row+column work, bands two at a time, and of column-wise work in the band walk
 * (j->col_order 0, the default on non-AMD CPUs; in column order column-wise units go to
 * unit_col_avx2). */
TARGET_AVX2 INLINE void unit_avx2(const bjob_t *j, int64_t u, int in_dtype, int elem) {
    const fmt_t *f = &FMT[elem];
    int64_t l, i0, bands, cb, ce = unit_range(j, u, &l, &i0, &bands, &cb);
    if (j->op == OP_COL && j->col_order) {
        unit_col_avx2(j, f, l, i0, bands, cb, ce, in_dtype);
        return;
    }
    int64_t full = cb + (ce - cb) / CW * CW;
    int rowcol = j->op == OP_ROWCOL;
    int nt = j->m % 64 == 0 && (uintptr_t)j->cdata % 64 == 0;
    int rnt = rowcol && j->k % 64 == 0 && (uintptr_t)j->rdata % 64 == 0;
    _Alignas(64) uint8_t e[2 * BLOCK][CW];
    uint8_t csb[STRIP][UNIT_BANDS], rsb[2 * BLOCK][RSW]; /* column scales of the unit, row scales of a pair */
    for (int64_t i = i0; i < bands; i += 2) {
        int pair = i + 1 < bands;
        for (int64_t c0 = cb; c0 < ce; c0 += CW) {
            int w = ce - c0 < CW ? (int)(ce - c0) : CW;
            for (int64_t b = i; b <= i + pair; b++) {
                const char *x = band_x(j, l, b);
                if (w < CW) {
                    col_tile_scalar(j, x, l, b, c0, w, in_dtype, f);
                    if (rowcol) row_tile_scalar(j, x, l, b, c0, w, in_dtype, f);
                    continue;
                }
                uint8_t *cs = &csb[c0 - cb][b - i0], *rs = rsb[(b - i) * BLOCK] + (c0 - cb) / BLOCK;
                uint8_t *rout = rowcol ? j->rdata + (l * j->m + b * BLOCK) * j->k + c0 : NULL;
                if (in_dtype != IN_BF16) tile32_avx2(j, x, c0, in_dtype, f, e + (b - i) * BLOCK, cs, rout, rs, rnt);
                else if (rowcol) rowcol_tile_bf16_avx2(j, x, c0, f, e + (b - i) * BLOCK, cs, rout, rs, rnt);
                else col_tile_bf16_avx2(j, x, c0, f, e + (b - i) * BLOCK, cs);
            }
            if (w == CW) transpose_tile_avx2(&e[0][0], col_out(j, l, i, c0), j->m, (1 + pair) * BLOCK, nt, in_dtype == IN_BF16 ? 2 : 0);
        }
        for (int r = 0; rowcol && r < (1 + pair) * BLOCK; r++)
            put_scales(j->rscale, j->swizzled, l * j->m + i * BLOCK + r, cb / BLOCK, j->k / BLOCK, rsb[r], (full - cb) / BLOCK);
    }
    for (int64_t c = cb; c < full; c++) put_scales(j->cscale, j->swizzled, l * j->k + c, i0, j->m / BLOCK, csb[c - cb], bands - i0);
    if (nt || rnt) _mm_sfence(); /* the streamed stores are ordered before the unit's end */
}

TARGET_AVX2 void mxq_bands_avx2_(const bjob_t *j, int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; u++) {
        if (j->op == OP_TILES) BAND_DISPATCH(unit_tiles_avx2, j, u)
        else BAND_DISPATCH(unit_avx2, j, u)
    }
}
#else
typedef int mxq_no_avx2_; /* ISO C: a translation unit declares something */
#endif
