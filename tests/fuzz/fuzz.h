// tests/fuzz/fuzz.h — what the fuzz harnesses share. Each tests/fuzz/fuzz_NAME.c includes this
// file (which includes sirt.c without its main) and defines LLVMFuzzerTestOneInput, the entry
// point of libFuzzer (`make fuzz`) and of tests/fuzz/replay.c (`make replay`, test.sh).
//
// How a parser's errors come back to the harness. Every parser of file bytes in sirt.c has a form
// that works on memory and returns 0, or -1 with "what is wrong" in an err buffer and nothing
// left allocated: model_read_header, state_parse (sirt.c), shard_parse (lib/tokens.h),
// jsonl_parse_buffer (lib/jsonl.h), examples_from_jsonl (lib/templates.h), tok_from_memory and
// tok_from_gpt2_memory (tokenizer.c). The
// program's file loaders are thin wrappers that die() with that message. So die() is never meant
// to be reached from a harness, and the build needs no special die(): if a harness does reach it,
// the process exits, which libFuzzer reports as a finding ("fuzz target exited"), as it reports
// crashes, sanitizer errors, hangs (-timeout), leaks, and allocations over -malloc_limit_mb.
//
// Each harness also checks properties of what a parser accepts (fuzz_require: a failed one
// aborts, which is a crash to libFuzzer), and records a one-line result of the last input,
// "accepted ..." or "rejected: <the parser's message>", that replay.c prints (fuzz_result below:
// one static buffer of this test program, not of sirt.c).
#ifndef SIRT_FUZZ_H
#define SIRT_FUZZ_H
#define SIRT_NO_MAIN
#include "../../sirt.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *fuzz_last_result(void);

static char fuzz_result[1024];

const char *fuzz_last_result(void) { return fuzz_result; }

__attribute__((format(printf, 1, 2)))
static inline void fuzz_accepted(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int n = snprintf(fuzz_result, sizeof fuzz_result, "accepted: ");
    vsnprintf(fuzz_result + n, sizeof fuzz_result - (size_t)n, fmt, args);
    va_end(args);
}

static inline void fuzz_rejected(const char *message) {
    snprintf(fuzz_result, sizeof fuzz_result, "rejected: %s", message);
}

// A property of accepted input that must hold; a failure is a bug, reported as a crash.
#define fuzz_require(cond)                                                                     \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

// A NUL-terminated copy of the input, for the parsers that read C strings (free it).
static inline char *fuzz_text(const uint8_t *data, size_t size) {
    char *text = xmalloc(size + 1);
    if (size) memcpy(text, data, size);
    text[size] = '\0';
    return text;
}

// The first occurrence of marker in data, or NULL.
static inline const uint8_t *fuzz_find(const uint8_t *data, size_t size, const char *marker) {
    size_t n = strlen(marker);
    for (size_t i = 0; i + n <= size; i++)
        if (memcmp(data + i, marker, n) == 0) return data + i;
    return NULL;
}

// Encodes data as text (with the special token, or without: special = 0) and decodes it again:
// every id must be in the vocabulary and the bytes must come back unchanged. (static inline: not
// every harness uses it.)
static inline void fuzz_tokenizer_round_trip(Tokenizer *tok, const uint8_t *data, size_t size,
                                             int special) {
    TokIds ids = {0};
    TokBytes back = {0};
    int rc = special ? tok_encode(tok, (const char *)data, size, &ids)
                     : tok_encode_ordinary(tok, (const char *)data, size, &ids);
    fuzz_require(rc == 0);
    for (size_t i = 0; i < ids.len; i++)
        fuzz_require(ids.data[i] >= 0 && ids.data[i] < tok_vocab_size(tok));
    fuzz_require(tok_decode(tok, ids.data, ids.len, &back) == 0);
    fuzz_require(back.len == size && (size == 0 || memcmp(back.data, data, size) == 0));
    tok_ids_free(&ids);
    tok_bytes_free(&back);
}
#endif
