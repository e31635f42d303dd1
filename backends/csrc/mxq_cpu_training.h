/* What the training-call files share (mxq_cpu_training.c: the baseline variant, the threads and
 * the entry points; mxq_cpu_training_avx512.c and mxq_cpu_training_avx2.c: the vector kernels):
 * the job, where a column's or a row's bytes and scales go, the scalar tile code, and the work
 * units. */
#ifndef MXQ_CPU_TRAINING_H
#define MXQ_CPU_TRAINING_H
#include "mxq_cpu.h"

#define CW 64 /* columns per tile */

enum { OP_COL = 0, OP_ROWCOL = 1, OP_TILES = 2 };

typedef struct {
    const char *x;
    int64_t m, k, bstride, rstride; /* strides in bytes */
    uint8_t *rdata, *rscale, *cdata, *cscale;
    int in_dtype, elem, mode, swizzled, op;
    int col_order; /* column-wise: 1 walks each unit in column order (unit_col_*), 0 bands two at a time */
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

/* n scale bytes src of row `row`, columns col0.. of a scale matrix nb columns wide, linear or
 * swizzled (four columns of a row are contiguous there). */
INLINE void put_scales(uint8_t *scale, int swizzled, int64_t row, int64_t col0, int64_t nb, const uint8_t *src,
                       int64_t n) {
    if (!swizzled) {
        memcpy(scale + row * nb + col0, src, (size_t)n);
        return;
    }
    int64_t padded = (nb + 3) & ~(int64_t)3, q = 0;
    for (; q < n && (col0 + q) % 4; q++) scale[swz(row, col0 + q, padded)] = src[q];
    for (; q + 4 <= n; q += 4) memcpy(scale + swz(row, col0 + q, padded), src + q, 4);
    for (; q < n; q++) scale[swz(row, col0 + q, padded)] = src[q];
}

/* ---- the scalar code (the baseline variant; in the vector ones last tiles narrower than 64
 * columns, and blocks off their fast paths) ---- */

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

/* A work unit: UNIT_BANDS bands (of 32 rows) x STRIP columns of one batch. The AVX-512 and AVX2
 * code walk it band pair by band pair, each pair in tiles of 64 columns (mxq_cpu_training_avx512.c
 * says what was measured); 32x32 tiles and the scalar code band by band. */
#define STRIP 2048
#define UNIT_BANDS 8
/* Column of byte p of an encoded tile row: p itself (packed 0), or (packed 1, the AVX-512 variant's)
 * where the row was packed by one packus of two vectors of 16-bit lanes without the 64-bit permute (packed: 128-bit lane L holds
 * columns 8 L.. of the first vector, then 8 L.. of the second, i.e. 32 + 8 L..). POS_OF inverts it. */
#define COL_OF(p, packed) ((packed) == 1 ? (((p) & 8) << 2 | ((p) >> 4) << 3 | ((p) & 7)) : (packed) == 2 ? COL_OF2(p) : (p))
#define POS_OF(c, packed) ((packed) == 1 ? ((((c) & 31) >> 3) << 4 | ((c) >> 5) << 3 | ((c) & 7)) : (packed) == 2 ? POS_OF2(c) : (c))
/* packed 2, the AVX2 variant's: each 32-byte half of the row packed from two vectors of 16
 * 16-bit lanes (columns h.. and h + 16.. of the half) by one packus without the 64-bit permute,
 * so 128-bit lane L of the half holds columns 8 L.. of the first vector, then 16 + 8 L.. */
#define COL_OF2(p) (((p) & 32) | ((p) & 8) << 1 | ((p) >> 4 & 1) << 3 | ((p) & 7))
#define POS_OF2(c) (((c) & 32) | ((c) >> 3 & 1) << 4 | ((c) >> 4 & 1) << 3 | ((c) & 7))

/* After the vector pass: the columns in `slow` redone by the scalar block code (into e, whose
 * bytes are in POS_OF order), then the tile's 64 column scales into the unit's buffer
 * (cs[c * UNIT_BANDS]). */
INLINE void col_tile_finish(const bjob_t *j, const char *x, int64_t c0, uint64_t slow, uint8_t *sb,
                            int in_dtype, const fmt_t *f, uint8_t (*e)[CW], uint8_t *cs, int packed) {
    for (; slow; slow &= slow - 1) {
        int c = __builtin_ctzll(slow);
        uint32_t b[BLOCK];
        uint8_t col[BLOCK];
        for (int r = 0; r < BLOCK; r++) b[r] = load_bits(x + r * j->rstride, c0 + c, in_dtype);
        sb[c] = quantize_block(b, col, f, j->mode);
        for (int r = 0; r < BLOCK; r++) e[r][POS_OF(c, packed)] = col[r];
    }
    for (int c = 0; c < CW; c++) cs[c * UNIT_BANDS] = sb[c];
}

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

#define BAND_DISPATCH(impl, j, u)                                   \
    switch ((j)->in_dtype * 2 + (j)->elem) {                   \
    case 0: impl(j, u, IN_F32, E4M3); break;                   \
    case 1: impl(j, u, IN_F32, E5M2); break;                   \
    case 2: impl(j, u, IN_BF16, E4M3); break;                  \
    case 3: impl(j, u, IN_BF16, E5M2); break;                  \
    case 4: impl(j, u, IN_F16, E4M3); break;                   \
    default: impl(j, u, IN_F16, E5M2); break;                  \
    }

#if MXQ_X86
/* The column-wise unit in column order (unit_col_avx512 / unit_col_avx2: the unit's 64-column
 * tiles one after another, each down all its bands): the next tile column's input of every row
 * of the unit into L2, while this one is encoded. */
INLINE void col_unit_prefetch(const bjob_t *j, int64_t l, int64_t i0, int64_t bands, int64_t c0, int64_t esize) {
    for (int64_t r = i0 * BLOCK; r < bands * BLOCK; r++)
        for (int q = 0; q < CW * esize; q += 64) _mm_prefetch(band_x(j, l, 0) + r * j->rstride + c0 * esize + q, _MM_HINT_T2);
}

/* ...and its end: the last tile column narrower than CW by the scalar code, the unit's column
 * scales from csb, the streamed stores ordered before the unit's end. */
INLINE void col_unit_finish(const bjob_t *j, const fmt_t *f, int64_t l, int64_t i0, int64_t bands, int64_t cb,
                            int64_t ce, int in_dtype, uint8_t (*csb)[UNIT_BANDS], int nt) {
    int64_t full = cb + (ce - cb) / CW * CW;
    for (int64_t i = i0; full < ce && i < bands; i++) col_tile_scalar(j, band_x(j, l, i), l, i, full, (int)(ce - full), in_dtype, f);
    for (int64_t c = cb; c < full; c++) put_scales(j->cscale, j->swizzled, l * j->k + c, i0, j->m / BLOCK, csb[c - cb], bands - i0);
    if (nt) _mm_sfence();
}

void mxq_bands_avx512_(const bjob_t *j, int64_t u0, int64_t u1); /* mxq_cpu_training_avx512.c */
void mxq_bands_avx2_(const bjob_t *j, int64_t u0, int64_t u1);   /* mxq_cpu_training_avx2.c */
#endif

#endif
