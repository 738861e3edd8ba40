// sirt.c — Self-Refine Instruction-Tuning, from scratch, in one translation unit.
//
// A small GPT-2-shaped student learns to reason from a teacher's demonstrations and then improves
// itself. This file is the method, read top to bottom in the order the data flows. The support code that
// does not know the model (files, JSON, the built-in task, answer checking, reports, the tuned
// matrix product) lives in the headers of lib/, included below, each saying what it defines.
//
// Table of contents
//   1. Kernels (CPU) ......... the kernel interface of model.h: matmul, layernorm, attention, ...
//   2. The model ............. GPT-2 and Llama: parameters and activations, forward, backward, AdamW
//   3. Checkpoints ........... llm.c model files (version 3), our Llama file, our training state;
//                              3b llama2.c's files, 3c Hugging Face directories; `./sirt export`
//   4. Training .............. `./sirt train`: the training step, the loop, the schedule, logs
//   5. Supervised fine-tuning  `./sirt sft`: phase 1, learning from the teacher's demonstrations
//   6. Generation ............ KV-cache decoding, the sampler, batched generation
//   7. Sampling and evaluation `./sirt sample`, `./sirt eval`: accuracy, maj@K, pass@K
//   8. Preference training ... `./sirt dpo`: DPO, cDPO, IPO, RPO (frozen reference), ORPO
//   9. Self-refinement ....... `./sirt refine`: phase 2, the student's own answers, scored
//  10. Process feedback ...... `./sirt label-steps`, `./sirt prm`, `eval --rerank`: SIPF's step
//                              labels, the process reward model, best-of-K by it
//  11. The reproduction ...... `./sirt reproduce` = `./sirt`: the whole method, and its table
//  12. Benchmark ............. `./sirt bench`: how fast a training step runs
//  13. Main .................. command dispatch
// The tokenizer (byte-level BPE, `./sirt tokenizer` and `./sirt tokenize`) is tokenizer.c.
//
// Build with `make`; run `./sirt help` for the commands. The kernel interface (section 1) is the
// only code that touches tensor memory; kernels.cu re-implements it for NVIDIA GPUs.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "model.h"         // Config and the kernel interface: what a port re-implements
#include "lib/util.h"      // die, xmalloc, now_seconds, Rng, SafeFile (crash-safe writes)
#include "lib/flags.h"     // Flag, flags_parse, flags_usage: each command's flags and its --help
#ifndef SIRT_CUDA          // the CPU kernels' matrix product (the GPU build has cuBLAS):
#include "lib/gemm.h"      // gemm, tuned for the cache (and for a B packed once), gemm_reference
#include "lib/exp.h"       // exp_floats: expf over an array, vectorized, with the C library's bits
#endif
#include "lib/jsonl.h"     // JsonObject, JsonlFile: reading and writing JSON lines
#include "tokenizer.c"     // Tokenizer: byte-level BPE, ours and GPT-2's; `./sirt tokenizer`
#include "lib/tokens.h"    // Shard, DataLoader: llm.c token shards and their batches
#include "lib/templates.h" // Example: the prompt templates, GSM8K-style items as prompt/completion
#include "lib/task.h"      // TaskItem: the built-in word problems and their teacher; `./sirt data`
#include "lib/answer.h"    // answer_extract, answer_is_correct, answer_check_steps
#include "lib/progress.h"  // show_progress, Progress, open_metrics_log: progress lines, the metrics log
#include "lib/report.h"    // wilson_interval, Score, paired_bootstrap, ReportTable: tables, JSON, SVG

// =============================================================================================
// 1. Kernels (CPU)
// The CPU implementation of the kernel interface declared in model.h, in forward/backward pairs.
// Every kernel is parallel over an index whose results do not depend on each other, and every
// sum runs in a fixed order, so results are bit-identical for any number of threads.
// =============================================================================================
#ifndef SIRT_CUDA

float *dev_alloc(size_t count) {
    // 64-byte alignment: one cache line, one AVX-512 vector
    if (count > (SIZE_MAX - 63) / sizeof(float)) return NULL;
    size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}
int *dev_alloc_int(size_t count) { return (int *)dev_alloc(count); }
size_t dev_memory_bytes(void) { // the machine's physical memory
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    return pages > 0 && page_size > 0 ? (size_t)pages * (size_t)page_size : 0;
}
void dev_free(void *ptr) { free(ptr); }
void dev_zero(float *ptr, size_t count) { memset(ptr, 0, count * sizeof(float)); }
void dev_to_device(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
void dev_to_host(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }


// ---------------------------------------------------------------------------------------------
// Where a token sits in its example: pos[bt] when the caller gives positions (packed rows), or
// its place in the row, t = bt % T, when pos is NULL (one example per row).
static inline int position_of(const int *pos, int bt, int T) { return pos ? pos[bt] : bt % T; }

// inp (B,T), pos (B,T) or NULL -> out (B,T,C); wte (Vp,C), wpe (maxT,C) or NULL
void encoder_forward(float *out, const int *inp, const int *pos, const float *wte,
                     const float *wpe, int B, int T, int C) {
#pragma omp parallel for
    for (int bt = 0; bt < B * T; bt++) {
        const float *tok = wte + (size_t)inp[bt] * C;
        float *o = out + (size_t)bt * C;
        if (!wpe) { // Llama: the token embedding alone
            memcpy(o, tok, (size_t)C * sizeof(float));
            continue;
        }
        const float *at = wpe + (size_t)position_of(pos, bt, T) * C;
        for (int c = 0; c < C; c++) o[c] = tok[c] + at[c];
    }
}

// dout (B,T,C) -> dwte (Vp,C) +=, dwpe (maxT,C) += (or NULL)
// Two positions may hold the same token, so threads split the channels, not the positions.
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp,
                      const int *pos, int B, int T, int C) {
    const int chunk = 64;
#pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += chunk) {
        int c1 = c0 + chunk < C ? c0 + chunk : C;
        for (int bt = 0; bt < B * T; bt++) {
            const float *d = dout + (size_t)bt * C;
            float *dtok = dwte + (size_t)inp[bt] * C;
            for (int c = c0; c < c1; c++) dtok[c] += d[c];
            if (!dwpe) continue;
            float *dpos = dwpe + (size_t)position_of(pos, bt, T) * C;
            for (int c = c0; c < c1; c++) dpos[c] += d[c];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// inp (N,C) -> out (N,C), mean (N), rstd (N); weight (C), bias (C)
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C, float eps) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float sum = 0.0f;
        for (int c = 0; c < C; c++) sum += x[c];
        float m = sum / C;
        float var = 0.0f;
        for (int c = 0; c < C; c++) var += (x[c] - m) * (x[c] - m);
        float s = 1.0f / sqrtf(var / C + eps);
        float *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

// dout (N,C) -> dinp (N,C) +=, dweight (C) +=, dbias (C) +=
// With xhat = (x - mean) * rstd and g = weight * dout:
//   dinp = rstd * (g - mean(g) - xhat * mean(g * xhat))
// dinp is row-parallel; dweight and dbias sum over rows, so they are column-parallel.
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        float g_mean = 0.0f, gx_mean = 0.0f;
        for (int c = 0; c < C; c++) {
            float g = weight[c] * d[c];
            g_mean += g;
            gx_mean += g * (x[c] - m) * s;
        }
        g_mean /= C;
        gx_mean /= C;
        float *di = dinp + (size_t)n * C;
        for (int c = 0; c < C; c++)
            di[c] += s * (weight[c] * d[c] - g_mean - (x[c] - m) * s * gx_mean);
    }
    const int chunk = 64;
#pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += chunk) {
        int c1 = c0 + chunk < C ? c0 + chunk : C;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) {
                dbias[c] += d[c];
                dweight[c] += (x[c] - mean[n]) * rstd[n] * d[c];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// inp (N,C) -> out (N,OC) = inp · weightᵀ + bias; weight (OC,C), bias (OC) or NULL
// out (N,OC) += bias (OC), row by row
static void add_bias(float *out, const float *bias, int N, int OC) {
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] += bias[o];
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC) {
    // A = inp (N,C) row-major; B(k=c, j=oc) = weight[oc*C + c], i.e. weightᵀ read in place
    gemm(N, OC, C, inp, C, 1, weight, 1, C, out, OC, 0);
    if (bias) add_bias(out, bias, N, OC);
}

// The CPU's packed copy: B = weightᵀ (C,OC) in gemm's panels (lib/gemm.h, gemm_pack_b), which
// fit the room model.h gives (OC rounded up to a multiple of 32 >= a multiple of NR).
_Static_assert(32 % NR == 0, "matmul_packed_floats rounds OC up to a multiple of 32");
void matmul_pack(float *packed, const float *weight, int C, int OC) {
    gemm_pack_b(packed, weight, 1, C, C, OC);
}

void matmul_forward_packed(float *out, const float *inp, const float *packed, const float *bias,
                           int N, int C, int OC) {
    gemm_prepacked(N, OC, C, inp, C, 1, packed, out, OC, 0);
    if (bias) add_bias(out, bias, N, OC);
}

// dout (N,OC) -> dinp (N,C) += dout · weight; dweight (OC,C) += doutᵀ · inp; dbias (OC) +=
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC) {
    if (dinp) gemm(N, C, OC, dout, OC, 1, weight, C, 1, dinp, C, 1);
    gemm(OC, C, N, dout, 1, OC, inp, C, 1, dweight, C, 1);
    if (!dbias) return;
    const int chunk = 64;
#pragma omp parallel for
    for (int o0 = 0; o0 < OC; o0 += chunk) {
        int o1 = o0 + chunk < OC ? o0 + chunk : OC;
        for (int n = 0; n < N; n++)
            for (int o = o0; o < o1; o++) dbias[o] += dout[(size_t)n * OC + o];
    }
}

// ---------------------------------------------------------------------------------------------
// vec16: 16 floats that the compiler keeps in vector registers (one with AVX-512, two with AVX),
// via the GCC/Clang vector extension; aligned(4) lets one point anywhere in a float array. The
// attention kernels hold their partial sums and accumulators in it: as a plain float[16] array,
// GCC splits such a loop into 8 + 4 + 2 + 1 + 1 lanes. Its arithmetic is lane by lane, so the
// bits are those of the plain loops.
typedef float vec16 __attribute__((vector_size(16 * sizeof(float)), aligned(4)));
// (a macro, not a function: a function returning vec16 draws GCC's ABI warning without AVX-512)
#define load16(p) (*(const vec16 *)(p))

// a · b over n floats, with 16 partial sums in a fixed order: partial sum j collects the
// products i = j, j+16, ... (one vector register; a plain running sum cannot vectorize, since
// float addition does not reassociate), then the partial sums are added from the first. Every
// attention kernel uses it, so cached decoding matches the full forward. The tail (n not a
// multiple of 16) is written as explicit fused multiply-adds: as a plain `sum += a·b` the
// compiler may vectorize it into products and then adds, and the variants below, which must
// give the same bits, could not follow.
static float dot_product(const float *a, const float *b, int n) {
    vec16 partial = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) partial += load16(a + i) * load16(b + i);
    float sum = 0.0f;
    for (int j = 0; j < 16; j++) sum += partial[j];
    for (; i < n; i++) sum = fmaf(a[i], b[i], sum);
    return sum;
}

// out[l] = dot_product(a, b + l·stride, n) for l < 16, the same operations in the same order
// for each l (16 partial sums over i, added up from the first), but with the 16 dot products
// side by side: the partial sums of the 16 (one vector each) are transposed (in registers with
// GCC and AVX-512, lib/gemm.h's transpose_block), and adding them up is then 16 vector
// additions instead of 16 serial additions per dot product. (Decoding's attention is mostly
// these sums: hs is small.)
enum { DOT_LANES = 16 };
static void dot_products_16(float *out, const float *a, const float *b, size_t stride, int n) {
    vec16 partial[DOT_LANES]; // [l][j]: dot product l's partial sum j
    for (int l = 0; l < DOT_LANES; l++) partial[l] = (vec16){0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const vec16 ai = load16(a + i);
        for (int l = 0; l < DOT_LANES; l++) partial[l] += ai * load16(b + l * stride + i);
    }
#ifdef SIRT_HAVE_TRANSPOSE
    transpose_block(partial); // now [j][l]
#else
    vec16 by_j[16];
    for (int j = 0; j < 16; j++)
        for (int l = 0; l < DOT_LANES; l++) by_j[j][l] = partial[l][j];
    memcpy(partial, by_j, sizeof by_j);
#endif
    vec16 sum = {0};
    for (int j = 0; j < 16; j++) sum += partial[j];
    for (; i < n; i++)
        for (int l = 0; l < DOT_LANES; l++) sum[l] = fmaf(a[i], b[l * stride + i], sum[l]);
    *(vec16 *)out = sum;
}

// The same dot products with the vectors stored as columns, for 16·nb of them (nb <= 4):
// out[l] = a · (column l of bt), where bt holds element i of vector l at bt[i·ld + l]. The same
// operations in the same order as dot_product for each l (partial sum j collects i = j, j+16,
// ...; the partial sums are added from the first; then the tail), with 16 vectors in the lanes
// of one register and nb registers side by side, whose sums do not wait on one another. The
// training passes use it: they transpose a head's keys (or values) once and then reuse them for
// every query. Inlined with nb a constant.
static inline __attribute__((always_inline)) void dot_products_columns(
    float *out, const int nb, const float *a, const float *bt, size_t ld, int n) {
    const int n16 = n / 16 * 16;
    vec16 sum[4];
    for (int v = 0; v < nb; v++) sum[v] = (vec16){0};
    for (int j = 0; j < 16; j++) {
        vec16 partial[4];
        for (int v = 0; v < nb; v++) partial[v] = (vec16){0};
        for (int i = j; i < n16; i += 16)
            #pragma GCC unroll 4
            for (int v = 0; v < nb; v++) partial[v] += a[i] * load16(bt + i * ld + 16 * v);
        #pragma GCC unroll 4
        for (int v = 0; v < nb; v++) sum[v] += partial[v];
    }
    for (int i = n16; i < n; i++) // the tail, fused multiply-adds as in dot_product
        for (int v = 0; v < nb; v++)
            for (int l = 0; l < 16; l++) sum[v][l] = fmaf(a[i], bt[i * ld + 16 * v + l], sum[v][l]);
    for (int v = 0; v < nb; v++) *(vec16 *)(out + 16 * v) = sum[v];
}

// out[t2] = a · (column t2 of bt) for t2 = lo..hi-1, 64 columns at a time while it can, then 16;
// the last hi − lo mod 16 are left to the caller (dot_product on the rows).
static int dot_products_by_columns(float *out, const float *a, const float *bt, size_t ld, int n,
                                   int lo, int hi) {
    int t2 = lo;
    for (; t2 + 64 <= hi; t2 += 64) dot_products_columns(out + t2, 4, a, bt + t2, ld, n);
    for (; t2 + 16 <= hi; t2 += 16) dot_products_columns(out + t2, 1, a, bt + t2, ld, n);
    return t2;
}

// dst (n, T) = the n channels of rows t = 0..T-1 of src (row stride `stride`), transposed: one
// head's keys or values as columns, for dot_products_columns.
static void transpose_head(float *dst, const float *src, size_t stride, int T, int n) {
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n; i++) dst[(size_t)i * T + t] = src[t * stride + i];
}

// y (16·nv) += Σ_c w[c·w_stride] · x_c for c = 0..count-1, x_c = x + c·x_stride: each y[i]
// gets the terms in order of c, one multiply-add each (fused under the Makefile's flags), in nv
// vector accumulators that are independent of one another (so nv of them hide the latency of
// the additions). Inlined with nv a constant.
static inline __attribute__((always_inline)) void add_weighted_rows_16(
    float *y, const int nv, const float *w, size_t w_stride, const float *x, size_t x_stride, int count) {
    vec16 acc[4];
    for (int v = 0; v < nv; v++) acc[v] = load16(y + 16 * v);
    for (int c = 0; c < count; c++) {
        const float wc = w[c * w_stride], *xc = x + c * x_stride;
        #pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[v] += wc * load16(xc + 16 * v);
    }
    for (int v = 0; v < nv; v++) *(vec16 *)(y + 16 * v) = acc[v];
}

// y (n) += Σ_c w[c·w_stride] · x_c for c = 0..count-1, x_c = x + c·x_stride: the terms added
// to each y[i] in order of c (the bits of the plain loop `for c: for i: y[i] += w·x[i]`, which
// the Makefile's flags compile to fused multiply-adds), up to 64 outputs at a time held in
// registers; the last n mod 16 as explicit fused multiply-adds (a plain scalar loop here could
// be vectorized into products and then adds).
static void add_weighted_rows(float *y, int n, const float *w, size_t w_stride, const float *x,
                              size_t x_stride, int count) {
    int i0 = 0;
    for (; i0 + 64 <= n; i0 += 64) add_weighted_rows_16(y + i0, 4, w, w_stride, x + i0, x_stride, count);
    if (i0 + 32 <= n) {
        add_weighted_rows_16(y + i0, 2, w, w_stride, x + i0, x_stride, count);
        i0 += 32;
    }
    if (i0 + 16 <= n) {
        add_weighted_rows_16(y + i0, 1, w, w_stride, x + i0, x_stride, count);
        i0 += 16;
    }
    for (; i0 < n; i0++) {
        float acc = y[i0];
        for (int c = 0; c < count; c++) acc = fmaf(w[c * w_stride], x[c * x_stride + i0], acc);
        y[i0] = acc;
    }
}

// row[0..n) := softmax(row · scale): one query's attention weights from its scores.
static void softmax_scaled(float *row, int n, float scale) {
    float maxval = -INFINITY;
    for (int t2 = 0; t2 < n; t2++) {
        row[t2] *= scale;
        if (row[t2] > maxval) maxval = row[t2];
    }
    for (int t2 = 0; t2 < n; t2++) row[t2] -= maxval;
    exp_floats(row, row, (size_t)n);
    float sum = 0.0f;
    for (int t2 = 0; t2 < n; t2++) sum += row[t2];
    for (int t2 = 0; t2 < n; t2++) row[t2] /= sum;
}

// One query of causal attention after its scores: row[0..t] holds q · k_t2 for t2 = 0..t, and
// becomes softmax_t2(row · scale); out (hs) = Σ_t2 row[t2] v_t2, with value t2 at
// values + t2·stride, the terms added in order of t2. The training forward pass ends here;
// cached decoding (attention_decode) computes each score with the same operations in the same
// order (dot_product's), the same softmax and the same sums, so the two agree exactly.
static void attend_scored_query(float *out, float *row, const float *values, size_t stride, int t,
                                int hs, float scale) {
    softmax_scaled(row, t + 1, scale);
    memset(out, 0, (size_t)hs * sizeof(float));
    add_weighted_rows(out, hs, row, 1, values, stride, t + 1);
}

// ---------------------------------------------------------------------------------------------
// qkv (B,T,QKV), pos (B,T) or NULL -> out (B,T,C), att (B,NH,T,T); QKV = C + 2·KVC (model.h)
// Query t sees the keys of its own example up to itself: t2 = s..t with s = t − pos[t], the
// example's first position (s = 0 when pos is NULL). For each batch row b, head h and query
// position t, with kh = h / (NH/KVH) its key/value head:
//   att[t2] = softmax_{s <= t2 <= t}(q_t · k_t2 / sqrt(hs)),  out_t = Σ_t2 att[t2] v_t2
// and the rest of the row is zero. Threads split the (b, h) pairs; each transposes the keys of
// its head's key/value head (kt; with grouped-query attention, once per query head) and scores
// every query against 64 keys at a time.
void attention_forward(float *out, float *att, const float *qkv, const int *pos, int B, int T,
                       int C, int NH, int KVH) {
    int hs = C / NH, group = NH / KVH, KVC = KVH * hs, QKV = C + 2 * KVC;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel
    {
        float *kt = xmalloc((size_t)hs * T * sizeof(float)); // kt[i·T + t2] = k_t2[i]
#pragma omp for collapse(2)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                const float *keys = qkv + (size_t)b * T * QKV + C + (h / group) * hs;
                transpose_head(kt, keys, QKV, T, hs);
                for (int t = 0; t < T; t++) {
                    int s = t - position_of(pos, b * T + t, T);
                    float *row = att + (((size_t)b * NH + h) * T + t) * T;
                    const float *q = qkv + ((size_t)b * T + t) * QKV + h * hs;
                    for (int t2 = 0; t2 < s; t2++) row[t2] = 0.0f;
                    int t2 = dot_products_by_columns(row, q, kt, T, hs, s, t + 1);
                    for (; t2 <= t; t2++) row[t2] = dot_product(q, keys + t2 * QKV, hs);
                    attend_scored_query(out + ((size_t)b * T + t) * C + h * hs, row + s,
                                        keys + (size_t)s * QKV + KVC, QKV, t - s, hs, scale);
                    for (int t2 = t + 1; t2 < T; t2++) row[t2] = 0.0f;
                }
            }
        free(kt);
    }
}

// dout (B,T,C) -> dqkv (B,T,QKV) +=
// Position t's query reads the keys and values of every t2 in s..t (s = t − pos[t], as in the
// forward), so dk and dv of one key/value head collect contributions from many queries, and
// from every query head of its group. The gradient through the softmax, for one query row, is
//   datt[t2] = dout_t · v_t2,  dpre[t2] = att[t2] * (datt[t2] - Σ_j att[j] datt[j]) / sqrt(hs)
//   dq_t += Σ_t2 dpre[t2] k_t2,  dk_t2 += dpre[t2] q_t,  dv_t2 += att[t2] dout_t
// Threads split (b, key/value head) pairs; within one pair the group's query heads run in order,
// each in two passes: the queries (datt 64 keys at a time from the transposed values vt, then
// dpre and dq), then the keys (dk and dv, each summed over its queries t in increasing order).
// Every sum runs in the order of the plain loops over t and then t2, so the bits do not depend
// on the passes or on the number of threads.
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                        const int *pos, int B, int T, int C, int NH, int KVH) {
    int hs = C / NH, group = NH / KVH, KVC = KVH * hs, QKV = C + 2 * KVC;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel
    {
        float *datt = xmalloc((size_t)T * sizeof(float));      // one query row's dout · v
        float *dpre = xmalloc((size_t)T * T * sizeof(float));  // the head's dpre, (T,T)
        float *vt = xmalloc((size_t)hs * T * sizeof(float));   // vt[i·T + t2] = v_t2[i]
        int *end = xmalloc((size_t)T * sizeof(int));           // one past key t2's last query
#pragma omp for collapse(2)
        for (int b = 0; b < B; b++)
            for (int kh = 0; kh < KVH; kh++) {
                const float *keys = qkv + (size_t)b * T * QKV + C + kh * hs;
                const float *values = keys + KVC;
                float *dkeys = dqkv + (size_t)b * T * QKV + C + kh * hs, *dvalues = dkeys + KVC;
                transpose_head(vt, values, QKV, T, hs);
                for (int t2 = T - 1; t2 >= 0; t2--) // an example ends where the next one starts
                    end[t2] = t2 == T - 1 || position_of(pos, b * T + t2 + 1, T) == 0 ? t2 + 1 : end[t2 + 1];
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    const float *att_h = att + ((size_t)b * NH + h) * T * T;
                    const float *q_h = qkv + (size_t)b * T * QKV + h * hs;
                    const float *d_h = dout + (size_t)b * T * C + h * hs;
                    for (int t = 0; t < T; t++) { // the queries: dpre and dq
                        int s = t - position_of(pos, b * T + t, T);
                        const float *row = att_h + (size_t)t * T, *d = d_h + (size_t)t * C;
                        int t2 = dot_products_by_columns(datt, d, vt, T, hs, s, t + 1);
                        for (; t2 <= t; t2++) datt[t2] = dot_product(d, values + t2 * QKV, hs);
                        // Σ_j att[j] datt[j], one fused multiply-add per term written out: alone in its
                        // loop, the compiler would otherwise vectorize the sum as products then adds
                        float weighted = 0.0f;
                        for (t2 = s; t2 <= t; t2++) weighted = fmaf(row[t2], datt[t2], weighted);
                        float *dp = dpre + (size_t)t * T;
                        for (t2 = s; t2 <= t; t2++) dp[t2] = row[t2] * (datt[t2] - weighted) * scale;
                        add_weighted_rows(dqkv + ((size_t)b * T + t) * QKV + h * hs, hs, dp + s, 1,
                                          keys + (size_t)s * QKV, QKV, t - s + 1);
                    }
                    for (int t2 = 0; t2 < T; t2++) { // the keys: the queries t2..end-1 read key t2
                        int count = end[t2] - t2;
                        add_weighted_rows(dvalues + (size_t)t2 * QKV, hs, att_h + (size_t)t2 * T + t2,
                                          T, d_h + (size_t)t2 * C, C, count);
                        add_weighted_rows(dkeys + (size_t)t2 * QKV, hs, dpre + (size_t)t2 * T + t2,
                                          T, q_h + (size_t)t2 * QKV, QKV, count);
                    }
                }
            }
        free(datt);
        free(dpre);
        free(vt);
        free(end);
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding kernels: the same arithmetic as attention_forward, for rows that each read the keys
// and values of earlier positions from the cache (one new token per sequence, or a prompt's). The dot products and the
// softmax run in the same order as in attention_forward, so cached decoding reproduces the full
// forward pass. (The rows' embeddings are encoder_forward's, with their positions.)

// out (C) += Σ_t2 w_h[t2] · (value t2's channels of head h), t2 = lo..hi-1, for every head h
// at once: channel i of out belongs to head h = i / hs and reads channel (h/group)·hs + i % hs
// of value row t2 (at values + t2·stride); w_h = w + h·w_stride. 128 channels at a time are
// held in 8 vectors, each a chain of fused multiply-adds over t2 in order (as add_weighted_rows
// computes each head alone, so the bits are the same), and the 8 chains do not wait on one
// another. hs must be a multiple of 16, so that a vector never straddles two heads.
static void add_weighted_values(float *out, int C, int hs, int group, const float *w,
                                size_t w_stride, const float *values, size_t stride, int lo, int hi) {
    for (int c0 = 0; c0 < C; c0 += 128) {
        int nv = (C - c0) / 16 < 8 ? (C - c0) / 16 : 8;
        vec16 acc[8];
        const float *wv[8]; // the weights of vector v's head
        size_t from[8];     // where vector v's channels start in a value row
        for (int v = 0; v < 8; v++) {
            int i = c0 + 16 * (v < nv ? v : 0), h = i / hs;
            wv[v] = w + h * w_stride;
            from[v] = (size_t)(h / group) * hs + i % hs;
            acc[v] = load16(out + i);
        }
        if (nv == 8) {
            for (int t2 = lo; t2 < hi; t2++) {
                const float *row = values + (size_t)t2 * stride;
                #pragma GCC unroll 8
                for (int v = 0; v < 8; v++) acc[v] += wv[v][t2] * load16(row + from[v]);
            }
        } else {
            for (int t2 = lo; t2 < hi; t2++) {
                const float *row = values + (size_t)t2 * stride;
                for (int v = 0; v < nv; v++) acc[v] += wv[v][t2] * load16(row + from[v]);
            }
        }
        for (int v = 0; v < nv; v++) *(vec16 *)(out + c0 + 16 * v) = acc[v];
    }
}

// qkv (N,QKV) -> out (N,C); kcache, vcache (S,Tc,KVC). Query n reads positions 0..prefix_len[n]-1
// from slot prefix_slot[n] (a prompt that several sequences share) and the rest from slot[n]
// (prefix_slot NULL: all from slot[n]), up to its own position pos[n]. The rows' new keys and
// values are stored first, so several rows of one slot at consecutive positions (a prompt) attend
// causally among themselves. Threads take the rows one at a time (their lengths differ); a row
// reads the cache as two streams, all its heads at once: its keys 16 positions at a time (one
// dot_products_16 per head on the same 16 positions), then, after each head's softmax, its
// values, one value row at a time for all heads (add_weighted_values; head by head, 16 rows at a
// time, when the head size is not a multiple of 16). Each weight and each sum has the operations
// and order of attention_forward's, so the bits are the same.
void attention_decode(float *out, float *kcache, float *vcache, const float *qkv, const int *slot,
                      const int *pos, const int *prefix_slot, const int *prefix_len, int N, int Tc,
                      int C, int NH, int KVH) {
    int hs = C / NH, group = NH / KVH, KVC = KVH * hs, QKV = C + 2 * KVC;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel
    {
#pragma omp for
        for (int n = 0; n < N; n++) { // store the new keys and values first (then a barrier)
            size_t dst = ((size_t)slot[n] * Tc + pos[n]) * KVC;
            memcpy(kcache + dst, qkv + (size_t)n * QKV + C, KVC * sizeof(float));
            memcpy(vcache + dst, qkv + (size_t)n * QKV + C + KVC, KVC * sizeof(float));
        }
        float *rows = xmalloc((size_t)NH * Tc * sizeof(float)); // rows[h·Tc + t2]: head h's weights
#pragma omp for schedule(dynamic, 1)
        for (int n = 0; n < N; n++) {
            size_t own = (size_t)slot[n] * Tc * KVC;
            size_t shared = prefix_slot ? (size_t)prefix_slot[n] * Tc * KVC : own;
            const float *keys[2] = {kcache + shared, kcache + own};
            const float *values[2] = {vcache + shared, vcache + own};
            const float *q = qkv + (size_t)n * QKV;
            int split = prefix_slot ? prefix_len[n] : 0, t = pos[n];
            int lo[2] = {0, split < t + 1 ? split : t + 1}, hi[2] = {lo[1], t + 1};
            for (int r = 0; r < 2; r++) { // the scores: 16 positions at a time, then one by one
                int t2 = lo[r];
                for (; t2 + DOT_LANES <= hi[r]; t2 += DOT_LANES)
                    for (int h = 0; h < NH; h++)
                        dot_products_16(rows + (size_t)h * Tc + t2, q + h * hs,
                                        keys[r] + (size_t)t2 * KVC + (h / group) * hs, KVC, hs);
                for (; t2 < hi[r]; t2++)
                    for (int h = 0; h < NH; h++)
                        rows[(size_t)h * Tc + t2] =
                            dot_product(q + h * hs, keys[r] + (size_t)t2 * KVC + (h / group) * hs, hs);
            }
            for (int h = 0; h < NH; h++) softmax_scaled(rows + (size_t)h * Tc, t + 1, scale);
            float *o = out + (size_t)n * C; // Σ_t2 weight · value, in order of t2, per head
            memset(o, 0, (size_t)C * sizeof(float));
            for (int r = 0; r < 2; r++) {
                if (hs % 16 == 0) { // every head at once, a value row at a time
                    add_weighted_values(o, C, hs, group, rows, Tc, values[r], KVC, lo[r], hi[r]);
                    continue;
                }
                for (int t2 = lo[r]; t2 < hi[r]; t2 += DOT_LANES) { // else head by head, 16 rows
                    int count = hi[r] - t2 < DOT_LANES ? hi[r] - t2 : DOT_LANES;
                    for (int h = 0; h < NH; h++)
                        add_weighted_rows(o + h * hs, hs, rows + (size_t)h * Tc + t2, 1,
                                          values[r] + (size_t)t2 * KVC + (h / group) * hs, KVC, count);
                }
            }
        }
        free(rows);
    }
}

// ---------------------------------------------------------------------------------------------
// Llama's kernels. RMSNorm, as llama2.c computes it: out = weight · (rstd · x).
// inp (N,C) -> out (N,C), rstd (N); weight (C)
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float ss = 0.0f;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float s = 1.0f / sqrtf(ss / C + eps);
        float *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = weight[c] * (s * x[c]);
        rstd[n] = s;
    }
}

// dout (N,C) -> dinp (N,C) +=, dweight (C) +=
// With g = weight * dout: dinp = rstd * (g − x · rstd² · mean(g · x)); dweight = Σ_n dout x rstd.
// dinp is row-parallel; dweight sums over rows, so it is column-parallel.
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                      const float *weight, const float *rstd, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float s = rstd[n], gx_mean = 0.0f;
        for (int c = 0; c < C; c++) gx_mean += weight[c] * d[c] * x[c];
        gx_mean /= C;
        float *di = dinp + (size_t)n * C;
        for (int c = 0; c < C; c++) di[c] += s * (weight[c] * d[c] - x[c] * s * s * gx_mean);
    }
    const int chunk = 64;
#pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += chunk) {
        int c1 = c0 + chunk < C ? c0 + chunk : C;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) dweight[c] += x[c] * rstd[n] * d[c];
        }
    }
}

// Rotary embeddings, llama2.c's arithmetic (run.c): for channel i (even) of the queries and
// keys, head_dim = i % hs, freq = 1 / theta^(head_dim/hs), angle = p · freq. sign = +1 rotates
// (forward), −1 rotates back (the transpose: the backward). One row (bt) of QKV at a time.
static void rope_row(float *out, const float *inp, int p, int C, int NH, int KVH, float theta,
                     float sign, int accumulate) {
    int hs = C / NH, QK = C + KVH * hs; // queries and keys: every head rotates the same way
    for (int i = 0; i < QK; i += 2) {
        int head_dim = i % hs;
        float freq = 1.0f / powf(theta, head_dim / (float)hs);
        float angle = p * freq, fcr = cosf(angle), fci = sign * sinf(angle);
        float v0 = inp[i], v1 = inp[i + 1];
        float r0 = v0 * fcr - v1 * fci, r1 = v0 * fci + v1 * fcr;
        if (accumulate) {
            out[i] += r0;
            out[i + 1] += r1;
        } else {
            out[i] = r0;
            out[i + 1] = r1;
        }
    }
}

// inp (B,T,QKV), pos (B,T) or NULL -> out (B,T,QKV)
void rope_forward(float *out, const float *inp, const int *pos, int B, int T, int C, int NH,
                  int KVH, float theta) {
    int KVC = KVH * (C / NH), QKV = C + 2 * KVC;
#pragma omp parallel for
    for (int bt = 0; bt < B * T; bt++) {
        const float *x = inp + (size_t)bt * QKV;
        float *o = out + (size_t)bt * QKV;
        rope_row(o, x, position_of(pos, bt, T), C, NH, KVH, theta, 1.0f, 0);
        memcpy(o + C + KVC, x + C + KVC, KVC * sizeof(float)); // the values
    }
}

// dout (B,T,QKV) -> dinp (B,T,QKV) +=
void rope_backward(float *dinp, const float *dout, const int *pos, int B, int T, int C, int NH,
                   int KVH, float theta) {
    int KVC = KVH * (C / NH), QKV = C + 2 * KVC;
#pragma omp parallel for
    for (int bt = 0; bt < B * T; bt++) {
        const float *d = dout + (size_t)bt * QKV;
        float *di = dinp + (size_t)bt * QKV;
        rope_row(di, d, position_of(pos, bt, T), C, NH, KVH, theta, -1.0f, 1);
        for (int i = C + KVC; i < QKV; i++) di[i] += d[i];
    }
}

// SwiGLU, as llama2.c computes it: silu(a) = a · (1 / (1 + e^−a)), out = silu(a) · b.

// a (m) -> e (m) = e^−a, for both passes: m <= EXP_BLOCK values at a time through exp_floats
static void swiglu_exp(float *e, const float *a, int m) {
    for (int j = 0; j < m; j++) e[j] = -a[j];
    exp_floats(e, e, (size_t)m);
}

// inp (N,2H) -> out (N,H)
void swiglu_forward(float *out, const float *inp, int N, int H) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *a = inp + (size_t)n * 2 * H, *b = a + H;
        float *o = out + (size_t)n * H;
        for (int i0 = 0; i0 < H; i0 += EXP_BLOCK) {
            int m = H - i0 < EXP_BLOCK ? H - i0 : EXP_BLOCK;
            float e[EXP_BLOCK];
            swiglu_exp(e, a + i0, m);
            for (int j = 0; j < m; j++) o[i0 + j] = a[i0 + j] * (1.0f / (1.0f + e[j])) * b[i0 + j];
        }
    }
}

// dout (N,H) -> dinp (N,2H) +=; with s = sigmoid(a): d/da = b · s (1 + a (1 − s)), d/db = silu(a)
void swiglu_backward(float *dinp, const float *inp, const float *dout, int N, int H) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *a = inp + (size_t)n * 2 * H, *b = a + H, *d = dout + (size_t)n * H;
        float *da = dinp + (size_t)n * 2 * H, *db = da + H;
        for (int i0 = 0; i0 < H; i0 += EXP_BLOCK) {
            int m = H - i0 < EXP_BLOCK ? H - i0 : EXP_BLOCK;
            float e[EXP_BLOCK];
            swiglu_exp(e, a + i0, m);
            for (int j = 0; j < m; j++) {
                int i = i0 + j;
                float s = 1.0f / (1.0f + e[j]);
                da[i] += d[i] * b[i] * s * (1.0f + a[i] * (1.0f - s));
                db[i] += d[i] * a[i] * s;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GELU, tanh form: out = 0.5 x (1 + tanh(u)), u = sqrt(2/π) (x + 0.044715 x³).
// Since 0.5 (1 + tanh(u)) = sigmoid(2u), both passes use s = 1 / (1 + exp(−2u)): one expf
// instead of tanhf, several times faster, and equal to the tanh form to float rounding.
#define GELU_SCALE 0.7978845608028654f // sqrt(2/π)

// x (m) -> e (m) = e^−2u, for both passes: m <= EXP_BLOCK values at a time through exp_floats
static void gelu_exp(float *e, const float *x, size_t m) {
    for (size_t j = 0; j < m; j++) {
        float u = GELU_SCALE * (x[j] + 0.044715f * x[j] * x[j] * x[j]);
        e[j] = -2.0f * u;
    }
    exp_floats(e, e, m);
}

// inp (N) -> out (N)
void gelu_forward(float *out, const float *inp, size_t N) {
#pragma omp parallel for
    for (size_t i0 = 0; i0 < N; i0 += EXP_BLOCK) {
        size_t m = N - i0 < EXP_BLOCK ? N - i0 : EXP_BLOCK;
        float e[EXP_BLOCK];
        gelu_exp(e, inp + i0, m);
        for (size_t j = 0; j < m; j++) out[i0 + j] = inp[i0 + j] / (1.0f + e[j]);
    }
}

// dout (N) -> dinp (N) +=; d/dx [x s] = s + x s (1 − s) 2 du/dx
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
#pragma omp parallel for
    for (size_t i0 = 0; i0 < N; i0 += EXP_BLOCK) {
        size_t m = N - i0 < EXP_BLOCK ? N - i0 : EXP_BLOCK;
        float e[EXP_BLOCK];
        gelu_exp(e, inp + i0, m);
        for (size_t j = 0; j < m; j++) {
            size_t i = i0 + j;
            float x = inp[i], s = 1.0f / (1.0f + e[j]);
            float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
            dinp[i] += (s + 2.0f * x * s * (1.0f - s) * du) * dout[i];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a (N), b (N) -> out (N)
void residual_forward(float *out, const float *a, const float *b, size_t N) {
#pragma omp parallel for
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

// The value head (model.h): one dot product per read position; the backward visits the
// positions in order, so its sums do not depend on the thread count.
void value_head_forward(float *out, const float *inp, const int *idx, const float *w,
                        const float *b, int M, int C) {
    for (int m = 0; m < M; m++) out[m] = dot_product(inp + (size_t)idx[m] * C, w, C) + b[0];
}

void value_head_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const int *idx, const float *w, int M, int C) {
    for (int m = 0; m < M; m++) {
        const float *x = inp + (size_t)idx[m] * C;
        float *dx = dinp + (size_t)idx[m] * C;
        for (int c = 0; c < C; c++) {
            dx[c] += dout[m] * w[c];
            dw[c] += dout[m] * x[c];
        }
        db[0] += dout[m];
    }
}

// ---------------------------------------------------------------------------------------------
// logits (N,Vp) -> logprobs (N), lse (N). Padded columns V..Vp-1 are not part of the softmax.
void classifier_forward(float *logprobs, float *lse, const float *logits, const int *targets,
                        int N, int V, int Vp) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * Vp;
        float maxval = -INFINITY;
        for (int i = 0; i < V; i++) maxval = z[i] > maxval ? z[i] : maxval;
        float sum = 0.0f;
        for (int i0 = 0; i0 < V; i0 += EXP_BLOCK) {
            int m = V - i0 < EXP_BLOCK ? V - i0 : EXP_BLOCK;
            float e[EXP_BLOCK];
            for (int j = 0; j < m; j++) e[j] = z[i0 + j] - maxval;
            exp_floats(e, e, (size_t)m);
            for (int j = 0; j < m; j++) sum += e[j];
        }
        lse[n] = maxval + logf(sum);
        logprobs[n] = targets[n] >= 0 ? z[targets[n]] - lse[n] : 0.0f;
    }
}

// logits (N,Vp) -> in place dlogits (N,Vp) = coef[n] * (softmax - onehot(target))
void classifier_backward(float *logits, const float *lse, const int *targets, const float *coef,
                         int N, int V, int Vp) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        float *z = logits + (size_t)n * Vp;
        float c = targets[n] >= 0 ? coef[n] : 0.0f;
        if (c == 0.0f) {
            memset(z, 0, (size_t)Vp * sizeof(float));
            continue;
        }
        for (int i = 0; i < V; i++) z[i] -= lse[n];
        exp_floats(z, z, (size_t)V);
        for (int i = 0; i < V; i++) z[i] *= c;
        for (int i = V; i < Vp; i++) z[i] = 0.0f;
        z[targets[n]] -= c;
    }
}

// ---------------------------------------------------------------------------------------------
// x (n) -> Σ x². Fixed-size chunks, each summed in double with 8 partial sums (so the loop
// vectorizes), then the chunk sums in order: the same bits for any number of threads.
double sum_squares(const float *x, size_t n) {
    const size_t chunk = 1 << 15;
    size_t nchunks = (n + chunk - 1) / chunk;
    double *partial = xcalloc(nchunks, sizeof(double));
#pragma omp parallel for
    for (size_t k = 0; k < nchunks; k++) {
        size_t begin = k * chunk, end = begin + chunk < n ? begin + chunk : n, i = begin;
        double lanes[8] = {0};
        for (; i + 8 <= end; i += 8)
            for (int j = 0; j < 8; j++) lanes[j] += (double)x[i + j] * x[i + j];
        double s = 0.0;
        for (int j = 0; j < 8; j++) s += lanes[j];
        for (; i < end; i++) s += (double)x[i] * x[i];
        partial[k] = s;
    }
    double total = 0.0;
    for (size_t k = 0; k < nchunks; k++) total += partial[k];
    free(partial);
    return total;
}

// x (n) -> the number of NaNs and infinities in it. Counts are integers: any order gives the same.
size_t dev_count_nonfinite(const float *x, size_t n) {
    size_t count = 0;
#pragma omp parallel for reduction(+ : count)
    for (size_t i = 0; i < n; i++) count += !isfinite(x[i]);
    return count;
}

// param, grad, m, v (n); see model.h for the update rule
void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                  int t) {
    float correction1 = 1.0f - powf(beta1, (float)t);
    float correction2 = 1.0f - powf(beta2, (float)t);
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        float p = param[i] - lr * weight_decay * param[i];
        param[i] = p - lr * (mi / correction1) / (sqrtf(vi / correction2) + eps);
        m[i] = mi;
        v[i] = vi;
    }
}

#endif // SIRT_CUDA

// =============================================================================================
// 2. The model
// Two shapes (Config.arch), each described by its own tables below:
//   GPT-2 as llm.c defines it: token + position embeddings, L pre-LayerNorm blocks of causal
//     attention and a GELU MLP, a final LayerNorm, and a classifier tied to the token embedding.
//   Llama as llama2.c defines it: a token embedding, L pre-RMSNorm blocks of causal attention
//     with rotary position embeddings (rope_forward on q and k) and grouped-query attention
//     (KVH key/value heads), and a SwiGLU MLP w2(silu(w1 x) ⊙ w3 x); a final RMSNorm and a
//     classifier tied to the token embedding or not (wcls). No biases anywhere.
// Parameters, gradients, the two AdamW moments and the activations are each ONE allocation,
// carved into the tensors that the tables below describe.
// =============================================================================================

// Memory. Sizes that come from flags and data (B, T, the model's shape) are checked against the
// device's memory before anything is allocated, in double precision so that an absurd request
// cannot overflow on its way to the check; a request the device cannot serve at all is refused
// with the sizes, instead of ending in swap or the out-of-memory killer.
#define GIB (1024.0 * 1024.0 * 1024.0)
#ifdef SIRT_CUDA
#define DEVICE_HAS "the GPU has"
#else
#define DEVICE_HAS "this machine has"
#endif

static double device_gib(void) { return (double)dev_memory_bytes() / GIB; }

// Whether `bytes` fit in the device's memory at all (when the device does not say, assume so).
static int fits_memory(double bytes) {
    double have = (double)dev_memory_bytes();
    return have <= 0 || bytes <= have;
}

// The result of dev_alloc, or the end of the program saying who needed how much of what.
static void *alloc_check(void *ptr, const char *who, double bytes, const char *what) {
    if (!ptr) die("%s needs %.2f GiB of %s: out of memory (the allocation failed)", who,
                  bytes / GIB, what);
    return ptr;
}

// ---------------------------------------------------------------------------------------------
// Tensor tables. Each kind of tensor (parameters, activations, their gradients) is a struct of
// pointers, described by a table with one row per tensor: its name, the offset of its pointer in
// the struct (so that one loop carves an allocation into all of them, in table order), and its
// shape, written with the symbolic sizes below, outermost first. A shape that starts with D_L
// holds one slice per layer.
// D_QKV = C + 2·KVH·(C/NH), the width of attention's q, k, v side by side (3C for GPT-2);
// D_FC = the MLP's first projection's width (GPT-2: hidden; Llama: 2·hidden, gate and up);
// D_CLS = the rows of Llama's own classifier wcls (Vp; 0 when it is tied to wte).
typedef enum { D_END, D_L, D_NH, D_C, D_QKV, D_hidden, D_FC, D_Vp, D_CLS, D_maxT, D_B, D_T } Dim;
#define MAX_DIMS 5

// How model_init_random fills a parameter: zeros, ones, N(0, 0.02), or N(0, 0.02/sqrt(2L)).
typedef enum { INIT_ZEROS, INIT_ONES, INIT_NORMAL, INIT_NORMAL_SCALED } Init;

typedef struct {
    const char *name;
    size_t offset;       // offsetof(the struct, name)
    Dim shape[MAX_DIMS]; // ends at the first D_END
    int decay;           // parameters: 1 when AdamW's weight decay applies
    Init init;           // parameters: the initialisation
    const char *kernel;  // activations: the kernel of the forward pass that writes it
} TensorSpec;

static double dim_size(Dim dim, const Config *cfg, int B, int T) {
    switch (dim) {
    case D_L: return cfg->L;
    case D_NH: return cfg->NH;
    case D_C: return cfg->C;
    case D_QKV: return cfg->C + 2.0 * cfg->KVH * (cfg->C / cfg->NH);
    case D_hidden: return cfg->hidden;
    case D_FC: return cfg->arch == ARCH_LLAMA ? 2.0 * cfg->hidden : cfg->hidden;
    case D_Vp: return cfg->Vp;
    case D_CLS: return cfg->tied ? 0.0 : cfg->Vp;
    case D_maxT: return cfg->maxT;
    case D_B: return B;
    case D_T: return T;
    default: return 1.0;
    }
}

// The floats of a tensor for this config at batch B, sequence length T (parameters ignore B and
// T), in double so that it cannot overflow (see "Memory"): any size that is allocated is below
// the device's memory, so it is an exact integer.
static double tensor_count(const TensorSpec *spec, const Config *cfg, int B, int T) {
    double count = 1.0;
    for (int i = 0; i < MAX_DIMS && spec->shape[i] != D_END; i++)
        count *= dim_size(spec->shape[i], cfg, B, T);
    return count;
}

// The floats of all the tensors of a table.
static double table_count(const TensorSpec *table, int n, const Config *cfg, int B, int T) {
    double total = 0.0;
    for (int i = 0; i < n; i++) total += tensor_count(&table[i], cfg, B, T);
    return total;
}

// Carves `memory` into the tensors of a table: sets the pointers of `tensors` (a struct the table
// describes) to consecutive pieces of it, in table order.
static void carve(void *tensors, const TensorSpec *table, int n, float *memory,
                  const Config *cfg, int B, int T) {
    for (int i = 0; i < n; i++) {
        *(float **)((char *)tensors + table[i].offset) = memory;
        memory += (size_t)tensor_count(&table[i], cfg, B, T);
    }
}

// The tensor of `spec` within `tensors` at batch (B, T) and its size in *count: all of it, or
// for a per-layer tensor and layer >= 0, that layer's slice.
static const float *tensor_slice(const void *tensors, const TensorSpec *spec, const Config *cfg,
                                 int B, int T, int layer, size_t *count) {
    const float *data = *(float *const *)((const char *)tensors + spec->offset);
    *count = (size_t)tensor_count(spec, cfg, B, T);
    if (spec->shape[0] != D_L || layer < 0) return data;
    *count /= cfg->L;
    return data + (size_t)layer * *count;
}

// ---------------------------------------------------------------------------------------------
// The parameters, in the order of llm.c's checkpoint files. wte is the token embedding and also
// the classifier; wpe the position embedding. A Llama model uses the fields that play the same
// part (its table below names them as llama2.c does) and wcls, its untied classifier; the
// fields it does not use stay NULL.
typedef struct {
    float *wte, *wpe, *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb,
        *fcprojw, *fcprojb, *lnfw, *lnfb, *wcls;
} ParamTensors;

// GPT-2's parameters. Initialisation: weights ~ N(0, 0.02), the two projections into the
// residual stream ~ N(0, 0.02/sqrt(2L)) so that the stream's variance does not grow with depth;
// biases zero, LayerNorm gains one; the padded rows V..Vp-1 of wte zero. Weight decay applies to
// matrices and embeddings, not to biases and LayerNorm gains: the GPT-2/nanoGPT convention,
// since decaying a gain towards zero only fights the norm.
#define PARAM(name) #name, offsetof(ParamTensors, name)
static const TensorSpec GPT2_PARAMS[] = {
    {PARAM(wte),      .shape = {D_Vp, D_C},          .decay = 1, .init = INIT_NORMAL},
    {PARAM(wpe),      .shape = {D_maxT, D_C},        .decay = 1, .init = INIT_NORMAL},
    {PARAM(ln1w),     .shape = {D_L, D_C},           .decay = 0, .init = INIT_ONES},
    {PARAM(ln1b),     .shape = {D_L, D_C},           .decay = 0, .init = INIT_ZEROS},
    {PARAM(qkvw),     .shape = {D_L, D_QKV, D_C},     .decay = 1, .init = INIT_NORMAL},
    {PARAM(qkvb),     .shape = {D_L, D_QKV},          .decay = 0, .init = INIT_ZEROS},
    {PARAM(attprojw), .shape = {D_L, D_C, D_C},      .decay = 1, .init = INIT_NORMAL_SCALED},
    {PARAM(attprojb), .shape = {D_L, D_C},           .decay = 0, .init = INIT_ZEROS},
    {PARAM(ln2w),     .shape = {D_L, D_C},           .decay = 0, .init = INIT_ONES},
    {PARAM(ln2b),     .shape = {D_L, D_C},           .decay = 0, .init = INIT_ZEROS},
    {PARAM(fcw),      .shape = {D_L, D_hidden, D_C}, .decay = 1, .init = INIT_NORMAL},
    {PARAM(fcb),      .shape = {D_L, D_hidden},      .decay = 0, .init = INIT_ZEROS},
    {PARAM(fcprojw),  .shape = {D_L, D_C, D_hidden}, .decay = 1, .init = INIT_NORMAL_SCALED},
    {PARAM(fcprojb),  .shape = {D_L, D_C},           .decay = 0, .init = INIT_ZEROS},
    {PARAM(lnfw),     .shape = {D_C},                .decay = 0, .init = INIT_ONES},
    {PARAM(lnfb),     .shape = {D_C},                .decay = 0, .init = INIT_ZEROS}};
#define NUM_PARAM_TENSORS (int)(sizeof GPT2_PARAMS / sizeof GPT2_PARAMS[0]) // GPT-2's, the most

// Llama's parameters, with llama2.c's names, in the order of our Llama checkpoint (section 3).
// wqkv holds each layer's wq (C rows), wk (KVC rows) and wv (KVC rows) one after the other, and
// w13 each layer's w1 (hidden rows) then w3 (hidden rows), so that one matrix product computes
// each. Initialisation and weight decay as GPT-2's; wcls has no rows when it is tied to wte.
#define LPARAM(name, field) name, offsetof(ParamTensors, field)
static const TensorSpec LLAMA_PARAMS[] = {
    {LPARAM("tok_embeddings", wte), .shape = {D_Vp, D_C},          .decay = 1, .init = INIT_NORMAL},
    {LPARAM("rms_att", ln1w),       .shape = {D_L, D_C},           .decay = 0, .init = INIT_ONES},
    {LPARAM("wqkv", qkvw),          .shape = {D_L, D_QKV, D_C},    .decay = 1, .init = INIT_NORMAL},
    {LPARAM("wo", attprojw),        .shape = {D_L, D_C, D_C},      .decay = 1, .init = INIT_NORMAL_SCALED},
    {LPARAM("rms_ffn", ln2w),       .shape = {D_L, D_C},           .decay = 0, .init = INIT_ONES},
    {LPARAM("w13", fcw),            .shape = {D_L, D_FC, D_C},     .decay = 1, .init = INIT_NORMAL},
    {LPARAM("w2", fcprojw),         .shape = {D_L, D_C, D_hidden}, .decay = 1, .init = INIT_NORMAL_SCALED},
    {LPARAM("rms_final", lnfw),     .shape = {D_C},                .decay = 0, .init = INIT_ONES},
    {LPARAM("wcls", wcls),          .shape = {D_CLS, D_C},         .decay = 1, .init = INIT_NORMAL}};
#define NUM_LLAMA_PARAMS (int)(sizeof LLAMA_PARAMS / sizeof LLAMA_PARAMS[0])

// The parameter table of a shape, and its number of rows in *n.
static const TensorSpec *param_table(const Config *cfg, int *n) {
    *n = cfg->arch == ARCH_LLAMA ? NUM_LLAMA_PARAMS : NUM_PARAM_TENSORS;
    return cfg->arch == ARCH_LLAMA ? LLAMA_PARAMS : GPT2_PARAMS;
}

// The number of parameters of a model of this shape.
static size_t count_parameters(const Config *cfg) {
    int n;
    const TensorSpec *table = param_table(cfg, &n);
    return (size_t)table_count(table, n, cfg, 0, 0);
}

// The activations of one forward pass at batch B and sequence length T, kept for the backward,
// in the order the forward pass writes them, each with the kernel that writes it (for
// --detect-anomaly). encoded: the embeddings, block 0's input; att: the attention weights; atty:
// the attention's output before its projection; residual2, residual3: the residual stream after
// the attention and after the MLP (the block's output); fch: the MLP's hidden layer before GELU;
// logits: overwritten by dlogits in the backward; logprobs: log p(target) at each position; lse:
// the logsumexp of each row of logits.
// Llama's table has no means (RMSNorm) and adds qkvr, the queries and keys after the rotary
// embedding (attention's input); its fch_gelu holds SwiGLU's output.
typedef struct {
    float *encoded, *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *atty, *attproj, *residual2, *ln2,
        *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *residual3, *lnf, *lnf_mean, *lnf_rstd,
        *logits, *logprobs, *lse, *qkvr;
} ActTensors;

#define ACT(name) #name, offsetof(ActTensors, name)
static const TensorSpec GPT2_ACTS[] = {
    {ACT(encoded),   .shape = {D_B, D_T, D_C},            .kernel = "encoder_forward"},
    {ACT(ln1),       .shape = {D_L, D_B, D_T, D_C},       .kernel = "layernorm_forward"},
    {ACT(ln1_mean),  .shape = {D_L, D_B, D_T},            .kernel = "layernorm_forward"},
    {ACT(ln1_rstd),  .shape = {D_L, D_B, D_T},            .kernel = "layernorm_forward"},
    {ACT(qkv),       .shape = {D_L, D_B, D_T, D_QKV},      .kernel = "matmul_forward"},
    {ACT(att),       .shape = {D_L, D_B, D_NH, D_T, D_T}, .kernel = "attention_forward"},
    {ACT(atty),      .shape = {D_L, D_B, D_T, D_C},       .kernel = "attention_forward"},
    {ACT(attproj),   .shape = {D_L, D_B, D_T, D_C},       .kernel = "matmul_forward"},
    {ACT(residual2), .shape = {D_L, D_B, D_T, D_C},       .kernel = "residual_forward"},
    {ACT(ln2),       .shape = {D_L, D_B, D_T, D_C},       .kernel = "layernorm_forward"},
    {ACT(ln2_mean),  .shape = {D_L, D_B, D_T},            .kernel = "layernorm_forward"},
    {ACT(ln2_rstd),  .shape = {D_L, D_B, D_T},            .kernel = "layernorm_forward"},
    {ACT(fch),       .shape = {D_L, D_B, D_T, D_hidden},  .kernel = "matmul_forward"},
    {ACT(fch_gelu),  .shape = {D_L, D_B, D_T, D_hidden},  .kernel = "gelu_forward"},
    {ACT(fcproj),    .shape = {D_L, D_B, D_T, D_C},       .kernel = "matmul_forward"},
    {ACT(residual3), .shape = {D_L, D_B, D_T, D_C},       .kernel = "residual_forward"},
    {ACT(lnf),       .shape = {D_B, D_T, D_C},            .kernel = "layernorm_forward"},
    {ACT(lnf_mean),  .shape = {D_B, D_T},                 .kernel = "layernorm_forward"},
    {ACT(lnf_rstd),  .shape = {D_B, D_T},                 .kernel = "layernorm_forward"},
    {ACT(logits),    .shape = {D_B, D_T, D_Vp},           .kernel = "matmul_forward"},
    {ACT(logprobs),  .shape = {D_B, D_T},                 .kernel = "classifier_forward"},
    {ACT(lse),       .shape = {D_B, D_T},                 .kernel = "classifier_forward"}};
#define NUM_ACT_TENSORS (int)(sizeof GPT2_ACTS / sizeof GPT2_ACTS[0])

static const TensorSpec LLAMA_ACTS[] = {
    {ACT(encoded),   .shape = {D_B, D_T, D_C},            .kernel = "encoder_forward"},
    {ACT(ln1),       .shape = {D_L, D_B, D_T, D_C},       .kernel = "rmsnorm_forward"},
    {ACT(ln1_rstd),  .shape = {D_L, D_B, D_T},            .kernel = "rmsnorm_forward"},
    {ACT(qkv),       .shape = {D_L, D_B, D_T, D_QKV},     .kernel = "matmul_forward"},
    {ACT(qkvr),      .shape = {D_L, D_B, D_T, D_QKV},     .kernel = "rope_forward"},
    {ACT(att),       .shape = {D_L, D_B, D_NH, D_T, D_T}, .kernel = "attention_forward"},
    {ACT(atty),      .shape = {D_L, D_B, D_T, D_C},       .kernel = "attention_forward"},
    {ACT(attproj),   .shape = {D_L, D_B, D_T, D_C},       .kernel = "matmul_forward"},
    {ACT(residual2), .shape = {D_L, D_B, D_T, D_C},       .kernel = "residual_forward"},
    {ACT(ln2),       .shape = {D_L, D_B, D_T, D_C},       .kernel = "rmsnorm_forward"},
    {ACT(ln2_rstd),  .shape = {D_L, D_B, D_T},            .kernel = "rmsnorm_forward"},
    {ACT(fch),       .shape = {D_L, D_B, D_T, D_FC},      .kernel = "matmul_forward"},
    {ACT(fch_gelu),  .shape = {D_L, D_B, D_T, D_hidden},  .kernel = "swiglu_forward"},
    {ACT(fcproj),    .shape = {D_L, D_B, D_T, D_C},       .kernel = "matmul_forward"},
    {ACT(residual3), .shape = {D_L, D_B, D_T, D_C},       .kernel = "residual_forward"},
    {ACT(lnf),       .shape = {D_B, D_T, D_C},            .kernel = "rmsnorm_forward"},
    {ACT(lnf_rstd),  .shape = {D_B, D_T},                 .kernel = "rmsnorm_forward"},
    {ACT(logits),    .shape = {D_B, D_T, D_Vp},           .kernel = "matmul_forward"},
    {ACT(logprobs),  .shape = {D_B, D_T},                 .kernel = "classifier_forward"},
    {ACT(lse),       .shape = {D_B, D_T},                 .kernel = "classifier_forward"}};
#define NUM_LLAMA_ACTS (int)(sizeof LLAMA_ACTS / sizeof LLAMA_ACTS[0])

static const TensorSpec *act_table(const Config *cfg, int *n) {
    *n = cfg->arch == ARCH_LLAMA ? NUM_LLAMA_ACTS : NUM_ACT_TENSORS;
    return cfg->arch == ARCH_LLAMA ? LLAMA_ACTS : GPT2_ACTS;
}

// Gradients flowing backward through the activations. Only the residual stream's gradient
// lives through the whole backward pass; the rest is scratch reused by every layer.
typedef struct {
    float *residual, *ln, *qkv, *atty, *fch, *fch_gelu, *qkvr;
} GradActTensors;

#define GRAD_ACT(name) #name, offsetof(GradActTensors, name)
static const TensorSpec GPT2_GRAD_ACTS[] = {
    // d loss / d residual stream: both branches of every residual connection add into it, so a
    // residual needs no backward kernel
    {GRAD_ACT(residual), .shape = {D_B, D_T, D_C}},
    {GRAD_ACT(ln),       .shape = {D_B, D_T, D_C}}, // d of a LayerNorm output (ln1, ln2 or lnf)
    {GRAD_ACT(qkv),      .shape = {D_B, D_T, D_QKV}},
    {GRAD_ACT(atty),     .shape = {D_B, D_T, D_C}},
    {GRAD_ACT(fch),      .shape = {D_B, D_T, D_hidden}},
    {GRAD_ACT(fch_gelu), .shape = {D_B, D_T, D_hidden}}};
#define NUM_GRAD_ACT_TENSORS (int)(sizeof GPT2_GRAD_ACTS / sizeof GPT2_GRAD_ACTS[0])

static const TensorSpec LLAMA_GRAD_ACTS[] = {
    {GRAD_ACT(residual), .shape = {D_B, D_T, D_C}},
    {GRAD_ACT(ln),       .shape = {D_B, D_T, D_C}}, // d of an RMSNorm output
    {GRAD_ACT(qkv),      .shape = {D_B, D_T, D_QKV}},
    {GRAD_ACT(qkvr),     .shape = {D_B, D_T, D_QKV}},
    {GRAD_ACT(atty),     .shape = {D_B, D_T, D_C}},
    {GRAD_ACT(fch),      .shape = {D_B, D_T, D_FC}},
    {GRAD_ACT(fch_gelu), .shape = {D_B, D_T, D_hidden}}};
#define NUM_LLAMA_GRAD_ACTS (int)(sizeof LLAMA_GRAD_ACTS / sizeof LLAMA_GRAD_ACTS[0])

static const TensorSpec *grad_act_table(const Config *cfg, int *n) {
    *n = cfg->arch == ARCH_LLAMA ? NUM_LLAMA_GRAD_ACTS : NUM_GRAD_ACT_TENSORS;
    return cfg->arch == ARCH_LLAMA ? LLAMA_GRAD_ACTS : GPT2_GRAD_ACTS;
}

// Bytes for batches of B rows of T tokens: activations, their gradients, and the batch itself
// (inputs, targets, positions, coefficients).
static double activation_bytes(const Config *cfg, int B, int T) {
    int n_acts, n_grads;
    const TensorSpec *acts = act_table(cfg, &n_acts), *grads = grad_act_table(cfg, &n_grads);
    double floats = table_count(acts, n_acts, cfg, B, T) + table_count(grads, n_grads, cfg, B, T) +
                    4.0 * B * T;
    return floats * sizeof(float);
}

typedef struct {
    Config config;
    // parameters and their gradients, each one allocation
    ParamTensors params, grads;
    float *params_memory, *grads_memory;
    const TensorSpec *param_table; // GPT2_PARAMS or LLAMA_PARAMS, after the config's arch
    int num_param_tensors;
    size_t param_sizes[NUM_PARAM_TENSORS];
    size_t num_parameters;
    // AdamW moments, allocated at the first update
    float *m_memory, *v_memory;
    // activations, allocated at the first forward for at most (B, T)
    ActTensors acts;
    GradActTensors grad_acts;
    float *acts_memory, *grad_acts_memory;
    int act_B, act_T;
    // the current batch on the device, and the host copy of its log-probs; positions holds each
    // token's position within its example when the last forward was given them (packed: 1)
    int *inputs, *targets, *positions;
    int packed;
    float *coefs;
    float *host_logprobs;
    int B, T; // shape of the last forward pass
    int detect_anomaly; // check every kernel's output for NaN and infinity (--detect-anomaly)
} Model;

// llama2.c's MLP width for a model of C channels when none is given (its model.py): 2/3 of 4C,
// rounded up to a multiple of 32.
static int llama_default_hidden(int C) {
    int hidden = 2 * (4 * C) / 3;
    return (hidden + 31) / 32 * 32;
}

// Fills in what follows from the five numbers (call it only on a config that config_problem
// accepts: 4*C and the padding of V are computed in int). Vp = 0: V padded up to 128s.
// GPT-2: hidden = 4C, KVH = NH, tied. Llama: KVH = 0 means NH, hidden = 0 llama2.c's default,
// rope_theta = 0 means 10000; tied as set.
static void config_finish(Config *cfg) {
    if (cfg->arch == ARCH_LLAMA) {
        if (!cfg->KVH) cfg->KVH = cfg->NH;
        if (!cfg->hidden) cfg->hidden = llama_default_hidden(cfg->C);
        if (cfg->rope_theta == 0.0f) cfg->rope_theta = 10000.0f;
    } else {
        cfg->hidden = 4 * cfg->C;
        cfg->KVH = cfg->NH;
        cfg->tied = 1;
    }
    cfg->norm_eps = 1e-5f;
    if (cfg->Vp < cfg->V) cfg->Vp = (cfg->V + 127) / 128 * 128;
}

// Checks a configuration before anything is computed from it or allocated for it (config_finish
// comes after: with C or V straight from a file, 4*C or V+127 could overflow an int).
static const char *config_problem(const Config *cfg) {
    if (cfg->L < 1 || cfg->L > 1024) return "L (layers) must be in 1..1024";
    if (cfg->NH < 1 || cfg->NH > 1024) return "NH (heads) must be in 1..1024";
    if (cfg->C < 1 || cfg->C > 65536) return "C (channels) must be in 1..65536";
    if (cfg->C % cfg->NH) return "C must be a multiple of NH";
    if (cfg->maxT < 1 || cfg->maxT > 1 << 20) return "maxT must be in 1..1048576";
    if (cfg->V < 1 || cfg->V > 1 << 24) return "V (vocabulary) must be in 1..16777216";
    if (cfg->Vp != 0 && (cfg->Vp < cfg->V || cfg->Vp > (1 << 24) + 128))
        return "Vp must be in V..16777344 (or 0: V padded up to a multiple of 128)";
    if (cfg->arch != ARCH_GPT2 && cfg->arch != ARCH_LLAMA) return "unknown architecture";
    if (cfg->arch == ARCH_LLAMA) {
        if (cfg->KVH < 0 || cfg->KVH > cfg->NH || (cfg->KVH && cfg->NH % cfg->KVH))
            return "KVH (key/value heads) must divide NH (heads)";
        if (cfg->hidden < 0 || cfg->hidden > 1 << 20)
            return "hidden must be in 1..1048576 (or 0: llama2.c's default)";
        if ((cfg->C / cfg->NH) % 2) return "the head size C/NH must be even (rotary embedding)";
        if (!(cfg->rope_theta >= 0.0f && cfg->rope_theta < 1e30f)) return "bad rope theta";
    }
    return NULL;
}

// One allocation for all the parameters (or their gradients), carved into `tensors`.
// `what` says what they hold, for the message when memory runs out.
static float *model_alloc_params(const Model *model, ParamTensors *tensors, const char *what) {
    size_t n = model->num_parameters;
    float *memory = alloc_check(dev_alloc(n), "the model", (double)n * sizeof(float), what);
    carve(tensors, model->param_table, model->num_param_tensors, memory, &model->config, 0, 0);
    return memory;
}

static void model_build(Model *model, Config cfg) {
    memset(model, 0, sizeof *model);
    model->config = cfg;
    model->param_table = param_table(&cfg, &model->num_param_tensors);
    for (int i = 0; i < model->num_param_tensors; i++)
        model->param_sizes[i] = (size_t)tensor_count(&model->param_table[i], &cfg, 0, 0);
    model->num_parameters = count_parameters(&cfg);
    double bytes = (double)model->num_parameters * sizeof(float);
    if (!fits_memory(bytes))
        die("the model (L=%d NH=%d C=%d maxT=%d V=%d) needs %.1f GiB of parameters; " DEVICE_HAS
            " %.1f GiB", cfg.L, cfg.NH, cfg.C, cfg.maxT, cfg.V, bytes / GIB, device_gib());
    model->params_memory = model_alloc_params(model, &model->params, "parameters");
}

// Fills the parameters as the table's `init` says, drawing the normal values tensor after
// tensor in table order from a generator seeded with `seed`.
static void model_init_random(Model *model, uint64_t seed) {
    const Config *cfg = &model->config;
    float *host = xcalloc(model->num_parameters, sizeof(float)); // INIT_ZEROS: nothing to do
    Rng rng = rng_seeded(seed);
    float *next = host;
    for (int i = 0; i < model->num_param_tensors; i++) {
        const TensorSpec *spec = &model->param_table[i];
        size_t n = model->param_sizes[i];
        // the padded rows V..Vp-1 of a (Vp, ...) tensor are not drawn: they stay zero
        int vocab_rows = spec->shape[0] == D_Vp || spec->shape[0] == D_CLS;
        size_t live = vocab_rows ? n / cfg->Vp * cfg->V : n;
        float std = spec->init == INIT_NORMAL_SCALED ? 0.02f / sqrtf(2.0f * cfg->L) : 0.02f;
        if (spec->init == INIT_ONES)
            for (size_t j = 0; j < n; j++) next[j] = 1.0f;
        if (spec->init == INIT_NORMAL || spec->init == INIT_NORMAL_SCALED)
            for (size_t j = 0; j < live; j++) next[j] = std * rng_normal(&rng);
        next += n;
    }
    dev_to_device(model->params_memory, host, model->num_parameters * sizeof(float));
    free(host);
}

static void model_free(Model *model) {
    dev_free(model->params_memory);
    dev_free(model->grads_memory);
    dev_free(model->m_memory);
    dev_free(model->v_memory);
    dev_free(model->acts_memory);
    dev_free(model->grad_acts_memory);
    dev_free(model->inputs);
    dev_free(model->targets);
    dev_free(model->positions);
    dev_free(model->coefs);
    free(model->host_logprobs);
}

// Allocates activations for batches of up to B rows of up to T tokens, after checking that
// they fit: B and T come from flags and data.
static void model_alloc_activations(Model *model, int B, int T) {
    const Config *cfg = &model->config;
    dev_free(model->acts_memory);
    dev_free(model->grad_acts_memory);
    dev_free(model->inputs);
    dev_free(model->targets);
    dev_free(model->positions);
    dev_free(model->coefs);
    free(model->host_logprobs);

    char who[64];
    snprintf(who, sizeof who, "B=%d T=%d", B, T);
    double bytes = activation_bytes(cfg, B, T);
    if ((double)B * T > INT32_MAX) die("%s: B*T must be below 2^31 tokens", who);
    if (!fits_memory(bytes))
        die("%s needs %.1f GiB of activations; " DEVICE_HAS " %.1f GiB", who, bytes / GIB,
            device_gib());
    // below the device's memory, every size is an exact integer in double and fits size_t
    int n_acts, n_grads;
    const TensorSpec *act_specs = act_table(cfg, &n_acts), *grad_specs = grad_act_table(cfg, &n_grads);
    size_t acts = (size_t)table_count(act_specs, n_acts, cfg, B, T);
    model->acts_memory = alloc_check(dev_alloc(acts), who, bytes, "activations");
    carve(&model->acts, act_specs, n_acts, model->acts_memory, cfg, B, T);
    size_t grad_acts = (size_t)table_count(grad_specs, n_grads, cfg, B, T);
    model->grad_acts_memory = alloc_check(dev_alloc(grad_acts), who, bytes, "activations");
    carve(&model->grad_acts, grad_specs, n_grads, model->grad_acts_memory, cfg, B, T);

    size_t BT = (size_t)B * T;
    model->inputs = alloc_check(dev_alloc_int(BT), who, bytes, "activations");
    model->targets = alloc_check(dev_alloc_int(BT), who, bytes, "activations");
    model->positions = alloc_check(dev_alloc_int(BT), who, bytes, "activations");
    model->coefs = alloc_check(dev_alloc(BT), who, bytes, "activations");
    model->host_logprobs = xmalloc(BT * sizeof(float));
    model->act_B = B;
    model->act_T = T;
}

// ---------------------------------------------------------------------------------------------
// --detect-anomaly: the tensors that the kernels of the forward and backward passes (and of
// AdamW) wrote are searched for NaN and infinity through the kernel interface
// (dev_count_nonfinite), in the order the kernels wrote them. The first tensor that is not
// finite stops the program with the kernel that wrote it, its layer and its name: the place
// where the numbers went wrong, rather than the loss many kernels later. Off (the default), a
// check costs one test of a flag.

// Stops the program if x (n) holds NaN or infinity; `kernel` wrote it into the tensor `name`.
static void check_finite(const char *kernel, int layer, const char *name, const float *x,
                         size_t n) {
    size_t bad = dev_count_nonfinite(x, n);
    if (!bad) return;
    char where[32] = "";
    if (layer >= 0) snprintf(where, sizeof where, " in layer %d", layer);
    die("--detect-anomaly: %s%s wrote %zu non-finite values (of %zu) into %s; every kernel "
        "before it wrote finite values", kernel, where, bad, n, name);
}

// After the forward pass: it keeps every activation, so one pass over the table in the order
// the kernels ran finds the first kernel that wrote a non-finite value — the embeddings, then
// block 0's tensors, block 1's, ..., then the head's.
static void detect_anomaly_forward(const Model *model) {
    if (!model->detect_anomaly) return;
    const Config *cfg = &model->config;
    int count;
    const TensorSpec *acts = act_table(cfg, &count);
    for (int i = 0; i < count;) {
        int per_layer = acts[i].shape[0] == D_L, end = i + 1;
        while (per_layer && end < count && acts[end].shape[0] == D_L) end++;
        for (int l = 0; l < (per_layer ? cfg->L : 1); l++)
            for (int k = i; k < end; k++) {
                size_t n;
                const float *x = tensor_slice(&model->acts, &acts[k], cfg, model->B, model->T, l,
                                              &n);
                check_finite(acts[k].kernel, per_layer ? l : -1, acts[k].name, x, n);
            }
        i = end;
    }
}

// The backward pass reuses its scratch gradients (GradActTensors) from stage to stage, so it is
// checked as each stage ends: the head (classifier and final LayerNorm), each block's MLP and
// then its attention (last block first), and the encoder. The table says what each kernel of a
// stage writes, in the order the stage runs them: the logits (which dlogits overwrites), a
// gradient of the activations, or the gradient of a parameter (of this layer, for a block).
typedef enum { STAGE_HEAD, STAGE_MLP, STAGE_ATTENTION, STAGE_ENCODER } BackwardStage;
typedef enum { IN_ACTS, IN_GRAD_ACTS, IN_GRADS } Holder;
typedef struct {
    BackwardStage stage;
    const char *kernel, *name;
    Holder holder;  // the struct that holds the tensor's pointer...
    size_t offset;  // ...at this offset
} BackwardOutput;

#define DLOGITS IN_ACTS, offsetof(ActTensors, logits)
#define DACT(name) IN_GRAD_ACTS, offsetof(GradActTensors, name)
#define DPARAM(name) IN_GRADS, offsetof(ParamTensors, name)
static const BackwardOutput GPT2_BACKWARD[] = {
    {STAGE_HEAD, "classifier_backward", "dlogits", DLOGITS},
    {STAGE_HEAD, "matmul_backward", "dlnf", DACT(ln)},
    {STAGE_HEAD, "matmul_backward", "dwte", DPARAM(wte)},
    {STAGE_HEAD, "layernorm_backward", "dresidual", DACT(residual)},
    {STAGE_HEAD, "layernorm_backward", "dlnfw", DPARAM(lnfw)},
    {STAGE_HEAD, "layernorm_backward", "dlnfb", DPARAM(lnfb)},
    {STAGE_MLP, "matmul_backward", "dfch_gelu", DACT(fch_gelu)},
    {STAGE_MLP, "matmul_backward", "dfcprojw", DPARAM(fcprojw)},
    {STAGE_MLP, "matmul_backward", "dfcprojb", DPARAM(fcprojb)},
    {STAGE_MLP, "gelu_backward", "dfch", DACT(fch)},
    {STAGE_MLP, "matmul_backward", "dln2", DACT(ln)},
    {STAGE_MLP, "matmul_backward", "dfcw", DPARAM(fcw)},
    {STAGE_MLP, "matmul_backward", "dfcb", DPARAM(fcb)},
    {STAGE_MLP, "layernorm_backward", "dresidual2", DACT(residual)},
    {STAGE_MLP, "layernorm_backward", "dln2w", DPARAM(ln2w)},
    {STAGE_MLP, "layernorm_backward", "dln2b", DPARAM(ln2b)},
    {STAGE_ATTENTION, "matmul_backward", "datty", DACT(atty)},
    {STAGE_ATTENTION, "matmul_backward", "dattprojw", DPARAM(attprojw)},
    {STAGE_ATTENTION, "matmul_backward", "dattprojb", DPARAM(attprojb)},
    {STAGE_ATTENTION, "attention_backward", "dqkv", DACT(qkv)},
    {STAGE_ATTENTION, "matmul_backward", "dln1", DACT(ln)},
    {STAGE_ATTENTION, "matmul_backward", "dqkvw", DPARAM(qkvw)},
    {STAGE_ATTENTION, "matmul_backward", "dqkvb", DPARAM(qkvb)},
    {STAGE_ATTENTION, "layernorm_backward", "dresidual", DACT(residual)},
    {STAGE_ATTENTION, "layernorm_backward", "dln1w", DPARAM(ln1w)},
    {STAGE_ATTENTION, "layernorm_backward", "dln1b", DPARAM(ln1b)},
    {STAGE_ENCODER, "encoder_backward", "dwte", DPARAM(wte)},
    {STAGE_ENCODER, "encoder_backward", "dwpe", DPARAM(wpe)}};
#define NUM_BACKWARD_OUTPUTS (int)(sizeof GPT2_BACKWARD / sizeof GPT2_BACKWARD[0])

// Llama's (the classifier's gradient goes to wcls when it is not tied: see llama_backward).
static const BackwardOutput LLAMA_BACKWARD[] = {
    {STAGE_HEAD, "classifier_backward", "dlogits", DLOGITS},
    {STAGE_HEAD, "matmul_backward", "drms_final_out", DACT(ln)},
    {STAGE_HEAD, "matmul_backward", "dtok_embeddings", DPARAM(wte)},
    {STAGE_HEAD, "matmul_backward", "dwcls", DPARAM(wcls)},
    {STAGE_HEAD, "rmsnorm_backward", "dresidual", DACT(residual)},
    {STAGE_HEAD, "rmsnorm_backward", "drms_final", DPARAM(lnfw)},
    {STAGE_MLP, "matmul_backward", "dswiglu", DACT(fch_gelu)},
    {STAGE_MLP, "matmul_backward", "dw2", DPARAM(fcprojw)},
    {STAGE_MLP, "swiglu_backward", "dw13_out", DACT(fch)},
    {STAGE_MLP, "matmul_backward", "drms_ffn_out", DACT(ln)},
    {STAGE_MLP, "matmul_backward", "dw13", DPARAM(fcw)},
    {STAGE_MLP, "rmsnorm_backward", "dresidual2", DACT(residual)},
    {STAGE_MLP, "rmsnorm_backward", "drms_ffn", DPARAM(ln2w)},
    {STAGE_ATTENTION, "matmul_backward", "datty", DACT(atty)},
    {STAGE_ATTENTION, "matmul_backward", "dwo", DPARAM(attprojw)},
    {STAGE_ATTENTION, "attention_backward", "dqkv_rotated", DACT(qkvr)},
    {STAGE_ATTENTION, "rope_backward", "dqkv", DACT(qkv)},
    {STAGE_ATTENTION, "matmul_backward", "drms_att_out", DACT(ln)},
    {STAGE_ATTENTION, "matmul_backward", "dwqkv", DPARAM(qkvw)},
    {STAGE_ATTENTION, "rmsnorm_backward", "dresidual", DACT(residual)},
    {STAGE_ATTENTION, "rmsnorm_backward", "drms_att", DPARAM(ln1w)},
    {STAGE_ENCODER, "encoder_backward", "dtok_embeddings", DPARAM(wte)}};
#define NUM_LLAMA_BACKWARD (int)(sizeof LLAMA_BACKWARD / sizeof LLAMA_BACKWARD[0])

// At the end of a stage of the backward pass (layer: the block's, or -1).
static void detect_anomaly_backward(const Model *model, BackwardStage stage, int layer) {
    if (!model->detect_anomaly) return;
    const Config *cfg = &model->config;
    int llama = cfg->arch == ARCH_LLAMA, n_outputs = llama ? NUM_LLAMA_BACKWARD : NUM_BACKWARD_OUTPUTS;
    int unused;
    for (int i = 0; i < n_outputs; i++) {
        const BackwardOutput *out = llama ? &LLAMA_BACKWARD[i] : &GPT2_BACKWARD[i];
        if (out->stage != stage) continue;
        const void *tensors; // the struct that holds the tensor, and the first row of its table
        const TensorSpec *spec;
        switch (out->holder) {
        case IN_ACTS: tensors = &model->acts; spec = act_table(cfg, &unused); break;
        case IN_GRAD_ACTS: tensors = &model->grad_acts; spec = grad_act_table(cfg, &unused); break;
        default: tensors = &model->grads; spec = model->param_table; break;
        }
        while (spec->offset != out->offset) spec++; // the tensor's row
        size_t n;
        const float *x = tensor_slice(tensors, spec, &model->config, model->B, model->T, layer,
                                      &n);
        check_finite(out->kernel, layer, out->name, x, n);
    }
}

// After AdamW: each parameter tensor, then its two moments, tensor after tensor.
static void detect_anomaly_adamw(const Model *model) {
    if (!model->detect_anomaly) return;
    size_t offset = 0;
    for (int i = 0; i < model->num_param_tensors; i++) {
        const char *name = model->param_table[i].name;
        size_t n = model->param_sizes[i];
        char m_name[32], v_name[32];
        snprintf(m_name, sizeof m_name, "m of %s", name);
        snprintf(v_name, sizeof v_name, "v of %s", name);
        check_finite("adamw_update", -1, name, model->params_memory + offset, n);
        check_finite("adamw_update", -1, m_name, model->m_memory + offset, n);
        check_finite("adamw_update", -1, v_name, model->v_memory + offset, n);
        offset += n;
    }
}

static void gpt2_forward(Model *model);
static void llama_forward(Model *model);
// The forward pass. inputs, targets (B,T) are host arrays; a target < 0 means "no target here".
// pos (B,T), a host array, gives each token's position within its example when a row packs
// several examples (model.h, "Examples in a row"); NULL: one example per row. Afterwards
// model->host_logprobs (B,T) holds log p(target) at every position. The shape's own forward
// pass (gpt2_forward or llama_forward) runs on the batch placed on the device here.
static void model_forward(Model *model, const int *inputs, const int *targets, const int *pos,
                          int B, int T) {
    const Config *cfg = &model->config;
    if (T > cfg->maxT) die("sequence length %d exceeds the model's context %d", T, cfg->maxT);
    if (B > model->act_B || T > model->act_T)
        model_alloc_activations(model, B > model->act_B ? B : model->act_B,
                                T > model->act_T ? T : model->act_T);
    int BT = B * T;
    for (int i = 0; i < BT; i++)
        if (inputs[i] < 0 || inputs[i] >= cfg->V || targets[i] >= cfg->V)
            die("token id %d at position %d is outside the vocabulary of %d",
                inputs[i] < 0 || inputs[i] >= cfg->V ? inputs[i] : targets[i], i, cfg->V);
    dev_to_device(model->inputs, inputs, BT * sizeof(int));
    dev_to_device(model->targets, targets, BT * sizeof(int));
    if (pos) {
        for (int i = 0; i < BT; i++) // a row is examples back to back, each counting from 0
            if (pos[i] != 0 && (i % T == 0 || pos[i] != pos[i - 1] + 1))
                die("position %d at token %d of row %d does not continue its example", pos[i],
                    i % T, i / T);
        dev_to_device(model->positions, pos, BT * sizeof(int));
    }
    model->packed = pos != NULL;
    model->B = B;
    model->T = T;
    if (cfg->arch == ARCH_LLAMA) llama_forward(model);
    else gpt2_forward(model);
    detect_anomaly_forward(model);
    dev_to_host(model->host_logprobs, model->acts.logprobs, BT * sizeof(float));
}

// GPT-2's forward pass over the batch that model_forward placed on the device.
static void gpt2_forward(Model *model) {
    const Config *cfg = &model->config;
    int B = model->B, T = model->T;
    int L = cfg->L, C = cfg->C, NH = cfg->NH, H = cfg->hidden, BT = B * T;
    ParamTensors p = model->params;
    ActTensors a = model->acts;
    float eps = cfg->norm_eps;
    const int *positions = model->packed ? model->positions : NULL;
    encoder_forward(a.encoded, model->inputs, positions, p.wte, p.wpe, B, T, C);
    for (int l = 0; l < L; l++) {
        size_t c = (size_t)l * C, btc = (size_t)l * BT * C, bth = (size_t)l * BT * H;
        const float *residual = l == 0 ? a.encoded : a.residual3 + btc - (size_t)BT * C;
        float *ln1 = a.ln1 + btc, *qkv = a.qkv + 3 * btc, *atty = a.atty + btc;
        float *att = a.att + (size_t)l * B * NH * T * T, *attproj = a.attproj + btc;
        float *residual2 = a.residual2 + btc, *ln2 = a.ln2 + btc, *fch = a.fch + bth;
        float *fch_gelu = a.fch_gelu + bth, *fcproj = a.fcproj + btc;
        float *residual3 = a.residual3 + btc;
        float *ln1_mean = a.ln1_mean + l * BT, *ln1_rstd = a.ln1_rstd + l * BT;
        float *ln2_mean = a.ln2_mean + l * BT, *ln2_rstd = a.ln2_rstd + l * BT;

        layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, p.ln1w + c, p.ln1b + c, BT, C, eps);
        matmul_forward(qkv, ln1, p.qkvw + 3 * c * C, p.qkvb + 3 * c, BT, C, 3 * C);
        attention_forward(atty, att, qkv, positions, B, T, C, NH, NH);
        matmul_forward(attproj, atty, p.attprojw + c * C, p.attprojb + c, BT, C, C);
        residual_forward(residual2, residual, attproj, (size_t)BT * C);
        layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, p.ln2w + c, p.ln2b + c, BT, C, eps);
        matmul_forward(fch, ln2, p.fcw + (size_t)l * H * C, p.fcb + (size_t)l * H, BT, C, H);
        gelu_forward(fch_gelu, fch, (size_t)BT * H);
        matmul_forward(fcproj, fch_gelu, p.fcprojw + (size_t)l * C * H, p.fcprojb + c, BT, H, C);
        residual_forward(residual3, residual2, fcproj, (size_t)BT * C);
    }
    const float *final_residual = a.residual3 + (size_t)(L - 1) * BT * C;
    layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, final_residual, p.lnfw, p.lnfb, BT, C, eps);
    matmul_forward(a.logits, a.lnf, p.wte, NULL, BT, C, cfg->Vp);
    classifier_forward(a.logprobs, a.lse, a.logits, model->targets, BT, cfg->V, cfg->Vp);
}

// Llama's forward pass, as llama2.c's run.c computes it for one token, for the whole batch.
static void llama_forward(Model *model) {
    const Config *cfg = &model->config;
    int B = model->B, T = model->T;
    int L = cfg->L, C = cfg->C, NH = cfg->NH, KVH = cfg->KVH, H = cfg->hidden, BT = B * T;
    int QKV = C + 2 * KVH * (C / NH);
    ParamTensors p = model->params;
    ActTensors a = model->acts;
    float eps = cfg->norm_eps;
    const int *positions = model->packed ? model->positions : NULL;
    encoder_forward(a.encoded, model->inputs, positions, p.wte, NULL, B, T, C);
    for (int l = 0; l < L; l++) {
        size_t c = (size_t)l * C, btc = (size_t)l * BT * C, btq = (size_t)l * BT * QKV;
        size_t bth = (size_t)l * BT * H;
        const float *residual = l == 0 ? a.encoded : a.residual3 + btc - (size_t)BT * C;
        float *ln1 = a.ln1 + btc, *qkv = a.qkv + btq, *qkvr = a.qkvr + btq, *atty = a.atty + btc;
        float *att = a.att + (size_t)l * B * NH * T * T, *attproj = a.attproj + btc;
        float *residual2 = a.residual2 + btc, *ln2 = a.ln2 + btc, *fch = a.fch + 2 * bth;
        float *swiglu = a.fch_gelu + bth, *fcproj = a.fcproj + btc;
        float *residual3 = a.residual3 + btc;
        float *ln1_rstd = a.ln1_rstd + l * BT, *ln2_rstd = a.ln2_rstd + l * BT;

        rmsnorm_forward(ln1, ln1_rstd, residual, p.ln1w + c, BT, C, eps);
        matmul_forward(qkv, ln1, p.qkvw + (size_t)l * QKV * C, NULL, BT, C, QKV);
        rope_forward(qkvr, qkv, positions, B, T, C, NH, KVH, cfg->rope_theta);
        attention_forward(atty, att, qkvr, positions, B, T, C, NH, KVH);
        matmul_forward(attproj, atty, p.attprojw + c * C, NULL, BT, C, C);
        residual_forward(residual2, residual, attproj, (size_t)BT * C);
        rmsnorm_forward(ln2, ln2_rstd, residual2, p.ln2w + c, BT, C, eps);
        matmul_forward(fch, ln2, p.fcw + (size_t)l * 2 * H * C, NULL, BT, C, 2 * H);
        swiglu_forward(swiglu, fch, BT, H);
        matmul_forward(fcproj, swiglu, p.fcprojw + (size_t)l * C * H, NULL, BT, H, C);
        residual_forward(residual3, residual2, fcproj, (size_t)BT * C);
    }
    const float *final_residual = a.residual3 + (size_t)(L - 1) * BT * C;
    rmsnorm_forward(a.lnf, a.lnf_rstd, final_residual, p.lnfw, BT, C, eps);
    matmul_forward(a.logits, a.lnf, cfg->tied ? p.wte : p.wcls, NULL, BT, C, cfg->Vp);
    classifier_forward(a.logprobs, a.lse, a.logits, model->targets, BT, cfg->V, cfg->Vp);
}

// A value head's part in a backward pass (section 10): its parameters and their gradients
// (device, w (C) then b), the read positions idx (M) into the batch's B·T positions and
// dout (M) = ∂L/∂(the head's outputs), both on the device.
typedef struct {
    const float *params;
    float *grads;
    const int *idx;
    const float *dout;
    int M;
} HeadGradient;

static void gpt2_backward(Model *model, const float *coefs, const HeadGradient *head);
static void llama_backward(Model *model, const float *coefs, const HeadGradient *head);
// The backward pass of the loss Σ_i coefs[i] · (−logprob_i) plus, when head is not NULL, a loss
// of the value head's outputs, for the batch of the last forward. coefs (B,T) is a host array,
// or NULL: no loss on the log-probs (the classifier's backward is skipped). Gradients are
// overwritten (not accumulated across calls); head->grads too.
static void model_backward_with_head(Model *model, const float *coefs, const HeadGradient *head) {
    if (!model->grads_memory)
        model->grads_memory = model_alloc_params(model, &model->grads, "gradients");
    dev_zero(model->grads_memory, model->num_parameters);
    if (coefs) dev_to_device(model->coefs, coefs, (size_t)model->B * model->T * sizeof(float));
    if (model->config.arch == ARCH_LLAMA) llama_backward(model, coefs, head);
    else gpt2_backward(model, coefs, head);
}

static void model_backward(Model *model, const float *coefs) {
    model_backward_with_head(model, coefs, NULL);
}

// GPT-2's backward pass (the gradients are zero and the coefficients on the device).
static void gpt2_backward(Model *model, const float *coefs, const HeadGradient *head) {
    const Config *cfg = &model->config;
    int B = model->B, T = model->T, BT = B * T;
    int L = cfg->L, C = cfg->C, NH = cfg->NH, H = cfg->hidden;
    const int *positions = model->packed ? model->positions : NULL;

    ParamTensors p = model->params, g = model->grads;
    ActTensors a = model->acts;
    GradActTensors d = model->grad_acts;
    size_t btc_size = (size_t)BT * C, bth_size = (size_t)BT * H;

    // classifier, value head and final LayerNorm
    dev_zero(d.residual, btc_size);
    dev_zero(d.ln, btc_size);
    if (coefs) {
        classifier_backward(a.logits, a.lse, model->targets, model->coefs, BT, cfg->V, cfg->Vp);
        matmul_backward(d.ln, g.wte, NULL, a.logits, a.lnf, p.wte, BT, C, cfg->Vp);
    }
    if (head) {
        dev_zero(head->grads, (size_t)C + 1);
        value_head_backward(d.ln, head->grads, head->grads + C, head->dout, a.lnf, head->idx,
                            head->params, head->M, C);
    }
    layernorm_backward(d.residual, g.lnfw, g.lnfb, d.ln, a.residual3 + (L - 1) * btc_size,
                       p.lnfw, a.lnf_mean, a.lnf_rstd, BT, C);
    detect_anomaly_backward(model, STAGE_HEAD, -1);

    // the blocks, last to first; d.residual holds d loss / d (output of block l)
    for (int l = L - 1; l >= 0; l--) {
        size_t c = (size_t)l * C, btc = l * btc_size, bth = l * bth_size;
        const float *residual = l == 0 ? a.encoded : a.residual3 + btc - btc_size;
        float *dfcprojw = g.fcprojw + (size_t)l * C * H, *dfcw = g.fcw + (size_t)l * H * C;
        float *dfcb = g.fcb + (size_t)l * H, *dqkvw = g.qkvw + 3 * c * C, *dqkvb = g.qkvb + 3 * c;
        dev_zero(d.fch_gelu, bth_size);
        dev_zero(d.fch, bth_size);
        dev_zero(d.ln, btc_size);
        dev_zero(d.atty, btc_size);
        dev_zero(d.qkv, 3 * btc_size);

        // MLP: residual3 = residual2 + fcproj(gelu(fc(ln2(residual2))))
        matmul_backward(d.fch_gelu, dfcprojw, g.fcprojb + c, d.residual, a.fch_gelu + bth,
                        p.fcprojw + (size_t)l * C * H, BT, H, C);
        gelu_backward(d.fch, a.fch + bth, d.fch_gelu, bth_size);
        matmul_backward(d.ln, dfcw, dfcb, d.fch, a.ln2 + btc, p.fcw + (size_t)l * H * C, BT, C, H);
        layernorm_backward(d.residual, g.ln2w + c, g.ln2b + c, d.ln, a.residual2 + btc,
                           p.ln2w + c, a.ln2_mean + l * BT, a.ln2_rstd + l * BT, BT, C);
        detect_anomaly_backward(model, STAGE_MLP, l);

        // attention: residual2 = residual + attproj(attention(qkv(ln1(residual))))
        matmul_backward(d.atty, g.attprojw + c * C, g.attprojb + c, d.residual, a.atty + btc,
                        p.attprojw + c * C, BT, C, C);
        attention_backward(d.qkv, d.atty, a.qkv + 3 * btc, a.att + (size_t)l * B * NH * T * T,
                           positions, B, T, C, NH, NH);
        dev_zero(d.ln, btc_size);
        matmul_backward(d.ln, dqkvw, dqkvb, d.qkv, a.ln1 + btc, p.qkvw + 3 * c * C, BT, C, 3 * C);
        layernorm_backward(d.residual, g.ln1w + c, g.ln1b + c, d.ln, residual, p.ln1w + c,
                           a.ln1_mean + l * BT, a.ln1_rstd + l * BT, BT, C);
        detect_anomaly_backward(model, STAGE_ATTENTION, l);
    }
    encoder_backward(g.wte, g.wpe, d.residual, model->inputs, positions, B, T, C);
    detect_anomaly_backward(model, STAGE_ENCODER, -1);
}

// Llama's backward pass: llama_forward's kernels in reverse order, each by its backward.
static void llama_backward(Model *model, const float *coefs, const HeadGradient *head) {
    const Config *cfg = &model->config;
    int B = model->B, T = model->T, BT = B * T;
    int L = cfg->L, C = cfg->C, NH = cfg->NH, KVH = cfg->KVH, H = cfg->hidden;
    int QKV = C + 2 * KVH * (C / NH);
    const int *positions = model->packed ? model->positions : NULL;
    ParamTensors p = model->params, g = model->grads;
    ActTensors a = model->acts;
    GradActTensors d = model->grad_acts;
    size_t btc_size = (size_t)BT * C, bth_size = (size_t)BT * H, btq_size = (size_t)BT * QKV;

    // classifier, value head and final RMSNorm
    dev_zero(d.residual, btc_size);
    dev_zero(d.ln, btc_size);
    if (coefs) {
        classifier_backward(a.logits, a.lse, model->targets, model->coefs, BT, cfg->V, cfg->Vp);
        matmul_backward(d.ln, cfg->tied ? g.wte : g.wcls, NULL, a.logits, a.lnf,
                        cfg->tied ? p.wte : p.wcls, BT, C, cfg->Vp);
    }
    if (head) {
        dev_zero(head->grads, (size_t)C + 1);
        value_head_backward(d.ln, head->grads, head->grads + C, head->dout, a.lnf, head->idx,
                            head->params, head->M, C);
    }
    rmsnorm_backward(d.residual, g.lnfw, d.ln, a.residual3 + (L - 1) * btc_size, p.lnfw,
                     a.lnf_rstd, BT, C);
    detect_anomaly_backward(model, STAGE_HEAD, -1);

    // the blocks, last to first; d.residual holds d loss / d (output of block l)
    for (int l = L - 1; l >= 0; l--) {
        size_t c = (size_t)l * C, btc = l * btc_size, bth = l * bth_size, btq = l * btq_size;
        const float *residual = l == 0 ? a.encoded : a.residual3 + btc - btc_size;
        dev_zero(d.fch_gelu, bth_size);
        dev_zero(d.fch, 2 * bth_size);
        dev_zero(d.ln, btc_size);
        dev_zero(d.atty, btc_size);
        dev_zero(d.qkvr, btq_size);
        dev_zero(d.qkv, btq_size);

        // MLP: residual3 = residual2 + w2(swiglu(w13(rmsnorm(residual2))))
        matmul_backward(d.fch_gelu, g.fcprojw + (size_t)l * C * H, NULL, d.residual,
                        a.fch_gelu + bth, p.fcprojw + (size_t)l * C * H, BT, H, C);
        swiglu_backward(d.fch, a.fch + 2 * bth, d.fch_gelu, BT, H);
        matmul_backward(d.ln, g.fcw + (size_t)l * 2 * H * C, NULL, d.fch, a.ln2 + btc,
                        p.fcw + (size_t)l * 2 * H * C, BT, C, 2 * H);
        rmsnorm_backward(d.residual, g.ln2w + c, d.ln, a.residual2 + btc, p.ln2w + c,
                         a.ln2_rstd + l * BT, BT, C);
        detect_anomaly_backward(model, STAGE_MLP, l);

        // attention: residual2 = residual + wo(attention(rope(wqkv(rmsnorm(residual)))))
        matmul_backward(d.atty, g.attprojw + c * C, NULL, d.residual, a.atty + btc,
                        p.attprojw + c * C, BT, C, C);
        attention_backward(d.qkvr, d.atty, a.qkvr + btq, a.att + (size_t)l * B * NH * T * T,
                           positions, B, T, C, NH, KVH);
        rope_backward(d.qkv, d.qkvr, positions, B, T, C, NH, KVH, cfg->rope_theta);
        dev_zero(d.ln, btc_size);
        matmul_backward(d.ln, g.qkvw + (size_t)l * QKV * C, NULL, d.qkv, a.ln1 + btc,
                        p.qkvw + (size_t)l * QKV * C, BT, C, QKV);
        rmsnorm_backward(d.residual, g.ln1w + c, d.ln, residual, p.ln1w + c, a.ln1_rstd + l * BT,
                         BT, C);
        detect_anomaly_backward(model, STAGE_ATTENTION, l);
    }
    encoder_backward(g.wte, NULL, d.residual, model->inputs, positions, B, T, C);
    detect_anomaly_backward(model, STAGE_ENCODER, -1);
}

// AdamW settings and the clipping threshold (clip <= 0: no clipping).
typedef struct {
    float lr, beta1, beta2, eps, weight_decay, clip;
} OptimizerSettings;

// AdamW's moments m and v, zero until the first update; allocated on first use.
static void model_alloc_moments(Model *model) {
    if (model->m_memory) return;
    size_t n = model->num_parameters;
    double bytes = 2.0 * n * sizeof(float);
    model->m_memory = alloc_check(dev_alloc(n), "the model", bytes, "AdamW moments");
    model->v_memory = alloc_check(dev_alloc(n), "the model", bytes, "AdamW moments");
    dev_zero(model->m_memory, n);
    dev_zero(model->v_memory, n);
}

// The global norm of the last backward's gradient, sqrt(Σ g²) over every parameter.
static float model_grad_norm(const Model *model) {
    return (float)sqrt(sum_squares(model->grads_memory, model->num_parameters));
}

// One AdamW step (t = 1, 2, ... counts the steps applied) from the gradients of the last
// backward, whose global norm is `norm`; a gradient whose norm exceeds clip is scaled down to it.
static void model_apply_update(Model *model, const OptimizerSettings *opt, float norm, int t) {
    model_alloc_moments(model);
    // as torch.nn.utils.clip_grad_norm_: scale = clip / (norm + 1e-6), applied only if < 1
    float scale = 1.0f;
    if (opt->clip > 0.0f && norm > opt->clip) scale = opt->clip / (norm + 1e-6f);
    size_t offset = 0;
    for (int i = 0; i < model->num_param_tensors; i++) { // weight decay differs between tensors
        size_t n = model->param_sizes[i];
        float wd = model->param_table[i].decay ? opt->weight_decay : 0.0f;
        adamw_update(model->params_memory + offset, model->grads_memory + offset,
                     model->m_memory + offset, model->v_memory + offset, n, opt->lr, opt->beta1,
                     opt->beta2, opt->eps, wd, scale, t);
        offset += n;
    }
    detect_anomaly_adamw(model);
}

// Both: one optimizer step; returns the gradient norm before clipping.
static float model_update(Model *model, const OptimizerSettings *opt, int t) {
    float norm = model_grad_norm(model);
    model_apply_update(model, opt, norm, t);
    return norm;
}

// =============================================================================================
// 3. Checkpoints
// A model is saved in llm.c's GPT-2 checkpoint format, so that a model can come in from llm.c
// (GPT-2 124M loads as is) and a student can go back out to llm.c's tools. Numbers are in the
// machine's byte order: little-endian on x86 and ARM, as in llm.c's files.
//   header 256 × int32: [0] magic 20240326, [1] version 3 (float32 weights; llm.c's version 5,
//     bfloat16, is refused), [2] maxT (context length), [3] V (vocabulary), [4] L (layers),
//     [5] NH (heads), [6] C (channels), [7] Vp (V padded up, below), [8..255] zero
//   then the 16 parameter tensors as float32, back to back, in the order of ParamTensors:
//     wte (Vp,C) wpe (maxT,C) ln1w ln1b (L,C) qkvw (L,3C,C) qkvb (L,3C) attprojw (L,C,C)
//     attprojb (L,C) ln2w ln2b (L,C) fcw (L,4C,C) fcb (L,4C) fcprojw (L,C,4C) fcprojb (L,C)
//     lnfw lnfb (C); each holds all layers, layer 0 first, and a matrix is (out, in) as in
//     PyTorch's nn.Linear. The file is exactly 1024 + 4 × (number of parameters) bytes.
// The padded vocabulary: wte has Vp rows (GPT-2: 50304 for V = 50257; a fresh model pads V up
// to a multiple of 128), llm.c's choice, for matrix products of a round size. Rows V..Vp-1 are
// zero (in a fresh model and in llm.c's files) and stay zero: no input id is V or above, and the
// softmax and its gradient cover only the first V columns (classifier_forward/backward).
// Beside the model, PATH.state holds what a run needs to resume exactly (llm.c's magic number
// for a training state, our own layout):
//   header 256 × int32: [0] magic 20240527, [1] version 1, [2] step (steps done, skipped ones
//     included), [3..4] the random generator's state (uint64), [5..6] number of parameters
//     (uint64), [7..8] hash of the parameters it belongs with (uint64), [9] B, [10] T,
//     [11] shuffle, [12..13] seed (uint64), [14] best validation loss so far (float32 bits),
//     [15] steps skipped for a non-finite loss or gradient (section 4), [16] how many of the
//     last steps in a row were skipped; the rest zero
//   then the AdamW moments m and v, each num_parameters float32.
// The data position is the step: batch i of a run is a function of i (lib/tokens.h).
// A Llama model is saved in our own format, llm.c's layout with its own magic number (llm.c has
// no Llama file it could read; llama2.c's files come in and go out through section 3b):
//   header 256 × int32: [0] magic 20261116, [1] version 1, [2] maxT, [3] V, [4] L, [5] NH,
//     [6] C, [7] Vp, [8] KVH (key/value heads), [9] hidden (the SwiGLU width), [10] 1 when the
//     classifier is tied to the token embedding, [11] rope theta (float32 bits), [12..255] zero
//   then the parameter tensors of LLAMA_PARAMS as float32, in its order: tok_embeddings (Vp,C)
//     rms_att (L,C) wqkv (L,C+2·KVC,C) wo (L,C,C) rms_ffn (L,C) w13 (L,2·hidden,C)
//     w2 (L,C,hidden) rms_final (C), and wcls (Vp,C) only when untied; KVC = KVH·C/NH. wqkv
//     holds each layer's wq, wk, wv rows in turn, w13 each layer's w1 then w3 rows.
// =============================================================================================
#define MODEL_MAGIC 20240326
#define LLAMA_MAGIC 20261116
#define LLAMA_VERSION 1
#define MODEL_VERSION_FP32 3
#define MODEL_VERSION_BF16 5
#define STATE_MAGIC 20240527
#define STATE_VERSION 1

static void header_put_u64(int32_t *header, int index, uint64_t value) {
    memcpy(header + index, &value, 8);
}
static uint64_t header_get_u64(const int32_t *header, int index) {
    uint64_t value;
    memcpy(&value, header + index, 8);
    return value;
}

// Writes the weights into an open SafeFile (model_save and checkpoint_save commit it).
static void model_write(const Model *model, SafeFile *sf) {
    const Config *cfg = &model->config;
    int32_t header[HEADER_INTS] = {0};
    int llama = cfg->arch == ARCH_LLAMA;
    header[0] = llama ? LLAMA_MAGIC : MODEL_MAGIC;
    header[1] = llama ? LLAMA_VERSION : MODEL_VERSION_FP32;
    header[2] = cfg->maxT;
    header[3] = cfg->V;
    header[4] = cfg->L;
    header[5] = cfg->NH;
    header[6] = cfg->C;
    header[7] = cfg->Vp;
    if (llama) {
        header[8] = cfg->KVH;
        header[9] = cfg->hidden;
        header[10] = cfg->tied;
        memcpy(header + 11, &cfg->rope_theta, sizeof(float));
    }
    size_t bytes = model->num_parameters * sizeof(float);
    float *host = xmalloc(bytes);
    dev_to_host(host, model->params_memory, bytes);
    safe_write(sf, header, sizeof header);
    safe_write(sf, host, bytes);
    free(host);
}

static void model_save(const Model *model, const char *path) {
    SafeFile sf;
    safe_open(&sf, path);
    model_write(model, &sf);
    safe_commit(&sf);
}

// Reads a checkpoint's header and checks it: magic, version, a shape within config_problem's
// limits, and that a file of file_bytes bytes holds exactly the parameters of that shape, all
// before anything is allocated (a header claiming 2^31 layers is refused here). header points at
// the file's first header_bytes bytes (fewer than 1024: the header is truncated; more are not
// read). Returns 0 and the configuration, or -1 with "PATH: what is wrong" in err.
static int model_read_header(const void *header_bytes_data, size_t header_bytes, size_t file_bytes,
                             const char *path, Config *out, char *err, size_t errlen) {
    int32_t header[HEADER_INTS];
    if (header_bytes < sizeof header) {
        snprintf(err, errlen, "%s: truncated header (%zu of 1024 bytes); not an llm.c checkpoint",
                 path, header_bytes);
        return -1;
    }
    memcpy(header, header_bytes_data, sizeof header);
    int llama = header[0] == LLAMA_MAGIC;
    if (header[0] != MODEL_MAGIC && !llama) {
        snprintf(err, errlen, "%s: bad magic %d (expected %d): not an llm.c model checkpoint",
                 path, header[0], MODEL_MAGIC);
        return -1;
    }
    if (llama && header[1] != LLAMA_VERSION) {
        snprintf(err, errlen, "%s: unsupported version %d of a sirt Llama checkpoint (expected 1)",
                 path, header[1]);
        return -1;
    }
    if (llama && (header[8] < 1 || header[9] < 1 || (header[10] != 0 && header[10] != 1))) {
        snprintf(err, errlen, "%s: bad Llama header (KVH=%d hidden=%d tied=%d)", path, header[8],
                 header[9], header[10]);
        return -1;
    }
    if (!llama && header[1] == MODEL_VERSION_BF16) {
        snprintf(err, errlen, "%s: version 5 (bfloat16 weights) is not supported; export float32 "
                 "(version 3)", path);
        return -1;
    }
    if (!llama && header[1] != MODEL_VERSION_FP32) {
        snprintf(err, errlen, "%s: unsupported version %d (expected 3, float32)", path, header[1]);
        return -1;
    }
    Config cfg = {0};
    if (llama) {
        cfg.arch = ARCH_LLAMA;
        cfg.KVH = header[8];
        cfg.hidden = header[9];
        cfg.tied = header[10];
        memcpy(&cfg.rope_theta, header + 11, sizeof(float));
        if (!(cfg.rope_theta > 0.0f)) {
            snprintf(err, errlen, "%s: bad rope theta %g", path, cfg.rope_theta);
            return -1;
        }
    }
    cfg.maxT = header[2];
    cfg.V = header[3];
    cfg.L = header[4];
    cfg.NH = header[5];
    cfg.C = header[6];
    cfg.Vp = header[7];
    if (cfg.Vp < cfg.V) {
        snprintf(err, errlen, "%s: padded vocabulary Vp=%d is below V=%d", path, cfg.Vp, cfg.V);
        return -1;
    }
    const char *problem = config_problem(&cfg);
    if (problem) {
        snprintf(err, errlen, "%s: bad header (L=%d NH=%d C=%d maxT=%d V=%d Vp=%d): %s", path,
                 cfg.L, cfg.NH, cfg.C, cfg.maxT, cfg.V, cfg.Vp, problem);
        return -1;
    }
    config_finish(&cfg);
    size_t expected = sizeof header + count_parameters(&cfg) * sizeof(float);
    if (file_bytes != expected) {
        snprintf(err, errlen, "%s: file is %zu bytes but its header (L=%d NH=%d C=%d maxT=%d "
                 "Vp=%d) needs %zu%s", path, file_bytes, cfg.L, cfg.NH, cfg.C, cfg.maxT, cfg.Vp,
                 expected, file_bytes < expected ? " (truncated)" : "");
        return -1;
    }
    *out = cfg;
    return 0;
}

// Reads a checkpoint, checking the header and the file size before allocating anything: llm.c's
// GPT-2 file or our Llama file, or llama2.c's files (section 3b: llama2c_try_load), or a
// directory in Hugging Face's format (section 3c).
static int llama2c_try_load(Model *model, const char *path, char *why, size_t why_len);
static void hf_load(Model *model, const char *dir);
static void model_load(Model *model, const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) { // a Hugging Face directory (section 3c)
        hf_load(model, path);
        return;
    }
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open model %s: %s", path, strerror(errno));
    int32_t header[HEADER_INTS];
    size_t got = fread(header, 1, sizeof header, f);
    if (fseek(f, 0, SEEK_END) != 0) die("%s: cannot seek", path);
    long actual = ftell(f);
    if (actual < 0) die("%s: cannot tell its size", path);
    Config cfg;
    char err[512], why[512];
    if (got < 4 || (header[0] != MODEL_MAGIC && header[0] != LLAMA_MAGIC)) {
        fclose(f);
        int status = llama2c_try_load(model, path, why, sizeof why);
        if (status == 0) return;
        model_read_header(header, got, (size_t)actual, path, &cfg, err, sizeof err);
        if (status < 0) die("%s (nor a llama2.c checkpoint: %s)", err, why);
        die("%s", why); // a llama2.c file's own magic number, with what is wrong with it
    }
    if (model_read_header(header, got, (size_t)actual, path, &cfg, err, sizeof err) != 0)
        die("%s", err);
    fseek(f, sizeof header, SEEK_SET);
    model_build(model, cfg);
    float *host = xmalloc(model->num_parameters * sizeof(float));
    if (fread(host, sizeof(float), model->num_parameters, f) != model->num_parameters)
        die("%s: read failed", path);
    fclose(f);
    dev_to_device(model->params_memory, host, model->num_parameters * sizeof(float));
    free(host);
}

static uint64_t model_params_hash(const Model *model) {
    size_t bytes = model->num_parameters * sizeof(float);
    float *host = xmalloc(bytes);
    dev_to_host(host, model->params_memory, bytes);
    uint64_t h = hash_bytes(host, bytes);
    free(host);
    return h;
}

// Where a training run stands: everything besides the weights needed to continue it exactly.
typedef struct {
    int step;         // optimizer updates done
    uint64_t seed;    // the run's seed
    Rng rng;          // the run's random generator (reserved for dropout-like randomness)
    int B, T, shuffle;
    float best_valid_loss; // lowest validation loss so far (SFT keeps that checkpoint)
    int skipped;      // steps whose update was skipped: a non-finite loss or gradient norm
    int bad_streak;   // how many of the last steps in a row were skipped
} TrainState;

static void state_path(char *out, size_t size, const char *model_path) {
    if ((size_t)snprintf(out, size, "%s.state", model_path) >= size) die("path too long");
}

// Writes the training state into an open SafeFile (see checkpoint_save).
static void state_write(const Model *model, const TrainState *st, SafeFile *sf) {
    int32_t header[HEADER_INTS] = {0};
    header[0] = STATE_MAGIC;
    header[1] = STATE_VERSION;
    header[2] = st->step;
    header_put_u64(header, 3, st->rng.state);
    header_put_u64(header, 5, model->num_parameters);
    header_put_u64(header, 7, model_params_hash(model));
    header[9] = st->B;
    header[10] = st->T;
    header[11] = st->shuffle;
    header_put_u64(header, 12, st->seed);
    memcpy(header + 14, &st->best_valid_loss, sizeof(float));
    header[15] = st->skipped;
    header[16] = st->bad_streak;
    size_t bytes = model->num_parameters * sizeof(float);
    float *host = xcalloc(1, bytes); // zero moments when no update has been applied yet
    safe_write(sf, header, sizeof header);
    if (model->m_memory) dev_to_host(host, model->m_memory, bytes);
    safe_write(sf, host, bytes);
    if (model->v_memory) dev_to_host(host, model->v_memory, bytes);
    safe_write(sf, host, bytes);
    free(host);
}

// Saves the weights and the state as one checkpoint. Both are written and synced under their
// .tmp names before either is renamed; then the weights are renamed, then the state. A crash
// between the two renames leaves new weights beside an old state and a complete PATH.state.tmp
// that belongs with them: state_roll_forward finishes that commit at --resume. (The state's
// hash of the weights tells which state belongs with which weights.)
static void checkpoint_save(const Model *model, const TrainState *st, const char *model_path) {
    char path[4200];
    state_path(path, sizeof path, model_path);
    SafeFile files[2];
    safe_open_deferred(&files[0], model_path);
    safe_open_deferred(&files[1], path);
    model_write(model, &files[0]);
    state_write(model, st, &files[1]);
    safe_commit_all(files, 2);
}

// The weights' hash recorded in a training-state file, when the file is complete; 0 otherwise.
// Reads only the header (its layout is state_write's) and the file's size.
static uint64_t state_file_hash(const char *path, size_t num_parameters) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int32_t header[HEADER_INTS];
    int complete = fread(header, sizeof header, 1, f) == 1 && header[0] == STATE_MAGIC &&
                   header[1] == STATE_VERSION && header_get_u64(header, 5) == num_parameters &&
                   fseek(f, 0, SEEK_END) == 0 &&
                   ftell(f) == (long)(sizeof header + 2 * num_parameters * sizeof(float));
    fclose(f);
    return complete ? header_get_u64(header, 7) : 0;
}

// At --resume, after the weights are loaded: when a crash fell between checkpoint_save's two
// renames, PATH.state.tmp is complete and belongs with the weights in PATH. Renaming it over
// PATH.state finishes the interrupted commit. Any other PATH.state.tmp, and PATH.tmp, are the
// remains of a write that a crash interrupted before its renames; they are deleted.
static void state_roll_forward(const Model *model, const char *model_path) {
    char path[4200], temp[4300];
    snprintf(temp, sizeof temp, "%s.tmp", model_path);
    unlink(temp);
    state_path(path, sizeof path, model_path);
    snprintf(temp, sizeof temp, "%s.tmp", path);
    uint64_t hash = state_file_hash(temp, model->num_parameters);
    if (!hash || hash != model_params_hash(model)) {
        unlink(temp);
        return;
    }
    if (rename(temp, path) != 0) die("cannot rename %s to %s: %s", temp, path, strerror(errno));
    printf("finished an interrupted checkpoint: %s belongs with %s, renamed to %s\n", temp,
           model_path, path);
}

// Checks the bytes of a training-state file (path, in messages) against the model it should
// belong with: its number of parameters, the file's size, and the hash of the weights. Returns 0
// with the state in st and *moments pointing at m and then v inside data, or -1 with
// "PATH: what is wrong" in err.
static int state_parse(const Model *model, const unsigned char *data, size_t bytes,
                       const char *path, const char *model_path, TrainState *st,
                       const unsigned char **moments, char *err, size_t errlen) {
    int32_t header[HEADER_INTS];
    if (bytes < sizeof header) {
        snprintf(err, errlen, "%s: truncated header (%zu bytes)", path, bytes);
        return -1;
    }
    memcpy(header, data, sizeof header);
    if (header[0] != STATE_MAGIC) {
        snprintf(err, errlen, "%s: bad magic: not a training-state file", path);
        return -1;
    }
    if (header[1] != STATE_VERSION) {
        snprintf(err, errlen, "%s: unsupported version %d", path, header[1]);
        return -1;
    }
    uint64_t count = header_get_u64(header, 5);
    if (count != model->num_parameters) { // before the size below is computed from it
        snprintf(err, errlen, "%s: holds moments for %llu parameters but the model has %zu", path,
                 (unsigned long long)count, model->num_parameters);
        return -1;
    }
    size_t expected = sizeof header + 2 * count * sizeof(float);
    if (bytes != expected) {
        snprintf(err, errlen, "%s: file is %zu bytes, expected %zu%s", path, bytes, expected,
                 bytes < expected ? " (truncated)" : "");
        return -1;
    }
    if (header_get_u64(header, 7) != model_params_hash(model)) {
        snprintf(err, errlen, "%s does not belong with %s (the weights differ from the ones it "
                 "was saved with)", path, model_path);
        return -1;
    }
    st->step = header[2];
    st->rng.state = header_get_u64(header, 3);
    st->B = header[9];
    st->T = header[10];
    st->shuffle = header[11];
    st->seed = header_get_u64(header, 12);
    memcpy(&st->best_valid_loss, header + 14, sizeof(float));
    if (st->step < 0) {
        snprintf(err, errlen, "%s: negative step %d", path, st->step);
        return -1;
    }
    st->skipped = header[15];
    st->bad_streak = header[16];
    if (st->skipped < 0 || st->skipped > st->step || st->bad_streak < 0 ||
        st->bad_streak > st->skipped) {
        snprintf(err, errlen, "%s: bad counts of skipped steps (%d, %d in a row, of %d steps)",
                 path, st->skipped, st->bad_streak, st->step);
        return -1;
    }
    if (isnan(st->best_valid_loss)) { // INFINITY (no validation yet) is fine, NaN never compares
        snprintf(err, errlen, "%s: the best validation loss is NaN", path);
        return -1;
    }
    *moments = data + sizeof header;
    return 0;
}

static void state_load(Model *model, TrainState *st, const char *model_path) {
    char path[4200];
    state_path(path, sizeof path, model_path);
    size_t bytes;
    unsigned char *data = read_whole_file(path, &bytes);
    if (!data) die("cannot resume: training state %s: %s", path, strerror(errno));
    const unsigned char *moments;
    char err[4600];
    if (state_parse(model, data, bytes, path, model_path, st, &moments, err, sizeof err) != 0) {
        free(data);
        die("%s", err);
    }
    model_alloc_moments(model);
    size_t moment_bytes = model->num_parameters * sizeof(float);
    dev_to_device(model->m_memory, moments, moment_bytes);
    dev_to_device(model->v_memory, moments + moment_bytes, moment_bytes);
    free(data);
}

// The lowest validation loss a stopped run has seen (INFINITY before its first validation), read
// from its checkpoint's training state, which is checked against the weights as --resume checks it.
static float checkpoint_best_valid_loss(const char *model_path) {
    Model model;
    model_load(&model, model_path);
    TrainState st;
    state_load(&model, &st, model_path);
    model_free(&model);
    return st.best_valid_loss;
}

// =============================================================================================
// 3b. llama2.c's checkpoints
// A Llama comes in from llama2.c and goes back out to it. Both of its formats are read (at
// --init, --model, --ref: model_load recognises them), and export writes version 1
// (`./sirt export --format llama2c`). Numbers are little-endian float32 and int32.
//   legacy (what run.c reads): 7 int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//     vocab_size (negative: the classifier is not shared with the embedding), seq_len; then
//     tok_embeddings (V,dim), rms_att (L,dim), wq (L,dim,dim), wk (L,kv_dim,dim),
//     wv (L,kv_dim,dim), wo (L,dim,dim), rms_ffn (L,dim), w1 (L,hidden,dim), w2 (L,dim,hidden),
//     w3 (L,hidden,dim), rms_final (dim), two old RoPE tables of seq_len·head_size/2 floats
//     each (skipped: rope_forward computes the angles), and wcls (V,dim) when not shared.
//   version 1: a 256-byte header: uint32 magic 0x616b3432 ("ak42"), int32 version 1, the same
//     7 int32 (vocab_size positive), uint8 shared_classifier, zeros; then rms_att, rms_ffn,
//     rms_final, tok_embeddings, wq, wk, wv, wo, w1, w2, w3, and wcls when not shared.
// Each file tensor lands in our tables (LLAMA_PARAMS): wq, wk, wv in the rows of wqkv, w1 and w3
// in those of w13, layer by layer; the vocabulary is padded up to Vp with zero rows. The file
// gives no rope theta: 10000, llama2.c's.
// =============================================================================================
#define LLAMA2C_MAGIC 0x616b3432u
#define LLAMA2C_VERSION 1
#define LLAMA2C_V1_HEADER_BYTES 256
#define LLAMA2C_LEGACY_HEADER_BYTES 28

typedef enum {
    L2C_TOK, L2C_RMS_ATT, L2C_WQ, L2C_WK, L2C_WV, L2C_WO, L2C_RMS_FFN, L2C_W1, L2C_W2, L2C_W3,
    L2C_RMS_FINAL, L2C_ROPE_TABLES, L2C_WCLS, L2C_END
} Llama2cTensor;
static const Llama2cTensor LLAMA2C_LEGACY_ORDER[] = {
    L2C_TOK, L2C_RMS_ATT, L2C_WQ, L2C_WK, L2C_WV, L2C_WO, L2C_RMS_FFN, L2C_W1, L2C_W2, L2C_W3,
    L2C_RMS_FINAL, L2C_ROPE_TABLES, L2C_WCLS, L2C_END};
static const Llama2cTensor LLAMA2C_V1_ORDER[] = {
    L2C_RMS_ATT, L2C_RMS_FFN, L2C_RMS_FINAL, L2C_TOK, L2C_WQ, L2C_WK, L2C_WV, L2C_WO, L2C_W1,
    L2C_W2, L2C_W3, L2C_WCLS, L2C_END};

// Where layer l of file tensor t lives in our parameters p (NULL for the skipped RoPE tables),
// and its float count; *layers says how many slices the tensor has (1 or L).
static float *llama2c_slice(const Config *cfg, const ParamTensors *p, Llama2cTensor t, int l,
                            size_t *count, int *layers) {
    size_t C = cfg->C, H = cfg->hidden, KVC = (size_t)cfg->KVH * (C / cfg->NH), QKV = C + 2 * KVC;
    size_t hs = C / cfg->NH;
    *layers = cfg->L;
    switch (t) {
    case L2C_TOK: *layers = 1; *count = (size_t)cfg->V * C; return p->wte;
    case L2C_RMS_ATT: *count = C; return p->ln1w + l * C;
    case L2C_WQ: *count = C * C; return p->qkvw + l * QKV * C;
    case L2C_WK: *count = KVC * C; return p->qkvw + l * QKV * C + C * C;
    case L2C_WV: *count = KVC * C; return p->qkvw + l * QKV * C + (C + KVC) * C;
    case L2C_WO: *count = C * C; return p->attprojw + l * C * C;
    case L2C_RMS_FFN: *count = C; return p->ln2w + l * C;
    case L2C_W1: *count = H * C; return p->fcw + l * 2 * H * C;
    case L2C_W3: *count = H * C; return p->fcw + l * 2 * H * C + H * C;
    case L2C_W2: *count = C * H; return p->fcprojw + l * C * H;
    case L2C_RMS_FINAL: *layers = 1; *count = C; return p->lnfw;
    case L2C_ROPE_TABLES: *layers = 1; *count = (size_t)cfg->maxT * hs; return NULL;
    case L2C_WCLS: *layers = 1; *count = cfg->tied ? 0 : (size_t)cfg->V * C; return p->wcls;
    default: *layers = 0; *count = 0; return NULL;
    }
}

// The floats of a llama2.c file's tensors in this order (double: checked before any allocation).
static double llama2c_floats(const Config *cfg, const Llama2cTensor *order) {
    double total = 0;
    ParamTensors none = {0};
    for (int i = 0; order[i] != L2C_END; i++) {
        size_t count;
        int layers;
        llama2c_slice(cfg, &none, order[i], 0, &count, &layers);
        total += (double)count * layers;
    }
    return total;
}

// Copies every tensor between a llama2.c file's data (file, in `order`) and our parameters p:
// into p when to_file is 0, into file when 1 (the RoPE tables are then zeros: only legacy files
// have them, and export writes version 1).
static void llama2c_copy(const Config *cfg, const ParamTensors *p, const Llama2cTensor *order,
                         float *file, int to_file) {
    for (int i = 0; order[i] != L2C_END; i++) {
        size_t count;
        int layers;
        llama2c_slice(cfg, p, order[i], 0, &count, &layers);
        for (int l = 0; l < layers; l++) {
            float *ours = llama2c_slice(cfg, p, order[i], l, &count, &layers);
            if (ours && to_file) memcpy(file, ours, count * sizeof(float));
            else if (ours) memcpy(ours, file, count * sizeof(float));
            else if (to_file) memset(file, 0, count * sizeof(float));
            file += count;
        }
    }
}

// The configuration of llama2.c's 7 header ints (dims[5], vocab_size, negative when the
// classifier is not shared); NULL, or what is wrong.
static const char *llama2c_config(const int32_t *dims, int shared_flag, Config *out) {
    Config cfg = {.arch = ARCH_LLAMA, .C = dims[0], .hidden = dims[1], .L = dims[2],
                  .NH = dims[3], .KVH = dims[4], .V = dims[5], .maxT = dims[6], .tied = 1};
    if (shared_flag < 0) { // legacy: the sign of vocab_size
        cfg.tied = cfg.V > 0;
        if (cfg.V < 0 && cfg.V != INT32_MIN) cfg.V = -cfg.V;
    } else cfg.tied = shared_flag;
    if (cfg.hidden < 1) return "hidden_dim must be positive";
    if (cfg.KVH < 1) return "n_kv_heads must be positive";
    const char *problem = config_problem(&cfg);
    if (problem) return problem;
    config_finish(&cfg);
    *out = cfg;
    return NULL;
}

// Loads path if it is one of llama2.c's checkpoints: returns 0 (model built and filled), -1 when
// it is not one (why says what did not fit), or 1 when it has version 1's magic number but is
// broken (why is the message, naming the file).
static int llama2c_try_load(Model *model, const char *path, char *why, size_t why_len) {
    size_t bytes;
    unsigned char *data = read_whole_file(path, &bytes);
    if (!data) {
        snprintf(why, why_len, "cannot read it: %s", strerror(errno));
        return -1;
    }
    uint32_t magic = 0;
    if (bytes >= 4) memcpy(&magic, data, 4);
    int v1 = magic == LLAMA2C_MAGIC, header_bytes = v1 ? LLAMA2C_V1_HEADER_BYTES
                                                      : LLAMA2C_LEGACY_HEADER_BYTES;
    const Llama2cTensor *order = v1 ? LLAMA2C_V1_ORDER : LLAMA2C_LEGACY_ORDER;
    int32_t dims[7], version = 0;
    Config cfg;
    const char *problem = NULL;
    if (bytes < (size_t)header_bytes) problem = "shorter than the header";
    else {
        if (v1) memcpy(&version, data + 4, 4);
        memcpy(dims, data + (v1 ? 8 : 0), sizeof dims);
        if (v1 && version != LLAMA2C_VERSION) problem = "unsupported version (expected 1)";
        else problem = llama2c_config(dims, v1 ? data[36] != 0 : -1, &cfg);
    }
    double expected = problem ? 0 : header_bytes + 4.0 * llama2c_floats(&cfg, order);
    if (!problem && (double)bytes != expected) {
        snprintf(why, why_len, "%s%sa llama2.c %s checkpoint of dim %d, %d layers, %d heads, %d "
                 "kv heads, vocabulary %d, seq_len %d has %.0f bytes, the file %zu%s",
                 v1 ? path : "", v1 ? ": " : "", v1 ? "version 1" : "legacy", cfg.C, cfg.L,
                 cfg.NH, cfg.KVH, cfg.V, cfg.maxT, expected, bytes,
                 (double)bytes < expected ? " (truncated)" : "");
        free(data);
        return v1 ? 1 : -1;
    }
    if (problem) {
        if (v1) snprintf(why, why_len, "%s: llama2.c version 1 header: %s", path, problem);
        else snprintf(why, why_len, "its first 7 ints are no llama2.c config: %s", problem);
        free(data);
        return v1 ? 1 : -1;
    }
    model_build(model, cfg);
    float *host = xcalloc(model->num_parameters, sizeof(float)); // padded rows stay zero
    ParamTensors tensors;
    carve(&tensors, model->param_table, model->num_param_tensors, host, &cfg, 0, 0);
    float *floats = xmalloc(bytes - header_bytes); // aligned copy of the tensors
    memcpy(floats, data + header_bytes, bytes - header_bytes);
    llama2c_copy(&cfg, &tensors, order, floats, 0);
    dev_to_device(model->params_memory, host, model->num_parameters * sizeof(float));
    free(floats);
    free(host);
    free(data);
    return 0;
}

// Writes path: header (header_bytes), then the tensors of p in `order` (llama2.c's layout).
static void llama2c_write(const char *path, const void *header, size_t header_bytes,
                          const Config *cfg, const ParamTensors *p, const Llama2cTensor *order) {
    size_t floats = (size_t)llama2c_floats(cfg, order);
    float *file = xmalloc(floats * sizeof(float));
    llama2c_copy(cfg, p, order, file, 1);
    SafeFile sf;
    safe_open(&sf, path);
    safe_write(&sf, header, header_bytes);
    safe_write(&sf, file, floats * sizeof(float));
    safe_commit(&sf);
    free(file);
}

// Writes a Llama as llama2.c's version 1 file (the vocabulary's padding rows are left out).
static void llama2c_save(const Model *model, const char *path) {
    const Config *cfg = &model->config;
    if (cfg->arch != ARCH_LLAMA) die("llama2.c's files hold Llama models; this model is GPT-2");
    if (cfg->rope_theta != 10000.0f)
        die("llama2.c's files have no rope theta (it is 10000); this model's is %g",
            cfg->rope_theta);
    unsigned char header[LLAMA2C_V1_HEADER_BYTES] = {0};
    uint32_t magic = LLAMA2C_MAGIC;
    int32_t version = LLAMA2C_VERSION;
    int32_t dims[7] = {cfg->C, cfg->hidden, cfg->L, cfg->NH, cfg->KVH, cfg->V, cfg->maxT};
    memcpy(header, &magic, 4);
    memcpy(header + 4, &version, 4);
    memcpy(header + 8, dims, sizeof dims);
    header[36] = (unsigned char)cfg->tied;
    float *host = xmalloc(model->num_parameters * sizeof(float));
    dev_to_host(host, model->params_memory, model->num_parameters * sizeof(float));
    ParamTensors tensors;
    carve(&tensors, model->param_table, model->num_param_tensors, host, cfg, 0, 0);
    llama2c_write(path, header, sizeof header, cfg, &tensors, LLAMA2C_V1_ORDER);
    free(host);
}

// =============================================================================================
// 3c. Hugging Face files
// A student goes out to, and a checkpoint comes in from, the Hugging Face ecosystem: a directory
// with `model.safetensors` and `config.json` that transformers loads as LlamaForCausalLM or
// GPT2LMHeadModel (`./sirt export --format hf --out DIR`), and that --init DIR (--model, --ref)
// reads back, e.g. a Llama downloaded elsewhere.
//   safetensors: uint64 N, then N bytes of JSON {"__metadata__": {"format": "pt"}, name:
//     {"dtype", "shape", "data_offsets": [begin, end]}, ...} padded with spaces to a multiple of
//     8, then the data (offsets from its start, tiling it). We write float32 (F32), one tensor
//     per name, the vocabulary cut to V rows; we read F32, BF16 and F16.
//   The names and layouts (hf_tensors): Llama's `model.embed_tokens`, `model.layers.{i}.` +
//     `input_layernorm`, `self_attn.{q,k,v,o}_proj`, `post_attention_layernorm`,
//     `mlp.{gate,up,down}_proj` (= w1, w3, w2), `model.norm`, `lm_head` (only when untied);
//     Hugging Face rotates the halves (i, i + hs/2) of each head where llama2.c (and we) rotate
//     the pairs (2i, 2i+1), so within every head of q_proj (NH heads) and k_proj (KVH heads) our
//     row 2i is its row i and our row 2i+1 its row i + hs/2. GPT-2's `transformer.wte`, `wpe`,
//     `h.{i}.ln_1`, `attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`, `ln_f`;
//     its four matrices are Conv1D, stored (in, out): the transpose of ours. A GPT-2 file saved
//     from GPT2Model (as OpenAI's `gpt2` on the Hub) names them without `transformer.`: read too.
//   config.json: the shape, `tie_word_embeddings`, `rms_norm_eps` 1e-5 (a file with another
//     epsilon is refused: our files keep 1e-5), `rope_theta`, BOS/EOS ids. A file that asks for
//     what our shapes do not compute (rope_scaling, biases in a Llama, another activation, an
//     untied GPT-2) is refused with a message rather than read wrongly.
// =============================================================================================
typedef enum { HF_SAME, HF_TRANSPOSE, HF_ROTATE_HALF } HfLayout;

// One tensor of a Hugging Face file: its name, where it lives in our parameters (rows x cols,
// row-major; cols 0 for a vector), and how Hugging Face lays it out (heads: for HF_ROTATE_HALF).
typedef struct {
    char name[80];
    float *ours;
    int rows, cols;
    HfLayout layout;
    int heads;
} HfTensor;

static void hf_add(HfTensor *t, int *n, float *ours, int rows, int cols, HfLayout layout,
                   int heads, const char *fmt, int layer) {
    HfTensor *x = &t[(*n)++];
    snprintf(x->name, sizeof x->name, fmt, layer);
    x->ours = ours;
    x->rows = rows;
    x->cols = cols;
    x->layout = layout;
    x->heads = heads;
}

// The tensors of a model of this shape, with pointers into p (parameters carved by our table);
// t has room for 16·L + 4. Returns their number.
static int hf_tensors(const Config *cfg, const ParamTensors *p, HfTensor *t) {
    int n = 0, C = cfg->C, H = cfg->hidden, V = cfg->V, NH = cfg->NH, KVH = cfg->KVH;
    size_t c = C, h = H, KVC = (size_t)KVH * (C / NH), QKV = C + 2 * KVC;
    if (cfg->arch == ARCH_LLAMA) {
        hf_add(t, &n, p->wte, V, C, HF_SAME, 0, "model.embed_tokens.weight", 0);
        for (int l = 0; l < cfg->L; l++) {
            float *qkv = p->qkvw + l * QKV * c, *w13 = p->fcw + l * 2 * h * c;
            hf_add(t, &n, p->ln1w + l * c, C, 0, HF_SAME, 0, "model.layers.%d.input_layernorm.weight", l);
            hf_add(t, &n, qkv, C, C, HF_ROTATE_HALF, NH, "model.layers.%d.self_attn.q_proj.weight", l);
            hf_add(t, &n, qkv + c * c, (int)KVC, C, HF_ROTATE_HALF, KVH,
                   "model.layers.%d.self_attn.k_proj.weight", l);
            hf_add(t, &n, qkv + (c + KVC) * c, (int)KVC, C, HF_SAME, 0,
                   "model.layers.%d.self_attn.v_proj.weight", l);
            hf_add(t, &n, p->attprojw + l * c * c, C, C, HF_SAME, 0, "model.layers.%d.self_attn.o_proj.weight", l);
            hf_add(t, &n, p->ln2w + l * c, C, 0, HF_SAME, 0, "model.layers.%d.post_attention_layernorm.weight", l);
            hf_add(t, &n, w13, H, C, HF_SAME, 0, "model.layers.%d.mlp.gate_proj.weight", l);
            hf_add(t, &n, w13 + h * c, H, C, HF_SAME, 0, "model.layers.%d.mlp.up_proj.weight", l);
            hf_add(t, &n, p->fcprojw + l * c * h, C, H, HF_SAME, 0, "model.layers.%d.mlp.down_proj.weight", l);
        }
        hf_add(t, &n, p->lnfw, C, 0, HF_SAME, 0, "model.norm.weight", 0);
        if (!cfg->tied) hf_add(t, &n, p->wcls, V, C, HF_SAME, 0, "lm_head.weight", 0);
        return n;
    }
    hf_add(t, &n, p->wte, V, C, HF_SAME, 0, "transformer.wte.weight", 0);
    hf_add(t, &n, p->wpe, cfg->maxT, C, HF_SAME, 0, "transformer.wpe.weight", 0);
    for (int l = 0; l < cfg->L; l++) {
        hf_add(t, &n, p->ln1w + l * c, C, 0, HF_SAME, 0, "transformer.h.%d.ln_1.weight", l);
        hf_add(t, &n, p->ln1b + l * c, C, 0, HF_SAME, 0, "transformer.h.%d.ln_1.bias", l);
        hf_add(t, &n, p->qkvw + l * 3 * c * c, 3 * C, C, HF_TRANSPOSE, 0, "transformer.h.%d.attn.c_attn.weight", l);
        hf_add(t, &n, p->qkvb + l * 3 * c, 3 * C, 0, HF_SAME, 0, "transformer.h.%d.attn.c_attn.bias", l);
        hf_add(t, &n, p->attprojw + l * c * c, C, C, HF_TRANSPOSE, 0, "transformer.h.%d.attn.c_proj.weight", l);
        hf_add(t, &n, p->attprojb + l * c, C, 0, HF_SAME, 0, "transformer.h.%d.attn.c_proj.bias", l);
        hf_add(t, &n, p->ln2w + l * c, C, 0, HF_SAME, 0, "transformer.h.%d.ln_2.weight", l);
        hf_add(t, &n, p->ln2b + l * c, C, 0, HF_SAME, 0, "transformer.h.%d.ln_2.bias", l);
        hf_add(t, &n, p->fcw + l * h * c, H, C, HF_TRANSPOSE, 0, "transformer.h.%d.mlp.c_fc.weight", l);
        hf_add(t, &n, p->fcb + l * h, H, 0, HF_SAME, 0, "transformer.h.%d.mlp.c_fc.bias", l);
        hf_add(t, &n, p->fcprojw + l * c * h, C, H, HF_TRANSPOSE, 0, "transformer.h.%d.mlp.c_proj.weight", l);
        hf_add(t, &n, p->fcprojb + l * c, C, 0, HF_SAME, 0, "transformer.h.%d.mlp.c_proj.bias", l);
    }
    hf_add(t, &n, p->lnfw, C, 0, HF_SAME, 0, "transformer.ln_f.weight", 0);
    hf_add(t, &n, p->lnfb, C, 0, HF_SAME, 0, "transformer.ln_f.bias", 0);
    return n;
}

static size_t hf_count(const HfTensor *t) { return (size_t)t->rows * (t->cols ? t->cols : 1); }

// The row of ours that Hugging Face's row r of a rotate-half tensor holds: within each head of
// hs rows, its row j < hs/2 is our row 2j and its row hs/2 + j our row 2j + 1.
static int hf_rotate_half_row(int r, int hs) {
    int head = r / hs, j = r % hs, half = hs / 2;
    return head * hs + (j < half ? 2 * j : 2 * (j - half) + 1);
}

// ours -> hf (to_hf = 1) or hf -> ours (0), in the layout of t.
static void hf_convert(const HfTensor *t, float *hf, int to_hf) {
    int rows = t->rows, cols = t->cols ? t->cols : 1;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            size_t o = (size_t)r * cols + c, x = o; // our index, Hugging Face's
            if (t->layout == HF_TRANSPOSE) x = (size_t)c * rows + r;
            if (t->layout == HF_ROTATE_HALF)
                o = (size_t)hf_rotate_half_row(r, rows / t->heads) * cols + c;
            if (to_hf) hf[x] = t->ours[o];
            else t->ours[o] = hf[x];
        }
}

// Hugging Face's shape of t as JSON: [rows, cols], [cols, rows] when transposed, or [rows].
static void hf_shape(const HfTensor *t, char *out, size_t size) {
    if (!t->cols) snprintf(out, size, "[%d]", t->rows);
    else if (t->layout == HF_TRANSPOSE) snprintf(out, size, "[%d, %d]", t->cols, t->rows);
    else snprintf(out, size, "[%d, %d]", t->rows, t->cols);
}

// DIR/NAME into path (size bytes), or a message when the directory's name is too long for it.
static void hf_path(char *path, size_t size, const char *dir, const char *name) {
    int n = snprintf(path, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size) die("%s: the directory's name is too long", dir);
}

// Writes DIR/model.safetensors and DIR/config.json (DIR is made if needed).
static void hf_save(const Model *model, const char *dir) {
    const Config *cfg = &model->config;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) die("cannot make directory %s: %s", dir, strerror(errno));
    char path[4200];
    float *host = xmalloc(model->num_parameters * sizeof(float));
    dev_to_host(host, model->params_memory, model->num_parameters * sizeof(float));
    ParamTensors p;
    carve(&p, model->param_table, model->num_param_tensors, host, cfg, 0, 0);
    HfTensor *t = xmalloc((16 * (size_t)cfg->L + 4) * sizeof(HfTensor));
    int n = hf_tensors(cfg, &p, t);
    JsonBuf header = {0};
    json_buf_puts(&header, "{\"__metadata__\": {\"format\": \"pt\"}");
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        char entry[320], shape[64];
        hf_shape(&t[i], shape, sizeof shape);
        size_t bytes = hf_count(&t[i]) * sizeof(float);
        snprintf(entry, sizeof entry, ", \"%s\": {\"dtype\": \"F32\", \"shape\": %s, "
                 "\"data_offsets\": [%zu, %zu]}", t[i].name, shape, offset, offset + bytes);
        json_buf_puts(&header, entry);
        offset += bytes;
    }
    json_buf_puts(&header, "}");
    while (header.len % 8) json_buf_puts(&header, " ");
    uint64_t header_len = header.len;
    hf_path(path, sizeof path, dir, "model.safetensors");
    SafeFile sf;
    safe_open(&sf, path);
    safe_write(&sf, &header_len, 8);
    safe_write(&sf, header.data, header.len);
    for (int i = 0; i < n; i++) {
        float *hf = xmalloc(hf_count(&t[i]) * sizeof(float));
        hf_convert(&t[i], hf, 1);
        safe_write(&sf, hf, hf_count(&t[i]) * sizeof(float));
        free(hf);
    }
    safe_commit(&sf);
    free(header.data);
    hf_path(path, sizeof path, dir, "config.json");
    safe_open(&sf, path);
    if (cfg->arch == ARCH_LLAMA)
        fprintf(sf.file, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": "
                "\"llama\",\n  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  "
                "\"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n  "
                "\"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"hidden_act\": "
                "\"silu\",\n  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": 1e-05,\n  "
                "\"rope_theta\": %.9g,\n  \"tie_word_embeddings\": %s,\n  \"attention_bias\": "
                "false,\n  \"mlp_bias\": false,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  "
                "\"torch_dtype\": \"float32\"\n}\n", cfg->V, cfg->C, cfg->hidden, cfg->L, cfg->NH,
                cfg->KVH, cfg->maxT, cfg->rope_theta, cfg->tied ? "true" : "false");
    else
        fprintf(sf.file, "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": "
                "\"gpt2\",\n  \"vocab_size\": %d,\n  \"n_positions\": %d,\n  \"n_ctx\": %d,\n  "
                "\"n_embd\": %d,\n  \"n_layer\": %d,\n  \"n_head\": %d,\n  \"n_inner\": null,\n  "
                "\"activation_function\": \"gelu_new\",\n  \"layer_norm_epsilon\": 1e-05,\n  "
                "\"tie_word_embeddings\": true,\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n  "
                "\"torch_dtype\": \"float32\"\n}\n", cfg->V, cfg->maxT, cfg->maxT, cfg->C, cfg->L,
                cfg->NH, cfg->V - 1, cfg->V - 1);
    safe_commit(&sf);
    free(t);
    free(host);
}

// An integer field of config.json (a JSON number that is a whole number in 1..2^31), or
// `fallback` when absent and fallback >= 0; dies naming the file otherwise.
static int hf_config_int(const JsonObject *obj, const char *key, int fallback, const char *path) {
    const JsonField *f = json_get(obj, key);
    if (!f || f->type == JSON_NULL) {
        if (fallback >= 0) return fallback;
        die("%s: missing \"%s\"", path, key);
    }
    if (f->type != JSON_NUMBER || f->number < 1 || f->number > INT32_MAX ||
        f->number != (double)(int)f->number)
        die("%s: \"%s\" must be a positive integer", path, key);
    return (int)f->number;
}

// The float of field key (fallback when absent).
static double hf_config_number(const JsonObject *obj, const char *key, double fallback,
                               const char *path) {
    const JsonField *f = json_get(obj, key);
    if (!f || f->type == JSON_NULL) return fallback;
    if (f->type != JSON_NUMBER) die("%s: \"%s\" must be a number", path, key);
    return f->number;
}

// Reads DIR/config.json into a configuration.
static Config hf_read_config(const char *dir) {
    char path[4200], err[256];
    hf_path(path, sizeof path, dir, "config.json");
    size_t bytes;
    char *text = (char *)read_whole_file(path, &bytes);
    if (!text) die("cannot read %s: %s", path, strerror(errno));
    JsonObject obj = {0};
    if (json_parse_object_each(text, bytes, "the file", json_object_add_member, &obj, err,
                               sizeof err) != 0)
        die("%s: %s", path, err);
    free(text);
    const char *type = json_require_string(&obj, "model_type", err, sizeof err);
    if (!type) die("%s: %s", path, err);
    Config cfg = {0};
    if (!strcmp(type, "llama")) {
        cfg.arch = ARCH_LLAMA;
        cfg.C = hf_config_int(&obj, "hidden_size", -1, path);
        cfg.hidden = hf_config_int(&obj, "intermediate_size", -1, path);
        cfg.L = hf_config_int(&obj, "num_hidden_layers", -1, path);
        cfg.NH = hf_config_int(&obj, "num_attention_heads", -1, path);
        cfg.KVH = hf_config_int(&obj, "num_key_value_heads", cfg.NH, path);
        cfg.maxT = hf_config_int(&obj, "max_position_embeddings", -1, path);
        cfg.rope_theta = (float)hf_config_number(&obj, "rope_theta", 10000.0, path);
        if (!(cfg.rope_theta > 0.0f)) die("%s: rope_theta must be positive", path);
        const JsonField *tie = json_get(&obj, "tie_word_embeddings");
        cfg.tied = tie && tie->type == JSON_TRUE; // transformers' default: false
        const JsonField *act = json_get(&obj, "hidden_act");
        if (act && act->type != JSON_NULL && (act->type != JSON_STRING || strcmp(act->text, "silu")))
            die("%s: hidden_act %s; sirt's Llama uses \"silu\" (SwiGLU)", path, act->text);
        const char *biases[2] = {"attention_bias", "mlp_bias"};
        for (int i = 0; i < 2; i++) {
            const JsonField *bias = json_get(&obj, biases[i]);
            if (bias && bias->type == JSON_TRUE)
                die("%s: %s is true; sirt's Llama has no biases", path, biases[i]);
        }
        double eps = hf_config_number(&obj, "rms_norm_eps", 1e-6, path);
        if (fabs(eps - 1e-5) > 1e-12)
            die("%s: rms_norm_eps %g; sirt's Llama uses 1e-5 (llama2.c's)", path, eps);
        const JsonField *scaling = json_get(&obj, "rope_scaling");
        if (scaling && scaling->type != JSON_NULL)
            die("%s: rope_scaling is not supported (the rotary embedding is llama2.c's plain one)", path);
        const JsonField *head_dim = json_get(&obj, "head_dim");
        if (head_dim && head_dim->type == JSON_NUMBER && cfg.NH > 0 &&
            head_dim->number != cfg.C / cfg.NH)
            die("%s: head_dim %g is not hidden_size / num_attention_heads", path, head_dim->number);
    } else if (!strcmp(type, "gpt2")) {
        cfg.C = hf_config_int(&obj, "n_embd", -1, path);
        cfg.L = hf_config_int(&obj, "n_layer", -1, path);
        cfg.NH = hf_config_int(&obj, "n_head", -1, path);
        cfg.maxT = hf_config_int(&obj, "n_positions", -1, path);
        int inner = hf_config_int(&obj, "n_inner", 0, path);
        if (inner && inner != 4 * cfg.C) die("%s: n_inner %d is not 4 x n_embd", path, inner);
        double eps = hf_config_number(&obj, "layer_norm_epsilon", 1e-5, path);
        if (fabs(eps - 1e-5) > 1e-12) die("%s: layer_norm_epsilon %g; sirt uses 1e-5", path, eps);
        const JsonField *act = json_get(&obj, "activation_function");
        if (act && act->type != JSON_NULL &&
            (act->type != JSON_STRING || strcmp(act->text, "gelu_new")))
            die("%s: activation_function %s; sirt's GPT-2 uses \"gelu_new\" (GELU, tanh form)",
                path, act->text);
        const JsonField *tie = json_get(&obj, "tie_word_embeddings");
        if (tie && tie->type == JSON_FALSE)
            die("%s: tie_word_embeddings is false; sirt's GPT-2 classifier is the token embedding",
                path);
    } else die("%s: model_type \"%s\": sirt reads \"llama\" and \"gpt2\"", path, type);
    cfg.V = hf_config_int(&obj, "vocab_size", -1, path);
    json_object_free(&obj);
    const char *problem = config_problem(&cfg);
    if (problem) die("%s: %s", path, problem);
    config_finish(&cfg);
    return cfg;
}

// Converts n values of a safetensors dtype to float32; 0, or -1 for a dtype we do not read.
static int hf_to_float(float *out, const unsigned char *data, size_t n, const char *dtype) {
    if (!strcmp(dtype, "F32")) {
        memcpy(out, data, n * 4);
        return 0;
    }
    int bf16 = !strcmp(dtype, "BF16");
    if (!bf16 && strcmp(dtype, "F16")) return -1;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, data + 2 * i, 2);
        uint32_t bits;
        if (bf16) bits = (uint32_t)h << 16;
        else { // IEEE half: sign, 5-bit exponent, 10-bit mantissa
            uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023;
            if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
            else if (exp) bits = sign | ((exp + 112) << 23) | (man << 13);
            else if (!man) bits = sign;
            else { // subnormal: normalise
                int e = -1;
                do { man <<= 1; e++; } while (!(man & 1024));
                bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 1023) << 13);
            }
        }
        memcpy(&out[i], &bits, 4);
    }
    return 0;
}

// text without its white space into out (size bytes; a longer text is cut).
static void hf_squeeze(char *out, size_t size, const char *text) {
    size_t k = 0;
    for (const char *c = text; *c && k + 1 < size; c++)
        if (*c != ' ' && *c != '\n' && *c != '\t' && *c != '\r') out[k++] = *c;
    out[k] = '\0';
}

// Reads a Hugging Face directory (config.json and model.safetensors) into a new model.
static void hf_load(Model *model, const char *dir) {
    Config cfg = hf_read_config(dir);
    char path[4200], err[256];
    hf_path(path, sizeof path, dir, "model.safetensors");
    size_t bytes;
    unsigned char *data = read_whole_file(path, &bytes);
    if (!data) die("cannot read %s: %s", path, strerror(errno));
    uint64_t header_len = 0;
    if (bytes >= 8) memcpy(&header_len, data, 8);
    if (bytes < 8 || header_len > bytes - 8) die("%s: truncated header", path);
    JsonObject header = {0};
    if (json_parse_object_each((const char *)data + 8, header_len, "the header",
                               json_object_add_member, &header, err, sizeof err) != 0)
        die("%s: %s", path, err);
    const unsigned char *tensor_data = data + 8 + header_len;
    size_t data_bytes = bytes - 8 - header_len;
    model_build(model, cfg);
    float *host = xcalloc(model->num_parameters, sizeof(float)); // padded rows stay zero
    ParamTensors p;
    carve(&p, model->param_table, model->num_param_tensors, host, &cfg, 0, 0);
    HfTensor *t = xmalloc((16 * (size_t)cfg.L + 4) * sizeof(HfTensor));
    int n = hf_tensors(&cfg, &p, t);
    for (int i = 0; i < n; i++) {
        const JsonField *f = json_get(&header, t[i].name);
        if (!f && cfg.arch == ARCH_GPT2 && !strncmp(t[i].name, "transformer.", 12))
            f = json_get(&header, t[i].name + 12); // saved from GPT2Model: no prefix (OpenAI's gpt2)
        if (!f && cfg.arch == ARCH_LLAMA && !cfg.tied && !strcmp(t[i].name, "lm_head.weight")) {
            // no lm_head: the classifier is the embedding after all (stored once)
            memcpy(p.wcls, p.wte, (size_t)cfg.V * cfg.C * sizeof(float));
            continue;
        }
        if (!f || f->type != JSON_OBJECT) die("%s: no tensor \"%s\"", path, t[i].name);
        JsonObject entry = {0};
        if (json_parse_object_each(f->text, f->len, "a tensor", json_object_add_member, &entry,
                                   err, sizeof err) != 0)
            die("%s: %s: %s", path, t[i].name, err);
        const char *dtype = json_require_string(&entry, "dtype", err, sizeof err);
        const JsonField *shape = json_get(&entry, "shape"), *offsets = json_get(&entry, "data_offsets");
        char expected[64];
        hf_shape(&t[i], expected, sizeof expected);
        char got_shape[64] = "", want_shape[64]; // the shapes without white space
        if (shape && shape->type == JSON_ARRAY)
            hf_squeeze(got_shape, sizeof got_shape, shape->text);
        hf_squeeze(want_shape, sizeof want_shape, expected);
        unsigned long long begin = 0, end = 0;
        if (!dtype || !offsets || offsets->type != JSON_ARRAY ||
            sscanf(offsets->text, " [ %llu , %llu ]", &begin, &end) != 2)
            die("%s: %s: bad entry", path, t[i].name);
        if (strcmp(dtype, "F32") && strcmp(dtype, "BF16") && strcmp(dtype, "F16"))
            die("%s: %s: dtype %s (sirt reads F32, BF16, F16)", path, t[i].name, dtype);
        if (strcmp(got_shape, want_shape))
            die("%s: %s has shape %s; config.json's shape needs %s", path, t[i].name,
                shape ? shape->text : "?", expected);
        size_t count = hf_count(&t[i]), width = !strcmp(dtype, "F32") ? 4 : 2;
        if (end < begin || end > data_bytes || end - begin != count * width)
            die("%s: %s: data_offsets [%llu, %llu] do not hold %zu values of %s in %zu bytes",
                path, t[i].name, begin, end, count, dtype, data_bytes);
        float *hf = xmalloc(count * sizeof(float));
        if (hf_to_float(hf, tensor_data + begin, count, dtype) != 0)
            die("%s: %s: dtype %s (sirt reads F32, BF16, F16)", path, t[i].name, dtype);
        hf_convert(&t[i], hf, 0);
        free(hf);
        json_object_free(&entry);
    }
    dev_to_device(model->params_memory, host, model->num_parameters * sizeof(float));
    json_object_free(&header);
    free(t);
    free(host);
    free(data);
}

// `./sirt export`: a checkpoint in another program's format.
int cmd_export(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL;
    int format = 0;
    static const char *const FORMAT_NAMES[] = {"llama2c", "hf", NULL};
    const Flag flags[] = {
        {"--model", "FILE", FLAG_STRING, .value = &model_path, "the checkpoint to export"},
        {"--format", NULL, FLAG_CHOICE, .value = &format,
         "llama2c: llama2.c's version 1 file (a Llama model); hf: a Hugging Face directory "
         "(model.safetensors, config.json)", .choices = FORMAT_NAMES},
        {"--out", "PATH", FLAG_STRING, .value = &out, "the exported file (hf: directory)"},
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {0}};
    if (flags_parse(argc, argv, "export", "export --model M --format llama2c|hf --out PATH",
                    tables))
        return 0;
    if (!model_path || !out) die("export: --model and --out are required");
    if (format == 0) check_writable(out);
    Model model;
    model_load(&model, model_path);
    if (format == 0) llama2c_save(&model, out);
    else hf_save(&model, out);
    printf("wrote %s (%s, %zu parameters)\n", out,
           format == 0 ? "llama2.c version 1" : "Hugging Face: model.safetensors, config.json",
           model.num_parameters);
    model_free(&model);
    return 0;
}


// =============================================================================================
// 4. Training
// `./sirt train`: plain language modelling on token shards (lib/tokens.h), and the pieces every
// trainer shares: the step (forward → loss → backward → AdamW), the schedule, the log, resume.
// One mechanism serves every objective. The forward pass ends in the per-token log-probs
// ℓ_t = log softmax(logits_t)[target_t]; a trainer gives each position a coefficient c_t, and
// the step's loss is L = Σ_t c_t · (−ℓ_t), so ∂L/∂ℓ_t = −c_t. Since ∂ℓ_t/∂logits_t =
// onehot(target_t) − softmax(logits_t), the gradient at the logits is c_t · (softmax − onehot):
// what classifier_backward (model.h) writes, and all the rest of the backward pass starts from.
// Here every c_t = 1/(B·T): L is the mean next-token NLL, ∂L/∂ℓ_t = −1/(B·T). SFT (section 5)
// puts its coefficients on completion tokens only. A preference loss (section 8) is not linear
// in the ℓ_t: its c_t = −∂L/∂ℓ_t is taken at this forward pass, so Σ_t c_t · (−ℓ_t) has the
// same gradient as L (the chain rule) though not the same value, and its step reports L.
// The metrics log (--log) is JSON lines, one per step: {"step" (from 1), "loss" (the step's
// forward pass, before its update), "lr", "grad_norm" (before clipping), "tok_per_s" (the
// tokens of examples per second: padding does not count), "pad_frac" (the share of the batch's
// positions that were padding)}, plus "skipped": true on a skipped step (numbers that are not
// finite are written as null); sft adds "val_loss" when it validates, dpo its preference
// metrics (section 8). On --resume the lines after the checkpoint's step are dropped, so the
// log always matches the weights.
// =============================================================================================

// The learning-rate schedule: linear warm-up over `warmup` steps, then either constant or a
// cosine from lr down to lr * floor at the last step.
typedef struct {
    float lr, floor;
    int warmup, steps, cosine;
} Schedule;

static float schedule_lr(const Schedule *s, int step) { // step counts from 0
    if (step < s->warmup) return s->lr * (step + 1) / s->warmup;
    if (!s->cosine) return s->lr;
    int span = s->steps - s->warmup;
    float progress = span > 1 ? (float)(step - s->warmup) / (span - 1) : 1.0f;
    float min_lr = s->lr * s->floor;
    return min_lr + 0.5f * (1.0f + cosf(3.14159265358979f * progress)) * (s->lr - min_lr);
}

// Parses "L,NH,C,maxT,V" for GPT-2 (arch ARCH_GPT2) and "L,NH,C,maxT,V[,KVH[,hidden]]" for
// Llama: KVH key/value heads (default NH), the SwiGLU width hidden (default llama2.c's, 2/3 of
// 4C rounded up to 32s). A Llama from --config has its classifier tied to the token embedding,
// as llama2.c's model.py makes it.
static Config parse_config_arch(const char *text, int arch) {
    Config cfg = {.arch = arch, .tied = 1};
    int n = sscanf(text, "%d,%d,%d,%d,%d,%d,%d", &cfg.L, &cfg.NH, &cfg.C, &cfg.maxT, &cfg.V,
                   &cfg.KVH, &cfg.hidden);
    if (arch == ARCH_GPT2 && n != 5)
        die("--config wants L,NH,C,maxT,V (five integers), got '%s'", text);
    if (arch == ARCH_LLAMA && (n < 5 || (n >= 6 && cfg.KVH < 1) || (n == 7 && cfg.hidden < 1)))
        die("--config with --arch llama wants L,NH,C,maxT,V[,KVH[,hidden]] (five to seven "
            "positive integers), got '%s'", text);
    const char *problem = config_problem(&cfg);
    if (problem) die("--config %s: %s", text, problem);
    config_finish(&cfg);
    return cfg;
}

static Config parse_config(const char *text) { return parse_config_arch(text, ARCH_GPT2); }

// One optimizer step on a batch: forward, the loss Σ_i coefs[i] · (−log p_i), backward, AdamW.
// Every trainer in this file (LM, SFT, DPO) calls this; they differ only in the coefficients
// and, for preference objectives, in how the coefficients follow from the forward's log-probs.
typedef struct {
    float loss, grad_norm, lr;
    int skipped; // the loss or the gradient norm was not finite: no update was applied
} StepResult;

static float weighted_nll(const Model *model, const float *coefs, int n) {
    double nll = 0.0;
    for (int i = 0; i < n; i++) nll -= (double)coefs[i] * model->host_logprobs[i];
    return (float)nll;
}

// The second half of a step, once the forward pass has run, the loss is in r and the
// coefficients are known: the backward pass and the AdamW update. Fills in r's lr, grad_norm
// and skipped. The numerical guard of every trainer is here: when the loss or the gradient norm
// is not finite (NaN or infinity), the update is skipped — the parameters and AdamW's moments
// and step count stay as they were — and r->skipped says so; run_after_step logs it and stops
// the run after --max-bad-steps such steps in a row. The schedule counts batches (st->step);
// AdamW's bias correction counts the updates applied (st->step - st->skipped).
static void backward_and_update(Model *model, const float *coefs, OptimizerSettings opt,
                                const Schedule *sched, const TrainState *st, StepResult *r) {
    model_backward(model, coefs);
    opt.lr = r->lr = schedule_lr(sched, st->step);
    r->grad_norm = model_grad_norm(model);
    r->skipped = !isfinite(r->loss) || !isfinite(r->grad_norm);
    if (!r->skipped) model_apply_update(model, &opt, r->grad_norm, st->step - st->skipped + 1);
}

static StepResult train_step(Model *model, const int *inputs, const int *targets, const int *pos,
                             const float *coefs, int B, int T, OptimizerSettings opt,
                             const Schedule *sched, const TrainState *st) {
    StepResult r;
    model_forward(model, inputs, targets, pos, B, T);
    r.loss = weighted_nll(model, coefs, B * T);
    backward_and_update(model, coefs, opt, sched, st, &r);
    return r;
}

// Counts a finished step in the state: the step itself, and whether its update was skipped.
static void state_count_step(TrainState *st, const StepResult *r) {
    st->step++;
    st->skipped += r->skipped;
    st->bad_streak = r->skipped ? st->bad_streak + 1 : 0;
}

// The flags every trainer shares (train, sft, dpo, refine and prm).
typedef struct {
    const char *init, *config, *out, *log;
    int B, T, steps, warmup, resume, save_every, stop_after;
    int max_bad_steps;  // stop after this many skipped (non-finite) steps in a row
    int detect_anomaly; // check every kernel's output (Model.detect_anomaly)
    float lr, lr_floor;
    int cosine;         // --schedule: 1 cosine, 0 constant
    uint64_t seed;
    OptimizerSettings opt;
    int threads;        // OpenMP threads (0: OMP_NUM_THREADS, or all cores)
    int pack;           // --pack (sft, dpo, refine): several examples per row (section 5)
    int arch;           // --arch: the shape of a --config model (ARCH_GPT2, ARCH_LLAMA)
} TrainArgs;

static TrainArgs train_args_defaults(void) {
    TrainArgs a = {0};
    a.out = "model.bin";
    a.seed = 1337;
    a.cosine = 1;
    a.lr = -1.0f; // required
    a.lr_floor = 0.1f;
    a.max_bad_steps = 5;
    a.pack = 1;
    a.opt = (OptimizerSettings){.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                                .weight_decay = 0.0f, .clip = 1.0f};
    return a;
}

static const char *const SCHEDULE_NAMES[] = {"constant", "cosine", NULL}; // TrainArgs.cosine
static const char *const ARCH_NAMES[] = {"gpt2", "llama", NULL};        // ARCH_* order

// The table of those flags (lib/flags.h); a command passes its TrainArgs with it.
#define TRAIN_FLAGS_TITLE "the flags of training (train, sft, dpo, refine, prm, sipf)"
static const Flag TRAIN_FLAGS[] = {
    {"--init", "FILE", FLAG_STRING, .offset = offsetof(TrainArgs, init),
     "start from this checkpoint: llm.c's GPT-2, ours, llama2.c's (legacy or version 1), or a "
     "Hugging Face directory"},
    {"--config", "L,NH,C,maxT,V", FLAG_STRING, .offset = offsetof(TrainArgs, config),
     "start from a random initialisation of this shape; with --arch llama: "
     "L,NH,C,maxT,V[,KVH[,hidden]]"},
    {"--arch", NULL, FLAG_CHOICE, .offset = offsetof(TrainArgs, arch),
     "the shape of a --config model", .choices = ARCH_NAMES},
    {"--batch", "B", FLAG_INT, .offset = offsetof(TrainArgs, B), "sequences per step", 1, 1 << 20},
    {"--seq", "T", FLAG_INT, .offset = offsetof(TrainArgs, T), "tokens per sequence", 1, 1 << 20},
    {"--steps", "N", FLAG_INT, .offset = offsetof(TrainArgs, steps), "optimizer steps", 1, 1 << 30},
    {"--lr", "LR", FLAG_FLOAT, .offset = offsetof(TrainArgs, lr), "the peak learning rate", 0,
     INFINITY},
    {"--wd", "WD", FLAG_FLOAT, .offset = offsetof(TrainArgs, opt.weight_decay),
     "AdamW's weight decay of the matrices and embeddings", -INFINITY, INFINITY},
    {"--clip", "NORM", FLAG_FLOAT, .offset = offsetof(TrainArgs, opt.clip),
     "clip the gradient's global norm to NORM; 0: no clipping", -INFINITY, INFINITY},
    {"--schedule", NULL, FLAG_CHOICE, .offset = offsetof(TrainArgs, cosine),
     "the learning rate after the warm-up", .choices = SCHEDULE_NAMES},
    {"--warmup", "N", FLAG_INT, .offset = offsetof(TrainArgs, warmup),
     "steps of linear warm-up", 0, 1 << 30},
    {"--lr-floor", "F", FLAG_FLOAT, .offset = offsetof(TrainArgs, lr_floor),
     "cosine ends at F x lr", 0, 1},
    {"--seed", "S", FLAG_U64, .offset = offsetof(TrainArgs, seed),
     "seed of the initialisation and the data order", 0, 0x7fffffffL},
    {"--out", "FILE", FLAG_STRING, .offset = offsetof(TrainArgs, out),
     "the trained model; FILE.state beside it, for --resume"},
    {"--resume", NULL, FLAG_SWITCH, .offset = offsetof(TrainArgs, resume),
     "continue from --out and its state, exactly as if never stopped"},
    {"--log", "FILE", FLAG_STRING, .offset = offsetof(TrainArgs, log),
     "metrics, one JSON line per step"},
    {"--save-every", "N", FLAG_INT, .offset = offsetof(TrainArgs, save_every),
     "save a checkpoint every N steps; 0: at the end only", 0, 1 << 30},
    {"--stop-after", "K", FLAG_INT, .offset = offsetof(TrainArgs, stop_after),
     "save and stop after K steps of this run; 0: at --steps", 0, 1 << 30},
    {"--max-bad-steps", "N", FLAG_INT, .offset = offsetof(TrainArgs, max_bad_steps),
     "save and stop after N skipped (non-finite) steps in a row", 1, 1 << 30},
    {"--detect-anomaly", NULL, FLAG_SWITCH, .offset = offsetof(TrainArgs, detect_anomaly),
     "check every kernel's output for NaN and infinity (slow)"},
    {"--threads", "N", FLAG_INT, .offset = offsetof(TrainArgs, threads),
     "OpenMP threads; by default OMP_NUM_THREADS, or all cores", 1, 1024},
    {0}};

// --pack, a row of the tables of sft, dpo and refine (not of train, whose rows are windows of a
// token stream, without examples or padding): a TrainArgs.pack.
#define PACK_FLAG(variable)                                                                     \
    {"--pack", "0|1", FLAG_INT, .value = &(variable),                                          \
     "1: examples share rows of --seq tokens, without padding; 0: one per row", 0, 1}

static void check_train_args(const TrainArgs *a, const char *command) {
    if (!a->B || !a->T) die("%s: --batch and --seq are required", command);
    if (a->lr < 0) die("%s: --lr is required", command);
    if (!a->init && !a->config && !a->resume)
        die("%s: give --init model.bin or --config L,NH,C,maxT,V", command);
    if (a->init && a->config) die("%s: give either --init or --config, not both", command);
    if (a->arch == ARCH_LLAMA && !a->config)
        die("%s: --arch llama is the shape of a --config model (a checkpoint says its own)",
            command);
}

// The steps of `epochs` passes over data of `per_epoch` batches, checked before it can overflow.
static int epochs_to_steps(int epochs, int per_epoch) {
    long long steps = (long long)epochs * per_epoch;
    if (steps > 1 << 30)
        die("--epochs %d x %d batches per epoch = %lld steps, more than 2^30", epochs, per_epoch,
            steps);
    return (int)steps;
}

// --seq against the model's context: sequences longer than maxT have no position embedding.
static void check_seq_fits(int T, const Model *model) {
    if (T > model->config.maxT)
        die("--seq %d is longer than the model's context maxT=%d", T, model->config.maxT);
}

// Training needs the parameters with their gradients and two AdamW moments, and the activations
// of a batch of `rows` sequences of T tokens: refused at once when the device cannot hold them.
static void check_training_fits(const Model *model, int rows, int T) {
    double params = 4.0 * model->num_parameters * sizeof(float);
    double acts = activation_bytes(&model->config, rows, T);
    if (!fits_memory(params + acts))
        die("B=%d T=%d needs %.1f GiB of activations (%.1f GiB with the parameters, gradients and "
            "AdamW moments); " DEVICE_HAS " %.1f GiB", rows, T, acts / GIB, (params + acts) / GIB,
            device_gib());
}

// Starts a run: resumes from --out and its state (--resume), or loads --init, or builds a fresh
// model from --config. `shuffle` is recorded in the state so that a resume can check it. A batch
// holds `rows` sequences: --batch for train and sft, twice that for dpo (chosen and rejected).
static void run_begin(Model *model, TrainState *st, const TrainArgs *args, int shuffle,
                      int rows) {
    check_writable(args->out);
    if (args->resume) {
        if (access(args->out, F_OK) != 0)
            die("cannot resume: %s does not exist (start without --resume)", args->out);
        model_load(model, args->out);
        state_roll_forward(model, args->out);
        state_load(model, st, args->out);
        if (st->B != args->B || st->T != args->T || st->shuffle != shuffle || st->seed != args->seed)
            die("cannot resume: %s.state was written with --batch %d --seq %d --seed %llu%s; "
                "resume with the same", args->out, st->B, st->T, (unsigned long long)st->seed,
                st->shuffle ? " --shuffle" : "");
        printf("resuming %s at step %d\n", args->out, st->step);
    } else {
        if (args->init) model_load(model, args->init);
        else {
            model_build(model, parse_config_arch(args->config, args->arch));
            model_init_random(model, args->seed);
        }
        *st = (TrainState){.step = 0, .seed = args->seed, .rng = rng_seeded(args->seed),
                           .B = args->B, .T = args->T, .shuffle = shuffle,
                           .best_valid_loss = INFINITY};
    }
    check_seq_fits(args->T, model);
    check_training_fits(model, rows, args->T);
    model->detect_anomaly = args->detect_anomaly;
}

static void print_model(const Model *model) {
    const Config *cfg = &model->config;
    if (cfg->arch == ARCH_LLAMA)
        printf("model: Llama L=%d NH=%d KVH=%d C=%d hidden=%d maxT=%d V=%d (Vp=%d), %s "
               "classifier, %zu parameters, %d threads\n", cfg->L, cfg->NH, cfg->KVH, cfg->C,
               cfg->hidden, cfg->maxT, cfg->V, cfg->Vp, cfg->tied ? "tied" : "own",
               model->num_parameters, num_threads());
    else
        printf("model: L=%d NH=%d C=%d maxT=%d V=%d (Vp=%d), %zu parameters, %d threads\n",
               cfg->L, cfg->NH, cfg->C, cfg->maxT, cfg->V, cfg->Vp, model->num_parameters,
               num_threads());
}

// A batch on the host: `rows` rows of T positions (row stride T). The trainers of examples
// (sections 5 and 8) lay their sequences out in it with batch_fill; `at` then says where each
// sequence starts, and pos gives every token's position within its example (model.h) when
// `packed`. tokens counts the positions that hold an example's token: the rest is padding.
typedef struct { int row, start, length; } Placement; // length: positions it occupies
typedef struct {
    int *inputs, *targets, *pos; // (rows,T)
    float *coefs;                // (rows,T)
    Placement *at;               // one per sequence of the batch
    int rows, T, packed;
    size_t tokens;
} Batch;

// Buffers for batches of up to `rows` rows (and sequences) of T positions.
static void batch_alloc(Batch *b, int rows, int T) {
    size_t n = (size_t)rows * T;
    *b = (Batch){.inputs = xmalloc(n * sizeof(int)), .targets = xmalloc(n * sizeof(int)),
                 .pos = xmalloc(n * sizeof(int)), .coefs = xmalloc(n * sizeof(float)),
                 .at = xmalloc((size_t)rows * sizeof(Placement)), .rows = rows, .T = T,
                 .tokens = n};
}

static void batch_free(Batch *b) {
    free(b->inputs);
    free(b->targets);
    free(b->pos);
    free(b->coefs);
    free(b->at);
}

// The forward pass over a batch (its positions when packed).
static void batch_forward(Model *model, const Batch *b) {
    model_forward(model, b->inputs, b->targets, b->packed ? b->pos : NULL, b->rows, b->T);
}

// What a trainer's loop works with: the schedule, the metrics log, the timing, and host buffers
// for one batch of at most rows x T tokens.
typedef struct {
    Schedule sched;
    FILE *log;
    Progress progress;
    Batch batch;
} Run;

// Prepares the loop for batches of up to rows x T tokens; returns 0 (and says so) when the run
// is already at its last step.
static int run_open(Run *run, Model *model, const TrainArgs *args, const TrainState *st,
                    int rows) {
    if (st->step >= args->steps) {
        printf("nothing to do: the run is already at step %d of %d\n", st->step, args->steps);
        return 0;
    }
    model_alloc_activations(model, rows, args->T); // the largest batch, allocated once
    run->sched = (Schedule){args->lr, args->lr_floor, args->warmup, args->steps, args->cosine};
    run->log = open_metrics_log(args->log, st->step);
    batch_alloc(&run->batch, rows, args->T);
    run->progress = progress_start(st->step, args->steps);
    return 1;
}

// One optimizer step on the batch in run's buffers.
static StepResult run_step(Model *model, TrainState *st, const TrainArgs *args, Run *run) {
    const Batch *b = &run->batch;
    StepResult r = train_step(model, b->inputs, b->targets, b->packed ? b->pos : NULL, b->coefs,
                              b->rows, b->T, args->opt, &run->sched, st);
    state_count_step(st, &r);
    return r;
}

// After each step: writes the log line, shows progress, saves every --save-every steps, and
// returns 1 when --stop-after says this run ends here. The step's batch is run->batch: the speed
// counts its example tokens only (tok_per_s), and pad_frac is the share of its rows x T
// positions that were padding. extra_json, when not NULL, is appended
// to the log line (e.g. `, "val_loss": 1.23`). A skipped step (see backward_and_update) gets
// `"skipped": true` in its line and a warning on stderr; after --max-bad-steps of them in a
// row the run saves its checkpoint (the weights are those before the skipped steps) and stops.
static int run_after_step(const Model *model, const TrainState *st, const TrainArgs *args,
                          Run *run, const StepResult *r, const char *extra_json) {
    const Batch *b = &run->batch;
    double eta, tok_per_s = progress_step(&run->progress, st->step, b->tokens, &eta);
    double pad_frac = 1.0 - (double)b->tokens / ((double)b->rows * b->T);
    if (run->log) {
        char loss[32], norm[32];
        fprintf(run->log, "{\"step\": %d, \"loss\": %s, \"lr\": %.7g, \"grad_norm\": %s, "
                          "\"tok_per_s\": %.1f, \"pad_frac\": %.4f%s%s}\n", st->step,
                json_number(loss, r->loss), r->lr, json_number(norm, r->grad_norm), tok_per_s,
                pad_frac,
                r->skipped ? ", \"skipped\": true" : "", extra_json ? extra_json : "");
        if (fflush(run->log) != 0 || ferror(run->log))
            die("cannot write log %s: %s", args->log, strerror(errno));
    }
    show_progress(st->step, args->steps, r->loss, tok_per_s, eta, st->step == args->steps);
    if (r->skipped) {
        if (isatty(fileno(stdout))) printf("\n");
        fflush(stdout);
        fprintf(stderr, "sirt: warning: step %d: loss %g, gradient norm %g: not finite, the update "
                "was skipped (%d in a row; the run stops at --max-bad-steps %d)\n", st->step,
                r->loss, r->grad_norm, st->bad_streak, args->max_bad_steps);
        if (st->bad_streak >= args->max_bad_steps) {
            checkpoint_save(model, st, args->out);
            die("steps %d to %d had a non-finite loss or gradient norm (--max-bad-steps %d): "
                "stopping. Their updates were skipped: %s holds the weights after step %d, saved "
                "with the state at step %d. --detect-anomaly names the first kernel that wrote "
                "a NaN or infinity; fix the cause (e.g. a lower --lr), then --resume",
                st->step - st->bad_streak + 1, st->step, args->max_bad_steps, args->out,
                st->step - st->bad_streak, st->step);
        }
    }
    int stopping = args->stop_after && st->step - run->progress.first_step >= args->stop_after;
    if (st->step < args->steps && !stopping && args->save_every && st->step % args->save_every == 0)
        checkpoint_save(model, st, args->out);
    if (stopping) {
        if (isatty(fileno(stdout))) printf("\n");
        printf("stopping after %d steps as asked (--stop-after); continue with --resume\n",
               args->stop_after);
    }
    return stopping;
}

// Saves the final checkpoint and releases the loop's resources.
static void run_close(const Model *model, const TrainState *st, const TrainArgs *args, Run *run) {
    checkpoint_save(model, st, args->out);
    printf("wrote %s and %s.state (step %d) in %.1fs\n", args->out, args->out, st->step,
           now_seconds() - run->progress.run_start);
    if (st->skipped)
        printf("%d of %d steps were skipped: a non-finite loss or gradient norm\n", st->skipped,
               st->step);
    if (run->log) fclose(run->log);
    batch_free(&run->batch);
}

// ---------------------------------------------------------------------------------------------
// `./sirt train`: language modelling on token shards.
int cmd_train(int argc, char **argv) {
    TrainArgs args = train_args_defaults();
    const char *data = NULL;
    int shuffle = 0;
    const Flag flags[] = {
        {"--data", "FILE[,FILE]", FLAG_STRING, .value = &data, "llm.c token shards"},
        {"--shuffle", NULL, FLAG_SWITCH, .value = &shuffle,
         "each epoch visits the windows in an order drawn from (seed, epoch)"},
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {TRAIN_FLAGS_TITLE, TRAIN_FLAGS, &args}, {0}};
    if (flags_parse(argc, argv, "train", "train --data shard.bin[,more.bin] --steps N --batch B "
                    "--seq T --lr LR\n                    (--init model.bin | --config "
                    "L,NH,C,maxT,V) [more flags below]", tables))
        return 0;
    use_threads(args.threads);
    if (!data) die("train: --data is required");
    if (!args.steps) die("train: --steps is required");
    check_train_args(&args, "train");

    Model model;
    TrainState st;
    run_begin(&model, &st, &args, shuffle, args.B);
    DataLoader loader;
    loader_init(&loader, data, args.B, args.T, shuffle, args.seed, model.config.V);
    print_model(&model);
    printf("data: %zu batches of %dx%d per epoch\n", loader.num_windows, args.B, args.T);
    Run run;
    if (run_open(&run, &model, &args, &st, args.B)) {
        // windows of the token stream: full rows, no padding, one sequence per row
        size_t BT = (size_t)args.B * args.T;
        for (size_t i = 0; i < BT; i++) run.batch.coefs[i] = 1.0f / (float)BT; // the mean over B·T
        while (st.step < args.steps) {
            loader_batch(&loader, (size_t)st.step, run.batch.inputs, run.batch.targets);
            StepResult r = run_step(&model, &st, &args, &run);
            if (run_after_step(&model, &st, &args, &run, &r, NULL)) break;
        }
        run_close(&model, &st, &args, &run);
    }
    loader_free(&loader);
    model_free(&model);
    return 0;
}

// =============================================================================================
// 5. Supervised fine-tuning (phase 1)
// `./sirt sft`: instruction tuning on prompt/completion examples — the student learns from the
// teacher's demonstrations. This is phase 1 of SIRT (Ranaldi & Freitas 2024, "Self-Refine
// Instruction-Tuning for Aligning Reasoning in Language Models"): the completions are the
// teacher's step-by-step answers, so the student learns to write the reasoning, not only the
// final answer. A step takes --batch examples, packed several to a row of --seq tokens (or one
// per row with --pack 0; "Batches of examples" below); the loss is the mean NLL of the
// completion tokens and the end-of-text token after them (the prompt is given, not predicted,
// so it carries no loss):
//   L = −(1/N) Σ_t m_t ℓ_t,  m_t = 1 where target t is a completion token, 0 on prompt and
//   padding, N = Σ_t m_t over the whole batch;  c_t = −∂L/∂ℓ_t = m_t / N.
// Examples never attend to each other, packed or not, so the loss does not depend on the
// layout (tests/test_sft.c compares the two). The data formats
// (prompt/completion, text, GSM8K question/answer) and the prompt templates: lib/templates.h.
// With --valid, the mean completion NLL over the validation set (every token weighing the same)
// is computed every --eval-every steps (default: each epoch) and at the end, and the lowest
// one's checkpoint is kept beside --out (sft.bin -> sft.best.bin).
// =============================================================================================

static Tokenizer *load_tokenizer(const char *path) {
    char err[512];
    Tokenizer *tok = tok_load(path, err, sizeof err);
    if (!tok) die("%s", err);
    return tok;
}

// A tokenizer can serve a model when every id it produces is in the model's vocabulary.
static void check_tokenizer_fits(Tokenizer *tok, int vocab_size) {
    if (tok_vocab_size(tok) > vocab_size)
        die("the tokenizer has %d tokens but the model's vocabulary is V=%d", tok_vocab_size(tok),
            vocab_size);
}

// An example as token ids: prompt, then completion, then end-of-text.
typedef struct {
    int *ids;
    int length;        // tokens in ids
    int prompt_length; // ids[0..prompt_length) are the prompt
} TokenSequence;

// When prompt + completion exceed the window of `budget` tokens, the prompt keeps its end and
// the completion its start: the completion keeps at least half the window (or all of itself),
// and the prompt at least half (or all of itself) — never an empty completion.
static void truncation_split(int prompt_len, int completion_len, int budget, int *keep_prompt,
                             int *keep_completion) {
    int half = budget / 2;
    int p = budget - completion_len > half ? budget - completion_len : half;
    *keep_prompt = prompt_len < p ? prompt_len : p;
    int c = budget - *keep_prompt;
    *keep_completion = completion_len < c ? completion_len : c;
}

// Tokenizes prompt and completion separately (as TRL does; the completion as the prompt's
// continuation: no dummy prefix, unless the prompt is empty and the completion starts the text),
// puts BOS first for llama2.c's tokenizers, appends end-of-text, and truncates to `budget` tokens (a cut prompt keeps its BOS
// and its last tokens). Returns 1 when the example had to be cut.
static int tokenize_example(Tokenizer *tok, const char *prompt, const char *completion,
                            int budget, TokenSequence *out) {
    TokIds p = {0}, c = {0};
    if ((tok_bos(tok) >= 0 && tok_ids_push(&p, tok_bos(tok)) != 0) || // llama2.c's: BOS first
        tok_encode_ordinary(tok, prompt, strlen(prompt), &p) != 0 ||
        (prompt[0] ? tok_encode_continuation(tok, completion, strlen(completion), &c)
                   : tok_encode_ordinary(tok, completion, strlen(completion), &c)) != 0 ||
        tok_ids_push(&c, tok_eot(tok)) != 0)
        die("out of memory tokenizing an example");
    int keep_p, keep_c;
    truncation_split((int)p.len, (int)c.len, budget, &keep_p, &keep_c);
    out->ids = xmalloc((size_t)(keep_p + keep_c) * sizeof(int));
    if (keep_p) memcpy(out->ids, p.data + (p.len - keep_p), keep_p * sizeof(int));
    if (keep_p && keep_p < (int)p.len && tok_bos(tok) >= 0) out->ids[0] = tok_bos(tok);
    memcpy(out->ids + keep_p, c.data, keep_c * sizeof(int)); // keep_c >= 1: the end-of-text
    out->length = keep_p + keep_c;
    out->prompt_length = keep_p;
    int cut = keep_p < (int)p.len || keep_c < (int)c.len;
    tok_ids_free(&p);
    tok_ids_free(&c);
    return cut;
}

// A data set of tokenized examples, ready for batching.
typedef struct {
    TokenSequence *seqs;
    int count;
    int truncated; // examples cut to fit the window
} SftData;

static void sft_data_load(SftData *data, const char *path, const TemplateOptions *template,
                          Tokenizer *tok, int vocab_size, int T) {
    check_tokenizer_fits(tok, vocab_size);
    Example *examples;
    examples_load(path, template, &examples, &data->count);
    data->seqs = xmalloc((size_t)data->count * sizeof(TokenSequence));
    data->truncated = 0;
    for (int i = 0; i < data->count; i++)
        data->truncated += tokenize_example(tok, examples[i].prompt, examples[i].completion,
                                            T + 1, &data->seqs[i]);
    examples_free(examples, data->count);
}

static void sft_data_free(SftData *data) {
    for (int i = 0; i < data->count; i++) free(data->seqs[i].ids);
    free(data->seqs);
}

// ---------------------------------------------------------------------------------------------
// Batches of examples. A sequence of a batch (prompt + completion + end-of-text, `length` tokens)
// occupies length − 1 positions: its inputs ids[0..length−2], each with the next id as target.
// --pack 1 (the default; TRL's padding_free): a row holds several sequences back to back, and
// the model keeps them apart (model.h, "Examples in a row"): each sequence gets the log-probs
// it would have alone in a row. The sequences go into rows of W positions by first fit (each
// into the first row with room for it, in the batch's order), W chosen among the longest
// sequence's length .. T (= --seq) so that rows × (the fullest row) is smallest, the first such
// W on ties: the batch never holds more padding than one sequence per row would. --pack 0: one
// sequence per row. Either way the batch is as wide as its fullest row, and the rest of each row
// is padding: the pad token, no target, coefficient 0, and positions that continue the row's
// last sequence (attention is causal: no sequence's token reads them). The layout depends on
// the lengths and their order only: the same batch gives the same rows, run after run.
// The batch's coefs become the completion mask: 1 where the target ids[t+1] belongs to the
// completion (t + 1 >= prompt_length), 0 elsewhere. b needs room for n rows of T.

// Places sequences of len[0..n) positions into rows of W by first fit (pack), or one per row;
// fills at[] and fill[] (positions used per row) and returns the number of rows.
static int place_sequences(const int *len, int n, int W, int pack, Placement *at, int *fill) {
    int rows = 0;
    for (int i = 0; i < n; i++) {
        int r = pack ? 0 : rows;
        while (r < rows && fill[r] + len[i] > W) r++;
        if (r == rows) fill[rows++] = 0;
        at[i] = (Placement){r, fill[r], len[i]};
        fill[r] += len[i];
    }
    return rows;
}

static void batch_fill(Batch *b, const TokenSequence *const *seqs, int n, int T, int pack,
                       int pad) {
    int *len = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    int *fill = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(int)); // positions used in each row
    int longest = 1, best_W = T;
    for (int i = 0; i < n; i++) {
        len[i] = seqs[i]->length - 1;
        if (len[i] > T) die("a sequence of %d tokens does not fit --seq %d", len[i] + 1, T);
        longest = len[i] > longest ? len[i] : longest;
    }
    double best_area = INFINITY;
    for (int W = longest; pack && W <= T; W++) { // the row width with the least padding
        int rows = place_sequences(len, n, W, 1, b->at, fill), width = 1;
        for (int r = 0; r < rows; r++) width = fill[r] > width ? fill[r] : width;
        if ((double)rows * width < best_area) {
            best_area = (double)rows * width;
            best_W = W;
        }
    }
    b->rows = place_sequences(len, n, best_W, pack, b->at, fill);
    int width = 1;
    for (int r = 0; r < b->rows; r++) width = fill[r] > width ? fill[r] : width;
    b->T = width;
    b->packed = pack;
    b->tokens = 0;
    for (int i = 0; i < n; i++) b->tokens += len[i];
    size_t cells = (size_t)b->rows * width;
    for (size_t i = 0; i < cells; i++) {
        b->inputs[i] = pad;
        b->targets[i] = -1;
        b->coefs[i] = 0.0f;
        b->pos[i] = -1; // padding, until the pass below
    }
    for (int i = 0; i < n; i++) {
        const TokenSequence *seq = seqs[i];
        size_t first = (size_t)b->at[i].row * width + b->at[i].start;
        for (int t = 0; t < len[i]; t++) {
            b->inputs[first + t] = seq->ids[t];
            b->targets[first + t] = seq->ids[t + 1];
            b->coefs[first + t] = t + 1 >= seq->prompt_length ? 1.0f : 0.0f;
            b->pos[first + t] = t;
        }
    }
    for (size_t i = 0; i < cells; i++) // padding continues the row's last sequence
        if (b->pos[i] < 0) b->pos[i] = i % width == 0 ? 0 : b->pos[i - 1] + 1;
    free(len);
    free(fill);
}

// The batch of examples data->seqs[order[0..n)] (n <= the batch's rows), laid out by batch_fill;
// the mask becomes the coefficients 1/N, N = completion targets in the batch. Returns N.
static int sft_fill_batch(Batch *b, const SftData *data, const int *order, int n, int T,
                          int pack, int pad) {
    const TokenSequence **seqs = xmalloc((size_t)n * sizeof(TokenSequence *));
    for (int i = 0; i < n; i++) seqs[i] = &data->seqs[order[i]];
    batch_fill(b, seqs, n, T, pack, pad);
    free(seqs);
    size_t cells = (size_t)b->rows * b->T;
    int count = 0;
    for (size_t i = 0; i < cells; i++) count += b->coefs[i] != 0.0f;
    for (size_t i = 0; i < cells; i++) b->coefs[i] /= count > 0 ? count : 1;
    return count;
}

// The visiting order of epoch `epoch`: a permutation drawn from (seed, epoch).
static void epoch_order(int *order, int count, uint64_t seed, int epoch) {
    Rng rng = rng_seeded(seed * 1000003u + 0x5f7u + (uint64_t)epoch);
    for (int i = 0; i < count; i++) order[i] = i;
    rng_shuffle(&rng, order, count);
}

// --group-by-length, as in Hugging Face's Trainer: the epoch's shuffled order is cut into
// megabatches of GROUP_BATCHES batches and each is sorted by length, longest first (ties keep
// their shuffled order). A batch is as wide as its fullest row, so rows of similar length waste
// less compute on padding (most of all with --pack 0), while which examples meet in a
// megabatch is still random.
#define GROUP_BATCHES 50
typedef struct { int length, position, index; } LengthKey;

static int compare_length_keys(const void *a, const void *b) {
    const LengthKey *x = a, *y = b;
    if (x->length != y->length) return x->length > y->length ? -1 : 1;
    return (x->position > y->position) - (x->position < y->position);
}

static void group_by_length(int *order, int count, int B, const SftData *data) {
    int mega = GROUP_BATCHES * B;
    LengthKey *keys = xmalloc((size_t)(count < mega ? count : mega) * sizeof(LengthKey));
    for (int first = 0; first < count; first += mega) {
        int n = count - first < mega ? count - first : mega;
        for (int i = 0; i < n; i++)
            keys[i] = (LengthKey){data->seqs[order[first + i]].length, i, order[first + i]};
        qsort(keys, n, sizeof(LengthKey), compare_length_keys);
        for (int i = 0; i < n; i++) order[first + i] = keys[i].index;
    }
    free(keys);
}

// Mean completion NLL over a whole data set (forward passes only), B examples at a time in
// rows of up to T positions, packed or not.
static float sft_validation_loss(Model *model, const SftData *data, int B, int T, int pack,
                                 int pad) {
    int *order = xmalloc((size_t)data->count * sizeof(int));
    for (int i = 0; i < data->count; i++) order[i] = i;
    Batch batch;
    batch_alloc(&batch, B, T);
    double total = 0.0;
    long tokens = 0;
    for (int first = 0; first < data->count; first += B) {
        int n = data->count - first < B ? data->count - first : B;
        int count = sft_fill_batch(&batch, data, order + first, n, T, pack, pad);
        batch_forward(model, &batch);
        // coefs are 1/count: undo the mean
        total += (double)weighted_nll(model, batch.coefs, batch.rows * batch.T) * count;
        tokens += count;
    }
    free(order);
    batch_free(&batch);
    return tokens ? (float)(total / tokens) : 0.0f;
}

// "sft.bin" -> "sft.best.bin": where the lowest-validation-loss checkpoint is kept.
static void best_path(char *out, size_t size, const char *path) {
    path_tagged(out, size, path, "best", ".bin");
}

// The SFT loop: args->steps steps of batches of args->B examples in a fresh order each epoch
// (grouped by length with group_lengths); every eval_every steps, and at the last, the loss on
// valid (when given) is logged and the lowest-loss checkpoint kept as OUT.best.bin.
static void sft_train(Model *model, TrainState *st, const TrainArgs *args, const SftData *train,
                      const SftData *valid, int eval_every, int group_lengths, int pad) {
    int steps_per_epoch = (train->count + args->B - 1) / args->B;
    Run run;
    if (!run_open(&run, model, args, st, args->B)) return;
    int *order = xmalloc((size_t)train->count * sizeof(int)), order_epoch = -1;
    char best[4200];
    best_path(best, sizeof best, args->out);
    while (st->step < args->steps) {
        int epoch = st->step / steps_per_epoch, first = st->step % steps_per_epoch * args->B;
        if (epoch != order_epoch) {
            epoch_order(order, train->count, args->seed, order_epoch = epoch);
            if (group_lengths) group_by_length(order, train->count, args->B, train);
        }
        int n = train->count - first < args->B ? train->count - first : args->B;
        sft_fill_batch(&run.batch, train, order + first, n, args->T, args->pack, pad);
        StepResult r = run_step(model, st, args, &run);
        char extra[96] = "";
        if (valid && valid->count && (st->step % eval_every == 0 || st->step == args->steps)) {
            double t0 = now_seconds();
            float val = sft_validation_loss(model, valid, args->B, args->T, args->pack, pad);
            progress_pause(&run.progress, now_seconds() - t0);
            char number[32];
            snprintf(extra, sizeof extra, ", \"val_loss\": %s", json_number(number, val));
            if (!isatty(fileno(stdout)) || st->step == args->steps)
                printf("step %d: validation loss %.4f%s\n", st->step, val,
                       val < st->best_valid_loss ? " (best so far: saved)" : "");
            if (val < st->best_valid_loss) {
                st->best_valid_loss = val;
                model_save(model, best);
            }
        }
        if (run_after_step(model, st, args, &run, &r, extra[0] ? extra : NULL)) break;
    }
    run_close(model, st, args, &run);
    if (valid && valid->count) printf("best validation loss %.4f: %s\n", st->best_valid_loss, best);
    free(order);
}

// --template: the names of the TemplateKinds, in their order
static const char *const TEMPLATE_NAMES[] = {"cot", "plain", "none", NULL};


int cmd_sft(int argc, char **argv) {
    TrainArgs args = train_args_defaults();
    args.out = "sft.bin";
    const char *tokenizer = NULL, *data_path = NULL, *valid_path = NULL;
    int epochs = 1, eval_every = 0, group_lengths = 0, template_kind = TEMPLATE_COT;
    TemplateOptions template = {TEMPLATE_COT, 0, 0};
    const Flag flags[] = {
        {"--tokenizer", "PATH", FLAG_STRING, .value = &tokenizer,
         "our tok.bin, llama2.c's tokenizer.bin, or a directory with GPT-2's encoder.json and vocab.bpe"},
        {"--data", "FILE", FLAG_STRING, .value = &data_path,
         "JSONL of prompt/completion or question/answer items"},
        {"--valid", "FILE", FLAG_STRING, .value = &valid_path,
         "items whose loss is logged as val_loss; the best checkpoint is kept"},
        {"--epochs", "E", FLAG_INT, .value = &epochs, "passes over the data, unless --steps is given",
         1, 1 << 20},
        {"--eval-every", "N", FLAG_INT, .value = &eval_every,
         "steps between validations; 0: once an epoch", 0, 1 << 30},
        {"--template", NULL, FLAG_CHOICE, .value = &template_kind,
         "how a question/answer item becomes a prompt", .choices = TEMPLATE_NAMES},
        {"--strip-calc", NULL, FLAG_SWITCH, .value = &template.strip_calculator_notes,
         "remove GSM8K's calculator notes <<48/2=24>>"},
        {"--plain-share", "P", FLAG_FLOAT, .value = &template.plain_share,
         "a share P of the questions (by a hash of their text) gets the plain template", 0, 1},
        {"--group-by-length", NULL, FLAG_SWITCH, .value = &group_lengths,
         "batches of similar lengths (less padding), in megabatches of 50"},
        PACK_FLAG(args.pack),
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {TRAIN_FLAGS_TITLE, TRAIN_FLAGS, &args}, {0}};
    if (flags_parse(argc, argv, "sft", "sft --tokenizer PATH --data train.jsonl --batch B --seq T "
                    "--lr LR\n                  (--init model.bin | --config L,NH,C,maxT,V) [more "
                    "flags below]", tables))
        return 0;
    use_threads(args.threads);
    template.kind = template_kind;
    if (!tokenizer) die("sft: --tokenizer is required");
    if (!data_path) die("sft: --data is required");
    check_train_args(&args, "sft");

    Model model;
    TrainState st;
    run_begin(&model, &st, &args, 1, args.B);
    Tokenizer *tok = load_tokenizer(tokenizer);
    int pad = tok_eot(tok);
    SftData train, valid = {0};
    sft_data_load(&train, data_path, &template, tok, model.config.V, args.T);
    if (valid_path) sft_data_load(&valid, valid_path, &template, tok, model.config.V, args.T);
    int steps_per_epoch = (train.count + args.B - 1) / args.B;
    if (!args.steps) args.steps = epochs_to_steps(epochs, steps_per_epoch);
    if (!eval_every) eval_every = steps_per_epoch;
    print_model(&model);
    printf("data: %d examples (%d cut to fit %d tokens), %d steps per epoch, %d steps%s\n",
           train.count, train.truncated, args.T + 1, steps_per_epoch, args.steps,
           valid_path ? "" : "; no --valid: no validation");
    if (valid_path)
        printf("valid: %d examples (%d cut), evaluated every %d steps; the best is kept\n",
               valid.count, valid.truncated, eval_every);
    sft_train(&model, &st, &args, &train, valid_path ? &valid : NULL, eval_every, group_lengths, pad);
    sft_data_free(&train);
    if (valid_path) sft_data_free(&valid);
    tok_free(tok);
    model_free(&model);
    return 0;
}

// =============================================================================================
// 6. Generation: KV-cache decoding and the sampler
// Phase 2 samples the student's own answers by the thousand. A prompt is first run through the
// model once, every token a row (the "prefill"), which leaves every position's keys and values in
// a cache; after that each step feeds one new token per live sequence and reads the past from
// the cache, so a step costs one token's worth of work instead of a whole sequence. A step also
// carries the prefills of the prompts that start at it: one pass of the kernels for all rows.
// A finished sequence (end-of-text, a stop string, or --max-new tokens) drops out of the batch.
// Sequence i samples with its own generator, seeded from (seed, i): its text does not depend
// on the batch size, the other prompts, or the number of threads.
// =============================================================================================

typedef struct {
    int slots, Tc;           // sequences held, positions per sequence
    int rows;                // rows a step takes at most (live tokens and prompt tokens)
    float *memory;           // one allocation: the caches, then the scratch activations
    float *kcache, *vcache;  // (L, slots, Tc, KVC) each; KVC = C for GPT-2
    // (rows, .): qkvr holds Llama's rotated queries and keys; fch is (rows, 2·hidden) for
    // Llama's gate and up projections, and fch_gelu its SwiGLU; logits (slots, Vp)
    float *x, *ln, *mean, *rstd, *qkv, *qkvr, *atty, *proj, *fch, *fch_gelu, *logits;
    int *tokens, *slot, *pos; // the rows of a step, on the device (rows)
    int *prefix_slot, *prefix_len; // where each reads its prompt (attention_decode), on the device
    float *host_logits;       // (slots, Vp)
    // the model's weight matrices as matmul_pack copies them when the cache is made (a layer's
    // at [l]; the classifier's): decoding reads these, in the layout its products read fastest
    float *packed;            // one allocation for them
    float **qkvw, **attprojw, **fcw, **fcprojw, *classifier;
} KVCache;

// The weights' packed copies: sizes (in floats) of a layer's four and the classifier's
typedef struct { size_t qkvw, attprojw, fcw, fcprojw, classifier; } PackedSizes;
static PackedSizes packed_sizes(const Config *cfg) {
    int C = cfg->C, KVC = cfg->KVH * (cfg->C / cfg->NH), QKV = C + 2 * KVC;
    int FC = cfg->arch == ARCH_LLAMA ? 2 * cfg->hidden : cfg->hidden;
    return (PackedSizes){matmul_packed_floats(C, QKV), matmul_packed_floats(C, C),
                         matmul_packed_floats(C, FC), matmul_packed_floats(cfg->hidden, C),
                         matmul_packed_floats(C, cfg->Vp)};
}

// The packed copies of the model's weights, now, into kv->packed (sized by packed_sizes).
static void kv_cache_pack_weights(KVCache *kv, const Model *model) {
    const Config *cfg = &model->config;
    int C = cfg->C, H = cfg->hidden, KVC = cfg->KVH * (cfg->C / cfg->NH), QKV = C + 2 * KVC;
    int FC = cfg->arch == ARCH_LLAMA ? 2 * H : H;
    PackedSizes size = packed_sizes(cfg);
    const ParamTensors *p = &model->params;
    float *next = kv->packed;
    for (int l = 0; l < cfg->L; l++) {
        kv->qkvw[l] = next, next += size.qkvw;
        matmul_pack(kv->qkvw[l], p->qkvw + (size_t)l * QKV * C, C, QKV);
        kv->attprojw[l] = next, next += size.attprojw;
        matmul_pack(kv->attprojw[l], p->attprojw + (size_t)l * C * C, C, C);
        kv->fcw[l] = next, next += size.fcw;
        matmul_pack(kv->fcw[l], p->fcw + (size_t)l * FC * C, C, FC);
        kv->fcprojw[l] = next, next += size.fcprojw;
        matmul_pack(kv->fcprojw[l], p->fcprojw + (size_t)l * C * H, H, C);
    }
    kv->classifier = next;
    matmul_pack(kv->classifier, cfg->tied ? p->wte : p->wcls, C, cfg->Vp);
}

// A cache for `slots` sequences of up to Tc positions and steps of up to `rows` rows, with the
// packed copies of the model's weights as they are now (a cache serves one set of weights).
static void kv_cache_init(KVCache *kv, const Model *model, int slots, int rows, int Tc) {
    const Config *cfg = &model->config;
    // sizes in double, checked against the device's memory before they are used (as activations)
    double S = slots, R = rows, C = cfg->C, H = cfg->hidden, KVC = (double)cfg->KVH * (cfg->C / cfg->NH);
    double QKV = C + 2 * KVC, FC = cfg->arch == ARCH_LLAMA ? 2 * H : H;
    double cache = (double)cfg->L * S * Tc * KVC, qkvr = cfg->arch == ARCH_LLAMA ? R * QKV : 0;
    double sizes[13] = {cache, cache, R * C, R * C, R, R, R * QKV, qkvr, R * C, R * C, R * FC,
                        R * H, S * cfg->Vp};
    double total = 0;
    for (int i = 0; i < 13; i++) total += sizes[i];
    PackedSizes size = packed_sizes(cfg);
    double packed = (double)cfg->L * (size.qkvw + size.attprojw + size.fcw + size.fcprojw) +
                    size.classifier;
    char who[64];
    snprintf(who, sizeof who, "decoding %d sequences of up to %d tokens", slots, Tc);
    double bytes = (total + packed) * sizeof(float);
    if (!fits_memory(bytes))
        die("%s needs %.1f GiB of key/value cache and packed weights; " DEVICE_HAS " %.1f GiB",
            who, bytes / GIB, device_gib());
    kv->slots = slots;
    kv->rows = rows;
    kv->Tc = Tc;
    kv->memory = alloc_check(dev_alloc((size_t)total), who, bytes, "key/value cache");
    float **ptrs[13] = {&kv->kcache, &kv->vcache, &kv->x, &kv->ln, &kv->mean, &kv->rstd,
                        &kv->qkv, &kv->qkvr, &kv->atty, &kv->proj, &kv->fch, &kv->fch_gelu,
                        &kv->logits};
    float *next = kv->memory;
    for (int i = 0; i < 13; i++) {
        *ptrs[i] = next;
        next += (size_t)sizes[i];
    }
    int **ints[5] = {&kv->tokens, &kv->slot, &kv->pos, &kv->prefix_slot, &kv->prefix_len};
    for (int i = 0; i < 5; i++)
        *ints[i] = alloc_check(dev_alloc_int((size_t)rows), who, bytes, "key/value cache");
    kv->host_logits = xmalloc((size_t)slots * cfg->Vp * sizeof(float));
    kv->packed = alloc_check(dev_alloc((size_t)packed), who, bytes, "packed weights");
    float ***layers[4] = {&kv->qkvw, &kv->attprojw, &kv->fcw, &kv->fcprojw};
    for (int i = 0; i < 4; i++) *layers[i] = xmalloc((size_t)cfg->L * sizeof(float *));
    kv_cache_pack_weights(kv, model);
}

static void kv_cache_free(KVCache *kv) {
    dev_free(kv->memory);
    dev_free(kv->tokens);
    dev_free(kv->slot);
    dev_free(kv->pos);
    dev_free(kv->prefix_slot);
    dev_free(kv->prefix_len);
    free(kv->host_logits);
    dev_free(kv->packed);
    free(kv->qkvw), free(kv->attprojw), free(kv->fcw), free(kv->fcprojw);
}

// One step: row n is token tokens[n] at position pos[n] of cache slot slot[n], for n < N, whose
// positions below prefix_len[n] are in slot prefix_slot[n] (prefix_slot NULL: all in slot[n]).
// The rows are a live sequence's next token, or a prompt's tokens (a prefill: its rows at
// positions 0..length-1 of its slot, which attend causally among themselves). Every kernel
// computes each row alone. Only the first n_logits rows (n_logits <= kv->slots) go on past the
// last layer's attention (of the others, that layer needs only their keys and values) and
// through the final norm and the classifier: afterwards row n < n_logits of kv->host_logits
// holds the logits for the token after row n.
static void llama_decode_step(Model *model, KVCache *kv, int N, int n_logits,
                              const int *dev_prefix_slot);
static void decode_step(Model *model, KVCache *kv, const int *tokens, const int *slot,
                        const int *pos, const int *prefix_slot, const int *prefix_len, int N,
                        int n_logits) {
    const Config *cfg = &model->config;
    int C = cfg->C, H = cfg->hidden;
    ParamTensors p = model->params;
    if (N > kv->rows || n_logits > kv->slots || n_logits > N)
        die("internal error: a decoding step of %d rows (%d with logits) in a cache for %d (%d)",
            N, n_logits, kv->rows, kv->slots);
    for (int n = 0; n < N; n++)
        if (pos[n] < 0 || pos[n] >= kv->Tc || slot[n] < 0 || slot[n] >= kv->slots)
            die("internal error: position %d of slot %d is outside the cache (%d slots of %d)",
                pos[n], slot[n], kv->slots, kv->Tc);
    dev_to_device(kv->tokens, tokens, N * sizeof(int));
    dev_to_device(kv->slot, slot, N * sizeof(int));
    dev_to_device(kv->pos, pos, N * sizeof(int));
    if (prefix_slot) {
        dev_to_device(kv->prefix_slot, prefix_slot, N * sizeof(int));
        dev_to_device(kv->prefix_len, prefix_len, N * sizeof(int));
    }
    const int *dev_prefix_slot = prefix_slot ? kv->prefix_slot : NULL; // NULL: none shared
    if (cfg->arch == ARCH_LLAMA) {
        llama_decode_step(model, kv, N, n_logits, dev_prefix_slot);
        return;
    }
    size_t layer_cache = (size_t)kv->slots * kv->Tc * C;
    encoder_forward(kv->x, kv->tokens, kv->pos, p.wte, p.wpe, N, 1, C);
    for (int l = 0; l < cfg->L; l++) {
        size_t c = (size_t)l * C;
        // after the last layer's attention only the rows that reach the classifier go on
        int M = l == cfg->L - 1 ? n_logits : N;
        size_t mc = (size_t)M * C;
        layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, p.ln1w + c, p.ln1b + c, N, C,
                          cfg->norm_eps);
        matmul_forward_packed(kv->qkv, kv->ln, kv->qkvw[l], p.qkvb + 3 * c, N, C, 3 * C);
        attention_decode(kv->atty, kv->kcache + l * layer_cache, kv->vcache + l * layer_cache,
                         kv->qkv, kv->slot, kv->pos, dev_prefix_slot, kv->prefix_len, N, kv->Tc, C,
                         cfg->NH, cfg->NH);
        matmul_forward_packed(kv->proj, kv->atty, kv->attprojw[l], p.attprojb + c, M, C, C);
        residual_forward(kv->x, kv->x, kv->proj, mc);
        layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, p.ln2w + c, p.ln2b + c, M, C,
                          cfg->norm_eps);
        matmul_forward_packed(kv->fch, kv->ln, kv->fcw[l], p.fcb + (size_t)l * H, M, C, H);
        gelu_forward(kv->fch_gelu, kv->fch, (size_t)M * H);
        matmul_forward_packed(kv->proj, kv->fch_gelu, kv->fcprojw[l], p.fcprojb + c, M, H, C);
        residual_forward(kv->x, kv->x, kv->proj, mc);
    }
    layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, p.lnfw, p.lnfb, n_logits, C,
                      cfg->norm_eps);
    matmul_forward_packed(kv->logits, kv->ln, kv->classifier, NULL, n_logits, C, cfg->Vp);
    dev_to_host(kv->host_logits, kv->logits, (size_t)n_logits * cfg->Vp * sizeof(float));
}

// Llama's decoding step (its rows' tokens, slots, positions and, when shared, prefix slots and
// lengths are on the device; dev_prefix_slot is kv->prefix_slot, or NULL when no prompt is
// shared): llama_forward's kernels for the rows, the rotary embedding at each row's position.
static void llama_decode_step(Model *model, KVCache *kv, int N, int n_logits,
                              const int *dev_prefix_slot) {
    const Config *cfg = &model->config;
    int C = cfg->C, H = cfg->hidden, NH = cfg->NH, KVH = cfg->KVH;
    int KVC = KVH * (C / NH), QKV = C + 2 * KVC;
    float eps = cfg->norm_eps;
    ParamTensors p = model->params;
    size_t layer_cache = (size_t)kv->slots * kv->Tc * KVC;
    encoder_forward(kv->x, kv->tokens, kv->pos, p.wte, NULL, N, 1, C);
    for (int l = 0; l < cfg->L; l++) {
        size_t c = (size_t)l * C;
        int M = l == cfg->L - 1 ? n_logits : N; // as in decode_step
        size_t mc = (size_t)M * C;
        rmsnorm_forward(kv->ln, kv->rstd, kv->x, p.ln1w + c, N, C, eps);
        matmul_forward_packed(kv->qkv, kv->ln, kv->qkvw[l], NULL, N, C, QKV);
        rope_forward(kv->qkvr, kv->qkv, kv->pos, N, 1, C, NH, KVH, cfg->rope_theta);
        attention_decode(kv->atty, kv->kcache + l * layer_cache, kv->vcache + l * layer_cache,
                         kv->qkvr, kv->slot, kv->pos, dev_prefix_slot, kv->prefix_len, N, kv->Tc, C,
                         NH, KVH);
        matmul_forward_packed(kv->proj, kv->atty, kv->attprojw[l], NULL, M, C, C);
        residual_forward(kv->x, kv->x, kv->proj, mc);
        rmsnorm_forward(kv->ln, kv->rstd, kv->x, p.ln2w + c, M, C, eps);
        matmul_forward_packed(kv->fch, kv->ln, kv->fcw[l], NULL, M, C, 2 * H);
        swiglu_forward(kv->fch_gelu, kv->fch, M, H);
        matmul_forward_packed(kv->proj, kv->fch_gelu, kv->fcprojw[l], NULL, M, H, C);
        residual_forward(kv->x, kv->x, kv->proj, mc);
    }
    rmsnorm_forward(kv->ln, kv->rstd, kv->x, p.lnfw, n_logits, C, eps);
    matmul_forward_packed(kv->logits, kv->ln, kv->classifier, NULL, n_logits, C, cfg->Vp);
    dev_to_host(kv->host_logits, kv->logits, (size_t)n_logits * cfg->Vp * sizeof(float));
}

// The rows of one step, as decode_step takes them (count of them, room for `room`).
typedef struct {
    int count, room;
    int *token, *slot, *pos, *prefix, *prefix_len;
} StepRows;

static StepRows step_rows_alloc(int room) {
    StepRows r = {0, room, xmalloc(room * sizeof(int)), xmalloc(room * sizeof(int)),
                  xmalloc(room * sizeof(int)), xmalloc(room * sizeof(int)), xmalloc(room * sizeof(int))};
    return r;
}

static void step_rows_free(StepRows *r) {
    free(r->token), free(r->slot), free(r->pos), free(r->prefix), free(r->prefix_len);
}

static void step_rows_add(StepRows *r, int token, int slot, int pos, int prefix, int prefix_len) {
    if (r->count >= r->room) die("internal error: a decoding step of more than %d rows", r->room);
    int i = r->count++;
    r->token[i] = token, r->slot[i] = slot, r->pos[i] = pos, r->prefix[i] = prefix;
    r->prefix_len[i] = prefix_len;
}

// Adds the rows of B prompts (ids[b], lengths[b] tokens, into cache slot slots[b]): first each
// prompt's last token, in order of b (these rows are the ones that go on to the classifier),
// then the other tokens of each.
static void step_rows_add_prompts(StepRows *r, const int *const *ids, const int *lengths,
                                  const int *slots, int B) {
    for (int b = 0; b < B; b++)
        step_rows_add(r, ids[b][lengths[b] - 1], slots[b], lengths[b] - 1, slots[b], 0);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < lengths[b] - 1; t++) step_rows_add(r, ids[b][t], slots[b], t, slots[b], 0);
}

// Prefill alone: B prompts into cache slots slots[0..B), one step of their tokens; row b of
// kv->host_logits then holds the logits after prompt b's last token. (generate carries its
// prefills in its decoding steps; the benchmark and the tests call this.)
static void decode_prefill(Model *model, KVCache *kv, const int *const *prompts, const int *lengths,
                           const int *slots, int B) {
    int total = 0;
    for (int b = 0; b < B; b++) total += lengths[b];
    StepRows r = step_rows_alloc(total);
    step_rows_add_prompts(&r, prompts, lengths, slots, B);
    decode_step(model, kv, r.token, r.slot, r.pos, r.prefix, r.prefix_len, r.count, B);
    step_rows_free(&r);
}

// ---------------------------------------------------------------------------------------------
// The sampler: temperature (0 = greedy), then top-k and top-p (nucleus) truncation.
typedef struct {
    float temperature; // 0: argmax
    int top_k;         // keep the k most likely tokens (0: all)
    float top_p;       // keep the most likely tokens whose probabilities reach p (1: all)
} SamplerSettings;

typedef struct {
    float prob;
    int id;
} Candidate;

static int candidate_order(const void *a, const void *b) { // descending prob, then ascending id
    const Candidate *x = a, *y = b;
    if (x->prob != y->prob) return x->prob > y->prob ? -1 : 1;
    return x->id - y->id;
}

// Draws a token from logits (V). scratch holds V candidates.
static int sample_token(const float *logits, int V, const SamplerSettings *s, Rng *rng,
                        Candidate *scratch) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (s->temperature <= 0.0f) return best;
    float maxval = logits[best];
    for (int i = 0; i < V; i++)
        scratch[i] = (Candidate){expf((logits[i] - maxval) / s->temperature), i};
    int n = V;
    if ((s->top_k > 0 && s->top_k < V) || s->top_p < 1.0f) {
        qsort(scratch, V, sizeof(Candidate), candidate_order);
        if (s->top_k > 0 && s->top_k < n) n = s->top_k;
        if (s->top_p < 1.0f) {
            double total = 0.0, kept = 0.0;
            for (int i = 0; i < n; i++) total += scratch[i].prob;
            int keep = 0;
            while (keep < n && kept < s->top_p * total) kept += scratch[keep++].prob;
            n = keep > 0 ? keep : 1;
        }
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) total += scratch[i].prob;
    double u = rng_uniform(rng) * total, cumulative = 0.0;
    for (int i = 0; i < n; i++) {
        cumulative += scratch[i].prob;
        if (u < cumulative) return scratch[i].id;
    }
    return scratch[n - 1].id;
}

// ---------------------------------------------------------------------------------------------
// Generating completions for many prompts.
typedef struct {
    SamplerSettings sampler;
    int max_new;      // new tokens at most
    const char *stop; // stop string (NULL: none); the completion ends before it
    uint64_t seed;
    int batch;        // sequences decoded together
} GenerateSettings;

static Rng sequence_rng(uint64_t seed, long index) {
    return rng_seeded((seed << 32) ^ (uint64_t)index ^ 0x5eed0000ull);
}

// One sequence being generated.
typedef struct {
    long index;    // which prompt
    int slot, pos; // its cache slot and the position of its next token
    int prefix;    // the slot that holds its prompt (its own, or one it shares), prompt_len long
    int prompt_len;
    int produced;  // new tokens so far
    int last;      // the last token: the prompt's, then each new one's
    Rng rng;
    TokBytes text; // the completion so far
} LiveSequence;

// Appends token `id`; returns 1 when the sequence is finished: at the end-of-text token, or at
// BOS (llama2.c's tokenizers: a new text begins, where run.c stops too).
static int sequence_push(LiveSequence *seq, Tokenizer *tok, int id, const GenerateSettings *g,
                         int Tc) {
    seq->produced++;
    if (id == tok_eot(tok) || id == tok_bos(tok)) return 1;
    size_t before = seq->text.len, len;
    const unsigned char *bytes = tok_decode_next(tok, seq->last, id, &len);
    seq->last = id;
    if (bytes && tok_bytes_append(&seq->text, bytes, len) != 0) die("out of memory");
    if (g->stop && g->stop[0]) { // look for the stop string where the new bytes could complete it
        size_t n = strlen(g->stop), from = before >= n ? before - n + 1 : 0;
        for (size_t i = from; i + n <= seq->text.len; i++)
            if (!memcmp(seq->text.data + i, g->stop, n)) {
                seq->text.len = i;
                seq->text.data[i] = '\0';
                return 1;
            }
    }
    return seq->produced >= g->max_new || seq->pos >= Tc; // no room to feed it back
}

// The sequence has finished: its text goes to out[seq->index], a line of progress if asked.
static void sequence_finish(LiveSequence *seq, char **out, long *done, long *new_tokens, long n,
                            double start, int show_progress_line) {
    if (!seq->text.data && tok_bytes_append(&seq->text, "", 0) != 0) die("out of memory");
    out[seq->index] = seq->text.data;
    ++*done;
    *new_tokens += seq->produced;
    if (show_progress_line) generation_progress(*done, n, *new_tokens, start);
}

// What a generate() call did with its prompts: how many prefills ran (a shared prompt is
// prefilled once while a slot holds it), how many prompt tokens they computed, and how many
// sequences' prompts were cut to the context.
typedef struct {
    long sequences;      // prompts given, one sequence each
    long prefills;       // prompts prefilled (the others read a prompt that a slot held)
    long prefill_tokens; // tokens of the prefilled prompts
    long cut;            // sequences whose prompt kept only its last tokens (the context's size - 1)
} GenerateCounts;

// Whether a (na ids) and b (nb ids) are the same tokens; a NULL a is none.
static int same_tokens(const int *a, int na, const int *b, int nb) {
    return a && na == nb && (a == b || !memcmp(a, b, (size_t)na * sizeof(int)));
}

// Completes prompts[i] (token ids) for i < n; out[i] receives the completion text (malloc'd,
// NUL-terminated). Prompts longer than the context leave room for one new token: they keep their
// last Tc - 1 tokens (Tc = the longest prompt + max_new, at most maxT), and prompts that are the
// same once cut share a prefill. show_progress_line draws a progress line as sequences finish,
// then a line of the counts that it returns (GenerateCounts: the prefills, so the prompts
// shared, their tokens and the prompts cut).
// Continuous batching: the cache has g->batch slots (fewer if there are fewer prompts), and the
// prompts take them in order. Each step feeds every live sequence one token, and carries the
// prefills of the prompts that start at it: before the step, the waiting prompts take the slots
// freed at the last one, and their tokens join the step as rows (at most PREFILL_ROWS of them in
// one step, or one whole prompt if it is longer; the rest wait for the next step). After the
// step each live sequence samples its next token and each new one its first; a sequence that
// finishes frees its slot. So a step decodes a full batch while prompts are waiting, except for
// the reserved slots below: a slot whose shared prompt is still read waits for its last reader
// (or takes another sample of the same prompt), so a long sample can hold that one slot idle.
// Shared prompts: a prompt that a slot already holds (k samples of one question, K continuations
// of one step prefix) is not prefilled again. The new sequence writes its own tokens in a slot
// of its own and reads the prompt's keys and values from the slot that holds them (its
// "prefix", attention_decode), so the prompt is computed once and read from one place. A slot
// that holds a prompt in use stays reserved for it until the last sequence on it finishes; a
// sequence with the same prompt may still write its tokens there (after the prompt).
// A sequence's text depends only on its prompt, its index and the seed: it samples with its own
// generator, and every CPU kernel computes each row alone, in the same order whatever the other
// rows (gemm's tiles, and its path for a few rows, which sums in the same order; attention per
// row, reading the cache; the norms and activations per row), so the batch size, the slots a
// sequence uses, which step carries its prefill and the order in which sequences finish change
// nothing (tests/test_generate.c checks it).
// The GPU build's cuBLAS makes no such promise for products of different numbers of rows.
enum { PREFILL_ROWS = 2048 }; // prompt tokens one step takes, unless one prompt is longer

static GenerateCounts generate(Model *model, Tokenizer *tok, const TokenSequence *prompts, long n,
                               const GenerateSettings *g, char **out, int show_progress_line) {
    const Config *cfg = &model->config;
    int longest = 1;
    for (long i = 0; i < n; i++) longest = prompts[i].length > longest ? prompts[i].length : longest;
    int Tc = longest + g->max_new < cfg->maxT ? longest + g->max_new : cfg->maxT;
    if (Tc < 2) die("the model's context (maxT=%d) leaves no room to generate", cfg->maxT);
    int slots = g->batch < n ? g->batch : (int)(n > 0 ? n : 1);
    // the prompt tokens of one step: at most PREFILL_ROWS, or one prompt (at most Tc - 1 tokens)
    // alone, and never more than all the prompts hold
    long prompt_tokens = 0;
    for (long i = 0; i < n; i++) prompt_tokens += prompts[i].length < Tc - 1 ? prompts[i].length : Tc - 1;
    int prefill_rows = PREFILL_ROWS > Tc - 1 ? PREFILL_ROWS : Tc - 1;
    if (prompt_tokens < prefill_rows) prefill_rows = (int)(prompt_tokens > 1 ? prompt_tokens : 1);
    int rows = slots + prefill_rows;
    KVCache kv;
    kv_cache_init(&kv, model, slots, rows, Tc);
    LiveSequence *live = xcalloc(slots, sizeof(LiveSequence)); // the live ones: live[0..N)
    int *tokens = xmalloc(slots * sizeof(int)); // live[i]'s next token to feed
    StepRows step = step_rows_alloc(rows); // the rows of a step
    // the prompts prefilled at this step: their tokens and slots
    const int **fill_ids = xmalloc(slots * sizeof(int *));
    int *fill_len = xmalloc(slots * sizeof(int)), *fill_slot = xmalloc(slots * sizeof(int));
    // Per slot: whether a live sequence writes its tokens there (busy), how many live sequences
    // read their prompt from it (readers), the prompt its positions 0..held_len-1 hold (NULL:
    // none) and the logits after that prompt's last token (prompt_logits, (slots, Vp)).
    int *busy = xcalloc(slots, sizeof(int)), *readers = xcalloc(slots, sizeof(int));
    const int **held = xcalloc(slots, sizeof(int *));
    int *held_len = xcalloc(slots, sizeof(int));
    float *prompt_logits = xmalloc((size_t)slots * cfg->Vp * sizeof(float));
    Candidate *scratch = xmalloc((size_t)cfg->V * sizeof(Candidate));
    LiveSequence *started = xmalloc(slots * sizeof(LiveSequence)); // those that start at a step
    long next = 0, done = 0, new_tokens = 0; // next: the first prompt not yet started
    int N = 0;
    GenerateCounts counts = {n, 0, 0, 0};
    double start = now_seconds();
    for (;;) {
        // The waiting prompts start, in order, while there is room: a prompt that a slot holds
        // reads it there and takes a slot to write in (that slot itself when no one writes in
        // it); any other prompt takes a slot that no one writes in or reads, and is prefilled
        // at this step if its tokens fit.
        int B = 0, n_fill = 0, fill_tokens = 0;
        while (next < n && B < slots) {
            const TokenSequence *p = &prompts[next];
            int keep = p->length < Tc - 1 ? p->length : Tc - 1; // room for one new token
            if (keep < 1) die("prompt %ld is empty: there is nothing to continue", next);
            const int *prompt = p->ids + (p->length - keep);
            int holder = -1, own = -1;
            for (int s = 0; s < slots && holder < 0; s++)
                if (same_tokens(held[s], held_len[s], prompt, keep)) holder = s;
            if (holder >= 0 && !busy[holder]) own = holder;
            for (int s = 0; s < slots && own < 0; s++)
                if (!busy[s] && !readers[s]) own = s;
            if (own < 0) break; // no room: wait for a sequence to finish
            if (holder < 0 && n_fill > 0 && fill_tokens + keep > PREFILL_ROWS)
                break; // the next step takes it
            counts.cut += keep < p->length; // counted once, as it starts
            if (holder < 0) { // prefilled into its own slot
                holder = own;
                fill_ids[n_fill] = prompt;
                fill_len[n_fill] = keep;
                fill_slot[n_fill++] = own;
                fill_tokens += keep;
                held[own] = prompt;
                held_len[own] = keep;
            } else if (own != holder) {
                held[own] = NULL; // its tokens may overwrite the prompt it held
            }
            busy[own] = 1;
            readers[holder]++;
            started[B++] = (LiveSequence){next, own, keep, holder, keep, 0, prompt[keep - 1],
                                          sequence_rng(g->seed, next), {0}};
            next++;
        }
        if (N == 0 && B == 0) break; // nothing live and nothing waiting
        // The step's rows: every live sequence's token at its position; then the last token of
        // each prompt prefilled (these rows go through the classifier); then their other tokens.
        step.count = 0;
        for (int i = 0; i < N; i++)
            step_rows_add(&step, tokens[i], live[i].slot, live[i].pos++, live[i].prefix,
                          live[i].prompt_len);
        step_rows_add_prompts(&step, fill_ids, fill_len, fill_slot, n_fill);
        if (step.count > 0)
            decode_step(model, &kv, step.token, step.slot, step.pos, step.prefix, step.prefix_len,
                        step.count, N + n_fill);
        counts.prefills += n_fill;
        counts.prefill_tokens += fill_tokens;
        for (int f = 0; f < n_fill; f++)
            memcpy(prompt_logits + (size_t)fill_slot[f] * cfg->Vp,
                   kv.host_logits + (size_t)(N + f) * cfg->Vp, cfg->Vp * sizeof(float));
        // each live sequence samples its next token: finished ones leave, the rest move up (in
        // order); then each new one samples its first, from its prompt's logits, and joins them
        int kept = 0;
        for (int i = 0; i < N; i++) {
            LiveSequence *seq = &live[i];
            int id = sample_token(kv.host_logits + (size_t)i * cfg->Vp, cfg->V, &g->sampler,
                                  &seq->rng, scratch);
            if (sequence_push(seq, tok, id, g, Tc)) {
                sequence_finish(seq, out, &done, &new_tokens, n, start, show_progress_line);
                busy[seq->slot] = 0;
                readers[seq->prefix]--;
                continue;
            }
            tokens[kept] = id;
            live[kept++] = *seq;
        }
        N = kept;
        for (int b = 0; b < B; b++) {
            LiveSequence seq = started[b];
            int id = sample_token(prompt_logits + (size_t)seq.prefix * cfg->Vp, cfg->V,
                                  &g->sampler, &seq.rng, scratch);
            if (sequence_push(&seq, tok, id, g, Tc)) {
                sequence_finish(&seq, out, &done, &new_tokens, n, start, show_progress_line);
                busy[seq.slot] = 0;
                readers[seq.prefix]--;
            } else {
                live[N] = seq;
                tokens[N++] = id;
            }
        }
    }
    kv_cache_free(&kv);
    free(live);
    free(tokens);
    step_rows_free(&step);
    free(fill_ids);
    free(fill_len);
    free(fill_slot);
    free(busy);
    free(readers);
    free(held);
    free(held_len);
    free(prompt_logits);
    free(scratch);
    free(started);
    if (show_progress_line) {
        printf("prompts: %ld prefilled (%ld tokens) for %ld sequences", counts.prefills,
               counts.prefill_tokens, counts.sequences);
        if (counts.cut) printf(", %ld cut to their last %d tokens", counts.cut, Tc - 1);
        printf("\n");
    }
    return counts;
}

// =============================================================================================
// 7. Sampling and evaluation
// `./sirt sample` turns prompts into completions; `./sirt eval` scores a model on reasoning
// items: greedy accuracy with a 95% interval and the diagnosis (lib/answer.h): with K samples
// maj@k and pass@k, with true steps verified accuracy, and the samples' arithmetic.
// Reasoning items go through the same prompt template as SFT.
// Every result of the method is such an accuracy. As in the paper, the model must commit to an
// answer: a completion is right when the final answer extracted from it (lib/answer.h) equals
// the gold one. Greedy accuracy (temperature 0) comes with a 95% Wilson score interval; with
// --samples K, maj@K counts an item right when the most frequent answer of its K samples is
// right, pass@K when any of them is.
// Files, JSON lines. `sample --data` reads one item a line (its "prompt" verbatim, else its
// "text", else its "question" through the template) and writes the line back with every field
// kept and "samples": [K completions] added. `eval --out` writes one line per item: {"index"
// (from 0), "gold", "prediction" (null when no answer was found), "correct", "verified" (when
// the item has true steps), "completion" (the greedy one), and with K samples "samples",
// "majority" ("" when no sample has an answer), "majority_correct", "pass"}; `eval --summary`
// the diagnosis (lib/answer.h) as one JSON object.
// =============================================================================================

static TokenSequence tokenize_prompt(Tokenizer *tok, const char *prompt) {
    TokIds ids = {0};
    if (tok_bos(tok) >= 0 && tok_ids_push(&ids, tok_bos(tok)) != 0) die("out of memory");
    if (tok_encode_ordinary(tok, prompt, strlen(prompt), &ids) != 0) die("out of memory");
    if (ids.len == 0 && tok_ids_push(&ids, tok_eot(tok)) != 0) die("out of memory"); // "" -> <eot>
    return (TokenSequence){ids.data, (int)ids.len, (int)ids.len};
}

// Completions of every item's prompt, k per item (sequence i*k + j is sample j of item i).
static char **sample_items(Model *model, Tokenizer *tok, const Example *items, int n, int k,
                           const GenerateSettings *g) {
    TokenSequence *prompts = xcalloc((size_t)n * k, sizeof(TokenSequence));
    for (int i = 0; i < n; i++) {
        TokenSequence ids = tokenize_prompt(tok, items[i].prompt);
        for (int j = 0; j < k; j++) prompts[(long)i * k + j] = ids;
    }
    char **outs = xmalloc((size_t)n * k * sizeof(char *));
    generate(model, tok, prompts, (long)n * k, g, outs, 1);
    for (int i = 0; i < n; i++) free(prompts[(long)i * k].ids);
    free(prompts);
    return outs;
}

// The flags of generation, shared by sample and eval: a table (lib/flags.h) with a
// GenerateSettings. --top-p's range is half open, so check_generate checks it after parsing.
#define GENERATE_FLAGS_TITLE "the flags of generation (sample, eval, label-steps)"
static const Flag GENERATE_FLAGS[] = {
    {"--temperature", "T", FLAG_FLOAT, .offset = offsetof(GenerateSettings, sampler.temperature),
     "the sampling temperature; 0: greedy", 0, INFINITY},
    {"--top-k", "K", FLAG_INT, .offset = offsetof(GenerateSettings, sampler.top_k),
     "sample from the K most likely tokens; 0: all", 0, 1 << 24},
    {"--top-p", "P", FLAG_FLOAT, .offset = offsetof(GenerateSettings, sampler.top_p),
     "keep the likeliest tokens up to probability P, in (0, 1]", -INFINITY, INFINITY},
    {"--max-new", "N", FLAG_INT, .offset = offsetof(GenerateSettings, max_new),
     "new tokens per completion at most", 1, 1 << 20},
    {"--seed", "S", FLAG_U64, .offset = offsetof(GenerateSettings, seed),
     "sequence i draws from a generator seeded by (S, i)", 0, 0x7fffffffL},
    {"--batch", "N", FLAG_INT, .offset = offsetof(GenerateSettings, batch),
     "sequences decoded together", 1, 1 << 16},
    {"--stop", "STR", FLAG_STRING, .offset = offsetof(GenerateSettings, stop),
     "a completion ends before this text"},
    {0}};

static void check_generate(const GenerateSettings *g) {
    if (g->sampler.top_p <= 0 || g->sampler.top_p > 1) die("--top-p must be in (0, 1]");
}

static const GenerateSettings GENERATE_DEFAULTS = {{0.8f, 0, 1.0f}, 256, NULL, 1337, 64};

int cmd_sample(int argc, char **argv) {
    const char *model_path = NULL, *tokenizer = NULL, *prompt = NULL, *data = NULL, *out_path = NULL;
    int k = 1, template_given = 0, kind = TEMPLATE_COT, threads = 0;
    GenerateSettings g = GENERATE_DEFAULTS;
    const Flag flags[] = {
        {"--model", "FILE", FLAG_STRING, .value = &model_path, "a checkpoint (llm.c's, ours, llama2.c's) or a Hugging Face directory"},
        {"--tokenizer", "PATH", FLAG_STRING, .value = &tokenizer,
         "our tok.bin, llama2.c's tokenizer.bin, or a directory with GPT-2's encoder.json and vocab.bpe"},
        {"--prompt", "TEXT", FLAG_STRING, .value = &prompt, "complete this text"},
        {"--data", "FILE", FLAG_STRING, .value = &data,
         "complete each line's prompt, question (templated) or text"},
        {"--out", "FILE", FLAG_STRING, .value = &out_path,
         "with --data: the lines with their \"samples\" added"},
        {"-n", "K", FLAG_INT, .value = &k, "completions per prompt", 1, 1 << 20},
        {"--template", NULL, FLAG_CHOICE, .value = &kind,
         "for questions; --prompt is verbatim unless given", .choices = TEMPLATE_NAMES,
         .given = &template_given},
        {"--threads", "N", FLAG_INT, .value = &threads,
         "OpenMP threads; by default OMP_NUM_THREADS, or all cores", 1, 1024},
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {GENERATE_FLAGS_TITLE, GENERATE_FLAGS, &g}, {0}};
    if (flags_parse(argc, argv, "sample", "sample --model M --tokenizer PATH (--prompt TEXT | --data "
                    "in.jsonl --out out.jsonl)\n                     [more flags below]", tables))
        return 0;
    use_threads(threads);
    check_generate(&g);
    if (!model_path || !tokenizer) die("sample: --model and --tokenizer are required");
    if (!prompt == !data) die("sample: give either --prompt TEXT or --data prompts.jsonl");
    if (data && !out_path) die("sample: --data needs --out samples.jsonl");
    if (out_path) check_writable(out_path);
    Model model;
    model_load(&model, model_path);
    Tokenizer *tok = load_tokenizer(tokenizer);
    check_tokenizer_fits(tok, model.config.V);

    JsonlFile file = {0};
    int items = 1;
    if (data) {
        jsonl_read(data, &file);
        items = file.count;
    }
    // sequence i*k + j is sample j of item i: its text depends only on (seed, i*k + j)
    long n = (long)items * k;
    TokenSequence *prompts = xmalloc(n * sizeof(TokenSequence));
    for (int i = 0; i < items; i++) {
        // --prompt is used verbatim unless --template names cot or plain
        char *text = data ? prompt_of_item(&file, i, kind)
                          : template_prompt(template_given ? kind : TEMPLATE_NONE, prompt);
        TokenSequence ids = tokenize_prompt(tok, text);
        for (int j = 0; j < k; j++) prompts[(long)i * k + j] = ids;
        free(text);
    }
    char **outs = xmalloc(n * sizeof(char *));
    generate(&model, tok, prompts, n, &g, outs, data != NULL);
    if (data) {
        SafeFile sf;
        safe_open(&sf, out_path);
        for (int i = 0; i < items; i++) {
            json_write_fields(sf.file, &file.objects[i]);
            fputs(file.objects[i].count ? ", \"samples\": [" : "\"samples\": [", sf.file);
            for (int j = 0; j < k; j++) {
                const char *text = outs[(long)i * k + j];
                if (j) fputs(", ", sf.file);
                json_write_string(sf.file, text, strlen(text));
            }
            fputs("]}\n", sf.file);
        }
        safe_commit(&sf);
        printf("wrote %ld samples of %d prompts to %s\n", n, items, out_path);
    } else {
        for (long j = 0; j < n; j++) printf("%s%s\n", k > 1 ? "--- sample\n" : "", outs[j]);
    }
    for (long j = 0; j < n; j++) free(outs[j]);
    for (int i = 0; i < items; i++) free(prompts[(long)i * k].ids);
    free(outs);
    free(prompts);
    if (data) jsonl_free(&file);
    tok_free(tok);
    model_free(&model);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Evaluation. An item is correct when the final answer extracted from the completion equals the
// gold answer (lib/answer.h). Accuracy comes with a 95% Wilson score interval (lib/report.h).


#define EVAL_MAX_TRUTH 64 // true steps of one item

static void print_eval(const Diagnosis *d, const char *what) {
    Interval ci = wilson_interval(d->greedy, d->n);
    printf("%s: accuracy %.2f%% (%ld/%ld), 95%% interval [%.2f%%, %.2f%%]\n", what,
           100.0 * d->greedy / d->n, d->greedy, d->n, 100 * ci.low, 100 * ci.high);
    if (d->with_truth > 0) {
        Interval v = wilson_interval(d->verified, d->with_truth);
        printf("  verified (right, every step the true one) %.2f%% [%.2f%%, %.2f%%] of %ld items "
               "with true steps; right by luck: %.1f%% of the right answers\n",
               100.0 * d->verified / d->with_truth, 100 * v.low, 100 * v.high, d->with_truth,
               d->greedy_with_truth ? diagnosis_luck(d) : 0.0);
    }
    for (int l = 0; l < d->num_levels; l++) {
        Interval m = wilson_interval(d->majority[l], d->n), p = wilson_interval(d->pass[l], d->n);
        printf("  maj@%-3d %6.2f%% [%.2f%%, %.2f%%]   pass@%-3d %6.2f%% [%.2f%%, %.2f%%]\n",
               d->levels[l], 100.0 * d->majority[l] / d->n, 100 * m.low, 100 * m.high,
               d->levels[l], 100.0 * d->pass[l] / d->n, 100 * p.low, 100 * p.high);
    }
    if (d->rerank_by) {
        Interval r = wilson_interval(d->reranked_right, d->n);
        printf("  best-of-%d by the reward model (path reward: %s step probability) %.2f%% [%.2f%%, %.2f%%]\n",
               d->k, strcmp(d->rerank_by, "min") ? "mean" : "lowest", 100.0 * d->reranked_right / d->n,
               100 * r.low, 100 * r.high);
    }
    int any = 0;
    for (int o = 0; o < 4; o++) any |= d->op_total[o] > 0;
    if (any) {
        printf("  arithmetic of the %s:", d->k ? "samples" : "greedy completions");
        for (int o = 0; o < 4; o++)
            if (d->op_total[o])
                printf("  %c %.1f%% of %ld", ANSWER_OPS[o], 100.0 * d->op_right[o] / d->op_total[o],
                       d->op_total[o]);
        printf("\n");
        if (d->world_total) // the steps a true path can hold, apart from those a reasoning error made
            printf("  in the task's world (operands and right result counts 0..%d): %.1f%% of %ld right;"
                   " the other %ld steps are off every true path\n", TASK_MATH_MAX_VALUE,
                   100.0 * d->world_right / d->world_total, d->world_total, d->truth_steps - d->world_total);
    }
    if (d->k > 0 && d->with_truth > 0)
        printf("  samples right %.1f%%, right on the true path %.1f%%\n",
               100.0 * d->sample_right / d->samples, 100.0 * d->sample_verified / d->samples);
}

// The true steps of an example, from its "truth" field (0 when it has none).
static int example_truth(const Example *ex, const char *data, int i, TaskStep *out) {
    if (!ex->truth) return 0;
    int n = task_parse_truth(ex->truth, out, EVAL_MAX_TRUTH);
    if (n < 0) die("%s: item %d: \"truth\" must be lines of \"A OP B = C\" (at most %d)", data, i + 1,
                   EVAL_MAX_TRUTH);
    return n;
}

// The counts behind precision, recall and F1 of step labels (section 10) and of a reward model's
// steps against the true ones (score_file).
// The positive class is "the step is correct" (ours: the paper does not say); tn and the counts
// themselves are stored so that the error class's figures can be derived.
typedef struct { long tp, fp, fn, tn; } LabelCounts;

static void label_counts_add(LabelCounts *c, int predicted, int truth) {
    if (predicted && truth) c->tp++;
    else if (predicted) c->fp++;
    else if (truth) c->fn++;
    else c->tn++;
}

static double label_precision(const LabelCounts *c) {
    return c->tp + c->fp ? (double)c->tp / (c->tp + c->fp) : NAN;
}
static double label_recall(const LabelCounts *c) {
    return c->tp + c->fn ? (double)c->tp / (c->tp + c->fn) : NAN;
}
static double label_f1(const LabelCounts *c) { // 2PR/(P+R) = 2tp/(2tp + fp + fn)
    return c->tp + c->fp + c->fn ? 2.0 * c->tp / (2.0 * c->tp + c->fp + c->fn) : NAN;
}

static void label_counts_json(FILE *f, const LabelCounts *c) {
    char p[32], r[32], f1[32];
    fprintf(f, "{\"tp\": %ld, \"fp\": %ld, \"fn\": %ld, \"tn\": %ld, \"precision\": %s, "
            "\"recall\": %s, \"f1\": %s}", c->tp, c->fp, c->fn, c->tn,
            json_number(p, label_precision(c)), json_number(r, label_recall(c)),
            json_number(f1, label_f1(c)));
}

static void label_counts_print(const char *what, const LabelCounts *c) {
    double values[3] = {label_precision(c), label_recall(c), label_f1(c)};
    const char *names[3] = {"precision", "recall", "F1"};
    printf("%s", what);
    for (int i = 0; i < 3; i++) {
        if (isnan(values[i])) printf(" %s n/a", names[i]);
        else printf(" %s %.3f", names[i], values[i]);
    }
}

typedef struct ValueHead ValueHead; // section 10
static void prm_load(Model *model, ValueHead **head, const char *path);
static void prm_free(Model *model, ValueHead *head);
static int *prm_rerank(Model *prm, const ValueHead *head, Tokenizer *tok, const Example *items,
                       int n, int k, char *const *samples, int by_min, const char *data,
                       LabelCounts *vs_truth);

static const char *const RERANK_NAMES[] = {"mean", "min", NULL}; // the path reward of --rerank

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *tokenizer = NULL, *data = NULL, *out_path = NULL, *summary_path = NULL;
    const char *rerank_path = NULL;
    int k = 0, teacher = 0, template_kind = TEMPLATE_COT, threads = 0, rerank_by_min = 0;
    TemplateOptions template = {TEMPLATE_COT, 0, 0};
    GenerateSettings g = GENERATE_DEFAULTS;
    const Flag flags[] = {
        {"--model", "FILE", FLAG_STRING, .value = &model_path, "a checkpoint (llm.c's, ours, llama2.c's) or a Hugging Face directory"},
        {"--tokenizer", "PATH", FLAG_STRING, .value = &tokenizer,
         "our tok.bin, llama2.c's tokenizer.bin, or a directory with GPT-2's encoder.json and vocab.bpe"},
        {"--data", "FILE", FLAG_STRING, .value = &data, "question/answer JSONL with gold answers"},
        {"--samples", "K", FLAG_INT, .value = &k,
         "K samples per item besides the greedy one: maj@K, pass@K", 0, 1 << 16},
        {"--teacher", NULL, FLAG_SWITCH, .value = &teacher,
         "score the data's own answers (the oracle teacher's)"},
        {"--template", NULL, FLAG_CHOICE, .value = &template_kind,
         "how a question becomes a prompt", .choices = TEMPLATE_NAMES},
        {"--strip-calc", NULL, FLAG_SWITCH, .value = &template.strip_calculator_notes,
         "remove GSM8K's calculator notes <<48/2=24>>"},
        {"--out", "FILE", FLAG_STRING, .value = &out_path,
         "one line per item: gold, prediction, correct, completion, samples"},
        {"--summary", "FILE", FLAG_STRING, .value = &summary_path,
         "the diagnosis as one JSON object: accuracies, pass@k, maj@k, arithmetic"},
        {"--rerank", "PRM", FLAG_STRING, .value = &rerank_path,
         "with --samples K: best-of-K, the sample a reward model (./sirt prm) rates highest"},
        {"--rerank-by", NULL, FLAG_CHOICE, .value = &rerank_by_min,
         "a path's reward: the mean or the lowest of its step probabilities", .choices = RERANK_NAMES},
        {"--threads", "N", FLAG_INT, .value = &threads,
         "OpenMP threads; by default OMP_NUM_THREADS, or all cores", 1, 1024},
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {GENERATE_FLAGS_TITLE, GENERATE_FLAGS, &g}, {0}};
    if (flags_parse(argc, argv, "eval", "eval --model M --tokenizer PATH --data test.jsonl [more "
                    "flags below]\n       ./sirt eval --teacher --data test.jsonl",
                    tables))
        return 0;
    use_threads(threads);
    check_generate(&g);
    template.kind = template_kind;
    if (!data) die("eval: --data is required");
    if (!teacher && (!model_path || !tokenizer))
        die("eval: --model and --tokenizer are required (or --teacher)");
    if (rerank_path && (teacher || k < 1)) die("eval: --rerank needs --samples K (K >= 1) of a --model");
    if (out_path) check_writable(out_path);
    if (summary_path) check_writable(summary_path);
    Example *items;
    int n;
    examples_load(data, &template, &items, &n);
    for (int i = 0; i < n; i++)
        if (!items[i].gold) die("%s: item %d has no gold answer (eval needs question/answer items)", data, i + 1);

    char **greedy = NULL, **samples = NULL;
    Model model, prm;
    ValueHead *head = NULL;
    Tokenizer *tok = NULL;
    if (teacher) { // the demonstrations themselves, as the student would see them
        greedy = xmalloc(n * sizeof(char *));
        for (int i = 0; i < n; i++) greedy[i] = json_strndup(items[i].completion, strlen(items[i].completion));
        k = 0;
    } else {
        model_load(&model, model_path);
        tok = load_tokenizer(tokenizer);
        check_tokenizer_fits(tok, model.config.V);
        if (rerank_path) { // read (and checked) before any sampling
            prm_load(&prm, &head, rerank_path);
            check_tokenizer_fits(tok, prm.config.V);
        }
        GenerateSettings greedy_settings = g;
        greedy_settings.sampler.temperature = 0.0f;
        printf("greedy decoding of %d items\n", n);
        greedy = sample_items(&model, tok, items, n, 1, &greedy_settings);
        if (k > 0) {
            printf("sampling %d per item at temperature %.2f\n", k, g.sampler.temperature);
            samples = sample_items(&model, tok, items, n, k, &g);
        }
    }
    int *choice = NULL;
    if (rerank_path) {
        printf("scoring %ld samples with the reward model %s\n", (long)n * k, rerank_path);
        choice = prm_rerank(&prm, head, tok, items, n, k, samples, rerank_by_min, data, NULL);
        prm_free(&prm, head);
    }

    Diagnosis d;
    diagnosis_init(&d, k);
    if (choice) d.rerank_by = rerank_by_min ? "min" : "mean";
    SafeFile sf;
    if (out_path) safe_open(&sf, out_path);
    for (int i = 0; i < n; i++) {
        TaskStep truth[EVAL_MAX_TRUTH];
        int num_truth = example_truth(&items[i], data, i, truth);
        ItemVerdict v;
        diagnosis_add(&d, items[i].gold, truth, num_truth, greedy[i], samples ? samples + (long)i * k : NULL, &v);
        int reranked_right = choice && answer_is_correct(samples[(long)i * k + choice[i]], items[i].gold);
        d.reranked_right += reranked_right;
        if (out_path) {
            FILE *o = sf.file;
            fprintf(o, "{\"index\": %d, \"gold\": ", i);
            json_write_string(o, items[i].gold, strlen(items[i].gold));
            fputs(", \"prediction\": ", o);
            if (v.found) json_write_string(o, v.predicted, strlen(v.predicted));
            else fputs("null", o);
            fprintf(o, ", \"correct\": %s", v.correct ? "true" : "false");
            if (num_truth) fprintf(o, ", \"verified\": %s", v.verified ? "true" : "false");
            fputs(", \"completion\": ", o);
            json_write_string(o, greedy[i], strlen(greedy[i]));
            if (k > 0) {
                fputs(", \"samples\": [", o);
                for (int j = 0; j < k; j++) {
                    if (j) fputs(", ", o);
                    const char *text = samples[(long)i * k + j];
                    json_write_string(o, text, strlen(text));
                }
                fputs("], \"majority\": ", o);
                json_write_string(o, v.majority, strlen(v.majority));
                fprintf(o, ", \"majority_correct\": %s, \"pass\": %s", v.majority_correct ? "true" : "false",
                        v.pass ? "true" : "false");
                if (choice)
                    fprintf(o, ", \"reranked\": %d, \"reranked_correct\": %s", choice[i],
                            reranked_right ? "true" : "false");
            }
            fputs("}\n", o);
        }
    }
    if (out_path) safe_commit(&sf);
    print_eval(&d, teacher ? "teacher" : data);
    if (summary_path) {
        safe_open(&sf, summary_path);
        diagnosis_write_json(sf.file, &d);
        fputs("\n", sf.file);
        safe_commit(&sf);
    }
    for (int i = 0; i < n; i++) free(greedy[i]);
    for (long j = 0; samples && j < (long)n * k; j++) free(samples[j]);
    free(greedy);
    free(samples);
    free(choice);
    examples_free(items, n);
    if (!teacher) {
        tok_free(tok);
        model_free(&model);
    }
    return 0;
}

// Greedy accuracy of a model on a file of reasoning items, item by item (Score, lib/report.h), or
// with model_path NULL that of the data's own demonstrations (the teacher). The reproduction's
// table is made of these. With d, also the diagnosis of the model on those items: k samples
// each (settings g) besides the greedy completion; with a reward model prm_path (./sirt prm)
// too, best-of-k by it (the mean step probability, or with by_min the lowest, as eval --rerank)
// in d, and its steps of those samples against the true steps added to prm_vs_truth.
static Score score_file(const char *model_path, Tokenizer *tok, const char *data,
                        const GenerateSettings *g, int k, Diagnosis *d, const char *prm_path,
                        int by_min, LabelCounts *prm_vs_truth) {
    TemplateOptions cot = {TEMPLATE_COT, 0, 0};
    Example *items;
    int n;
    examples_load(data, &cot, &items, &n);
    Score s = {0, n, xmalloc(n + 1)};
    Model model;
    if (model_path) model_load(&model, model_path);
    GenerateSettings greedy = *g;
    greedy.sampler.temperature = 0.0f;
    char **outs = model_path ? sample_items(&model, tok, items, n, 1, &greedy) : NULL;
    char **samples = model_path && d && k > 0 ? sample_items(&model, tok, items, n, k, g) : NULL;
    if (d) diagnosis_init(d, samples ? k : 0);
    int *choice = NULL;
    if (prm_path && samples) {
        Model prm;
        ValueHead *head;
        prm_load(&prm, &head, prm_path);
        check_tokenizer_fits(tok, prm.config.V);
        choice = prm_rerank(&prm, head, tok, items, n, k, samples, by_min, data, prm_vs_truth);
        prm_free(&prm, head);
        d->rerank_by = RERANK_NAMES[by_min != 0];
    }
    for (int i = 0; i < n; i++) {
        const char *completion = outs ? outs[i] : items[i].completion;
        s.hit[i] = (unsigned char)answer_is_correct(completion, items[i].gold);
        s.correct += s.hit[i];
        if (d) {
            TaskStep truth[EVAL_MAX_TRUTH];
            int num_truth = example_truth(&items[i], data, i, truth);
            diagnosis_add(d, items[i].gold, truth, num_truth, completion, samples ? samples + (long)i * k : NULL, NULL);
            if (choice) d->reranked_right += answer_is_correct(samples[(long)i * k + choice[i]], items[i].gold);
        }
    }
    free(choice);
    for (long j = 0; outs && j < n; j++) free(outs[j]);
    for (long j = 0; samples && j < (long)n * k; j++) free(samples[j]);
    free(outs);
    free(samples);
    if (model_path) model_free(&model);
    examples_free(items, n);
    return s;
}

// =============================================================================================
// 8. Preference training: DPO and its relatives, and ORPO
// `./sirt dpo` trains a policy on (prompt, chosen, rejected) pairs against a frozen reference,
// as TRL's DPO trainer does: phase 2's optimizer, also usable on its own. DPO (Rafailov et al.
// 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model") skips
// RLHF's reward model and sampling loop: the policy that maximizes a reward under a KL penalty
// towards the reference has the reward r = β·log(π/π_ref) built in (up to a term that depends
// only on the prompt), so the Bradley-Terry likelihood σ(r_w − r_l) that the chosen completion
// beats the rejected one can be maximized directly over the policy's own log-probs.
// Notation, per pair: ℓ_i the policy's log-prob of completion token i (the completion's tokens
// and the end-of-text after them; prompt tokens never count), S = Σ_i ℓ_i over a completion,
// n its number of tokens, w chosen, l rejected, R the frozen reference's S (computed once per
// pair before training, or read from the pairs file; no gradient), h = (S_w − R_w) − (S_l − R_l),
// σ the logistic function. Per pair:
//   dpo   L_b = −log σ(βh)                          ∂L_b/∂h = −β σ(−βh)
//   cdpo  L_b = −(1−ε) log σ(βh) − ε log σ(−βh)     ∂L_b/∂h = β (σ(βh) − (1−ε))
//         DPO with label smoothing: each preference is taken to be flipped with probability ε
//         (--label-smoothing; Mitchell 2023, "A note on DPO with noisy preferences &
//         relationship to IPO").
//   ipo   L_b = (ĥ − 1/(2β))²                       ∂L_b/∂ĥ = 2 (ĥ − 1/(2β))
//         ĥ is h with mean log-probs S/n and R/n in place of the sums. DPO can drive h without
//         bound when a preference is always the same; IPO (Azar et al. 2023, "A General
//         Theoretical Paradigm to Understand Learning from Human Preferences") regresses it to
//         the fixed target 1/(2β) instead.
// The batch loss is the mean over its B pairs, so ∂L/∂S_w = (∂L_b/∂h)/B and ∂L/∂S_l =
// −(∂L_b/∂h)/B (ipo: also divided by n_w, resp. n_l). RPO (--rpo-alpha α; Pang et al. 2024,
// "Iterative Reasoning Preference Optimization") adds α times the mean NLL of the chosen tokens
// of the batch, α · (−Σ_b S_w) / N_c with N_c = Σ_b n_w, which adds −α/N_c to every ∂L/∂S_w: it
// holds up the chosen log-probs, which DPO tends to lower along with the rejected ones. (The
// paper divides each chosen sequence's NLL by its own length; here all chosen tokens of the
// batch weigh the same.)
//   orpo  (--loss orpo, --beta λ; Hong et al. 2024, "ORPO: Monolithic Preference Optimization
//         without Reference Model"), no reference: a = S/n, log_odds = (a_w − a_l) −
//         (log(1 − e^{a_w}) − log(1 − e^{a_l})), L = NLL − λ (1/B) Σ_b log σ(log_odds), NLL as
//         RPO's with α = 1 (chosen completion tokens only; TRL's ORPO also counts the prompt's).
// Every token of a completion has ∂S/∂ℓ_i = 1, so its coefficient (section 4) is c_i = −∂L/∂S of
// its sequence: for dpo, +β σ(−βh)/B on each chosen token (raised, as by an NLL) and −β σ(−βh)/B
// on each rejected one (lowered). The classifier kernel and the backward pass do not know which
// objective they serve. With policy = reference, h = 0: the dpo loss is ln 2 and each chosen
// token's coefficient is β/(2B), not zero (tests/test_dpo.c checks these and hand-computed cases).
// The metrics logged per step (TRL's names), means over the pairs of the batch: rewards/chosen
// β(S_w − R_w) and rewards/rejected β(S_l − R_l) (ipo: with the means S/n, R/n), rewards/margins
// their difference, rewards/accuracies the fraction of pairs whose chosen reward is strictly
// higher (exactly 0 when policy = reference: the log-ratios are formed as (S − R)·scale, so no
// rounding is left to compare), logps/chosen and logps/rejected the mean S, and nll the mean NLL
// of the chosen tokens (logged also when α = 0). orpo, as TRL: rewards λ·a, logps the mean a,
// and also log_odds_ratio (mean log σ(log_odds)), log_odds_chosen (mean log_odds), nll_loss.
// The pairs file (TRL's format), JSON lines: {"prompt", "chosen", "rejected"}, and optionally
// both "ref_chosen_logps" and "ref_rejected_logps": the reference's S of each completion
// (end-of-text included), finite and <= 0; a pair that has them needs no --ref. Prompt and
// completions are tokenized and truncated as in SFT (section 5), and a batch's 2B sequences are
// laid out in rows as SFT's examples: packed by default (--pack), each sequence's S summed over
// its own positions. A pair whose chosen or rejected text is empty, or whose two texts are
// equal, is dropped and counted.
// =============================================================================================

typedef enum { LOSS_DPO, LOSS_CDPO, LOSS_IPO, LOSS_ORPO } PreferenceLoss;

typedef struct {
    int loss;              // a PreferenceLoss (an int, which --loss sets)
    float beta;            // β
    float label_smoothing; // ε (cdpo)
    float rpo_alpha;       // α of the NLL term on the chosen completions (0: none)
} PreferenceSettings;

// One pair as token ids, each sequence prompt + completion + end-of-text, and the frozen
// reference's summed log-probs of the two completions.
typedef struct {
    TokenSequence chosen, rejected;
    double ref_chosen, ref_rejected; // NAN until known
} Pair;

typedef struct {
    Pair *pairs;
    int count;
    int dropped_empty;     // a completion without a single token: nothing to average over
    int dropped_identical; // chosen == rejected: no preference to learn
    int truncated;         // pairs cut to fit the window
} PairData;

// What a batch of pairs tells about the policy: TRL's metric names.
typedef struct {
    double loss, reward_chosen, reward_rejected, margin, accuracy, logp_chosen, logp_rejected,
        nll_chosen;
    double log_odds_ratio, log_odds_chosen; // orpo: the means of log σ(log_odds) and log_odds
} PreferenceMetrics;

// ORPO's log odds ratio of a pair from the mean log-probs a_w, a_l (a ≤ 0; held at or below
// −1e-20, ours, so that a certain completion stays finite), and its derivatives
// *g_w = ∂ log σ(log_odds)/∂a_w = σ(−log_odds)/(1 − e^{a_w}), *g_l = −σ(−log_odds)/(1 − e^{a_l}).
static double orpo_log_odds(double a_w, double a_l, double *g_w, double *g_l) {
    a_w = fmin(a_w, -1e-20);
    a_l = fmin(a_l, -1e-20);
    double log_odds = (a_w - a_l) - (log1mexp(a_w) - log1mexp(a_l));
    *g_w = sigmoid(-log_odds) / -expm1(a_w);
    *g_l = -sigmoid(-log_odds) / -expm1(a_l);
    return log_odds;
}

// The loss of B pairs from their summed log-probs S (policy) and R (reference) and completion
// lengths n (w: chosen, l: rejected). Writes dS_w[b] = ∂L/∂S_w and dS_l[b] = ∂L/∂S_l: the
// coefficient of every completion token of that sequence is then −dS.
static PreferenceMetrics preference_loss(const PreferenceSettings *p, int B, const double *S_w,
                                         const double *S_l, const double *R_w, const double *R_l,
                                         const int *n_w, const int *n_l, double *dS_w,
                                         double *dS_l) {
    PreferenceMetrics m = {0};
    double beta = p->beta;
    long chosen_tokens = 0;
    for (int b = 0; b < B; b++) chosen_tokens += n_w[b];
    double alpha = p->loss == LOSS_ORPO ? 1.0 : p->rpo_alpha; // ORPO's NLL term has weight 1
    for (int b = 0; b < B; b++) {
        // IPO and ORPO compare mean log-probs; the others compare sums
        int means = p->loss == LOSS_IPO || p->loss == LOSS_ORPO;
        double scale_w = means ? 1.0 / n_w[b] : 1.0, scale_l = means ? 1.0 / n_l[b] : 1.0;
        // each side's log-ratio against the reference, differences first: policy = reference
        // gives exactly 0 (no rounding leftovers of S·scale − R·scale)
        double dw = (S_w[b] - R_w[b]) * scale_w, dl = (S_l[b] - R_l[b]) * scale_l;
        double h = dw - dl, dh; // dh = ∂L_b/∂h
        double reward_w = beta * dw, reward_l = beta * dl;
        if (p->loss == LOSS_ORPO) { // no reference: L_b = −λ log σ(log_odds), λ = β
            double a_w = S_w[b] * scale_w, a_l = S_l[b] * scale_l, g_w, g_l;
            double log_odds = orpo_log_odds(a_w, a_l, &g_w, &g_l);
            m.loss += -beta * log_sigmoid(log_odds);
            m.log_odds_ratio += log_sigmoid(log_odds) / B;
            m.log_odds_chosen += log_odds / B;
            dS_w[b] = -beta * g_w * scale_w / B;
            dS_l[b] = -beta * g_l * scale_l / B;
            reward_w = beta * a_w, reward_l = beta * a_l; // TRL's rewards for ORPO: λ·a
        } else {
            if (p->loss == LOSS_IPO) {
                double gap = h - 1.0 / (2.0 * beta);
                m.loss += gap * gap;
                dh = 2.0 * gap;
            } else {
                double eps = p->loss == LOSS_CDPO ? p->label_smoothing : 0.0;
                m.loss += -(1.0 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h);
                dh = beta * (sigmoid(beta * h) - (1.0 - eps));
            }
            dS_w[b] = dh * scale_w / B;
            dS_l[b] = -dh * scale_l / B;
        }
        // RPO's (and ORPO's) NLL: α · (−Σ S_w / N_c), the mean NLL of the chosen tokens in the batch
        dS_w[b] += -alpha / chosen_tokens;
        m.reward_chosen += reward_w / B;
        m.reward_rejected += reward_l / B;
        m.accuracy += (reward_w > reward_l) / (double)B; // strictly: 0 when policy = reference
        m.logp_chosen += S_w[b] * (p->loss == LOSS_ORPO ? scale_w : 1.0) / B; // orpo: means a
        m.logp_rejected += S_l[b] * (p->loss == LOSS_ORPO ? scale_l : 1.0) / B;
        m.nll_chosen += -S_w[b] / chosen_tokens;
    }
    m.loss = m.loss / B + alpha * m.nll_chosen;
    m.margin = m.reward_chosen - m.reward_rejected;
    return m;
}

// Appends a pair (d->pairs must have room), or drops and counts it; returns it or NULL.
static Pair *pair_add(PairData *d, Tokenizer *tok, const char *prompt, const char *chosen,
                      const char *rejected, int T) {
    if (!chosen[0] || !rejected[0]) {
        d->dropped_empty++;
        return NULL;
    }
    if (!strcmp(chosen, rejected)) {
        d->dropped_identical++;
        return NULL;
    }
    Pair *p = &d->pairs[d->count++];
    int cut = tokenize_example(tok, prompt, chosen, T + 1, &p->chosen);
    cut |= tokenize_example(tok, prompt, rejected, T + 1, &p->rejected);
    d->truncated += cut;
    p->ref_chosen = p->ref_rejected = NAN;
    return p;
}

// Reads a pairs file: {"prompt", "chosen", "rejected"} (+ optional reference log-probs).
static void pairs_load(PairData *d, const char *path, Tokenizer *tok, int vocab_size, int T) {
    check_tokenizer_fits(tok, vocab_size);
    JsonlFile f;
    jsonl_read(path, &f);
    memset(d, 0, sizeof *d);
    d->pairs = xmalloc((size_t)(f.count ? f.count : 1) * sizeof(Pair));
    for (int i = 0; i < f.count; i++) {
        const char *prompt = jsonl_string(&f, i, "prompt");
        const char *chosen = jsonl_string(&f, i, "chosen"), *rejected = jsonl_string(&f, i, "rejected");
        Pair *p = pair_add(d, tok, prompt, chosen, rejected, T);
        if (!p) continue;
        const JsonField *rc = json_get(&f.objects[i], "ref_chosen_logps");
        const JsonField *rr = json_get(&f.objects[i], "ref_rejected_logps");
        if (!rc != !rr || (rc && (rc->type != JSON_NUMBER || rr->type != JSON_NUMBER)))
            die("%s:%d: ref_chosen_logps and ref_rejected_logps must both be numbers, or both "
                "absent", f.path, f.line_numbers[i]);
        if (rc && !(isfinite(rc->number) && rc->number <= 0 && isfinite(rr->number) &&
                    rr->number <= 0)) // sums of log-probabilities: finite and at most 0
            die("%s:%d: ref_chosen_logps %g and ref_rejected_logps %g must be finite and <= 0 "
                "(sums of log-probabilities)", f.path, f.line_numbers[i], rc->number, rr->number);
        if (rc) {
            p->ref_chosen = rc->number;
            p->ref_rejected = rr->number;
        }
    }
    jsonl_free(&f);
    if (d->count == 0) die("%s: no usable pairs (%d with an empty completion, %d identical)", path,
                           d->dropped_empty, d->dropped_identical);
}

static void pairs_free(PairData *d) {
    for (int i = 0; i < d->count; i++) {
        free(d->pairs[i].chosen.ids);
        free(d->pairs[i].rejected.ids);
    }
    free(d->pairs);
}

// A batch of B pairs (order[0..B)): sequence b is pair b's chosen completion, sequence B + b
// its rejected one, laid out by batch_fill (section 5: packed, or one per row), which leaves the
// completion mask in b->coefs and each sequence's place in b->at. b needs room for 2B rows of T.
static void pairs_fill_batch(Batch *b, const PairData *d, const int *order, int B, int T,
                             int pack, int pad) {
    const TokenSequence **seqs = xmalloc(2 * (size_t)B * sizeof(TokenSequence *));
    for (int i = 0; i < B; i++) {
        seqs[i] = &d->pairs[order[i]].chosen;
        seqs[B + i] = &d->pairs[order[i]].rejected;
    }
    batch_fill(b, seqs, 2 * B, T, pack, pad);
    free(seqs);
}

// After a forward pass over a batch of n sequences that pairs_fill_batch laid out (its mask
// still in b->coefs): each sequence's summed completion log-prob S and completion token count,
// read at the sequence's own positions.
static void sequence_logps(const Model *model, const Batch *b, int n, double *S, int *count) {
    for (int i = 0; i < n; i++) {
        size_t first = (size_t)b->at[i].row * b->T + b->at[i].start;
        S[i] = 0.0;
        count[i] = 0;
        for (size_t j = first; j < first + b->at[i].length; j++)
            if (b->coefs[j] != 0.0f) {
                S[i] += model->host_logprobs[j];
                count[i]++;
            }
    }
}

// The frozen reference's log-probs of every pair still without them: forward passes only, B
// pairs at a time in rows of up to T positions, packed or not.
static void compute_reference_logps(Model *ref, PairData *d, int B, int T, int pack, int pad) {
    int *order = xmalloc((size_t)d->count * sizeof(int)), todo = 0;
    for (int i = 0; i < d->count; i++)
        if (isnan(d->pairs[i].ref_chosen)) order[todo++] = i;
    Batch batch;
    batch_alloc(&batch, 2 * B, T);
    int *n = xmalloc(2 * (size_t)B * sizeof(int));
    double *S = xmalloc(2 * (size_t)B * sizeof(double));
    for (int first = 0; first < todo; first += B) {
        int pairs = todo - first < B ? todo - first : B;
        pairs_fill_batch(&batch, d, order + first, pairs, T, pack, pad);
        batch_forward(ref, &batch);
        sequence_logps(ref, &batch, 2 * pairs, S, n);
        for (int b = 0; b < pairs; b++) {
            d->pairs[order[first + b]].ref_chosen = S[b];
            d->pairs[order[first + b]].ref_rejected = S[pairs + b];
        }
    }
    free(order);
    batch_free(&batch);
    free(n);
    free(S);
}

// One DPO step on B pairs whose sequences are in run's batch (filled by pairs_fill_batch, with
// the mask in its coefs): forward, the preference loss, the coefficients, backward and update.
static StepResult dpo_step(Model *model, TrainState *st, const TrainArgs *args, Run *run,
                           const PreferenceSettings *pref, const PairData *d, const int *order,
                           int B, PreferenceMetrics *metrics) {
    Batch *batch = &run->batch;
    batch_forward(model, batch);
    double *S = xmalloc(2 * B * sizeof(double)), *R = xmalloc(2 * B * sizeof(double));
    double *dS = xmalloc(2 * B * sizeof(double));
    int *n = xmalloc(2 * B * sizeof(int));
    sequence_logps(model, batch, 2 * B, S, n);
    for (int b = 0; b < B; b++) {
        R[b] = d->pairs[order[b]].ref_chosen;
        R[B + b] = d->pairs[order[b]].ref_rejected;
    }
    *metrics = preference_loss(pref, B, S, S + B, R, R + B, n, n + B, dS, dS + B);
    for (int i = 0; i < 2 * B; i++) { // the mask becomes the coefficients: −∂L/∂S on each token
        float *coefs = batch->coefs + (size_t)batch->at[i].row * batch->T + batch->at[i].start;
        for (int t = 0; t < batch->at[i].length; t++) coefs[t] *= (float)-dS[i];
    }
    StepResult result = {.loss = (float)metrics->loss};
    backward_and_update(model, batch->coefs, args->opt, &run->sched, st, &result);
    state_count_step(st, &result);
    free(S);
    free(R);
    free(dS);
    free(n);
    return result;
}

// The DPO loop over a set of pairs (whose reference log-probs are known), for args->steps steps
// from st->step, with the logging, checkpoints and resume of every trainer.
static void dpo_train(Model *model, TrainState *st, const TrainArgs *args,
                      const PreferenceSettings *pref, const PairData *data, int pad) {
    int steps_per_epoch = (data->count + args->B - 1) / args->B;
    Run run;
    if (!run_open(&run, model, args, st, 2 * args->B)) return; // a batch of B pairs is 2B rows
    int *order = xmalloc((size_t)data->count * sizeof(int)), order_epoch = -1;
    while (st->step < args->steps) {
        int epoch = st->step / steps_per_epoch, first = st->step % steps_per_epoch * args->B;
        if (epoch != order_epoch) epoch_order(order, data->count, args->seed, order_epoch = epoch);
        int B = data->count - first < args->B ? data->count - first : args->B;
        pairs_fill_batch(&run.batch, data, order + first, B, args->T, args->pack, pad);
        PreferenceMetrics m;
        StepResult r = dpo_step(model, st, args, &run, pref, data, order + first, B, &m);
        char extra[600], v[7][32];
        snprintf(extra, sizeof extra,
                 ", \"rewards/chosen\": %s, \"rewards/rejected\": %s, \"rewards/margins\": %s, "
                 "\"rewards/accuracies\": %s, \"logps/chosen\": %s, \"logps/rejected\": %s, "
                 "\"nll\": %s", json_number(v[0], m.reward_chosen),
                 json_number(v[1], m.reward_rejected), json_number(v[2], m.margin),
                 json_number(v[3], m.accuracy), json_number(v[4], m.logp_chosen),
                 json_number(v[5], m.logp_rejected), json_number(v[6], m.nll_chosen));
        if (pref->loss == LOSS_ORPO) // TRL's ORPO names (its nll_loss is our nll)
            snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                     ", \"log_odds_ratio\": %s, \"log_odds_chosen\": %s, \"nll_loss\": %s",
                     json_number(v[0], m.log_odds_ratio), json_number(v[1], m.log_odds_chosen),
                     json_number(v[2], m.nll_chosen));
        if (run_after_step(model, st, args, &run, &r, extra)) break;
    }
    run_close(model, st, args, &run);
    free(order);
}

// The flags of the preference losses, shared by dpo and refine: a table (lib/flags.h) with a
// PreferenceSettings.
static const char *const LOSS_NAMES[] = {"dpo", "cdpo", "ipo", "orpo", NULL}; // PreferenceLoss order
#define PREFERENCE_FLAGS_TITLE "the flags of the preference loss (dpo, refine)"
static const Flag PREFERENCE_FLAGS[] = {
    {"--loss", NULL, FLAG_CHOICE, .offset = offsetof(PreferenceSettings, loss),
     "DPO, DPO with label smoothing (cDPO), IPO, or ORPO (no reference)", .choices = LOSS_NAMES},
    {"--beta", "B", FLAG_FLOAT, .offset = offsetof(PreferenceSettings, beta),
     "β > 0: larger keeps the policy nearer the reference (orpo: λ, the odds ratio's weight)", -INFINITY, INFINITY},
    {"--label-smoothing", "E", FLAG_FLOAT, .offset = offsetof(PreferenceSettings, label_smoothing),
     "cdpo's share of wrongly labelled pairs, in [0, 0.5)", -INFINITY, INFINITY},
    {"--rpo-alpha", "A", FLAG_FLOAT, .offset = offsetof(PreferenceSettings, rpo_alpha),
     "RPO: adds A x the mean NLL of the chosen completions", 0, INFINITY},
    {0}};

// Checks the settings once all flags are read; a label smoothing with --loss dpo means cdpo, as
// in TRL.
static void check_preference(PreferenceSettings *p) {
    if (!(p->beta > 0)) die("--beta must be positive");
    if (p->label_smoothing < 0 || p->label_smoothing >= 0.5f) die("--label-smoothing must be in [0, 0.5)");
    if (p->label_smoothing > 0 && p->loss == LOSS_DPO) p->loss = LOSS_CDPO;
    if (p->loss == LOSS_ORPO && (p->rpo_alpha != 0 || p->label_smoothing != 0))
        die("--loss orpo has its own NLL term and no label smoothing: drop --rpo-alpha and "
            "--label-smoothing");
}

int cmd_dpo(int argc, char **argv) {
    TrainArgs args = train_args_defaults();
    args.out = "policy.bin";
    const char *ref_path = NULL, *tokenizer = NULL, *pairs_path = NULL;
    int epochs = 1;
    PreferenceSettings pref = {LOSS_DPO, 0.1f, 0.0f, 0.0f};
    const Flag flags[] = {
        {"--model", "FILE", FLAG_STRING, .value = &args.init, "the policy to train (= --init)"},
        {"--ref", "FILE", FLAG_STRING, .value = &ref_path,
         "the frozen reference (unless the pairs carry its log-probs)"},
        {"--tokenizer", "PATH", FLAG_STRING, .value = &tokenizer,
         "our tok.bin, llama2.c's tokenizer.bin, or a directory with GPT-2's encoder.json and vocab.bpe"},
        {"--pairs", "FILE", FLAG_STRING, .value = &pairs_path,
         "JSONL of prompt/chosen/rejected (TRL's format)"},
        {"--epochs", "E", FLAG_INT, .value = &epochs, "passes over the pairs, unless --steps is given",
         1, 1 << 20},
        PACK_FLAG(args.pack),
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {PREFERENCE_FLAGS_TITLE, PREFERENCE_FLAGS, &pref},
                                {TRAIN_FLAGS_TITLE, TRAIN_FLAGS, &args}, {0}};
    if (flags_parse(argc, argv, "dpo", "dpo --model POLICY.bin --ref REF.bin --tokenizer PATH "
                    "--pairs pairs.jsonl\n                  --batch B --seq T --lr LR [more flags "
                    "below] (--batch counts pairs)", tables))
        return 0;
    use_threads(args.threads);
    if (!args.init && !args.resume) die("dpo: --model POLICY.bin is required");
    if (!tokenizer || !pairs_path) die("dpo: --tokenizer and --pairs are required");
    check_preference(&pref);
    check_train_args(&args, "dpo");

    Model model;
    TrainState st;
    run_begin(&model, &st, &args, 1, 2 * args.B); // a batch of B pairs is 2B rows
    Tokenizer *tok = load_tokenizer(tokenizer);
    int pad = tok_eot(tok);
    PairData data;
    pairs_load(&data, pairs_path, tok, model.config.V, args.T);
    int missing = 0;
    for (int i = 0; i < data.count; i++) missing += isnan(data.pairs[i].ref_chosen);
    if (pref.loss == LOSS_ORPO) missing = 0; // ORPO needs no reference
    if (missing) { // the frozen reference: forward passes only, then it is freed
        if (!ref_path) die("dpo: %d pairs have no reference log-probs: give --ref REF.bin", missing);
        Model ref;
        model_load(&ref, ref_path);
        ref.detect_anomaly = args.detect_anomaly;
        if (ref.config.V != model.config.V || ref.config.maxT < args.T)
            die("the reference %s does not match the policy (vocabulary or context)", ref_path);
        compute_reference_logps(&ref, &data, args.B, args.T, args.pack, pad);
        model_free(&ref);
    }
    int steps_per_epoch = (data.count + args.B - 1) / args.B;
    if (!args.steps) args.steps = epochs_to_steps(epochs, steps_per_epoch);
    print_model(&model);
    printf("pairs: %d (dropped: %d with an empty completion, %d identical; %d cut to fit %d "
           "tokens), reference log-probs: %d computed, %d from the file; %d steps\n", data.count,
           data.dropped_empty, data.dropped_identical, data.truncated, args.T + 1, missing,
           data.count - missing, args.steps);

    dpo_train(&model, &st, &args, &pref, &data, pad);
    pairs_free(&data);
    tok_free(tok);
    model_free(&model);
    return 0;
}

// =============================================================================================
// 9. Self-refinement (phase 2)
// `./sirt refine`: the student answers the training questions itself, the ground truth scores
// the answers, and DPO against a frozen reference (the phase-1 model) prefers the good ones.
// This is phase 2 of SIRT (Ranaldi & Freitas 2024): a student tuned on demonstrations only
// imitates them; preferring its own correct reasoning paths over its failures, with the reward
// taken from the ground truth instead of a reward model, is meant to make it generalize beyond
// them. The reward is the outcome only: a right final answer after a wrong step counts as right.
// Each round: sample K chain-of-thought answers per question (and, for cot-vs-plain, one
// answer to the plain prompt) → score them → build pairs → the reference's log-probs → DPO →
// greedy accuracy on --valid. The checkpoint with the best validation accuracy (the phase-1
// model included; with --exclude-initial, the best of rounds 1..N, so that --out always shows
// what phase 2 did) is kept as --out; without --valid, the last round's.
//   cot-vs-plain          the paper's DPO_CoT: a correct CoT answer (chosen) over the plain
//                         answer (rejected, whether or not it is right), both under the CoT
//                         prompt
//   correct-vs-incorrect  a correct over an incorrect CoT sample (Iterative RPO, Pang et al.
//                         2024; DPO-ST, Wang et al. 2024): every distinct correct sample with
//                         every distinct incorrect one (R·W pairs from R right and W wrong
//                         texts), spread over the samples (build_pairs); questions whose
//                         samples are all right or all wrong give no pair
//   both                  the pairs of both rules
// Identical texts are dropped, and each rule makes at most --max-pairs pairs per question.
// Each round's DPO starts from the policy as the last round left it (not from the kept best),
// with fresh AdamW moments and schedule; the reference stays the phase-1 model, or with
// --ref previous becomes each round's result. --keep-pairs DIR writes a round's pairs as
// DIR/pairs_roundN.jsonl in the pairs format of section 8, reference log-probs included.
// --rft replaces pairs and DPO by the control, rejection-sampling fine-tuning (rft_examples):
// SFT on the round's right, step-verified samples.
// =============================================================================================

// Greedy accuracy of a model on items (their prompts and gold answers).
static long greedy_correct(Model *model, Tokenizer *tok, const Example *items, int n,
                           const GenerateSettings *g) {
    GenerateSettings greedy = *g;
    greedy.sampler.temperature = 0.0f;
    char **outs = sample_items(model, tok, items, n, 1, &greedy);
    long correct = 0;
    for (int i = 0; i < n; i++) {
        correct += answer_is_correct(outs[i], items[i].gold);
        free(outs[i]);
    }
    free(outs);
    return correct;
}

typedef enum { PAIRS_COT_VS_PLAIN = 1, PAIRS_CORRECT_VS_INCORRECT = 2, PAIRS_BOTH = 3 } PairRule;
// --pairs: the names of the rules, and the rules
static const char *const PAIR_RULE_NAMES[] = {"cot-vs-plain", "correct-vs-incorrect", "both", NULL};
static const PairRule PAIR_RULES[] = {PAIRS_COT_VS_PLAIN, PAIRS_CORRECT_VS_INCORRECT, PAIRS_BOTH};

// Builds the pairs of one round from the scored samples. cot[i*k + j] are the CoT samples of
// question i, plain[i] its plain answer (NULL when the rule does not need it). Per question the
// distinct right samples r_0..r_{R-1} and distinct wrong ones w_0..w_{W-1} (first occurrences, in
// sample order) are collected; cot-vs-plain pairs r_a with the plain answer, and
// correct-vs-incorrect pairs every r_a with every w_b, R·W pairs, in the order t = 0, 1, ...
// with a = t mod R and b = (a + t div R) mod W: a permutation of all R·W pairs in which the
// first min(R, W) use each sample at most once, so that --max-pairs cuts evenly.
static void build_pairs(PairData *d, Tokenizer *tok, const Example *items, int n, int k,
                        char **cot, char **plain, PairRule rule, int max_pairs, int T) {
    d->pairs = xmalloc(((size_t)n * 2 * max_pairs + 1) * sizeof(Pair));
    int *right = xmalloc(2 * (size_t)k * sizeof(int)), *wrong = right + k;
    for (int i = 0; i < n; i++) {
        char **mine = cot + (long)i * k;
        int R = 0, W = 0;
        for (int j = 0; j < k; j++) {
            int duplicate = 0;
            for (int m = 0; m < j && !duplicate; m++) duplicate = !strcmp(mine[m], mine[j]);
            if (duplicate) continue;
            if (answer_is_correct(mine[j], items[i].gold)) right[R++] = j;
            else wrong[W++] = j;
        }
        if (rule & PAIRS_COT_VS_PLAIN)
            for (int a = 0, made = 0; a < R && made < max_pairs; a++)
                made += pair_add(d, tok, items[i].prompt, mine[right[a]], plain[i], T) != NULL;
        if (rule & PAIRS_CORRECT_VS_INCORRECT)
            for (int t = 0, made = 0; t < R * W && made < max_pairs; t++) {
                int a = t % R, b = (a + t / R) % W;
                made += pair_add(d, tok, items[i].prompt, mine[right[a]], mine[wrong[b]], T) != NULL;
            }
    }
    free(right);
}

// Writes the pairs of a round in TRL's format, with the reference log-probs where known, and
// with rewards (2 per pair, chosen then rejected; NULL: none) as "chosen_reward" and
// "rejected_reward".
static void write_pairs(const char *path, const PairData *d, Tokenizer *tok, const double *rewards) {
    SafeFile sf;
    safe_open(&sf, path);
    for (int i = 0; i < d->count; i++) {
        const Pair *p = &d->pairs[i];
        TokBytes prompt = {0}, chosen = {0}, rejected = {0};
        int pl = p->chosen.prompt_length, eot = 1; // the completions end with end-of-text
        tok_decode(tok, p->chosen.ids, pl, &prompt);
        tok_decode(tok, p->chosen.ids + pl, p->chosen.length - pl - eot, &chosen);
        tok_decode(tok, p->rejected.ids + pl, p->rejected.length - pl - eot, &rejected);
        fputs("{\"prompt\": ", sf.file);
        json_write_string(sf.file, prompt.data ? prompt.data : "", prompt.len);
        fputs(", \"chosen\": ", sf.file);
        json_write_string(sf.file, chosen.data ? chosen.data : "", chosen.len);
        fputs(", \"rejected\": ", sf.file);
        json_write_string(sf.file, rejected.data ? rejected.data : "", rejected.len);
        if (!isnan(p->ref_chosen))
            fprintf(sf.file, ", \"ref_chosen_logps\": %.9g, \"ref_rejected_logps\": %.9g",
                    p->ref_chosen, p->ref_rejected);
        if (rewards)
            fprintf(sf.file, ", \"chosen_reward\": %.9g, \"rejected_reward\": %.9g", rewards[2 * i],
                    rewards[2 * i + 1]);
        fputs("}\n", sf.file);
        tok_bytes_free(&prompt);
        tok_bytes_free(&chosen);
        tok_bytes_free(&rejected);
    }
    safe_commit(&sf);
}

// Does one of the n judged paths seen write the same equations as r (answer_same_equations)?
static int equations_seen(const StepReport *seen, int n, const StepReport *r) {
    for (int m = 0; m < n; m++)
        if (answer_same_equations(&seen[m], r)) return 1;
    return 0;
}

// Rejection-sampling fine-tuning (RFT, Yuan et al. 2023, "Scaling Relationship on Learning
// Mathematical Reasoning with Large Language Models"), the control of phase 2: the student is
// fine-tuned, with the SFT objective, on its own samples that are right — the answer right and,
// where the items have true steps, every step the true one (step-verified) — keeping per
// question one sample per distinct list of equations. Returns the examples as SFT data (prompt +
// completion + end-of-text, truncated as SFT's); with keep non-NULL, also writes them there as
// {"prompt", "completion"} lines.
static void rft_examples(SftData *d, Tokenizer *tok, const Example *items, int n, int k, char **cot,
                         const char *data_path, int T, const char *keep) {
    d->seqs = xmalloc(((size_t)n * k + 1) * sizeof(TokenSequence));
    d->count = d->truncated = 0;
    StepReport *kept = xmalloc((size_t)k * sizeof(StepReport));
    SafeFile sf;
    if (keep) safe_open(&sf, keep);
    for (int i = 0; i < n; i++) {
        TaskStep truth[EVAL_MAX_TRUTH];
        int num_truth = example_truth(&items[i], data_path, i, truth), num_kept = 0;
        for (int j = 0; j < k; j++) {
            const char *c = cot[(long)i * k + j];
            if (!answer_is_correct(c, items[i].gold)) continue;
            StepReport r;
            answer_check_steps(c, truth, num_truth, &r);
            if (num_truth > 0 && !r.true_path) continue; // right by luck: not verified
            if (equations_seen(kept, num_kept, &r)) continue;
            kept[num_kept++] = r;
            d->truncated += tokenize_example(tok, items[i].prompt, c, T + 1, &d->seqs[d->count++]);
            if (keep) {
                fputs("{\"prompt\": ", sf.file);
                json_write_string(sf.file, items[i].prompt, strlen(items[i].prompt));
                fputs(", \"completion\": ", sf.file);
                json_write_string(sf.file, c, strlen(c));
                fputs("}\n", sf.file);
            }
        }
    }
    if (keep) safe_commit(&sf);
    free(kept);
}

static void copy_params(Model *dst, const Model *src) {
    size_t bytes = src->num_parameters * sizeof(float);
    float *host = xmalloc(bytes);
    dev_to_host(host, src->params_memory, bytes);
    dev_to_device(dst->params_memory, host, bytes);
    free(host);
}

int cmd_refine(int argc, char **argv) {
    TrainArgs args = train_args_defaults();
    args.out = "refined.bin";
    args.B = 8;
    args.T = 256;
    args.lr = 1e-5f;
    const char *tokenizer = NULL, *data_path = NULL, *valid_path = NULL, *keep_pairs = NULL;
    int k = 4, rounds = 1, ref_previous = 0, epochs = 1, max_pairs = 1, steps = 0, rule_index = 0, rft = 0;
    int exclude_initial = 0;
    PreferenceSettings pref = {LOSS_DPO, 0.1f, 0.0f, 0.0f};
    GenerateSettings g = GENERATE_DEFAULTS;
    static const char *const REF_NAMES[] = {"initial", "previous", NULL};
    const Flag flags[] = {
        {"--model", "FILE", FLAG_STRING, .value = &args.init,
         "the phase-1 model: the first policy and the reference"},
        {"--tokenizer", "PATH", FLAG_STRING, .value = &tokenizer,
         "our tok.bin, llama2.c's tokenizer.bin, or a directory with GPT-2's encoder.json and vocab.bpe"},
        {"--data", "FILE", FLAG_STRING, .value = &data_path,
         "question/answer JSONL: the questions the student answers"},
        {"--valid", "FILE", FLAG_STRING, .value = &valid_path,
         "greedy accuracy on these items picks the best round"},
        {"--exclude-initial", NULL, FLAG_SWITCH, .value = &exclude_initial,
         "keep the best of rounds 1..N on --valid, never the phase-1 model itself"},
        {"--pairs", NULL, FLAG_CHOICE, .value = &rule_index, "how answers are paired",
         .choices = PAIR_RULE_NAMES},
        {"--samples", "K", FLAG_INT, .value = &k, "samples per question", 1, 1024},
        {"--temperature", "T", FLAG_FLOAT, .value = &g.sampler.temperature,
         "of the samples", -INFINITY, INFINITY},
        {"--rounds", "N", FLAG_INT, .value = &rounds, "rounds of sampling, pairing and DPO", 1, 1000},
        {"--ref", NULL, FLAG_CHOICE, .value = &ref_previous,
         "the reference: phase 1's model, or the last round's", .choices = REF_NAMES},
        {"--max-pairs", "N", FLAG_INT, .value = &max_pairs, "pairs per question and rule", 1, 1024},
        {"--max-new", "N", FLAG_INT, .value = &g.max_new, "new tokens per answer at most", 1, 1 << 20},
        {"--gen-batch", "N", FLAG_INT, .value = &g.batch, "sequences decoded together", 1, 1 << 16},
        {"--keep-pairs", "DIR", FLAG_STRING, .value = &keep_pairs,
         "write each round's pairs as DIR/pairs_roundN.jsonl (--rft: its examples, DIR/rft_roundN.jsonl)"},
        {"--rft", NULL, FLAG_SWITCH, .value = &rft,
         "the control: SFT on the right, step-verified samples with distinct equations (RFT), "
         "in batches of 2 x --batch, instead of pairs and DPO"},
        {"--epochs", "E", FLAG_INT, .value = &epochs,
         "passes over a round's pairs, unless --steps is given", 1, 1000},
        PACK_FLAG(args.pack),
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {PREFERENCE_FLAGS_TITLE, PREFERENCE_FLAGS, &pref},
                                {TRAIN_FLAGS_TITLE, TRAIN_FLAGS, &args}, {0}};
    if (flags_parse(argc, argv, "refine", "refine --model SFT.bin --tokenizer PATH --data train.jsonl "
                    "[more flags below]", tables))
        return 0;
    use_threads(args.threads);
    PairRule rule = PAIR_RULES[rule_index];
    if (!args.init || !tokenizer || !data_path) die("refine: --model, --tokenizer and --data are required");
    if (args.resume) die("refine: --resume is not supported (each round is short; rerun it)");
    check_preference(&pref);
    steps = args.steps;
    g.seed = args.seed;
    check_writable(args.out);

    Model policy, ref;
    model_load(&policy, args.init);
    model_load(&ref, args.init); // the frozen reference: the phase-1 model
    check_seq_fits(args.T, &policy);
    policy.detect_anomaly = ref.detect_anomaly = args.detect_anomaly;
    Tokenizer *tok = load_tokenizer(tokenizer);
    check_tokenizer_fits(tok, policy.config.V);
    int pad = tok_eot(tok);
    TemplateOptions cot_template = {TEMPLATE_COT, 0, 0}, plain_template = {TEMPLATE_PLAIN, 0, 0};
    Example *items, *plain_items = NULL, *valid = NULL;
    int n, n_valid = 0;
    examples_load(data_path, &cot_template, &items, &n);
    for (int i = 0; i < n; i++)
        if (!items[i].gold) die("%s: item %d has no gold answer (refine needs question/answer items)", data_path, i + 1);
    if (!rft && (rule & PAIRS_COT_VS_PLAIN)) examples_load(data_path, &plain_template, &plain_items, &n);
    if (valid_path) examples_load(valid_path, &cot_template, &valid, &n_valid);
    print_model(&policy);

    double best = -1.0;
    if (valid) {
        best = (double)greedy_correct(&policy, tok, valid, n_valid, &g) / n_valid;
        printf("round 0 (the phase-1 model): validation accuracy %.2f%%%s\n", 100 * best,
               exclude_initial ? " (not kept: --exclude-initial)" : "");
        if (exclude_initial) best = -1.0; // round 1 is kept whatever its accuracy
    }
    model_save(&policy, args.out); // the best so far (until a round trains, the phase-1 model)
    for (int round = 1; round <= rounds; round++) {
        printf("round %d: sampling %d chain-of-thought answers for %d questions\n", round, k, n);
        char **cot = sample_items(&policy, tok, items, n, k, &g), **plain = NULL;
        // how many are right, and how many of those right for the right reason: on the true
        // path (where the data has true steps; a lucky final answer after a wrong step is not)
        Diagnosis sampled;
        diagnosis_init(&sampled, k);
        for (int i = 0; i < n; i++) {
            TaskStep truth[EVAL_MAX_TRUTH];
            int num_truth = example_truth(&items[i], data_path, i, truth);
            diagnosis_add(&sampled, items[i].gold, truth, num_truth, NULL, cot + (long)i * k, NULL);
        }
        if (plain_items) {
            printf("round %d: one answer to the plain prompt per question\n", round);
            plain = sample_items(&policy, tok, plain_items, n, 1, &g);
        }
        PairData pairs = {0};
        SftData examples = {0};
        char kept_path[4200];
        snprintf(kept_path, sizeof kept_path, "%s/%s_round%d.jsonl", keep_pairs ? keep_pairs : ".",
                 rft ? "rft" : "pairs", round);
        if (rft) rft_examples(&examples, tok, items, n, k, cot, data_path, args.T, keep_pairs ? kept_path : NULL);
        else build_pairs(&pairs, tok, items, n, k, cot, plain, rule, max_pairs, args.T);
        printf("round %d: %.1f%% of the samples are correct", round,
               100.0 * sampled.sample_right / sampled.samples);
        if (sampled.with_truth && sampled.sample_right)
            printf(", %.1f%% of those on the true path", 100.0 * sampled.sample_verified / sampled.sample_right);
        printf("; pass@%d %.1f%%", k, 100.0 * sampled.pass[sampled.num_levels - 1] / n);
        for (int o = 0; o < 4; o++)
            if (sampled.op_total[o])
                printf("; arithmetic %c %.1f%%", ANSWER_OPS[o], 100.0 * sampled.op_right[o] / sampled.op_total[o]);
        if (rft)
            printf("\nround %d: %d examples for RFT (right%s, one per distinct list of equations; %d cut)\n",
                   round, examples.count, sampled.with_truth ? ", every step the true one" : "", examples.truncated);
        else
            printf("\nround %d: %d pairs (dropped: %d empty, %d identical; %d cut)\n", round, pairs.count,
                   pairs.dropped_empty, pairs.dropped_identical, pairs.truncated);
        for (long j = 0; j < (long)n * k; j++) free(cot[j]);
        for (int i = 0; plain && i < n; i++) free(plain[i]);
        free(cot);
        free(plain);
        if ((rft ? examples.count : pairs.count) == 0) {
            printf("round %d: no %s, nothing to learn; stopping\n", round, rft ? "examples" : "pairs");
            free(pairs.pairs);
            free(examples.seqs);
            break;
        }
        if (!rft) {
            compute_reference_logps(&ref, &pairs, args.B, args.T, args.pack, pad);
            if (keep_pairs) write_pairs(kept_path, &pairs, tok, NULL);
        }
        if (keep_pairs) printf("round %d: %s written to %s\n", round, rft ? "examples" : "pairs", kept_path);
        // DPO on this round's pairs (or SFT on its examples), from a fresh optimizer
        char out[4200], log[4200];
        TrainArgs round_args = args;
        char tag[32];
        snprintf(tag, sizeof tag, "round%d", round);
        path_tagged(out, sizeof out, args.out, tag, ".bin"); // refined.bin -> refined.round2.bin
        round_args.out = out;
        if (args.log) {
            path_tagged(log, sizeof log, args.log, tag, ".jsonl");
            round_args.log = log;
        }
        if (rft) round_args.B = 2 * args.B; // a DPO batch of B pairs holds 2B sequences
        int count = rft ? examples.count : pairs.count;
        round_args.steps = steps ? steps : epochs_to_steps(epochs, (count + round_args.B - 1) / round_args.B);
        if (policy.m_memory) {
            dev_zero(policy.m_memory, policy.num_parameters);
            dev_zero(policy.v_memory, policy.num_parameters);
        }
        TrainState st = {.seed = args.seed, .rng = rng_seeded(args.seed), .B = args.B,
                         .T = args.T, .shuffle = 1, .best_valid_loss = INFINITY};
        if (rft) {
            st.B = round_args.B;
            sft_train(&policy, &st, &round_args, &examples, NULL, 1, 0, pad);
            sft_data_free(&examples);
        } else {
            dpo_train(&policy, &st, &round_args, &pref, &pairs, pad);
            pairs_free(&pairs);
        }
        if (valid) {
            double acc = (double)greedy_correct(&policy, tok, valid, n_valid, &g) / n_valid;
            printf("round %d: validation accuracy %.2f%%%s\n", round, 100 * acc,
                   acc > best ? " (best so far: kept)" : "");
            if (acc > best) {
                best = acc;
                model_save(&policy, args.out);
            }
        } else model_save(&policy, args.out); // without validation the last round is kept
        if (ref_previous) copy_params(&ref, &policy);
    }
    if (valid && best >= 0) printf("kept %s: validation accuracy %.2f%%\n", args.out, 100 * best);
    else if (valid) printf("kept %s: the phase-1 model (no round trained)\n", args.out);
    examples_free(items, n);
    if (plain_items) examples_free(plain_items, n);
    if (valid) examples_free(valid, n_valid);
    tok_free(tok);
    model_free(&policy);
    model_free(&ref);
    return 0;
}

// =============================================================================================
// 10. Process feedback (SIPF): step labels by simulation, the PRM, reranking, the loop
// Outcome feedback (section 9) scores a whole path by its final answer, so a path that reaches
// the right answer after a wrong step is rewarded as right. Process feedback labels each step.
// SIPF (Chen, Wang, Zhang, COLING 2025, "Self-Iterative Process Feedback") labels a step the way
// Math-Shepherd (Wang et al. 2024) does, without a human: from the path up to that step, a
// simulator writes K continuations; the step is good when some continuation reaches the gold
// answer (the hard label), and the fraction that do is its soft label. A process reward model
// (PRM) learns these labels, and its step probabilities rank whole paths.
// `./sirt label-steps` reads sampled paths (`sample --data ... -n K` keeps every input field and
// adds "samples") and writes TRL's stepwise format, one line per path:
//   {"prompt", "completions": [step, ...], "labels": [bool, ...], "soft": [fraction, ...],
//    "gold", "index" (the input line, from 0), "sample" (which of its samples), and "question"
//    and "truth" when the input line has them}.
// A step is a line of the completion before its final answer (the non-empty trimmed lines that
// answer_check_steps judges, lib/answer.h); the final "The answer is N." is not a step (ours).
// The continuation of step s is sampled from the cot prompt of the question followed by steps
// 0..s, each ending with a newline. On the built-in task (items with "truth") a step is truly
// correct when the path up to and including it follows the true steps: no arithmetic line up
// to it computes wrong or leaves the true path (answer_step_truly_correct). With -k 4,8,16 one
// run samples 16 continuations per step and the labels of k = 4 and 8 use the first k of them;
// the file holds the labels of the largest k, the summary those of every k. --outcome writes
// outcome labels instead, without simulating: every step of a path gets its final answer's
// correctness (hard and soft alike): the training data of an outcome reward model.
// `./sirt prm` trains the PRM: the transformer plus a value head, a weight vector w (C) and a
// bias b on the final LayerNorm's output, read at the last token of each step's separator (the
// newline after it, tokenized on its own as TRL's PRMTrainer does: prompt, then each step and
// its separator, then end-of-text), p = σ(w · lnf + b), with binary cross-entropy against the
// labels (--soft: the soft labels) averaged over the batch's steps:
//   L = (1/M) Σ_m [softplus(r_m) − y_m r_m],  r_m = w · lnf_m + b,  ∂L/∂r_m = (σ(r_m) − y_m)/M.
// The head's gradient enters the backward pass at the final LayerNorm's output (HeadGradient,
// section 2); the language-model loss is not used. `eval --rerank PRM` scores each of K samples
// by the mean (or --rerank-by min) of its step probabilities and answers with the best one.
// `./sirt sipf` runs SIPF's loop of these with ORPO, in rounds (its comment: "the loop" below).
// =============================================================================================

// Parses a list of K such as "4,8,16" into levels (ascending, distinct, in 1..65536).
#define MAX_K_LEVELS 16
static int parse_k_list(const char *text, int *levels) {
    int n = 0;
    const char *p = text;
    for (;;) {
        char *end;
        long k = strtol(p, &end, 10);
        if (end == p || k < 1 || k > 65536 || n == MAX_K_LEVELS || (n && k <= levels[n - 1]) ||
            (*end && *end != ','))
            die("-k wants ascending numbers in 1..65536, at most %d, separated by commas (\"4,8,16\"), "
                "got '%s'", MAX_K_LEVELS, text);
        levels[n++] = (int)k;
        if (!*end) return n;
        p = end + 1;
    }
}

// ---- step labels by simulation: `./sirt label-steps` --------------------------------------------

// One sampled path, cut into steps, and what is known about each step.
typedef struct {
    int item, sample, num_steps;
    char **steps;
    int final_correct;      // its own final answer is the gold one
    int *truly_correct;     // per step (answer_step_truly_correct); NULL without true steps
    unsigned char *reached; // (num_steps, K): continuation j after step s reaches the gold answer
} StepPath;

// Appends sample `sample` of item `item` (its text) to paths[0..*count) (room for *cap, grown
// here) cut into steps and judged against the gold answer and the true steps (num_truth 0: none).
// Returns 0, appending nothing, when the text has no step.
static int step_path_add(StepPath **paths, int *count, int *cap, const char *text, int item,
                         int sample, const char *gold, const TaskStep *truth, int num_truth) {
    StepPath p = {item, sample, 0, NULL, answer_is_correct(text, gold), NULL, NULL};
    p.num_steps = answer_split_steps(text, &p.steps);
    if (p.num_steps == 0) {
        answer_free_steps(p.steps, 0);
        return 0;
    }
    if (num_truth > 0) {
        StepReport report;
        answer_check_steps(text, truth, num_truth, &report);
        p.truly_correct = xmalloc((size_t)p.num_steps * sizeof(int));
        for (int s = 0; s < p.num_steps; s++) p.truly_correct[s] = answer_step_truly_correct(&report, s);
    }
    if (*count == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *paths = realloc(*paths, (size_t)*cap * sizeof(StepPath));
        if (!*paths) die("out of memory");
    }
    (*paths)[(*count)++] = p;
    return 1;
}

// The items of a samples file (cot prompts, gold answers, true steps) and their paths. Dies with
// FILE:LINE on a line that is not a question/answer item with a "samples" array of strings.
static StepPath *read_step_paths(const JsonlFile *f, Example *items, int *num_paths,
                                 int *without_steps) {
    TemplateOptions cot = {TEMPLATE_COT, 0, 0};
    StepPath *paths = NULL;
    int count = 0, cap = 0;
    *without_steps = 0;
    for (int i = 0; i < f->count; i++) {
        char err[256];
        int line = f->line_numbers[i];
        if (example_from_json(&f->objects[i], &cot, &items[i], err, sizeof err) != 0)
            die("%s:%d: %s", f->path, line, err);
        if (!items[i].gold) die("%s:%d: no gold answer: label-steps reads question/answer items", f->path, line);
        TaskStep truth[EVAL_MAX_TRUTH];
        int num_truth = 0;
        if (items[i].truth && (num_truth = task_parse_truth(items[i].truth, truth, EVAL_MAX_TRUTH)) < 0)
            die("%s:%d: \"truth\" must be lines of \"A OP B = C\" (at most %d)", f->path, line, EVAL_MAX_TRUTH);
        const JsonField *field = json_get(&f->objects[i], "samples");
        JsonField *samples = NULL;
        int k = field ? json_array_items(field, &samples) : -1;
        for (int j = 0; j < k; j++)
            if (samples[j].type != JSON_STRING) k = -1;
        if (k < 0) die("%s:%d: \"samples\" must be an array of strings (sample --data ... -n K writes it)", f->path, line);
        for (int j = 0; j < k; j++)
            if (!step_path_add(&paths, &count, &cap, samples[j].text, i, j, items[i].gold, truth,
                               num_truth))
                (*without_steps)++; // nothing to label
        json_items_free(samples, k > 0 ? k : 0);
    }
    *num_paths = count;
    return paths;
}

static void step_paths_free(StepPath *paths, int n) {
    for (int i = 0; i < n; i++) {
        answer_free_steps(paths[i].steps, paths[i].num_steps);
        free(paths[i].truly_correct);
        free(paths[i].reached);
    }
    free(paths);
}

// The prompt of the continuation after step s of a path: its item's prompt, then steps 0..s,
// each with its newline (malloc'd).
static char *continuation_prompt(const char *prompt, char *const *steps, int s) {
    JsonBuf b = {0};
    json_buf_puts(&b, prompt);
    for (int i = 0; i <= s; i++) {
        json_buf_puts(&b, steps[i]);
        json_buf_puts(&b, "\n");
    }
    return json_buf_take(&b);
}

// K continuations of every step prefix of every path, by the simulator, in one generate call
// (continuous batching over all of them): sequence (step prefix q, j) has index q·K + j, so its
// text depends only on the seed and that index. Fills each path's reached (num_steps, K).
static void simulate_continuations(Model *model, Tokenizer *tok, const Example *items,
                                   StepPath *paths, int n, int K, const GenerateSettings *g) {
    long prefixes = 0;
    for (int p = 0; p < n; p++) prefixes += paths[p].num_steps;
    TokenSequence *prompts = xmalloc((size_t)(prefixes * K > 0 ? prefixes * K : 1) * sizeof(TokenSequence));
    long q = 0;
    for (int p = 0; p < n; p++)
        for (int s = 0; s < paths[p].num_steps; s++, q++) {
            char *text = continuation_prompt(items[paths[p].item].prompt, paths[p].steps, s);
            TokenSequence ids = tokenize_prompt(tok, text);
            free(text);
            for (int j = 0; j < K; j++) prompts[q * K + j] = ids; // the K share one copy
        }
    printf("simulating %d continuations of %ld step prefixes of %d paths at temperature %.2f\n", K,
           prefixes, n, g->sampler.temperature);
    char **outs = xmalloc((size_t)(prefixes * K > 0 ? prefixes * K : 1) * sizeof(char *));
    generate(model, tok, prompts, prefixes * K, g, outs, 1);
    q = 0;
    for (int p = 0; p < n; p++) {
        const char *gold = items[paths[p].item].gold;
        paths[p].reached = xmalloc((size_t)paths[p].num_steps * K);
        for (int s = 0; s < paths[p].num_steps; s++, q++) {
            for (int j = 0; j < K; j++) {
                paths[p].reached[s * K + j] = (unsigned char)answer_is_correct(outs[q * K + j], gold);
                free(outs[q * K + j]);
            }
            free(prompts[q * K].ids);
        }
    }
    free(outs);
    free(prompts);
}

// How many of the first k continuations after step s of a path reach the gold answer.
static int step_hits(const StepPath *p, int s, int K, int k) {
    int hits = 0;
    for (int j = 0; j < k; j++) hits += p->reached[s * K + j];
    return hits;
}

// The hard and soft label of step s: from the first k of K continuations, or (outcome, when
// reached is NULL) the path's final answer.
static void step_label(const StepPath *p, int s, int K, int k, int *hard, double *soft) {
    if (!p->reached) {
        *hard = p->final_correct;
        *soft = p->final_correct;
        return;
    }
    int hits = step_hits(p, s, K, k);
    *hard = hits > 0;
    *soft = (double)hits / k;
}

static void write_step_labels(const char *path, const JsonlFile *f, const Example *items,
                              const StepPath *paths, int n, int K) {
    SafeFile sf;
    safe_open(&sf, path);
    FILE *o = sf.file;
    for (int p = 0; p < n; p++) {
        const StepPath *sp = &paths[p];
        const JsonObject *obj = &f->objects[sp->item];
        fputs("{\"prompt\": ", o);
        json_write_string(o, items[sp->item].prompt, strlen(items[sp->item].prompt));
        fputs(", \"completions\": [", o);
        for (int s = 0; s < sp->num_steps; s++) {
            if (s) fputs(", ", o);
            json_write_string(o, sp->steps[s], strlen(sp->steps[s]));
        }
        fputs("], \"labels\": [", o);
        for (int s = 0; s < sp->num_steps; s++) {
            int hard;
            double soft;
            step_label(sp, s, K, K, &hard, &soft);
            fprintf(o, "%s%s", s ? ", " : "", hard ? "true" : "false");
        }
        fputs("], \"soft\": [", o);
        for (int s = 0; s < sp->num_steps; s++) {
            int hard;
            double soft;
            step_label(sp, s, K, K, &hard, &soft);
            fprintf(o, "%s%.6g", s ? ", " : "", soft);
        }
        fputs("], \"gold\": ", o);
        json_write_string(o, items[sp->item].gold, strlen(items[sp->item].gold));
        const char *kept[2] = {"question", "truth"};
        for (int i = 0; i < 2; i++) {
            const JsonField *field = json_get(obj, kept[i]);
            if (!field || field->type != JSON_STRING) continue;
            fprintf(o, ", \"%s\": ", kept[i]);
            json_write_string(o, field->text, field->len);
        }
        fprintf(o, ", \"index\": %d, \"sample\": %d}\n", sp->item, sp->sample);
    }
    safe_commit(&sf);
}

// The labels of k continuations (k = 0: the outcome labels) against the true step correctness,
// over the steps of paths with true steps: hard labels, and soft labels >= 0.5.
static void step_label_counts(const StepPath *paths, int n, int K, int k, LabelCounts *hard,
                              LabelCounts *soft) {
    memset(hard, 0, sizeof *hard);
    memset(soft, 0, sizeof *soft);
    for (int p = 0; p < n; p++) {
        if (!paths[p].truly_correct) continue;
        for (int s = 0; s < paths[p].num_steps; s++) {
            int h;
            double f;
            step_label(&paths[p], s, K, k ? k : K, &h, &f);
            label_counts_add(hard, h, paths[p].truly_correct[s]);
            label_counts_add(soft, f >= 0.5, paths[p].truly_correct[s]);
        }
    }
}

int cmd_label_steps(int argc, char **argv) {
    const char *model_path = NULL, *tokenizer = NULL, *data = NULL, *out_path = NULL,
               *summary_path = NULL, *k_text = "8";
    int outcome = 0, threads = 0;
    GenerateSettings g = GENERATE_DEFAULTS;
    g.sampler.temperature = 1.0f; // SIPF's simulation temperature
    const Flag flags[] = {
        {"--model", "FILE", FLAG_STRING, .value = &model_path, "the simulator (an llm.c checkpoint)"},
        {"--tokenizer", "PATH", FLAG_STRING, .value = &tokenizer,
         "our tok.bin, or a directory with GPT-2's encoder.json and vocab.bpe"},
        {"--data", "FILE", FLAG_STRING, .value = &data,
         "question/answer items with \"samples\" (sample --data ... -n K)"},
        {"-k", "K[,K...]", FLAG_STRING, .value = &k_text,
         "continuations per step; a list (4,8,16) scores each k from the first k of the largest"},
        {"--out", "FILE", FLAG_STRING, .value = &out_path,
         "TRL's stepwise JSONL: prompt, completions, labels, soft, gold"},
        {"--summary", "FILE", FLAG_STRING, .value = &summary_path,
         "precision, recall and F1 of the labels against the true steps, per k, as JSON"},
        {"--outcome", NULL, FLAG_SWITCH, .value = &outcome,
         "label every step with its path's final answer (no simulation): an outcome RM's data"},
        {"--threads", "N", FLAG_INT, .value = &threads,
         "OpenMP threads; by default OMP_NUM_THREADS, or all cores", 1, 1024},
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {GENERATE_FLAGS_TITLE, GENERATE_FLAGS, &g}, {0}};
    if (flags_parse(argc, argv, "label-steps", "label-steps --model SIM.bin --tokenizer PATH --data "
                    "samples.jsonl -k 8 --out steps.jsonl\n                          [--summary "
                    "labels.json] [more flags below] (default --temperature 1)", tables))
        return 0;
    use_threads(threads);
    check_generate(&g);
    int levels[MAX_K_LEVELS], num_levels = parse_k_list(k_text, levels), K = levels[num_levels - 1];
    if (!data || !out_path) die("label-steps: --data and --out are required");
    if (!outcome && (!model_path || !tokenizer))
        die("label-steps: --model and --tokenizer are required (the simulator), unless --outcome");
    check_writable(out_path);
    if (summary_path) check_writable(summary_path);
    JsonlFile f;
    jsonl_read(data, &f);
    if (f.count == 0) die("%s: no items", data);
    Example *items = xcalloc((size_t)f.count, sizeof(Example));
    int n, without_steps;
    StepPath *paths = read_step_paths(&f, items, &n, &without_steps);
    if (n == 0) die("%s: no sample has a step to label", data);
    long steps = 0, with_truth = 0, truly = 0;
    for (int p = 0; p < n; p++) {
        steps += paths[p].num_steps;
        for (int s = 0; paths[p].truly_correct && s < paths[p].num_steps; s++) {
            with_truth++;
            truly += paths[p].truly_correct[s];
        }
    }
    printf("%d paths of %d items, %ld steps (%d samples without a step skipped)\n", n, f.count,
           steps, without_steps);
    if (!outcome) {
        Model model;
        model_load(&model, model_path);
        Tokenizer *tok = load_tokenizer(tokenizer);
        check_tokenizer_fits(tok, model.config.V);
        simulate_continuations(&model, tok, items, paths, n, K, &g);
        tok_free(tok);
        model_free(&model);
    }
    write_step_labels(out_path, &f, items, paths, n, K);
    printf("wrote %s\n", out_path);
    if (with_truth)
        printf("step labels against the true steps (%ld steps of paths with true steps, %.1f%% truly "
               "correct; positive = correct):\n", with_truth, 100.0 * truly / with_truth);
    SafeFile sf;
    FILE *o = NULL;
    if (summary_path) {
        safe_open(&sf, summary_path);
        o = sf.file;
        fprintf(o, "{\"paths\": %d, \"items\": %d, \"samples_without_steps\": %d, \"steps\": %ld, "
                "\"steps_with_truth\": %ld, \"truly_correct\": %ld, \"labels\": \"%s\", "
                "\"temperature\": %g, \"levels\": [", n, f.count, without_steps, steps, with_truth,
                truly, outcome ? "outcome" : "simulated", g.sampler.temperature);
    }
    for (int l = 0; l < (outcome ? 1 : num_levels); l++) {
        LabelCounts hard, soft;
        step_label_counts(paths, n, K, outcome ? 0 : levels[l], &hard, &soft);
        if (with_truth) {
            if (outcome) printf("  outcome labels:");
            else printf("  k = %-3d", levels[l]);
            label_counts_print("  hard:", &hard);
            label_counts_print("  |  soft >= 0.5:", &soft);
            printf("\n");
        }
        if (o) {
            if (outcome) fputs("{\"k\": null", o);
            else fprintf(o, "%s{\"k\": %d", l ? ", " : "", levels[l]);
            fputs(", \"hard\": ", o);
            label_counts_json(o, &hard);
            fputs(", \"soft\": ", o);
            label_counts_json(o, &soft);
            fputs("}", o);
        }
    }
    if (o) {
        fputs("]}\n", o);
        safe_commit(&sf);
    }
    step_paths_free(paths, n);
    examples_free(items, f.count);
    jsonl_free(&f);
    return 0;
}

// ---- the process reward model: `./sirt prm` ------------------------------------------------------
// The file (ours): the model in llm.c's checkpoint format (section 3), then the head:
//   4 × int32: [0] magic 20250101, [1] version 1, [2] C, [3] zero; then C + 1 float32: w, b.
#define PRM_MAGIC 20250101
#define PRM_VERSION 1

// The value head's parameters w (C) then b, their gradients and AdamW moments: device memory,
// C + 1 floats each (the moments allocated at the first update).
struct ValueHead {
    int C;
    float *params, *grads, *m, *v;
};

static void head_alloc(ValueHead *h, int C) {
    *h = (ValueHead){C, dev_alloc((size_t)C + 1), dev_alloc((size_t)C + 1), NULL, NULL};
    if (!h->params || !h->grads) die("out of memory for the value head");
}

// w ~ N(0, 0.02) as GPT-2's other weights, b = 0 (ours).
static void head_init_random(ValueHead *h, uint64_t seed) {
    float *host = xmalloc(((size_t)h->C + 1) * sizeof(float));
    Rng rng = rng_seeded(seed ^ 0x4ead);
    for (int c = 0; c < h->C; c++) host[c] = 0.02f * rng_normal(&rng);
    host[h->C] = 0.0f;
    dev_to_device(h->params, host, ((size_t)h->C + 1) * sizeof(float));
    free(host);
}

static void head_free(ValueHead *h) {
    dev_free(h->params);
    dev_free(h->grads);
    dev_free(h->m);
    dev_free(h->v);
}

static void prm_save(const Model *model, const ValueHead *h, const char *path) {
    SafeFile sf;
    safe_open(&sf, path);
    model_write(model, &sf);
    int32_t header[4] = {PRM_MAGIC, PRM_VERSION, h->C, 0};
    size_t bytes = ((size_t)h->C + 1) * sizeof(float);
    float *host = xmalloc(bytes);
    dev_to_host(host, h->params, bytes);
    safe_write(&sf, header, sizeof header);
    safe_write(&sf, host, bytes);
    free(host);
    safe_commit(&sf);
}

// Reads a PRM file: the model, checked as model_load checks a checkpoint, then the head.
static void prm_read(Model *model, ValueHead *h, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    int32_t header[HEADER_INTS];
    size_t got = fread(header, 1, sizeof header, f);
    if (fseek(f, 0, SEEK_END) != 0) die("%s: cannot seek", path);
    long actual = ftell(f);
    if (actual < 0) die("%s: cannot tell its size", path);
    int C = got == sizeof header ? header[6] : 0;
    size_t head_bytes = C >= 1 && C <= 65536 ? 16 + ((size_t)C + 1) * sizeof(float) : 0;
    Config cfg;
    char err[512];
    if ((size_t)actual < head_bytes ||
        model_read_header(header, got, (size_t)actual - head_bytes, path, &cfg, err, sizeof err) != 0) {
        if (model_read_header(header, got, (size_t)actual, path, &cfg, err, sizeof err) == 0)
            die("%s is a model without a value head, not a PRM (./sirt prm trains one)", path);
        die("%s (as a PRM: the model, then %zu bytes of value head)", err, head_bytes);
    }
    fseek(f, sizeof header, SEEK_SET);
    model_build(model, cfg);
    float *host = xmalloc(model->num_parameters * sizeof(float));
    if (fread(host, sizeof(float), model->num_parameters, f) != model->num_parameters)
        die("%s: read failed", path);
    dev_to_device(model->params_memory, host, model->num_parameters * sizeof(float));
    free(host);
    int32_t head_header[4];
    if (fread(head_header, sizeof head_header, 1, f) != 1) die("%s: read failed", path);
    if (head_header[0] != PRM_MAGIC || head_header[1] != PRM_VERSION || head_header[2] != C)
        die("%s: bad value head header (magic %d, version %d, C %d; expected %d, %d, %d)", path,
            head_header[0], head_header[1], head_header[2], PRM_MAGIC, PRM_VERSION, C);
    head_alloc(h, C);
    float *w = xmalloc(((size_t)C + 1) * sizeof(float));
    if (fread(w, sizeof(float), (size_t)C + 1, f) != (size_t)C + 1) die("%s: read failed", path);
    dev_to_device(h->params, w, ((size_t)C + 1) * sizeof(float));
    free(w);
    fclose(f);
}

// A path as the PRM reads it: token ids of the prompt, then each step and its separator ("\n",
// tokenized on its own), then end-of-text; the reads are the positions of each step's last
// separator token, where the head is read.
typedef struct {
    TokenSequence seq;
    int *reads;         // (num_steps) positions in seq.ids
    float *targets;     // (num_steps) the labels (1/0) or, --soft, the soft labels
    int *truly_correct; // (num_steps) or NULL: the item has no true steps
    int num_steps;      // the steps that fit the window
} PrmExample;

typedef struct {
    PrmExample *ex;
    int count;
    long steps;
    int cut_steps; // steps past the window, left out
    int dropped;   // paths without a step inside the window
} PrmData;

// Tokenizes a path for the PRM into ex (its targets and truth left to the caller), cut to
// `budget` tokens as SFT's examples are (truncation_split: the prompt keeps its end, the steps
// their start); steps whose separator falls outside are dropped. Returns the steps dropped.
static int prm_tokenize(Tokenizer *tok, const char *prompt, char *const *steps, int n, int budget,
                        PrmExample *ex) {
    TokIds p = {0}, rest = {0}, sep = {0};
    if (tok_encode_ordinary(tok, prompt, strlen(prompt), &p) != 0 ||
        tok_encode_ordinary(tok, "\n", 1, &sep) != 0)
        die("out of memory");
    int *reads = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    for (int s = 0; s < n; s++) { // the steps after the prompt; reads relative to their start
        if (tok_encode_ordinary(tok, steps[s], strlen(steps[s]), &rest) != 0) die("out of memory");
        for (size_t i = 0; i < sep.len; i++)
            if (tok_ids_push(&rest, sep.data[i]) != 0) die("out of memory");
        reads[s] = (int)rest.len - 1;
    }
    if (tok_ids_push(&rest, tok_eot(tok)) != 0) die("out of memory");
    int keep_p, keep_r;
    truncation_split((int)p.len, (int)rest.len, budget, &keep_p, &keep_r);
    int length = keep_p + keep_r, kept = 0;
    ex->seq = (TokenSequence){xmalloc((size_t)length * sizeof(int)), length, keep_p};
    if (keep_p) memcpy(ex->seq.ids, p.data + (p.len - keep_p), (size_t)keep_p * sizeof(int));
    memcpy(ex->seq.ids + keep_p, rest.data, (size_t)keep_r * sizeof(int));
    for (int s = 0; s < n; s++) // an input position: not the sequence's last token
        if (keep_p + reads[s] <= length - 2) reads[kept++] = keep_p + reads[s];
    ex->reads = reads;
    ex->num_steps = kept;
    ex->targets = NULL;
    ex->truly_correct = NULL;
    tok_ids_free(&p);
    tok_ids_free(&rest);
    tok_ids_free(&sep);
    return n - kept;
}

static void prm_example_free(PrmExample *ex) {
    free(ex->seq.ids);
    free(ex->reads);
    free(ex->targets);
    free(ex->truly_correct);
}

static void prm_data_free(PrmData *d) {
    for (int i = 0; i < d->count; i++) prm_example_free(&d->ex[i]);
    free(d->ex);
}

// The true correctness of the steps of a stepwise line with "truth": the completions judged as
// step lines (answer_check_step_lines). NULL when the line has no "truth".
static int *stepwise_truth(const JsonlFile *f, int i, const JsonField *steps, int n) {
    const JsonField *field = json_get(&f->objects[i], "truth");
    if (!field) return NULL;
    TaskStep truth[EVAL_MAX_TRUTH];
    int num_truth = field->type == JSON_STRING ? task_parse_truth(field->text, truth, EVAL_MAX_TRUTH) : -1;
    if (num_truth < 0)
        die("%s:%d: \"truth\" must be lines of \"A OP B = C\" (at most %d)", f->path,
            f->line_numbers[i], EVAL_MAX_TRUTH);
    char **lines = xcalloc((size_t)(n > 0 ? n : 1), sizeof(char *));
    for (int s = 0; s < n; s++) lines[s] = steps[s].text;
    StepReport report;
    answer_check_step_lines(lines, n, truth, num_truth, &report);
    free(lines);
    int *ok = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    for (int s = 0; s < n; s++) ok[s] = answer_step_truly_correct(&report, s);
    return ok;
}

// Reads TRL's stepwise JSONL: {"prompt", "completions": [step, ...], "labels": [bool, ...]},
// and with soft the targets from "soft": [number in [0, 1], ...]; "truth" when present.
static void prm_data_load(PrmData *d, const char *path, Tokenizer *tok, int T, int soft) {
    JsonlFile f;
    jsonl_read(path, &f);
    memset(d, 0, sizeof *d);
    d->ex = xmalloc((size_t)(f.count ? f.count : 1) * sizeof(PrmExample));
    for (int i = 0; i < f.count; i++) {
        int line = f.line_numbers[i];
        const char *prompt = jsonl_string(&f, i, "prompt");
        const char *names[2] = {"completions", soft ? "soft" : "labels"};
        JsonField *arrays[2] = {NULL, NULL};
        int lengths[2];
        for (int a = 0; a < 2; a++) {
            const JsonField *field = json_get(&f.objects[i], names[a]);
            lengths[a] = field ? json_array_items(field, &arrays[a]) : -1;
            int bad = lengths[a] <= 0;
            for (int s = 0; s < lengths[a]; s++) {
                JsonType t = arrays[a][s].type;
                bad |= a == 0 ? t != JSON_STRING
                       : soft ? t != JSON_NUMBER || !(arrays[a][s].number >= 0 && arrays[a][s].number <= 1)
                              : t != JSON_TRUE && t != JSON_FALSE;
            }
            if (bad)
                die("%s:%d: \"%s\" must be a non-empty array of %s", path, line, names[a],
                    a == 0 ? "strings" : soft ? "numbers in [0, 1]" : "true/false");
        }
        if (lengths[0] != lengths[1])
            die("%s:%d: %d completions but %d %s", path, line, lengths[0], lengths[1], names[1]);
        int n = lengths[0];
        char **steps = xmalloc((size_t)n * sizeof(char *));
        for (int s = 0; s < n; s++) steps[s] = arrays[0][s].text;
        PrmExample ex;
        d->cut_steps += prm_tokenize(tok, prompt, steps, n, T + 1, &ex);
        int *truth = stepwise_truth(&f, i, arrays[0], n);
        free(steps);
        if (ex.num_steps == 0) {
            d->dropped++;
            prm_example_free(&ex);
            free(truth);
        } else {
            ex.targets = xmalloc((size_t)ex.num_steps * sizeof(float));
            for (int s = 0; s < ex.num_steps; s++) ex.targets[s] = (float)arrays[1][s].number;
            ex.truly_correct = truth; // the kept steps are the first num_steps
            d->steps += ex.num_steps;
            d->ex[d->count++] = ex;
        }
        json_items_free(arrays[0], lengths[0]);
        json_items_free(arrays[1], lengths[1]);
    }
    jsonl_free(&f);
    if (d->count == 0) die("%s: no path with a step inside --seq", path);
}

// Device buffers for the head's reads of one batch: up to cap positions.
typedef struct {
    int cap;
    int *idx;           // device (cap): the read positions in the batch
    float *out, *dout;  // device (cap): the head's outputs r, and ∂L/∂r
    int *host_idx;
    float *host_out, *host_dout;
} HeadReads;

static void head_reads_alloc(HeadReads *r, int cap) {
    *r = (HeadReads){cap, dev_alloc_int((size_t)cap), dev_alloc((size_t)cap), dev_alloc((size_t)cap),
                     xmalloc((size_t)cap * sizeof(int)), xmalloc((size_t)cap * sizeof(float)),
                     xmalloc((size_t)cap * sizeof(float))};
    if (!r->idx || !r->out || !r->dout) die("out of memory for the value head's reads");
}

static void head_reads_free(HeadReads *r) {
    dev_free(r->idx);
    dev_free(r->out);
    dev_free(r->dout);
    free(r->host_idx);
    free(r->host_out);
    free(r->host_dout);
}

// The forward pass over n paths ex[order[0..n)] laid out in b (batch_fill: packed or one per
// row) and the head at every read: r->host_out[0..M) in the order path by path, step by step.
// Returns M.
static int prm_forward(Model *model, const ValueHead *h, Batch *b, HeadReads *r,
                       const PrmExample *ex, const int *order, int n, int T, int pack, int pad) {
    const TokenSequence **seqs = xcalloc((size_t)(n > 0 ? n : 1), sizeof(TokenSequence *));
    for (int i = 0; i < n; i++) seqs[i] = &ex[order[i]].seq;
    batch_fill(b, seqs, n, T, pack, pad);
    free(seqs);
    int M = 0;
    for (int i = 0; i < n; i++) {
        const PrmExample *e = &ex[order[i]];
        for (int s = 0; s < e->num_steps; s++)
            r->host_idx[M++] = b->at[i].row * b->T + b->at[i].start + e->reads[s];
    }
    for (size_t i = 0; i < (size_t)b->rows * b->T; i++) b->targets[i] = -1; // no LM loss
    batch_forward(model, b);
    dev_to_device(r->idx, r->host_idx, (size_t)M * sizeof(int));
    value_head_forward(r->out, model->acts.lnf, r->idx, h->params, h->params + h->C, M, h->C);
    dev_to_host(r->host_out, r->out, (size_t)M * sizeof(float));
    return M;
}

// Binary cross-entropy with logits, averaged over M reads: returns L and writes ∂L/∂r.
static double prm_loss(const float *r, const float *y, int M, float *dr) {
    double loss = 0.0;
    for (int m = 0; m < M; m++) {
        loss += (-log_sigmoid(-(double)r[m]) - (double)y[m] * r[m]) / M; // softplus(r) − y r
        dr[m] = (float)((sigmoid(r[m]) - y[m]) / M);
    }
    return loss;
}

// The step probabilities of every path: probs[i] gets ex[i].num_steps values (malloc'd),
// forward passes only, `rows` paths at a time in rows of up to T positions.
static float **prm_probabilities(Model *model, const ValueHead *h, const PrmExample *ex, int n,
                                 int rows, int T, int pad) {
    Batch b;
    batch_alloc(&b, rows, T);
    HeadReads r;
    head_reads_alloc(&r, rows * T);
    int *order = xmalloc((size_t)(rows > 0 ? rows : 1) * sizeof(int));
    float **probs = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float *));
    for (int first = 0; first < n; first += rows) {
        int count = n - first < rows ? n - first : rows;
        for (int i = 0; i < count; i++) order[i] = first + i;
        prm_forward(model, h, &b, &r, ex, order, count, T, 1, pad);
        for (int i = 0, m = 0; i < count; i++) {
            probs[first + i] = xmalloc((size_t)(ex[first + i].num_steps + 1) * sizeof(float));
            for (int s = 0; s < ex[first + i].num_steps; s++, m++)
                probs[first + i][s] = (float)sigmoid(r.host_out[m]);
        }
    }
    free(order);
    head_reads_free(&r);
    batch_free(&b);
    return probs;
}

// What a PRM's probabilities say on a set of labelled paths, at threshold 0.5 (positive = the
// step is correct): the loss, against the file's labels (targets >= 0.5), and on paths with true
// steps against the true step correctness, with the first error: the first step with p < 0.5
// (none: no step) against the first truly wrong step (none: no step), an exact match or not.
typedef struct {
    double loss;
    LabelCounts vs_labels, vs_truth;
    long paths_with_truth, first_error_match;
} PrmReport;

static PrmReport prm_evaluate(Model *model, const ValueHead *h, const PrmData *d, int rows, int T,
                              int pad) {
    PrmReport rep = {0};
    float **probs = prm_probabilities(model, h, d->ex, d->count, rows, T, pad);
    for (int i = 0; i < d->count; i++) {
        const PrmExample *e = &d->ex[i];
        int predicted_first = -1, true_first = -1;
        for (int s = 0; s < e->num_steps; s++) {
            double p = fmin(fmax(probs[i][s], 1e-12), 1 - 1e-12), y = e->targets[s];
            rep.loss -= (y * log(p) + (1 - y) * log(1 - p)) / d->steps;
            label_counts_add(&rep.vs_labels, p >= 0.5, y >= 0.5);
            if (predicted_first < 0 && p < 0.5) predicted_first = s;
            if (e->truly_correct) {
                label_counts_add(&rep.vs_truth, p >= 0.5, e->truly_correct[s]);
                if (true_first < 0 && !e->truly_correct[s]) true_first = s;
            }
        }
        if (e->truly_correct) {
            rep.paths_with_truth++;
            rep.first_error_match += predicted_first == true_first;
        }
        free(probs[i]);
    }
    free(probs);
    return rep;
}

static void prm_report_print(const PrmReport *r, const char *what) {
    printf("%s: loss %.4f;", what, r->loss);
    label_counts_print(" steps vs labels:", &r->vs_labels);
    printf("\n");
    if (r->paths_with_truth) {
        label_counts_print("  steps vs the true steps:", &r->vs_truth);
        printf("; first error placed exactly on %.1f%% of %ld paths\n",
               100.0 * r->first_error_match / r->paths_with_truth, r->paths_with_truth);
    }
}

static void prm_report_json(FILE *f, const PrmReport *r) {
    char loss[32], share[32];
    fprintf(f, "{\"loss\": %s, \"vs_labels\": ", json_number(loss, r->loss));
    label_counts_json(f, &r->vs_labels);
    fputs(", \"vs_truth\": ", f);
    label_counts_json(f, &r->vs_truth);
    fprintf(f, ", \"paths_with_truth\": %ld, \"first_error_exact\": %s}", r->paths_with_truth,
            json_number(share, r->paths_with_truth ? (double)r->first_error_match / r->paths_with_truth : NAN));
}

// One optimizer step of the PRM on the paths ex[order[0..n)]: forward, BCE, the backward through
// the head and the model, and AdamW on both with one global gradient norm (clipped together).
// The head's parameters take no weight decay (ours).
static StepResult prm_step(Model *model, ValueHead *h, Batch *b, HeadReads *r, const PrmData *d,
                           const int *order, int n, const TrainArgs *args, const Schedule *sched,
                           const TrainState *st, int pad) {
    int M = prm_forward(model, h, b, r, d->ex, order, n, args->T, args->pack, pad);
    float *y = xmalloc((size_t)(M > 0 ? M : 1) * sizeof(float));
    for (int i = 0, m = 0; i < n; i++)
        for (int s = 0; s < d->ex[order[i]].num_steps; s++) y[m++] = d->ex[order[i]].targets[s];
    StepResult res = {.loss = (float)prm_loss(r->host_out, y, M, r->host_dout)};
    free(y);
    dev_to_device(r->dout, r->host_dout, (size_t)M * sizeof(float));
    HeadGradient hg = {h->params, h->grads, r->idx, r->dout, M};
    model_backward_with_head(model, NULL, &hg);
    OptimizerSettings opt = args->opt;
    opt.lr = res.lr = schedule_lr(sched, st->step);
    double squares = sum_squares(model->grads_memory, model->num_parameters) +
                     sum_squares(h->grads, (size_t)h->C + 1);
    res.grad_norm = (float)sqrt(squares);
    res.skipped = !isfinite(res.loss) || !isfinite(res.grad_norm);
    if (!res.skipped) {
        int t = st->step - st->skipped + 1;
        model_apply_update(model, &opt, res.grad_norm, t);
        if (!h->m) {
            h->m = dev_alloc((size_t)h->C + 1);
            h->v = dev_alloc((size_t)h->C + 1);
            if (!h->m || !h->v) die("out of memory for the value head's moments");
            dev_zero(h->m, (size_t)h->C + 1);
            dev_zero(h->v, (size_t)h->C + 1);
        }
        float scale = opt.clip > 0.0f && res.grad_norm > opt.clip ? opt.clip / (res.grad_norm + 1e-6f) : 1.0f;
        adamw_update(h->params, h->grads, h->m, h->v, (size_t)h->C + 1, opt.lr, opt.beta1,
                     opt.beta2, opt.eps, 0.0f, scale, t);
    }
    return res;
}

// Trains the PRM (model and head) on the paths of d for args->steps steps (args->B paths a step,
// in an order shuffled each epoch), logging each step to args->log when given.
static void prm_train(Model *model, ValueHead *head, TrainState *st, const TrainArgs *args,
                      const PrmData *d, int pad) {
    int steps_per_epoch = (d->count + args->B - 1) / args->B;
    Schedule sched = {args->lr, args->lr_floor, args->warmup, args->steps, args->cosine};
    FILE *log = open_metrics_log(args->log, 0);
    Batch batch;
    batch_alloc(&batch, args->B, args->T);
    HeadReads reads;
    head_reads_alloc(&reads, args->B * args->T);
    model_alloc_activations(model, args->B, args->T);
    Progress progress = progress_start(0, args->steps);
    int *order = xmalloc((size_t)d->count * sizeof(int)), order_epoch = -1;
    while (st->step < args->steps) {
        int epoch = st->step / steps_per_epoch, first = st->step % steps_per_epoch * args->B;
        if (epoch != order_epoch) epoch_order(order, d->count, args->seed, order_epoch = epoch);
        int B = d->count - first < args->B ? d->count - first : args->B;
        StepResult r = prm_step(model, head, &batch, &reads, d, order + first, B, args,
                                &sched, st, pad);
        state_count_step(st, &r);
        double eta, tok_per_s = progress_step(&progress, st->step, batch.tokens, &eta);
        if (log) {
            char loss[32], norm[32];
            fprintf(log, "{\"step\": %d, \"loss\": %s, \"lr\": %.7g, \"grad_norm\": %s, "
                    "\"tok_per_s\": %.1f, \"pad_frac\": %.4f%s}\n", st->step, json_number(loss, r.loss),
                    r.lr, json_number(norm, r.grad_norm), tok_per_s,
                    1.0 - (double)batch.tokens / ((double)batch.rows * batch.T),
                    r.skipped ? ", \"skipped\": true" : "");
            if (fflush(log) != 0 || ferror(log)) die("cannot write log %s: %s", args->log, strerror(errno));
        }
        show_progress(st->step, args->steps, r.loss, tok_per_s, eta, st->step == args->steps);
        if (r.skipped && st->bad_streak >= args->max_bad_steps)
            die("prm: %d steps in a row had a non-finite loss or gradient norm (--max-bad-steps): "
                "stopping without saving (try a lower --lr)", st->bad_streak);
    }
    if (log) fclose(log);
    free(order);
    head_reads_free(&reads);
    batch_free(&batch);
}

int cmd_prm(int argc, char **argv) {
    TrainArgs args = train_args_defaults();
    args.out = "prm.bin";
    const char *tokenizer = NULL, *data_path = NULL, *valid_path = NULL, *summary_path = NULL;
    int epochs = 1, soft = 0;
    const Flag flags[] = {
        {"--tokenizer", "PATH", FLAG_STRING, .value = &tokenizer,
         "our tok.bin, or a directory with GPT-2's encoder.json and vocab.bpe"},
        {"--data", "FILE", FLAG_STRING, .value = &data_path,
         "TRL's stepwise JSONL: prompt, completions, labels (label-steps --out)"},
        {"--valid", "FILE", FLAG_STRING, .value = &valid_path,
         "held-out stepwise JSONL: loss, step F1 and first-error placement at the end"},
        {"--soft", NULL, FLAG_SWITCH, .value = &soft,
         "train on the \"soft\" labels (fractions) instead of the hard ones"},
        {"--epochs", "E", FLAG_INT, .value = &epochs, "passes over the paths, unless --steps is given",
         1, 1 << 20},
        {"--summary", "FILE", FLAG_STRING, .value = &summary_path,
         "the --valid (else --data) report as one JSON object"},
        PACK_FLAG(args.pack),
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {TRAIN_FLAGS_TITLE, TRAIN_FLAGS, &args}, {0}};
    if (flags_parse(argc, argv, "prm", "prm --init SFT.bin --tokenizer PATH --data steps.jsonl "
                    "--batch B --seq T --lr LR\n                  [--valid held_out.jsonl] [more "
                    "flags below] (--batch counts paths)", tables))
        return 0;
    use_threads(args.threads);
    if (!args.init) die("prm: --init SFT.bin is required (the transformer under the head)");
    if (!tokenizer || !data_path) die("prm: --tokenizer and --data are required");
    if (args.resume || args.save_every || args.stop_after)
        die("prm: --resume, --save-every and --stop-after are not supported (the PRM is saved at the end)");
    check_train_args(&args, "prm");
    if (summary_path) check_writable(summary_path);

    Model model;
    TrainState st;
    run_begin(&model, &st, &args, 1, args.B);
    ValueHead head;
    head_alloc(&head, model.config.C);
    head_init_random(&head, args.seed);
    Tokenizer *tok = load_tokenizer(tokenizer);
    check_tokenizer_fits(tok, model.config.V);
    int pad = tok_eot(tok);
    PrmData data, valid = {0};
    prm_data_load(&data, data_path, tok, args.T, soft);
    if (valid_path) prm_data_load(&valid, valid_path, tok, args.T, soft);
    int steps_per_epoch = (data.count + args.B - 1) / args.B;
    if (!args.steps) args.steps = epochs_to_steps(epochs, steps_per_epoch);
    print_model(&model);
    printf("paths: %d with %ld steps (%d steps past --seq left out, %d paths dropped); %s labels; "
           "%d steps\n", data.count, data.steps, data.cut_steps, data.dropped, soft ? "soft" : "hard",
           args.steps);

    prm_train(&model, &head, &st, &args, &data, pad);
    prm_save(&model, &head, args.out);
    printf("wrote %s (the model and its value head)\n", args.out);
    const PrmData *held = valid_path ? &valid : &data;
    PrmReport rep = prm_evaluate(&model, &head, held, args.B, args.T, pad);
    prm_report_print(&rep, valid_path ? valid_path : data_path);
    if (summary_path) {
        SafeFile sf;
        safe_open(&sf, summary_path);
        prm_report_json(sf.file, &rep);
        fputs("\n", sf.file);
        safe_commit(&sf);
    }
    prm_data_free(&data);
    if (valid_path) prm_data_free(&valid);
    tok_free(tok);
    head_free(&head);
    model_free(&model);
    return 0;
}

// ---- reranking: `eval --rerank PRM --samples K` -------------------------------------------------

// A PRM for eval (section 7), its head allocated here.
static void prm_load(Model *model, ValueHead **head, const char *path) {
    *head = xmalloc(sizeof(ValueHead));
    prm_read(model, *head, path);
}

static void prm_free(Model *model, ValueHead *head) {
    head_free(head);
    free(head);
    model_free(model);
}

// The path reward of a sample: the mean (by_min: the minimum) of its step probabilities; a
// sample without a step gets −1, below any path with one (ours).
static double path_reward(const float *p, int num_steps, int by_min) {
    double reward = num_steps ? (by_min ? INFINITY : 0.0) : -1.0;
    for (int s = 0; s < num_steps; s++)
        reward = by_min ? fmin(reward, p[s]) : reward + (double)p[s] / num_steps;
    return reward;
}

// Best-of-k by the path reward. Returns, per item, the index of the sample with the highest
// reward among its k (ties: the first), malloc'd. With vs_truth, also adds each step of every
// sample of an item with true steps (data names the file, for errors) to the counts of the
// PRM's prediction (probability >= 0.5: correct) against its true correctness.
static int *prm_rerank(Model *prm, const ValueHead *head, Tokenizer *tok, const Example *items,
                       int n, int k, char *const *samples, int by_min, const char *data,
                       LabelCounts *vs_truth) {
    long total = (long)n * k;
    PrmExample *ex = xmalloc((size_t)(total > 0 ? total : 1) * sizeof(PrmExample));
    for (long i = 0; i < total; i++) {
        char **steps;
        int ns = answer_split_steps(samples[i], &steps);
        prm_tokenize(tok, items[i / k].prompt, steps, ns, prm->config.maxT + 1, &ex[i]);
        answer_free_steps(steps, ns);
    }
    enum { PRM_SCORE_ROWS = 16 };
    float **probs = prm_probabilities(prm, head, ex, (int)total, PRM_SCORE_ROWS, prm->config.maxT,
                                      tok_eot(tok));
    int *choice = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    for (int i = 0; i < n; i++) {
        double best = -INFINITY;
        choice[i] = 0;
        for (int j = 0; j < k; j++) {
            const PrmExample *e = &ex[(long)i * k + j];
            const float *p = probs[(long)i * k + j];
            double reward = path_reward(p, e->num_steps, by_min);
            if (reward > best) best = reward, choice[i] = j;
        }
        TaskStep truth[EVAL_MAX_TRUTH];
        int num_truth = vs_truth ? example_truth(&items[i], data, i, truth) : 0;
        for (int j = 0; j < k && num_truth > 0; j++) { // the PRM's steps are the first num_steps
            const PrmExample *e = &ex[(long)i * k + j];
            StepReport report;
            answer_check_steps(samples[(long)i * k + j], truth, num_truth, &report);
            for (int s = 0; s < e->num_steps; s++)
                label_counts_add(vs_truth, probs[(long)i * k + j][s] >= 0.5f,
                                 answer_step_truly_correct(&report, s));
        }
    }
    for (long i = 0; i < total; i++) {
        free(probs[i]);
        prm_example_free(&ex[i]);
    }
    free(probs);
    free(ex);
    return choice;
}

// ---- the loop: `./sirt sipf` ---------------------------------------------------------------------
// SIPF's self-iteration, made of the pieces above. Each round r = 1..R, from the current model:
//   sample   --samples N chain-of-thought paths per training question (sample_items), at
//            --temperature (default 1, the paper's), with seed S + 2(r−1) (ours: each round
//            draws new paths);
//   keep     per question the paths whose equations differ from every earlier kept one
//            (answer_same_equations, as RFT counts paths), and with --drop-wrong-arithmetic only
//            those whose every "A OP B = C" computes right (SIPF's filter); a path without a step
//            has nothing to label and is left out;
//   label    every step of every kept path by simulation with the current model as simulator:
//            -k K continuations per step prefix (simulate_continuations, seed S + 2(r−1) + 1);
//            hard label = some continuation reaches the gold answer, soft = the fraction (with a
//            list -k 1,2,4: K is the largest, and the labels of each smaller k, from the first k
//            continuations, are scored against the true steps as label-steps scores them). With
//            --outcome: every step gets its path's final answer's correctness (the outcome-only
//            variant; nothing is simulated);
//   PRM      D(r) = D(r−1) ∪ the round's labelled paths; a fresh value head on the input model
//            (--model, not the current one: ours) is trained on all of D(r) (prm_train, with
//            --prm-lr and --prm-epochs; --soft: on the soft labels);
//   score    each kept path of the round: its path reward, the mean (--reward min: the lowest)
//            of its step probabilities under the new PRM;
//   pair     per question: sort its kept paths by reward, highest first, and pair the i-th
//            highest (chosen) with the i-th lowest (rejected), i = 1, 2, ..., while their
//            rewards differ by at least η (--margin) and at most --max-pairs pairs (margin_pairs;
//            ours: each path in at most one pair, the widest gaps first);
//   ORPO     on the round's pairs from the current model (dpo_train with --loss orpo, λ =
//            --beta, no reference), with a fresh optimizer;
//   validate greedy accuracy on --valid. The best round on it (round 0, the input model,
//            included; with --exclude-initial only rounds 1..R, so that --out shows what the loop
//            did) is kept as --out; without --valid, the last one.
// The next round samples from, and simulates with, the model ORPO left (not the kept best).
// --keep DIR writes each round's files: roundN_steps.jsonl (the labelled paths, TRL's stepwise
// format as label-steps writes it: "index" is the question's line, "sample" which of its N
// samples), roundN_prm.bin (the PRM, as prm writes it), roundN_pairs.jsonl (the pairs format of
// section 8 with "chosen_reward" and "rejected_reward", no reference log-probs), and rounds.jsonl
// (one line per round, round 0 included: counts, label reports (by k with a list -k), the PRM's
// report, validation accuracy).
// Each round's model is written beside --out as refine does (sipf.round2.bin); --log FILE logs
// ORPO's steps as FILE.roundN.jsonl and the PRM's as FILE.roundN_prm.jsonl.

// SIPF's pairs among m paths of one question from their rewards: sorted by reward, highest first
// (ties: the earlier path first), the i-th highest is chosen over the i-th lowest while
// reward[chosen] − reward[rejected] ≥ margin, at most max_pairs pairs, each path in one pair at
// most. Writes the paths' indices to chosen[] and rejected[]; returns the number of pairs.
static int margin_pairs(const double *reward, int m, double margin, int max_pairs, int *chosen,
                        int *rejected) {
    int *order = xmalloc((size_t)(m > 0 ? m : 1) * sizeof(int)), count = 0;
    for (int i = 0; i < m; i++) { // insertion sort, stable: ties keep their order
        int j = i;
        for (; j > 0 && reward[order[j - 1]] < reward[i]; j--) order[j] = order[j - 1];
        order[j] = i;
    }
    for (int hi = 0, lo = m - 1; hi < lo && count < max_pairs; hi++, lo--) {
        if (!(reward[order[hi]] - reward[order[lo]] >= margin)) break; // the gaps only narrow
        chosen[count] = order[hi];
        rejected[count++] = order[lo];
    }
    free(order);
    return count;
}

// The kept paths of one round (see above) of k samples per item: StepPaths, item by item, their
// `sample` the index among the item's k. Counts what was left out in dropped[0..3): repeated
// equations, a wrong equation (with drop_wrong), no step.
static StepPath *sipf_keep_paths(const Example *items, int n, int k, char *const *samples,
                                 const char *data_path, int drop_wrong, int *num_paths,
                                 int dropped[3]) {
    StepPath *paths = NULL;
    int count = 0, cap = 0;
    StepReport *kept = xmalloc((size_t)k * sizeof(StepReport));
    dropped[0] = dropped[1] = dropped[2] = 0;
    for (int i = 0; i < n; i++) {
        TaskStep truth[EVAL_MAX_TRUTH];
        int num_truth = example_truth(&items[i], data_path, i, truth), num_kept = 0;
        for (int j = 0; j < k; j++) {
            const char *text = samples[(long)i * k + j];
            StepReport r;
            answer_check_steps(text, truth, num_truth, &r);
            int right = 0, total = 0;
            for (int o = 0; o < 4; o++) right += r.op_right[o], total += r.op_total[o];
            if (r.num_steps == 0) dropped[2]++;
            else if (drop_wrong && right < total) dropped[1]++;
            else if (equations_seen(kept, num_kept, &r)) dropped[0]++;
            else {
                kept[num_kept++] = r;
                step_path_add(&paths, &count, &cap, text, i, j, items[i].gold, truth, num_truth);
            }
        }
    }
    free(kept);
    *num_paths = count;
    return paths;
}

// Appends the labelled steps of n paths (step_label from the first K continuations, or the
// outcome when not simulated; soft: the soft labels as targets) to the PRM's data d, tokenized
// as prm_data_load tokenizes the same lines of a stepwise file (a window of T + 1 tokens).
// at[p] gets path p's index in d, or −1 when none of its steps fits the window (dropped).
static void prm_data_add_paths(PrmData *d, Tokenizer *tok, const Example *items,
                               const StepPath *paths, int n, int K, int soft, int T, int *at) {
    d->ex = realloc(d->ex, ((size_t)d->count + n + 1) * sizeof(PrmExample));
    if (!d->ex) die("out of memory");
    for (int p = 0; p < n; p++) {
        const StepPath *sp = &paths[p];
        PrmExample ex;
        d->cut_steps += prm_tokenize(tok, items[sp->item].prompt, sp->steps, sp->num_steps, T + 1, &ex);
        at[p] = -1;
        if (ex.num_steps == 0) {
            d->dropped++;
            prm_example_free(&ex);
            continue;
        }
        ex.targets = xmalloc((size_t)ex.num_steps * sizeof(float));
        for (int s = 0; s < ex.num_steps; s++) {
            int hard;
            double fraction;
            step_label(sp, s, K, K, &hard, &fraction);
            ex.targets[s] = soft ? (float)fraction : (float)hard;
        }
        if (sp->truly_correct) { // the kept steps are the first num_steps
            ex.truly_correct = xmalloc((size_t)ex.num_steps * sizeof(int));
            memcpy(ex.truly_correct, sp->truly_correct, (size_t)ex.num_steps * sizeof(int));
        }
        d->steps += ex.num_steps;
        at[p] = d->count;
        d->ex[d->count++] = ex;
    }
}

int cmd_sipf(int argc, char **argv) {
    TrainArgs args = train_args_defaults();
    args.out = "sipf.bin";
    args.B = 8;
    args.T = 256;
    args.lr = 1e-5f;
    const char *tokenizer = NULL, *data_path = NULL, *valid_path = NULL, *keep = NULL;
    const char *k_text = "8";
    int k = 8, rounds = 3, epochs = 1, prm_epochs = 1, max_pairs = 4, outcome = 0, soft = 0,
        by_min = 0, drop_wrong = 0, exclude_initial = 0;
    float margin = 0.1f, prm_lr = -1.0f;
    PreferenceSettings pref = {LOSS_ORPO, 0.1f, 0.0f, 0.0f};
    GenerateSettings g = GENERATE_DEFAULTS;
    g.sampler.temperature = 1.0f; // SIPF's, for the paths and the continuations
    const Flag flags[] = {
        {"--model", "FILE", FLAG_STRING, .value = &args.init,
         "the SFT model: the first policy and simulator, and the PRM's base"},
        {"--tokenizer", "PATH", FLAG_STRING, .value = &tokenizer,
         "our tok.bin, llama2.c's tokenizer.bin, or a directory with GPT-2's encoder.json and vocab.bpe"},
        {"--data", "FILE", FLAG_STRING, .value = &data_path,
         "question/answer JSONL: the questions the student answers"},
        {"--valid", "FILE", FLAG_STRING, .value = &valid_path,
         "greedy accuracy on these items picks the best round"},
        {"--exclude-initial", NULL, FLAG_SWITCH, .value = &exclude_initial,
         "keep the best of rounds 1..R on --valid, never the input model"},
        {"--rounds", "R", FLAG_INT, .value = &rounds, "rounds of the loop", 1, 1000},
        {"--samples", "N", FLAG_INT, .value = &k, "paths sampled per question", 1, 1024},
        {"-k", "K[,K...]", FLAG_STRING, .value = &k_text,
         "continuations simulated per step; a list (1,2,4) also scores the labels of each smaller k"},
        {"--outcome", NULL, FLAG_SWITCH, .value = &outcome,
         "the outcome-only variant: every step labelled with its path's final answer, no simulation"},
        {"--drop-wrong-arithmetic", NULL, FLAG_SWITCH, .value = &drop_wrong,
         "leave out paths with an equation that computes wrong (SIPF's filter)"},
        {"--soft", NULL, FLAG_SWITCH, .value = &soft, "train the PRM on the soft labels"},
        {"--prm-lr", "LR", FLAG_FLOAT, .value = &prm_lr, "the PRM's learning rate (default: --lr)",
         0, INFINITY},
        {"--prm-epochs", "E", FLAG_INT, .value = &prm_epochs, "the PRM's passes over D(r)", 1, 1000},
        {"--reward", NULL, FLAG_CHOICE, .value = &by_min,
         "a path's reward: the mean or the lowest of its step probabilities", .choices = RERANK_NAMES},
        {"--margin", "ETA", FLAG_FLOAT, .value = &margin,
         "η: a pair's rewards differ by at least this (ours)", -INFINITY, INFINITY},
        {"--max-pairs", "N", FLAG_INT, .value = &max_pairs, "pairs per question at most", 1, 1024},
        {"--beta", "L", FLAG_FLOAT, .value = &pref.beta, "ORPO's λ, the odds ratio's weight", -INFINITY,
         INFINITY},
        {"--epochs", "E", FLAG_INT, .value = &epochs,
         "ORPO's passes over a round's pairs, unless --steps is given", 1, 1000},
        {"--temperature", "T", FLAG_FLOAT, .value = &g.sampler.temperature,
         "of the paths and the continuations", 0, INFINITY},
        {"--max-new", "N", FLAG_INT, .value = &g.max_new, "new tokens per path or continuation at most",
         1, 1 << 20},
        {"--gen-batch", "N", FLAG_INT, .value = &g.batch, "sequences decoded together", 1, 1 << 16},
        {"--keep", "DIR", FLAG_STRING, .value = &keep,
         "write each round's steps, PRM, pairs, and rounds.jsonl, into DIR"},
        PACK_FLAG(args.pack),
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {TRAIN_FLAGS_TITLE, TRAIN_FLAGS, &args}, {0}};
    if (flags_parse(argc, argv, "sipf", "sipf --model SFT.bin --tokenizer PATH --data train.jsonl "
                    "--valid valid.jsonl --rounds R\n                   [more flags below] (--batch "
                    "counts pairs for ORPO, paths for the PRM; --steps: ORPO's)", tables))
        return 0;
    use_threads(args.threads);
    if (!args.init || !tokenizer || !data_path) die("sipf: --model, --tokenizer and --data are required");
    if (args.config || args.resume || args.save_every || args.stop_after)
        die("sipf: --config, --resume, --save-every and --stop-after are not supported");
    if (!(margin > 0)) die("--margin must be positive (a pair needs a preference)");
    int levels[MAX_K_LEVELS], num_levels = parse_k_list(k_text, levels), K = levels[num_levels - 1];
    check_preference(&pref);
    if (prm_lr < 0) prm_lr = args.lr;
    check_writable(args.out);
    if (keep) mkdir_p(keep);

    Model policy;
    model_load(&policy, args.init);
    check_seq_fits(args.T, &policy);
    policy.detect_anomaly = args.detect_anomaly;
    Tokenizer *tok = load_tokenizer(tokenizer);
    check_tokenizer_fits(tok, policy.config.V);
    int pad = tok_eot(tok);
    TemplateOptions cot = {TEMPLATE_COT, 0, 0};
    JsonlFile file; // the data's lines: their "question" and "truth" go into the steps files
    jsonl_read(data_path, &file);
    Example *items, *valid = NULL;
    int n, n_valid = 0;
    char err[4400];
    if (examples_from_jsonl(&file, &cot, &items, &n, err, sizeof err) != 0) die("%s", err);
    for (int i = 0; i < n; i++)
        if (!items[i].gold) die("%s: item %d has no gold answer (sipf needs question/answer items)", data_path, i + 1);
    if (valid_path) examples_load(valid_path, &cot, &valid, &n_valid);
    print_model(&policy);

    char path[4200], tag[32], number[32];
    FILE *rounds_log = NULL; // DIR/rounds.jsonl, a line per round
    if (keep) {
        snprintf(path, sizeof path, "%s/rounds.jsonl", keep);
        rounds_log = open_metrics_log(path, 0);
    }
    double best = -1.0;
    if (valid) {
        best = (double)greedy_correct(&policy, tok, valid, n_valid, &g) / n_valid;
        printf("round 0 (the input model): validation accuracy %.2f%%%s\n", 100 * best,
               exclude_initial ? " (not kept: --exclude-initial)" : "");
    }
    if (rounds_log)
        fprintf(rounds_log, "{\"round\": 0, \"valid_accuracy\": %s}\n", json_number(number, valid ? best : NAN));
    if (valid && exclude_initial) best = -1.0; // round 1 is kept whatever its accuracy
    model_save(&policy, args.out); // the best so far
    PrmData D = {0};               // D(r): every round's labelled paths so far
    for (int round = 1; round <= rounds; round++) {
        GenerateSettings gs = g;
        gs.seed = args.seed + 2 * (uint64_t)(round - 1);
        printf("round %d: sampling %d paths for each of %d questions\n", round, k, n);
        char **samples = sample_items(&policy, tok, items, n, k, &gs);
        long right = 0;
        for (long j = 0; j < (long)n * k; j++) right += answer_is_correct(samples[j], items[j / k].gold);
        int num_paths, dropped[3];
        StepPath *paths = sipf_keep_paths(items, n, k, samples, data_path, drop_wrong, &num_paths, dropped);
        printf("round %d: %.1f%% of the %ld samples are right; kept %d paths (left out: %d repeating "
               "another's equations, %d with a wrong equation, %d without a step)\n", round,
               100.0 * right / ((long)n * k), (long)n * k, num_paths, dropped[0], dropped[1], dropped[2]);
        if (num_paths == 0) {
            printf("round %d: no path to label; stopping\n", round);
            for (long j = 0; j < (long)n * k; j++) free(samples[j]);
            free(samples);
            free(paths);
            break;
        }
        // label the steps: simulated with the current model, or the outcome
        if (!outcome) {
            GenerateSettings sim = g;
            sim.seed = gs.seed + 1;
            simulate_continuations(&policy, tok, items, paths, num_paths, K, &sim);
        }
        long steps = 0, with_truth = 0;
        for (int p = 0; p < num_paths; p++) {
            steps += paths[p].num_steps;
            if (paths[p].truly_correct) with_truth += paths[p].num_steps;
        }
        LabelCounts hard, softc, by_k_hard[MAX_K_LEVELS], by_k_soft[MAX_K_LEVELS];
        step_label_counts(paths, num_paths, K, outcome ? 0 : K, &hard, &softc);
        printf("round %d: %ld steps labelled (%s)", round, steps, outcome ? "outcome" : "simulated");
        if (with_truth) {
            label_counts_print("; against the true steps, hard:", &hard);
            label_counts_print("  |  soft >= 0.5:", &softc);
        }
        printf("\n");
        for (int l = 0; !outcome && l < num_levels; l++) { // the labels of the first k continuations
            step_label_counts(paths, num_paths, K, levels[l], &by_k_hard[l], &by_k_soft[l]);
            if (!with_truth || l == num_levels - 1) continue; // k = K: printed above
            printf("round %d: with k = %d of the %d continuations", round, levels[l], K);
            label_counts_print(", hard:", &by_k_hard[l]);
            label_counts_print("  |  soft >= 0.5:", &by_k_soft[l]);
            printf("\n");
        }
        if (keep) {
            snprintf(path, sizeof path, "%s/round%d_steps.jsonl", keep, round);
            write_step_labels(path, &file, items, paths, num_paths, K);
        }
        // the PRM: a fresh head on the input model, trained on D(round)
        int first_new = D.count, *at = xmalloc((size_t)num_paths * sizeof(int));
        prm_data_add_paths(&D, tok, items, paths, num_paths, K, soft, args.T, at);
        Model prm;
        model_load(&prm, args.init);
        prm.detect_anomaly = args.detect_anomaly;
        check_training_fits(&prm, args.B, args.T);
        ValueHead head;
        head_alloc(&head, prm.config.C);
        head_init_random(&head, args.seed);
        TrainArgs prm_args = args;
        char prm_log[4200];
        prm_args.lr = prm_lr;
        prm_args.steps = epochs_to_steps(prm_epochs, (D.count + args.B - 1) / args.B);
        if (args.log) {
            snprintf(tag, sizeof tag, "round%d_prm", round);
            path_tagged(prm_log, sizeof prm_log, args.log, tag, ".jsonl");
            prm_args.log = prm_log;
        }
        printf("round %d: the PRM on D(%d): %d paths, %ld steps (%d steps past --seq left out, %d "
               "paths dropped); %d steps\n", round, round, D.count, D.steps, D.cut_steps, D.dropped,
               prm_args.steps);
        TrainState prm_state = {.seed = args.seed, .rng = rng_seeded(args.seed), .B = args.B,
                                .T = args.T, .shuffle = 1, .best_valid_loss = INFINITY};
        prm_train(&prm, &head, &prm_state, &prm_args, &D, pad);
        if (keep) {
            snprintf(path, sizeof path, "%s/round%d_prm.bin", keep, round);
            prm_save(&prm, &head, path);
        }
        PrmReport report = prm_evaluate(&prm, &head, &D, args.B, args.T, pad);
        char what[96];
        snprintf(what, sizeof what, "round %d: the PRM on its own training data D(%d)", round, round);
        prm_report_print(&report, what);
        // the rewards of the round's paths, and the pairs
        float **probs = prm_probabilities(&prm, &head, D.ex + first_new, D.count - first_new, args.B,
                                          args.T, pad);
        double *reward = xmalloc((size_t)num_paths * sizeof(double));
        for (int p = 0; p < num_paths; p++)
            reward[p] = at[p] < 0 ? -1.0
                                  : path_reward(probs[at[p] - first_new], D.ex[at[p]].num_steps, by_min);
        for (int i = 0; i < D.count - first_new; i++) free(probs[i]);
        free(probs);
        head_free(&head);
        model_free(&prm);
        PairData pairs = {0};
        pairs.pairs = xmalloc(((size_t)n * max_pairs + 1) * sizeof(Pair));
        double *pair_rewards = xmalloc(((size_t)n * max_pairs + 1) * 2 * sizeof(double));
        int *chosen = xmalloc((size_t)k * sizeof(int)), *rejected = xmalloc((size_t)k * sizeof(int));
        for (int first = 0, last; first < num_paths; first = last) { // the paths of one question
            int i = paths[first].item;
            for (last = first; last < num_paths && paths[last].item == i; last++) {}
            int made = margin_pairs(reward + first, last - first, margin, max_pairs, chosen, rejected);
            for (int c = 0; c < made; c++) {
                const StepPath *w = &paths[first + chosen[c]], *l = &paths[first + rejected[c]];
                double rw = reward[first + chosen[c]], rl = reward[first + rejected[c]];
                if (pair_add(&pairs, tok, items[i].prompt, samples[(long)i * k + w->sample],
                             samples[(long)i * k + l->sample], args.T)) {
                    pair_rewards[2 * (pairs.count - 1)] = rw;
                    pair_rewards[2 * (pairs.count - 1) + 1] = rl;
                }
            }
        }
        printf("round %d: %d pairs (path rewards %s step probability, at least %g apart; dropped: "
               "%d empty, %d identical; %d cut)\n", round, pairs.count, by_min ? "lowest" : "mean",
               margin, pairs.dropped_empty, pairs.dropped_identical, pairs.truncated);
        if (keep) {
            snprintf(path, sizeof path, "%s/round%d_pairs.jsonl", keep, round);
            write_pairs(path, &pairs, tok, pair_rewards);
        }
        free(chosen);
        free(rejected);
        free(pair_rewards);
        free(reward);
        free(at);
        step_paths_free(paths, num_paths);
        for (long j = 0; j < (long)n * k; j++) free(samples[j]);
        free(samples);
        double acc = NAN;
        if (pairs.count > 0) { // ORPO from the current model, a fresh optimizer
            char out[4200], log[4200];
            TrainArgs round_args = args;
            snprintf(tag, sizeof tag, "round%d", round);
            path_tagged(out, sizeof out, args.out, tag, ".bin"); // sipf.bin -> sipf.round2.bin
            round_args.out = out;
            if (args.log) {
                path_tagged(log, sizeof log, args.log, tag, ".jsonl");
                round_args.log = log;
            }
            round_args.steps = args.steps ? args.steps
                                          : epochs_to_steps(epochs, (pairs.count + args.B - 1) / args.B);
            if (policy.m_memory) {
                dev_zero(policy.m_memory, policy.num_parameters);
                dev_zero(policy.v_memory, policy.num_parameters);
            }
            TrainState st = {.seed = args.seed, .rng = rng_seeded(args.seed), .B = args.B,
                             .T = args.T, .shuffle = 1, .best_valid_loss = INFINITY};
            dpo_train(&policy, &st, &round_args, &pref, &pairs, pad);
            if (valid) {
                acc = (double)greedy_correct(&policy, tok, valid, n_valid, &g) / n_valid;
                printf("round %d: validation accuracy %.2f%%%s\n", round, 100 * acc,
                       acc > best ? " (best so far: kept)" : "");
                if (acc > best) {
                    best = acc;
                    model_save(&policy, args.out);
                }
            } else model_save(&policy, args.out); // without validation the last round is kept
        }
        if (rounds_log) {
            fprintf(rounds_log, "{\"round\": %d, \"samples\": %ld, \"right\": %ld, \"kept\": %d, "
                    "\"dropped_same_equations\": %d, \"dropped_wrong_arithmetic\": %d, "
                    "\"dropped_no_step\": %d, \"steps\": %ld, \"labels\": \"%s\", \"hard\": ", round,
                    (long)n * k, right, num_paths, dropped[0], dropped[1], dropped[2], steps,
                    outcome ? "outcome" : "simulated");
            label_counts_json(rounds_log, &hard);
            fputs(", \"soft\": ", rounds_log);
            label_counts_json(rounds_log, &softc);
            if (!outcome) { // every k of -k, the last one K (the same as "hard" and "soft")
                fputs(", \"by_k\": [", rounds_log);
                for (int l = 0; l < num_levels; l++) {
                    fprintf(rounds_log, "%s{\"k\": %d, \"hard\": ", l ? ", " : "", levels[l]);
                    label_counts_json(rounds_log, &by_k_hard[l]);
                    fputs(", \"soft\": ", rounds_log);
                    label_counts_json(rounds_log, &by_k_soft[l]);
                    fputs("}", rounds_log);
                }
                fputs("]", rounds_log);
            }
            fputs(", \"prm_on_its_training_data\": ", rounds_log);
            prm_report_json(rounds_log, &report);
            fprintf(rounds_log, ", \"pairs\": %d, \"valid_accuracy\": %s}\n", pairs.count,
                    json_number(number, acc));
            if (fflush(rounds_log) != 0 || ferror(rounds_log)) die("cannot write %s/rounds.jsonl", keep);
        }
        pairs_free(&pairs);
        if (pairs.count == 0) {
            printf("round %d: no pairs, nothing to learn; stopping\n", round);
            break;
        }
    }
    if (valid && best >= 0) printf("kept %s: validation accuracy %.2f%%\n", args.out, 100 * best);
    else if (valid) printf("kept %s: the input model (no round trained)\n", args.out);
    if (rounds_log) fclose(rounds_log);
    prm_data_free(&D);
    examples_free(items, n);
    if (valid) examples_free(valid, n_valid);
    jsonl_free(&file);
    tok_free(tok);
    model_free(&policy);
    return 0;
}

// =============================================================================================
// 11. The reproduction: `./sirt reproduce`, and `./sirt` with no arguments
// data → tokenizer → phase 1 (sft) → evaluation → phase 2 (refine) → evaluation, each step one of
// the commands above with the arguments it would get on a terminal; then the table, results.json
// and results.svg. It is support code that drives the method, so it lives in a header, included
// here because it calls the commands defined above.
// =============================================================================================
#include "lib/reproduce.h" // cmd_reproduce, ReproSettings, the rows of the table

// =============================================================================================
// 12. Benchmark: `./sirt bench` times training steps, decoding and the tokenizer on random
// weights (lib/bench.h, included here because it calls the model's functions above).
// =============================================================================================
#include "lib/bench.h" // cmd_bench

// =============================================================================================
// 13. Main
// =============================================================================================
#ifndef SIRT_NO_MAIN // (the tests include this file and bring their own main)
// The commands: one table serves the dispatch and `./sirt help`.
typedef struct {
    const char *name;
    int (*run)(int argc, char **argv); // the words after the command's name
    const char *help;
} Command;

static const Command COMMANDS[] = {
    {"reproduce", cmd_reproduce, "the reproduction on the built-in task (also: ./sirt alone)"},
    {"train", cmd_train, "language-model training on llm.c token shards"},
    {"export", cmd_export, "write a model as llama2.c's file or a Hugging Face directory"},
    {"data", cmd_data, "generate the built-in task (math or choice) as JSONL"},
    {"tokenizer", cmd_tokenizer, "train a byte-level BPE tokenizer"},
    {"tokenize", cmd_tokenize, "stdin lines -> token ids per line (or back with --decode)"},
    {"sft", cmd_sft, "phase 1: supervised fine-tuning on prompt/completion JSONL"},
    {"sample", cmd_sample, "complete prompts (KV-cache decoding, temperature, top-k, top-p)"},
    {"eval", cmd_eval, "accuracy on reasoning items (greedy, maj@K, pass@K; --teacher)"},
    {"dpo", cmd_dpo, "preference training: dpo, cdpo, ipo, rpo (against a reference), orpo"},
    {"refine", cmd_refine, "phase 2: sample, score, pair and DPO, in rounds"},
    {"label-steps", cmd_label_steps, "step labels of sampled paths by simulated continuations"},
    {"prm", cmd_prm, "train a process reward model (a value head) on stepwise labels"},
    {"sipf", cmd_sipf, "SIPF's loop: sample, label steps, PRM, pairs by reward, ORPO, in rounds"},
    {"bench", cmd_bench, "time training steps, decoding and the tokenizer"},
    {NULL, NULL, NULL}};

static void usage(void) {
    printf("sirt — Self-Refine Instruction-Tuning, from scratch in C\n\ncommands:\n");
    for (const Command *c = COMMANDS; c->name; c++) printf("  ./sirt %-10s %s\n", c->name, c->help);
    printf("  ./sirt help       this text; ./sirt COMMAND --help: the command's flags and defaults\n");
}

int main(int argc, char **argv) {
    if (argc < 2) return cmd_reproduce(0, argv + 1); // the main job
    for (const Command *c = COMMANDS; c->name; c++)
        if (!strcmp(argv[1], c->name)) return c->run(argc - 2, argv + 2);
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage();
        return 0;
    }
    die("unknown command '%s' (see ./sirt help)", argv[1]);
}
#endif
