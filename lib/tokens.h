// lib/tokens.h — token data: llm.c token shards and the batch loader of `./sirt train`.
// Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of the model.

#ifndef SIRT_LIB_TOKENS_H
#define SIRT_LIB_TOKENS_H

// =============================================================================================
// llm.c token shards: a 256 × int32 header ([0] magic 20240520, [1] version 1, [2] number of
// tokens) and then the tokens as uint16, in the machine's (little-endian) byte order. The file
// must be exactly 1024 + 2 × count bytes and every token below the model's V. sirt reads shards
// and does not write them: llm.c's data scripts make them, documents separated by the
// end-of-text token. A run reads windows of B·T+1 tokens: the first B·T are the inputs,
// the same shifted by one the targets. Window k of a shard starts at token k·B·T, so batch i of
// an unshuffled run is window i (then the next shard, and round again), as llm.c reads them.
// With --shuffle, each epoch visits every window of every shard once, in an order drawn from
// (seed, epoch). Either way batch i depends only on i: a resumed run picks up where it stopped.
// =============================================================================================
// Every llm.c file (token shards here, model and state files in sirt.c) opens with a header
// of 256 int32s.
#define HEADER_INTS 256
#define SHARD_MAGIC 20240520
#define SHARD_VERSION 1

typedef struct {
    char path[4096];
    uint16_t *tokens;
    size_t num_tokens;
} Shard;

typedef struct {
    Shard *shards;
    int num_shards;
    int B, T;
    int shuffle;
    uint64_t seed;
    size_t num_windows;      // windows in one epoch, across all shards
    int *window_shard;       // (num_windows) the shard of each window, in natural order
    size_t *window_offset;   // (num_windows) its first token
    size_t *order;           // (num_windows) this epoch's visiting order
    long order_epoch;        // the epoch `order` was drawn for
} DataLoader;

// Checks a shard's bytes (path, in messages): the header, a size that matches it exactly, and
// every token below vocab_size; then copies the tokens into shard. Returns 0, or -1 with
// "PATH: what is wrong" in err (and nothing allocated).
static int shard_parse(Shard *shard, const unsigned char *data, size_t bytes, const char *path,
                       int vocab_size, char *err, size_t errlen) {
    int32_t header[HEADER_INTS];
    if (bytes < sizeof header) {
        snprintf(err, errlen, "%s: truncated header (%zu of 1024 bytes)", path, bytes);
        return -1;
    }
    memcpy(header, data, sizeof header);
    if (header[0] != SHARD_MAGIC) {
        snprintf(err, errlen, "%s: bad magic %d (expected %d): not an llm.c token shard", path,
                 header[0], SHARD_MAGIC);
        return -1;
    }
    if (header[1] != SHARD_VERSION) {
        snprintf(err, errlen, "%s: unsupported shard version %d", path, header[1]);
        return -1;
    }
    if (header[2] < 0) {
        snprintf(err, errlen, "%s: negative token count %d", path, header[2]);
        return -1;
    }
    size_t count = (size_t)header[2];
    if (bytes != sizeof header + 2 * count) {
        snprintf(err, errlen, "%s: header says %zu tokens (%zu bytes) but the file is %zu bytes",
                 path, count, sizeof header + 2 * count, bytes);
        return -1;
    }
    const unsigned char *tokens = data + sizeof header;
    for (size_t i = 0; i < count; i++) {
        uint16_t token;
        memcpy(&token, tokens + 2 * i, sizeof token);
        if (token >= vocab_size) {
            snprintf(err, errlen, "%s: token %u at position %zu is outside the model's vocabulary "
                     "(V=%d)", path, (unsigned)token, i, vocab_size);
            return -1;
        }
    }
    snprintf(shard->path, sizeof shard->path, "%s", path);
    shard->num_tokens = count;
    shard->tokens = xmalloc(count * sizeof(uint16_t) + 1);
    memcpy(shard->tokens, tokens, count * sizeof(uint16_t));
    return 0;
}

// Loads a shard, rejecting any file whose size does not match its header, or whose tokens
// do not fit the vocabulary.
static void shard_load(Shard *shard, const char *path, int vocab_size) {
    size_t bytes;
    unsigned char *data = read_whole_file(path, &bytes);
    if (!data) die("cannot open token shard %s: %s", path, strerror(errno));
    char err[4400];
    int rc = shard_parse(shard, data, bytes, path, vocab_size, err, sizeof err);
    free(data);
    if (rc != 0) die("%s", err);
}

static void loader_index_windows(DataLoader *dl);

// paths: comma-separated list of shard files.
static void loader_init(DataLoader *dl, const char *paths, int B, int T, int shuffle,
                        uint64_t seed, int vocab_size) {
    memset(dl, 0, sizeof *dl);
    dl->B = B;
    dl->T = T;
    dl->shuffle = shuffle;
    dl->seed = seed;
    dl->order_epoch = -1;
    char *list = xmalloc(strlen(paths) + 1);
    strcpy(list, paths);
    for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        dl->shards = realloc(dl->shards, (dl->num_shards + 1) * sizeof(Shard));
        if (!dl->shards) die("out of memory");
        shard_load(&dl->shards[dl->num_shards++], name, vocab_size);
    }
    free(list);
    if (dl->num_shards == 0) die("--data names no shard");
    loader_index_windows(dl);
}

// Lists the windows of B·T+1 tokens of the loaded shards (dies when there is none).
static void loader_index_windows(DataLoader *dl) {
    size_t span = (size_t)dl->B * dl->T; // window k of a shard: tokens [k·span, k·span + span]
    for (int s = 0; s < dl->num_shards; s++)
        if (dl->shards[s].num_tokens > span) dl->num_windows += (dl->shards[s].num_tokens - 1) / span;
    if (dl->num_windows == 0)
        die("the data holds no batch: every shard has at most B*T = %zu tokens, and a batch "
            "needs B*T+1", span);
    dl->window_shard = xmalloc(dl->num_windows * sizeof(int));
    dl->window_offset = xmalloc(dl->num_windows * sizeof(size_t));
    dl->order = xmalloc(dl->num_windows * sizeof(size_t));
    size_t w = 0;
    for (int s = 0; s < dl->num_shards; s++) {
        size_t n = dl->shards[s].num_tokens > span ? (dl->shards[s].num_tokens - 1) / span : 0;
        for (size_t k = 0; k < n; k++, w++) {
            dl->window_shard[w] = s;
            dl->window_offset[w] = k * span;
        }
    }
}

// Fills inputs and targets (B,T) with batch number `index` (0, 1, 2, ... over the whole run).
static void loader_batch(DataLoader *dl, size_t index, int *inputs, int *targets) {
    long epoch = (long)(index / dl->num_windows);
    size_t position = index % dl->num_windows;
    if (epoch != dl->order_epoch) { // draw this epoch's order: Fisher-Yates from (seed, epoch)
        for (size_t w = 0; w < dl->num_windows; w++) dl->order[w] = w;
        if (dl->shuffle) {
            Rng rng = rng_seeded(dl->seed * 1000003u + (uint64_t)epoch);
            for (size_t w = dl->num_windows - 1; w > 0; w--) {
                uint64_t hi = rng_u32(&rng), lo = rng_u32(&rng); // two draws, in this order
                size_t j = ((hi << 32) | lo) % (w + 1);
                size_t tmp = dl->order[w];
                dl->order[w] = dl->order[j];
                dl->order[j] = tmp;
            }
        }
        dl->order_epoch = epoch;
    }
    size_t w = dl->order[position];
    const uint16_t *tokens = dl->shards[dl->window_shard[w]].tokens + dl->window_offset[w];
    for (size_t i = 0; i < (size_t)dl->B * dl->T; i++) {
        inputs[i] = tokens[i];
        targets[i] = tokens[i + 1];
    }
}

static void loader_free(DataLoader *dl) {
    for (int s = 0; s < dl->num_shards; s++) free(dl->shards[s].tokens);
    free(dl->shards);
    free(dl->window_shard);
    free(dl->window_offset);
    free(dl->order);
}

#endif // SIRT_LIB_TOKENS_H
