// tests/gpu_kernels.c — every kernel of model.h on the GPU (kernels.cu) against its CPU version
// (sirt.c), on fresh random inputs, in one program. `make gpu-check` builds it: the CPU kernels
// come from sirt.c compiled with -DSIRT_NO_MAIN and each model.h function renamed cpu_NAME
// (tests/cpu_kernels.o, every other symbol made local with objcopy); the GPU ones from
// kernels.o. Inputs reach the GPU through dev_to_device and results come back through
// dev_to_host. Backward kernels accumulate (+=), so their outputs start from the same random
// values on both sides.
//
// The error printed for a tensor is max|gpu - cpu| / max|cpu| (relative to the tensor's largest
// value, so that entries near zero do not dominate). A check passes when it is at most TOL.
// Prints one PASS/FAIL line per output tensor and exits 1 when any check fails.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model.h"

// the CPU versions, from tests/cpu_kernels.o
void cpu_encoder_forward(float *, const int *, const int *, const float *, const float *, int,
                         int, int);
void cpu_encoder_backward(float *, float *, const float *, const int *, const int *, int, int,
                          int);
void cpu_layernorm_forward(float *, float *, float *, const float *, const float *,
                           const float *, int, int, float);
void cpu_layernorm_backward(float *, float *, float *, const float *, const float *,
                            const float *, const float *, const float *, int, int);
void cpu_matmul_forward(float *, const float *, const float *, const float *, int, int, int);
void cpu_matmul_pack(float *, const float *, int, int);
void cpu_matmul_forward_packed(float *, const float *, const float *, const float *, int, int, int);
void cpu_matmul_backward(float *, float *, float *, const float *, const float *,
                         const float *, int, int, int);
void cpu_attention_forward(float *, float *, const float *, const int *, int, int, int, int,
                           int);
void cpu_attention_backward(float *, const float *, const float *, const float *, const int *,
                            int, int, int, int, int);
void cpu_rmsnorm_forward(float *, float *, const float *, const float *, int, int, float);
void cpu_rmsnorm_backward(float *, float *, const float *, const float *, const float *,
                          const float *, int, int);
void cpu_rope_forward(float *, const float *, const int *, int, int, int, int, int, float);
void cpu_rope_backward(float *, const float *, const int *, int, int, int, int, int, float);
void cpu_swiglu_forward(float *, const float *, int, int);
void cpu_swiglu_backward(float *, const float *, const float *, int, int);
void cpu_gelu_forward(float *, const float *, size_t);
void cpu_gelu_backward(float *, const float *, const float *, size_t);
void cpu_residual_forward(float *, const float *, const float *, size_t);
void cpu_value_head_forward(float *, const float *, const int *, const float *, const float *, int,
                            int);
void cpu_value_head_backward(float *, float *, float *, const float *, const float *, const int *,
                             const float *, int, int);
void cpu_classifier_forward(float *, float *, const float *, const int *, int, int, int);
void cpu_classifier_backward(float *, const float *, const int *, const float *, int, int, int);
void cpu_attention_decode(float *, float *, float *, const float *, const int *, const int *,
                          const int *, const int *, int, int, int, int, int);
size_t cpu_dev_count_nonfinite(const float *, size_t);
double cpu_sum_squares(const float *, size_t);
void cpu_adamw_update(float *, const float *, float *, float *, size_t, float, float, float,
                      float, float, float, int);

#define TOL 1e-4
static int failures, checks;
static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;

static float urand(void) { // uniform in [-1, 1), xorshift64*
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    unsigned long long r = rng_state * 2685821657736338717ull;
    return (float)((r >> 40) / 16777216.0 * 2.0 - 1.0);
}

static float *rnd(size_t n, float scale) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * urand();
    return x;
}

static float *copy(const float *x, size_t n) {
    float *y = malloc((n ? n : 1) * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

static float *up(const float *h, size_t n) {
    float *d = dev_alloc(n ? n : 1);
    dev_to_device(d, h, n * sizeof(float));
    return d;
}

static int *up_int(const int *h, size_t n) {
    int *d = dev_alloc_int(n ? n : 1);
    dev_to_device(d, h, n * sizeof(int));
    return d;
}

// Compares the GPU tensor gpu (n) with the CPU's cpu (n); prints and counts the result.
static void compare(const char *kernel, const char *tensor, const char *shape, const float *cpu,
                    const float *gpu, size_t n) {
    float *g = malloc(n * sizeof(float));
    dev_to_host(g, gpu, n * sizeof(float));
    double maxdiff = 0.0, maxref = 0.0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)g[i] - (double)cpu[i]);
        if (!(d <= maxdiff)) maxdiff = d; // NaN propagates as "not <="
        if (fabs(cpu[i]) > maxref) maxref = fabs(cpu[i]);
        if (!isfinite(g[i]) && isfinite(cpu[i])) bad++;
    }
    double err = maxref > 0 ? maxdiff / maxref : maxdiff;
    int ok = bad == 0 && err <= TOL;
    checks++;
    failures += !ok;
    printf("%s kernel %-20s %-8s %-22s max rel err %.3e\n", ok ? "PASS" : "FAIL", kernel,
           tensor, shape, err);
    free(g);
}

// Packed rows (model.h, "Examples in a row"): each row cut into examples at random places, pos
// counting from 0 in each; about one token in four starts a new example.
static int *packed_positions(int B, int T) {
    int *pos = malloc((size_t)B * T * sizeof(int));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            pos[b * T + t] = t == 0 || urand() < -0.5f ? 0 : pos[b * T + t - 1] + 1;
    return pos;
}

// packed: the encoder, attention and rotary kernels run with packed rows' positions; otherwise
// with pos = NULL (one example per row), and the other kernels run too. KVH key/value heads:
// NH (GPT-2) or fewer (grouped-query attention); Llama's kernels run at every shape.
static void run_shape(int B, int T, int C, int NH, int KVH, int V, int packed) {
    int N = B * T, Vp = (V + 127) / 128 * 128, maxT = T + 3, H = 4 * C;
    int KVC = KVH * (C / NH), QKV = C + 2 * KVC;
    char shape[64];
    snprintf(shape, sizeof shape, "B%d T%d C%d NH%d KV%d%s", B, T, C, NH, KVH,
             packed ? " packed" : "");
    int *packed_pos = packed ? packed_positions(B, T) : NULL;
    int *d_packed_pos = packed ? up_int(packed_pos, N) : NULL;
    int *tok = malloc(N * sizeof(int)), *targets = malloc(N * sizeof(int));
    for (int i = 0; i < N; i++) {
        tok[i] = (int)((urand() + 1.0f) * 0.5f * V) % V;
        targets[i] = (i % 7 == 3) ? -1 : (int)((urand() + 1.0f) * 0.5f * V) % V;
    }
    int *d_tok = up_int(tok, N), *d_targets = up_int(targets, N);

    { // encoder
        float *wte = rnd((size_t)Vp * C, 1), *wpe = rnd((size_t)maxT * C, 1);
        float *out = rnd((size_t)N * C, 1), *d_out = up(out, (size_t)N * C);
        float *d_wte = up(wte, (size_t)Vp * C), *d_wpe = up(wpe, (size_t)maxT * C);
        cpu_encoder_forward(out, tok, packed_pos, wte, wpe, B, T, C);
        encoder_forward(d_out, d_tok, d_packed_pos, d_wte, d_wpe, B, T, C);
        compare("encoder_forward", "out", shape, out, d_out, (size_t)N * C);
        float *dout = rnd((size_t)N * C, 1), *d_dout = up(dout, (size_t)N * C);
        dev_to_device(d_wte, wte, (size_t)Vp * C * sizeof(float));
        dev_to_device(d_wpe, wpe, (size_t)maxT * C * sizeof(float));
        cpu_encoder_backward(wte, wpe, dout, tok, packed_pos, B, T, C);
        encoder_backward(d_wte, d_wpe, d_dout, d_tok, d_packed_pos, B, T, C);
        compare("encoder_backward", "dwte", shape, wte, d_wte, (size_t)Vp * C);
        compare("encoder_backward", "dwpe", shape, wpe, d_wpe, (size_t)maxT * C);
        // decoding's use: N rows of T = 1, each token at its own position
        int *pos = malloc(N * sizeof(int));
        for (int i = 0; i < N; i++) pos[i] = (i * 7 + 1) % maxT;
        int *d_pos = up_int(pos, N);
        cpu_encoder_forward(out, tok, pos, wte, wpe, N, 1, C);
        encoder_forward(d_out, d_tok, d_pos, d_wte, d_wpe, N, 1, C);
        compare("encoder_forward/T=1", "out", shape, out, d_out, (size_t)N * C);
        // Llama's use: no position embedding
        cpu_encoder_forward(out, tok, packed_pos, wte, NULL, B, T, C);
        encoder_forward(d_out, d_tok, d_packed_pos, d_wte, NULL, B, T, C);
        compare("encoder_forward/nopos", "out", shape, out, d_out, (size_t)N * C);
        cpu_encoder_backward(wte, NULL, dout, tok, packed_pos, B, T, C);
        encoder_backward(d_wte, NULL, d_dout, d_tok, d_packed_pos, B, T, C);
        compare("encoder_backward/nopos", "dwte", shape, wte, d_wte, (size_t)Vp * C);
        free(wte), free(wpe), free(out), free(dout), free(pos);
        dev_free(d_wte), dev_free(d_wpe), dev_free(d_out), dev_free(d_dout), dev_free(d_pos);
    }
    if (!packed) { // layernorm
        size_t nc = (size_t)N * C;
        float *inp = rnd(nc, 2), *w = rnd(C, 1), *b = rnd(C, 1), *out = rnd(nc, 1);
        for (size_t i = 0; i < nc; i++) inp[i] += 0.5f; // a nonzero mean
        float *mean = rnd(N, 1), *rstd = rnd(N, 1);
        float *d_inp = up(inp, nc), *d_w = up(w, C), *d_b = up(b, C), *d_out = up(out, nc);
        float *d_mean = up(mean, N), *d_rstd = up(rstd, N);
        cpu_layernorm_forward(out, mean, rstd, inp, w, b, N, C, 1e-5f);
        layernorm_forward(d_out, d_mean, d_rstd, d_inp, d_w, d_b, N, C, 1e-5f);
        compare("layernorm_forward", "out", shape, out, d_out, nc);
        compare("layernorm_forward", "mean", shape, mean, d_mean, N);
        compare("layernorm_forward", "rstd", shape, rstd, d_rstd, N);
        dev_to_device(d_mean, mean, N * sizeof(float)); // the backward reads the CPU's stats
        dev_to_device(d_rstd, rstd, N * sizeof(float));
        float *dout = rnd(nc, 1), *dinp = rnd(nc, 1), *dw = rnd(C, 1), *db = rnd(C, 1);
        float *d_dout = up(dout, nc), *d_dinp = up(dinp, nc), *d_dw = up(dw, C), *d_db = up(db, C);
        cpu_layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
        layernorm_backward(d_dinp, d_dw, d_db, d_dout, d_inp, d_w, d_mean, d_rstd, N, C);
        compare("layernorm_backward", "dinp", shape, dinp, d_dinp, nc);
        compare("layernorm_backward", "dweight", shape, dw, d_dw, C);
        compare("layernorm_backward", "dbias", shape, db, d_db, C);
        free(inp), free(w), free(b), free(out), free(mean), free(rstd), free(dout), free(dinp);
        free(dw), free(db);
        dev_free(d_inp), dev_free(d_w), dev_free(d_b), dev_free(d_out), dev_free(d_mean);
        dev_free(d_rstd), dev_free(d_dout), dev_free(d_dinp), dev_free(d_dw), dev_free(d_db);
    }
    for (int with_bias = packed ? -1 : 1; with_bias >= 0; with_bias--) { // matmul, C -> 4C, with and without bias
        int OC = H;
        size_t ni = (size_t)N * C, no = (size_t)N * OC, nw = (size_t)OC * C;
        float *inp = rnd(ni, 1), *w = rnd(nw, 0.1f), *b = rnd(OC, 1), *out = rnd(no, 1);
        float *d_inp = up(inp, ni), *d_w = up(w, nw), *d_b = up(b, OC), *d_out = up(out, no);
        const char *fw = with_bias ? "matmul_forward" : "matmul_forward/nb";
        const char *bw = with_bias ? "matmul_backward" : "matmul_backward/nb";
        cpu_matmul_forward(out, inp, w, with_bias ? b : NULL, N, C, OC);
        matmul_forward(d_out, d_inp, d_w, with_bias ? d_b : NULL, N, C, OC);
        compare(fw, "out", shape, out, d_out, no);
        { // decoding's product: the weight packed (each side in its own layout), then read
            size_t np = matmul_packed_floats(C, OC);
            float *wp = malloc(np * sizeof(float)), *d_wp = dev_alloc(np);
            float *outp = rnd(no, 1), *d_outp = up(outp, no);
            cpu_matmul_pack(wp, w, C, OC);
            matmul_pack(d_wp, d_w, C, OC);
            cpu_matmul_forward_packed(outp, inp, wp, with_bias ? b : NULL, N, C, OC);
            matmul_forward_packed(d_outp, d_inp, d_wp, with_bias ? d_b : NULL, N, C, OC);
            compare(with_bias ? "matmul_forward_packed" : "matmul_forward_packed/nb", "out", shape,
                    outp, d_outp, no);
            free(wp), free(outp), dev_free(d_wp), dev_free(d_outp);
        }
        float *dout = rnd(no, 1), *dinp = rnd(ni, 1), *dw = rnd(nw, 1), *db = rnd(OC, 1);
        float *d_dout = up(dout, no), *d_dinp = up(dinp, ni), *d_dw = up(dw, nw), *d_db = up(db, OC);
        cpu_matmul_backward(dinp, dw, with_bias ? db : NULL, dout, inp, w, N, C, OC);
        matmul_backward(d_dinp, d_dw, with_bias ? d_db : NULL, d_dout, d_inp, d_w, N, C, OC);
        compare(bw, "dinp", shape, dinp, d_dinp, ni);
        compare(bw, "dweight", shape, dw, d_dw, nw);
        if (with_bias) compare(bw, "dbias", shape, db, d_db, OC);
        free(inp), free(w), free(b), free(out), free(dout), free(dinp), free(dw), free(db);
        dev_free(d_inp), dev_free(d_w), dev_free(d_b), dev_free(d_out), dev_free(d_dout);
        dev_free(d_dinp), dev_free(d_dw), dev_free(d_db);
    }
    { // attention
        size_t nq = (size_t)N * QKV, no = (size_t)N * C, na = (size_t)B * NH * T * T;
        float *qkv = rnd(nq, 1), *out = rnd(no, 1), *att = rnd(na, 1);
        float *d_qkv = up(qkv, nq), *d_out = up(out, no), *d_att = up(att, na);
        cpu_attention_forward(out, att, qkv, packed_pos, B, T, C, NH, KVH);
        attention_forward(d_out, d_att, d_qkv, d_packed_pos, B, T, C, NH, KVH);
        compare("attention_forward", "out", shape, out, d_out, no);
        compare("attention_forward", "att", shape, att, d_att, na);
        dev_to_device(d_att, att, na * sizeof(float));
        float *dout = rnd(no, 1), *dqkv = rnd(nq, 1);
        float *d_dout = up(dout, no), *d_dqkv = up(dqkv, nq);
        cpu_attention_backward(dqkv, dout, qkv, att, packed_pos, B, T, C, NH, KVH);
        attention_backward(d_dqkv, d_dout, d_qkv, d_att, d_packed_pos, B, T, C, NH, KVH);
        compare("attention_backward", "dqkv", shape, dqkv, d_dqkv, nq);
        // the KV cache: prefill B slots (of S = B + 1) with T positions (of Tc = T + 2), every
        // token of qkv a row of attention_decode (the rows of one slot attend causally among
        // themselves), then decode one token per slot at position T (and one more sequence at
        // position 0)
        int S = B + 1, Tc = T + 2, ND = B + 1;
        size_t ncache = (size_t)S * Tc * KVC;
        float *kc = rnd(ncache, 1), *vc = rnd(ncache, 1);
        float *d_kc = up(kc, ncache), *d_vc = up(vc, ncache);
        int *slot = malloc(S * sizeof(int)), *pos = malloc(ND * sizeof(int));
        for (int b = 0; b < B; b++) slot[b] = B - 1 - b; // not the identity
        slot[B] = B;
        for (int n = 0; n < ND; n++) pos[n] = n < B ? T : 0;
        int *d_slot = up_int(slot, S), *d_pos = up_int(pos, ND);
        int *row_slot = malloc(N * sizeof(int)), *row_pos = malloc(N * sizeof(int));
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) row_slot[b * T + t] = slot[b], row_pos[b * T + t] = t;
        int *d_row_slot = up_int(row_slot, N), *d_row_pos = up_int(row_pos, N);
        cpu_attention_decode(out, kc, vc, qkv, row_slot, row_pos, NULL, NULL, N, Tc, C, NH, KVH);
        attention_decode(d_out, d_kc, d_vc, d_qkv, d_row_slot, d_row_pos, NULL, NULL, N, Tc, C, NH,
                         KVH);
        compare("attention_decode (prefill)", "out", shape, out, d_out, no);
        compare("attention_decode (prefill)", "kcache", shape, kc, d_kc, ncache);
        compare("attention_decode (prefill)", "vcache", shape, vc, d_vc, ncache);
        free(row_slot), free(row_pos), dev_free(d_row_slot), dev_free(d_row_pos);
        dev_to_device(d_kc, kc, ncache * sizeof(float));
        dev_to_device(d_vc, vc, ncache * sizeof(float));
        float *qn = rnd((size_t)ND * QKV, 1), *on = rnd((size_t)ND * C, 1);
        float *d_qn = up(qn, (size_t)ND * QKV), *d_on = up(on, (size_t)ND * C);
        cpu_attention_decode(on, kc, vc, qn, slot, pos, NULL, NULL, ND, Tc, C, NH, KVH);
        attention_decode(d_on, d_kc, d_vc, d_qn, d_slot, d_pos, NULL, NULL, ND, Tc, C, NH, KVH);
        compare("attention_decode", "out", shape, on, d_on, (size_t)ND * C);
        compare("attention_decode", "kcache", shape, kc, d_kc, ncache);
        compare("attention_decode", "vcache", shape, vc, d_vc, ncache);
        // again with new tokens (so that their keys and values differ from those the call above
        // wrote): the first T/2 positions of sequence n < B read from another sequence's slot (a
        // shared prompt); the last sequence reads its own. Each writes only its own slot at its
        // position: the caches after the call must match too, the prompt slots left as they were.
        int *prefix_slot = malloc(ND * sizeof(int)), *prefix_len = malloc(ND * sizeof(int));
        for (int n = 0; n < ND; n++) {
            prefix_slot[n] = n < B ? slot[(n + 1) % B] : slot[n];
            prefix_len[n] = n < B ? T / 2 : 0;
        }
        int *d_prefix_slot = up_int(prefix_slot, ND), *d_prefix_len = up_int(prefix_len, ND);
        float *qs = rnd((size_t)ND * QKV, 1), *d_qs = up(qs, (size_t)ND * QKV);
        cpu_attention_decode(on, kc, vc, qs, slot, pos, prefix_slot, prefix_len, ND, Tc, C, NH, KVH);
        attention_decode(d_on, d_kc, d_vc, d_qs, d_slot, d_pos, d_prefix_slot, d_prefix_len, ND, Tc,
                         C, NH, KVH);
        compare("attention_decode (shared prompts)", "out", shape, on, d_on, (size_t)ND * C);
        compare("attention_decode (shared prompts)", "kcache", shape, kc, d_kc, ncache);
        compare("attention_decode (shared prompts)", "vcache", shape, vc, d_vc, ncache);
        free(prefix_slot), free(prefix_len), dev_free(d_prefix_slot), dev_free(d_prefix_len);
        free(qs), dev_free(d_qs);
        free(qkv), free(out), free(att), free(dout), free(dqkv), free(kc), free(vc), free(slot);
        free(pos), free(qn), free(on);
        dev_free(d_qkv), dev_free(d_out), dev_free(d_att), dev_free(d_dout), dev_free(d_dqkv);
        dev_free(d_kc), dev_free(d_vc), dev_free(d_slot), dev_free(d_pos), dev_free(d_qn);
        dev_free(d_on);
    }
    { // Llama's rotary embedding, with packed rows' positions or pos = NULL
        size_t nq = (size_t)N * QKV;
        float *inp = rnd(nq, 1), *out = rnd(nq, 1), *dout = rnd(nq, 1), *dinp = rnd(nq, 1);
        float *d_inp = up(inp, nq), *d_out = up(out, nq), *d_dout = up(dout, nq);
        float *d_dinp = up(dinp, nq);
        cpu_rope_forward(out, inp, packed_pos, B, T, C, NH, KVH, 10000.0f);
        rope_forward(d_out, d_inp, d_packed_pos, B, T, C, NH, KVH, 10000.0f);
        compare("rope_forward", "out", shape, out, d_out, nq);
        cpu_rope_backward(dinp, dout, packed_pos, B, T, C, NH, KVH, 10000.0f);
        rope_backward(d_dinp, d_dout, d_packed_pos, B, T, C, NH, KVH, 10000.0f);
        compare("rope_backward", "dinp", shape, dinp, d_dinp, nq);
        free(inp), free(out), free(dout), free(dinp);
        dev_free(d_inp), dev_free(d_out), dev_free(d_dout), dev_free(d_dinp);
    }
    if (!packed) { // Llama's RMSNorm and SwiGLU (of width H)
        size_t nc = (size_t)N * C, nh = (size_t)N * H;
        float *inp = rnd(nc, 2), *w = rnd(C, 1), *out = rnd(nc, 1), *rstd = rnd(N, 1);
        float *d_inp = up(inp, nc), *d_w = up(w, C), *d_out = up(out, nc), *d_rstd = up(rstd, N);
        cpu_rmsnorm_forward(out, rstd, inp, w, N, C, 1e-5f);
        rmsnorm_forward(d_out, d_rstd, d_inp, d_w, N, C, 1e-5f);
        compare("rmsnorm_forward", "out", shape, out, d_out, nc);
        compare("rmsnorm_forward", "rstd", shape, rstd, d_rstd, N);
        dev_to_device(d_rstd, rstd, N * sizeof(float)); // the backward reads the CPU's stats
        float *dout = rnd(nc, 1), *dinp = rnd(nc, 1), *dw = rnd(C, 1);
        float *d_dout = up(dout, nc), *d_dinp = up(dinp, nc), *d_dw = up(dw, C);
        cpu_rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C);
        rmsnorm_backward(d_dinp, d_dw, d_dout, d_inp, d_w, d_rstd, N, C);
        compare("rmsnorm_backward", "dinp", shape, dinp, d_dinp, nc);
        compare("rmsnorm_backward", "dweight", shape, dw, d_dw, C);
        float *gate_up = rnd(2 * nh, 4), *sw = rnd(nh, 1), *dsw = rnd(nh, 1), *dgu = rnd(2 * nh, 1);
        float *d_gu = up(gate_up, 2 * nh), *d_sw = up(sw, nh), *d_dsw = up(dsw, nh);
        float *d_dgu = up(dgu, 2 * nh);
        cpu_swiglu_forward(sw, gate_up, N, H);
        swiglu_forward(d_sw, d_gu, N, H);
        compare("swiglu_forward", "out", shape, sw, d_sw, nh);
        cpu_swiglu_backward(dgu, gate_up, dsw, N, H);
        swiglu_backward(d_dgu, d_gu, d_dsw, N, H);
        compare("swiglu_backward", "dinp", shape, dgu, d_dgu, 2 * nh);
        free(inp), free(w), free(out), free(rstd), free(dout), free(dinp), free(dw);
        free(gate_up), free(sw), free(dsw), free(dgu);
        dev_free(d_inp), dev_free(d_w), dev_free(d_out), dev_free(d_rstd), dev_free(d_dout);
        dev_free(d_dinp), dev_free(d_dw), dev_free(d_gu), dev_free(d_sw), dev_free(d_dsw);
        dev_free(d_dgu);
    }
    if (!packed) { // gelu and residual
        size_t n = (size_t)N * H;
        float *inp = rnd(n, 4), *out = rnd(n, 1), *dout = rnd(n, 1), *dinp = rnd(n, 1);
        float *d_inp = up(inp, n), *d_out = up(out, n), *d_dout = up(dout, n), *d_dinp = up(dinp, n);
        cpu_gelu_forward(out, inp, n);
        gelu_forward(d_out, d_inp, n);
        compare("gelu_forward", "out", shape, out, d_out, n);
        cpu_gelu_backward(dinp, inp, dout, n);
        gelu_backward(d_dinp, d_inp, d_dout, n);
        compare("gelu_backward", "dinp", shape, dinp, d_dinp, n);
        cpu_residual_forward(out, inp, dout, n);
        residual_forward(d_out, d_inp, d_dout, n);
        compare("residual_forward", "out", shape, out, d_out, n);
        { // the value head: read at every third row of inp viewed as (N*H/C, C)
            int rows = (int)(n / C), M = rows / 3;
            int *idx = malloc((size_t)(M ? M : 1) * sizeof(int));
            for (int m = 0; m < M; m++) idx[m] = 3 * m + m % 3;
            float *w = rnd(C + 1, 1), *r = rnd(M, 1), *dr = rnd(M, 1), *dw = rnd(C + 1, 1);
            float *dx = copy(dinp, n);
            float *d_w = up(w, C + 1), *d_r = up(r, M), *d_dr = up(dr, M), *d_dw = up(dw, C + 1);
            float *d_dx = up(dx, n);
            int *d_idx = up_int(idx, M);
            cpu_value_head_forward(r, inp, idx, w, w + C, M, C);
            value_head_forward(d_r, d_inp, d_idx, d_w, d_w + C, M, C);
            compare("value_head_forward", "out", shape, r, d_r, M);
            cpu_value_head_backward(dx, dw, dw + C, dr, inp, idx, w, M, C);
            value_head_backward(d_dx, d_dw, d_dw + C, d_dr, d_inp, d_idx, d_w, M, C);
            compare("value_head_backward", "dinp", shape, dx, d_dx, n);
            compare("value_head_backward", "dw, db", shape, dw, d_dw, C + 1);
            free(idx), free(w), free(r), free(dr), free(dw), free(dx);
            dev_free(d_w), dev_free(d_r), dev_free(d_dr), dev_free(d_dw), dev_free(d_dx);
            dev_free(d_idx);
        }
        // the checks and the optimizer
        float *withbad = copy(inp, n);
        for (size_t i = 0; i < n; i += 997) withbad[i] = (i / 997) % 3 == 0 ? NAN : (i / 997) % 3 == 1 ? INFINITY : -INFINITY;
        dev_to_device(d_out, withbad, n * sizeof(float));
        size_t c1 = cpu_dev_count_nonfinite(withbad, n), g1 = dev_count_nonfinite(d_out, n);
        int ok = c1 == g1 && c1 == (n + 996) / 997;
        checks++, failures += !ok;
        printf("%s kernel %-20s %-8s %-22s cpu %zu gpu %zu of %zu\n", ok ? "PASS" : "FAIL",
               "dev_count_nonfinite", "count", shape, c1, g1, n);
        double cs = cpu_sum_squares(inp, n), gs = sum_squares(d_inp, n);
        double err = fabs(gs - cs) / cs;
        ok = err <= 1e-6;
        checks++, failures += !ok;
        printf("%s kernel %-20s %-8s %-22s max rel err %.3e\n", ok ? "PASS" : "FAIL",
               "sum_squares", "sum", shape, err);
        float *m = rnd(n, 0.1f), *v = rnd(n, 0.1f);
        for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
        float *d_m = up(m, n), *d_v = up(v, n);
        cpu_adamw_update(inp, dout, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, 3);
        adamw_update(d_inp, d_dout, d_m, d_v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, 3);
        compare("adamw_update", "param", shape, inp, d_inp, n);
        compare("adamw_update", "m", shape, m, d_m, n);
        compare("adamw_update", "v", shape, v, d_v, n);
        free(inp), free(out), free(dout), free(dinp), free(withbad), free(m), free(v);
        dev_free(d_inp), dev_free(d_out), dev_free(d_dout), dev_free(d_dinp), dev_free(d_m);
        dev_free(d_v);
    }
    if (!packed) { // classifier
        size_t nl = (size_t)N * Vp;
        float *logits = rnd(nl, 3), *lp = rnd(N, 1), *lse = rnd(N, 1), *coef = rnd(N, 1);
        for (int i = 0; i < N; i++) if (targets[i] < 0 || i % 5 == 0) coef[i] = 0; // as the callers do
        float *d_logits = up(logits, nl), *d_lp = up(lp, N), *d_lse = up(lse, N), *d_coef = up(coef, N);
        char vshape[64];
        snprintf(vshape, sizeof vshape, "N%d V%d Vp%d", N, V, Vp);
        cpu_classifier_forward(lp, lse, logits, targets, N, V, Vp);
        classifier_forward(d_lp, d_lse, d_logits, d_targets, N, V, Vp);
        compare("classifier_forward", "logprobs", vshape, lp, d_lp, N);
        compare("classifier_forward", "lse", vshape, lse, d_lse, N);
        dev_to_device(d_lse, lse, N * sizeof(float));
        cpu_classifier_backward(logits, lse, targets, coef, N, V, Vp);
        classifier_backward(d_logits, d_lse, d_targets, d_coef, N, V, Vp);
        compare("classifier_backward", "dlogits", vshape, logits, d_logits, nl);
        free(logits), free(lp), free(lse), free(coef);
        dev_free(d_logits), dev_free(d_lp), dev_free(d_lse), dev_free(d_coef);
    }
    free(tok), free(targets), free(packed_pos);
    dev_free(d_tok), dev_free(d_targets);
    if (packed) dev_free(d_packed_pos);
}

int main(void) {
    for (int packed = 0; packed < 2; packed++) { // packed: the encoder and attention again
        run_shape(3, 37, 96, 4, 4, 500, packed);      // odd sizes: partial blocks everywhere
        run_shape(2, 256, 768, 12, 12, 50257, packed); // one GPT-2 124M layer's shapes
        run_shape(3, 37, 96, 4, 2, 500, packed);      // grouped-query attention, odd sizes
        run_shape(2, 128, 576, 9, 3, 49152, packed);  // a SmolLM-135M-shaped Llama layer
    }
    printf("%s: %d of %d kernel checks passed\n", failures ? "FAIL" : "PASS", checks - failures,
           checks);
    return failures != 0;
}
