// tests/test_core.c — unit tests of the core: kernels, the model's gradients, AdamW, files.
//
// Built from the same single translation unit as the program (it includes sirt.c without its
// main), so it tests exactly the code that ships. Prints one line per check and ends with
// "N passed, M failed"; its files go in a scratch directory of its own, removed at the end.
// `tests/test_core --write-shard PATH NTOKENS V SEED` writes a random llm.c token shard (for
// test.sh); `--write-cyclic-shard PATH NTOKENS V` a predictable one.
#define SIRT_NO_MAIN
#include "../sirt.c"
#include "check.h"
#include "gradcheck.h"

#define PI 3.14159265358979323846

static void fill_normal(float *x, size_t n, float std, Rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(rng);
}

// ---------------------------------------------------------------------------------------------
// The tuned matrix product against gemm_reference (lib/gemm.h), in all three layouts the linear
// layer uses (the dweight layout accumulating into C), at sizes that are not multiples of any
// tile; and bit-identical for 1 and 2 threads. Error is relative to Σ|a·b| for each element:
// float32 accumulation keeps it near K · 2^-24.
static void test_gemm(void) {
    Rng rng = rng_seeded(1);
    int sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {37, 129, 64}, {256, 96, 300}, {65, 200, 33},
                      {3, 1000, 17}, {300, 5, 700}, {200, 300, 0}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int M = sizes[s][0], N = sizes[s][1], K = sizes[s][2];
        for (int layout = 0; layout < 3; layout++) {
            // 0: forward, B stored (N,K); 1: dinp, B stored (K,N); 2: dweight, A stored (K,M)
            long a_rs = layout == 2 ? 1 : K, a_cs = layout == 2 ? M : 1;
            long b_rs = layout == 0 ? 1 : N, b_cs = layout == 0 ? K : 1;
            int accumulate = layout == 2;
            size_t mk = (size_t)M * K, kn = (size_t)K * N, mn = (size_t)M * N;
            float *A = xmalloc(mk * 4 + 4), *B = xmalloc(kn * 4 + 4);
            float *C1 = xmalloc(mn * 4), *C2 = xmalloc(mn * 4), *C0 = xmalloc(mn * 4);
            float *C3 = xmalloc(mn * 4);
            fill_normal(A, mk, 1.0f, &rng);
            fill_normal(B, kn, 1.0f, &rng);
            fill_normal(C0, mn, 1.0f, &rng);
            memcpy(C1, C0, mn * 4);
            memcpy(C2, C0, mn * 4);
            memcpy(C3, C0, mn * 4);
            gemm_reference(M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C3, N, accumulate);
            set_threads(1);
            gemm(M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C1, N, accumulate);
            set_threads(2);
            gemm(M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C2, N, accumulate);
            double max_err = 0.0;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double mag = accumulate ? fabs(C0[(size_t)i * N + j]) : 0.0;
                    for (int k = 0; k < K; k++)
                        mag += fabs((double)A[i * a_rs + k * a_cs] * B[k * b_rs + j * b_cs]);
                    double err = fabs(C1[(size_t)i * N + j] - C3[(size_t)i * N + j]) / (mag + 1e-30);
                    if (err > max_err) max_err = err;
                }
            int same = memcmp(C1, C2, mn * 4) == 0;
            check(max_err < 1e-5 && same,
                  "gemm M=%d N=%d K=%d layout %d: max error %.1e, 1 vs 2 threads %s", M, N, K,
                  layout, max_err, same ? "identical" : "DIFFER");
            free(A);
            free(B);
            free(C0);
            free(C1);
            free(C2);
            free(C3);
        }
    }
}

// gemm's few-rows path (A with at most FEW_ROWS rows: decoding a sequence or a few) must give
// the packed path's bits, so that a sequence's numbers do not depend on the batch it shares; and
// so must B packed beforehand (gemm_pack_b, from any of the three layouts: decoding's weights),
// both through the few-rows path streaming the panels and through the packed path reading them
// in place. Every M up to FEW_ROWS and a few above, the three layouts, with and without
// accumulation, K across several KC blocks and not a multiple of the vector width, N with a
// ragged last strip and across NC blocks; 1 and 2 threads. Then matmul_forward_packed against
// matmul_forward.
static void test_gemm_few_rows_and_prepacked(void) {
    Rng rng = rng_seeded(11);
    int sizes[][2] = {{1, 1}, {13, 5}, {129, 64}, {100, 1000}, {1000, 17}, {37, 2 * KC + 19},
                      {2 * NC + 40, 33}};
    int rows[] = {1, 2, 3, 4, 5, 8, 13};
    int few = 0, few_identical = 0, pre = 0, pre_identical = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
            for (int layout = 0; layout < 3; layout++)
                for (int accumulate = 0; accumulate < 2; accumulate++)
                    for (int threads = 1; threads <= 2; threads++) {
                        int M = rows[r], N = sizes[s][0], K = sizes[s][1];
                        long a_rs = layout == 2 ? 1 : K, a_cs = layout == 2 ? M : 1;
                        long b_rs = layout == 0 ? 1 : N, b_cs = layout == 0 ? K : 1;
                        size_t mk = (size_t)M * K, kn = (size_t)K * N, mn = (size_t)M * N;
                        float *A = xmalloc(mk * 4), *B = xmalloc(kn * 4);
                        float *Bp = xmalloc(matmul_packed_floats(K, N) * 4);
                        float *C_packed = xmalloc(mn * 4), *C_gemm = xmalloc(mn * 4);
                        float *C_pre = xmalloc(mn * 4);
                        fill_normal(A, mk, 1.0f, &rng);
                        fill_normal(B, kn, 1.0f, &rng);
                        fill_normal(C_packed, mn, 1.0f, &rng);
                        memcpy(C_gemm, C_packed, mn * 4);
                        memcpy(C_pre, C_packed, mn * 4);
                        set_threads(threads);
                        gemm_packed(M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, NULL, C_packed, N, accumulate);
                        gemm(M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C_gemm, N, accumulate);
                        gemm_pack_b(Bp, B, b_rs, b_cs, K, N);
                        gemm_prepacked(M, N, K, A, a_rs, a_cs, Bp, C_pre, N, accumulate);
                        int same_few = memcmp(C_gemm, C_packed, mn * 4) == 0;
                        int same_pre = memcmp(C_pre, C_packed, mn * 4) == 0;
                        few += M <= FEW_ROWS, few_identical += M <= FEW_ROWS && same_few;
                        pre++, pre_identical += same_pre;
                        if (!same_few || !same_pre)
                            printf("  differs (%s): M=%d N=%d K=%d layout %d accumulate %d, %d "
                                   "threads\n", same_few ? "prepacked" : "gemm", M, N, K, layout,
                                   accumulate, threads);
                        free(A), free(B), free(Bp), free(C_packed), free(C_gemm), free(C_pre);
                    }
    set_threads(2);
    check(few > 0 && few_identical == few,
          "gemm with 1..%d rows (the few-rows path) is bit-identical to the packed path: %d of %d "
          "products", FEW_ROWS, few_identical, few);
    check(pre > 0 && pre_identical == pre,
          "gemm with B packed beforehand is bit-identical to packing it in the product: %d of %d "
          "products (1 to 13 rows)", pre_identical, pre);
    // the kernel interface: matmul_pack + matmul_forward_packed against matmul_forward, with bias
    int shapes[][3] = {{1, 64, 100}, {3, 200, 77}, {20, 128, 512}}; // N rows, C, OC
    int same = 1;
    for (int s = 0; s < 3; s++) {
        int N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *inp = xmalloc((size_t)N * C * 4), *w = xmalloc((size_t)OC * C * 4);
        float *bias = xmalloc((size_t)OC * 4), *packed = xmalloc(matmul_packed_floats(C, OC) * 4);
        float *out = xmalloc((size_t)N * OC * 4), *out_packed = xmalloc((size_t)N * OC * 4);
        fill_normal(inp, (size_t)N * C, 1.0f, &rng);
        fill_normal(w, (size_t)OC * C, 1.0f, &rng);
        fill_normal(bias, OC, 1.0f, &rng);
        matmul_forward(out, inp, w, bias, N, C, OC);
        matmul_pack(packed, w, C, OC);
        matmul_forward_packed(out_packed, inp, packed, bias, N, C, OC);
        same &= !memcmp(out, out_packed, (size_t)N * OC * 4);
        free(inp), free(w), free(bias), free(packed), free(out), free(out_packed);
    }
    check(same, "matmul_forward_packed (weights packed by matmul_pack) gives matmul_forward's bits "
          "(1, 3 and 20 rows, with bias)");
}

// Backward kernels accumulate: each is called on gradient buffers that already hold random
// values, and the check uses what it added.
static float *random_copy(const float *x, size_t n) {
    float *y = xmalloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

static float *increment(const float *after, const float *before, size_t n) {
    float *d = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) d[i] = after[i] - before[i];
    return d;
}

// Σ r_i · out_i in double: the scalar through which a kernel's output is checked.
static double project(const float *out, const float *r, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * r[i];
    return s;
}

static const GradTolerance KERNEL_TOL = {1e-2, 2e-3, 1e-2, 1e-2};

// Packed rows (model.h, "Examples in a row"): each row cut into examples at random places, pos
// counting from 0 in each; about one token in three starts a new example.
static void random_positions(int *pos, int B, int T, Rng *rng) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            pos[b * T + t] = t == 0 || rng_u32(rng) % 3 == 0 ? 0 : pos[b * T + t - 1] + 1;
}

// --- encoder ---------------------------------------------------------------------------------
// packed: with random positions (pos); otherwise pos is NULL (position t of each row)
typedef struct { float *wte, *wpe, *out, *r; int *inp, *pos; int B, T, C; } EncoderCase;
static double encoder_objective(void *p) {
    EncoderCase *k = p;
    encoder_forward(k->out, k->inp, k->pos, k->wte, k->wpe, k->B, k->T, k->C);
    return project(k->out, k->r, (size_t)k->B * k->T * k->C);
}
static void test_encoder(Rng *rng, int packed) {
    int B = 3, T = 5, C = 70, V = 7; // few tokens: ids repeat within and across rows
    EncoderCase k = {xmalloc(V * C * 4), xmalloc(T * C * 4), xmalloc(B * T * C * 4),
                     xmalloc(B * T * C * 4), xmalloc(B * T * 4), NULL, B, T, C};
    fill_normal(k.wte, V * C, 1, rng);
    fill_normal(k.wpe, T * C, 1, rng);
    fill_normal(k.r, B * T * C, 1, rng);
    for (int i = 0; i < B * T; i++) k.inp[i] = rng_u32(rng) % V;
    if (packed) {
        k.pos = xmalloc(B * T * 4);
        random_positions(k.pos, B, T, rng);
    }
    float *dwte0 = xmalloc(V * C * 4), *dwpe0 = xmalloc(T * C * 4);
    fill_normal(dwte0, V * C, 1, rng);
    fill_normal(dwpe0, T * C, 1, rng);
    float *dwte = random_copy(dwte0, V * C), *dwpe = random_copy(dwpe0, T * C);
    encoder_backward(dwte, dwpe, k.r, k.inp, k.pos, B, T, C);
    float *gwte = increment(dwte, dwte0, V * C), *gwpe = increment(dwpe, dwpe0, T * C);
    char name[2][64];
    snprintf(name[0], 64, "encoder_backward dwte%s", packed ? " (packed rows)" : "");
    snprintf(name[1], 64, "encoder_backward dwpe%s", packed ? " (packed rows)" : "");
    check_gradient(name[0], encoder_objective, &k, k.wte, gwte, V * C, KERNEL_TOL, rng);
    check_gradient(name[1], encoder_objective, &k, k.wpe, gwpe, T * C, KERNEL_TOL, rng);
    if (packed) { // the embedding of token bt is wte[inp] + wpe[pos], exactly
        encoder_objective(&k);
        int exact = 1;
        for (int bt = 0; bt < B * T; bt++)
            for (int c = 0; c < C; c++)
                exact &= k.out[bt * C + c] == k.wte[k.inp[bt] * C + c] + k.wpe[k.pos[bt] * C + c];
        check(exact, "encoder_forward (packed rows): position embeddings restart at each example");
    }
    free(k.wte); free(k.wpe); free(k.out); free(k.r); free(k.inp); free(k.pos);
    free(dwte0); free(dwpe0); free(dwte); free(dwpe); free(gwte); free(gwpe);
}

// --- layernorm -------------------------------------------------------------------------------
typedef struct { float *inp, *w, *b, *out, *mean, *rstd, *r; int N, C; } LayernormCase;
static double layernorm_objective(void *p) {
    LayernormCase *k = p;
    layernorm_forward(k->out, k->mean, k->rstd, k->inp, k->w, k->b, k->N, k->C, 1e-5f);
    return project(k->out, k->r, (size_t)k->N * k->C);
}
static void test_layernorm(Rng *rng) {
    int N = 6, C = 150;
    LayernormCase k = {xmalloc(N * C * 4), xmalloc(C * 4), xmalloc(C * 4), xmalloc(N * C * 4),
                       xmalloc(N * 4), xmalloc(N * 4), xmalloc(N * C * 4), N, C};
    fill_normal(k.inp, N * C, 2, rng);
    for (int i = 0; i < N * C; i++) k.inp[i] += i / C; // each row its own mean
    fill_normal(k.w, C, 1, rng);
    fill_normal(k.b, C, 1, rng);
    fill_normal(k.r, N * C, 1, rng);
    layernorm_objective(&k);
    // the forward against its definition, in double
    double max_err = 0.0;
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += k.inp[n * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (k.inp[n * C + c] - m) * (k.inp[n * C + c] - m);
        v /= C;
        for (int c = 0; c < C; c++) {
            double ref = (k.inp[n * C + c] - m) / sqrt(v + 1e-5) * k.w[c] + k.b[c];
            max_err = fmax(max_err, fabs(ref - k.out[n * C + c]));
        }
    }
    check(max_err < 1e-5, "layernorm_forward matches (x-mean)/sqrt(var+eps)*w+b: max error %.1e", max_err);
    float *d0[3] = {xmalloc(N * C * 4), xmalloc(C * 4), xmalloc(C * 4)};
    fill_normal(d0[0], N * C, 1, rng);
    fill_normal(d0[1], C, 1, rng);
    fill_normal(d0[2], C, 1, rng);
    float *dinp = random_copy(d0[0], N * C), *dw = random_copy(d0[1], C), *db = random_copy(d0[2], C);
    layernorm_backward(dinp, dw, db, k.r, k.inp, k.w, k.mean, k.rstd, N, C);
    float *g[3] = {increment(dinp, d0[0], N * C), increment(dw, d0[1], C), increment(db, d0[2], C)};
    check_gradient("layernorm_backward dinp", layernorm_objective, &k, k.inp, g[0], N * C, KERNEL_TOL, rng);
    check_gradient("layernorm_backward dweight", layernorm_objective, &k, k.w, g[1], C, KERNEL_TOL, rng);
    check_gradient("layernorm_backward dbias", layernorm_objective, &k, k.b, g[2], C, KERNEL_TOL, rng);
    free(k.inp); free(k.w); free(k.b); free(k.out); free(k.mean); free(k.rstd); free(k.r);
    for (int i = 0; i < 3; i++) { free(d0[i]); free(g[i]); }
    free(dinp); free(dw); free(db);
}

// --- matmul ----------------------------------------------------------------------------------
typedef struct { float *inp, *w, *b, *out, *r; int N, C, OC; } MatmulCase;
static double matmul_objective(void *p) {
    MatmulCase *k = p;
    matmul_forward(k->out, k->inp, k->w, k->b, k->N, k->C, k->OC);
    return project(k->out, k->r, (size_t)k->N * k->OC);
}
static void test_matmul(Rng *rng) {
    int N = 37, C = 45, OC = 71;
    MatmulCase k = {xmalloc(N * C * 4), xmalloc(OC * C * 4), xmalloc(OC * 4),
                    xmalloc(N * OC * 4), xmalloc(N * OC * 4), N, C, OC};
    fill_normal(k.inp, N * C, 1, rng);
    fill_normal(k.w, OC * C, 1, rng);
    fill_normal(k.b, OC, 1, rng);
    fill_normal(k.r, N * OC, 1, rng);
    float *d0[3] = {xmalloc(N * C * 4), xmalloc(OC * C * 4), xmalloc(OC * 4)};
    fill_normal(d0[0], N * C, 1, rng);
    fill_normal(d0[1], OC * C, 1, rng);
    fill_normal(d0[2], OC, 1, rng);
    float *dinp = random_copy(d0[0], N * C), *dw = random_copy(d0[1], OC * C), *db = random_copy(d0[2], OC);
    matmul_backward(dinp, dw, db, k.r, k.inp, k.w, N, C, OC);
    float *g[3] = {increment(dinp, d0[0], N * C), increment(dw, d0[1], OC * C), increment(db, d0[2], OC)};
    check_gradient("matmul_backward dinp", matmul_objective, &k, k.inp, g[0], N * C, KERNEL_TOL, rng);
    check_gradient("matmul_backward dweight", matmul_objective, &k, k.w, g[1], OC * C, KERNEL_TOL, rng);
    check_gradient("matmul_backward dbias", matmul_objective, &k, k.b, g[2], OC, KERNEL_TOL, rng);
    free(k.inp); free(k.w); free(k.b); free(k.out); free(k.r);
    for (int i = 0; i < 3; i++) { free(d0[i]); free(g[i]); }
    free(dinp); free(dw); free(db);
}

// --- attention -------------------------------------------------------------------------------
// packed: rows cut into examples at random places (pos); otherwise pos is NULL. KVH key/value
// heads: NH (GPT-2) or fewer (grouped-query attention).
typedef struct { float *qkv, *out, *att, *r; int *pos; int B, T, C, NH, KVH; } AttentionCase;
static double attention_objective(void *p) {
    AttentionCase *k = p;
    attention_forward(k->out, k->att, k->qkv, k->pos, k->B, k->T, k->C, k->NH, k->KVH);
    return project(k->out, k->r, (size_t)k->B * k->T * k->C);
}
static void test_attention(Rng *rng, int packed, int gqa) {
    int B = 2, T = 9, C = 24, NH = gqa ? 4 : 3, KVH = gqa ? 2 : NH, hs = C / NH;
    size_t n_qkv = (size_t)B * T * (C + 2 * KVH * hs), n_out = (size_t)B * T * C;
    AttentionCase k = {xmalloc(n_qkv * 4), xmalloc(n_out * 4), xmalloc(B * NH * T * T * 4),
                       xmalloc(n_out * 4), NULL, B, T, C, NH, KVH};
    if (packed) {
        k.pos = xmalloc(B * T * 4);
        random_positions(k.pos, B, T, rng);
    }
    fill_normal(k.qkv, n_qkv, 1, rng);
    fill_normal(k.r, n_out, 1, rng);
    attention_objective(&k);
    // causality within the example: every weight outside s..t (s = t − pos[t], 0 when not
    // packed) is zero, every weight inside it positive, and every row sums to one
    double worst = 0.0;
    int inside_positive = 1;
    for (int row = 0; row < B * NH * T; row++) {
        int t = row % T, b = row / (NH * T), s = packed ? t - k.pos[b * T + t] : 0;
        double sum = 0.0;
        for (int t2 = 0; t2 < T; t2++) {
            float a = k.att[(size_t)row * T + t2];
            if (t2 > t || t2 < s) worst = fmax(worst, fabs(a));
            else inside_positive &= a > 0;
            sum += a;
        }
        worst = fmax(worst, fabs(sum - 1.0));
    }
    check(worst < 1e-6 && inside_positive, "attention_forward%s%s weights are causal%s and sum "
          "to one (error %.1e)", packed ? " (packed rows)" : "", gqa ? " (4 heads, 2 kv heads)" : "",
          packed ? " within each example" : "", worst);
    if (gqa) {
        // grouped-query attention is ordinary attention with each key/value head repeated for
        // the query heads of its group: the same output from a (B,T,3C) qkv built that way
        int QKV = C + 2 * KVH * hs, group = NH / KVH;
        float *full = xmalloc((size_t)B * T * 3 * C * 4), *out_full = xmalloc(n_out * 4);
        float *att_full = xmalloc(B * NH * T * T * 4);
        for (int bt = 0; bt < B * T; bt++)
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < hs; i++) {
                    const float *src = k.qkv + (size_t)bt * QKV;
                    float *dst = full + (size_t)bt * 3 * C;
                    dst[h * hs + i] = src[h * hs + i];
                    dst[C + h * hs + i] = src[C + (h / group) * hs + i];
                    dst[2 * C + h * hs + i] = src[C + KVH * hs + (h / group) * hs + i];
                }
        attention_forward(out_full, att_full, full, k.pos, B, T, C, NH, NH);
        double diff = 0.0;
        for (size_t i = 0; i < n_out; i++) diff = fmax(diff, fabs(out_full[i] - k.out[i]));
        check(diff == 0.0, "attention_forward%s with 2 kv heads for 4 query heads equals "
              "attention with each kv head repeated (max difference %.1e)",
              packed ? " (packed rows)" : "", diff);
        free(full); free(out_full); free(att_full);
    }
    float *d0 = xmalloc(n_qkv * 4);
    fill_normal(d0, n_qkv, 1, rng);
    float *dqkv = random_copy(d0, n_qkv);
    attention_backward(dqkv, k.r, k.qkv, k.att, k.pos, B, T, C, NH, KVH);
    float *g = increment(dqkv, d0, n_qkv);
    char name[96];
    snprintf(name, sizeof name, "attention_backward dqkv%s%s", packed ? " (packed rows)" : "",
             gqa ? " (grouped-query: 4 heads, 2 kv heads)" : "");
    check_gradient(name, attention_objective, &k, k.qkv, g, n_qkv, KERNEL_TOL, rng);
    free(k.qkv); free(k.out); free(k.att); free(k.r); free(k.pos); free(d0); free(dqkv); free(g);
}

// dot_products_16 (attention's scores 16 keys at a time) against dot_product one key at a time:
// the same operations in the same order, so the same bits, at lengths below, at and between
// multiples of 16, with the keys a stride apart as in the caches.
static void test_dot_products_16(Rng *rng) {
    const int lengths[] = {5, 16, 32, 37, 64};
    int same = 1;
    for (int c = 0; c < 5; c++) {
        int n = lengths[c];
        size_t stride = (size_t)n + 3;
        float *a = xmalloc((size_t)n * 4), *b = xmalloc(DOT_LANES * stride * 4), out[DOT_LANES];
        fill_normal(a, n, 1, rng);
        fill_normal(b, DOT_LANES * stride, 1, rng);
        dot_products_16(out, a, b, stride, n);
        for (int l = 0; l < DOT_LANES; l++) {
            float one = dot_product(a, b + l * stride, n);
            same &= memcmp(&one, &out[l], sizeof one) == 0;
        }
        free(a); free(b);
    }
    check(same, "dot_products_16 equals dot_product bit for bit for 16 keys (lengths 5, 16, 32, "
          "37, 64)");
}

// dot_products_columns (the training passes' scores, 16 or 64 vectors stored as columns) and
// add_weighted_rows (their weighted sums of rows) against the plain loops they replace: the
// same bits, at lengths below, at and between multiples of 16. The tails (past the last multiple
// of 16) are explicit fused multiply-adds in all of them; the rest is `+= a·b`, which the
// compiler fuses or not (-ffp-contract=fast at -O2 and above; not the sanitizer build's -O1),
// the same way in the kernel and in the reference.
static void test_attention_sums(Rng *rng) {
    const int lengths[] = {5, 8, 16, 24, 32, 37, 64, 100};
    int same_dots = 1, same_rows = 1;
    for (int c = 0; c < 8; c++) {
        int n = lengths[c], cols = 64;
        size_t ld = cols + 5;
        float *a = xmalloc((size_t)n * 4), *bt = xmalloc((size_t)n * ld * 4), *col = xmalloc((size_t)n * 4);
        float out[64];
        fill_normal(a, n, 1, rng);
        fill_normal(bt, (size_t)n * ld, 1, rng);
        for (int nb = 1; nb <= 4; nb *= 4) {
            int done = dot_products_by_columns(out, a, bt, ld, n, 0, 16 * nb);
            same_dots &= done == 16 * nb;
            for (int l = 0; l < 16 * nb; l++) {
                for (int i = 0; i < n; i++) col[i] = bt[(size_t)i * ld + l];
                float one = dot_product(a, col, n);
                same_dots &= memcmp(&one, &out[l], sizeof one) == 0;
            }
        }
        // y (n) += Σ_c w_c x_c over 7 rows, against the plain loop
        int count = 7;
        size_t x_stride = (size_t)n + 3;
        float *x = xmalloc(count * x_stride * 4), *w = xmalloc(2 * count * 4);
        float *y = xmalloc((size_t)n * 4), *y_plain = xmalloc((size_t)n * 4);
        fill_normal(x, count * x_stride, 1, rng);
        fill_normal(w, 2 * count, 1, rng);
        fill_normal(y, n, 1, rng);
        memcpy(y_plain, y, (size_t)n * 4);
        add_weighted_rows(y, n, w, 2, x, x_stride, count);
        for (int k = 0; k < count; k++) { // its promise: the plain loop, the tail fused explicitly
            int n16 = n / 16 * 16;
            for (int i = 0; i < n16; i++) y_plain[i] += w[2 * k] * x[k * x_stride + i];
            for (int i = n16; i < n; i++) y_plain[i] = fmaf(w[2 * k], x[k * x_stride + i], y_plain[i]);
        }
        same_rows &= memcmp(y, y_plain, (size_t)n * 4) == 0;
        free(a); free(bt); free(col); free(x); free(w); free(y); free(y_plain);
    }
    // decoding's weighted sum of values, all heads at once, against add_weighted_rows per head:
    // C = 128 (one block of 8 vectors), 256 with grouped-query attention (two blocks), 96 (6)
    int shapes[][3] = {{128, 4, 4}, {256, 8, 2}, {96, 3, 1}}, same_values = 1; // C, NH, KVH
    for (int s = 0; s < 3; s++) {
        int C = shapes[s][0], NH = shapes[s][1], hs = C / NH, group = NH / shapes[s][2];
        int KVC = shapes[s][2] * hs, Tc = 41, lo = 3, hi = 38;
        float *w = xmalloc((size_t)NH * Tc * 4), *values = xmalloc((size_t)Tc * KVC * 4);
        float *o = xmalloc((size_t)C * 4), *o_heads = xmalloc((size_t)C * 4);
        fill_normal(w, (size_t)NH * Tc, 1, rng);
        fill_normal(values, (size_t)Tc * KVC, 1, rng);
        fill_normal(o, C, 1, rng);
        memcpy(o_heads, o, (size_t)C * 4);
        add_weighted_values(o, C, hs, group, w, Tc, values, KVC, lo, hi);
        for (int h = 0; h < NH; h++)
            add_weighted_rows(o_heads + h * hs, hs, w + (size_t)h * Tc + lo, 1,
                              values + (size_t)lo * KVC + (h / group) * hs, KVC, hi - lo);
        same_values &= memcmp(o, o_heads, (size_t)C * 4) == 0;
        free(w), free(values), free(o), free(o_heads);
    }
    check(same_values, "add_weighted_values (all heads at once) equals add_weighted_rows head by "
          "head bit for bit (C 128, 256 with grouped-query attention, 96)");
    check(same_dots, "dot_products_columns (16 and 64 columns) equals dot_product bit for bit "
          "(lengths 5 to 100)");
    check(same_rows, "add_weighted_rows equals the plain loop of fused multiply-adds bit for bit "
          "(lengths 5 to 100)");
}

// exp_floats (lib/exp.h) against the C library's expf: every 257th float bit pattern (16.7
// million arguments, both signs, every exponent), the special values, and a buffer whose length
// is not a multiple of its chunks, computed in place. NaN counts as equal to NaN.
static void test_exp_floats(void) {
    int table_ok = 1;
    for (int i = 0; i < 32; i++) {
        double d = exp2(i / 32.0);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        table_ok &= exp_table[i] == bits - ((uint64_t)i << 47);
    }
    check(table_ok, "exp_table[i] holds 2^(i/32) less i << 47");
    enum { CHUNK = 1 << 16 };
    float *x = xmalloc(CHUNK * 4), *y = xmalloc(CHUNK * 4);
    size_t k = 0, compared = 0, differ = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 257) {
        uint32_t v = (uint32_t)u;
        memcpy(&x[k++], &v, 4);
        if (k == CHUNK || u + 257 >= (1ull << 32)) {
            exp_floats(y, x, k);
            for (size_t i = 0; i < k; i++) {
                float e = expf(x[i]);
                compared++;
                if (memcmp(&e, &y[i], 4) != 0 && !(isnan(e) && isnan(y[i]))) differ++;
            }
            k = 0;
        }
    }
    const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 88.0f, -88.0f, 87.99999f,
                              -87.99999f, 88.72283f, 88.72284f, -103.97207f, -103.97208f,
                              -87.33655f, -100.0f, 1e-30f, -1e-30f, 1.0f, -1.0f, 0.5f,
                              0x1.04845ep+5f, -0x1.f8cbb2p+5f}; // the last two: see lib/exp.h
    size_t ns = sizeof specials / sizeof specials[0];
    for (size_t i = 0; i < 1001; i++) x[i] = specials[i % ns] * (i < ns ? 1.0f : 1.0f + i * 1e-4f);
    memcpy(y, x, 1001 * 4);
    exp_floats(y, y, 1001); // in place
    for (size_t i = 0; i < 1001; i++) {
        float e = expf(x[i]);
        compared++;
        if (memcmp(&e, &y[i], 4) != 0 && !(isnan(e) && isnan(y[i]))) differ++;
    }
    check(differ == 0 && compared > 16000000, "exp_floats equals expf bit for bit on %zu arguments "
          "(%zu differ)", compared, differ);
    free(x);
    free(y);
}

// --- gelu and residual -----------------------------------------------------------------------
typedef struct { float *inp, *inp2, *out, *r; size_t N; int residual; } PointwiseCase;
static double pointwise_objective(void *p) {
    PointwiseCase *k = p;
    if (k->residual) residual_forward(k->out, k->inp, k->inp2, k->N);
    else gelu_forward(k->out, k->inp, k->N);
    return project(k->out, k->r, k->N);
}
static void test_pointwise(Rng *rng) {
    size_t N = 1000;
    PointwiseCase k = {xmalloc(N * 4), xmalloc(N * 4), xmalloc(N * 4), xmalloc(N * 4), N, 0};
    fill_normal(k.inp, N, 2, rng);
    fill_normal(k.inp2, N, 2, rng);
    fill_normal(k.r, N, 1, rng);
    float *d0 = xmalloc(N * 4);
    fill_normal(d0, N, 1, rng);
    float *dinp = random_copy(d0, N);
    gelu_backward(dinp, k.inp, k.r, N);
    float *g = increment(dinp, d0, N);
    check_gradient("gelu_backward dinp", pointwise_objective, &k, k.inp, g, N, KERNEL_TOL, rng);
    free(g);
    gelu_forward(k.out, k.inp, N);
    double x = k.inp[0], ref = 0.5 * x * (1 + tanh(sqrt(2 / PI) * (x + 0.044715 * x * x * x)));
    check(fabs(k.out[0] - ref) < 1e-6, "gelu_forward(%.4f) = %.6f, tanh formula gives %.6f", x, k.out[0], ref);
    // residual_forward has no backward kernel: the gradient reaching each input is dout itself
    // (the backward pass adds it into the residual stream's gradient)
    k.residual = 1;
    check_gradient("residual_forward's gradient (dout) into a", pointwise_objective, &k, k.inp,
                   k.r, N, KERNEL_TOL, rng);
    check_gradient("residual_forward's gradient (dout) into b", pointwise_objective, &k, k.inp2,
                   k.r, N, KERNEL_TOL, rng);
    free(k.inp); free(k.inp2); free(k.out); free(k.r); free(d0); free(dinp);
}

// --- classifier ------------------------------------------------------------------------------
typedef struct { float *logits, *work, *logprobs, *lse, *coef; int *targets; int N, V, Vp; } ClassifierCase;
static double classifier_objective(void *p) { // Σ coef · (−logprob)
    ClassifierCase *k = p;
    classifier_forward(k->logprobs, k->lse, k->logits, k->targets, k->N, k->V, k->Vp);
    double loss = 0.0;
    for (int n = 0; n < k->N; n++) loss -= (double)k->coef[n] * k->logprobs[n];
    return loss;
}
static void test_classifier(Rng *rng) {
    // a hand-computed value: logits (1, 2, 3, padding 50), target 1:
    //   log p = 2 − log(e + e² + e³) = −1.4076059644443804
    float z[4] = {1, 2, 3, 50}, lp, lse;
    int target = 1;
    classifier_forward(&lp, &lse, z, &target, 1, 3, 4);
    check(fabs(lp - (-1.4076059644443804)) < 1e-6,
          "classifier_forward: log p = %.7f, by hand −1.4076060 (padding column ignored)", lp);
    float coef = 0.5f;
    classifier_backward(z, &lse, &target, &coef, 1, 3, 4);
    // dlogits = 0.5 · (softmax − onehot): softmax(1,2,3) = (0.0900306, 0.2447285, 0.6652410)
    int ok = fabs(z[0] - 0.0450153) < 1e-6 && fabs(z[1] - (0.1223642 - 0.5)) < 1e-6 &&
             fabs(z[2] - 0.3326205) < 1e-6 && z[3] == 0.0f;
    check(ok, "classifier_backward: dlogits (%.7f %.7f %.7f %g), by hand (0.0450153 -0.3776358 "
          "0.3326205 0)", z[0], z[1], z[2], z[3]);

    // the gradient on random logits with signed, non-uniform coefficients and one ignored row
    int N = 7, V = 50, Vp = 64;
    ClassifierCase k = {xmalloc(N * Vp * 4), xmalloc(N * Vp * 4), xmalloc(N * 4), xmalloc(N * 4),
                        xmalloc(N * 4), xmalloc(N * 4), N, V, Vp};
    fill_normal(k.logits, N * Vp, 3, rng);
    for (int n = 0; n < N; n++) {
        k.targets[n] = n == 3 ? -1 : (int)(rng_u32(rng) % V);
        k.coef[n] = rng_normal(rng);
    }
    classifier_objective(&k);
    memcpy(k.work, k.logits, N * Vp * 4);
    classifier_backward(k.work, k.lse, k.targets, k.coef, N, V, Vp);
    int clean = 1;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < Vp; i++)
            if ((n == 3 || i >= V) && k.work[n * Vp + i] != 0.0f) clean = 0;
    check(clean, "classifier_backward: rows without a target and padded columns get zero gradient");
    check_gradient("classifier_backward dlogits (signed coefficients)", classifier_objective, &k,
                   k.logits, k.work, N * Vp, KERNEL_TOL, rng);
    free(k.logits); free(k.work); free(k.logprobs); free(k.lse); free(k.coef); free(k.targets);
}

// ---------------------------------------------------------------------------------------------
// AdamW against the update written out by hand in double, as torch.optim.AdamW computes it,
// over three steps with weight decay and a gradient scale.
static void test_adamw(Rng *rng) {
    size_t n = 100;
    float *p = xmalloc(n * 4), *g = xmalloc(n * 4), *m = xcalloc(n, 4), *v = xcalloc(n, 4);
    double *pd = xmalloc(n * 8), *md = xcalloc(n, 8), *vd = xcalloc(n, 8);
    fill_normal(p, n, 1, rng);
    for (size_t i = 0; i < n; i++) pd[i] = p[i];
    double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1, scale = 0.5;
    double max_err = 0.0;
    for (int t = 1; t <= 3; t++) {
        fill_normal(g, n, 1, rng);
        adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, scale, t);
        for (size_t i = 0; i < n; i++) {
            double gi = g[i] * scale;
            pd[i] -= lr * wd * pd[i];
            md[i] = b1 * md[i] + (1 - b1) * gi;
            vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
            pd[i] -= lr * (md[i] / (1 - pow(b1, t))) / (sqrt(vd[i] / (1 - pow(b2, t))) + eps);
            max_err = fmax(max_err, fabs(pd[i] - p[i]));
        }
    }
    // first step by hand: m̂ = g, v̂ = g², so the step is lr·g/(|g|+eps) ≈ lr·sign(g)
    check(max_err < 1e-6, "adamw_update: 3 steps with weight decay match PyTorch's formula "
          "(max error %.1e)", max_err);
    free(p); free(g); free(m); free(v); free(pd); free(md); free(vd);
}

static void test_schedule(void) {
    Schedule s = {1e-3f, 0.1f, 10, 110, 1};
    float first = schedule_lr(&s, 0), peak = schedule_lr(&s, 9), mid = schedule_lr(&s, 10 + 50);
    float last = schedule_lr(&s, 109);
    // warm-up 1e-4 … 1e-3; cosine from 1e-3 at step 10 to 1e-4 at step 109; halfway ≈ 5.5e-4
    int ok = fabs(first - 1e-4f) < 1e-9 && fabs(peak - 1e-3f) < 1e-9 &&
             fabs(schedule_lr(&s, 10) - 1e-3f) < 1e-9 && fabs(last - 1e-4f) < 1e-9 &&
             fabs(mid - (1e-4 + 0.5 * (1 + cos(PI * 50 / 99.0)) * 9e-4)) < 1e-8;
    s.cosine = 0;
    ok &= schedule_lr(&s, 100) == 1e-3f;
    check(ok, "schedule: warm-up %.1e..%.1e, cosine %.3e at the middle, floor %.1e at the end",
          first, peak, mid, last);
}

// ---------------------------------------------------------------------------------------------
// The whole model: gradients of Σ c_t · (−log p_t) for every parameter tensor, with signed,
// non-uniform coefficients and some positions without a target. wte and wpe are the input
// embeddings (wte also the classifier): their check covers the gradient through every layer. The weights are drawn larger
// than GPT-2's init so that every nonlinearity (softmax, GELU, LayerNorm) is far from linear.
typedef struct {
    Model *model;
    int *inputs, *targets, *pos; // pos: NULL, or packed rows
    float *coefs;
    int B, T;
} ModelCase;

static double model_objective(void *p) {
    ModelCase *k = p;
    model_forward(k->model, k->inputs, k->targets, k->pos, k->B, k->T);
    double loss = 0.0;
    for (int i = 0; i < k->B * k->T; i++) loss -= (double)k->coefs[i] * k->model->host_logprobs[i];
    return loss;
}

// The check for a model of either shape (seed: its initialisation): every parameter tensor's
// live rows (the padded vocabulary rows V..Vp-1 stay zero, as in a real checkpoint), each named
// "LABEL gradient of TENSOR VARIANT". Returns how many tensors it checked (an untied Llama's
// wcls has rows; a tied one's none).
static int check_model_gradients(Config cfg, uint64_t seed, const char *label, const char *variant,
                                 int packed, Rng *rng) {
    Model model;
    model_build(&model, cfg);
    model_init_random(&model, seed);
    for (size_t i = 0; i < model.num_parameters; i++) model.params_memory[i] += 0.3f * rng_normal(rng);
    memset(model.params.wte + (size_t)cfg.V * cfg.C, 0, (size_t)(cfg.Vp - cfg.V) * cfg.C * 4);
    if (!model.config.tied)
        memset(model.params.wcls + (size_t)cfg.V * cfg.C, 0, (size_t)(cfg.Vp - cfg.V) * cfg.C * 4);
    int B = 2, T = 7;
    ModelCase k = {&model, xmalloc(B * T * 4), xmalloc(B * T * 4), NULL, xmalloc(B * T * 4), B, T};
    if (packed) {
        k.pos = xmalloc(B * T * 4);
        random_positions(k.pos, B, T, rng);
    }
    for (int i = 0; i < B * T; i++) {
        k.inputs[i] = rng_u32(rng) % cfg.V;
        k.targets[i] = i % 5 == 4 ? -1 : (int)(rng_u32(rng) % cfg.V);
        k.coefs[i] = rng_normal(rng);
    }
    model_objective(&k);
    model_backward(&model, k.coefs);
    float *grads = random_copy(model.grads_memory, model.num_parameters);
    GradTolerance tol = {3e-3, 1e-3, 1e-2, 1e-2};
    size_t offset = 0;
    int checked = 0;
    for (int t = 0; t < model.num_param_tensors; t++) {
        const TensorSpec *spec = &model.param_table[t];
        size_t n = model.param_sizes[t];
        if (spec->shape[0] == D_Vp || spec->shape[0] == D_CLS) n = n / cfg.Vp * cfg.V; // live rows
        if (n) {
            char name[96];
            snprintf(name, sizeof name, "%s gradient of %s%s", label, spec->name, variant);
            check_gradient(name, model_objective, &k, model.params_memory + offset,
                           grads + offset, n, tol, rng);
            checked++;
        }
        offset += model.param_sizes[t];
    }
    free(grads);
    free(k.inputs); free(k.targets); free(k.pos); free(k.coefs);
    model_free(&model);
    return checked;
}

static void test_model_gradients(Rng *rng, int packed) {
    Config cfg = parse_config("2,2,16,8,23"); // L=2 NH=2 C=16 maxT=8 V=23 (Vp=128)
    check_model_gradients(cfg, 5, "model", packed ? " (packed rows)" : "", packed, rng);
}

// ---------------------------------------------------------------------------------------------
// Training: a tiny model memorises one batch; the same seed gives the same bits, whatever the
// number of threads.
static void train_steps(Model *model, const int *inputs, const int *targets, int B, int T,
                        int steps, float lr, float *losses) {
    float *coefs = xmalloc((size_t)B * T * 4);
    for (int i = 0; i < B * T; i++) coefs[i] = 1.0f / (B * T);
    OptimizerSettings opt = {lr, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
    for (int s = 0; s < steps; s++) {
        model_forward(model, inputs, targets, NULL, B, T);
        double loss = 0.0;
        for (int i = 0; i < B * T; i++) loss -= (double)coefs[i] * model->host_logprobs[i];
        losses[s] = (float)loss;
        model_backward(model, coefs);
        model_update(model, &opt, s + 1);
    }
    free(coefs);
}

static void test_overfit_and_determinism(Rng *rng) {
    int B = 4, T = 16, steps = 150;
    Config cfg = parse_config("2,4,32,16,50");
    int *inputs = xmalloc(B * T * 4), *targets = xmalloc(B * T * 4);
    for (int i = 0; i < B * T; i++) {
        inputs[i] = rng_u32(rng) % cfg.V;
        targets[i] = rng_u32(rng) % cfg.V;
    }
    float *losses[3];
    uint64_t hashes[3];
    for (int run = 0; run < 3; run++) {
        set_threads(run == 2 ? 1 : 2);
        Model model;
        model_build(&model, cfg);
        model_init_random(&model, 1234);
        losses[run] = xmalloc(steps * 4);
        train_steps(&model, inputs, targets, B, T, steps, 1e-2f, losses[run]);
        hashes[run] = model_params_hash(&model);
        model_free(&model);
    }
    set_threads(2);
    check(losses[0][steps - 1] < 0.1f, "a tiny model overfits one batch: loss %.3f -> %.4f "
          "after %d steps (< 0.1)", losses[0][0], losses[0][steps - 1], steps);
    check(!memcmp(losses[0], losses[1], steps * 4) && hashes[0] == hashes[1],
          "same seed, same thread count: identical losses and weights");
    check(!memcmp(losses[0], losses[2], steps * 4) && hashes[0] == hashes[2],
          "same seed, 1 thread vs 2: identical losses and weights");
    for (int run = 0; run < 3; run++) free(losses[run]);
    free(inputs);
    free(targets);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints: write → read gives the same bits, and writing again gives the same file.
static void test_checkpoint_roundtrip(const char *dir) {
    char path[4096], path2[4096];
    scratch_path(path, sizeof path, dir, "roundtrip.bin");
    scratch_path(path2, sizeof path2, dir, "roundtrip2.bin");
    Model a, b;
    model_build(&a, parse_config("3,2,24,32,100"));
    model_init_random(&a, 99);
    model_save(&a, path);
    model_load(&b, path);
    int same_config = !memcmp(&a.config, &b.config, sizeof a.config);
    int same_params = a.num_parameters == b.num_parameters &&
                      !memcmp(a.params_memory, b.params_memory, a.num_parameters * 4);
    model_save(&b, path2);
    size_t n1, n2;
    unsigned char *f1 = read_whole_file(path, &n1), *f2 = read_whole_file(path2, &n2);
    int same_file = f1 && f2 && n1 == n2 && !memcmp(f1, f2, n1);
    int32_t header[8] = {0};
    if (f1 && n1 >= sizeof header) memcpy(header, f1, sizeof header);
    int header_ok = header[0] == 20240326 && header[1] == 3 && header[2] == 32 &&
                    header[3] == 100 && header[4] == 3 && header[5] == 2 && header[6] == 24 &&
                    header[7] == 128 && n1 == 1024 + 4 * a.num_parameters;
    check(same_config && same_params && same_file && header_ok,
          "checkpoint round trip: llm.c v3 header, %zu parameters, bit-exact, file identical",
          a.num_parameters);
    free(f1);
    free(f2);
    model_free(&a);
    model_free(&b);
}

// ---------------------------------------------------------------------------------------------
static int write_shard(const char *path, long count, int vocab, long seed, int cyclic) {
    Rng rng = rng_seeded(seed);
    int32_t header[HEADER_INTS] = {SHARD_MAGIC, SHARD_VERSION, (int32_t)count};
    uint16_t *tokens = xmalloc(count * 2 + 2);
    for (long i = 0; i < count; i++)
        tokens[i] = cyclic ? (uint16_t)((i * 7 + 3) % vocab) : (uint16_t)(rng_u32(&rng) % vocab);
    SafeFile sf;
    safe_open(&sf, path);
    safe_write(&sf, header, sizeof header);
    safe_write(&sf, tokens, count * 2);
    safe_commit(&sf);
    free(tokens);
    return 0;
}

// Sets one value of a checkpoint's tensor: --poke model.bin fcw 4096 nan (the index runs over
// the whole tensor, layers included). For the tests of the numerical guards.
static int poke(const char *path, const char *tensor, long index, const char *value) {
    Model model;
    model_load(&model, path);
    size_t offset = 0;
    int t = 0;
    while (t < NUM_PARAM_TENSORS && strcmp(GPT2_PARAMS[t].name, tensor))
        offset += model.param_sizes[t++];
    if (t == NUM_PARAM_TENSORS || index < 0 || (size_t)index >= model.param_sizes[t])
        die("--poke: no element %ld in tensor '%s'", index, tensor);
    model.params_memory[offset + index] = strtof(value, NULL);
    model_save(&model, path);
    model_free(&model);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The numerical guards: dev_count_nonfinite, and a step with a non-finite loss or gradient
// leaves the parameters and the AdamW moments exactly as they were.
static void test_count_nonfinite(void) {
    float x[1000];
    for (int i = 0; i < 1000; i++) x[i] = (float)(i - 500) * 1e35f; // finite, up to ±5e37
    x[3] = 1e-45f;                                                 // a denormal: finite
    check(dev_count_nonfinite(x, 1000) == 0, "dev_count_nonfinite: 0 in finite values, denormals "
          "and ±5e37 included");
    x[10] = NAN, x[500] = INFINITY, x[999] = -INFINITY, x[0] = x[1] * 1e10f; // the last: -inf
    check(dev_count_nonfinite(x, 1000) == 4 && dev_count_nonfinite(x, 10) == 1,
          "dev_count_nonfinite: NaN, +inf, -inf and an overflow counted (4), and only within n");
}

static void test_guard(Rng *rng) {
    int B = 2, T = 8;
    Config cfg = parse_config("1,2,16,8,32");
    Model model;
    model_build(&model, cfg);
    model_init_random(&model, 7);
    int inputs[16], targets[16];
    float coefs[16];
    for (int i = 0; i < B * T; i++) {
        inputs[i] = rng_u32(rng) % cfg.V;
        targets[i] = rng_u32(rng) % cfg.V;
        coefs[i] = 1.0f / (B * T);
    }
    OptimizerSettings opt = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 1.0f};
    Schedule sched = {1e-2f, 0.1f, 0, 10, 0};
    TrainState st = {0};
    StepResult r = train_step(&model, inputs, targets, NULL, coefs, B, T, opt, &sched, &st);
    state_count_step(&st, &r);
    check(!r.skipped && st.step == 1 && st.skipped == 0, "guard: a finite step is applied");
    size_t bytes = model.num_parameters * sizeof(float);
    float *saved = xmalloc(3 * bytes);
    memcpy(saved, model.params_memory, bytes);
    memcpy(saved + model.num_parameters, model.m_memory, bytes);
    memcpy(saved + 2 * model.num_parameters, model.v_memory, bytes);
    int untouched = 1;
    // a non-finite loss (finite gradients), then a non-finite gradient (finite loss)
    for (int kind = 0; kind < 2; kind++) {
        model_forward(&model, inputs, targets, NULL, B, T);
        r = (StepResult){.loss = kind == 0 ? NAN : 1.0f};
        float bad[16];
        memcpy(bad, coefs, sizeof bad);
        if (kind == 1) bad[5] = INFINITY;
        backward_and_update(&model, bad, opt, &sched, &st, &r);
        state_count_step(&st, &r);
        untouched &= r.skipped && !memcmp(saved, model.params_memory, bytes) &&
                     !memcmp(saved + model.num_parameters, model.m_memory, bytes) &&
                     !memcmp(saved + 2 * model.num_parameters, model.v_memory, bytes);
    }
    check(untouched && st.step == 3 && st.skipped == 2 && st.bad_streak == 2,
          "guard: a NaN loss and an infinite gradient are skipped; parameters, m and v stay "
          "bit-identical; 3 steps, 2 skipped, 2 in a row");
    r = train_step(&model, inputs, targets, NULL, coefs, B, T, opt, &sched, &st);
    state_count_step(&st, &r);
    check(!r.skipped && st.bad_streak == 0 && memcmp(saved, model.params_memory, bytes),
          "guard: the next finite step is applied and ends the streak");
    free(saved);
    model_free(&model);
}

// ---------------------------------------------------------------------------------------------
// Llama's kernels: each forward against its definition in double, each backward against
// finite differences (accumulating into random gradients, as above).
typedef struct { float *inp, *w, *out, *rstd, *r; int N, C; } RmsnormCase;
static double rmsnorm_objective(void *p) {
    RmsnormCase *k = p;
    rmsnorm_forward(k->out, k->rstd, k->inp, k->w, k->N, k->C, 1e-5f);
    return project(k->out, k->r, (size_t)k->N * k->C);
}
static void test_rmsnorm(Rng *rng) {
    int N = 6, C = 150;
    RmsnormCase k = {xmalloc(N * C * 4), xmalloc(C * 4), xmalloc(N * C * 4), xmalloc(N * 4),
                     xmalloc(N * C * 4), N, C};
    fill_normal(k.inp, N * C, 2, rng);
    for (int i = 0; i < N * C; i++) k.inp[i] += i / C; // rows of different scales and means
    fill_normal(k.w, C, 1, rng);
    fill_normal(k.r, N * C, 1, rng);
    rmsnorm_objective(&k);
    double max_err = 0.0;
    for (int n = 0; n < N; n++) {
        double ms = 0;
        for (int c = 0; c < C; c++) ms += (double)k.inp[n * C + c] * k.inp[n * C + c];
        ms /= C;
        for (int c = 0; c < C; c++)
            max_err = fmax(max_err, fabs(k.inp[n * C + c] / sqrt(ms + 1e-5) * k.w[c] -
                                         k.out[n * C + c]));
    }
    check(max_err < 1e-5, "rmsnorm_forward matches x/sqrt(mean(x²)+eps)*w: max error %.1e", max_err);
    float *d0[2] = {xmalloc(N * C * 4), xmalloc(C * 4)};
    fill_normal(d0[0], N * C, 1, rng);
    fill_normal(d0[1], C, 1, rng);
    float *dinp = random_copy(d0[0], N * C), *dw = random_copy(d0[1], C);
    rmsnorm_backward(dinp, dw, k.r, k.inp, k.w, k.rstd, N, C);
    float *g[2] = {increment(dinp, d0[0], N * C), increment(dw, d0[1], C)};
    check_gradient("rmsnorm_backward dinp", rmsnorm_objective, &k, k.inp, g[0], N * C, KERNEL_TOL, rng);
    check_gradient("rmsnorm_backward dweight", rmsnorm_objective, &k, k.w, g[1], C, KERNEL_TOL, rng);
    free(k.inp); free(k.w); free(k.out); free(k.rstd); free(k.r);
    for (int i = 0; i < 2; i++) { free(d0[i]); free(g[i]); }
    free(dinp); free(dw);
}

typedef struct { float *inp, *out, *r; int *pos; int B, T, C, NH, KVH; } RopeCase;
static double rope_objective(void *p) {
    RopeCase *k = p;
    rope_forward(k->out, k->inp, k->pos, k->B, k->T, k->C, k->NH, k->KVH, 10000.0f);
    return project(k->out, k->r, (size_t)k->B * k->T * (k->C + 2 * k->KVH * (k->C / k->NH)));
}
static void test_rope(Rng *rng, int packed) {
    int B = 2, T = 7, C = 24, NH = 4, KVH = 2, hs = C / NH, KVC = KVH * hs, QKV = C + 2 * KVC;
    size_t n = (size_t)B * T * QKV;
    RopeCase k = {xmalloc(n * 4), xmalloc(n * 4), xmalloc(n * 4), NULL, B, T, C, NH, KVH};
    if (packed) {
        k.pos = xmalloc(B * T * 4);
        random_positions(k.pos, B, T, rng);
    }
    fill_normal(k.inp, n, 1, rng);
    fill_normal(k.r, n, 1, rng);
    rope_objective(&k);
    // the definition: pair (2i, 2i+1) of each q and k head turned by p / 10000^(2i/hs); v copied
    double max_err = 0.0;
    int v_same = 1;
    for (int bt = 0; bt < B * T; bt++) {
        int p = packed ? k.pos[bt] : bt % T;
        const float *x = k.inp + (size_t)bt * QKV, *o = k.out + (size_t)bt * QKV;
        for (int j = 0; j < C + KVC; j += 2) {
            double angle = p * pow(10000.0, -(double)(j % hs) / hs);
            double r0 = x[j] * cos(angle) - x[j + 1] * sin(angle);
            double r1 = x[j] * sin(angle) + x[j + 1] * cos(angle);
            max_err = fmax(max_err, fmax(fabs(r0 - o[j]), fabs(r1 - o[j + 1])));
        }
        for (int j = C + KVC; j < QKV; j++) v_same &= o[j] == x[j];
    }
    check(max_err < 1e-5 && v_same, "rope_forward%s rotates the pairs (2i, 2i+1) of every q and k "
          "head by p/10000^(2i/hs) (max error %.1e) and copies v", packed ? " (packed rows)" : "",
          max_err);
    float *d0 = xmalloc(n * 4);
    fill_normal(d0, n, 1, rng);
    float *dinp = random_copy(d0, n);
    rope_backward(dinp, k.r, k.pos, B, T, C, NH, KVH, 10000.0f);
    float *g = increment(dinp, d0, n);
    check_gradient(packed ? "rope_backward dinp (packed rows)" : "rope_backward dinp",
                   rope_objective, &k, k.inp, g, n, KERNEL_TOL, rng);
    free(k.inp); free(k.out); free(k.r); free(k.pos); free(d0); free(dinp); free(g);
}

typedef struct { float *inp, *out, *r; int N, H; } SwigluCase;
static double swiglu_objective(void *p) {
    SwigluCase *k = p;
    swiglu_forward(k->out, k->inp, k->N, k->H);
    return project(k->out, k->r, (size_t)k->N * k->H);
}
static void test_swiglu(Rng *rng) {
    int N = 5, H = 37;
    SwigluCase k = {xmalloc(N * 2 * H * 4), xmalloc(N * H * 4), xmalloc(N * H * 4), N, H};
    fill_normal(k.inp, N * 2 * H, 2, rng);
    fill_normal(k.r, N * H, 1, rng);
    swiglu_objective(&k);
    double max_err = 0.0;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < H; i++) {
            double a = k.inp[n * 2 * H + i], b = k.inp[n * 2 * H + H + i];
            max_err = fmax(max_err, fabs(a / (1 + exp(-a)) * b - k.out[n * H + i]));
        }
    check(max_err < 1e-5, "swiglu_forward matches silu(a)*b (max error %.1e)", max_err);
    float *d0 = xmalloc(N * 2 * H * 4);
    fill_normal(d0, N * 2 * H, 1, rng);
    float *dinp = random_copy(d0, N * 2 * H);
    swiglu_backward(dinp, k.inp, k.r, N, H);
    float *g = increment(dinp, d0, N * 2 * H);
    check_gradient("swiglu_backward dinp (gate and up)", swiglu_objective, &k, k.inp, g,
                   N * 2 * H, KERNEL_TOL, rng);
    free(k.inp); free(k.out); free(k.r); free(d0); free(dinp); free(g);
}

// The whole Llama model (grouped-query attention: 4 heads, 2 kv heads): the gradient of every
// parameter tensor, classifier tied or not, rows packed or not. As for GPT-2, the weights are
// drawn larger than the init so that the nonlinearities are far from linear.
static void test_llama_gradients(Rng *rng, int packed, int untied) {
    Config cfg = parse_config_arch("2,4,16,8,23,2,20", ARCH_LLAMA);
    cfg.tied = !untied;
    char variant[64];
    snprintf(variant, sizeof variant, " (%s classifier%s)", untied ? "own" : "tied",
             packed ? ", packed rows" : "");
    int checked = check_model_gradients(cfg, 6, "llama", variant, packed, rng);
    check(checked == (untied ? 9 : 8), "llama: %d parameter tensors checked", checked);
}

// Our Llama checkpoint: write → read gives the same configuration and bits (tied and untied).
static void test_llama_checkpoint_roundtrip(const char *dir) {
    for (int untied = 0; untied < 2; untied++) {
        char path[4096];
        scratch_path(path, sizeof path, dir, "llama.bin");
        Config cfg = parse_config_arch("2,4,16,32,100,2,24", ARCH_LLAMA);
        cfg.tied = !untied;
        Model a, b;
        model_build(&a, cfg);
        model_init_random(&a, 42);
        model_save(&a, path);
        model_load(&b, path);
        int same = !memcmp(&a.config, &b.config, sizeof a.config) &&
                   a.num_parameters == b.num_parameters &&
                   !memcmp(a.params_memory, b.params_memory, a.num_parameters * 4);
        check(same, "llama checkpoint round trip (%s classifier): %zu parameters, config and "
              "bits equal", untied ? "own" : "tied", a.num_parameters);
        model_free(&a);
        model_free(&b);
    }
}

// llama2.c's files (section 3b): a random Llama with a padded vocabulary (V=300, Vp=384),
// classifier tied or not, written as version 1 (export) and as the legacy layout (written here
// from the same tensor order), read back with the same configuration and bits.
static void test_llama2c_files(const char *dir) {
    for (int untied = 0; untied < 2; untied++) {
        char v1_path[4096], legacy_path[4096];
        scratch_path(v1_path, sizeof v1_path, dir, "llama2c_v1.bin");
        scratch_path(legacy_path, sizeof legacy_path, dir, "llama2c_legacy.bin");
        Config cfg = parse_config_arch("2,4,16,24,300,2,20", ARCH_LLAMA);
        cfg.tied = !untied;
        Model a, b, c;
        model_build(&a, cfg);
        model_init_random(&a, 77);
        llama2c_save(&a, v1_path);
        size_t n;
        unsigned char *v1 = read_whole_file(v1_path, &n);
        uint32_t magic = 0;
        int32_t head[8] = {0};
        if (v1 && n >= 256) memcpy(&magic, v1, 4), memcpy(head, v1 + 4, sizeof head);
        int header_ok = v1 && magic == 0x616b3432u && head[0] == 1 && head[1] == 16 &&
                        head[2] == 20 && head[3] == 2 && head[4] == 4 && head[5] == 2 &&
                        head[6] == 300 && head[7] == 24 && v1[36] == !untied &&
                        n == 256 + 4 * (size_t)llama2c_floats(&cfg, LLAMA2C_V1_ORDER);
        free(v1);
        // the legacy layout: 7 ints (vocab_size negative when untied), the tensors in its order
        int32_t dims[7] = {16, 20, 2, 4, 2, untied ? -300 : 300, 24};
        llama2c_write(legacy_path, dims, sizeof dims, &cfg, &a.params, LLAMA2C_LEGACY_ORDER);
        model_load(&b, v1_path);
        model_load(&c, legacy_path);
        int same = 1;
        for (Model *m = &b; m; m = m == &b ? &c : NULL)
            same &= !memcmp(&a.config, &m->config, sizeof a.config) &&
                    a.num_parameters == m->num_parameters &&
                    !memcmp(a.params_memory, m->params_memory, a.num_parameters * 4);
        check(header_ok && same, "llama2.c files (%s classifier, V=300 padded to 384): version 1 "
              "header and size right; version 1 and legacy read back with the same config and bits",
              untied ? "own" : "shared");
        model_free(&a);
        model_free(&b);
        model_free(&c);
    }
}

// Hugging Face directories (section 3c): GPT-2 and Llama (tied and own classifier, padded
// vocabulary) written and read back bit-exact; the safetensors header as the format wants it
// (padded to 8 bytes, "format": "pt", offsets tiling the data); GPT-2's Conv1D weights
// transposed and Llama's q/k rows in rotate-half order, checked element by element.
static void test_hf_files(const char *dir) {
    const char *configs[3] = {"2,2,16,24,300", "2,4,16,24,300,2,20", "2,4,16,24,300,2,20"};
    for (int k = 0; k < 3; k++) {
        char out[4096], path[4200];
        scratch_path(out, sizeof out, dir, k == 0 ? "hf_gpt2" : k == 1 ? "hf_llama" : "hf_llama_own");
        Config cfg = parse_config_arch(configs[k], k == 0 ? ARCH_GPT2 : ARCH_LLAMA);
        if (k == 2) cfg.tied = 0;
        Model a, b;
        model_build(&a, cfg);
        model_init_random(&a, 123 + k);
        Rng rng = rng_seeded(9);
        for (size_t i = 0; i < a.num_parameters; i++) a.params_memory[i] += 0.1f * rng_normal(&rng);
        memset(a.params.wte + (size_t)cfg.V * cfg.C, 0, (size_t)(cfg.Vp - cfg.V) * cfg.C * 4);
        if (!cfg.tied)
            memset(a.params.wcls + (size_t)cfg.V * cfg.C, 0, (size_t)(cfg.Vp - cfg.V) * cfg.C * 4);
        hf_save(&a, out);
        model_load(&b, out);
        int same = !memcmp(&a.config, &b.config, sizeof a.config) &&
                   a.num_parameters == b.num_parameters &&
                   !memcmp(a.params_memory, b.params_memory, a.num_parameters * 4);
        snprintf(path, sizeof path, "%s/model.safetensors", out);
        size_t n;
        unsigned char *file = read_whole_file(path, &n);
        uint64_t len = 0;
        if (file && n >= 8) memcpy(&len, file, 8);
        int header_ok = file && len % 8 == 0 && len + 8 <= n &&
                        !memcmp(file + 8, "{\"__metadata__\": {\"format\": \"pt\"}", 33);
        // the data offsets tile the data: the tensors' sizes add up to the file's data
        size_t floats = 0;
        HfTensor *t = xmalloc((16 * (size_t)cfg.L + 4) * sizeof(HfTensor));
        int nt = hf_tensors(&cfg, &a.params, t);
        for (int i = 0; i < nt; i++) floats += hf_count(&t[i]);
        header_ok &= n == 8 + len + 4 * floats;
        // one element of a transposed / permuted tensor, read from the file itself
        const float *data = file ? (const float *)(file + 8 + len) : NULL;
        size_t at = 0;
        int layout_ok = 0;
        for (int i = 0; data && i < nt; i++) {
            const char *want = k == 0 ? "transformer.h.1.attn.c_attn.weight"
                                      : "model.layers.1.self_attn.k_proj.weight";
            if (!strcmp(t[i].name, want)) {
                float hf_value, ours;
                if (k == 0) { // Conv1D (C, 3C): element [c][o] is our qkvw[o][c]; c = 5, o = 37
                    memcpy(&hf_value, data + at + 5 * 3 * cfg.C + 37, 4);
                    ours = t[i].ours[37 * cfg.C + 5];
                } else { // k_proj row 1 of head 1 (hs 4) is our row 4 + 2 of that head; column 3
                    memcpy(&hf_value, data + at + (4 + 1) * cfg.C + 3, 4);
                    ours = t[i].ours[(4 + 2) * cfg.C + 3];
                }
                layout_ok = hf_value == ours && ours != 0.0f;
            }
            at += hf_count(&t[i]);
        }
        if (k == 0 && header_ok) { // named as saved from GPT2Model (OpenAI's gpt2): no "transformer."
            JsonBuf renamed = {0};
            const char *h = (const char *)file + 8, *prefix = "\"transformer.";
            for (size_t i = 0; i < len;) {
                int cut = i + 13 <= len && !memcmp(h + i, prefix, 13);
                json_buf_put(&renamed, h + i, 1); // the quote; the prefix after it is dropped
                i += cut ? 13 : 1;
            }
            uint64_t renamed_len = renamed.len;
            SafeFile sf;
            safe_open(&sf, path);
            safe_write(&sf, &renamed_len, 8);
            safe_write(&sf, renamed.data, renamed.len);
            safe_write(&sf, file + 8 + len, n - 8 - len);
            safe_commit(&sf);
            Model c;
            model_load(&c, out);
            same &= strstr(renamed.data, "\"h.1.attn.c_attn.weight\"") &&
                    !strstr(renamed.data, "transformer.") && c.num_parameters == a.num_parameters &&
                    !memcmp(a.params_memory, c.params_memory, a.num_parameters * 4);
            free(renamed.data);
            model_free(&c);
        }
        check(same && header_ok && layout_ok, "Hugging Face directory, %s: written and read back "
              "bit-exact; safetensors header padded to 8 with format pt, offsets tiling the data; "
              "%s", k == 0 ? "GPT-2" : k == 1 ? "Llama (tied)" : "Llama (own classifier)",
              k == 0 ? "c_attn.weight[5][37] = our qkvw[37][5] (Conv1D transposed); read "
                       "back too with GPT2Model's names (no \"transformer.\")"
                     : "k_proj row 1 of head 1 = our row 2 of it (rotate-half order)");
        free(t);
        free(file);
        model_free(&a);
        model_free(&b);
        remove(path); // the directory's two files, then the directory (scratch_remove's is flat)
        snprintf(path, sizeof path, "%s/config.json", out);
        remove(path);
        remove(out);
    }
}

// The half-precision dtypes a downloaded safetensors file may hold, converted to float32.
static void test_hf_dtypes(void) {
    uint16_t bf16[3] = {0x3F80, 0xC040, 0x4049}; // 1, -3, 3.140625
    uint16_t f16[6] = {0x3C00, 0xC000, 0x3555, 0x0001, 0x7C00, 0x8000}; // 1, -2, 1/3 rounded, 2^-24, inf, -0
    float a[3], b[6];
    int ok = hf_to_float(a, (const unsigned char *)bf16, 3, "BF16") == 0 &&
             hf_to_float(b, (const unsigned char *)f16, 6, "F16") == 0 && a[0] == 1.0f &&
             a[1] == -3.0f && a[2] == 3.140625f && b[0] == 1.0f && b[1] == -2.0f &&
             b[2] == 0.333251953125f && b[3] == ldexpf(1.0f, -24) && isinf(b[4]) && b[4] > 0 &&
             b[5] == 0.0f && signbit(b[5]) && hf_to_float(a, (const unsigned char *)bf16, 1, "I8") == -1;
    check(ok, "safetensors dtypes: BF16 (1, -3, 3.140625) and F16 (1, -2, 0.33325, the subnormal "
          "2^-24, inf, -0) to float32 exactly; another dtype refused");
}

// Prints the logits (the first V of each position) of the full forward pass over the given
// token ids, one line per position: `tests/test_core --logits MODEL ID...` (for test.sh's
// comparison with tests/llama2c_reference.py, an independent implementation).
static int print_logits(const char *path, char **ids, int n) {
    Model model;
    model_load(&model, path);
    int *inputs = xmalloc(n * sizeof(int)), *targets = xmalloc(n * sizeof(int));
    for (int i = 0; i < n; i++) inputs[i] = atoi(ids[i]), targets[i] = -1;
    model_forward(&model, inputs, targets, NULL, 1, n);
    const Config *cfg = &model.config;
    for (int t = 0; t < n; t++)
        for (int v = 0; v < cfg->V; v++)
            printf("%.9g%c", model.acts.logits[(size_t)t * cfg->Vp + v], v + 1 < cfg->V ? ' ' : '\n');
    free(inputs);
    free(targets);
    model_free(&model);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "--logits")) return print_logits(argv[2], argv + 3, argc - 3);
    if (argc == 6 && !strcmp(argv[1], "--poke"))
        return poke(argv[2], argv[3], atol(argv[4]), argv[5]);
    if (argc == 6 && !strcmp(argv[1], "--write-shard"))
        return write_shard(argv[2], atol(argv[3]), atoi(argv[4]), atol(argv[5]), 0);
    if (argc == 5 && !strcmp(argv[1], "--write-cyclic-shard"))
        return write_shard(argv[2], atol(argv[3]), atoi(argv[4]), 0, 1);
    char dir[4096]; // the checkpoint round trip's files
    scratch_make(dir, sizeof dir, "test_core");
    Rng rng = rng_seeded(2024);
    test_gemm();
    test_gemm_few_rows_and_prepacked();
    test_encoder(&rng, 0);
    test_encoder(&rng, 1);
    test_layernorm(&rng);
    test_matmul(&rng);
    test_attention(&rng, 0, 0);
    test_dot_products_16(&rng);
    Rng sums_rng = rng_seeded(17); // its own draws: the later tests keep theirs
    test_attention_sums(&sums_rng);
    test_exp_floats();
    test_attention(&rng, 1, 0);
    test_pointwise(&rng);
    test_classifier(&rng);
    test_adamw(&rng);
    test_schedule();
    test_model_gradients(&rng, 0);
    test_model_gradients(&rng, 1);
    test_overfit_and_determinism(&rng);
    test_checkpoint_roundtrip(dir);
    test_count_nonfinite();
    test_guard(&rng);
    // Llama (last, so that the random draws of the tests above stay as they were)
    test_attention(&rng, 0, 1);
    test_attention(&rng, 1, 1);
    test_rmsnorm(&rng);
    test_rope(&rng, 0);
    test_rope(&rng, 1);
    test_swiglu(&rng);
    for (int variant = 0; variant < 4; variant++) test_llama_gradients(&rng, variant & 1, variant >> 1);
    test_llama_checkpoint_roundtrip(dir);
    test_llama2c_files(dir);
    test_hf_files(dir);
    test_hf_dtypes();
    scratch_remove(dir);
    return checks_finish();
}
