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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#define M 4096
#define K 8192
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static uint16_t *x; static uint8_t *out;
/* A: row-wise: read rows sequentially, write bytes sequentially (NT) */
static __m256i sink[64];
static void patA(void){
  #pragma omp parallel
  { __m256i acc=_mm256_setzero_si256();
    #pragma omp for schedule(static)
    for(int r=0;r<M;r++){ const char*p=(const char*)(x+(size_t)r*K); uint8_t*o=out+(size_t)r*K;
      for(int c=0;c<K*2;c+=128){ __m256i a=_mm256_loadu_si256((const __m256i*)(p+c)),b=_mm256_loadu_si256((const __m256i*)(p+c+32)),
        d=_mm256_loadu_si256((const __m256i*)(p+c+64)),e=_mm256_loadu_si256((const __m256i*)(p+c+96));
        acc=_mm256_xor_si256(acc,_mm256_xor_si256(_mm256_xor_si256(a,b),_mm256_xor_si256(d,e)));
        _mm256_stream_si256((__m256i*)(o+c/2),_mm256_xor_si256(a,d)); _mm256_stream_si256((__m256i*)(o+c/2+32),_mm256_xor_si256(b,e)); } }
    sink[omp_get_thread_num()]=acc; }
  _mm_sfence();
}
/* B: units of UB rows x S cols: tile columns of 64 cols (128 B a row) down UB rows, prefetch next tile column;
   per band pair write 64 columns x 64 B lines at out + c*M + row */
static int UB = 256, S = 2048, PF = 1, RD = 1, WR = 1;
static void patB(void){
  int strips=K/S, groups=M/UB, units=strips*groups;
  #pragma omp parallel
  { __m256i acc=_mm256_setzero_si256();
    #pragma omp for schedule(static)
    for(int u=0;u<units;u++){ int cb=(u%strips)*S, r0=(u/strips)*UB;
      for(int c0=cb;c0<cb+S;c0+=64){
        if(PF && c0+64<cb+S) for(int r=r0;r<r0+UB;r++){ const char*p=(const char*)(x+(size_t)r*K+c0+64); _mm_prefetch(p,_MM_HINT_T2); _mm_prefetch(p+64,_MM_HINT_T2);}
        for(int i=r0;i<r0+UB;i+=64){
          if(RD) for(int r=i;r<i+64;r++){ const char*p=(const char*)(x+(size_t)r*K+c0);
            for(int h=0;h<4;h++) acc=_mm256_xor_si256(acc,_mm256_loadu_si256((const __m256i*)(p+32*h))); }
          if(WR) for(int c=c0;c<c0+64;c++){ uint8_t*o=out+(size_t)c*M+i; _mm256_stream_si256((__m256i*)o,acc); _mm256_stream_si256((__m256i*)(o+32),acc);} } } }
    sink[omp_get_thread_num()]=acc; }
  _mm_sfence();
}
/* C: band pairs (64 rows) x strip S: read the 64 rows x S cols row by row (2S-byte runs), then write S columns x 64 B */
static void patC(void){
  int strips=K/S, pairs=M/64, units=strips*pairs;
  #pragma omp parallel
  { __m256i acc=_mm256_setzero_si256();
    #pragma omp for schedule(static)
    for(int u=0;u<units;u++){ int cb=(u%strips)*S, i=(u/strips)*64;
      if(RD) for(int r=i;r<i+64;r++){ const char*p=(const char*)(x+(size_t)r*K+cb);
        for(int c=0;c<2*S;c+=32) acc=_mm256_xor_si256(acc,_mm256_loadu_si256((const __m256i*)(p+c))); }
      if(WR) for(int c=cb;c<cb+S;c++){ uint8_t*o=out+(size_t)c*M+i; _mm256_stream_si256((__m256i*)o,acc); _mm256_stream_si256((__m256i*)(o+32),acc);} }
    sink[omp_get_thread_num()]=acc; }
  _mm_sfence();
}
/* E: units of UB rows x S cols read row-major (2S-byte runs), then S columns x UB bytes written */
static void patE(void){
  int strips=K/S, groups=M/UB, units=strips*groups;
  #pragma omp parallel
  { __m256i acc=_mm256_setzero_si256();
    #pragma omp for schedule(static)
    for(int u=0;u<units;u++){ int cb=(u%strips)*S, i=(u/strips)*UB;
      if(RD) for(int r=i;r<i+UB;r++){ const char*p=(const char*)(x+(size_t)r*K+cb);
        for(int c=0;c<2*S;c+=32) acc=_mm256_xor_si256(acc,_mm256_loadu_si256((const __m256i*)(p+c))); }
      if(WR) for(int c=cb;c<cb+S;c++){ uint8_t*o=out+(size_t)c*M+i; for(int b=0;b<UB;b+=32) _mm256_stream_si256((__m256i*)(o+b),acc);} }
    sink[omp_get_thread_num()]=acc; }
  _mm_sfence();
}
/* F: B's walk (tile columns down the unit's band pairs) over UB x S units, with the thread's next unit
   prefetched row-major, spread over the current unit's steps */
static void patF(void){
  int strips=K/S, groups=M/UB, units=strips*groups;
  #pragma omp parallel
  { __m256i acc=_mm256_setzero_si256();
    int nt=omp_get_num_threads(), t=omp_get_thread_num(), per=units/nt, u0=t*per, u1=u0+per;
    int steps=(S/64)*(UB/64), lines=UB*S*2/64, perstep=(lines+steps-1)/steps;
    for(int u=u0;u<u1;u++){ int cb=(u%strips)*S, r0=(u/strips)*UB;
      int nu=u+1, ncb=(nu%strips)*S, nr0=(nu/strips)*UB, pl=0, lpr=S*2/64;
      for(int c0=cb;c0<cb+S;c0+=64)
        for(int i=r0;i<r0+UB;i+=64){
          if(PF && nu<u1) for(int q=0;q<perstep && pl<lines;q++,pl++)
             _mm_prefetch((const char*)(x+(size_t)(nr0+pl/lpr)*K+ncb)+(pl%lpr)*64,_MM_HINT_T1);
          if(RD) for(int r=i;r<i+64;r++){ const char*p=(const char*)(x+(size_t)r*K+c0);
            for(int h=0;h<4;h++) acc=_mm256_xor_si256(acc,_mm256_loadu_si256((const __m256i*)(p+32*h))); }
          if(WR) for(int c=c0;c<c0+64;c++){ uint8_t*o=out+(size_t)c*M+i; _mm256_stream_si256((__m256i*)o,acc); _mm256_stream_si256((__m256i*)(o+32),acc);} } }
    sink[t]=acc; }
  _mm_sfence();
}
/* H: per UB x S unit, a row-major touch (demand loads), then B's walk (tile columns down band pairs, reads again) and writes */
static void patH(void){
  int strips=K/S, groups=M/UB, units=strips*groups;
  #pragma omp parallel
  { __m256i acc=_mm256_setzero_si256();
    #pragma omp for schedule(static)
    for(int u=0;u<units;u++){ int cb=(u%strips)*S, r0=(u/strips)*UB;
      if(PF) for(int r=r0;r<r0+UB;r++){ const char*p=(const char*)(x+(size_t)r*K+cb);
        for(int c=0;c<2*S;c+=64) acc=_mm256_xor_si256(acc,_mm256_loadu_si256((const __m256i*)(p+c))); }
      for(int c0=cb;c0<cb+S;c0+=64)
        for(int i=r0;i<r0+UB;i+=64){
          for(int r=i;r<i+64;r++){ const char*p=(const char*)(x+(size_t)r*K+c0);
            for(int h=0;h<4;h++) acc=_mm256_xor_si256(acc,_mm256_loadu_si256((const __m256i*)(p+32*h))); }
          for(int c=c0;c<c0+64;c++){ uint8_t*o=out+(size_t)c*M+i; _mm256_stream_si256((__m256i*)o,acc); _mm256_stream_si256((__m256i*)(o+32),acc);} } }
    sink[omp_get_thread_num()]=acc; }
  _mm_sfence();
}
int main(int argc, char **argv) {
    (void)argc; (void)argv;
    x = aligned_alloc(64, (size_t)M * K * 2);
    out = aligned_alloc(64, (size_t)M * K);
    memset(x, 1, (size_t)M * K * 2);
    memset(out, 0, (size_t)M * K);
    /* name, pattern, UB, S, PF, RD, WR */
    struct { const char *name; void (*fn)(void); int ub, s, pf, rd, wr; } v[] = {
        {"A row-wise: sequential reads and writes", patA, 0, 0, 0, 1, 1},
        {"B shipped walk (256 x 2048 units)", patB, 256, 2048, 1, 1, 1},
        {"B reads only", patB, 256, 2048, 1, 1, 0},
        {"B writes only", patB, 256, 2048, 0, 0, 1},
        {"C band pairs across 2048 columns", patC, 0, 2048, 0, 1, 1},
        {"C reads only", patC, 0, 2048, 0, 1, 0},
        {"C writes only", patC, 0, 2048, 0, 0, 1},
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
            UB = v[k].ub; S = v[k].s; PF = v[k].pf; RD = v[k].rd; WR = v[k].wr;
            double t = now();
            v[k].fn();
            t = now() - t;
            if (t < best[k]) best[k] = t;
        }
    for (int k = 0; k < n; k++) printf("%-52s %6.2f ms  x%.2f\n", v[k].name, best[k] * 1e3, best[k] / best[0]);
    return 0;
}
