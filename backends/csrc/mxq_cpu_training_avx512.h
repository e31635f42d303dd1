/* Register-level helpers of the AVX-512 training kernels (mxq_cpu_training_avx512.c): byte tile
 * transposes, the row-max tree and a horizontal min, all on 512-bit vectors. */
#ifndef MXQ_CPU_TRAINING_AVX512_H
#define MXQ_CPU_TRAINING_AVX512_H
#include "mxq_cpu_training.h"

#if MXQ_X86
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
TARGET_AVX512 INLINE void transpose_32x64(const uint8_t *e, uint8_t *dst, int64_t ds, int packed) {
    __m512i t[2][16];
    for (int h = 0; h < 2; h++) transpose_16x16_lanes(e + 16 * h * CW, t[h]); /* t[h][q] lane L: column 16 L + q */
    const __m512i lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    for (int q = 0; q < 16; q++) {
        __m512i v0 = _mm512_permutex2var_epi64(t[0][q], lo, t[1][q]); /* columns q, 16 + q */
        __m512i v1 = _mm512_permutex2var_epi64(t[0][q], hi, t[1][q]); /* columns 32 + q, 48 + q */
        _mm256_storeu_si256((__m256i *)(dst + COL_OF(q, packed) * ds), _mm512_castsi512_si256(v0));
        _mm256_storeu_si256((__m256i *)(dst + COL_OF(16 + q, packed) * ds), _mm512_extracti64x4_epi64(v0, 1));
        _mm256_storeu_si256((__m256i *)(dst + COL_OF(32 + q, packed) * ds), _mm512_castsi512_si256(v1));
        _mm256_storeu_si256((__m256i *)(dst + COL_OF(48 + q, packed) * ds), _mm512_extracti64x4_epi64(v1, 1));
    }
}

/* e[64][64] bytes (two bands' tiles) -> column c's 64 bytes at dst + c * ds: the 16x16 transposes
 * of transpose_32x64 for four groups of 16 rows, then each column's four 16-byte pieces joined.
 * One 64-byte store per column: a whole cache line where dst and ds are multiples of 64, then
 * stored past the caches (the (K, M) output is not read back here). */
TARGET_AVX512 INLINE void transpose_64x64(const uint8_t *e, uint8_t *dst, int64_t ds, int nt, int packed) {
    __m512i t[4][16];
    for (int h = 0; h < 4; h++) transpose_16x16_lanes(e + 16 * h * CW, t[h]);
    const __m512i lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    for (int q = 0; q < 16; q++) {
        __m512i v01 = _mm512_permutex2var_epi64(t[0][q], lo, t[1][q]), v23 = _mm512_permutex2var_epi64(t[2][q], lo, t[3][q]);
        __m512i w01 = _mm512_permutex2var_epi64(t[0][q], hi, t[1][q]), w23 = _mm512_permutex2var_epi64(t[2][q], hi, t[3][q]);
        __m512i col[4] = {_mm512_shuffle_i64x2(v01, v23, 0x44), _mm512_shuffle_i64x2(v01, v23, 0xEE),
                          _mm512_shuffle_i64x2(w01, w23, 0x44), _mm512_shuffle_i64x2(w01, w23, 0xEE)};
        for (int L = 0; L < 4; L++) {
            uint8_t *d = dst + COL_OF(16 * L + q, packed) * ds;
            if (nt) _mm512_stream_si512((__m512i *)d, col[L]);
            else _mm512_storeu_si512(d, col[L]);
        }
    }
}

/* The max of each row's 32 16-bit lanes, rows pushed one by one (r = 0..31, a constant after
 * unrolling): one vector whose lane LANE_OF(r) is row r's max. The tree of five rounds that each
 * join pairs (256-bit halves, 128-bit lanes, 64-bit halves by unpack, then 32- and 16-bit halves
 * by masked shuffle and masked blend of shifts), evaluated depth first: n[d] holds the pending
 * node of round d, so at most five vectors are live and the rows are never stored. */
#define LANE_OF(p) ((((p) & 3) << 3) | ((p) & 4) | (((p) >> 2) & 2) | (((p) >> 4) & 1))
TARGET_AVX512 INLINE void max_tree_push(__m512i *n, __m512i a, int r) {
    if (!(r & 1)) { n[0] = a; return; }
    a = _mm512_max_epu16(_mm512_shuffle_i64x2(n[0], a, 0x44), _mm512_shuffle_i64x2(n[0], a, 0xEE));
    if (!(r & 2)) { n[1] = a; return; }
    a = _mm512_max_epu16(_mm512_shuffle_i64x2(n[1], a, 0x88), _mm512_shuffle_i64x2(n[1], a, 0xDD));
    if (!(r & 4)) { n[2] = a; return; }
    a = _mm512_max_epu16(_mm512_unpacklo_epi64(n[2], a), _mm512_unpackhi_epi64(n[2], a));
    if (!(r & 8)) { n[3] = a; return; }
    a = _mm512_max_epu16(_mm512_mask_shuffle_epi32(n[3], 0xAAAA, a, (_MM_PERM_ENUM)0xA0),
                         _mm512_mask_shuffle_epi32(a, 0x5555, n[3], (_MM_PERM_ENUM)0xF5));
    if (!(r & 16)) { n[4] = a; return; }
    n[4] = _mm512_max_epu16(_mm512_mask_blend_epi16(0xAAAAAAAAu, n[4], _mm512_slli_epi32(a, 16)),
                            _mm512_mask_blend_epi16(0xAAAAAAAAu, _mm512_srli_epi32(n[4], 16), a));
}

/* The min of the 32 16-bit lanes of a, in every lane. */
TARGET_AVX512 INLINE __m512i hmin_bcast_epu16(__m512i a) {
    __m256i m = _mm256_min_epu16(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
    __m128i m2 = _mm_minpos_epu16(_mm_min_epu16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1)));
    return _mm512_broadcastw_epi16(m2);
}
#endif
#endif
