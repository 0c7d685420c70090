/* Arithmetic ceiling probe for benchmarks/harness.py.
 *
 * Every thread runs NACC independent chains of vector FMAs (acc = acc * m + a) that stay in
 * registers, so the loop is bound by FMA throughput alone: the machine's arithmetic ceiling.
 * Kind 2 runs vdpbf16ps chains instead (acc += pairs of bfloat16 products, 2 products per
 * float32 lane): the bfloat16 ceiling of CPUs with AVX512-BF16.
 * Usage: fma_probe ITERS KIND(0 float32 | 1 float64 | 2 bfloat16 vdpbf16ps | 3 bfloat16 AMX) TRIALS
 *        -> prints "gflops threads vector_bits flops_per_iteration accumulators"
 * Built at run time: gcc -O3 -mavx512f -mfma [-mavx512bf16] -fopenmp (or -mavx2 -mfma).
 *
 * Registers: NACC accumulators plus the two constants must fit the register file, or the
 * compiler spills accumulators to the stack and the probe measures loads and stores (an
 * AVX2 build with 16 chains reported 67 instead of 117 GFLOP/s per core). AVX-512 has 32
 * zmm: 16 chains + 2 constants. AVX2 has 16 ymm: 12 chains + 2 constants, still more than
 * the 2 ports x 4 cycles of latency = 8 chains an FMA unit pair needs in flight.
 */
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#else
#include <time.h>
static double omp_get_wtime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static int omp_get_num_threads(void) { return 1; }
#endif

#ifdef __AVX512F__
#define NACC 16
#define VBITS 512
typedef __m512 vf;
typedef __m512d vd;
#define SET1_PS _mm512_set1_ps
#define SET1_PD _mm512_set1_pd
#define FMA_PS _mm512_fmadd_ps
#define FMA_PD _mm512_fmadd_pd
#define ADD_PS _mm512_add_ps
#define ADD_PD _mm512_add_pd
#define STORE_PS _mm512_storeu_ps
#define STORE_PD _mm512_storeu_pd
#else
#define NACC 12
#define VBITS 256
typedef __m256 vf;
typedef __m256d vd;
#define SET1_PS _mm256_set1_ps
#define SET1_PD _mm256_set1_pd
#define FMA_PS _mm256_fmadd_ps
#define FMA_PD _mm256_fmadd_pd
#define ADD_PS _mm256_add_ps
#define ADD_PD _mm256_add_pd
#define STORE_PS _mm256_storeu_ps
#define STORE_PD _mm256_storeu_pd
#endif

static double run_float(long iters) {
    vf acc[NACC];
    for (int i = 0; i < NACC; ++i) acc[i] = SET1_PS(0.001f * (float)i);
    const vf m = SET1_PS(0.9999999f), a = SET1_PS(1e-7f);
    for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < NACC; ++i) acc[i] = FMA_PS(acc[i], m, a);
    }
    vf s = acc[0];
    for (int i = 1; i < NACC; ++i) s = ADD_PS(s, acc[i]);
    float out[VBITS / 32];
    STORE_PS(out, s);
    double r = 0;
    for (int i = 0; i < VBITS / 32; ++i) r += out[i];
    return r;
}

static double run_double(long iters) {
    vd acc[NACC];
    for (int i = 0; i < NACC; ++i) acc[i] = SET1_PD(0.001 * (double)i);
    const vd m = SET1_PD(0.9999999), a = SET1_PD(1e-7);
    for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < NACC; ++i) acc[i] = FMA_PD(acc[i], m, a);
    }
    vd s = acc[0];
    for (int i = 1; i < NACC; ++i) s = ADD_PD(s, acc[i]);
    double out[VBITS / 64];
    STORE_PD(out, s);
    double r = 0;
    for (int i = 0; i < VBITS / 64; ++i) r += out[i];
    return r;
}

#ifdef __AVX512BF16__
/* acc (16 float32) += a.even * b.even + a.odd * b.odd per lane: 32 products, 64 flops. */
static double run_bf16(long iters) {
    __m512 acc[NACC];
    for (int i = 0; i < NACC; ++i) acc[i] = _mm512_set1_ps(0.001f * (float)i);
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-4f), _mm512_set1_ps(1e-4f));
    for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < NACC; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    }
    __m512 s = acc[0];
    for (int i = 1; i < NACC; ++i) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}
#endif

#if defined(__AMX_BF16__) && defined(__linux__)
/* AMX: tdpbf16ps into 4 independent 16 x 16 float32 tiles from fixed A and B tiles (16 x 32
 * bfloat16 each): 16 * 16 * 32 products and as many adds per instruction. */
struct tile_config {
    unsigned char palette, start_row, reserved[14];
    unsigned short bytes_per_row[16];
    unsigned char rows[16];
};
static double run_amx(long iters) {
    struct tile_config cfg __attribute__((aligned(64))) = {0};
    cfg.palette = 1;
    for (int t = 0; t < 8; ++t) { cfg.bytes_per_row[t] = 64; cfg.rows[t] = 16; }
    _tile_loadconfig(&cfg);
    unsigned short ones[16 * 32] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; ++i) ones[i] = 0x3a83; /* bfloat16 1e-3 */
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, ones, 64); _tile_loadd(5, ones, 64); _tile_loadd(6, ones, 64); _tile_loadd(7, ones, 64);
    for (long it = 0; it < iters; ++it) {
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    float out[16 * 16] __attribute__((aligned(64)));
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0];
}
#endif

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s ITERS KIND(0|1|2|3) TRIALS\n", argv[0]);
        return 2;
    }
    long iters = atol(argv[1]);
    int kind = atoi(argv[2]);
    int trials = atoi(argv[3]);
#ifndef __AVX512BF16__
    if (kind == 2) {
        fprintf(stderr, "this build has no AVX512-BF16 (compile with -mavx512bf16)\n");
        return 3;
    }
#endif
#if defined(__AMX_BF16__) && defined(__linux__)
    /* the tile data state needs the kernel's permission (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA) */
    if (kind == 3 && syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
        fprintf(stderr, "Linux refused the AMX tile state\n");
        return 3;
    }
#else
    if (kind == 3) {
        fprintf(stderr, "this build has no AMX-BF16 (compile with -mamx-tile -mamx-bf16 on Linux)\n");
        return 3;
    }
#endif
    /* flops per iteration per thread: float32 / float64 FMAs count 2 per lane; vdpbf16ps 4 per
     * float32 lane (two products, two adds). */
    double flops = kind == 0   ? NACC * (VBITS / 32) * 2.0
                   : kind == 1 ? NACC * (VBITS / 64) * 2.0
                   : kind == 2 ? NACC * (VBITS / 32) * 4.0
                               : 4 * 16 * 16 * 32 * 2.0; /* AMX: 4 tdpbf16ps */
    double best = 0.0, sink = 0.0;
    int threads = 1;
    for (int t = 0; t < trials; ++t) {
        double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        {
#if defined(__AMX_BF16__) && defined(__linux__)
            if (kind == 3) sink += run_amx(iters);
            else
#endif
#ifdef __AVX512BF16__
            if (kind == 2) sink += run_bf16(iters);
            else
#endif
            sink += kind == 1 ? run_double(iters) : run_float(iters);
#pragma omp master
            threads = omp_get_num_threads();
        }
        double dt = omp_get_wtime() - t0;
        double gflops = (double)threads * (double)iters * flops / dt / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("%.3f %d %d %.0f %d\n", best, threads, VBITS, (double)threads * flops, NACC);
    fprintf(stderr, "checksum %g\n", sink);
    return 0;
}
