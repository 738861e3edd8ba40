// tests/test_prm.c — tests of section 10 of sirt.c: process feedback. The value head's kernels
// and loss by hand, precision/recall/F1 from counts made by hand, steps and their true
// correctness on hand-made paths, the step labels and their file, the PRM file, the PRM's
// tokenization, and the gradient through the head and the whole model by finite differences.
// Prints one line per check and ends with "N passed, M failed".
#define SIRT_NO_MAIN
#include "../sirt.c"
#include "check.h"
#include "gradcheck.h"

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol; }

// inp (3,2) = [[1,2],[3,-1],[0.5,4]], w = (2,-1), b = 0.5, reads at rows 2 and 0:
// out = (0.5·2 − 4 + 0.5, 1·2 − 2 + 0.5) = (−2.5, 0.5). Backward with dout = (1, −2), starting
// from dinp = 1, dw = 0.25, db = 3 (it accumulates): dinp row 2 += (2,−1), row 0 += (−4,2),
// row 1 unchanged; dw += 1·(0.5,4) − 2·(1,2) = (−1.5, 0); db += −1.
static void test_value_head_by_hand(void) {
    float inp[6] = {1, 2, 3, -1, 0.5f, 4}, w[3] = {2, -1, 0.5f}, out[2], dout[2] = {1, -2};
    int idx[2] = {2, 0};
    value_head_forward(out, inp, idx, w, w + 2, 2, 2);
    check(out[0] == -2.5f && out[1] == 0.5f, "value_head_forward: (%g, %g), by hand (-2.5, 0.5)",
          out[0], out[1]);
    float dinp[6], dw[3] = {0.25f, 0.25f, 3};
    for (int i = 0; i < 6; i++) dinp[i] = 1;
    value_head_backward(dinp, dw, dw + 2, dout, inp, idx, w, 2, 2);
    float want_dinp[6] = {-3, 3, 1, 1, 3, 0}, want_dw[3] = {-1.25f, 0.25f, 2};
    int ok = 1;
    for (int i = 0; i < 6; i++) ok &= dinp[i] == want_dinp[i];
    for (int i = 0; i < 3; i++) ok &= dw[i] == want_dw[i];
    check(ok, "value_head_backward accumulates: dinp (%g %g | %g %g | %g %g), dw (%g %g), db %g",
          dinp[0], dinp[1], dinp[2], dinp[3], dinp[4], dinp[5], dw[0], dw[1], dw[2]);
}

// r = (0.5, −1.2, 2), y = (1, 0, 0.25): L = [(softplus(0.5) − 0.5) + softplus(−1.2) +
// (softplus(2) − 0.5)] / 3 = (0.474076984 + 0.263282790 + 1.626928011) / 3 = 0.788095928;
// ∂L/∂r = (σ(r) − y)/3 = (−0.125846890, 0.077158406, 0.210265693) (computed separately).
static void test_bce_by_hand(void) {
    float r[3] = {0.5f, -1.2f, 2.0f}, y[3] = {1, 0, 0.25f}, dr[3];
    double loss = prm_loss(r, y, 3, dr);
    check(close_to(loss, 0.7880958208537034, 1e-7) && close_to(dr[0], -0.1258468895993818, 1e-7) &&
          close_to(dr[1], 0.07715840550032746, 1e-7) && close_to(dr[2], 0.2102656926592941, 1e-7),
          "binary cross-entropy: loss %.9f (by hand 0.788095821), dL/dr (%.6f, %.6f, %.6f)", loss,
          dr[0], dr[1], dr[2]);
    float big[2] = {80.0f, -80.0f}, yb[2] = {0, 1}, db[2];
    loss = prm_loss(big, yb, 2, db);
    check(close_to(loss, 80.0, 1e-6) && isfinite(db[0]) && isfinite(db[1]),
          "binary cross-entropy of confident wrong logits ±80 stays finite: %.6f (by hand 80)", loss);
}

// predicted (1,1,0,0,1,0,1) against truth (1,0,1,0,1,0,0): tp 2 (steps 0, 4), fp 2 (1, 6),
// fn 1 (2), tn 2 (3, 5); precision 2/4, recall 2/3, F1 = 2·(1/2)(2/3)/(1/2 + 2/3) = 4/7.
static void test_f1_by_hand(void) {
    int predicted[7] = {1, 1, 0, 0, 1, 0, 1}, truth[7] = {1, 0, 1, 0, 1, 0, 0};
    LabelCounts c = {0};
    for (int i = 0; i < 7; i++) label_counts_add(&c, predicted[i], truth[i]);
    check(c.tp == 2 && c.fp == 2 && c.fn == 1 && c.tn == 2 && close_to(label_precision(&c), 0.5, 1e-15) &&
          close_to(label_recall(&c), 2.0 / 3, 1e-15) && close_to(label_f1(&c), 4.0 / 7, 1e-15),
          "label counts tp %ld fp %ld fn %ld tn %ld: precision %.4f recall %.4f F1 %.6f (4/7)",
          c.tp, c.fp, c.fn, c.tn, label_precision(&c), label_recall(&c), label_f1(&c));
    LabelCounts none = {0, 0, 0, 5};
    check(isnan(label_precision(&none)) && isnan(label_recall(&none)) && isnan(label_f1(&none)),
          "no positive step at all: precision, recall and F1 undefined (null in JSON), not 0");
}

// Steps of hand-made paths against the true steps 5 + 3 = 8, 8 − 2 = 6: step j is truly
// correct when no step up to it is wrong.
static void test_steps_and_truth(void) {
    TaskStep truth[2];
    int nt = task_parse_truth("5 + 3 = 8\n8 - 2 = 6", truth, 2);
    const char *paths[4] = {
        "Tom has 5 apples.\nHe buys 3: 5 + 3 = 8.\n\n  He gives 2 away: 8 - 2 = 6.  \nThe answer is 6.",
        "Tom has 5 apples.\nHe buys 3: 5 + 3 = 9.\nHe gives 2 away: 9 - 2 = 7.\nThe answer is 7.",
        "Tom has 5 apples.\nHe buys 3: 3 + 5 = 8.\nHe gives 2 away: 8 - 3 = 5.\nHe finds 1: 5 + 1 = 6.\nThe answer is 6.",
        "Tom has 5 apples.\nAnn has 2 pears: Tom still has 5."};
    int want_count[4] = {3, 3, 4, 2};
    int want[4][4] = {{1, 1, 1}, {1, 0, 0}, {1, 1, 0, 0}, {1, 1}};
    for (int p = 0; p < 4; p++) {
        char **steps;
        int n = answer_split_steps(paths[p], &steps);
        StepReport r;
        answer_check_steps(paths[p], truth, nt, &r);
        int ok = n == want_count[p] && r.num_steps == n;
        for (int s = 0; ok && s < n; s++) ok &= answer_step_truly_correct(&r, s) == want[p][s];
        check(ok, "path %d: %d steps (want %d; answer_check_steps %d), first \"%s\", last \"%s\"; true "
              "correctness as by hand", p, n, want_count[p], r.num_steps, n ? steps[0] : "",
              n ? steps[n - 1] : "");
        answer_free_steps(steps, n);
    }
    // an earlier "The answer is" line is a step (the last one is the final answer); judged as
    // the lines prm reads from a stepwise file, the steps get the same truth
    const char *two = "Tom has 5 apples.\nThe answer is 5.\nHe buys 3: 5 + 3 = 9.\nThe answer is 9.";
    char **steps;
    int n = answer_split_steps(two, &steps);
    StepReport whole, lines;
    answer_check_steps(two, truth, nt, &whole);
    answer_check_step_lines(steps, n, truth, nt, &lines);
    check(n == 3 && !strcmp(steps[1], "The answer is 5.") && whole.first_error == 2 &&
          lines.first_error == 2 && lines.num_steps == 3,
          "an earlier answer line is a step: %d steps, first error %d (whole completion) = %d (its "
          "step lines)", n, whole.first_error, lines.first_error);
    answer_free_steps(steps, n);
}

static void test_json_array_items(void) {
    JsonObject obj;
    char err[200];
    const char *line = "{\"a\": [\"x\\ny\", true, false, 0.25, [1, 2], {\"k\": []}], \"e\": [], \"s\": \"no\"}";
    int rc = json_parse_object(line, strlen(line), &obj, err, sizeof err);
    JsonField *items;
    int n = rc == 0 ? json_array_items(json_get(&obj, "a"), &items) : -1;
    int ok = n == 6 && items[0].type == JSON_STRING && !strcmp(items[0].text, "x\ny") &&
             items[1].type == JSON_TRUE && items[2].type == JSON_FALSE &&
             items[3].type == JSON_NUMBER && items[3].number == 0.25 &&
             items[4].type == JSON_ARRAY && !strcmp(items[4].text, "[1, 2]") &&
             items[5].type == JSON_OBJECT;
    if (n > 0) json_items_free(items, n);
    JsonField *none;
    int empty = json_array_items(json_get(&obj, "e"), &none);
    int not_array = json_array_items(json_get(&obj, "s"), &none);
    check(ok && empty == 0 && not_array == -1, "json_array_items: 6 elements of every kind (%d), "
          "[] has 0 (%d), a string is not an array (%d)", n, empty, not_array);
    json_object_free(&obj);
}

// Step labels from hand-made continuation outcomes, K = 4, for a path of 3 steps:
// step 0 reached by continuations 2 and 3, step 1 by none, step 2 by 0, 1 and 2. With the first
// k = 2: hits (0, 0, 2), hard (0, 0, 1), soft (0, 0, 1); with k = 4: hits (2, 0, 3), hard
// (1, 0, 1), soft (0.5, 0, 0.75). Then the file of write_step_labels (k = K = 4), read back.
static void test_step_labels_by_hand(void) {
    unsigned char reached[12] = {0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0};
    char *steps[3] = {"Tom has 5 apples.", "He buys 3: 5 + 3 = 9.", "He \"gives\" 2: 9 - 2 = 7."};
    int truly[3] = {1, 0, 0};
    StepPath path = {0, 1, 3, steps, 0, truly, reached};
    int hard[2][3], ok = 1, want_hard[2][3] = {{0, 0, 1}, {1, 0, 1}};
    double soft[2][3], want_soft[2][3] = {{0, 0, 1}, {0.5, 0, 0.75}};
    for (int l = 0; l < 2; l++)
        for (int s = 0; s < 3; s++) {
            step_label(&path, s, 4, l ? 4 : 2, &hard[l][s], &soft[l][s]);
            ok &= hard[l][s] == want_hard[l][s] && soft[l][s] == want_soft[l][s];
        }
    check(ok, "step labels from the first k of K = 4 continuations: k = 2 hard (%d %d %d) soft "
          "(%g %g %g), k = 4 hard (%d %d %d) soft (%g %g %g)", hard[0][0], hard[0][1], hard[0][2],
          soft[0][0], soft[0][1], soft[0][2], hard[1][0], hard[1][1], hard[1][2], soft[1][0],
          soft[1][1], soft[1][2]);
    LabelCounts h, f;
    step_label_counts(&path, 1, 4, 2, &h, &f);
    // k = 2: hard (0,0,1) vs truth (1,0,0): fn 1, tn 1, fp 1; soft >= 0.5: the same
    int ok2 = h.tp == 0 && h.fp == 1 && h.fn == 1 && h.tn == 1 && f.tp == 0 && f.fp == 1 && f.fn == 1;
    step_label_counts(&path, 1, 4, 4, &h, &f);
    // k = 4: hard (1,0,1): tp 1, tn 1, fp 1; soft >= 0.5 (0.5, 0, 0.75): the same
    check(ok2 && h.tp == 1 && h.fp == 1 && h.fn == 0 && h.tn == 1 && f.tp == 1 && f.fp == 1 && f.tn == 1,
          "label counts against the truth (1, 0, 0), by hand: k = 2 fn 1 fp 1 tn 1; k = 4 tp %ld fp "
          "%ld fn %ld tn %ld", h.tp, h.fp, h.fn, h.tn);
    StepPath outcome = {0, 0, 3, steps, 1, truly, NULL};
    step_label_counts(&outcome, 1, 4, 0, &h, &f);
    check(h.tp == 1 && h.fp == 2 && h.fn == 0 && h.tn == 0, "outcome labels (a right final answer): "
          "every step labelled correct, tp %ld fp %ld", h.tp, h.fp);

    char dir[512], in_path[600], out_path[600];
    scratch_make(dir, sizeof dir, "test_prm");
    scratch_path(in_path, sizeof in_path, dir, "in.jsonl");
    scratch_path(out_path, sizeof out_path, dir, "out.jsonl");
    FILE *fp = fopen(in_path, "w");
    fputs("{\"question\": \"Tom has 5 apples. He buys 3. He gives 2. How many?\", \"answer\": "
          "\"x\\n#### 6\", \"gold\": \"6\", \"truth\": \"5 + 3 = 8\\n8 - 2 = 6\", \"samples\": []}\n", fp);
    fclose(fp);
    JsonlFile file;
    jsonl_read(in_path, &file);
    Example item;
    TemplateOptions cot = {TEMPLATE_COT, 0, 0};
    char err[256];
    example_from_json(&file.objects[0], &cot, &item, err, sizeof err);
    write_step_labels(out_path, &file, &item, &path, 1, 4);
    JsonlFile back;
    jsonl_read(out_path, &back);
    JsonField *completions, *labels, *softs;
    const JsonObject *o = &back.objects[0];
    int nc = json_array_items(json_get(o, "completions"), &completions);
    int nl = json_array_items(json_get(o, "labels"), &labels);
    int ns = json_array_items(json_get(o, "soft"), &softs);
    ok = back.count == 1 && nc == 3 && nl == 3 && ns == 3 &&
         !strcmp(jsonl_string(&back, 0, "prompt"), item.prompt) &&
         !strcmp(jsonl_string(&back, 0, "gold"), "6") &&
         !strcmp(jsonl_string(&back, 0, "truth"), "5 + 3 = 8\n8 - 2 = 6") &&
         json_get(o, "index")->number == 0 && json_get(o, "sample")->number == 1;
    for (int s = 0; ok && s < 3; s++)
        ok &= !strcmp(completions[s].text, steps[s]) &&
              (labels[s].type == JSON_TRUE) == want_hard[1][s] && softs[s].number == want_soft[1][s];
    check(ok, "write_step_labels: TRL's stepwise line (prompt, completions, labels, soft) with "
          "gold, truth, index and sample, read back as written");
    json_items_free(completions, nc > 0 ? nc : 0);
    json_items_free(labels, nl > 0 ? nl : 0);
    json_items_free(softs, ns > 0 ? ns : 0);
    jsonl_free(&back);
    jsonl_free(&file);
    example_free(&item);
    scratch_remove(dir);
}

// SIPF's pairs by reward margin, by hand. Rewards (0.3, 0.9, 0.5, 0.1, 0.5) sorted highest first
// (ties in their order): paths 1, 2, 4, 0, 3; pairs 1 over 3 (gap 0.8) and 2 over 0 (0.2); path
// 4 is left in the middle. A margin of 0.25 stops after the first, --max-pairs 1 too. Ties keep
// their order: (0.2, 0.7, 0.7, 0.2) gives 1 over 3 and 2 over 0. Equal rewards or one path: none.
static void test_margin_pairs_by_hand(void) {
    double r[5] = {0.3, 0.9, 0.5, 0.1, 0.5}, ties[4] = {0.2, 0.7, 0.7, 0.2}, same[3] = {0.4, 0.4, 0.4};
    int w[5], l[5];
    int n = margin_pairs(r, 5, 0.15, 4, w, l);
    check(n == 2 && w[0] == 1 && l[0] == 3 && w[1] == 2 && l[1] == 0,
          "margin_pairs (0.3 0.9 0.5 0.1 0.5), margin 0.15: %d pairs, %d over %d, %d over %d (by "
          "hand: 1 over 3, 2 over 0)", n, w[0], l[0], w[1], l[1]);
    n = margin_pairs(r, 5, 0.25, 4, w, l);
    int n1 = margin_pairs(r, 5, 0.15, 1, w + 2, l + 2);
    check(n == 1 && w[0] == 1 && l[0] == 3 && n1 == 1 && w[2] == 1 && l[2] == 3,
          "margin_pairs: margin 0.25 keeps only the first pair (the gaps narrow), as does --max-pairs 1");
    n = margin_pairs(ties, 4, 0.1, 4, w, l);
    check(n == 2 && w[0] == 1 && l[0] == 3 && w[1] == 2 && l[1] == 0,
          "margin_pairs with ties: 1 over 3, 2 over 0 (got %d pairs, %d over %d, %d over %d)", n,
          w[0], l[0], w[1], l[1]);
    int none = margin_pairs(same, 3, 1e-9, 4, w, l) + margin_pairs(r, 1, 0.0, 4, w, l) +
               margin_pairs(r, 0, 0.1, 4, w, l);
    check(none == 0, "margin_pairs: equal rewards, one path, or none give no pair");
    float p[3] = {0.9f, 0.5f, 0.7f};
    double mean = path_reward(p, 3, 0), low = path_reward(p, 3, 1);
    check(close_to(mean, (0.9 + 0.5 + 0.7) / 3, 1e-7) && low == 0.5f && path_reward(p, 0, 0) == -1.0,
          "path_reward of (0.9, 0.5, 0.7): mean %.7f, lowest %g; no step: -1", mean, low);
}

// SIPF's kept paths of one question with true steps 5 + 3 = 8, 8 − 2 = 6, from five samples:
// 0 on the true path; 1 the same equations (dropped); 2 a wrong equation 5 + 3 = 9 (dropped
// with --drop-wrong-arithmetic); 3 no step (dropped); 4 right arithmetic off the path. Then
// their labels, simulated by hand (K = 2), as the PRM's data in memory (prm_data_add_paths)
// and through the stepwise file (write_step_labels, prm_data_load): the same tokens and targets.
static void test_sipf_paths_by_hand(void) {
    char dir[512], in_path[600], steps_path[600];
    scratch_make(dir, sizeof dir, "test_prm");
    scratch_path(in_path, sizeof in_path, dir, "in.jsonl");
    scratch_path(steps_path, sizeof steps_path, dir, "steps.jsonl");
    FILE *fp = fopen(in_path, "w");
    fputs("{\"question\": \"Tom has 5 apples. He buys 3. He gives 2. How many?\", \"answer\": "
          "\"x\\n#### 6\", \"gold\": \"6\", \"truth\": \"5 + 3 = 8\\n8 - 2 = 6\"}\n", fp);
    fclose(fp);
    JsonlFile file;
    jsonl_read(in_path, &file);
    Example *items;
    int n;
    TemplateOptions cot = {TEMPLATE_COT, 0, 0};
    char err[256];
    examples_from_jsonl(&file, &cot, &items, &n, err, sizeof err);
    char *samples[5] = {"He buys 3: 5 + 3 = 8.\nHe gives 2: 8 - 2 = 6.\nThe answer is 6.",
                        "Tom has 5.\n5 + 3 = 8\n8 - 2 = 6\nThe answer is 6.",
                        "5 + 3 = 9.\n9 - 2 = 7.\nThe answer is 7.", "The answer is 6.",
                        "5 + 2 = 7.\n7 + 3 = 10.\nThe answer is 10."};
    int count, dropped[3];
    StepPath *all = sipf_keep_paths(items, 1, 5, samples, in_path, 0, &count, dropped);
    int ok = count == 3 && all[0].sample == 0 && all[1].sample == 2 && all[2].sample == 4 &&
             dropped[0] == 1 && dropped[1] == 0 && dropped[2] == 1 && all[0].final_correct &&
             !all[1].final_correct && !all[2].final_correct && all[1].truly_correct[0] == 0 &&
             all[0].truly_correct[1] == 1 && all[2].truly_correct[0] == 0;
    check(ok, "sipf_keep_paths: kept samples 0, 2, 4 (got %d paths); dropped 1 repeating, 0 "
          "wrong, 1 without a step (got %d %d %d); final answers and true steps as by hand", count,
          dropped[0], dropped[1], dropped[2]);
    int strict_count, strict_dropped[3];
    StepPath *strict = sipf_keep_paths(items, 1, 5, samples, in_path, 1, &strict_count, strict_dropped);
    check(strict_count == 2 && strict[0].sample == 0 && strict[1].sample == 4 && strict_dropped[0] == 1 &&
          strict_dropped[1] == 1 && strict_dropped[2] == 1,
          "sipf_keep_paths --drop-wrong-arithmetic: kept samples 0 and 4; dropped 1 repeating, 1 "
          "wrong, 1 without a step");
    // continuations by hand, K = 2: path 0 (2 steps) reached (1 1 | 0 1), path 2 (2) (0 0 | 1 0),
    // path 4 (2) (0 0 | 0 0): hard (1 1), (0 1), (0 0); soft (1 .5), (0 .5), (0 0)
    unsigned char reached[3][4] = {{1, 1, 0, 1}, {0, 0, 1, 0}, {0, 0, 0, 0}};
    for (int p = 0; p < 3; p++) {
        all[p].reached = xmalloc(4);
        memcpy(all[p].reached, reached[p], 4);
    }
    write_step_labels(steps_path, &file, items, all, 3, 2);
    const char *text = "He buys 3: 5 + 3 = 8.\nHe gives 2: 8 - 2 = 6.\nThe answer is 6.\n";
    size_t len = strlen(text);
    Tokenizer *tok = tok_train(&text, &len, 1, 300, 0, err, sizeof err);
    float want[2][6] = {{1, 1, 0, 1, 0, 0}, {1, 0.5f, 0, 0.5f, 0, 0}};
    for (int soft = 0; soft < 2; soft++) {
        PrmData mem = {0}, disk;
        int at[3];
        prm_data_add_paths(&mem, tok, items, all, 3, 2, soft, 200, at);
        prm_data_load(&disk, steps_path, tok, 200, soft);
        ok = mem.count == 3 && disk.count == 3 && mem.steps == 6 && disk.steps == 6 && at[0] == 0 &&
             at[2] == 2;
        for (int i = 0; ok && i < 3; i++) {
            const PrmExample *a = &mem.ex[i], *b = &disk.ex[i];
            ok &= a->seq.length == b->seq.length && a->num_steps == 2 && b->num_steps == 2 &&
                  !memcmp(a->seq.ids, b->seq.ids, (size_t)a->seq.length * sizeof(int)) &&
                  !memcmp(a->reads, b->reads, 2 * sizeof(int)) &&
                  !memcmp(a->targets, b->targets, 2 * sizeof(float)) &&
                  !memcmp(a->truly_correct, b->truly_correct, 2 * sizeof(int)) &&
                  a->targets[0] == want[soft][2 * i] && a->targets[1] == want[soft][2 * i + 1];
        }
        check(ok, "prm_data_add_paths (%s labels): the same ids, reads, targets and true steps as "
              "prm_data_load of write_step_labels' file; targets as by hand", soft ? "soft" : "hard");
        // a window too short for any step: the path is dropped, at[] says so
        PrmData tiny = {0};
        prm_data_add_paths(&tiny, tok, items, all, 1, 2, soft, 4, at);
        if (soft) check(tiny.count == 0 && tiny.dropped == 1 && at[0] == -1,
                        "prm_data_add_paths: a path without a step inside the window is dropped (at -1)");
        prm_data_free(&tiny);
        prm_data_free(&mem);
        prm_data_free(&disk);
    }
    tok_free(tok);
    step_paths_free(all, count);
    step_paths_free(strict, strict_count);
    examples_free(items, n);
    jsonl_free(&file);
    scratch_remove(dir);
}

// A model with random weights (the padded rows of wte zero).
static void random_model(Model *model, const char *config, uint64_t seed) {
    model_build(model, parse_config(config));
    model_init_random(model, seed);
    Rng rng = rng_seeded(seed + 1);
    for (size_t i = 0; i < model->num_parameters; i++) model->params_memory[i] += 0.3f * rng_normal(&rng);
    const Config *cfg = &model->config;
    memset(model->params.wte + (size_t)cfg->V * cfg->C, 0, (size_t)(cfg->Vp - cfg->V) * cfg->C * 4);
}

// The PRM's tokenization: the head reads at each step's separator; steps past the window go.
// A saved PRM loads back bit for bit, and gives the same probabilities.
static void test_prm_tokenize_and_file(void) {
    const char *text = "Tom has 5 apples.\nHe buys 3: 5 + 3 = 8.\nThe answer is 8.\n";
    size_t len = strlen(text);
    char err[256];
    Tokenizer *tok = tok_train(&text, &len, 1, 300, 0, err, sizeof err);
    char *steps[3] = {"Tom has 5 apples.", "He buys 3: 5 + 3 = 8.", "He gives 2."};
    TokIds sep = {0};
    tok_encode_ordinary(tok, "\n", 1, &sep);
    PrmExample ex;
    int cut = prm_tokenize(tok, "Q: ", steps, 3, 1000, &ex);
    int ok = cut == 0 && ex.num_steps == 3 && ex.seq.ids[ex.seq.length - 1] == tok_eot(tok) &&
             ex.reads[2] == ex.seq.length - 2;
    for (int s = 0; s < 3; s++) ok &= ex.seq.ids[ex.reads[s]] == sep.data[sep.len - 1];
    check(ok, "prm_tokenize: reads at the separators (positions %d %d %d of %d), end-of-text last",
          ex.reads[0], ex.reads[1], ex.reads[2], ex.seq.length);
    PrmExample cut_ex;
    int budget = ex.reads[1] + 2; // the second separator is the last input position
    int dropped = prm_tokenize(tok, "Q: ", steps, 3, budget, &cut_ex);
    check(dropped == 1 && cut_ex.num_steps == 2 && cut_ex.seq.length == budget,
          "prm_tokenize in a window of %d ids: the third step is left out (%d), %d ids kept", budget,
          dropped, cut_ex.seq.length);

    Model model, loaded;
    random_model(&model, "2,2,16,64,300", 5);
    ValueHead head, loaded_head;
    head_alloc(&head, 16);
    head_init_random(&head, 7);
    head.params[16] = 0.75f; // a bias that is not zero
    char dir[512], path[600];
    scratch_make(dir, sizeof dir, "test_prm");
    scratch_path(path, sizeof path, dir, "prm.bin");
    prm_save(&model, &head, path);
    prm_read(&loaded, &loaded_head, path);
    ok = loaded.num_parameters == model.num_parameters && loaded_head.C == 16 &&
         !memcmp(loaded.params_memory, model.params_memory, model.num_parameters * sizeof(float)) &&
         !memcmp(loaded_head.params, head.params, 17 * sizeof(float));
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fclose(f);
    ok &= bytes == (long)(1024 + 4 * model.num_parameters + 16 + 4 * 17);
    float **p1 = prm_probabilities(&model, &head, &ex, 1, 4, 64, tok_eot(tok));
    float **p2 = prm_probabilities(&loaded, &loaded_head, &ex, 1, 4, 64, tok_eot(tok));
    ok &= !memcmp(p1[0], p2[0], 3 * sizeof(float)) && p1[0][0] > 0 && p1[0][0] < 1;
    check(ok, "PRM file: %ld bytes = the checkpoint + 16 + 4(C+1); loads back bit for bit, same "
          "step probabilities (%.4f %.4f %.4f)", bytes, p1[0][0], p1[0][1], p1[0][2]);
    free(p1[0]), free(p2[0]), free(p1), free(p2);
    scratch_remove(dir);
    prm_example_free(&ex);
    prm_example_free(&cut_ex);
    tok_ids_free(&sep);
    head_free(&head);
    head_free(&loaded_head);
    model_free(&model);
    model_free(&loaded);
    tok_free(tok);
}

// The PRM's loss through the head and the whole model: random weights, random paths of random
// tokens with reads at random positions and random targets (0/1 or soft).
typedef struct {
    Model *model;
    ValueHead *head;
    PrmData *data;
    int *order, n, T, pack;
    Batch *batch;
    HeadReads *reads;
} PrmCase;

static double prm_objective_with(PrmCase *k, float *dr) {
    int M = prm_forward(k->model, k->head, k->batch, k->reads, k->data->ex, k->order, k->n, k->T,
                        k->pack, 0);
    float *y = xmalloc((size_t)M * sizeof(float)), *local = xmalloc((size_t)M * sizeof(float));
    for (int i = 0, m = 0; i < k->n; i++)
        for (int s = 0; s < k->data->ex[k->order[i]].num_steps; s++)
            y[m++] = k->data->ex[k->order[i]].targets[s];
    double loss = prm_loss(k->reads->host_out, y, M, dr ? dr : local);
    free(y);
    free(local);
    return loss;
}
static double prm_objective(void *p) { return prm_objective_with(p, NULL); }

static void test_gradients_through_model(int pack, int soft) {
    Model model;
    random_model(&model, "2,2,16,32,40", 8);
    ValueHead head;
    head_alloc(&head, 16);
    head_init_random(&head, 3);
    Rng rng = rng_seeded(31 + pack + 2 * soft);
    for (int c = 0; c <= 16; c++) head.params[c] = 0.5f * rng_normal(&rng); // not GPT-2's small init
    enum { P = 3 };
    PrmData data = {xmalloc(P * sizeof(PrmExample)), P, 0, 0, 0};
    for (int i = 0; i < P; i++) {
        PrmExample *e = &data.ex[i];
        int length = 8 + 3 * i;
        e->seq = (TokenSequence){xmalloc(length * sizeof(int)), length, length};
        for (int t = 0; t < length; t++) e->seq.ids[t] = rng_u32(&rng) % 40;
        e->num_steps = 2 + i % 2;
        e->reads = xmalloc(e->num_steps * sizeof(int));
        e->targets = xmalloc(e->num_steps * sizeof(float));
        e->truly_correct = NULL;
        for (int s = 0; s < e->num_steps; s++) {
            e->reads[s] = 2 + s * 2 + i % 2; // increasing, all inside the inputs 0..length-2
            e->targets[s] = soft ? rng_uniform(&rng) : (float)(rng_u32(&rng) % 2);
        }
        data.steps += e->num_steps;
    }
    int order[P] = {1, 2, 0};
    Batch batch;
    batch_alloc(&batch, P, 32);
    HeadReads reads;
    head_reads_alloc(&reads, P * 32);
    PrmCase k = {&model, &head, &data, order, P, 32, pack, &batch, &reads};
    prm_objective_with(&k, reads.host_dout);
    check(pack ? batch.rows < P : batch.rows == P, "PRM batch --pack %d: %d paths in %d rows of %d",
          pack, P, batch.rows, batch.T);
    int M = (int)data.steps;
    dev_to_device(reads.dout, reads.host_dout, (size_t)M * sizeof(float));
    HeadGradient hg = {head.params, head.grads, reads.idx, reads.dout, M};
    model_backward_with_head(&model, NULL, &hg);
    float *grads = xmalloc(model.num_parameters * sizeof(float)), head_grads[17];
    memcpy(grads, model.grads_memory, model.num_parameters * sizeof(float));
    memcpy(head_grads, head.grads, sizeof head_grads);
    GradTolerance tol = {3e-3, 1e-3, 1e-2, 1e-2};
    int before = checks_failed;
    char name[96];
    snprintf(name, sizeof name, "PRM (--pack %d, %s targets) gradient of the head", pack, soft ? "soft" : "hard");
    check_gradient(name, prm_objective, &k, head.params, head_grads, 17, tol, &rng);
    size_t offset = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        snprintf(name, sizeof name, "PRM (--pack %d, %s targets) gradient of %s", pack,
                 soft ? "soft" : "hard", GPT2_PARAMS[t].name);
        size_t n = t == 0 ? (size_t)40 * 16 : model.param_sizes[t];
        check_gradient(name, prm_objective, &k, model.params_memory + offset, grads + offset, n,
                       tol, &rng);
        offset += model.param_sizes[t];
    }
    check(checks_failed == before, "PRM (--pack %d, %s targets): the gradient of the head and of "
          "every parameter tensor matches finite differences", pack, soft ? "soft" : "hard");
    free(grads);
    head_reads_free(&reads);
    batch_free(&batch);
    prm_data_free(&data);
    head_free(&head);
    model_free(&model);
}

int main(void) {
    test_value_head_by_hand();
    test_bce_by_hand();
    test_f1_by_hand();
    test_steps_and_truth();
    test_json_array_items();
    test_step_labels_by_hand();
    test_margin_pairs_by_hand();
    test_sipf_paths_by_hand();
    test_prm_tokenize_and_file();
    test_gradients_through_model(0, 0);
    test_gradients_through_model(1, 1);
    return checks_finish();
}
