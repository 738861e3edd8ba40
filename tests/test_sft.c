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

// Batches: completion targets get 1/N, prompt targets and padding 0; and the gradient does not
// depend on the prompt's targets at all.
static void test_batches_and_masking(Tokenizer *tok) {
    SftData data = {xmalloc(3 * sizeof(TokenSequence)), 3, 0};
    tokenize_example(tok, "Tom has 3 apples.", " 3 + 5 = 8.", 100, &data.seqs[0]);
    tokenize_example(tok, "He buys", " 5 more.", 100, &data.seqs[1]);
    tokenize_example(tok, "", "The answer is 8.", 100, &data.seqs[2]);
    int order[3] = {0, 1, 2}, B = 4, pad = tok_eot(tok), n;
    int inputs[4 * 64], targets[4 * 64];
    float coefs[4 * 64];
    int T = sft_fill_batch(&data, order, 3, B, pad, inputs, targets, coefs, &n);
    int longest = 0, expected_n = 0;
    for (int r = 0; r < 3; r++) {
        if (data.seqs[r].length - 1 > longest) longest = data.seqs[r].length - 1;
        expected_n += data.seqs[r].length - (data.seqs[r].prompt_length > 0 ? data.seqs[r].prompt_length : 1);
    }
    int ok = T == longest && n == expected_n;
    double sum = 0.0;
    for (int r = 0; r < B; r++)
        for (int t = 0; t < T; t++) {
            int i = r * T + t;
            const TokenSequence *s = r < 3 ? &data.seqs[r] : NULL;
            int is_completion = s && t + 1 < s->length && t + 1 >= s->prompt_length;
            int is_padding = !s || t + 1 >= s->length;
            ok &= is_completion ? coefs[i] == 1.0f / n : coefs[i] == 0.0f;
            ok &= is_padding ? targets[i] == -1 : targets[i] == s->ids[t + 1];
            sum += coefs[i];
        }
    check(ok && fabs(sum - 1.0) < 1e-6, "sft_fill_batch: T = longest row - 1 = %d, coefficient "
          "1/%d on each completion target, 0 on prompt and padding (they sum to %.6f)", T, n, sum);

    // the same batch with different targets inside the prompts: gradients are bit-identical
    Model model;
    model_build(&model, parse_config("2,2,16,64,300"));
    model_init_random(&model, 3);
    model_forward(&model, inputs, targets, B, T);
    model_backward(&model, coefs);
    float *grads = xmalloc(model.num_parameters * sizeof(float));
    memcpy(grads, model.grads_memory, model.num_parameters * sizeof(float));
    int changed = 0;
    for (int r = 0; r < 3; r++)
        for (int t = 0; t + 1 < data.seqs[r].prompt_length; t++, changed++)
            targets[r * T + t] = (targets[r * T + t] + 17) % 300;
    model_forward(&model, inputs, targets, B, T);
    model_backward(&model, coefs);
    int same = !memcmp(grads, model.grads_memory, model.num_parameters * sizeof(float));
    double gnorm = sqrt(sum_squares(grads, model.num_parameters));
    check(same && changed > 0 && gnorm > 0, "prompt tokens carry no gradient: changing %d prompt "
          "targets leaves every gradient bit-identical (|grad| = %.3g)", changed, gnorm);

    // validation loss = mean NLL over completion targets, by hand from the per-position log-probs
    model_forward(&model, inputs, targets, B, T);
    double nll = 0.0;
    for (int i = 0; i < B * T; i++)
        if (coefs[i] != 0.0f) nll -= model.host_logprobs[i];
    float val = sft_validation_loss(&model, &data, B, pad);
    check(fabs(val - nll / n) < 1e-5, "validation loss %.6f = mean completion NLL by hand %.6f",
          val, nll / n);
    free(grads);
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
    test_batches_and_masking(tok);
    test_epoch_order();
    test_group_by_length();
    tok_free(tok);
    return checks_finish();
}
