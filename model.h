// model.h — the student's shape and the one kernel interface.
//
// Everything that touches tensor memory goes through the functions declared here. Their CPU
// versions live in sirt.c (section "Kernels"); kernels.cu implements the same functions for an
// NVIDIA GPU. The training, sampling and preference code in sirt.c calls only these, so porting
// the program to new hardware means re-implementing this list and nothing else.
//
// Conventions for every kernel:
//   - Tensors are float32, row-major, contiguous; shapes are written in the comment above each
//     function, e.g. `inp (N,C) -> out (N,OC)`. N is the number of token positions (B*T).
//   - Pointers are "device" pointers: on the CPU that is ordinary memory; on a GPU they come from
//     dev_alloc and only dev_to_host/dev_to_device move data between host and device.
//   - Backward kernels ACCUMULATE (+=) into the gradients they produce, as in llm.c: a tensor that
//     is read by two consumers receives both contributions, and the caller zeroes all gradients
//     once before a backward pass.
//   - Results do not depend on the number of threads: every reduction has a fixed order.
#ifndef SIRT_MODEL_H
#define SIRT_MODEL_H

#include <stddef.h>
#include <stdint.h>

// ---------------------------------------------------------------------------------------------
// The configuration of a model: GPT-2's shape or Llama's (sirt.c, section 2).
enum { ARCH_GPT2 = 0, ARCH_LLAMA = 1 }; // the values of Config.arch
typedef struct {
    int arch;       // ARCH_GPT2 or ARCH_LLAMA
    int L;          // number of transformer blocks (layers)
    int NH;         // attention (query) heads
    int C;          // channels (embedding width); head size is C / NH
    int hidden;     // MLP width: 4*C for GPT-2; Llama's SwiGLU width (from the file or the flags)
    int maxT;       // context length: learned positions (GPT-2), longest sequence (Llama)
    int V;          // vocabulary size
    int Vp;         // vocabulary padded up to a multiple of 128 (rows V..Vp-1 of wte are zero)
    int KVH;        // key/value heads: NH for GPT-2; fewer for grouped-query attention (NH % KVH = 0)
    int tied;       // 1: the classifier is the token embedding wte (GPT-2 always); 0: its own wcls
    float norm_eps; // LayerNorm (GPT-2) and RMSNorm (Llama) epsilon: 1e-5
    float rope_theta; // Llama: the base of the rotary embedding's frequencies, 10000
} Config;

// ---------------------------------------------------------------------------------------------
// Memory: one allocation per kind of buffer (parameters, gradients, moments, activations).
float *dev_alloc(size_t count);            // count floats, uninitialised; NULL when out of memory
void dev_free(void *ptr);
void dev_zero(float *ptr, size_t count);
void dev_to_device(void *dst, const void *src, size_t bytes);     // host -> device
void dev_to_host(void *dst, const void *src, size_t bytes);       // device -> host
int *dev_alloc_int(size_t count);                                 // NULL when out of memory
size_t dev_memory_bytes(void); // the device's memory in all: the RAM on the CPU, a GPU's own

// ---------------------------------------------------------------------------------------------
// Encoder: token embedding plus position embedding.
// Examples in a row. A row of T tokens holds one example from position 0 (pos = NULL), or several
// examples back to back ("packed", without padding between them): then pos (B,T) gives each
// token's position within its own example, 0 at the example's first token and one more at each
// next token (pos[t] = 0 or pos[t-1] + 1). Position embeddings restart at 0 with every example,
// and attention stays within the example (below), so each example computes exactly what it
// would alone in a row of its own.
// inp (B,T) token ids, pos (B,T) or NULL -> out (B,T,C) = wte[inp] + wpe[pos]; wte (Vp,C),
// wpe (maxT,C), or NULL: no position embedding (Llama: positions enter through rope_forward).
// Decoding calls it with T = 1 and each new token's position in pos.
void encoder_forward(float *out, const int *inp, const int *pos, const float *wte,
                     const float *wpe, int B, int T, int C);
// dout (B,T,C) -> dwte (Vp,C) += rows at the input ids, dwpe (maxT,C) += rows at the positions
// (skipped when dwpe is NULL)
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp,
                      const int *pos, int B, int T, int C);

// LayerNorm over the last dimension, eps from the config.
// inp (N,C) -> out (N,C), mean (N), rstd (N); weight (C), bias (C)
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C, float eps);
// dout (N,C) -> dinp (N,C) +=, dweight (C) +=, dbias (C) +=
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C);

// Linear layer in PyTorch's layout: out = inp · weightᵀ + bias.
// inp (N,C) -> out (N,OC); weight (OC,C), bias (OC) or NULL
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC);
// Decoding reads every weight matrix once per step: it reads a copy made beforehand in the
// layout the device's product reads fastest (on the CPU, the matrix product's own packed panels,
// streamed in order; on the GPU, the weight as it is). weight (OC,C) -> packed, which has room
// for matmul_packed_floats(C, OC) floats. Then matmul_forward_packed computes matmul_forward's
// product, with the same bits, reading `packed` instead of `weight`.
static inline size_t matmul_packed_floats(int C, int OC) { return (size_t)((OC + 31) / 32) * 32 * C; }
void matmul_pack(float *packed, const float *weight, int C, int OC);
void matmul_forward_packed(float *out, const float *inp, const float *packed, const float *bias,
                           int N, int C, int OC);
// dout (N,OC) -> dinp (N,C) +=, dweight (OC,C) +=, dbias (OC) += (skipped when NULL)
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC);

// Causal multi-head self-attention with scale 1/sqrt(C/NH), within each example of a row:
// query t attends to positions s..t, s = t − pos[t] the first position of its example (s = 0
// when pos is NULL: one example per row). Grouped-query attention: NH query heads share KVH
// key/value heads (NH a multiple of KVH), query head h reading key/value head h / (NH/KVH);
// GPT-2 has KVH = NH. With hs = C/NH and KVC = KVH·hs, a row of qkv is QKV = C + 2·KVC wide:
// the NH queries, then the KVH keys, then the KVH values (3C when KVH = NH).
// qkv (B,T,QKV), pos (B,T) or NULL -> out (B,T,C); att (B,NH,T,T) the softmax weights (row t
// holds weights for positions s..t; the rest of the row is zero), kept for the backward.
void attention_forward(float *out, float *att, const float *qkv, const int *pos, int B, int T,
                       int C, int NH, int KVH);
// dout (B,T,C) -> dqkv (B,T,QKV) +=
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                        const int *pos, int B, int T, int C, int NH, int KVH);

// Llama's kernels (sirt.c, section 2: where each one sits in the block).
// RMSNorm over the last dimension: out = weight · x · rstd, rstd = 1/sqrt(mean(x²) + eps).
// inp (N,C) -> out (N,C), rstd (N); weight (C)
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps);
// dout (N,C) -> dinp (N,C) +=, dweight (C) +=
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                      const float *weight, const float *rstd, int N, int C);

// Rotary position embeddings in llama2.c's layout: in every query and key head, the pair of
// dimensions (2i, 2i+1) is rotated by the angle p · theta^(−2i/hs), p the token's position in
// its example (pos[bt], or t when pos is NULL); the values are copied unchanged.
// inp (B,T,QKV) as attention's qkv, pos (B,T) or NULL -> out (B,T,QKV)
void rope_forward(float *out, const float *inp, const int *pos, int B, int T, int C, int NH,
                  int KVH, float theta);
// dout (B,T,QKV) -> dinp (B,T,QKV) += (each pair rotated back; the values' gradient as it is)
void rope_backward(float *dinp, const float *dout, const int *pos, int B, int T, int C, int NH,
                   int KVH, float theta);

// SwiGLU: inp (N,2H) holds the gate a = w1·x in columns 0..H-1 and the up projection b = w3·x in
// H..2H-1 -> out (N,H) = silu(a) · b, silu(a) = a · sigmoid(a)
void swiglu_forward(float *out, const float *inp, int N, int H);
// dout (N,H) -> dinp (N,2H) +=
void swiglu_backward(float *dinp, const float *inp, const float *dout, int N, int H);

// GELU, tanh approximation. inp (N) -> out (N)
void gelu_forward(float *out, const float *inp, size_t N);
// dout (N) -> dinp (N) +=
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N);

// Residual connection. a (N), b (N) -> out (N) = a + b
// It has no backward kernel: the gradient of out reaches a and b unchanged, so the backward pass
// keeps one gradient of the residual stream that both branches add into.
void residual_forward(float *out, const float *a, const float *b, size_t N);

// The classifier head's loss, in two halves around the caller's choice of coefficients.
// Forward: logits (N,Vp) -> logprobs (N) = log softmax(logits)[target] over the first V
// entries, lse (N) = logsumexp of each row (kept for the backward). A target < 0 marks a
// position without a target: its logprob is 0.
void classifier_forward(float *logprobs, float *lse, const float *logits, const int *targets,
                        int N, int V, int Vp);
// Backward, in place: logits (N,Vp) become dlogits = coef[i] * (softmax - onehot(target)).
// This is the gradient of the loss Σ_i coef[i] · (−logprobs[i]), since ∂logprobs[i]/∂logits =
// onehot − softmax; so coef[i] = −∂L/∂logprobs[i]. Every objective of the program (next-token
// NLL, SFT, DPO, cDPO, IPO, RPO, ORPO) is a function of the per-token log-probs and is expressed by
// these coefficients (sirt.c, sections 4, 5 and 8); the one exception is the process reward
// model's loss, on the value head's outputs (value_head_backward, below).
// Rows with coef 0 (padding, prompt tokens) and the padded columns V..Vp-1 become zero.
void classifier_backward(float *logits, const float *lse, const int *targets, const float *coef,
                         int N, int V, int Vp);

// The value head of a process reward model (sirt.c, section 10): a scalar read at M chosen
// positions of the final LayerNorm's output. Forward: inp (N,C), idx (M) row indices into inp,
// all different, w (C), b (1) -> out (M) = inp[idx[m]] · w + b[0].
void value_head_forward(float *out, const float *inp, const int *idx, const float *w,
                        const float *b, int M, int C);
// Backward: dout (M) -> dinp (N,C) += dout[m] · w at row idx[m], dw (C) += Σ_m dout[m] ·
// inp[idx[m]], db (1) += Σ_m dout[m] (sums in the order m = 0, 1, ...).
void value_head_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const int *idx, const float *w, int M, int C);

// ---------------------------------------------------------------------------------------------
// Decoding with a key/value cache: N rows, each a token at position pos[n] of the sequence in
// cache slot slot[n] (one new token for each live sequence, or every token of a prompt being
// prefilled). A layer's caches kcache, vcache (S,Tc,KVC) hold the keys and values of every
// position 0..Tc-1 of every slot S (KVC = KVH·C/NH, as in attention_forward). The forward-only
// kernels above serve the rest of the layer (encoder_forward and rope_forward with T = 1 place
// the rows at their positions).
// qkv (N,QKV) of the rows -> out (N,C). First stores every row's key and value at
// [slot[n], pos[n]], then query n attends to positions 0..pos[n]: those below prefix_len[n] in
// slot prefix_slot[n], the others in its own slot[n]. Rows of one slot at consecutive positions
// (a prompt) thus attend causally among themselves. A prompt that several sequences share (k
// samples of one question) is prefilled once into one slot, and every sequence on it reads it
// there; prefix_slot NULL: every position from slot[n].
void attention_decode(float *out, float *kcache, float *vcache, const float *qkv, const int *slot,
                      const int *pos, const int *prefix_slot, const int *prefix_len, int N, int Tc,
                      int C, int NH, int KVH);

// ---------------------------------------------------------------------------------------------
// Checking. x (n) -> how many of its values are NaN or ±infinity (an exact count, so the same
// for any order of summation). The training loop's --detect-anomaly runs it on every kernel's
// output.
size_t dev_count_nonfinite(const float *x, size_t n);

// ---------------------------------------------------------------------------------------------
// Optimizer.
// Σ x², accumulated in double in a fixed order (for the global gradient norm).
double sum_squares(const float *x, size_t n);
// One AdamW step, PyTorch semantics (torch.optim.AdamW): with g = grad * grad_scale,
//   param -= lr * weight_decay * param                      (decoupled weight decay)
//   m = beta1 m + (1-beta1) g;  v = beta2 v + (1-beta2) g²
//   param -= lr * (m / (1-beta1^t)) / (sqrt(v / (1-beta2^t)) + eps)
// param, grad, m, v (n); t is the 1-based step count.
void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                  int t);

#endif // SIRT_MODEL_H
