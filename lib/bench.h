// lib/bench.h — `./sirt bench`: how fast a training step, decoding and the tokenizer run.
// Part of sirt (one translation unit): sirt.c includes this file after the method (section 12),
// since it times the model's own functions (model_build, model_forward, model_backward, decode_step)
// on random weights; it is a measuring instrument, not part of the method.

#ifndef SIRT_LIB_BENCH_H
#define SIRT_LIB_BENCH_H

// =============================================================================================
// `./sirt bench` times full training steps (forward + backward + AdamW) on random weights and
// tokens, and reports the arithmetic rate that the matrix products and attention achieve.
// =============================================================================================

// The float32 matrix-product peak of the machine BENCHMARKS.md measures on (2 Zen 4 cores with
// AVX-512, about 190 GFLOP/s in a good matrix product): the Llama tables give their share of it.
// On another machine the share is of this figure, not of that machine's peak.
#define BENCH_PEAK_GFLOPS 190.0

// FLOPs of the matrix products of one forward pass, per token, attention's QKᵀ and AV left out:
// a weight matrix of R rows and K columns costs 2·R·K (a multiply and an add per weight). A block
// has attention's q, k, v projection (C + 2·KVC rows, where KVC = KVH·C/NH: with grouped-query
// attention k and v have KVH heads, fewer than q's NH), its output projection (C rows), and the
// MLP: GPT-2's hidden×C and C×hidden, Llama's SwiGLU three matrices, w1 and w3 (hidden×C each,
// one product of 2·hidden rows in sirt) and w2 (C×hidden). The classifier has Vp rows (sirt
// computes the padded ones too). RMSNorm, RoPE, SwiGLU's gate and the softmax are not counted.
// For GPT-2 (KVC = C, hidden = 4C) this is 24·C²·L + 2·C·Vp.
static double matmul_flops_per_token(const Config *cfg) {
    double C = cfg->C, H = cfg->hidden, KVC = (double)cfg->KVH * (cfg->C / cfg->NH);
    double FC = cfg->arch == ARCH_LLAMA ? 2.0 * H : H; // rows of the MLP's first product
    return 2.0 * (cfg->L * ((C + 2.0 * KVC) * C + C * C + FC * C + C * H) + C * cfg->Vp);
}

// FLOPs of one query attending to `keys` positions, over all layers: QKᵀ and AV cost 2·(C/NH)
// per key and query head each, so 4·C·keys a layer (grouped-query attention shares k and v
// between heads, but each query head still does its own products).
static double attention_flops(const Config *cfg, double keys) {
    return 4.0 * cfg->C * keys * cfg->L;
}

// FLOPs of one training step: the backward does twice the forward's products. Causal attention:
// position t attends to t+1 keys, T(T+1)/2 in a row.
static double training_flops(const Config *cfg, int B, int T) {
    double BT = (double)B * T;
    return 3.0 * (BT * matmul_flops_per_token(cfg) + B * attention_flops(cfg, T * (T + 1.0) / 2.0));
}

// FLOPs of decoding B sequences with the key/value cache from position `prompt` to `total`: the
// token at position p goes through every matrix and attends to p+1 cached keys.
static double decoding_flops(const Config *cfg, int B, int prompt, int total) {
    double flops = 0.0;
    for (int p = prompt; p < total; p++)
        flops += B * (matmul_flops_per_token(cfg) + attention_flops(cfg, p + 1.0));
    return flops;
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
        model_forward(&model, inputs, targets, NULL, B, T);
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
        model_forward(model, inputs, targets, NULL, rows, total); // warm-up
        double t0 = now_seconds();
        model_forward(model, inputs, targets, NULL, rows, total);
        double per_row = (now_seconds() - t0) / rows;
        free(inputs);
        free(targets);
        return 1.0 / per_row; // each row yields one new token per forward pass
    }
    KVCache kv;
    kv_cache_init(&kv, model, B, B * prompt, total); // rows: the prefill's, the most of a step
    int **prompts = xmalloc(B * sizeof(int *)), *lengths = xmalloc(B * sizeof(int));
    int *slots = xmalloc(B * sizeof(int)), *tokens = xmalloc(B * sizeof(int)), *pos = xmalloc(B * sizeof(int));
    for (int b = 0; b < B; b++) {
        prompts[b] = xmalloc(prompt * sizeof(int));
        for (int t = 0; t < prompt; t++) prompts[b][t] = rng_u32(&rng) % cfg->V;
        lengths[b] = prompt;
        slots[b] = b;
    }
    decode_prefill(model, &kv, (const int *const *)prompts, lengths, slots, B);
    double t0 = now_seconds();
    for (int p = prompt; p < total; p++) {
        for (int b = 0; b < B; b++) { // greedy: the argmax of each row
            const float *z = kv.host_logits + (size_t)b * cfg->Vp;
            int best = 0;
            for (int i = 1; i < cfg->V; i++) best = z[i] > z[best] ? i : best;
            tokens[b] = best;
            pos[b] = p;
        }
        decode_step(model, &kv, tokens, slots, pos, NULL, NULL, B, B);
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

// The memory bandwidth of reading n floats once, in GB/s, best of 3 passes: the floor of
// batch-1 decoding, which must read every weight once per token. Each thread sums its share in
// 64 float lanes (four vector registers: independent sums, so the loop waits on memory only).
static double read_bandwidth_gbs(const float *x, size_t n) {
    double best = 0.0;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = now_seconds(), total = 0.0;
        #pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t begin = 0; begin < n; begin += 1 << 16) {
            size_t end = begin + (1 << 16) < n ? begin + (1 << 16) : n, i = begin;
            float lanes[64] = {0};
            for (; i + 64 <= end; i += 64)
                for (int j = 0; j < 64; j++) lanes[j] += x[i + j];
            for (; i < end; i++) lanes[0] += x[i];
            for (int j = 0; j < 64; j++) total += lanes[j];
        }
        double gbs = n * 4.0 / (now_seconds() - t0) * 1e-9;
        volatile double sink = total; // the sum is used, so the reads are not optimised away
        (void)sink;
        best = gbs > best ? gbs : best;
    }
    return best;
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

// ---------------------------------------------------------------------------------------------
// `./sirt bench --arch llama`: the Llama shape's training step and its decoding with the cache,
// with the FLOPs of each (above) and their share of BENCH_PEAK_GFLOPS, for comparison with
// tests/bench_torch.py --arch llama, a PyTorch Llama of the same definition timed the same way.
// Without --config: the reproduction's Llama student (its --config with --arch llama: KVH = NH,
// llama2.c's default hidden) and stories260K's shape; without --batch and --seq: the batch of the
// GPT-2 table (B=4, T=64) and the reproduction's (B=16, T=256). Decoding: prompts of 16 tokens,
// greedy up to position 256 (or maxT), at batch 1 and 64, best of 3 passes.
static void bench_llama(const char *config, int B, int T, int batch_given, int steps,
                        int train_only) {
    struct { const char *name, *config; } shapes[] = {
        {"student", "4,4,128,256,1024"}, {"stories260K", "5,8,64,512,512,4,172"}};
    int n_shapes = config ? 1 : 2;
    int batches[2][2] = {{4, 64}, {16, 256}}, n_batches = batch_given ? 1 : 2;
    if (batch_given) batches[0][0] = B, batches[0][1] = T;
    for (int s = 0; s < n_shapes; s++) { // bad shapes and batches die before any output
        Config cfg = parse_config_arch(config ? config : shapes[s].config, ARCH_LLAMA);
        for (int b = 0; b < n_batches; b++)
            if (batches[b][1] > cfg.maxT) die("--seq %d exceeds maxT %d", batches[b][1], cfg.maxT);
    }
    printf("Llama training step (forward + backward + AdamW), %d threads, best of %d; %% of %.0f "
           "GFLOP/s\n", num_threads(), steps, BENCH_PEAK_GFLOPS);
    printf("%-22s %5s %5s %10s %10s %10s %10s %8s %6s\n", "shape", "B", "T", "params", "GFLOP",
           "ms/step", "tok/s", "GFLOP/s", "%peak");
    for (int s = 0; s < n_shapes; s++) {
        const char *name = config ? config : shapes[s].name;
        Config cfg = parse_config_arch(config ? config : shapes[s].config, ARCH_LLAMA);
        for (int b = 0; b < n_batches; b++) {
            int rows = batches[b][0], seq = batches[b][1];
            BenchResult r = bench_training_step(cfg, rows, seq, steps);
            printf("%-22s %5d %5d %10zu %10.3f %10.2f %10.0f %8.1f %5.1f%%\n", name, rows, seq,
                   count_parameters(&cfg), training_flops(&cfg, rows, seq) * 1e-9, r.ms_per_step,
                   r.tok_per_s, r.gflops, 100.0 * r.gflops / BENCH_PEAK_GFLOPS);
        }
    }
    if (train_only) return;
    int prompt = 16, decode_batches[2] = {1, 64}, passes = 3;
    printf("\nLlama decoding with the key/value cache, greedy: prompt %d tokens (maxT-1 when "
           "shorter), generating up to position 256 (or maxT), best of %d passes\n", prompt, passes);
    printf("%-22s %5s %5s %10s %10s %10s %8s %6s\n", "shape", "B", "to", "params", "ms/step",
           "tok/s", "GFLOP/s", "%peak");
    for (int s = 0; s < n_shapes; s++) {
        const char *name = config ? config : shapes[s].name;
        Model model;
        model_build(&model, parse_config_arch(config ? config : shapes[s].config, ARCH_LLAMA));
        model_init_random(&model, 42);
        const Config *cfg = &model.config;
        int total = cfg->maxT < 256 ? cfg->maxT : 256, start = prompt < total ? prompt : total - 1;
        if (start < 1) die("bench: maxT %d leaves no room to decode after a prompt", cfg->maxT);
        for (int i = 0; i < 2; i++) {
            int rows = decode_batches[i];
            double best = 0.0; // generated tokens/s
            for (int pass = 0; pass < passes; pass++) {
                double rate = bench_decode(&model, rows, start, total, 1);
                best = rate > best ? rate : best;
            }
            double step_s = rows / best; // one decode_step generates a token for each row
            double gflops = decoding_flops(cfg, rows, start, total) / (total - start) / step_s * 1e-9;
            printf("%-22s %5d %5d %10zu %10.3f %10.0f %8.1f %5.1f%%\n", name, rows, total,
                   model.num_parameters, step_s * 1e3, best, gflops,
                   100.0 * gflops / BENCH_PEAK_GFLOPS);
        }
        model_free(&model);
    }
}

int cmd_bench(int argc, char **argv) {
    const char *config = NULL, *tokenizer = NULL, *text = NULL;
    int B = 4, T = 64, steps = 5, train_only = 0, arch = ARCH_GPT2, batch_given = 0;
    const Flag flags[] = {
        {"--config", "L,NH,C,maxT,V", FLAG_STRING, .value = &config,
         "this shape instead of the two benchmark shapes; with --arch llama: "
         "L,NH,C,maxT,V[,KVH[,hidden]]"},
        {"--arch", NULL, FLAG_CHOICE, .value = &arch,
         "llama: the Llama shape's training step and cached decoding, with GFLOP/s and the share "
         "of 190 (the reproduction's Llama student and stories260K's shape, at B=4 T=64 and "
         "B=16 T=256 unless --batch or --seq is given)", .choices = ARCH_NAMES},
        {"--batch", "B", FLAG_INT, .value = &B, "sequences per step", 1, 1 << 16,
         .given = &batch_given},
        {"--seq", "T", FLAG_INT, .value = &T, "tokens per sequence", 1, 1 << 16,
         .given = &batch_given},
        {"--steps", "N", FLAG_INT, .value = &steps, "timed steps; the best counts", 1, 1000},
        {"--train-only", NULL, FLAG_SWITCH, .value = &train_only, "no decoding benchmark"},
        {"--tokenizer", "PATH", FLAG_STRING, .value = &tokenizer,
         "with --text: time this tokenizer's encoding instead"},
        {"--text", "FILE", FLAG_STRING, .value = &text, "the text the tokenizer encodes"},
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {0}};
    if (flags_parse(argc, argv, "bench", "bench [--arch gpt2|llama] [--config L,NH,C,maxT,V] "
                    "[--batch B] [--seq T] [--steps N] [--train-only]\n       ./sirt bench "
                    "--tokenizer PATH --text FILE", tables))
        return 0;
    if (tokenizer || text) {
        if (!tokenizer || !text) die("bench: --tokenizer and --text go together");
        bench_tokenizer(tokenizer, text);
        return 0;
    }
    if (arch == ARCH_LLAMA) {
        bench_llama(config, B, T, batch_given, steps, train_only);
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
    if (train_only) return 0;
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
        double read_gbs = read_bandwidth_gbs(model.params_memory, model.num_parameters);
        printf("%-16s %12.0f %12.1f %12.0f %12.1f %12.1f\n", config ? config : shapes[s].name,
               rates[0], rates[1], rates[2], rates[3], read_gbs);
        if (s == count - 1 || config)
            printf("batch-1 bound from bandwidth: %.0f tok/s (%zu MB of weights per token)\n",
                   read_gbs * 1e9 / (model.num_parameters * 4.0), model.num_parameters * 4 / 1000000);
        model_free(&model);
    }
    return 0;
}

#endif // SIRT_LIB_BENCH_H
