// lib/progress.h — what a user sees of a run while it runs: the progress line (step, loss,
// tokens/s, ETA), its timing, and the metrics log of JSON lines (kept in step with the weights on
// resume). Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of
// the model.

#ifndef SIRT_LIB_PROGRESS_H
#define SIRT_LIB_PROGRESS_H

// Timing for the progress line: tokens/s of the last step and the ETA of the run.
typedef struct {
    double run_start, step_start;
    int first_step, total_steps;
} Progress;

static Progress progress_start(int first_step, int total_steps) {
    double now = now_seconds();
    return (Progress){now, now, first_step, total_steps};
}

// Leaves time spent outside training (validation) out of the next step's tokens/s.
static void progress_pause(Progress *p, double seconds) { p->step_start += seconds; }

// Call after step `step` (1-based) is done; returns tokens/s of that step and sets *eta.
static double progress_step(Progress *p, int step, size_t tokens, double *eta) {
    double now = now_seconds(), tok_per_s = tokens / (now - p->step_start);
    *eta = (now - p->run_start) / (step - p->first_step) * (p->total_steps - step);
    p->step_start = now;
    return tok_per_s;
}

// A one-line progress report, redrawn in place on a terminal and printed at intervals otherwise.
static void show_progress(int step, int steps, float loss, double tok_per_s, double eta_s,
                          int final) {
    int tty = isatty(fileno(stdout));
    int every = steps >= 20 ? steps / 20 : 1;
    if (!tty && !final && step % every != 0 && step != 1) return;
    printf("%sstep %d/%d | loss %.4f | %.0f tok/s | ETA %.0fs%s", tty ? "\r" : "", step, steps,
           loss, tok_per_s, eta_s, tty && !final ? "   " : "\n");
    fflush(stdout);
}

// Opens the metrics log. On resume, lines for steps after the checkpoint (written before a
// crash) are dropped, so the log always matches the weights it sits beside.
static FILE *open_metrics_log(const char *path, int resume_step) {
    if (!path) return NULL;
    if (resume_step > 0) {
        size_t bytes;
        char *old = (char *)read_whole_file(path, &bytes);
        SafeFile sf;
        safe_open(&sf, path);
        for (size_t start = 0; old && start < bytes;) {
            char *nl = memchr(old + start, '\n', bytes - start);
            size_t end = nl ? (size_t)(nl - old) + 1 : bytes;
            static const char prefix[] = "{\"step\": ";
            size_t n = sizeof prefix - 1;
            long step = end - start > n && !memcmp(old + start, prefix, n)
                            ? strtol(old + start + n, NULL, 10) : -1;
            if (step >= 1 && step <= resume_step && nl) safe_write(&sf, old + start, end - start);
            start = end;
        }
        safe_commit(&sf);
        free(old);
    }
    FILE *f = fopen(path, resume_step > 0 ? "a" : "w");
    if (!f) die("cannot write log %s: %s", path, strerror(errno));
    return f;
}

// A number for a JSON line: JSON has no NaN or infinity, so those are written as null.
static const char *json_number(char buf[32], double value) {
    if (!isfinite(value)) return "null";
    snprintf(buf, 32, "%.7g", value);
    return buf;
}

// The progress line of generation: sequences done, tokens/s and the ETA.
static void generation_progress(long done, long total, long tokens, double start) {
    int tty = isatty(fileno(stdout));
    if (!tty && done != total && done % (total >= 10 ? total / 10 : 1)) return;
    double elapsed = now_seconds() - start;
    printf("%sgenerated %ld/%ld | %.0f tok/s | ETA %.0fs%s", tty ? "\r" : "", done, total,
           tokens / elapsed, elapsed / done * (total - done), tty && done < total ? "   " : "\n");
    fflush(stdout);
}

#endif // SIRT_LIB_PROGRESS_H
