/* FMA peak probe for benchmarks/bench_linear.py.
 *
 * Every thread runs NACC independent chains of vector FMAs (acc = acc * m + a) that stay in
 * registers, so the loop is bound by FMA throughput alone: the machine's arithmetic ceiling.
 * Usage: fma_probe ITERS DOUBLE(0|1) TRIALS   ->  prints "gflops threads vector_bits"
 * Built at run time: gcc -O3 -mavx512f -mfma -fopenmp (or -mavx2 -mfma where AVX-512 is absent).
 */
#include <immintrin.h>
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

#define NACC 16

#ifdef __AVX512F__
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

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s ITERS DOUBLE(0|1) TRIALS\n", argv[0]);
        return 2;
    }
    long iters = atol(argv[1]);
    int dbl = atoi(argv[2]);
    int trials = atoi(argv[3]);
    double best = 0.0, sink = 0.0;
    int threads = 1;
    for (int t = 0; t < trials; ++t) {
        double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        {
            sink += dbl ? run_double(iters) : run_float(iters);
#pragma omp master
            threads = omp_get_num_threads();
        }
        double dt = omp_get_wtime() - t0;
        double lanes = dbl ? VBITS / 64 : VBITS / 32;
        double gflops = (double)threads * (double)iters * NACC * lanes * 2.0 / dt / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("%.3f %d %d\n", best, threads, VBITS);
    fprintf(stderr, "checksum %g\n", sink);
    return 0;
}
