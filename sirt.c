// sirt.c — Self-Refine Instruction-Tuning, from scratch, in one C file.
//
// A small GPT-2-shaped student learns to reason from a teacher's demonstrations and then improves
// itself. This file is the whole program: it reads top to bottom in the order the data flows.
//
// This file is the method, read top to bottom in the order the data flows. The support code that
// does not know the model (files, JSON, the built-in task, answer checking, reports, the tuned
// matrix product) lives in the headers of lib/, included below, each saying what it defines.
//
// Table of contents
//   1. Kernels (CPU) ......... the kernel interface of model.h: matmul, layernorm, attention, ...
//   2. The model ............. GPT-2: parameters and activations, forward, backward, AdamW
//   3. Checkpoints ........... llm.c model files (version 3) and our training-state file
//   4. Training .............. `./sirt train`: the training step, the loop, the schedule, logs
//   5. Supervised fine-tuning  `./sirt sft`: phase 1, learning from the teacher's demonstrations
//   6. Generation ............ KV-cache decoding, the sampler, batched generation
//   7. Sampling and evaluation `./sirt sample`, `./sirt eval`: accuracy, maj@K, pass@K
//   8. Preference training ... `./sirt dpo`: DPO, cDPO, IPO and RPO against a frozen reference
//   9. Self-refinement ....... `./sirt refine`: phase 2, the student's own answers, scored
//  10. The reproduction ...... `./sirt reproduce` = `./sirt`: the whole method, and its table
//  11. Benchmark ............. `./sirt bench`: how fast a training step runs
//  12. Main .................. command dispatch
// The tokenizer (byte-level BPE, `./sirt tokenizer` and `./sirt tokenize`) is tokenizer.c.
//
// Build with `make`; run `./sirt help` for the commands. The kernel interface (section 1) is the
// only code that touches tensor memory; kernels.cu re-implements it for NVIDIA GPUs.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdarg.h>
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
#include "lib/util.h"      // die, xmalloc, now_seconds, Rng, SafeFile (crash-safe writes), flags
#ifndef SIRT_CUDA              // the CPU kernels' matrix product (the GPU build has cuBLAS):
#include "lib/gemm.h"      // gemm, tuned for the cache, and gemm_reference, the plain loop
#endif
#include "tokenizer.c"     // Tokenizer: byte-level BPE, ours and GPT-2's; `./sirt tokenizer`
#include "lib/tokens.h"    // Shard, DataLoader: llm.c token shards and their batches
#include "lib/jsonl.h"     // JsonObject, JsonlFile: reading and writing JSON lines
#include "lib/templates.h" // Example: the prompt templates, GSM8K-style items as prompt/completion
#include "lib/task.h"      // TaskItem: the built-in word problems and their teacher; `./sirt data`
#include "lib/answer.h"    // answer_extract, answer_is_correct, answer_check_steps


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
// inp (B,T) -> out (B,T,C); wte (Vp,C), wpe (maxT,C)
void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe,
                     int B, int T, int C) {
#pragma omp parallel for
    for (int bt = 0; bt < B * T; bt++) {
        const float *tok = wte + (size_t)inp[bt] * C, *pos = wpe + (size_t)(bt % T) * C;
        float *o = out + (size_t)bt * C;
        for (int c = 0; c < C; c++) o[c] = tok[c] + pos[c];
    }
}

// dout (B,T,C) -> dwte (Vp,C) +=, dwpe (maxT,C) +=
// Two positions may hold the same token, so threads split the channels, not the positions.
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp,
                      int B, int T, int C) {
    const int chunk = 64;
#pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += chunk) {
        int c1 = c0 + chunk < C ? c0 + chunk : C;
        for (int bt = 0; bt < B * T; bt++) {
            const float *d = dout + (size_t)bt * C;
            float *dtok = dwte + (size_t)inp[bt] * C, *dpos = dwpe + (size_t)(bt % T) * C;
            for (int c = c0; c < c1; c++) {
                dtok[c] += d[c];
                dpos[c] += d[c];
            }
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
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC) {
    // A = inp (N,C) row-major; B(k=c, j=oc) = weight[oc*C + c], i.e. weightᵀ read in place
    gemm(N, OC, C, inp, C, 1, weight, 1, C, out, OC, 0);
    if (!bias) return;
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] += bias[o];
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
// a · b over n floats, with 16 partial sums in a fixed order: the compiler turns the inner loop
// into vector instructions (a plain running sum cannot be, since float addition does not
// reassociate). Every attention kernel uses it, so cached decoding matches the full forward.
static float dot_product(const float *a, const float *b, int n) {
    float partial[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) partial[j] += a[i + j] * b[i + j];
    float sum = 0.0f;
    for (int j = 0; j < 16; j++) sum += partial[j];
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

// One query of causal attention, the arithmetic shared by the training forward pass and cached
// decoding (so that the two agree exactly): row[0..t] = softmax_t2(q · k_t2 · scale) and
// out (hs) = Σ_t2 row[t2] v_t2, where key and value t2 start at keys + t2·stride, values + t2·stride.
static void attend_one_query(float *out, float *row, const float *q, const float *keys,
                             const float *values, size_t stride, int t, int hs, float scale) {
    float maxval = -INFINITY;
    for (int t2 = 0; t2 <= t; t2++) {
        row[t2] = dot_product(q, keys + t2 * stride, hs) * scale;
        if (row[t2] > maxval) maxval = row[t2];
    }
    float sum = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {
        row[t2] = expf(row[t2] - maxval);
        sum += row[t2];
    }
    for (int t2 = 0; t2 <= t; t2++) row[t2] /= sum;
    for (int i = 0; i < hs; i++) out[i] = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {
        const float *v = values + t2 * stride;
        for (int i = 0; i < hs; i++) out[i] += row[t2] * v[i];
    }
}

// ---------------------------------------------------------------------------------------------
// qkv (B,T,3C) -> out (B,T,C), att (B,NH,T,T)
// For each batch row b, head h and query position t (all independent, so all parallel):
//   att[t2] = softmax_{t2 <= t}(q_t · k_t2 / sqrt(hs)),  out_t = Σ_t2 att[t2] v_t2
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *base = qkv + (size_t)b * T * 3 * C + h * hs; // row 0 of this head
                float *row = att + (((size_t)b * NH + h) * T + t) * T;
                attend_one_query(out + ((size_t)b * T + t) * C + h * hs, row,
                                 base + (size_t)t * 3 * C, base + C, base + 2 * C, 3 * C, t, hs,
                                 scale);
                for (int t2 = t + 1; t2 < T; t2++) row[t2] = 0.0f;
            }
}

// dout (B,T,C) -> dqkv (B,T,3C) +=
// Position t's query reads the keys and values of every t2 <= t, so dk and dv of one head
// collect contributions from many queries: threads split (b, h) pairs, and within one pair the
// queries run in order. The gradient through the softmax, for one query row, is
//   dpre[t2] = att[t2] * (datt[t2] - Σ_j att[j] datt[j]),  datt[t2] = dout_t · v_t2
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                        int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel
    {
        float *datt = xmalloc((size_t)T * sizeof(float)); // one query row's scratch
#pragma omp for collapse(2)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < T; t++) {
                    const float *row = att + (((size_t)b * NH + h) * T + t) * T;
                    const float *d = dout + ((size_t)b * T + t) * C + h * hs;
                    const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                    float *dq = dqkv + ((size_t)b * T + t) * 3 * C + h * hs;
                    float weighted = 0.0f; // Σ_j att[j] datt[j]
                    for (int t2 = 0; t2 <= t; t2++) {
                        const float *v = qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
                        float *dv = dqkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
                        for (int i = 0; i < hs; i++) dv[i] += row[t2] * d[i];
                        datt[t2] = dot_product(d, v, hs);
                        weighted += row[t2] * datt[t2];
                    }
                    for (int t2 = 0; t2 <= t; t2++) {
                        float dpre = row[t2] * (datt[t2] - weighted) * scale;
                        const float *k = qkv + ((size_t)b * T + t2) * 3 * C + C + h * hs;
                        float *dk = dqkv + ((size_t)b * T + t2) * 3 * C + C + h * hs;
                        for (int i = 0; i < hs; i++) {
                            dq[i] += dpre * k[i];
                            dk[i] += dpre * q[i];
                        }
                    }
                }
        free(datt);
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding kernels: the same arithmetic as encoder_forward and attention_forward, for one new
// token per sequence with the keys and values of earlier positions read from the cache. The
// dot products and the softmax run in the same order as in attention_forward, so cached
// decoding reproduces the full forward pass.

// inp (N), pos (N) -> out (N,C); wte (Vp,C), wpe (maxT,C)
void encoder_forward_at(float *out, const int *inp, const int *pos, const float *wte,
                        const float *wpe, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *tok = wte + (size_t)inp[n] * C, *p = wpe + (size_t)pos[n] * C;
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] = tok[c] + p[c];
    }
}

// qkv (B,T,3C) -> kcache, vcache (S,Tc,C) at [slot[b], 0..T-1]
void kv_cache_store(float *kcache, float *vcache, const float *qkv, const int *slot, int B,
                    int T, int Tc, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *src = qkv + ((size_t)b * T + t) * 3 * C;
            size_t dst = ((size_t)slot[b] * Tc + t) * C;
            memcpy(kcache + dst, src + C, C * sizeof(float));
            memcpy(vcache + dst, src + 2 * C, C * sizeof(float));
        }
}

// qkv (N,3C) -> out (N,C); kcache, vcache (S,Tc,C). Parallel over (sequence, head).
void attention_decode(float *out, float *kcache, float *vcache, const float *qkv,
                      const int *slot, const int *pos, int N, int Tc, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    for (int n = 0; n < N; n++) { // store the new keys and values first
        size_t dst = ((size_t)slot[n] * Tc + pos[n]) * C;
        memcpy(kcache + dst, qkv + (size_t)n * 3 * C + C, C * sizeof(float));
        memcpy(vcache + dst, qkv + (size_t)n * 3 * C + 2 * C, C * sizeof(float));
    }
#pragma omp parallel
    {
        float *row = xmalloc((size_t)Tc * sizeof(float)); // this query's attention weights
#pragma omp for collapse(2)
        for (int n = 0; n < N; n++)
            for (int h = 0; h < NH; h++) {
                const float *keys = kcache + (size_t)slot[n] * Tc * C + h * hs;
                const float *values = vcache + (size_t)slot[n] * Tc * C + h * hs;
                attend_one_query(out + (size_t)n * C + h * hs, row, qkv + (size_t)n * 3 * C + h * hs,
                                 keys, values, C, pos[n], hs, scale);
            }
        free(row);
    }
}

// ---------------------------------------------------------------------------------------------
// GELU, tanh form: out = 0.5 x (1 + tanh(u)), u = sqrt(2/π) (x + 0.044715 x³).
// Since 0.5 (1 + tanh(u)) = sigmoid(2u), both passes use s = 1 / (1 + exp(−2u)): one expf
// instead of tanhf, several times faster, and equal to the tanh form to float rounding.
#define GELU_SCALE 0.7978845608028654f // sqrt(2/π)

// inp (N) -> out (N)
void gelu_forward(float *out, const float *inp, size_t N) {
#pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        float x = inp[i], u = GELU_SCALE * (x + 0.044715f * x * x * x);
        out[i] = x / (1.0f + expf(-2.0f * u));
    }
}

// dout (N) -> dinp (N) +=; d/dx [x s] = s + x s (1 − s) 2 du/dx
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
#pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        float x = inp[i], u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float s = 1.0f / (1.0f + expf(-2.0f * u));
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += (s + 2.0f * x * s * (1.0f - s) * du) * dout[i];
    }
}

// ---------------------------------------------------------------------------------------------
// a (N), b (N) -> out (N)
void residual_forward(float *out, const float *a, const float *b, size_t N) {
#pragma omp parallel for
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
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
        for (int i = 0; i < V; i++) sum += expf(z[i] - maxval);
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
        for (int i = 0; i < V; i++) z[i] = c * expf(z[i] - lse[n]);
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
// GPT-2 as llm.c defines it: token + position embeddings, L pre-LayerNorm blocks of causal
// attention and a GELU MLP, a final LayerNorm, and a classifier tied to the token embedding.
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
typedef enum { D_END, D_L, D_NH, D_C, D_3C, D_hidden, D_Vp, D_maxT, D_B, D_T } Dim;
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
    case D_3C: return 3.0 * cfg->C;
    case D_hidden: return cfg->hidden;
    case D_Vp: return cfg->Vp;
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
// the classifier; wpe the position embedding.
typedef struct {
    float *wte, *wpe, *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb,
        *fcprojw, *fcprojb, *lnfw, *lnfb;
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
    {PARAM(qkvw),     .shape = {D_L, D_3C, D_C},     .decay = 1, .init = INIT_NORMAL},
    {PARAM(qkvb),     .shape = {D_L, D_3C},          .decay = 0, .init = INIT_ZEROS},
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
#define NUM_PARAM_TENSORS (int)(sizeof GPT2_PARAMS / sizeof GPT2_PARAMS[0])

// The number of parameters of a model of this shape.
static size_t count_parameters(const Config *cfg) {
    return (size_t)table_count(GPT2_PARAMS, NUM_PARAM_TENSORS, cfg, 0, 0);
}

// The activations of one forward pass at batch B and sequence length T, kept for the backward,
// in the order the forward pass writes them, each with the kernel that writes it (for
// --detect-anomaly). encoded: the embeddings, block 0's input; att: the attention weights; atty:
// the attention's output before its projection; residual2, residual3: the residual stream after
// the attention and after the MLP (the block's output); fch: the MLP's hidden layer before GELU;
// logits: overwritten by dlogits in the backward; logprobs: log p(target) at each position; lse:
// the logsumexp of each row of logits.
typedef struct {
    float *encoded, *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *atty, *attproj, *residual2, *ln2,
        *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *residual3, *lnf, *lnf_mean, *lnf_rstd,
        *logits, *logprobs, *lse;
} ActTensors;

#define ACT(name) #name, offsetof(ActTensors, name)
static const TensorSpec GPT2_ACTS[] = {
    {ACT(encoded),   .shape = {D_B, D_T, D_C},            .kernel = "encoder_forward"},
    {ACT(ln1),       .shape = {D_L, D_B, D_T, D_C},       .kernel = "layernorm_forward"},
    {ACT(ln1_mean),  .shape = {D_L, D_B, D_T},            .kernel = "layernorm_forward"},
    {ACT(ln1_rstd),  .shape = {D_L, D_B, D_T},            .kernel = "layernorm_forward"},
    {ACT(qkv),       .shape = {D_L, D_B, D_T, D_3C},      .kernel = "matmul_forward"},
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

// Gradients flowing backward through the activations. Only the residual stream's gradient
// lives through the whole backward pass; the rest is scratch reused by every layer.
typedef struct {
    float *residual, *ln, *qkv, *atty, *fch, *fch_gelu;
} GradActTensors;

#define GRAD_ACT(name) #name, offsetof(GradActTensors, name)
static const TensorSpec GPT2_GRAD_ACTS[] = {
    // d loss / d residual stream: both branches of every residual connection add into it, so a
    // residual needs no backward kernel
    {GRAD_ACT(residual), .shape = {D_B, D_T, D_C}},
    {GRAD_ACT(ln),       .shape = {D_B, D_T, D_C}}, // d of a LayerNorm output (ln1, ln2 or lnf)
    {GRAD_ACT(qkv),      .shape = {D_B, D_T, D_3C}},
    {GRAD_ACT(atty),     .shape = {D_B, D_T, D_C}},
    {GRAD_ACT(fch),      .shape = {D_B, D_T, D_hidden}},
    {GRAD_ACT(fch_gelu), .shape = {D_B, D_T, D_hidden}}};
#define NUM_GRAD_ACT_TENSORS (int)(sizeof GPT2_GRAD_ACTS / sizeof GPT2_GRAD_ACTS[0])

// Bytes for batches of B rows of T tokens: activations, their gradients, and the batch itself
// (inputs, targets, coefficients).
static double activation_bytes(const Config *cfg, int B, int T) {
    double floats = table_count(GPT2_ACTS, NUM_ACT_TENSORS, cfg, B, T) +
                    table_count(GPT2_GRAD_ACTS, NUM_GRAD_ACT_TENSORS, cfg, B, T) + 3.0 * B * T;
    return floats * sizeof(float);
}

typedef struct {
    Config config;
    // parameters and their gradients, each one allocation
    ParamTensors params, grads;
    float *params_memory, *grads_memory;
    size_t param_sizes[NUM_PARAM_TENSORS];
    size_t num_parameters;
    // AdamW moments, allocated at the first update
    float *m_memory, *v_memory;
    // activations, allocated at the first forward for at most (B, T)
    ActTensors acts;
    GradActTensors grad_acts;
    float *acts_memory, *grad_acts_memory;
    int act_B, act_T;
    // the current batch on the device, and the host copy of its log-probs
    int *inputs, *targets;
    float *coefs;
    float *host_logprobs;
    int B, T; // shape of the last forward pass
    int detect_anomaly; // check every kernel's output for NaN and infinity (--detect-anomaly)
} Model;

// Fills in what follows from the five numbers (call it only on a config that config_problem
// accepts: 4*C and the padding of V are computed in int). Vp = 0: V padded up to 128s.
static void config_finish(Config *cfg) {
    cfg->hidden = 4 * cfg->C;
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
    return NULL;
}

// One allocation for all the parameters (or their gradients), carved into `tensors`.
// `what` says what they hold, for the message when memory runs out.
static float *model_alloc_params(const Model *model, ParamTensors *tensors, const char *what) {
    size_t n = model->num_parameters;
    float *memory = alloc_check(dev_alloc(n), "the model", (double)n * sizeof(float), what);
    carve(tensors, GPT2_PARAMS, NUM_PARAM_TENSORS, memory, &model->config, 0, 0);
    return memory;
}

static void model_build(Model *model, Config cfg) {
    memset(model, 0, sizeof *model);
    model->config = cfg;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++)
        model->param_sizes[i] = (size_t)tensor_count(&GPT2_PARAMS[i], &cfg, 0, 0);
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
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        const TensorSpec *spec = &GPT2_PARAMS[i];
        size_t n = model->param_sizes[i];
        // the padded rows V..Vp-1 of a (Vp, ...) tensor are not drawn: they stay zero
        size_t live = spec->shape[0] == D_Vp ? n / cfg->Vp * cfg->V : n;
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
    size_t acts = (size_t)table_count(GPT2_ACTS, NUM_ACT_TENSORS, cfg, B, T);
    model->acts_memory = alloc_check(dev_alloc(acts), who, bytes, "activations");
    carve(&model->acts, GPT2_ACTS, NUM_ACT_TENSORS, model->acts_memory, cfg, B, T);
    size_t grad_acts = (size_t)table_count(GPT2_GRAD_ACTS, NUM_GRAD_ACT_TENSORS, cfg, B, T);
    model->grad_acts_memory = alloc_check(dev_alloc(grad_acts), who, bytes, "activations");
    carve(&model->grad_acts, GPT2_GRAD_ACTS, NUM_GRAD_ACT_TENSORS, model->grad_acts_memory, cfg,
          B, T);

    size_t BT = (size_t)B * T;
    model->inputs = alloc_check(dev_alloc_int(BT), who, bytes, "activations");
    model->targets = alloc_check(dev_alloc_int(BT), who, bytes, "activations");
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
    for (int i = 0; i < NUM_ACT_TENSORS;) {
        int per_layer = GPT2_ACTS[i].shape[0] == D_L, end = i + 1;
        while (per_layer && end < NUM_ACT_TENSORS && GPT2_ACTS[end].shape[0] == D_L) end++;
        for (int l = 0; l < (per_layer ? cfg->L : 1); l++)
            for (int k = i; k < end; k++) {
                size_t n;
                const float *x = tensor_slice(&model->acts, &GPT2_ACTS[k], cfg, model->B,
                                              model->T, l, &n);
                check_finite(GPT2_ACTS[k].kernel, per_layer ? l : -1, GPT2_ACTS[k].name, x, n);
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

// At the end of a stage of the backward pass (layer: the block's, or -1).
static void detect_anomaly_backward(const Model *model, BackwardStage stage, int layer) {
    if (!model->detect_anomaly) return;
    for (int i = 0; i < NUM_BACKWARD_OUTPUTS; i++) {
        const BackwardOutput *out = &GPT2_BACKWARD[i];
        if (out->stage != stage) continue;
        const void *tensors; // the struct that holds the tensor, and the first row of its table
        const TensorSpec *spec;
        switch (out->holder) {
        case IN_ACTS: tensors = &model->acts; spec = GPT2_ACTS; break;
        case IN_GRAD_ACTS: tensors = &model->grad_acts; spec = GPT2_GRAD_ACTS; break;
        default: tensors = &model->grads; spec = GPT2_PARAMS; break;
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
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        const char *name = GPT2_PARAMS[i].name;
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

// The forward pass. inputs, targets (B,T) are host arrays; a target < 0 means "no target here".
// Afterwards model->host_logprobs (B,T) holds log p(target) at every position.
static void model_forward(Model *model, const int *inputs, const int *targets, int B, int T) {
    const Config *cfg = &model->config;
    if (T > cfg->maxT) die("sequence length %d exceeds the model's context %d", T, cfg->maxT);
    if (B > model->act_B || T > model->act_T)
        model_alloc_activations(model, B > model->act_B ? B : model->act_B,
                                T > model->act_T ? T : model->act_T);
    int L = cfg->L, C = cfg->C, NH = cfg->NH, H = cfg->hidden, BT = B * T;
    for (int i = 0; i < BT; i++)
        if (inputs[i] < 0 || inputs[i] >= cfg->V || targets[i] >= cfg->V)
            die("token id %d at position %d is outside the vocabulary of %d",
                inputs[i] < 0 || inputs[i] >= cfg->V ? inputs[i] : targets[i], i, cfg->V);
    dev_to_device(model->inputs, inputs, BT * sizeof(int));
    dev_to_device(model->targets, targets, BT * sizeof(int));
    model->B = B;
    model->T = T;

    ParamTensors p = model->params;
    ActTensors a = model->acts;
    float eps = cfg->norm_eps;
    encoder_forward(a.encoded, model->inputs, p.wte, p.wpe, B, T, C);
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
        attention_forward(atty, att, qkv, B, T, C, NH);
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
    detect_anomaly_forward(model);
    dev_to_host(model->host_logprobs, a.logprobs, BT * sizeof(float));
}

// The backward pass of the loss Σ_i coefs[i] · (−logprob_i), for the batch of the last forward.
// coefs (B,T) is a host array. Gradients are overwritten (not accumulated across calls).
static void model_backward(Model *model, const float *coefs) {
    const Config *cfg = &model->config;
    int B = model->B, T = model->T, BT = B * T;
    int L = cfg->L, C = cfg->C, NH = cfg->NH, H = cfg->hidden;
    if (!model->grads_memory)
        model->grads_memory = model_alloc_params(model, &model->grads, "gradients");
    dev_zero(model->grads_memory, model->num_parameters);
    dev_to_device(model->coefs, coefs, BT * sizeof(float));

    ParamTensors p = model->params, g = model->grads;
    ActTensors a = model->acts;
    GradActTensors d = model->grad_acts;
    size_t btc_size = (size_t)BT * C, bth_size = (size_t)BT * H;

    // classifier and final LayerNorm
    classifier_backward(a.logits, a.lse, model->targets, model->coefs, BT, cfg->V, cfg->Vp);
    dev_zero(d.residual, btc_size);
    dev_zero(d.ln, btc_size);
    matmul_backward(d.ln, g.wte, NULL, a.logits, a.lnf, p.wte, BT, C, cfg->Vp);
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
                           B, T, C, NH);
        dev_zero(d.ln, btc_size);
        matmul_backward(d.ln, dqkvw, dqkvb, d.qkv, a.ln1 + btc, p.qkvw + 3 * c * C, BT, C, 3 * C);
        layernorm_backward(d.residual, g.ln1w + c, g.ln1b + c, d.ln, residual, p.ln1w + c,
                           a.ln1_mean + l * BT, a.ln1_rstd + l * BT, BT, C);
        detect_anomaly_backward(model, STAGE_ATTENTION, l);
    }
    encoder_backward(g.wte, g.wpe, d.residual, model->inputs, B, T, C);
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
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) { // the weight decay differs between tensors
        size_t n = model->param_sizes[i];
        float wd = GPT2_PARAMS[i].decay ? opt->weight_decay : 0.0f;
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
// A model file is llm.c's (FORMATS.md): a 256 × int32 header — magic 20240326, version 3
// (float32), maxT, V, L, NH, C, Vp — then the 16 parameter tensors in the order of
// ParamTensors. Beside it, PATH.state holds what a run needs to resume exactly:
//   header 256 × int32: [0] magic 20240527, [1] version 1, [2] step (steps done, skipped ones
//     included), [3..4] the random generator's state (uint64), [5..6] number of parameters
//     (uint64), [7..8] hash of the parameters it belongs with (uint64), [9] B, [10] T,
//     [11] shuffle, [12..13] seed (uint64), [14] best validation loss so far (float32 bits),
//     [15] steps skipped for a non-finite loss or gradient (section 4), [16] how many of the
//     last steps in a row were skipped; the rest zero
//   then the AdamW moments m and v, each num_parameters float32.
// The data position is the step: batch i of a run is a function of i (lib/tokens.h).
// =============================================================================================
#define MODEL_MAGIC 20240326
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
    header[0] = MODEL_MAGIC;
    header[1] = MODEL_VERSION_FP32;
    header[2] = cfg->maxT;
    header[3] = cfg->V;
    header[4] = cfg->L;
    header[5] = cfg->NH;
    header[6] = cfg->C;
    header[7] = cfg->Vp;
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
    if (header[0] != MODEL_MAGIC) {
        snprintf(err, errlen, "%s: bad magic %d (expected %d): not an llm.c model checkpoint",
                 path, header[0], MODEL_MAGIC);
        return -1;
    }
    if (header[1] == MODEL_VERSION_BF16) {
        snprintf(err, errlen, "%s: version 5 (bfloat16 weights) is not supported; export float32 "
                 "(version 3)", path);
        return -1;
    }
    if (header[1] != MODEL_VERSION_FP32) {
        snprintf(err, errlen, "%s: unsupported version %d (expected 3, float32)", path, header[1]);
        return -1;
    }
    Config cfg = {0};
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

// Reads a checkpoint, checking the header and the file size before allocating anything.
static void model_load(Model *model, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open model %s: %s", path, strerror(errno));
    int32_t header[HEADER_INTS];
    size_t got = fread(header, 1, sizeof header, f);
    if (fseek(f, 0, SEEK_END) != 0) die("%s: cannot seek", path);
    long actual = ftell(f);
    if (actual < 0) die("%s: cannot tell its size", path);
    Config cfg;
    char err[512];
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


// =============================================================================================
// 4. Training
// `./sirt train`: plain language modelling on token shards. Each step is forward → loss →
// backward → AdamW; the loss is Σ_t c_t · (−log p_t) with every c_t = 1/(B·T), the mean token
// NLL. Later objectives reuse this loop's pieces and only change the coefficients.
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

// Parses "L,NH,C,maxT,V".
static Config parse_config(const char *text) {
    Config cfg = {0};
    if (sscanf(text, "%d,%d,%d,%d,%d", &cfg.L, &cfg.NH, &cfg.C, &cfg.maxT, &cfg.V) != 5)
        die("--config wants L,NH,C,maxT,V (five integers), got '%s'", text);
    const char *problem = config_problem(&cfg);
    if (problem) die("--config %s: %s", text, problem);
    config_finish(&cfg);
    return cfg;
}

// A one-line progress report, redrawn in place on a terminal and printed at intervals otherwise.
static void show_progress(int step, int steps, float loss, double tok_per_s, double eta_s,
                          int final) {
    int tty = isatty(fileno(stdout));
    int every = steps >= 20 ? steps / 20 : 1;
    if (!tty && !final && step % every != 0 && step != 1) return;
    printf("%sstep %d/%d | loss %.4f | %.0f tok/s | ETA %.0fs%s", tty ? "\r" : "", step, steps,
           loss, tok_per_s, eta_s, tty && !final ? "   " : "\n");
    fflush(stdout);
}

// Opens the metrics log. On resume, lines for steps after the checkpoint (written before a
// crash) are dropped, so the log always matches the weights it sits beside.
static FILE *open_metrics_log(const char *path, int resume_step) {
    if (!path) return NULL;
    if (resume_step > 0) {
        size_t bytes;
        char *old = (char *)read_whole_file(path, &bytes);
        SafeFile sf;
        safe_open(&sf, path);
        for (size_t start = 0; old && start < bytes;) {
            char *nl = memchr(old + start, '\n', bytes - start);
            size_t end = nl ? (size_t)(nl - old) + 1 : bytes;
            static const char prefix[] = "{\"step\": ";
            size_t n = sizeof prefix - 1;
            long step = end - start > n && !memcmp(old + start, prefix, n)
                            ? strtol(old + start + n, NULL, 10) : -1;
            if (step >= 1 && step <= resume_step && nl) safe_write(&sf, old + start, end - start);
            start = end;
        }
        safe_commit(&sf);
        free(old);
    }
    FILE *f = fopen(path, resume_step > 0 ? "a" : "w");
    if (!f) die("cannot write log %s: %s", path, strerror(errno));
    return f;
}

// A number for a JSON line: JSON has no NaN or infinity, so those are written as null.
static const char *json_number(char buf[32], double value) {
    if (!isfinite(value)) return "null";
    snprintf(buf, 32, "%.7g", value);
    return buf;
}

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

static StepResult train_step(Model *model, const int *inputs, const int *targets,
                             const float *coefs, int B, int T, OptimizerSettings opt,
                             const Schedule *sched, const TrainState *st) {
    StepResult r;
    model_forward(model, inputs, targets, B, T);
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

// Timing for the progress line: tokens/s of the last step and the ETA of the run.
typedef struct {
    double run_start, step_start;
    int first_step, total_steps;
} Progress;

static Progress progress_start(int first_step, int total_steps) {
    double now = now_seconds();
    return (Progress){now, now, first_step, total_steps};
}

// Leaves time spent outside training (validation) out of the next step's tokens/s.
static void progress_pause(Progress *p, double seconds) { p->step_start += seconds; }

// Call after step `step` (1-based) is done; returns tokens/s of that step and sets *eta.
static double progress_step(Progress *p, int step, size_t tokens, double *eta) {
    double now = now_seconds(), tok_per_s = tokens / (now - p->step_start);
    *eta = (now - p->run_start) / (step - p->first_step) * (p->total_steps - step);
    p->step_start = now;
    return tok_per_s;
}

// The flags every trainer shares (train, sft, and later dpo).
typedef struct {
    const char *init, *config, *out, *log;
    int B, T, steps, warmup, resume, save_every, stop_after;
    int max_bad_steps;  // stop after this many skipped (non-finite) steps in a row
    int detect_anomaly; // check every kernel's output (Model.detect_anomaly)
    float lr, lr_floor;
    int cosine;
    uint64_t seed;
    OptimizerSettings opt;
} TrainArgs;

static const char *TRAIN_FLAGS_HELP =
    "  (--init model.bin | --config L,NH,C,maxT,V) --batch B --seq T --lr 1e-3\n"
    "  [--wd 0.0] [--clip 1.0] [--schedule cosine|constant] [--warmup 0] [--lr-floor 0.1]\n"
    "  [--seed 1337] [--out model.bin] [--resume] [--log metrics.jsonl] [--save-every N]\n"
    "  [--stop-after K] [--max-bad-steps 5] [--detect-anomaly] [--threads N]\n";

static TrainArgs train_args_defaults(void) {
    TrainArgs a = {0};
    a.out = "model.bin";
    a.seed = 1337;
    a.cosine = 1;
    a.lr = -1.0f; // required
    a.lr_floor = 0.1f;
    a.max_bad_steps = 5;
    a.opt = (OptimizerSettings){.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                                .weight_decay = 0.0f, .clip = 1.0f};
    return a;
}

// Consumes argv[*i] (and its value) when it is one of the shared flags; returns 0 otherwise.
static int parse_train_flag(TrainArgs *a, int argc, char **argv, int *i) {
    const char *f = argv[*i];
    if (!strcmp(f, "--init")) a->init = flag_value(argc, argv, i);
    else if (!strcmp(f, "--config")) a->config = flag_value(argc, argv, i);
    else if (!strcmp(f, "--out")) a->out = flag_value(argc, argv, i);
    else if (!strcmp(f, "--log")) a->log = flag_value(argc, argv, i);
    else if (!strcmp(f, "--batch")) a->B = parse_long(f, flag_value(argc, argv, i), 1, 1 << 20);
    else if (!strcmp(f, "--seq")) a->T = parse_long(f, flag_value(argc, argv, i), 1, 1 << 20);
    else if (!strcmp(f, "--steps")) a->steps = parse_long(f, flag_value(argc, argv, i), 1, 1 << 30);
    else if (!strcmp(f, "--warmup")) a->warmup = parse_long(f, flag_value(argc, argv, i), 0, 1 << 30);
    else if (!strcmp(f, "--save-every")) a->save_every = parse_long(f, flag_value(argc, argv, i), 0, 1 << 30);
    else if (!strcmp(f, "--stop-after")) a->stop_after = parse_long(f, flag_value(argc, argv, i), 0, 1 << 30);
    else if (!strcmp(f, "--seed")) a->seed = parse_long(f, flag_value(argc, argv, i), 0, 0x7fffffffL);
    else if (!strcmp(f, "--lr")) a->lr = parse_float(f, flag_value(argc, argv, i));
    else if (!strcmp(f, "--lr-floor")) a->lr_floor = parse_float(f, flag_value(argc, argv, i));
    else if (!strcmp(f, "--wd")) a->opt.weight_decay = parse_float(f, flag_value(argc, argv, i));
    else if (!strcmp(f, "--clip")) a->opt.clip = parse_float(f, flag_value(argc, argv, i));
    else if (!strcmp(f, "--max-bad-steps")) a->max_bad_steps = parse_long(f, flag_value(argc, argv, i), 1, 1 << 30);
    else if (!strcmp(f, "--detect-anomaly")) a->detect_anomaly = 1;
    else if (!strcmp(f, "--resume")) a->resume = 1;
    else if (!strcmp(f, "--schedule")) {
        const char *s = flag_value(argc, argv, i);
        if (!strcmp(s, "cosine")) a->cosine = 1;
        else if (!strcmp(s, "constant")) a->cosine = 0;
        else die("--schedule must be cosine or constant, got '%s'", s);
    } else if (!strcmp(f, "--threads")) {
        int n = parse_long(f, flag_value(argc, argv, i), 1, 1024);
#ifdef _OPENMP
        omp_set_num_threads(n);
#else
        (void)n;
#endif
    } else return 0;
    return 1;
}

static void check_train_args(const TrainArgs *a, const char *command) {
    if (!a->B || !a->T) die("%s: --batch and --seq are required", command);
    if (a->lr < 0) die("%s: --lr is required", command);
    if (!a->init && !a->config && !a->resume)
        die("%s: give --init model.bin or --config L,NH,C,maxT,V", command);
    if (a->init && a->config) die("%s: give either --init or --config, not both", command);
    if (a->lr_floor < 0 || a->lr_floor > 1) die("--lr-floor must be in [0, 1]");
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
            model_build(model, parse_config(args->config));
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
    printf("model: L=%d NH=%d C=%d maxT=%d V=%d (Vp=%d), %zu parameters, %d threads\n", cfg->L,
           cfg->NH, cfg->C, cfg->maxT, cfg->V, cfg->Vp, model->num_parameters, num_threads());
}

// What a trainer's loop works with: the schedule, the metrics log, the timing, and host buffers
// for one batch of at most rows x T tokens.
typedef struct {
    Schedule sched;
    FILE *log;
    Progress progress;
    int *inputs, *targets; // (rows,T)
    float *coefs;          // (rows,T)
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
    size_t BT = (size_t)rows * args->T;
    run->inputs = xmalloc(BT * sizeof(int));
    run->targets = xmalloc(BT * sizeof(int));
    run->coefs = xmalloc(BT * sizeof(float));
    run->progress = progress_start(st->step, args->steps);
    return 1;
}

// One optimizer step on the batch in run's buffers (B rows of T tokens).
static StepResult run_step(Model *model, TrainState *st, const TrainArgs *args, Run *run, int T) {
    StepResult r = train_step(model, run->inputs, run->targets, run->coefs, args->B, T,
                              args->opt, &run->sched, st);
    state_count_step(st, &r);
    return r;
}

// After each step: writes the log line, shows progress, saves every --save-every steps, and
// returns 1 when --stop-after says this run ends here. extra_json, when not NULL, is appended
// to the log line (e.g. `, "val_loss": 1.23`). A skipped step (see backward_and_update) gets
// `"skipped": true` in its line and a warning on stderr; after --max-bad-steps of them in a
// row the run saves its checkpoint (the weights are those before the skipped steps) and stops.
static int run_after_step(const Model *model, const TrainState *st, const TrainArgs *args,
                          Run *run, const StepResult *r, size_t tokens, const char *extra_json) {
    double eta, tok_per_s = progress_step(&run->progress, st->step, tokens, &eta);
    if (run->log) {
        char loss[32], norm[32];
        fprintf(run->log, "{\"step\": %d, \"loss\": %s, \"lr\": %.7g, \"grad_norm\": %s, "
                          "\"tok_per_s\": %.1f%s%s}\n", st->step, json_number(loss, r->loss),
                r->lr, json_number(norm, r->grad_norm), tok_per_s,
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
    free(run->inputs);
    free(run->targets);
    free(run->coefs);
}

// ---------------------------------------------------------------------------------------------
// `./sirt train`: language modelling on token shards.
int cmd_train(int argc, char **argv) {
    TrainArgs args = train_args_defaults();
    const char *data = NULL;
    int shuffle = 0;
    for (int i = 0; i < argc; i++) {
        if (parse_train_flag(&args, argc, argv, &i)) continue;
        if (!strcmp(argv[i], "--data")) data = flag_value(argc, argv, &i);
        else if (!strcmp(argv[i], "--shuffle")) shuffle = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: ./sirt train --data shard.bin[,more.bin] --steps N [--shuffle]\n%s",
                   TRAIN_FLAGS_HELP);
            return 0;
        } else die("train: unknown flag '%s' (see ./sirt train --help)", argv[i]);
    }
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
        size_t BT = (size_t)args.B * args.T;
        for (size_t i = 0; i < BT; i++) run.coefs[i] = 1.0f / (float)BT; // the mean over B·T
        while (st.step < args.steps) {
            loader_batch(&loader, (size_t)st.step, run.inputs, run.targets);
            StepResult r = run_step(&model, &st, &args, &run, args.T);
            if (run_after_step(&model, &st, &args, &run, &r, BT, NULL)) break;
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
// teacher's demonstrations. One example per row of the batch, padded to the longest row; the
// loss is the mean NLL of the completion tokens and the end-of-text token after them:
//   c_t = 1/N on completion targets (N = completion tokens in the batch), 0 on prompt and padding.
// Rows are independent sequences, so examples never attend to each other.
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

// Tokenizes prompt and completion separately (as TRL does), appends end-of-text, and truncates
// to `budget` tokens. Returns 1 when the example had to be cut.
static int tokenize_example(Tokenizer *tok, const char *prompt, const char *completion,
                            int budget, TokenSequence *out) {
    TokIds p = {0}, c = {0};
    if (tok_encode_ordinary(tok, prompt, strlen(prompt), &p) != 0 ||
        tok_encode_ordinary(tok, completion, strlen(completion), &c) != 0 ||
        tok_ids_push(&c, tok_eot(tok)) != 0)
        die("out of memory tokenizing an example");
    int keep_p, keep_c;
    truncation_split((int)p.len, (int)c.len, budget, &keep_p, &keep_c);
    out->ids = xmalloc((size_t)(keep_p + keep_c) * sizeof(int));
    if (keep_p) memcpy(out->ids, p.data + (p.len - keep_p), keep_p * sizeof(int));
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

// Fills a batch with sequences seqs[order[0..rows)] (rows <= B; missing rows are padding) and
// returns its length T (the longest row minus one). inputs, targets, coefs are (B, T) with the
// row stride T. Padding reads the pad token and has target -1 and coefficient 0. The completion
// coefficients are 1/N, N = completion targets in the batch; returns N in *num_targets.
static int sft_fill_batch(const SftData *data, const int *order, int rows, int B, int pad,
                          int *inputs, int *targets, float *coefs, int *num_targets) {
    int T = 1;
    for (int r = 0; r < rows; r++) {
        int len = data->seqs[order[r]].length - 1;
        if (len > T) T = len;
    }
    int n = 0;
    for (int r = 0; r < B; r++) {
        const TokenSequence *seq = r < rows ? &data->seqs[order[r]] : NULL;
        for (int t = 0; t < T; t++) {
            int i = r * T + t, has_target = seq && t + 1 < seq->length;
            inputs[i] = seq && t < seq->length ? seq->ids[t] : pad;
            targets[i] = has_target ? seq->ids[t + 1] : -1;
            // the target ids[t+1] belongs to the completion when t + 1 >= prompt_length
            coefs[i] = has_target && t + 1 >= seq->prompt_length ? 1.0f : 0.0f;
            n += coefs[i] != 0.0f;
        }
    }
    for (int i = 0; i < B * T; i++) coefs[i] /= n > 0 ? n : 1;
    *num_targets = n;
    return T;
}

// The visiting order of epoch `epoch`: a permutation drawn from (seed, epoch).
static void epoch_order(int *order, int count, uint64_t seed, int epoch) {
    Rng rng = rng_seeded(seed * 1000003u + 0x5f7u + (uint64_t)epoch);
    for (int i = 0; i < count; i++) order[i] = i;
    for (int i = count - 1; i > 0; i--) {
        int j = (int)(rng_u32(&rng) % (uint32_t)(i + 1));
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

// --group-by-length, as in Hugging Face's Trainer: the epoch's shuffled order is cut into
// megabatches of GROUP_BATCHES batches and each is sorted by length, longest first (ties keep
// their shuffled order). A batch is padded to its longest row, so rows of similar length waste
// less compute on padding, while which examples meet in a megabatch is still random.
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

// Mean completion NLL over a whole data set (forward passes only).
static float sft_validation_loss(Model *model, const SftData *data, int B, int pad) {
    int *order = xmalloc((size_t)data->count * sizeof(int));
    for (int i = 0; i < data->count; i++) order[i] = i;
    size_t cap = (size_t)B * model->act_T;
    int *inputs = xmalloc(cap * sizeof(int)), *targets = xmalloc(cap * sizeof(int));
    float *coefs = xmalloc(cap * sizeof(float));
    double total = 0.0;
    long tokens = 0;
    for (int first = 0; first < data->count; first += B) {
        int rows = data->count - first < B ? data->count - first : B, n;
        int T = sft_fill_batch(data, order + first, rows, B, pad, inputs, targets, coefs, &n);
        model_forward(model, inputs, targets, B, T);
        total += (double)weighted_nll(model, coefs, B * T) * n; // coefs are 1/n: undo the mean
        tokens += n;
    }
    free(order);
    free(inputs);
    free(targets);
    free(coefs);
    return tokens ? (float)(total / tokens) : 0.0f;
}

// "sft.bin" -> "sft.best.bin": where the lowest-validation-loss checkpoint is kept.
static void best_path(char *out, size_t size, const char *path) {
    size_t n = strlen(path);
    int has_bin = n > 4 && !strcmp(path + n - 4, ".bin");
    if ((size_t)snprintf(out, size, "%.*s.best%s", (int)(has_bin ? n - 4 : n), path,
                         has_bin ? ".bin" : "") >= size)
        die("path too long: %s", path);
}

static TemplateKind parse_template(const char *name) {
    if (!strcmp(name, "cot")) return TEMPLATE_COT;
    if (!strcmp(name, "plain")) return TEMPLATE_PLAIN;
    if (!strcmp(name, "none")) return TEMPLATE_NONE;
    die("--template must be cot, plain or none, got '%s'", name);
}


int cmd_sft(int argc, char **argv) {
    TrainArgs args = train_args_defaults();
    args.out = "sft.bin";
    const char *tokenizer = NULL, *data_path = NULL, *valid_path = NULL;
    int epochs = 1, eval_every = 0, group_lengths = 0;
    TemplateOptions template = {TEMPLATE_COT, 0};
    for (int i = 0; i < argc; i++) {
        if (parse_train_flag(&args, argc, argv, &i)) continue;
        const char *f = argv[i];
        if (!strcmp(f, "--tokenizer")) tokenizer = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--data")) data_path = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--valid")) valid_path = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--epochs")) epochs = parse_long(f, flag_value(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(f, "--eval-every")) eval_every = parse_long(f, flag_value(argc, argv, &i), 0, 1 << 30);
        else if (!strcmp(f, "--template")) template.kind = parse_template(flag_value(argc, argv, &i));
        else if (!strcmp(f, "--strip-calc")) template.strip_calculator_notes = 1;
        else if (!strcmp(f, "--group-by-length")) group_lengths = 1;
        else if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: ./sirt sft --tokenizer PATH --data train.jsonl [--valid valid.jsonl]\n"
                   "  [--epochs 1] [--steps N] [--eval-every N] [--template cot|plain|none]\n"
                   "  [--strip-calc] [--group-by-length]\n%s", TRAIN_FLAGS_HELP);
            return 0;
        } else die("sft: unknown flag '%s' (see ./sirt sft --help)", f);
    }
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
    Run run;
    if (run_open(&run, &model, &args, &st, args.B)) {
        int *order = xmalloc((size_t)train.count * sizeof(int)), order_epoch = -1;
        char best[4200];
        best_path(best, sizeof best, args.out);
        while (st.step < args.steps) {
            int epoch = st.step / steps_per_epoch, first = st.step % steps_per_epoch * args.B;
            if (epoch != order_epoch) {
                epoch_order(order, train.count, args.seed, order_epoch = epoch);
                if (group_lengths) group_by_length(order, train.count, args.B, &train);
            }
            int rows = train.count - first < args.B ? train.count - first : args.B, n;
            int T = sft_fill_batch(&train, order + first, rows, args.B, pad, run.inputs,
                                   run.targets, run.coefs, &n);
            StepResult r = run_step(&model, &st, &args, &run, T);
            char extra[96] = "";
            if (valid.count && (st.step % eval_every == 0 || st.step == args.steps)) {
                double t0 = now_seconds();
                float val = sft_validation_loss(&model, &valid, args.B, pad);
                progress_pause(&run.progress, now_seconds() - t0);
                char number[32];
                snprintf(extra, sizeof extra, ", \"val_loss\": %s", json_number(number, val));
                if (!isatty(fileno(stdout)) || st.step == args.steps)
                    printf("step %d: validation loss %.4f%s\n", st.step, val,
                           val < st.best_valid_loss ? " (best so far: saved)" : "");
                if (val < st.best_valid_loss) {
                    st.best_valid_loss = val;
                    model_save(&model, best);
                }
            }
            if (run_after_step(&model, &st, &args, &run, &r, (size_t)args.B * T,
                               extra[0] ? extra : NULL))
                break;
        }
        run_close(&model, &st, &args, &run);
        if (valid.count) printf("best validation loss %.4f: %s\n", st.best_valid_loss, best);
        free(order);
    }
    sft_data_free(&train);
    if (valid_path) sft_data_free(&valid);
    tok_free(tok);
    model_free(&model);
    return 0;
}

// =============================================================================================
// 6. Generation: KV-cache decoding and the sampler
// Phase 2 samples the student's own answers by the thousand. A batch of prompts is first run
// through the ordinary forward pass (the "prefill"), which leaves every position's keys and
// values in a cache; after that each step feeds one new token per live sequence and reads the
// past from the cache, so a step costs one token's worth of work instead of a whole sequence.
// A finished sequence (end-of-text, a stop string, or --max-new tokens) drops out of the batch.
// Sequence i samples with its own generator, seeded from (seed, i): its text does not depend
// on the batch size, the other prompts, or the number of threads.
// =============================================================================================

typedef struct {
    int slots, Tc;           // sequences held, positions per sequence
    float *memory;           // one allocation: the caches, then the scratch activations
    float *kcache, *vcache;  // (L, slots, Tc, C) each
    float *x, *ln, *mean, *rstd, *qkv, *atty, *proj, *fch, *fch_gelu, *logits; // (slots, .)
    int *tokens, *slot, *pos; // the live sequences of a step, on the device (slots)
    float *host_logits;       // (slots, Vp)
} KVCache;

static void kv_cache_init(KVCache *kv, const Config *cfg, int slots, int Tc) {
    // sizes in double, checked against the device's memory before they are used (as activations)
    double S = slots, C = cfg->C, H = cfg->hidden, cache = (double)cfg->L * S * Tc * C;
    double sizes[12] = {cache, cache, S * C, S * C, S, S, S * 3 * C, S * C, S * C, S * H, S * H,
                        S * cfg->Vp};
    double total = 0;
    for (int i = 0; i < 12; i++) total += sizes[i];
    char who[64];
    snprintf(who, sizeof who, "decoding %d sequences of up to %d tokens", slots, Tc);
    double bytes = total * sizeof(float);
    if (!fits_memory(bytes))
        die("%s needs %.1f GiB of key/value cache; " DEVICE_HAS " %.1f GiB", who, bytes / GIB,
            device_gib());
    kv->slots = slots;
    kv->Tc = Tc;
    kv->memory = alloc_check(dev_alloc((size_t)total), who, bytes, "key/value cache");
    float **ptrs[12] = {&kv->kcache, &kv->vcache, &kv->x, &kv->ln, &kv->mean, &kv->rstd,
                        &kv->qkv, &kv->atty, &kv->proj, &kv->fch, &kv->fch_gelu, &kv->logits};
    float *next = kv->memory;
    for (int i = 0; i < 12; i++) {
        *ptrs[i] = next;
        next += (size_t)sizes[i];
    }
    kv->tokens = alloc_check(dev_alloc_int((size_t)slots), who, bytes, "key/value cache");
    kv->slot = alloc_check(dev_alloc_int((size_t)slots), who, bytes, "key/value cache");
    kv->pos = alloc_check(dev_alloc_int((size_t)slots), who, bytes, "key/value cache");
    kv->host_logits = xmalloc((size_t)slots * cfg->Vp * sizeof(float));
}

static void kv_cache_free(KVCache *kv) {
    dev_free(kv->memory);
    dev_free(kv->tokens);
    dev_free(kv->slot);
    dev_free(kv->pos);
    free(kv->host_logits);
}

// Prefill: B prompts (their ids and lengths) into cache slots slots[0..B). Runs the full
// forward over the right-padded batch (padding cannot reach earlier positions: attention is
// causal) and stores every layer's keys and values. Row b of kv->host_logits then holds the
// logits after prompt b's last token.
static void decode_prefill(Model *model, KVCache *kv, int *const *prompts, const int *lengths,
                           const int *slots, int B) {
    const Config *cfg = &model->config;
    int T = 1;
    for (int b = 0; b < B; b++) T = lengths[b] > T ? lengths[b] : T;
    if (T > kv->Tc) die("a prompt of %d tokens does not fit the cache of %d", T, kv->Tc);
    int *inputs = xcalloc((size_t)B * T, sizeof(int)), *targets = xcalloc((size_t)B * T, sizeof(int));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = t < lengths[b] ? prompts[b][t] : 0;
            targets[b * T + t] = -1;
        }
    model_forward(model, inputs, targets, B, T);
    dev_to_device(kv->slot, slots, B * sizeof(int));
    size_t layer_cache = (size_t)kv->slots * kv->Tc * cfg->C;
    for (int l = 0; l < cfg->L; l++)
        kv_cache_store(kv->kcache + l * layer_cache, kv->vcache + l * layer_cache,
                       model->acts.qkv + (size_t)l * B * T * 3 * cfg->C, kv->slot, B, T, kv->Tc,
                       cfg->C);
    for (int b = 0; b < B; b++)
        dev_to_host(kv->host_logits + (size_t)b * cfg->Vp,
                    model->acts.logits + ((size_t)b * T + lengths[b] - 1) * cfg->Vp,
                    cfg->Vp * sizeof(float));
    free(inputs);
    free(targets);
}

// One decoding step: token tokens[n] at position pos[n] of cache slot slot[n], for n < N.
// Afterwards row n of kv->host_logits holds the logits for the token after it.
static void decode_step(Model *model, KVCache *kv, const int *tokens, const int *slot,
                        const int *pos, int N) {
    const Config *cfg = &model->config;
    int C = cfg->C, H = cfg->hidden;
    ParamTensors p = model->params;
    dev_to_device(kv->tokens, tokens, N * sizeof(int));
    dev_to_device(kv->slot, slot, N * sizeof(int));
    dev_to_device(kv->pos, pos, N * sizeof(int));
    size_t layer_cache = (size_t)kv->slots * kv->Tc * C, nc = (size_t)N * C;
    encoder_forward_at(kv->x, kv->tokens, kv->pos, p.wte, p.wpe, N, C);
    for (int l = 0; l < cfg->L; l++) {
        size_t c = (size_t)l * C;
        layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, p.ln1w + c, p.ln1b + c, N, C,
                          cfg->norm_eps);
        matmul_forward(kv->qkv, kv->ln, p.qkvw + 3 * c * C, p.qkvb + 3 * c, N, C, 3 * C);
        attention_decode(kv->atty, kv->kcache + l * layer_cache, kv->vcache + l * layer_cache,
                         kv->qkv, kv->slot, kv->pos, N, kv->Tc, C, cfg->NH);
        matmul_forward(kv->proj, kv->atty, p.attprojw + c * C, p.attprojb + c, N, C, C);
        residual_forward(kv->x, kv->x, kv->proj, nc);
        layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, p.ln2w + c, p.ln2b + c, N, C,
                          cfg->norm_eps);
        matmul_forward(kv->fch, kv->ln, p.fcw + (size_t)l * H * C, p.fcb + (size_t)l * H, N, C, H);
        gelu_forward(kv->fch_gelu, kv->fch, (size_t)N * H);
        matmul_forward(kv->proj, kv->fch_gelu, p.fcprojw + (size_t)l * C * H, p.fcprojb + c, N,
                       H, C);
        residual_forward(kv->x, kv->x, kv->proj, nc);
    }
    layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, p.lnfw, p.lnfb, N, C, cfg->norm_eps);
    matmul_forward(kv->logits, kv->ln, p.wte, NULL, N, C, cfg->Vp);
    dev_to_host(kv->host_logits, kv->logits, (size_t)N * cfg->Vp * sizeof(float));
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
    int produced;  // new tokens so far
    Rng rng;
    TokBytes text; // the completion so far
} LiveSequence;

// Appends token `id`; returns 1 when the sequence is finished.
static int sequence_push(LiveSequence *seq, Tokenizer *tok, int id, const GenerateSettings *g,
                         int Tc) {
    seq->produced++;
    if (id == tok_eot(tok)) return 1;
    size_t before = seq->text.len, len;
    const unsigned char *bytes = tok_token_bytes(tok, id, &len);
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

static void generation_progress(long done, long total, long tokens, double start) {
    int tty = isatty(fileno(stdout));
    if (!tty && done != total && done % (total >= 10 ? total / 10 : 1)) return;
    double elapsed = now_seconds() - start;
    printf("%sgenerated %ld/%ld | %.0f tok/s | ETA %.0fs%s", tty ? "\r" : "", done, total,
           tokens / elapsed, elapsed / done * (total - done), tty && done < total ? "   " : "\n");
    fflush(stdout);
}

// Completes prompts[i] (token ids) for i < n; out[i] receives the completion text (malloc'd,
// NUL-terminated). Prompts longer than the context keep their last tokens. show_progress_line
// draws a progress line as sequences finish. Up to g->batch sequences are decoded together;
// when one finishes, the next prompt takes its cache slot at once (continuous batching). A
// sequence's text depends only on its prompt, its index and the seed: rows never mix, so the
// batch size and the order in which sequences finish change nothing.
static void generate(Model *model, Tokenizer *tok, const TokenSequence *prompts, long n,
                     const GenerateSettings *g, char **out, int show_progress_line) {
    const Config *cfg = &model->config;
    int longest = 1;
    for (long i = 0; i < n; i++) longest = prompts[i].length > longest ? prompts[i].length : longest;
    int Tc = longest + g->max_new < cfg->maxT ? longest + g->max_new : cfg->maxT;
    if (Tc < 2) die("the model's context (maxT=%d) leaves no room to generate", cfg->maxT);
    int slots = g->batch < n ? g->batch : (int)(n > 0 ? n : 1);
    KVCache kv;
    kv_cache_init(&kv, cfg, slots, Tc);
    LiveSequence *live = xcalloc(slots, sizeof(LiveSequence));
    int **ids = xmalloc(slots * sizeof(int *)), *lengths = xmalloc(slots * sizeof(int));
    int *slot_ids = xmalloc(slots * sizeof(int)), *tokens = xmalloc(slots * sizeof(int));
    int *slot = xmalloc(slots * sizeof(int)), *pos = xmalloc(slots * sizeof(int));
    Candidate *scratch = xmalloc((size_t)cfg->V * sizeof(Candidate));
    long done = 0, new_tokens = 0;
    double start = now_seconds();
    for (long first = 0; first < n; first += slots) { // one wave of up to `slots` prompts
        int B = n - first < slots ? (int)(n - first) : slots;
        for (int b = 0; b < B; b++) {
            const TokenSequence *p = &prompts[first + b];
            int keep = p->length < Tc - 1 ? p->length : Tc - 1; // room for one new token
            if (keep < 1) die("prompt %ld is empty: there is nothing to continue", first + b);
            ids[b] = p->ids + (p->length - keep);
            lengths[b] = keep;
            slot_ids[b] = b;
            live[b] = (LiveSequence){first + b, b, keep, 0, sequence_rng(g->seed, first + b), {0}};
        }
        decode_prefill(model, &kv, ids, lengths, slot_ids, B);
        int N = B; // live sequences, kept at the front of `live`
        for (int b = 0; b < B; b++) tokens[b] = sample_token(kv.host_logits + (size_t)b * cfg->Vp,
                                                             cfg->V, &g->sampler, &live[b].rng, scratch);
        for (;;) {
            // append the sampled tokens; finished sequences leave, the rest move up
            int kept = 0;
            for (int i = 0; i < N; i++) {
                LiveSequence *seq = &live[i];
                if (sequence_push(seq, tok, tokens[i], g, Tc)) {
                    if (!seq->text.data && tok_bytes_append(&seq->text, "", 0) != 0) die("out of memory");
                    out[seq->index] = seq->text.data;
                    done++;
                    new_tokens += seq->produced;
                    if (show_progress_line) generation_progress(done, n, new_tokens, start);
                    continue;
                }
                tokens[kept] = tokens[i];
                live[kept++] = *seq;
            }
            N = kept;
            if (N == 0) break;
            for (int i = 0; i < N; i++) {
                slot[i] = live[i].slot;
                pos[i] = live[i].pos++;
            }
            decode_step(model, &kv, tokens, slot, pos, N);
            for (int i = 0; i < N; i++)
                tokens[i] = sample_token(kv.host_logits + (size_t)i * cfg->Vp, cfg->V,
                                         &g->sampler, &live[i].rng, scratch);
        }
    }
    kv_cache_free(&kv);
    free(live);
    free(ids);
    free(lengths);
    free(slot_ids);
    free(tokens);
    free(slot);
    free(pos);
    free(scratch);
}

// =============================================================================================
// 7. Sampling and evaluation
// `./sirt sample` turns prompts into completions; `./sirt eval` scores a model on reasoning
// items: greedy accuracy with a 95% interval and, with K samples, maj@K and pass@K.
// Reasoning items go through the same prompt template as SFT.
// =============================================================================================

// Writes the fields of obj as the start of a JSON object: `{"k": v, ...` (no closing brace), so
// that a command can keep every input field and add its own.
static void json_write_fields(FILE *out, const JsonObject *obj) {
    fputc('{', out);
    for (int i = 0; i < obj->count; i++) {
        const JsonField *f = &obj->fields[i];
        if (i) fputs(", ", out);
        json_write_string(out, f->key, strlen(f->key));
        fputs(": ", out);
        if (f->type == JSON_STRING) json_write_string(out, f->text, f->len);
        else fwrite(f->text, 1, f->len, out); // numbers, literals, nested values: as written
    }
}

// The prompt of a JSONL item: "prompt" verbatim, or "question" through the template, or "text".
static char *prompt_of_item(const JsonlFile *f, int i, TemplateKind kind) {
    const JsonObject *obj = &f->objects[i];
    const JsonField *field;
    if ((field = json_get(obj, "prompt")) || (field = json_get(obj, "text"))) {
        if (field->type != JSON_STRING)
            die("%s:%d: \"%s\" must be a string", f->path, f->line_numbers[i], field->key);
        return json_strndup(field->text, field->len);
    }
    return template_prompt(kind, jsonl_string(f, i, "question"));
}

static TokenSequence tokenize_prompt(Tokenizer *tok, const char *prompt) {
    TokIds ids = {0};
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

// The flags of generation, shared by sample and eval.
static int parse_generate_flag(GenerateSettings *g, int argc, char **argv, int *i) {
    const char *f = argv[*i];
    if (!strcmp(f, "--temperature")) g->sampler.temperature = parse_float(f, flag_value(argc, argv, i));
    else if (!strcmp(f, "--top-k")) g->sampler.top_k = parse_long(f, flag_value(argc, argv, i), 0, 1 << 24);
    else if (!strcmp(f, "--top-p")) g->sampler.top_p = parse_float(f, flag_value(argc, argv, i));
    else if (!strcmp(f, "--max-new")) g->max_new = parse_long(f, flag_value(argc, argv, i), 1, 1 << 20);
    else if (!strcmp(f, "--seed")) g->seed = parse_long(f, flag_value(argc, argv, i), 0, 0x7fffffffL);
    else if (!strcmp(f, "--batch")) g->batch = parse_long(f, flag_value(argc, argv, i), 1, 1 << 16);
    else if (!strcmp(f, "--stop")) g->stop = flag_value(argc, argv, i);
    else if (!strcmp(f, "--threads")) {
        int n = parse_long(f, flag_value(argc, argv, i), 1, 1024);
#ifdef _OPENMP
        omp_set_num_threads(n);
#else
        (void)n;
#endif
    } else return 0;
    if (g->sampler.temperature < 0) die("--temperature must be >= 0");
    if (g->sampler.top_p <= 0 || g->sampler.top_p > 1) die("--top-p must be in (0, 1]");
    return 1;
}

static const GenerateSettings GENERATE_DEFAULTS = {{0.8f, 0, 1.0f}, 256, NULL, 1337, 64};

int cmd_sample(int argc, char **argv) {
    const char *model_path = NULL, *tokenizer = NULL, *prompt = NULL, *data = NULL, *out_path = NULL;
    int k = 1, template_given = 0;
    TemplateKind kind = TEMPLATE_COT;
    GenerateSettings g = GENERATE_DEFAULTS;
    for (int i = 0; i < argc; i++) {
        if (parse_generate_flag(&g, argc, argv, &i)) continue;
        const char *f = argv[i];
        if (!strcmp(f, "--model")) model_path = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--tokenizer")) tokenizer = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--prompt")) prompt = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--data")) data = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--out")) out_path = flag_value(argc, argv, &i);
        else if (!strcmp(f, "-n")) k = parse_long(f, flag_value(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(f, "--template")) {
            kind = parse_template(flag_value(argc, argv, &i));
            template_given = 1;
        } else if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: ./sirt sample --model M --tokenizer PATH (--prompt TEXT | --data in.jsonl "
                   "--out out.jsonl)\n  [-n K] [--temperature 0.8] [--top-k 0] [--top-p 1.0] "
                   "[--max-new 256] [--seed 1337]\n  [--template cot|plain|none] [--batch 64] "
                   "[--stop STR] [--threads N]\n");
            return 0;
        } else die("sample: unknown flag '%s' (see ./sirt sample --help)", f);
    }
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
// gold answer (lib/answer.h). Accuracy comes with a 95% Wilson score interval.
typedef struct {
    double low, high;
} Interval;

static Interval wilson_interval(long correct, long n) {
    if (n == 0) return (Interval){0, 0};
    double z = 1.959964, p = (double)correct / n, z2n = z * z / n;
    double center = (p + z2n / 2) / (1 + z2n);
    double half = z * sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n);
    return (Interval){center - half > 0 ? center - half : 0, center + half < 1 ? center + half : 1};
}

// The majority answer among k completions (no-answer samples do not vote; a tie goes to the
// answer seen first). Returns 0 when no sample has an answer.
static int majority_answer(char *const *completions, int k, char *out, size_t cap) {
    char (*answers)[ANSWER_MAX] = xmalloc((size_t)k * ANSWER_MAX);
    int *found = xmalloc(k * sizeof(int)), best = -1, best_votes = 0;
    for (int j = 0; j < k; j++) found[j] = answer_extract(completions[j], answers[j], ANSWER_MAX);
    for (int j = 0; j < k; j++) {
        if (!found[j]) continue;
        int votes = 0;
        for (int m = 0; m < k; m++) votes += found[m] && answer_equal(answers[m], answers[j]);
        if (votes > best_votes) best_votes = votes, best = j;
    }
    if (best >= 0) snprintf(out, cap, "%s", answers[best]);
    free(answers);
    free(found);
    return best >= 0;
}

typedef struct {
    long n, greedy, majority, pass; // items, and how many are right by each measure
    int k;                          // samples per item (0: greedy only)
} EvalResult;

static void print_eval(const EvalResult *r, const char *what) {
    Interval ci = wilson_interval(r->greedy, r->n);
    printf("%s: accuracy %.2f%% (%ld/%ld), 95%% interval [%.2f%%, %.2f%%]\n", what,
           100.0 * r->greedy / r->n, r->greedy, r->n, 100 * ci.low, 100 * ci.high);
    if (r->k > 0) {
        Interval m = wilson_interval(r->majority, r->n), p = wilson_interval(r->pass, r->n);
        printf("  maj@%d %.2f%% [%.2f%%, %.2f%%]   pass@%d %.2f%% [%.2f%%, %.2f%%]\n", r->k,
               100.0 * r->majority / r->n, 100 * m.low, 100 * m.high, r->k,
               100.0 * r->pass / r->n, 100 * p.low, 100 * p.high);
    }
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *tokenizer = NULL, *data = NULL, *out_path = NULL;
    int k = 0, teacher = 0;
    TemplateOptions template = {TEMPLATE_COT, 0};
    GenerateSettings g = GENERATE_DEFAULTS;
    for (int i = 0; i < argc; i++) {
        if (parse_generate_flag(&g, argc, argv, &i)) continue;
        const char *f = argv[i];
        if (!strcmp(f, "--model")) model_path = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--tokenizer")) tokenizer = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--data")) data = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--out")) out_path = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--samples")) k = parse_long(f, flag_value(argc, argv, &i), 0, 1 << 16);
        else if (!strcmp(f, "--teacher")) teacher = 1;
        else if (!strcmp(f, "--template")) template.kind = parse_template(flag_value(argc, argv, &i));
        else if (!strcmp(f, "--strip-calc")) template.strip_calculator_notes = 1;
        else if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: ./sirt eval --model M --tokenizer PATH --data test.jsonl [--samples K]\n"
                   "  [--temperature 0.8] [--top-k 0] [--top-p 1.0] [--max-new 256] [--seed 1337]\n"
                   "  [--template cot|plain] [--strip-calc] [--batch 64] [--out preds.jsonl]\n"
                   "  ./sirt eval --teacher --data test.jsonl   scores the data's own answers\n");
            return 0;
        } else die("eval: unknown flag '%s' (see ./sirt eval --help)", f);
    }
    if (!data) die("eval: --data is required");
    if (!teacher && (!model_path || !tokenizer))
        die("eval: --model and --tokenizer are required (or --teacher)");
    if (out_path) check_writable(out_path);
    Example *items;
    int n;
    examples_load(data, &template, &items, &n);
    for (int i = 0; i < n; i++)
        if (!items[i].gold) die("%s: item %d has no gold answer (eval needs question/answer items)", data, i + 1);

    char **greedy = NULL, **samples = NULL;
    Model model;
    Tokenizer *tok = NULL;
    if (teacher) { // the demonstrations themselves, as the student would see them
        greedy = xmalloc(n * sizeof(char *));
        for (int i = 0; i < n; i++) greedy[i] = json_strndup(items[i].completion, strlen(items[i].completion));
        k = 0;
    } else {
        model_load(&model, model_path);
        tok = load_tokenizer(tokenizer);
        check_tokenizer_fits(tok, model.config.V);
        GenerateSettings greedy_settings = g;
        greedy_settings.sampler.temperature = 0.0f;
        printf("greedy decoding of %d items\n", n);
        greedy = sample_items(&model, tok, items, n, 1, &greedy_settings);
        if (k > 0) {
            printf("sampling %d per item at temperature %.2f\n", k, g.sampler.temperature);
            samples = sample_items(&model, tok, items, n, k, &g);
        }
    }

    EvalResult r = {n, 0, 0, 0, k};
    SafeFile sf;
    if (out_path) safe_open(&sf, out_path);
    for (int i = 0; i < n; i++) {
        char predicted[ANSWER_MAX], majority[ANSWER_MAX] = "";
        int found = answer_extract(greedy[i], predicted, sizeof predicted);
        int correct = found && answer_equal(predicted, items[i].gold);
        int maj_ok = 0, pass_ok = 0;
        r.greedy += correct;
        if (k > 0) {
            char *const *mine = samples + (long)i * k;
            maj_ok = majority_answer(mine, k, majority, sizeof majority) &&
                     answer_equal(majority, items[i].gold);
            for (int j = 0; j < k; j++) pass_ok |= answer_is_correct(mine[j], items[i].gold);
            r.majority += maj_ok;
            r.pass += pass_ok;
        }
        if (out_path) {
            FILE *o = sf.file;
            fprintf(o, "{\"index\": %d, \"gold\": ", i);
            json_write_string(o, items[i].gold, strlen(items[i].gold));
            fputs(", \"prediction\": ", o);
            if (found) json_write_string(o, predicted, strlen(predicted));
            else fputs("null", o);
            fprintf(o, ", \"correct\": %s, \"completion\": ", correct ? "true" : "false");
            json_write_string(o, greedy[i], strlen(greedy[i]));
            if (k > 0) {
                fputs(", \"samples\": [", o);
                for (int j = 0; j < k; j++) {
                    if (j) fputs(", ", o);
                    const char *text = samples[(long)i * k + j];
                    json_write_string(o, text, strlen(text));
                }
                fputs("], \"majority\": ", o);
                json_write_string(o, majority, strlen(majority));
                fprintf(o, ", \"majority_correct\": %s, \"pass\": %s", maj_ok ? "true" : "false",
                        pass_ok ? "true" : "false");
            }
            fputs("}\n", o);
        }
    }
    if (out_path) safe_commit(&sf);
    print_eval(&r, teacher ? "teacher" : data);
    for (int i = 0; i < n; i++) free(greedy[i]);
    for (long j = 0; samples && j < (long)n * k; j++) free(samples[j]);
    free(greedy);
    free(samples);
    examples_free(items, n);
    if (!teacher) {
        tok_free(tok);
        model_free(&model);
    }
    return 0;
}

// =============================================================================================
// 8. Preference training: DPO and its relatives
// `./sirt dpo` trains a policy on (prompt, chosen, rejected) pairs against a frozen reference,
// as TRL's DPO trainer does. Each objective is a function of the summed log-probs of the two
// completions, S_w (chosen) and S_l (rejected), so — METHOD.md §3 — its gradient reaches every
// completion token through the same per-token coefficient as SFT's: c = −∂L/∂S. The classifier
// kernel and the backward pass do not know which objective they serve.
//   dpo   L = −log σ(βh),  h = (S_w − S_w^ref) − (S_l − S_l^ref)
//   cdpo  L = −(1−ε) log σ(βh) − ε log σ(−βh)           (label smoothing ε)
//   ipo   L = (ĥ − 1/(2β))², ĥ as h with mean log-probs a = S/n instead of sums
//   RPO   adds α·NLL of the chosen completions (--rpo-alpha α), against the fall of their
//         log-probs that DPO tends to cause.
// Losses are averaged over the B pairs of a batch. The reference's log-probs are computed once
// per pair before training (or read from the file's ref_chosen_logps / ref_rejected_logps).
// =============================================================================================

typedef enum { LOSS_DPO, LOSS_CDPO, LOSS_IPO } PreferenceLoss;

typedef struct {
    PreferenceLoss loss;
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
} PreferenceMetrics;

static double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }
static double log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }

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
    for (int b = 0; b < B; b++) {
        // IPO compares mean log-probs; the others compare sums
        double scale_w = p->loss == LOSS_IPO ? 1.0 / n_w[b] : 1.0;
        double scale_l = p->loss == LOSS_IPO ? 1.0 / n_l[b] : 1.0;
        double lw = S_w[b] * scale_w, ll = S_l[b] * scale_l;
        double rw = R_w[b] * scale_w, rl = R_l[b] * scale_l;
        double h = (lw - rw) - (ll - rl), dh; // dh = ∂L_b/∂h
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
        // RPO: α · (−Σ S_w / N_c), the mean NLL of the chosen tokens in the batch
        dS_w[b] += -p->rpo_alpha / chosen_tokens;
        double reward_w = beta * (lw - rw), reward_l = beta * (ll - rl);
        m.reward_chosen += reward_w / B;
        m.reward_rejected += reward_l / B;
        m.accuracy += (reward_w > reward_l) / (double)B; // strictly: 0 when policy = reference
        m.logp_chosen += S_w[b] / B;
        m.logp_rejected += S_l[b] / B;
        m.nll_chosen += -S_w[b] / chosen_tokens;
    }
    m.loss = m.loss / B + p->rpo_alpha * m.nll_chosen;
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

// Rows of a batch of B pairs (order[0..B)): row b holds pair b's chosen sequence, row B + b its
// rejected one, padded to the longest. mask (2B, T) is 1 on completion targets and 0 elsewhere.
// Returns T.
static int pairs_fill_batch(const PairData *d, const int *order, int B, int pad, int *inputs,
                            int *targets, float *mask) {
    const TokenSequence **rows = xmalloc(2 * (size_t)B * sizeof(TokenSequence *));
    for (int b = 0; b < B; b++) {
        rows[b] = &d->pairs[order[b]].chosen;
        rows[B + b] = &d->pairs[order[b]].rejected;
    }
    int T = 1;
    for (int r = 0; r < 2 * B; r++) T = rows[r]->length - 1 > T ? rows[r]->length - 1 : T;
    for (int r = 0; r < 2 * B; r++)
        for (int t = 0; t < T; t++) {
            const TokenSequence *seq = rows[r];
            int i = r * T + t, has_target = t + 1 < seq->length;
            inputs[i] = t < seq->length ? seq->ids[t] : pad;
            targets[i] = has_target ? seq->ids[t + 1] : -1;
            mask[i] = has_target && t + 1 >= seq->prompt_length ? 1.0f : 0.0f;
        }
    free(rows);
    return T;
}

// After a forward pass over R rows of T: each row's summed completion log-prob and token count.
static void row_logps(const Model *model, const float *mask, int R, int T, double *S, int *n) {
    for (int r = 0; r < R; r++) {
        S[r] = 0.0;
        n[r] = 0;
        for (int t = 0; t < T; t++)
            if (mask[r * T + t] != 0.0f) {
                S[r] += model->host_logprobs[r * T + t];
                n[r]++;
            }
    }
}

// The frozen reference's log-probs of every pair still without them: forward passes only.
static void compute_reference_logps(Model *ref, PairData *d, int B, int pad) {
    int *order = xmalloc((size_t)d->count * sizeof(int)), todo = 0;
    for (int i = 0; i < d->count; i++)
        if (isnan(d->pairs[i].ref_chosen)) order[todo++] = i;
    size_t cap = 2 * (size_t)B * ref->config.maxT;
    int *inputs = xmalloc(cap * sizeof(int)), *targets = xmalloc(cap * sizeof(int)), *n = xmalloc(2 * B * sizeof(int));
    float *mask = xmalloc(cap * sizeof(float));
    double *S = xmalloc(2 * B * sizeof(double));
    for (int first = 0; first < todo; first += B) {
        int rows = todo - first < B ? todo - first : B;
        int T = pairs_fill_batch(d, order + first, rows, pad, inputs, targets, mask);
        model_forward(ref, inputs, targets, 2 * rows, T);
        row_logps(ref, mask, 2 * rows, T, S, n);
        for (int b = 0; b < rows; b++) {
            d->pairs[order[first + b]].ref_chosen = S[b];
            d->pairs[order[first + b]].ref_rejected = S[rows + b];
        }
    }
    free(order);
    free(inputs);
    free(targets);
    free(n);
    free(mask);
    free(S);
}

// One DPO step on B pairs whose rows are in run's buffers (filled by pairs_fill_batch, with the
// mask in run->coefs): forward, the preference loss, the coefficients, backward and update.
static StepResult dpo_step(Model *model, TrainState *st, const TrainArgs *args, Run *run,
                           const PreferenceSettings *pref, const PairData *d, const int *order,
                           int B, int T, PreferenceMetrics *metrics) {
    model_forward(model, run->inputs, run->targets, 2 * B, T);
    double *S = xmalloc(2 * B * sizeof(double)), *R = xmalloc(2 * B * sizeof(double));
    double *dS = xmalloc(2 * B * sizeof(double));
    int *n = xmalloc(2 * B * sizeof(int));
    row_logps(model, run->coefs, 2 * B, T, S, n);
    for (int b = 0; b < B; b++) {
        R[b] = d->pairs[order[b]].ref_chosen;
        R[B + b] = d->pairs[order[b]].ref_rejected;
    }
    *metrics = preference_loss(pref, B, S, S + B, R, R + B, n, n + B, dS, dS + B);
    for (int r = 0; r < 2 * B; r++) // the mask becomes the coefficients: −∂L/∂S on each token
        for (int t = 0; t < T; t++) run->coefs[r * T + t] *= (float)-dS[r];
    StepResult result = {.loss = (float)metrics->loss};
    backward_and_update(model, run->coefs, args->opt, &run->sched, st, &result);
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
        int T = pairs_fill_batch(data, order + first, B, pad, run.inputs, run.targets, run.coefs);
        PreferenceMetrics m;
        StepResult r = dpo_step(model, st, args, &run, pref, data, order + first, B, T, &m);
        char extra[400], v[7][32];
        snprintf(extra, sizeof extra,
                 ", \"rewards/chosen\": %s, \"rewards/rejected\": %s, \"rewards/margins\": %s, "
                 "\"rewards/accuracies\": %s, \"logps/chosen\": %s, \"logps/rejected\": %s, "
                 "\"nll\": %s", json_number(v[0], m.reward_chosen),
                 json_number(v[1], m.reward_rejected), json_number(v[2], m.margin),
                 json_number(v[3], m.accuracy), json_number(v[4], m.logp_chosen),
                 json_number(v[5], m.logp_rejected), json_number(v[6], m.nll_chosen));
        if (run_after_step(model, st, args, &run, &r, 2 * (size_t)B * T, extra)) break;
    }
    run_close(model, st, args, &run);
    free(order);
}

// The flags of the preference losses, shared by dpo and refine.
static int parse_preference_flag(PreferenceSettings *p, int argc, char **argv, int *i) {
    const char *f = argv[*i];
    if (!strcmp(f, "--beta")) p->beta = parse_float(f, flag_value(argc, argv, i));
    else if (!strcmp(f, "--label-smoothing")) p->label_smoothing = parse_float(f, flag_value(argc, argv, i));
    else if (!strcmp(f, "--rpo-alpha")) p->rpo_alpha = parse_float(f, flag_value(argc, argv, i));
    else if (!strcmp(f, "--loss")) {
        const char *name = flag_value(argc, argv, i);
        if (!strcmp(name, "dpo")) p->loss = LOSS_DPO;
        else if (!strcmp(name, "cdpo")) p->loss = LOSS_CDPO;
        else if (!strcmp(name, "ipo")) p->loss = LOSS_IPO;
        else die("--loss must be dpo, cdpo or ipo, got '%s'", name);
    } else return 0;
    return 1;
}

// Checks the settings once all flags are read; a label smoothing with --loss dpo means cdpo, as
// in TRL.
static void check_preference(PreferenceSettings *p) {
    if (!(p->beta > 0)) die("--beta must be positive");
    if (p->label_smoothing < 0 || p->label_smoothing >= 0.5f) die("--label-smoothing must be in [0, 0.5)");
    if (p->label_smoothing > 0 && p->loss == LOSS_DPO) p->loss = LOSS_CDPO;
    if (p->rpo_alpha < 0) die("--rpo-alpha must be >= 0");
}

int cmd_dpo(int argc, char **argv) {
    TrainArgs args = train_args_defaults();
    args.out = "policy.bin";
    const char *ref_path = NULL, *tokenizer = NULL, *pairs_path = NULL;
    int epochs = 1;
    PreferenceSettings pref = {LOSS_DPO, 0.1f, 0.0f, 0.0f};
    for (int i = 0; i < argc; i++) {
        if (parse_train_flag(&args, argc, argv, &i)) continue;
        if (parse_preference_flag(&pref, argc, argv, &i)) continue;
        const char *f = argv[i];
        if (!strcmp(f, "--model")) args.init = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--ref")) ref_path = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--tokenizer")) tokenizer = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--pairs")) pairs_path = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--epochs")) epochs = parse_long(f, flag_value(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: ./sirt dpo --model POLICY.bin --ref REF.bin --tokenizer PATH --pairs pairs.jsonl\n"
                   "  [--loss dpo|ipo|cdpo] [--beta 0.1] [--label-smoothing 0] [--rpo-alpha 0]\n"
                   "  [--steps N | --epochs E]\n%s", TRAIN_FLAGS_HELP);
            return 0;
        } else die("dpo: unknown flag '%s' (see ./sirt dpo --help)", f);
    }
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
    if (missing) { // the frozen reference: forward passes only, then it is freed
        if (!ref_path) die("dpo: %d pairs have no reference log-probs: give --ref REF.bin", missing);
        Model ref;
        model_load(&ref, ref_path);
        ref.detect_anomaly = args.detect_anomaly;
        if (ref.config.V != model.config.V || ref.config.maxT < args.T)
            die("the reference %s does not match the policy (vocabulary or context)", ref_path);
        compute_reference_logps(&ref, &data, args.B, pad);
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
// Each round: sample K chain-of-thought answers per question (and, for cot-vs-plain, one
// answer to the plain prompt) → score them → build pairs → the reference's log-probs → DPO →
// greedy accuracy on --valid. The checkpoint with the best validation accuracy (the phase-1
// model included) is kept.
//   cot-vs-plain          the paper's DPO_CoT: a correct CoT answer (chosen) over the plain
//                         answer (rejected), both under the CoT prompt
//   correct-vs-incorrect  a correct over an incorrect CoT sample (Iterative RPO / DPO-ST);
//                         questions whose samples are all right or all wrong give no pair
// Identical texts are dropped, and each rule makes at most --max-pairs pairs per question.
// =============================================================================================

// 1 when every "A OP B = C" step of a completion computes right, 0 when one does not, -1 when
// it has no such step (a choice item).
static int arithmetic_steps_right(const char *completion) {
    StepReport report;
    answer_check_steps(completion, NULL, &report);
    if (report.first_error >= 0) return 0; // without an item, only arithmetic can be wrong
    for (int j = 0; j < report.num_steps && j < ANSWER_MAX_STEPS; j++)
        if (report.arithmetic_ok[j] == 1) return 1;
    return -1;
}

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

// Builds the pairs of one round from the scored samples. cot[i*k + j] are the CoT samples of
// question i, plain[i] its plain answer (NULL when the rule does not need it).
static void build_pairs(PairData *d, Tokenizer *tok, const Example *items, int n, int k,
                        char **cot, char **plain, PairRule rule, int max_pairs, int T) {
    d->pairs = xmalloc(((size_t)n * 2 * max_pairs + 1) * sizeof(Pair));
    for (int i = 0; i < n; i++) {
        char **mine = cot + (long)i * k;
        int made_plain = 0, made_mixed = 0, next_wrong = 0;
        for (int j = 0; j < k; j++) {
            if (!answer_is_correct(mine[j], items[i].gold)) continue;
            int duplicate = 0; // one pair per distinct correct text
            for (int m = 0; m < j; m++) duplicate |= !strcmp(mine[m], mine[j]);
            if (duplicate) continue;
            if ((rule & PAIRS_COT_VS_PLAIN) && made_plain < max_pairs &&
                pair_add(d, tok, items[i].prompt, mine[j], plain[i], T))
                made_plain++;
            if (rule & PAIRS_CORRECT_VS_INCORRECT)
                while (made_mixed < max_pairs && next_wrong < k) {
                    const char *w = mine[next_wrong++];
                    if (!answer_is_correct(w, items[i].gold)) {
                        if (pair_add(d, tok, items[i].prompt, mine[j], w, T)) made_mixed++;
                        break;
                    }
                }
        }
    }
}

// Writes the pairs of a round in TRL's format, with the reference log-probs.
static void write_pairs(const char *path, const PairData *d, Tokenizer *tok) {
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
        fprintf(sf.file, ", \"ref_chosen_logps\": %.9g, \"ref_rejected_logps\": %.9g}\n",
                p->ref_chosen, p->ref_rejected);
        tok_bytes_free(&prompt);
        tok_bytes_free(&chosen);
        tok_bytes_free(&rejected);
    }
    safe_commit(&sf);
}

// "refined.bin", 2, ".bin" -> "refined.round2.bin"
static void round_path(char *out, size_t size, const char *base, int round, const char *suffix) {
    size_t n = strlen(base), k = strlen(suffix);
    int has = n > k && !strcmp(base + n - k, suffix);
    if ((size_t)snprintf(out, size, "%.*s.round%d%s", (int)(has ? n - k : n), base, round,
                         has ? suffix : "") >= size)
        die("path too long: %s", base);
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
    int k = 4, rounds = 1, ref_previous = 0, epochs = 1, max_pairs = 1, steps = 0;
    PairRule rule = PAIRS_COT_VS_PLAIN;
    PreferenceSettings pref = {LOSS_DPO, 0.1f, 0.0f, 0.0f};
    GenerateSettings g = GENERATE_DEFAULTS;
    for (int i = 0; i < argc; i++) {
        if (parse_train_flag(&args, argc, argv, &i)) continue;
        if (parse_preference_flag(&pref, argc, argv, &i)) continue;
        const char *f = argv[i];
        if (!strcmp(f, "--model")) args.init = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--tokenizer")) tokenizer = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--data")) data_path = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--valid")) valid_path = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--keep-pairs")) keep_pairs = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--samples")) k = parse_long(f, flag_value(argc, argv, &i), 1, 1024);
        else if (!strcmp(f, "--rounds")) rounds = parse_long(f, flag_value(argc, argv, &i), 1, 1000);
        else if (!strcmp(f, "--epochs")) epochs = parse_long(f, flag_value(argc, argv, &i), 1, 1000);
        else if (!strcmp(f, "--max-pairs")) max_pairs = parse_long(f, flag_value(argc, argv, &i), 1, 1024);
        else if (!strcmp(f, "--temperature")) g.sampler.temperature = parse_float(f, flag_value(argc, argv, &i));
        else if (!strcmp(f, "--max-new")) g.max_new = parse_long(f, flag_value(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(f, "--gen-batch")) g.batch = parse_long(f, flag_value(argc, argv, &i), 1, 1 << 16);
        else if (!strcmp(f, "--ref")) {
            const char *which = flag_value(argc, argv, &i);
            if (!strcmp(which, "previous")) ref_previous = 1;
            else if (strcmp(which, "initial")) die("--ref must be initial or previous, got '%s'", which);
        } else if (!strcmp(f, "--pairs")) {
            const char *name = flag_value(argc, argv, &i);
            if (!strcmp(name, "cot-vs-plain")) rule = PAIRS_COT_VS_PLAIN;
            else if (!strcmp(name, "correct-vs-incorrect")) rule = PAIRS_CORRECT_VS_INCORRECT;
            else if (!strcmp(name, "both")) rule = PAIRS_BOTH;
            else die("--pairs must be cot-vs-plain, correct-vs-incorrect or both, got '%s'", name);
        } else if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: ./sirt refine --model SFT.bin --tokenizer PATH --data train.jsonl "
                   "[--valid valid.jsonl]\n  [--pairs cot-vs-plain|correct-vs-incorrect|both] "
                   "[--samples 4] [--temperature 0.8] [--rounds 1]\n  [--ref initial|previous] "
                   "[--max-pairs 1] [--max-new 256] [--gen-batch 64] [--keep-pairs DIR]\n"
                   "  [--loss dpo|ipo|cdpo] [--beta 0.1] [--label-smoothing 0] [--rpo-alpha 0] "
                   "[--epochs 1] [--steps N]\n  [--batch 8] [--seq 256] [--lr 1e-5] [--out "
                   "refined.bin] (+ --wd --clip --schedule --warmup --seed --log --threads)\n");
            return 0;
        } else die("refine: unknown flag '%s' (see ./sirt refine --help)", f);
    }
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
    TemplateOptions cot_template = {TEMPLATE_COT, 0}, plain_template = {TEMPLATE_PLAIN, 0};
    Example *items, *plain_items = NULL, *valid = NULL;
    int n, n_valid = 0;
    examples_load(data_path, &cot_template, &items, &n);
    for (int i = 0; i < n; i++)
        if (!items[i].gold) die("%s: item %d has no gold answer (refine needs question/answer items)", data_path, i + 1);
    if (rule & PAIRS_COT_VS_PLAIN) examples_load(data_path, &plain_template, &plain_items, &n);
    if (valid_path) examples_load(valid_path, &cot_template, &valid, &n_valid);
    print_model(&policy);

    double best = -1.0;
    if (valid) {
        best = (double)greedy_correct(&policy, tok, valid, n_valid, &g) / n_valid;
        printf("round 0 (the phase-1 model): validation accuracy %.2f%%\n", 100 * best);
    }
    model_save(&policy, args.out); // the best so far
    for (int round = 1; round <= rounds; round++) {
        printf("round %d: sampling %d chain-of-thought answers for %d questions\n", round, k, n);
        char **cot = sample_items(&policy, tok, items, n, k, &g), **plain = NULL;
        // how many are right, and how many of those right for the right reason: a correct sample
        // whose arithmetic steps are all true (a lucky final answer after a wrong step is not)
        long correct_samples = 0, with_arithmetic = 0, steps_right = 0;
        for (long j = 0; j < (long)n * k; j++) {
            if (!answer_is_correct(cot[j], items[j / k].gold)) continue;
            correct_samples++;
            int arithmetic = arithmetic_steps_right(cot[j]);
            with_arithmetic += arithmetic >= 0;
            steps_right += arithmetic == 1;
        }
        if (plain_items) {
            printf("round %d: one answer to the plain prompt per question\n", round);
            plain = sample_items(&policy, tok, plain_items, n, 1, &g);
        }
        PairData pairs = {0};
        build_pairs(&pairs, tok, items, n, k, cot, plain, rule, max_pairs, args.T);
        printf("round %d: %.1f%% of the samples are correct", round,
               100.0 * correct_samples / ((long)n * k));
        if (with_arithmetic)
            printf(" (of the %ld correct ones with arithmetic, %.1f%% compute every step right)",
                   with_arithmetic, 100.0 * steps_right / with_arithmetic);
        printf("; %d pairs (dropped: %d empty, %d identical; %d cut)\n", pairs.count,
               pairs.dropped_empty, pairs.dropped_identical, pairs.truncated);
        for (long j = 0; j < (long)n * k; j++) free(cot[j]);
        for (int i = 0; plain && i < n; i++) free(plain[i]);
        free(cot);
        free(plain);
        if (pairs.count == 0) {
            printf("round %d: no pairs, nothing to learn; stopping\n", round);
            free(pairs.pairs);
            break;
        }
        compute_reference_logps(&ref, &pairs, args.B, pad);
        if (keep_pairs) {
            char path[4200];
            snprintf(path, sizeof path, "%s/pairs_round%d.jsonl", keep_pairs, round);
            write_pairs(path, &pairs, tok);
            printf("round %d: pairs written to %s\n", round, path);
        }
        // DPO on this round's pairs, from a fresh optimizer
        char out[4200], log[4200];
        TrainArgs round_args = args;
        round_path(out, sizeof out, args.out, round, ".bin");
        round_args.out = out;
        if (args.log) {
            round_path(log, sizeof log, args.log, round, ".jsonl");
            round_args.log = log;
        }
        round_args.steps =
            steps ? steps : epochs_to_steps(epochs, (pairs.count + args.B - 1) / args.B);
        if (policy.m_memory) {
            dev_zero(policy.m_memory, policy.num_parameters);
            dev_zero(policy.v_memory, policy.num_parameters);
        }
        TrainState st = {.seed = args.seed, .rng = rng_seeded(args.seed), .B = args.B,
                         .T = args.T, .shuffle = 1, .best_valid_loss = INFINITY};
        dpo_train(&policy, &st, &round_args, &pref, &pairs, pad);
        pairs_free(&pairs);
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
    if (valid) printf("kept %s: validation accuracy %.2f%%\n", args.out, 100 * best);
    examples_free(items, n);
    if (plain_items) examples_free(plain_items, n);
    if (valid) examples_free(valid, n_valid);
    tok_free(tok);
    model_free(&policy);
    model_free(&ref);
    return 0;
}

// =============================================================================================
// 10. The reproduction: `./sirt reproduce`, and `./sirt` with no arguments
// The whole method on the built-in task, from nothing: generate the data → train the tokenizer →
// phase 1 (SFT on the teacher's demonstrations) → evaluate → phase 2 (refine) → evaluate. It
// writes runs/NAME/ (data, tokenizer, checkpoints, logs, pairs, results.json, results.svg) and
// prints the table of the paper: rows teacher, SFT, SFT + self-refine; columns the in-domain
// test, test-ood and test-long splits of each task family, with 95% intervals.
// Every step is one of the commands above, run with the arguments it would get on a terminal.
// With --seeds S the whole pipeline runs S times (seeds s, s+1, ...: new data, new tokenizer,
// new models) and the summary gives mean ± sd over seeds and, for every refined row, the gain
// over its SFT row with a paired bootstrap 95% interval. --ablations adds the rows of the
// paper's analyses: the other pair rule, DPO with the NLL term (RPO), and phase 1 on 50% and
// 25% of the demonstrations, each with and without phase 2. --task math|choice runs one family.
// =============================================================================================

typedef int (*CommandFn)(int argc, char **argv);

// Runs a command with a NULL-terminated list of arguments (after the command's name).
static void run_command(CommandFn fn, const char *first, ...) {
    char *args[64];
    int n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        if (n == 64) die("too many arguments");
        args[n++] = (char *)a;
    }
    va_end(ap);
    if (fn(n, args) != 0) die("a step of the reproduction failed");
}

// Writes the first `lines` lines of each of n files (all of a file when lines < 0) into out.
static void join_heads(const char *out, const char *const *paths, int n, long lines) {
    SafeFile sf;
    safe_open(&sf, out);
    for (int i = 0; i < n; i++) {
        size_t bytes, end = 0;
        char *data = (char *)read_whole_file(paths[i], &bytes);
        if (!data) die("cannot open %s", paths[i]);
        for (long k = 0; end < bytes && (lines < 0 || k < lines); k++) {
            char *nl = memchr(data + end, '\n', bytes - end);
            end = nl ? (size_t)(nl - data) + 1 : bytes;
        }
        safe_write(&sf, data, end);
        free(data);
    }
    safe_commit(&sf);
}

// The tokenizer's training text: every training item as the student will see it, rendered with
// the chain-of-thought and the plain templates, so the templates' words become single tokens.
static void write_rendered_text(const char *out, const char *data) {
    SafeFile sf;
    safe_open(&sf, out);
    for (int kind = TEMPLATE_COT; kind <= TEMPLATE_PLAIN; kind++) {
        TemplateOptions template = {(TemplateKind)kind, 0};
        Example *items;
        int n;
        examples_load(data, &template, &items, &n);
        for (int i = 0; i < n; i++) fprintf(sf.file, "%s%s\n", items[i].prompt, items[i].completion);
        examples_free(items, n);
    }
    safe_commit(&sf);
}

// Everything the reproduction's flags choose. The defaults were chosen on `valid` (README).
typedef struct {
    const char *name;
    long seed;
    int seeds, quick, ablations;
    const char *task;     // math, choice or both: the families trained on and evaluated
    int n_train;          // demonstrations per family
    int epochs;           // phase-1 epochs
    const char *config;   // the student: L,NH,C,maxT,V
    const char *vocab;    // BPE tokens
    const char *sft_lr;
    int n_refine;         // questions per family the student answers in phase 2
    const char *samples, *refine_lr, *beta, *refine_epochs, *pairs, *rpo_alpha;
    int n_valid, n_test;  // items per family: valid; each test split
    const char *max_new;  // generation budget for sampling and evaluation
} ReproSettings;

static const ReproSettings REPRO_DEFAULTS = {
    .name = "default", .seed = 1, .seeds = 1, .task = "both", .n_train = 6000, .epochs = 2,
    .config = "4,4,128,256,1024", .vocab = "1024", .sft_lr = "3e-3", .n_refine = 400,
    .samples = "4", .refine_lr = "3e-5", .beta = "0.1", .refine_epochs = "2",
    .pairs = "correct-vs-incorrect", .rpo_alpha = "1", .n_valid = 200, .n_test = 1000,
    .max_new = "160"};

#define REPRO_FAMILIES 2
#define REPRO_SPLITS 3
#define REPRO_COLUMNS (REPRO_FAMILIES * REPRO_SPLITS)
#define REPRO_MAX_ROWS 10
static const char *const REPRO_SPLIT_NAMES[REPRO_SPLITS] = {"test", "test-ood", "test-long"};

// The families of --task: how many, and the k-th (columns are family-major: column c is split
// c % REPRO_SPLITS of family c / REPRO_SPLITS).
static int repro_num_families(const ReproSettings *rs) { return strcmp(rs->task, "both") ? 1 : 2; }
static const char *repro_family(const ReproSettings *rs, int k) {
    return strcmp(rs->task, "both") ? rs->task : task_family_names[k];
}
static int repro_columns(const ReproSettings *rs) { return repro_num_families(rs) * REPRO_SPLITS; }

// The first `lines` items (all: -1) of split `split` of every family, into out.
static void join_families(const ReproSettings *rs, const char *dir, const char *split,
                          const char *out, long lines) {
    char paths[REPRO_FAMILIES][1200];
    const char *list[REPRO_FAMILIES];
    for (int k = 0; k < repro_num_families(rs); k++) {
        snprintf(paths[k], sizeof paths[k], "%s/%s_%s.jsonl", dir, repro_family(rs, k), split);
        list[k] = paths[k];
    }
    join_heads(out, list, repro_num_families(rs), lines);
}

// A row of the table. Every row but the teacher's is a student: phase 1 on a share of the
// demonstrations and, for a phase-2 row, one `refine` with a pair rule and an RPO weight.
typedef struct {
    char label[64];
    char key[32];          // the row's files in the run directory: KEY.bin, KEY_metrics.jsonl
    int demos_percent;     // share of the demonstrations phase 1 trains on (0: the teacher)
    const char *pairs;     // phase 2's pair rule; NULL for the teacher and SFT rows
    const char *rpo_alpha;
    int baseline;          // the SFT row a refined row is compared with (-1: none)
} ReproRow;

static int repro_add_row(ReproRow *rows, int n, const char *label, const char *key, int percent,
                         const char *pairs, const char *rpo_alpha, int baseline) {
    ReproRow *r = &rows[n];
    snprintf(r->label, sizeof r->label, "%s", label);
    snprintf(r->key, sizeof r->key, "%s", key);
    r->demos_percent = percent;
    r->pairs = pairs;
    r->rpo_alpha = rpo_alpha;
    r->baseline = baseline;
    return n + 1;
}

// The rows: teacher, SFT, SFT + self-refine; with --ablations also the other pair rule, the
// other loss (DPO ↔ DPO+NLL), and phase 1 on 50% and 25% of the demonstrations.
static int repro_rows(const ReproSettings *rs, ReproRow *rows) {
    int n = 0;
    n = repro_add_row(rows, n, "teacher", "teacher", 0, NULL, NULL, -1);
    n = repro_add_row(rows, n, "SFT", "sft", 100, NULL, NULL, -1);
    n = repro_add_row(rows, n, "SFT + self-refine", "refined", 100, rs->pairs, rs->rpo_alpha, 1);
    if (!rs->ablations) return n;
    int cvp = !strcmp(rs->pairs, "cot-vs-plain"), rpo = strcmp(rs->rpo_alpha, "0") != 0;
    const char *other = cvp ? "correct-vs-incorrect" : "cot-vs-plain";
    char label[64];
    snprintf(label, sizeof label, "  refine, %s", other);
    n = repro_add_row(rows, n, label, cvp ? "refined_cvi" : "refined_cvp", 100, other, rs->rpo_alpha, 1);
    n = repro_add_row(rows, n, rpo ? "  refine, DPO (no NLL)" : "  refine, DPO+NLL (RPO)",
                      rpo ? "refined_dpo" : "refined_rpo", 100, rs->pairs, rpo ? "0" : "1", 1);
    int percents[2] = {50, 25};
    for (int p = 0; p < 2; p++) {
        char key[32];
        snprintf(label, sizeof label, "SFT, %d%% of demos", percents[p]);
        snprintf(key, sizeof key, "sft_d%d", percents[p]);
        int sft_row = n;
        n = repro_add_row(rows, n, label, key, percents[p], NULL, NULL, -1);
        snprintf(label, sizeof label, "  + self-refine (%d%% of demos)", percents[p]);
        snprintf(key, sizeof key, "refined_d%d", percents[p]);
        n = repro_add_row(rows, n, label, key, percents[p], rs->pairs, rs->rpo_alpha, sft_row);
    }
    return n;
}

// One evaluation: how many items a row answered correctly, and which (for the paired bootstrap).
typedef struct {
    long correct, n;
    unsigned char *hit;  // hit[i]: item i answered correctly
} Score;

// Accuracy of a model (or, with model_path NULL, of the data's own demonstrations).
static Score score_file(const char *model_path, Tokenizer *tok, const char *data,
                        const GenerateSettings *g) {
    TemplateOptions cot = {TEMPLATE_COT, 0};
    Example *items;
    int n;
    examples_load(data, &cot, &items, &n);
    Score s = {0, n, xmalloc(n + 1)};
    Model model;
    if (model_path) model_load(&model, model_path);
    GenerateSettings greedy = *g;
    greedy.sampler.temperature = 0.0f;
    char **outs = model_path ? sample_items(&model, tok, items, n, 1, &greedy) : NULL;
    for (int i = 0; i < n; i++) {
        s.hit[i] = (unsigned char)answer_is_correct(outs ? outs[i] : items[i].completion, items[i].gold);
        s.correct += s.hit[i];
        if (outs) free(outs[i]);
    }
    free(outs);
    if (model_path) model_free(&model);
    examples_free(items, n);
    return s;
}

// Runs the whole pipeline for one seed in dir and fills scores[row * REPRO_COLUMNS + column]
// for the columns of --task.
static void repro_one_seed(const ReproSettings *rs, long seed, const char *dir, const ReproRow *rows,
                           int n_rows, Score *scores) {
    char path[1200], seedtxt[32], ntxt[32];
    char train[1200], valid[1200], tokfile[1200], questions[1200];
    snprintf(seedtxt, sizeof seedtxt, "%ld", seed);
    mkdir_p(dir);
    double start = now_seconds();

    printf("== 1. data: the built-in task, seed %ld, in %s/\n", seed, dir);
    for (int fam = 0; fam < repro_num_families(rs); fam++)
        for (int sp = 0; sp < TASK_NUM_SPLITS; sp++) {
            const char *split = task_split_names[sp];
            snprintf(path, sizeof path, "%s/%s_%s.jsonl", dir, repro_family(rs, fam), split);
            snprintf(ntxt, sizeof ntxt, "%d", sp == TASK_SPLIT_TRAIN ? rs->n_train
                                              : sp == TASK_SPLIT_VALID ? rs->n_valid : rs->n_test);
            run_command(cmd_data, "--task", repro_family(rs, fam), "--split", split, "--n", ntxt,
                        "--seed", seedtxt, "--out", path, NULL);
        }
    snprintf(train, sizeof train, "%s/train.jsonl", dir);
    join_families(rs, dir, "train", train, -1);
    snprintf(questions, sizeof questions, "%s/refine_train.jsonl", dir); // phase 2's questions
    join_families(rs, dir, "train", questions, rs->n_refine);
    snprintf(valid, sizeof valid, "%s/valid.jsonl", dir);
    join_families(rs, dir, "valid", valid, -1);

    printf("== 2. tokenizer (%.0fs)\n", now_seconds() - start);
    snprintf(tokfile, sizeof tokfile, "%s/tokenizer.bin", dir);
    snprintf(path, sizeof path, "%s/tokenizer_text.txt", dir);
    write_rendered_text(path, train);
    run_command(cmd_tokenizer, "--train", path, "--vocab", rs->vocab, "--split-digits", "--out",
                tokfile, NULL);

    // the models: each row's checkpoint, trained in row order (an SFT row before its refined rows)
    char model_paths[REPRO_MAX_ROWS][1200];
    for (int r = 0; r < n_rows; r++) {
        const ReproRow *row = &rows[r];
        char out[1200], log[1200];
        snprintf(out, sizeof out, "%s/%s.bin", dir, row->key);
        snprintf(log, sizeof log, "%s/%s_metrics.jsonl", dir, row->key);
        if (row->demos_percent == 0) { model_paths[r][0] = 0; continue; } // the teacher
        if (!row->pairs) {
            printf("== 3. phase 1: SFT on %d%% of the teacher's demonstrations (%.0fs)\n",
                   row->demos_percent, now_seconds() - start);
            const char *demos = train;
            if (row->demos_percent < 100) {
                snprintf(path, sizeof path, "%s/%s_train.jsonl", dir, row->key);
                join_families(rs, dir, "train", path, (long)rs->n_train * row->demos_percent / 100);
                demos = path;
            }
            char eptxt[32];
            snprintf(eptxt, sizeof eptxt, "%d", rs->epochs);
            run_command(cmd_sft, "--config", rs->config, "--tokenizer", tokfile, "--data", demos,
                        "--valid", valid, "--epochs", eptxt, "--batch", "16", "--seq", "256", "--lr",
                        rs->sft_lr, "--warmup", "20", "--seed", seedtxt, "--log", log, "--out", out, NULL);
            best_path(model_paths[r], sizeof model_paths[r], out); // the lowest validation loss
        } else {
            printf("== 4. phase 2: self-refinement (%s, rpo-alpha %s) of %s (%.0fs)\n", row->pairs,
                   row->rpo_alpha, rows[row->baseline].label, now_seconds() - start);
            char pairs_dir[1200];
            snprintf(pairs_dir, sizeof pairs_dir, "%s/%s_pairs", dir, row->key);
            mkdir_p(pairs_dir);
            run_command(cmd_refine, "--model", model_paths[row->baseline], "--tokenizer", tokfile,
                        "--data", questions, "--valid", valid, "--pairs", row->pairs, "--samples",
                        rs->samples, "--max-new", rs->max_new, "--rounds", "1", "--epochs",
                        rs->refine_epochs, "--batch", "8", "--seq", "256", "--lr", rs->refine_lr,
                        "--beta", rs->beta, "--rpo-alpha", row->rpo_alpha, "--seed", seedtxt,
                        "--keep-pairs", pairs_dir, "--log", log, "--out", out, NULL);
            snprintf(model_paths[r], sizeof model_paths[r], "%s", out);
        }
    }

    printf("== 5. evaluation (%.0fs)\n", now_seconds() - start);
    Tokenizer *tok = load_tokenizer(tokfile);
    GenerateSettings g = GENERATE_DEFAULTS;
    g.max_new = (int)parse_long("--max-new", rs->max_new, 1, 1 << 20);
    for (int r = 0; r < n_rows; r++)
        for (int c = 0; c < repro_columns(rs); c++) {
            snprintf(path, sizeof path, "%s/%s_%s.jsonl", dir, repro_family(rs, c / REPRO_SPLITS),
                     REPRO_SPLIT_NAMES[c % REPRO_SPLITS]);
            scores[r * REPRO_COLUMNS + c] = score_file(model_paths[r][0] ? model_paths[r] : NULL, tok, path, &g);
        }
    tok_free(tok);
    printf("seed %ld done in %.0fs\n", seed, now_seconds() - start);
}

// Paired bootstrap of the gain of one row over another on one column: the test items of every
// seed are resampled with replacement — the same draw for both rows, which is the pairing — and
// the statistic is the mean over seeds of the accuracy difference. 95% percentile interval of
// 2,000 resamples, from a fixed seed (the same data give the same interval).
typedef struct { double gain, low, high; } Gain;

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static Gain paired_bootstrap(const Score *row, const Score *base, int seeds, int stride) {
    enum { RESAMPLES = 2000 };
    double *stats = xmalloc(RESAMPLES * sizeof(double)), gain = 0;
    for (int s = 0; s < seeds; s++)
        gain += (double)(row[s * stride].correct - base[s * stride].correct) / row[s * stride].n / seeds;
    Rng rng = rng_seeded(2024);
    for (int k = 0; k < RESAMPLES; k++) {
        double total = 0;
        for (int s = 0; s < seeds; s++) {
            const Score *x = &row[s * stride], *y = &base[s * stride];
            long diff = 0;
            for (long i = 0; i < x->n; i++) {
                long j = rng_u32(&rng) % x->n;
                diff += x->hit[j] - y->hit[j];
            }
            total += (double)diff / x->n;
        }
        stats[k] = total / seeds;
    }
    qsort(stats, RESAMPLES, sizeof(double), compare_doubles);
    Gain out = {gain, stats[(int)(0.025 * RESAMPLES)], stats[(int)(0.975 * RESAMPLES) - 1]};
    free(stats);
    return out;
}

// scores are laid out [seed][row][column]
static Score *repro_score(Score *scores, int n_rows, int seed, int row, int column) {
    return &scores[((size_t)seed * n_rows + row) * REPRO_COLUMNS + column];
}

static void print_columns_header(const ReproSettings *rs, const char *title) {
    printf("\n%-32s", title);
    for (int c = 0; c < repro_columns(rs); c++)
        printf(" %7s %-10s", repro_family(rs, c / REPRO_SPLITS), REPRO_SPLIT_NAMES[c % REPRO_SPLITS]);
    printf("\n");
}

// results.svg: grouped bars (one per row) per family and split: the mean accuracy over seeds,
// whiskers the 95% Wilson interval of the pooled counts.
static void write_svg(const ReproSettings *rs, const char *path, const ReproRow *rows, int n_rows,
                      Score *scores, int seeds) {
    static const char *const colors[REPRO_MAX_ROWS] = {"#999999", "#4c72b0", "#dd8452", "#55a868",
        "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974"};
    int bar = 24, group = bar * n_rows + 36, W = group * repro_columns(rs) + 100, top = 40, base = 300;
    int legend_rows = (n_rows + 2) / 3, H = base + 50 + 18 * legend_rows;
    SafeFile sf;
    safe_open(&sf, path);
    FILE *f = sf.file;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
               "fill=\"white\"/>\n<text x=\"60\" y=\"22\" font-size=\"15\">Accuracy on the built-in "
               "task, %d seed%s (95%% intervals)</text>\n", W, H, seeds, seeds > 1 ? "s" : "");
    for (int p = 0; p <= 100; p += 25) {
        double y = base - (base - top) * p / 100.0;
        fprintf(f, "<line x1=\"55\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"50\" "
                   "y=\"%.1f\" text-anchor=\"end\">%d%%</text>\n", W - 30, y, y, y + 4, p);
    }
    for (int c = 0; c < repro_columns(rs); c++) {
        int gx = 70 + group * c;
        for (int r = 0; r < n_rows; r++) {
            long correct = 0, n = 0;
            for (int s = 0; s < seeds; s++) {
                correct += repro_score(scores, n_rows, s, r, c)->correct;
                n += repro_score(scores, n_rows, s, r, c)->n;
            }
            if (!n) continue;
            double acc = (double)correct / n;
            Interval ci = wilson_interval(correct, n);
            double x = gx + bar * r, y = base - (base - top) * acc;
            fprintf(f, "<rect x=\"%.0f\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\"/>\n",
                    x, y, bar - 3, base - y, colors[r]);
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
                    x + (bar - 3) / 2.0, x + (bar - 3) / 2.0, base - (base - top) * ci.low,
                    base - (base - top) * ci.high);
        }
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text><text x=\"%d\" "
                   "y=\"%d\" text-anchor=\"middle\">%s</text>\n", gx + bar * n_rows / 2, base + 18,
                repro_family(rs, c / REPRO_SPLITS), gx + bar * n_rows / 2, base + 33,
                REPRO_SPLIT_NAMES[c % REPRO_SPLITS]);
    }
    for (int r = 0; r < n_rows; r++) {
        int x = 70 + 250 * (r % 3), y = base + 50 + 18 * (r / 3);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" "
                   "y=\"%d\">", x, y - 10, colors[r], x + 18, y);
        const char *label = rows[r].label;
        while (*label == ' ') label++; // the table indents the ablations' rows
        fprintf(f, "%s</text>\n", label);
    }
    fputs("</svg>\n", f);
    safe_commit(&sf);
}

// Prints the tables (per seed when there are several; mean ± sd; gains with paired bootstrap
// intervals) and writes results.json.
static void repro_report(const ReproSettings *rs, const char *dir, const ReproRow *rows, int n_rows,
                         Score *scores) {
    char path[1200];
    int S = rs->seeds;
    for (int s = 0; s < S; s++) {
        char title[64];
        snprintf(title, sizeof title, S > 1 ? "seed %ld: accuracy (%%)" : "accuracy (%%)", rs->seed + s);
        print_columns_header(rs, title);
        for (int r = 0; r < n_rows; r++) {
            printf("%-32s", rows[r].label);
            for (int c = 0; c < repro_columns(rs); c++) {
                const Score *x = repro_score(scores, n_rows, s, r, c);
                Interval ci = wilson_interval(x->correct, x->n);
                printf(" %5.1f [%4.1f,%5.1f]", 100.0 * x->correct / x->n, 100 * ci.low, 100 * ci.high);
            }
            printf("\n");
        }
    }
    if (S > 1) {
        print_columns_header(rs, "mean ± sd over seeds (%)");
        for (int r = 0; r < n_rows; r++) {
            printf("%-32s", rows[r].label);
            for (int c = 0; c < repro_columns(rs); c++) {
                double sum = 0, sq = 0;
                for (int s = 0; s < S; s++) {
                    const Score *x = repro_score(scores, n_rows, s, r, c);
                    double acc = 100.0 * x->correct / x->n;
                    sum += acc, sq += acc * acc;
                }
                double mean = sum / S, sd = sqrt(fmax(0.0, (sq - S * mean * mean) / (S - 1)));
                printf(" %6.1f ± %-10.1f", mean, sd);
            }
            printf("\n");
        }
    }
    Gain gains[REPRO_MAX_ROWS][REPRO_COLUMNS]; // each refined row over its SFT row
    print_columns_header(rs, "gain over SFT (points)");
    for (int r = 0; r < n_rows; r++) {
        if (rows[r].baseline < 0) continue;
        printf("%-32s", rows[r].label);
        for (int c = 0; c < repro_columns(rs); c++) {
            Gain gn = gains[r][c] = paired_bootstrap(repro_score(scores, n_rows, 0, r, c),
                                                     repro_score(scores, n_rows, 0, rows[r].baseline, c),
                                                     S, n_rows * REPRO_COLUMNS);
            printf(" %+5.1f [%+4.1f,%+5.1f]", 100 * gn.gain, 100 * gn.low, 100 * gn.high);
        }
        printf("\n");
    }
    printf("(paired bootstrap 95%% intervals over the test items%s)\n", S > 1 ? " of every seed" : "");

    snprintf(path, sizeof path, "%s/results.json", dir);
    SafeFile sf;
    safe_open(&sf, path);
    FILE *f = sf.file;
    fprintf(f, "{\"seeds\": [");
    for (int s = 0; s < S; s++) fprintf(f, "%s%ld", s ? ", " : "", rs->seed + s);
    fprintf(f, "], \"task\": \"%s\", \"train_items_per_family\": %d, \"sft_epochs\": %d, "
               "\"config\": \"%s\", \"pairs\": \"%s\", \"rpo_alpha\": %s,\n\"results\": [",
            rs->task, rs->n_train, rs->epochs, rs->config, rs->pairs, rs->rpo_alpha);
    int first = 1;
    for (int s = 0; s < S; s++)
        for (int r = 0; r < n_rows; r++)
            for (int c = 0; c < repro_columns(rs); c++) {
                const Score *x = repro_score(scores, n_rows, s, r, c);
                Interval ci = wilson_interval(x->correct, x->n);
                fprintf(f, "%s\n  {\"model\": \"%s\", \"family\": \"%s\", \"split\": \"%s\", "
                           "\"correct\": %ld, \"n\": %ld, \"seed\": %ld, \"accuracy\": %.6f, "
                           "\"ci95\": [%.6f, %.6f]}", first ? "" : ",", rows[r].key,
                        repro_family(rs, c / REPRO_SPLITS), REPRO_SPLIT_NAMES[c % REPRO_SPLITS],
                        x->correct, x->n, rs->seed + s, (double)x->correct / x->n, ci.low, ci.high);
                first = 0;
            }
    fprintf(f, "\n],\n\"gains\": [");
    first = 1;
    for (int r = 0; r < n_rows; r++) {
        if (rows[r].baseline < 0) continue;
        for (int c = 0; c < repro_columns(rs); c++) {
            Gain gn = gains[r][c];
            fprintf(f, "%s\n  {\"model\": \"%s\", \"over\": \"%s\", \"family\": \"%s\", \"split\": "
                       "\"%s\", \"gain\": %.6f, \"ci95\": [%.6f, %.6f], \"per_seed\": [",
                    first ? "" : ",", rows[r].key, rows[rows[r].baseline].key,
                    repro_family(rs, c / REPRO_SPLITS), REPRO_SPLIT_NAMES[c % REPRO_SPLITS],
                    gn.gain, gn.low, gn.high);
            for (int s = 0; s < S; s++) {
                const Score *x = repro_score(scores, n_rows, s, r, c);
                const Score *y = repro_score(scores, n_rows, s, rows[r].baseline, c);
                fprintf(f, "%s%.6f", s ? ", " : "", (double)(x->correct - y->correct) / x->n);
            }
            fprintf(f, "]}");
            first = 0;
        }
    }
    fputs("\n]}\n", f);
    safe_commit(&sf);
    snprintf(path, sizeof path, "%s/results.svg", dir);
    write_svg(rs, path, rows, n_rows, scores, S);
}

static void repro_usage(void) {
    const ReproSettings d = REPRO_DEFAULTS;
    printf("usage: ./sirt reproduce [--name %s] [--seed %ld] [--seeds %d] [--task %s (or math, choice)]\n"
           "  [--config %s (the student: L,NH,C,maxT,V)] [--train %d] [--epochs %d]\n"
           "  [--pairs %s (or cot-vs-plain, both)] [--rpo-alpha %s]\n"
           "  [--refine-lr %s] [--refine-epochs %s] [--beta %s]"
           " [--samples %s] [--refine-questions %d] [--ablations] [--quick]\n"
           "  (./sirt with no arguments runs it with the defaults)\n",
           d.name, d.seed, d.seeds, d.task, d.config, d.n_train, d.epochs, d.pairs, d.rpo_alpha,
           d.refine_lr, d.refine_epochs, d.beta, d.samples, d.n_refine);
}

int cmd_reproduce(int argc, char **argv) {
    ReproSettings rs = REPRO_DEFAULTS;
    int name_given = 0, train_given = 0, epochs_given = 0, config_given = 0;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--name")) rs.name = flag_value(argc, argv, &i), name_given = 1;
        else if (!strcmp(f, "--quick")) rs.quick = 1;
        else if (!strcmp(f, "--ablations")) rs.ablations = 1;
        else if (!strcmp(f, "--seed")) rs.seed = parse_long(f, flag_value(argc, argv, &i), 0, 0x7fffffffL - 1000);
        else if (!strcmp(f, "--task")) rs.task = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--config")) rs.config = flag_value(argc, argv, &i), config_given = 1;
        else if (!strcmp(f, "--seeds")) rs.seeds = parse_long(f, flag_value(argc, argv, &i), 1, 100);
        else if (!strcmp(f, "--train")) rs.n_train = parse_long(f, flag_value(argc, argv, &i), 10, 10000000), train_given = 1;
        else if (!strcmp(f, "--epochs")) rs.epochs = parse_long(f, flag_value(argc, argv, &i), 1, 1000), epochs_given = 1;
        else if (!strcmp(f, "--refine-questions")) rs.n_refine = parse_long(f, flag_value(argc, argv, &i), 1, 10000000);
        else if (!strcmp(f, "--pairs")) rs.pairs = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--rpo-alpha")) rs.rpo_alpha = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--refine-lr")) rs.refine_lr = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--refine-epochs")) rs.refine_epochs = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--beta")) rs.beta = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--samples")) rs.samples = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--help") || !strcmp(f, "-h")) return repro_usage(), 0;
        else die("reproduce: unknown flag '%s' (see ./sirt reproduce --help)", f);
    }
    if (strcmp(rs.task, "math") && strcmp(rs.task, "choice") && strcmp(rs.task, "both"))
        die("--task must be math, choice or both, got '%s'", rs.task);
    Config student = parse_config(rs.config); // fail now, not after the data
    if (student.maxT < 256) die("--config: the reproduction needs maxT >= 256 (its --seq), got %d", student.maxT);
    if (strcmp(rs.pairs, "cot-vs-plain") && strcmp(rs.pairs, "correct-vs-incorrect") && strcmp(rs.pairs, "both"))
        die("--pairs must be cot-vs-plain, correct-vs-incorrect or both, got '%s'", rs.pairs);
    parse_float("--rpo-alpha", rs.rpo_alpha); // fail now, not after phase 1
    parse_float("--refine-lr", rs.refine_lr);
    parse_float("--beta", rs.beta);
    parse_long("--samples", rs.samples, 1, 1024);
    parse_long("--refine-epochs", rs.refine_epochs, 1, 1000);
    if (rs.quick) { // tiny sizes: the whole pipeline in seconds (the tests run it)
        if (!train_given) rs.n_train = 60;
        if (!epochs_given) rs.epochs = 1;
        if (!name_given) rs.name = "quick";
        if (!config_given) rs.config = "2,2,32,256,1024";
        rs.n_refine = 20, rs.n_valid = 20, rs.n_test = 30;
        rs.samples = "2", rs.max_new = "100";
    }
    char dir[1024], seed_dir[1100];
    snprintf(dir, sizeof dir, "runs/%s", rs.name);
    mkdir_p(dir);
    ReproRow rows[REPRO_MAX_ROWS];
    int n_rows = repro_rows(&rs, rows);
    // every row has room for REPRO_COLUMNS columns; --task math or choice fills the first three
    Score *scores = xcalloc((size_t)rs.seeds * n_rows * REPRO_COLUMNS, sizeof(Score));
    double start = now_seconds();
    for (int s = 0; s < rs.seeds; s++) {
        if (rs.seeds > 1) snprintf(seed_dir, sizeof seed_dir, "%s/seed%ld", dir, rs.seed + s);
        else snprintf(seed_dir, sizeof seed_dir, "%s", dir);
        repro_one_seed(&rs, rs.seed + s, seed_dir, rows, n_rows, repro_score(scores, n_rows, s, 0, 0));
    }
    repro_report(&rs, dir, rows, n_rows, scores);
    printf("\nwrote %s/results.json and results.svg in %.0fs\n", dir, now_seconds() - start);
    for (size_t i = 0; i < (size_t)rs.seeds * n_rows * REPRO_COLUMNS; i++) free(scores[i].hit);
    free(scores);
    return 0;
}

// =============================================================================================
// 11. Benchmark
// `./sirt bench` times full training steps (forward + backward + AdamW) on random weights and
// tokens, and reports the arithmetic rate that the matrix products and attention achieve.
// =============================================================================================

// FLOPs of one training step: the backward does twice the forward's products.
static double training_flops(const Config *cfg, int B, int T) {
    double BT = (double)B * T, C = cfg->C, H = cfg->hidden;
    double per_token = 2.0 * (cfg->L * (3 * C * C + C * C + 2 * H * C) + C * cfg->Vp);
    double attention = 2.0 * 2.0 * B * C * (T * (T + 1.0) / 2.0) * cfg->L; // causal: QKᵀ, AV
    return 3.0 * (BT * per_token + attention);
}

typedef struct {
    double ms_per_step, tok_per_s, gflops;
} BenchResult;

static BenchResult bench_training_step(Config cfg, int B, int T, int steps) {
    Model model;
    model_build(&model, cfg);
    model_init_random(&model, 42);
    size_t BT = (size_t)B * T;
    int *inputs = xmalloc(BT * sizeof(int)), *targets = xmalloc(BT * sizeof(int));
    float *coefs = xmalloc(BT * sizeof(float));
    Rng rng = rng_seeded(7);
    for (size_t i = 0; i < BT; i++) {
        inputs[i] = rng_u32(&rng) % cfg.V;
        targets[i] = rng_u32(&rng) % cfg.V;
        coefs[i] = 1.0f / BT;
    }
    OptimizerSettings opt = {1e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
    double best = 1e30;
    for (int s = 0; s <= steps; s++) { // step 0 warms up (allocation, page faults)
        double t0 = now_seconds();
        model_forward(&model, inputs, targets, B, T);
        model_backward(&model, coefs);
        model_update(&model, &opt, s + 1);
        double dt = now_seconds() - t0;
        if (s > 0 && dt < best) best = dt;
    }
    BenchResult r = {best * 1e3, BT / best, training_flops(&cfg, B, T) / best * 1e-9};
    free(inputs);
    free(targets);
    free(coefs);
    model_free(&model);
    return r;
}

// Decoding throughput in generated tokens per second for B sequences. With the cache: prefill
// `prompt` tokens, then greedy steps up to position `total`, averaged over the steps. Without:
// the cost of generating one token by re-running the full forward over `total` positions,
// measured on up to 8 rows at a time (the work per row is the same, and 64 rows of activations
// of a 124M model would not fit in memory).
static double bench_decode(Model *model, int B, int prompt, int total, int cached) {
    const Config *cfg = &model->config;
    Rng rng = rng_seeded(3);
    if (!cached) {
        int rows = B < 8 ? B : 8;
        int *inputs = xmalloc((size_t)rows * total * sizeof(int));
        int *targets = xmalloc((size_t)rows * total * sizeof(int));
        for (int i = 0; i < rows * total; i++) inputs[i] = rng_u32(&rng) % cfg->V, targets[i] = -1;
        model_forward(model, inputs, targets, rows, total); // warm-up
        double t0 = now_seconds();
        model_forward(model, inputs, targets, rows, total);
        double per_row = (now_seconds() - t0) / rows;
        free(inputs);
        free(targets);
        return 1.0 / per_row; // each row yields one new token per forward pass
    }
    KVCache kv;
    kv_cache_init(&kv, cfg, B, total);
    int **prompts = xmalloc(B * sizeof(int *)), *lengths = xmalloc(B * sizeof(int));
    int *slots = xmalloc(B * sizeof(int)), *tokens = xmalloc(B * sizeof(int)), *pos = xmalloc(B * sizeof(int));
    for (int b = 0; b < B; b++) {
        prompts[b] = xmalloc(prompt * sizeof(int));
        for (int t = 0; t < prompt; t++) prompts[b][t] = rng_u32(&rng) % cfg->V;
        lengths[b] = prompt;
        slots[b] = b;
    }
    decode_prefill(model, &kv, prompts, lengths, slots, B);
    double t0 = now_seconds();
    for (int p = prompt; p < total; p++) {
        for (int b = 0; b < B; b++) { // greedy: the argmax of each row
            const float *z = kv.host_logits + (size_t)b * cfg->Vp;
            int best = 0;
            for (int i = 1; i < cfg->V; i++) best = z[i] > z[best] ? i : best;
            tokens[b] = best;
            pos[b] = p;
        }
        decode_step(model, &kv, tokens, slots, pos, B);
    }
    double tok_per_s = (double)B * (total - prompt) / (now_seconds() - t0);
    for (int b = 0; b < B; b++) free(prompts[b]);
    free(prompts);
    free(lengths);
    free(slots);
    free(tokens);
    free(pos);
    kv_cache_free(&kv);
    return tok_per_s;
}

// Tokenizer encoding speed on a file: MB/s of the first pass (cold piece cache) and of a
// second pass (warm cache).
static void bench_tokenizer(const char *tokenizer, const char *path) {
    Tokenizer *tok = load_tokenizer(tokenizer);
    size_t bytes;
    char *text = (char *)read_whole_file(path, &bytes);
    if (!text) die("cannot open %s: %s", path, strerror(errno));
    for (int pass = 0; pass < 2; pass++) {
        TokIds ids = {0};
        double t0 = now_seconds();
        if (tok_encode_ordinary(tok, text, bytes, &ids) != 0) die("out of memory");
        double dt = now_seconds() - t0;
        printf("%s pass: %zu bytes -> %zu tokens (%.2f bytes/token) in %.3fs: %.1f MB/s\n",
               pass ? "second" : "first", bytes, ids.len, (double)bytes / ids.len, dt,
               bytes / dt * 1e-6);
        tok_ids_free(&ids);
    }
    free(text);
    tok_free(tok);
}

int cmd_bench(int argc, char **argv) {
    const char *config = NULL, *tokenizer = NULL, *text = NULL;
    int B = 4, T = 64, steps = 5, decoding = 1;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--config")) config = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--batch")) B = parse_long(f, flag_value(argc, argv, &i), 1, 1 << 16);
        else if (!strcmp(f, "--seq")) T = parse_long(f, flag_value(argc, argv, &i), 1, 1 << 16);
        else if (!strcmp(f, "--steps")) steps = parse_long(f, flag_value(argc, argv, &i), 1, 1000);
        else if (!strcmp(f, "--train-only")) decoding = 0;
        else if (!strcmp(f, "--tokenizer")) tokenizer = flag_value(argc, argv, &i);
        else if (!strcmp(f, "--text")) text = flag_value(argc, argv, &i);
        else die("bench: unknown flag '%s' (usage: ./sirt bench [--config L,NH,C,maxT,V] "
                 "[--batch B] [--seq T] [--steps N] [--train-only] | --tokenizer PATH --text FILE)", f);
    }
    if (tokenizer || text) {
        if (!tokenizer || !text) die("bench: --tokenizer and --text go together");
        bench_tokenizer(tokenizer, text);
        return 0;
    }
    struct { const char *name, *config; } shapes[] = {
        {"small (a)", "4,4,128,256,512"}, {"GPT-2 124M (b)", "12,12,768,1024,50257"}};
    int count = config ? 1 : 2;
    printf("training step (forward + backward + AdamW), B=%d T=%d, %d threads, best of %d\n",
           B, T, num_threads(), steps);
    printf("%-16s %12s %12s %12s %10s\n", "shape", "params", "ms/step", "tok/s", "GFLOP/s");
    for (int s = 0; s < count; s++) {
        Config cfg = parse_config(config ? config : shapes[s].config);
        if (T > cfg.maxT) die("--seq %d exceeds maxT %d", T, cfg.maxT);
        size_t params = count_parameters(&cfg);
        BenchResult r = bench_training_step(cfg, B, T, steps);
        printf("%-16s %12zu %12.1f %12.0f %10.1f\n", config ? config : shapes[s].name, params,
               r.ms_per_step, r.tok_per_s, r.gflops);
    }
    if (!decoding) return 0;
    int prompt = 16, total = 256;
    for (int s = 0; s < count; s++) { // shorter contexts: generate within them
        Config cfg = parse_config(config ? config : shapes[s].config);
        if (total > cfg.maxT) total = cfg.maxT;
    }
    if (prompt > total / 2) prompt = total / 2 > 1 ? total / 2 : 1;
    printf("\ndecoding, generated tokens/s: prompt %d tokens, generating up to position %d; "
           "'full' re-runs the forward over %d positions per token\n", prompt, total, total);
    printf("%-16s %12s %12s %12s %12s %12s\n", "shape", "B=1 cache", "B=1 full", "B=64 cache",
           "B=64 full", "weights GB/s");
    for (int s = 0; s < count; s++) {
        Model model;
        model_build(&model, parse_config(config ? config : shapes[s].config));
        model_init_random(&model, 42);
        double rates[4];
        for (int i = 0; i < 4; i++) rates[i] = bench_decode(&model, i < 2 ? 1 : 64, prompt, total, i % 2 == 0);
        // reading every weight once, the floor of batch-1 decoding (memory bandwidth)
        double read_gbs = 0.0;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now_seconds();
            volatile double sink = sum_squares(model.params_memory, model.num_parameters);
            (void)sink;
            double gbs = model.num_parameters * 4.0 / (now_seconds() - t0) * 1e-9;
            read_gbs = gbs > read_gbs ? gbs : read_gbs;
        }
        printf("%-16s %12.0f %12.1f %12.0f %12.1f %12.1f\n", config ? config : shapes[s].name,
               rates[0], rates[1], rates[2], rates[3], read_gbs);
        if (s == count - 1 || config)
            printf("batch-1 bound from bandwidth: %.0f tok/s (%zu MB of weights per token)\n",
                   read_gbs * 1e9 / (model.num_parameters * 4.0), model.num_parameters * 4 / 1000000);
        model_free(&model);
    }
    return 0;
}

// =============================================================================================
// 12. Main
// =============================================================================================
void usage(void) {
    printf("sirt — Self-Refine Instruction-Tuning, from scratch in C\n\n"
           "commands:\n"
           "  ./sirt             the reproduction on the built-in task (= ./sirt reproduce)\n"
           "  ./sirt train ...   language-model training on llm.c token shards (--help for flags)\n"
           "  ./sirt data ...    generate the built-in task (math or choice) as JSONL\n"
           "  ./sirt sft ...     phase 1: supervised fine-tuning on prompt/completion JSONL\n"
           "  ./sirt sample ...  complete prompts (KV-cache decoding, temperature, top-k, top-p)\n"
           "  ./sirt eval ...    accuracy on reasoning items (greedy, maj@K, pass@K; --teacher)\n"
           "  ./sirt dpo ...     preference training (dpo, cdpo, ipo, rpo) against a reference\n"
           "  ./sirt refine ...  phase 2: sample, score, pair and DPO, in rounds\n"
           "  ./sirt bench ...   time a training step at the benchmark shapes\n"
           "  ./sirt tokenizer --train FILE[,FILE] --vocab N --out tok.bin [--llmc-out F] [--split-digits]\n"
           "                     train a byte-level BPE tokenizer\n"
           "  ./sirt tokenize --tokenizer PATH [--decode]\n"
           "                     stdin lines -> token ids per line (or back with --decode)\n"
           "  ./sirt help        this text\n");
}

#ifndef SIRT_NO_MAIN
int main(int argc, char **argv) {
    if (argc < 2) return cmd_reproduce(0, argv + 1); // the main job
    const char *command = argv[1];
    if (!strcmp(command, "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(command, "sft")) return cmd_sft(argc - 2, argv + 2);
    if (!strcmp(command, "data")) return cmd_data(argc - 2, argv + 2);
    if (!strcmp(command, "sample")) return cmd_sample(argc - 2, argv + 2);
    if (!strcmp(command, "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(command, "dpo")) return cmd_dpo(argc - 2, argv + 2);
    if (!strcmp(command, "refine")) return cmd_refine(argc - 2, argv + 2);
    if (!strcmp(command, "reproduce")) return cmd_reproduce(argc - 2, argv + 2);
    if (!strcmp(command, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(command, "tokenizer")) return cmd_tokenizer(argc - 2, argv + 2);
    if (!strcmp(command, "tokenize")) return cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(command, "help") || !strcmp(command, "--help") || !strcmp(command, "-h")) {
        usage();
        return 0;
    }
    die("unknown command '%s' (see ./sirt help)", command);
}
#endif
