/* Memory access patterns of cpu-native's column-wise call, without its arithmetic: how long the
 * bytes alone take to move in each order on this CPU (x 4096 x 8192 bf16 read, 4096 x 8192 bytes
 * written transposed, as the call moves them). A: the row-wise call's order (sequential reads and
 * streamed writes); B: the shipped column-wise walk (256-row x 2048-column units, 64-column tile
 * columns down the unit's band pairs, the next tile column prefetched; each band pair's 64 output
 * rows x 64 bytes streamed); C: band pairs across the strip (rows read in 4 KB runs, each output row
 * written 64 bytes at a time); E: each unit read row-major first, then its columns written; F: B's
 * walk with the next unit prefetched row-major; H: B's walk after the unit is read row-major.
 * Loads are XOR-ed into a register (no arithmetic); best of 15 rounds.
 *
 *     gcc -O2 -mavx2 -fopenmp benchmarks/cpu_colwise_patterns.c -o /tmp/patterns && OMP_NUM_THREADS=2 /tmp/patterns
 *
 * Results: docs/performance.md, twenty-second session. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define M 4096
#define K 8192

static uint16_t *x; /* M x K bf16 bits */
static uint8_t *out; /* K x M bytes (the transposed output) */
static __m256i sink[64];
static int UB = 256, S = 2048, PF = 1, RD = 1, WR = 1; /* unit rows, unit columns, switches */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static const char *at(int r, int c) { return (const char *)(x + (size_t)r * K + c); }

/* Rows r0..r1, columns c0..c0+n of x read row by row, `step` bytes apart (32: every byte; 64: a load a line). */
static __m256i read_rows(__m256i acc, int r0, int r1, int c0, int n, int step) {
    for (int r = r0; r < r1; r++)
        for (int b = 0; b < 2 * n; b += step) acc = _mm256_xor_si256(acc, _mm256_loadu_si256((const __m256i *)(at(r, c0) + b)));
    return acc;
}

/* Output rows c0..c0+n (columns of x), `bytes` from byte `row` on, streamed. */
static void write_cols(__m256i v, int c0, int n, int row, int bytes) {
    for (int c = c0; c < c0 + n; c++)
        for (int b = 0; b < bytes; b += 32) _mm256_stream_si256((__m256i *)(out + (size_t)c * M + row + b), v);
}

/* One tile column (64 columns from c0) of a unit's rows r0..r0+UB, band pair by band pair: the shipped walk. */
static __m256i tile_column(__m256i acc, int r0, int c0) {
    for (int i = r0; i < r0 + UB; i += 64) {
        if (RD) acc = read_rows(acc, i, i + 64, c0, 64, 32);
        if (WR) write_cols(acc, c0, 64, i, 64);
    }
    return acc;
}

/* A: the row-wise order: rows read sequentially, bytes written sequentially. */
static void patA(void) {
#pragma omp parallel
    {
        __m256i acc = _mm256_setzero_si256();
#pragma omp for schedule(static)
        for (int r = 0; r < M; r++)
            for (int c = 0; c < K; c += 64) {
                __m256i a = _mm256_loadu_si256((const __m256i *)at(r, c)), b = _mm256_loadu_si256((const __m256i *)(at(r, c) + 32));
                __m256i d = _mm256_loadu_si256((const __m256i *)(at(r, c) + 64)), e = _mm256_loadu_si256((const __m256i *)(at(r, c) + 96));
                acc = _mm256_xor_si256(acc, _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(d, e)));
                _mm256_stream_si256((__m256i *)(out + (size_t)r * K + c), _mm256_xor_si256(a, d));
                _mm256_stream_si256((__m256i *)(out + (size_t)r * K + c + 32), _mm256_xor_si256(b, e));
            }
        sink[omp_get_thread_num()] = acc;
    }
    _mm_sfence();
}

/* Every UB x S unit through `unit`, the units split statically between the threads. */
static void run_units(__m256i (*unit)(__m256i acc, int r0, int cb)) {
    int strips = K / S, units = strips * (M / UB);
#pragma omp parallel
    {
        __m256i acc = _mm256_setzero_si256();
#pragma omp for schedule(static)
        for (int u = 0; u < units; u++) acc = unit(acc, u / strips * UB, u % strips * S);
        sink[omp_get_thread_num()] = acc;
    }
    _mm_sfence();
}

/* B: the shipped walk, the next tile column's lines prefetched (PF) down the unit. */
static __m256i unit_B(__m256i acc, int r0, int cb) {
    for (int c0 = cb; c0 < cb + S; c0 += 64) {
        if (PF && c0 + 64 < cb + S)
            for (int r = r0; r < r0 + UB; r++) _mm_prefetch(at(r, c0 + 64), _MM_HINT_T2), _mm_prefetch(at(r, c0 + 64) + 64, _MM_HINT_T2);
        acc = tile_column(acc, r0, c0);
    }
    return acc;
}
static void patB(void) { run_units(unit_B); }

/* C (band pairs across the strip: UB 64) and E (any UB): the unit read row-major, then its columns written. */
static __m256i unit_E(__m256i acc, int r0, int cb) {
    if (RD) acc = read_rows(acc, r0, r0 + UB, cb, S, 32);
    if (WR) write_cols(acc, cb, S, r0, UB);
    return acc;
}
static void patE(void) { run_units(unit_E); }

/* F: the shipped walk with the thread's next unit prefetched row-major, spread over the current unit's steps. */
static void patF(void) {
    int strips = K / S, units = strips * (M / UB);
#pragma omp parallel
    {
        __m256i acc = _mm256_setzero_si256();
        int t = omp_get_thread_num(), per = units / omp_get_num_threads(), u1 = (t + 1) * per;
        int lpr = S * 2 / 64, lines = UB * lpr, tiles = S / 64, perstep = (lines + tiles - 1) / tiles;
        for (int u = t * per; u < u1; u++) {
            int cb = u % strips * S, r0 = u / strips * UB, ncb = (u + 1) % strips * S, nr0 = (u + 1) / strips * UB, pl = 0;
            for (int c0 = cb; c0 < cb + S; c0 += 64) {
                for (int q = 0; PF && u + 1 < u1 && q < perstep && pl < lines; q++, pl++)
                    _mm_prefetch(at(nr0 + pl / lpr, ncb) + pl % lpr * 64, _MM_HINT_T1);
                acc = tile_column(acc, r0, c0);
            }
        }
        sink[t] = acc;
    }
    _mm_sfence();
}

/* H: the unit read row-major first (a load a line), then the shipped walk over it. */
static __m256i unit_H(__m256i acc, int r0, int cb) {
    acc = read_rows(acc, r0, r0 + UB, cb, S, 64);
    for (int c0 = cb; c0 < cb + S; c0 += 64) acc = tile_column(acc, r0, c0);
    return acc;
}
static void patH(void) { run_units(unit_H); }

int main(void) {
    x = aligned_alloc(64, (size_t)M * K * 2);
    out = aligned_alloc(64, (size_t)M * K);
    memset(x, 1, (size_t)M * K * 2);
    memset(out, 0, (size_t)M * K);
    struct { const char *name; void (*fn)(void); int ub, s, pf, rd, wr; } v[] = {
        {"A row-wise: sequential reads and writes", patA, 0, 0, 0, 1, 1},
        {"B shipped walk (256 x 2048 units)", patB, 256, 2048, 1, 1, 1},
        {"B reads only", patB, 256, 2048, 1, 1, 0},
        {"B writes only", patB, 256, 2048, 0, 0, 1},
        {"C band pairs across 2048 columns", patE, 64, 2048, 0, 1, 1},
        {"C reads only", patE, 64, 2048, 0, 1, 0},
        {"C writes only", patE, 64, 2048, 0, 0, 1},
        {"E unit read row-major, 128 x 2048", patE, 128, 2048, 0, 1, 1},
        {"E 256 x 256", patE, 256, 256, 0, 1, 1},
        {"F B + next unit prefetched row-major, 256 x 256", patF, 256, 256, 1, 1, 1},
        {"H B + unit touched row-major first, 256 x 256", patH, 256, 256, 1, 1, 1},
        {"H 64 x 2048", patH, 64, 2048, 1, 1, 1},
    };
    int n = sizeof v / sizeof v[0];
    double best[32];
    for (int k = 0; k < n; k++) best[k] = 1e9;
    for (int rep = 0; rep < 15; rep++)
        for (int k = 0; k < n; k++) {
            UB = v[k].ub, S = v[k].s, PF = v[k].pf, RD = v[k].rd, WR = v[k].wr;
            double t = now();
            v[k].fn();
            t = now() - t;
            if (t < best[k]) best[k] = t;
        }
    for (int k = 0; k < n; k++) printf("%-52s %6.2f ms  x%.2f\n", v[k].name, best[k] * 1e3, best[k] / best[0]);
    return 0;
}
