// tests/test_generate.c — tests of section 6 of sirt.c: KV-cache decoding, the sampler, generate().
// Prints one line per check and ends with "N passed, M failed".
#define SIRT_NO_MAIN
#include "../sirt.c"
#include "check.h"

// A random model with weights larger than GPT-2's init, so that its logits vary a lot.
// A Llama (arch ARCH_LLAMA, config as parse_config_arch reads it) with its classifier tied or not.
static void random_model_arch(Model *model, const char *config, uint64_t seed, int arch, int tied) {
    Config cfg = parse_config_arch(config, arch);
    if (arch == ARCH_LLAMA) cfg.tied = tied;
    model_build(model, cfg);
    model_init_random(model, seed);
    Rng rng = rng_seeded(seed + 1);
    for (size_t i = 0; i < model->num_parameters; i++) model->params_memory[i] += 0.1f * rng_normal(&rng);
    memset(model->params.wte + (size_t)cfg.V * cfg.C, 0, (size_t)(cfg.Vp - cfg.V) * cfg.C * 4);
    if (!cfg.tied)
        memset(model->params.wcls + (size_t)cfg.V * cfg.C, 0, (size_t)(cfg.Vp - cfg.V) * cfg.C * 4);
}

static void random_model(Model *model, const char *config, uint64_t seed) {
    random_model_arch(model, config, seed, ARCH_GPT2, 1);
}

// Prefill each sequence's first tokens, then feed the rest one at a time from the cache: the
// logits must equal those of the full forward pass at every position.
// GPT-2, and Llama with grouped-query attention (4 heads, 2 key/value heads) and its own
// classifier; each with head size 8 and 32 (decoding's weighted sum of values takes all heads
// at once when the head size is a multiple of 16, and head by head otherwise).
static void test_kv_cache_matches_full_forward(int arch, const char *config) {
    Model model;
    if (arch == ARCH_LLAMA) random_model_arch(&model, config, 11, ARCH_LLAMA, 0);
    else random_model(&model, config, 11);
    const Config *cfg = &model.config;
    enum { S = 4 };
    int lengths[S] = {37, 12, 25, 40}, prefill[S] = {5, 1, 9, 17};
    int *seqs[S];
    Rng rng = rng_seeded(5);
    for (int s = 0; s < S; s++) {
        seqs[s] = xmalloc(lengths[s] * sizeof(int));
        for (int t = 0; t < lengths[s]; t++) seqs[s][t] = rng_u32(&rng) % cfg->V;
    }
    // reference: the full forward pass of each sequence alone
    float *reference[S];
    for (int s = 0; s < S; s++) {
        int *targets = xmalloc(lengths[s] * sizeof(int));
        for (int t = 0; t < lengths[s]; t++) targets[t] = -1;
        model_forward(&model, seqs[s], targets, NULL, 1, lengths[s]);
        reference[s] = xmalloc((size_t)lengths[s] * cfg->Vp * sizeof(float));
        memcpy(reference[s], model.acts.logits, (size_t)lengths[s] * cfg->Vp * sizeof(float));
        free(targets);
    }
    KVCache kv;
    kv_cache_init(&kv, &model, S, S * cfg->maxT, cfg->maxT);
    int slots[S] = {2, 0, 3, 1}, positions = 0; // slots in another order than the prompts
    double max_err = 0.0, max_logit = 0.0;
    decode_prefill(&model, &kv, (const int *const *)seqs, prefill, slots, S);
    for (int s = 0; s < S; s++)
        for (int i = 0; i < cfg->V; i++) {
            double ref = reference[s][(size_t)(prefill[s] - 1) * cfg->Vp + i];
            max_err = fmax(max_err, fabs(kv.host_logits[(size_t)s * cfg->Vp + i] - ref));
            max_logit = fmax(max_logit, fabs(ref));
        }
    positions += S;
    int pos[S], tokens[S], slot[S], seq_of[S];
    for (;;) { // feed the next real token of every sequence that has one
        int N = 0;
        for (int s = 0; s < S; s++)
            if (prefill[s] < lengths[s]) {
                tokens[N] = seqs[s][prefill[s]];
                pos[N] = prefill[s]++;
                slot[N] = slots[s];
                seq_of[N++] = s;
            }
        if (N == 0) break;
        decode_step(&model, &kv, tokens, slot, pos, NULL, NULL, N, N);
        for (int n = 0; n < N; n++) {
            const float *ref = reference[seq_of[n]] + (size_t)pos[n] * cfg->Vp;
            for (int i = 0; i < cfg->V; i++)
                max_err = fmax(max_err, fabs(kv.host_logits[(size_t)n * cfg->Vp + i] - ref[i]));
            positions++;
        }
    }
    // The same arithmetic in the same order: the tolerance allows float32 rounding, 1e-5 of the
    // largest logit, though the two paths agree exactly on this machine.
    check(max_err <= 1e-5 * max_logit, "%shead size %d: KV-cache decoding equals the full forward "
          "pass at all %d positions of 4 prompts of different lengths (max |diff| %.2g, logits up "
          "to %.1f)", arch == ARCH_LLAMA ? "Llama (4 heads, 2 kv heads, own classifier), " : "",
          cfg->C / cfg->NH, positions, max_err, max_logit);
    kv_cache_free(&kv);
    for (int s = 0; s < S; s++) {
        free(seqs[s]);
        free(reference[s]);
    }
    model_free(&model);
}

// Rows never mix: prefilling prompts of different lengths together (one step of all their
// tokens) and then decoding them together gives the same bits as prefilling and decoding each
// prompt alone, in another cache slot. This is what lets generate() put any prompt in any slot
// next to any others without changing its text.
static void test_rows_independent(void) {
    Model model;
    random_model(&model, "2,4,32,64,71", 21);
    const Config *cfg = &model.config;
    enum { S = 5, STEPS = 12 };
    int lengths[S] = {23, 1, 40, 7, 16}, together_slots[S] = {3, 0, 4, 2, 1};
    int *seqs[S];
    Rng rng = rng_seeded(8);
    for (int s = 0; s < S; s++) {
        seqs[s] = xmalloc((lengths[s] + STEPS) * sizeof(int));
        for (int t = 0; t < lengths[s] + STEPS; t++) seqs[s][t] = rng_u32(&rng) % cfg->V;
    }
    size_t row = (size_t)cfg->Vp * sizeof(float);
    float *together = xmalloc(S * row);
    KVCache kv, alone;
    kv_cache_init(&kv, &model, S, S * cfg->maxT, cfg->maxT);
    kv_cache_init(&alone, &model, S, S * cfg->maxT, cfg->maxT);
    int same = 1, compared = 0;
    decode_prefill(&model, &kv, (const int *const *)seqs, lengths, together_slots, S);
    memcpy(together, kv.host_logits, S * row);
    for (int s = 0; s < S; s++) { // alone: slot s, a batch of one
        decode_prefill(&model, &alone, (const int *const *)&seqs[s], &lengths[s], &s, 1);
        same &= !memcmp(alone.host_logits, together + s * cfg->Vp, row);
        compared++;
    }
    for (int step = 0; step < STEPS; step++) {
        int tokens[S], pos[S];
        for (int s = 0; s < S; s++) tokens[s] = seqs[s][lengths[s] + step], pos[s] = lengths[s] + step;
        decode_step(&model, &kv, tokens, together_slots, pos, NULL, NULL, S, S);
        memcpy(together, kv.host_logits, S * row);
        for (int s = 0; s < S; s++) {
            decode_step(&model, &alone, &tokens[s], &s, &pos[s], NULL, NULL, 1, 1);
            same &= !memcmp(alone.host_logits, together + s * cfg->Vp, row);
            compared++;
        }
    }
    check(same, "prefill and decoding of 5 prompts of 1 to 40 tokens together (other slots) give "
          "bit-identical logits to each prompt alone (%d rows compared)", compared);
    kv_cache_free(&kv);
    kv_cache_free(&alone);
    free(together);
    for (int s = 0; s < S; s++) free(seqs[s]);
    model_free(&model);
}

// One step may carry live sequences' tokens and whole prompts (generate prefills the prompts
// that start at a step in that step): two prompts are prefilled, and two steps later three more
// join the step of their decoding, their last tokens among the rows that reach the classifier
// and their other tokens after them. Every row's logits must be bit-identical to those of each
// sequence prefilled and decoded alone.
static void test_mixed_steps(void) {
    Model model;
    random_model(&model, "2,4,32,64,71", 23);
    const Config *cfg = &model.config;
    enum { S = 5, STEPS = 6 };
    int lengths[S] = {23, 1, 40, 7, 16}, slots[S] = {3, 0, 4, 2, 1}, starts_at[S] = {0, 0, 2, 2, 2};
    int *seqs[S];
    Rng rng = rng_seeded(12);
    for (int s = 0; s < S; s++) {
        seqs[s] = xmalloc((lengths[s] + STEPS) * sizeof(int));
        for (int t = 0; t < lengths[s] + STEPS; t++) seqs[s][t] = rng_u32(&rng) % cfg->V;
    }
    size_t row = (size_t)cfg->Vp * sizeof(float);
    // alone: ref[s] row i = the logits after position lengths[s] - 1 + i
    float *ref[S];
    KVCache kv;
    kv_cache_init(&kv, &model, S, S * cfg->maxT, cfg->maxT);
    for (int s = 0; s < S; s++) {
        ref[s] = xmalloc((STEPS + 1) * row);
        decode_prefill(&model, &kv, (const int *const *)&seqs[s], &lengths[s], &s, 1);
        memcpy(ref[s], kv.host_logits, row);
        for (int i = 1; i <= STEPS; i++) {
            int p = lengths[s] - 1 + i;
            decode_step(&model, &kv, &seqs[s][p], &s, &p, NULL, NULL, 1, 1);
            memcpy((char *)ref[s] + i * row, kv.host_logits, row);
        }
    }
    // together: fed[s] = the positions of sequence s in the cache (0: not started)
    int fed[S] = {0}, same = 1, compared = 0, mixed = 0;
    StepRows step = step_rows_alloc(S * cfg->maxT);
    for (int k = 0;; k++) {
        int live[S], n_live = 0, fill[S], n_fill = 0;
        const int *fill_ids[S];
        int fill_len[S], fill_slot[S];
        step.count = 0;
        for (int s = 0; s < S; s++)
            if (fed[s] > 0 && fed[s] < lengths[s] + STEPS) {
                step_rows_add(&step, seqs[s][fed[s]], slots[s], fed[s], slots[s], 0);
                live[n_live++] = s;
            }
        for (int s = 0; s < S; s++)
            if (starts_at[s] == k) {
                fill_ids[n_fill] = seqs[s], fill_len[n_fill] = lengths[s], fill_slot[n_fill] = slots[s];
                fill[n_fill++] = s;
            }
        if (n_live == 0 && n_fill == 0) break;
        step_rows_add_prompts(&step, fill_ids, fill_len, fill_slot, n_fill);
        mixed += n_live > 0 && n_fill > 0;
        decode_step(&model, &kv, step.token, step.slot, step.pos, step.prefix, step.prefix_len,
                    step.count, n_live + n_fill);
        for (int i = 0; i < n_live; i++) {
            int s = live[i];
            same &= !memcmp(kv.host_logits + (size_t)i * cfg->Vp,
                            (char *)ref[s] + (fed[s] - lengths[s] + 1) * row, row);
            fed[s]++;
            compared++;
        }
        for (int f = 0; f < n_fill; f++) {
            same &= !memcmp(kv.host_logits + (size_t)(n_live + f) * cfg->Vp, ref[fill[f]], row);
            fed[fill[f]] = lengths[fill[f]];
            compared++;
        }
    }
    check(same && mixed == 1 && compared == S * (STEPS + 1),
          "steps that carry prefills beside decoding (3 prompts of 40, 7 and 16 tokens join 2 live "
          "sequences) give bit-identical logits to each sequence alone (%d rows compared)", compared);
    step_rows_free(&step);
    kv_cache_free(&kv);
    for (int s = 0; s < S; s++) free(seqs[s]), free(ref[s]);
    model_free(&model);
}

// Generation: greedy is deterministic; sampling gives the same text for any batch size and any
// number of threads, because sequence i draws from its own generator (seed, i) and rows never
// mix. With more prompts than slots, prompts of 1 to 90 tokens and completions that end early
// (a stop string) or run to max_new, finished sequences hand their slots to waiting prompts
// throughout (continuous batching): every batch size must give the text of batch 1.
static void test_generation_determinism(void) {
    Model model;
    random_model(&model, "2,2,32,128,300", 3);
    char err[256];
    const char *text = "Tom has 3 apples. He buys 5 more: 3 + 5 = 8. The answer is 8.\n";
    size_t len = strlen(text);
    Tokenizer *tok = tok_train(&text, &len, 1, 300, 0, err, sizeof err);
    enum { P = 40, RUNS = 6 };
    TokenSequence prompts[P];
    Rng rng = rng_seeded(9);
    for (int i = 0; i < P; i++) {
        prompts[i].length = i % 4 == 0 ? 40 + rng_u32(&rng) % 51 : 1 + rng_u32(&rng) % 12;
        prompts[i].prompt_length = prompts[i].length;
        prompts[i].ids = xmalloc(prompts[i].length * sizeof(int));
        for (int t = 0; t < prompts[i].length; t++) prompts[i].ids[t] = rng_u32(&rng) % 256;
    }
    GenerateSettings g = {{1.0f, 0, 1.0f}, 24, NULL, 42, 1};
    // run 0 is the reference: one sequence at a time
    char *runs[RUNS][P];
    int batches[RUNS] = {1, 16, 7, 3, 40, 16}, threads[RUNS] = {2, 2, 2, 2, 2, 1};
    for (int r = 0; r < RUNS; r++) {
        set_threads(threads[r]);
        g.batch = batches[r];
        generate(&model, tok, prompts, P, &g, runs[r], 0);
    }
    set_threads(2);
    int same = 1, nonempty = 0;
    for (int i = 0; i < P; i++) {
        for (int r = 1; r < RUNS; r++) same &= !strcmp(runs[0][i], runs[r][i]);
        nonempty += runs[0][i][0] != 0;
    }
    check(same && nonempty > P / 2, "sampling at temperature 1: batch 16, 7, 3 and 40 and 1 or 2 "
          "threads give the text of batch 1 (%d prompts of 1 to 90 tokens, %d non-empty)", P, nonempty);
    // long prompts: with batch 40 their tokens are more than one step takes (PREFILL_ROWS), so
    // the first ones are prefilled at the first step and the others at the next
    TokenSequence long_prompts[P];
    int long_tokens = 0;
    for (int i = 0; i < P; i++) {
        long_prompts[i].length = long_prompts[i].prompt_length = 60 + rng_u32(&rng) % 41;
        long_prompts[i].ids = xmalloc(long_prompts[i].length * sizeof(int));
        for (int t = 0; t < long_prompts[i].length; t++) long_prompts[i].ids[t] = rng_u32(&rng) % 256;
        long_tokens += long_prompts[i].length;
    }
    char *long_runs[2][P];
    for (int r = 0; r < 2; r++) {
        g.batch = r ? P : 1;
        generate(&model, tok, long_prompts, P, &g, long_runs[r], 0);
    }
    same = 1;
    for (int i = 0; i < P; i++) same &= !strcmp(long_runs[0][i], long_runs[1][i]);
    check(same && long_tokens > PREFILL_ROWS, "40 prompts of 60 to 100 tokens (%d, more than the "
          "%d one step prefills): batch 40 gives the text of batch 1", long_tokens, PREFILL_ROWS);
    for (int i = 0; i < P; i++) {
        free(long_prompts[i].ids);
        for (int r = 0; r < 2; r++) free(long_runs[r][i]);
    }
    char *greedy[2][P];
    g.sampler.temperature = 0.0f;
    for (int r = 0; r < 2; r++) {
        g.batch = r ? 3 : 20;
        g.seed = r ? 1 : 2; // the seed does not matter to greedy decoding
        generate(&model, tok, prompts, P, &g, greedy[r], 0);
    }
    same = 1;
    for (int i = 0; i < P; i++) same &= !strcmp(greedy[0][i], greedy[1][i]);
    check(same, "greedy decoding is deterministic (any batch, any seed)");
    // stop strings end the completion before them; the sequences end at very different steps
    g.stop = "e";
    g.seed = 42;
    g.sampler.temperature = 1.0f;
    char *stopped[3][P];
    int stop_batches[3] = {1, 5, 16};
    for (int r = 0; r < 3; r++) {
        g.batch = stop_batches[r];
        generate(&model, tok, prompts, P, &g, stopped[r], 0);
    }
    int stop_ok = 1, early = 0, full = 0;
    for (int i = 0; i < P; i++) {
        stop_ok &= strchr(stopped[0][i], 'e') == NULL;
        stop_ok &= !strncmp(stopped[0][i], runs[0][i], strlen(stopped[0][i])); // a prefix of the free run
        early += strchr(runs[0][i], 'e') != NULL;  // this one stopped before max_new
        full += strchr(runs[0][i], 'e') == NULL;   // this one ran to max_new (or end-of-text)
    }
    check(stop_ok, "a stop string ends the completion before it (and the text is otherwise the same)");
    same = 1;
    for (int i = 0; i < P; i++)
        for (int r = 1; r < 3; r++) same &= !strcmp(stopped[0][i], stopped[r][i]);
    check(same && early >= 5 && full >= 5, "with a stop string (%d completions end early, %d do not), "
          "batch 5 and 16 give the text of batch 1", early, full);
    for (int i = 0; i < P; i++) {
        for (int r = 0; r < RUNS; r++) free(runs[r][i]);
        for (int r = 0; r < 2; r++) free(greedy[r][i]);
        for (int r = 0; r < 3; r++) free(stopped[r][i]);
        free(prompts[i].ids);
    }
    tok_free(tok);
    model_free(&model);
}

// The shared-prompt tests' setup: a small random model of the given shape family (maxT 128,
// V 300) and a tokenizer of 300 tokens (the prompts are ids; it only decodes the completions).
static Tokenizer *shared_prompt_model(Model *model, int arch, uint64_t seed) {
    if (arch == ARCH_LLAMA) random_model_arch(model, "2,4,32,128,300,2,48", seed, ARCH_LLAMA, 0);
    else random_model(model, "2,2,32,128,300", seed);
    char err[256];
    const char *text = "Ann has 4 pears. She gives 1 away: 4 - 1 = 3. The answer is 3.\n";
    size_t len = strlen(text);
    return tok_train(&text, &len, 1, 300, 0, err, sizeof err);
}

// A prompt that several sequences share is prefilled once, and each reads it from the slot
// that holds it (generate()): a prompt of the same fill, a live sequence's slot, or a slot whose
// sequences have finished but that still holds it. 6 distinct prompts, each 6 times in a list of 36 where no two neighbours are
// the same prompt, half of them as the same ids pointer and half as equal copies: with batch 1
// every prompt is prefilled (the one slot always holds the previous, other prompt); batches 4,
// 7 and 36 must give every sequence the text of batch 1. GPT-2, and Llama with
// grouped-query attention (its cache rows are KVC = 2·8 wide, not C).
// The prefills that generate() counts prove the sharing: batch 1 prefills all 36 prompts; batch
// 36 starts all 36 sequences in one fill, so it prefills each distinct prompt once (6) and no
// other; batch 7's first fill holds prompts 0..6, and prompt 6 is prompt 0's again, so it
// prefills fewer than 36 (how many more than 6 depends on when slots free: a slot whose readers
// have all finished may be given to another prompt, which loses the one it held); batch 4 at
// least 6 and at most 36: its 4 slots cycle through 6 prompts, so a prompt comes back after its
// slot went to another unless its last sample is still live (here it prefills all 36).
static void test_shared_prompts(int arch) {
    Model model;
    Tokenizer *tok = shared_prompt_model(&model, arch, 21);
    enum { D = 6, P = 36, RUNS = 4 };
    int *distinct[D], distinct_len[D];
    Rng rng = rng_seeded(17);
    for (int d = 0; d < D; d++) {
        distinct_len[d] = 2 + rng_u32(&rng) % 30;
        distinct[d] = xmalloc(distinct_len[d] * sizeof(int));
        for (int t = 0; t < distinct_len[d]; t++) distinct[d][t] = rng_u32(&rng) % 256;
    }
    TokenSequence prompts[P];
    for (int i = 0; i < P; i++) {
        int d = i * 5 % D; // neighbours differ: consecutive i differ by 5 (mod 6)
        prompts[i].length = prompts[i].prompt_length = distinct_len[d];
        if (i % 2 == 0) prompts[i].ids = distinct[d];
        else {
            prompts[i].ids = xmalloc(distinct_len[d] * sizeof(int));
            memcpy(prompts[i].ids, distinct[d], distinct_len[d] * sizeof(int));
        }
    }
    long distinct_tokens = 0, all_tokens = 0;
    for (int d = 0; d < D; d++) distinct_tokens += distinct_len[d];
    for (int i = 0; i < P; i++) all_tokens += prompts[i].length;
    int batches[RUNS] = {1, 4, 7, 36};
    for (int mode = 0; mode < 2; mode++) { // sampling at temperature 1, then greedy
        GenerateSettings g = {{mode ? 0.0f : 1.0f, 0, 1.0f}, 20, NULL, 5, 1};
        char *runs[RUNS][P];
        GenerateCounts counts[RUNS];
        for (int r = 0; r < RUNS; r++) {
            g.batch = batches[r];
            counts[r] = generate(&model, tok, prompts, P, &g, runs[r], 0);
        }
        int counted = 1;
        for (int r = 0; r < RUNS; r++) counted &= counts[r].sequences == P;
        check(counted && counts[0].prefills == P && counts[0].prefill_tokens == all_tokens &&
              counts[3].prefills == D && counts[3].prefill_tokens == distinct_tokens &&
              counts[2].prefills >= D && counts[2].prefills < P && counts[1].prefills >= D &&
              counts[1].prefills <= P,
              "%s, %s: prefills counted: batch 1 prefills all %d prompts (%ld tokens: %ld), batch 36 "
              "each of the %d distinct ones once (%ld tokens: %ld), batch 7 %ld (%d to %d), batch 4 %ld",
              arch == ARCH_LLAMA ? "Llama (GQA)" : "GPT-2", mode ? "greedy" : "temperature 1",
              P, all_tokens, counts[0].prefill_tokens, D, distinct_tokens, counts[3].prefill_tokens,
              counts[2].prefills, D, P - 1, counts[1].prefills);
        int same = 1, nonempty = 0, differ = 0;
        for (int i = 0; i < P; i++) {
            for (int r = 1; r < RUNS; r++) same &= !strcmp(runs[0][i], runs[r][i]);
            nonempty += runs[0][i][0] != 0;
            differ += i >= D && strcmp(runs[0][i], runs[0][i - D]) != 0; // same prompt, other sample
        }
        check(same && nonempty > P / 2 && (mode || differ > 0),
              "%s, %s: 6 prompts 6 times each, with batch 4, 7 and 36 (a prefill read by several sequences), give "
              "the text of batch 1 (every prompt prefilled); %d non-empty, %d samples of a prompt "
              "differ from its previous one", arch == ARCH_LLAMA ? "Llama (GQA)" : "GPT-2",
              mode ? "greedy" : "temperature 1", nonempty, differ);
        for (int r = 0; r < RUNS; r++)
            for (int i = 0; i < P; i++) free(runs[r][i]);
    }
    for (int i = 1; i < P; i += 2) free(prompts[i].ids);
    for (int d = 0; d < D; d++) free(distinct[d]);
    tok_free(tok);
    model_free(&model);
}

// Prompts longer than the context, shared: generate() keeps each prompt's last Tc - 1 tokens
// (Tc = the longest prompt + max_new, at most maxT = 128: 127 here) and compares prompts once
// cut, so two prompts that differ only in the cut tokens share a prefill. 5 prompts of 160, 130,
// 160 (the first's last 127 tokens after 33 others), 127 (not cut) and 128 (cut by one) tokens,
// each 4 times in a list of 20 where no two neighbours are the same once cut: 16 sequences' prompts are cut
// whatever the batch; batch 1 prefills all 20 (127 tokens each), batch 20 the 4 distinct cut
// prompts once, batch 3 from 4 to 20; all give the text of batch 1, which is the text of the
// same sequences given the cut prompts (nothing cut then). Each sequence has room for two new
// tokens: the first from the prefill's logits, the second after one step that reads the
// 127-token prompt from the slot that holds it.
static void test_shared_cut_prompts(int arch) {
    Model model;
    Tokenizer *tok = shared_prompt_model(&model, arch, 23);
    enum { D = 5, P = 20, KEEP = 127, RUNS = 3 };
    int lengths[D] = {160, 130, 160, 127, 128}, *distinct[D];
    Rng rng = rng_seeded(29);
    for (int d = 0; d < D; d++) {
        distinct[d] = xmalloc(lengths[d] * sizeof(int));
        for (int t = 0; t < lengths[d]; t++) distinct[d][t] = rng_u32(&rng) % 256;
    }
    memcpy(distinct[2] + 33, distinct[0] + 33, KEEP * sizeof(int)); // the same once cut
    int first_differs = 0;
    for (int t = 0; t < 33; t++) first_differs |= distinct[2][t] != distinct[0][t];
    TokenSequence prompts[P], cut[P];
    long cut_expected = 0;
    for (int i = 0; i < P; i++) {
        int d = i % D;
        prompts[i] = (TokenSequence){distinct[d], lengths[d], lengths[d]};
        cut[i] = (TokenSequence){distinct[d] + (lengths[d] - KEEP), KEEP, KEEP};
        cut_expected += lengths[d] > KEEP;
    }
    GenerateSettings g = {{1.0f, 0, 1.0f}, 20, NULL, 7, 1};
    int batches[RUNS] = {1, 3, 20};
    char *runs[RUNS][P], *precut[P];
    GenerateCounts counts[RUNS];
    for (int r = 0; r < RUNS; r++) {
        g.batch = batches[r];
        counts[r] = generate(&model, tok, prompts, P, &g, runs[r], 0);
    }
    g.batch = 1;
    GenerateCounts precut_counts = generate(&model, tok, cut, P, &g, precut, 0);
    int same = 1, nonempty = 0, cut_counted = 1;
    for (int i = 0; i < P; i++) {
        for (int r = 1; r < RUNS; r++) same &= !strcmp(runs[0][i], runs[r][i]);
        same &= !strcmp(runs[0][i], precut[i]);
        nonempty += runs[0][i][0] != 0;
    }
    for (int r = 0; r < RUNS; r++) cut_counted &= counts[r].cut == cut_expected && counts[r].sequences == P;
    const char *name = arch == ARCH_LLAMA ? "Llama (GQA)" : "GPT-2";
    check(first_differs && cut_expected == 16 && cut_counted && precut_counts.cut == 0,
          "%s: prompts of 160, 130, 127 and 128 tokens with maxT 128: the %ld sequences whose "
          "prompt is longer than 127 tokens are counted cut with batch 1, 3 and 20 (%ld, %ld, %ld), "
          "none when given the cut prompts (%ld)", name, cut_expected, counts[0].cut, counts[1].cut,
          counts[2].cut, precut_counts.cut);
    check(counts[0].prefills == P && counts[0].prefill_tokens == (long)P * KEEP &&
          counts[2].prefills == 4 && counts[2].prefill_tokens == 4L * KEEP &&
          counts[1].prefills >= 4 && counts[1].prefills <= P && precut_counts.prefills == P,
          "%s: cut prompts are shared as cut: batch 1 prefills all 20 (%ld tokens: %ld), batch 20 "
          "the 4 distinct once cut, two prompts that differ in their cut tokens as one (%ld, %ld "
          "tokens), batch 3 %ld", name, (long)P * KEEP, counts[0].prefill_tokens, counts[2].prefills,
          counts[2].prefill_tokens, counts[1].prefills);
    check(same && nonempty > P / 2, "%s: shared prompts cut to the context: batch 3 and 20 give the "
          "text of batch 1, which is the text given the cut prompts (%d non-empty of %d)", name,
          nonempty, P);
    for (int i = 0; i < P; i++) {
        for (int r = 0; r < RUNS; r++) free(runs[r][i]);
        free(precut[i]);
    }
    for (int d = 0; d < D; d++) free(distinct[d]);
    tok_free(tok);
    model_free(&model);
}

// The sampler's statistics: at temperature 1 with no truncation the frequencies of many draws
// match the softmax (Pearson's chi-square, 9 degrees of freedom: below 27.9, p = 0.001);
// top-k and top-p never emit a token they exclude.
static void test_sampler(void) {
    enum { V = 10, DRAWS = 200000 };
    float logits[V] = {1.0f, 0.5f, -1.0f, 2.0f, 0.0f, -0.5f, 1.5f, -2.0f, 0.2f, 0.8f};
    double probs[V], total = 0.0;
    for (int i = 0; i < V; i++) total += probs[i] = exp(logits[i]);
    for (int i = 0; i < V; i++) probs[i] /= total;
    Candidate scratch[V];
    Rng rng = rng_seeded(77);
    long counts[V] = {0};
    SamplerSettings s = {1.0f, 0, 1.0f};
    for (int d = 0; d < DRAWS; d++) counts[sample_token(logits, V, &s, &rng, scratch)]++;
    double chi2 = 0.0;
    for (int i = 0; i < V; i++) {
        double expected = probs[i] * DRAWS;
        chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    }
    check(chi2 < 27.9, "temperature 1: %d draws match the softmax (chi-square %.1f < 27.9)", DRAWS, chi2);
    // top-k = 3 keeps tokens 3, 6, 0 (logits 2.0, 1.5, 1.0)
    s = (SamplerSettings){1.0f, 3, 1.0f};
    int bad = 0;
    long kcounts[V] = {0};
    for (int d = 0; d < 20000; d++) {
        int id = sample_token(logits, V, &s, &rng, scratch);
        kcounts[id]++;
        bad += id != 3 && id != 6 && id != 0;
    }
    check(!bad && kcounts[3] && kcounts[6] && kcounts[0], "top-k 3 draws only the 3 most likely tokens");
    // top-p = 0.6: sorted probabilities 0.33, 0.20, 0.12, ... reach 0.6 with the fourth token (9)
    s = (SamplerSettings){1.0f, 0, 0.6f};
    bad = 0;
    double cumulative = 0.0;
    int order[V] = {3, 6, 0, 9, 1, 8, 4, 5, 2, 7}, allowed[V] = {0};
    for (int i = 0; i < V && cumulative < 0.6; i++) {
        allowed[order[i]] = 1;
        cumulative += probs[order[i]];
    }
    for (int d = 0; d < 20000; d++) bad += !allowed[sample_token(logits, V, &s, &rng, scratch)];
    check(!bad, "top-p 0.6 draws only from the smallest set of tokens whose probability reaches 0.6");
    s = (SamplerSettings){0.0f, 0, 1.0f};
    check(sample_token(logits, V, &s, &rng, scratch) == 3, "temperature 0 takes the argmax");
}

int main(void) {
    test_kv_cache_matches_full_forward(ARCH_GPT2, "3,4,32,40,71");
    test_kv_cache_matches_full_forward(ARCH_GPT2, "2,2,64,40,71");
    test_rows_independent();
    test_mixed_steps();
    test_generation_determinism();
    test_shared_prompts(ARCH_GPT2);
    test_shared_prompts(ARCH_LLAMA);
    test_shared_cut_prompts(ARCH_GPT2);
    test_shared_cut_prompts(ARCH_LLAMA);
    test_sampler();
    test_kv_cache_matches_full_forward(ARCH_LLAMA, "3,4,32,40,71,2,48");
    test_kv_cache_matches_full_forward(ARCH_LLAMA, "2,4,128,40,71,2,96");
    return checks_finish();
}
