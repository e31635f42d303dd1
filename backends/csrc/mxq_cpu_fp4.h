/* What mxq_cpu_fp4.c (the scalar code, the entry points), mxq_cpu_fp4_avx512.c and _avx2.c share: the
 * job, the e2m1 / e4m3 / scale arithmetic as inline functions, and the dispatch over (op, dtype). */
#ifndef MXQ_CPU_FP4_H
#define MXQ_CPU_FP4_H
#include "mxq_cpu.h"

#define E2M1_ONE 0x3f800000u          /* 1.0: e2m1's smallest normal */
#define E2M1_MAXB 0x40c00000u         /* 6.0 */
#define E2M1_BIAS (0x1fffffu - (126u << 23)) /* rebias to e2m1 + half an ulp, before the RNE bit */
#define E2M1_MAGIC (149u << 23)       /* 2^22 */
#define NV_ZERO_SCALE 0x20u           /* e4m3 0.125: a group scale that rounds to zero */

enum { OP_MX_Q = 0, OP_NV_Q = 1, OP_MX_DQ = 2, OP_NV_DQ = 3, OP_AMAX = 4 };

typedef struct {
    const char *x;   /* quantize: rows of input; dequantize: rows of packed data */
    int64_t k, rstride; /* elements per row (unpacked); bytes from row to row of x */
    uint8_t *data;   /* quantize: packed output, k / 2 bytes a row */
    uint8_t *scale;  /* quantize: written; dequantize: read (linear or the 128x4 layout) */
    void *out;       /* dequantize: rows * k values of dtype */
    int dtype, mode, swizzled, op; /* dtype: input of quantize, output of dequantize */
    float g;         /* NVFP4 global scale */
    uint32_t *amax;  /* OP_AMAX: the largest finite |x| bits so far (atomic) */
    const float *factor; /* OP_NV_DQ: RN(e4m3 value / g) of each of the 256 scale bytes */
} fjob_t;

static const float E2M1_VALUE[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                     -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

INLINE uint32_t e2m1_index(float y) { /* |y|'s nibble 0..7 */
    uint32_t u = fbits(y) & 0x7fffffffu;
    u = u < E2M1_MAXB ? u : E2M1_MAXB;
    uint32_t normal = (u + E2M1_BIAS + ((u >> 22) & 1u)) >> 22;
    uint32_t sub = fbits(bitsf(u) + 4194304.0f) - E2M1_MAGIC;
    return u >= E2M1_ONE ? normal : sub;
}

/* The sign nibble is set where the compared bits (x's, or y's in compressed-tensors mode) are
 * above this: rceil / floor keep x's sign (-0.0 too); compressed-tensors keeps y's sign where y
 * rounded to x's dtype is not zero (|y| above half that dtype's smallest subnormal). */
INLINE uint32_t neg_threshold(int mode, int in_dtype) {
    if (mode != CT) return 0x7fffffffu;
    return in_dtype == IN_F32 ? 0x80000000u : (in_dtype == IN_BF16 ? 0x80008000u : 0xb3000000u);
}

INLINE int32_t fp4_scale_exp(uint32_t amax, int mode) { /* reference_fp4.mxfp4_scale_exponents */
    int32_t s = (int32_t)(amax >> 23) - 127 - 2;
    uint32_t m = amax & 0x7fffffu;
    if (mode == RCEIL) s += m > 0x400000u;
    else if (mode == CT) s += m >= 0x600000u;
    return s < -127 ? -127 : (s > 127 ? 127 : s);
}

INLINE float pow2_neg(int32_t s) { /* 2^-s for s in [-127, 127] (2^-127 is a subnormal) */
    return bitsf(s >= 127 ? 0x00400000u : (uint32_t)(127 - s) << 23);
}

INLINE float round_dtype(float v, int dtype) { /* RN to bf16 / fp16 and back (fp32: v) */
    if (dtype == IN_BF16) return bitsf((uint32_t)f32_to_bf16(fbits(v)) << 16);
    if (dtype == IN_F16) return bitsf(f16_to_f32(f32_to_f16(fbits(v))));
    return v;
}

INLINE uint32_t e4m3_rne(float p) { /* p in [0, 448], not NaN: its e4m3 byte, ties to even */
    uint32_t u = fbits(p);
    uint32_t normal = (u - (120u << 23) + 0x7ffffu + ((u >> 20) & 1u)) >> 20;
    uint32_t sub = fbits(p + 16384.0f) - (141u << 23);
    return u >= (121u << 23) ? normal : sub;
}

/* NVFP4 scale byte of a finite group with amax bits a; *q = RN(scale / g). */
INLINE uint32_t nv4_scale(uint32_t a, int in_dtype, float g, float *q) {
    float p = g * round_dtype(bitsf(a) / 6.0f, in_dtype);
    uint32_t b = e4m3_rne(p < 448.0f ? p : 448.0f);
    b = b ? b : NV_ZERO_SCALE;
    *q = bitsf(decode_e4m3(b)) / g;
    return b;
}

INLINE void put_scale(const fjob_t *j, int64_t r, int64_t c, int64_t nb, uint32_t b) {
    j->scale[j->swizzled ? swz(r, c, (nb + 3) & ~(int64_t)3) : r * nb + c] = (uint8_t)b;
}

INLINE uint32_t get_scale(const fjob_t *j, int64_t r, int64_t c, int64_t nb) {
    return j->scale[j->swizzled ? swz(r, c, (nb + 3) & ~(int64_t)3) : r * nb + c];
}

INLINE void pack_nibbles(const uint8_t *nib, uint8_t *out, int n) {
    for (int i = 0; i < n / 2; i++) out[i] = (uint8_t)(nib[2 * i] | nib[2 * i + 1] << 4);
}

INLINE void atomic_max(uint32_t *p, uint32_t v) {
    uint32_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > cur && !__atomic_compare_exchange_n(p, &cur, v, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
}

/* MXFP4 (block 32: 2^(b - 127), NaN for 0xFF) or NVFP4 (block 16: factor[b]) dequantize factor. */
INLINE float dq_factor(const fjob_t *j, uint32_t sb, int block) {
    return block == 16 ? j->factor[sb] : bitsf(sb == 0xffu ? 0x7fc00000u : (sb ? sb << 23 : 0x00400000u));
}

INLINE int dq_factor_special(float f) { return (fbits(f) & 0x7fffffffu) >= 0x7f800000u; } /* NaN or Inf */

/* n fp32 values to out_dtype at element o of out (RNE; a NaN as f32_to_bf16 / f32_to_f16 write it). */
INLINE void store_values(void *out, int64_t o, const float *v, int n, int dtype) {
    if (dtype == IN_F32) memcpy((float *)out + o, v, (size_t)n * 4);
    else if (dtype == IN_BF16) for (int i = 0; i < n; i++) ((uint16_t *)out)[o + i] = f32_to_bf16(fbits(v[i]));
    else for (int i = 0; i < n; i++) ((uint16_t *)out)[o + i] = f32_to_f16(fbits(v[i]));
}

/* A block whose factor is NaN (a NaN scale) or Inf (NVFP4 scale / g past fp32), element by element:
 * every NaN (all of a NaN-scale block; 0 * Inf) is written as the quiet 0x7fc00000, whatever the
 * signs, so the output holds the contract's one NaN of out_dtype: fp32 0x7FC00000, bf16 0xFFFF,
 * fp16 0x7E00 (docs/semantics.md, MXFP4 and NVFP4 dequantize). The hardware's NaN of x * NaN and
 * 0 * Inf depends on the operand order (0xFFC00000 for 0 * Inf on x86): not left to it. */
INLINE void dq_block_special(const uint8_t *d, float f, void *out, int64_t o, int block, int out_dtype) {
    float v[32];
    for (int i = 0; i < block; i++) {
        float p = E2M1_VALUE[(d[i / 2] >> (4 * (i & 1))) & 15] * f;
        v[i] = p != p ? bitsf(0x7fc00000u) : p;
    }
    store_values(out, o, v, block, out_dtype);
}

/* Every op with its dtype a constant: each pair gets its own loop. */
#define FP4_DISPATCH(PREFIX, j, r0, r1)                                                                          \
    switch ((j)->op * 3 + (j)->dtype) {                                                                      \
    case 0: PREFIX##mx4_rows(j, r0, r1, IN_F32); break;                                                      \
    case 1: PREFIX##mx4_rows(j, r0, r1, IN_BF16); break;                                                     \
    case 2: PREFIX##mx4_rows(j, r0, r1, IN_F16); break;                                                      \
    case 3: PREFIX##nv4_rows(j, r0, r1, IN_F32); break;                                                      \
    case 4: PREFIX##nv4_rows(j, r0, r1, IN_BF16); break;                                                     \
    case 5: PREFIX##nv4_rows(j, r0, r1, IN_F16); break;                                                      \
    case 6: PREFIX##dq_rows(j, r0, r1, 32, IN_F32); break;                                                   \
    case 7: PREFIX##dq_rows(j, r0, r1, 32, IN_BF16); break;                                                  \
    case 8: PREFIX##dq_rows(j, r0, r1, 32, IN_F16); break;                                                   \
    case 9: PREFIX##dq_rows(j, r0, r1, 16, IN_F32); break;                                                   \
    case 10: PREFIX##dq_rows(j, r0, r1, 16, IN_BF16); break;                                                 \
    case 11: PREFIX##dq_rows(j, r0, r1, 16, IN_F16); break;                                                  \
    case 12: PREFIX##amax_rows(j, r0, r1, IN_F32); break;                                                    \
    case 13: PREFIX##amax_rows(j, r0, r1, IN_BF16); break;                                                   \
    default: PREFIX##amax_rows(j, r0, r1, IN_F16); break;                                                    \
    }

#if MXQ_X86
void mxq_fp4_rows_avx512_(const fjob_t *j, int64_t r0, int64_t r1); /* mxq_cpu_fp4_avx512.c */
void mxq_fp4_rows_avx2_(const fjob_t *j, int64_t r0, int64_t r1);   /* mxq_cpu_fp4_avx2.c */
#endif
#endif
