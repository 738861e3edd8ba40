// test_repro.c — tests of the reproduction's statistics and files: lib/report.h's Wilson
// interval against hand-computed values, its paired bootstrap of a gain against hand-computed
// cases and against the normal approximation, and the gains that its results.json writer writes
// against paired_bootstrap's own; and join_heads of lib/reproduce.h (section 11). Built from the
// program's own translation unit (sirt.c without its main).
// Prints one line per check and ends with "N passed, M failed"; exits non-zero on a failure.
#define SIRT_NO_MAIN
#include "../sirt.c"
#include "check.h"

static Score make_score(const unsigned char *hit, long n) {
    Score s = {0, n, xmalloc(n)};
    for (long i = 0; i < n; i++) s.correct += (s.hit[i] = hit[i]);
    return s;
}

// The Wilson interval, z = 1.959964, by hand: at 0/n the interval is [0, z²/(n + z²)]; at n/n it
// is [n/(n + z²), 1]; at 5/10 it is 1/2 ± z·sqrt(n/4 + z²/4)/(n + z²). For n = 10 (z² = 3.841459):
// [0, 0.277533], [0.722467, 1] and [0.236593, 0.763407]. No items: [0, 0].
static void test_wilson(void) {
    struct { long correct, n; double low, high; } cases[] = {
        {0, 10, 0.0, 0.2775328}, {10, 10, 0.7224672, 1.0}, {5, 10, 0.2365931, 0.7634069}, {0, 0, 0, 0}};
    for (int i = 0; i < 4; i++) {
        Interval ci = wilson_interval(cases[i].correct, cases[i].n);
        check(fabs(ci.low - cases[i].low) < 1e-6 && fabs(ci.high - cases[i].high) < 1e-6,
              "wilson_interval: %ld/%ld is [%.6f, %.6f], expected [%.6f, %.6f]", cases[i].correct,
              cases[i].n, ci.low, ci.high, cases[i].low, cases[i].high);
    }
}

// Hand-computed cases: equal rows gain exactly 0 with the interval [0, 0]; a row right on every
// item where its baseline is wrong on every item gains 1 with [1, 1]; rows that differ on one
// item of n gain 1/n, and every resample's gain is a multiple of 1/n in [0, some k/n].
static void test_bootstrap_exact(void) {
    unsigned char a[50], b[50];
    Rng rng = rng_seeded(5);
    for (int i = 0; i < 50; i++) a[i] = rng_u32(&rng) & 1;
    Score x = make_score(a, 50), y = make_score(a, 50);
    Gain g = paired_bootstrap(&x, &y, 1, 1);
    check(g.gain == 0 && g.low == 0 && g.high == 0, "bootstrap: equal rows gain 0 [0, 0]");
    for (int i = 0; i < 50; i++) a[i] = 1, b[i] = 0;
    Score all = make_score(a, 50), none = make_score(b, 50);
    g = paired_bootstrap(&all, &none, 1, 1);
    check(g.gain == 1 && g.low == 1 && g.high == 1, "bootstrap: right everywhere over wrong everywhere gains 1 [1, 1]");
    g = paired_bootstrap(&none, &all, 1, 1);
    check(g.gain == -1 && g.low == -1 && g.high == -1, "bootstrap: the reverse gains -1 [-1, -1]");
    free(x.hit), free(y.hit), free(all.hit), free(none.hit);
}

// Two seeds laid out with a stride, as the reproduction stores them ([seed][row][column]):
// the gain is the mean over seeds, and the interval agrees with the normal approximation
// mean ± 1.96·sd/√n of paired differences (here: differences +1 on 30% of the items, -1 on 10%).
static void test_bootstrap_normal(void) {
    enum { N = 2000, ROWS = 2 };
    Score scores[2 * ROWS]; // seed 0: row 0, row 1; seed 1: row 0, row 1
    unsigned char *hit[2 * ROWS];
    Rng rng = rng_seeded(11);
    double sum = 0, sq = 0;
    for (int s = 0; s < 2; s++) {
        hit[s * ROWS] = xmalloc(N), hit[s * ROWS + 1] = xmalloc(N);
        for (int i = 0; i < N; i++) {
            float u = rng_uniform(&rng);
            int base = rng_u32(&rng) & 1, d = u < 0.3f ? 1 : u < 0.4f ? -1 : 0;
            if (d == 1) base = 0;
            if (d == -1) base = 1;
            hit[s * ROWS + 1][i] = (unsigned char)base;      // the baseline (row 1)
            hit[s * ROWS][i] = (unsigned char)(base + d);    // the refined row (row 0)
            sum += d, sq += (double)d * d;
        }
        scores[s * ROWS] = make_score(hit[s * ROWS], N);
        scores[s * ROWS + 1] = make_score(hit[s * ROWS + 1], N);
    }
    double mean = sum / (2 * N), sd = sqrt(sq / (2 * N) - mean * mean), half = 1.96 * sd / sqrt(2 * N);
    Gain g = paired_bootstrap(&scores[0], &scores[1], 2, ROWS);
    check(fabs(g.gain - mean) < 1e-12, "bootstrap: gain %.4f = mean paired difference %.4f", g.gain, mean);
    check(fabs((g.gain - g.low) - half) < 0.15 * half && fabs((g.high - g.gain) - half) < 0.15 * half,
          "bootstrap: interval [%.4f, %.4f] matches mean ± 1.96 sd/sqrt(n) = ±%.4f within 15%%",
          g.low, g.high, half);
    Gain again = paired_bootstrap(&scores[0], &scores[1], 2, ROWS);
    check(again.low == g.low && again.high == g.high, "bootstrap: the same data give the same interval");
    for (int i = 0; i < 2 * ROWS; i++) free(scores[i].hit), free(hit[i]);
}

// The results.json writer of lib/report.h: a table of 2 seeds, 3 rows (a baseline and two rows
// compared with it) and 2 columns of random hits, written with report_json_begin/finish into a
// directory of its own; every entry of its "gains" array, in order, must carry the gain and
// interval that paired_bootstrap gives for that row, baseline and column (to the 6 decimals
// written) and each seed's own difference, and "results" one entry a seed, row and column.
static void test_json_gains(void) {
    enum { SEEDS = 2, ROWS = 3, COLUMNS = 2 };
    const ReportRow rows[ROWS] = {{"base", "base", -1}, {"  better", "better", 0}, {"other", "other", 0}};
    const ReportColumn columns[COLUMNS] = {{"math", "test"}, {"choice", "test-ood"}};
    Score scores[SEEDS * ROWS * COLUMNS]; // [seed][row][column]
    Rng rng = rng_seeded(3);
    for (int s = 0; s < SEEDS; s++)
        for (int c = 0; c < COLUMNS; c++) {
            long n = 40 + 17 * c + 5 * s; // columns and seeds of different sizes
            for (int r = 0; r < ROWS; r++) {
                unsigned char hit[100];
                for (long i = 0; i < n; i++) hit[i] = rng_uniform(&rng) < 0.3f + 0.2f * r;
                scores[(s * ROWS + r) * COLUMNS + c] = make_score(hit, n);
            }
        }
    ReportTable t = {rows, ROWS, columns, COLUMNS, SEEDS, 7, scores};
    Gain *gains = report_gains(&t);

    char dir[1024], path[1100];
    scratch_make(dir, sizeof dir, "test_repro");
    snprintf(path, sizeof path, "%s/results.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot write %s", path);
    report_json_begin(&t, f);
    fprintf(f, "\"task\": \"test\",\n");
    report_json_finish(&t, gains, f);
    if (fclose(f)) die("cannot write %s", path);
    size_t bytes;
    char *text = (char *)read_whole_file(path, &bytes);
    if (!text) die("cannot read %s", path);
    const char *opening = "{\"seeds\": [7, 8], \"task\": \"test\",\n\"results\": [";
    check(!strncmp(text, opening, strlen(opening)),
          "results.json: opens with the seeds, the caller's fields, then the results");

    int results = 0;
    for (char *p = strstr(text, "{\"model\""); p; p = strstr(p + 1, "{\"model\"")) results++;
    char *g = strstr(text, "\"gains\": [");
    int entries = 0, all_match = 1;
    for (char *line = g ? strchr(g, '\n') : NULL; line && line[1] == ' '; line = strchr(line + 1, '\n')) {
        char model[32], over[32], family[32], split[32];
        double gain, low, high, seed_gain[SEEDS];
        int got = sscanf(line + 1, "  {\"model\": \"%31[^\"]\", \"over\": \"%31[^\"]\", \"family\": "
                                   "\"%31[^\"]\", \"split\": \"%31[^\"]\", \"gain\": %lf, \"ci95\": "
                                   "[%lf, %lf], \"per_seed\": [%lf, %lf]}",
                         model, over, family, split, &gain, &low, &high, &seed_gain[0], &seed_gain[1]);
        int r = 1 + entries / COLUMNS, c = entries % COLUMNS; // rows 1 and 2, every column
        if (r >= ROWS) { // more entries than compared rows and columns
            all_match = 0, entries++;
            continue;
        }
        Gain want = paired_bootstrap(&scores[r * COLUMNS + c], &scores[c], SEEDS, ROWS * COLUMNS);
        int ok = got == 9 && !strcmp(model, rows[r].key) && !strcmp(over, "base") &&
                 !strcmp(family, columns[c].family) && !strcmp(split, columns[c].split) &&
                 fabs(gain - want.gain) < 6e-7 && fabs(low - want.low) < 6e-7 && fabs(high - want.high) < 6e-7;
        for (int s = 0; s < SEEDS && ok; s++) {
            const Score *x = &scores[(s * ROWS + r) * COLUMNS + c], *y = &scores[s * ROWS * COLUMNS + c];
            ok = fabs(seed_gain[s] - (double)(x->correct - y->correct) / x->n) < 6e-7;
        }
        if (!ok) all_match = 0;
        entries++;
    }
    check(results == SEEDS * ROWS * COLUMNS + 2 * COLUMNS,
          "results.json: %d entries, one a seed, row and column, and one a compared row and column", results);
    check(entries == 2 * COLUMNS && all_match,
          "results.json: %d gains, each paired_bootstrap's gain and interval, and each seed's difference",
          entries);
    free(text);
    free(gains);
    for (int i = 0; i < SEEDS * ROWS * COLUMNS; i++) free(scores[i].hit);
    scratch_remove(dir);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot write %s", path);
    fputs(text, f);
    if (fclose(f) != 0) die("cannot write %s", path);
}

// join_heads: lines skip .. skip+k-1 of each file, a last line without '\n' kept as it is. The files
// are in a scratch directory of the test's own.
static void test_join_heads(void) {
    char dir[4096], a[4096], b[4096], out[4096];
    scratch_make(dir, sizeof dir, "test_repro");
    scratch_path(a, sizeof a, dir, "a.txt");
    scratch_path(b, sizeof b, dir, "b.txt");
    scratch_path(out, sizeof out, dir, "out.txt");
    write_text(a, "a1\na2\na3\n");
    write_text(b, "b1\nb2");
    join_heads(out, (const char *const[]){a, b}, 2, 0, 2);
    size_t bytes;
    char *got = (char *)read_whole_file(out, &bytes);
    check(got && !strcmp(got, "a1\na2\nb1\nb2"), "join_heads: two lines of each file");
    free(got);
    join_heads(out, (const char *const[]){a, b}, 2, 0, -1);
    got = (char *)read_whole_file(out, &bytes);
    check(got && !strcmp(got, "a1\na2\na3\nb1\nb2"), "join_heads: all of both files");
    free(got);
    join_heads(out, (const char *const[]){a, b}, 2, 1, 1);
    got = (char *)read_whole_file(out, &bytes);
    check(got && !strcmp(got, "a2\nb2"), "join_heads: the second line of each file (skip 1)");
    free(got);
    join_heads(out, (const char *const[]){a, b}, 2, 2, -1);
    got = (char *)read_whole_file(out, &bytes);
    check(got && !strcmp(got, "a3\n"), "join_heads: from the third line to the end (b has two)");
    free(got);
    scratch_remove(dir);
}

// The rows of each --method: sirt's are today's (teacher, SFT, self-refine, RFT), sipf's
// teacher, SFT and the two SIPF rows, all's all six; every phase-2 row is compared with SFT.
static void test_repro_rows(void) {
    const char *expected[3][6] = {{"teacher", "sft", "refined", "rft", NULL, NULL},
                                  {"teacher", "sft", "sipf", "sipf_outcome", NULL, NULL},
                                  {"teacher", "sft", "refined", "rft", "sipf", "sipf_outcome"}};
    for (int m = 0; m < 3; m++) {
        ReproSettings rs = REPRO_DEFAULTS;
        rs.method = m;
        ReproRow rows[REPRO_MAX_ROWS];
        int n = repro_rows(&rs, rows), want = m == 2 ? 6 : 4, same = n == want;
        for (int r = 0; same && r < n; r++)
            same = !strcmp(rows[r].key, expected[m][r]) && (r < 2 ? rows[r].baseline == -1 : rows[r].baseline == 1);
        check(same, "repro_rows --method %s: %d rows, keys and baselines as expected", REPRO_METHOD_NAMES[m], n);
        int sipf_rows = 0;
        for (int r = 0; r < n; r++) sipf_rows += repro_is_sipf(&rows[r]);
        check(sipf_rows == (m == 0 ? 0 : 2), "repro_rows --method %s: %d SIPF rows", REPRO_METHOD_NAMES[m], sipf_rows);
    }
    ReproSettings rs = REPRO_DEFAULTS;
    rs.method = REPRO_ALL, rs.ablations = 1;
    ReproRow rows[REPRO_MAX_ROWS];
    check(repro_rows(&rs, rows) == 12, "repro_rows --method all --ablations: 12 rows (REPRO_MAX_ROWS)");
}

// The label counts of a sipf rounds.jsonl summed over its rounds, by hand: two simulated rounds
// with k = 1 and 2 (round 0 has no labels and is skipped), and an outcome file (no "by_k").
static void test_read_sipf_rounds(void) {
    char dir[1024], path[1100];
    scratch_make(dir, sizeof dir, "test_repro");
    snprintf(path, sizeof path, "%s/rounds.jsonl", dir);
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot write %s", path);
    fputs("{\"round\": 0, \"valid_accuracy\": 0.1}\n"
          "{\"round\": 1, \"hard\": {\"tp\": 9, \"fp\": 9, \"fn\": 9, \"tn\": 9}, \"by_k\": [{\"k\": 1, \"hard\": "
          "{\"tp\": 1, \"fp\": 2, \"fn\": 3, \"tn\": 4, \"f1\": 0.3}}, {\"k\": 2, \"hard\": {\"tp\": 5, \"fp\": 6, "
          "\"fn\": 7, \"tn\": 8}}]}\n"
          "{\"round\": 2, \"hard\": {\"tp\": 0, \"fp\": 0, \"fn\": 0, \"tn\": 0}, \"by_k\": [{\"k\": 1, \"hard\": "
          "{\"tp\": 10, \"fp\": 20, \"fn\": 30, \"tn\": 40}}, {\"k\": 2, \"hard\": {\"tp\": 50, \"fp\": 60, "
          "\"fn\": 70, \"tn\": 80}}]}\n", f);
    if (fclose(f)) die("cannot write %s", path);
    ReproSipf x = {0};
    repro_read_sipf_rounds(path, &x);
    check(x.rounds == 2 && x.num_levels == 2 && x.k[0] == 1 && x.k[1] == 2, "sipf rounds: 2 rounds, k = 1, 2");
    check(x.labels[0].tp == 11 && x.labels[0].fp == 22 && x.labels[0].fn == 33 && x.labels[0].tn == 44 &&
          x.labels[1].tp == 55 && x.labels[1].fp == 66 && x.labels[1].fn == 77 && x.labels[1].tn == 88,
          "sipf rounds: each k's counts summed over the rounds");
    check(fabs(label_f1(&x.labels[0]) - 22.0 / 77.0) < 1e-12, "sipf rounds: F1 of k = 1 is 2·11/(22+22+33)");
    f = fopen(path, "wb");
    if (!f) die("cannot write %s", path);
    fputs("{\"round\": 1, \"hard\": {\"tp\": 3, \"fp\": 1, \"fn\": 2, \"tn\": 5}}\n", f);
    if (fclose(f)) die("cannot write %s", path);
    ReproSipf o = {0};
    repro_read_sipf_rounds(path, &o);
    check(o.rounds == 1 && o.num_levels == 1 && o.k[0] == 0 && o.labels[0].tp == 3 && o.labels[0].tn == 5,
          "sipf rounds: without \"by_k\", \"hard\" as the outcome labels (k = 0)");
    scratch_remove(dir);
    double values[4] = {0.5, NAN, 0.25, NAN}, none[2] = {NAN, NAN};
    check(repro_mean_defined(values, 4) == 0.375 && isnan(repro_mean_defined(none, 2)),
          "repro_mean_defined: the mean of the defined values (0.375), NaN when none");
}

int main(void) {
    test_wilson();
    test_bootstrap_exact();
    test_bootstrap_normal();
    test_json_gains();
    test_join_heads();
    test_repro_rows();
    test_read_sipf_rounds();
    return checks_finish();
}
