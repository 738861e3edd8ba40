// tests/test_dpo.c — tests of section 8 of sirt.c: the preference losses, their per-token
// coefficients, and their gradients through the whole model.
// Prints one line per check and ends with "N passed, M failed".
#define SIRT_NO_MAIN
#include "../sirt.c"
#include "check.h"
#include "gradcheck.h"

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol; }

// Values by hand (computed separately in double): β = 0.1, one pair with S_w = −10, S_l = −8,
// reference R_w = −12, R_l = −7, lengths n_w = 4, n_l = 5, so h = 2 − (−1) = 3:
//   dpo   −log σ(0.3) = 0.554355244468527,          ∂L/∂S_w = −β σ(−0.3) = −0.0425557483188341
//   cdpo  ε = 0.1: 0.9·0.5543552 + 0.1·0.8543552 = 0.584355244468527,
//         ∂L/∂S_w = β (σ(0.3) − 0.9) = −0.0325557483188341
//   ipo   ĥ = (−2.5 + 3) − (−1.6 + 1.4) = 0.7, (0.7 − 5)² = 18.49,
//         ∂L/∂S_w = 2 (0.7 − 5) / 4 = −2.15, ∂L/∂S_l = −2 (0.7 − 5) / 5 = 1.72
static void test_losses_by_hand(void) {
    double S_w = -10, S_l = -8, R_w = -12, R_l = -7, dw, dl;
    int n_w = 4, n_l = 5;
    PreferenceSettings dpo = {LOSS_DPO, 0.1f, 0, 0}, cdpo = {LOSS_CDPO, 0.1f, 0.1f, 0},
                       ipo = {LOSS_IPO, 0.1f, 0, 0};
    PreferenceMetrics m = preference_loss(&dpo, 1, &S_w, &S_l, &R_w, &R_l, &n_w, &n_l, &dw, &dl);
    check(close_to(m.loss, 0.554355244468527, 1e-7) && close_to(dw, -0.0425557483188341, 1e-8) &&
          close_to(dl, 0.0425557483188341, 1e-8) && m.accuracy == 1.0 &&
          close_to(m.margin, 0.3, 1e-7),
          "dpo: loss %.9f (by hand 0.554355244), dL/dS_w %.9f, dL/dS_l %.9f, margin %.3f",
          m.loss, dw, dl, m.margin);
    m = preference_loss(&cdpo, 1, &S_w, &S_l, &R_w, &R_l, &n_w, &n_l, &dw, &dl);
    check(close_to(m.loss, 0.584355244468527, 1e-7) && close_to(dw, -0.0325557483188341, 1e-8) &&
          close_to(dl, 0.0325557483188341, 1e-8),
          "cdpo (ε = 0.1): loss %.9f (by hand 0.584355244), dL/dS_w %.9f", m.loss, dw);
    m = preference_loss(&ipo, 1, &S_w, &S_l, &R_w, &R_l, &n_w, &n_l, &dw, &dl);
    // (β is a float, 0.1f = 0.10000000149: hence tolerances of 1e-5 here)
    check(close_to(m.loss, 18.49, 1e-5) && close_to(dw, -2.15, 1e-6) && close_to(dl, 1.72, 1e-6),
          "ipo: loss %.6f (by hand 18.49), dL/dS_w %.6f (−2.15), dL/dS_l %.6f (1.72)", m.loss, dw, dl);
    PreferenceSettings rpo = {LOSS_DPO, 0.1f, 0, 0.5f};
    m = preference_loss(&rpo, 1, &S_w, &S_l, &R_w, &R_l, &n_w, &n_l, &dw, &dl);
    // + α · NLL(chosen) = 0.5 · 10 / 4 = 1.25; ∂/∂S_w adds −α / N_c = −0.125
    check(close_to(m.loss, 0.554355244468527 + 1.25, 1e-7) &&
          close_to(dw, -0.0425557483188341 - 0.125, 1e-8) && close_to(m.nll_chosen, 2.5, 1e-12),
          "rpo (α = 0.5): loss %.9f = dpo + 1.25, dL/dS_w %.9f", m.loss, dw);
}

// ORPO by hand (λ = β = 0.1, no reference): S_w = −2 over n_w = 4 tokens, S_l = −6 over 3, so
// a_w = −0.5, a_l = −2 and log_odds = (−0.5 + 2) − (log(1 − e^−0.5) − log(1 − e^−2))
// = 2.28733867169833; loss = NLL 2/4 + 0.1 · (−log σ(2.28733867)) = 0.509670586509043;
// ∂L/∂S_w = −λ σ(−lo)/(1 − e^{a_w})/4 − 1/4 = −0.255856683185172,
// ∂L/∂S_l = +λ σ(−lo)/(1 − e^{a_l})/3 = 0.00355347797354735 (computed separately in double).
static void test_orpo_by_hand(void) {
    double S_w = -2, S_l = -6, unused = NAN, dw, dl;
    int n_w = 4, n_l = 3;
    PreferenceSettings orpo = {LOSS_ORPO, 0.1f, 0, 0};
    PreferenceMetrics m = preference_loss(&orpo, 1, &S_w, &S_l, &unused, &unused, &n_w, &n_l, &dw, &dl);
    check(close_to(m.loss, 0.509670586509043, 1e-7) && close_to(dw, -0.255856683185172, 1e-8) &&
          close_to(dl, 0.00355347797354735, 1e-9) &&
          close_to(m.log_odds_chosen, 2.28733867169833, 1e-12) &&
          close_to(m.log_odds_ratio, -0.0967058636493997, 1e-9) && close_to(m.nll_chosen, 0.5, 1e-15) &&
          close_to(m.reward_chosen, 0.1f * -0.5, 1e-12) && m.accuracy == 1.0 &&
          close_to(m.logp_chosen, -0.5, 1e-15),
          "orpo: loss %.9f (by hand 0.509670587), dL/dS_w %.9f, dL/dS_l %.9f, log_odds %.6f",
          m.loss, dw, dl, m.log_odds_chosen);
    // a near-certain chosen completion (a_w = 0 in floating point) and a near-certain rejected one
    double S0[3] = {0.0, -1e-30, -3.0}, S1[3] = {-1.0, 0.0, -1e-300}, d0[3], d1[3];
    int n[3] = {5, 2, 7};
    m = preference_loss(&orpo, 3, S0, S1, S0, S1, n, n, d0, d1);
    int finite = isfinite(m.loss) && isfinite(m.log_odds_chosen) && isfinite(m.log_odds_ratio);
    for (int b = 0; b < 3; b++) finite &= isfinite(d0[b]) && isfinite(d1[b]);
    check(finite, "orpo: completions with a = 0 (certain) keep a finite loss %.6f and gradients",
          m.loss);
}

// Every reward is exactly 0 when policy = reference (dpo, cdpo, ipo, and rpo): the log-ratios are
// formed as (S − R)·scale, so no rounding of S·scale − R·scale is left to compare; accuracy is
// then exactly 0. ORPO has no reference: there, chosen = rejected log-probs give log_odds 0 and
// accuracy 0.
static void test_rewards_exactly_zero(void) {
    enum { B = 6 };
    double S_w[B] = {-5.3, -7.51, -3.09, -11.7, -0.33, -8.125}, S_l[B], dw[B], dl[B];
    int n_w[B] = {3, 4, 5, 7, 11, 13}, n_l[B] = {2, 6, 7, 9, 3, 5};
    for (int b = 0; b < B; b++) S_l[b] = S_w[b] * n_l[b] / n_w[b]; // orpo: equal means
    PreferenceSettings all[5] = {{LOSS_DPO, 0.1f, 0, 0}, {LOSS_CDPO, 0.1f, 0.1f, 0},
                                 {LOSS_IPO, 0.1f, 0, 0}, {LOSS_DPO, 0.1f, 0, 1.0f},
                                 {LOSS_ORPO, 0.1f, 0, 0}};
    const char *names[5] = {"dpo", "cdpo", "ipo", "rpo", "orpo"};
    for (int k = 0; k < 5; k++) {
        PreferenceMetrics m = preference_loss(&all[k], B, S_w, S_l, S_w, S_l, n_w, n_l, dw, dl);
        int ok = all[k].loss == LOSS_ORPO
                     ? fabs(m.log_odds_chosen) < 1e-15 && m.accuracy == 0.0
                     : m.reward_chosen == 0.0 && m.reward_rejected == 0.0 && m.margin == 0.0 &&
                           m.accuracy == 0.0;
        check(ok, "%s, policy = reference: rewards %g and %g, accuracy %g%s", names[k],
              m.reward_chosen, m.reward_rejected, m.accuracy,
              all[k].loss == LOSS_ORPO ? " (orpo: equal means, log_odds 0)" : "");
    }
}

// Policy = reference: the loss is ln 2, accuracy 0 (strictly greater), and the per-token
// gradient on the chosen tokens is −β/(2B), not zero.
static void test_policy_equals_reference(void) {
    enum { B = 3 };
    double S_w[B] = {-5, -7.5, -3}, S_l[B] = {-6, -2, -9}, dw[B], dl[B];
    int n_w[B] = {3, 4, 5}, n_l[B] = {2, 6, 7};
    PreferenceSettings dpo = {LOSS_DPO, 0.1f, 0, 0};
    PreferenceMetrics m = preference_loss(&dpo, B, S_w, S_l, S_w, S_l, n_w, n_l, dw, dl);
    int ok = close_to(m.loss, log(2.0), 1e-12) && m.accuracy == 0.0 && m.margin == 0.0;
    double beta = dpo.beta; // 0.1f exactly as the program holds it
    for (int b = 0; b < B; b++) ok &= close_to(dw[b], -beta / (2 * B), 1e-15) && close_to(dl[b], beta / (2 * B), 1e-15);
    check(ok, "policy = reference: loss %.9f = ln 2, rewards/accuracies %g, dL/dS_w = −β/(2B) = %.6f",
          m.loss, m.accuracy, dw[0]);
}

// Through the whole model: the objective is the preference loss of a small batch of pairs
// (with fixed, random reference log-probs); its gradient comes from the coefficients −dL/dS
// on the completion tokens, through the ordinary backward pass.
typedef struct {
    Model *model;
    PairData *data;
    const PreferenceSettings *pref;
    int *order, B;
    Batch *batch; // filled by pairs_fill_batch: the completion mask in its coefs
} PreferenceCase;

// The loss; S (2B), when not NULL, receives the summed log-probs of the 2B sequences.
static double preference_objective_with(PreferenceCase *k, double *dS, double *S_out) {
    int R = 2 * k->B;
    double *S = xmalloc(R * sizeof(double)), *Rf = xmalloc(R * sizeof(double));
    int *n = xmalloc(R * sizeof(int));
    batch_forward(k->model, k->batch);
    sequence_logps(k->model, k->batch, R, S, n);
    if (S_out) memcpy(S_out, S, R * sizeof(double));
    for (int b = 0; b < k->B; b++) {
        Rf[b] = k->data->pairs[k->order[b]].ref_chosen;
        Rf[k->B + b] = k->data->pairs[k->order[b]].ref_rejected;
    }
    double local[64];
    PreferenceMetrics m = preference_loss(k->pref, k->B, S, S + k->B, Rf, Rf + k->B, n, n + k->B,
                                          dS ? dS : local, (dS ? dS : local) + k->B);
    free(S);
    free(Rf);
    free(n);
    return m.loss;
}
static double preference_objective(void *p) { return preference_objective_with(p, NULL, NULL); }

// The coefficients of the batch's backward: −dL/dS of each sequence on its completion tokens.
static void preference_coefs(const Batch *b, int R, const double *dS, float *coefs) {
    for (int i = 0; i < b->rows * b->T; i++) coefs[i] = 0.0f;
    for (int r = 0; r < R; r++) {
        size_t first = (size_t)b->at[r].row * b->T + b->at[r].start;
        for (int t = 0; t < b->at[r].length; t++)
            coefs[first + t] = b->coefs[first + t] * (float)-dS[r];
    }
}

// pack: the pairs' six sequences packed into rows of 32 positions, or one per row. The DPO
// trainer's own step (dpo_step) forms the coefficients in place the same way.
static void test_gradients_through_model(int pack) {
    Model model;
    model_build(&model, parse_config("2,2,16,32,40"));
    model_init_random(&model, 8);
    Rng rng = rng_seeded(21);
    for (size_t i = 0; i < model.num_parameters; i++) model.params_memory[i] += 0.3f * rng_normal(&rng);
    memset(model.params.wte + 40 * 16, 0, (size_t)(model.config.Vp - 40) * 16 * 4);
    enum { P = 3 };
    PairData data = {xmalloc(P * sizeof(Pair)), P, 0, 0, 0};
    for (int i = 0; i < P; i++) { // prompt of 3..5 tokens, completions of 2..6 tokens
        int p = 3 + i, cw = 2 + (i * 2) % 5, cl = 3 + i;
        TokenSequence *seqs[2] = {&data.pairs[i].chosen, &data.pairs[i].rejected};
        int lens[2] = {cw, cl};
        for (int s = 0; s < 2; s++) {
            seqs[s]->length = p + lens[s];
            seqs[s]->prompt_length = p;
            seqs[s]->ids = xmalloc(seqs[s]->length * sizeof(int));
            for (int t = 0; t < seqs[s]->length; t++) seqs[s]->ids[t] = rng_u32(&rng) % 40;
        }
        memcpy(data.pairs[i].rejected.ids, data.pairs[i].chosen.ids, p * sizeof(int)); // one prompt
        data.pairs[i].ref_chosen = -3.0 * cw + rng_normal(&rng);
        data.pairs[i].ref_rejected = -3.0 * cl + rng_normal(&rng);
    }
    int order[P] = {2, 0, 1};
    float coefs[2 * P * 32];
    Batch batch;
    batch_alloc(&batch, 2 * P, 32);
    pairs_fill_batch(&batch, &data, order, P, 32, pack, 0);
    check(pack ? batch.rows < 2 * P : batch.rows == 2 * P, "pairs_fill_batch --pack %d: %d "
          "sequences in %d rows of %d", pack, 2 * P, batch.rows, batch.T);
    PreferenceSettings settings[5] = {{LOSS_DPO, 0.5f, 0, 0}, {LOSS_CDPO, 0.5f, 0.2f, 0},
                                      {LOSS_IPO, 0.5f, 0, 0}, {LOSS_DPO, 0.5f, 0, 1.0f},
                                      {LOSS_ORPO, 0.5f, 0, 0}};
    const char *names[5] = {"dpo", "cdpo", "ipo", "dpo + rpo", "orpo"};
    GradTolerance tol = {3e-3, 1e-3, 1e-2, 1e-2};
    for (int s = 0; s < 5; s++) {
        PreferenceCase k = {&model, &data, &settings[s], order, P, &batch};
        double dS[2 * P];
        preference_objective_with(&k, dS, NULL);
        preference_coefs(&batch, 2 * P, dS, coefs);
        model_backward(&model, coefs);
        float *grads = xmalloc(model.num_parameters * sizeof(float));
        memcpy(grads, model.grads_memory, model.num_parameters * sizeof(float));
        // every tensor of the model; reported together, one check per objective
        size_t offset = 0;
        int before = checks_failed;
        for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
            char name[96];
            snprintf(name, sizeof name, "%s gradient of %s (--pack %d)", names[s],
                     GPT2_PARAMS[t].name, pack);
            size_t n = t == 0 ? (size_t)40 * 16 : model.param_sizes[t];
            check_gradient(name, preference_objective, &k, model.params_memory + offset,
                           grads + offset, n, tol, &rng);
            offset += model.param_sizes[t];
        }
        check(checks_failed == before, "%s (--pack %d): the gradient of every parameter tensor "
              "matches finite differences", names[s], pack);
        free(grads);
    }
    batch_free(&batch);
    pairs_free(&data);
    model_free(&model);
}

// Packed = padded for preference batches: the summed log-probs S of every sequence, the loss,
// and every parameter gradient of the same pairs, packed into rows of 64 and one per row.
// Random weights and tokens; prompts of 1..12 tokens, completions of 1..16.
static void test_packed_equals_padded(void) {
    Model model;
    model_build(&model, parse_config("2,2,16,64,40"));
    model_init_random(&model, 9);
    Rng rng = rng_seeded(44);
    for (size_t i = 0; i < model.num_parameters; i++) model.params_memory[i] += 0.3f * rng_normal(&rng);
    memset(model.params.wte + 40 * 16, 0, (size_t)(model.config.Vp - 40) * 16 * 4);
    enum { P = 5 };
    PairData data = {xmalloc(P * sizeof(Pair)), P, 0, 0, 0};
    for (int i = 0; i < P; i++) {
        int p = 1 + (int)(rng_u32(&rng) % 12);
        TokenSequence *seqs[2] = {&data.pairs[i].chosen, &data.pairs[i].rejected};
        for (int s = 0; s < 2; s++) {
            seqs[s]->prompt_length = p;
            seqs[s]->length = p + 1 + (int)(rng_u32(&rng) % 16);
            seqs[s]->ids = xmalloc(seqs[s]->length * sizeof(int));
            for (int t = 0; t < seqs[s]->length; t++) seqs[s]->ids[t] = 1 + rng_u32(&rng) % 39;
        }
        memcpy(data.pairs[i].rejected.ids, data.pairs[i].chosen.ids, p * sizeof(int));
        data.pairs[i].ref_chosen = -40 + rng_normal(&rng);
        data.pairs[i].ref_rejected = -40 + rng_normal(&rng);
    }
    int order[P] = {3, 1, 4, 0, 2};
    PreferenceSettings dpo = {LOSS_DPO, 0.5f, 0, 0.5f}; // with RPO's NLL term
    Batch batch[2];
    double S[2][2 * P], dS[2][2 * P], loss[2];
    float *coefs = xmalloc(2 * P * 64 * sizeof(float));
    float *grads[2] = {xmalloc(model.num_parameters * 4), xmalloc(model.num_parameters * 4)};
    for (int pack = 0; pack < 2; pack++) {
        batch_alloc(&batch[pack], 2 * P, 64);
        pairs_fill_batch(&batch[pack], &data, order, P, 64, pack, 0);
        PreferenceCase k = {&model, &data, &dpo, order, P, &batch[pack]};
        loss[pack] = preference_objective_with(&k, dS[pack], S[pack]);
        preference_coefs(&batch[pack], 2 * P, dS[pack], coefs);
        model_backward(&model, coefs);
        memcpy(grads[pack], model.grads_memory, model.num_parameters * 4);
    }
    double worst_S = 0.0, worst_grad = 0.0, largest = 0.0;
    for (int r = 0; r < 2 * P; r++) worst_S = fmax(worst_S, fabs(S[1][r] - S[0][r]) / fabs(S[0][r]));
    for (size_t i = 0; i < model.num_parameters; i++) {
        worst_grad = fmax(worst_grad, fabs(grads[1][i] - grads[0][i]));
        largest = fmax(largest, fabs(grads[0][i]));
    }
    check(batch[1].rows < batch[0].rows && worst_S < 1e-6 && S[0][0] < 0 &&
          fabs(loss[1] - loss[0]) < 1e-6 * fabs(loss[0]) && largest > 0 &&
          worst_grad < 1e-5 * largest,
          "dpo, packed (%d rows) = padded (%d rows): S of all %d sequences within %.1e relative "
          "(S[0] = %.4f), loss %.7f vs %.7f, gradients within %.1e of the largest", batch[1].rows,
          batch[0].rows, 2 * P, worst_S, S[0][0], loss[1], loss[0], worst_grad / largest);
    for (int pack = 0; pack < 2; pack++) {
        batch_free(&batch[pack]);
        free(grads[pack]);
    }
    free(coefs);
    pairs_free(&data);
    model_free(&model);
}

// A pair's chosen and rejected completions as text (the prompt and the end-of-text token left out).
static void pair_decode(Tokenizer *tok, const Pair *p, TokBytes *chosen, TokBytes *rejected) {
    int pl = p->chosen.prompt_length;
    tok_decode(tok, p->chosen.ids + pl, p->chosen.length - pl - 1, chosen);
    tok_decode(tok, p->rejected.ids + pl, p->rejected.length - pl - 1, rejected);
}

// Pair rules of refine on hand-made samples: three questions, three CoT samples each.
static void test_build_pairs(void) {
    const char *text = "Tom has 3 apples. He buys 5 more: 3 + 5 = 8. The answer is 8.\n";
    size_t len = strlen(text);
    char err[256];
    Tokenizer *tok = tok_train(&text, &len, 1, 300, 0, err, sizeof err);
    Example items[3] = {{"Q1 ", NULL, "8", NULL}, {"Q2 ", NULL, "5", NULL}, {"Q3 ", NULL, "3", NULL}};
    char *cot[9] = {"The answer is 8.", "The answer is 7.", "The answer is 8.", // 1 distinct right
                    "The answer is 1.", "The answer is 2.", "The answer is 4.", // all wrong
                    "The answer is 3.", "So the answer is 3.", "Yes: the answer is 3."}; // all right
    char *plain[3] = {"The answer is 8.", "The answer is 4.", "The answer is 1."};
    int expected[3][3] = {{1, 1, 0}, {1, 0, 1}, {2, 1, 1}}; // rule: count, identical, first is plain?
    PairRule rules[3] = {PAIRS_COT_VS_PLAIN, PAIRS_CORRECT_VS_INCORRECT, PAIRS_BOTH};
    const char *names[3] = {"cot-vs-plain", "correct-vs-incorrect", "both"};
    for (int r = 0; r < 3; r++) {
        PairData d = {0};
        build_pairs(&d, tok, items, 3, 3, cot, plain, rules[r], 1, 64);
        int ok = d.count == expected[r][0] && d.dropped_identical == expected[r][1];
        TokBytes chosen = {0}, rejected = {0};
        if (d.count) {
            pair_decode(tok, &d.pairs[0], &chosen, &rejected);
            const char *gold = r == 0 ? "3" : "8"; // the first pair's question
            ok &= answer_is_correct(chosen.data, gold) && !answer_is_correct(rejected.data, gold);
        }
        check(ok, "refine pairs, %s: %d pairs (want %d), %d identical dropped (want %d); first: "
              "\"%s\" over \"%s\"", names[r], d.count, expected[r][0], d.dropped_identical,
              expected[r][1], chosen.data ? chosen.data : "", rejected.data ? rejected.data : "");
        tok_bytes_free(&chosen);
        tok_bytes_free(&rejected);
        pairs_free(&d);
    }
    tok_free(tok);
}

// correct-vs-incorrect pairs every distinct right sample with every distinct wrong one: 3 right
// texts (one twice) and 2 wrong (one three times) give 3·2 = 6 pairs, each combination once; with
// --max-pairs 2 the two pairs share no sample.
static void test_build_pairs_all(void) {
    const char *text = "Tom has 3 apples. He buys 5 more: 3 + 5 = 8. The answer is 8.\n";
    size_t len = strlen(text);
    char err[256];
    Tokenizer *tok = tok_train(&text, &len, 1, 300, 0, err, sizeof err);
    Example item = {"Q1 ", NULL, "8", NULL};
    char *cot[8] = {"The answer is 7.", "The answer is 8.", "So the answer is 8.", "The answer is 7.",
                    "The answer is 8.", "Yes: the answer is 8.", "The answer is 9.", "The answer is 7."};
    int want[2] = {6, 2};
    for (int c = 0; c < 2; c++) {
        PairData d = {0};
        build_pairs(&d, tok, &item, 1, 8, cot, NULL, PAIRS_CORRECT_VS_INCORRECT, c == 0 ? 16 : 2, 64);
        int ok = d.count == want[c] && d.dropped_identical == 0;
        char seen[8][8] = {{0}}; // seen[chosen sample][rejected sample], by the texts' first index
        int chosen_used[8] = {0}, rejected_used[8] = {0};
        for (int p = 0; p < d.count && ok; p++) {
            TokBytes cb = {0}, rb = {0};
            pair_decode(tok, &d.pairs[p], &cb, &rb);
            int a = -1, b = -1;
            for (int j = 7; j >= 0; j--) {
                if (!strcmp(cot[j], (char *)cb.data)) a = j;
                if (!strcmp(cot[j], (char *)rb.data)) b = j;
            }
            ok &= a >= 0 && b >= 0 && answer_is_correct(cot[a], "8") && !answer_is_correct(cot[b], "8") &&
                  !seen[a][b];
            if (a >= 0 && b >= 0) seen[a][b] = 1, chosen_used[a]++, rejected_used[b]++;
            tok_bytes_free(&cb);
            tok_bytes_free(&rb);
        }
        for (int j = 0; j < 8 && c == 1; j++) ok &= chosen_used[j] <= 1 && rejected_used[j] <= 1;
        check(ok, "refine pairs, correct-vs-incorrect, --max-pairs %d: %d pairs (want %d), every one a "
              "right over a wrong text, no combination twice%s", c == 0 ? 16 : 2, d.count, want[c],
              c == 1 ? ", no sample in two pairs" : " (3 distinct right x 2 distinct wrong)");
        pairs_free(&d);
    }
    tok_free(tok);
}

// RFT's examples (refine --rft) on hand-made samples: right answers only; where the item has true
// steps, only samples whose every step is the true one; one sample per distinct list of equations.
static void test_rft_examples(void) {
    const char *text = "Tom has 3 apples. He buys 5 more: 3 + 5 = 8. The answer is 8.\n";
    size_t len = strlen(text);
    char err[256];
    Tokenizer *tok = tok_train(&text, &len, 1, 300, 0, err, sizeof err);
    Example items[2] = {{"Q1 ", NULL, "8", "3 + 5 = 8"}, {"Q2 ", NULL, "5", NULL}};
    char *cot[8] = {"Tom: 3 + 5 = 8.\nThe answer is 8.",      // verified: kept
                    "He buys 5: 3 + 5 = 8.\nThe answer is 8.", // the same equations: dropped
                    "Tom: 5 + 3 = 8.\nThe answer is 8.",      // verified, other equations: kept
                    "Tom: 3 + 4 = 8.\nThe answer is 8.",      // right by luck: dropped
                    "2 + 3 = 5.\nThe answer is 5.",           // no truth: right is enough, kept
                    "The answer is 5.",                        // no equations: kept
                    "So the answer is 5.",                     // no equations again: dropped
                    "2 + 4 = 6.\nThe answer is 6."};          // wrong: dropped
    const char *want[4] = {cot[0], cot[2], cot[4], cot[5]};
    SftData d;
    rft_examples(&d, tok, items, 2, 4, cot, "test", 64, NULL);
    int ok = d.count == 4;
    for (int i = 0; ok && i < 4; i++) {
        TokBytes c = {0};
        const TokenSequence *q = &d.seqs[i];
        tok_decode(tok, q->ids + q->prompt_length, q->length - q->prompt_length - 1, &c);
        ok &= c.data && !strcmp(c.data, want[i]) && q->ids[q->length - 1] == tok_eot(tok);
        tok_bytes_free(&c);
    }
    check(ok, "refine --rft: %d examples of 8 samples (want 4: right, verified where true steps are known, "
          "distinct equations), each prompt + sample + end-of-text", d.count);
    sft_data_free(&d);
    tok_free(tok);
}

int main(void) {
    test_build_pairs();
    test_build_pairs_all();
    test_rft_examples();
    test_losses_by_hand();
    test_orpo_by_hand();
    test_rewards_exactly_zero();
    test_policy_equals_reference();
    test_gradients_through_model(0);
    test_gradients_through_model(1);
    test_packed_equals_padded();
    return checks_finish();
}
