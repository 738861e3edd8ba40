// lib/gemm.h — the tuned matrix product (gemm) behind matmul_forward/backward, and the naive
// triple loop it is tested against (gemm_reference).
// Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of the model.

#ifndef SIRT_LIB_GEMM_H
#define SIRT_LIB_GEMM_H

// The reference: the same product as gemm, as a plain triple loop, in double precision. It is what
// gemm computes, written so that it can be read at a glance; tests/test_core.c checks gemm
// against it on fresh random matrices of awkward shapes. A port can start from this.
static inline void gemm_reference(int M, int N, int K, const float *A, long a_rs, long a_cs,
                                  const float *B, long b_rs, long b_cs, float *C, long ldc,
                                  int accumulate) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double sum = accumulate ? C[i * ldc + j] : 0.0;
            for (int k = 0; k < K; k++) sum += (double)A[i * a_rs + k * a_cs] * B[k * b_rs + j * b_cs];
            C[i * ldc + j] = (float)sum;
        }
}

// ---------------------------------------------------------------------------------------------
// The tuned matrix product: almost all of the arithmetic of training is here.
// C (M,N) = A (M,K) · B (K,N), or C += A·B when accumulate != 0: GotoBLAS/BLIS style.
//
// Element A(i,k) is A[i*a_rs + k*a_cs]; B(k,j) is B[k*b_rs + j*b_cs]; C(i,j) is C[i*ldc + j].
// The strides let one routine serve all three products of a linear layer:
//   forward  out(BT,OC)  = inp(BT,C) · W(OC,C)^T   -> A=inp (rs=C,cs=1), B=W (rs=1, cs=C)
//   backward dinp(BT,C) += dout(BT,OC) · W(OC,C)   -> A=dout (rs=OC,cs=1), B=W (rs=C, cs=1)
//   backward dW(OC,C)   += dout^T · inp            -> A=dout (rs=1,cs=OC), B=inp (rs=C, cs=1)
//
// Blocking scheme, loops from outside in:
//   jc: columns of C in blocks of NC.
//    pc: K in blocks of KC. All threads pack the KC x NC block of B into Bp (shared, stays in
//        each core's L2), then the (M x NC) block of C is cut into MR x NR tiles, row of tiles
//        after row of tiles, and the tiles are split evenly among the threads.
//     tiles: for a new row of tiles the thread packs the MR x KC panel of A into its own Ap
//        (stays in L1); each tile is one call of the micro-kernel, which holds the MR x NR tile
//        of C in registers while it runs over the KC products.
// Packed layouts (zero-padded up to whole panels, so the kernel never sees a ragged edge):
//   Bp: ceil(NC/NR) panels of KC x NR; row k of panel p = B(pc+k, jc+p*NR .. jc+p*NR+NR-1)
//   Ap: one panel of KC x MR;          row k            = A(ir .. ir+MR-1, pc+k)
// Determinism: each C(i,j) gets C = C + (sum over one K block, in k order) for the K blocks in
// order, computed by the same kernel whichever thread owns the tile, so the result is
// bit-identical for any number of threads (it may differ from a naive loop in the last bits).
// The micro-kernel's a*b+c must compile to fused multiply-adds: the Makefile passes
// -ffp-contract=fast (ISO C mode otherwise forbids the fusion and halves the speed).
// vfloat: one SIMD register of VL floats, via the GCC/Clang vector extension. aligned(4) lets
// a vfloat pointer point anywhere (rows of C are not aligned). The micro-tile is MR rows by
// NV vectors; MR*NV accumulators + NV vectors of B + 1 broadcast must fit in the registers.
#if defined(__AVX512F__)   // 32 registers of 16 floats
enum { VL = 16, MR = 8 };
#elif defined(__AVX__)     // 16 registers of 8 floats
enum { VL = 8, MR = 6 };
#else                      // SSE, NEON, ...: registers of 4 floats
enum { VL = 4, MR = 6 };
#endif
typedef float vfloat __attribute__((vector_size(VL * sizeof(float)), aligned(4)));

// Block sizes for Zen 4 (32 KiB L1d, 2 MiB L2 per core), tuned by measurement: the speed is
// flat (within ~2%) for KC = 256..768 and NC = 512..1536 as long as Bp fits in L2.
enum {
    NV = 2,                // vectors per micro-tile row
    NR = NV * VL,          // columns of a micro-tile (32 with AVX-512)
    KC = 384,              // K block: Ap = MR x KC = 12 KiB (L1), a Bp panel = 48 KiB (L2)
    NC = 1024,             // N block: Bp = KC x NC floats = 1.5 MiB (L2)
    SERIAL_FLOPS = 1 << 18 // products with fewer flops (2MNK) run on one thread
};

// Micro-kernel: the MR x NR tile c (row stride ldc) gets  c = acc  or  c = c + acc  (add != 0),
// where acc = sum over k < kc of  a[k*MR + i] * b[k*NR + j]  (a: the Ap panel, b: a Bp panel).
static void micro_kernel(int kc, const float *restrict a, const float *restrict b,
                         float *restrict c, long ldc, int add)
{
    vfloat acc[MR][NV];
    #pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 16
        for (int v = 0; v < NV; v++) acc[i][v] = (vfloat){0};

    for (int k = 0; k < kc; k++, a += MR, b += NR) {
        vfloat bk[NV];                                  // row k of the B panel
        #pragma GCC unroll 16
        for (int v = 0; v < NV; v++) bk[v] = *(const vfloat *)(b + VL * v);
        #pragma GCC unroll 16
        for (int i = 0; i < MR; i++)                  // rank-1 update: acc += a(:,k) b(k,:)
            #pragma GCC unroll 16
            for (int v = 0; v < NV; v++) acc[i][v] += a[i] * bk[v];
    }

    #pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 16
        for (int v = 0; v < NV; v++) {
            vfloat *cv = (vfloat *)(c + i * ldc + VL * v);
            *cv = add ? *cv + acc[i][v] : acc[i][v];
        }
}

static int min_int(int a, int b) { return a < b ? a : b; }

// Pack one panel of W columns: dst[k*W + x] = src[x*s_w + k*s_k] for x < n, k < kc, and 0 for
// n <= x < W. (For A, x is a row i and W = MR; for B, x is a column j and W = NR.)
static void pack_panel(float *restrict dst, const float *restrict src, long s_w, long s_k,
                       int n, int kc, int W)
{
    if (s_k == 1) {  // source rows contiguous along k: take 16 k (a cache line) of each at a time
        for (int k0 = 0; k0 < kc; k0 += 16) {
            const int k1 = min_int(k0 + 16, kc);
            for (int x = 0; x < n; x++)
                for (int k = k0; k < k1; k++) dst[k * W + x] = src[x * s_w + k];
            for (int x = n; x < W; x++)
                for (int k = k0; k < k1; k++) dst[k * W + x] = 0;
        }
    } else {         // write dst in order (the reads are contiguous too when s_w == 1)
        for (int k = 0; k < kc; k++) {
            for (int x = 0; x < n; x++) dst[k * W + x] = src[x * s_w + k * s_k];
            for (int x = n; x < W; x++) dst[k * W + x] = 0;
        }
    }
}

// Pack the kc x nc block of B at src into Bp (layout above). Called by every thread of the
// team; the "omp for" splits the work, and the caller waits at a barrier afterwards.
static void pack_B(float *restrict Bp, const float *restrict src, long b_rs, long b_cs,
                   int nc, int kc)
{
    const int n_panels = (nc + NR - 1) / NR;
    if (b_cs == 1) {  // rows of B contiguous: read each row from end to end, one row per step
        #pragma omp for schedule(static) nowait
        for (int k = 0; k < kc; k++)
            for (int p = 0; p < n_panels; p++)
                pack_panel(Bp + (long)p * kc * NR + k * NR, src + k * b_rs + p * NR, 1, b_rs,
                           min_int(NR, nc - p * NR), 1, NR);
    } else {          // otherwise panel by panel
        #pragma omp for schedule(static) nowait
        for (int p = 0; p < n_panels; p++)
            pack_panel(Bp + (long)p * kc * NR, src + p * NR * b_cs, b_cs, b_rs,
                       min_int(NR, nc - p * NR), kc, NR);
    }
}

static void gemm(int M, int N, int K, const float *A, long a_rs, long a_cs,
          const float *B, long b_rs, long b_cs, float *C, long ldc, int accumulate)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {  // empty sum
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + i * ldc, 0, sizeof(float) * N);
        return;
    }
    const int kc_max = min_int(K, KC);
    const int nc_max = (min_int(N, NC) + NR - 1) / NR * NR;
    const size_t bp_bytes = (sizeof(float) * kc_max * nc_max + 63) / 64 * 64;
    float *Bp = aligned_alloc(64, bp_bytes);  // KC x NC block of B, shared by the threads
    if (!Bp) abort();
    const int parallel = 2.0 * M * N * K >= SERIAL_FLOPS;
    (void)parallel;  // unused without OpenMP

    #pragma omp parallel if (parallel)
    {
        _Alignas(64) float Ap[MR * KC];  // this thread's A panel (on its own stack)
        for (int jc = 0; jc < N; jc += NC) {
            const int nc = min_int(NC, N - jc);
            for (int pc = 0; pc < K; pc += KC) {
                const int kc = min_int(KC, K - pc);
                const int add = accumulate || pc > 0;  // the first K block overwrites C
                pack_B(Bp, B + pc * b_rs + jc * b_cs, b_rs, b_cs, nc, kc);
                #pragma omp barrier

                // Tile t covers rows ir.. and columns jc+jr.. of C; rows of tiles in order.
                const int n_ir = (M + MR - 1) / MR, n_jr = (nc + NR - 1) / NR;
                int packed_ir = -1;  // which rows of A are in Ap now
                #pragma omp for schedule(static)
                for (int t = 0; t < n_ir * n_jr; t++) {
                    const int ir = t / n_jr * MR, jr = t % n_jr * NR;
                    const int mr = min_int(MR, M - ir), nr = min_int(NR, nc - jr);
                    if (ir != packed_ir) {
                        pack_panel(Ap, A + ir * a_rs + pc * a_cs, a_rs, a_cs, mr, kc, MR);
                        packed_ir = ir;
                    }
                    float *c = C + ir * ldc + jc + jr;
                    if (mr == MR && nr == NR) {
                        micro_kernel(kc, Ap, Bp + (long)jr * kc, c, ldc, add);
                    } else {  // edge tile: compute a full tile aside, then copy the valid part
                        float tile[MR * NR];
                        micro_kernel(kc, Ap, Bp + (long)jr * kc, tile, NR, 0);
                        for (int i = 0; i < mr; i++)
                            for (int j = 0; j < nr; j++)
                                c[i * ldc + j] = add ? c[i * ldc + j] + tile[i * NR + j]
                                                     : tile[i * NR + j];
                    }
                }  // (implicit barrier: Bp is not overwritten while someone still reads it)
            }
        }
    }
    free(Bp);
}

#endif // SIRT_LIB_GEMM_H
