// lib/report.h — reports of accuracies: the 95% Wilson score interval of an accuracy and the
// paired bootstrap of a gain.
// Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of the model.

#ifndef SIRT_LIB_REPORT_H
#define SIRT_LIB_REPORT_H

// =============================================================================================
// An accuracy with its uncertainty. The Wilson score interval rather than p ± 1.96·sqrt(p(1-p)/n):
// it stays inside [0, 1] and is not empty at 0% or 100%, where small test sets often are.
// =============================================================================================

typedef struct {
    double low, high;
} Interval;

// The 95% Wilson score interval of correct/n ([0, 0] when n is 0).
static Interval wilson_interval(long correct, long n) {
    if (n == 0) return (Interval){0, 0};
    double z = 1.959964, p = (double)correct / n, z2n = z * z / n;
    double center = (p + z2n / 2) / (1 + z2n);
    double half = z * sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n);
    return (Interval){center - half > 0 ? center - half : 0, center + half < 1 ? center + half : 1};
}

// =============================================================================================
// The gain of one model over another on the same items. Two accuracies' intervals overlap long
// before their difference is uncertain, because both models find the same items easy: the paired
// bootstrap resamples the items once for both, so the interval is the difference's own.
// =============================================================================================

// One evaluation: how many items a model answered correctly, and which (for the paired bootstrap).
typedef struct {
    long correct, n;
    unsigned char *hit;  // hit[i]: item i answered correctly
} Score;

// Paired bootstrap of the gain of one row over another on one column: the test items of every
// seed are resampled with replacement — the same draw for both rows, which is the pairing — and
// the statistic is the mean over seeds of the accuracy difference. 95% percentile interval of
// 2,000 resamples, from a fixed seed (the same data give the same interval).
typedef struct { double gain, low, high; } Gain;

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// row[s * stride] and base[s * stride] are the two models' scores on seed s's items.
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

#endif // SIRT_LIB_REPORT_H
