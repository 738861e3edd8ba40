// test_repro.c — tests of section 10 of sirt.c (the reproduction's statistics and files): the
// paired bootstrap of a gain against hand-computed cases and against the normal approximation,
// and join_heads. Built from the program's own translation unit (sirt.c without its main).
// Prints one line per check and ends with "N passed, M failed"; exits non-zero on a failure.
#define SIRT_NO_MAIN
#include "../sirt.c"
#include "check.h"

static Score make_score(const unsigned char *hit, long n) {
    Score s = {0, n, xmalloc(n)};
    for (long i = 0; i < n; i++) s.correct += (s.hit[i] = hit[i]);
    return s;
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

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot write %s", path);
    fputs(text, f);
    if (fclose(f) != 0) die("cannot write %s", path);
}

// join_heads: the first k lines of each file, a last line without '\n' kept as it is. The files
// are in a scratch directory of the test's own.
static void test_join_heads(void) {
    char dir[4096], a[4096], b[4096], out[4096];
    scratch_make(dir, sizeof dir, "test_repro");
    scratch_path(a, sizeof a, dir, "a.txt");
    scratch_path(b, sizeof b, dir, "b.txt");
    scratch_path(out, sizeof out, dir, "out.txt");
    write_text(a, "a1\na2\na3\n");
    write_text(b, "b1\nb2");
    join_heads(out, (const char *const[]){a, b}, 2, 2);
    size_t bytes;
    char *got = (char *)read_whole_file(out, &bytes);
    check(got && !strcmp(got, "a1\na2\nb1\nb2"), "join_heads: two lines of each file");
    free(got);
    join_heads(out, (const char *const[]){a, b}, 2, -1);
    got = (char *)read_whole_file(out, &bytes);
    check(got && !strcmp(got, "a1\na2\na3\nb1\nb2"), "join_heads: all of both files");
    free(got);
    scratch_remove(dir);
}

int main(void) {
    test_bootstrap_exact();
    test_bootstrap_normal();
    test_join_heads();
    return checks_finish();
}
