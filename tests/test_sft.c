// tests/test_sft.c — tests of section 5 of sirt.c: SFT batches, masking and truncation.
// Prints one line per check and ends with "N passed, M failed".
#define SIRT_NO_MAIN
#include "../sirt.c"
#include "check.h"

// Truncation keeps the end of the prompt and the start of the completion.
static void test_truncation_split(void) {
    int cases[][6] = { // prompt, completion, budget -> keep prompt, keep completion
        {10, 5, 20, 10, 5},  {30, 5, 20, 15, 5},   {5, 30, 20, 5, 15},
        {30, 30, 20, 10, 10}, {0, 50, 20, 0, 20},  {19, 1, 20, 19, 1}, {40, 1, 20, 19, 1}};
    int ok = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int kp, kc;
        truncation_split(cases[i][0], cases[i][1], cases[i][2], &kp, &kc);
        if (kp != cases[i][3] || kc != cases[i][4]) {
            ok = 0;
            printf("  prompt %d completion %d budget %d -> %d + %d, want %d + %d\n", cases[i][0],
                   cases[i][1], cases[i][2], kp, kc, cases[i][3], cases[i][4]);
        }
    }
    check(ok, "truncation_split: prompt keeps its end, completion its start, neither emptied");
}

static Tokenizer *tiny_tokenizer(void) {
    const char *text = "Tom has 3 apples. He buys 5 more: 3 + 5 = 8. The answer is 8.\n";
    size_t len = strlen(text);
    char err[256];
    Tokenizer *tok = tok_train(&text, &len, 1, 300, 0, err, sizeof err);
    if (!tok) die("%s", err);
    return tok;
}

static void test_tokenize_example(Tokenizer *tok) {
    TokenSequence seq;
    int cut = tokenize_example(tok, "Question: Tom has 3 apples.", " The answer is 8.", 1000, &seq);
    TokBytes text = {0};
    tok_decode(tok, seq.ids, seq.length, &text);
    int ok = !cut && seq.ids[seq.length - 1] == tok_eot(tok) &&
             !strcmp(text.data, "Question: Tom has 3 apples. The answer is 8.<|endoftext|>");
    TokBytes prompt = {0};
    tok_decode(tok, seq.ids, seq.prompt_length, &prompt);
    ok &= !strcmp(prompt.data, "Question: Tom has 3 apples.");
    check(ok, "tokenize_example: prompt and completion tokenized apart, end-of-text appended");
    free(seq.ids);
    tok_bytes_free(&text);
    tok_bytes_free(&prompt);

    // a window of 8 tokens: the prompt keeps its last tokens, the completion its first
    TokenSequence full, cut_seq;
    const char *p = "Tom has 3 apples. Tom has 3 apples. Tom has 3 apples.";
    const char *c = " He buys 5 more: 3 + 5 = 8. The answer is 8.";
    tokenize_example(tok, p, c, 1000, &full);
    cut = tokenize_example(tok, p, c, 8, &cut_seq);
    int kept_p = cut_seq.prompt_length, kept_c = cut_seq.length - kept_p;
    ok = cut && cut_seq.length == 8 && kept_p == 4 && kept_c == 4 &&
         !memcmp(cut_seq.ids, full.ids + full.prompt_length - 4, 4 * sizeof(int)) &&
         !memcmp(cut_seq.ids + 4, full.ids + full.prompt_length, 4 * sizeof(int));
    check(ok, "an over-long example is cut to the prompt's last %d and the completion's first %d "
          "tokens, and reported as cut", kept_p, kept_c);
    free(full.ids);
    free(cut_seq.ids);
}

// llama2.c's tokenizers put BOS (1) before the prompt; a prompt cut to fit keeps BOS and its
// last tokens. A hand-made tokenizer.bin: <unk>, <s>, </s>, the byte fallbacks and " ", so each
// letter is its byte's fallback id (byte + 3).
static void test_tokenize_example_bos(void) {
    TokBytes f = {0};
    uint32_t max_len = 6;
    tok_bytes_append(&f, &max_len, 4);
    for (int id = 0; id < 260; id++) {
        char piece[8];
        if (id < 3) snprintf(piece, sizeof piece, "%s", id == 0 ? "<unk>" : id == 1 ? "<s>" : "</s>");
        else if (id < 259) snprintf(piece, sizeof piece, "<0x%02X>", id - 3);
        else snprintf(piece, sizeof piece, " ");
        float score = 0.0f;
        int32_t n = (int32_t)strlen(piece);
        tok_bytes_append(&f, &score, 4);
        tok_bytes_append(&f, &n, 4);
        tok_bytes_append(&f, piece, (size_t)n);
    }
    char err[256];
    Tokenizer *tok = tok_from_llama2c_memory((const unsigned char *)f.data, f.len, "tok", err,
                                             sizeof err);
    if (!tok) die("%s", err);
    TokenSequence full, cut;
    // BOS " " a..j | x y z EOS: the prompt gets run.c's dummy prefix " ", the completion (its
    // continuation) none
    tokenize_example(tok, "abcdefghij", "xyz", 1000, &full);
    int was_cut = tokenize_example(tok, "abcdefghij", "xyz", 8, &cut);
    int expected[8] = {1, 'h' + 3, 'i' + 3, 'j' + 3, 'x' + 3, 'y' + 3, 'z' + 3, 2};
    int ok = full.length == 16 && full.prompt_length == 12 && full.ids[0] == 1 &&
             full.ids[1] == 259 && full.ids[12] == 'x' + 3 && full.ids[15] == 2 && was_cut &&
             cut.length == 8 && cut.prompt_length == 4 && !memcmp(cut.ids, expected, sizeof expected);
    TokenSequence empty_prompt; // the completion starts the text: it gets the dummy prefix
    tokenize_example(tok, "", "xyz", 1000, &empty_prompt);
    int expected_empty[6] = {1, 259, 'x' + 3, 'y' + 3, 'z' + 3, 2};
    ok &= empty_prompt.length == 6 && empty_prompt.prompt_length == 1 &&
          !memcmp(empty_prompt.ids, expected_empty, sizeof expected_empty);
    free(empty_prompt.ids);
    check(ok, "tokenize_example with llama2.c's tokenizer: BOS and the dummy prefix before the "
          "prompt, none before the completion (but after an empty prompt), EOS after it; cut to "
          "8 tokens, the prompt keeps BOS and its last 3 tokens");
    free(full.ids);
    free(cut.ids);
    tok_free(tok);
    tok_bytes_free(&f);
}

// Batches: completion targets get 1/N, prompt targets and padding 0; and the gradient does not
// depend on the prompt's targets at all. One example per row (--pack 0) here.
static void test_batches_and_masking(Tokenizer *tok) {
    SftData data = {xmalloc(3 * sizeof(TokenSequence)), 3, 0};
    tokenize_example(tok, "Tom has 3 apples.", " 3 + 5 = 8.", 100, &data.seqs[0]);
    tokenize_example(tok, "He buys", " 5 more.", 100, &data.seqs[1]);
    tokenize_example(tok, "", "The answer is 8.", 100, &data.seqs[2]);
    int order[3] = {0, 1, 2}, B = 4, pad = tok_eot(tok);
    Batch batch;
    batch_alloc(&batch, B, 64);
    int n = sft_fill_batch(&batch, &data, order, 3, 64, 0, pad), T = batch.T;
    int *targets = batch.targets;
    float *coefs = batch.coefs;
    int longest = 0, expected_n = 0;
    for (int r = 0; r < 3; r++) {
        if (data.seqs[r].length - 1 > longest) longest = data.seqs[r].length - 1;
        expected_n += data.seqs[r].length - (data.seqs[r].prompt_length > 0 ? data.seqs[r].prompt_length : 1);
    }
    int ok = T == longest && n == expected_n && batch.rows == 3 && !batch.packed;
    double sum = 0.0;
    for (int r = 0; r < batch.rows; r++)
        for (int t = 0; t < T; t++) {
            int i = r * T + t;
            const TokenSequence *s = &data.seqs[r];
            int is_completion = t + 1 < s->length && t + 1 >= s->prompt_length;
            int is_padding = t + 1 >= s->length;
            ok &= is_completion ? coefs[i] == 1.0f / n : coefs[i] == 0.0f;
            ok &= is_padding ? targets[i] == -1 : targets[i] == s->ids[t + 1];
            ok &= batch.pos[i] == t;
            sum += coefs[i];
        }
    check(ok && fabs(sum - 1.0) < 1e-6, "sft_fill_batch --pack 0: one row per example, T = longest "
          "row - 1 = %d, coefficient 1/%d on each completion target, 0 on prompt and padding (they "
          "sum to %.6f)", T, n, sum);

    // the same batch with different targets inside the prompts: gradients are bit-identical
    Model model;
    model_build(&model, parse_config("2,2,16,64,300"));
    model_init_random(&model, 3);
    batch_forward(&model, &batch);
    model_backward(&model, coefs);
    float *grads = xmalloc(model.num_parameters * sizeof(float));
    memcpy(grads, model.grads_memory, model.num_parameters * sizeof(float));
    int changed = 0;
    for (int r = 0; r < 3; r++)
        for (int t = 0; t + 1 < data.seqs[r].prompt_length; t++, changed++)
            targets[r * T + t] = (targets[r * T + t] + 17) % 300;
    batch_forward(&model, &batch);
    model_backward(&model, coefs);
    int same = !memcmp(grads, model.grads_memory, model.num_parameters * sizeof(float));
    double gnorm = sqrt(sum_squares(grads, model.num_parameters));
    check(same && changed > 0 && gnorm > 0, "prompt tokens carry no gradient: changing %d prompt "
          "targets leaves every gradient bit-identical (|grad| = %.3g)", changed, gnorm);

    // validation loss = mean NLL over completion targets, by hand from the per-position log-probs,
    // with the examples one per row and packed
    batch_forward(&model, &batch);
    double nll = 0.0;
    for (int i = 0; i < batch.rows * T; i++)
        if (coefs[i] != 0.0f) nll -= model.host_logprobs[i];
    for (int pack = 0; pack < 2; pack++) {
        float val = sft_validation_loss(&model, &data, B, 64, pack, pad);
        check(fabs(val - nll / n) < 1e-5, "validation loss (--pack %d) %.6f = mean completion NLL "
              "by hand %.6f", pack, val, nll / n);
    }
    free(grads);
    batch_free(&batch);
    model_free(&model);
    sft_data_free(&data);
}

// ---------------------------------------------------------------------------------------------
// Packed rows. Examples of random tokens and lengths (1 to 19 prompt tokens, 1 to 12 completion
// tokens and the end-of-text) on a model with random weights, larger than GPT-2's init so that
// attention is far from uniform.
enum { PACK_COUNT = 9, PACK_T = 48, PACK_V = 61 };

static void random_examples(SftData *data, Rng *rng) {
    *data = (SftData){xmalloc(PACK_COUNT * sizeof(TokenSequence)), PACK_COUNT, 0};
    for (int i = 0; i < PACK_COUNT; i++) {
        TokenSequence *seq = &data->seqs[i];
        seq->prompt_length = 1 + (int)(rng_u32(rng) % 19);
        seq->length = seq->prompt_length + 2 + (int)(rng_u32(rng) % 12);
        seq->ids = xmalloc((size_t)seq->length * sizeof(int));
        for (int t = 0; t < seq->length; t++) seq->ids[t] = 1 + (int)(rng_u32(rng) % (PACK_V - 1));
    }
}

static void random_model(Model *model, Rng *rng) {
    char config[64];
    snprintf(config, sizeof config, "2,2,16,%d,%d", PACK_T, PACK_V);
    model_build(model, parse_config(config));
    model_init_random(model, 11);
    for (size_t i = 0; i < model->num_parameters; i++)
        model->params_memory[i] += 0.2f * rng_normal(rng);
    memset(model->params.wte + (size_t)PACK_V * 16, 0, (size_t)(model->config.Vp - PACK_V) * 16 * 4);
}

// The layout: first fit into rows of some width W <= T (batch_fill picks it; the batch is then
// as wide as its fullest row, at most W), every sequence where `at` says, positions counting
// from 0 in each sequence and continuing into the padding, no more positions than one example
// per row; the loss and every parameter gradient of the packed batch equal those of the same
// examples one per row.
static void test_packed_equals_padded(void) {
    Rng rng = rng_seeded(31);
    SftData data;
    random_examples(&data, &rng);
    Model model;
    random_model(&model, &rng);
    int order[PACK_COUNT];
    epoch_order(order, PACK_COUNT, 4, 0);
    Batch packed, padded;
    batch_alloc(&packed, PACK_COUNT, PACK_T);
    batch_alloc(&padded, PACK_COUNT, PACK_T);
    int n_packed = sft_fill_batch(&packed, &data, order, PACK_COUNT, PACK_T, 1, 0);
    int n_padded = sft_fill_batch(&padded, &data, order, PACK_COUNT, PACK_T, 0, 0);

    // the layout, against the examples themselves
    int ok = packed.packed && packed.rows < PACK_COUNT && packed.T <= PACK_T;
    int *fill = xcalloc(PACK_COUNT, sizeof(int));
    size_t tokens = 0;
    for (int i = 0; i < PACK_COUNT; i++) {
        const TokenSequence *seq = &data.seqs[order[i]];
        Placement at = packed.at[i];
        // first fit: no earlier row had room for it when it was placed (room up to W >= T')
        for (int r = 0; r < at.row; r++) ok &= fill[r] + seq->length - 1 > packed.T;
        ok &= at.start == fill[at.row] && at.length == seq->length - 1;
        fill[at.row] += at.length;
        tokens += at.length;
        for (int t = 0; t < at.length; t++) {
            size_t j = (size_t)at.row * packed.T + at.start + t;
            ok &= packed.inputs[j] == seq->ids[t] && packed.targets[j] == seq->ids[t + 1] &&
                  packed.pos[j] == t;
        }
    }
    for (int r = 0; r < packed.rows; r++)
        for (int t = fill[r]; t < packed.T; t++) { // padding continues the row's last sequence
            size_t j = (size_t)r * packed.T + t;
            ok &= packed.targets[j] == -1 && packed.coefs[j] == 0.0f &&
                  packed.pos[j] == (t == 0 ? 0 : packed.pos[j - 1] + 1);
        }
    ok &= tokens == packed.tokens && tokens == padded.tokens && n_packed == n_padded &&
          packed.rows * packed.T < padded.rows * padded.T;
    check(ok, "batch_fill --pack 1: %d examples first-fit into %d rows of %d (padded: %d rows of "
          "%d), positions restart at each example, %zu tokens", PACK_COUNT, packed.rows, packed.T,
          padded.rows, padded.T, tokens);
    free(fill);

    // loss and gradients, packed and padded
    size_t P = model.num_parameters;
    float *grads = xmalloc(P * sizeof(float));
    batch_forward(&model, &padded);
    double loss_padded = weighted_nll(&model, padded.coefs, padded.rows * padded.T);
    model_backward(&model, padded.coefs);
    memcpy(grads, model.grads_memory, P * sizeof(float));
    batch_forward(&model, &packed);
    double loss_packed = weighted_nll(&model, packed.coefs, packed.rows * packed.T);
    model_backward(&model, packed.coefs);
    double worst = 0.0;
    size_t offset = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) { // each tensor's largest difference, relative
        double diff = 0.0, norm = 0.0;
        for (size_t i = offset; i < offset + model.param_sizes[t]; i++) {
            diff = fmax(diff, fabs(grads[i] - model.grads_memory[i]));
            norm = fmax(norm, fabs(grads[i]));
        }
        worst = fmax(worst, norm > 0 ? diff / norm : 1.0); // a zero gradient fails
        offset += model.param_sizes[t];
    }
    check(fabs(loss_packed - loss_padded) < 1e-6 * fabs(loss_padded) && worst < 1e-5,
          "packed = padded: loss %.7f vs %.7f; every parameter gradient within %.1e of its "
          "largest entry", loss_packed, loss_padded, worst);

    // the same bits for 1 and 2 threads
    set_threads(1);
    batch_forward(&model, &packed);
    model_backward(&model, packed.coefs);
    memcpy(grads, model.grads_memory, P * sizeof(float));
    set_threads(2);
    batch_forward(&model, &packed);
    model_backward(&model, packed.coefs);
    check(!memcmp(grads, model.grads_memory, P * sizeof(float)),
          "packed rows: 1 thread and 2 give bit-identical gradients");
    free(grads);
    batch_free(&packed);
    batch_free(&padded);
    model_free(&model);
    sft_data_free(&data);
}

// No example sees another: changing every token of one example of a packed row leaves the
// logits at every position of the other examples bit-identical (and changes its own).
static void test_examples_isolated(void) {
    Rng rng = rng_seeded(77);
    SftData data;
    random_examples(&data, &rng);
    Model model;
    random_model(&model, &rng);
    int order[PACK_COUNT];
    for (int i = 0; i < PACK_COUNT; i++) order[i] = i;
    Batch batch;
    batch_alloc(&batch, PACK_COUNT, PACK_T);
    sft_fill_batch(&batch, &data, order, PACK_COUNT, PACK_T, 1, 0);
    // the example to change: one with another example after it in its row (the one that would
    // see it if attention leaked), and before it when there is such a one
    int victim = -1, score = 0;
    for (int i = 0; i < PACK_COUNT; i++) {
        int before = 0, after = 0;
        for (int j = 0; j < PACK_COUNT; j++)
            if (j != i && batch.at[j].row == batch.at[i].row && batch.at[j].length > 0) {
                before |= batch.at[j].start < batch.at[i].start;
                after |= batch.at[j].start > batch.at[i].start;
            }
        if (after && 1 + before > score) {
            victim = i;
            score = 1 + before;
        }
    }
    int shares = victim >= 0;
    if (victim < 0) victim = 0; // (the check below then fails)
    size_t Vp = model.config.Vp, cells = (size_t)batch.rows * batch.T;
    float *logits = xmalloc(cells * Vp * sizeof(float));
    batch_forward(&model, &batch);
    memcpy(logits, model.acts.logits, cells * Vp * sizeof(float));
    TokenSequence *seq = &data.seqs[order[victim]];
    for (int t = 0; t < seq->length; t++) seq->ids[t] = 1 + (seq->ids[t] + 7) % (PACK_V - 1);
    sft_fill_batch(&batch, &data, order, PACK_COUNT, PACK_T, 1, 0);
    batch_forward(&model, &batch);
    Placement at = batch.at[victim];
    int others_same = 1, own_changed = 0;
    for (int i = 0; i < PACK_COUNT; i++) {
        size_t first = (size_t)batch.at[i].row * batch.T + batch.at[i].start;
        int same = !memcmp(logits + first * Vp, model.acts.logits + first * Vp,
                           (size_t)batch.at[i].length * Vp * sizeof(float));
        if (i == victim) own_changed = !same;
        else others_same &= same;
    }
    check(shares && others_same && own_changed, "packed row: changing example %d (row %d, "
          "positions %d..%d, %s) changes its logits and leaves those of all %d others "
          "bit-identical", victim, at.row, at.start, at.start + at.length - 1,
          score == 2 ? "between two others" : "before another", PACK_COUNT - 1);
    free(logits);
    batch_free(&batch);
    model_free(&model);
    sft_data_free(&data);
}

static void test_epoch_order(void) {
    int a[50], b[50], c[50], seen[50] = {0};
    epoch_order(a, 50, 7, 0);
    epoch_order(b, 50, 7, 0);
    epoch_order(c, 50, 7, 1);
    int perm = 1;
    for (int i = 0; i < 50; i++) seen[a[i]]++;
    for (int i = 0; i < 50; i++) perm &= seen[i] == 1;
    check(perm && !memcmp(a, b, sizeof a) && memcmp(a, c, sizeof a),
          "epoch order: a permutation, the same for the same (seed, epoch), new each epoch");
}

// Padded tokens of the batches of B rows that an order makes (each row padded to its batch's
// longest).
static long padded_tokens(const int *order, int count, int B, const SftData *data) {
    long total = 0;
    for (int first = 0; first < count; first += B) {
        int longest = 0, rows = count - first < B ? count - first : B;
        for (int r = 0; r < rows; r++)
            if (data->seqs[order[first + r]].length > longest) longest = data->seqs[order[first + r]].length;
        total += (long)B * longest;
    }
    return total;
}

static void test_group_by_length(void) {
    enum { COUNT = 2000, B = 8 };
    SftData data = {xcalloc(COUNT, sizeof(TokenSequence)), COUNT, 0};
    Rng rng = rng_seeded(99);
    for (int i = 0; i < COUNT; i++) data.seqs[i].length = 20 + (int)(rng_u32(&rng) % 200);
    int shuffled[COUNT], grouped[COUNT], again[COUNT];
    epoch_order(shuffled, COUNT, 5, 0);
    memcpy(grouped, shuffled, sizeof grouped);
    group_by_length(grouped, COUNT, B, &data);
    memcpy(again, shuffled, sizeof again);
    group_by_length(again, COUNT, B, &data);
    int same_sets = 1, sorted = 1, ties_kept = 1, mega = GROUP_BATCHES * B;
    for (int first = 0; first < COUNT; first += mega) {
        int n = COUNT - first < mega ? COUNT - first : mega, in_a[COUNT] = {0};
        for (int i = 0; i < n; i++) in_a[shuffled[first + i]]++;
        for (int i = 0; i < n; i++) same_sets &= in_a[grouped[first + i]] == 1;
        for (int i = 1; i < n; i++) {
            int prev = data.seqs[grouped[first + i - 1]].length, cur = data.seqs[grouped[first + i]].length;
            sorted &= prev >= cur;
            if (prev == cur) { // equal lengths keep their shuffled order
                int p = -1, q = -1;
                for (int j = 0; j < n; j++) {
                    if (shuffled[first + j] == grouped[first + i - 1]) p = j;
                    if (shuffled[first + j] == grouped[first + i]) q = j;
                }
                ties_kept &= p < q;
            }
        }
    }
    long before = padded_tokens(shuffled, COUNT, B, &data), after = padded_tokens(grouped, COUNT, B, &data);
    check(same_sets && sorted && ties_kept && !memcmp(grouped, again, sizeof grouped),
          "group_by_length: each megabatch of %d keeps its examples, longest first, ties in "
          "shuffled order; deterministic", mega);
    check(after < 0.8 * before, "group_by_length: padded tokens %ld -> %ld (%.0f%%)", before, after,
          100.0 * after / before);
    free(data.seqs);
}

int main(void) {
    test_truncation_split();
    Tokenizer *tok = tiny_tokenizer();
    test_tokenize_example(tok);
    test_tokenize_example_bos();
    test_batches_and_masking(tok);
    test_packed_equals_padded();
    test_examples_isolated();
    test_epoch_order();
    test_group_by_length();
    tok_free(tok);
    return checks_finish();
}
