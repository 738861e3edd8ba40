// sirt.c — Self-Refine Instruction-Tuning, from scratch, in one C file.
//
// A small GPT-2-shaped student learns to reason from a teacher's demonstrations and then improves
// itself. This file is the whole program: it reads top to bottom in the order the data flows.
//
// Table of contents
//   1. Utilities ............ errors, allocation, timing, the random generator, crash-safe files
//   2. Kernels (CPU) ......... the kernel interface of model.h: matmul, layernorm, attention, ...
//   3. The model ............. GPT-2: parameters and activations, forward, backward, AdamW
//   4. Checkpoints ........... llm.c model files (version 3) and our training-state file
//   5. Token data ............ llm.c token shards and the batch loader
//   6. Text data ............. JSON lines, the prompt template, prompt/completion examples
//   7. The built-in task ..... `./sirt data`: generated word problems and the oracle teacher
//   8. Answer checking ....... the final answer of a completion, and which step went wrong
//   9. Training .............. `./sirt train`: the loop, the schedule, logs and progress
//  10. Supervised fine-tuning  `./sirt sft`: phase 1, learning from the teacher's demonstrations
//  11. Generation ............ KV-cache decoding, the sampler, batched generation
//  12. Sampling and evaluation `./sirt sample`, `./sirt eval`: accuracy, maj@K, pass@K
//  13. Preference training ... `./sirt dpo`: DPO, cDPO, IPO and RPO against a frozen reference
//  14. Self-refinement ....... `./sirt refine`: phase 2, the student's own answers, scored
//  15. The reproduction ...... `./sirt reproduce` = `./sirt`: the whole method, and its table
//  16. Benchmark ............. `./sirt bench`: how fast a training step runs
//  17. Main .................. command dispatch
// The tokenizer (byte-level BPE, `./sirt tokenizer` and `./sirt tokenize`) is tokenizer.c.
//
// Build with `make`; run `./sirt help` for the commands. The kernel interface (section 2) is the
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

#include "model.h"
#include "tokenizer.c" // byte-level BPE: ours, and GPT-2's own (section 0 of the pipeline)

// =============================================================================================
// 1. Utilities
// Errors end the program with one line that says what is wrong; nothing here is clever.
// =============================================================================================

_Noreturn static void die(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "sirt: error: ");
    vfprintf(stderr, fmt, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(1);
}

static void *xmalloc(size_t bytes) {
    void *ptr = malloc(bytes ? bytes : 1);
    if (!ptr) die("out of memory allocating %zu bytes", bytes);
    return ptr;
}

static void *xcalloc(size_t count, size_t size) {
    void *ptr = calloc(count ? count : 1, size ? size : 1);
    if (!ptr) die("out of memory allocating %zu x %zu bytes", count, size);
    return ptr;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// The random generator: xorshift64*, as llm.c uses. One explicit state per user, no globals.
typedef struct { uint64_t state; } Rng;

static Rng rng_seeded(uint64_t seed) {
    // splitmix64 scrambles the seed so that nearby seeds give unrelated streams (and 0 works)
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    Rng rng = {z ? z : 1};
    return rng;
}

static uint32_t rng_u32(Rng *rng) {
    rng->state ^= rng->state >> 12;
    rng->state ^= rng->state << 25;
    rng->state ^= rng->state >> 27;
    return (uint32_t)((rng->state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float rng_uniform(Rng *rng) { return (rng_u32(rng) >> 8) / 16777216.0f; } // [0, 1)

static float rng_normal(Rng *rng) { // Box-Muller
    float u1 = rng_uniform(rng), u2 = rng_uniform(rng);
    return sqrtf(-2.0f * logf(1.0f - u1)) * cosf(6.2831853071795864f * u2);
}

// Crash-safe output. Every file the program writes goes to PATH.tmp first; only a complete,
// flushed and synced file is renamed over PATH, so a crash leaves the previous file intact.
// A failure to create or write PATH.tmp (a read-only directory, a full disk) is remembered in
// `error` rather than fatal at once, so that a checkpoint, which is two files, can remove both
// temporary files before the program stops (safe_commit_all).
typedef struct {
    FILE *file; // NULL when PATH.tmp could not be created
    int error;  // errno of the first failure, 0 while all is well
    char final_path[4096];
    char temp_path[4096 + 8];
} SafeFile;

// Creates PATH.tmp; a failure is kept in sf->error and reported by safe_commit_all.
static void safe_open_deferred(SafeFile *sf, const char *path) {
    if (strlen(path) >= sizeof sf->final_path) die("path too long: %s", path);
    strcpy(sf->final_path, path);
    snprintf(sf->temp_path, sizeof sf->temp_path, "%s.tmp", path);
    sf->file = fopen(sf->temp_path, "wb");
    sf->error = sf->file ? 0 : errno;
}

// Creates PATH.tmp or stops the program: for writers that use sf->file directly (fprintf).
static void safe_open(SafeFile *sf, const char *path) {
    safe_open_deferred(sf, path);
    if (sf->error) die("cannot write %s: %s", sf->temp_path, strerror(sf->error));
}

// Writes nothing more once a write has failed: the file is doomed, and the disk may be full.
static void safe_write(SafeFile *sf, const void *data, size_t bytes) {
    if (sf->error) return;
    errno = 0;
    if (fwrite(data, 1, bytes, sf->file) != bytes) sf->error = errno ? errno : EIO;
}

// Flushes, syncs and closes PATH.tmp; returns 0, or the errno of the first failure (then
// PATH.tmp is deleted). fprintf into sf->file is allowed too: ferror() remembers its failures.
static int safe_finish(SafeFile *sf) {
    if (!sf->file) return sf->error; // never created: nothing to close or delete
    errno = 0;
    int err = sf->error;
    if (!err && (ferror(sf->file) || fflush(sf->file) != 0 || fsync(fileno(sf->file)) != 0))
        err = errno ? errno : EIO;
    if (fclose(sf->file) != 0 && !err) err = errno ? errno : EIO;
    sf->file = NULL;
    if (err) unlink(sf->temp_path);
    return err;
}

// Commits files that belong together (a checkpoint's weights and state): all of them are
// finished first and only then renamed, in the order given. If any write failed, every
// PATH.tmp is removed, nothing is renamed, and the program stops naming the file and the reason.
static void safe_commit_all(SafeFile *files, int count) {
    for (int i = 0; i < count; i++) {
        int err = safe_finish(&files[i]);
        if (!err) continue;
        char kept[9000] = "";
        for (int j = 0; j < count; j++) {
            if (j != i && (j < i || safe_finish(&files[j]) == 0)) unlink(files[j].temp_path);
            snprintf(kept + strlen(kept), sizeof kept - strlen(kept), "%s%s", j ? " and " : "",
                     files[j].final_path);
        }
        die("cannot write %s: %s (%s %s left as %s)", files[i].temp_path, strerror(err), kept,
            count > 1 ? "are" : "is", count > 1 ? "they were" : "it was");
    }
    for (int i = 0; i < count; i++)
        if (rename(files[i].temp_path, files[i].final_path) != 0)
            die("cannot rename %s to %s: %s", files[i].temp_path, files[i].final_path,
                strerror(errno));
}

static void safe_commit(SafeFile *sf) { safe_commit_all(sf, 1); }

// Fails early — before hours of work — when PATH cannot be written (a missing directory, no
// permission): creates PATH.tmp, the name every write goes through, and removes it again.
static void check_writable(const char *path) {
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) die("path too long: %s", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) die("cannot write %s: %s", tmp, strerror(errno));
    fclose(f);
    remove(tmp);
}

// mkdir -p: creates a directory and its parents.
static void mkdir_p(const char *path) {
    char buf[1024];
    if (strlen(path) >= sizeof buf) die("path too long: %s", path);
    strcpy(buf, path);
    for (char *p = buf + 1;; p++)
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) die("cannot create %s: %s", buf, strerror(errno));
            if (!(*p = c)) break;
        }
}

// Reads a whole file; returns NULL (and sets *bytes to 0) when it cannot be opened. The data is
// followed by one zero byte (not counted in *bytes), so text can be scanned safely.
static unsigned char *read_whole_file(const char *path, size_t *bytes) {
    *bytes = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t capacity = 1 << 16, used = 0;
    unsigned char *data = xmalloc(capacity);
    for (;;) {
        if (used + 1 >= capacity) { // room for the data and the terminating zero
            capacity *= 2;
            data = realloc(data, capacity);
            if (!data) die("out of memory reading %s", path);
        }
        size_t got = fread(data + used, 1, capacity - used - 1, f);
        used += got;
        if (got == 0) break;
    }
    data[used] = 0;
    int failed = ferror(f);
    fclose(f);
    if (failed) die("cannot read %s: %s", path, strerror(errno));
    *bytes = used;
    return data;
}

// A 64-bit FNV-1a hash over 8-byte words: pairs a training-state file with its checkpoint.
static uint64_t hash_bytes(const void *data, size_t bytes) {
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        h = (h ^ word) * 0x100000001b3ull;
    }
    for (; i < bytes; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

// Command-line parsing: every command reads `--flag value` pairs with these helpers, which die
// with a message naming the flag when a value is missing or malformed.
static const char *flag_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) die("%s needs a value", argv[*i]);
    return argv[++*i];
}

static long parse_long(const char *flag, const char *text, long lo, long hi) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end) die("%s: '%s' is not an integer", flag, text);
    if (value < lo || value > hi) die("%s: %ld is outside [%ld, %ld]", flag, value, lo, hi);
    return value;
}

static float parse_float(const char *flag, const char *text) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(value))
        die("%s: '%s' is not a number", flag, text);
    return (float)value;
}

// =============================================================================================
// 2. Kernels (CPU)
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
// The matrix product: almost all of the arithmetic of training is here.
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

// dout (N) -> da (N) +=, db (N) +=. The gradient of a sum reaches both of its inputs unchanged.
void residual_backward(float *da, float *db, const float *dout, size_t N) {
#pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
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
// 3. The model
// GPT-2 as llm.c defines it: token + position embeddings, L pre-LayerNorm blocks of causal
// attention and a GELU MLP, a final LayerNorm, and a classifier tied to the token embedding.
// Parameters, gradients, the two AdamW moments and the activations are each ONE allocation,
// carved into the named tensors below.
// =============================================================================================

#define NUM_PARAM_TENSORS 16
typedef struct {
    float *wte;      // (Vp, C)   token embedding, also the classifier
    float *wpe;      // (maxT, C) position embedding
    float *ln1w;     // (L, C)
    float *ln1b;     // (L, C)
    float *qkvw;     // (L, 3C, C)
    float *qkvb;     // (L, 3C)
    float *attprojw; // (L, C, C)
    float *attprojb; // (L, C)
    float *ln2w;     // (L, C)
    float *ln2b;     // (L, C)
    float *fcw;      // (L, 4C, C)
    float *fcb;      // (L, 4C)
    float *fcprojw;  // (L, C, 4C)
    float *fcprojb;  // (L, C)
    float *lnfw;     // (C)
    float *lnfb;     // (C)
} ParamTensors;

static const char *PARAM_NAMES[NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"};

// Weight decay applies to matrices and embeddings (1), not to biases and LayerNorm gains (0):
// the GPT-2/nanoGPT convention, since decaying a gain towards zero only fights the norm.
static const int PARAM_DECAYS[NUM_PARAM_TENSORS] = {1, 1, 0, 0, 1, 0, 1, 0,
                                                    0, 0, 1, 0, 1, 0, 0, 0};

static void param_sizes(const Config *cfg, size_t sizes[NUM_PARAM_TENSORS]) {
    size_t L = cfg->L, C = cfg->C, H = cfg->hidden;
    size_t list[NUM_PARAM_TENSORS] = {(size_t)cfg->Vp * C, (size_t)cfg->maxT * C, L * C, L * C,
                                      L * 3 * C * C, L * 3 * C, L * C * C, L * C,
                                      L * C, L * C, L * H * C, L * H,
                                      L * C * H, L * C, C, C};
    memcpy(sizes, list, sizeof list);
}

static float **param_pointers(ParamTensors *p, float **ptrs[NUM_PARAM_TENSORS]) {
    float **list[NUM_PARAM_TENSORS] = {
        &p->wte, &p->wpe, &p->ln1w, &p->ln1b, &p->qkvw, &p->qkvb, &p->attprojw, &p->attprojb,
        &p->ln2w, &p->ln2b, &p->fcw, &p->fcb, &p->fcprojw, &p->fcprojb, &p->lnfw, &p->lnfb};
    memcpy(ptrs, list, sizeof list);
    return *ptrs;
}

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

// Carves one allocation of `total` floats into the named tensors; returns the allocation.
// `what` says what they hold (parameters, gradients) for the message when memory runs out.
static float *carve_params(ParamTensors *p, const size_t sizes[NUM_PARAM_TENSORS],
                           size_t total, const char *what) {
    float *memory = alloc_check(dev_alloc(total), "the model", (double)total * sizeof(float), what);
    float **ptrs[NUM_PARAM_TENSORS];
    param_pointers(p, ptrs);
    float *next = memory;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        *ptrs[i] = next;
        next += sizes[i];
    }
    return memory;
}

// The activations of one forward pass at batch B and sequence length T, kept for the backward.
#define NUM_ACT_TENSORS 22
typedef struct {
    float *encoded;   // (B,T,C)      embeddings, the input of block 0
    float *ln1;       // (L,B,T,C)
    float *ln1_mean;  // (L,B,T)
    float *ln1_rstd;  // (L,B,T)
    float *qkv;       // (L,B,T,3C)
    float *atty;      // (L,B,T,C)    attention output, before its projection
    float *att;       // (L,B,NH,T,T) attention weights
    float *attproj;   // (L,B,T,C)
    float *residual2; // (L,B,T,C)    residual stream after attention
    float *ln2;       // (L,B,T,C)
    float *ln2_mean;  // (L,B,T)
    float *ln2_rstd;  // (L,B,T)
    float *fch;       // (L,B,T,4C)   MLP hidden, before GELU
    float *fch_gelu;  // (L,B,T,4C)
    float *fcproj;    // (L,B,T,C)
    float *residual3; // (L,B,T,C)    residual stream after the MLP: the block's output
    float *lnf;       // (B,T,C)
    float *lnf_mean;  // (B,T)
    float *lnf_rstd;  // (B,T)
    float *logits;    // (B,T,Vp)     becomes dlogits during the backward
    float *logprobs;  // (B,T)        log p(target) at each position
    float *lse;       // (B,T)        logsumexp of each row of logits
} ActTensors;

// Gradients flowing backward through the activations. Only the residual stream's gradient
// lives through the whole backward pass; the rest is scratch reused by every layer.
#define NUM_GRAD_ACT_TENSORS 6
typedef struct {
    float *residual; // (B,T,C)  d loss / d residual stream (both branches of every residual
                     //          connection add into it, so a residual needs no backward kernel)
    float *ln;       // (B,T,C)  d of a LayerNorm output (ln1, ln2 or lnf)
    float *qkv;      // (B,T,3C)
    float *atty;     // (B,T,C)
    float *fch;      // (B,T,4C)
    float *fch_gelu; // (B,T,4C)
} GradActTensors;

// The activations' sizes in floats, in double so that they cannot overflow (see "Memory").
static void act_sizes(const Config *cfg, int B, int T, double sizes[NUM_ACT_TENSORS]) {
    double BT = (double)B * T, L = cfg->L, C = cfg->C, H = cfg->hidden;
    double list[NUM_ACT_TENSORS] = {
        BT * C, L * BT * C, L * BT, L * BT, L * BT * 3 * C, L * BT * C,
        L * B * cfg->NH * (double)T * T, L * BT * C, L * BT * C, L * BT * C, L * BT, L * BT,
        L * BT * H, L * BT * H, L * BT * C, L * BT * C, BT * C, BT, BT, BT * cfg->Vp, BT, BT};
    memcpy(sizes, list, sizeof list);
}

// The gradients of the activations (GradActTensors) in floats.
static void grad_act_sizes(const Config *cfg, int B, int T, double sizes[NUM_GRAD_ACT_TENSORS]) {
    double BT = (double)B * T, C = cfg->C, H = cfg->hidden;
    double list[NUM_GRAD_ACT_TENSORS] = {BT * C, BT * C, BT * 3 * C, BT * C, BT * H, BT * H};
    memcpy(sizes, list, sizeof list);
}

// Bytes for batches of B rows of T tokens: activations, their gradients, and the batch itself
// (inputs, targets, coefficients).
static double activation_bytes(const Config *cfg, int B, int T) {
    double a[NUM_ACT_TENSORS], g[NUM_GRAD_ACT_TENSORS], floats = 3.0 * B * T;
    act_sizes(cfg, B, T, a);
    grad_act_sizes(cfg, B, T, g);
    for (int i = 0; i < NUM_ACT_TENSORS; i++) floats += a[i];
    for (int i = 0; i < NUM_GRAD_ACT_TENSORS; i++) floats += g[i];
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
    cfg->arch = ARCH_GPT2;
    cfg->n_kv_heads = cfg->NH;
    cfg->hidden = 4 * cfg->C;
    cfg->norm_eps = 1e-5f;
    cfg->rope_theta = 10000.0f;
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

static void model_build(Model *model, Config cfg) {
    memset(model, 0, sizeof *model);
    model->config = cfg;
    param_sizes(&cfg, model->param_sizes);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) model->num_parameters += model->param_sizes[i];
    double bytes = (double)model->num_parameters * sizeof(float);
    if (!fits_memory(bytes))
        die("the model (L=%d NH=%d C=%d maxT=%d V=%d) needs %.1f GiB of parameters; " DEVICE_HAS
            " %.1f GiB", cfg.L, cfg.NH, cfg.C, cfg.maxT, cfg.V, bytes / GIB, device_gib());
    model->params_memory = carve_params(&model->params, model->param_sizes,
                                        model->num_parameters, "parameters");
}

// GPT-2's initialisation: weights ~ N(0, 0.02), the two projections into the residual stream
// scaled by 1/sqrt(2L) so that the stream's variance does not grow with depth; biases zero,
// LayerNorm gains one; the padded rows of wte zero.
static void model_init_random(Model *model, uint64_t seed) {
    const Config *cfg = &model->config;
    float *host = xcalloc(model->num_parameters, sizeof(float));
    Rng rng = rng_seeded(seed);
    float *next = host;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        size_t n = model->param_sizes[i];
        const char *name = PARAM_NAMES[i];
        if (!strcmp(name, "ln1w") || !strcmp(name, "ln2w") || !strcmp(name, "lnfw")) {
            for (size_t j = 0; j < n; j++) next[j] = 1.0f;
        } else if (PARAM_DECAYS[i]) { // the weight matrices and embeddings
            float std = 0.02f;
            if (!strcmp(name, "attprojw") || !strcmp(name, "fcprojw"))
                std /= sqrtf(2.0f * cfg->L);
            size_t live = !strcmp(name, "wte") ? (size_t)cfg->V * cfg->C : n;
            for (size_t j = 0; j < live; j++) next[j] = std * rng_normal(&rng);
        }
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
    double sizes[NUM_ACT_TENSORS], grad_sizes[NUM_GRAD_ACT_TENSORS], total = 0;
    act_sizes(cfg, B, T, sizes);
    for (int i = 0; i < NUM_ACT_TENSORS; i++) total += sizes[i];
    model->acts_memory = alloc_check(dev_alloc((size_t)total), who, bytes, "activations");
    ActTensors *a = &model->acts;
    float **acts[NUM_ACT_TENSORS] = {
        &a->encoded, &a->ln1, &a->ln1_mean, &a->ln1_rstd, &a->qkv, &a->atty, &a->att,
        &a->attproj, &a->residual2, &a->ln2, &a->ln2_mean, &a->ln2_rstd, &a->fch, &a->fch_gelu,
        &a->fcproj, &a->residual3, &a->lnf, &a->lnf_mean, &a->lnf_rstd, &a->logits,
        &a->logprobs, &a->lse};
    float *next = model->acts_memory;
    for (int i = 0; i < NUM_ACT_TENSORS; i++) {
        *acts[i] = next;
        next += (size_t)sizes[i];
    }

    grad_act_sizes(cfg, B, T, grad_sizes);
    total = 0;
    for (int i = 0; i < NUM_GRAD_ACT_TENSORS; i++) total += grad_sizes[i];
    model->grad_acts_memory = alloc_check(dev_alloc((size_t)total), who, bytes, "activations");
    GradActTensors *d = &model->grad_acts;
    float **grads[NUM_GRAD_ACT_TENSORS] = {&d->residual, &d->ln, &d->qkv, &d->atty, &d->fch,
                                           &d->fch_gelu};
    next = model->grad_acts_memory;
    for (int i = 0; i < NUM_GRAD_ACT_TENSORS; i++) {
        *grads[i] = next;
        next += (size_t)grad_sizes[i];
    }

    size_t BT = (size_t)B * T;
    model->inputs = alloc_check(dev_alloc_int(BT), who, bytes, "activations");
    model->targets = alloc_check(dev_alloc_int(BT), who, bytes, "activations");
    model->coefs = alloc_check(dev_alloc(BT), who, bytes, "activations");
    model->host_logprobs = xmalloc(BT * sizeof(float));
    model->act_B = B;
    model->act_T = T;
}

// --detect-anomaly: after each kernel of the forward and backward passes (and of AdamW), the
// tensors it wrote are searched for NaN and infinity through the kernel interface
// (dev_count_nonfinite). The first kernel whose output is not finite stops the program with its
// name, its layer and the tensor — the place where the numbers went wrong, rather than the loss
// many kernels later. Off (the default), a check costs one test of a flag.
typedef struct {
    const char *name; // the tensor as ActTensors and ParamTensors name it; "d" + name: its gradient
    const float *data;
    size_t count;
} KernelOutput;

static void check_kernel(const Model *model, const char *kernel, int layer, int count,
                         const KernelOutput *outputs) {
    if (!model->detect_anomaly) return;
    for (int i = 0; i < count; i++) {
        size_t bad = dev_count_nonfinite(outputs[i].data, outputs[i].count);
        if (!bad) continue;
        char where[32] = "";
        if (layer >= 0) snprintf(where, sizeof where, " in layer %d", layer);
        die("--detect-anomaly: %s%s wrote %zu non-finite values (of %zu) into %s; every kernel "
            "before it wrote finite values", kernel, where, bad, outputs[i].count,
            outputs[i].name);
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
    size_t n = BT, nC = n * C, nH = n * H, natt = (size_t)B * NH * T * T; // sizes, for the checks
    encoder_forward(a.encoded, model->inputs, p.wte, p.wpe, B, T, C);
    check_kernel(model, "encoder_forward", -1, 1, (KernelOutput[]){{"encoded", a.encoded, nC}});
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
        check_kernel(model, "layernorm_forward", l, 3, (KernelOutput[]){
            {"ln1", ln1, nC}, {"ln1_mean", ln1_mean, n}, {"ln1_rstd", ln1_rstd, n}});
        matmul_forward(qkv, ln1, p.qkvw + 3 * c * C, p.qkvb + 3 * c, BT, C, 3 * C);
        check_kernel(model, "matmul_forward", l, 1, (KernelOutput[]){{"qkv", qkv, 3 * nC}});
        attention_forward(atty, att, qkv, B, T, C, NH);
        check_kernel(model, "attention_forward", l, 2, (KernelOutput[]){
            {"att", att, natt}, {"atty", atty, nC}});
        matmul_forward(attproj, atty, p.attprojw + c * C, p.attprojb + c, BT, C, C);
        check_kernel(model, "matmul_forward", l, 1, (KernelOutput[]){{"attproj", attproj, nC}});
        residual_forward(residual2, residual, attproj, (size_t)BT * C);
        check_kernel(model, "residual_forward", l, 1,
                     (KernelOutput[]){{"residual2", residual2, nC}});
        layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, p.ln2w + c, p.ln2b + c, BT, C, eps);
        check_kernel(model, "layernorm_forward", l, 3, (KernelOutput[]){
            {"ln2", ln2, nC}, {"ln2_mean", ln2_mean, n}, {"ln2_rstd", ln2_rstd, n}});
        matmul_forward(fch, ln2, p.fcw + (size_t)l * H * C, p.fcb + (size_t)l * H, BT, C, H);
        check_kernel(model, "matmul_forward", l, 1, (KernelOutput[]){{"fch", fch, nH}});
        gelu_forward(fch_gelu, fch, (size_t)BT * H);
        check_kernel(model, "gelu_forward", l, 1, (KernelOutput[]){{"fch_gelu", fch_gelu, nH}});
        matmul_forward(fcproj, fch_gelu, p.fcprojw + (size_t)l * C * H, p.fcprojb + c, BT, H, C);
        check_kernel(model, "matmul_forward", l, 1, (KernelOutput[]){{"fcproj", fcproj, nC}});
        residual_forward(residual3, residual2, fcproj, (size_t)BT * C);
        check_kernel(model, "residual_forward", l, 1,
                     (KernelOutput[]){{"residual3", residual3, nC}});
    }
    const float *final_residual = a.residual3 + (size_t)(L - 1) * BT * C;
    layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, final_residual, p.lnfw, p.lnfb, BT, C, eps);
    check_kernel(model, "layernorm_forward", -1, 3, (KernelOutput[]){
        {"lnf", a.lnf, nC}, {"lnf_mean", a.lnf_mean, n}, {"lnf_rstd", a.lnf_rstd, n}});
    matmul_forward(a.logits, a.lnf, p.wte, NULL, BT, C, cfg->Vp);
    check_kernel(model, "matmul_forward", -1, 1,
                 (KernelOutput[]){{"logits", a.logits, n * cfg->Vp}});
    classifier_forward(a.logprobs, a.lse, a.logits, model->targets, BT, cfg->V, cfg->Vp);
    check_kernel(model, "classifier_forward", -1, 2, (KernelOutput[]){
        {"logprobs", a.logprobs, n}, {"lse", a.lse, n}});
    dev_to_host(model->host_logprobs, a.logprobs, BT * sizeof(float));
}

// The backward pass of the loss Σ_i coefs[i] · (−logprob_i), for the batch of the last forward.
// coefs (B,T) is a host array. Gradients are overwritten (not accumulated across calls).
static void model_backward(Model *model, const float *coefs) {
    const Config *cfg = &model->config;
    int B = model->B, T = model->T, BT = B * T;
    int L = cfg->L, C = cfg->C, NH = cfg->NH, H = cfg->hidden;
    if (!model->grads_memory)
        model->grads_memory = carve_params(&model->grads, model->param_sizes,
                                           model->num_parameters, "gradients");
    dev_zero(model->grads_memory, model->num_parameters);
    dev_to_device(model->coefs, coefs, BT * sizeof(float));

    ParamTensors p = model->params, g = model->grads;
    ActTensors a = model->acts;
    GradActTensors d = model->grad_acts;
    size_t btc_size = (size_t)BT * C, bth_size = (size_t)BT * H, C2 = (size_t)C * C;

    // classifier and final LayerNorm
    classifier_backward(a.logits, a.lse, model->targets, model->coefs, BT, cfg->V, cfg->Vp);
    check_kernel(model, "classifier_backward", -1, 1, (KernelOutput[]){
        {"dlogits", a.logits, (size_t)BT * cfg->Vp}});
    dev_zero(d.residual, btc_size);
    dev_zero(d.ln, btc_size);
    matmul_backward(d.ln, g.wte, NULL, a.logits, a.lnf, p.wte, BT, C, cfg->Vp);
    check_kernel(model, "matmul_backward", -1, 2, (KernelOutput[]){
        {"dlnf", d.ln, btc_size}, {"dwte", g.wte, (size_t)cfg->Vp * C}});
    layernorm_backward(d.residual, g.lnfw, g.lnfb, d.ln, a.residual3 + (L - 1) * btc_size,
                       p.lnfw, a.lnf_mean, a.lnf_rstd, BT, C);
    check_kernel(model, "layernorm_backward", -1, 3, (KernelOutput[]){
        {"dresidual", d.residual, btc_size}, {"dlnfw", g.lnfw, C}, {"dlnfb", g.lnfb, C}});

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
        check_kernel(model, "matmul_backward", l, 3, (KernelOutput[]){
            {"dfch_gelu", d.fch_gelu, bth_size}, {"dfcprojw", dfcprojw, C * (size_t)H},
            {"dfcprojb", g.fcprojb + c, C}});
        gelu_backward(d.fch, a.fch + bth, d.fch_gelu, bth_size);
        check_kernel(model, "gelu_backward", l, 1, (KernelOutput[]){{"dfch", d.fch, bth_size}});
        matmul_backward(d.ln, dfcw, dfcb, d.fch, a.ln2 + btc, p.fcw + (size_t)l * H * C, BT, C, H);
        check_kernel(model, "matmul_backward", l, 3, (KernelOutput[]){
            {"dln2", d.ln, btc_size}, {"dfcw", dfcw, H * (size_t)C}, {"dfcb", dfcb, H}});
        layernorm_backward(d.residual, g.ln2w + c, g.ln2b + c, d.ln, a.residual2 + btc,
                           p.ln2w + c, a.ln2_mean + l * BT, a.ln2_rstd + l * BT, BT, C);
        check_kernel(model, "layernorm_backward", l, 3, (KernelOutput[]){
            {"dresidual2", d.residual, btc_size}, {"dln2w", g.ln2w + c, C},
            {"dln2b", g.ln2b + c, C}});

        // attention: residual2 = residual + attproj(attention(qkv(ln1(residual))))
        matmul_backward(d.atty, g.attprojw + c * C, g.attprojb + c, d.residual, a.atty + btc,
                        p.attprojw + c * C, BT, C, C);
        check_kernel(model, "matmul_backward", l, 3, (KernelOutput[]){
            {"datty", d.atty, btc_size}, {"dattprojw", g.attprojw + c * C, C2},
            {"dattprojb", g.attprojb + c, C}});
        attention_backward(d.qkv, d.atty, a.qkv + 3 * btc, a.att + (size_t)l * B * NH * T * T,
                           B, T, C, NH);
        check_kernel(model, "attention_backward", l, 1, (KernelOutput[]){
            {"dqkv", d.qkv, 3 * btc_size}});
        dev_zero(d.ln, btc_size);
        matmul_backward(d.ln, dqkvw, dqkvb, d.qkv, a.ln1 + btc, p.qkvw + 3 * c * C, BT, C, 3 * C);
        check_kernel(model, "matmul_backward", l, 3, (KernelOutput[]){
            {"dln1", d.ln, btc_size}, {"dqkvw", dqkvw, 3 * C2}, {"dqkvb", dqkvb, 3 * (size_t)C}});
        layernorm_backward(d.residual, g.ln1w + c, g.ln1b + c, d.ln, residual, p.ln1w + c,
                           a.ln1_mean + l * BT, a.ln1_rstd + l * BT, BT, C);
        check_kernel(model, "layernorm_backward", l, 3, (KernelOutput[]){
            {"dresidual", d.residual, btc_size}, {"dln1w", g.ln1w + c, C},
            {"dln1b", g.ln1b + c, C}});
    }
    encoder_backward(g.wte, g.wpe, d.residual, model->inputs, B, T, C);
    check_kernel(model, "encoder_backward", -1, 2, (KernelOutput[]){
        {"dwte", g.wte, (size_t)cfg->Vp * C}, {"dwpe", g.wpe, (size_t)cfg->maxT * C}});
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
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        size_t n = model->param_sizes[i];
        float wd = PARAM_DECAYS[i] ? opt->weight_decay : 0.0f;
        float *param = model->params_memory + offset, *m = model->m_memory + offset;
        float *v = model->v_memory + offset;
        adamw_update(param, model->grads_memory + offset, m, v, n, opt->lr, opt->beta1,
                     opt->beta2, opt->eps, wd, scale, t);
        if (model->detect_anomaly) {
            char m_name[32], v_name[32];
            snprintf(m_name, sizeof m_name, "m of %s", PARAM_NAMES[i]);
            snprintf(v_name, sizeof v_name, "v of %s", PARAM_NAMES[i]);
            check_kernel(model, "adamw_update", -1, 3, (KernelOutput[]){
                {PARAM_NAMES[i], param, n}, {m_name, m, n}, {v_name, v, n}});
        }
        offset += n;
    }
}

// Both: one optimizer step; returns the gradient norm before clipping.
static float model_update(Model *model, const OptimizerSettings *opt, int t) {
    float norm = model_grad_norm(model);
    model_apply_update(model, opt, norm, t);
    return norm;
}

// =============================================================================================
// 4. Checkpoints
// A model file is llm.c's (FORMATS.md): a 256 × int32 header — magic 20240326, version 3
// (float32), maxT, V, L, NH, C, Vp — then the 16 parameter tensors in the order of
// ParamTensors. Beside it, PATH.state holds what a run needs to resume exactly:
//   header 256 × int32: [0] magic 20240527, [1] version 1, [2] step (steps done, skipped ones
//     included), [3..4] the random generator's state (uint64), [5..6] number of parameters
//     (uint64), [7..8] hash of the parameters it belongs with (uint64), [9] B, [10] T,
//     [11] shuffle, [12..13] seed (uint64), [14] best validation loss so far (float32 bits),
//     [15] steps skipped for a non-finite loss or gradient (section 9), [16] how many of the
//     last steps in a row were skipped; the rest zero
//   then the AdamW moments m and v, each num_parameters float32.
// The data position is the step: batch i of a run is a function of i (section 5).
// =============================================================================================
#define MODEL_MAGIC 20240326
#define MODEL_VERSION_FP32 3
#define MODEL_VERSION_BF16 5
#define STATE_MAGIC 20240527
#define STATE_VERSION 1
#define HEADER_INTS 256

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
    size_t sizes[NUM_PARAM_TENSORS], count = 0;
    param_sizes(&cfg, sizes);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) count += sizes[i];
    size_t expected = sizeof header + count * sizeof(float);
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
// 5. Token data
// llm.c token shards: a 256 × int32 header (magic 20240520, version 1, number of tokens) and
// then the tokens as uint16. A run reads windows of B·T+1 tokens: the first B·T are the inputs,
// the same shifted by one the targets. Window k of a shard starts at token k·B·T, so batch i of
// an unshuffled run is window i (then the next shard, and round again), as llm.c reads them.
// With --shuffle, each epoch visits every window of every shard once, in an order drawn from
// (seed, epoch). Either way batch i depends only on i: a resumed run picks up where it stopped.
// =============================================================================================
#define SHARD_MAGIC 20240520
#define SHARD_VERSION 1

typedef struct {
    char path[4096];
    uint16_t *tokens;
    size_t num_tokens;
} Shard;

typedef struct {
    Shard *shards;
    int num_shards;
    int B, T;
    int shuffle;
    uint64_t seed;
    size_t num_windows;      // windows in one epoch, across all shards
    int *window_shard;       // (num_windows) the shard of each window, in natural order
    size_t *window_offset;   // (num_windows) its first token
    size_t *order;           // (num_windows) this epoch's visiting order
    long order_epoch;        // the epoch `order` was drawn for
} DataLoader;

// Checks a shard's bytes (path, in messages): the header, a size that matches it exactly, and
// every token below vocab_size; then copies the tokens into shard. Returns 0, or -1 with
// "PATH: what is wrong" in err (and nothing allocated).
static int shard_parse(Shard *shard, const unsigned char *data, size_t bytes, const char *path,
                       int vocab_size, char *err, size_t errlen) {
    int32_t header[HEADER_INTS];
    if (bytes < sizeof header) {
        snprintf(err, errlen, "%s: truncated header (%zu of 1024 bytes)", path, bytes);
        return -1;
    }
    memcpy(header, data, sizeof header);
    if (header[0] != SHARD_MAGIC) {
        snprintf(err, errlen, "%s: bad magic %d (expected %d): not an llm.c token shard", path,
                 header[0], SHARD_MAGIC);
        return -1;
    }
    if (header[1] != SHARD_VERSION) {
        snprintf(err, errlen, "%s: unsupported shard version %d", path, header[1]);
        return -1;
    }
    if (header[2] < 0) {
        snprintf(err, errlen, "%s: negative token count %d", path, header[2]);
        return -1;
    }
    size_t count = (size_t)header[2];
    if (bytes != sizeof header + 2 * count) {
        snprintf(err, errlen, "%s: header says %zu tokens (%zu bytes) but the file is %zu bytes",
                 path, count, sizeof header + 2 * count, bytes);
        return -1;
    }
    const unsigned char *tokens = data + sizeof header;
    for (size_t i = 0; i < count; i++) {
        uint16_t token;
        memcpy(&token, tokens + 2 * i, sizeof token);
        if (token >= vocab_size) {
            snprintf(err, errlen, "%s: token %u at position %zu is outside the model's vocabulary "
                     "(V=%d)", path, (unsigned)token, i, vocab_size);
            return -1;
        }
    }
    snprintf(shard->path, sizeof shard->path, "%s", path);
    shard->num_tokens = count;
    shard->tokens = xmalloc(count * sizeof(uint16_t) + 1);
    memcpy(shard->tokens, tokens, count * sizeof(uint16_t));
    return 0;
}

// Loads a shard, rejecting any file whose size does not match its header, or whose tokens
// do not fit the vocabulary.
static void shard_load(Shard *shard, const char *path, int vocab_size) {
    size_t bytes;
    unsigned char *data = read_whole_file(path, &bytes);
    if (!data) die("cannot open token shard %s: %s", path, strerror(errno));
    char err[4400];
    int rc = shard_parse(shard, data, bytes, path, vocab_size, err, sizeof err);
    free(data);
    if (rc != 0) die("%s", err);
}

static void loader_index_windows(DataLoader *dl);

// paths: comma-separated list of shard files.
static void loader_init(DataLoader *dl, const char *paths, int B, int T, int shuffle,
                        uint64_t seed, int vocab_size) {
    memset(dl, 0, sizeof *dl);
    dl->B = B;
    dl->T = T;
    dl->shuffle = shuffle;
    dl->seed = seed;
    dl->order_epoch = -1;
    char *list = xmalloc(strlen(paths) + 1);
    strcpy(list, paths);
    for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        dl->shards = realloc(dl->shards, (dl->num_shards + 1) * sizeof(Shard));
        if (!dl->shards) die("out of memory");
        shard_load(&dl->shards[dl->num_shards++], name, vocab_size);
    }
    free(list);
    if (dl->num_shards == 0) die("--data names no shard");
    loader_index_windows(dl);
}

// Lists the windows of B·T+1 tokens of the loaded shards (dies when there is none).
static void loader_index_windows(DataLoader *dl) {
    size_t span = (size_t)dl->B * dl->T; // window k of a shard: tokens [k·span, k·span + span]
    for (int s = 0; s < dl->num_shards; s++)
        if (dl->shards[s].num_tokens > span) dl->num_windows += (dl->shards[s].num_tokens - 1) / span;
    if (dl->num_windows == 0)
        die("the data holds no batch: every shard has at most B*T = %zu tokens, and a batch "
            "needs B*T+1", span);
    dl->window_shard = xmalloc(dl->num_windows * sizeof(int));
    dl->window_offset = xmalloc(dl->num_windows * sizeof(size_t));
    dl->order = xmalloc(dl->num_windows * sizeof(size_t));
    size_t w = 0;
    for (int s = 0; s < dl->num_shards; s++) {
        size_t n = dl->shards[s].num_tokens > span ? (dl->shards[s].num_tokens - 1) / span : 0;
        for (size_t k = 0; k < n; k++, w++) {
            dl->window_shard[w] = s;
            dl->window_offset[w] = k * span;
        }
    }
}

// Fills inputs and targets (B,T) with batch number `index` (0, 1, 2, ... over the whole run).
static void loader_batch(DataLoader *dl, size_t index, int *inputs, int *targets) {
    long epoch = (long)(index / dl->num_windows);
    size_t position = index % dl->num_windows;
    if (epoch != dl->order_epoch) { // draw this epoch's order: Fisher-Yates from (seed, epoch)
        for (size_t w = 0; w < dl->num_windows; w++) dl->order[w] = w;
        if (dl->shuffle) {
            Rng rng = rng_seeded(dl->seed * 1000003u + (uint64_t)epoch);
            for (size_t w = dl->num_windows - 1; w > 0; w--) {
                uint64_t hi = rng_u32(&rng), lo = rng_u32(&rng); // two draws, in this order
                size_t j = ((hi << 32) | lo) % (w + 1);
                size_t tmp = dl->order[w];
                dl->order[w] = dl->order[j];
                dl->order[j] = tmp;
            }
        }
        dl->order_epoch = epoch;
    }
    size_t w = dl->order[position];
    const uint16_t *tokens = dl->shards[dl->window_shard[w]].tokens + dl->window_offset[w];
    for (size_t i = 0; i < (size_t)dl->B * dl->T; i++) {
        inputs[i] = tokens[i];
        targets[i] = tokens[i + 1];
    }
}

static void loader_free(DataLoader *dl) {
    for (int s = 0; s < dl->num_shards; s++) free(dl->shards[s].tokens);
    free(dl->shards);
    free(dl->window_shard);
    free(dl->window_offset);
    free(dl->order);
}

// =============================================================================================
// 6. Text data: JSON lines, prompt templates and training examples
// Every data file is JSON lines: one JSON object a line (the Hugging Face / TRL convention).
// The reader is written by hand; it needs only die/xmalloc/xcalloc/read_whole_file from section 1
// and <stdio.h> <stdlib.h> <string.h> <stdarg.h> <errno.h>.
//
// What the reader accepts, and what it decided where JSON leaves a choice:
//   - Each non-empty line must be one JSON object. Lines that are empty or only spaces/tabs/CR are
//     skipped; CRLF line endings and a UTF-8 byte-order mark at the start of the file are accepted.
//   - Strings: all JSON escapes, \uXXXX decoded to UTF-8, surrogate pairs joined. A lone surrogate
//     is an ERROR (not U+FFFD): it means the file was damaged, and training on it would hide that.
//     \u0000 is an error too: strings are handed on as C strings. Raw bytes >= 0x80 are copied
//     as they are (not validated): the byte-level tokenizer accepts any bytes.
//   - Numbers follow JSON's grammar exactly (no 01, 1., .5, +1); the field keeps the text as
//     written and its value as a double (strtod, "C" locale).
//   - Nested objects/arrays are validated (depth at most JSON_MAX_DEPTH, so a hostile line cannot
//     exhaust the stack) and kept only as their raw source text.
//   - Duplicate keys: the last one wins (as in Python's json module).
//   - Errors read `FILE:LINE: what is wrong`; syntax errors add the byte column at the end.
// =============================================================================================

#define JSON_MAX_DEPTH 64

typedef enum { JSON_STRING, JSON_NUMBER, JSON_TRUE, JSON_FALSE, JSON_NULL, JSON_OBJECT, JSON_ARRAY } JsonType;

// One key/value pair of a line's object. text is NUL-terminated and never NULL: the decoded
// string (JSON_STRING), or the value's source text (numbers, literals, nested objects/arrays).
typedef struct { char *key; JsonType type; char *text; size_t len; double number; } JsonField;
typedef struct { JsonField *fields; int count; } JsonObject;

// A growable byte buffer, always NUL-terminated once something was put in it.
typedef struct { char *data; size_t len, cap; } JsonBuf;

static void json_buf_put(JsonBuf *b, const void *bytes, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (b->len + n + 1 > cap) cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data) die("out of memory allocating %zu bytes", cap);
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
}
static void json_buf_puts(JsonBuf *b, const char *s) { json_buf_put(b, s, strlen(s)); }

// Hands the (NUL-terminated) contents over to the caller.
static char *json_buf_take(JsonBuf *b) {
    if (!b->data) json_buf_put(b, "", 0);
    char *s = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

static char *json_strndup(const char *s, size_t n) {
    char *copy = xmalloc(n + 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

// ---- the parser: a cursor over one line ---------------------------------------------------

typedef struct { const char *s; size_t len, pos; char *err; size_t errlen; } JsonParser;

// Records "what (column N)" and returns -1, so that callers can write `return json_fail(...)`.
static int json_fail(JsonParser *p, const char *fmt, ...) {
    char what[160];
    va_list args;
    va_start(args, fmt);
    vsnprintf(what, sizeof what, fmt, args);
    va_end(args);
    snprintf(p->err, p->errlen, "%s (column %zu)", what, p->pos + 1);
    return -1;
}

static int json_peek(const JsonParser *p) { return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1; }

static int json_is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static void json_skip_space(JsonParser *p) {
    while (p->pos < p->len && json_is_space(p->s[p->pos])) p->pos++;
}

// Writes code point cp as 1-4 bytes of UTF-8; returns how many.
static int json_utf8_encode(unsigned long cp, unsigned char out[4]) {
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

// Reads the four hex digits of a \u escape (the cursor is just past the 'u').
static int json_hex4(JsonParser *p, unsigned long *value) {
    *value = 0;
    for (int i = 0; i < 4; i++) {
        int c = json_peek(p);
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit < 0) return json_fail(p, "\\u escape needs four hex digits");
        *value = *value * 16 + (unsigned long)digit;
        p->pos++;
    }
    return 0;
}

// A \u escape, joined with a following \uDC00-\uDFFF when it is a high surrogate.
static int json_unicode_escape(JsonParser *p, unsigned long *cp) {
    if (json_hex4(p, cp) != 0) return -1;
    if (*cp == 0) return json_fail(p, "\\u0000 is not allowed (strings are C strings)");
    if (*cp >= 0xDC00 && *cp <= 0xDFFF) return json_fail(p, "lone low surrogate \\u%04lx", *cp);
    if (*cp < 0xD800 || *cp > 0xDBFF) return 0;
    unsigned long low;
    if (p->pos + 2 > p->len || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
        return json_fail(p, "lone high surrogate \\u%04lx (no low surrogate follows)", *cp);
    p->pos += 2;
    if (json_hex4(p, &low) != 0) return -1;
    if (low < 0xDC00 || low > 0xDFFF)
        return json_fail(p, "high surrogate \\u%04lx followed by \\u%04lx, not a low surrogate", *cp, low);
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (low - 0xDC00);
    return 0;
}

// Parses a string literal (the cursor is on its opening quote). Decodes into out, or only
// validates when out is NULL.
static int json_parse_string(JsonParser *p, JsonBuf *out) {
    p->pos++; // the opening quote
    for (;;) {
        size_t start = p->pos; // copy runs of plain bytes in one go
        while (p->pos < p->len && p->s[p->pos] != '"' && p->s[p->pos] != '\\' &&
               (unsigned char)p->s[p->pos] >= 0x20)
            p->pos++;
        if (out) json_buf_put(out, p->s + start, p->pos - start);
        int c = json_peek(p);
        if (c < 0) return json_fail(p, "unterminated string");
        if (c == '"') { p->pos++; return 0; }
        if (c < 0x20) return json_fail(p, "control character 0x%02X inside a string (it must be escaped)", c);
        p->pos++; // the backslash
        c = json_peek(p);
        if (c < 0) return json_fail(p, "unterminated string");
        p->pos++;
        const char *simple = strchr("\"\\/bfnrt", c), *decoded = "\"\\/\b\f\n\r\t";
        if (simple && c) {
            if (out) json_buf_put(out, decoded + (simple - "\"\\/bfnrt"), 1);
        } else if (c == 'u') {
            unsigned long cp;
            unsigned char utf8[4];
            if (json_unicode_escape(p, &cp) != 0) return -1;
            if (out) json_buf_put(out, utf8, (size_t)json_utf8_encode(cp, utf8));
        } else {
            p->pos--;
            return json_fail(p, c >= 0x20 && c < 0x7F ? "invalid escape \\%c" : "invalid escape (byte 0x%02X)", c);
        }
    }
}

static int json_is_digit(int c) { return c >= '0' && c <= '9'; }

// Checks JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
static int json_scan_number(JsonParser *p) {
    if (json_peek(p) == '-') p->pos++;
    if (!json_is_digit(json_peek(p))) return json_fail(p, "a number needs digits after '-'");
    if (json_peek(p) == '0' && (p->pos++, json_is_digit(json_peek(p))))
        return json_fail(p, "numbers cannot have leading zeros");
    while (json_is_digit(json_peek(p))) p->pos++;
    if (json_peek(p) == '.') {
        p->pos++;
        if (!json_is_digit(json_peek(p))) return json_fail(p, "a number needs digits after '.'");
        while (json_is_digit(json_peek(p))) p->pos++;
    }
    if (json_peek(p) == 'e' || json_peek(p) == 'E') {
        p->pos++;
        if (json_peek(p) == '+' || json_peek(p) == '-') p->pos++;
        if (!json_is_digit(json_peek(p))) return json_fail(p, "a number needs digits in its exponent");
        while (json_is_digit(json_peek(p))) p->pos++;
    }
    return 0;
}

static int json_scan_literal(JsonParser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return json_fail(p, "invalid literal (expected a value: string, number, true, false, null, object or array)");
    p->pos += n;
    return 0;
}

static int json_skip_value(JsonParser *p, int depth);

// Skips (but validates) an object or array; the cursor is on its '{' or '['.
static int json_skip_container(JsonParser *p, int depth) {
    if (depth > JSON_MAX_DEPTH) return json_fail(p, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    char close = p->s[p->pos] == '{' ? '}' : ']';
    p->pos++;
    json_skip_space(p);
    if (json_peek(p) == close) { p->pos++; return 0; }
    for (;;) {
        if (close == '}') { // a member: "key": value
            if (json_peek(p) != '"') return json_fail(p, "expected a string key");
            if (json_parse_string(p, NULL) != 0) return -1;
            json_skip_space(p);
            if (json_peek(p) != ':') return json_fail(p, "expected ':' after key");
            p->pos++;
        }
        if (json_skip_value(p, depth + 1) != 0) return -1;
        json_skip_space(p);
        int c = json_peek(p);
        if (c == close) { p->pos++; return 0; }
        if (c != ',') return json_fail(p, "expected ',' or '%c' after a value", close);
        p->pos++;
        json_skip_space(p);
    }
}

// Skips one value of any type (leading white space included). depth = nesting of the value.
static int json_skip_value(JsonParser *p, int depth) {
    json_skip_space(p);
    int c = json_peek(p);
    if (c == '"') return json_parse_string(p, NULL);
    if (c == '-' || json_is_digit(c)) return json_scan_number(p);
    if (c == '{' || c == '[') return json_skip_container(p, depth);
    if (c == 't') return json_scan_literal(p, "true");
    if (c == 'f') return json_scan_literal(p, "false");
    if (c == 'n') return json_scan_literal(p, "null");
    return json_fail(p, c < 0 ? "expected a value, found the end of the line" : "expected a value");
}

// Parses the value of a top-level member into f (the key is already set).
static int json_parse_member_value(JsonParser *p, JsonField *f) {
    json_skip_space(p);
    int c = json_peek(p);
    if (c == '"') {
        JsonBuf b = {0};
        int rc = json_parse_string(p, &b);
        f->type = JSON_STRING;
        f->len = b.len;
        f->text = json_buf_take(&b);
        return rc;
    }
    size_t start = p->pos;
    if (json_skip_value(p, 2) != 0) return -1; // the line's object is depth 1
    f->type = c == '{' ? JSON_OBJECT : c == '[' ? JSON_ARRAY : c == 't' ? JSON_TRUE
            : c == 'f' ? JSON_FALSE : c == 'n' ? JSON_NULL : JSON_NUMBER;
    f->len = p->pos - start;
    f->text = json_strndup(p->s + start, f->len);
    if (f->type == JSON_NUMBER) f->number = strtod(f->text, NULL);
    if (f->type == JSON_TRUE) f->number = 1;
    return 0;
}

static void json_field_free(JsonField *f) {
    free(f->key);
    free(f->text);
}

// Adds a field; a key seen before is replaced (the last duplicate wins).
static void json_object_add(JsonObject *obj, JsonField *f) {
    for (int i = 0; i < obj->count; i++)
        if (strcmp(obj->fields[i].key, f->key) == 0) {
            json_field_free(&obj->fields[i]);
            obj->fields[i] = *f;
            return;
        }
    if ((obj->count & (obj->count - 1)) == 0) { // grow at counts 0, 1, 2, 4, 8, ...
        obj->fields = realloc(obj->fields, (size_t)(obj->count ? 2 * obj->count : 1) * sizeof(JsonField));
        if (!obj->fields) die("out of memory growing a JSON object");
    }
    obj->fields[obj->count++] = *f;
}

static void json_object_free(JsonObject *obj) {
    for (int i = 0; i < obj->count; i++) json_field_free(&obj->fields[i]);
    free(obj->fields);
    obj->fields = NULL;
    obj->count = 0;
}

static int json_parse_members(JsonParser *p, JsonObject *out) {
    p->pos++; // '{'
    json_skip_space(p);
    if (json_peek(p) == '}') { p->pos++; return 0; }
    for (;;) {
        if (json_peek(p) != '"') return json_fail(p, "expected a string key");
        JsonBuf key = {0};
        JsonField f = {0};
        int rc = json_parse_string(p, &key);
        f.key = json_buf_take(&key);
        if (rc == 0) json_skip_space(p);
        if (rc == 0 && json_peek(p) != ':') rc = json_fail(p, "expected ':' after key");
        if (rc == 0) { p->pos++; rc = json_parse_member_value(p, &f); }
        if (rc != 0) { json_field_free(&f); return -1; }
        json_object_add(out, &f);
        json_skip_space(p);
        int c = json_peek(p);
        if (c == '}') { p->pos++; return 0; }
        if (c != ',') return json_fail(p, c < 0 ? "unterminated object (missing '}')" : "expected ',' or '}' after a value");
        p->pos++;
        json_skip_space(p);
    }
}

// Parses one line holding one JSON object. Returns 0, or -1 with a message in err (no file/line).
static int json_parse_object(const char *line, size_t len, JsonObject *out, char *err, size_t errlen) {
    JsonParser p = {line, len, 0, err, errlen};
    out->fields = NULL;
    out->count = 0;
    json_skip_space(&p);
    if (json_peek(&p) != '{') return json_fail(&p, "expected '{' (each line must be one JSON object)");
    int rc = json_parse_members(&p, out);
    if (rc == 0) {
        json_skip_space(&p);
        if (p.pos < p.len) rc = json_fail(&p, "trailing characters after the object");
    }
    if (rc != 0) json_object_free(out);
    return rc;
}

static const JsonField *json_get(const JsonObject *obj, const char *key) {
    for (int i = 0; i < obj->count; i++)
        if (strcmp(obj->fields[i].key, key) == 0) return &obj->fields[i];
    return NULL;
}

// The string value of a required field, or NULL with `missing field "key"` / `"key" must be a string`.
static const char *json_require_string(const JsonObject *obj, const char *key, char *err, size_t errlen) {
    const JsonField *f = json_get(obj, key);
    if (!f) snprintf(err, errlen, "missing field \"%s\"", key);
    else if (f->type != JSON_STRING) snprintf(err, errlen, "\"%s\" must be a string", key);
    return f && f->type == JSON_STRING ? f->text : NULL;
}

// ---- whole files ----------------------------------------------------------------------------

typedef struct { JsonObject *objects; int *line_numbers; int count; char *path; } JsonlFile;

static void jsonl_free(JsonlFile *f) {
    for (int i = 0; i < f->count; i++) json_object_free(&f->objects[i]);
    free(f->objects);
    free(f->line_numbers);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int jsonl_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

// Parses a whole file's bytes; name is only used in messages. Returns 0, or -1 with
// "NAME:LINE: what is wrong" in err (and nothing left allocated).
static int jsonl_parse_buffer(const char *name, const char *data, size_t n, JsonlFile *out,
                              char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->path = json_strndup(name, strlen(name));
    size_t pos = n >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0; // a UTF-8 BOM
    size_t cap = 0;
    for (int line = 1; pos < n; line++) {
        const char *nl = memchr(data + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - data) : n, len = end - pos;
        if (len && data[end - 1] == '\r') len--; // CRLF
        if (!jsonl_blank(data + pos, len)) {
            if ((size_t)out->count == cap) {
                cap = cap ? 2 * cap : 256;
                out->objects = realloc(out->objects, cap * sizeof(JsonObject));
                out->line_numbers = realloc(out->line_numbers, cap * sizeof(int));
                if (!out->objects || !out->line_numbers) die("out of memory reading %s", name);
            }
            char what[200];
            if (json_parse_object(data + pos, len, &out->objects[out->count], what, sizeof what) != 0) {
                snprintf(err, errlen, "%s:%d: %s", name, line, what);
                jsonl_free(out);
                return -1;
            }
            out->line_numbers[out->count++] = line;
        }
        pos = end + 1;
    }
    return 0;
}

// Reads a JSONL file; dies with FILE:LINE on the first bad line.
static void jsonl_read(const char *path, JsonlFile *out) {
    size_t n;
    unsigned char *data = read_whole_file(path, &n);
    if (!data) die("cannot open %s: %s", path, strerror(errno));
    char err[512];
    int rc = jsonl_parse_buffer(path, (const char *)data, n, out, err, sizeof err);
    free(data);
    if (rc != 0) die("%s", err);
}

// The string field key of object i; dies with FILE:LINE when it is missing or not a string.
const char *jsonl_string(const JsonlFile *f, int i, const char *key) {
    char err[256];
    const char *s = json_require_string(&f->objects[i], key, err, sizeof err);
    if (!s) die("%s:%d: %s", f->path, f->line_numbers[i], err);
    return s;
}

// ---- writing --------------------------------------------------------------------------------

// Length of the valid UTF-8 sequence starting at s (1-4), or 0 when the bytes there are not one
// (bad lead byte, missing continuation, overlong form, surrogate, or above U+10FFFF).
static size_t json_utf8_valid(const unsigned char *s, size_t n) {
    if (s[0] < 0x80) return 1;
    size_t len = s[0] >= 0xC2 && s[0] <= 0xDF ? 2 : s[0] >= 0xE0 && s[0] <= 0xEF ? 3
               : s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : 0;
    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (s[0] == 0xE0 && s[1] < 0xA0) return 0; // overlong 3-byte
    if (s[0] == 0xED && s[1] >= 0xA0) return 0; // UTF-16 surrogates
    if (s[0] == 0xF0 && s[1] < 0x90) return 0; // overlong 4-byte
    if (s[0] == 0xF4 && s[1] >= 0x90) return 0; // above U+10FFFF
    return len;
}

// Writes s[0..len) as a JSON string literal: " and \ escaped, control characters as \n \r \t
// \b \f or \u00XX, valid UTF-8 kept as it is, and each byte of invalid UTF-8 as \ufffd
// (so the output is always valid JSON; such bytes do not survive a round trip).
static void json_write_string(FILE *out, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', out);
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        const char *named = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                          : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        size_t n = json_utf8_valid(u + i, len - i);
        if (named) fputs(named, out);
        else if (c < 0x20) fprintf(out, "\\u%04x", c);
        else if (n == 0) fputs("\\ufffd", out);
        else fwrite(u + i, 1, n, out);
        i += n ? n : 1;
    }
    fputc('"', out);
}

// =============================================================================================
// Training examples: one = a prompt and a completion (the loss is on the completion only).
//
// The data formats, detected from the fields a line has (checked in this order):
//   {"prompt": P, "completion": C}  ->  prompt P, completion C, verbatim.
//   {"text": T}                     ->  prompt "", completion T (the loss is on every token).
//   {"question": Q, "answer": A}    ->  a reasoning item in GSM8K's form, rendered as below.
// Other fields (such as "options") are ignored.
//
// The prompt template (SIPF's format), with one instruction slot:
//
//     ### Instruction:
//     {instruction}
//
//     ### Question:
//     {question}
//
//     ### Answer:
//
// (the prompt ends with the newline after "### Answer:"; the question is trimmed of surrounding
// white space). Instructions:
//     cot    "Let's think step by step to answer the following question."
//     plain  "Answer the following question."
//     none   no template: the prompt is the question, verbatim.
//
// The answer rule. A GSM8K answer is step lines and then a final line `#### N`. The completion is
// the step lines (each trimmed; empty lines dropped), then the final line rewritten as
// `The answer is N.`; with the plain instruction the completion is that last line alone. N is
// normalized: a number loses its thousands separators and a leading '+' (`#### 1,080` -> `The
// answer is 1080.`), keeping its sign and decimals (`-3`, `0.5`); anything else (a choice letter
// like `B`) is kept as written. The gold answer used for scoring is that same N. Calculator
// notes such as `<<48/2=24>>` are kept, or removed with strip_calculator_notes.
// =============================================================================================

typedef enum { TEMPLATE_COT, TEMPLATE_PLAIN, TEMPLATE_NONE } TemplateKind;
typedef struct { TemplateKind kind; int strip_calculator_notes; } TemplateOptions;
// gold: the final answer ("1080", "-3", "B"); from the item's "gold" field when it has one, else
// from the answer's "#### N" line; NULL for prompt/completion and text items.
typedef struct { char *prompt; char *completion; char *gold; } Example;

static const char *template_instruction(TemplateKind kind) {
    return kind == TEMPLATE_COT ? "Let's think step by step to answer the following question."
                                : "Answer the following question.";
}

// Copies s[0..n) without the white space at either end.
static char *json_trimmed(const char *s, size_t n) {
    while (n && json_is_space(*s)) s++, n--;
    while (n && json_is_space(s[n - 1])) n--;
    return json_strndup(s, n);
}

// The rendered prompt for a question (malloc'd).
static char *template_prompt(TemplateKind kind, const char *question) {
    if (kind == TEMPLATE_NONE) return json_strndup(question, strlen(question));
    JsonBuf b = {0};
    char *q = json_trimmed(question, strlen(question));
    json_buf_puts(&b, "### Instruction:\n");
    json_buf_puts(&b, template_instruction(kind));
    json_buf_puts(&b, "\n\n### Question:\n");
    json_buf_puts(&b, q);
    json_buf_puts(&b, "\n\n### Answer:\n");
    free(q);
    return json_buf_take(&b);
}

// A copy of s without its calculator notes "<<...>>" (a note never spans lines; an unclosed
// "<<" is kept as text).
static char *gsm8k_strip_calculator_notes(const char *s) {
    JsonBuf b = {0};
    while (*s) {
        const char *close = NULL;
        if (s[0] == '<' && s[1] == '<') {
            close = strstr(s + 2, ">>");
            const char *nl = strchr(s + 2, '\n');
            if (close && nl && nl < close) close = NULL;
        }
        if (close) s = close + 2;
        else json_buf_put(&b, s++, 1);
    }
    return json_buf_take(&b);
}

// If s is a number written with optional sign, thousands separators (groups of exactly three
// digits) and decimals, returns it without the separators and without a '+'; otherwise NULL.
static char *gsm8k_normalize_number(const char *s) {
    JsonBuf b = {0};
    if (*s == '+' || *s == '-') { if (*s == '-') json_buf_put(&b, s, 1); s++; }
    int digits = 0, group = -1; // group: digits since the last comma (-1: no comma yet)
    for (; json_is_digit(*s) || *s == ','; s++) {
        if (*s == ',') {
            if (digits == 0 || (group >= 0 && group != 3) || (group < 0 && digits > 3)) break;
            group = 0;
            continue;
        }
        json_buf_put(&b, s, 1);
        digits++;
        if (group >= 0) group++;
    }
    int ok = digits > 0 && *s != ',' && (group < 0 || group == 3);
    if (ok && *s == '.' && json_is_digit(s[1]))
        for (json_buf_put(&b, s++, 1); json_is_digit(*s); s++) json_buf_put(&b, s, 1);
    if (!ok || *s) { free(b.data); return NULL; }
    return json_buf_take(&b);
}

// Splits a GSM8K answer into its steps (the lines before "####", each trimmed, empty ones
// dropped, joined with '\n') and its final answer (normalized as described above).
static int gsm8k_parse_answer(const char *answer, char **steps, char **final_answer, char *err, size_t errlen) {
    *steps = *final_answer = NULL;
    const char *mark = NULL; // the last "####" (of a longer run of '#', its last four)
    for (const char *m = strstr(answer, "####"); m; m = strstr(m + 1, "####")) mark = m;
    if (!mark) { snprintf(err, errlen, "the answer has no final '#### N' line"); return -1; }
    char *final_text = json_trimmed(mark + 4, strlen(mark + 4));
    while (mark > answer && mark[-1] == '#') mark--; // the steps end where the run begins
    if (!*final_text || strchr(final_text, '\n')) {
        snprintf(err, errlen, *final_text ? "the text after '####' spans several lines" : "nothing after '####'");
        free(final_text);
        return -1;
    }
    char *number = gsm8k_normalize_number(final_text);
    *final_answer = number ? number : json_strndup(final_text, strlen(final_text));
    free(final_text);
    JsonBuf b = {0};
    for (const char *line = answer; line < mark;) {
        const char *nl = memchr(line, '\n', (size_t)(mark - line));
        const char *end = nl ? nl : mark;
        char *t = json_trimmed(line, (size_t)(end - line));
        if (*t) {
            if (b.len) json_buf_puts(&b, "\n");
            json_buf_puts(&b, t);
        }
        free(t);
        line = end + 1;
    }
    *steps = json_buf_take(&b);
    return 0;
}

// The completion: steps (unless plain) and then "The answer is N."
static char *template_completion(TemplateKind kind, const char *steps, const char *final_answer) {
    JsonBuf b = {0};
    if (kind != TEMPLATE_PLAIN && *steps) {
        json_buf_puts(&b, steps);
        json_buf_puts(&b, "\n");
    }
    json_buf_puts(&b, "The answer is ");
    json_buf_puts(&b, final_answer);
    json_buf_puts(&b, ".");
    return json_buf_take(&b);
}

static void example_free(Example *ex) {
    free(ex->prompt);
    free(ex->completion);
    free(ex->gold);
    ex->prompt = ex->completion = ex->gold = NULL;
}

static int example_from_question(const char *question, const char *answer, const TemplateOptions *opt,
                                 Example *out, char *err, size_t errlen) {
    char *stripped = opt->strip_calculator_notes ? gsm8k_strip_calculator_notes(answer) : NULL;
    char *steps, *final_answer;
    int rc = gsm8k_parse_answer(stripped ? stripped : answer, &steps, &final_answer, err, errlen);
    free(stripped);
    if (rc != 0) return -1;
    out->prompt = template_prompt(opt->kind, question);
    out->completion = template_completion(opt->kind, steps, final_answer);
    out->gold = final_answer;
    free(steps);
    return 0;
}

// Builds one example from a line's object; the format is detected from the fields present.
static int example_from_json(const JsonObject *obj, const TemplateOptions *opt, Example *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    const char *prompt, *completion, *text, *question, *answer;
    if (json_get(obj, "prompt")) {
        if (!(prompt = json_require_string(obj, "prompt", err, errlen))) return -1;
        if (!(completion = json_require_string(obj, "completion", err, errlen))) return -1;
        out->prompt = json_strndup(prompt, strlen(prompt));
        out->completion = json_strndup(completion, strlen(completion));
        return 0;
    }
    if (json_get(obj, "text")) {
        if (!(text = json_require_string(obj, "text", err, errlen))) return -1;
        out->prompt = json_strndup("", 0);
        out->completion = json_strndup(text, strlen(text));
        return 0;
    }
    if (json_get(obj, "question")) {
        if (!(question = json_require_string(obj, "question", err, errlen))) return -1;
        if (!(answer = json_require_string(obj, "answer", err, errlen))) return -1;
        if (example_from_question(question, answer, opt, out, err, errlen) != 0) return -1;
        // a "gold" field (the built-in task writes one) is the true answer even when the
        // demonstration is wrong (teacher noise)
        const JsonField *gold = json_get(obj, "gold");
        if (gold && gold->type == JSON_STRING) {
            char *normal = gsm8k_normalize_number(gold->text);
            free(out->gold);
            out->gold = normal ? normal : json_strndup(gold->text, gold->len);
        }
        return 0;
    }
    snprintf(err, errlen, "no known fields (expected \"prompt\" and \"completion\", \"text\", or "
                          "\"question\" and \"answer\")");
    return -1;
}

static void examples_free(Example *examples, int count) {
    for (int i = 0; i < count; i++) example_free(&examples[i]);
    free(examples);
}

// The examples of a parsed JSONL file. Returns 0, or -1 with "FILE:LINE: what is wrong" in err
// (also when the file has no examples), leaving nothing allocated.
static int examples_from_jsonl(const JsonlFile *f, const TemplateOptions *opt, Example **out,
                               int *count, char *err, size_t errlen) {
    if (f->count == 0) {
        snprintf(err, errlen, "%s: no examples in the file", f->path);
        return -1;
    }
    Example *examples = xcalloc((size_t)f->count, sizeof(Example));
    for (int i = 0; i < f->count; i++) {
        char what[256];
        if (example_from_json(&f->objects[i], opt, &examples[i], what, sizeof what) != 0) {
            snprintf(err, errlen, "%s:%d: %s", f->path, f->line_numbers[i], what);
            examples_free(examples, i + 1);
            return -1;
        }
    }
    *out = examples;
    *count = f->count;
    return 0;
}

// Loads a whole file of examples; dies with FILE:LINE on any problem, or when it has none.
static void examples_load(const char *path, const TemplateOptions *opt, Example **out, int *count) {
    JsonlFile f;
    jsonl_read(path, &f);
    char err[4400];
    int rc = examples_from_jsonl(&f, opt, out, count, err, sizeof err);
    jsonl_free(&f);
    if (rc != 0) die("%s", err);
}

// =============================================================================================
// 7. The built-in task: `./sirt data`
//
// The program's own data, generated from a seed, so that every experiment can run without a
// download and so that the truth of every step is known. Two families, as the paper has math
// and commonsense:
//
//   math    GSM8K-like word problems. A start value (2..20) and a chain of 2-4 operations
//           (+ and - with operands 2..20, * and exact / with operands 2..9). Every intermediate
//           result stays in 1..999: no negative or zero values, no remainders. 30 templates
//           (scenarios; 24 in-domain, 6 held out) phrase each operation their own way, with
//           40 in-domain and 12 held-out names; the oracle teacher writes one
//           step per line, "Tom buys 5 more marbles: 3 + 5 = 8.", and ends with "#### 8".
//           The arithmetic always closes a line as "A OP B = C." so task_check_step can tell
//           whether any step line (the teacher's or a student's) computes right.
//   choice  CSQA/OBQA-like multiple choice: 3-5 people and a shuffled chain of comparison facts
//           ("Bob is shorter than Ann."), the question asks for the first, last, second or
//           second-to-last in the order, and the options A) .. E) name the people. The teacher
//           walks the chain from the top, one fact per line ("..., so from tallest to shortest:
//           Ann, Bob."), then names the letter: "#### B". 6 in-domain relations (taller,
//           older, ...), 3 held out.
//
// Splits. Every item i of a split comes from its own random stream, keyed by (seed, family,
// split, i): item i depends on nothing else, so `--n 100` is a prefix of `--n 1000`, and the
// same arguments give the same bytes.
//   train, valid, test  the in-domain templates and names; 2-4 operations (3-5 people).
//   test-ood            held-out templates and held-out names that no other split ever uses.
//   test-long           in-domain templates and names, one step more than any training item:
//                       5 operations (6 people, of whom 5 are options).
// No question text appears in two splits, by construction. train, valid and test share one
// generator, so a fixed hash of the question text (no seed in it) names the one of them that
// owns it (buckets of 32: 28 train, 2 valid, 2 test) and a split keeps only the questions it
// owns, drawing again otherwise; this holds across any seeds and sizes. test-ood and test-long
// cannot meet any other split: every test-ood question names a held-out person that no other
// split's text contains, and only test-long questions have 5 operations (6 people). Each test
// split can hold millions of distinct questions.
//
// Teacher noise (--noise P, default 0): with probability P (an independent stream, so the
// question does not change with P) the teacher makes one wrong step. Math: one result is off
// by a small amount (chosen so that later divisions stay exact) and the wrong value carries
// through the later, correctly computed steps to a wrong final answer. Choice: one step puts
// the new person on the wrong side of the other, the order carries the swap, and the letter
// named at the end is wrong (in the rare item where no slip would change the letter, the
// teacher stays right, so the noisy fraction is a little under P: 0.29 for 0.3). The item
// records noisy, wrong_step, and the true answer (gold).
//
// JSONL: {"question": ..., "answer": ..., "gold": ..., "noisy": ..., "template": ...}; the first
// two are GSM8K's; gold is the true answer (it differs from the answer's "####" when noisy).
// =============================================================================================

typedef enum { TASK_MATH, TASK_CHOICE } TaskFamily;
typedef enum {
    TASK_SPLIT_TRAIN, TASK_SPLIT_VALID, TASK_SPLIT_TEST, TASK_SPLIT_TEST_OOD, TASK_SPLIT_TEST_LONG,
    TASK_NUM_SPLITS
} TaskSplit;
static const char *const task_split_names[TASK_NUM_SPLITS] = {"train", "valid", "test",
                                                              "test-ood", "test-long"};
static const char *const task_family_names[2] = {"math", "choice"};

#define TASK_MAX_OPS 5      // test-long; the other splits use 2-4
#define TASK_MAX_PEOPLE 6   // test-long; the other splits use 3-5
#define TASK_MAX_OPTIONS 5
#define TASK_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct {
    char *question;     // the problem, one line
    char *answer;       // the teacher's demonstration: step lines, then "#### <final>"
    char gold[8];       // the true final answer (a number, or a letter)
    int num_steps;      // lines before "####"
    int noisy;          // 1 when the teacher made one wrong step (then the final is wrong)
    int wrong_step;     // its line index (0-based), or -1
    int template_id;    // math: task_math_templates; choice: task_relations (ids < *_IN: in-domain)
    int name_id;        // the protagonist (math) or the first person of the order (choice)
    TaskFamily family;
    TaskSplit split;
    // math only: the problem as an expression, value = start, then value = value ops[k] operands[k]
    int start, num_ops;
    char ops[TASK_MAX_OPS];
    int operands[TASK_MAX_OPS];
} TaskItem;

// --- Tables: names, math templates, comparison relations. The first *_IN entries are in-domain
// (train, valid, test, test-long); the rest are held out for test-ood.

typedef struct { const char *name; int female; } TaskName;
#define TASK_NAMES_IN 40
static const TaskName task_names[] = {
    {"Tom", 0},  {"Ann", 1},  {"Ben", 0},  {"Lucy", 1}, {"Sam", 0},  {"Mia", 1},  {"Jack", 0},
    {"Emma", 1}, {"Leo", 0},  {"Zoe", 1},  {"Max", 0},  {"Lily", 1}, {"Omar", 0}, {"Nina", 1},
    {"Ravi", 0}, {"Sara", 1}, {"Ivan", 0}, {"Rosa", 1}, {"Hugo", 0}, {"Maya", 1}, {"Carl", 0},
    {"Beth", 1}, {"Dev", 0},  {"Kate", 1}, {"Finn", 0}, {"Jade", 1}, {"Luis", 0}, {"Tara", 1},
    {"Noah", 0}, {"Ella", 1}, {"Kai", 0},  {"Iris", 1}, {"Owen", 0}, {"Ruth", 1}, {"Paul", 0},
    {"Vera", 1}, {"Eric", 0}, {"Dora", 1}, {"Adam", 0}, {"Gina", 1},
    // held out
    {"Yusuf", 0}, {"Ingrid", 1}, {"Quentin", 0}, {"Freya", 1}, {"Bjorn", 0}, {"Priya", 1},
    {"Tobias", 0}, {"Greta", 1}, {"Wendell", 0}, {"Xena", 1}, {"Ezra", 0}, {"Olga", 1},
};

// A scenario. {N} the name, {H} his/her, {a} the start value, {b} the operand. The operation
// phrases are verb phrases: the question says "He buys 5 more marbles.", the step says
// "Tom buys 5 more marbles: 3 + 5 = 8."
typedef struct { const char *start, *add, *sub, *mul, *div, *ask; } TaskMathTemplate;
#define TASK_MATH_IN 24
static const TaskMathTemplate task_math_templates[] = {
    {"{N} has {a} marbles.", "buys {b} more marbles", "loses {b} marbles",
     "trades them for {b} times as many marbles",
     "splits the marbles into {b} equal bags and keeps one bag", "How many marbles does {N} have now?"},
    {"{N} picks {a} apples.", "picks {b} more apples", "eats {b} of the apples",
     "ends up with {b} times as many apples",
     "shares the apples equally among {b} baskets and keeps one basket",
     "How many apples does {N} have at the end?"},
    {"{N} owns {a} stickers.", "gets {b} new stickers", "gives {b} stickers to a friend",
     "collects until {H} album holds {b} times as many stickers",
     "sorts the stickers into {b} equal stacks and keeps one stack", "How many stickers does {N} own now?"},
    {"{N} bakes {a} cookies.", "bakes {b} more cookies", "sells {b} cookies",
     "bakes until there are {b} times as many cookies",
     "packs the cookies into {b} equal boxes and keeps one box", "How many cookies does {N} keep?"},
    {"{N} saves {a} coins.", "saves {b} more coins", "spends {b} coins",
     "sees {H} savings grow to {b} times as many coins",
     "puts the coins into {b} equal jars and keeps one jar", "How many coins does {N} have left?"},
    {"{N} has {a} pencils in a case.", "adds {b} pencils to the case", "lends {b} pencils to classmates",
     "refills the case with {b} times as many pencils",
     "divides the pencils equally among {b} cases and keeps one case",
     "How many pencils are in {N}'s case now?"},
    {"{N} collects {a} trading cards.", "wins {b} more cards", "trades away {b} cards",
     "grows the collection to {b} times as many cards",
     "deals the cards into {b} equal hands and keeps one hand", "How many cards does {N} have now?"},
    {"{N} gathers {a} eggs.", "finds {b} more eggs", "breaks {b} eggs",
     "gathers until there are {b} times as many eggs",
     "puts the eggs into {b} equal cartons and keeps one carton", "How many eggs does {N} have?"},
    {"{N} grows {a} flowers.", "plants {b} more flowers", "picks {b} flowers for a vase",
     "sees the garden grow to {b} times as many flowers",
     "divides the flowers into {b} equal beds and keeps one bed",
     "How many flowers does {N} have in the end?"},
    {"{N} finds {a} shells on the beach.", "finds {b} more shells", "drops {b} shells",
     "ends the day with {b} times as many shells",
     "splits the shells into {b} equal buckets and keeps one bucket",
     "How many shells does {N} take home?"},
    {"{N} has {a} stamps.", "buys {b} more stamps", "uses {b} stamps on letters",
     "gets {b} times as many stamps as before",
     "sorts the stamps into {b} equal albums and keeps one album", "How many stamps does {N} have now?"},
    {"{N} gets {a} candies.", "gets {b} more candies", "eats {b} candies",
     "swaps them for {b} times as many candies",
     "splits the candies into {b} equal bags and keeps one bag", "How many candies does {N} have left?"},
    {"{N} owns {a} toy cars.", "gets {b} more toy cars for {H} birthday", "gives {b} toy cars to a cousin",
     "grows the fleet to {b} times as many cars",
     "parks the cars in {b} equal rows and keeps one row", "How many toy cars does {N} have?"},
    {"{N} has {a} books on a shelf.", "puts {b} more books on the shelf", "takes {b} books off the shelf",
     "fills the shelf with {b} times as many books",
     "spreads the books evenly over {b} shelves and keeps one shelf",
     "How many books does {N} have on the shelf?"},
    {"{N} catches {a} fish.", "catches {b} more fish", "lets {b} fish go",
     "keeps fishing until {H} catch is {b} times as many fish",
     "shares the fish equally among {b} coolers and keeps one cooler", "How many fish does {N} have now?"},
    {"{N} has {a} beads.", "buys {b} more beads", "loses {b} beads",
     "ends up with {b} times as many beads",
     "threads the beads onto {b} equal strings and keeps one string", "How many beads does {N} have now?"},
    {"{N} blows up {a} balloons.", "blows up {b} more balloons", "pops {b} balloons",
     "ends up with {b} times as many balloons",
     "ties the balloons into {b} equal bunches and keeps one bunch", "How many balloons does {N} have?"},
    {"{N} has {a} crayons.", "finds {b} more crayons", "breaks {b} crayons and throws them away",
     "gets {b} times as many crayons as before",
     "sorts the crayons into {b} equal boxes and keeps one box", "How many crayons does {N} have now?"},
    {"{N} scores {a} points in a game.", "scores {b} more points", "loses {b} points",
     "has {H} score multiplied by {b} in a bonus round",
     "has {H} score divided by {b} as a penalty", "What is {N}'s score at the end?"},
    {"{N} has {a} dollars.", "earns {b} more dollars", "spends {b} dollars",
     "invests and ends up with {b} times as many dollars",
     "splits the dollars equally among {b} envelopes and keeps one envelope",
     "How many dollars does {N} have now?"},
    {"{N} makes {a} cupcakes.", "makes {b} more cupcakes", "gives {b} cupcakes to the neighbours",
     "makes enough to have {b} times as many cupcakes",
     "puts the cupcakes on {b} equal trays and keeps one tray", "How many cupcakes does {N} have left?"},
    {"{N} has {a} seeds.", "buys a packet of {b} more seeds", "plants {b} seeds",
     "harvests {b} times as many seeds as {H} had",
     "divides the seeds into {b} equal pots and keeps one pot", "How many seeds does {N} have now?"},
    {"{N} takes {a} photos.", "takes {b} more photos", "deletes {b} photos",
     "copies them until there are {b} times as many photos",
     "sorts the photos into {b} equal albums and keeps one album", "How many photos does {N} have now?"},
    {"{N} stacks {a} blocks.", "adds {b} more blocks", "removes {b} blocks",
     "builds until there are {b} times as many blocks",
     "splits the blocks into {b} equal towers and keeps one tower", "How many blocks does {N} have?"},
    // held out
    {"{N} keeps {a} sheep on a farm.", "buys {b} more sheep", "sells {b} sheep at the market",
     "breeds the flock up to {b} times as many sheep",
     "divides the flock into {b} equal fields and keeps one field", "How many sheep does {N} keep now?"},
    {"{N} holds {a} raffle tickets.", "wins {b} extra tickets", "hands in {b} tickets",
     "trades up to {b} times as many tickets",
     "splits the tickets into {b} equal rolls and keeps one roll", "How many tickets does {N} hold?"},
    {"{N} orders {a} bricks for a wall.", "orders {b} more bricks", "returns {b} cracked bricks",
     "reorders until there are {b} times as many bricks",
     "spreads the bricks evenly over {b} pallets and keeps one pallet",
     "How many bricks does {N} have for the wall?"},
    {"{N} receives {a} emails in the morning.", "receives {b} more emails", "deletes {b} emails",
     "sees the inbox grow to {b} times as many emails",
     "files the emails into {b} equal folders and keeps one folder in the inbox",
     "How many emails are in {N}'s inbox?"},
    {"{N} folds {a} paper stars.", "folds {b} more stars", "gives {b} stars to {H} teacher",
     "multiplies the pile to {b} times as many stars",
     "hangs the stars on {b} equal strings and keeps one string", "How many paper stars does {N} have?"},
    {"{N} fills {a} jars of jam.", "fills {b} more jars", "gives away {b} jars",
     "stocks up to {b} times as many jars",
     "splits the jars into {b} equal crates and keeps one crate", "How many jars of jam does {N} have?"},
};

// A comparison: "X is <more> than Y", "Y is <less> than X"; "Who is the <most>?".
typedef struct { const char *more, *less, *most, *least, *scene; } TaskRelation;
#define TASK_RELATIONS_IN 6
static const TaskRelation task_relations[] = {
    {"taller", "shorter", "tallest", "shortest", "compare their heights"},
    {"older", "younger", "oldest", "youngest", "compare their ages"},
    {"faster", "slower", "fastest", "slowest", "run a race"},
    {"heavier", "lighter", "heaviest", "lightest", "step on a scale"},
    {"stronger", "weaker", "strongest", "weakest", "test their strength"},
    {"richer", "poorer", "richest", "poorest", "compare their savings"},
    // held out
    {"louder", "quieter", "loudest", "quietest", "sing in a choir"},
    {"happier", "sadder", "happiest", "saddest", "talk about their week"},
    {"luckier", "unluckier", "luckiest", "unluckiest", "play a board game"},
};

static const char *const task_connectors[] = {"Then", "After that,", "Next,", "Later,"};
static const char *const task_counts[] = {"", "", "", "Three", "Four", "Five", "Six"};

// --- Small helpers: a growing string, random picks, hashes.

typedef struct { char *data; size_t len, cap; } TaskText;

static void task_put(TaskText *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (t->len + n + 1 > cap) cap *= 2;
        char *grown = xmalloc(cap);
        if (t->len) memcpy(grown, t->data, t->len);
        free(t->data);
        t->data = grown;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

static void task_puts(TaskText *t, const char *s) { task_put(t, s, strlen(s)); }

static void task_putf(TaskText *t, const char *fmt, ...) {
    char buf[256];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    if (n < 0 || n >= (int)sizeof buf) die("task: formatted text too long");
    task_put(t, buf, (size_t)n);
}

// Expands a template's placeholders: {N} name, {H} his/her, {a} start value, {b} operand.
static void task_expand(TaskText *t, const char *tmpl, const TaskName *who, int a, int b) {
    for (const char *p = tmpl; *p; p++) {
        if (p[0] == '{' && p[1] && p[2] == '}') {
            switch (p[1]) {
            case 'N': task_puts(t, who->name); break;
            case 'H': task_puts(t, who->female ? "her" : "his"); break;
            case 'a': task_putf(t, "%d", a); break;
            case 'b': task_putf(t, "%d", b); break;
            default: die("task: bad placeholder in '%s'", tmpl);
            }
            p += 2;
        } else {
            task_put(t, p, 1);
        }
    }
}

static int task_below(Rng *rng, int n) { return (int)(rng_u32(rng) % (uint32_t)n); }

static void task_shuffle(Rng *rng, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = task_below(rng, i + 1), tmp = a[i];
        a[i] = a[j];
        a[j] = tmp;
    }
}

static uint64_t task_mix64(uint64_t z) { // the splitmix64 finaliser
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The random stream of one item: (seed, family, split, index), and stream 0 (the question) or
// 1 (the teacher's noise), so that the question does not depend on --noise.
static uint64_t task_item_key(uint64_t seed, TaskFamily family, TaskSplit split, long index,
                              int stream) {
    uint64_t h = task_mix64(seed ^ 0x5349525444415441ull); // "SIRTDATA"
    h = task_mix64(h ^ ((uint64_t)family << 16 | (uint64_t)split << 8 | (uint64_t)stream));
    return task_mix64(h + (uint64_t)index);
}

// Which of train, valid and test owns a question: a fixed function of its text alone (no seed),
// so one text can only ever belong to one of them. Buckets of 32: valid 0-1, test 2-3, train 4-31.
static TaskSplit task_owner(const char *text) {
    uint64_t h = 0xcbf29ce484222325ull; // FNV-1a
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    int bucket = (int)(task_mix64(h) % 32);
    return bucket < 2 ? TASK_SPLIT_VALID : bucket < 4 ? TASK_SPLIT_TEST : TASK_SPLIT_TRAIN;
}

// --- Math.

static long task_apply(char op, long a, long b) {
    switch (op) {
    case '+': return a + b;
    case '-': return a - b;
    case '*': return a * b;
    default: return a / b;
    }
}

static const char *task_op_phrase(const TaskMathTemplate *t, char op) {
    return op == '+' ? t->add : op == '-' ? t->sub : op == '*' ? t->mul : t->div;
}

// Draws the problem (template, name, start, operations) and writes the question.
static void task_math_question(Rng *rng, TaskSplit split, TaskItem *it, TaskText *q) {
    int ood = split == TASK_SPLIT_TEST_OOD;
    int num_templates = TASK_COUNT(task_math_templates) - TASK_MATH_IN;
    it->template_id = ood ? TASK_MATH_IN + task_below(rng, num_templates) : task_below(rng, TASK_MATH_IN);
    it->name_id = ood ? TASK_NAMES_IN + task_below(rng, TASK_COUNT(task_names) - TASK_NAMES_IN)
                      : task_below(rng, TASK_NAMES_IN);
    it->num_ops = split == TASK_SPLIT_TEST_LONG ? 5 : 2 + task_below(rng, 3);
    it->start = 2 + task_below(rng, 19);
    int v = it->start;
    for (int k = 0; k < it->num_ops; k++) {
        // the operations that keep the value in 1..999 and exact, then a valid operand for one
        char feasible[4];
        int nf = 0, divisors[8], nd = 0;
        for (int d = 2; d <= 9; d++)
            if (v % d == 0) divisors[nd++] = d;
        if (v <= 997) feasible[nf++] = '+';
        if (v >= 3) feasible[nf++] = '-';
        if (v <= 499) feasible[nf++] = '*';
        if (nd > 0) feasible[nf++] = '/';
        char op = feasible[task_below(rng, nf)];
        int cap = op == '+' || op == '-' ? 20 : 9;
        int hi = op == '+' ? 999 - v : op == '-' ? v - 1 : 999 / v; // the largest operand allowed
        if (hi > cap) hi = cap;
        int b = op == '/' ? divisors[task_below(rng, nd)] : 2 + task_below(rng, hi - 1);
        it->ops[k] = op;
        it->operands[k] = b;
        v = (int)task_apply(op, v, b);
    }
    const TaskMathTemplate *t = &task_math_templates[it->template_id];
    const TaskName *who = &task_names[it->name_id];
    const char *pronoun = who->female ? "she" : "he";
    task_expand(q, t->start, who, it->start, 0);
    for (int k = 0; k < it->num_ops; k++) {
        if (k == 0) task_putf(q, " %s ", who->female ? "She" : "He");
        else task_putf(q, " %s %s ", task_connectors[task_below(rng, TASK_COUNT(task_connectors))], pronoun);
        task_expand(q, task_op_phrase(t, it->ops[k]), who, 0, it->operands[k]);
        task_puts(q, ".");
    }
    task_puts(q, " ");
    task_expand(q, t->ask, who, it->start, 0);
    snprintf(it->gold, sizeof it->gold, "%d", v);
}

// Replays the problem with `delta` added to the result of step j: is every later division still
// exact and every value still non-negative?
static int task_math_delta_ok(const TaskItem *it, int j, long delta) {
    long v = it->start;
    for (int k = 0; k < it->num_ops; k++) {
        if (it->ops[k] == '/' && v % it->operands[k] != 0) return 0;
        v = task_apply(it->ops[k], v, it->operands[k]) + (k == j ? delta : 0);
        if (v < 0) return 0;
    }
    return 1;
}

// The teacher's demonstration; step wrong_step (or none, -1) is off by delta.
static void task_math_answer(const TaskItem *it, int wrong_step, long delta, TaskText *a) {
    const TaskMathTemplate *t = &task_math_templates[it->template_id];
    const TaskName *who = &task_names[it->name_id];
    long left = it->start;
    for (int k = 0; k < it->num_ops; k++) {
        long right = it->operands[k];
        long result = task_apply(it->ops[k], left, right) + (k == wrong_step ? delta : 0);
        task_puts(a, who->name);
        task_puts(a, " ");
        task_expand(a, task_op_phrase(t, it->ops[k]), who, 0, it->operands[k]);
        task_putf(a, ": %ld %c %ld = %ld.\n", left, it->ops[k], right, result);
        left = result;
    }
    task_putf(a, "#### %ld", left);
}

// --- Multiple choice.

typedef struct {
    int n;                          // people
    int order[TASK_MAX_PEOPLE];     // name ids, from most to least (tallest first)
    int stated_less[TASK_MAX_PEOPLE - 1]; // fact k (order[k] vs order[k+1]) said with <less>
    int query;                      // 0 the most, 1 the least, 2 the second most, 3 the second least
    int rank;                       // the position asked for, 0 = the most
    int num_options;
    int options[TASK_MAX_OPTIONS];  // name ids, option A first
} TaskChoice;

static void task_choice_question(Rng *rng, TaskSplit split, TaskItem *it, TaskChoice *c,
                                 TaskText *q) {
    int ood = split == TASK_SPLIT_TEST_OOD;
    int num_relations = TASK_COUNT(task_relations) - TASK_RELATIONS_IN;
    it->template_id = ood ? TASK_RELATIONS_IN + task_below(rng, num_relations)
                          : task_below(rng, TASK_RELATIONS_IN);
    c->n = split == TASK_SPLIT_TEST_LONG ? 6 : 3 + task_below(rng, 3);
    int pool[TASK_COUNT(task_names)], pool_n = 0; // the split's names, shuffled; take the first n
    for (int i = ood ? TASK_NAMES_IN : 0; i < (ood ? TASK_COUNT(task_names) : TASK_NAMES_IN); i++)
        pool[pool_n++] = i;
    task_shuffle(rng, pool, pool_n);
    memcpy(c->order, pool, (size_t)c->n * sizeof(int));
    it->name_id = c->order[0];
    int facts[TASK_MAX_PEOPLE - 1];
    for (int k = 0; k < c->n - 1; k++) {
        c->stated_less[k] = task_below(rng, 2);
        facts[k] = k;
    }
    task_shuffle(rng, facts, c->n - 1);
    int query = c->query = task_below(rng, 4);
    c->rank = query == 0 ? 0 : query == 1 ? c->n - 1 : query == 2 ? 1 : c->n - 2;
    int answer = c->order[c->rank];
    // options: everyone (3-5 people), or the answer and four others (6 people)
    c->num_options = c->n < TASK_MAX_OPTIONS ? c->n : TASK_MAX_OPTIONS;
    int others[TASK_MAX_PEOPLE], no = 0;
    for (int k = 0; k < c->n; k++)
        if (k != c->rank) others[no++] = c->order[k];
    task_shuffle(rng, others, no);
    c->options[0] = answer;
    memcpy(c->options + 1, others, (size_t)(c->num_options - 1) * sizeof(int));
    task_shuffle(rng, c->options, c->num_options);

    const TaskRelation *r = &task_relations[it->template_id];
    task_putf(q, "%s friends %s.", task_counts[c->n], r->scene);
    for (int f = 0; f < c->n - 1; f++) {
        int k = facts[f];
        const char *hi = task_names[c->order[k]].name, *lo = task_names[c->order[k + 1]].name;
        if (c->stated_less[k]) task_putf(q, " %s is %s than %s.", lo, r->less, hi);
        else task_putf(q, " %s is %s than %s.", hi, r->more, lo);
    }
    task_putf(q, " Who is the %s%s?", query >= 2 ? "second " : "", query % 2 ? r->least : r->most);
    for (int o = 0; o < c->num_options; o++)
        task_putf(q, " %c) %s", 'A' + o, task_names[c->options[o]].name);
    for (int o = 0; o < c->num_options; o++)
        if (c->options[o] == answer) snprintf(it->gold, sizeof it->gold, "%c", 'A' + o);
}

// Walks the chain from the top: step k places order[k+1] just below order[k], except that the
// wrong step places it just above. Fills list[0..n) and returns the name id at the asked rank.
static int task_choice_walk(const TaskChoice *c, int wrong_step, int *list) {
    list[0] = c->order[0];
    for (int k = 0; k < c->n - 1; k++) {
        int pos = 0;
        while (list[pos] != c->order[k]) pos++;
        if (k != wrong_step) pos++;
        memmove(list + pos + 1, list + pos, (size_t)(k + 1 - pos) * sizeof(int));
        list[pos] = c->order[k + 1];
    }
    return list[c->rank];
}

static int task_choice_letter(const TaskChoice *c, int name_id) {
    for (int o = 0; o < c->num_options; o++)
        if (c->options[o] == name_id) return 'A' + o;
    return 0;
}

static void task_choice_answer(const TaskItem *it, const TaskChoice *c, int wrong_step,
                               TaskText *a) {
    const TaskRelation *r = &task_relations[it->template_id];
    int list[TASK_MAX_PEOPLE];
    TaskChoice upto = *c; // the walk after k+1 steps is the walk of the first k+2 people
    for (int k = 0; k < c->n - 1; k++) {
        const char *hi = task_names[c->order[k]].name, *lo = task_names[c->order[k + 1]].name;
        if (c->stated_less[k]) task_putf(a, "%s is %s than %s", lo, r->less, hi);
        else task_putf(a, "%s is %s than %s", hi, r->more, lo);
        task_putf(a, ", so from %s to %s: ", r->most, r->least);
        upto.n = k + 2;
        upto.rank = 0;
        task_choice_walk(&upto, wrong_step, list);
        for (int i = 0; i < k + 2; i++) task_putf(a, "%s%s", i ? ", " : "", task_names[list[i]].name);
        task_puts(a, ".\n");
    }
    int named = task_choice_walk(c, wrong_step, list);
    int letter = task_choice_letter(c, named);
    task_putf(a, "So the %s%s is %s, which is option %c.\n#### %c", c->query >= 2 ? "second " : "",
              c->query % 2 ? r->least : r->most, task_names[named].name, letter, letter);
}

// --- Items.

// Item `index` of a split: depends only on (family, split, seed, index); noise in [0, 1].
void task_make_item(TaskFamily family, TaskSplit split, uint64_t seed, float noise, long index,
                    TaskItem *it) {
    memset(it, 0, sizeof *it);
    it->family = family;
    it->split = split;
    it->wrong_step = -1;
    Rng rng = rng_seeded(task_item_key(seed, family, split, index, 0));
    TaskText q = {0}, a = {0};
    TaskChoice choice = {0};
    int shared = split == TASK_SPLIT_TRAIN || split == TASK_SPLIT_VALID || split == TASK_SPLIT_TEST;
    for (int tries = 0;; tries++) { // draw until the question belongs to this split
        if (tries == 100000) die("task: cannot draw a %s question", task_split_names[split]);
        q.len = 0;
        if (family == TASK_MATH) task_math_question(&rng, split, it, &q);
        else task_choice_question(&rng, split, it, &choice, &q);
        if (!shared || task_owner(q.data) == split) break;
    }
    Rng noise_rng = rng_seeded(task_item_key(seed, family, split, index, 1));
    int noisy = noise > 0 && rng_uniform(&noise_rng) < noise;
    if (family == TASK_MATH) {
        long delta = 0;
        if (noisy) { // a small error at a random step, among those that keep later steps exact
            it->wrong_step = task_below(&noise_rng, it->num_ops);
            long small[20];
            int ns = 0;
            for (long d = -10; d <= 10; d++)
                if (d != 0 && task_math_delta_ok(it, it->wrong_step, d)) small[ns++] = d;
            if (ns > 0) delta = small[task_below(&noise_rng, ns)];
            else
                for (delta = 11; !task_math_delta_ok(it, it->wrong_step, delta); delta++) {}
        }
        task_math_answer(it, it->wrong_step, delta, &a);
        it->num_steps = it->num_ops;
    } else {
        if (noisy) { // the first step, in a random order, whose slip changes the letter named
            int steps[TASK_MAX_PEOPLE - 1], list[TASK_MAX_PEOPLE];
            for (int k = 0; k < choice.n - 1; k++) steps[k] = k;
            task_shuffle(&noise_rng, steps, choice.n - 1);
            for (int s = 0; s < choice.n - 1 && it->wrong_step < 0; s++) {
                int named = task_choice_walk(&choice, steps[s], list);
                if (named != choice.order[choice.rank] && task_choice_letter(&choice, named))
                    it->wrong_step = steps[s];
            }
        }
        task_choice_answer(it, &choice, it->wrong_step, &a);
        it->num_steps = choice.n;
    }
    it->noisy = it->wrong_step >= 0;
    it->question = q.data;
    it->answer = a.data;
}

void task_item_free(TaskItem *it) {
    free(it->question);
    free(it->answer);
    it->question = it->answer = NULL;
}

// Items 0..n-1 of a split into out[0..n); free each with task_item_free.
void task_generate(TaskFamily family, TaskSplit split, int n, uint64_t seed, float noise,
                   TaskItem *out) {
    for (int i = 0; i < n; i++) task_make_item(family, split, seed, noise, i, &out[i]);
}

// --- Step-level truth.

// Reads an integer that ends just before `end` (scanning back from it, not past `begin`);
// a '-' right before the digits is a sign unless a digit precedes it ("8-2" is a subtraction).
static const char *task_int_before(const char *begin, const char *end, long *value) {
    const char *p = end;
    while (p > begin && p[-1] >= '0' && p[-1] <= '9' && end - p < 9) p--;
    if (p == end || (p > begin && p[-1] >= '0' && p[-1] <= '9')) return NULL;
    *value = strtol(p, NULL, 10);
    if (p > begin && p[-1] == '-' && !(p - 1 > begin && p[-2] >= '0' && p[-2] <= '9')) {
        *value = -*value;
        p--;
    }
    return p;
}

static const char *task_skip_spaces_back(const char *begin, const char *p) {
    while (p > begin && p[-1] == ' ') p--;
    return p;
}

// Parses the arithmetic that ends a step line: "... A OP B = C." (OP one of + - * /; 'x' is read
// as *; the final period is optional). Returns 1 and the parts, or 0 when the line has none.
int task_parse_step(const char *line, size_t len, long *a, char *op, long *b, long *c) {
    const char *begin = line, *p = line + len;
    while (p > begin && (p[-1] == '\n' || p[-1] == '\r' || p[-1] == ' ')) p--;
    if (p > begin && p[-1] == '.') p--;
    p = task_skip_spaces_back(begin, p);
    if (!(p = task_int_before(begin, p, c))) return 0;
    p = task_skip_spaces_back(begin, p);
    if (p == begin || p[-1] != '=') return 0;
    p = task_skip_spaces_back(begin, p - 1);
    if (!(p = task_int_before(begin, p, b))) return 0;
    p = task_skip_spaces_back(begin, p);
    if (p == begin || !strchr("+-*/x", p[-1])) return 0;
    *op = p[-1] == 'x' ? '*' : p[-1];
    p = task_skip_spaces_back(begin, p - 1);
    if (!(p = task_int_before(begin, p, a))) return 0;
    // A must be a whole token: "abc12 + 3 = 15." has no arithmetic
    return p == begin || !((p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= 'A' && p[-1] <= 'Z'));
}

// Is the arithmetic of one step line right? 1 right, 0 wrong, -1 no "A OP B = C" in the line.
// Division is right only when exact. (It judges the arithmetic alone, not the choice of numbers.)
int task_check_step(const char *line, size_t len) {
    long a, b, c;
    char op;
    if (!task_parse_step(line, len, &a, &op, &b, &c)) return -1;
    if (op == '/') return b != 0 && b * c == a;
    return task_apply(op, a, b) == c;
}

// The final answer of a demonstration or completion: the text after its last "####", trimmed.
// Returns 1 and copies it to out (truncated to cap-1 bytes), or 0 when there is no "####".
int task_final_answer(const char *answer, char *out, size_t cap) {
    const char *found = NULL;
    for (const char *p = strstr(answer, "####"); p; p = strstr(p + 1, "####")) found = p;
    if (!found || cap == 0) return 0;
    const char *s = found + 4, *e;
    while (*s == ' ') s++;
    for (e = s; *e && *e != '\n' && *e != '\r'; e++) {}
    while (e > s && e[-1] == ' ') e--;
    size_t n = (size_t)(e - s) < cap - 1 ? (size_t)(e - s) : cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 1;
}

// --- `./sirt data`.

void task_write_json(FILE *f, const TaskItem *it) {
    fputs("{\"question\": ", f);
    json_write_string(f, it->question, strlen(it->question));
    fputs(", \"answer\": ", f);
    json_write_string(f, it->answer, strlen(it->answer));
    fputs(", \"gold\": ", f);
    json_write_string(f, it->gold, strlen(it->gold));
    fprintf(f, ", \"noisy\": %s, \"template\": %d}\n", it->noisy ? "true" : "false",
            it->template_id);
}

static int task_lookup(const char *text, const char *const *names, int count) {
    for (int i = 0; i < count; i++)
        if (!strcmp(text, names[i])) return i;
    return -1;
}

static void task_usage(void) {
    printf("usage: ./sirt data [--task math|choice] [--split train|valid|test|test-ood|test-long]\n"
           "                   [--n N] [--seed S] [--noise P] [--out FILE]\n"
           "Writes N generated problems as GSM8K-style JSONL (stdout without --out), with the\n"
           "oracle teacher's step-by-step answers. Defaults: math, train, 1000, seed 1, noise 0.\n"
           "--noise P: a fraction P of the answers gets one wrong step (and a wrong final\n"
           "answer); \"gold\" always holds the true answer and \"noisy\" marks those items.\n");
}

int cmd_data(int argc, char **argv) {
    TaskFamily family = TASK_MATH;
    TaskSplit split = TASK_SPLIT_TRAIN;
    long n = 1000;
    uint64_t seed = 1;
    float noise = 0.0f;
    const char *out_path = NULL;
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            task_usage();
            return 0;
        } else if (!strcmp(flag, "--task")) {
            const char *value = flag_value(argc, argv, &i);
            int f = task_lookup(value, task_family_names, 2);
            if (f < 0) die("--task: '%s' is not math or choice", value);
            family = (TaskFamily)f;
        } else if (!strcmp(flag, "--split")) {
            const char *value = flag_value(argc, argv, &i);
            int s = task_lookup(value, task_split_names, TASK_NUM_SPLITS);
            if (s < 0) die("--split: '%s' is not train, valid, test, test-ood or test-long", value);
            split = (TaskSplit)s;
        } else if (!strcmp(flag, "--n")) n = parse_long(flag, flag_value(argc, argv, &i), 0, 100000000);
        else if (!strcmp(flag, "--seed")) seed = parse_long(flag, flag_value(argc, argv, &i), 0, 0x7fffffffL);
        else if (!strcmp(flag, "--noise")) {
            noise = parse_float(flag, flag_value(argc, argv, &i));
            if (noise < 0.0f || noise > 1.0f) die("--noise must be in [0, 1]");
        } else if (!strcmp(flag, "--out")) out_path = flag_value(argc, argv, &i);
        else die("data: unknown flag '%s' (see ./sirt data --help)", flag);
    }
    SafeFile sf;
    if (out_path) safe_open(&sf, out_path);
    FILE *f = out_path ? sf.file : stdout;
    for (long i = 0; i < n; i++) {
        TaskItem it;
        task_make_item(family, split, seed, noise, i, &it);
        task_write_json(f, &it);
        task_item_free(&it);
    }
    if (out_path) safe_commit(&sf);
    else if (fflush(stdout) != 0) die("writing to stdout failed");
    return 0;
}

// =============================================================================================
// 8. Answer checking: what a completion answered, whether it is right, and which step went wrong
//
// Every result of the project is an accuracy, so this is the one place that decides what a
// model's completion answered. The rules, and why:
//
// The final answer (answer_extract).
//   - A completion ends at its first "<|endoftext|>", if it has one: text that a sampler let
//     through after the end-of-text token is not part of the answer.
//   - Preferred: the LAST "the answer is" (any case, as whole words: "So the answer is" counts,
//     "the answer isn't" does not), then an optional ':', an optional "option " or "choice ", and
//     an answer (below). The student is trained to end with "The answer is N."; the last one wins
//     because a model that corrects itself ("... Wait, the answer is 9.") commits to its last word.
//   - Otherwise the last "####" followed by an answer: GSM8K's own form (and the teacher's).
//   - An occurrence not followed by an answer ("The answer is therefore 3", "the answer is
//     <<8=8>>8": both are in GSM8K's train set) is passed over for the one before it.
//   - No answer found: the completion is wrong.
//
// What an answer is: a number or a choice letter, written in canonical form.
//   number  [sign] [$] [sign], digits with optional thousands separators (groups of three, as
//           gsm8k_normalize_number of section 6 checks them) and optional decimals; ".5" reads as
//           0.5. A '.' or ',' not followed by a digit ends the sentence, not the number, and
//           units or '%' may follow ("The answer is 18 dollars."). A number glued to a letter or
//           digit ("3x", "12th", "1.2.3") or followed by an operator or '=' ("3 + 5 = 8", "2/3")
//           is not an answer. Canonical: no separators, '+' or '$', no leading zeros, no trailing
//           decimal zeros, no "-0": "$1,080.50" -> "1080.5", "-3.00" -> "-3", ".5" -> "0.5".
//           Two decimal numbers are equal exactly when their canonical texts are: this compares
//           them as exact rationals, with none of the rounding of doubles.
//   letter  A-E, alone ("B"), in parentheses ("(B)") or closed by one ("B)"), in either case;
//           canonical: the capital. Mid-text, a bare letter followed by a word is a word ("a
//           lot", "A person"), not an answer.
//
// Comparing (answer_equal): both sides are read as whole answers (then a lone "b" is B).
// Two answers are equal when their canonical forms are, so a number never equals a letter; two
// texts that are not answers (a gold such as "yes") must be the same once trimmed.
//
// Steps (answer_check_steps). The steps are the non-empty lines (trimmed) before the final
// answer's marker; a completion without an answer is all steps. Each is judged twice:
//   arithmetic_ok  task_check_step: is its closing "A OP B = C" right? (1, 0, or -1: none)
//   on_path        with a math TaskItem: is C the true running value after as many operations as
//                  there are arithmetic steps before it, plus one? (1, 0, or -1: no arithmetic,
//                  or no item to compare with.) Only the result is compared, so "2 * 8 = 16" for
//                  "8 * 2 = 16" is on the path; a step past the true path's end is off it. Lines
//                  without arithmetic are not counted, so chatter does not shift the steps.
//   first_error    the first step with arithmetic_ok 0 or on_path 0 (-1: none). A wrong value
//                  never rejoins the path on this task (no operation by 0 or 1), so every step
//                  after a teacher's slip is off the path, however right its arithmetic.
// The item of a sample is recovered by regenerating it: task_make_item(family, split, seed,
// noise, index) depends only on those, and its start/ops/operands do not depend on the noise.
// The choice family has no step truth here: its true order is not kept in a TaskItem.
// =============================================================================================

#define ANSWER_MAX 64       // the longest canonical answer, its NUL included; longer is no answer
#define ANSWER_MAX_STEPS 16 // steps judged one by one (GSM8K has at most 11); later ones are counted

typedef struct {
    int num_steps;                       // every step line, those beyond ANSWER_MAX_STEPS included
    int arithmetic_ok[ANSWER_MAX_STEPS]; // 1 right, 0 wrong, -1 no "A OP B = C" in the line
    int on_path[ANSWER_MAX_STEPS];       // 1 on the item's true path, 0 off it, -1 unknown
    int first_error;                     // index of the first wrong step (any index), or -1
} StepReport;

static int answer_is_alnum(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
static int answer_upper(int c) { return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c; }

// Does s start with word, ignoring ASCII case?
static int answer_starts_with(const char *s, const char *word) {
    for (; *word; s++, word++)
        if (answer_upper((unsigned char)*s) != answer_upper((unsigned char)*word)) return 0;
    return 1;
}

// Reads a number at s into out (canonical). Returns the end of its text, or NULL.
static const char *answer_scan_number(const char *s, char out[ANSWER_MAX]) {
    const char *p = s;
    int negative = 0, signs = 0; // one sign, before or after a '$': "-5", "-$5", "$-5"
    for (int i = 0; i < 2; i++) {
        if (!signs && (*p == '+' || *p == '-')) {
            negative = *p++ == '-';
            signs = 1;
        }
        if (i == 0 && *p == '$') p++;
    }
    const char *begin = p;
    while (json_is_digit(*p) || (*p == ',' && json_is_digit(p[1]))) p++;
    if (*p == '.' && json_is_digit(p[1]))
        for (p++; json_is_digit(*p); p++) {}
    size_t n = (size_t)(p - begin), bare_point = *begin == '.'; // ".5" is written "0.5"
    // no digits, or too long to be an answer. The "0" that a bare point gains counts, so that
    // a canonical answer always reads back as itself (found by fuzzing: ".7…7" of 61 characters
    // was an answer, its canonical form "0.7…7" of 62 was not).
    if (n == 0 || n + bare_point > ANSWER_MAX - 3) return NULL;
    // glued to a letter or digit, or the start of an expression: not an answer
    if (answer_is_alnum((unsigned char)*p) || *p == '_' || (*p == '.' && json_is_digit(p[1]))) return NULL;
    const char *after = p;
    while (*after == ' ') after++;
    if (*after && strchr("+-*/=^", *after)) return NULL;

    char text[ANSWER_MAX];
    snprintf(text, sizeof text, "%s%.*s", *begin == '.' ? "0" : "", (int)n, begin);
    char *plain = gsm8k_normalize_number(text); // separators checked and removed, as in section 6
    if (!plain) return NULL;
    const char *digits = plain;
    while (digits[0] == '0' && json_is_digit(digits[1])) digits++; // leading zeros
    size_t len = strlen(digits);
    if (strchr(digits, '.')) { // trailing decimal zeros, and the point when nothing is left
        while (digits[len - 1] == '0') len--;
        if (digits[len - 1] == '.') len--;
    }
    int zero = len == 1 && digits[0] == '0';
    snprintf(out, ANSWER_MAX, "%s%.*s", negative && !zero ? "-" : "", (int)len, digits);
    free(plain);
    return p;
}

// Reads a choice letter at s into out ("B"). whole: s is the entire answer, so a bare letter
// needs no check against a following word. Returns the end of its text, or NULL.
static const char *answer_scan_letter(const char *s, char out[ANSWER_MAX], int whole) {
    const char *p = s;
    int open = *p == '(';
    if (open) p++;
    int letter = answer_upper((unsigned char)*p);
    if (letter < 'A' || letter > 'E' || answer_is_alnum((unsigned char)p[1])) return NULL;
    p++;
    int closed = *p == ')';
    if (open && !closed) return NULL;
    if (closed) p++;
    if (!closed && !whole) { // "The answer is a lot of ..." names no option
        const char *q = p;
        while (*q == ' ') q++;
        if (answer_is_alnum((unsigned char)*q)) return NULL;
    }
    out[0] = (char)letter;
    out[1] = '\0';
    return p;
}

static const char *answer_scan(const char *s, char out[ANSWER_MAX], int whole) {
    const char *end = answer_scan_number(s, out);
    return end ? end : answer_scan_letter(s, out, whole);
}

// The completion up to its first end-of-text marker (a malloc'd copy).
static char *answer_cut(const char *completion) {
    const char *eot = strstr(completion, "<|endoftext|>");
    return json_strndup(completion, eot ? (size_t)(eot - completion) : strlen(completion));
}

// Finds the final answer of text (canonical, into out). Returns the offset where its marker
// ("the answer is", or the run of '#') begins, or -1 when the text has no answer.
static long answer_find(const char *text, char out[ANSWER_MAX]) {
    char got[ANSWER_MAX];
    long found = -1;
    for (const char *p = text; *p; p++) {
        if (!answer_starts_with(p, "the answer is")) continue;
        if ((p > text && answer_is_alnum((unsigned char)p[-1])) || answer_is_alnum((unsigned char)p[13]))
            continue; // not whole words: "bathe answer is", "the answer isn't"
        const char *q = p + 13;
        while (*q == ' ' || *q == '\t') q++;
        if (*q == ':') q++;
        while (*q == ' ' || *q == '\t') q++;
        if (answer_starts_with(q, "option ") || answer_starts_with(q, "choice ")) q += 7;
        if (answer_scan(q, got, 0)) {
            found = (long)(p - text);
            memcpy(out, got, sizeof got);
        }
    }
    if (found >= 0) return found;
    for (const char *p = strstr(text, "####"); p; p = strstr(p + 1, "####")) {
        const char *q = p + 4;
        while (*q == ' ' || *q == '\t') q++;
        if (answer_scan(q, got, 0)) {
            const char *run = p;
            while (run > text && run[-1] == '#') run--;
            found = (long)(run - text);
            memcpy(out, got, sizeof got);
        }
    }
    return found;
}

static void answer_copy_out(const char *answer, char *out, size_t cap) {
    size_t n = strlen(answer);
    if (n >= cap) die("answer: a buffer of %zu bytes cannot hold the answer '%s'", cap, answer);
    memcpy(out, answer, n + 1);
}

// The final answer of a completion, canonical, into out (ANSWER_MAX bytes always suffice).
// Returns 1, or 0 (and out = "") when the completion has none.
int answer_extract(const char *completion, char *out, size_t cap) {
    char *text = answer_cut(completion), got[ANSWER_MAX];
    long at = answer_find(text, got);
    free(text);
    if (at < 0) {
        if (cap) out[0] = '\0';
        return 0;
    }
    answer_copy_out(got, out, cap);
    return 1;
}

// The canonical form of a text that is one answer and nothing else ("1,080", " -3.00 ", "(b)",
// "7."). Returns 1, or 0 when the text is not an answer.
int answer_normalize(const char *text, char *out, size_t cap) {
    char got[ANSWER_MAX];
    while (json_is_space(*text)) text++;
    const char *end = answer_scan(text, got, 1);
    if (!end) return 0;
    if (*end == '.') end++;
    while (json_is_space(*end)) end++;
    if (*end) return 0;
    answer_copy_out(got, out, cap);
    return 1;
}

// Numbers as numbers, letters as letters; see the rules at the top of the section.
int answer_equal(const char *predicted, const char *gold) {
    char a[ANSWER_MAX], b[ANSWER_MAX];
    int is_a = answer_normalize(predicted, a, sizeof a), is_b = answer_normalize(gold, b, sizeof b);
    if (is_a || is_b) return is_a && is_b && strcmp(a, b) == 0;
    char *x = json_trimmed(predicted, strlen(predicted)), *y = json_trimmed(gold, strlen(gold));
    int same = *x && strcmp(x, y) == 0;
    free(x);
    free(y);
    return same;
}

// Is the completion's final answer the gold one? 0 when it has no answer.
int answer_is_correct(const char *completion, const char *gold) {
    char got[ANSWER_MAX];
    return answer_extract(completion, got, sizeof got) && answer_equal(got, gold);
}

// Judges the steps of a completion; item may be NULL (or a choice item): arithmetic only.
void answer_check_steps(const char *completion, const TaskItem *item, StepReport *out) {
    memset(out, 0, sizeof *out);
    out->first_error = -1;
    long truth[TASK_MAX_OPS]; // the true running value after each operation
    int path_len = 0;
    if (item && item->family == TASK_MATH)
        for (long v = item->start; path_len < item->num_ops; path_len++)
            truth[path_len] = v = task_apply(item->ops[path_len], v, item->operands[path_len]);

    char *text = answer_cut(completion), got[ANSWER_MAX];
    long at = answer_find(text, got);
    size_t end = at >= 0 ? (size_t)at : strlen(text), pos = 0;
    int arithmetic_steps = 0; // steps with "A OP B = C" seen so far
    while (pos < end) {
        const char *line = text + pos, *nl = memchr(line, '\n', end - pos);
        size_t len = nl ? (size_t)(nl - line) : end - pos;
        pos += len + 1;
        while (len && json_is_space(*line)) line++, len--;
        while (len && json_is_space(line[len - 1])) len--;
        if (len == 0) continue;
        int j = out->num_steps++, ok = task_check_step(line, len), on = -1;
        if (ok >= 0 && path_len > 0) {
            long a, b, c;
            char op;
            task_parse_step(line, len, &a, &op, &b, &c);
            on = arithmetic_steps < path_len && c == truth[arithmetic_steps];
        }
        if (ok >= 0) arithmetic_steps++;
        if (j < ANSWER_MAX_STEPS) {
            out->arithmetic_ok[j] = ok;
            out->on_path[j] = on;
        }
        if (out->first_error < 0 && (ok == 0 || on == 0)) out->first_error = j;
    }
    free(text);
}

// =============================================================================================
// 9. Training
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
// 10. Supervised fine-tuning (phase 1)
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
// 11. Generation: KV-cache decoding and the sampler
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
// 12. Sampling and evaluation
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
// gold answer (section 8). Accuracy comes with a 95% Wilson score interval.
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
// 13. Preference training: DPO and its relatives
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
// 14. Self-refinement (phase 2)
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
// 15. The reproduction: `./sirt reproduce`, and `./sirt` with no arguments
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
// 16. Benchmark
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
        size_t sizes[NUM_PARAM_TENSORS], params = 0;
        param_sizes(&cfg, sizes);
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) params += sizes[i];
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
// 17. Main
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
