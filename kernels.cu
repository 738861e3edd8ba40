// kernels.cu — the kernel interface of model.h for NVIDIA GPUs.
//
// sirt.c holds the CPU kernels (section "1. Kernels (CPU)"); compiled with -DSIRT_CUDA it leaves
// them out and links against this file instead, and the rest of the program runs unchanged: the
// training, sampling and preference code only ever calls the functions of model.h. Read the CPU
// version of a kernel first; the one here computes the same thing, split over GPU threads.
//
// Build: `make cuda` builds ./sirt_cuda. By hand:
//   nvcc -O3 -std=c++17 -arch=sm_90 -c kernels.cu -o kernels.o
//   cc -O3 -std=c11 -fopenmp -DSIRT_CUDA -c sirt.c -o sirt.o
//   nvcc sirt.o kernels.o -lcublas -lgomp -o sirt_cuda
// Environment: SIRT_TF32=1 lets cuBLAS use TF32 tensor cores for the matrix products (several
// times faster; the inputs of each product are rounded to 10 mantissa bits instead of 23, the
// sums stay float32). SIRT_CUDA_SYNC=1 waits after every kernel, so that an error is reported
// at the launch that caused it (for debugging; slow).
//
// Launch conventions.
//   - Everything runs on the default stream, in program order. Kernels are asynchronous; the
//     host waits only in dev_to_host (cudaMemcpy), sum_squares and dev_count_nonfinite, which
//     return data to it.
//   - Every pointer a kernel receives is a device pointer from dev_alloc/dev_alloc_int.
//   - Three shapes of decomposition recur, named in the comment above each kernel:
//       element-wise: one thread per output element (blocks of 256 threads);
//       one warp per row: the 32 lanes of a warp stride over a row and combine their partial
//         results with warp shuffles (rows of attention, LayerNorm);
//       one block per row: for the classifier's long rows of V logits.
//   - The matrix products go to cuBLAS (matmul_forward, matmul_backward).
//
// Determinism. A run is reproducible bit for bit on the same GPU model, driver and toolkit:
//   - No float atomics (dev_count_nonfinite adds integer counts atomically: exact in any order).
//     Every output element is written by exactly one thread, and every sum is
//     taken in an order fixed by the code (a thread's own loop, then a fixed butterfly of warp
//     shuffles, then the warps in order), never by the timing of threads.
//   - Sums over rows (the gradients of biases and LayerNorm gains) use a fixed two-stage
//     reduction: thread (chunk k, column c) sums rows k*64 .. k*64+63 in order, then one thread
//     per column adds the chunk sums in order. The chunk size is a constant, not a launch choice.
//   - cuBLAS is deterministic for a given GPU architecture and SM count when used from one stream
//     (its documented guarantee); its results may differ from the CPU's in the last bits.
//   - Results differ from the CPU build in the last bits (other summation orders, fused
//     multiply-adds), so GPU and CPU runs agree closely but not bit for bit.
//
// Hidden state: the GPU context is process-wide by nature, and so is the one piece of state
// this file keeps — the cuBLAS handle, the flags read from the environment and a scratch buffer,
// all in the static struct `gpu` below, created on first use and released when the process ends.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "model.h"
}

// =============================================================================================
// Errors, state, helpers
// =============================================================================================

// Every CUDA and cuBLAS call is checked; a failure prints where and why, then ends the program.
#define CUDA_CHECK(call) cuda_check((call), __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check((call), __FILE__, __LINE__)
// After every kernel launch: a bad launch configuration is reported here; an error while the
// kernel runs is reported by a later call (or here with SIRT_CUDA_SYNC=1).
#define LAUNCH_CHECK() launch_check(__FILE__, __LINE__)

static void cuda_check(cudaError_t err, const char *file, int line) {
    if (err == cudaSuccess) return;
    fprintf(stderr, "sirt: error: CUDA: %s (%s:%d)\n", cudaGetErrorString(err), file, line);
    exit(1);
}

static void cublas_check(cublasStatus_t status, const char *file, int line) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    fprintf(stderr, "sirt: error: cuBLAS: %s (%s:%d)\n", cublasGetStatusString(status), file,
            line);
    exit(1);
}

// The process-wide GPU state (see the top of the file).
static struct {
    int ready;
    cublasHandle_t cublas;
    int tf32;           // SIRT_TF32=1
    int sync_each;      // SIRT_CUDA_SYNC=1
    void *scratch;      // temporary device memory for the kernels that need it
    size_t scratch_bytes;
} gpu;

static int env_flag(const char *name) {
    const char *value = getenv(name);
    return value && !strcmp(value, "1");
}

static void gpu_init(void) {
    if (gpu.ready) return;
    gpu.tf32 = env_flag("SIRT_TF32");
    gpu.sync_each = env_flag("SIRT_CUDA_SYNC");
    CUBLAS_CHECK(cublasCreate(&gpu.cublas));
    // FP32 products unless TF32 was asked for. cuBLAS keeps its own workspace for this handle.
    CUBLAS_CHECK(cublasSetMathMode(gpu.cublas, gpu.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                        : CUBLAS_DEFAULT_MATH));
    gpu.ready = 1;
}

static void launch_check(const char *file, int line) {
    cuda_check(cudaGetLastError(), file, line);
    gpu_init();
    if (gpu.sync_each) cuda_check(cudaDeviceSynchronize(), file, line);
}

// Scratch memory of at least `bytes`, valid until the next call. One buffer serves every kernel:
// they run one after another on one stream, and none keeps scratch across calls. It only grows.
static void *gpu_scratch(size_t bytes) {
    gpu_init();
    if (bytes > gpu.scratch_bytes) {
        CUDA_CHECK(cudaDeviceSynchronize()); // earlier kernels may still read the old buffer
        CUDA_CHECK(cudaFree(gpu.scratch));
        CUDA_CHECK(cudaMalloc(&gpu.scratch, bytes));
        gpu.scratch_bytes = bytes;
    }
    return gpu.scratch;
}

#define WARP 32
#define THREADS 256                  // block size of the element-wise and warp-per-row kernels
#define WARPS_PER_BLOCK (THREADS / WARP)
#define CHUNK_ROWS 64                // rows per chunk of the two-stage column sums

// Blocks of THREADS threads for `count` threads in all.
static unsigned int blocks_for(size_t count) {
    return (unsigned int)((count + THREADS - 1) / THREADS);
}
// Blocks of THREADS threads for one warp per row.
static unsigned int blocks_for_warps(size_t rows) {
    return (unsigned int)((rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK);
}

// The index of this thread among all threads of the grid, and of its warp among all warps.
__device__ size_t thread_index(void) { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ size_t warp_index(void) { return thread_index() / WARP; }
__device__ int lane_index(void) { return threadIdx.x % WARP; }

// Warp reductions by butterfly: at step o each lane combines its value with lane (lane ^ o).
// a + b == b + a exactly in floating point, so all 32 lanes finish with the same bits, and the
// order of the additions is fixed by the lane numbers: deterministic.
__device__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ double warp_sum_double(double v) {
    for (int o = WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ float warp_max(float v) {
    for (int o = WARP / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Two-stage column sums (see "Determinism" above). Stage 2, shared by LayerNorm and the matmul
// bias: one thread per column c adds partial[0..nchunks-1][c] in order, then dst[c] += the sum.
// partial (nchunks, C) -> dst (C) +=
__global__ void add_partials_kernel(float *dst, const float *partial, int nchunks, int C) {
    const int c = (int)thread_index();
    if (c >= C) return;
    float sum = 0.0f;
    for (int k = 0; k < nchunks; k++) sum += partial[(size_t)k * C + c];
    dst[c] += sum;
}

static int num_chunks(int N) { return (N + CHUNK_ROWS - 1) / CHUNK_ROWS; }
// Stage 1 grids: x = chunk of rows, y = block of THREADS columns.
static dim3 chunk_grid(int N, int C) {
    return dim3((unsigned int)num_chunks(N), (unsigned int)((C + THREADS - 1) / THREADS));
}

// =============================================================================================
// Memory
// =============================================================================================

// NULL when the GPU's memory cannot hold `count` floats: the caller says what they were for.
extern "C" float *dev_alloc(size_t count) {
    float *ptr = NULL;
    cudaError_t err = cudaMalloc((void **)&ptr, (count ? count : 1) * sizeof(float));
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError(); // clears the error, so that later checks do not report it again
        return NULL;
    }
    CUDA_CHECK(err);
    return ptr;
}

extern "C" int *dev_alloc_int(size_t count) { return (int *)dev_alloc(count); }

// The GPU's memory, all of it (not only what is free now).
extern "C" size_t dev_memory_bytes(void) {
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return total_bytes;
}

extern "C" void dev_free(void *ptr) { CUDA_CHECK(cudaFree(ptr)); } // cudaFree(NULL) does nothing

extern "C" void dev_zero(float *ptr, size_t count) {
    if (count) CUDA_CHECK(cudaMemset(ptr, 0, count * sizeof(float)));
}

extern "C" void dev_to_device(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

// Waits for every kernel before it (cudaMemcpy on the default stream does), so the host can use
// the data as soon as it returns.
extern "C" void dev_to_host(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

// =============================================================================================
// Encoder
// =============================================================================================

// Where token bt sits in its example: pos[bt], or its place in the row when pos is NULL (one
// example per row), as position_of in sirt.c.
__device__ inline int position_of(const int *pos, size_t bt, int T) {
    return pos ? pos[bt] : (int)(bt % T);
}

// inp (B,T), pos (B,T) or NULL -> out (B,T,C); wte (Vp,C), wpe (maxT,C) or NULL (Llama: no
// position embedding). Element-wise over (bt, c).
__global__ void encoder_forward_kernel(float *out, const int *inp, const int *pos,
                                       const float *wte, const float *wpe, int BT, int T, int C) {
    const size_t i = thread_index();
    if (i >= (size_t)BT * C) return;
    const size_t bt = i / C, c = i % C;
    const float tok = wte[(size_t)inp[bt] * C + c];
    out[i] = wpe ? tok + wpe[(size_t)position_of(pos, bt, T) * C + c] : tok;
}

extern "C" void encoder_forward(float *out, const int *inp, const int *pos, const float *wte,
                                const float *wpe, int B, int T, int C) {
    if (B <= 0 || T <= 0 || C <= 0) return;
    encoder_forward_kernel<<<blocks_for((size_t)B * T * C), THREADS>>>(out, inp, pos, wte, wpe,
                                                                       B * T, T, C);
    LAUNCH_CHECK();
}

// dout (B,T,C) -> dtable (rows,C) += dout[bt] at row index(bt), for the token table (index: the
// input ids) and the position table (index: the positions). Two positions may share a row, so
// threads cannot simply split positions. Decomposition: one thread per (channel c, shard s of
// the table's rows); it walks all positions bt in order and adds dout[bt][c] into
// dtable[row][c] for the rows with row % ENC_SHARDS == s. Every element of dtable belongs to
// exactly one thread and receives its terms in position order — the CPU's order — without
// atomics. The lanes of a warp share s and read the same row, so the branch never diverges
// within a warp. ids NULL: row = position_of(pos, bt, T).
#define ENC_SHARDS 64
__global__ void embedding_backward_kernel(float *dtable, const float *dout, const int *ids,
                                          const int *pos, int BT, int T, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x, shard = blockIdx.y;
    if (c >= C) return;
    for (int bt = 0; bt < BT; bt++) {
        const int row = ids ? ids[bt] : position_of(pos, bt, T);
        if (row % ENC_SHARDS != shard) continue;
        dtable[(size_t)row * C + c] += dout[(size_t)bt * C + c];
    }
}

// dout (B,T,C) -> dwte (Vp,C) += rows at the input ids, dwpe (maxT,C) += rows at the positions
// (skipped when dwpe is NULL)
extern "C" void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp,
                                 const int *pos, int B, int T, int C) {
    if (B <= 0 || T <= 0 || C <= 0) return;
    dim3 grid((unsigned int)((C + THREADS - 1) / THREADS), ENC_SHARDS);
    embedding_backward_kernel<<<grid, THREADS>>>(dwte, dout, inp, NULL, B * T, T, C);
    LAUNCH_CHECK();
    if (!dwpe) return;
    embedding_backward_kernel<<<grid, THREADS>>>(dwpe, dout, NULL, pos, B * T, T, C);
    LAUNCH_CHECK();
}

// =============================================================================================
// LayerNorm
// =============================================================================================

// inp (N,C) -> out (N,C), mean (N), rstd (N); weight (C), bias (C).
// One warp per row; lanes stride over C; warp-shuffle sums for the mean, then the variance (two
// passes, as on the CPU: more accurate than E[x²] - E[x]²).
__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                         const float *weight, const float *bias, int N, int C,
                                         float eps) {
    const size_t n = warp_index();
    const int lane = lane_index();
    if (n >= (size_t)N) return; // whole warps leave together
    const float *x = inp + n * C;
    float sum = 0.0f;
    for (int c = lane; c < C; c += WARP) sum += x[c];
    const float m = warp_sum(sum) / C;
    float var = 0.0f;
    for (int c = lane; c < C; c += WARP) var += (x[c] - m) * (x[c] - m);
    const float s = 1.0f / sqrtf(warp_sum(var) / C + eps);
    float *o = out + n * C;
    for (int c = lane; c < C; c += WARP) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    if (lane == 0) {
        mean[n] = m;
        rstd[n] = s;
    }
}

extern "C" void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                  const float *weight, const float *bias, int N, int C,
                                  float eps) {
    if (N <= 0 || C <= 0) return;
    layernorm_forward_kernel<<<blocks_for_warps(N), THREADS>>>(out, mean, rstd, inp, weight,
                                                               bias, N, C, eps);
    LAUNCH_CHECK();
}

// dout (N,C) -> dinp (N,C) +=. With xhat = (x - mean) * rstd and g = weight * dout:
//   dinp = rstd * (g - mean(g) - xhat * mean(g * xhat))
// One warp per row; lanes stride over C; warp-shuffle sums for the two means.
__global__ void layernorm_backward_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                               const float *weight, const float *mean,
                                               const float *rstd, int N, int C) {
    const size_t n = warp_index();
    const int lane = lane_index();
    if (n >= (size_t)N) return;
    const float *x = inp + n * C, *d = dout + n * C;
    const float m = mean[n], s = rstd[n];
    float g_sum = 0.0f, gx_sum = 0.0f;
    for (int c = lane; c < C; c += WARP) {
        const float g = weight[c] * d[c];
        g_sum += g;
        gx_sum += g * (x[c] - m) * s;
    }
    const float g_mean = warp_sum(g_sum) / C, gx_mean = warp_sum(gx_sum) / C;
    float *di = dinp + n * C;
    for (int c = lane; c < C; c += WARP)
        di[c] += s * (weight[c] * d[c] - g_mean - (x[c] - m) * s * gx_mean);
}

// Stage 1 of dweight (C) and dbias (C): thread (chunk k, column c) sums its chunk's rows in order
// into pw[k][c] (of xhat * dout) and pb[k][c] (of dout); add_partials_kernel finishes.
__global__ void layernorm_param_partials_kernel(float *pw, float *pb, const float *dout,
                                                const float *inp, const float *mean,
                                                const float *rstd, int N, int C) {
    const int k = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int r1 = min(N, (k + 1) * CHUNK_ROWS);
    float sw = 0.0f, sb = 0.0f;
    for (int r = k * CHUNK_ROWS; r < r1; r++) {
        const float d = dout[(size_t)r * C + c];
        sb += d;
        sw += (inp[(size_t)r * C + c] - mean[r]) * rstd[r] * d;
    }
    pw[(size_t)k * C + c] = sw;
    pb[(size_t)k * C + c] = sb;
}

// dout (N,C) -> dinp (N,C) +=, dweight (C) +=, dbias (C) +=
extern "C" void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const float *weight, const float *mean,
                                   const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    layernorm_backward_dinp_kernel<<<blocks_for_warps(N), THREADS>>>(dinp, dout, inp, weight,
                                                                     mean, rstd, N, C);
    LAUNCH_CHECK();
    const int nchunks = num_chunks(N);
    float *pw = (float *)gpu_scratch(2 * (size_t)nchunks * C * sizeof(float));
    float *pb = pw + (size_t)nchunks * C;
    layernorm_param_partials_kernel<<<chunk_grid(N, C), THREADS>>>(pw, pb, dout, inp, mean,
                                                                    rstd, N, C);
    LAUNCH_CHECK();
    add_partials_kernel<<<blocks_for(C), THREADS>>>(dweight, pw, nchunks, C);
    LAUNCH_CHECK();
    add_partials_kernel<<<blocks_for(C), THREADS>>>(dbias, pb, nchunks, C);
    LAUNCH_CHECK();
}

// =============================================================================================
// Matrix products (cuBLAS)
//
// cuBLAS is column-major: it reads an m x n matrix M with leading dimension ld as element
// (i,j) at M[i + j*ld]. A row-major (R,K) array X stores element (r,k) at X[r*K + k], which is
// exactly the column-major (K,R) matrix Xᵀ with ld = K. So each row-major product is handed to
// cuBLAS as its transpose, with no data moved:
//   out = inp · Wᵀ        (N,OC)   <=>   outᵀ (OC,N) = W (OC,C)    · inpᵀ (C,N)
//   dinp += dout · W      (N,C)    <=>   dinpᵀ (C,N) += Wᵀ (C,OC)  · doutᵀ (OC,N)
//   dW += doutᵀ · inp     (OC,C)   <=>   dWᵀ (C,OC)  += inpᵀ (C,N) · dout (N,OC)
// On the right, a buffer read as is is (row-major X) = Xᵀ: op N; a buffer whose transpose is
// wanted takes op T. "+=" is beta = 1: cuBLAS computes C = alpha·op(A)·op(B) + beta·C.
// =============================================================================================

// out (N,OC) += bias (OC) broadcast over rows. Element-wise.
__global__ void add_bias_kernel(float *out, const float *bias, int N, int OC) {
    const size_t i = thread_index();
    if (i >= (size_t)N * OC) return;
    out[i] += bias[i % OC];
}

// inp (N,C) -> out (N,OC) = inp · weightᵀ + bias; weight (OC,C), bias (OC) or NULL
extern "C" void matmul_forward(float *out, const float *inp, const float *weight,
                               const float *bias, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    gpu_init();
    const float one = 1.0f, zero = 0.0f;
    // outᵀ (OC,N) = W (OC,C) · inpᵀ (C,N): A = weight buffer (= Wᵀ, ld C) with op T,
    // B = inp buffer (= inpᵀ, ld C) with op N, C = out buffer (= outᵀ, ld OC).
    CUBLAS_CHECK(cublasSgemm(gpu.cublas, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &one, weight, C,
                             inp, C, &zero, out, OC));
    if (!bias) return;
    add_bias_kernel<<<blocks_for((size_t)N * OC), THREADS>>>(out, bias, N, OC);
    LAUNCH_CHECK();
}

// Decoding's copy of a weight: cuBLAS reads the weight as it is, so the copy is the weight.
extern "C" void matmul_pack(float *packed, const float *weight, int C, int OC) {
    if (C <= 0 || OC <= 0) return;
    CUDA_CHECK(cudaMemcpy(packed, weight, (size_t)OC * C * sizeof(float), cudaMemcpyDeviceToDevice));
}

extern "C" void matmul_forward_packed(float *out, const float *inp, const float *packed,
                                      const float *bias, int N, int C, int OC) {
    matmul_forward(out, inp, packed, bias, N, C, OC);
}

// Stage 1 of the column sums of x (N,C): thread (chunk k, column c) sums its chunk's rows in
// order into partial[k][c]; add_partials_kernel finishes.
__global__ void column_partials_kernel(float *partial, const float *x, int N, int C) {
    const int k = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int r1 = min(N, (k + 1) * CHUNK_ROWS);
    float sum = 0.0f;
    for (int r = k * CHUNK_ROWS; r < r1; r++) sum += x[(size_t)r * C + c];
    partial[(size_t)k * C + c] = sum;
}

// dout (N,OC) -> dinp (N,C) += dout · weight; dweight (OC,C) += doutᵀ · inp; dbias (OC) +=.
// dinp and dbias are skipped when NULL (as on the CPU).
extern "C" void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                const float *inp, const float *weight, int N, int C, int OC) {
    if (N <= 0 || C <= 0 || OC <= 0) return;
    gpu_init();
    const float one = 1.0f;
    if (dinp) // dinpᵀ (C,N) += Wᵀ (C,OC) · doutᵀ (OC,N): both buffers read as they are (op N)
        CUBLAS_CHECK(cublasSgemm(gpu.cublas, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, &one, weight,
                                 C, dout, OC, &one, dinp, C));
    // dWᵀ (C,OC) += inpᵀ (C,N) · dout (N,OC): inp read as is (op N), dout buffer (= doutᵀ,
    // ld OC) transposed back (op T)
    CUBLAS_CHECK(cublasSgemm(gpu.cublas, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, &one, inp, C, dout,
                             OC, &one, dweight, C));
    if (!dbias) return;
    const int nchunks = num_chunks(N);
    float *partial = (float *)gpu_scratch((size_t)nchunks * OC * sizeof(float));
    column_partials_kernel<<<chunk_grid(N, OC), THREADS>>>(partial, dout, N, OC);
    LAUNCH_CHECK();
    add_partials_kernel<<<blocks_for(OC), THREADS>>>(dbias, partial, nchunks, OC);
    LAUNCH_CHECK();
}

// =============================================================================================
// Attention
// =============================================================================================

// One query of causal attention, computed by one warp; the arithmetic shared by the training
// forward pass and cached decoding, so that the two agree exactly (as in sirt.c, where both
// end in attend_scored_query). row[0..t] = softmax_t2(q · k_t2 · scale), out (hs) = Σ_t2 row[t2] v_t2, where key and
// value t2 start at keys + t2·stride, values + t2·stride for t2 < split and at keys2 + t2·stride,
// values2 + t2·stride from split on (decoding: a prompt shared from another cache slot; the
// training forward pass: one region, split = t + 1).
// Lanes take the keys t2 = lane, lane+32, ...: each computes whole dot products (q is read by
// all lanes at once, a broadcast) and keeps its own scores in row; warp shuffles give the max
// and the sum. Then lanes switch to the channels i of out, each summing over t2 in order.
__device__ void attend_query(float *out, float *row, const float *q, const float *keys,
                             const float *values, const float *keys2, const float *values2,
                             int split, size_t stride, int t, int hs, float scale) {
    const int lane = lane_index();
    float maxval = -INFINITY;
    for (int t2 = lane; t2 <= t; t2 += WARP) {
        const float *k = (t2 < split ? keys : keys2) + t2 * stride;
        float dot = 0.0f;
        for (int i = 0; i < hs; i++) dot += q[i] * k[i];
        row[t2] = dot * scale;
        maxval = fmaxf(maxval, row[t2]);
    }
    maxval = warp_max(maxval);
    float sum = 0.0f;
    for (int t2 = lane; t2 <= t; t2 += WARP) { // each lane rereads only its own entries
        row[t2] = expf(row[t2] - maxval);
        sum += row[t2];
    }
    sum = warp_sum(sum);
    for (int t2 = lane; t2 <= t; t2 += WARP) row[t2] /= sum;
    __syncwarp(); // lanes now read each other's entries of row
    for (int i = lane; i < hs; i += WARP) {
        float acc = 0.0f;
        for (int t2 = 0; t2 <= t; t2++) acc += row[t2] * (t2 < split ? values : values2)[t2 * stride + i];
        out[i] = acc;
    }
}

// qkv (B,T,QKV), pos (B,T) or NULL -> out (B,T,C), att (B,NH,T,T); QKV = C + 2·KVC, the
// queries, then the KVH keys, then the KVH values (model.h); query head h reads key/value head
// h / (NH/KVH). One warp per query row (b, h, t); warp w is row w of att viewed as (B*NH*T, T).
// Query t attends to s..t, s = t − pos[t] the first position of its example (0 when pos is
// NULL); the rest of the row is zeroed.
__global__ void attention_forward_kernel(float *out, float *att, const float *qkv, const int *pos,
                                         int B, int T, int C, int NH, int KVH, float scale) {
    const size_t w = warp_index();
    if (w >= (size_t)B * NH * T) return;
    const int t = (int)(w % T), h = (int)(w / T % NH), b = (int)(w / ((size_t)T * NH));
    const int hs = C / NH, lane = lane_index(), kh = h / (NH / KVH);
    const int s = t - position_of(pos, (size_t)b * T + t, T);
    const size_t KVC = (size_t)KVH * hs, stride = C + 2 * KVC;
    const float *q = qkv + ((size_t)b * T + t) * stride + (size_t)h * hs;
    // position s, this head's key (its value KVC further)
    const float *k = qkv + ((size_t)b * T + s) * stride + C + (size_t)kh * hs;
    float *row = att + w * T;
    for (int t2 = lane; t2 < s; t2 += WARP) row[t2] = 0.0f;
    attend_query(out + ((size_t)b * T + t) * C + (size_t)h * hs, row + s, q, k, k + KVC, k, k + KVC,
                 t - s + 1, stride, t - s, hs, scale);
    for (int t2 = t + 1 + lane; t2 < T; t2 += WARP) row[t2] = 0.0f;
}

extern "C" void attention_forward(float *out, float *att, const float *qkv, const int *pos, int B,
                                  int T, int C, int NH, int KVH) {
    if (B <= 0 || T <= 0 || NH <= 0 || KVH <= 0) return;
    const float scale = 1.0f / sqrtf((float)(C / NH));
    attention_forward_kernel<<<blocks_for_warps((size_t)B * NH * T), THREADS>>>(
        out, att, qkv, pos, B, T, C, NH, KVH, scale);
    LAUNCH_CHECK();
}

// The backward runs in two passes so that every gradient element has one writer. For query row
// (b,h,t), with att the row of softmax weights, d = dout_t and s..t the positions it attends to:
//   datt[t2] = d · v_t2,   dpre[t2] = att[t2] * (datt[t2] - Σ_j att[j] datt[j]) * scale
//   dq_t  += Σ_{s<=t2<=t} dpre[t2] k_t2                     (pass 1, per query)
//   dk_t2 += Σ_h Σ_t dpre_t[t2] q_t,  dv_t2 += Σ_h Σ_t att_t[t2] dout_t   (pass 2, per key; h
//            runs over the query heads of the key's group, t from t2 to the end of t2's
//            example: the queries that attend to it)
// dpre (B,NH,T,T) lives in scratch between the passes.

// Pass 1: one warp per query row (b, h, t). Lanes stride over t2 for datt and dpre (datt is
// parked in dpre's row, each lane rereading only its own entries), then over the channels i of
// dq, each summing over t2 in order.
__global__ void attention_backward_query_kernel(float *dqkv, float *dpre, const float *dout,
                                                const float *qkv, const float *att,
                                                const int *pos, int B, int T, int C, int NH,
                                                int KVH, float scale) {
    const size_t w = warp_index();
    if (w >= (size_t)B * NH * T) return;
    const int t = (int)(w % T), h = (int)(w / T % NH), b = (int)(w / ((size_t)T * NH));
    const int hs = C / NH, lane = lane_index(), kh = h / (NH / KVH);
    const int s = t - position_of(pos, (size_t)b * T + t, T);
    const size_t KVC = (size_t)KVH * hs, stride = C + 2 * KVC;
    const float *keys = qkv + (size_t)b * T * stride + C + (size_t)kh * hs; // position 0
    const float *row = att + w * T;
    float *drow = dpre + w * T;
    const float *d = dout + ((size_t)b * T + t) * C + (size_t)h * hs;
    float weighted = 0.0f; // Σ_j att[j] datt[j]
    for (int t2 = s + lane; t2 <= t; t2 += WARP) {
        const float *v = keys + t2 * stride + KVC;
        float datt = 0.0f;
        for (int i = 0; i < hs; i++) datt += d[i] * v[i];
        drow[t2] = datt;
        weighted += row[t2] * datt;
    }
    weighted = warp_sum(weighted);
    for (int t2 = s + lane; t2 <= t; t2 += WARP)
        drow[t2] = row[t2] * (drow[t2] - weighted) * scale;
    __syncwarp();
    float *dq = dqkv + ((size_t)b * T + t) * stride + (size_t)h * hs;
    for (int i = lane; i < hs; i += WARP) {
        float acc = 0.0f;
        for (int t2 = s; t2 <= t; t2++) acc += drow[t2] * keys[t2 * stride + i];
        dq[i] += acc;
    }
}

// Pass 2: one warp per key position (b, kh, t2) of key/value head kh. Lanes stride over the
// channels i; each sums over the query heads h of kh's group in order and, for each, over the
// queries t = t2.. to the end of t2's example, in order (column t2 of dpre and att, read as
// broadcasts). The example ends before the next position whose pos is 0.
__global__ void attention_backward_key_kernel(float *dqkv, const float *dpre, const float *dout,
                                              const float *qkv, const float *att, const int *pos,
                                              int B, int T, int C, int NH, int KVH) {
    const size_t w = warp_index();
    if (w >= (size_t)B * KVH * T) return;
    const int t2 = (int)(w % T), kh = (int)(w / T % KVH), b = (int)(w / ((size_t)T * KVH));
    const int hs = C / NH, lane = lane_index(), group = NH / KVH;
    int end = t2 + 1; // one past the last query that attends to t2
    if (pos)
        while (end < T && pos[(size_t)b * T + end] != 0) end++;
    else end = T;
    const size_t KVC = (size_t)KVH * hs, stride = C + 2 * KVC;
    float *dk = dqkv + ((size_t)b * T + t2) * stride + C + (size_t)kh * hs;
    float *dv = dk + KVC;
    for (int i = lane; i < hs; i += WARP) {
        float dk_acc = 0.0f, dv_acc = 0.0f;
        for (int h = kh * group; h < (kh + 1) * group; h++) {
            const size_t head = ((size_t)b * NH + h) * T; // row 0 of this head's att and dpre
            const float *q = qkv + (size_t)b * T * stride + (size_t)h * hs; // q at position 0
            const float *d = dout + (size_t)b * T * C + (size_t)h * hs;     // dout at position 0
            for (int t = t2; t < end; t++) {
                const size_t a = (head + t) * T + t2;
                dk_acc += dpre[a] * q[t * stride + i];
                dv_acc += att[a] * d[(size_t)t * C + i];
            }
        }
        dk[i] += dk_acc;
        dv[i] += dv_acc;
    }
}

// dout (B,T,C) -> dqkv (B,T,QKV) +=
extern "C" void attention_backward(float *dqkv, const float *dout, const float *qkv,
                                   const float *att, const int *pos, int B, int T, int C, int NH,
                                   int KVH) {
    if (B <= 0 || T <= 0 || NH <= 0 || KVH <= 0) return;
    const float scale = 1.0f / sqrtf((float)(C / NH));
    const size_t rows = (size_t)B * NH * T, key_rows = (size_t)B * KVH * T;
    float *dpre = (float *)gpu_scratch(rows * T * sizeof(float));
    attention_backward_query_kernel<<<blocks_for_warps(rows), THREADS>>>(
        dqkv, dpre, dout, qkv, att, pos, B, T, C, NH, KVH, scale);
    LAUNCH_CHECK();
    attention_backward_key_kernel<<<blocks_for_warps(key_rows), THREADS>>>(
        dqkv, dpre, dout, qkv, att, pos, B, T, C, NH, KVH);
    LAUNCH_CHECK();
}

// =============================================================================================
// GELU (tanh form, computed as x · sigmoid(2u) exactly as in sirt.c) and the residual
// connection: element-wise, one thread per element.
// =============================================================================================

#define GELU_SCALE 0.7978845608028654f // sqrt(2/π)

// inp (N) -> out (N)
__global__ void gelu_forward_kernel(float *out, const float *inp, size_t N) {
    const size_t i = thread_index();
    if (i >= N) return;
    const float x = inp[i], u = GELU_SCALE * (x + 0.044715f * x * x * x);
    out[i] = x / (1.0f + expf(-2.0f * u));
}

extern "C" void gelu_forward(float *out, const float *inp, size_t N) {
    if (!N) return;
    gelu_forward_kernel<<<blocks_for(N), THREADS>>>(out, inp, N);
    LAUNCH_CHECK();
}

// dout (N) -> dinp (N) +=; d/dx [x s] = s + x s (1 − s) 2 du/dx
__global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, size_t N) {
    const size_t i = thread_index();
    if (i >= N) return;
    const float x = inp[i], u = GELU_SCALE * (x + 0.044715f * x * x * x);
    const float s = 1.0f / (1.0f + expf(-2.0f * u));
    const float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] += (s + 2.0f * x * s * (1.0f - s) * du) * dout[i];
}

extern "C" void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
    if (!N) return;
    gelu_backward_kernel<<<blocks_for(N), THREADS>>>(dinp, inp, dout, N);
    LAUNCH_CHECK();
}

// a (N), b (N) -> out (N) = a + b. out may be a (decoding updates its stream in place).
__global__ void residual_forward_kernel(float *out, const float *a, const float *b, size_t N) {
    const size_t i = thread_index();
    if (i < N) out[i] = a[i] + b[i];
}

extern "C" void residual_forward(float *out, const float *a, const float *b, size_t N) {
    if (!N) return;
    residual_forward_kernel<<<blocks_for(N), THREADS>>>(out, a, b, N);
    LAUNCH_CHECK();
}

// =============================================================================================
// Value head (a process reward model's scalar at chosen positions)
// =============================================================================================

// one thread per read position m: out[m] = inp[idx[m]] · w + b, summed over c in order
__global__ void value_head_forward_kernel(float *out, const float *inp, const int *idx,
                                          const float *w, const float *b, int M, int C) {
    const size_t m = thread_index();
    if (m >= (size_t)M) return;
    const float *x = inp + (size_t)idx[m] * C;
    float sum = 0.0f;
    for (int c = 0; c < C; c++) sum += x[c] * w[c];
    out[m] = sum + b[0];
}

extern "C" void value_head_forward(float *out, const float *inp, const int *idx, const float *w,
                                   const float *b, int M, int C) {
    if (M <= 0) return;
    value_head_forward_kernel<<<blocks_for(M), THREADS>>>(out, inp, idx, w, b, M, C);
    LAUNCH_CHECK();
}

// one thread per (m, c): the rows idx[m] are all different, so no two threads write one place
__global__ void value_head_dinp_kernel(float *dinp, const float *dout, const int *idx,
                                       const float *w, int M, int C) {
    const size_t i = thread_index();
    if (i >= (size_t)M * C) return;
    const int m = (int)(i / C), c = (int)(i % C);
    dinp[(size_t)idx[m] * C + c] += dout[m] * w[c];
}

// one thread per channel c (and thread C for the bias): a sum over m in order, deterministic
__global__ void value_head_dparams_kernel(float *dw, float *db, const float *dout,
                                          const float *inp, const int *idx, int M, int C) {
    const size_t c = thread_index();
    if (c > (size_t)C) return;
    float sum = 0.0f;
    for (int m = 0; m < M; m++) sum += c < (size_t)C ? dout[m] * inp[(size_t)idx[m] * C + c] : dout[m];
    if (c < (size_t)C) dw[c] += sum;
    else db[0] += sum;
}

extern "C" void value_head_backward(float *dinp, float *dw, float *db, const float *dout,
                                    const float *inp, const int *idx, const float *w, int M,
                                    int C) {
    if (M <= 0) return;
    value_head_dinp_kernel<<<blocks_for((size_t)M * C), THREADS>>>(dinp, dout, idx, w, M, C);
    LAUNCH_CHECK();
    value_head_dparams_kernel<<<blocks_for((size_t)C + 1), THREADS>>>(dw, db, dout, inp, idx, M, C);
    LAUNCH_CHECK();
}

// =============================================================================================
// Llama's kernels: RMSNorm, the rotary embedding, SwiGLU (the same arithmetic as in sirt.c)
// =============================================================================================

// inp (N,C) -> out (N,C) = weight · (rstd · x), rstd (N). One warp per row; lanes stride over C.
__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp,
                                       const float *weight, int N, int C, float eps) {
    const size_t n = warp_index();
    const int lane = lane_index();
    if (n >= (size_t)N) return;
    const float *x = inp + n * C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += WARP) ss += x[c] * x[c];
    const float s = 1.0f / sqrtf(warp_sum(ss) / C + eps);
    float *o = out + n * C;
    for (int c = lane; c < C; c += WARP) o[c] = weight[c] * (s * x[c]);
    if (lane == 0) rstd[n] = s;
}

extern "C" void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                                int N, int C, float eps) {
    if (N <= 0 || C <= 0) return;
    rmsnorm_forward_kernel<<<blocks_for_warps(N), THREADS>>>(out, rstd, inp, weight, N, C, eps);
    LAUNCH_CHECK();
}

// dout (N,C) -> dinp (N,C) += rstd · (g − x · rstd² · mean(g · x)), g = weight · dout.
// One warp per row.
__global__ void rmsnorm_backward_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                             const float *weight, const float *rstd, int N,
                                             int C) {
    const size_t n = warp_index();
    const int lane = lane_index();
    if (n >= (size_t)N) return;
    const float *x = inp + n * C, *d = dout + n * C;
    const float s = rstd[n];
    float gx_sum = 0.0f;
    for (int c = lane; c < C; c += WARP) gx_sum += weight[c] * d[c] * x[c];
    const float gx_mean = warp_sum(gx_sum) / C;
    float *di = dinp + n * C;
    for (int c = lane; c < C; c += WARP) di[c] += s * (weight[c] * d[c] - x[c] * s * s * gx_mean);
}

// Stage 1 of dweight (C): thread (chunk k, column c) sums x · rstd · dout over its chunk's rows in
// order into pw[k][c]; add_partials_kernel finishes.
__global__ void rmsnorm_param_partials_kernel(float *pw, const float *dout, const float *inp,
                                              const float *rstd, int N, int C) {
    const int k = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int r1 = min(N, (k + 1) * CHUNK_ROWS);
    float sw = 0.0f;
    for (int r = k * CHUNK_ROWS; r < r1; r++)
        sw += inp[(size_t)r * C + c] * rstd[r] * dout[(size_t)r * C + c];
    pw[(size_t)k * C + c] = sw;
}

// dout (N,C) -> dinp (N,C) +=, dweight (C) +=
extern "C" void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                                 const float *weight, const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    rmsnorm_backward_dinp_kernel<<<blocks_for_warps(N), THREADS>>>(dinp, dout, inp, weight, rstd,
                                                                   N, C);
    LAUNCH_CHECK();
    const int nchunks = num_chunks(N);
    float *partial = (float *)gpu_scratch((size_t)nchunks * C * sizeof(float));
    rmsnorm_param_partials_kernel<<<chunk_grid(N, C), THREADS>>>(partial, dout, inp, rstd, N, C);
    LAUNCH_CHECK();
    add_partials_kernel<<<blocks_for(C), THREADS>>>(dweight, partial, nchunks, C);
    LAUNCH_CHECK();
}

// The rotary embedding of one pair (i, i+1) of the queries and keys of row bt, llama2.c's
// arithmetic: freq = 1 / theta^((i % hs)/hs), angle = p · freq; sign −1 rotates back. One
// thread per pair (element-wise over (bt, pair)); the values (the last KVC of the row) are
// copied (forward) or their gradient passed on (backward) by the threads of the pairs there.
__global__ void rope_kernel(float *out, const float *inp, const int *pos, int BT, int T, int C,
                            int NH, int KVH, float theta, float sign, int accumulate) {
    const int hs = C / NH, KVC = KVH * hs, QKV = C + 2 * KVC, pairs = QKV / 2;
    const size_t idx = thread_index();
    if (idx >= (size_t)BT * pairs) return;
    const size_t bt = idx / pairs;
    const int i = 2 * (int)(idx % pairs);
    const float *x = inp + bt * QKV;
    float *o = out + bt * QKV;
    float r0 = x[i], r1 = x[i + 1];
    if (i < C + KVC) { // a query or key pair: rotate
        const int p = position_of(pos, bt, T);
        const float freq = 1.0f / powf(theta, (i % hs) / (float)hs);
        const float angle = p * freq, fcr = cosf(angle), fci = sign * sinf(angle);
        r0 = x[i] * fcr - x[i + 1] * fci;
        r1 = x[i] * fci + x[i + 1] * fcr;
    }
    if (accumulate) {
        o[i] += r0;
        o[i + 1] += r1;
    } else {
        o[i] = r0;
        o[i + 1] = r1;
    }
}

// inp (B,T,QKV), pos (B,T) or NULL -> out (B,T,QKV)
extern "C" void rope_forward(float *out, const float *inp, const int *pos, int B, int T, int C,
                             int NH, int KVH, float theta) {
    if (B <= 0 || T <= 0 || NH <= 0 || KVH <= 0) return;
    const size_t pairs = (size_t)B * T * ((C + 2 * KVH * (C / NH)) / 2);
    rope_kernel<<<blocks_for(pairs), THREADS>>>(out, inp, pos, B * T, T, C, NH, KVH, theta, 1.0f,
                                                0);
    LAUNCH_CHECK();
}

// dout (B,T,QKV) -> dinp (B,T,QKV) +=
extern "C" void rope_backward(float *dinp, const float *dout, const int *pos, int B, int T, int C,
                              int NH, int KVH, float theta) {
    if (B <= 0 || T <= 0 || NH <= 0 || KVH <= 0) return;
    const size_t pairs = (size_t)B * T * ((C + 2 * KVH * (C / NH)) / 2);
    rope_kernel<<<blocks_for(pairs), THREADS>>>(dinp, dout, pos, B * T, T, C, NH, KVH, theta,
                                                -1.0f, 1);
    LAUNCH_CHECK();
}

// inp (N,2H) -> out (N,H) = silu(a) · b. Element-wise over (n, i).
__global__ void swiglu_forward_kernel(float *out, const float *inp, int N, int H) {
    const size_t idx = thread_index();
    if (idx >= (size_t)N * H) return;
    const size_t n = idx / H, i = idx % H;
    const float a = inp[n * 2 * H + i], b = inp[n * 2 * H + H + i];
    out[idx] = a * (1.0f / (1.0f + expf(-a))) * b;
}

extern "C" void swiglu_forward(float *out, const float *inp, int N, int H) {
    if (N <= 0 || H <= 0) return;
    swiglu_forward_kernel<<<blocks_for((size_t)N * H), THREADS>>>(out, inp, N, H);
    LAUNCH_CHECK();
}

// dout (N,H) -> dinp (N,2H) +=. Element-wise over (n, i): each thread writes da[i] and db[i].
__global__ void swiglu_backward_kernel(float *dinp, const float *inp, const float *dout, int N,
                                       int H) {
    const size_t idx = thread_index();
    if (idx >= (size_t)N * H) return;
    const size_t n = idx / H, i = idx % H;
    const float a = inp[n * 2 * H + i], b = inp[n * 2 * H + H + i], d = dout[idx];
    const float s = 1.0f / (1.0f + expf(-a));
    dinp[n * 2 * H + i] += d * b * s * (1.0f + a * (1.0f - s));
    dinp[n * 2 * H + H + i] += d * a * s;
}

extern "C" void swiglu_backward(float *dinp, const float *inp, const float *dout, int N, int H) {
    if (N <= 0 || H <= 0) return;
    swiglu_backward_kernel<<<blocks_for((size_t)N * H), THREADS>>>(dinp, inp, dout, N, H);
    LAUNCH_CHECK();
}

// =============================================================================================
// Classifier
// =============================================================================================

#define CLS_THREADS 512
#define CLS_WARPS (CLS_THREADS / WARP)

// Online softmax: (m, s) stands for "s = Σ exp(z - m) over the values seen, m their max".
// Merging two such pairs rescales both sums to the larger max. The two products are the same
// whichever pair comes first, so merging is commutative bit for bit (the butterfly needs that).
__device__ void softmax_merge(float *m, float *s, float m2, float s2) {
    const float mx = fmaxf(*m, m2);
    if (mx == -INFINITY) return; // both empty
    *s = *s * expf(*m - mx) + s2 * expf(m2 - mx);
    *m = mx;
}

// logits (N,Vp) -> logprobs (N), lse (N). One block per row, in one pass over it: each thread
// keeps an online (max, sum) over columns tid, tid+512, ... < V; the pairs are merged by warp
// butterflies, then warp 0 merges the 16 warps' pairs the same way.
__global__ void classifier_forward_kernel(float *logprobs, float *lse, const float *logits,
                                          const int *targets, int V, int Vp) {
    __shared__ float warp_m[CLS_WARPS], warp_s[CLS_WARPS];
    const int n = blockIdx.x, tid = threadIdx.x, lane = lane_index(), warp = tid / WARP;
    const float *z = logits + (size_t)n * Vp;
    float m = -INFINITY, s = 0.0f;
    for (int i = tid; i < V; i += CLS_THREADS) {
        const float zi = z[i];
        if (zi > m) {
            s = s * expf(m - zi) + 1.0f; // (the first time: 0 * exp(-inf) + 1)
            m = zi;
        } else {
            s += expf(zi - m);
        }
    }
    for (int o = WARP / 2; o > 0; o /= 2) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        softmax_merge(&m, &s, m2, s2);
    }
    if (lane == 0) {
        warp_m[warp] = m;
        warp_s[warp] = s;
    }
    __syncthreads();
    if (warp != 0) return;
    m = lane < CLS_WARPS ? warp_m[lane] : -INFINITY;
    s = lane < CLS_WARPS ? warp_s[lane] : 0.0f;
    for (int o = WARP / 2; o > 0; o /= 2) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        softmax_merge(&m, &s, m2, s2);
    }
    if (lane == 0) {
        const float l = m + logf(s);
        const int target = targets[n];
        lse[n] = l;
        logprobs[n] = target >= 0 ? z[target] - l : 0.0f;
    }
}

extern "C" void classifier_forward(float *logprobs, float *lse, const float *logits,
                                   const int *targets, int N, int V, int Vp) {
    if (N <= 0) return;
    classifier_forward_kernel<<<N, CLS_THREADS>>>(logprobs, lse, logits, targets, V, Vp);
    LAUNCH_CHECK();
}

// logits (N,Vp) -> in place dlogits (N,Vp) = coef[n] * (softmax - onehot(target)); rows with
// coef 0 or no target, and the padded columns V..Vp-1, become zero. One block per row, one pass:
// each thread rewrites columns tid, tid+512, ... (softmax = exp(z - lse), lse from the forward).
__global__ void classifier_backward_kernel(float *logits, const float *lse, const int *targets,
                                           const float *coef, int V, int Vp) {
    const int n = blockIdx.x, target = targets[n];
    const float c = target >= 0 ? coef[n] : 0.0f, l = lse[n];
    float *z = logits + (size_t)n * Vp;
    for (int i = threadIdx.x; i < Vp; i += CLS_THREADS) {
        float g = 0.0f;
        if (c != 0.0f && i < V) {
            g = c * expf(z[i] - l);
            if (i == target) g -= c;
        }
        z[i] = g;
    }
}

extern "C" void classifier_backward(float *logits, const float *lse, const int *targets,
                                    const float *coef, int N, int V, int Vp) {
    if (N <= 0) return;
    classifier_backward_kernel<<<N, CLS_THREADS>>>(logits, lse, targets, coef, V, Vp);
    LAUNCH_CHECK();
}

// =============================================================================================
// Decoding with a key/value cache
// =============================================================================================

// The rows' keys and values: qkv (N,QKV) -> kcache, vcache at [slot[n], pos[n]]; QKV = C + 2·KVC.
// Element-wise over (n, c < KVC).
__global__ void kv_cache_append_kernel(float *kcache, float *vcache, const float *qkv,
                                       const int *slot, const int *pos, int N, int Tc, int C,
                                       int KVC) {
    const size_t i = thread_index();
    if (i >= (size_t)N * KVC) return;
    const size_t n = i / KVC, c = i % KVC, stride = C + 2 * (size_t)KVC;
    const size_t dst = ((size_t)slot[n] * Tc + pos[n]) * KVC + c;
    kcache[dst] = qkv[n * stride + C + c];
    vcache[dst] = qkv[n * stride + C + KVC + c];
}

// qkv (N,QKV) -> out (N,C) through the caches (S,Tc,KVC). One warp per (sequence n, head h),
// with the same attend_query as the training forward; rows (N*NH, Tc) is scratch for the weights.
// Positions below prefix_len[n] come from slot prefix_slot[n] (NULL: none), the rest from slot[n].
__global__ void attention_decode_kernel(float *out, float *rows, const float *kcache,
                                        const float *vcache, const float *qkv, const int *slot,
                                        const int *pos, const int *prefix_slot,
                                        const int *prefix_len, int N, int Tc, int C, int NH,
                                        int KVH, float scale) {
    const size_t w = warp_index();
    if (w >= (size_t)N * NH) return;
    const int n = (int)(w / NH), h = (int)(w % NH), hs = C / NH, kh = h / (NH / KVH);
    const size_t KVC = (size_t)KVH * hs, stride = C + 2 * KVC;
    const size_t own = (size_t)slot[n] * Tc * KVC + (size_t)kh * hs; // position 0, this head
    const size_t shared = prefix_slot ? (size_t)prefix_slot[n] * Tc * KVC + (size_t)kh * hs : own;
    attend_query(out + (size_t)n * C + (size_t)h * hs, rows + w * Tc,
                 qkv + (size_t)n * stride + (size_t)h * hs, kcache + shared, vcache + shared,
                 kcache + own, vcache + own, prefix_slot ? prefix_len[n] : 0, KVC, pos[n], hs,
                 scale);
}

extern "C" void attention_decode(float *out, float *kcache, float *vcache, const float *qkv,
                                 const int *slot, const int *pos, const int *prefix_slot,
                                 const int *prefix_len, int N, int Tc, int C, int NH, int KVH) {
    if (N <= 0 || NH <= 0 || KVH <= 0) return;
    const float scale = 1.0f / sqrtf((float)(C / NH));
    const int KVC = KVH * (C / NH);
    // store every row's key and value first (the next kernel starts after this one ends), so
    // that the rows of a prompt see one another's
    kv_cache_append_kernel<<<blocks_for((size_t)N * KVC), THREADS>>>(kcache, vcache, qkv, slot,
                                                                     pos, N, Tc, C, KVC);
    LAUNCH_CHECK();
    const size_t rows = (size_t)N * NH;
    float *row_scratch = (float *)gpu_scratch(rows * Tc * sizeof(float));
    attention_decode_kernel<<<blocks_for_warps(rows), THREADS>>>(out, row_scratch, kcache, vcache,
                                                                 qkv, slot, pos, prefix_slot,
                                                                 prefix_len, N, Tc, C, NH, KVH,
                                                                 scale);
    LAUNCH_CHECK();
}

// =============================================================================================
// Checking
// =============================================================================================

#define NF_BLOCKS 256 // blocks of the count: a grid-stride loop covers any n

// x (n) -> *count += the number of NaNs and infinities. A grid-stride loop: each thread counts
// the elements it visits, the warp sums its lanes' counts by butterfly, thread 0 the warps', and
// each block adds its count to *count. The counts are integers, so the total is exact whatever
// the order in which the blocks add theirs: deterministic.
__global__ void count_nonfinite_kernel(unsigned long long *count, const float *x, size_t n) {
    __shared__ unsigned int warp_counts[WARPS_PER_BLOCK];
    unsigned int mine = 0;
    for (size_t i = thread_index(); i < n; i += (size_t)gridDim.x * blockDim.x)
        mine += !isfinite(x[i]);
    for (int o = WARP / 2; o > 0; o /= 2) mine += __shfl_xor_sync(0xffffffffu, mine, o);
    if (lane_index() == 0) warp_counts[threadIdx.x / WARP] = mine;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned long long block = 0;
        for (int w = 0; w < WARPS_PER_BLOCK; w++) block += warp_counts[w];
        if (block) atomicAdd(count, block);
    }
}

// x (n) -> the number of NaNs and infinities, returned to the host
extern "C" size_t dev_count_nonfinite(const float *x, size_t n) {
    if (!n) return 0;
    unsigned long long *count = (unsigned long long *)gpu_scratch(sizeof(unsigned long long));
    CUDA_CHECK(cudaMemset(count, 0, sizeof *count));
    const unsigned int blocks = blocks_for(n) < NF_BLOCKS ? blocks_for(n) : NF_BLOCKS;
    count_nonfinite_kernel<<<blocks, THREADS>>>(count, x, n);
    LAUNCH_CHECK();
    unsigned long long total;
    dev_to_host(&total, count, sizeof total);
    return (size_t)total;
}

// =============================================================================================
// Optimizer
// =============================================================================================

#define SS_THREADS 256
#define SS_CHUNK (1 << 15) // elements per block in the first stage, as the CPU's chunks

// Sum of v over a block of SS_THREADS threads, in a fixed order: warp butterflies, then warp 0
// adds the warps' sums by butterfly. The result is valid in thread 0.
__device__ double block_sum_double(double v) {
    __shared__ double warp_sums[SS_THREADS / WARP];
    const int lane = lane_index(), warp = threadIdx.x / WARP;
    v = warp_sum_double(v);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = lane < SS_THREADS / WARP ? warp_sums[lane] : 0.0;
    return warp_sum_double(v);
}

// Stage 1: block k sums the squares of x[k*SS_CHUNK .. (k+1)*SS_CHUNK) in double into partial[k];
// thread j takes elements j, j+256, ... (coalesced), in order.
__global__ void sum_squares_partial_kernel(double *partial, const float *x, size_t n) {
    const size_t begin = (size_t)blockIdx.x * SS_CHUNK;
    const size_t end = begin + SS_CHUNK < n ? begin + SS_CHUNK : n;
    double s = 0.0;
    for (size_t i = begin + threadIdx.x; i < end; i += SS_THREADS) {
        const double xi = x[i];
        s += xi * xi;
    }
    s = block_sum_double(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Stage 2: one block adds the nchunks partial sums (thread j: partials j, j+256, ...).
__global__ void sum_squares_final_kernel(double *result, const double *partial, size_t nchunks) {
    double s = 0.0;
    for (size_t k = threadIdx.x; k < nchunks; k += SS_THREADS) s += partial[k];
    s = block_sum_double(s);
    if (threadIdx.x == 0) *result = s;
}

// x (n) -> Σ x², returned to the host
extern "C" double sum_squares(const float *x, size_t n) {
    if (!n) return 0.0;
    const size_t nchunks = (n + SS_CHUNK - 1) / SS_CHUNK;
    double *partial = (double *)gpu_scratch((nchunks + 1) * sizeof(double));
    double *result = partial + nchunks;
    sum_squares_partial_kernel<<<(unsigned int)nchunks, SS_THREADS>>>(partial, x, n);
    LAUNCH_CHECK();
    sum_squares_final_kernel<<<1, SS_THREADS>>>(result, partial, nchunks);
    LAUNCH_CHECK();
    double total;
    dev_to_host(&total, result, sizeof total);
    return total;
}

// param, grad, m, v (n). Element-wise; see model.h for the rule. The bias corrections are
// computed once on the host, as in sirt.c.
__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                             float lr, float beta1, float beta2, float eps, float weight_decay,
                             float grad_scale, float correction1, float correction2) {
    const size_t i = thread_index();
    if (i >= n) return;
    const float g = grad[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    const float p = param[i] - lr * weight_decay * param[i];
    param[i] = p - lr * (mi / correction1) / (sqrtf(vi / correction2) + eps);
    m[i] = mi;
    v[i] = vi;
}

extern "C" void adamw_update(float *param, const float *grad, float *m, float *v, size_t n,
                             float lr, float beta1, float beta2, float eps, float weight_decay,
                             float grad_scale, int t) {
    if (!n) return;
    const float correction1 = 1.0f - powf(beta1, (float)t);
    const float correction2 = 1.0f - powf(beta2, (float)t);
    adamw_kernel<<<blocks_for(n), THREADS>>>(param, grad, m, v, n, lr, beta1, beta2, eps,
                                             weight_decay, grad_scale, correction1, correction2);
    LAUNCH_CHECK();
}
