/* K-groups for the MoE weight gradient (mxfp8_quantize_grouped(..., axis=-2); docs/semantics.md,
 * "Grouped scales for MoE"): the scales of x (T, N) quantized column-wise (blocks of 32 along
 * the token dimension T) rearranged per token group, byte-exact with
 * mxquant/reference_training.quantize_grouped_colwise and torchao's K-groups rearrange.
 *
 * The quantization itself is the column-wise kernel (mxq_quantize_colwise, mxq_cpu_training.c,
 * or the row-wise one on x.mT where that is contiguous: backends/cpu_native.py picks), which
 * writes the data (N, T) and the linear scales (N, T/32); this file only places the scale bytes,
 * 1/32 of the data's, with put_scales of mxq_cpu_training.h:
 *   group g holds scale columns c_{g-1}..c_g (c = end / 32) of every row; its own 128x4 layout
 *   (round_up(N, 128) rows x round_up(c_g - c_{g-1}, 4) columns) starts at byte Q_g * round_up(N, 128),
 *   Q_g = the earlier groups' columns rounded up to 4 each; every other byte is zero. */
#include "mxq_cpu_training.h"

#include <stdlib.h>

typedef struct {
    const uint8_t *lin;      /* (n, nb) linear scales */
    uint8_t *scale;          /* the K-groups layout */
    int64_t nb, prow, ngroups;
    const int64_t *gcol;     /* per group: first scale column, width, byte offset of its layout */
} kjob_t;

static void kgroup_rows(const void *job, int64_t r0, int64_t r1) {
    const kjob_t *j = (const kjob_t *)job;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t g = 0; g < j->ngroups; g++) {
            const int64_t *c = j->gcol + 3 * g;
            if (c[1]) put_scales(j->scale + c[2], 1, r, 0, c[1], j->lin + r * j->nb + c[0], c[1]);
        }
}

/* lin: n x nb linear scale bytes (nb = T / 32); ends: ngroups int32 cumulative token ends, each a
 * multiple of 32, non-decreasing, the last = 32 * nb; scale: scale_len bytes (at least
 * round_up(n, 128) * (nb + 4 * ngroups)). Returns 0, or a negative code for bad arguments
 * (nothing written). */
int mxq_kgroups_rearrange(const uint8_t *lin, int64_t n, int64_t nb, const int32_t *ends, int64_t ngroups,
                          uint8_t *scale, int64_t scale_len, int nthreads) {
    if (n < 0 || nb < 0 || ngroups < 1) return -3;
    int64_t prow = (n + 127) & ~(int64_t)127, start = 0, padded = 0;
    int64_t *gcol = malloc((size_t)ngroups * 3 * sizeof(int64_t));
    if (!gcol) return -5;
    for (int64_t g = 0; g < ngroups; g++) {
        int64_t end = ends[g];
        if (end < start * BLOCK || end % BLOCK) {
            free(gcol);
            return -4;
        }
        end /= BLOCK;
        gcol[3 * g] = start, gcol[3 * g + 1] = end - start, gcol[3 * g + 2] = padded * prow;
        padded += (end - start + 3) & ~(int64_t)3;
        start = end;
    }
    if (start != nb || padded * prow > scale_len) {
        free(gcol);
        return -4;
    }
    memset(scale, 0, (size_t)scale_len); /* padding rows / columns and the tail */
    kjob_t job = {lin, scale, nb, prow, ngroups, gcol};
    if (n && nb) mxq_run_parallel_(kgroup_rows, &job, n, nb, mxq_plan_threads_(n, nb, nthreads));
    free(gcol);
    return 0;
}
