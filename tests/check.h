// tests/check.h — what every test program shares: one line per check ("ok: ..." or
// "FAIL: ..."), counted, and a last line "N passed, M failed" that test.sh reads.
//
// Scratch files: a test program writes only into a directory it makes itself (scratch_make) and
// removes it, with what it holds, at the end (scratch_remove). Needs _POSIX_C_SOURCE 200809L
// (mkdtemp, opendir) defined before the first system header: sirt.c defines it.
#ifndef SIRT_TESTS_CHECK_H
#define SIRT_TESTS_CHECK_H
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
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

// Makes a fresh, private directory for the program's scratch files, $TMPDIR/NAME.XXXXXX (/tmp
// when TMPDIR is unset or empty), and writes its path into dir. A directory that cannot be made
// ends the program with a FAIL line: it writes nothing anywhere else.
static inline void scratch_make(char *dir, size_t size, const char *name) {
    const char *base = getenv("TMPDIR");
    if (base == NULL || *base == '\0') base = "/tmp";
    int n = snprintf(dir, size, "%s/%s.XXXXXX", base, name);
    if (n < 0 || (size_t)n >= size || mkdtemp(dir) == NULL) {
        printf("FAIL: cannot make a scratch directory %s/%s.XXXXXX: %s\n", base, name,
               n < 0 || (size_t)n >= size ? "path too long" : strerror(errno));
        exit(1);
    }
}

// Writes DIR/NAME into path; a path that does not fit ends the program with a FAIL line.
static inline void scratch_path(char *path, size_t size, const char *dir, const char *name) {
    int n = snprintf(path, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size) {
        printf("FAIL: scratch path %s/%s is too long\n", dir, name);
        exit(1);
    }
}

// Removes the scratch directory and the files in it (tests make no subdirectories); a FAIL line
// for what cannot be removed.
static inline void scratch_remove(const char *dir) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[4096];
        int n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (n < 0 || (size_t)n >= sizeof path || unlink(path) != 0) {
            printf("FAIL: cannot remove the scratch file %s/%s\n", dir, e->d_name);
            checks_failed++;
        }
    }
    if (d) closedir(d);
    if (rmdir(dir) != 0) {
        printf("FAIL: cannot remove the scratch directory %s: %s\n", dir, strerror(errno));
        checks_failed++;
    }
}

static inline void set_threads(int n) { // inline: not every test uses it
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}
#endif
