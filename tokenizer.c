/*
 * tokenizer.c - byte-level BPE for sirt: train, save/load, encode/decode, GPT-2 import.
 *
 * What BPE is
 * -----------
 * A language model reads integers, not text. Byte-level Byte Pair Encoding (BPE) turns any byte
 * string into a list of token ids in two steps:
 *
 *   1. Pre-tokenize. Split the text into pieces with GPT-2's pattern
 *          's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      (a contraction, or a run of letters, of digits, or of other symbols with at most one space
 *      in front, or a run of white space). Tokens never cross piece borders, so " dog" and
 *      " dog." share the token " dog" instead of growing one token per punctuation variant.
 *   2. Merge. Each piece starts as one token per byte (the 256 byte tokens are always in the
 *      vocabulary, so any byte string at all, invalid UTF-8 included, can be encoded). Then,
 *      repeatedly, the adjacent pair of tokens with the lowest merge rank becomes one token (every
 *      occurrence of that pair, left to right), until no adjacent pair is in the merge list.
 *
 * Training learns the merge list: count every adjacent pair of tokens in the training pieces,
 * turn the most frequent pair into a new token everywhere, record it as the next merge, and repeat
 * until the vocabulary has the requested size. Decoding just concatenates the tokens' bytes.
 *
 * Our tokenizers
 * --------------
 * Token ids: 0..255 are the single bytes (id = byte value), 256 + k is the token made by merge k,
 * and the last id, 256 + n_merges, is the end-of-text token "<|endoftext|>" (the same place
 * GPT-2 puts it: 50256 = 256 + 50000 merges). So vocab_size = n_merges + 257.
 *   - Training ties (two pairs equally frequent) go to the pair with the lowest (left id, right id),
 *     compared left id first. Training is therefore deterministic.
 *   - A merge that would make a token longer than 255 bytes is never learned (llm.c's decode table
 *     stores token lengths in one byte).
 *   - Each training text is its own document: pieces never span two files, and the text
 *     "<|endoftext|>" inside a file separates documents (it is not counted as text).
 *
 * The special token
 * -----------------
 * tok_encode() encodes every occurrence of the bytes "<|endoftext|>" in its input as the single
 * end-of-text id, like tiktoken's encode(text, allowed_special="all"). (OpenAI's original GPT-2
 * encoder.py had no special tokens and would spell it out as "<", "|", "end", ...; that behaviour
 * is tok_encode_ordinary().) Decoding the end-of-text id gives the bytes "<|endoftext|>" back, so
 * decode(encode(x)) == x for every x.
 *
 * Invalid UTF-8
 * -------------
 * The pre-tokenizer decodes UTF-8 strictly (Unicode Table 3-7). Each byte that does not start a
 * well-formed sequence counts as one character that is not a letter, a number or a space (so it
 * joins a run of punctuation). This is deterministic and loses nothing: merging works on bytes.
 *
 * File format of a sirt tokenizer (all integers little-endian uint32):
 *     offset  field
 *     0       magic     0x45504253 (the bytes "SBPE" in a hex dump)
 *     4       version   1
 *     8       vocab_size = n_merges + 257
 *     12      eot_id     = vocab_size - 1
 *     16      n_merges
 *     20      the merges in rank order, 8 bytes each: left id, right id. Merge k makes id 256 + k,
 *             and may only use ids below 256 + k.
 * The file is exactly 20 + 8 * n_merges bytes. tok_save_llmc() also writes llm.c's decode table
 * (`./sirt tokenizer --llmc-out`), which llm.c's programs read to print the tokens they sample:
 *     header  256 little-endian uint32 (1024 bytes): [0] magic 20240328, [1] version 2,
 *             [2] vocab_size, [3] end-of-text id (llm.c's version 1 has no [3]: it is then
 *             50256); the rest zero
 *     then    for every id 0 .. vocab_size-1: one uint8 length (1..255), then that many bytes
 *             (the end-of-text token's bytes are "<|endoftext|>").
 * It holds no merges, so it can only decode: tok_load refuses it.
 *
 * GPT-2's own tokenizer loads from encoder.json + vocab.bpe (tok_load on their directory) and
 * encodes exactly as OpenAI's encoder.py does; there ids follow encoder.json, not the rule above.
 *
 * llama2.c's tokenizer.bin (section 9b) is a different kind: scored pieces (sentencepiece's),
 * not ranked merges. tok_load reads it; it encodes and decodes exactly as llama2.c's run.c does
 * (see section 9b), with ids 0, 1, 2 = <unk>, <s> (BOS), </s> (EOS, its end-of-text) and
 * 3..258 the byte fallbacks <0x00>..<0xFF>. tok_bos() is 1 for it and -1 for every other kind.
 *
 * Conventions: functions return 0 / a pointer on success and -1 / NULL on failure; the ones that
 * take (err, errlen) then leave a one-line message there ("FILE: what is wrong"); err may be NULL
 * when errlen is 0. This is the convention of every reader of sirt (state_parse, shard_parse,
 * jsonl_parse_buffer, ...): a parser returns its error and never ends the program, so the fuzzers
 * (tests/fuzz) can drive it; only the commands die() with the message ("sirt: error: ..."), as
 * section 10 does. Running out of memory is an error here too, except inside lib/jsonl.h's
 * reader of encoder.json, which dies then, as the rest of sirt does. Parsers check every size
 * before they allocate and never trust a count from a file. Encoding updates the tokenizer's
 * piece cache and work space, so one Tokenizer must not be used by two threads at the same time.
 * The helpers the whole program shares come from lib/util.h (die, xmalloc, read_whole_file,
 * check_writable, hash_bytes, utf8_decode, flag parsing) and lib/jsonl.h (the JSON reader).
 *
 * API (everything public starts with tok_, apart from the two command-line entry points):
 *   Tokenizer *tok_load(path, err, errlen)       a sirt file, or a directory with GPT-2's files
 *   Tokenizer *tok_train(texts, lens, n_texts, vocab_size, split_digits, err, errlen)
 *   int tok_save(tok, path, err, errlen)         our format; tok_serialize() gives the bytes
 *   int tok_save_llmc(tok, path, err, errlen)    llm.c's decode table
 *   int tok_encode(tok, text, len, TokIds *out)  appends ids; tok_encode_ordinary(): no specials;
 *                                                tok_encode_continuation(): no dummy prefix
 *   int tok_decode(tok, ids, n, TokBytes *out)   appends bytes
 *   tok_token_bytes(tok, id, &len), tok_vocab_size(tok), tok_eot(tok), tok_bos(tok), tok_free(tok)
 *   tok_decode_next(tok, prev, id, &len)         token id's bytes after token prev (llama2.c's rule)
 *   tok_ids_push/tok_ids_free, tok_bytes_append/tok_bytes_free: the growable outputs
 *   tok_from_memory(), tok_from_gpt2_memory(), tok_load_gpt2(): the loaders, file by file
 *   int cmd_tokenizer(argc, argv), int cmd_tokenize(argc, argv): see section 10
 *
 * Sections: 1 utilities - 2 hash indexes - 3 UTF-8 and Unicode classes - 4 the pre-tokenizer -
 * 5 building a tokenizer - 6 encoding and decoding - 7 training - 8 files - 9 GPT-2's files -
 * 10 command line.
 */

/* What lib/util.h and lib/jsonl.h need, so that this file also compiles on its own
   (tests/test_tokenizer.c); inside sirt.c all of it is already there (include guards). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "lib/util.h"   /* die, xmalloc, read_whole_file, check_writable, SafeFile, hash_bytes, utf8_decode */
#include "lib/flags.h"  /* flag tables: the two commands at the end of this file */
#include "lib/jsonl.h"  /* the JSON reader, for GPT-2's encoder.json */

#define TOK_EOT_TEXT "<|endoftext|>"
#define TOK_EOT_TEXT_LEN 13
#define TOK_FILE_MAGIC 0x45504253u      /* "SBPE" */
#define TOK_FILE_VERSION 1u
#define TOK_FILE_HEADER_BYTES 20
#define TOK_LLMC_MAGIC 20240328u
#define TOK_LLMC_VERSION 2u
#define TOK_LLMC_HEADER_BYTES 1024
#define TOK_MAX_VOCAB 65536             /* ids fit in uint16, as llm.c's token shards need */
#define TOK_MAX_TOKEN_BYTES 255         /* llm.c's decode table has one length byte per token */
#define TOK_MAX_FILE_BYTES ((size_t)1 << 28) /* tokenizer files are far smaller (GPT-2: 1.5 MB) */
#define TOK_CACHE_MAX_PIECE 64          /* longer pieces are rare; they are not cached */
#define TOK_LLAMA_MAX_TOKEN_LENGTH 4096 /* llama2.c's tokenizer.bin: a longer max_token_length is not one */
#define TOK_CACHE_MAX_ENTRIES 65536     /* the cache is emptied when it holds this many pieces */

/* Writes a message into (err, errlen) when there is room for one. */
#define TOK_ERRORF(err, errlen, ...) \
    do { if ((err) != NULL && (errlen) > 0) snprintf((err), (errlen), __VA_ARGS__); } while (0)

/* ============================================================================================
 * 1. Utilities: growable arrays, a small heap, little-endian integers
 * ============================================================================================ */

/* A growable list of token ids: the output of tok_encode. */
typedef struct {
    int *data;
    size_t len, cap;
} TokIds;

/* A growable byte string: the output of tok_decode. data is always NUL-terminated (the NUL is
   not counted in len), so text without NULs can be printed with %s. */
typedef struct {
    char *data;
    size_t len, cap;
} TokBytes;

/* Makes room for `need` elements of `elem_size` bytes at ptr (capacity *cap). Returns the
   possibly moved array, or NULL if the size overflows or memory runs out (ptr is then untouched). */
static void *tok_grow(void *ptr, size_t *cap, size_t need, size_t elem_size) {
    if (need == 0) need = 1;
    if (ptr != NULL && need <= *cap) return ptr;
    size_t new_cap = *cap > 16 ? *cap : 16;
    while (new_cap < need) {
        if (new_cap > SIZE_MAX / 2) return NULL;
        new_cap *= 2;
    }
    if (new_cap > SIZE_MAX / elem_size) return NULL;
    void *p = realloc(ptr, new_cap * elem_size);
    if (p == NULL) return NULL;
    *cap = new_cap;
    return p;
}

int tok_ids_push(TokIds *ids, int id) {
    int *data = tok_grow(ids->data, &ids->cap, ids->len + 1, sizeof *data);
    if (data == NULL) return -1;
    ids->data = data;
    ids->data[ids->len++] = id;
    return 0;
}

void tok_ids_free(TokIds *ids) {
    free(ids->data);
    ids->data = NULL;
    ids->len = ids->cap = 0;
}

int tok_bytes_append(TokBytes *b, const void *src, size_t n) {
    if (n > SIZE_MAX - b->len - 1) return -1;
    char *data = tok_grow(b->data, &b->cap, b->len + n + 1, 1);
    if (data == NULL) return -1;
    b->data = data;
    if (n > 0) memcpy(b->data + b->len, src, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int tok_bytes_push(TokBytes *b, unsigned char c) {
    return tok_bytes_append(b, &c, 1);
}

void tok_bytes_free(TokBytes *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* A binary min-heap of (hi, lo) pairs, smallest hi first, then smallest lo. Encoding keys it by
   (merge rank, position); training by (-count, pair), so the same heap serves both. */
typedef struct {
    uint64_t hi, lo;
} TokHeapItem;

static int tok_heap_less(TokHeapItem a, TokHeapItem b) {
    return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo);
}

/* The caller makes sure there is room for one more item. */
static void tok_heap_push(TokHeapItem *heap, size_t *len, TokHeapItem item) {
    size_t i = (*len)++;
    while (i > 0 && tok_heap_less(item, heap[(i - 1) / 2])) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = item;
}

static TokHeapItem tok_heap_pop(TokHeapItem *heap, size_t *len) {
    TokHeapItem top = heap[0], last = heap[--(*len)];
    size_t i = 0, n = *len;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && tok_heap_less(heap[child + 1], heap[child])) child++;
        if (!tok_heap_less(heap[child], last)) break;
        heap[i] = heap[child];
        i = child;
    }
    if (n > 0) heap[i] = last;
    return top;
}

static void tok_put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t tok_get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ============================================================================================
 * 2. Hash indexes. Both give every distinct key a dense number 0, 1, 2, ... in insertion order,
 *    so callers keep what they know about a key in plain arrays indexed by that number.
 *    Open addressing with linear probing, at most half full.
 * ============================================================================================ */

/* A pair of token ids as one 64-bit key: left id in the high half, right id in the low half. */
static uint64_t tok_pair_key(int left, int right) {
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

static size_t tok_hash_u64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k;
}

typedef struct {
    uint64_t key;
    int32_t number;     /* -1: empty slot */
} TokPairSlot;

/* Pairs of ids -> dense numbers (the merge index maps a pair to its rank this way). */
typedef struct {
    TokPairSlot *slots;
    size_t nslots;      /* a power of two, or 0 */
    uint64_t *keys;     /* keys[number] */
    size_t count, keys_cap;
} TokPairIndex;

static int tok_pairs_find(const TokPairIndex *ix, uint64_t key) {
    if (ix->nslots == 0) return -1;
    size_t mask = ix->nslots - 1;
    for (size_t h = tok_hash_u64(key) & mask;; h = (h + 1) & mask) {
        if (ix->slots[h].number < 0) return -1;
        if (ix->slots[h].key == key) return ix->slots[h].number;
    }
}

static void tok_pairs_place(TokPairIndex *ix, uint64_t key, int32_t number) {
    size_t mask = ix->nslots - 1, h = tok_hash_u64(key) & mask;
    while (ix->slots[h].number >= 0) h = (h + 1) & mask;
    ix->slots[h].key = key;
    ix->slots[h].number = number;
}

static int tok_pairs_resize(TokPairIndex *ix, size_t nslots) {
    if (nslots > SIZE_MAX / sizeof(TokPairSlot)) return -1;
    TokPairSlot *slots = malloc(nslots * sizeof *slots);
    if (slots == NULL) return -1;
    for (size_t i = 0; i < nslots; i++) slots[i].number = -1;
    free(ix->slots);
    ix->slots = slots;
    ix->nslots = nslots;
    for (size_t i = 0; i < ix->count; i++) tok_pairs_place(ix, ix->keys[i], (int32_t)i);
    return 0;
}

/* Finds or adds key. Returns 1 if it was added, 0 if it was there already, -1 if out of memory;
   *number receives its number. */
static int tok_pairs_insert(TokPairIndex *ix, uint64_t key, int *number) {
    int found = tok_pairs_find(ix, key);
    if (found >= 0) {
        *number = found;
        return 0;
    }
    if (ix->count >= INT32_MAX) return -1;
    if ((ix->count + 1) * 2 > ix->nslots &&
        tok_pairs_resize(ix, ix->nslots ? ix->nslots * 2 : 64) != 0) return -1;
    uint64_t *keys = tok_grow(ix->keys, &ix->keys_cap, ix->count + 1, sizeof *keys);
    if (keys == NULL) return -1;
    ix->keys = keys;
    ix->keys[ix->count] = key;
    tok_pairs_place(ix, key, (int32_t)ix->count);
    *number = (int)ix->count++;
    return 1;
}

static void tok_pairs_free(TokPairIndex *ix) {
    free(ix->slots);
    free(ix->keys);
    memset(ix, 0, sizeof *ix);
}

/* Byte strings -> dense numbers. The keys are stored back to back in one arena. */
typedef struct {
    size_t start;       /* offset in the arena */
    uint32_t len;
    uint64_t hash;
} TokBytesKey;

typedef struct {
    int32_t *slots;     /* key numbers, -1: empty */
    size_t nslots;
    TokBytesKey *keys;  /* keys[number] */
    size_t count, keys_cap;
    unsigned char *arena;
    size_t arena_len, arena_cap;
} TokBytesIndex;

/* lib/util.h's hash_bytes, mixed so that the low bits, the slot, depend on every byte. */
static uint64_t tok_hash_string(const void *p, size_t n) {
    return tok_hash_u64(hash_bytes(p, n));
}

static int tok_strings_find_hashed(const TokBytesIndex *ix, const unsigned char *p, size_t n,
                                   uint64_t hash) {
    if (ix->nslots == 0) return -1;
    size_t mask = ix->nslots - 1;
    for (size_t h = (size_t)hash & mask;; h = (h + 1) & mask) {
        int32_t k = ix->slots[h];
        if (k < 0) return -1;
        const TokBytesKey *key = &ix->keys[k];
        if (key->hash == hash && key->len == n && memcmp(ix->arena + key->start, p, n) == 0)
            return k;
    }
}

static int tok_strings_find(const TokBytesIndex *ix, const void *p, size_t n) {
    return tok_strings_find_hashed(ix, p, n, tok_hash_string(p, n));
}

static void tok_strings_place(TokBytesIndex *ix, int32_t number) {
    size_t mask = ix->nslots - 1, h = (size_t)ix->keys[number].hash & mask;
    while (ix->slots[h] >= 0) h = (h + 1) & mask;
    ix->slots[h] = number;
}

static int tok_strings_resize(TokBytesIndex *ix, size_t nslots) {
    if (nslots > SIZE_MAX / sizeof(int32_t)) return -1;
    int32_t *slots = malloc(nslots * sizeof *slots);
    if (slots == NULL) return -1;
    for (size_t i = 0; i < nslots; i++) slots[i] = -1;
    free(ix->slots);
    ix->slots = slots;
    ix->nslots = nslots;
    for (size_t i = 0; i < ix->count; i++) tok_strings_place(ix, (int32_t)i);
    return 0;
}

/* Finds or adds the string p[0..n). Returns 1 if added, 0 if already there, -1 out of memory. */
static int tok_strings_insert(TokBytesIndex *ix, const void *p, size_t n, int *number) {
    uint64_t hash = tok_hash_string(p, n);
    int found = tok_strings_find_hashed(ix, p, n, hash);
    if (found >= 0) {
        *number = found;
        return 0;
    }
    if (ix->count >= INT32_MAX || n > UINT32_MAX || n > SIZE_MAX - ix->arena_len) return -1;
    if ((ix->count + 1) * 2 > ix->nslots &&
        tok_strings_resize(ix, ix->nslots ? ix->nslots * 2 : 64) != 0) return -1;
    TokBytesKey *keys = tok_grow(ix->keys, &ix->keys_cap, ix->count + 1, sizeof *keys);
    if (keys == NULL) return -1;
    ix->keys = keys;
    unsigned char *arena = tok_grow(ix->arena, &ix->arena_cap, ix->arena_len + n, 1);
    if (arena == NULL) return -1;
    ix->arena = arena;
    if (n > 0) memcpy(ix->arena + ix->arena_len, p, n);
    ix->keys[ix->count] = (TokBytesKey){ix->arena_len, (uint32_t)n, hash};
    ix->arena_len += n;
    tok_strings_place(ix, (int32_t)ix->count);
    *number = (int)ix->count++;
    return 1;
}

/* Forgets all keys but keeps the memory (used to empty the encoding cache). */
static void tok_strings_clear(TokBytesIndex *ix) {
    for (size_t i = 0; i < ix->nslots; i++) ix->slots[i] = -1;
    ix->count = 0;
    ix->arena_len = 0;
}

static void tok_strings_free(TokBytesIndex *ix) {
    free(ix->slots);
    free(ix->keys);
    free(ix->arena);
    memset(ix, 0, sizeof *ix);
}

/* ============================================================================================
 * 3. UTF-8 and the Unicode classes of GPT-2's pattern
 * ============================================================================================ */

/* How the pattern sees a character: \p{L}, \p{N}, \s, or anything else. */
enum { TOK_OTHER = 0, TOK_LETTER = 'L', TOK_NUMBER = 'N', TOK_SPACE = 'S' };

typedef struct {
    uint32_t first, last;   /* code points, inclusive */
    char cls;               /* 'L' letter (\p{L}), 'N' number (\p{N}), 'S' white space (\s) */
} TokClassRange;

/* Every code point that is a letter, a number or white space, as sorted ranges; all others are
   TOK_OTHER. Letters are the general categories L* (Lu Ll Lt Lm Lo), numbers N* (Nd Nl No), and
   white space is what Python's `regex` module matches with \s: the Unicode White_Space property
   (U+0009..U+000D, U+0020, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F,
   U+205F, U+3000; unlike str.isspace(), not U+001C..U+001F).
   Unicode version 15.0.0. Generated with Python 3.12.1's unicodedata (unidata_version 15.0.0, the
   same Unicode version as the `regex` module 2022.10.31 that runs OpenAI's encoder.py here, which
   was checked to agree on all 1,114,112 code points):
       import unicodedata
       WS = [9,10,11,12,13,0x20,0x85,0xA0,0x1680,*range(0x2000,0x200B),0x2028,0x2029,0x202F,0x205F,0x3000]
       def cls(c):
           if c in WS: return 'S'
           k = unicodedata.category(chr(c))[0]
           return k if k in 'LN' else None
       then merge consecutive code points of the same class into {first, last, class} ranges. */
static const TokClassRange tok_class_ranges[] = {
    {0x9,0xD,'S'}, {0x20,0x20,'S'}, {0x30,0x39,'N'}, {0x41,0x5A,'L'}, {0x61,0x7A,'L'},
    {0x85,0x85,'S'}, {0xA0,0xA0,'S'}, {0xAA,0xAA,'L'}, {0xB2,0xB3,'N'}, {0xB5,0xB5,'L'},
    {0xB9,0xB9,'N'}, {0xBA,0xBA,'L'}, {0xBC,0xBE,'N'}, {0xC0,0xD6,'L'}, {0xD8,0xF6,'L'},
    {0xF8,0x2C1,'L'}, {0x2C6,0x2D1,'L'}, {0x2E0,0x2E4,'L'}, {0x2EC,0x2EC,'L'}, {0x2EE,0x2EE,'L'},
    {0x370,0x374,'L'}, {0x376,0x377,'L'}, {0x37A,0x37D,'L'}, {0x37F,0x37F,'L'}, {0x386,0x386,'L'},
    {0x388,0x38A,'L'}, {0x38C,0x38C,'L'}, {0x38E,0x3A1,'L'}, {0x3A3,0x3F5,'L'}, {0x3F7,0x481,'L'},
    {0x48A,0x52F,'L'}, {0x531,0x556,'L'}, {0x559,0x559,'L'}, {0x560,0x588,'L'}, {0x5D0,0x5EA,'L'},
    {0x5EF,0x5F2,'L'}, {0x620,0x64A,'L'}, {0x660,0x669,'N'}, {0x66E,0x66F,'L'}, {0x671,0x6D3,'L'},
    {0x6D5,0x6D5,'L'}, {0x6E5,0x6E6,'L'}, {0x6EE,0x6EF,'L'}, {0x6F0,0x6F9,'N'}, {0x6FA,0x6FC,'L'},
    {0x6FF,0x6FF,'L'}, {0x710,0x710,'L'}, {0x712,0x72F,'L'}, {0x74D,0x7A5,'L'}, {0x7B1,0x7B1,'L'},
    {0x7C0,0x7C9,'N'}, {0x7CA,0x7EA,'L'}, {0x7F4,0x7F5,'L'}, {0x7FA,0x7FA,'L'}, {0x800,0x815,'L'},
    {0x81A,0x81A,'L'}, {0x824,0x824,'L'}, {0x828,0x828,'L'}, {0x840,0x858,'L'}, {0x860,0x86A,'L'},
    {0x870,0x887,'L'}, {0x889,0x88E,'L'}, {0x8A0,0x8C9,'L'}, {0x904,0x939,'L'}, {0x93D,0x93D,'L'},
    {0x950,0x950,'L'}, {0x958,0x961,'L'}, {0x966,0x96F,'N'}, {0x971,0x980,'L'}, {0x985,0x98C,'L'},
    {0x98F,0x990,'L'}, {0x993,0x9A8,'L'}, {0x9AA,0x9B0,'L'}, {0x9B2,0x9B2,'L'}, {0x9B6,0x9B9,'L'},
    {0x9BD,0x9BD,'L'}, {0x9CE,0x9CE,'L'}, {0x9DC,0x9DD,'L'}, {0x9DF,0x9E1,'L'}, {0x9E6,0x9EF,'N'},
    {0x9F0,0x9F1,'L'}, {0x9F4,0x9F9,'N'}, {0x9FC,0x9FC,'L'}, {0xA05,0xA0A,'L'}, {0xA0F,0xA10,'L'},
    {0xA13,0xA28,'L'}, {0xA2A,0xA30,'L'}, {0xA32,0xA33,'L'}, {0xA35,0xA36,'L'}, {0xA38,0xA39,'L'},
    {0xA59,0xA5C,'L'}, {0xA5E,0xA5E,'L'}, {0xA66,0xA6F,'N'}, {0xA72,0xA74,'L'}, {0xA85,0xA8D,'L'},
    {0xA8F,0xA91,'L'}, {0xA93,0xAA8,'L'}, {0xAAA,0xAB0,'L'}, {0xAB2,0xAB3,'L'}, {0xAB5,0xAB9,'L'},
    {0xABD,0xABD,'L'}, {0xAD0,0xAD0,'L'}, {0xAE0,0xAE1,'L'}, {0xAE6,0xAEF,'N'}, {0xAF9,0xAF9,'L'},
    {0xB05,0xB0C,'L'}, {0xB0F,0xB10,'L'}, {0xB13,0xB28,'L'}, {0xB2A,0xB30,'L'}, {0xB32,0xB33,'L'},
    {0xB35,0xB39,'L'}, {0xB3D,0xB3D,'L'}, {0xB5C,0xB5D,'L'}, {0xB5F,0xB61,'L'}, {0xB66,0xB6F,'N'},
    {0xB71,0xB71,'L'}, {0xB72,0xB77,'N'}, {0xB83,0xB83,'L'}, {0xB85,0xB8A,'L'}, {0xB8E,0xB90,'L'},
    {0xB92,0xB95,'L'}, {0xB99,0xB9A,'L'}, {0xB9C,0xB9C,'L'}, {0xB9E,0xB9F,'L'}, {0xBA3,0xBA4,'L'},
    {0xBA8,0xBAA,'L'}, {0xBAE,0xBB9,'L'}, {0xBD0,0xBD0,'L'}, {0xBE6,0xBF2,'N'}, {0xC05,0xC0C,'L'},
    {0xC0E,0xC10,'L'}, {0xC12,0xC28,'L'}, {0xC2A,0xC39,'L'}, {0xC3D,0xC3D,'L'}, {0xC58,0xC5A,'L'},
    {0xC5D,0xC5D,'L'}, {0xC60,0xC61,'L'}, {0xC66,0xC6F,'N'}, {0xC78,0xC7E,'N'}, {0xC80,0xC80,'L'},
    {0xC85,0xC8C,'L'}, {0xC8E,0xC90,'L'}, {0xC92,0xCA8,'L'}, {0xCAA,0xCB3,'L'}, {0xCB5,0xCB9,'L'},
    {0xCBD,0xCBD,'L'}, {0xCDD,0xCDE,'L'}, {0xCE0,0xCE1,'L'}, {0xCE6,0xCEF,'N'}, {0xCF1,0xCF2,'L'},
    {0xD04,0xD0C,'L'}, {0xD0E,0xD10,'L'}, {0xD12,0xD3A,'L'}, {0xD3D,0xD3D,'L'}, {0xD4E,0xD4E,'L'},
    {0xD54,0xD56,'L'}, {0xD58,0xD5E,'N'}, {0xD5F,0xD61,'L'}, {0xD66,0xD78,'N'}, {0xD7A,0xD7F,'L'},
    {0xD85,0xD96,'L'}, {0xD9A,0xDB1,'L'}, {0xDB3,0xDBB,'L'}, {0xDBD,0xDBD,'L'}, {0xDC0,0xDC6,'L'},
    {0xDE6,0xDEF,'N'}, {0xE01,0xE30,'L'}, {0xE32,0xE33,'L'}, {0xE40,0xE46,'L'}, {0xE50,0xE59,'N'},
    {0xE81,0xE82,'L'}, {0xE84,0xE84,'L'}, {0xE86,0xE8A,'L'}, {0xE8C,0xEA3,'L'}, {0xEA5,0xEA5,'L'},
    {0xEA7,0xEB0,'L'}, {0xEB2,0xEB3,'L'}, {0xEBD,0xEBD,'L'}, {0xEC0,0xEC4,'L'}, {0xEC6,0xEC6,'L'},
    {0xED0,0xED9,'N'}, {0xEDC,0xEDF,'L'}, {0xF00,0xF00,'L'}, {0xF20,0xF33,'N'}, {0xF40,0xF47,'L'},
    {0xF49,0xF6C,'L'}, {0xF88,0xF8C,'L'}, {0x1000,0x102A,'L'}, {0x103F,0x103F,'L'},
    {0x1040,0x1049,'N'}, {0x1050,0x1055,'L'}, {0x105A,0x105D,'L'}, {0x1061,0x1061,'L'},
    {0x1065,0x1066,'L'}, {0x106E,0x1070,'L'}, {0x1075,0x1081,'L'}, {0x108E,0x108E,'L'},
    {0x1090,0x1099,'N'}, {0x10A0,0x10C5,'L'}, {0x10C7,0x10C7,'L'}, {0x10CD,0x10CD,'L'},
    {0x10D0,0x10FA,'L'}, {0x10FC,0x1248,'L'}, {0x124A,0x124D,'L'}, {0x1250,0x1256,'L'},
    {0x1258,0x1258,'L'}, {0x125A,0x125D,'L'}, {0x1260,0x1288,'L'}, {0x128A,0x128D,'L'},
    {0x1290,0x12B0,'L'}, {0x12B2,0x12B5,'L'}, {0x12B8,0x12BE,'L'}, {0x12C0,0x12C0,'L'},
    {0x12C2,0x12C5,'L'}, {0x12C8,0x12D6,'L'}, {0x12D8,0x1310,'L'}, {0x1312,0x1315,'L'},
    {0x1318,0x135A,'L'}, {0x1369,0x137C,'N'}, {0x1380,0x138F,'L'}, {0x13A0,0x13F5,'L'},
    {0x13F8,0x13FD,'L'}, {0x1401,0x166C,'L'}, {0x166F,0x167F,'L'}, {0x1680,0x1680,'S'},
    {0x1681,0x169A,'L'}, {0x16A0,0x16EA,'L'}, {0x16EE,0x16F0,'N'}, {0x16F1,0x16F8,'L'},
    {0x1700,0x1711,'L'}, {0x171F,0x1731,'L'}, {0x1740,0x1751,'L'}, {0x1760,0x176C,'L'},
    {0x176E,0x1770,'L'}, {0x1780,0x17B3,'L'}, {0x17D7,0x17D7,'L'}, {0x17DC,0x17DC,'L'},
    {0x17E0,0x17E9,'N'}, {0x17F0,0x17F9,'N'}, {0x1810,0x1819,'N'}, {0x1820,0x1878,'L'},
    {0x1880,0x1884,'L'}, {0x1887,0x18A8,'L'}, {0x18AA,0x18AA,'L'}, {0x18B0,0x18F5,'L'},
    {0x1900,0x191E,'L'}, {0x1946,0x194F,'N'}, {0x1950,0x196D,'L'}, {0x1970,0x1974,'L'},
    {0x1980,0x19AB,'L'}, {0x19B0,0x19C9,'L'}, {0x19D0,0x19DA,'N'}, {0x1A00,0x1A16,'L'},
    {0x1A20,0x1A54,'L'}, {0x1A80,0x1A89,'N'}, {0x1A90,0x1A99,'N'}, {0x1AA7,0x1AA7,'L'},
    {0x1B05,0x1B33,'L'}, {0x1B45,0x1B4C,'L'}, {0x1B50,0x1B59,'N'}, {0x1B83,0x1BA0,'L'},
    {0x1BAE,0x1BAF,'L'}, {0x1BB0,0x1BB9,'N'}, {0x1BBA,0x1BE5,'L'}, {0x1C00,0x1C23,'L'},
    {0x1C40,0x1C49,'N'}, {0x1C4D,0x1C4F,'L'}, {0x1C50,0x1C59,'N'}, {0x1C5A,0x1C7D,'L'},
    {0x1C80,0x1C88,'L'}, {0x1C90,0x1CBA,'L'}, {0x1CBD,0x1CBF,'L'}, {0x1CE9,0x1CEC,'L'},
    {0x1CEE,0x1CF3,'L'}, {0x1CF5,0x1CF6,'L'}, {0x1CFA,0x1CFA,'L'}, {0x1D00,0x1DBF,'L'},
    {0x1E00,0x1F15,'L'}, {0x1F18,0x1F1D,'L'}, {0x1F20,0x1F45,'L'}, {0x1F48,0x1F4D,'L'},
    {0x1F50,0x1F57,'L'}, {0x1F59,0x1F59,'L'}, {0x1F5B,0x1F5B,'L'}, {0x1F5D,0x1F5D,'L'},
    {0x1F5F,0x1F7D,'L'}, {0x1F80,0x1FB4,'L'}, {0x1FB6,0x1FBC,'L'}, {0x1FBE,0x1FBE,'L'},
    {0x1FC2,0x1FC4,'L'}, {0x1FC6,0x1FCC,'L'}, {0x1FD0,0x1FD3,'L'}, {0x1FD6,0x1FDB,'L'},
    {0x1FE0,0x1FEC,'L'}, {0x1FF2,0x1FF4,'L'}, {0x1FF6,0x1FFC,'L'}, {0x2000,0x200A,'S'},
    {0x2028,0x2029,'S'}, {0x202F,0x202F,'S'}, {0x205F,0x205F,'S'}, {0x2070,0x2070,'N'},
    {0x2071,0x2071,'L'}, {0x2074,0x2079,'N'}, {0x207F,0x207F,'L'}, {0x2080,0x2089,'N'},
    {0x2090,0x209C,'L'}, {0x2102,0x2102,'L'}, {0x2107,0x2107,'L'}, {0x210A,0x2113,'L'},
    {0x2115,0x2115,'L'}, {0x2119,0x211D,'L'}, {0x2124,0x2124,'L'}, {0x2126,0x2126,'L'},
    {0x2128,0x2128,'L'}, {0x212A,0x212D,'L'}, {0x212F,0x2139,'L'}, {0x213C,0x213F,'L'},
    {0x2145,0x2149,'L'}, {0x214E,0x214E,'L'}, {0x2150,0x2182,'N'}, {0x2183,0x2184,'L'},
    {0x2185,0x2189,'N'}, {0x2460,0x249B,'N'}, {0x24EA,0x24FF,'N'}, {0x2776,0x2793,'N'},
    {0x2C00,0x2CE4,'L'}, {0x2CEB,0x2CEE,'L'}, {0x2CF2,0x2CF3,'L'}, {0x2CFD,0x2CFD,'N'},
    {0x2D00,0x2D25,'L'}, {0x2D27,0x2D27,'L'}, {0x2D2D,0x2D2D,'L'}, {0x2D30,0x2D67,'L'},
    {0x2D6F,0x2D6F,'L'}, {0x2D80,0x2D96,'L'}, {0x2DA0,0x2DA6,'L'}, {0x2DA8,0x2DAE,'L'},
    {0x2DB0,0x2DB6,'L'}, {0x2DB8,0x2DBE,'L'}, {0x2DC0,0x2DC6,'L'}, {0x2DC8,0x2DCE,'L'},
    {0x2DD0,0x2DD6,'L'}, {0x2DD8,0x2DDE,'L'}, {0x2E2F,0x2E2F,'L'}, {0x3000,0x3000,'S'},
    {0x3005,0x3006,'L'}, {0x3007,0x3007,'N'}, {0x3021,0x3029,'N'}, {0x3031,0x3035,'L'},
    {0x3038,0x303A,'N'}, {0x303B,0x303C,'L'}, {0x3041,0x3096,'L'}, {0x309D,0x309F,'L'},
    {0x30A1,0x30FA,'L'}, {0x30FC,0x30FF,'L'}, {0x3105,0x312F,'L'}, {0x3131,0x318E,'L'},
    {0x3192,0x3195,'N'}, {0x31A0,0x31BF,'L'}, {0x31F0,0x31FF,'L'}, {0x3220,0x3229,'N'},
    {0x3248,0x324F,'N'}, {0x3251,0x325F,'N'}, {0x3280,0x3289,'N'}, {0x32B1,0x32BF,'N'},
    {0x3400,0x4DBF,'L'}, {0x4E00,0xA48C,'L'}, {0xA4D0,0xA4FD,'L'}, {0xA500,0xA60C,'L'},
    {0xA610,0xA61F,'L'}, {0xA620,0xA629,'N'}, {0xA62A,0xA62B,'L'}, {0xA640,0xA66E,'L'},
    {0xA67F,0xA69D,'L'}, {0xA6A0,0xA6E5,'L'}, {0xA6E6,0xA6EF,'N'}, {0xA717,0xA71F,'L'},
    {0xA722,0xA788,'L'}, {0xA78B,0xA7CA,'L'}, {0xA7D0,0xA7D1,'L'}, {0xA7D3,0xA7D3,'L'},
    {0xA7D5,0xA7D9,'L'}, {0xA7F2,0xA801,'L'}, {0xA803,0xA805,'L'}, {0xA807,0xA80A,'L'},
    {0xA80C,0xA822,'L'}, {0xA830,0xA835,'N'}, {0xA840,0xA873,'L'}, {0xA882,0xA8B3,'L'},
    {0xA8D0,0xA8D9,'N'}, {0xA8F2,0xA8F7,'L'}, {0xA8FB,0xA8FB,'L'}, {0xA8FD,0xA8FE,'L'},
    {0xA900,0xA909,'N'}, {0xA90A,0xA925,'L'}, {0xA930,0xA946,'L'}, {0xA960,0xA97C,'L'},
    {0xA984,0xA9B2,'L'}, {0xA9CF,0xA9CF,'L'}, {0xA9D0,0xA9D9,'N'}, {0xA9E0,0xA9E4,'L'},
    {0xA9E6,0xA9EF,'L'}, {0xA9F0,0xA9F9,'N'}, {0xA9FA,0xA9FE,'L'}, {0xAA00,0xAA28,'L'},
    {0xAA40,0xAA42,'L'}, {0xAA44,0xAA4B,'L'}, {0xAA50,0xAA59,'N'}, {0xAA60,0xAA76,'L'},
    {0xAA7A,0xAA7A,'L'}, {0xAA7E,0xAAAF,'L'}, {0xAAB1,0xAAB1,'L'}, {0xAAB5,0xAAB6,'L'},
    {0xAAB9,0xAABD,'L'}, {0xAAC0,0xAAC0,'L'}, {0xAAC2,0xAAC2,'L'}, {0xAADB,0xAADD,'L'},
    {0xAAE0,0xAAEA,'L'}, {0xAAF2,0xAAF4,'L'}, {0xAB01,0xAB06,'L'}, {0xAB09,0xAB0E,'L'},
    {0xAB11,0xAB16,'L'}, {0xAB20,0xAB26,'L'}, {0xAB28,0xAB2E,'L'}, {0xAB30,0xAB5A,'L'},
    {0xAB5C,0xAB69,'L'}, {0xAB70,0xABE2,'L'}, {0xABF0,0xABF9,'N'}, {0xAC00,0xD7A3,'L'},
    {0xD7B0,0xD7C6,'L'}, {0xD7CB,0xD7FB,'L'}, {0xF900,0xFA6D,'L'}, {0xFA70,0xFAD9,'L'},
    {0xFB00,0xFB06,'L'}, {0xFB13,0xFB17,'L'}, {0xFB1D,0xFB1D,'L'}, {0xFB1F,0xFB28,'L'},
    {0xFB2A,0xFB36,'L'}, {0xFB38,0xFB3C,'L'}, {0xFB3E,0xFB3E,'L'}, {0xFB40,0xFB41,'L'},
    {0xFB43,0xFB44,'L'}, {0xFB46,0xFBB1,'L'}, {0xFBD3,0xFD3D,'L'}, {0xFD50,0xFD8F,'L'},
    {0xFD92,0xFDC7,'L'}, {0xFDF0,0xFDFB,'L'}, {0xFE70,0xFE74,'L'}, {0xFE76,0xFEFC,'L'},
    {0xFF10,0xFF19,'N'}, {0xFF21,0xFF3A,'L'}, {0xFF41,0xFF5A,'L'}, {0xFF66,0xFFBE,'L'},
    {0xFFC2,0xFFC7,'L'}, {0xFFCA,0xFFCF,'L'}, {0xFFD2,0xFFD7,'L'}, {0xFFDA,0xFFDC,'L'},
    {0x10000,0x1000B,'L'}, {0x1000D,0x10026,'L'}, {0x10028,0x1003A,'L'}, {0x1003C,0x1003D,'L'},
    {0x1003F,0x1004D,'L'}, {0x10050,0x1005D,'L'}, {0x10080,0x100FA,'L'}, {0x10107,0x10133,'N'},
    {0x10140,0x10178,'N'}, {0x1018A,0x1018B,'N'}, {0x10280,0x1029C,'L'}, {0x102A0,0x102D0,'L'},
    {0x102E1,0x102FB,'N'}, {0x10300,0x1031F,'L'}, {0x10320,0x10323,'N'}, {0x1032D,0x10340,'L'},
    {0x10341,0x10341,'N'}, {0x10342,0x10349,'L'}, {0x1034A,0x1034A,'N'}, {0x10350,0x10375,'L'},
    {0x10380,0x1039D,'L'}, {0x103A0,0x103C3,'L'}, {0x103C8,0x103CF,'L'}, {0x103D1,0x103D5,'N'},
    {0x10400,0x1049D,'L'}, {0x104A0,0x104A9,'N'}, {0x104B0,0x104D3,'L'}, {0x104D8,0x104FB,'L'},
    {0x10500,0x10527,'L'}, {0x10530,0x10563,'L'}, {0x10570,0x1057A,'L'}, {0x1057C,0x1058A,'L'},
    {0x1058C,0x10592,'L'}, {0x10594,0x10595,'L'}, {0x10597,0x105A1,'L'}, {0x105A3,0x105B1,'L'},
    {0x105B3,0x105B9,'L'}, {0x105BB,0x105BC,'L'}, {0x10600,0x10736,'L'}, {0x10740,0x10755,'L'},
    {0x10760,0x10767,'L'}, {0x10780,0x10785,'L'}, {0x10787,0x107B0,'L'}, {0x107B2,0x107BA,'L'},
    {0x10800,0x10805,'L'}, {0x10808,0x10808,'L'}, {0x1080A,0x10835,'L'}, {0x10837,0x10838,'L'},
    {0x1083C,0x1083C,'L'}, {0x1083F,0x10855,'L'}, {0x10858,0x1085F,'N'}, {0x10860,0x10876,'L'},
    {0x10879,0x1087F,'N'}, {0x10880,0x1089E,'L'}, {0x108A7,0x108AF,'N'}, {0x108E0,0x108F2,'L'},
    {0x108F4,0x108F5,'L'}, {0x108FB,0x108FF,'N'}, {0x10900,0x10915,'L'}, {0x10916,0x1091B,'N'},
    {0x10920,0x10939,'L'}, {0x10980,0x109B7,'L'}, {0x109BC,0x109BD,'N'}, {0x109BE,0x109BF,'L'},
    {0x109C0,0x109CF,'N'}, {0x109D2,0x109FF,'N'}, {0x10A00,0x10A00,'L'}, {0x10A10,0x10A13,'L'},
    {0x10A15,0x10A17,'L'}, {0x10A19,0x10A35,'L'}, {0x10A40,0x10A48,'N'}, {0x10A60,0x10A7C,'L'},
    {0x10A7D,0x10A7E,'N'}, {0x10A80,0x10A9C,'L'}, {0x10A9D,0x10A9F,'N'}, {0x10AC0,0x10AC7,'L'},
    {0x10AC9,0x10AE4,'L'}, {0x10AEB,0x10AEF,'N'}, {0x10B00,0x10B35,'L'}, {0x10B40,0x10B55,'L'},
    {0x10B58,0x10B5F,'N'}, {0x10B60,0x10B72,'L'}, {0x10B78,0x10B7F,'N'}, {0x10B80,0x10B91,'L'},
    {0x10BA9,0x10BAF,'N'}, {0x10C00,0x10C48,'L'}, {0x10C80,0x10CB2,'L'}, {0x10CC0,0x10CF2,'L'},
    {0x10CFA,0x10CFF,'N'}, {0x10D00,0x10D23,'L'}, {0x10D30,0x10D39,'N'}, {0x10E60,0x10E7E,'N'},
    {0x10E80,0x10EA9,'L'}, {0x10EB0,0x10EB1,'L'}, {0x10F00,0x10F1C,'L'}, {0x10F1D,0x10F26,'N'},
    {0x10F27,0x10F27,'L'}, {0x10F30,0x10F45,'L'}, {0x10F51,0x10F54,'N'}, {0x10F70,0x10F81,'L'},
    {0x10FB0,0x10FC4,'L'}, {0x10FC5,0x10FCB,'N'}, {0x10FE0,0x10FF6,'L'}, {0x11003,0x11037,'L'},
    {0x11052,0x1106F,'N'}, {0x11071,0x11072,'L'}, {0x11075,0x11075,'L'}, {0x11083,0x110AF,'L'},
    {0x110D0,0x110E8,'L'}, {0x110F0,0x110F9,'N'}, {0x11103,0x11126,'L'}, {0x11136,0x1113F,'N'},
    {0x11144,0x11144,'L'}, {0x11147,0x11147,'L'}, {0x11150,0x11172,'L'}, {0x11176,0x11176,'L'},
    {0x11183,0x111B2,'L'}, {0x111C1,0x111C4,'L'}, {0x111D0,0x111D9,'N'}, {0x111DA,0x111DA,'L'},
    {0x111DC,0x111DC,'L'}, {0x111E1,0x111F4,'N'}, {0x11200,0x11211,'L'}, {0x11213,0x1122B,'L'},
    {0x1123F,0x11240,'L'}, {0x11280,0x11286,'L'}, {0x11288,0x11288,'L'}, {0x1128A,0x1128D,'L'},
    {0x1128F,0x1129D,'L'}, {0x1129F,0x112A8,'L'}, {0x112B0,0x112DE,'L'}, {0x112F0,0x112F9,'N'},
    {0x11305,0x1130C,'L'}, {0x1130F,0x11310,'L'}, {0x11313,0x11328,'L'}, {0x1132A,0x11330,'L'},
    {0x11332,0x11333,'L'}, {0x11335,0x11339,'L'}, {0x1133D,0x1133D,'L'}, {0x11350,0x11350,'L'},
    {0x1135D,0x11361,'L'}, {0x11400,0x11434,'L'}, {0x11447,0x1144A,'L'}, {0x11450,0x11459,'N'},
    {0x1145F,0x11461,'L'}, {0x11480,0x114AF,'L'}, {0x114C4,0x114C5,'L'}, {0x114C7,0x114C7,'L'},
    {0x114D0,0x114D9,'N'}, {0x11580,0x115AE,'L'}, {0x115D8,0x115DB,'L'}, {0x11600,0x1162F,'L'},
    {0x11644,0x11644,'L'}, {0x11650,0x11659,'N'}, {0x11680,0x116AA,'L'}, {0x116B8,0x116B8,'L'},
    {0x116C0,0x116C9,'N'}, {0x11700,0x1171A,'L'}, {0x11730,0x1173B,'N'}, {0x11740,0x11746,'L'},
    {0x11800,0x1182B,'L'}, {0x118A0,0x118DF,'L'}, {0x118E0,0x118F2,'N'}, {0x118FF,0x11906,'L'},
    {0x11909,0x11909,'L'}, {0x1190C,0x11913,'L'}, {0x11915,0x11916,'L'}, {0x11918,0x1192F,'L'},
    {0x1193F,0x1193F,'L'}, {0x11941,0x11941,'L'}, {0x11950,0x11959,'N'}, {0x119A0,0x119A7,'L'},
    {0x119AA,0x119D0,'L'}, {0x119E1,0x119E1,'L'}, {0x119E3,0x119E3,'L'}, {0x11A00,0x11A00,'L'},
    {0x11A0B,0x11A32,'L'}, {0x11A3A,0x11A3A,'L'}, {0x11A50,0x11A50,'L'}, {0x11A5C,0x11A89,'L'},
    {0x11A9D,0x11A9D,'L'}, {0x11AB0,0x11AF8,'L'}, {0x11C00,0x11C08,'L'}, {0x11C0A,0x11C2E,'L'},
    {0x11C40,0x11C40,'L'}, {0x11C50,0x11C6C,'N'}, {0x11C72,0x11C8F,'L'}, {0x11D00,0x11D06,'L'},
    {0x11D08,0x11D09,'L'}, {0x11D0B,0x11D30,'L'}, {0x11D46,0x11D46,'L'}, {0x11D50,0x11D59,'N'},
    {0x11D60,0x11D65,'L'}, {0x11D67,0x11D68,'L'}, {0x11D6A,0x11D89,'L'}, {0x11D98,0x11D98,'L'},
    {0x11DA0,0x11DA9,'N'}, {0x11EE0,0x11EF2,'L'}, {0x11F02,0x11F02,'L'}, {0x11F04,0x11F10,'L'},
    {0x11F12,0x11F33,'L'}, {0x11F50,0x11F59,'N'}, {0x11FB0,0x11FB0,'L'}, {0x11FC0,0x11FD4,'N'},
    {0x12000,0x12399,'L'}, {0x12400,0x1246E,'N'}, {0x12480,0x12543,'L'}, {0x12F90,0x12FF0,'L'},
    {0x13000,0x1342F,'L'}, {0x13441,0x13446,'L'}, {0x14400,0x14646,'L'}, {0x16800,0x16A38,'L'},
    {0x16A40,0x16A5E,'L'}, {0x16A60,0x16A69,'N'}, {0x16A70,0x16ABE,'L'}, {0x16AC0,0x16AC9,'N'},
    {0x16AD0,0x16AED,'L'}, {0x16B00,0x16B2F,'L'}, {0x16B40,0x16B43,'L'}, {0x16B50,0x16B59,'N'},
    {0x16B5B,0x16B61,'N'}, {0x16B63,0x16B77,'L'}, {0x16B7D,0x16B8F,'L'}, {0x16E40,0x16E7F,'L'},
    {0x16E80,0x16E96,'N'}, {0x16F00,0x16F4A,'L'}, {0x16F50,0x16F50,'L'}, {0x16F93,0x16F9F,'L'},
    {0x16FE0,0x16FE1,'L'}, {0x16FE3,0x16FE3,'L'}, {0x17000,0x187F7,'L'}, {0x18800,0x18CD5,'L'},
    {0x18D00,0x18D08,'L'}, {0x1AFF0,0x1AFF3,'L'}, {0x1AFF5,0x1AFFB,'L'}, {0x1AFFD,0x1AFFE,'L'},
    {0x1B000,0x1B122,'L'}, {0x1B132,0x1B132,'L'}, {0x1B150,0x1B152,'L'}, {0x1B155,0x1B155,'L'},
    {0x1B164,0x1B167,'L'}, {0x1B170,0x1B2FB,'L'}, {0x1BC00,0x1BC6A,'L'}, {0x1BC70,0x1BC7C,'L'},
    {0x1BC80,0x1BC88,'L'}, {0x1BC90,0x1BC99,'L'}, {0x1D2C0,0x1D2D3,'N'}, {0x1D2E0,0x1D2F3,'N'},
    {0x1D360,0x1D378,'N'}, {0x1D400,0x1D454,'L'}, {0x1D456,0x1D49C,'L'}, {0x1D49E,0x1D49F,'L'},
    {0x1D4A2,0x1D4A2,'L'}, {0x1D4A5,0x1D4A6,'L'}, {0x1D4A9,0x1D4AC,'L'}, {0x1D4AE,0x1D4B9,'L'},
    {0x1D4BB,0x1D4BB,'L'}, {0x1D4BD,0x1D4C3,'L'}, {0x1D4C5,0x1D505,'L'}, {0x1D507,0x1D50A,'L'},
    {0x1D50D,0x1D514,'L'}, {0x1D516,0x1D51C,'L'}, {0x1D51E,0x1D539,'L'}, {0x1D53B,0x1D53E,'L'},
    {0x1D540,0x1D544,'L'}, {0x1D546,0x1D546,'L'}, {0x1D54A,0x1D550,'L'}, {0x1D552,0x1D6A5,'L'},
    {0x1D6A8,0x1D6C0,'L'}, {0x1D6C2,0x1D6DA,'L'}, {0x1D6DC,0x1D6FA,'L'}, {0x1D6FC,0x1D714,'L'},
    {0x1D716,0x1D734,'L'}, {0x1D736,0x1D74E,'L'}, {0x1D750,0x1D76E,'L'}, {0x1D770,0x1D788,'L'},
    {0x1D78A,0x1D7A8,'L'}, {0x1D7AA,0x1D7C2,'L'}, {0x1D7C4,0x1D7CB,'L'}, {0x1D7CE,0x1D7FF,'N'},
    {0x1DF00,0x1DF1E,'L'}, {0x1DF25,0x1DF2A,'L'}, {0x1E030,0x1E06D,'L'}, {0x1E100,0x1E12C,'L'},
    {0x1E137,0x1E13D,'L'}, {0x1E140,0x1E149,'N'}, {0x1E14E,0x1E14E,'L'}, {0x1E290,0x1E2AD,'L'},
    {0x1E2C0,0x1E2EB,'L'}, {0x1E2F0,0x1E2F9,'N'}, {0x1E4D0,0x1E4EB,'L'}, {0x1E4F0,0x1E4F9,'N'},
    {0x1E7E0,0x1E7E6,'L'}, {0x1E7E8,0x1E7EB,'L'}, {0x1E7ED,0x1E7EE,'L'}, {0x1E7F0,0x1E7FE,'L'},
    {0x1E800,0x1E8C4,'L'}, {0x1E8C7,0x1E8CF,'N'}, {0x1E900,0x1E943,'L'}, {0x1E94B,0x1E94B,'L'},
    {0x1E950,0x1E959,'N'}, {0x1EC71,0x1ECAB,'N'}, {0x1ECAD,0x1ECAF,'N'}, {0x1ECB1,0x1ECB4,'N'},
    {0x1ED01,0x1ED2D,'N'}, {0x1ED2F,0x1ED3D,'N'}, {0x1EE00,0x1EE03,'L'}, {0x1EE05,0x1EE1F,'L'},
    {0x1EE21,0x1EE22,'L'}, {0x1EE24,0x1EE24,'L'}, {0x1EE27,0x1EE27,'L'}, {0x1EE29,0x1EE32,'L'},
    {0x1EE34,0x1EE37,'L'}, {0x1EE39,0x1EE39,'L'}, {0x1EE3B,0x1EE3B,'L'}, {0x1EE42,0x1EE42,'L'},
    {0x1EE47,0x1EE47,'L'}, {0x1EE49,0x1EE49,'L'}, {0x1EE4B,0x1EE4B,'L'}, {0x1EE4D,0x1EE4F,'L'},
    {0x1EE51,0x1EE52,'L'}, {0x1EE54,0x1EE54,'L'}, {0x1EE57,0x1EE57,'L'}, {0x1EE59,0x1EE59,'L'},
    {0x1EE5B,0x1EE5B,'L'}, {0x1EE5D,0x1EE5D,'L'}, {0x1EE5F,0x1EE5F,'L'}, {0x1EE61,0x1EE62,'L'},
    {0x1EE64,0x1EE64,'L'}, {0x1EE67,0x1EE6A,'L'}, {0x1EE6C,0x1EE72,'L'}, {0x1EE74,0x1EE77,'L'},
    {0x1EE79,0x1EE7C,'L'}, {0x1EE7E,0x1EE7E,'L'}, {0x1EE80,0x1EE89,'L'}, {0x1EE8B,0x1EE9B,'L'},
    {0x1EEA1,0x1EEA3,'L'}, {0x1EEA5,0x1EEA9,'L'}, {0x1EEAB,0x1EEBB,'L'}, {0x1F100,0x1F10C,'N'},
    {0x1FBF0,0x1FBF9,'N'}, {0x20000,0x2A6DF,'L'}, {0x2A700,0x2B739,'L'}, {0x2B740,0x2B81D,'L'},
    {0x2B820,0x2CEA1,'L'}, {0x2CEB0,0x2EBE0,'L'}, {0x2F800,0x2FA1D,'L'}, {0x30000,0x3134A,'L'},
    {0x31350,0x323AF,'L'},
};

static int tok_class_of(uint32_t cp) {
    size_t lo = 0, hi = sizeof tok_class_ranges / sizeof tok_class_ranges[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < tok_class_ranges[mid].first) hi = mid;
        else if (cp > tok_class_ranges[mid].last) lo = mid + 1;
        else return tok_class_ranges[mid].cls;
    }
    return TOK_OTHER;
}

static int tok_ascii_class(unsigned char c) {
    if ((c | 32) >= 'a' && (c | 32) <= 'z') return TOK_LETTER;
    if (c >= '0' && c <= '9') return TOK_NUMBER;
    if (c == ' ' || (c >= '\t' && c <= '\r')) return TOK_SPACE;
    return TOK_OTHER;
}

/* The character at s[pos] (pos < len): returns its length in bytes and stores its class. An
   invalid byte is a one-byte character of class TOK_OTHER. */
static size_t tok_next_char(const unsigned char *s, size_t len, size_t pos, int *cls) {
    uint32_t cp;
    if (s[pos] < 0x80) {
        *cls = tok_ascii_class(s[pos]);
        return 1;
    }
    size_t n = utf8_decode(s + pos, len - pos, &cp);
    if (n == 0) {
        *cls = TOK_OTHER;
        return 1;
    }
    *cls = tok_class_of(cp);
    return n;
}

/* ============================================================================================
 * 4. The pre-tokenizer: GPT-2's pattern, by hand
 *      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *    A regex engine tries the alternatives in order at the current position and takes the first
 *    that matches; every character matches one of them, so the pieces cover the whole text.
 * ============================================================================================ */

/* Length of a contraction ('s 't 're 've 'm 'll 'd; ASCII, lower case) at s[pos], or 0. */
static size_t tok_contraction_len(const unsigned char *s, size_t len, size_t pos) {
    if (s[pos] != '\'' || pos + 1 >= len) return 0;
    unsigned char a = s[pos + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= len) return 0;
    unsigned char b = s[pos + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* End of the run of characters of class cls that starts at pos. */
static size_t tok_run_end(const unsigned char *s, size_t len, size_t pos, int cls) {
    while (pos < len) {
        int c;
        size_t n = tok_next_char(s, len, pos, &c);
        if (c != cls) break;
        pos += n;
    }
    return pos;
}

/* Returns the end of the piece that starts at s[pos] (pos < len). */
static size_t tok_piece_end(const unsigned char *s, size_t len, size_t pos) {
    size_t n = tok_contraction_len(s, len, pos);
    if (n > 0) return pos + n;

    /* " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": a run of one class, and one space (U+0020
       only) in front of it is part of the piece. */
    int cls;
    tok_next_char(s, len, pos, &cls);
    if (s[pos] == ' ' && pos + 1 < len) {
        int next_cls;
        tok_next_char(s, len, pos + 1, &next_cls);
        if (next_cls != TOK_SPACE) return tok_run_end(s, len, pos + 1, next_cls);
    }
    if (cls != TOK_SPACE) return tok_run_end(s, len, pos, cls);

    /* "\s+(?!\S)|\s+": a run of white space. When something other than white space follows,
       the run gives its last character back (so that " word" keeps its space), unless the run is
       only one character long. */
    size_t end = pos, last = pos;
    while (end < len) {
        size_t k = tok_next_char(s, len, end, &cls);
        if (cls != TOK_SPACE) break;
        last = end;
        end += k;
    }
    if (end < len && last > pos) return last;
    return end;
}

/* ============================================================================================
 * 5. The tokenizer and how it is built
 * ============================================================================================ */

/* Merge number `rank` turns the adjacent tokens (left, right) into token `result`. */
typedef struct {
    int left, right, result;
} TokMerge;

/* Already-encoded pieces. Entry e's ids are ids.data[start.data[e] + 1 ...], preceded by their
   count at ids.data[start.data[e]]. */
typedef struct {
    TokBytesIndex pieces;
    TokIds ids;
    TokIds start;
} TokPieceCache;

/* Work space for merging one piece (see tok_bpe_piece). */
typedef struct {
    int *sym, *prev, *next;     /* per position of the piece: token, linked-list neighbours */
    TokHeapItem *heap;
    size_t cap;                 /* the longest piece that fits */
} TokBpeWork;

typedef struct Tokenizer {
    int vocab_size;
    int eot_id;
    int byte_to_id[256];        /* the token of each single byte (GPT-2 reorders them) */
    uint32_t *token_start;      /* token i's bytes are token_bytes[token_start[i] .. [i + 1]) */
    unsigned char *token_bytes;
    TokMerge *merges;           /* in rank order */
    int n_merges;
    size_t merges_cap;
    TokPairIndex merge_rank;    /* (left, right) -> rank */
    TokPieceCache cache;
    TokBpeWork work;
    /* llama2.c's tokenizer.bin only (llama = 1; section 9b): */
    int llama;
    int bos_id;                 /* 1; -1 for the other kinds */
    float *scores;              /* per id: the piece's score (a higher score merges first) */
    TokBytesIndex pieces;       /* the pieces as the file spells them ("<0x0A>" too) */
    int *piece_key;             /* id -> its key in pieces (ids spelled alike share one key) */
    int *key_id;                /* key -> the first id spelled so */
    TokIds merge_work;          /* encoding's list of ids */
} Tokenizer;

void tok_free(Tokenizer *tok) {
    if (tok == NULL) return;
    free(tok->token_start);
    free(tok->token_bytes);
    free(tok->merges);
    tok_pairs_free(&tok->merge_rank);
    tok_strings_free(&tok->cache.pieces);
    tok_ids_free(&tok->cache.ids);
    tok_ids_free(&tok->cache.start);
    free(tok->work.sym);
    free(tok->work.heap);
    free(tok->scores);
    tok_strings_free(&tok->pieces);
    free(tok->piece_key);
    free(tok->key_id);
    tok_ids_free(&tok->merge_work);
    free(tok);
}

int tok_vocab_size(const Tokenizer *tok) { return tok->vocab_size; }
int tok_eot(const Tokenizer *tok) { return tok->eot_id; }
/* The beginning-of-sequence id that starts every text (llama2.c's tokenizers: 1), or -1. */
int tok_bos(const Tokenizer *tok) { return tok->llama ? tok->bos_id : -1; }

/* The bytes of token id (*len of them), or NULL if id is not in the vocabulary. */
const unsigned char *tok_token_bytes(const Tokenizer *tok, int id, size_t *len) {
    if (id < 0 || id >= tok->vocab_size) return NULL;
    *len = tok->token_start[id + 1] - tok->token_start[id];
    return tok->token_bytes + tok->token_start[id];
}

/* The bytes of token id when it follows token prev (-1: none), or NULL if id is not in the
   vocabulary: its bytes, except that for llama2.c's tokenizers BOS has none (run.c never prints
   it) and a piece that follows BOS loses its leading space (run.c's decode: the space is
   sentencepiece's dummy prefix; a byte fallback, "<0x20>" in run.c's table, keeps its byte). */
const unsigned char *tok_decode_next(const Tokenizer *tok, int prev, int id, size_t *len) {
    const unsigned char *bytes = tok_token_bytes(tok, id, len);
    int byte_fallback = id >= 3 && id < 259;
    if (bytes && tok->llama && id == tok->bos_id) *len = 0;
    if (bytes && tok->llama && prev == tok->bos_id && !byte_fallback && *len > 0 && bytes[0] == ' ') {
        bytes++;
        --*len;
    }
    return bytes;
}

/* A tokenizer with room for vocab_size tokens holding total_bytes bytes in all. */
static Tokenizer *tok_alloc(int vocab_size, size_t total_bytes) {
    Tokenizer *tok = calloc(1, sizeof *tok);
    if (tok == NULL) return NULL;
    tok->vocab_size = vocab_size;
    tok->token_start = calloc((size_t)vocab_size + 1, sizeof *tok->token_start);
    tok->token_bytes = malloc(total_bytes > 0 ? total_bytes : 1);
    if (tok->token_start == NULL || tok->token_bytes == NULL) {
        tok_free(tok);
        return NULL;
    }
    return tok;
}

static int tok_add_merge(Tokenizer *tok, int left, int right, int result) {
    TokMerge *m = tok_grow(tok->merges, &tok->merges_cap, (size_t)tok->n_merges + 1, sizeof *m);
    if (m == NULL) return -1;
    tok->merges = m;
    tok->merges[tok->n_merges++] = (TokMerge){left, right, result};
    return 0;
}

/* Checks the invariants that encoding relies on and builds the (left, right) -> rank index:
   every merge uses only byte tokens or tokens made by earlier merges, makes a token that nothing
   else makes, and that token's bytes are its two parts' bytes. With these, merging in rank order
   is well defined and decode(encode(x)) == x. */
static int tok_index_merges(Tokenizer *tok, const char *name, char *err, size_t errlen) {
    int status = -1;
    unsigned char *made = calloc((size_t)tok->vocab_size, 1);  /* can encoding produce id? */
    if (made == NULL) {
        TOK_ERRORF(err, errlen, "%s: out of memory", name);
        return -1;
    }
    for (int b = 0; b < 256; b++) made[tok->byte_to_id[b]] = 1;
    for (int k = 0; k < tok->n_merges; k++) {
        const TokMerge *m = &tok->merges[k];
        size_t ll = 0, lr = 0, lm = 0;
        const unsigned char *bl = tok_token_bytes(tok, m->left, &ll);
        const unsigned char *br = tok_token_bytes(tok, m->right, &lr);
        const unsigned char *bm = tok_token_bytes(tok, m->result, &lm);
        if (bl == NULL || br == NULL || bm == NULL) {
            TOK_ERRORF(err, errlen, "%s: merge %d uses a token id outside the vocabulary", name, k);
            goto done;
        }
        if (!made[m->left] || !made[m->right]) {
            TOK_ERRORF(err, errlen, "%s: merge %d uses a token that no earlier merge makes", name, k);
            goto done;
        }
        if (made[m->result] || m->result == tok->eot_id) {
            TOK_ERRORF(err, errlen, "%s: merge %d makes token %d, which already exists", name, k, m->result);
            goto done;
        }
        if (lm != ll + lr || memcmp(bm, bl, ll) != 0 || memcmp(bm + ll, br, lr) != 0) {
            TOK_ERRORF(err, errlen, "%s: merge %d: token %d is not its two parts joined", name, k, m->result);
            goto done;
        }
        int number;
        int added = tok_pairs_insert(&tok->merge_rank, tok_pair_key(m->left, m->right), &number);
        if (added < 0) {
            TOK_ERRORF(err, errlen, "%s: out of memory", name);
            goto done;
        }
        if (added == 0) {
            TOK_ERRORF(err, errlen, "%s: merge %d repeats merge %d", name, k, number);
            goto done;
        }
        made[m->result] = 1;
    }
    status = 0;
done:
    free(made);
    return status;
}

/* Builds one of our tokenizers from its merges (pairs[2k], pairs[2k+1] = left, right of merge
   k): ids 0..255 are the bytes, 256 + k the merges, and the end-of-text token comes last. */
static Tokenizer *tok_new_from_merges(const uint32_t *pairs, int n_merges, const char *name,
                                      char *err, size_t errlen) {
    if (n_merges < 0 || n_merges > TOK_MAX_VOCAB - 257) {
        TOK_ERRORF(err, errlen, "%s: %d merges is more than the maximum %d", name, n_merges, TOK_MAX_VOCAB - 257);
        return NULL;
    }
    int vocab_size = n_merges + 257;
    size_t *len = malloc((size_t)vocab_size * sizeof *len);  /* bytes of each token */
    if (len == NULL) {
        TOK_ERRORF(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    size_t total = 256 + TOK_EOT_TEXT_LEN;
    for (int i = 0; i < 256; i++) len[i] = 1;
    for (int k = 0; k < n_merges; k++) {
        uint32_t left = pairs[2 * k], right = pairs[2 * k + 1];
        if (left >= 256u + (uint32_t)k || right >= 256u + (uint32_t)k) {
            TOK_ERRORF(err, errlen, "%s: merge %d uses token %u, which is not made before it", name, k,
                       left >= 256u + (uint32_t)k ? left : right);
            free(len);
            return NULL;
        }
        len[256 + k] = len[left] + len[right];
        if (len[256 + k] > TOK_MAX_TOKEN_BYTES) {
            TOK_ERRORF(err, errlen, "%s: merge %d makes a token of %zu bytes (at most %d allowed)", name, k,
                       len[256 + k], TOK_MAX_TOKEN_BYTES);
            free(len);
            return NULL;
        }
        total += len[256 + k];
    }
    Tokenizer *tok = tok_alloc(vocab_size, total);
    if (tok == NULL) {
        TOK_ERRORF(err, errlen, "%s: out of memory", name);
        free(len);
        return NULL;
    }
    /* Lay out the token bytes: each merge's bytes are its two parts' bytes. */
    uint32_t at = 0;
    for (int i = 0; i < 256; i++) {
        tok->byte_to_id[i] = i;
        tok->token_start[i] = at;
        tok->token_bytes[at++] = (unsigned char)i;
    }
    for (int k = 0; k < n_merges; k++) {
        uint32_t left = pairs[2 * k], right = pairs[2 * k + 1];
        tok->token_start[256 + k] = at;
        memcpy(tok->token_bytes + at, tok->token_bytes + tok->token_start[left], len[left]);
        at += (uint32_t)len[left];
        memcpy(tok->token_bytes + at, tok->token_bytes + tok->token_start[right], len[right]);
        at += (uint32_t)len[right];
    }
    tok->eot_id = 256 + n_merges;
    tok->token_start[tok->eot_id] = at;
    memcpy(tok->token_bytes + at, TOK_EOT_TEXT, TOK_EOT_TEXT_LEN);
    tok->token_start[tok->eot_id + 1] = at + TOK_EOT_TEXT_LEN;
    free(len);
    for (int k = 0; k < n_merges; k++) {
        if (tok_add_merge(tok, (int)pairs[2 * k], (int)pairs[2 * k + 1], 256 + k) != 0) {
            TOK_ERRORF(err, errlen, "%s: out of memory", name);
            tok_free(tok);
            return NULL;
        }
    }
    if (tok_index_merges(tok, name, err, errlen) != 0) {
        tok_free(tok);
        return NULL;
    }
    return tok;
}

/* True if tok follows our id layout (and so can be saved in our format): GPT-2's does not. */
static int tok_is_ours(const Tokenizer *tok) {
    if (tok->llama) return 0;
    if (tok->vocab_size != tok->n_merges + 257 || tok->eot_id != tok->vocab_size - 1) return 0;
    for (int b = 0; b < 256; b++)
        if (tok->byte_to_id[b] != b) return 0;
    for (int k = 0; k < tok->n_merges; k++)
        if (tok->merges[k].result != 256 + k) return 0;
    return 1;
}

/* ============================================================================================
 * 6. Encoding and decoding
 * ============================================================================================ */

static int tok_work_reserve(TokBpeWork *w, size_t n) {
    if (n <= w->cap) return 0;
    size_t cap = w->cap > 64 ? w->cap : 64;
    while (cap < n) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    /* positions are ints and the heap holds up to 3 entries per position */
    if (cap > INT32_MAX / 3 || cap > SIZE_MAX / (3 * sizeof(TokHeapItem))) return -1;
    int *ints = malloc(3 * cap * sizeof *ints);
    TokHeapItem *heap = malloc(3 * cap * sizeof *heap);
    if (ints == NULL || heap == NULL) {
        free(ints);
        free(heap);
        return -1;
    }
    free(w->sym);
    free(w->heap);
    w->sym = ints;
    w->prev = ints + cap;
    w->next = ints + 2 * cap;
    w->heap = heap;
    w->cap = cap;
    return 0;
}

/* If the tokens at positions a and b (neighbours) can merge, queue the merge by rank. */
static void tok_bpe_queue(const Tokenizer *tok, TokBpeWork *w, size_t *heap_len, int a, int b) {
    int rank = tok_pairs_find(&tok->merge_rank, tok_pair_key(w->sym[a], w->sym[b]));
    if (rank >= 0) tok_heap_push(w->heap, heap_len, (TokHeapItem){(uint64_t)rank, (uint64_t)a});
}

/* Merges one piece and appends its ids to out.
   This is GPT-2's rule: take the adjacent pair with the lowest merge rank, merge all its
   occurrences left to right, repeat. Instead of rescanning the piece after every merge (quadratic
   in the piece length, which a long run of one letter would punish), the tokens are a linked list
   and every adjacent pair that has a rank waits in a heap ordered by (rank, position). Popping
   gives the lowest rank first and, within one rank, the leftmost occurrence first, which is
   exactly the order of GPT-2's pass. New pairs formed by a merge always have a higher rank than
   it (tok_index_merges checks that tokens are made before they are used), so they cannot jump
   ahead of the pass. Heap entries whose tokens have changed since are stale and are skipped. */
static int tok_bpe_piece(Tokenizer *tok, const unsigned char *piece, size_t n, TokIds *out) {
    TokBpeWork *w = &tok->work;
    if (tok_work_reserve(w, n) != 0) return -1;
    int *sym = w->sym, *prev = w->prev, *next = w->next, end = (int)n;
    size_t heap_len = 0;
    for (int i = 0; i < end; i++) {
        sym[i] = tok->byte_to_id[piece[i]];
        prev[i] = i - 1;
        next[i] = i + 1;
    }
    for (int i = 0; i + 1 < end; i++) tok_bpe_queue(tok, w, &heap_len, i, i + 1);
    while (heap_len > 0) {
        TokHeapItem top = tok_heap_pop(w->heap, &heap_len);
        const TokMerge *m = &tok->merges[top.hi];
        int i = (int)top.lo, j = next[i];
        if (sym[i] != m->left || j >= end || sym[j] != m->right) continue;  /* stale */
        sym[i] = m->result;     /* token j joins token i */
        sym[j] = -1;
        next[i] = next[j];
        if (next[j] < end) prev[next[j]] = i;
        if (prev[i] >= 0) tok_bpe_queue(tok, w, &heap_len, prev[i], i);
        if (next[i] < end) tok_bpe_queue(tok, w, &heap_len, i, next[i]);
    }
    for (int i = 0; i < end; i = next[i])
        if (tok_ids_push(out, sym[i]) != 0) return -1;
    return 0;
}

/* Appends the cached ids of a piece to out. Returns 1 if cached, 0 if not, -1 out of memory. */
static int tok_cache_get(const TokPieceCache *c, const unsigned char *piece, size_t n, TokIds *out) {
    int e = tok_strings_find(&c->pieces, piece, n);
    if (e < 0) return 0;
    const int *ids = c->ids.data + c->start.data[e];
    for (int i = 1; i <= ids[0]; i++)
        if (tok_ids_push(out, ids[i]) != 0) return -1;
    return 1;
}

/* Remembers the ids of a piece. Best effort: if memory runs out, the piece is just not cached. */
static void tok_cache_put(TokPieceCache *c, const unsigned char *piece, size_t n,
                          const int *ids, size_t nids) {
    if (c->pieces.count >= TOK_CACHE_MAX_ENTRIES) {
        tok_strings_clear(&c->pieces);
        c->ids.len = c->start.len = 0;
    }
    size_t ids_len = c->ids.len, start_len = c->start.len;
    int ok = c->ids.len < INT32_MAX - nids - 1 && tok_ids_push(&c->start, (int)c->ids.len) == 0 &&
             tok_ids_push(&c->ids, (int)nids) == 0;
    for (size_t i = 0; ok && i < nids; i++) ok = tok_ids_push(&c->ids, ids[i]) == 0;
    int e;
    if (!ok || tok_strings_insert(&c->pieces, piece, n, &e) != 1) {
        c->ids.len = ids_len;   /* undo */
        c->start.len = start_len;
    }
}

static int tok_encode_piece(Tokenizer *tok, const unsigned char *piece, size_t n, TokIds *out) {
    if (n == 1) return tok_ids_push(out, tok->byte_to_id[piece[0]]);
    if (n > TOK_CACHE_MAX_PIECE) return tok_bpe_piece(tok, piece, n, out);
    int cached = tok_cache_get(&tok->cache, piece, n, out);
    if (cached != 0) return cached < 0 ? -1 : 0;
    size_t first = out->len;
    if (tok_bpe_piece(tok, piece, n, out) != 0) return -1;
    tok_cache_put(&tok->cache, piece, n, out->data + first, out->len - first);
    return 0;
}

/* Encodes text as ordinary text: "<|endoftext|>" in it is spelled out, not special. Appends to
   out. Returns 0, or -1 if memory runs out. */
static int tok_llama_encode(Tokenizer *tok, const unsigned char *s, size_t len, int dummy_prefix,
                            TokIds *out);
int tok_encode_ordinary(Tokenizer *tok, const char *text, size_t len, TokIds *out) {
    const unsigned char *s = (const unsigned char *)text;
    if (tok->llama) return tok_llama_encode(tok, s, len, 1, out);
    for (size_t pos = 0; pos < len;) {
        size_t end = tok_piece_end(s, len, pos);
        if (tok_encode_piece(tok, s + pos, end - pos, out) != 0) return -1;
        pos = end;
    }
    return 0;
}

/* As tok_encode_ordinary, for text that continues an earlier text (a completion after its
   prompt): llama2.c's tokenizers then add no dummy prefix " " (that space starts a text, and a
   completion " He" after its prompt is " He", not "  He"); the other kinds encode alike. */
int tok_encode_continuation(Tokenizer *tok, const char *text, size_t len, TokIds *out) {
    if (tok->llama) return tok_llama_encode(tok, (const unsigned char *)text, len, 0, out);
    return tok_encode_ordinary(tok, text, len, out);
}

/* Position of the first occurrence of needle (n >= 1 bytes) in s[from..len), or len. */
static size_t tok_find_bytes(const unsigned char *s, size_t len, size_t from,
                             const unsigned char *needle, size_t n) {
    while (from + n <= len) {
        const unsigned char *hit = memchr(s + from, needle[0], len - from - n + 1);
        if (hit == NULL) break;
        size_t at = (size_t)(hit - s);
        if (memcmp(hit, needle, n) == 0) return at;
        from = at + 1;
    }
    return len;
}

/* Encodes text, with every "<|endoftext|>" in it as the end-of-text id. Appends to out.
   Returns 0, or -1 if memory runs out. */
int tok_encode(Tokenizer *tok, const char *text, size_t len, TokIds *out) {
    const unsigned char *s = (const unsigned char *)text;
    if (tok->llama) return tok_llama_encode(tok, s, len, 1, out); /* no special text: run.c's */
    size_t eot_len = 0;
    const unsigned char *eot = tok_token_bytes(tok, tok->eot_id, &eot_len);
    size_t pos = 0;
    for (;;) {
        size_t hit = tok_find_bytes(s, len, pos, eot, eot_len);
        if (tok_encode_ordinary(tok, text + pos, hit - pos, out) != 0) return -1;
        if (hit == len) return 0;
        if (tok_ids_push(out, tok->eot_id) != 0) return -1;
        pos = hit + eot_len;
    }
}

/* Appends the bytes of ids[0..n) to out. Returns 0, or -1 if an id is not in the vocabulary
   (nothing of it is appended) or memory runs out. */
int tok_decode(const Tokenizer *tok, const int *ids, size_t n, TokBytes *out) {
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const unsigned char *bytes = tok_decode_next(tok, i > 0 ? ids[i - 1] : -1, ids[i], &len);
        if (bytes == NULL || tok_bytes_append(out, bytes, len) != 0) return -1;
    }
    return 0;
}

/* ============================================================================================
 * 7. Training
 *    The text is reduced to its distinct pieces with their counts ("words"). Each word is a
 *    list of tokens, bytes at first. For every adjacent pair of tokens we keep its count (summed
 *    over words, times the word's count) and the words where it occurs. A merge rewrites only
 *    the words that contain its pair, so a step costs what it changes, not the whole corpus.
 *    The most frequent pair comes from a heap; a pair's count changes often, so instead of
 *    updating heap entries we push a fresh entry whenever a count changes and skip entries whose
 *    count is no longer the current one when they come to the top ("lazy deletion").
 * ============================================================================================ */

typedef struct {
    int64_t count;      /* occurrences in the training text */
    TokIds words;       /* words it occurs in; may list words where it no longer occurs */
    int dirty;          /* count changed in the current step: push a fresh heap entry */
} TokPairStat;

typedef struct {
    TokBytesIndex words;        /* the distinct pieces of the text */
    int64_t *word_count;
    size_t word_count_cap;
    int *sym;                   /* tokens of word w start at sym[words.keys[w].start] */
    int *sym_len;               /* number of tokens of each word */
    int *visited;               /* the merge step that last rewrote each word */
    TokPairIndex pairs;
    TokPairStat *stats;         /* stats[pair number] */
    size_t n_stats, stats_cap;
    TokIds dirty;               /* pair numbers whose count changed in this step */
    TokHeapItem *heap;
    size_t heap_len, heap_cap;
    size_t *token_len;          /* bytes of every token made so far */
    unsigned char *token_digits; /* digits ('0'..'9') in every token made so far (at most 2 counted) */
    int split_digits;           /* never make a token with two digits */
    int newest;                 /* the token the current merge makes (-1 while counting) */
} TokTrainer;

static void tok_trainer_free(TokTrainer *t) {
    tok_strings_free(&t->words);
    free(t->word_count);
    free(t->sym);
    free(t->sym_len);
    free(t->visited);
    tok_pairs_free(&t->pairs);
    for (size_t p = 0; p < t->n_stats; p++) tok_ids_free(&t->stats[p].words);
    free(t->stats);
    tok_ids_free(&t->dirty);
    free(t->heap);
    free(t->token_len);
    free(t->token_digits);
}

/* Counts the pieces of one document (text without "<|endoftext|>" in it). */
static int tok_train_count_pieces(TokTrainer *t, const unsigned char *s, size_t len) {
    for (size_t pos = 0; pos < len;) {
        size_t end = tok_piece_end(s, len, pos);
        int w, added = tok_strings_insert(&t->words, s + pos, end - pos, &w);
        if (added < 0) return -1;
        if (added == 1) {
            int64_t *c = tok_grow(t->word_count, &t->word_count_cap, (size_t)w + 1, sizeof *c);
            if (c == NULL) return -1;
            t->word_count = c;
            t->word_count[w] = 0;
        }
        t->word_count[w]++;
        pos = end;
    }
    return 0;
}

/* Adds delta occurrences of pair (left, right) found in word w. */
static int tok_train_add_pair(TokTrainer *t, int left, int right, int w, int64_t delta) {
    if (t->token_len[left] + t->token_len[right] > TOK_MAX_TOKEN_BYTES) return 0;  /* never merged */
    if (t->split_digits && t->token_digits[left] + t->token_digits[right] > 1) return 0;
    int p, added = tok_pairs_insert(&t->pairs, tok_pair_key(left, right), &p);
    if (added < 0) return -1;
    if (added == 1) {
        TokPairStat *stats = tok_grow(t->stats, &t->stats_cap, (size_t)p + 1, sizeof *stats);
        if (stats == NULL) return -1;
        t->stats = stats;
        memset(&t->stats[p], 0, sizeof t->stats[p]);
        t->n_stats = (size_t)p + 1;
    }
    TokPairStat *st = &t->stats[p];
    st->count += delta;
    /* A word only needs listing once per pair: pairs without the newest token were there before
       this merge, so w is in their list already. */
    if (delta > 0 && (t->newest < 0 || left == t->newest || right == t->newest) &&
        (st->words.len == 0 || st->words.data[st->words.len - 1] != w)) {
        if (tok_ids_push(&st->words, w) != 0) return -1;
    }
    if (!st->dirty) {
        st->dirty = 1;
        if (tok_ids_push(&t->dirty, p) != 0) return -1;
    }
    return 0;
}

/* Adds (sign +1) or removes (sign -1) all pairs of word w. */
static int tok_train_count_word(TokTrainer *t, int w, int sign) {
    const int *s = t->sym + t->words.keys[w].start;
    int64_t delta = sign * t->word_count[w];
    for (int i = 0; i + 1 < t->sym_len[w]; i++)
        if (tok_train_add_pair(t, s[i], s[i + 1], w, delta) != 0) return -1;
    return 0;
}

/* Pushes a fresh heap entry for every pair whose count changed. */
static int tok_train_flush_dirty(TokTrainer *t) {
    for (size_t i = 0; i < t->dirty.len; i++) {
        int p = t->dirty.data[i];
        t->stats[p].dirty = 0;
        if (t->stats[p].count <= 0) continue;
        TokHeapItem *heap = tok_grow(t->heap, &t->heap_cap, t->heap_len + 1, sizeof *heap);
        if (heap == NULL) return -1;
        t->heap = heap;
        /* smallest first: a higher count, then a lower (left, right) comes first */
        TokHeapItem item = {UINT64_MAX - (uint64_t)t->stats[p].count, t->pairs.keys[p]};
        tok_heap_push(t->heap, &t->heap_len, item);
    }
    t->dirty.len = 0;
    return 0;
}

/* The most frequent pair (ties: lowest left id, then lowest right id), or -1 if none is left. */
static int tok_train_best_pair(TokTrainer *t) {
    while (t->heap_len > 0) {
        TokHeapItem top = tok_heap_pop(t->heap, &t->heap_len);
        int p = tok_pairs_find(&t->pairs, top.lo);
        if (p >= 0 && t->stats[p].count > 0 && (uint64_t)t->stats[p].count == UINT64_MAX - top.hi)
            return p;
    }
    return -1;
}

static int tok_word_has_pair(const TokTrainer *t, int w, int left, int right) {
    const int *s = t->sym + t->words.keys[w].start;
    for (int i = 0; i + 1 < t->sym_len[w]; i++)
        if (s[i] == left && s[i + 1] == right) return 1;
    return 0;
}

/* Replaces every (left, right) in word w by new_id, left to right. */
static void tok_word_merge(TokTrainer *t, int w, int left, int right, int new_id) {
    int *s = t->sym + t->words.keys[w].start, n = t->sym_len[w], j = 0;
    for (int i = 0; i < n;) {
        if (i + 1 < n && s[i] == left && s[i + 1] == right) {
            s[j++] = new_id;
            i += 2;
        } else {
            s[j++] = s[i++];
        }
    }
    t->sym_len[w] = j;
}

/* Applies merge number `step` (pair p -> new_id) to every word that contains the pair. */
static int tok_train_merge(TokTrainer *t, int p, int new_id, int step) {
    int left = (int)(t->pairs.keys[p] >> 32), right = (int)(uint32_t)t->pairs.keys[p];
    t->newest = new_id;
    t->token_len[new_id] = t->token_len[left] + t->token_len[right];
    t->token_digits[new_id] = (unsigned char)(t->token_digits[left] + t->token_digits[right] > 1
                                              ? 2 : t->token_digits[left] + t->token_digits[right]);
    /* t->stats may move while we add pairs, so index it afresh each time */
    for (size_t k = 0; k < t->stats[p].words.len; k++) {
        int w = t->stats[p].words.data[k];
        if (t->visited[w] == step || !tok_word_has_pair(t, w, left, right)) continue;
        t->visited[w] = step;
        if (tok_train_count_word(t, w, -1) != 0) return -1;
        tok_word_merge(t, w, left, right, new_id);
        if (tok_train_count_word(t, w, +1) != 0) return -1;
    }
    tok_ids_free(&t->stats[p].words);  /* the pair is gone everywhere */
    return tok_train_flush_dirty(t);
}

/* Prepares words and pair counts from the training texts. */
static int tok_train_setup(TokTrainer *t, const char *const *texts, const size_t *lens, int n_texts) {
    for (int i = 0; i < n_texts; i++) {
        const unsigned char *s = (const unsigned char *)texts[i];
        size_t pos = 0;
        for (;;) {  /* each "<|endoftext|>" ends a document */
            size_t hit = tok_find_bytes(s, lens[i], pos, (const unsigned char *)TOK_EOT_TEXT, TOK_EOT_TEXT_LEN);
            if (tok_train_count_pieces(t, s + pos, hit - pos) != 0) return -1;
            if (hit == lens[i]) break;
            pos = hit + TOK_EOT_TEXT_LEN;
        }
    }
    size_t nwords = t->words.count;
    t->sym = malloc((t->words.arena_len ? t->words.arena_len : 1) * sizeof *t->sym);
    t->sym_len = malloc((nwords ? nwords : 1) * sizeof *t->sym_len);
    t->visited = malloc((nwords ? nwords : 1) * sizeof *t->visited);
    if (t->sym == NULL || t->sym_len == NULL || t->visited == NULL) return -1;
    for (size_t i = 0; i < t->words.arena_len; i++) t->sym[i] = t->words.arena[i];
    for (size_t w = 0; w < nwords; w++) {
        t->sym_len[w] = (int)t->words.keys[w].len;
        t->visited[w] = -1;
        if (tok_train_count_word(t, (int)w, +1) != 0) return -1;
    }
    return tok_train_flush_dirty(t);
}

/* Trains a tokenizer of vocab_size tokens (256 bytes + merges + end-of-text) on n_texts texts.
   If the texts run out of pairs first, the tokenizer is smaller (see tok_vocab_size).
   split_digits: no merge may make a token with two digits in it, so a number is always read
   digit by digit (" 147" -> " 1" "4" "7"), as Llama's tokenizer does; small models learn
   arithmetic far more easily when every number is spelled the same way. The encoder needs no
   flag: it applies the merges there are. */
Tokenizer *tok_train(const char *const *texts, const size_t *lens, int n_texts, int vocab_size,
                     int split_digits, char *err, size_t errlen) {
    if (vocab_size < 257 || vocab_size > TOK_MAX_VOCAB) {
        TOK_ERRORF(err, errlen, "vocabulary size %d is out of range: it must be 257..%d "
                   "(256 byte tokens + merges + <|endoftext|>)", vocab_size, TOK_MAX_VOCAB);
        return NULL;
    }
    int max_merges = vocab_size - 257, n_merges = 0;
    Tokenizer *tok = NULL;
    TokTrainer t;
    memset(&t, 0, sizeof t);
    t.newest = -1;
    t.split_digits = split_digits;
    uint32_t *pairs = malloc(((size_t)max_merges + 1) * 2 * sizeof *pairs);
    t.token_len = malloc((size_t)vocab_size * sizeof *t.token_len);
    t.token_digits = malloc((size_t)vocab_size);
    if (pairs == NULL || t.token_len == NULL || t.token_digits == NULL) goto oom;
    for (int b = 0; b < 256; b++) t.token_len[b] = 1, t.token_digits[b] = b >= '0' && b <= '9';
    if (tok_train_setup(&t, texts, lens, n_texts) != 0) goto oom;
    while (n_merges < max_merges) {
        int p = tok_train_best_pair(&t);
        if (p < 0) break;   /* no pair left: every word is a single token */
        pairs[2 * n_merges] = (uint32_t)(t.pairs.keys[p] >> 32);
        pairs[2 * n_merges + 1] = (uint32_t)t.pairs.keys[p];
        if (tok_train_merge(&t, p, 256 + n_merges, n_merges) != 0) goto oom;
        n_merges++;
    }
    tok = tok_new_from_merges(pairs, n_merges, "trained tokenizer", err, errlen);
    free(pairs);
    tok_trainer_free(&t);
    return tok;
oom:
    TOK_ERRORF(err, errlen, "out of memory while training the tokenizer");
    free(pairs);
    tok_trainer_free(&t);
    return NULL;
}

/* ============================================================================================
 * 8. Files: whole-file reads and writes, our format, llm.c's decode table
 * ============================================================================================ */

/* Reads a whole file (at most max_bytes) into a new buffer. */
static int tok_read_file(const char *path, size_t max_bytes, char **data, size_t *len,
                         char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        TOK_ERRORF(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        char *b = tok_grow(buf, &cap, n + 65536, 1);
        if (b == NULL) {
            TOK_ERRORF(err, errlen, "%s: out of memory reading the file", path);
            goto fail;
        }
        buf = b;
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n > max_bytes) {
            TOK_ERRORF(err, errlen, "%s: file is larger than %zu bytes", path, max_bytes);
            goto fail;
        }
        if (got == 0) break;
    }
    if (ferror(f)) {
        TOK_ERRORF(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto fail;
    }
    fclose(f);
    *data = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    fclose(f);
    return -1;
}

// Writes PATH.tmp and renames it over PATH only once it is complete, so a crash or a full disk
// never leaves a half-written tokenizer behind (the previous file stays intact).
static int tok_write_file(const char *path, const void *data, size_t len, char *err, size_t errlen) {
    SafeFile sf; // lib/util.h: PATH.tmp, written, flushed, synced, then renamed over PATH
    if (strlen(path) >= sizeof sf.final_path) {
        TOK_ERRORF(err, errlen, "%s: path too long", path);
        return -1;
    }
    safe_open_deferred(&sf, path);
    safe_write(&sf, data, len);
    int e = safe_finish(&sf);
    if (!e && rename(sf.temp_path, sf.final_path) != 0) {
        e = errno;
        remove(sf.temp_path);
    }
    if (e) TOK_ERRORF(err, errlen, "%s: cannot write: %s (the previous file is untouched)", path,
                      strerror(e));
    return e ? -1 : 0;
}

/* Appends tok in our file format to out. Only our own tokenizers (trained, or loaded from our
   format) fit the format; GPT-2's keeps its encoder.json + vocab.bpe. */
int tok_serialize(const Tokenizer *tok, TokBytes *out, char *err, size_t errlen) {
    if (!tok_is_ours(tok)) {
        TOK_ERRORF(err, errlen, "only tokenizers trained by sirt can be saved in its format "
                   "(GPT-2's stays in encoder.json + vocab.bpe; tok_save_llmc works for both)");
        return -1;
    }
    unsigned char word[4];
    uint32_t header[5] = {TOK_FILE_MAGIC, TOK_FILE_VERSION, (uint32_t)tok->vocab_size,
                          (uint32_t)tok->eot_id, (uint32_t)tok->n_merges};
    for (int i = 0; i < 5; i++) {
        tok_put_u32(word, header[i]);
        if (tok_bytes_append(out, word, 4) != 0) goto oom;
    }
    for (int k = 0; k < tok->n_merges; k++) {
        tok_put_u32(word, (uint32_t)tok->merges[k].left);
        if (tok_bytes_append(out, word, 4) != 0) goto oom;
        tok_put_u32(word, (uint32_t)tok->merges[k].right);
        if (tok_bytes_append(out, word, 4) != 0) goto oom;
    }
    return 0;
oom:
    TOK_ERRORF(err, errlen, "out of memory");
    return -1;
}

int tok_save(const Tokenizer *tok, const char *path, char *err, size_t errlen) {
    TokBytes buf = {0};
    int status = tok_serialize(tok, &buf, err, errlen);
    if (status == 0) status = tok_write_file(path, buf.data, buf.len, err, errlen);
    tok_bytes_free(&buf);
    return status;
}

/* Writes llm.c's decode table: header of 256 uint32 (magic 20240328, version 2, vocab size,
   end-of-text id), then for every token one length byte and its bytes. */
int tok_save_llmc(const Tokenizer *tok, const char *path, char *err, size_t errlen) {
    TokBytes buf = {0};
    unsigned char header[TOK_LLMC_HEADER_BYTES] = {0};
    tok_put_u32(header, TOK_LLMC_MAGIC);
    tok_put_u32(header + 4, TOK_LLMC_VERSION);
    tok_put_u32(header + 8, (uint32_t)tok->vocab_size);
    tok_put_u32(header + 12, (uint32_t)tok->eot_id);
    int status = tok_bytes_append(&buf, header, sizeof header);
    for (int id = 0; id < tok->vocab_size && status == 0; id++) {
        size_t len;
        const unsigned char *bytes = tok_token_bytes(tok, id, &len);
        if (len < 1 || len > TOK_MAX_TOKEN_BYTES) {  /* the loaders make sure this cannot be */
            TOK_ERRORF(err, errlen, "%s: token %d has %zu bytes; llm.c needs 1..255", path, id, len);
            tok_bytes_free(&buf);
            return -1;
        }
        status = tok_bytes_push(&buf, (unsigned char)len);
        if (status == 0) status = tok_bytes_append(&buf, bytes, len);
    }
    if (status != 0) TOK_ERRORF(err, errlen, "%s: out of memory", path);
    else status = tok_write_file(path, buf.data, buf.len, err, errlen);
    tok_bytes_free(&buf);
    return status;
}

/* Parses our format from memory; name is used in messages. */
Tokenizer *tok_from_memory(const unsigned char *data, size_t len, const char *name,
                           char *err, size_t errlen) {
    if (len < 4) {
        TOK_ERRORF(err, errlen, "%s: truncated: %zu bytes, too short for a tokenizer file", name, len);
        return NULL;
    }
    uint32_t magic = tok_get_u32(data);
    if (magic == TOK_LLMC_MAGIC) {
        TOK_ERRORF(err, errlen, "%s: this is an llm.c decode table (magic %u); it has no merges, so "
                   "it cannot encode: load the tokenizer it was made from", name, magic);
        return NULL;
    }
    if (magic != TOK_FILE_MAGIC) {
        TOK_ERRORF(err, errlen, "%s: bad magic 0x%08X (a sirt tokenizer starts with 0x%08X, \"SBPE\")",
                   name, magic, TOK_FILE_MAGIC);
        return NULL;
    }
    if (len < TOK_FILE_HEADER_BYTES) {
        TOK_ERRORF(err, errlen, "%s: truncated: %zu bytes, the header alone is %d", name, len, TOK_FILE_HEADER_BYTES);
        return NULL;
    }
    uint32_t version = tok_get_u32(data + 4), vocab_size = tok_get_u32(data + 8);
    uint32_t eot_id = tok_get_u32(data + 12), n_merges = tok_get_u32(data + 16);
    if (version != TOK_FILE_VERSION) {
        TOK_ERRORF(err, errlen, "%s: unsupported version %u (this build reads version %u)", name, version, TOK_FILE_VERSION);
        return NULL;
    }
    if (n_merges > TOK_MAX_VOCAB - 257) {
        TOK_ERRORF(err, errlen, "%s: bad header: %u merges, more than the maximum %d", name, n_merges, TOK_MAX_VOCAB - 257);
        return NULL;
    }
    if (vocab_size != n_merges + 257 || eot_id != vocab_size - 1) {
        TOK_ERRORF(err, errlen, "%s: bad header: vocab size %u and end-of-text id %u do not fit %u merges "
                   "(expected %u and %u)", name, vocab_size, eot_id, n_merges, n_merges + 257, n_merges + 256);
        return NULL;
    }
    size_t expected = TOK_FILE_HEADER_BYTES + (size_t)n_merges * 8;
    if (len != expected) {
        TOK_ERRORF(err, errlen, "%s: %s: the header says %u merges, so the file should have %zu bytes, "
                   "but it has %zu", name, len < expected ? "truncated" : "unexpected data at the end",
                   n_merges, expected, len);
        return NULL;
    }
    uint32_t *pairs = malloc(((size_t)n_merges + 1) * 2 * sizeof *pairs);
    if (pairs == NULL) {
        TOK_ERRORF(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    for (size_t i = 0; i < 2 * (size_t)n_merges; i++) pairs[i] = tok_get_u32(data + TOK_FILE_HEADER_BYTES + 4 * i);
    Tokenizer *tok = tok_new_from_merges(pairs, (int)n_merges, name, err, errlen);
    free(pairs);
    return tok;
}

/* ============================================================================================
 * 9. GPT-2's files: encoder.json (token string -> id) and vocab.bpe (merges by rank)
 *    GPT-2 writes every byte as a printable character so its files are text: the printable
 *    Latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves and the other 68
 *    bytes, in byte order, become U+0100, U+0101, ... (OpenAI's bytes_to_unicode). A token string
 *    is turned back into bytes character by character.
 * ============================================================================================ */

#define TOK_GPT2_MAP_SIZE 324   /* the characters used are all below U+0100 + 68 */

/* Fills unicode_to_byte[c] with the byte that GPT-2's character c stands for, or -1. */
static void tok_gpt2_byte_map(int unicode_to_byte[TOK_GPT2_MAP_SIZE]) {
    int next = 256;
    for (int c = 0; c < TOK_GPT2_MAP_SIZE; c++) unicode_to_byte[c] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        unicode_to_byte[printable ? b : next++] = b;
    }
}

/* Turns a GPT-2 token string (UTF-8) back into bytes, appended to out. -1 if a character is not
   one of GPT-2's byte characters. */
static int tok_gpt2_unmap(const unsigned char *s, size_t n, const int *unicode_to_byte, TokBytes *out) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_decode(s + i, n - i, &cp);
        if (k == 0 || cp >= TOK_GPT2_MAP_SIZE || unicode_to_byte[cp] < 0) return -1;
        if (tok_bytes_push(out, (unsigned char)unicode_to_byte[cp]) != 0) return -1;
        i += k;
    }
    return 0;
}

/* What tok_gpt2_encoder_member needs while lib/jsonl.h reads encoder.json. */
typedef struct {
    const int *unicode_to_byte;
    TokBytesIndex *tokens;  /* every token's bytes; its number is its place in the file */
    TokIds *ids;            /* ids[number]: the token's id */
    TokBytes bytes;         /* work space */
    int bad_token;          /* the member is valid JSON but not a token */
} TokEncoderReader;

/* One member of encoder.json, "token": id. Returns 0, or -1 with what is wrong. */
static int tok_gpt2_encoder_member(void *ctx, JsonField *f, char *what, size_t whatlen) {
    TokEncoderReader *r = ctx;
    const char *problem = NULL;
    int number, added = 0;
    r->bytes.len = 0;
    if (tok_gpt2_unmap((const unsigned char *)f->key, strlen(f->key), r->unicode_to_byte, &r->bytes) != 0)
        problem = "token has a character that is not one of GPT-2's byte characters";
    else if (r->bytes.len == 0 || r->bytes.len > TOK_MAX_TOKEN_BYTES)
        problem = "token must have 1..255 bytes";
    else if (f->type != JSON_NUMBER) problem = "expected a token id (a non-negative integer)";
    else if (f->text[0] == '-') problem = "token id must be a non-negative integer";
    else if (strspn(f->text, "0123456789") != f->len) problem = "token id must be an integer";
    else if (f->number > TOK_MAX_VOCAB - 1) problem = "token id is too large";
    else if ((added = tok_strings_insert(r->tokens, r->bytes.data, r->bytes.len, &number)) < 0 ||
             tok_ids_push(r->ids, (int)f->number) != 0) problem = "out of memory";
    else if (added == 0) problem = "the same token appears twice";
    else if (r->tokens->count > TOK_MAX_VOCAB) problem = "more than 65536 tokens";
    json_field_free(f);
    if (problem == NULL) return 0;
    TOK_ERRORF(what, whatlen, "%s", problem);
    r->bad_token = 1;
    return -1;
}

/* Reads encoder.json, one JSON object of "token": id, with lib/jsonl.h's reader: every token's
   bytes go into `tokens` (number = order in the file) and its id into ids[number]. */
static int tok_gpt2_read_encoder(const unsigned char *json, size_t len, const char *name,
                                 const int *unicode_to_byte, TokBytesIndex *tokens, TokIds *ids,
                                 char *err, size_t errlen) {
    TokEncoderReader r = {unicode_to_byte, tokens, ids, {0}, 0};
    char what[256];
    int status = json_parse_object_each((const char *)json, len, "the file", tok_gpt2_encoder_member,
                                        &r, what, sizeof what);
    tok_bytes_free(&r.bytes);
    if (status != 0)
        TOK_ERRORF(err, errlen, "%s: %s%s", name, r.bad_token ? "" : "malformed JSON: ", what);
    else if (tokens->count == 0) {
        TOK_ERRORF(err, errlen, "%s: the object has no tokens", name);
        status = -1;
    }
    return status;
}

/* Lays out the vocabulary read from encoder.json by id, and finds the byte and end-of-text ids. */
static Tokenizer *tok_gpt2_vocab(const TokBytesIndex *tokens, const TokIds *ids, const char *name,
                                 char *err, size_t errlen) {
    int n = (int)tokens->count;
    if (n < 257) {
        TOK_ERRORF(err, errlen, "%s: only %d tokens; a GPT-2 vocabulary has at least the 256 bytes "
                   "and <|endoftext|>", name, n);
        return NULL;
    }
    Tokenizer *tok = tok_alloc(n, tokens->arena_len);
    int *number_of_id = malloc((size_t)n * sizeof *number_of_id);
    if (tok == NULL || number_of_id == NULL) {
        TOK_ERRORF(err, errlen, "%s: out of memory", name);
        goto fail;
    }
    for (int id = 0; id < n; id++) number_of_id[id] = -1;
    for (int e = 0; e < n; e++) {
        int id = ids->data[e];
        if (id >= n) {
            TOK_ERRORF(err, errlen, "%s: token id %d is out of range: %d tokens need ids 0..%d", name, id, n, n - 1);
            goto fail;
        }
        if (number_of_id[id] >= 0) {
            TOK_ERRORF(err, errlen, "%s: token id %d is given to two tokens", name, id);
            goto fail;
        }
        number_of_id[id] = e;
    }
    uint32_t at = 0;
    for (int id = 0; id < n; id++) {
        const TokBytesKey *key = &tokens->keys[number_of_id[id]];
        tok->token_start[id] = at;
        memcpy(tok->token_bytes + at, tokens->arena + key->start, key->len);
        at += key->len;
    }
    tok->token_start[n] = at;
    for (int b = 0; b < 256; b++) {
        unsigned char byte = (unsigned char)b;
        int e = tok_strings_find(tokens, &byte, 1);
        if (e < 0) {
            TOK_ERRORF(err, errlen, "%s: no token for the byte 0x%02X", name, b);
            goto fail;
        }
        tok->byte_to_id[b] = ids->data[e];
    }
    int e = tok_strings_find(tokens, TOK_EOT_TEXT, TOK_EOT_TEXT_LEN);
    if (e < 0) {
        TOK_ERRORF(err, errlen, "%s: no %s token", name, TOK_EOT_TEXT);
        goto fail;
    }
    tok->eot_id = ids->data[e];
    free(number_of_id);
    return tok;
fail:
    free(number_of_id);
    tok_free(tok);
    return NULL;
}

/* The id of a token string from vocab.bpe, or -1. scratch is work space. */
static int tok_gpt2_token_id(const unsigned char *s, size_t n, const int *unicode_to_byte,
                             const TokBytesIndex *tokens, const TokIds *ids, TokBytes *scratch) {
    scratch->len = 0;
    if (tok_gpt2_unmap(s, n, unicode_to_byte, scratch) != 0) return -1;
    int e = tok_strings_find(tokens, scratch->data, scratch->len);
    return e < 0 ? -1 : ids->data[e];
}

/* Reads vocab.bpe: an optional "#version" line, then one merge "left right" per line, by rank. */
static int tok_gpt2_read_merges(Tokenizer *tok, const unsigned char *s, size_t len, const char *name,
                                const int *unicode_to_byte, const TokBytesIndex *tokens,
                                const TokIds *ids, char *err, size_t errlen) {
    TokBytes scratch = {0}, joined = {0};
    int status = -1;
    size_t line_no = 0;
    for (size_t pos = 0; pos < len;) {
        const unsigned char *nl = memchr(s + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - s) : len, n = end - pos;
        const unsigned char *line = s + pos;
        pos = nl ? end + 1 : len;
        line_no++;
        if (n > 0 && line[n - 1] == '\r') n--;
        if (n == 0 || (line_no == 1 && n >= 8 && memcmp(line, "#version", 8) == 0)) continue;
        const unsigned char *space = memchr(line, ' ', n);
        size_t nl_left = space ? (size_t)(space - line) : 0, nl_right = space ? n - nl_left - 1 : 0;
        if (space == NULL || nl_left == 0 || nl_right == 0 || memchr(space + 1, ' ', nl_right) != NULL) {
            TOK_ERRORF(err, errlen, "%s: line %zu: expected two tokens separated by one space", name, line_no);
            goto done;
        }
        int left = tok_gpt2_token_id(line, nl_left, unicode_to_byte, tokens, ids, &scratch);
        int right = tok_gpt2_token_id(space + 1, nl_right, unicode_to_byte, tokens, ids, &scratch);
        joined.len = 0;
        if (tok_bytes_append(&joined, line, nl_left) != 0 || tok_bytes_append(&joined, space + 1, nl_right) != 0) {
            TOK_ERRORF(err, errlen, "%s: out of memory", name);
            goto done;
        }
        int result = tok_gpt2_token_id((const unsigned char *)joined.data, joined.len, unicode_to_byte,
                                       tokens, ids, &scratch);
        if (left < 0 || right < 0) {
            TOK_ERRORF(err, errlen, "%s: line %zu: the %s token is not in encoder.json", name, line_no,
                       left < 0 ? "left" : "right");
            goto done;
        }
        if (result < 0) {
            TOK_ERRORF(err, errlen, "%s: line %zu: the merged token is not in encoder.json", name, line_no);
            goto done;
        }
        if (tok->n_merges >= tok->vocab_size || tok_add_merge(tok, left, right, result) != 0) {
            TOK_ERRORF(err, errlen, "%s: line %zu: %s", name, line_no,
                       tok->n_merges >= tok->vocab_size ? "more merges than tokens" : "out of memory");
            goto done;
        }
    }
    status = 0;
done:
    tok_bytes_free(&scratch);
    tok_bytes_free(&joined);
    return status;
}

static Tokenizer *tok_gpt2_parse(const unsigned char *json, size_t json_len, const char *json_name,
                                 const unsigned char *bpe, size_t bpe_len, const char *bpe_name,
                                 char *err, size_t errlen) {
    int unicode_to_byte[TOK_GPT2_MAP_SIZE];
    TokBytesIndex tokens = {0};
    TokIds ids = {0};
    Tokenizer *tok = NULL;
    tok_gpt2_byte_map(unicode_to_byte);
    if (tok_gpt2_read_encoder(json, json_len, json_name, unicode_to_byte, &tokens, &ids, err, errlen) != 0)
        goto done;
    tok = tok_gpt2_vocab(&tokens, &ids, json_name, err, errlen);
    if (tok == NULL) goto done;
    if (tok_gpt2_read_merges(tok, bpe, bpe_len, bpe_name, unicode_to_byte, &tokens, &ids, err, errlen) != 0 ||
        tok_index_merges(tok, bpe_name, err, errlen) != 0) {
        tok_free(tok);
        tok = NULL;
    }
done:
    tok_strings_free(&tokens);
    tok_ids_free(&ids);
    return tok;
}

/* GPT-2's tokenizer from the contents of encoder.json and vocab.bpe. */
Tokenizer *tok_from_gpt2_memory(const unsigned char *json, size_t json_len,
                                const unsigned char *bpe, size_t bpe_len, char *err, size_t errlen) {
    return tok_gpt2_parse(json, json_len, "encoder.json", bpe, bpe_len, "vocab.bpe", err, errlen);
}

Tokenizer *tok_load_gpt2(const char *encoder_json_path, const char *vocab_bpe_path, char *err, size_t errlen) {
    char *json = NULL, *bpe = NULL;
    size_t json_len = 0, bpe_len = 0;
    Tokenizer *tok = NULL;
    if (tok_read_file(encoder_json_path, TOK_MAX_FILE_BYTES, &json, &json_len, err, errlen) == 0 &&
        tok_read_file(vocab_bpe_path, TOK_MAX_FILE_BYTES, &bpe, &bpe_len, err, errlen) == 0)
        tok = tok_gpt2_parse((const unsigned char *)json, json_len, encoder_json_path,
                             (const unsigned char *)bpe, bpe_len, vocab_bpe_path, err, errlen);
    free(json);
    free(bpe);
    return tok;
}

Tokenizer *tok_from_llama2c_memory(const unsigned char *data, size_t len, const char *name,
                                   char *err, size_t errlen);

/* Loads a tokenizer from path: a sirt tokenizer file, llama2.c's tokenizer.bin, or a directory
   holding GPT-2's encoder.json and vocab.bpe. */
Tokenizer *tok_load(const char *path, char *err, size_t errlen) {
    size_t n = strlen(path);
    const char *sep = n > 0 && path[n - 1] == '/' ? "" : "/";
    char *json_path = malloc(n + 16), *bpe_path = malloc(n + 16), *data = NULL;
    size_t len = 0;
    Tokenizer *tok = NULL;
    FILE *f = NULL;
    if (json_path == NULL || bpe_path == NULL) {
        TOK_ERRORF(err, errlen, "%s: out of memory", path);
    } else {
        snprintf(json_path, n + 16, "%s%sencoder.json", path, sep);
        snprintf(bpe_path, n + 16, "%s%svocab.bpe", path, sep);
        f = fopen(json_path, "rb");
    }
    if (f != NULL) {  /* a directory with GPT-2's files */
        fclose(f);
        tok = tok_load_gpt2(json_path, bpe_path, err, errlen);
    } else if (json_path != NULL && bpe_path != NULL) {
        if (tok_read_file(path, TOK_MAX_FILE_BYTES, &data, &len, err, errlen) == 0) {
            /* llama2.c's tokenizer.bin starts with a small max_token_length, ours and llm.c's
               with a large magic number */
            uint32_t first = len >= 4 ? tok_get_u32((const unsigned char *)data) : 0;
            if (first >= 1 && first <= TOK_LLAMA_MAX_TOKEN_LENGTH)
                tok = tok_from_llama2c_memory((const unsigned char *)data, len, path, err, errlen);
            else tok = tok_from_memory((const unsigned char *)data, len, path, err, errlen);
        }
        else if (err != NULL && strlen(err) + 80 < errlen)
            strcat(err, " (expected a sirt tokenizer file or a directory with encoder.json and vocab.bpe)");
    }
    free(data);
    free(json_path);
    free(bpe_path);
    return tok;
}

/* ============================================================================================
 * 9b. llama2.c's tokenizer.bin (sentencepiece's pieces and scores, as llama2.c exports them)
 *    File: uint32 max_token_length, then for every token: float32 score, int32 length, that
 *    many bytes (the piece, with sentencepiece's "▁" already turned into a space). The number
 *    of tokens is not stored: the file ends after the last. Ids 0, 1, 2 are <unk>, <s>, </s>;
 *    3..258 must be the byte fallbacks "<0x00>".."<0xFF>" (every llama2.c tokenizer has them).
 *    Encoding is run.c's encode(): a non-empty text gets the dummy prefix " " first (its id);
 *    then each UTF-8 character (a lead byte and up to 3 continuation bytes) becomes the piece
 *    spelled so, or its bytes' fallback ids (byte + 3); then, repeatedly, of all adjacent pairs
 *    whose concatenation is a piece, the one with the highest score (the leftmost on a tie)
 *    becomes that piece, until no pair is. No BOS or EOS is added here (the callers add BOS).
 *    A completion, which continues its prompt, is encoded without the dummy prefix
 *    (tok_encode_continuation).
 *    Decoding: a byte fallback is its byte; a piece (not a byte fallback) after BOS loses a
 *    leading space (tok_decode_next). run.c's printing also skips single unprintable bytes; we
 *    keep them.
 * ============================================================================================ */

static int tok_llama_lookup(const Tokenizer *tok, const unsigned char *p, size_t n) {
    int key = tok_strings_find(&tok->pieces, p, n);
    return key < 0 ? -1 : tok->key_id[key];
}

/* run.c's encode(text, bos = 0, eos = 0), appending to out; dummy_prefix 0 leaves out its " "
   (tok_encode_continuation). */
static int tok_llama_encode(Tokenizer *tok, const unsigned char *s, size_t len, int dummy_prefix,
                            TokIds *out) {
    TokIds *w = &tok->merge_work;
    w->len = 0;
    if (len == 0) return 0;
    int space = tok_llama_lookup(tok, (const unsigned char *)" ", 1);
    if (dummy_prefix && space >= 0 && tok_ids_push(w, space) != 0) return -1;
    for (size_t i = 0; i < len;) {
        size_t n = 1; /* one character: its lead byte and up to 3 continuation bytes */
        while (i + n < len && (s[i + n] & 0xC0) == 0x80 && n < 4) n++;
        int id = tok_llama_lookup(tok, s + i, n);
        if (id >= 0) {
            if (tok_ids_push(w, id) != 0) return -1;
        } else {
            for (size_t k = 0; k < n; k++)
                if (tok_ids_push(w, s[i + k] + 3) != 0) return -1;
        }
        i += n;
    }
    unsigned char pair[2 * TOK_LLAMA_MAX_TOKEN_LENGTH];
    for (;;) {
        float best_score = -1e10f;
        int best_id = -1;
        size_t best_at = 0;
        for (size_t i = 0; i + 1 < w->len; i++) {
            const TokBytesKey *a = &tok->pieces.keys[tok->piece_key[w->data[i]]];
            const TokBytesKey *b = &tok->pieces.keys[tok->piece_key[w->data[i + 1]]];
            memcpy(pair, tok->pieces.arena + a->start, a->len);
            memcpy(pair + a->len, tok->pieces.arena + b->start, b->len);
            int id = tok_llama_lookup(tok, pair, (size_t)a->len + b->len);
            if (id >= 0 && tok->scores[id] > best_score) {
                best_score = tok->scores[id];
                best_id = id;
                best_at = i;
            }
        }
        if (best_id < 0) break;
        w->data[best_at] = best_id;
        memmove(w->data + best_at + 1, w->data + best_at + 2,
                (w->len - best_at - 2) * sizeof *w->data);
        w->len--;
    }
    for (size_t i = 0; i < w->len; i++)
        if (tok_ids_push(out, w->data[i]) != 0) return -1;
    return 0;
}

/* Parses llama2.c's tokenizer.bin from memory; name is used in messages. */
Tokenizer *tok_from_llama2c_memory(const unsigned char *data, size_t len, const char *name,
                                   char *err, size_t errlen) {
    if (len < 4) {
        TOK_ERRORF(err, errlen, "%s: truncated: %zu bytes", name, len);
        return NULL;
    }
    uint32_t max_len = tok_get_u32(data);
    if (max_len < 1 || max_len > TOK_LLAMA_MAX_TOKEN_LENGTH) {
        TOK_ERRORF(err, errlen, "%s: max_token_length %u is not in 1..%d: not a llama2.c "
                   "tokenizer.bin", name, max_len, TOK_LLAMA_MAX_TOKEN_LENGTH);
        return NULL;
    }
    size_t count = 0, total = 0;
    for (size_t at = 4; at < len; count++) { /* count the tokens, checking each */
        if (len - at < 8) {
            TOK_ERRORF(err, errlen, "%s: truncated in token %zu (its score and length)", name, count);
            return NULL;
        }
        int32_t n;
        memcpy(&n, data + at + 4, 4);
        if (n < 0 || (uint32_t)n > max_len || (size_t)n > len - at - 8) {
            TOK_ERRORF(err, errlen, "%s: token %zu has length %d (max_token_length %u, %zu bytes "
                       "left)", name, count, n, max_len, len - at - 8);
            return NULL;
        }
        if (count >= TOK_MAX_VOCAB) {
            TOK_ERRORF(err, errlen, "%s: more than %d tokens", name, TOK_MAX_VOCAB);
            return NULL;
        }
        at += 8 + (size_t)n;
        total += (size_t)n;
    }
    if (count < 259) {
        TOK_ERRORF(err, errlen, "%s: %zu tokens; a llama2.c tokenizer has at least 259 (<unk>, "
                   "<s>, </s> and the 256 byte fallbacks)", name, count);
        return NULL;
    }
    Tokenizer *tok = tok_alloc((int)count, total);
    if (tok == NULL || !(tok->scores = malloc(count * sizeof(float))) ||
        !(tok->piece_key = malloc(count * sizeof(int))) ||
        !(tok->key_id = malloc(count * sizeof(int)))) {
        tok_free(tok);
        TOK_ERRORF(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    tok->llama = 1;
    tok->bos_id = 1;
    tok->eot_id = 2;
    size_t at = 4, bytes_at = 0;
    for (size_t id = 0; id < count; id++) {
        int32_t n;
        memcpy(&tok->scores[id], data + at, 4);
        memcpy(&n, data + at + 4, 4);
        const unsigned char *piece = data + at + 8;
        at += 8 + (size_t)n;
        int key;
        int added = tok_strings_insert(&tok->pieces, piece, (size_t)n, &key);
        if (added < 0) {
            tok_free(tok);
            TOK_ERRORF(err, errlen, "%s: out of memory", name);
            return NULL;
        }
        if (added) tok->key_id[key] = (int)id;
        tok->piece_key[id] = key;
        if (id >= 3 && id < 259) { /* the byte fallbacks: their bytes are the byte itself */
            char expected[8];
            snprintf(expected, sizeof expected, "<0x%02X>", (unsigned)(id - 3));
            if (n != 6 || memcmp(piece, expected, 6) != 0) {
                tok_free(tok);
                TOK_ERRORF(err, errlen, "%s: token %zu is \"%.*s\", expected the byte fallback "
                           "\"%s\"", name, id, n > 16 ? 16 : (int)n, (const char *)piece, expected);
                return NULL;
            }
            tok->token_bytes[bytes_at++] = (unsigned char)(id - 3);
            tok->byte_to_id[id - 3] = (int)id;
        } else {
            memcpy(tok->token_bytes + bytes_at, piece, (size_t)n);
            bytes_at += (size_t)n;
        }
        tok->token_start[id + 1] = (uint32_t)bytes_at;
    }
    return tok;
}

/* ============================================================================================
 * 10. Command line. sirt's main calls these with the arguments after the subcommand name.
 *   sirt tokenizer --train FILE[,FILE...] --vocab N --out tok.bin [--llmc-out tok_llmc.bin]
 *   sirt tokenize --tokenizer PATH [--decode | --shard FILE [--jsonl]]
 *     reads stdin; for every input line (without its newline) prints its token ids separated by
 *     spaces, one output line each. With --decode, reads lines of ids and prints the text of
 *     each line (text containing a newline then spans several output lines). With --shard,
 *     writes the ids of all lines as one llm.c token shard instead (256 int32: magic 20240520,
 *     version 1, the token count; then uint16 ids), each line a document: BOS before it for
 *     llama2.c's tokenizers (as llama2.c's pretokenizer does), the end-of-text id after it
 *     for the others. With --jsonl, each line is a JSON object and the document is its "text"
 *     field, so a document may hold newlines (`./sirt data --stories` writes such lines).
 * ============================================================================================ */

int cmd_tokenizer(int argc, char **argv) {
    const char *train = NULL, *out = NULL, *llmc_out = NULL;
    long vocab = 0;
    int split_digits = 0;
    const Flag flags[] = {
        {"--train", "FILE[,FILE...]", FLAG_STRING, .value = &train, "the training text, one document a file"},
        {"--vocab", "N", FLAG_LONG, .value = &vocab, "tokens: 256 bytes + merges + <|endoftext|>",
         257, TOK_MAX_VOCAB},
        {"--out", "FILE", FLAG_STRING, .value = &out, "the tokenizer, in sirt's format"},
        {"--llmc-out", "FILE", FLAG_STRING, .value = &llmc_out, "also llm.c's decode table"},
        {"--split-digits", NULL, FLAG_SWITCH, .value = &split_digits,
         "no token holds two digits: numbers go digit by digit"},
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {0}};
    if (flags_parse(argc, argv, "tokenizer", "tokenizer --train FILE[,FILE...] --vocab N --out tok.bin\n"
                    "Trains a byte-level BPE tokenizer on the files.", tables))
        return 0;
    if (train == NULL || out == NULL || vocab == 0) die("tokenizer: --train, --vocab and --out are required");
    check_writable(out); // before the training, not after it
    if (llmc_out != NULL) check_writable(llmc_out);

    /* the training files, named in a comma-separated list */
    size_t max_files = 1, total = 0;
    for (const char *c = train; *c; c++) max_files += *c == ',';
    char *list = xmalloc(strlen(train) + 1), **texts = xmalloc(max_files * sizeof *texts);
    size_t *lens = xmalloc(max_files * sizeof *lens);
    int n_texts = 0;
    strcpy(list, train);
    for (char *name = list, *comma; name != NULL; name = comma ? comma + 1 : NULL) {
        comma = strchr(name, ',');
        if (comma != NULL) *comma = '\0';
        if (*name == '\0') continue;
        texts[n_texts] = (char *)read_whole_file(name, &lens[n_texts]);
        if (texts[n_texts] == NULL) die("cannot open %s: %s", name, strerror(errno));
        total += lens[n_texts++];
    }
    free(list);

    char err[512];
    Tokenizer *tok = tok_train((const char *const *)texts, lens, n_texts, (int)vocab, split_digits, err, sizeof err);
    if (tok == NULL) die("%s", err);
    printf("trained a tokenizer of %d tokens (%d merges + 256 bytes + <|endoftext|> = id %d) on %zu bytes "
           "from %d file(s)\n", tok->vocab_size, tok->n_merges, tok->eot_id, total, n_texts);
    if (tok->vocab_size < vocab)
        printf("note: the text ran out of pairs to merge before %ld tokens\n", vocab);
    if (tok_save(tok, out, err, sizeof err) != 0) die("%s", err);
    if (llmc_out != NULL && tok_save_llmc(tok, llmc_out, err, sizeof err) != 0) die("%s", err);
    printf("wrote %s%s%s\n", out, llmc_out ? " and " : "", llmc_out ? llmc_out : "");
    for (int i = 0; i < n_texts; i++) free(texts[i]);
    free(texts);
    free(lens);
    tok_free(tok);
    return 0;
}

/* Reads one line of f into line, without its '\n'. Returns 1 if a line was read, 0 at the end
   of the input, -1 on a read error. */
static int tok_cli_read_line(FILE *f, TokBytes *line) {
    int c, any = 0;
    line->len = 0;
    while ((c = getc(f)) != EOF) {
        any = 1;
        if (c == '\n') return 1;
        if (tok_bytes_push(line, (unsigned char)c) != 0) die("out of memory");
    }
    if (ferror(f)) return -1;
    return any;
}

/* Parses a line of decimal ids separated by spaces or tabs. */
static int tok_cli_parse_ids(const TokBytes *line, TokIds *ids) {
    ids->len = 0;
    for (size_t i = 0; i < line->len;) {
        unsigned char c = (unsigned char)line->data[i];
        if (c == ' ' || c == '\t' || c == '\r') { i++; continue; }
        if (c < '0' || c > '9') return -1;
        long v = 0;
        while (i < line->len && line->data[i] >= '0' && line->data[i] <= '9') {
            v = v * 10 + (line->data[i++] - '0');
            if (v > INT32_MAX) return -1;
        }
        if (tok_ids_push(ids, (int)v) != 0) die("out of memory");
    }
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *path = NULL, *shard = NULL;
    int decode = 0, jsonl = 0;
    const Flag flags[] = {
        {"--tokenizer", "PATH", FLAG_STRING, .value = &path,
         "a sirt tokenizer file, llama2.c's tokenizer.bin, or a directory with GPT-2's "
         "encoder.json and vocab.bpe"},
        {"--decode", NULL, FLAG_SWITCH, .value = &decode, "read lines of ids, print their text"},
        {"--shard", "FILE", FLAG_STRING, .value = &shard,
         "write all lines' ids as one llm.c token shard, each line a document"},
        {"--jsonl", NULL, FLAG_SWITCH, .value = &jsonl,
         "with --shard: each line is a JSON object whose \"text\" is the document"},
        {0}};
    const FlagTable tables[] = {{NULL, flags, NULL}, {0}};
    if (flags_parse(argc, argv, "tokenize", "tokenize --tokenizer PATH [--decode | --shard FILE [--jsonl]] < input\n"
                    "Prints the token ids of each input line (with --decode, the text of each line of ids).",
                    tables))
        return 0;
    if (path == NULL) die("tokenize: --tokenizer is required");
    if (shard && decode) die("tokenize: --shard writes ids; it does not go with --decode");
    if (jsonl && !shard) die("tokenize: --jsonl reads the documents of --shard; give --shard FILE");
    if (shard) check_writable(shard);
    char err[512];
    Tokenizer *tok = tok_load(path, err, sizeof err);
    if (tok == NULL) die("%s", err);
    TokBytes line = {0}, text = {0};
    TokIds ids = {0}, all = {0};
    int got;
    size_t line_no = 0;
    while ((got = tok_cli_read_line(stdin, &line)) == 1) {
        line_no++;
        ids.len = text.len = 0;
        if (shard) {
            const char *doc = line.data ? line.data : "";
            size_t doc_len = line.len;
            JsonObject obj = {0};
            if (jsonl) { // the document is the line's "text" field
                if (json_parse_object(doc, doc_len, &obj, err, sizeof err) != 0 ||
                    (doc = json_require_string(&obj, "text", err, sizeof err)) == NULL)
                    die("tokenize --jsonl: input line %zu: %s", line_no, err);
                doc_len = json_get(&obj, "text")->len; // the decoded bytes (\u0000 included)
            }
            if ((tok_bos(tok) >= 0 && tok_ids_push(&all, tok_bos(tok)) != 0) ||
                tok_encode(tok, doc, doc_len, &all) != 0 ||
                (tok_bos(tok) < 0 && tok_ids_push(&all, tok->eot_id) != 0))
                die("out of memory");
            if (all.len > INT32_MAX) die("tokenize --shard: more than 2^31 tokens");
            json_object_free(&obj);
            continue;
        }
        if (decode) {
            if (tok_cli_parse_ids(&line, &ids) != 0 || tok_decode(tok, ids.data, ids.len, &text) != 0)
                die("tokenize --decode: input line %zu: expected token ids in 0..%d separated by spaces",
                    line_no, tok->vocab_size - 1);
        } else {
            if (tok_encode(tok, line.data ? line.data : "", line.len, &ids) != 0) die("out of memory");
            for (size_t i = 0; i < ids.len; i++) {
                char num[16];
                int k = snprintf(num, sizeof num, i ? " %d" : "%d", ids.data[i]);
                if (tok_bytes_append(&text, num, (size_t)k) != 0) die("out of memory");
            }
        }
        if (tok_bytes_push(&text, '\n') != 0) die("out of memory");
        fwrite(text.data, 1, text.len, stdout);
    }
    if (got < 0) die("tokenize: cannot read the input: %s", strerror(errno));
    if (shard) {
        int32_t header[256] = {20240520, 1, (int32_t)all.len};
        uint16_t *tokens = malloc((all.len ? all.len : 1) * sizeof *tokens);
        if (tokens == NULL) die("out of memory");
        for (size_t i = 0; i < all.len; i++) tokens[i] = (uint16_t)all.data[i];
        SafeFile sf;
        safe_open(&sf, shard);
        safe_write(&sf, header, sizeof header);
        safe_write(&sf, tokens, all.len * sizeof *tokens);
        safe_commit(&sf);
        free(tokens);
        printf("wrote %s: %zu tokens of %zu lines\n", shard, all.len, line_no);
    }
    tok_ids_free(&all);
    if (fflush(stdout) != 0 || ferror(stdout)) die("tokenize: cannot write the output");
    tok_bytes_free(&line);
    tok_bytes_free(&text);
    tok_ids_free(&ids);
    tok_free(tok);
    return 0;
}
