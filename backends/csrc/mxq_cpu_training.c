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
 * The AVX-512 variant does this with intrinsics (bf16 in 16-bit lanes as in mxq_cpu.c, fp16
 * widened to fp32); the AVX2 and baseline variants with the scalar code: gather the column into
 * a block, then the row-wise block code. Last tiles narrower than 64 columns use the scalar code. */
#include "mxq_cpu.h"

#define CW 64 /* columns per tile */
#define NT_STORES 1 /* column bytes stored past the caches where whole lines (M % 64 == 0) */


enum { OP_COL = 0, OP_ROWCOL = 1, OP_TILES = 2 };

typedef struct {
    const char *x;
    int64_t m, k, bstride, rstride; /* strides in bytes */
    uint8_t *rdata, *rscale, *cdata, *cscale;
    int in_dtype, elem, mode, swizzled, op;
} bjob_t;

/* Column c of band i of batch l: its 32 output bytes, and where its scale goes. */
INLINE uint8_t *col_out(const bjob_t *j, int64_t l, int64_t i, int64_t c) {
    return j->cdata + (l * j->k + c) * j->m + i * BLOCK;
}

INLINE void put_col_scale(const bjob_t *j, int64_t l, int64_t i, int64_t c, uint8_t sb) {
    int64_t row = l * j->k + c, nb = j->m / BLOCK;
    j->cscale[j->swizzled ? swz(row, i, (nb + 3) & ~(int64_t)3) : row * nb + i] = sb;
}

/* Row-wise block cb of global row rr (row+column). */
INLINE void put_row_scale(const bjob_t *j, int64_t rr, int64_t cb, uint8_t sb) {
    int64_t nb = j->k / BLOCK;
    j->rscale[j->swizzled ? swz(rr, cb, (nb + 3) & ~(int64_t)3) : rr * nb + cb] = sb;
}

/* ---- the scalar code (every variant: the AVX2 and baseline variants, and last tiles) ---- */

/* Columns c0..c0+w of the band at x (row 0 of band i of batch l). */
INLINE void col_tile_scalar(const bjob_t *j, const char *x, int64_t l, int64_t i, int64_t c0, int w, int in_dtype,
                            const fmt_t *f) {
    uint32_t t[CW][BLOCK];
    for (int r = 0; r < BLOCK; r++) {
        const char *row = x + r * j->rstride;
        for (int c = 0; c < w; c++) t[c][r] = load_bits(row, c0 + c, in_dtype);
    }
    for (int c = 0; c < w; c++) put_col_scale(j, l, i, c0 + c, quantize_block(t[c], col_out(j, l, i, c0 + c), f, j->mode));
}

/* Row-wise blocks of columns c0..c0+w (w a multiple of 32) of the band's 32 rows. */
INLINE void row_tile_scalar(const bjob_t *j, const char *x, int64_t l, int64_t i, int64_t c0, int w, int in_dtype,
                            const fmt_t *f) {
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    uint32_t b[BLOCK];
    for (int r = 0; r < BLOCK; r++) {
        int64_t rr = (l * j->m + i * BLOCK + r);
        for (int c = 0; c < w; c += BLOCK) {
            load_block(x + r * j->rstride + (c0 + c) * esize, in_dtype, b);
            put_row_scale(j, rr, (c0 + c) / BLOCK, quantize_block(b, j->rdata + rr * j->k + c0 + c, f, j->mode));
        }
    }
}

/* The 32x32 tile at columns c0..c0+32 of the band: one scale. */
INLINE void tile_scalar(const bjob_t *j, const char *x, int64_t l, int64_t i, int64_t c0, int in_dtype,
                        const fmt_t *f) {
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    uint32_t t[BLOCK][BLOCK], amax = 0, amin[BLOCK];
    for (int r = 0; r < BLOCK; r++) {
        load_block(x + r * j->rstride + c0 * esize, in_dtype, t[r]);
        amin[r] = 0x7fffffffu;
        for (int c = 0; c < BLOCK; c++) {
            uint32_t a = t[r][c] & 0x7fffffffu;
            amax = a > amax ? a : amax;
            amin[r] = a < amin[r] ? a : amin[r];
        }
    }
    uint8_t *out = j->rdata + (l * j->m + i * BLOCK) * j->k + c0;
    int32_t s = scale_exp(amax, f, j->mode);
    for (int r = 0; r < BLOCK; r++) {
        if (amax >= 0x7f800000u) memset(out + r * j->k, 0x7f, BLOCK); /* NaN or Inf in the tile */
        else encode_with(t[r], out + r * j->k, s, amin[r], f);
    }
    j->rscale[(l * (j->m / BLOCK) + i) * (j->k / BLOCK) + c0 / BLOCK] = amax >= 0x7f800000u ? 0xff : (uint8_t)(s + 127);
}

/* A work unit: UNIT_BANDS bands (of 32 rows) x STRIP columns of one batch, walked band pair by
 * band pair, each pair in tiles of 64 columns; each tile's input lines PF_BYTES further along
 * its rows are prefetched. Measured on the 2-core EPYC (4096x8192 bf16, one thread, reused
 * outputs): whole-K sweeps of 2-4 bands 23 ms, strips of 128-512 columns down all of M 14-18 ms,
 * 8 bands x 2048 columns 14 ms, the row-wise call 5.8 ms (docs/performance.md). */
#define STRIP 2048
#define UNIT_BANDS 8
#define PF_BYTES 512

INLINE int64_t units_of(const bjob_t *j, int64_t batches) {
    return batches * ((j->m / BLOCK + UNIT_BANDS - 1) / UNIT_BANDS) * ((j->k + STRIP - 1) / STRIP);
}

/* Unit u: batch *l, bands *i0..*i1, columns *cb..(the return value). */
INLINE int64_t unit_range(const bjob_t *j, int64_t u, int64_t *l, int64_t *i0, int64_t *i1, int64_t *cb) {
    int64_t strips = (j->k + STRIP - 1) / STRIP, bands = j->m / BLOCK, groups = (bands + UNIT_BANDS - 1) / UNIT_BANDS;
    *cb = u % strips * STRIP;
    u /= strips;
    *i0 = u % groups * UNIT_BANDS;
    *i1 = bands - *i0 < UNIT_BANDS ? bands : *i0 + UNIT_BANDS;
    *l = u / groups;
    return j->k - *cb < STRIP ? j->k : *cb + STRIP;
}

INLINE const char *band_x(const bjob_t *j, int64_t l, int64_t i) { return j->x + l * j->bstride + i * BLOCK * j->rstride; }

/* in_dtype and elem are constants at each call site. */
INLINE void unit_scalar(const bjob_t *j, int64_t u, int in_dtype, int elem) {
    const fmt_t *f = &FMT[elem];
    int64_t l, i0, i1, cb, ce = unit_range(j, u, &l, &i0, &i1, &cb);
    for (int64_t i = i0; i < i1; i++)
        for (int64_t c0 = cb; c0 < ce; c0 += CW) {
            int w = ce - c0 < CW ? (int)(ce - c0) : CW;
            const char *x = band_x(j, l, i);
            if (j->op == OP_TILES) {
                for (int c = 0; c < w; c += BLOCK) tile_scalar(j, x, l, i, c0 + c, in_dtype, f);
                continue;
            }
            col_tile_scalar(j, x, l, i, c0, w, in_dtype, f);
            if (j->op == OP_ROWCOL) row_tile_scalar(j, x, l, i, c0, w, in_dtype, f);
        }
}

#define DISPATCH(impl, j, u)                                   \
    switch ((j)->in_dtype * 2 + (j)->elem) {                   \
    case 0: impl(j, u, IN_F32, E4M3); break;                   \
    case 1: impl(j, u, IN_F32, E5M2); break;                   \
    case 2: impl(j, u, IN_BF16, E4M3); break;                  \
    case 3: impl(j, u, IN_BF16, E5M2); break;                  \
    case 4: impl(j, u, IN_F16, E4M3); break;                   \
    default: impl(j, u, IN_F16, E5M2); break;                  \
    }

static void bands_base(const bjob_t *j, int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; u++) DISPATCH(unit_scalar, j, u)
}

#if MXQ_X86
TARGET_AVX2 static void bands_avx2(const bjob_t *j, int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; u++) DISPATCH(unit_scalar, j, u)
}

/* ---- AVX-512 ------------------------------------------------------------------------------ */

/* 16 rows of 64 bytes (CW apart) -> t[q], whose 128-bit lane L holds column 16 L + q of the 16
 * rows. Each round interleaves the bytes of registers q and q + 8 (within 128-bit lanes): four
 * rounds rotate a byte's (register, byte) index bits by four, a 16x16 transpose in each lane. */
TARGET_AVX512 INLINE void transpose_16x16_lanes(const uint8_t *e, __m512i *t) {
    __m512i b[16];
    for (int q = 0; q < 16; q++) t[q] = _mm512_load_si512(e + q * CW);
    for (int round = 0; round < 4; round++) {
        for (int q = 0; q < 8; q++) {
            b[2 * q] = _mm512_unpacklo_epi8(t[q], t[q + 8]);
            b[2 * q + 1] = _mm512_unpackhi_epi8(t[q], t[q + 8]);
        }
        for (int q = 0; q < 16; q++) t[q] = b[q];
    }
}

/* e[32][64] bytes (row r: the encoded row r of 64 columns) -> column c's 32 bytes at dst + c * ds. */
TARGET_AVX512 INLINE void transpose_32x64(const uint8_t *e, uint8_t *dst, int64_t ds) {
    __m512i t[2][16];
    for (int h = 0; h < 2; h++) transpose_16x16_lanes(e + 16 * h * CW, t[h]); /* t[h][q] lane L: column 16 L + q */
    const __m512i lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    for (int q = 0; q < 16; q++) {
        __m512i v0 = _mm512_permutex2var_epi64(t[0][q], lo, t[1][q]); /* columns q, 16 + q */
        __m512i v1 = _mm512_permutex2var_epi64(t[0][q], hi, t[1][q]); /* columns 32 + q, 48 + q */
        _mm256_storeu_si256((__m256i *)(dst + q * ds), _mm512_castsi512_si256(v0));
        _mm256_storeu_si256((__m256i *)(dst + (16 + q) * ds), _mm512_extracti64x4_epi64(v0, 1));
        _mm256_storeu_si256((__m256i *)(dst + (32 + q) * ds), _mm512_castsi512_si256(v1));
        _mm256_storeu_si256((__m256i *)(dst + (48 + q) * ds), _mm512_extracti64x4_epi64(v1, 1));
    }
}

/* After the vector pass: the columns in `slow` redone by the scalar block code (into e), then
 * the scales of the tile's 64 columns. */
TARGET_AVX512 INLINE void col_tile_finish(const bjob_t *j, const char *x, int64_t l, int64_t i, int64_t c0,
                                          uint64_t slow, uint8_t *sb, int in_dtype, const fmt_t *f, uint8_t (*e)[CW]) {
    for (; slow; slow &= slow - 1) {
        int c = __builtin_ctzll(slow);
        uint32_t b[BLOCK];
        uint8_t col[BLOCK];
        for (int r = 0; r < BLOCK; r++) b[r] = load_bits(x + r * j->rstride, c0 + c, in_dtype);
        sb[c] = quantize_block(b, col, f, j->mode);
        for (int r = 0; r < BLOCK; r++) e[r][c] = col[r];
    }
    for (int c = 0; c < CW; c++) put_col_scale(j, l, i, c0 + c, sb[c]);
}

/* e[64][64] bytes (two bands' tiles) -> column c's 64 bytes at dst + c * ds: the 16x16 transposes
 * of transpose_32x64 for four groups of 16 rows, then each column's four 16-byte pieces joined.
 * One 64-byte store per column: a whole cache line where dst and ds are multiples of 64, then
 * stored past the caches (the (K, M) output is not read back here). */
TARGET_AVX512 INLINE void transpose_64x64(const uint8_t *e, uint8_t *dst, int64_t ds, int nt) {
    __m512i t[4][16];
    for (int h = 0; h < 4; h++) transpose_16x16_lanes(e + 16 * h * CW, t[h]);
    const __m512i lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    for (int q = 0; q < 16; q++) {
        __m512i v01 = _mm512_permutex2var_epi64(t[0][q], lo, t[1][q]), v23 = _mm512_permutex2var_epi64(t[2][q], lo, t[3][q]);
        __m512i w01 = _mm512_permutex2var_epi64(t[0][q], hi, t[1][q]), w23 = _mm512_permutex2var_epi64(t[2][q], hi, t[3][q]);
        __m512i col[4] = {_mm512_shuffle_i64x2(v01, v23, 0x44), _mm512_shuffle_i64x2(v01, v23, 0xEE),
                          _mm512_shuffle_i64x2(w01, w23, 0x44), _mm512_shuffle_i64x2(w01, w23, 0xEE)};
        for (int L = 0; L < 4; L++) {
            if (nt) _mm512_stream_si512((__m512i *)(dst + (16 * L + q) * ds), col[L]);
            else _mm512_storeu_si512(dst + (16 * L + q) * ds, col[L]);
        }
    }
}

/* 64 bf16 columns, in 16-bit lanes (the row code's arithmetic divided by 2^16). */
TARGET_AVX512 INLINE void col_tile_bf16_avx512(const bjob_t *j, const char *x, int64_t l, int64_t i, int64_t c0,
                                               const fmt_t *f, uint8_t (*e)[CW]) {
    __m512i in[BLOCK][2]; /* the tile, copied: x's rows are often 2^n bytes apart, one L1 set */
    const char *p = x + c0 * 2;
    const __m512i absm = _mm512_set1_epi16(0x7fff), one = _mm512_set1_epi16(1);
    __m512i mx[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()}, mn[2] = {absm, absm}, s128[2];
    for (int r = 0; r < BLOCK; r++)
        for (int h = 0; h < 2; h++) {
            __m512i a = _mm512_and_si512(in[r][h] = _mm512_loadu_si512(p + r * j->rstride + 64 * h), absm);
            _mm_prefetch(p + r * j->rstride + 64 * h + PF_BYTES, _MM_HINT_T0);
            mx[h] = _mm512_max_epu16(mx[h], a);
            mn[h] = _mm512_min_epu16(mn[h], a);
        }
    uint8_t sb[CW];
    uint64_t slow = 0;
    for (int h = 0; h < 2; h++) { /* scale_exp per lane, and the fast-path test of the row code */
        __m512i s = _mm512_sub_epi16(_mm512_srli_epi16(mx[h], 7), _mm512_set1_epi16((short)(127 + f->emax)));
        __m512i mant = _mm512_and_si512(mx[h], _mm512_set1_epi16(0x7f));
        if (j->mode == RCEIL) s = _mm512_mask_add_epi16(s, _mm512_cmpgt_epu16_mask(mant, _mm512_set1_epi16(0x60)), s, one);
        else if (j->mode == CT) s = _mm512_mask_add_epi16(s, _mm512_cmpge_epu16_mask(mant, _mm512_set1_epi16(0x60)), s, one);
        s = _mm512_max_epi16(_mm512_min_epi16(s, _mm512_set1_epi16(127)), _mm512_set1_epi16(-127));
        __mmask32 special = _mm512_cmpge_epu16_mask(mx[h], _mm512_set1_epi16(0x7f80));
        __m512i thr = _mm512_max_epi16(_mm512_add_epi16(_mm512_slli_epi16(s, 7), _mm512_set1_epi16((short)(f->min_normal >> 16))),
                                       _mm512_set1_epi16(0x80));
        __mmask32 fast = _mm512_cmpge_epu16_mask(mn[h], thr) & ~special;
        slow |= (uint64_t)(uint32_t)~fast << (32 * h);
        __m512i sbv = _mm512_mask_blend_epi16(special, _mm512_add_epi16(s, _mm512_set1_epi16(127)), _mm512_set1_epi16(0xff));
        _mm256_storeu_si256((__m256i *)(sb + 32 * h), _mm512_cvtepi16_epi8(sbv));
        s128[h] = _mm512_slli_epi16(s, 7);
    }
    int sh = (int)f->shift - 16;
    const __m512i maxb = _mm512_set1_epi16((short)(f->max_bits >> 16));
    const __m512i bias = _mm512_set1_epi16((short)((f->half >> 16) - (f->rebias >> 16))), sgn = _mm512_set1_epi16(0x80);
    for (int r = 0; r < BLOCK; r++)
        for (int h = 0; h < 2; h++) {
            __m512i v = in[r][h];
            __m512i u = _mm512_min_epu16(_mm512_sub_epi16(_mm512_and_si512(v, absm), s128[h]), maxb);
            __m512i q = _mm512_add_epi16(_mm512_add_epi16(u, bias), _mm512_and_si512(_mm512_srli_epi16(u, sh), one));
            q = _mm512_ternarylogic_epi32(_mm512_srli_epi16(q, sh), _mm512_srli_epi16(v, 8), sgn, 0xF8);
            _mm256_store_si256((__m256i *)(e[r] + 32 * h), _mm512_cvtepi16_epi8(q));
        }
    col_tile_finish(j, x, l, i, c0, slow, sb, IN_BF16, f, e);
}

/* 64 fp32 or fp16 columns, in 32-bit lanes (fp16 widened exactly). */
TARGET_AVX512 INLINE void col_tile_f32_avx512(const bjob_t *j, const char *x, int64_t l, int64_t i, int64_t c0,
                                              int in_dtype, const fmt_t *f, uint8_t (*e)[CW]) {
    __m512i in[BLOCK][4]; /* the tile as fp32 bits, copied */
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    const char *p = x + c0 * esize;
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), one = _mm512_set1_epi32(1);
    __m512i mx[4], mn[4], s23[4];
    for (int h = 0; h < 4; h++) mx[h] = _mm512_setzero_si512(), mn[h] = absm;
    for (int r = 0; r < BLOCK; r++)
        for (int h = 0; h < 4; h++) {
            __m512i a = _mm512_and_si512(in[r][h] = load16_f32bits(p + r * j->rstride + 16 * esize * h, in_dtype), absm);
            _mm_prefetch(p + r * j->rstride + 16 * esize * h + PF_BYTES, _MM_HINT_T0);
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
        s23[h] = _mm512_slli_epi32(s, 23);
    }
    const __m512i maxb = _mm512_set1_epi32((int)f->max_bits), bias = _mm512_set1_epi32((int)(f->half - f->rebias));
    const __m512i sgn = _mm512_set1_epi32(0x80);
    for (int r = 0; r < BLOCK; r++)
        for (int h = 0; h < 4; h++) {
            __m512i v = in[r][h];
            __m512i u = _mm512_min_epu32(_mm512_sub_epi32(_mm512_and_si512(v, absm), s23[h]), maxb);
            __m512i q = _mm512_add_epi32(_mm512_add_epi32(u, bias), _mm512_and_si512(_mm512_srli_epi32(u, f->shift), one));
            q = _mm512_ternarylogic_epi32(_mm512_srli_epi32(q, f->shift), _mm512_srli_epi32(v, 24), sgn, 0xF8);
            _mm_store_si128((__m128i *)(e[r] + 16 * h), _mm512_cvtepi32_epi8(q));
        }
    col_tile_finish(j, x, l, i, c0, slow, sb, in_dtype, f, e);
}

/* Row-wise blocks of 64 columns of the band's rows (row+column), by the row code's block functions. */
TARGET_AVX512 INLINE void row_tile_avx512(const bjob_t *j, const char *x, int64_t l, int64_t i, int64_t c0,
                                          int in_dtype, const fmt_t *f) {
    int64_t esize = in_dtype == IN_F32 ? 4 : 2;
    for (int r = 0; r < BLOCK; r++) {
        int64_t rr = l * j->m + i * BLOCK + r;
        for (int c = 0; c < CW; c += BLOCK) {
            const char *src = x + r * j->rstride + (c0 + c) * esize;
            uint8_t *out = j->rdata + rr * j->k + c0 + c;
            uint8_t sb = in_dtype == IN_BF16
                             ? block_bf16_avx512(_mm512_loadu_si512(src), out, f, j->mode)
                             : block_f32_avx512(load16_f32bits(src, in_dtype), load16_f32bits(src + 16 * esize, in_dtype), out, f, j->mode);
            put_row_scale(j, rr, (c0 + c) / BLOCK, sb);
        }
    }
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

/* Bands two at a time: a column's 64 bytes of both are one store (transpose_64x64). */
TARGET_AVX512 INLINE void unit_avx512(const bjob_t *j, int64_t u, int in_dtype, int elem) {
    const fmt_t *f = &FMT[elem];
    int64_t l, i0, bands, cb, ce = unit_range(j, u, &l, &i0, &bands, &cb);
    int nt = NT_STORES && j->m % 64 == 0 && (uintptr_t)j->cdata % 64 == 0;
    _Alignas(64) uint8_t e[2 * BLOCK][CW];
    for (int64_t i = i0; i < bands; i += 2) {
        int pair = i + 1 < bands;
        for (int64_t c0 = cb; c0 < ce; c0 += CW) {
            int w = ce - c0 < CW ? (int)(ce - c0) : CW;
            for (int64_t b = i; b <= i + pair; b++) {
                const char *x = band_x(j, l, b);
                if (j->op == OP_TILES) {
                    for (int c = 0; c < w; c += BLOCK) tile_avx512(j, x, l, b, c0 + c, in_dtype, f);
                    continue;
                }
                if (w < CW) col_tile_scalar(j, x, l, b, c0, w, in_dtype, f);
                else if (in_dtype == IN_BF16) col_tile_bf16_avx512(j, x, l, b, c0, f, e + (b - i) * BLOCK);
                else col_tile_f32_avx512(j, x, l, b, c0, in_dtype, f, e + (b - i) * BLOCK);
                if (j->op == OP_ROWCOL) {
                    if (w < CW) row_tile_scalar(j, x, l, b, c0, w, in_dtype, f);
                    else row_tile_avx512(j, x, l, b, c0, in_dtype, f);
                }
            }
            if (j->op == OP_TILES || w < CW) continue;
            if (pair) transpose_64x64(&e[0][0], col_out(j, l, i, c0), j->m, nt);
            else transpose_32x64(&e[0][0], col_out(j, l, i, c0), j->m);
        }
    }
    if (nt) _mm_sfence(); /* the streamed stores are ordered before the unit's end */
}

TARGET_AVX512 static void bands_avx512(const bjob_t *j, int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; u++) DISPATCH(unit_avx512, j, u)
}
#endif

/* In the order of mxq_cpu.c's ISAS. */
static void (*const BANDS[])(const bjob_t *, int64_t, int64_t) = {
#if MXQ_X86
    bands_avx512, bands_avx2,
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

/* x: batches x M x K elements of in_dtype (0 fp32, 1 bf16, 2 fp16), element (b, r, c) at
 * x + b * bstride + r * rstride + c (strides in elements). elem: 0 e4m3, 1 e5m2; mode: 0 rceil,
 * 1 floor, 2 compressed-tensors. M a multiple of 32 (and K for row+column and tiles). Each
 * returns 0, or a negative code for bad arguments (nothing written). */

/* Column-wise: data (batches, K, M) as mxq_quantize writes for x^T; scale linear
 * (batches, K, M/32) or the zero-filled padded swizzled layout of batches * K rows. */
int mxq_quantize_colwise(const void *x, int in_dtype, int64_t batches, int64_t m, int64_t k, int64_t bstride,
                         int64_t rstride, uint8_t *data, uint8_t *scale, int elem, int mode, int swizzled, int nthreads) {
    bjob_t job = {0};
    job.op = OP_COL, job.cdata = data, job.cscale = scale, job.swizzled = swizzled;
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
