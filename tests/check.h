// tests/check.h — what every test program shares: one line per check ("ok: ..." or
// "FAIL: ..."), counted, and a last line "N passed, M failed" that test.sh reads.
#ifndef SIRT_TESTS_CHECK_H
#define SIRT_TESTS_CHECK_H
#include <stdarg.h>
#include <stdio.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int checks_passed, checks_failed;

static void check(int ok, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    printf("%s: ", ok ? "ok" : "FAIL");
    vprintf(fmt, args);
    printf("\n");
    va_end(args);
    if (ok) checks_passed++;
    else checks_failed++;
}

// Prints the closing line; the program's exit status.
static int checks_finish(void) {
    printf("%d passed, %d failed\n", checks_passed, checks_failed);
    return checks_failed ? 1 : 0;
}

static inline void set_threads(int n) { // inline: not every test uses it
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}
#endif
