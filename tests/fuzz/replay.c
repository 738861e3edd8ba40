// tests/fuzz/replay.c — runs a fuzz harness on files, without libFuzzer: built with the normal
// compiler around one tests/fuzz/fuzz_NAME.c (`make replay`), so the saved corpus and crash
// inputs are regression tests on machines without clang (test.sh runs it).
//     tests/fuzz/bin/replay_NAME FILE...
// Prints "FILE: accepted ..." or "FILE: rejected: <message>" for each file. File names carry an
// expectation: a file named ok_* must be accepted and one named bad_* rejected; any other name
// (crash-*, timeout-*, ... as libFuzzer saves them) only has to be survived. Exits 1 when an
// expectation fails; a crash or a sanitizer report ends it with a status of its own.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *fuzz_last_result(void);

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t capacity = 4096, used = 0;
    unsigned char *data = malloc(capacity);
    for (size_t got; data && (got = fread(data + used, 1, capacity - used, f)) > 0;) {
        used += got;
        if (used == capacity) {
            unsigned char *bigger = realloc(data, capacity *= 2);
            if (!bigger) free(data);
            data = bigger;
        }
    }
    fclose(f);
    *size = used;
    return data;
}

int main(int argc, char **argv) {
    int failures = 0;
    for (int i = 1; i < argc; i++) {
        size_t size = 0;
        unsigned char *data = read_file(argv[i], &size);
        if (!data) {
            fprintf(stderr, "%s: cannot read\n", argv[i]);
            return 2;
        }
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        const char *result = fuzz_last_result();
        const char *base = strrchr(argv[i], '/') ? strrchr(argv[i], '/') + 1 : argv[i];
        int accepted = strncmp(result, "accepted", 8) == 0;
        int wrong = (strncmp(base, "ok_", 3) == 0 && !accepted) ||
                    (strncmp(base, "bad_", 4) == 0 && accepted);
        printf("%s: %s%s\n", argv[i], result, wrong ? "  <- UNEXPECTED" : "");
        failures += wrong;
    }
    return failures ? 1 : 0;
}
