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

// B_packed: NULL, or all of B packed beforehand (gemm_pack_b's layout), which then replaces B
// (and its strides): each panel's rows pc..pc+kc-1 are the Bp panel of the block, read in place.
static void gemm_packed(int M, int N, int K, const float *A, long a_rs, long a_cs,
                        const float *B, long b_rs, long b_cs, const float *B_packed, float *C,
                        long ldc, int accumulate)
{
    const int kc_max = min_int(K, KC);
    const int nc_max = (min_int(N, NC) + NR - 1) / NR * NR;
    const size_t bp_bytes = (sizeof(float) * kc_max * nc_max + 63) / 64 * 64;
    float *Bp = B_packed ? NULL : aligned_alloc(64, bp_bytes);  // KC x NC block of B, shared
    if (!B_packed && !Bp) abort();
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
                if (!B_packed) {
                    pack_B(Bp, B + pc * b_rs + jc * b_cs, b_rs, b_cs, nc, kc);
                    #pragma omp barrier
                }

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
                    const float *panel = B_packed ? B_packed + ((long)(jc + jr) / NR * K + pc) * NR
                                                  : Bp + (long)jr * kc;
                    if (mr == MR && nr == NR) {
                        micro_kernel(kc, Ap, panel, c, ldc, add);
                    } else {  // edge tile: compute a full tile aside, then copy the valid part
                        float tile[MR * NR];
                        micro_kernel(kc, Ap, panel, tile, NR, 0);
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

// ---------------------------------------------------------------------------------------------
// Products with a few rows of A: decoding one sequence (or a few) multiplies one row of
// activations by every weight matrix, and the packed product above then spends its time packing
// B (a copy of the weights per product) and running 8-row tiles on one row. gemm_few_rows reads
// B in place, VL columns of C at a time, and adds up every C(i,j) in exactly the packed product's
// order (C = C + (sum over one K block of KC, in k order, by fused multiply-adds), the K blocks in
// order), so its results are bit for bit the packed product's: a sequence's numbers do not
// depend on how many others share its batch. tests/test_core.c checks the bits.
//
// Each step takes a VL x VL block of B: VL values of k, VL columns. When B's rows run along k
// (the forward layout, B = W^T with W's rows contiguous) the block is read as VL rows of W and
// transposed in registers (with AVX-512 and GCC's __builtin_shuffle; otherwise it is gathered
// element by element).
enum {
    FEW_ROWS = 4,         // gemm takes this path for M <= FEW_ROWS
    PREFETCH_AHEAD = 128, // floats: how far ahead along a row of W to prefetch (measured best)
    PANEL_AHEAD = 256     // floats: how far ahead in a packed panel (8 of its rows with AVX-512; measured best)
};

#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
typedef int vint __attribute__((vector_size(VL * sizeof(int))));
// Transpose the 16 x 16 block r[0..15] in place: at stage st (s = 8, 4, 2, 1), rows i and i+s
// (bit s of i clear) swap their off-diagonal s x s sub-blocks; new row i takes lanes
// select_lo[st] of the pair (row i, row i+s) (lane l of row i+s is number 16 + l), new row i+s
// lanes select_hi[st]. Constant selections let the compiler use its fixed shuffles.
static inline void transpose_block(vfloat r[VL]) {
    static const vint select_lo[4] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
        {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
        {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
        {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}};
    static const vint select_hi[4] = {
        {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
        {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
        {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
        {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}};
    #pragma GCC unroll 4
    for (int st = 0; st < 4; st++) {
        const int s = 8 >> st;
        #pragma GCC unroll 16
        for (int i = 0; i < VL; i++)
            if (!(i & s)) {
                vfloat a = r[i], b = r[i + s];
                r[i] = __builtin_shuffle(a, b, select_lo[st]);
                r[i + s] = __builtin_shuffle(a, b, select_hi[st]);
            }
    }
}
#define SIRT_HAVE_TRANSPOSE 1
#endif

// Block k0.. k0+kn-1 (kn <= VL) of B at columns j0..j0+nn-1 (nn <= VL) as bk[k - k0][j - j0];
// the rest of the block is zero.
static inline void load_b_block(vfloat bk[VL], const float *B, long b_rs, long b_cs, int k0,
                                int kn, int j0, int nn, int K) {
    (void)K; // read only by the transposing path below
    if (b_cs == 1 && nn == VL) {
        for (int k = 0; k < kn; k++) bk[k] = *(const vfloat *)(B + (long)(k0 + k) * b_rs + j0);
        for (int k = kn; k < VL; k++) bk[k] = (vfloat){0};
        return;
    }
#ifdef SIRT_HAVE_TRANSPOSE
    if (b_rs == 1 && kn == VL) {  // rows of W: r[j] = W(j0+j, k0 .. k0+VL-1), then transpose
        for (int j = 0; j < nn; j++) {
            const float *row = B + (long)(j0 + j) * b_cs + k0;
            if (k0 + PREFETCH_AHEAD < K) __builtin_prefetch(row + PREFETCH_AHEAD); // within the row
            bk[j] = *(const vfloat *)row;
        }
        for (int j = nn; j < VL; j++) bk[j] = (vfloat){0};
        transpose_block(bk);
        return;
    }
#endif
    for (int k = 0; k < VL; k++)
        for (int j = 0; j < VL; j++)
            bk[k][j] = k < kn && j < nn ? B[(long)(k0 + k) * b_rs + (long)(j0 + j) * b_cs] : 0.0f;
}

// One strip of VL columns of C (j0.., nn of them valid) for M rows. Inlined with M a constant
// (gemm_few_rows switches on it) so that the accumulators and the block of B stay in registers.
static inline __attribute__((always_inline)) void few_rows_strip(
    const int M, int N, int K, const float *A, long a_rs, long a_cs, const float *B, long b_rs,
    long b_cs, float *C, long ldc, int accumulate, int j0)
{
    const int nn = min_int(VL, N - j0);
    for (int pc = 0; pc < K; pc += KC) {  // the packed product's K blocks
        const int kc = min_int(KC, K - pc);
        const int add = accumulate || pc > 0;
        vfloat acc[FEW_ROWS];
        for (int i = 0; i < M; i++) acc[i] = (vfloat){0};
        for (int k0 = pc; k0 < pc + kc; k0 += VL) {
            const int kn = min_int(VL, pc + kc - k0);
            vfloat bk[VL];
            load_b_block(bk, B, b_rs, b_cs, k0, kn, j0, nn, K);
            if (kn == VL) {
                #pragma GCC unroll 16
                for (int k = 0; k < VL; k++)
                    #pragma GCC unroll 4
                    for (int i = 0; i < M; i++) acc[i] += A[i * a_rs + (long)(k0 + k) * a_cs] * bk[k];
            } else {
                for (int k = 0; k < kn; k++)
                    for (int i = 0; i < M; i++) acc[i] += A[i * a_rs + (long)(k0 + k) * a_cs] * bk[k];
            }
        }
        for (int i = 0; i < M; i++) {
            float *c = C + i * ldc + j0;
            if (nn == VL) {
                vfloat *cv = (vfloat *)c;
                *cv = add ? *cv + acc[i] : acc[i];
            } else {
                for (int j = 0; j < nn; j++) c[j] = add ? c[j] + acc[i][j] : acc[i][j];
            }
        }
    }
}

static void gemm_few_rows(int M, int N, int K, const float *A, long a_rs, long a_cs,
                          const float *B, long b_rs, long b_cs, float *C, long ldc, int accumulate)
{
    const int n_strips = (N + VL - 1) / VL;
    const int parallel = 2.0 * M * N * K >= SERIAL_FLOPS;
    (void)parallel;  // unused without OpenMP
    #pragma omp parallel for schedule(static) if (parallel)
    for (int strip = 0; strip < n_strips; strip++) {
        #define FEW_ROWS_STRIP(m) few_rows_strip(m, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, \
                                                 accumulate, strip * VL)
        switch (M) {
        case 1: FEW_ROWS_STRIP(1); break;
        case 2: FEW_ROWS_STRIP(2); break;
        case 3: FEW_ROWS_STRIP(3); break;
        default: FEW_ROWS_STRIP(4); break;
        }
        #undef FEW_ROWS_STRIP
    }
}

// ---------------------------------------------------------------------------------------------
// B packed once, for products that read the same B many times (decoding reads every weight
// matrix once per token). The layout is the packed product's, over all of K at once:
// ceil(N/NR) panels of K x NR floats, row k of panel p = B(k, p*NR .. p*NR+NR-1), zero beyond
// column N. A KC block of B is then rows pc..pc+kc-1 of each panel, exactly the Bp that pack_B
// would make, so the packed product reads it in place and skips its packing. The few-rows path
// streams each panel from end to end: it reads memory in order (in place, it reads VL rows of
// W side by side and transposes), and its sums are the packed product's, in the same order.

// B (K,N) with strides b_rs, b_cs -> B_packed (ceil(N/NR)·NR·K floats)
static void gemm_pack_b(float *B_packed, const float *B, long b_rs, long b_cs, int K, int N) {
    const int n_panels = (N + NR - 1) / NR;
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < n_panels; p++)
        pack_panel(B_packed + (size_t)p * K * NR, B + (long)p * NR * b_cs, b_cs, b_rs,
                   min_int(NR, N - p * NR), K, NR);
}

// One panel of C's columns (NR of them, nn valid) for M rows from a packed panel; inlined with M
// a constant. The same sums as few_rows_strip and the packed product, in the same order.
static inline __attribute__((always_inline)) void few_rows_panel(
    const int M, int K, const float *A, long a_rs, long a_cs, const float *panel, float *C,
    long ldc, int accumulate, int nn)
{
    for (int pc = 0; pc < K; pc += KC) {
        const int kc = min_int(KC, K - pc);
        const int add = accumulate || pc > 0;
        vfloat acc[FEW_ROWS][NV];
        for (int i = 0; i < M; i++)
            for (int v = 0; v < NV; v++) acc[i][v] = (vfloat){0};
        const float *b = panel + (long)pc * NR;
        for (int k = pc; k < pc + kc; k++, b += NR) {
            if (k + PANEL_AHEAD / NR < K) __builtin_prefetch(b + PANEL_AHEAD); // in the panel
            #pragma GCC unroll 4
            for (int i = 0; i < M; i++) {
                const float a = A[i * a_rs + (long)k * a_cs];
                #pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[i][v] += a * *(const vfloat *)(b + VL * v);
            }
        }
        for (int i = 0; i < M; i++) {
            float *c = C + i * ldc;
            for (int v = 0; v < NV; v++)
                for (int j = 0; j < VL && v * VL + j < nn; j++)
                    c[v * VL + j] = add ? c[v * VL + j] + acc[i][v][j] : acc[i][v][j];
        }
    }
}

static void gemm_few_rows_packed(int M, int N, int K, const float *A, long a_rs, long a_cs,
                                 const float *B_packed, float *C, long ldc, int accumulate)
{
    const int n_panels = (N + NR - 1) / NR;
    const int parallel = 2.0 * M * N * K >= SERIAL_FLOPS;
    (void)parallel;  // unused without OpenMP
    #pragma omp parallel for schedule(static) if (parallel)
    for (int p = 0; p < n_panels; p++) {
        const float *panel = B_packed + (size_t)p * K * NR;
        const int nn = min_int(NR, N - p * NR);
        #define FEW_ROWS_PANEL(m) few_rows_panel(m, K, A, a_rs, a_cs, panel, C + p * NR, ldc, \
                                                 accumulate, nn)
        switch (M) {
        case 1: FEW_ROWS_PANEL(1); break;
        case 2: FEW_ROWS_PANEL(2); break;
        case 3: FEW_ROWS_PANEL(3); break;
        default: FEW_ROWS_PANEL(4); break;
        }
        #undef FEW_ROWS_PANEL
    }
}

// The empty cases of C = A·B: nothing to do, or C = 0 (an empty sum). Returns 1 when handled.
static int gemm_empty(int M, int N, int K, float *C, long ldc, int accumulate) {
    if (M <= 0 || N <= 0) return 1;
    if (K > 0) return 0;
    if (!accumulate)
        for (int i = 0; i < M; i++) memset(C + i * ldc, 0, sizeof(float) * N);
    return 1;
}

// C = A·B (or C += A·B): the few-rows path when A has at most FEW_ROWS rows, else the packed one.
// Both give the same bits.
static void gemm(int M, int N, int K, const float *A, long a_rs, long a_cs,
          const float *B, long b_rs, long b_cs, float *C, long ldc, int accumulate)
{
    if (gemm_empty(M, N, K, C, ldc, accumulate)) return;
    if (M <= FEW_ROWS) gemm_few_rows(M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, accumulate);
    else gemm_packed(M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, NULL, C, ldc, accumulate);
}

// The same product with B packed beforehand by gemm_pack_b: the same bits as gemm.
static void gemm_prepacked(int M, int N, int K, const float *A, long a_rs, long a_cs,
                           const float *B_packed, float *C, long ldc, int accumulate)
{
    if (gemm_empty(M, N, K, C, ldc, accumulate)) return;
    if (M <= FEW_ROWS) gemm_few_rows_packed(M, N, K, A, a_rs, a_cs, B_packed, C, ldc, accumulate);
    else gemm_packed(M, N, K, A, a_rs, a_cs, NULL, 0, 0, B_packed, C, ldc, accumulate);
}

#endif // SIRT_LIB_GEMM_H
