// lib/util.h — utilities: errors (die), allocation, timing, threads, the random generator,
// crash-safe files (SafeFile), whole-file reads, the hashes and UTF-8.
// Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of the model.

#ifndef SIRT_LIB_UTIL_H
#define SIRT_LIB_UTIL_H

// =============================================================================================
// Errors end the program with one line that says what is wrong; nothing here is clever.
// =============================================================================================

_Noreturn static void die(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "sirt: error: ");
    vfprintf(stderr, fmt, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(1);
}

static void *xmalloc(size_t bytes) {
    void *ptr = malloc(bytes ? bytes : 1);
    if (!ptr) die("out of memory allocating %zu bytes", bytes);
    return ptr;
}

static void *xcalloc(size_t count, size_t size) {
    void *ptr = calloc(count ? count : 1, size ? size : 1);
    if (!ptr) die("out of memory allocating %zu x %zu bytes", count, size);
    return ptr;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// --threads N: the parallel loops from now on run N threads (0: as they are).
static void use_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

// The random generator: xorshift64*, as llm.c uses. One explicit state per user, no globals.
typedef struct { uint64_t state; } Rng;

static Rng rng_seeded(uint64_t seed) {
    // splitmix64 scrambles the seed so that nearby seeds give unrelated streams (and 0 works)
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    Rng rng = {z ? z : 1};
    return rng;
}

static uint32_t rng_u32(Rng *rng) {
    rng->state ^= rng->state >> 12;
    rng->state ^= rng->state << 25;
    rng->state ^= rng->state >> 27;
    return (uint32_t)((rng->state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float rng_uniform(Rng *rng) { return (rng_u32(rng) >> 8) / 16777216.0f; } // [0, 1)

static float rng_normal(Rng *rng) { // Box-Muller
    float u1 = rng_uniform(rng), u2 = rng_uniform(rng);
    return sqrtf(-2.0f * logf(1.0f - u1)) * cosf(6.2831853071795864f * u2);
}

// The logistic function σ, log σ and log(1 − eˣ) (x < 0), each computed where it does not
// overflow or lose its digits.
static double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }
static double log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }
static double log1mexp(double x) { return x < -0.693147180559945 ? log1p(-exp(x)) : log(-expm1(x)); }

// Fisher-Yates: a uniformly random order of a[0..n), drawn from rng (the same draws, in the same
// order, everywhere: the task's tables, the order in which trainers visit their examples).
static void rng_shuffle(Rng *rng, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_u32(rng) % (uint32_t)(i + 1)), tmp = a[i];
        a[i] = a[j];
        a[j] = tmp;
    }
}

// Crash-safe output. Every file the program writes goes to PATH.tmp first; only a complete,
// flushed and synced file is renamed over PATH, so a crash leaves the previous file intact.
// A failure to create or write PATH.tmp (a read-only directory, a full disk) is remembered in
// `error` rather than fatal at once, so that a checkpoint, which is two files, can remove both
// temporary files before the program stops (safe_commit_all).
typedef struct {
    FILE *file; // NULL when PATH.tmp could not be created
    int error;  // errno of the first failure, 0 while all is well
    char final_path[4096];
    char temp_path[4096 + 8];
} SafeFile;

// Creates PATH.tmp; a failure is kept in sf->error and reported by safe_commit_all.
static void safe_open_deferred(SafeFile *sf, const char *path) {
    if (strlen(path) >= sizeof sf->final_path) die("path too long: %s", path);
    strcpy(sf->final_path, path);
    snprintf(sf->temp_path, sizeof sf->temp_path, "%s.tmp", path);
    sf->file = fopen(sf->temp_path, "wb");
    sf->error = sf->file ? 0 : errno;
}

// Creates PATH.tmp or stops the program: for writers that use sf->file directly (fprintf).
static void safe_open(SafeFile *sf, const char *path) {
    safe_open_deferred(sf, path);
    if (sf->error) die("cannot write %s: %s", sf->temp_path, strerror(sf->error));
}

// Writes nothing more once a write has failed: the file is doomed, and the disk may be full.
static void safe_write(SafeFile *sf, const void *data, size_t bytes) {
    if (sf->error) return;
    errno = 0;
    if (fwrite(data, 1, bytes, sf->file) != bytes) sf->error = errno ? errno : EIO;
}

// Flushes, syncs and closes PATH.tmp; returns 0, or the errno of the first failure (then
// PATH.tmp is deleted). fprintf into sf->file is allowed too: ferror() remembers its failures.
static int safe_finish(SafeFile *sf) {
    if (!sf->file) return sf->error; // never created: nothing to close or delete
    errno = 0;
    int err = sf->error;
    if (!err && (ferror(sf->file) || fflush(sf->file) != 0 || fsync(fileno(sf->file)) != 0))
        err = errno ? errno : EIO;
    if (fclose(sf->file) != 0 && !err) err = errno ? errno : EIO;
    sf->file = NULL;
    if (err) unlink(sf->temp_path);
    return err;
}

// Commits files that belong together (a checkpoint's weights and state): all of them are
// finished first and only then renamed, in the order given. If any write failed, every
// PATH.tmp is removed, nothing is renamed, and the program stops naming the file and the reason.
static void safe_commit_all(SafeFile *files, int count) {
    for (int i = 0; i < count; i++) {
        int err = safe_finish(&files[i]);
        if (!err) continue;
        char kept[9000] = "";
        for (int j = 0; j < count; j++) {
            if (j != i && (j < i || safe_finish(&files[j]) == 0)) unlink(files[j].temp_path);
            snprintf(kept + strlen(kept), sizeof kept - strlen(kept), "%s%s", j ? " and " : "",
                     files[j].final_path);
        }
        die("cannot write %s: %s (%s %s left as %s)", files[i].temp_path, strerror(err), kept,
            count > 1 ? "are" : "is", count > 1 ? "they were" : "it was");
    }
    for (int i = 0; i < count; i++)
        if (rename(files[i].temp_path, files[i].final_path) != 0)
            die("cannot rename %s to %s: %s", files[i].temp_path, files[i].final_path,
                strerror(errno));
}

static void safe_commit(SafeFile *sf) { safe_commit_all(sf, 1); }

// Fails early — before hours of work — when PATH cannot be written (a missing directory, no
// permission): creates PATH.tmp, the name every write goes through, and removes it again.
static void check_writable(const char *path) {
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) die("path too long: %s", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) die("cannot write %s: %s", tmp, strerror(errno));
    fclose(f);
    remove(tmp);
}

// mkdir -p: creates a directory and its parents.
static void mkdir_p(const char *path) {
    char buf[1024];
    if (strlen(path) >= sizeof buf) die("path too long: %s", path);
    strcpy(buf, path);
    for (char *p = buf + 1;; p++)
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) die("cannot create %s: %s", buf, strerror(errno));
            if (!(*p = c)) break;
        }
}

// PATH with ".TAG" before its extension EXT ("sft.bin", "best", ".bin" -> "sft.best.bin"), or
// after it when PATH does not end in EXT.
static void path_tagged(char *out, size_t size, const char *path, const char *tag, const char *ext) {
    size_t n = strlen(path), k = strlen(ext);
    int has = n > k && !strcmp(path + n - k, ext);
    if ((size_t)snprintf(out, size, "%.*s.%s%s", (int)(has ? n - k : n), path, tag, has ? ext : "") >= size)
        die("path too long: %s", path);
}

// Reads a whole file; returns NULL (and sets *bytes to 0) when it cannot be opened. The data is
// followed by one zero byte (not counted in *bytes), so text can be scanned safely.
static unsigned char *read_whole_file(const char *path, size_t *bytes) {
    *bytes = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t capacity = 1 << 16, used = 0;
    unsigned char *data = xmalloc(capacity);
    for (;;) {
        if (used + 1 >= capacity) { // room for the data and the terminating zero
            capacity *= 2;
            data = realloc(data, capacity);
            if (!data) die("out of memory reading %s", path);
        }
        size_t got = fread(data + used, 1, capacity - used - 1, f);
        used += got;
        if (got == 0) break;
    }
    data[used] = 0;
    int failed = ferror(f);
    fclose(f);
    if (failed) die("cannot read %s: %s", path, strerror(errno));
    *bytes = used;
    return data;
}

// Hashes: 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3), in two forms
// whose values are stored or decide data, so neither may ever change (and one cannot replace
// the other without changing every state file or every data split).
#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

// Over 8-byte words (then the tail byte by byte): pairs a training-state file with its checkpoint,
// and keys the tokenizer's tables of byte strings. Bit k of the hash depends only on bits 0..k of
// each word: a table indexed by the low bits mixes it first.
static uint64_t hash_bytes(const void *data, size_t bytes) {
    const unsigned char *p = data;
    uint64_t h = FNV_BASIS;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        h = (h ^ word) * FNV_PRIME;
    }
    for (; i < bytes; i++) h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

// Byte by byte over a C string (the textbook FNV-1a): decides which split owns a generated
// question (lib/task.h).
static uint64_t hash_text(const char *text) {
    uint64_t h = FNV_BASIS;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) h = (h ^ *p) * FNV_PRIME;
    return h;
}

// UTF-8, strictly (Unicode Table 3-7). Decodes the character at s[0..n), n >= 1: returns its
// length (1..4) and stores its code point, or returns 0 when the bytes there are not well-formed
// UTF-8 (a stray continuation byte, an overlong form, a surrogate, a value above U+10FFFF or a
// cut-off sequence).
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char b = s[0], lo = 0x80, hi = 0xBF; // the allowed range of the second byte
    size_t need;
    uint32_t v;
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    if (b >= 0xC2 && b <= 0xDF) { need = 2; v = b & 0x1F; }
    else if (b >= 0xE0 && b <= 0xEF) { need = 3; v = b & 0x0F; lo = b == 0xE0 ? 0xA0 : 0x80; hi = b == 0xED ? 0x9F : 0xBF; }
    else if (b >= 0xF0 && b <= 0xF4) { need = 4; v = b & 0x07; lo = b == 0xF0 ? 0x90 : 0x80; hi = b == 0xF4 ? 0x8F : 0xBF; }
    else return 0;
    if (n < need || s[1] < lo || s[1] > hi) return 0;
    v = v << 6 | (s[1] & 0x3F);
    for (size_t i = 2; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    *cp = v;
    return need;
}

// Writes code point cp (at most U+10FFFF) as 1-4 bytes of UTF-8; returns how many.
static size_t utf8_encode(uint32_t cp, unsigned char out[4]) {
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

#endif // SIRT_LIB_UTIL_H
