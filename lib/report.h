// lib/report.h — reports of accuracies: the 95% Wilson score interval, the paired bootstrap of
// a gain, and a table of scores printed, written into a JSON file and drawn as an SVG bar chart.
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

// =============================================================================================
// A table of scores: rows (models), columns (a family and a split of test items each) and seeds.
// The caller describes it once (ReportTable) and every view below reads the same description,
// so the printed tables, the JSON file and the chart cannot disagree. Nothing here knows what the
// rows are: each row has a label (the printed tables and the chart's legend), a key (the JSON
// file) and, for a row that is compared with another, that baseline row.
// =============================================================================================

typedef struct {
    const char *label;
    const char *key;
    int baseline;          // the row this row's gain is measured over (-1: none)
} ReportRow;

typedef struct {
    const char *family, *split;
} ReportColumn;

typedef struct {
    const ReportRow *rows;
    int n_rows;
    const ReportColumn *columns;
    int n_columns;
    int seeds;             // seeds first_seed, first_seed + 1, ...
    long first_seed;
    const Score *scores;   // laid out [seed][row][column]
} ReportTable;

static const Score *report_score(const ReportTable *t, int seed, int row, int column) {
    return &t->scores[((size_t)seed * t->n_rows + row) * t->n_columns + column];
}

// Every row's gain over its baseline row on every column, laid out [row][column] (zero for rows
// without a baseline), with paired bootstrap intervals over the items of every seed. The caller
// frees it.
static Gain *report_gains(const ReportTable *t) {
    Gain *gains = xcalloc((size_t)t->n_rows * t->n_columns, sizeof(Gain));
    for (int r = 0; r < t->n_rows; r++) {
        if (t->rows[r].baseline < 0) continue;
        for (int c = 0; c < t->n_columns; c++)
            gains[r * t->n_columns + c] =
                paired_bootstrap(report_score(t, 0, r, c), report_score(t, 0, t->rows[r].baseline, c),
                                 t->seeds, t->n_rows * t->n_columns);
    }
    return gains;
}

// =============================================================================================
// The printed tables: a title and the columns' names, then one line a row, in fixed widths so
// that the columns line up on a terminal: the accuracy with its 95% interval for each seed, the
// mean ± sd over seeds, and the gains over the baselines.
// =============================================================================================

static void report_print_header(const ReportTable *t, const char *title) {
    printf("\n%-32s", title);
    for (int c = 0; c < t->n_columns; c++) printf(" %7s %-10s", t->columns[c].family, t->columns[c].split);
    printf("\n");
}

// One table a seed (titled "seed S: ..." when there are several).
static void report_print_accuracy(const ReportTable *t) {
    for (int s = 0; s < t->seeds; s++) {
        char title[64];
        snprintf(title, sizeof title, t->seeds > 1 ? "seed %ld: accuracy (%%)" : "accuracy (%%)",
                 t->first_seed + s);
        report_print_header(t, title);
        for (int r = 0; r < t->n_rows; r++) {
            printf("%-32s", t->rows[r].label);
            for (int c = 0; c < t->n_columns; c++) {
                const Score *x = report_score(t, s, r, c);
                Interval ci = wilson_interval(x->correct, x->n);
                printf(" %5.1f [%4.1f,%5.1f]", 100.0 * x->correct / x->n, 100 * ci.low, 100 * ci.high);
            }
            printf("\n");
        }
    }
}

// The mean ± sample sd of the accuracy over seeds; prints nothing for one seed (no sd).
static void report_print_mean_sd(const ReportTable *t) {
    int S = t->seeds;
    if (S < 2) return;
    report_print_header(t, "mean ± sd over seeds (%)");
    for (int r = 0; r < t->n_rows; r++) {
        printf("%-32s", t->rows[r].label);
        for (int c = 0; c < t->n_columns; c++) {
            double sum = 0, sq = 0;
            for (int s = 0; s < S; s++) {
                const Score *x = report_score(t, s, r, c);
                double acc = 100.0 * x->correct / x->n;
                sum += acc, sq += acc * acc;
            }
            double mean = sum / S, sd = sqrt(fmax(0.0, (sq - S * mean * mean) / (S - 1)));
            printf(" %6.1f ± %-10.1f", mean, sd);
        }
        printf("\n");
    }
}

// The gains of report_gains, in points, for the rows that have a baseline, under `title`.
static void report_print_gains(const ReportTable *t, const Gain *gains, const char *title) {
    report_print_header(t, title);
    for (int r = 0; r < t->n_rows; r++) {
        if (t->rows[r].baseline < 0) continue;
        printf("%-32s", t->rows[r].label);
        for (int c = 0; c < t->n_columns; c++) {
            Gain gn = gains[r * t->n_columns + c];
            printf(" %+5.1f [%+4.1f,%+5.1f]", 100 * gn.gain, 100 * gn.low, 100 * gn.high);
        }
        printf("\n");
    }
    printf("(paired bootstrap 95%% intervals over the test items%s)\n", t->seeds > 1 ? " of every seed" : "");
}

// =============================================================================================
// The JSON file: one object, {"seeds": [...], the caller's own fields, "results": [...],
// "gains": [...]}, every number of the tables with more digits, for scripts and plots.
// report_json_begin writes up to the caller's fields, which the caller writes next (each
// followed by ", ", the last by ",\n"), and report_json_finish writes the rest:
//   results: one object a seed, row and column: model (the row's key), family, split, correct,
//            n, seed, accuracy and ci95, the Wilson interval;
//   gains:   one object a row with a baseline and column: model, over (the baseline's key),
//            family, split, gain and ci95 (report_gains), and per_seed, each seed's own gain.
// =============================================================================================

static void report_json_begin(const ReportTable *t, FILE *f) {
    fprintf(f, "{\"seeds\": [");
    for (int s = 0; s < t->seeds; s++) fprintf(f, "%s%ld", s ? ", " : "", t->first_seed + s);
    fprintf(f, "], ");
}

static void report_json_finish(const ReportTable *t, const Gain *gains, FILE *f) {
    fprintf(f, "\"results\": [");
    int first = 1;
    for (int s = 0; s < t->seeds; s++)
        for (int r = 0; r < t->n_rows; r++)
            for (int c = 0; c < t->n_columns; c++) {
                const Score *x = report_score(t, s, r, c);
                Interval ci = wilson_interval(x->correct, x->n);
                fprintf(f, "%s\n  {\"model\": \"%s\", \"family\": \"%s\", \"split\": \"%s\", "
                           "\"correct\": %ld, \"n\": %ld, \"seed\": %ld, \"accuracy\": %.6f, "
                           "\"ci95\": [%.6f, %.6f]}", first ? "" : ",", t->rows[r].key,
                        t->columns[c].family, t->columns[c].split, x->correct, x->n,
                        t->first_seed + s, (double)x->correct / x->n, ci.low, ci.high);
                first = 0;
            }
    fprintf(f, "\n],\n\"gains\": [");
    first = 1;
    for (int r = 0; r < t->n_rows; r++) {
        int b = t->rows[r].baseline;
        if (b < 0) continue;
        for (int c = 0; c < t->n_columns; c++) {
            Gain gn = gains[r * t->n_columns + c];
            fprintf(f, "%s\n  {\"model\": \"%s\", \"over\": \"%s\", \"family\": \"%s\", \"split\": "
                       "\"%s\", \"gain\": %.6f, \"ci95\": [%.6f, %.6f], \"per_seed\": [",
                    first ? "" : ",", t->rows[r].key, t->rows[b].key, t->columns[c].family,
                    t->columns[c].split, gn.gain, gn.low, gn.high);
            for (int s = 0; s < t->seeds; s++) {
                const Score *x = report_score(t, s, r, c), *y = report_score(t, s, b, c);
                fprintf(f, "%s%.6f", s ? ", " : "", (double)(x->correct - y->correct) / x->n);
            }
            fprintf(f, "]}");
            first = 0;
        }
    }
    fputs("\n]}\n", f);
}

// =============================================================================================
// The chart (SVG, which any browser shows, written by hand like everything else): grouped bars,
// one group a column and one bar a row, the mean accuracy over seeds; whiskers the 95% Wilson
// interval of the counts pooled over seeds. A legend of the rows' labels (their leading spaces,
// an indentation in the printed tables, dropped) closes it, three to a line.
// =============================================================================================

static void report_write_svg(const ReportTable *t, const char *path, const char *title) {
    static const char *const colors[10] = {"#999999", "#4c72b0", "#dd8452", "#55a868",
        "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974"}; // reused past 10 rows
    int n_rows = t->n_rows, seeds = t->seeds;
    int bar = 24, group = bar * n_rows + 36, W = group * t->n_columns + 100, top = 40, base = 300;
    int legend_rows = (n_rows + 2) / 3, H = base + 50 + 18 * legend_rows;
    SafeFile sf;
    safe_open(&sf, path);
    FILE *f = sf.file;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
               "fill=\"white\"/>\n<text x=\"60\" y=\"22\" font-size=\"15\">%s, %d seed%s "
               "(95%% intervals)</text>\n", W, H, title, seeds, seeds > 1 ? "s" : "");
    for (int p = 0; p <= 100; p += 25) {
        double y = base - (base - top) * p / 100.0;
        fprintf(f, "<line x1=\"55\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"50\" "
                   "y=\"%.1f\" text-anchor=\"end\">%d%%</text>\n", W - 30, y, y, y + 4, p);
    }
    for (int c = 0; c < t->n_columns; c++) {
        int gx = 70 + group * c;
        for (int r = 0; r < n_rows; r++) {
            long correct = 0, n = 0;
            for (int s = 0; s < seeds; s++) {
                correct += report_score(t, s, r, c)->correct;
                n += report_score(t, s, r, c)->n;
            }
            if (!n) continue;
            double acc = (double)correct / n;
            Interval ci = wilson_interval(correct, n);
            double x = gx + bar * r, y = base - (base - top) * acc;
            fprintf(f, "<rect x=\"%.0f\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\"/>\n",
                    x, y, bar - 3, base - y, colors[r % 10]);
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
                    x + (bar - 3) / 2.0, x + (bar - 3) / 2.0, base - (base - top) * ci.low,
                    base - (base - top) * ci.high);
        }
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text><text x=\"%d\" "
                   "y=\"%d\" text-anchor=\"middle\">%s</text>\n", gx + bar * n_rows / 2, base + 18,
                t->columns[c].family, gx + bar * n_rows / 2, base + 33, t->columns[c].split);
    }
    for (int r = 0; r < n_rows; r++) {
        int x = 70 + 250 * (r % 3), y = base + 50 + 18 * (r / 3);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" "
                   "y=\"%d\">", x, y - 10, colors[r % 10], x + 18, y);
        const char *label = t->rows[r].label;
        while (*label == ' ') label++;
        fprintf(f, "%s</text>\n", label);
    }
    fputs("</svg>\n", f);
    safe_commit(&sf);
}

// =============================================================================================
// The second chart: lines over a sequence of points (the rounds of an iterative method), one line
// a row, with a dashed horizontal line for a reference (the SFT model). values[line * n_points +
// p] is a percentage, or negative where the line has no point p (a run that stopped early). The
// y axis spans the values with a margin, in steps of 5 points, since the differences are small.
// =============================================================================================

static void report_write_lines_svg(const char *path, const char *title, const char *const *labels,
                                   int n_lines, int n_points, const double *values, double reference,
                                   const char *reference_label) {
    static const char *const colors[6] = {"#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"};
    double lo = reference, hi = reference;
    for (int i = 0; i < n_lines * n_points; i++)
        if (values[i] >= 0) lo = fmin(lo, values[i]), hi = fmax(hi, values[i]);
    lo = fmax(0.0, 5.0 * floor((lo - 2.0) / 5.0)), hi = fmin(100.0, 5.0 * ceil((hi + 2.0) / 5.0));
    if (hi <= lo) hi = lo + 5.0;
    int left = 60, right = 40, top = 40, base = 300, step = n_points > 1 ? 480 / (n_points - 1) : 0;
    int W = left + step * (n_points - 1) + right + 40, H = base + 50 + 18 * (n_lines + 1);
    SafeFile sf;
    safe_open(&sf, path);
    FILE *f = sf.file;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
               "fill=\"white\"/>\n<text x=\"%d\" y=\"22\" font-size=\"15\">%s</text>\n", W, H, left, title);
    for (double p = lo; p <= hi + 1e-9; p += 5.0) {
        double y = base - (base - top) * (p - lo) / (hi - lo);
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%d\" "
                   "y=\"%.1f\" text-anchor=\"end\">%.0f%%</text>\n", left, W - right, y, y, left - 5, y + 4, p);
    }
    for (int p = 0; p < n_points; p++)
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">round %d</text>\n", left + 20 + step * p,
                base + 18, p);
    double ry = base - (base - top) * (reference - lo) / (hi - lo);
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" "
               "stroke-dasharray=\"6,4\"/>\n", left, W - right, ry, ry);
    for (int l = 0; l < n_lines; l++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[l % 6]);
        for (int p = 0; p < n_points && values[l * n_points + p] >= 0; p++)
            fprintf(f, "%d,%.1f ", left + 20 + step * p, base - (base - top) * (values[l * n_points + p] - lo) / (hi - lo));
        fputs("\"/>\n", f);
        for (int p = 0; p < n_points && values[l * n_points + p] >= 0; p++)
            fprintf(f, "<circle cx=\"%d\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", left + 20 + step * p,
                    base - (base - top) * (values[l * n_points + p] - lo) / (hi - lo), colors[l % 6]);
    }
    for (int l = 0; l <= n_lines; l++) { // the legend: the lines, then the reference
        int y = base + 50 + 18 * l;
        if (l < n_lines) {
            const char *label = labels[l];
            while (*label == ' ') label++;
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" "
                       "y=\"%d\">%s</text>\n", left, y - 10, colors[l % 6], left + 18, y, label);
        } else
            fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#999\" stroke-dasharray=\"6,4\"/>"
                       "<text x=\"%d\" y=\"%d\">%s</text>\n", left, left + 12, y - 4, y - 4, left + 18, y,
                    reference_label);
    }
    fputs("</svg>\n", f);
    safe_commit(&sf);
}

#endif // SIRT_LIB_REPORT_H
